//! Selector properties: canonical text parses back to the same expression,
//! and the LabelSelector object means the same as the expression form.

use std::collections::BTreeSet;

use palisade_model::{Expr, Labels, Peer, Selector};
use proptest::prelude::*;

use crate::common::{load, ACME};

/// Label keys: optional DNS prefix, then a name; includes the words of the grammar.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]([a-z0-9.-]{0,6}[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?",
        "[A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?",
        Just("all".to_string()),
        Just("has".to_string()),
        Just("in".to_string()),
        Just("not".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9]([A-Za-z0-9_.-]{0,6}[A-Za-z0-9])?",
    ]
}

fn values() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(value(), 1..4)
}

/// Expressions as the parser builds them: `&&`/`||` of two or more terms.
fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::All),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), values()).prop_map(|(k, vs)| Expr::In(k, vs)),
        (key(), values()).prop_map(|(k, vs)| Expr::NotIn(k, vs)),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

proptest! {
    #[test]
    fn display_parses_back_to_the_same_expression(e in expr()) {
        let text = e.to_string();
        let parsed = Expr::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&e), "text: {}", text);
    }
}

/// A LabelSelector as the test writes it: small alphabets so that random
/// label sets often match.
#[derive(Debug, Clone)]
struct Ls {
    match_labels: Vec<(String, String)>,
    exprs: Vec<(String, &'static str, Vec<String>)>,
}

fn small_key() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("x.io/d")].prop_map(str::to_string)
}

fn small_value() -> impl Strategy<Value = String> {
    prop_oneof![Just("1"), Just("2"), Just("3")].prop_map(str::to_string)
}

fn label_selector() -> impl Strategy<Value = Ls> {
    let requirement = (
        small_key(),
        prop_oneof![
            Just("In"),
            Just("NotIn"),
            Just("Exists"),
            Just("DoesNotExist")
        ],
        prop::collection::vec(small_value(), 1..3),
    )
        .prop_map(|(k, op, vs)| {
            let vs = if matches!(op, "In" | "NotIn") {
                vs
            } else {
                vec![]
            };
            (k, op, vs)
        });
    (
        prop::collection::btree_map(small_key(), small_value(), 0..3),
        prop::collection::vec(requirement, 0..3),
    )
        .prop_map(|(ml, exprs)| Ls {
            match_labels: ml.into_iter().collect(),
            exprs,
        })
}

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(small_key(), small_value(), 0..4)
}

impl Ls {
    /// Kubernetes semantics, written out independently of the crate.
    fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op, vs)| match *op {
                "In" => labels.get(k).is_some_and(|v| vs.contains(v)),
                "NotIn" => !labels.get(k).is_some_and(|v| vs.contains(v)),
                "Exists" => labels.contains_key(k),
                _ => !labels.contains_key(k),
            })
    }

    fn yaml(&self) -> String {
        let ml: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}: '{v}'"))
            .collect();
        let ex: Vec<String> = self
            .exprs
            .iter()
            .map(|(k, op, vs)| {
                if vs.is_empty() {
                    format!("{{key: {k}, operator: {op}}}")
                } else {
                    format!(
                        "{{key: {k}, operator: {op}, values: ['{}']}}",
                        vs.join("', '")
                    )
                }
            })
            .collect();
        format!(
            "{{matchLabels: {{{}}}, matchExpressions: [{}]}}",
            ml.join(", "),
            ex.join(", ")
        )
    }

    fn expression(&self) -> String {
        let mut terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k} == '{v}'"))
            .collect();
        for (k, op, vs) in &self.exprs {
            let set = format!("{{'{}'}}", vs.join("', '"));
            terms.push(match *op {
                "In" => format!("{k} in {set}"),
                "NotIn" => format!("{k} not in {set}"),
                "Exists" => format!("has({k})"),
                _ => format!("!has({k})"),
            });
        }
        if terms.is_empty() {
            "all()".into()
        } else {
            terms.join(" && ")
        }
    }
}

/// The selector of a policy written with `selector` (YAML).
fn policy_selector(selector: &str) -> Selector {
    let text = format!(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: p, tenant: acme}}\nspec:\n  selector: {selector}\n---\n{ACME}"
    );
    load(&text).policies.remove(0).selector
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn label_selector_and_expression_are_one_selector(ls in label_selector(), sets in prop::collection::vec(labels(), 8)) {
        let from_object = policy_selector(&ls.yaml());
        let from_text = policy_selector(&format!("\"{}\"", ls.expression()));
        prop_assert_eq!(&from_object, &from_text);
        for labels in &sets {
            prop_assert_eq!(from_object.matches(labels), ls.matches(labels), "labels {:?}", labels);
        }
    }
}

#[test]
fn both_spellings_in_peers_too() {
    let text = format!(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: p, tenant: acme}}\nspec:\n  selector: {{}}\n  egress:\n    - action: allow\n      to:\n        - selector: {{matchLabels: {{app: db}}, matchExpressions: [{{key: env, operator: NotIn, values: [dev]}}]}}\n        - selector: app == 'db' && env not in {{'dev'}}\n---\n{ACME}"
    );
    let p = load(&text).policies.remove(0);
    assert_eq!(p.selector, Selector::all());
    let peers = p.egress.unwrap().remove(0).peers.unwrap();
    assert_eq!(peers[0], peers[1]);
    assert!(
        matches!(&peers[0], Peer::Selector(s) if s.text == "app == 'db' && env not in {'dev'}")
    );
}
