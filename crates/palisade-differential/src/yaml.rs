//! An intent as the resource YAML a person writes (`docs/resources.md`), so
//! that a failing case can be saved to a file and replayed with
//! `palisade explain -f FILE ...` or `palisade lab up -f FILE`.
//!
//! Only what the generators of [`crate::intents`] produce needs to round
//! trip: no namespaces, no tenant `cidrs`, derived MACs and interfaces.
//! The `default` tier is written only when it differs from the built-in one.

use palisade_model::{
    Action, Entity, Intent, Mode, Peer, PortMatch, Rule, DEFAULT_TIER, DEFAULT_TIER_ORDER,
};
use palisade_model::{TenantDefault, TierDefault, API_VERSION};
use serde_yaml::{Mapping, Value};

/// A YAML mapping from `(key, value)` pairs, in order.
fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::from(k), v);
    }
    Value::Mapping(m)
}

fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// One resource document.
fn resource(kind: &str, metadata: Value, spec: Value) -> Value {
    map([
        ("apiVersion", s(API_VERSION)),
        ("kind", s(kind)),
        ("metadata", metadata),
        ("spec", spec),
    ])
}

/// Every resource of `intent`, as YAML documents separated by `---`.
pub fn to_yaml(intent: &Intent) -> String {
    let mut docs = Vec::new();
    for tenant in intent.tenants.values() {
        let action = match tenant.default_action {
            TenantDefault::Deny => "deny",
            TenantDefault::Kubernetes => "kubernetes",
        };
        let mut spec = map([("defaultAction", s(action))]);
        if let (Some(vni), Value::Mapping(m)) = (tenant.vni, &mut spec) {
            m.insert(s("vni"), Value::from(vni));
        }
        docs.push(resource("Tenant", map([("name", s(&tenant.name))]), spec));
    }
    for tier in intent.tiers.values() {
        let builtin = tier.name == DEFAULT_TIER
            && tier.order == DEFAULT_TIER_ORDER
            && tier.default_action == TierDefault::Deny;
        if builtin {
            continue;
        }
        let action = match tier.default_action {
            TierDefault::Deny => "deny",
            TierDefault::Pass => "pass",
        };
        docs.push(resource(
            "Tier",
            map([("name", s(&tier.name))]),
            map([
                ("order", Value::from(tier.order)),
                ("defaultAction", s(action)),
            ]),
        ));
    }
    for e in &intent.endpoints {
        let labels: Mapping = e.labels.iter().map(|(k, v)| (s(k), s(v))).collect();
        docs.push(resource(
            "Endpoint",
            map([
                ("name", s(&e.name)),
                ("tenant", s(&e.tenant)),
                ("labels", Value::Mapping(labels)),
            ]),
            map([
                ("node", s(&e.node)),
                (
                    "ips",
                    Value::Sequence(e.ips.iter().map(|ip| s(ip.to_string())).collect()),
                ),
            ]),
        ));
    }
    for p in &intent.policies {
        let mut spec = Mapping::new();
        spec.insert(s("tier"), s(&p.tier));
        if let Some(order) = p.order {
            spec.insert(s("order"), Value::from(order));
        }
        spec.insert(s("selector"), s(p.selector.to_string()));
        if p.mode == Mode::Audit {
            spec.insert(s("mode"), s("audit"));
        }
        for (key, peers_key, rules) in
            [("ingress", "from", &p.ingress), ("egress", "to", &p.egress)]
        {
            if let Some(rules) = rules {
                let rules = rules.iter().map(|r| rule(r, peers_key)).collect();
                spec.insert(s(key), Value::Sequence(rules));
            }
        }
        docs.push(resource(
            "Policy",
            map([("name", s(&p.name)), ("tenant", s(&p.tenant))]),
            Value::Mapping(spec),
        ));
    }
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML of plain values"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn rule(r: &Rule, peers_key: &str) -> Value {
    let action = match r.action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Log => "log",
        Action::Pass => "pass",
    };
    let mut m = Mapping::new();
    m.insert(s("action"), s(action));
    // An empty list matches anything, as an absent one: native YAML only
    // has the absent form.
    if let Some(peers) = r.peers.as_ref().filter(|p| !p.is_empty()) {
        m.insert(
            s(peers_key),
            Value::Sequence(peers.iter().map(peer).collect()),
        );
    }
    if let Some(ports) = r.ports.as_ref().filter(|p| !p.is_empty()) {
        m.insert(
            s("ports"),
            Value::Sequence(ports.iter().map(port).collect()),
        );
    }
    Value::Mapping(m)
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::Selector(sel) => map([("selector", s(sel.to_string()))]),
        Peer::Cidr { cidr, except } if except.is_empty() => map([("cidr", s(cidr.to_string()))]),
        Peer::Cidr { cidr, except } => map([
            ("cidr", s(cidr.to_string())),
            (
                "except",
                Value::Sequence(except.iter().map(|x| s(x.to_string())).collect()),
            ),
        ]),
        Peer::Entity(e) => {
            let name = match e {
                Entity::World => "world",
                Entity::Host => "host",
                Entity::All => "all",
            };
            map([("entity", s(name))])
        }
    }
}

fn port(m: &PortMatch) -> Value {
    let mut out = Mapping::new();
    out.insert(s("protocol"), s(m.protocol().as_str()));
    match *m {
        PortMatch::Ports { port, end_port, .. } => {
            if let Some(p) = port {
                out.insert(s("port"), Value::from(p));
            }
            if let Some(e) = end_port {
                out.insert(s("endPort"), Value::from(e));
            }
        }
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
            ..
        } => {
            if let Some(t) = icmp_type {
                out.insert(s("type"), Value::from(t));
            }
            if let Some(c) = icmp_code {
                out.insert(s("code"), Value::from(c));
            }
        }
    }
    Value::Mapping(out)
}
