//! The segmentation map of a tenant (`GET /api/v1/tenants/<t>/map`): its
//! endpoints grouped by identity or by one label, `world` when a policy
//! names the outside, and the edges the live policy allows between groups,
//! with protocols and port ranges, derived with the policy engine.
//!
//! How edges are found without trying all 65,536 ports of every protocol:
//! a rule's verdict only changes where one of the tenant's port ranges
//! starts or ends, so the ports split into intervals at those boundaries
//! and one port per interval is evaluated. Endpoints with the same labels
//! get the same verdicts, so each group is represented by one endpoint per
//! distinct label set. An edge's service is `all` when every such pair gets
//! it and `some` when only some do (a quarantined member, say).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use palisade_client::api::join_identities;
use palisade_client::visibility::{
    attribution_text, Coverage, GroupBy, GroupKind, MapEdge, MapGroup, MapMember, MapPorts,
    TenantMap,
};
use palisade_model::{Endpoint, Entity, Intent, Labels, Mode, Peer, PortMatch, Protocol};
use palisade_policy::{evaluate, Flow, FlowPeer, Identities, Verdict, WORLD_ADDRESS};
use serde::Deserialize;

use crate::auth::Principal;
use crate::counters::check_tenant;
use crate::error::ApiError;
use crate::routes::live_intent;
use crate::stored;
use crate::Shared;

/// The id of the world group.
pub const WORLD: &str = "world";

/// One group while the map is built.
struct Group<'a> {
    label: String,
    kind: GroupKind,
    members: Vec<&'a Endpoint>,
}

/// What stands for a group in evaluations: one endpoint per distinct label
/// set (and a second one of the same labels, for flows inside the set), or
/// a world address.
#[derive(Clone, Copy)]
struct Representative<'a> {
    peer: FlowPeer<'a>,
    second: Option<&'a Endpoint>,
}

