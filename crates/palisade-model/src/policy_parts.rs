//! Decoding of the parts that native resources and Kubernetes objects share:
//! names, labels, selectors (expression or LabelSelector object), CIDRs,
//! protocols and port numbers, and how a namespace folds into selectors.

use ipnet::IpNet;

use crate::decode::{unknown_word, Doc, Field, Unknown};
use crate::resource::{Labels, Peer, Protocol, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use crate::selector::{Expr, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement};
use crate::syntax;
use crate::yaml::Pos;

/// A resource name (`what` names the field: "name", "tenant", "node" ...).
pub(crate) fn name(doc: &mut Doc, field: &Field, what: &str) -> Option<String> {
    let text = field.str(doc)?;
    match syntax::check_name(what, text) {
        Ok(()) => Some(text.to_string()),
        Err(message) => {
            field.error(doc, message);
            None
        }
    }
}

/// A label map a user sets: keys and values checked, reserved prefixes refused.
pub(crate) fn user_labels(doc: &mut Doc, field: &Field) -> Labels {
    let mut labels = Labels::new();
    for (key, key_pos, value) in field.entries(doc).unwrap_or_default() {
        if let Err(message) = syntax::check_user_label_key(key) {
            doc.error_at(key_pos, &value.path, message);
            continue;
        }
        if let Some(v) = label_value(doc, &value) {
            labels.insert(key.to_string(), v);
        }
    }
    labels
}

fn label_value(doc: &mut Doc, field: &Field) -> Option<String> {
    let text = field.str(doc)?;
    match syntax::check_label_value(text) {
        Ok(()) => Some(text.to_string()),
        Err(message) => {
            field.error(doc, message);
            None
        }
    }
}

/// A selector: the expression form (a string) or a LabelSelector object.
pub(crate) fn selector(doc: &mut Doc, field: &Field) -> Option<Expr> {
    match &field.node.value {
        crate::yaml::Value::Map(_) => Some(label_selector(doc, field)?.to_expr()),
        crate::yaml::Value::Scalar(s) if s.kind == crate::yaml::ScalarKind::Str => {
            expression(doc, field, &s.text)
        }
        _ => {
            field.error(
                doc,
                format!(
                    "expected a selector: a string such as \"app == 'web'\", or a mapping with \
                     matchLabels and matchExpressions; found {}",
                    field.node.describe()
                ),
            );
            None
        }
    }
}

/// Parses an expression, pointing a syntax error at its column in the document.
fn expression(doc: &mut Doc, field: &Field, text: &str) -> Option<Expr> {
    match Expr::parse(text) {
        Ok(expr) => Some(expr),
        Err(e) => {
            let pos = match field.text_col() {
                Some(col) => Pos {
                    line: field.pos().line,
                    col: col + u32::try_from(e.column - 1).unwrap_or(0),
                },
                None => field.pos(),
            };
            doc.error_at(pos, &field.path, e.to_string());
            None
        }
    }
}

/// A Kubernetes LabelSelector object.
pub(crate) fn label_selector(doc: &mut Doc, field: &Field) -> Option<LabelSelector> {
    let map = field.map(doc, &["matchLabels", "matchExpressions"], Unknown::Reject)?;
    let before = doc.error_count();
    let mut selector = LabelSelector::default();
    if let Some(labels) = map.get("matchLabels") {
        for (key, key_pos, value) in labels.entries(doc).unwrap_or_default() {
            if let Err(message) = syntax::check_label_key(key) {
                doc.error_at(key_pos, &value.path, message);
            } else if let Some(v) = label_value(doc, &value) {
                selector.match_labels.push((key.to_string(), v));
            }
        }
    }
    if let Some(exprs) = map.get("matchExpressions") {
        for item in exprs.seq(doc).unwrap_or_default() {
            if let Some(r) = requirement(doc, &item) {
                selector.match_expressions.push(r);
            }
        }
    }
    (doc.error_count() == before).then_some(selector)
}

fn requirement(doc: &mut Doc, field: &Field) -> Option<LabelSelectorRequirement> {
    let map = field.map(doc, &["key", "operator", "values"], Unknown::Reject)?;
    let key = map.required(doc, "key").and_then(|k| {
        let text = k.str(doc)?;
        match syntax::check_label_key(text) {
            Ok(()) => Some(text.to_string()),
            Err(message) => {
                k.error(doc, message);
                None
            }
        }
    });
    let operator = map.required(doc, "operator").and_then(|op| {
        let text = op.str(doc)?;
        let found = LabelSelectorOperator::from_name(text);
        if found.is_none() {
            op.error(
                doc,
                unknown_word(
                    "operator",
                    text,
                    "valid operators",
                    &LabelSelectorOperator::NAMES,
                ),
            );
        }
        found
    })?;
    let values_field = map.get("values");
    let mut values = Vec::new();
    if let Some(f) = &values_field {
        for item in f.seq(doc).unwrap_or_default() {
            if let Some(v) = label_value(doc, &item) {
                values.push(v);
            }
        }
    }
    match operator {
        LabelSelectorOperator::In | LabelSelectorOperator::NotIn if values.is_empty() => {
            let name = if operator == LabelSelectorOperator::In {
                "In"
            } else {
                "NotIn"
            };
            match &values_field {
                Some(f) => f.error(
                    doc,
                    format!("operator {name} needs at least one value in 'values'"),
                ),
                None => map.error_at_key(
                    doc,
                    "operator",
                    format!("operator {name} needs 'values' with at least one value"),
                ),
            }
            return None;
        }
        LabelSelectorOperator::Exists | LabelSelectorOperator::DoesNotExist
            if values_field.is_some() =>
        {
            map.error_at_key(
                doc,
                "values",
                "operators Exists and DoesNotExist take no 'values'; remove them",
            );
            return None;
        }
        _ => {}
    }
    Some(LabelSelectorRequirement {
        key: key?,
        operator,
        values,
    })
}

/// The selector of a policy: inside its namespace when it has one.
pub(crate) fn policy_selector(namespace: Option<&str>, selector: Expr) -> Expr {
    match namespace {
        Some(ns) => Expr::and([Expr::Eq(NAMESPACE_LABEL.into(), ns.into()), selector]),
        None => selector,
    }
}

/// The selector of a peer. A namespace selector matches endpoints whose
/// namespace's labels (copied onto them under `NAMESPACE_LABELS_PREFIX`)
/// match; without one, a namespaced policy's peers are in its namespace.
pub(crate) fn peer_selector(
    policy_namespace: Option<&str>,
    selector: Option<Expr>,
    namespace_selector: Option<Expr>,
) -> Expr {
    let selector = selector.unwrap_or(Expr::All);
    match namespace_selector {
        Some(ns) => Expr::and([
            Expr::Has(NAMESPACE_LABEL.into()),
            ns.with_key_prefix(NAMESPACE_LABELS_PREFIX),
            selector,
        ]),
        None => policy_selector(policy_namespace, selector),
    }
}

/// A CIDR with a prefix length and no host bits.
pub(crate) fn cidr(doc: &mut Doc, field: &Field) -> Option<IpNet> {
    let text = field.str(doc)?;
    match syntax::parse_cidr(text) {
        Ok(net) => Some(net),
        Err(message) => {
            field.error(doc, message);
            None
        }
    }
}

/// A CIDR peer: `cidr` with `except` ranges inside it.
pub(crate) fn cidr_peer(doc: &mut Doc, cidr_field: &Field, except: Option<&Field>) -> Option<Peer> {
    let net = cidr(doc, cidr_field);
    let mut excepts = Vec::new();
    let mut ok = true;
    if let Some(except) = except {
        for item in except.seq(doc).unwrap_or_default() {
            let Some(e) = cidr(doc, &item) else {
                ok = false;
                continue;
            };
            if let Some(net) = &net {
                if let Err(message) = syntax::check_except(net, &e) {
                    item.error(doc, message);
                    ok = false;
                }
            }
            excepts.push(e);
        }
    }
    let net = net?;
    ok.then_some(Peer::Cidr {
        cidr: net,
        except: excepts,
    })
}

/// A protocol name, case-insensitive (`tcp`, `TCP`, `icmpv6`).
pub(crate) fn protocol(doc: &mut Doc, field: &Field) -> Option<Protocol> {
    let text = field.str(doc)?;
    let found = Protocol::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(text));
    if found.is_none() {
        let names = ["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"];
        field.error(doc, unknown_word("protocol", text, "use one of", &names));
    }
    found
}

/// A port number, 1..=65535.
pub(crate) fn port(doc: &mut Doc, field: &Field, what: &str) -> Option<u16> {
    field
        .int_in(doc, what, "ports", 1, 65535)
        .and_then(|n| u16::try_from(n).ok())
}

/// `endPort` checked against `port`.
pub(crate) fn end_port(
    doc: &mut Doc,
    field: &Field,
    port: Option<u16>,
    has_port_key: bool,
) -> Option<u16> {
    let end = self::port(doc, field, "endPort")?;
    match port {
        None if !has_port_key => {
            field.error(
                doc,
                "endPort requires port: set port to the first port of the range",
            );
            None
        }
        Some(port) if end < port => {
            field.error(
                doc,
                format!("endPort {end} is below port {port}: endPort must be >= port"),
            );
            None
        }
        _ => Some(end),
    }
}
