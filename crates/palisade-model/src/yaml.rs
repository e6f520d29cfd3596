//! YAML (and JSON, which the same parser reads) into a small tree whose every
//! node knows its line and column, so that later stages can point at the
//! exact place of a problem. Plain scalars are typed with the YAML 1.2 core
//! schema (`80` is an integer, `"80"` a string, `true` a boolean).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// A 1-based line and column (in characters); `0:0` when unknown (values
/// that did not come from text, such as REST API JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// The position of values that did not come from text.
    pub const UNKNOWN: Pos = Pos { line: 0, col: 0 };

    fn start_of(span: &Span) -> Pos {
        Pos {
            line: to_u32(span.start.line()),
            col: to_u32(span.start.col() + 1),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One node of a document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` of a mapping. Keys are always text (their source form).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// A scalar: its text and its type under the core schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    pub text: String,
    pub kind: ScalarKind,
    /// Column of the first character of `text` in the document, when `text`
    /// maps one to one onto a single source line (plain, or quoted without
    /// escapes); lets a selector error point inside the string.
    pub text_col: Option<u32>,
}

/// Type of a scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

impl Node {
    /// Whether the node is null (`~`, `null`, or nothing at all).
    pub fn is_null(&self) -> bool {
        matches!(
            self.value,
            Value::Scalar(Scalar {
                kind: ScalarKind::Null,
                ..
            })
        )
    }

    /// How the node reads in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar(s) => match s.kind {
                ScalarKind::Null => "nothing (null)".into(),
                ScalarKind::Bool(b) => format!("the boolean {b}"),
                ScalarKind::Int(i) => format!("the integer {i}"),
                ScalarKind::Float(_) => format!("the number {}", s.text),
                ScalarKind::Str => format!("the string '{}'", s.text),
            },
        }
    }
}

/// A problem the YAML reader found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The documents of one text, and the problems found reading it. A syntax
/// error ends reading: the documents before it are kept.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// Every non-empty document (empty and comment-only ones are skipped).
    pub documents: Vec<Node>,
    pub errors: Vec<YamlError>,
}

/// A node being built: a sequence or mapping whose end is not reached yet.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        key: Option<(String, Pos)>,
    },
}

/// Builds nodes from parser events.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    errors: Vec<YamlError>,
}

impl Builder {
    /// Places a finished node into its parent, or makes it the document root.
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match node.value {
                        Value::Scalar(s) => s.text,
                        _ => {
                            self.errors.push(YamlError {
                                pos: node.pos,
                                message:
                                    "a mapping key must be a plain string, not a list or mapping"
                                        .into(),
                            });
                            String::new()
                        }
                    };
                    *key = Some((text, node.pos));
                }
                Some((text, key_pos)) => {
                    if let Some(first) = entries.iter().find(|e| e.key == text) {
                        self.errors.push(YamlError {
                            pos: key_pos,
                            message: format!(
                                "duplicate key '{text}' (first at line {}); remove one of them",
                                first.key_pos.line
                            ),
                        });
                    } else {
                        entries.push(Entry {
                            key: text,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
    }

    /// Local tags (`!name`) mean nothing to palisade; they almost always are
    /// an unquoted selector such as `!has(legacy)`, which YAML reads as a tag.
    fn check_tag(&mut self, tag: Option<&Tag>, pos: Pos) {
        if let Some(tag) = tag.filter(|t| !t.is_yaml_core_schema()) {
            self.errors.push(YamlError {
                pos,
                message: format!(
                    "YAML tag '{tag}' is not supported; quote a value that starts with '!', \
                     e.g. \"{tag} ...\""
                ),
            });
        }
    }

    fn event(&mut self, event: Event<'_>, span: &Span) {
        let pos = Pos::start_of(span);
        match event {
            Event::DocumentStart(_) => {
                self.root = None;
                self.stack.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                let forced_str = tag.is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let scalar = make_scalar(text.into_owned(), style, span, forced_str);
                self.push(
                    Node {
                        pos,
                        value: Value::Scalar(scalar),
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.stack.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_deref(), pos);
                self.stack.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                // The parser rejects unknown anchors, so the lookup succeeds.
                if let Some(node) = self.anchors.get(&id).cloned() {
                    self.push(node, 0);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// Reads every document of a YAML or JSON text.
pub(crate) fn parse_documents(text: &str) -> Parsed {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    let mut parsed = Parsed::default();
    while let Some(result) = parser.next_event() {
        match result {
            Ok((Event::DocumentEnd, _)) => {
                if let Some(root) = builder.root.take() {
                    if !root.is_null() {
                        parsed.documents.push(root);
                    }
                }
            }
            Ok((event, span)) => builder.event(event, &span),
            Err(e) => {
                let marker = e.marker();
                builder.errors.push(YamlError {
                    pos: Pos {
                        line: to_u32(marker.line()),
                        col: to_u32(marker.col() + 1),
                    },
                    message: format!("YAML syntax error: {}", e.info()),
                });
                break;
            }
        }
    }
    parsed.errors = builder.errors;
    parsed
}

fn make_scalar(text: String, style: ScalarStyle, span: &Span, forced_str: bool) -> Scalar {
    let single_line = span.start.line() == span.end.line();
    let width = span.end.col().saturating_sub(span.start.col());
    let chars = text.chars().count();
    let start = to_u32(span.start.col() + 1);
    let (kind, text_col) = match style {
        ScalarStyle::Plain => {
            let kind = if forced_str {
                ScalarKind::Str
            } else {
                resolve_plain(&text)
            };
            (kind, (single_line && width == chars).then_some(start))
        }
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => (
            ScalarKind::Str,
            // Any escape makes the source longer than the value.
            (single_line && width == chars + 2).then_some(start + 1),
        ),
        ScalarStyle::Literal | ScalarStyle::Folded => (ScalarKind::Str, None),
    };
    Scalar {
        text,
        kind,
        text_col,
    }
}

/// Types a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarKind::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(i) = i64::from_str_radix(hex, 16) {
                return ScalarKind::Int(i);
            }
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            if let Ok(i) = i64::from_str_radix(oct, 8) {
                return ScalarKind::Int(i);
            }
        }
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(i) => ScalarKind::Int(i),
            // Too large for an integer: still a number, so that range checks say so.
            Err(_) => ScalarKind::Float(text.parse().unwrap_or(f64::INFINITY)),
        };
    }
    if is_core_float(digits) {
        if let Ok(f) = text.parse::<f64>() {
            return ScalarKind::Float(f);
        }
    }
    ScalarKind::Str
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (sign already removed).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(frac) => all_digits(int) && all_digits(frac) && !(int.is_empty() && frac.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

/// The tree of a JSON value, without positions.
pub(crate) fn from_json(value: &serde_json::Value) -> Node {
    let scalar = |text: String, kind: ScalarKind| {
        Value::Scalar(Scalar {
            text,
            kind,
            text_col: None,
        })
    };
    let value = match value {
        serde_json::Value::Null => scalar(String::new(), ScalarKind::Null),
        serde_json::Value::Bool(b) => scalar(b.to_string(), ScalarKind::Bool(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => scalar(n.to_string(), ScalarKind::Int(i)),
            None => scalar(
                n.to_string(),
                ScalarKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            ),
        },
        serde_json::Value::String(s) => scalar(s.clone(), ScalarKind::Str),
        serde_json::Value::Array(items) => Value::Seq(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Entry {
                    key: k.clone(),
                    key_pos: Pos::UNKNOWN,
                    value: from_json(v),
                })
                .collect(),
        ),
    };
    Node {
        pos: Pos::UNKNOWN,
        value,
    }
}

/// The JSON value of a tree (the inverse of [`from_json`]): what the CLI sends
/// to the control plane, read by the same parser as every local check.
/// Numbers that JSON cannot hold (`.inf`, `.nan`) stay strings, which
/// validation then reports as it would report any string in their place.
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Scalar(s) => match s.kind {
            ScalarKind::Null => serde_json::Value::Null,
            ScalarKind::Bool(b) => serde_json::Value::Bool(b),
            ScalarKind::Int(i) => serde_json::Value::from(i),
            ScalarKind::Float(f) => serde_json::Number::from_f64(f)
                .map_or_else(|| serde_json::Value::String(s.text.clone()), Into::into),
            ScalarKind::Str => serde_json::Value::String(s.text.clone()),
        },
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    fn scalar(node: &Node) -> &Scalar {
        match &node.value {
            Value::Scalar(s) => s,
            other => panic!("expected a scalar, got {other:?}"),
        }
    }

    #[test]
    fn to_json_keeps_core_schema_types() {
        let parsed = parse_documents("a: 80\nb: \"80\"\nc: [true, ~, 1.5]\n");
        assert_eq!(
            to_json(&parsed.documents[0]),
            serde_json::json!({"a": 80, "b": "80", "c": [true, null, 1.5]})
        );
    }

    #[test]
    fn positions_are_one_based() {
        let parsed = parse_documents("a: 1\nb:\n  - x\n  - \"y\"\n");
        assert!(parsed.errors.is_empty());
        let root = &parsed.documents[0];
        assert_eq!(root.pos, Pos { line: 1, col: 1 });
        let entries = map(root);
        assert_eq!(entries[0].key_pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].value.pos, Pos { line: 1, col: 4 });
        assert_eq!(entries[1].key_pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &entries[1].value.value else {
            panic!("b is not a list")
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        assert_eq!(scalar(&items[1]).text_col, Some(6));
    }

    #[test]
    fn multi_document_skips_empty_and_comment_only_documents() {
        let text = "# head\n---\na: 1\n---\n# only a comment\n---\n---\nb: 2\n";
        let parsed = parse_documents(text);
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.documents.len(), 2);
        assert_eq!(parsed.documents[1].pos.line, 8);
        assert!(parse_documents("").documents.is_empty());
        assert!(parse_documents("# nothing\n").documents.is_empty());
    }

    #[test]
    fn core_schema_typing() {
        let parsed = parse_documents(
            "[80, '80', 0x10, -3, 1.5, 1e3, true, ~, null, 10.0.0.0/8, 02:00:0a:00:01:0a, !!str 7, .5.]",
        );
        let Value::Seq(items) = &parsed.documents[0].value else {
            panic!("not a list")
        };
        let kinds: Vec<ScalarKind> = items.iter().map(|n| scalar(n).kind).collect();
        assert_eq!(
            kinds,
            vec![
                ScalarKind::Int(80),
                ScalarKind::Str,
                ScalarKind::Int(16),
                ScalarKind::Int(-3),
                ScalarKind::Float(1.5),
                ScalarKind::Float(1000.0),
                ScalarKind::Bool(true),
                ScalarKind::Null,
                ScalarKind::Null,
                ScalarKind::Str,
                ScalarKind::Str,
                ScalarKind::Str,
                ScalarKind::Str,
            ]
        );
    }

    #[test]
    fn json_is_read_by_the_same_parser() {
        let parsed = parse_documents("{\"kind\": \"Tenant\",\n \"n\": [1, \"2\"]}");
        assert!(parsed.errors.is_empty());
        let entries = map(&parsed.documents[0]);
        assert_eq!(entries[0].key, "kind");
        assert_eq!(entries[1].key_pos, Pos { line: 2, col: 2 });
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_are_reported() {
        let parsed = parse_documents("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            parsed.errors,
            vec![YamlError {
                pos: Pos { line: 3, col: 1 },
                message: "duplicate key 'a' (first at line 1); remove one of them".into()
            }]
        );
        let parsed = parse_documents("a: 1\n---\nb: [1, 2\nc: 3\n");
        assert_eq!(
            parsed.documents.len(),
            1,
            "the document before the error is kept"
        );
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].message.starts_with("YAML syntax error"));
    }

    #[test]
    fn local_tags_are_reported_as_unquoted_values() {
        let parsed = parse_documents("a: !has(legacy)\nb: !!str 5\n");
        assert_eq!(
            parsed.errors,
            vec![YamlError {
                pos: Pos { line: 1, col: 4 },
                message: "YAML tag '!has(legacy)' is not supported; quote a value that starts \
                          with '!', e.g. \"!has(legacy) ...\""
                    .into()
            }]
        );
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let parsed = parse_documents("a: &x {k: v}\nb: *x\n");
        let entries = map(&parsed.documents[0]);
        assert_eq!(map(&entries[1].value)[0].key, "k");
    }

    #[test]
    fn text_col_only_when_the_text_maps_onto_the_source() {
        let parsed = parse_documents("a: \"x\\ty\"\nb: 'it''s'\nc: |\n  block\nd: plain text\n");
        let entries = map(&parsed.documents[0]);
        assert_eq!(scalar(&entries[0].value).text_col, None);
        assert_eq!(scalar(&entries[1].value).text_col, None);
        assert_eq!(scalar(&entries[2].value).text_col, None);
        assert_eq!(scalar(&entries[3].value).text_col, Some(4));
    }
}
