//! Builds a planned lab in the kernel: namespaces, sysctls, veth pairs, the
//! underlay bridge, addresses and routes. Everything happens inside
//! namespaces the lab creates; the machine's own interfaces, routes and
//! firewall are never touched.
//!
//! Work is grouped into a few steps, each one batch of `ip` commands per
//! namespace run side by side, so that a lab of a few dozen namespaces comes
//! up in well under a second.

use std::collections::BTreeMap;
use std::thread;

use crate::error::Result;
use crate::ip::{self, Batch};
use crate::naming::{self, INNER_IFNAME, UNDERLAY_BRIDGE, UNDERLAY_IFNAME};
use crate::netns;
use crate::state::State;

/// The gateway every endpoint routes through. Nobody owns it: the firewall
/// (or, in plain mode, the node's proxy ARP) answers ARP for it.
pub const ENDPOINT_GATEWAY: &str = "169.254.1.1";

/// First routing table of the per-tenant world tables in plain mode (table
/// `100 + k` routes tenant `k`'s endpoints to its world).
const WORLD_TABLE_BASE: usize = 100;

/// MTU of the underlay links between nodes (veth default).
pub const UNDERLAY_MTU: u32 = 1500;

/// Bytes the overlay's encapsulation adds to a packet between nodes: outer
/// IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
pub const OVERLAY_OVERHEAD: u32 = 50;

/// MTU of every link a workload's packets use (its `eth0` and host-side
/// port, the uplinks to the worlds): in firewall mode the underlay MTU minus
/// the overlay's encapsulation, on every lab, so that a workload's packets
/// fit the overlay wherever it runs or moves; in plain mode (no overlay) the
/// veth default.
pub fn workload_mtu(plain: bool) -> u32 {
    if plain {
        UNDERLAY_MTU
    } else {
        UNDERLAY_MTU - OVERLAY_OVERHEAD
    }
}

/// Builds every namespace and link of `state`.
pub(crate) fn build(state: &State) -> Result<()> {
    create_namespaces(state)?;
    base_sysctls(state)?;
    create_links(state)?;
    if state.plain {
        plain_interface_sysctls(state)?;
    }
    configure_inside(state)?;
    if state.plain {
        plain_routes(state)?;
    }
    Ok(())
}

fn create_namespaces(state: &State) -> Result<()> {
    let mut batch = Batch::new(None);
    for ns in state.namespaces() {
        batch.push(format!("netns add {ns}"));
    }
    ip::run(&batch)
}

/// Settings every namespace gets before it has interfaces, so that new
/// interfaces inherit them (`default`) and nothing depends on the host's
/// values, which a new namespace copies for IPv4: forwarding as the role
/// needs, no reverse-path filter (plain-mode routes are asymmetric on
/// purpose), and no IPv6 (stray router solicitations would pollute tests;
/// the lab does not build IPv6 yet).
fn base_sysctls(state: &State) -> Result<()> {
    let node_forward = if state.plain { "1" } else { "0" };
    let forwarding: BTreeMap<String, &str> = state
        .namespaces()
        .into_iter()
        .map(|ns| {
            let is_node = state.nodes.iter().any(|n| n.netns == ns);
            (ns, if is_node { node_forward } else { "0" })
        })
        .collect();
    parallel(forwarding.iter(), |(ns, forward)| {
        let settings = [
            ("net/ipv6/conf/all/disable_ipv6".to_string(), "1"),
            ("net/ipv6/conf/default/disable_ipv6".to_string(), "1"),
            ("net/ipv4/conf/all/rp_filter".to_string(), "0"),
            ("net/ipv4/conf/default/rp_filter".to_string(), "0"),
            ("net/ipv4/ip_forward".to_string(), *forward),
        ];
        netns::write_sysctls(ns, &settings)
    })
}

fn create_links(state: &State) -> Result<()> {
    let mut underlay = Batch::new(Some(&state.underlay_netns));
    underlay.push("link set lo up");
    underlay.push(format!("link add {UNDERLAY_BRIDGE} type bridge"));
    underlay.push(format!("link set {UNDERLAY_BRIDGE} up"));
    ip::run(&underlay)?;

    let mtu = workload_mtu(state.plain);
    let mut batches = Vec::new();
    for node in &state.nodes {
        let mut b = Batch::new(Some(&node.netns));
        b.push("link set lo up");
        b.push(format!(
            "link add {UNDERLAY_IFNAME} mtu {UNDERLAY_MTU} type veth peer name {} mtu {UNDERLAY_MTU} netns {}",
            naming::underlay_port_ifname(node.index),
            state.underlay_netns
        ));
        b.push(format!(
            "addr add {}/24 dev {UNDERLAY_IFNAME}",
            node.underlay_address
        ));
        b.push(format!("link set {UNDERLAY_IFNAME} up"));
        for ep in state.endpoints.iter().filter(|e| e.node == node.name) {
            b.push(endpoint_link(ep, mtu, INNER_IFNAME));
            b.push(format!("link set {} up", ep.host_port));
        }
        for w in state.worlds.iter().filter(|w| w.node == node.name) {
            b.push(format!(
                "link add {} mtu {mtu} type veth peer name {INNER_IFNAME} mtu {mtu} netns {}",
                w.node_ifname, w.netns
            ));
            b.push(format!(
                "addr add {}/30 dev {}",
                w.node_address, w.node_ifname
            ));
            b.push(format!("link set {} up", w.node_ifname));
        }
        batches.push(b);
    }
    ip::run_all(&batches)
}

