//! Turns an intent into the lab's layout (nodes, endpoints, worlds, names,
//! addresses) and checks it, before anything touches the kernel: a lab that
//! cannot be built fails here, with nothing to clean up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use palisade_model::{Intent, Protocol};

use crate::error::{LabError, Result};
use crate::naming;
use crate::state::{EndpointInfo, NodeInfo, State, WorldInfo};

/// Most nodes: one underlay address each in 10.255.0.0/24.
const MAX_NODES: usize = 254;

/// Most tenants with endpoints on one node: uplinks use 169.254.101-255.0/30.
const MAX_TENANTS_PER_NODE: usize = 155;

/// Where world addresses are picked from, in order (documentation ranges, RFC 5737).
const WORLD_RANGES: [[u8; 3]; 2] = [[198, 51, 100], [203, 0, 113]];

/// Computes the layout of lab `lab` for `intent`. Responders are not part of
/// the plan: `up` records them once started.
pub(crate) fn plan(intent: &Intent, lab: &str, plain: bool) -> Result<State> {
    naming::validate_lab_name(lab)?;
    let mut endpoints: Vec<_> = intent.endpoints.iter().collect();
    endpoints.sort_by_key(|e| e.full_ref());

    for ep in &endpoints {
        naming::validate_resource_name("tenant", &ep.tenant)?;
        if let Some(ns) = &ep.namespace {
            naming::validate_resource_name("namespace", ns)?;
        }
        naming::validate_resource_name("endpoint", &ep.name)?;
        naming::validate_resource_name("node", &ep.node)?;
    }

    let node_names: BTreeSet<&str> = endpoints.iter().map(|e| e.node.as_str()).collect();
    if node_names.len() > MAX_NODES {
        return Err(LabError::TooMany {
            what: "nodes".into(),
            max: MAX_NODES,
            count: node_names.len(),
        });
    }

    let world_address = pick_world_address(intent)?;
    let mut state = State::new(lab, plain, world_address);

    for (i, node) in node_names.iter().enumerate() {
        let index = i + 1;
        state.nodes.push(NodeInfo {
            name: node.to_string(),
            netns: naming::node_netns(lab, node),
            index,
            underlay_address: Ipv4Addr::new(10, 255, 0, index as u8),
        });
    }

    // Worlds: one per (node, tenant) with endpoints there; k counts tenants per node.
    let mut tenants_by_node: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for ep in &endpoints {
        tenants_by_node
            .entry(ep.node.as_str())
            .or_default()
            .insert(ep.tenant.as_str());
    }
    for (node, tenants) in &tenants_by_node {
        if tenants.len() > MAX_TENANTS_PER_NODE {
            return Err(LabError::TooMany {
                what: format!("tenants on node {node}"),
                max: MAX_TENANTS_PER_NODE,
                count: tenants.len(),
            });
        }
        for (i, tenant) in tenants.iter().enumerate() {
            let k = i + 1;
            let third = 100 + k as u8;
            state.worlds.push(WorldInfo {
                node: node.to_string(),
                tenant: tenant.to_string(),
                netns: naming::world_netns(lab, node, tenant),
                index: k,
                node_ifname: naming::uplink_ifname(k),
                node_address: Ipv4Addr::new(169, 254, third, 1),
                nexthop: Ipv4Addr::new(169, 254, third, 2),
            });
        }
    }

    let mut ports: HashMap<(&str, String), String> = HashMap::new();
    let mut owners: HashMap<Ipv4Addr, String> = HashMap::new();
    for ep in &endpoints {
        let full_ref = ep.full_ref();
        let host_port = naming::host_port_name(ep);
        if let Some(reason) = naming::interface_name_problem(&host_port) {
            return Err(LabError::InvalidInterface {
                endpoint: full_ref,
                name: host_port,
                reason,
            });
        }
        if let Some(first) = ports.insert((ep.node.as_str(), host_port.clone()), full_ref.clone()) {
            return Err(LabError::InterfaceClash {
                node: ep.node.clone(),
                name: host_port,
                first,
                second: full_ref,
            });
        }

        let mut ips = Vec::new();
        for ip in &ep.ips {
            match ip {
                IpAddr::V4(v4) => ips.push(*v4),
                IpAddr::V6(v6) => tracing::warn!(
                    endpoint = %full_ref,
                    ip = %v6,
                    "the lab does not build IPv6 addresses yet; skipping this one"
                ),
            }
        }
        if ips.is_empty() {
            tracing::warn!(endpoint = %full_ref, "endpoint has no IPv4 address: nothing can reach it in the lab");
        }
        if plain {
            for ip in &ips {
                if let Some(first) = owners.insert(*ip, full_ref.clone()) {
                    return Err(LabError::PlainOverlap {
                        ip: *ip,
                        first,
                        second: full_ref,
                    });
                }
            }
        }

        let serve: Vec<_> = ep
            .serve
            .iter()
            .filter(|p| {
                let servable = matches!(p.protocol, Protocol::Tcp | Protocol::Udp);
                if !servable {
                    tracing::warn!(endpoint = %full_ref, port = %p, "responders serve TCP and UDP only; skipping this port");
                }
                servable
            })
            .copied()
            .collect();

        state.endpoints.push(EndpointInfo {
            full_ref,
            tenant: ep.tenant.clone(),
            node: ep.node.clone(),
            netns: naming::endpoint_netns(lab, ep),
            mac: naming::endpoint_mac(ep),
            ips,
            host_port,
            host_mac: naming::host_port_mac(ep),
            serve,
        });
    }
    check_namespace_names(&state)?;
    Ok(state)
}

