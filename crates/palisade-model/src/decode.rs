//! Reading typed values out of the positioned tree. Every wrong node becomes
//! one diagnostic with its line, column and field path; decoding goes on so
//! that one run reports every problem.

use std::sync::Arc;

use crate::diagnostic::{child_path, index_path, Diagnostic};
use crate::yaml::{Entry, Node, Pos, ScalarKind, Value};

/// Collects the problems of one document.
pub(crate) struct Doc {
    pub file: Option<Arc<str>>,
    /// The resource label, once metadata is read.
    pub resource: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Doc {
    /// A collector for a document of `file` (none for REST API values).
    pub fn new(file: Option<Arc<str>>) -> Doc {
        Doc {
            file,
            resource: None,
            diagnostics: Vec::new(),
        }
    }

    /// Records a problem at `pos`, for the field at `path`.
    pub fn error_at(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.file.as_deref().map(str::to_string),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            resource: self.resource.clone(),
            message: message.into(),
        });
    }

    /// Number of problems so far (to tell whether a part decoded cleanly).
    pub fn error_count(&self) -> usize {
        self.diagnostics.len()
    }
}

/// The closest candidate to a misspelt word, if one is close enough.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let candidate = c.to_ascii_lowercase();
        let score = strsim::jaro_winkler(&word, &candidate);
        // Jaro-Winkler misses swapped letters in short words (TPC, TCP).
        let close = score >= 0.8 || strsim::osa_distance(&word, &candidate) <= 1;
        // Ties keep the first candidate, so that suggestions follow list order.
        if close && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `unknown {what} 'x' (did you mean 'y'?)` or `unknown {what} 'x'; {list_name}: a, b, c`.
pub(crate) fn unknown_word(what: &str, word: &str, list_name: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates) {
        Some(best) => format!("unknown {what} '{word}' (did you mean '{best}'?)"),
        None => format!(
            "unknown {what} '{word}'; {list_name}: {}",
            candidates.join(", ")
        ),
    }
}

/// Whether a mapping accepts only the listed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// Unknown fields are errors (palisade's own kinds, NetworkPolicy specs).
    Reject,
    /// Unknown fields are ignored (Kubernetes objects carry many palisade does not read).
    Ignore,
}

/// A node and its field path.
#[derive(Debug, Clone)]
pub(crate) struct Field<'n> {
    pub node: &'n Node,
    pub path: String,
}

impl<'n> Field<'n> {
    /// The document root.
    pub fn root(node: &'n Node) -> Field<'n> {
        Field {
            node,
            path: String::new(),
        }
    }

    /// Where the node is.
    pub fn pos(&self) -> Pos {
        self.node.pos
    }

    /// Records a problem with this field.
    pub fn error(&self, doc: &mut Doc, message: impl Into<String>) {
        doc.error_at(self.node.pos, &self.path, message);
    }

    fn type_error(&self, doc: &mut Doc, expected: &str) {
        let found = self.node.describe();
        let hint = match &self.node.value {
            crate::yaml::Value::Scalar(s)
                if expected == "a string" && s.kind != ScalarKind::Null =>
            {
                format!("; quote it to make it a string: \"{}\"", s.text)
            }
            _ => String::new(),
        };
        self.error(doc, format!("expected {expected}, found {found}{hint}"));
    }

    /// The text of a string scalar.
    pub fn str(&self, doc: &mut Doc) -> Option<&'n str> {
        match &self.node.value {
            Value::Scalar(s) if s.kind == ScalarKind::Str => Some(&s.text),
            _ => {
                self.type_error(doc, "a string");
                None
            }
        }
    }

    /// Column in the document of the first character of the string, when it
    /// maps one to one onto the source.
    pub fn text_col(&self) -> Option<u32> {
        match &self.node.value {
            Value::Scalar(s) => s.text_col,
            _ => None,
        }
    }

