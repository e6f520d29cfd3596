//! Entry points: load files and directories (`load_paths`), a text
//! (`load_str`), or one resource received as JSON (`resource_from_json`);
//! and `read_documents`, which checks files document by document and hands
//! them on as JSON (what `palisade apply` sends to the server). Every problem
//! of a run is collected; no `Intent` is returned when there is any.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::document::{decode_document, Decoding, Item};
use crate::intent::{build, Intent, KnownNames};
use crate::resource::Resource;
use crate::syntax;
use crate::yaml;

/// File name endings a directory load reads.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Options of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Tenant that Kubernetes Pods and NetworkPolicies land in (default `kubernetes`).
    pub kubernetes_tenant: String,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            kubernetes_tenant: "kubernetes".to_string(),
        }
    }
}

/// Loads files and directories (every `*.yaml`, `*.yml`, `*.json` below a
/// directory, recursively, in path order; names starting with '.' are
/// skipped) into a validated `Intent`.
pub fn load_paths(paths: &[impl AsRef<Path>], opts: &LoadOptions) -> Result<Intent, Diagnostics> {
    let mut run = Run::new(opts);
    for path in paths {
        let path = path.as_ref();
        match collect_files(path) {
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    match std::fs::read_to_string(&file) {
                        Ok(text) => {
                            run.add_text(&text, &name);
                        }
                        Err(e) => run.file_error(&name, format!("cannot read the file: {e}")),
                    }
                }
            }
            Err(e) => run.file_error(
                &path.display().to_string(),
                format!("cannot read: {e}; check that the path exists and is readable"),
            ),
        }
    }
    run.finish()
}

/// Loads one text (YAML, possibly several documents, or JSON); `file_name`
/// names it in messages.
pub fn load_str(text: &str, file_name: &str, opts: &LoadOptions) -> Result<Intent, Diagnostics> {
    let mut run = Run::new(opts);
    run.add_text(text, file_name);
    run.finish()
}

/// One document of a file as JSON, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDocument {
    /// The file it was read from.
    pub file: String,
    /// 1-based line where the document starts.
    pub line: u32,
    /// 1-based column where the document starts.
    pub col: u32,
    /// The document as JSON (as the control plane's API takes it).
    pub value: serde_json::Value,
}

/// Reads files and directories as [`load_paths`] does and checks every
/// document on its own (fields, names, selectors, with file:line:col), but
/// not the checks across resources (references to tenants and tiers,
/// duplicates, addresses): those need the control plane's state, which
/// validates the whole intent when the documents arrive. Items of a `List`
/// come back as documents of their own.
pub fn read_documents(
    paths: &[impl AsRef<Path>],
    opts: &LoadOptions,
) -> Result<Vec<FileDocument>, Diagnostics> {
    let mut run = Run::new(opts);
    let mut documents = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let files = match collect_files(path) {
            Ok(files) => files,
            Err(e) => {
                run.file_error(
                    &path.display().to_string(),
                    format!("cannot read: {e}; check that the path exists and is readable"),
                );
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    run.file_error(&name, format!("cannot read the file: {e}"));
                    continue;
                }
            };
            for root in run.add_text(&text, &name) {
                for node in list_items(&root) {
                    documents.push(FileDocument {
                        file: name.clone(),
                        line: node.pos.line,
                        col: node.pos.col,
                        value: yaml::to_json(node),
                    });
                }
            }
        }
    }
    let mut diagnostics = Diagnostics(run.decoding.diagnostics);
    if diagnostics.is_empty() {
        Ok(documents)
    } else {
        diagnostics.sort();
        Err(diagnostics)
    }
}

/// The items of a `kind: List` document, or the document itself.
fn list_items(root: &yaml::Node) -> Vec<&yaml::Node> {
    let yaml::Value::Map(entries) = &root.value else {
        return vec![root];
    };
    let field = |key: &str| entries.iter().find(|e| e.key == key).map(|e| &e.value);
    let is_list = matches!(
        field("kind").map(|n| &n.value),
        Some(yaml::Value::Scalar(s)) if s.text == "List"
    );
    match field("items").map(|n| &n.value) {
        Some(yaml::Value::Seq(items)) if is_list => items.iter().collect(),
        _ => vec![root],
    }
}