/// Longest file name, and so namespace name (NAME_MAX).
const MAX_NETNS_LEN: usize = 255;

/// Every namespace name must fit in a file name and be unique (they are, for
/// names the model accepts; this catches anything that slipped through).
fn check_namespace_names(state: &State) -> Result<()> {
    let mut seen = BTreeSet::new();
    for ns in state.namespaces() {
        if ns.len() > MAX_NETNS_LEN {
            return Err(LabError::InvalidResourceName {
                what: "namespace name",
                value: ns,
                reason: "the names it is made of are too long together (over 255 bytes)",
            });
        }
        if !seen.insert(ns.clone()) {
            return Err(LabError::InvalidResourceName {
                what: "namespace name",
                value: ns,
                reason: "two parts of the lab would share it (names with '_'?)",
            });
        }
    }
    Ok(())
}

/// The first address of the world ranges that is neither inside a tenant's
/// CIDRs nor an endpoint's address, so that traffic to the world is never
/// mistaken for traffic to a workload.
fn pick_world_address(intent: &Intent) -> Result<Ipv4Addr> {
    let taken = |addr: Ipv4Addr| {
        let ip = IpAddr::V4(addr);
        intent
            .tenants
            .values()
            .any(|t| t.cidrs.iter().any(|c| c.contains(&ip)))
            || intent.endpoints.iter().any(|e| e.ips.contains(&ip))
    };
    WORLD_RANGES
        .iter()
        .flat_map(|[a, b, c]| (1..=254).map(move |d| Ipv4Addr::new(*a, *b, *c, d)))
        .find(|addr| !taken(*addr))
        .ok_or(LabError::NoWorldAddress)
}

#[cfg(test)]
mod tests {
    use palisade_model::{Endpoint, Tenant, TenantDefault};

    use super::*;

    fn endpoint(tenant: &str, name: &str, node: &str, ip: &str) -> Endpoint {
        Endpoint {
            tenant: tenant.into(),
            namespace: None,
            name: name.into(),
            labels: Default::default(),
            ips: vec![ip.parse().unwrap()],
            mac: None,
            node: node.into(),
            interface: None,
            serve: vec![],
        }
    }

    fn intent(endpoints: Vec<Endpoint>) -> Intent {
        let mut intent = Intent {
            endpoints,
            ..Default::default()
        };
        for t in ["acme", "globex"] {
            intent.tenants.insert(
                t.into(),
                Tenant {
                    name: t.into(),
                    default_action: TenantDefault::Deny,
                    vni: Some(1),
                    cidrs: vec![],
                },
            );
        }
        intent
    }

