//! Intent → what every map of one node's datapath should hold: a pure
//! function of the intent, its identities, the compiled tables and the
//! node's interfaces, with no kernel access, so that tests can fill maps for
//! BPF_PROG_TEST_RUN exactly as the agent does.
//!
//! What a node holds (bpf/README.md, "Maps"):
//! - only the tenants with an endpoint on the node ([`node_intent`]);
//! - IPCACHE: per tenant the world (`0.0.0.0/0`) and the CIDR identities,
//!   the node's own addresses as the host, every endpoint address — local
//!   ones flagged with their port (ifindex 0 while the port is missing, so
//!   the address never falls back to a world entry), remote ones flagged
//!   remote with the underlay address of their node (0.0.0.0 while it is
//!   unknown: the datapath drops traffic to them, NO_TUNNEL). IPv6 is
//!   skipped (the datapath drops it with a counted reason);
//! - ENDPOINTS: the local endpoints whose host-side port exists;
//! - POLICY: both directions of every local endpoint's identity, and the
//!   ingress side of the identities that exist only on other nodes (the
//!   source node checks the destination's ingress too);
//! - TENANTS (with each tenant's VNI) and UPLINKS from the uplinks given to
//!   the agent;
//! - ports: each local endpoint's, each uplink, and the overlay device
//!   ([`crate::OVERLAY_DEVICE`], `from_overlay`) when it exists.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use palisade_datapath::abi::{
    self, policy_flags, Endpoint as AbiEndpoint, IpcacheKey as AbiIpcacheKey, IpcacheValue,
    TenantInfo, UplinkInfo,
};
use palisade_datapath::Hook;
use palisade_model::{Direction, Endpoint, Intent};
use palisade_policy::{
    CompiledTables, Identities, Identity, IdentityKind, IpcacheKey, PolicyKey, PolicyValue, Verdict,
};

use crate::config::UplinkSpec;
use crate::interfaces::NodeLinks;
use crate::reconcile::MapContents;

/// The parts of the intent a node enforces: the tenants with at least one
/// endpoint on `node`, with all their endpoints (remote ones are peers) and
/// policies, and every tier.
pub fn node_intent(intent: &Intent, node: &str) -> Intent {
    let tenants = node_tenants(intent, node);
    Intent {
        tenants: intent
            .tenants
            .iter()
            .filter(|(name, _)| tenants.contains(name.as_str()))
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect(),
        tiers: intent.tiers.clone(),
        endpoints: intent
            .endpoints
            .iter()
            .filter(|e| tenants.contains(e.tenant.as_str()))
            .cloned()
            .collect(),
        policies: intent
            .policies
            .iter()
            .filter(|p| tenants.contains(p.tenant.as_str()))
            .cloned()
            .collect(),
    }
}

/// [`node_intent`] of an intent the caller hands over: nothing is copied
/// (a control plane sends only the node's tenants, so usually nothing goes).
pub fn into_node_intent(mut intent: Intent, node: &str) -> Intent {
    let tenants: BTreeSet<String> = node_tenants(&intent, node)
        .into_iter()
        .map(str::to_owned)
        .collect();
    intent.tenants.retain(|name, _| tenants.contains(name));
    intent.endpoints.retain(|e| tenants.contains(&e.tenant));
    intent.policies.retain(|p| tenants.contains(&p.tenant));
    intent
}

/// The tenants with at least one endpoint on `node`.
fn node_tenants<'a>(intent: &'a Intent, node: &str) -> BTreeSet<&'a str> {
    intent
        .endpoints
        .iter()
        .filter(|e| e.node == node)
        .map(|e| e.tenant.as_str())
        .collect()
}

/// Everything the node's maps are computed from.
#[derive(Debug, Clone, Copy)]
pub struct NodeInputs<'a> {
    /// The node.
    pub node: &'a str,
    /// The intent (the whole one or [`node_intent`]: other tenants are ignored).
    pub intent: &'a Intent,
    /// Identities allocated for it.
    pub identities: &'a Identities,
    /// Tables compiled from it (at least for the node's tenants).
    pub tables: &'a CompiledTables,
    /// The node's interfaces and addresses.
    pub links: &'a NodeLinks,
    /// Uplinks toward the tenants' worlds.
    pub uplinks: &'a [UplinkSpec],
    /// The underlay address of each node (where its endpoints are reached
    /// over the overlay).
    pub nodes: &'a BTreeMap<String, Ipv4Addr>,
}

