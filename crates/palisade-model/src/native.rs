//! Decoding of palisade's own kinds (`palisade.dev/v1`): Tenant, Tier,
//! Endpoint and Policy, from their `spec` and already-read metadata.

use std::net::IpAddr;

use crate::decode::{Doc, Field, Map, Unknown};
use crate::document::Meta;
use crate::policy_parts::{self as parts, peer_selector, policy_selector};
use crate::resource::{
    Action, Direction, Endpoint, Entity, Mode, Peer, Policy, PortMatch, Protocol, Rule, Tenant,
    TenantDefault, Tier, TierDefault, DEFAULT_TIER,
};
use crate::selector::Selector;
use crate::syntax;

/// Highest VXLAN network identifier (24 bits; 0 is not used).
pub(crate) const MAX_VNI: i64 = 16_777_215;

pub(crate) fn tenant(doc: &mut Doc, meta: &Meta, spec: Option<&Field>) -> Option<Tenant> {
    let mut tenant = Tenant {
        name: meta.name.clone()?,
        default_action: TenantDefault::Deny,
        vni: None,
        cidrs: Vec::new(),
    };
    let Some(spec) = spec else {
        return Some(tenant);
    };
    let map = spec.map(doc, &["defaultAction", "vni", "cidrs"], Unknown::Reject)?;
    if let Some(f) = map.get("defaultAction") {
        tenant.default_action = match f.choice(doc, "defaultAction", &["deny", "kubernetes"])? {
            "kubernetes" => TenantDefault::Kubernetes,
            _ => TenantDefault::Deny,
        };
    }
    if let Some(f) = map.get("vni") {
        tenant.vni = f
            .int_in(doc, "vni", "VNIs", 1, MAX_VNI)
            .and_then(|n| u32::try_from(n).ok());
    }
    if let Some(f) = map.get("cidrs") {
        for item in f.seq(doc).unwrap_or_default() {
            if let Some(net) = parts::cidr(doc, &item) {
                tenant.cidrs.push(net);
            }
        }
    }
    Some(tenant)
}

pub(crate) fn tier(doc: &mut Doc, meta: &Meta, spec: Option<&Field>) -> Option<Tier> {
    let map = spec?.map(doc, &["order", "defaultAction"], Unknown::Reject)?;
    let order = map.required(doc, "order").and_then(|f| f.int(doc));
    let mut default_action = TierDefault::Deny;
    if let Some(f) = map.get("defaultAction") {
        if f.choice(doc, "defaultAction", &["deny", "pass"])? == "pass" {
            default_action = TierDefault::Pass;
        }
    }
    Some(Tier {
        name: meta.name.clone()?,
        order: order?,
        default_action,
    })
}

pub(crate) fn endpoint(doc: &mut Doc, meta: &Meta, spec: Option<&Field>) -> Option<Endpoint> {
    let map = spec?.map(
        doc,
        &["node", "ips", "mac", "interface", "lab"],
        Unknown::Reject,
    )?;
    let node = map
        .required(doc, "node")
        .and_then(|f| parts::name(doc, &f, "node"));
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(f) = map.required(doc, "ips") {
        let items = f.seq(doc).unwrap_or_default();
        if items.is_empty() && matches!(f.node.value, crate::yaml::Value::Seq(_)) {
            f.error(
                doc,
                "'ips' is empty; an endpoint needs at least one address",
            );
        }
        for item in items {
            let Some(text) = item.str(doc) else { continue };
            match syntax::parse_ip(text) {
                Ok(ip) if ips.contains(&ip) => {
                    item.error(doc, format!("IP {ip} is listed twice; remove one"))
                }
                Ok(ip) => ips.push(ip),
                Err(message) => item.error(doc, message),
            }
        }
    }
    let mac = map.get("mac").and_then(|f| {
        let text = f.str(doc)?;
        syntax::parse_mac(text)
            .map_err(|message| f.error(doc, message))
            .ok()
    });
    let interface = map.get("interface").and_then(|f| {
        let text = f.str(doc)?;
        match syntax::check_interface(text) {
            Ok(()) => Some(text.to_string()),
            Err(message) => {
                f.error(doc, message);
                None
            }
        }
    });
    let mut serve = Vec::new();
    if let Some(lab) = map
        .get("lab")
        .and_then(|f| f.map(doc, &["serve"], Unknown::Reject))
    {
        for item in lab
            .get("serve")
            .and_then(|f| f.seq(doc))
            .unwrap_or_default()
        {
            let Some(text) = item.str(doc) else { continue };
            match syntax::parse_serve(text) {
                Ok(port) => serve.push(port),
                Err(message) => item.error(doc, message),
            }
        }
    }
    Some(Endpoint {
        tenant: meta.tenant.clone()?,
        namespace: meta.namespace.clone(),
        name: meta.name.clone()?,
        labels: meta.labels.clone(),
        ips,
        mac,
        node: node?,
        interface,
        serve,
    })
}

