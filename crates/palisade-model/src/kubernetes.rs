//! Import of Kubernetes objects with Kubernetes semantics: a `v1 Pod` becomes
//! an Endpoint, a `networking.k8s.io/v1 NetworkPolicy` a namespaced Policy in
//! tier `default`. (A `v1 Namespace` only gives labels; see `document`.)
//!
//! Unknown fields of Pods (spec, status, containers) are ignored, since
//! Kubernetes adds fields often and palisade reads only a few; inside a
//! NetworkPolicy spec every field matters, so unknown ones are errors.

use crate::decode::{Doc, Field, Map, Unknown};
use crate::document::Meta;
use crate::policy_parts::{self as parts, peer_selector, policy_selector};
use crate::resource::{
    Action, Direction, Endpoint, Mode, Peer, Policy, PortMatch, Protocol, Rule, ServePort,
    DEFAULT_TIER,
};
use crate::selector::{Expr, Selector};
use crate::syntax;
use crate::yaml::{Pos, ScalarKind, Value};

/// A Pod as an Endpoint, with the positions of its IPs under the Endpoint's
/// paths (`spec.ips[i]`) for later checks.
pub(crate) fn pod(doc: &mut Doc, map: &Map, meta: &Meta) -> Option<(Endpoint, Vec<(String, Pos)>)> {
    let spec = map
        .required(doc, "spec")
        .and_then(|f| f.map(doc, &[], Unknown::Ignore));
    let node = spec.as_ref().and_then(|spec| match spec.get("nodeName") {
        Some(f) => parts::name(doc, &f, "nodeName"),
        None => {
            spec.field.error(
                doc,
                "missing spec.nodeName: palisade needs the node a pod runs on; \
                 export pods after the scheduler has placed them (kubectl get pods -o yaml)",
            );
            None
        }
    });
    let mut serve = Vec::new();
    if let Some(containers) = spec.as_ref().and_then(|s| s.get("containers")) {
        for container in containers.seq(doc).unwrap_or_default() {
            let Some(c) = container.map(doc, &[], Unknown::Ignore) else {
                continue;
            };
            for port in c.get("ports").and_then(|f| f.seq(doc)).unwrap_or_default() {
                if let Some(p) = container_port(doc, &port) {
                    serve.push(p);
                }
            }
        }
    }
    let (ips, aliases) = pod_ips(doc, map, meta);
    let endpoint = Endpoint {
        tenant: meta.tenant.clone()?,
        namespace: meta.namespace.clone(),
        name: meta.name.clone()?,
        labels: meta.labels.clone(),
        ips,
        mac: None,
        node: node?,
        interface: None,
        serve,
    };
    Some((endpoint, aliases))
}

/// A container port the lab serves (SCTP ports are skipped: the lab's
/// responders speak TCP and UDP only).
fn container_port(doc: &mut Doc, field: &Field) -> Option<ServePort> {
    let map = field.map(doc, &[], Unknown::Ignore)?;
    let port = map
        .required(doc, "containerPort")
        .and_then(|f| parts::port(doc, &f, "containerPort"));
    let protocol = match map.get("protocol") {
        Some(f) => parts::protocol(doc, &f)?,
        None => Protocol::Tcp,
    };
    match protocol {
        Protocol::Tcp | Protocol::Udp => Some(ServePort {
            protocol,
            port: port?,
        }),
        _ => None,
    }
}

/// `status.podIPs[].ip`, else `status.podIP`.
fn pod_ips(doc: &mut Doc, map: &Map, meta: &Meta) -> (Vec<std::net::IpAddr>, Vec<(String, Pos)>) {
    let before = doc.error_count();
    let mut ips = Vec::new();
    let mut aliases = Vec::new();
    let status = map
        .get("status")
        .and_then(|f| f.map(doc, &[], Unknown::Ignore));
    let mut fields = Vec::new();
    if let Some(status) = &status {
        for item in status
            .get("podIPs")
            .and_then(|f| f.seq(doc))
            .unwrap_or_default()
        {
            if let Some(ip) = item
                .map(doc, &[], Unknown::Ignore)
                .and_then(|m| m.required(doc, "ip"))
            {
                fields.push(ip);
            }
        }
        if fields.is_empty() {
            fields.extend(status.get("podIP"));
        }
    }
    for f in fields {
        let Some(text) = f.str(doc) else { continue };
        match syntax::parse_ip(text) {
            Ok(ip) if !ips.contains(&ip) => {
                aliases.push((format!("spec.ips[{}]", ips.len()), f.pos()));
                ips.push(ip);
            }
            Ok(_) => {}
            Err(message) => f.error(doc, message),
        }
    }
    if ips.is_empty() && doc.error_count() == before {
        let at = status.as_ref().map_or(&map.field, |s| &s.field);
        at.error(
            doc,
            format!(
                "pod '{}' has no IP (status.podIPs and status.podIP are empty); palisade needs \
                 the pod's address: export pods once they are running",
                meta.name.as_deref().unwrap_or("?")
            ),
        );
    }
    (ips, aliases)
}

