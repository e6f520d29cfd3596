//! Problems found in the intent, each saying where it is (file:line:col when
//! the input came from a file, the field path always) and what to do, and the
//! `Origin` of a resource that lets later checks point at its fields.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::yaml::{Node, Pos, Value};

/// One problem in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, when the input came from one (`None` for REST API values).
    pub file: Option<String>,
    /// 1-based line; 0 when unknown (no file, or a problem with the whole file).
    pub line: u32,
    /// 1-based column, in characters; 0 when unknown.
    pub col: u32,
    /// Field path inside the resource, e.g. `spec.ingress[0].ports[1].endPort`;
    /// empty when the problem is the whole document.
    pub path: String,
    /// The resource: `Kind name`, `Kind tenant/name` or `Kind tenant/namespace/name`.
    pub resource: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: Resource: message` with a file, else
    /// `Resource: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => {
                f.write_str(file)?;
                if self.line > 0 {
                    write!(f, ":{}:{}", self.line, self.col)?;
                }
                f.write_str(": ")?;
                if let Some(resource) = &self.resource {
                    write!(f, "{resource}: ")?;
                }
            }
            None => {
                if let Some(resource) = &self.resource {
                    write!(f, "{resource}: ")?;
                }
                if !self.path.is_empty() {
                    write!(f, "{}: ", self.path)?;
                }
            }
        }
        f.write_str(&self.message)
    }
}

/// Every problem of one run (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sorts by file, then line and column; problems without a file keep
    /// their order and come first.
    pub(crate) fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    }
}

impl fmt::Display for Diagnostics {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// `parent.key`, or `parent["odd key"]` for keys that are not identifiers
/// (label keys with dots and slashes).
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[\"{key}\"]"),
    }
}

/// `parent[i]`.
pub(crate) fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Where a resource came from: its file, its label for messages, and the
/// position of every field by path, so that checks after decoding (across
/// fields and resources) can still point at line:col. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Origin {
    pub file: Option<Arc<str>>,
    pub resource: Option<String>,
    positions: Arc<BTreeMap<String, Pos>>,
}

impl Origin {
    /// An origin without file or positions (a resource built in code or
    /// received as a JSON value).
    pub fn detached(resource: String) -> Origin {
        Origin {
            file: None,
            resource: Some(resource),
            positions: Arc::default(),
        }
    }

    /// The origin of a document, indexing every node of it by path.
    pub fn of_document(file: Option<Arc<str>>, resource: Option<String>, root: &Node) -> Origin {
        let mut positions = BTreeMap::new();
        index_node(root, String::new(), &mut positions);
        Origin {
            file,
            resource,
            positions: Arc::new(positions),
        }
    }

    /// Records that `path` (of the resource as palisade sees it) is written at
    /// `pos` (used where a Kubernetes field becomes a native one).
    pub fn alias(&mut self, path: &str, pos: Pos) {
        Arc::make_mut(&mut self.positions).insert(path.to_string(), pos);
    }

    /// The position of `path`, or of its closest ancestor that has one.
    pub fn position(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.positions.get("").copied().unwrap_or(Pos::UNKNOWN),
            }
        }
    }

    /// A problem at `path` of this resource.
    pub fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.position(path);
        Diagnostic {
            file: self.file.as_deref().map(str::to_string),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            resource: self.resource.clone(),
            message: message.into(),
        }
    }

    /// `file:line:col` of `path` for "first defined at ..." messages, when known.
    pub fn location(&self, path: &str) -> Option<String> {
        let file = self.file.as_deref()?;
        let pos = self.position(path);
        Some(format!("{file}:{}:{}", pos.line, pos.col))
    }
}

fn index_node(node: &Node, path: String, out: &mut BTreeMap<String, Pos>) {
    match &node.value {
        Value::Scalar(_) => {}
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                index_node(item, index_path(&path, i), out);
            }
        }
        Value::Map(entries) => {
            for entry in entries {
                index_node(&entry.value, child_path(&path, &entry.key), out);
            }
        }
    }
    out.insert(path, node.pos);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(file: Option<&str>) -> Diagnostic {
        Diagnostic {
            file: file.map(str::to_string),
            line: 14,
            col: 9,
            path: "spec.ingress[0].prots".into(),
            resource: Some("Policy acme/db-ingress".into()),
            message: "unknown field 'prots' (did you mean 'ports'?)".into(),
        }
    }

    #[test]
    fn display_with_and_without_a_file() {
        assert_eq!(
            diag(Some("policies/db.yaml")).to_string(),
            "policies/db.yaml:14:9: Policy acme/db-ingress: unknown field 'prots' (did you mean 'ports'?)"
        );
        assert_eq!(
            diag(None).to_string(),
            "Policy acme/db-ingress: spec.ingress[0].prots: unknown field 'prots' (did you mean 'ports'?)"
        );
        let whole_file = Diagnostic {
            line: 0,
            col: 0,
            resource: None,
            ..diag(Some("x.yaml"))
        };
        assert_eq!(
            whole_file.to_string(),
            "x.yaml: unknown field 'prots' (did you mean 'ports'?)"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(child_path("", "spec"), "spec");
        assert_eq!(child_path("spec", "endPort"), "spec.endPort");
        assert_eq!(
            child_path("metadata.labels", "app.kubernetes.io/name"),
            "metadata.labels[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(index_path("spec.ips", 2), "spec.ips[2]");
    }

    #[test]
    fn origin_falls_back_to_the_closest_ancestor() {
        let parsed = crate::yaml::parse_documents("spec:\n  ips:\n    - 10.0.0.1\n");
        let origin = Origin::of_document(Some("f.yaml".into()), None, &parsed.documents[0]);
        assert_eq!(origin.position("spec.ips[0]"), Pos { line: 3, col: 7 });
        assert_eq!(origin.position("spec.ips[0].x"), Pos { line: 3, col: 7 });
        assert_eq!(origin.position("spec.nothing"), Pos { line: 2, col: 3 });
        assert_eq!(origin.position("other"), Pos { line: 1, col: 1 });
        assert_eq!(origin.location("spec.ips").as_deref(), Some("f.yaml:3:5"));
    }
}