pub(crate) fn policy(doc: &mut Doc, meta: &Meta, spec: Option<&Field>) -> Option<Policy> {
    let map = spec?.map(
        doc,
        &[
            "tier", "order", "selector", "mode", "types", "ingress", "egress",
        ],
        Unknown::Reject,
    )?;
    let ns = meta.namespace.as_deref();
    let tier = match map.get("tier") {
        Some(f) => parts::name(doc, &f, "tier"),
        None => Some(DEFAULT_TIER.to_string()),
    };
    let order = map.get("order").and_then(|f| f.int(doc));
    let selector = map
        .required(doc, "selector")
        .and_then(|f| parts::selector(doc, &f));
    let mode = match map.get("mode") {
        Some(f) => match f.choice(doc, "mode", &["enforce", "audit"]) {
            Some("audit") => Mode::Audit,
            _ => Mode::Enforce,
        },
        None => Mode::Enforce,
    };
    let types = map.get("types").map(|f| {
        f.seq(doc)
            .unwrap_or_default()
            .iter()
            .filter_map(|item| item.choice(doc, "type", &["ingress", "egress"]))
            .collect::<Vec<_>>()
    });
    let ingress = direction(doc, &map, Direction::Ingress, types.as_deref(), ns);
    let egress = direction(doc, &map, Direction::Egress, types.as_deref(), ns);
    Some(Policy {
        tenant: meta.tenant.clone()?,
        namespace: meta.namespace.clone(),
        name: meta.name.clone()?,
        tier: tier?,
        order,
        selector: Selector::new(policy_selector(ns, selector?)),
        mode,
        ingress,
        egress,
    })
}

/// The rules of one direction: `None` when the policy does not cover it.
fn direction(
    doc: &mut Doc,
    map: &Map,
    dir: Direction,
    types: Option<&[&str]>,
    ns: Option<&str>,
) -> Option<Vec<Rule>> {
    let key = dir.as_str();
    let listed = types.is_some_and(|t| t.contains(&key));
    let Some(field) = map.get(key) else {
        return listed.then(Vec::new);
    };
    if types.is_some() && !listed {
        map.error_at_key(
            doc,
            key,
            format!(
                "the policy has '{key}' rules but 'types' does not list {key}; \
                 add {key} to 'types' or remove the '{key}' rules"
            ),
        );
    }
    let rules = field
        .seq(doc)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| rule(doc, item, dir, ns))
        .collect();
    Some(rules)
}

fn rule(doc: &mut Doc, field: &Field, dir: Direction, ns: Option<&str>) -> Option<Rule> {
    let map = field.map(doc, &["action", "from", "to", "ports"], Unknown::Reject)?;
    let action = map.required(doc, "action").and_then(|f| {
        Some(
            match f.choice(doc, "action", &["allow", "deny", "log", "pass"])? {
                "allow" => Action::Allow,
                "deny" => Action::Deny,
                "log" => Action::Log,
                _ => Action::Pass,
            },
        )
    });
    let (peer_key, wrong_key) = match dir {
        Direction::Ingress => ("from", "to"),
        Direction::Egress => ("to", "from"),
    };
    if map.key_pos(wrong_key).is_some() {
        map.error_at_key(
            doc,
            wrong_key,
            format!(
                "'{wrong_key}' is only valid in {} rules; {dir} rules name their peers with '{peer_key}'",
                if dir == Direction::Ingress { "egress" } else { "ingress" }
            ),
        );
    }
    let peers = map.get(peer_key).map(|f| {
        let items = f.seq(doc).unwrap_or_default();
        if items.is_empty() && matches!(f.node.value, crate::yaml::Value::Seq(_)) {
            f.error(
                doc,
                format!(
                    "an empty '{peer_key}' matches no peer; omit '{peer_key}' to match any peer"
                ),
            );
        }
        items
            .iter()
            .filter_map(|item| peer(doc, item, ns))
            .collect::<Vec<_>>()
    });
    let ports = map.get("ports").map(|f| {
        let items = f.seq(doc).unwrap_or_default();
        if items.is_empty() && matches!(f.node.value, crate::yaml::Value::Seq(_)) {
            f.error(
                doc,
                "an empty 'ports' matches no traffic; omit 'ports' to match any protocol and port",
            );
        }
        items
            .iter()
            .filter_map(|item| port_match(doc, item))
            .collect::<Vec<_>>()
    });
    Some(Rule {
        action: action?,
        peers,
        ports,
    })
}