    /// An integer scalar.
    pub fn int(&self, doc: &mut Doc) -> Option<i64> {
        match &self.node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(i) => Some(i),
                _ => {
                    self.type_error(doc, "an integer");
                    None
                }
            },
            _ => {
                self.type_error(doc, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`; `what` names it in the message
    /// ("port 0 is out of range: ports are 1..=65535").
    pub fn int_in(
        &self,
        doc: &mut Doc,
        what: &str,
        plural: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let n = self.int(doc)?;
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            self.error(
                doc,
                format!("{what} {n} is out of range: {plural} are {min}..={max}"),
            );
            None
        }
    }

    /// The items of a list, each with its path.
    pub fn seq(&self, doc: &mut Doc) -> Option<Vec<Field<'n>>> {
        match &self.node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| Field {
                        node,
                        path: index_path(&self.path, i),
                    })
                    .collect(),
            ),
            _ => {
                self.type_error(doc, "a list");
                None
            }
        }
    }

    /// The entries of a mapping with arbitrary keys (labels): key, key
    /// position, value.
    pub fn entries(&self, doc: &mut Doc) -> Option<Vec<(&'n str, Pos, Field<'n>)>> {
        match &self.node.value {
            Value::Map(entries) => Some(
                entries
                    .iter()
                    .map(|e| {
                        (
                            e.key.as_str(),
                            e.key_pos,
                            Field {
                                node: &e.value,
                                path: child_path(&self.path, &e.key),
                            },
                        )
                    })
                    .collect(),
            ),
            _ => {
                self.type_error(doc, "a mapping");
                None
            }
        }
    }

    /// A mapping with the given fields; others are reported (or ignored).
    pub fn map(&self, doc: &mut Doc, fields: &[&str], unknown: Unknown) -> Option<Map<'n>> {
        let Value::Map(entries) = &self.node.value else {
            self.type_error(doc, "a mapping");
            return None;
        };
        if unknown == Unknown::Reject {
            for e in entries.iter().filter(|e| !fields.contains(&e.key.as_str())) {
                doc.error_at(
                    e.key_pos,
                    &child_path(&self.path, &e.key),
                    unknown_word("field", &e.key, "valid fields", fields),
                );
            }
        }
        Some(Map {
            field: self.clone(),
            entries,
        })
    }

    /// A string that must be one of `options` (exact spelling).
    pub fn choice(
        &self,
        doc: &mut Doc,
        what: &str,
        options: &[&'static str],
    ) -> Option<&'static str> {
        let text = self.str(doc)?;
        if let Some(found) = options.iter().find(|o| **o == text) {
            return Some(found);
        }
        let message = match did_you_mean(text, options) {
            Some(best) => format!("unknown {what} '{text}' (did you mean '{best}'?)"),
            None => format!("unknown {what} '{text}'; use one of {}", options.join(", ")),
        };
        self.error(doc, message);
        None
    }
}

/// A mapping node being read.
pub(crate) struct Map<'n> {
    pub field: Field<'n>,
    entries: &'n [Entry],
}

impl<'n> Map<'n> {
    fn entry(&self, key: &str) -> Option<&'n Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The field `key`; `None` when absent or null (null counts as absent,
    /// as in Kubernetes).
    pub fn get(&self, key: &str) -> Option<Field<'n>> {
        self.entry(key)
            .filter(|e| !e.value.is_null())
            .map(|e| Field {
                node: &e.value,
                path: child_path(&self.field.path, key),
            })
    }

    /// Position of the key `key`, when present.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entry(key).map(|e| e.key_pos)
    }

    /// The field `key`, reporting its absence.
    pub fn required(&self, doc: &mut Doc, key: &str) -> Option<Field<'n>> {
        let found = self.get(key);
        if found.is_none() {
            let path = child_path(&self.field.path, key);
            match self.entry(key) {
                Some(e) => doc.error_at(
                    e.key_pos,
                    &path,
                    format!("field '{key}' has no value; it is required"),
                ),
                None => doc.error_at(
                    self.field.pos(),
                    &path,
                    format!("missing required field '{key}'"),
                ),
            }
        }
        found
    }

    /// Records a problem at the key `key` (or the mapping when absent).
    pub fn error_at_key(&self, doc: &mut Doc, key: &str, message: impl Into<String>) {
        let pos = self.key_pos(key).unwrap_or(self.field.pos());
        doc.error_at(pos, &child_path(&self.field.path, key), message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_words_only() {
        let fields = ["action", "from", "to", "ports"];
        assert_eq!(did_you_mean("prots", &fields), Some("ports"));
        assert_eq!(did_you_mean("Action", &fields), Some("action"));
        assert_eq!(did_you_mean("zzz", &fields), None);
        assert_eq!(
            unknown_word("field", "zzz", "valid fields", &fields),
            "unknown field 'zzz'; valid fields: action, from, to, ports"
        );
    }

    #[test]
    fn type_errors_name_the_expected_type() {
        let parsed = crate::yaml::parse_documents("a: 80\nb: '80'\nc: [1]\n");
        let root = Field::root(&parsed.documents[0]);
        let mut doc = Doc::new(None);
        let map = root
            .map(&mut doc, &["a", "b", "c"], Unknown::Reject)
            .unwrap();
        assert_eq!(map.get("a").unwrap().str(&mut doc), None);
        assert_eq!(map.get("b").unwrap().int(&mut doc), None);
        assert_eq!(map.get("c").unwrap().int(&mut doc), None);
        let messages: Vec<&str> = doc.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "expected a string, found the integer 80; quote it to make it a string: \"80\"",
                "expected an integer, found the string '80'",
                "expected an integer, found a list",
            ]
        );
        assert_eq!(doc.diagnostics[1].path, "b");
        assert_eq!((doc.diagnostics[1].line, doc.diagnostics[1].col), (2, 4));
    }
}
