//! The lab's own copy of the resource files its directory-mode agents read:
//! `/run/palisade/lab/<lab>/intent/`. `palisade lab agents up -f PATH...`
//! copies the files there and points every agent at the copy, so that `lab
//! move` can say where an endpoint runs now without touching the user's
//! files; the agents watch the copy and follow.
//!
//! Layout: the `i`-th path given becomes `intent/<i>/`: a file is copied
//! into it, a directory's files (recursively, keeping their relative paths;
//! hidden names skipped, as the loader does) below it.
//!
//! Changing an endpoint's node rewrites only the file that defines it, from
//! its parsed documents (`palisade_model::read_documents`): each document of
//! that file is written back as JSON (YAML reads it), the endpoint's
//! `spec.node` (a Pod's `spec.nodeName`) changed. That is exact — the same
//! documents, one field different, whatever the file's formatting — at the
//! price of that file's comments; other files stay byte for byte. The file
//! is replaced atomically (a hidden temporary, then a rename), so an agent
//! never reads half of it.

use std::fs;
use std::path::{Path, PathBuf};

use palisade_model::{resource_from_json, LoadOptions, Resource};

use crate::error::{LabError, Result};
use crate::state::state_dir;

/// The directory of lab `lab`'s intent copy.
pub fn intent_dir(lab: &str) -> PathBuf {
    state_dir(lab).join("intent")
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.to_path_buf();
    move |source| LabError::Io {
        action,
        path,
        source,
    }
}

/// Replaces lab `lab`'s intent copy with copies of `paths` (files or
/// directories) and returns its directory.
pub fn copy_intent(lab: &str, paths: &[PathBuf]) -> Result<PathBuf> {
    let dir = intent_dir(lab);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_error("remove", &dir)(e))
        }
        _ => {}
    }
    for (i, path) in paths.iter().enumerate() {
        let target = dir.join(i.to_string());
        fs::create_dir_all(&target).map_err(io_error("create", &target))?;
        let meta = fs::metadata(path).map_err(io_error("read", path))?;
        if meta.is_dir() {
            copy_dir(path, &target)?;
        } else {
            let name = path.file_name().ok_or_else(|| LabError::IntentCopy {
                dir: dir.clone(),
                reason: format!("{} names no file", path.display()),
            })?;
            let to = target.join(name);
            fs::copy(path, &to).map_err(io_error("copy into", &to))?;
        }
    }
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).map_err(io_error("read", from))? {
        let entry = entry.map_err(io_error("read", from))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let target = to.join(entry.file_name());
        if fs::metadata(&path)
            .map_err(io_error("read", &path))?
            .is_dir()
        {
            fs::create_dir_all(&target).map_err(io_error("create", &target))?;
            copy_dir(&path, &target)?;
        } else {
            fs::copy(&path, &target).map_err(io_error("copy into", &target))?;
        }
    }
    Ok(())
}