/// For the REST API: one resource as a JSON value. Errors carry field paths
/// and no file. Native kinds come back as they are; a Kubernetes Pod becomes
/// its Endpoint and a NetworkPolicy its Policy (in `opts.kubernetes_tenant`).
/// A Namespace or a List is refused: they are not one resource.
pub fn resource_from_json(
    value: &serde_json::Value,
    opts: &LoadOptions,
) -> Result<Resource, Diagnostics> {
    let node = yaml::from_json(value);
    let mut out = Decoding::default();
    decode_document(None, &node, opts, &mut out);
    if !out.diagnostics.is_empty() {
        return Err(Diagnostics(out.diagnostics));
    }
    let refused = |message: &str| {
        Diagnostics(vec![Diagnostic {
            file: None,
            line: 0,
            col: 0,
            path: "kind".into(),
            resource: None,
            message: message.to_string(),
        }])
    };
    let mut decoded = out.decoded;
    if decoded.len() != 1 {
        return Err(refused(
            "a List holds several resources; send one resource per request",
        ));
    }
    match decoded.remove(0).item {
        Item::Resource(r) => Ok(r),
        Item::Namespace(_) => Err(refused(
            "a Namespace is not a resource of its own here; load it from files with the \
             endpoints it labels (palisade apply -f)",
        )),
    }
}

/// The files a path stands for: itself, or the matching files below it.
fn collect_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    walk(path, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if std::fs::metadata(&path)?.is_dir() {
            walk(&path, files)?;
        } else if path
            .extension()
            .is_some_and(|ext| EXTENSIONS.iter().any(|e| ext == *e))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// One load: documents decoded so far and every problem found.
struct Run<'o> {
    opts: &'o LoadOptions,
    decoding: Decoding,
}

impl<'o> Run<'o> {
    fn new(opts: &'o LoadOptions) -> Run<'o> {
        let mut decoding = Decoding::default();
        if let Err(message) = syntax::check_name("kubernetes tenant", &opts.kubernetes_tenant) {
            decoding.diagnostics.push(Diagnostic {
                file: None,
                line: 0,
                col: 0,
                path: String::new(),
                resource: None,
                message: format!("load options: {message}"),
            });
        }
        Run { opts, decoding }
    }

    fn file_error(&mut self, file: &str, message: String) {
        self.decoding.diagnostics.push(Diagnostic {
            file: Some(file.to_string()),
            line: 0,
            col: 0,
            path: String::new(),
            resource: None,
            message,
        });
    }

    /// Reads and decodes the documents of one text; returns them, for
    /// callers that hand the documents on.
    fn add_text(&mut self, text: &str, file_name: &str) -> Vec<yaml::Node> {
        let file: Arc<str> = Arc::from(file_name);
        let parsed = yaml::parse_documents(text);
        tracing::debug!(file = file_name, documents = parsed.documents.len(), "read");
        for e in parsed.errors {
            self.decoding.diagnostics.push(Diagnostic {
                file: Some(file_name.to_string()),
                line: e.pos.line,
                col: e.pos.col,
                path: String::new(),
                resource: None,
                message: e.message,
            });
        }
        for root in &parsed.documents {
            decode_document(Some(file.clone()), root, self.opts, &mut self.decoding);
        }
        parsed.documents
    }

    fn finish(self) -> Result<Intent, Diagnostics> {
        let Decoding {
            decoded,
            diagnostics,
            failed_tenants,
            failed_tiers,
        } = self.decoding;
        let known = KnownNames {
            tenants: failed_tenants,
            tiers: failed_tiers,
        };
        let items = decoded.into_iter().map(|d| (d.item, d.origin)).collect();
        let mut all = Diagnostics(diagnostics);
        match build(items, &known, self.opts) {
            Ok(intent) if all.is_empty() => {
                tracing::debug!(
                    tenants = intent.tenants.len(),
                    endpoints = intent.endpoints.len(),
                    policies = intent.policies.len(),
                    "intent loaded"
                );
                Ok(intent)
            }
            Ok(_) => {
                all.sort();
                Err(all)
            }
            Err(more) => {
                all.0.extend(more);
                all.sort();
                Err(all)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_documents_expands_lists_and_checks_each_document_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        // The tenant is not defined here: that is the server's check, not this one's.
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: palisade.dev/v1\n    kind: Tier\n    metadata: {name: sec}\n    spec: {order: 5}\n---\napiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: p, tenant: elsewhere}\nspec: {selector: all(), ingress: []}\n",
        )
        .unwrap();
        let docs = read_documents(&[&file], &LoadOptions::default()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["kind"], "Tier");
        assert_eq!(docs[0].value["spec"]["order"], 5);
        assert_eq!(
            (docs[1].line, docs[1].value["kind"].as_str()),
            (9, Some("Policy"))
        );

        std::fs::write(
            &file,
            "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: sec}\nspec: {ordr: 5}\n",
        )
        .unwrap();
        let errors = read_documents(&[&file], &LoadOptions::default()).unwrap_err();
        assert!(errors.to_string().contains("p.yaml:4:"), "{errors}");
    }
}