/// The user's labels as `k=v, k=v` (derived, reserved labels left out).
fn label_text(labels: &Labels) -> String {
    let user: Vec<String> = labels
        .iter()
        .filter(|(k, _)| {
            !palisade_model::RESERVED_LABEL_PREFIXES
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if user.is_empty() {
        "(no labels)".to_owned()
    } else {
        user.join(", ")
    }
}

/// The group id and label of an endpoint.
fn group_of(e: &Endpoint, by: &GroupBy, identities: Option<&Identities>) -> (String, String) {
    match by {
        GroupBy::Label(key) => {
            let value = e.labels.get(key).map_or("(none)", String::as_str);
            let id = format!("{key}={value}");
            (id.clone(), id)
        }
        GroupBy::Identity => {
            let label = label_text(&e.labels);
            match identities.and_then(|ids| ids.endpoint(e)) {
                Some(identity) => (format!("identity:{}", identity.0), label),
                None => (format!("labels:{label}"), label),
            }
        }
    }
}

/// Whether a policy of the tenant names the outside (world, all, a CIDR).
fn names_world(intent: &Intent, tenant: &str) -> bool {
    intent
        .policies
        .iter()
        .filter(|p| p.tenant == tenant)
        .flat_map(|p| [p.ingress.as_deref(), p.egress.as_deref()])
        .flatten()
        .flatten()
        .flat_map(|r| r.peers.iter().flatten())
        .any(|peer| {
            matches!(
                peer,
                Peer::Entity(Entity::World | Entity::All) | Peer::Cidr { .. }
            )
        })
}

/// The ports where verdicts may change, per protocol, ascending, from 0.
fn boundaries(intent: &Intent, tenant: &str) -> Vec<(Protocol, Vec<u16>)> {
    let mut points: BTreeMap<Protocol, BTreeSet<u16>> = Protocol::ALL
        .into_iter()
        .map(|p| (p, BTreeSet::from([0])))
        .collect();
    let mut add = |protocol: Protocol, first: u16, last: u16| {
        let set = points.entry(protocol).or_default();
        set.insert(first);
        if let Some(next) = last.checked_add(1) {
            set.insert(next);
        }
    };
    let matches = intent
        .policies
        .iter()
        .filter(|p| p.tenant == tenant)
        .flat_map(|p| [p.ingress.as_deref(), p.egress.as_deref()])
        .flatten()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten());
    for m in matches {
        match *m {
            PortMatch::Ports {
                protocol,
                port: Some(first),
                end_port,
            } => add(protocol, first, end_port.unwrap_or(first)),
            PortMatch::Ports { port: None, .. } => {}
            PortMatch::Icmp {
                protocol,
                icmp_type: Some(t),
                icmp_code,
            } => {
                let base = u16::from(t) << 8;
                match icmp_code {
                    Some(c) => add(protocol, base | u16::from(c), base | u16::from(c)),
                    None => add(protocol, base, base | 0xff),
                }
            }
            PortMatch::Icmp {
                icmp_type: None, ..
            } => {}
        }
    }
    points
        .into_iter()
        .map(|(p, set)| (p, set.into_iter().collect()))
        .collect()
}

/// `tcp/8080`, `tcp/8000-8099`, `udp/any`, `icmp type 8`, `icmp type 8 code 0`.
fn service_text(protocol: Protocol, first: u16, last: u16) -> String {
    let name = protocol.as_str().to_lowercase();
    if first == 0 && last == u16::MAX {
        return format!("{name}/any");
    }
    if protocol.has_ports() {
        if first == last {
            format!("{name}/{first}")
        } else {
            format!("{name}/{first}-{last}")
        }
    } else if first == last {
        format!("{name} type {} code {}", first >> 8, first & 0xff)
    } else if first >> 8 == last >> 8 && first & 0xff == 0 && last & 0xff == 0xff {
        format!("{name} type {}", first >> 8)
    } else {
        format!("{name} types {}-{}", first >> 8, last >> 8)
    }
}

/// The verdicts of one group pair at one port.
#[derive(Default, PartialEq, Eq)]
struct PointResult {
    pairs: usize,
    allowed: usize,
    allowed_by: BTreeSet<String>,
    audit: BTreeSet<String>,
}

/// Evaluates every representative pair at one protocol and port.
fn at_point(
    intent: &Intent,
    from: &[Representative<'_>],
    to: &[Representative<'_>],
    protocol: u8,
    port: u16,
) -> PointResult {
    let mut out = PointResult::default();
    for (i, s) in from.iter().enumerate() {
        for (j, d) in to.iter().enumerate() {
            let same = std::ptr::eq(from, to) && i == j;
            let dst = match (same, d.second) {
                (false, _) => d.peer,
                (true, Some(second)) => FlowPeer::Endpoint(second),
                // One endpoint alone with these labels: no flow to itself.
                (true, None) => continue,
            };
            let flow = Flow {
                src: s.peer,
                dst,
                protocol,
                port,
            };
            let explanation = evaluate(intent, &flow);
            out.pairs += 1;
            if explanation.verdict != Verdict::Allow {
                continue;
            }
            out.allowed += 1;
            for reason in explanation.reasons() {
                out.allowed_by.insert(attribution_text(reason));
            }
            for side in explanation.sides() {
                if side.audit.would_deny {
                    out.audit.insert(attribution_text(&side.audit.attribution));
                }
            }
        }
    }
    out
}

/// The services allowed from one group to another.
fn services(
    intent: &Intent,
    from: &[Representative<'_>],
    to: &[Representative<'_>],
    points: &[(Protocol, Vec<u16>)],
) -> Vec<MapPorts> {
    let mut out: Vec<MapPorts> = Vec::new();
    for (protocol, starts) in points {
        let mut last_result: Option<PointResult> = None;
        for (i, &first) in starts.iter().enumerate() {
            let last = starts.get(i + 1).map_or(u16::MAX, |next| next - 1);
            let result = at_point(intent, from, to, protocol.number(), first);
            if result.allowed == 0 {
                last_result = None;
                continue;
            }
            // Neighbouring intervals that answer the same merge into one range.
            if last_result.as_ref() == Some(&result) {
                if let Some(previous) = out.last_mut() {
                    previous.last = last;
                    previous.text = service_text(*protocol, previous.first, last);
                    continue;
                }
            }
            out.push(MapPorts {
                protocol: protocol.as_str().to_lowercase(),
                first,
                last,
                text: service_text(*protocol, first, last),
                coverage: if result.allowed == result.pairs {
                    Coverage::All
                } else {
                    Coverage::Some
                },
                allowed_by: result.allowed_by.iter().cloned().collect(),
                audit_would_deny: result.audit.iter().cloned().collect(),
            });
            last_result = Some(result);
        }
    }
    out
}

/// The policies that select a member of a group (for the world: those
/// with a rule naming the outside), `(audit)` after audit-mode ones.
fn group_policies(intent: &Intent, tenant: &str, group: &Group<'_>) -> Vec<String> {
    let name = |p: &palisade_model::Policy| match p.mode {
        Mode::Audit => format!("{} (audit)", p.qualified_name()),
        Mode::Enforce => p.qualified_name(),
    };
    let mut out = BTreeSet::new();
    for p in intent.policies.iter().filter(|p| p.tenant == tenant) {
        let selects = match group.kind {
            GroupKind::Endpoints => {
                (p.ingress.is_some() || p.egress.is_some())
                    && group.members.iter().any(|e| p.selector.matches(&e.labels))
            }
            GroupKind::World => [p.ingress.as_deref(), p.egress.as_deref()]
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|r| r.peers.iter().flatten())
                .any(|peer| {
                    matches!(
                        peer,
                        Peer::Entity(Entity::World | Entity::All) | Peer::Cidr { .. }
                    )
                }),
        };
        if selects {
            out.insert(name(p));
        }
    }
    out.into_iter().collect()
}

/// Builds the map of a tenant.
pub fn build(
    intent: &Intent,
    tenant: &str,
    by: &GroupBy,
    identities: Option<&Identities>,
    revision: u64,
) -> TenantMap {
    let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for e in intent.endpoints.iter().filter(|e| e.tenant == tenant) {
        let (id, label) = group_of(e, by, identities);
        groups
            .entry(id)
            .or_insert_with(|| Group {
                label,
                kind: GroupKind::Endpoints,
                members: Vec::new(),
            })
            .members
            .push(e);
    }
    if names_world(intent, tenant) {
        groups.insert(
            WORLD.to_owned(),
            Group {
                label: WORLD.to_owned(),
                kind: GroupKind::World,
                members: Vec::new(),
            },
        );
    }
    let representatives: BTreeMap<&str, Vec<Representative<'_>>> = groups
        .iter()
        .map(|(id, g)| {
            let reps = match g.kind {
                GroupKind::World => vec![Representative {
                    peer: FlowPeer::Address {
                        tenant,
                        ip: WORLD_ADDRESS,
                    },
                    second: None,
                }],
                GroupKind::Endpoints => {
                    let mut by_labels: BTreeMap<&Labels, Vec<&Endpoint>> = BTreeMap::new();
                    for e in &g.members {
                        by_labels.entry(&e.labels).or_default().push(e);
                    }
                    by_labels
                        .into_values()
                        .map(|es| Representative {
                            peer: FlowPeer::Endpoint(es[0]),
                            second: es.get(1).copied(),
                        })
                        .collect()
                }
            };
            (id.as_str(), reps)
        })
        .collect();
    let points = boundaries(intent, tenant);
    let mut edges = Vec::new();
    for (from, from_reps) in &representatives {
        for (to, to_reps) in &representatives {
            if *from == WORLD && *to == WORLD {
                continue;
            }
            let ports = services(intent, from_reps, to_reps, &points);
            if !ports.is_empty() {
                edges.push(MapEdge {
                    id: format!("{from}->{to}"),
                    from: (*from).to_owned(),
                    to: (*to).to_owned(),
                    ports,
                });
            }
        }
    }
    let groups = groups
        .iter()
        .map(|(id, g)| MapGroup {
            id: id.clone(),
            label: g.label.clone(),
            kind: g.kind,
            members: g
                .members
                .iter()
                .map(|e| MapMember {
                    reference: e.full_ref(),
                    name: e.qualified_name(),
                    labels: e.labels.clone(),
                    ips: e.ips.clone(),
                    node: e.node.clone(),
                    identity: identities.and_then(|ids| ids.endpoint(e)).map(|i| i.0),
                })
                .collect(),
            policies: group_policies(intent, tenant, g),
        })
        .collect();
    TenantMap {
        tenant: tenant.to_owned(),
        revision,
        group_by: by.to_string(),
        groups,
        edges,
    }
}

/// The query of the map route.
#[derive(Debug, Default, Deserialize)]
pub struct MapQuery {
    #[serde(rename = "groupBy")]
    group_by: Option<String>,
}

/// `GET /api/v1/tenants/<tenant>/map?groupBy=identity|label:KEY`.
pub async fn get(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(query): Query<MapQuery>,
) -> Result<Json<TenantMap>, ApiError> {
    check_tenant(&principal, &tenant)?;
    let by: GroupBy = query
        .group_by
        .as_deref()
        .unwrap_or("identity")
        .parse()
        .map_err(|e: String| ApiError::invalid(e, Vec::new()))?;
    let (intent, revision) = live_intent(&shared).await?;
    if !intent.tenants.contains_key(&tenant) {
        return Err(ApiError::not_found(format!(
            "tenant {tenant} does not exist; list them with palisade get tenants"
        )));
    }
    let identities = match shared
        .store
        .get(&stored::tenant_identities_key(&tenant))
        .await?
    {
        Some(kv) => Some(join_identities(&[
            stored::decode_identities(&kv).map_err(ApiError::internal)?
        ])),
        None => None,
    };
    // Evaluating many pairs is CPU work: keep it off the async workers.
    let map = tokio::task::spawn_blocking(move || {
        build(&intent, &tenant, &by, identities.as_ref(), revision)
    })
    .await
    .map_err(|e| ApiError::internal(format!("building the map failed: {e}")))?;
    Ok(Json(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_tier() -> Intent {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/three-tier");
        palisade_model::load_paths(&[std::path::PathBuf::from(dir)], &Default::default())
            .expect("the example loads")
    }

    fn edge<'a>(map: &'a TenantMap, from: &str, to: &str) -> Option<&'a MapEdge> {
        map.edges.iter().find(|e| e.from == from && e.to == to)
    }

    fn texts(edge: &MapEdge) -> Vec<(&str, Coverage)> {
        edge.ports
            .iter()
            .map(|p| (p.text.as_str(), p.coverage))
            .collect()
    }

    #[test]
    fn three_tier_by_app_label_has_the_allowed_edges_only() {
        let intent = three_tier();
        let map = build(&intent, "acme", &GroupBy::Label("app".into()), None, 7);
        let ids: Vec<&str> = map.groups.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["app=app", "app=db", "app=web", "world"]);

        // web -> app on 8080, but not for the quarantined web-2: some pairs.
        let web_app = edge(&map, "app=web", "app=app").expect("web -> app");
        assert_eq!(texts(web_app), [("tcp/8080", Coverage::Some)]);
        assert!(web_app.ports[0]
            .allowed_by
            .contains(&"default/app ingress rule 0".to_owned()));
        let app_db = edge(&map, "app=app", "app=db").expect("app -> db");
        assert_eq!(texts(app_db), [("tcp/5432", Coverage::All)]);
        let world_web = edge(&map, "world", "app=web").expect("world -> web");
        assert_eq!(texts(world_web), [("tcp/443", Coverage::All)]);
        assert_eq!(
            world_web.ports[0].audit_would_deny,
            ["default/web-lockdown ingress rule 0"]
        );
        // Nothing else: db initiates nothing, app never reaches web, ...
        assert!(edge(&map, "app=db", "app=app").is_none());
        assert!(edge(&map, "app=app", "app=web").is_none());
        assert!(edge(&map, "app=web", "app=db").is_none());
        assert_eq!(map.edges.len(), 3, "{:#?}", map.edges);

        let web = map.groups.iter().find(|g| g.id == "app=web").unwrap();
        assert_eq!(web.members.len(), 2);
        assert_eq!(web.policies, ["web", "web-lockdown (audit)"]);
    }

    #[test]
    fn by_identity_the_quarantined_endpoint_is_its_own_group_without_edges_to_app() {
        let intent = three_tier();
        let map = build(&intent, "acme", &GroupBy::Identity, None, 7);
        let quarantined = "labels:app=web, quarantine=true";
        assert!(map.groups.iter().any(|g| g.id == quarantined));
        assert!(edge(&map, quarantined, "labels:app=app").is_none());
        let web_app = edge(&map, "labels:app=web", "labels:app=app").unwrap();
        assert_eq!(texts(web_app), [("tcp/8080", Coverage::All)]);
    }

    #[test]
    fn service_texts_read_well() {
        assert_eq!(service_text(Protocol::Tcp, 0, 65535), "tcp/any");
        assert_eq!(service_text(Protocol::Tcp, 80, 80), "tcp/80");
        assert_eq!(service_text(Protocol::Udp, 8000, 8099), "udp/8000-8099");
        assert_eq!(service_text(Protocol::Icmp, 0x800, 0x8ff), "icmp type 8");
        assert_eq!(
            service_text(Protocol::Icmp, 0x800, 0x800),
            "icmp type 8 code 0"
        );
    }
}
