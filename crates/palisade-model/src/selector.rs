//! Label selectors: the expression form (`app == 'web' && tier in {'a','b'}`)
//! and the Kubernetes LabelSelector object both become one `Expr`.
//!
//! Meaning of absent keys: `k == v` and `k in {..}` are false, `k != v` and
//! `k not in {..}` are true (as in Kubernetes `NotIn` and Calico).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::Labels;

mod label_selector;
mod parse;

pub use label_selector::{LabelSelector, LabelSelectorOperator, LabelSelectorRequirement};
pub use parse::SelectorError;

/// A parsed selector with the text it came from (for messages and display).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Selector {
    /// The parsed expression.
    pub expr: Expr,
    /// Canonical text of `expr`, as `Display` of `Expr` writes it.
    pub text: String,
}

impl Selector {
    /// A selector from an expression; `text` is its canonical rendering.
    pub fn new(expr: Expr) -> Selector {
        let text = expr.to_string();
        Selector { expr, text }
    }

    /// Parses the expression form (`app == 'web' && has(tier)`).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector::new(Expr::parse(text)?))
    }

    /// `all()`: every endpoint.
    pub fn all() -> Selector {
        Selector::new(Expr::All)
    }

    /// Whether an endpoint with these labels is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.expr.matches(labels)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expr {
    /// `all()`
    All,
    /// `has(key)`
    Has(String),
    /// `key == 'value'`
    Eq(String, String),
    /// `key != 'value'` (true when the key is absent)
    Ne(String, String),
    /// `key in {'a','b'}`
    In(String, BTreeSet<String>),
    /// `key not in {'a','b'}` (true when the key is absent)
    NotIn(String, BTreeSet<String>),
    /// `!e`
    Not(Box<Expr>),
    /// `a && b && ...` (an empty list is `all()`)
    And(Vec<Expr>),
    /// `a || b || ...` (an empty list selects nothing)
    Or(Vec<Expr>),
}

impl Expr {
    /// Parses the expression form; see the module `parse` for the grammar.
    pub fn parse(text: &str) -> Result<Expr, SelectorError> {
        parse::parse(text)
    }

    /// The conjunction of `terms`, simplified: nested conjunctions are
    /// flattened and `all()` terms dropped; no term gives `all()`, one term
    /// gives that term.
    pub fn and(terms: impl IntoIterator<Item = Expr>) -> Expr {
        let mut flat = Vec::new();
        for term in terms {
            match term {
                Expr::All => {}
                Expr::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Expr::All,
            1 => flat.remove(0),
            _ => Expr::And(flat),
        }
    }

    /// The same expression with every label key prefixed by `prefix` (how a
    /// namespace selector becomes a selector over endpoints' derived labels).
    pub fn with_key_prefix(&self, prefix: &str) -> Expr {
        let p = |k: &String| format!("{prefix}{k}");
        match self {
            Expr::All => Expr::All,
            Expr::Has(k) => Expr::Has(p(k)),
            Expr::Eq(k, v) => Expr::Eq(p(k), v.clone()),
            Expr::Ne(k, v) => Expr::Ne(p(k), v.clone()),
            Expr::In(k, vs) => Expr::In(p(k), vs.clone()),
            Expr::NotIn(k, vs) => Expr::NotIn(p(k), vs.clone()),
            Expr::Not(e) => Expr::Not(Box::new(e.with_key_prefix(prefix))),
            Expr::And(es) => Expr::And(es.iter().map(|e| e.with_key_prefix(prefix)).collect()),
            Expr::Or(es) => Expr::Or(es.iter().map(|e| e.with_key_prefix(prefix)).collect()),
        }
    }

    /// Whether labels satisfy the expression.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(k) => labels.contains_key(k),
            Expr::Eq(k, v) => labels.get(k) == Some(v),
            Expr::Ne(k, v) => labels.get(k) != Some(v),
            Expr::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Expr::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, vs: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in vs.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "'{v}'")?;
    }
    f.write_str("}")
}

impl fmt::Display for Expr {
    /// Writes the expression form. Parsing it back gives an equal `Expr` for
    /// every expression the parser and `Expr::and` build (conjunctions and
    /// disjunctions of two or more terms, non-empty sets, label-syntax keys
    /// and values).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => write!(f, "{k} == '{v}'"),
            Expr::Ne(k, v) => write!(f, "{k} != '{v}'"),
            Expr::In(k, vs) => {
                write!(f, "{k} in ")?;
                write_set(f, vs)
            }
            Expr::NotIn(k, vs) => {
                write!(f, "{k} not in ")?;
                write_set(f, vs)
            }
            Expr::Not(e) => match **e {
                Expr::And(_) | Expr::Or(_) => write!(f, "!({e})"),
                _ => write!(f, "!{e}"),
            },
            Expr::And(es) if es.is_empty() => f.write_str("all()"),
            Expr::Or(es) if es.is_empty() => f.write_str("!all()"),
            Expr::And(es) => write_joined(f, es, " && ", |e| matches!(e, Expr::Or(_))),
            Expr::Or(es) => write_joined(f, es, " || ", |_| false),
        }
    }
}

fn write_joined(
    f: &mut fmt::Formatter<'_>,
    es: &[Expr],
    sep: &str,
    needs_parens: impl Fn(&Expr) -> bool,
) -> fmt::Result {
    for (i, e) in es.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(e) || es.len() > 1 && matches!(e, Expr::And(_) | Expr::Or(_)) {
            write!(f, "({e})")?;
        } else {
            write!(f, "{e}")?;
        }
    }
    Ok(())
}