    #[test]
    fn nodes_are_numbered_in_name_order_and_worlds_per_tenant_on_each_node() {
        let state = plan(
            &intent(vec![
                endpoint("globex", "a", "node-b", "10.0.0.1"),
                endpoint("acme", "b", "node-b", "10.0.0.2"),
                endpoint("acme", "c", "node-a", "10.0.0.3"),
            ]),
            "t",
            true,
        )
        .unwrap();
        let nodes: Vec<_> = state
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.underlay_address.to_string()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("node-a", "10.255.0.1".into()),
                ("node-b", "10.255.0.2".into())
            ]
        );
        let worlds: Vec<_> = state
            .worlds
            .iter()
            .map(|w| {
                (
                    w.node.as_str(),
                    w.tenant.as_str(),
                    w.node_ifname.as_str(),
                    w.nexthop.to_string(),
                )
            })
            .collect();
        assert_eq!(
            worlds,
            [
                ("node-a", "acme", "up1", "169.254.101.2".into()),
                ("node-b", "acme", "up1", "169.254.101.2".into()),
                ("node-b", "globex", "up2", "169.254.102.2".into()),
            ]
        );
        assert_eq!(state.world_address, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(state.endpoints[0].full_ref, "acme:b");
    }

    #[test]
    fn plain_mode_refuses_overlapping_addresses_with_both_names() {
        let overlapping = intent(vec![
            endpoint("acme", "web", "n", "10.0.0.1"),
            endpoint("globex", "web", "n", "10.0.0.1"),
        ]);
        let err = plan(&overlapping, "t", true).unwrap_err().to_string();
        assert!(
            err.contains("acme:web") && err.contains("globex:web") && err.contains("10.0.0.1"),
            "{err}"
        );
        // With the firewall, tenants are separate networks: overlap is fine.
        assert!(plan(&overlapping, "t", false).is_ok());
    }

    #[test]
    fn world_address_avoids_tenant_cidrs_and_endpoint_addresses() {
        let mut i = intent(vec![endpoint("acme", "w", "n", "198.51.100.2")]);
        i.tenants.get_mut("acme").unwrap().cidrs = vec!["198.51.100.0/31".parse().unwrap()];
        assert_eq!(
            plan(&i, "t", false).unwrap().world_address,
            Ipv4Addr::new(198, 51, 100, 3)
        );

        i.tenants.get_mut("globex").unwrap().cidrs = vec![
            "198.51.100.0/24".parse().unwrap(),
            "203.0.113.0/25".parse().unwrap(),
        ];
        assert_eq!(
            plan(&i, "t", false).unwrap().world_address,
            Ipv4Addr::new(203, 0, 113, 128)
        );

        i.tenants.get_mut("globex").unwrap().cidrs = vec!["0.0.0.0/0".parse().unwrap()];
        assert!(matches!(
            plan(&i, "t", false),
            Err(LabError::NoWorldAddress)
        ));
    }

    #[test]
    fn clashing_or_invalid_interface_names_are_refused() {
        let mut a = endpoint("acme", "a", "n", "10.0.0.1");
        let mut b = endpoint("acme", "b", "n", "10.0.0.2");
        a.interface = Some("tap0".into());
        b.interface = Some("tap0".into());
        let err = plan(&intent(vec![a.clone(), b.clone()]), "t", false).unwrap_err();
        assert!(matches!(err, LabError::InterfaceClash { .. }), "{err}");
        // The same name on different nodes is fine: each node is its own namespace.
        b.node = "m".into();
        assert!(plan(&intent(vec![a.clone(), b]), "t", false).is_ok());

        a.interface = Some("far-too-long-name".into());
        let err = plan(&intent(vec![a]), "t", false).unwrap_err();
        assert!(matches!(err, LabError::InvalidInterface { .. }), "{err}");
    }

    #[test]
    fn ipv6_addresses_are_skipped() {
        let mut ep = endpoint("acme", "a", "n", "10.0.0.1");
        ep.ips.push("fd00::1".parse().unwrap());
        let state = plan(&intent(vec![ep]), "t", false).unwrap();
        assert_eq!(state.endpoints[0].ips, [Ipv4Addr::new(10, 0, 0, 1)]);
    }

    #[test]
    fn names_that_would_make_the_same_namespace_are_refused() {
        // Not possible with names the model accepts (no '_'), caught all the same.
        let a = endpoint("a_b", "c", "n", "10.0.0.1");
        let mut b = endpoint("a", "c", "n", "10.0.0.2");
        b.namespace = Some("b".into());
        let state = plan(&intent(vec![a, b]), "t", false).unwrap();
        assert_eq!(state.endpoints.len(), 2, "a_b:c and a:b/c differ");
        let world_clash = vec![
            endpoint("b_c", "x", "a", "10.0.0.1"),
            endpoint("c", "y", "a_b", "10.0.0.2"),
        ];
        let err = plan(&intent(world_clash), "t", false).unwrap_err();
        assert!(err.to_string().contains("pl_t_w_a_b_c"), "{err}");

        let long = "x".repeat(200);
        let err = plan(
            &intent(vec![endpoint(&long, &long, "n", "10.0.0.1")]),
            "t",
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("255"), "{err}");
    }

    #[test]
    fn names_that_cannot_be_namespace_names_are_refused() {
        let ep = endpoint("acme", "a/b", "n", "10.0.0.1");
        assert!(matches!(
            plan(&intent(vec![ep]), "t", false),
            Err(LabError::InvalidResourceName {
                what: "endpoint",
                ..
            })
        ));
        assert!(matches!(
            plan(&intent(vec![]), "Bad_Name", false),
            Err(LabError::InvalidLabName { .. })
        ));
    }
}