/// What a port of the node is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRole {
    /// The host side of a local endpoint (full ref).
    Endpoint(String),
    /// The uplink of a tenant.
    Uplink(String),
    /// The node's VXLAN device: packets from other nodes.
    Overlay,
}

/// An interface the programs must be attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Interface name.
    pub name: String,
    /// What it is.
    pub role: PortRole,
}

impl Port {
    /// The hooks it gets.
    pub fn hooks(&self) -> &'static [Hook] {
        match self.role {
            PortRole::Endpoint(_) => &[Hook::FromEndpoint, Hook::ToEndpoint],
            PortRole::Uplink(_) => &[Hook::FromUplink],
            PortRole::Overlay => &[Hook::FromOverlay],
        }
    }
}

/// The desired state of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Map contents.
    pub maps: MapContents,
    /// Interfaces to attach to, by ifindex.
    pub ports: BTreeMap<u32, Port>,
    /// Things that keep part of the intent from being enforced on this node
    /// (a missing port, an uplink of an unknown tenant), for the log.
    pub notes: Vec<String>,
}

/// The POLICY entry of a compiled entry, in the kernel's layout.
pub fn policy_entry(key: &PolicyKey, value: &PolicyValue) -> (abi::PolicyKey, abi::PolicyValue) {
    let direction = match key.direction {
        Direction::Ingress => abi::Direction::Ingress,
        Direction::Egress => abi::Direction::Egress,
    };
    let mut flags = 0;
    if value.logged() {
        flags |= policy_flags::LOG;
    }
    if value.audit_denies() {
        flags |= policy_flags::AUDIT_DENY;
    }
    let verdict = match value.verdict {
        Verdict::Allow => abi::Verdict::Allow,
        Verdict::Deny => abi::Verdict::Deny,
    };
    (
        abi::PolicyKey::new(
            key.subject.0,
            direction,
            key.peer.0,
            key.proto,
            key.port,
            key.port_prefix_len,
        ),
        abi::PolicyValue {
            verdict: verdict as u8,
            flags,
            pad: 0,
            cookie: value.cookie,
            audit_cookie: value.audit_cookie,
        },
    )
}

/// The IPCACHE key of an ipcache prefix; `None` for IPv6 (not in the datapath yet).
pub fn ipcache_key(key: &IpcacheKey) -> Option<AbiIpcacheKey> {
    match key.prefix {
        ipnet::IpNet::V4(v4) => Some(AbiIpcacheKey::new(
            u32::from(key.tenant_index),
            v4.addr(),
            v4.prefix_len(),
        )),
        ipnet::IpNet::V6(_) => None,
    }
}