/// A NetworkPolicy as a namespaced Policy in tier `default`.
pub(crate) fn network_policy(doc: &mut Doc, spec: Option<&Field>, meta: &Meta) -> Option<Policy> {
    let ns = meta.namespace.as_deref();
    let map = match spec {
        Some(f) => Some(f.map(
            doc,
            &["podSelector", "policyTypes", "ingress", "egress"],
            Unknown::Reject,
        )?),
        // No spec: every pod of the namespace, isolated for ingress.
        None => None,
    };
    let get = |key: &str| map.as_ref().and_then(|m| m.get(key));
    let selector = match get("podSelector") {
        Some(f) => parts::label_selector(doc, &f)?.to_expr(),
        None => Expr::All,
    };
    let types: Vec<&str> = get("policyTypes")
        .map(|f| {
            f.seq(doc)
                .unwrap_or_default()
                .iter()
                .filter_map(|item| item.choice(doc, "policy type", &["Ingress", "Egress"]))
                .collect()
        })
        .unwrap_or_default();
    let ingress_rules = rules(doc, get("ingress"), Direction::Ingress, ns);
    let egress_rules = rules(doc, get("egress"), Direction::Egress, ns);
    // Kubernetes defaulting: no policyTypes means Ingress, plus Egress when
    // the policy has at least one egress rule.
    let (ingress, egress) = if types.is_empty() {
        (true, !egress_rules.is_empty())
    } else {
        (types.contains(&"Ingress"), types.contains(&"Egress"))
    };
    Some(Policy {
        tenant: meta.tenant.clone()?,
        namespace: meta.namespace.clone(),
        name: meta.name.clone()?,
        tier: DEFAULT_TIER.to_string(),
        order: None,
        selector: Selector::new(policy_selector(ns, selector)),
        mode: Mode::Enforce,
        ingress: ingress.then_some(ingress_rules),
        egress: egress.then_some(egress_rules),
    })
}

fn rules(doc: &mut Doc, field: Option<Field>, dir: Direction, ns: Option<&str>) -> Vec<Rule> {
    let Some(field) = field else {
        return Vec::new();
    };
    let peer_key = match dir {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let mut rules = Vec::new();
    for item in field.seq(doc).unwrap_or_default() {
        let Some(map) = item.map(doc, &[peer_key, "ports"], Unknown::Reject) else {
            continue;
        };
        // Absent or empty `from`/`to` is any peer, absent or empty `ports` any port.
        let peers: Vec<Peer> = map
            .get(peer_key)
            .and_then(|f| f.seq(doc))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| peer(doc, p, ns))
            .collect();
        let ports: Vec<PortMatch> = map
            .get("ports")
            .and_then(|f| f.seq(doc))
            .unwrap_or_default()
            .iter()
            .filter_map(|p| port(doc, p))
            .collect();
        rules.push(Rule {
            action: Action::Allow,
            peers: (!peers.is_empty()).then_some(peers),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    rules
}

fn peer(doc: &mut Doc, field: &Field, ns: Option<&str>) -> Option<Peer> {
    let map = field.map(
        doc,
        &["podSelector", "namespaceSelector", "ipBlock"],
        Unknown::Reject,
    )?;
    let pod_selector = map.get("podSelector");
    let namespace_selector = map.get("namespaceSelector");
    if let Some(block) = map.get("ipBlock") {
        if pod_selector.is_some() || namespace_selector.is_some() {
            map.error_at_key(
                doc,
                "ipBlock",
                "'ipBlock' cannot be combined with 'podSelector' or 'namespaceSelector' in one peer; \
                 write a separate peer",
            );
            return None;
        }
        let b = block.map(doc, &["cidr", "except"], Unknown::Reject)?;
        let cidr = b.required(doc, "cidr")?;
        return parts::cidr_peer(doc, &cidr, b.get("except").as_ref());
    }
    if pod_selector.is_none() && namespace_selector.is_none() {
        field.error(
            doc,
            "a peer needs 'podSelector', 'namespaceSelector' or 'ipBlock'",
        );
        return None;
    }
    let pods = match pod_selector {
        Some(f) => Some(parts::label_selector(doc, &f)?.to_expr()),
        None => None,
    };
    let namespaces = match namespace_selector {
        Some(f) => Some(parts::label_selector(doc, &f)?.to_expr()),
        None => None,
    };
    Some(Peer::Selector(Selector::new(peer_selector(
        ns, pods, namespaces,
    ))))
}

fn port(doc: &mut Doc, field: &Field) -> Option<PortMatch> {
    let map = field.map(doc, &["protocol", "port", "endPort"], Unknown::Reject)?;
    let protocol = match map.get("protocol") {
        Some(f) => {
            let p = parts::protocol(doc, &f)?;
            if !p.has_ports() {
                f.error(
                    doc,
                    format!("protocol {p} is not supported in a NetworkPolicy; Kubernetes allows TCP, UDP and SCTP"),
                );
                return None;
            }
            p
        }
        None => Protocol::Tcp,
    };
    let port_field = map.get("port");
    let port = match &port_field {
        Some(f) if is_string(f) => {
            let name = f.str(doc).unwrap_or_default();
            f.error(
                doc,
                format!("named ports are not supported; use the port number instead of '{name}'"),
            );
            return None;
        }
        Some(f) => Some(parts::port(doc, f, "port")?),
        None => None,
    };
    let end_port = match map.get("endPort") {
        Some(f) => Some(parts::end_port(doc, &f, port, false)?),
        None => None,
    };
    Some(PortMatch::Ports {
        protocol,
        port,
        end_port,
    })
}

fn is_string(field: &Field) -> bool {
    matches!(&field.node.value, Value::Scalar(s) if s.kind == ScalarKind::Str)
}
