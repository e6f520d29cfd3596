//! Helpers shared by the integration tests: indented YAML literals, and
//! loading a text into its intent or its rendered errors.

use palisade_model::{load_str, Intent, LoadOptions};

/// A tenant `acme` with cidrs, appended after the documents under test so
/// that their line numbers stay as written.
pub const ACME: &str = "apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {cidrs: [10.0.0.0/16, 'fd00::/64']}
";

/// Removes the first newline and the indentation common to all lines, so
/// that YAML can be written indented in Rust source.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The documents followed by the `acme` tenant.
pub fn with_acme(text: &str) -> String {
    format!("{}---\n{ACME}", dedent(text))
}

/// Every error of loading `text` (as file `t.yaml`), rendered.
pub fn errors(text: &str) -> Vec<String> {
    match load_str(text, "t.yaml", &LoadOptions::default()) {
        Ok(_) => panic!("expected errors, the text loaded:\n{text}"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

/// The one error of loading `text` with the `acme` tenant appended.
pub fn error(text: &str) -> String {
    let all = errors(&with_acme(text));
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.into_iter().next().unwrap()
}

/// The intent of `text`, which must be valid.
pub fn load(text: &str) -> Intent {
    load_str(text, "t.yaml", &LoadOptions::default())
        .unwrap_or_else(|d| panic!("expected the text to load, got:\n{d}\n--- text:\n{text}"))
}