/// Computes the desired state of `inputs.node`.
pub fn desired(inputs: &NodeInputs<'_>) -> Desired {
    let NodeInputs {
        node,
        intent,
        identities,
        tables,
        links,
        uplinks,
        nodes,
    } = *inputs;
    let mut out = Desired::default();
    if let Some(device) = links.get(crate::overlay::OVERLAY_DEVICE) {
        out.ports.insert(
            device.ifindex,
            Port {
                name: crate::overlay::OVERLAY_DEVICE.to_string(),
                role: PortRole::Overlay,
            },
        );
    }
    let node_tenants: BTreeMap<&str, u16> = intent
        .endpoints
        .iter()
        .filter(|e| e.node == node)
        .filter_map(|e| Some((e.tenant.as_str(), identities.tenant_index(&e.tenant)?)))
        .collect();

    // Uplinks first: TENANTS needs them, and their names must not be taken
    // for endpoint ports.
    let mut uplink_of: BTreeMap<&str, (u32, std::net::Ipv4Addr)> = BTreeMap::new();
    for spec in uplinks {
        let Some(&index) = node_tenants.get(spec.tenant.as_str()) else {
            out.notes.push(format!(
                "uplink {spec} ignored: tenant {} has no endpoint on node {node}",
                spec.tenant
            ));
            continue;
        };
        let Some(link) = links.get(&spec.ifname) else {
            out.notes.push(format!(
                "uplink {spec}: interface {} does not exist (yet)",
                spec.ifname
            ));
            continue;
        };
        if uplink_of.contains_key(spec.tenant.as_str()) {
            out.notes.push(format!(
                "uplink {spec} ignored: tenant {} already has one",
                spec.tenant
            ));
            continue;
        }
        if out.ports.contains_key(&link.ifindex) {
            out.notes.push(format!(
                "uplink {spec} ignored: interface {} is another tenant's uplink",
                spec.ifname
            ));
            continue;
        }
        uplink_of.insert(&spec.tenant, (link.ifindex, spec.nexthop));
        out.maps.uplinks.insert(
            link.ifindex,
            UplinkInfo {
                tenant: u32::from(index),
                flags: 0,
            },
        );
        out.ports.insert(
            link.ifindex,
            Port {
                name: spec.ifname.clone(),
                role: PortRole::Uplink(spec.tenant.clone()),
            },
        );
    }
    for (&tenant, &index) in &node_tenants {
        let (uplink_ifindex, nexthop) = uplink_of
            .get(tenant)
            .map_or((0, [0; 4]), |(i, n)| (*i, n.octets()));
        out.maps.tenants.insert(
            u32::from(index),
            TenantInfo {
                uplink_ifindex,
                nexthop,
                vni: intent.tenants.get(tenant).and_then(|t| t.vni).unwrap_or(0),
                flags: 0,
            },
        );
    }

    // World and CIDR identities, then the host, then endpoints: a more
    // specific meaning of the same prefix overrides a less specific one.
    for (key, &identity) in identities.ipcache() {
        if !node_tenants.values().any(|&i| i == key.tenant_index) {
            continue;
        }
        let is_outside = matches!(
            identities.info(identity).map(|i| &i.kind),
            Some(IdentityKind::World | IdentityKind::Cidr(_))
        );
        if let (true, Some(abi_key)) = (is_outside, ipcache_key(key)) {
            out.maps
                .ipcache
                .insert(abi_key, IpcacheValue::world(identity.0));
        }
    }
    for &index in node_tenants.values() {
        let host = Identity::new(index, Identity::LOCAL_HOST);
        for &addr in &links.addresses {
            out.maps.ipcache.insert(
                AbiIpcacheKey::new(u32::from(index), addr, 32),
                IpcacheValue::host(host.0),
            );
        }
    }

    let mut local_subjects = BTreeSet::new();
    let mut remote_subjects = BTreeSet::new();
    let mut unknown_nodes: BTreeMap<&str, usize> = BTreeMap::new();
    for endpoint in &intent.endpoints {
        let Some(&index) = node_tenants.get(endpoint.tenant.as_str()) else {
            continue;
        };
        let Some(identity) = identities.endpoint(endpoint) else {
            out.notes.push(format!(
                "endpoint {} has no identity: it is not enforced",
                endpoint.full_ref()
            ));
            continue;
        };
        if endpoint.node == node {
            local_subjects.insert(identity);
            local_endpoint(endpoint, index, identity, links, &mut out);
        } else {
            remote_subjects.insert(identity);
            let node_address = nodes.get(&endpoint.node).copied();
            if node_address.is_none() {
                *unknown_nodes.entry(endpoint.node.as_str()).or_insert(0) += 1;
            }
            for ip in ipv4s(endpoint) {
                out.maps.ipcache.insert(
                    AbiIpcacheKey::new(u32::from(index), ip, 32),
                    IpcacheValue::remote_endpoint(
                        identity.0,
                        node_address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    ),
                );
            }
        }
    }

    for (node, count) in unknown_nodes {
        out.notes.push(format!(
            "the underlay address of node {node} is unknown (give it with --peer, or the control \
             plane's node table): traffic to its {count} endpoint(s) is dropped"
        ));
    }

    for subject in &local_subjects {
        if let Some(table) = tables.table(*subject) {
            out.maps
                .policy
                .extend(table.entries().map(|(k, v)| policy_entry(&k, &v)));
        }
    }
    for subject in remote_subjects.difference(&local_subjects) {
        if let Some(table) = tables.table(*subject) {
            out.maps.policy.extend(
                table
                    .entries()
                    .filter(|(k, _)| k.direction == Direction::Ingress)
                    .map(|(k, v)| policy_entry(&k, &v)),
            );
        }
    }
    out
}