/// Says in lab `lab`'s intent copy that endpoint `full_ref` runs on `node`
/// (see the module docs for how); returns the file rewritten. `opts` must be
/// what the agents load with (the Kubernetes tenant of Pods).
pub fn set_endpoint_node(
    lab: &str,
    full_ref: &str,
    node: &str,
    opts: &LoadOptions,
) -> Result<PathBuf> {
    let dir = intent_dir(lab);
    let copy_error = |reason: String| LabError::IntentCopy {
        dir: dir.clone(),
        reason,
    };
    if !dir.is_dir() {
        return Err(copy_error(
            "there is none: the lab's agents were not started from files with `palisade lab \
             agents up -f PATH`"
                .into(),
        ));
    }
    let documents = palisade_model::read_documents(&[&dir], opts)
        .map_err(|d| copy_error(format!("it does not read back:\n{d}")))?;
    let target = documents
        .iter()
        .position(|doc| {
            matches!(resource_from_json(&doc.value, opts),
                Ok(Resource::Endpoint(e)) if e.full_ref() == full_ref)
        })
        .ok_or_else(|| copy_error(format!("no endpoint {full_ref} in it")))?;
    let file = PathBuf::from(&documents[target].file);
    let mut texts = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        if Path::new(&doc.file) != file {
            continue;
        }
        let mut value = doc.value.clone();
        if i == target {
            let field = match value["kind"].as_str() {
                Some("Pod") => "nodeName",
                _ => "node",
            };
            let spec = value
                .get_mut("spec")
                .and_then(|s| s.as_object_mut())
                .ok_or_else(|| copy_error(format!("{full_ref} has no spec")))?;
            spec.insert(field.to_string(), node.into());
        }
        texts.push(serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    }
    let mut text = format!(
        "# Written by `palisade lab move` from the documents of this file, {full_ref} now on {node}.\n---\n"
    );
    text.push_str(&texts.join("\n---\n"));
    text.push('\n');
    let name = file.file_name().expect("a document's file has a name");
    let tmp = file.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    fs::write(&tmp, text).map_err(io_error("write", &tmp))?;
    fs::rename(&tmp, &file).map_err(io_error("rename into place", &file))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\n";
    const ENDPOINTS: &str = "# two workloads\n\
        apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: a, tenant: acme, labels: {app: a}}\n\
        spec: {node: n1, ips: [10.0.0.1]}\n---\n\
        apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: b, tenant: acme, labels: {app: b}}\n\
        spec: {node: n1, ips: [10.0.0.2]}\n";
    const PODS: &str =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x, labels: {pod: p}}\n\
        spec: {nodeName: n1}\nstatus: {podIP: 10.1.0.1}\n";

    #[test]
    fn an_endpoint_moves_in_the_copy_and_nothing_else_changes() {
        let lab = format!("ic-{}", std::process::id());
        let _cleanup = Cleanup(state_dir(&lab));
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("more")).unwrap();
        std::fs::write(src.path().join("tenant.yaml"), TENANT).unwrap();
        std::fs::write(src.path().join("more/endpoints.yaml"), ENDPOINTS).unwrap();
        std::fs::write(src.path().join(".hidden.yaml"), "not: [valid").unwrap();
        let other = tempfile::tempdir().unwrap();
        let pods = other.path().join("pods.yaml");
        std::fs::write(&pods, PODS).unwrap();

        let dir = copy_intent(&lab, &[src.path().to_path_buf(), pods.clone()]).unwrap();
        assert!(dir.join("0/more/endpoints.yaml").exists());
        assert!(!dir.join("0/.hidden.yaml").exists());
        let opts = LoadOptions::default();
        let before = palisade_model::load_paths(&[&dir], &opts).unwrap();

        let file = set_endpoint_node(&lab, "acme:b", "n2", &opts).unwrap();
        assert_eq!(file, dir.join("0/more/endpoints.yaml"));
        let after = palisade_model::load_paths(&[&dir], &opts).unwrap();
        let node_of = |intent: &palisade_model::Intent, r: &str| {
            intent
                .endpoints
                .iter()
                .find(|e| e.full_ref() == r)
                .unwrap()
                .node
                .clone()
        };
        assert_eq!(node_of(&after, "acme:b"), "n2");
        let mut expected = before.clone();
        expected
            .endpoints
            .iter_mut()
            .find(|e| e.full_ref() == "acme:b")
            .unwrap()
            .node = "n2".into();
        assert_eq!(after, expected, "only that field changed");
        assert_eq!(
            std::fs::read_to_string(dir.join("0/tenant.yaml")).unwrap(),
            TENANT,
            "other files are untouched"
        );

        // A Pod is moved through spec.nodeName (in the Kubernetes tenant).
        set_endpoint_node(&lab, "kubernetes:x/p", "n3", &opts).unwrap();
        let after = palisade_model::load_paths(&[&dir], &opts).unwrap();
        assert_eq!(node_of(&after, "kubernetes:x/p"), "n3");

        let err = set_endpoint_node(&lab, "acme:nope", "n2", &opts).unwrap_err();
        assert!(err.to_string().contains("no endpoint acme:nope"), "{err}");
    }

    struct Cleanup(PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