fn peer(doc: &mut Doc, field: &Field, ns: Option<&str>) -> Option<Peer> {
    let map = field.map(
        doc,
        &["selector", "namespaceSelector", "cidr", "except", "entity"],
        Unknown::Reject,
    )?;
    let kinds: Vec<&str> = ["selector", "cidr", "entity"]
        .into_iter()
        .filter(|k| map.get(k).is_some())
        .collect();
    let namespace_selector = map.get("namespaceSelector");
    if kinds.len() > 1 {
        field.error(
            doc,
            format!(
                "a peer takes only one of 'selector', 'cidr' and 'entity', this one has {}; \
                 write one peer for each",
                kinds.join(" and ")
            ),
        );
        return None;
    }
    if kinds.is_empty() && namespace_selector.is_none() {
        field.error(
            doc,
            "a peer needs one of 'selector', 'cidr', 'entity' or 'namespaceSelector'",
        );
        return None;
    }
    if map.get("except").is_some() && kinds != ["cidr"] {
        map.error_at_key(doc, "except", "'except' is only valid together with 'cidr'");
        return None;
    }
    if namespace_selector.is_some() && !kinds.is_empty() && kinds != ["selector"] {
        map.error_at_key(
            doc,
            "namespaceSelector",
            format!(
                "'namespaceSelector' combines only with 'selector', not with '{}'",
                kinds[0]
            ),
        );
        return None;
    }
    match kinds.first().copied() {
        Some("cidr") => {
            let cidr = map.get("cidr")?;
            parts::cidr_peer(doc, &cidr, map.get("except").as_ref())
        }
        Some("entity") => {
            let f = map.get("entity")?;
            Some(Peer::Entity(
                match f.choice(doc, "entity", &["world", "host", "all"])? {
                    "world" => Entity::World,
                    "host" => Entity::Host,
                    _ => Entity::All,
                },
            ))
        }
        _ => {
            let selector = match map.get("selector") {
                Some(f) => Some(parts::selector(doc, &f)?),
                None => None,
            };
            let namespace_selector = match namespace_selector {
                Some(f) => Some(parts::selector(doc, &f)?),
                None => None,
            };
            Some(Peer::Selector(Selector::new(peer_selector(
                ns,
                selector,
                namespace_selector,
            ))))
        }
    }
}

fn port_match(doc: &mut Doc, field: &Field) -> Option<PortMatch> {
    let map = field.map(
        doc,
        &["protocol", "port", "endPort", "type", "code"],
        Unknown::Reject,
    )?;
    let protocol = match map.get("protocol") {
        Some(f) => parts::protocol(doc, &f)?,
        // As in Kubernetes: a port entry without a protocol is TCP.
        None => Protocol::Tcp,
    };
    if protocol.has_ports() {
        for key in ["type", "code"] {
            if map.get(key).is_some() {
                map.error_at_key(
                    doc,
                    key,
                    format!("'{key}' is only valid for ICMP and ICMPv6, not {protocol}; use 'port' and 'endPort'"),
                );
            }
        }
        let port = map.get("port").and_then(|f| parts::port(doc, &f, "port"));
        let end_port = map
            .get("endPort")
            .and_then(|f| parts::end_port(doc, &f, port, map.get("port").is_some()));
        return Some(PortMatch::Ports {
            protocol,
            port,
            end_port,
        });
    }
    for key in ["port", "endPort"] {
        if map.get(key).is_some() {
            map.error_at_key(
                doc,
                key,
                format!("'{key}' is not allowed for {protocol}; match ICMP messages with 'type' and 'code'"),
            );
        }
    }
    let icmp_type = map
        .get("type")
        .and_then(|f| f.int_in(doc, "type", "ICMP types", 0, 255))
        .and_then(|n| u8::try_from(n).ok());
    let icmp_code = map
        .get("code")
        .and_then(|f| f.int_in(doc, "code", "ICMP codes", 0, 255))
        .and_then(|n| u8::try_from(n).ok());
    if map.get("code").is_some() && map.get("type").is_none() {
        map.error_at_key(
            doc,
            "code",
            "'code' requires 'type': name the ICMP type the code belongs to",
        );
    }
    Some(PortMatch::Icmp {
        protocol,
        icmp_type,
        icmp_code,
    })
}