/// IPCACHE, ENDPOINTS and the port of an endpoint on this node.
fn local_endpoint(
    endpoint: &Endpoint,
    tenant: u16,
    identity: Identity,
    links: &NodeLinks,
    out: &mut Desired,
) {
    let ifname = endpoint.host_interface();
    let link = links.get(&ifname).filter(|link| {
        let taken = out.ports.get(&link.ifindex);
        if let Some(port) = taken {
            out.notes.push(format!(
                "endpoint {}: interface {ifname} is already {}",
                endpoint.full_ref(),
                match &port.role {
                    PortRole::Endpoint(other) => format!("the port of {other}"),
                    PortRole::Uplink(t) => format!("the uplink of tenant {t}"),
                    PortRole::Overlay => "the overlay device".to_string(),
                }
            ));
        }
        taken.is_none()
    });
    let ifindex = match link {
        Some(link) => {
            let Some(host_mac) = link.mac else {
                out.notes.push(format!(
                    "endpoint {}: interface {ifname} has no MAC address",
                    endpoint.full_ref()
                ));
                return;
            };
            out.maps.endpoints.insert(
                link.ifindex,
                AbiEndpoint {
                    identity: identity.0,
                    tenant: u32::from(tenant),
                    flags: 0,
                    ipv4: ipv4s(endpoint).next().map_or([0; 4], |ip| ip.octets()),
                    mac: endpoint.workload_mac(),
                    host_mac,
                },
            );
            out.ports.insert(
                link.ifindex,
                Port {
                    name: ifname,
                    role: PortRole::Endpoint(endpoint.full_ref()),
                },
            );
            link.ifindex
        }
        None => {
            if !links.links.contains_key(&ifname) {
                out.notes.push(format!(
                    "endpoint {}: port {ifname} does not exist (yet); its traffic is dropped",
                    endpoint.full_ref()
                ));
            }
            0
        }
    };
    for ip in ipv4s(endpoint) {
        out.maps.ipcache.insert(
            AbiIpcacheKey::new(u32::from(tenant), ip, 32),
            IpcacheValue::local_endpoint(identity.0, ifindex),
        );
    }
}

fn ipv4s(endpoint: &Endpoint) -> impl Iterator<Item = std::net::Ipv4Addr> + '_ {
    endpoint.ips.iter().filter_map(|ip| match ip {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use palisade_datapath::abi::ipcache_flags;
    use palisade_policy::{Compiler, IdentityAllocator};

    use super::*;
    use crate::interfaces::Link;

    const INTENT: &str = "
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {defaultAction: deny, vni: 100}
---
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: elsewhere}
spec: {defaultAction: deny, vni: 200}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: web, tenant: acme, labels: {app: web}}
spec: {node: n1, ips: [10.0.0.1, 'fd00::1'], interface: pweb}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: db, tenant: acme, labels: {app: db}}
spec: {node: n2, ips: [10.0.0.2]}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: gone, tenant: acme, labels: {app: web}}
spec: {node: n1, ips: [10.0.0.3], interface: pgone}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: other, tenant: elsewhere, labels: {app: x}}
spec: {node: n2, ips: [10.9.0.1]}
---
apiVersion: palisade.dev/v1
kind: Policy
metadata: {name: web, tenant: acme}
spec:
  selector: app == 'web'
  egress:
    - action: allow
      to: [{selector: app == 'db'}, {cidr: 192.0.2.0/24}]
      ports: [{protocol: TCP, port: 5432}]