/// The `ip` command creating an endpoint's veth pair from its node: the
/// host-side port with its name and MAC, and the workload's side (named
/// `inner`) with its MAC, in the endpoint's namespace.
pub(crate) fn endpoint_link(ep: &crate::state::EndpointInfo, mtu: u32, inner: &str) -> String {
    format!(
        "link add {} address {} mtu {mtu} type veth peer name {inner} address {} mtu {mtu} netns {}",
        ep.host_port, ep.host_mac, ep.mac, ep.netns
    )
}

/// The `ip` commands that set up an endpoint's side once its link exists
/// (named `eth0`): addresses, up, the default route via the gateway.
pub(crate) fn endpoint_inside(ep: &crate::state::EndpointInfo) -> Vec<String> {
    let mut lines: Vec<String> = ep
        .ips
        .iter()
        .map(|ip| format!("addr add {ip}/32 dev {INNER_IFNAME}"))
        .collect();
    lines.push(format!("link set {INNER_IFNAME} up"));
    lines.push(format!(
        "route add default via {ENDPOINT_GATEWAY} dev {INNER_IFNAME} onlink"
    ));
    lines
}

/// Plain mode: the node answers ARP for the endpoints' gateway on their
/// ports (proxy ARP, at once rather than after the default random delay).
fn plain_interface_sysctls(state: &State) -> Result<()> {
    parallel(state.nodes.iter(), |node| {
        let mut settings = Vec::new();
        for ep in state.endpoints.iter().filter(|e| e.node == node.name) {
            settings.push((format!("net/ipv4/conf/{}/proxy_arp", ep.host_port), "1"));
            settings.push((format!("net/ipv4/neigh/{}/proxy_delay", ep.host_port), "0"));
        }
        netns::write_sysctls(&node.netns, &settings)
    })
}

fn configure_inside(state: &State) -> Result<()> {
    let mut batches = Vec::new();
    let mut underlay = Batch::new(Some(&state.underlay_netns));
    for node in &state.nodes {
        let port = naming::underlay_port_ifname(node.index);
        underlay.push(format!("link set {port} master {UNDERLAY_BRIDGE}"));
        underlay.push(format!("link set {port} up"));
    }
    batches.push(underlay);

    for ep in &state.endpoints {
        let mut b = Batch::new(Some(&ep.netns));
        b.push("link set lo up");
        for line in endpoint_inside(ep) {
            b.push(line);
        }
        batches.push(b);
    }

    for w in &state.worlds {
        let mut b = Batch::new(Some(&w.netns));
        b.push("link set lo up");
        b.push(format!("addr add {}/30 dev {INNER_IFNAME}", w.nexthop));
        b.push(format!(
            "addr add {}/32 dev {INNER_IFNAME}",
            state.world_address
        ));
        b.push(format!("link set {INNER_IFNAME} up"));
        // Everything the world sends comes from the world address, not the link's.
        b.push(format!(
            "route add default via {} dev {INNER_IFNAME} src {}",
            w.node_address, state.world_address
        ));
        batches.push(b);
    }
    ip::run_all(&batches)
}

/// Plain mode: the node routes with the kernel alone. The main table has a
/// /32 per endpoint address (to its port, or over the underlay to its node);
/// what it does not know goes to the world of the tenant whose port the
/// packet came in on (rule `iif <port>` to table `100 + k`, after `main`).
fn plain_routes(state: &State) -> Result<()> {
    let underlay_of: BTreeMap<&str, _> = state
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.underlay_address))
        .collect();
    let mut batches = Vec::new();
    for node in &state.nodes {
        let mut b = Batch::new(Some(&node.netns));
        b.push("rule add pref 1000 lookup main");
        let worlds: Vec<_> = state
            .worlds
            .iter()
            .filter(|w| w.node == node.name)
            .collect();
        for w in &worlds {
            b.push(format!(
                "route add default via {} dev {} table {}",
                w.nexthop,
                w.node_ifname,
                WORLD_TABLE_BASE + w.index
            ));
        }
        for ep in &state.endpoints {
            if ep.node == node.name {
                let world = worlds
                    .iter()
                    .find(|w| w.tenant == ep.tenant)
                    .expect("every local tenant has a world");
                b.push(format!(
                    "rule add pref 1100 iif {} lookup {}",
                    ep.host_port,
                    WORLD_TABLE_BASE + world.index
                ));
                for ip in &ep.ips {
                    b.push(format!("route add {ip}/32 dev {}", ep.host_port));
                }
            } else {
                for ip in &ep.ips {
                    b.push(format!(
                        "route add {ip}/32 via {} dev {UNDERLAY_IFNAME}",
                        underlay_of[ep.node.as_str()]
                    ));
                }
            }
        }
        batches.push(b);
    }
    ip::run_all(&batches)
}

/// Runs `work` for every item on its own thread and returns the first error.
fn parallel<I, T>(items: I, work: impl Fn(T) -> Result<()> + Sync) -> Result<()>
where
    I: Iterator<Item = T>,
    T: Send,
{
    let work = &work;
    thread::scope(|s| {
        let handles: Vec<_> = items.map(|item| s.spawn(move || work(item))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>>>()
            .map(drop)
    })
}