";

    fn desired_for(links: &NodeLinks, uplinks: &[UplinkSpec]) -> (Desired, Identities) {
        let intent = palisade_model::load_str(INTENT, "t.yaml", &Default::default()).unwrap();
        let ids = IdentityAllocator::new().allocate(&intent).unwrap();
        let local = node_intent(&intent, "n1");
        assert_eq!(into_node_intent(intent.clone(), "n1"), local);
        assert!(!local.tenants.contains_key("elsewhere"));
        let tables = Compiler::default().update(&local, &ids).unwrap();
        let nodes = BTreeMap::from([("n2".to_string(), Ipv4Addr::new(10, 255, 0, 2))]);
        let d = desired(&NodeInputs {
            node: "n1",
            intent: &local,
            identities: &ids,
            tables: &tables,
            links,
            uplinks,
            nodes: &nodes,
        });
        (d, ids)
    }

    fn links() -> NodeLinks {
        let mut links = NodeLinks::default();
        links.links.insert(
            "pweb".into(),
            Link {
                ifindex: 7,
                mac: Some([6, 0, 0, 0, 0, 7]),
            },
        );
        links.links.insert(
            "up1".into(),
            Link {
                ifindex: 9,
                mac: Some([6, 0, 0, 0, 0, 9]),
            },
        );
        links.links.insert(
            crate::overlay::OVERLAY_DEVICE.into(),
            Link {
                ifindex: 11,
                mac: Some([6, 0, 0, 0, 0, 11]),
            },
        );
        links.addresses.insert(Ipv4Addr::new(10, 255, 0, 1));
        links
    }

    #[test]
    fn a_node_holds_its_tenants_endpoints_ports_and_uplinks() {
        let uplinks = vec![
            "acme=up1@169.254.101.2".parse().unwrap(),
            "elsewhere=up2@169.254.102.2".parse().unwrap(),
        ];
        let (d, ids) = desired_for(&links(), &uplinks);
        let acme = u32::from(ids.tenant_index("acme").unwrap());
        let web_id = ids
            .labels("acme", &[("app".to_string(), "web".to_string())].into())
            .unwrap();

        // Only acme: elsewhere has no endpoint on n1.
        assert_eq!(d.maps.tenants.keys().copied().collect::<Vec<_>>(), [acme]);
        let tenant = d.maps.tenants[&acme];
        assert_eq!(
            (tenant.uplink_ifindex, tenant.nexthop, tenant.vni),
            (9, [169, 254, 101, 2], 100)
        );
        assert_eq!(d.maps.uplinks[&9].tenant, acme);
        assert!(
            d.notes.iter().any(|n| n.contains("elsewhere")),
            "{:?}",
            d.notes
        );

        let web = d.maps.endpoints[&7];
        assert_eq!(
            (web.identity, web.tenant, web.ipv4, web.host_mac),
            (web_id.0, acme, [10, 0, 0, 1], [6, 0, 0, 0, 0, 7])
        );
        assert_eq!(d.maps.endpoints.len(), 1, "the missing port has no entry");
        assert_eq!(
            d.ports
                .values()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["pweb", "up1", "palisade-vxlan"]
        );
        assert_eq!(d.ports[&11].hooks(), [Hook::FromOverlay]);

        let at = |ip: [u8; 4], len| d.maps.ipcache[&AbiIpcacheKey::new(acme, ip.into(), len)];
        assert_eq!(at([10, 0, 0, 1], 32).flags, ipcache_flags::LOCAL_ENDPOINT);
        assert_eq!(at([10, 0, 0, 1], 32).ifindex, 7);
        assert_eq!(
            (at([10, 0, 0, 3], 32).flags, at([10, 0, 0, 3], 32).ifindex),
            (ipcache_flags::LOCAL_ENDPOINT, 0),
            "a local endpoint without port never falls back to the world entry"
        );
        assert_eq!(at([10, 0, 0, 2], 32).flags, ipcache_flags::REMOTE_ENDPOINT);
        assert_eq!(
            at([10, 0, 0, 2], 32).node_ipv4,
            [10, 255, 0, 2],
            "db is reached over the overlay at its node's address"
        );
        assert_eq!(at([0, 0, 0, 0], 0).flags, ipcache_flags::WORLD);
        assert_eq!(at([192, 0, 2, 0], 24).flags, ipcache_flags::WORLD);
        assert_eq!(at([10, 255, 0, 1], 32).flags, ipcache_flags::HOST);
        assert_eq!(
            at([10, 255, 0, 1], 32).identity,
            Identity::new(acme as u16, Identity::LOCAL_HOST).0
        );
        assert!(
            d.maps.ipcache.keys().all(|k| k.tenant == acme),
            "no other tenant, no IPv6"
        );

        // web's table both ways; db (remote only) just its ingress side.
        let db_id = ids
            .labels("acme", &[("app".to_string(), "db".to_string())].into())
            .unwrap();
        let sides = |id: Identity| -> BTreeSet<u8> {
            d.maps
                .policy
                .keys()
                .filter(|k| k.subject == id.0)
                .map(|k| k.direction)
                .collect()
        };
        assert_eq!(sides(web_id), BTreeSet::from([1, 2]));
        assert_eq!(
            sides(db_id),
            BTreeSet::from([abi::Direction::Ingress as u8])
        );
    }

    #[test]
    fn policy_entries_keep_verdict_flags_and_cookies() {
        let key = PolicyKey {
            subject: Identity(65_792),
            direction: Direction::Egress,
            peer: Identity(65_793),
            proto: 6,
            port: 5432,
            port_prefix_len: 16,
        };
        let value = PolicyValue {
            verdict: Verdict::Allow,
            cookie: 9,
            flags: PolicyValue::FLAG_LOG | PolicyValue::FLAG_AUDIT_DENY,
            audit_cookie: 11,
        };
        let (k, v) = policy_entry(&key, &value);
        assert_eq!(
            k,
            abi::PolicyKey::new(65_792, abi::Direction::Egress, 65_793, 6, 5432, 16)
        );
        assert_eq!(
            (v.verdict, v.flags, v.cookie, v.audit_cookie),
            (
                abi::Verdict::Allow as u8,
                policy_flags::LOG | policy_flags::AUDIT_DENY,
                9,
                11
            )
        );
    }
}
