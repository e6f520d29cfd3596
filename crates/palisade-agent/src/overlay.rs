//! The overlay between nodes, as the agent runs it: the node's underlay
//! address and MTU, the table of the other nodes' underlay addresses, the
//! VXLAN device (created if absent, adopted if there) and the overlay
//! settings the datapath reads from CONFIG. See `docs/overlay.md`.
//!
//! On the wire (bpf/README.md, "Overlay"): VXLAN on UDP 4789, the VNI names
//! the tenant, the Group Policy ID (16 bits) carries the local part of the
//! source identity. Identities are `tenant_index << 16 | local`; tenant
//! indexes are each node's own numbers, so only the local part travels. The
//! identity allocator refuses to give a tenant more locals than 16 bits hold
//! (`IdentityError::TenantFull`): an identity never wraps on the wire.
//!
//! Where node addresses come from: the node's own from `--underlay-address`,
//! or the first IPv4 address of `--underlay-interface`; the others from
//! `--peer NODE=IP` and, with a control plane, from the node table the
//! server sends (agents report their address with their status). A `--peer`
//! wins over the server's table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use palisade_datapath::Maps;

use crate::error::{AgentError, Result};
use crate::interfaces::NodeLinks;
use crate::vxlan;

/// Name of the node's VXLAN device.
pub const OVERLAY_DEVICE: &str = "palisade-vxlan";
/// UDP port of the overlay (IANA's VXLAN port).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes the encapsulation adds: outer IPv4 (20), UDP (8), VXLAN (8), inner
/// Ethernet (14). An endpoint's MTU must leave room for it.
pub const OVERLAY_OVERHEAD: u32 = 50;

/// How the agent finds its node's underlay address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Underlay {
    /// This address (it must be on one of the node's interfaces).
    Address(Ipv4Addr),
    /// The first IPv4 address of this interface.
    Interface(String),
}

impl fmt::Display for Underlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Underlay::Address(a) => write!(f, "address {a}"),
            Underlay::Interface(i) => write!(f, "interface {i}"),
        }
    }
}

/// Another node and its underlay address: `NODE=IP` (`--peer`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerSpec {
    /// The node, as endpoints name it in `spec.node`.
    pub node: String,
    /// Its underlay address.
    pub address: Ipv4Addr,
}

impl FromStr for PeerSpec {
    type Err = AgentError;

    fn from_str(text: &str) -> Result<PeerSpec> {
        let invalid = |reason: &str| AgentError::InvalidPeer {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (node, address) = text.split_once('=').ok_or_else(|| invalid("no '='"))?;
        if node.is_empty() {
            return Err(invalid("the node is empty"));
        }
        let address = address
            .parse()
            .map_err(|_| invalid("the address is not an IPv4 address"))?;
        Ok(PeerSpec {
            node: node.to_string(),
            address,
        })
    }
}

impl fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.node, self.address)
    }
}

/// The agent's overlay settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// How to find the node's underlay address.
    pub underlay: Underlay,
    /// Other nodes' underlay addresses given on the command line.
    pub peers: Vec<PeerSpec>,
}

/// The node's underlay as found on its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayLink {
    /// The node's underlay address (the outer source of what it sends).
    pub address: Ipv4Addr,
    /// The interface holding it.
    pub interface: String,
    /// That interface's MTU.
    pub mtu: u32,
}

impl UnderlayLink {
    /// The largest inner IPv4 packet the underlay carries once
    /// encapsulated: the MTU endpoints must not exceed.
    pub fn overlay_mtu(&self) -> u32 {
        self.mtu.saturating_sub(OVERLAY_OVERHEAD)
    }
}

/// Finds the underlay in the calling thread's network namespace; the error
/// says what is missing (the overlay stays down until it is there).
pub fn find_underlay(underlay: &Underlay) -> std::result::Result<UnderlayLink, String> {
    let addresses = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("cannot list the node's addresses: {e}"))?
        .filter_map(|entry| {
            let v4 = entry.address?.as_sockaddr_in()?.ip();
            (!v4.is_loopback()).then_some((entry.interface_name, v4))
        })
        .collect::<Vec<_>>();
    let (interface, address) = match underlay {
        Underlay::Address(want) => addresses
            .iter()
            .find(|(_, a)| a == want)
            .cloned()
            .ok_or_else(|| format!("no interface of the node has the underlay address {want}"))?,
        Underlay::Interface(name) if name == OVERLAY_DEVICE => {
            return Err(format!(
                "{OVERLAY_DEVICE} is the overlay itself; name the interface toward the other nodes"
            ))
        }
        Underlay::Interface(name) => addresses
            .iter()
            .find(|(i, _)| i == name)
            .cloned()
            .ok_or_else(|| {
                format!("the underlay interface {name} is missing or has no IPv4 address")
            })?,
    };
    let link = vxlan::get_link(&interface)
        .map_err(|e| format!("cannot read the MTU of {interface}: {e}"))?
        .ok_or_else(|| format!("the underlay interface {interface} went away"))?;
    Ok(UnderlayLink {
        address,
        interface,
        mtu: link.mtu,
    })
}

/// Makes sure [`OVERLAY_DEVICE`] is a VXLAN device with collect metadata,
/// GBP and [`VXLAN_PORT`], with MTU `mtu` and up: creates it when absent,
/// adopts it when it is right (a restarted agent keeps its attachments), and
/// refuses a device of that name with other settings. Returns its ifindex
/// and whether it was created.
pub fn ensure_device(mtu: u32) -> Result<(u32, bool)> {
    let device_error = |reason: String| AgentError::Overlay {
        device: OVERLAY_DEVICE,
        reason,
    };
    let mut created = false;
    let link = match vxlan::get_link(OVERLAY_DEVICE).map_err(|e| device_error(e.to_string()))? {
        Some(link) => link,
        None => {
            match vxlan::create_vxlan(OVERLAY_DEVICE, VXLAN_PORT, mtu) {
                Ok(()) => created = true,
                // Created meanwhile by someone else: inspected below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(device_error(format!("cannot create it: {e}"))),
            }
            vxlan::get_link(OVERLAY_DEVICE)
                .map_err(|e| device_error(e.to_string()))?
                .ok_or_else(|| device_error("it vanished right after it was created".into()))?
        }
    };
    let right = link.vxlan.is_some_and(|v| {
        v.collect_metadata && v.gbp && v.port == Some(VXLAN_PORT) && v.learning != Some(true)
    });
    if !right {
        return Err(device_error(format!(
            "it exists but is not a VXLAN device with `external gbp dstport {VXLAN_PORT} \
             nolearning` (kind {}, {:?}); delete it (`ip link del {OVERLAY_DEVICE}`) and the agent \
             creates it",
            link.kind.as_deref().unwrap_or("none"),
            link.vxlan
        )));
    }
    if link.mtu != mtu || !link.up {
        vxlan::set_link(link.ifindex, (link.mtu != mtu).then_some(mtu))
            .map_err(|e| device_error(format!("cannot set MTU {mtu} and bring it up: {e}")))?;
    }
    if created {
        tracing::info!(
            device = OVERLAY_DEVICE,
            ifindex = link.ifindex,
            mtu,
            "created the overlay device"
        );
    }
    Ok((link.ifindex, created))
}

/// What the datapath is told about the overlay (CONFIG): the device, the
/// inner MTU and the node's underlay address; all zero while it is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlaySettings {
    /// The VXLAN device's ifindex.
    pub ifindex: u32,
    /// The largest inner packet.
    pub mtu: u32,
    /// The node's underlay address.
    pub underlay: Option<Ipv4Addr>,
}

/// The overlay of one agent: its settings, the node table and what the
/// datapath was last told.
#[derive(Debug)]
pub struct Overlay {
    node: String,
    config: Option<OverlayConfig>,
    /// The node table of the control plane, as last received.
    learned: BTreeMap<String, Ipv4Addr>,
    settings: OverlaySettings,
    /// Why the overlay is down, as last logged.
    problem: Option<String>,
}

impl Overlay {
    /// The overlay of `node`; `config` `None`: this node takes no part in
    /// one (its endpoints reach only the node's own).
    pub fn new(node: &str, config: Option<OverlayConfig>) -> Overlay {
        Overlay {
            node: node.to_string(),
            config,
            learned: BTreeMap::new(),
            settings: OverlaySettings::default(),
            problem: None,
        }
    }

    /// Replaces the control plane's node table; `true` when it changed.
    pub fn set_learned(&mut self, nodes: BTreeMap<String, Ipv4Addr>) -> bool {
        if nodes == self.learned {
            return false;
        }
        self.learned = nodes;
        true
    }

    /// The settings in force.
    pub fn settings(&self) -> OverlaySettings {
        self.settings
    }

    /// Finds the underlay and makes sure the device exists and is right;
    /// returns whether the node's links changed (a device was created: scan
    /// them again). When something is missing or wrong the overlay is down
    /// (remote destinations drop with NO_TUNNEL; the node's own endpoints
    /// are enforced as ever) and the reason is logged once; every reconcile
    /// tries again, and a change of the node's links or addresses triggers
    /// one.
    pub fn prepare(&mut self, links: &NodeLinks) -> bool {
        let Some(config) = &self.config else {
            return false;
        };
        let underlay = match find_underlay(&config.underlay) {
            Ok(underlay) => underlay,
            Err(problem) => {
                self.down(problem);
                return false;
            }
        };
        let mtu = underlay.overlay_mtu();
        let (ifindex, created) = match ensure_device(mtu) {
            Ok(device) => device,
            Err(e) => {
                self.down(e.to_string());
                return false;
            }
        };
        if self.problem.take().is_some() || self.settings.ifindex != ifindex {
            tracing::info!(
                underlay = %underlay.address,
                interface = %underlay.interface,
                mtu,
                device = OVERLAY_DEVICE,
                "overlay up"
            );
        }
        self.settings = OverlaySettings {
            ifindex,
            mtu,
            underlay: Some(underlay.address),
        };
        created || links.get(OVERLAY_DEVICE).map(|l| l.ifindex) != Some(ifindex)
    }

    /// The overlay is down for `problem` (logged when it changes).
    fn down(&mut self, problem: String) {
        if self.problem.as_ref() != Some(&problem) {
            tracing::error!(%problem, "the overlay is down: destinations on other nodes are dropped (NO_TUNNEL) until it is fixed");
            self.problem = Some(problem);
        }
        self.settings = OverlaySettings::default();
    }

    /// Why the overlay is down, if it is configured and down.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The underlay address of every node known: the control plane's table,
    /// `--peer` flags over it, and this node's own.
    pub fn nodes(&self) -> BTreeMap<String, Ipv4Addr> {
        let mut nodes = self.learned.clone();
        if let Some(config) = &self.config {
            for peer in &config.peers {
                if let Some(other) = nodes.insert(peer.node.clone(), peer.address) {
                    if other != peer.address {
                        tracing::debug!(node = %peer.node, peer = %peer.address, server = %other, "--peer overrides the control plane's address");
                    }
                }
            }
        }
        if let Some(own) = self.settings.underlay {
            nodes.insert(self.node.clone(), own);
        }
        nodes
    }

    /// Writes the settings into CONFIG (a change bumps ROUTE_GEN, so
    /// cached tunnel routes follow); `true` when they changed.
    pub fn apply(&self, maps: &mut Maps) -> Result<bool> {
        let s = self.settings;
        Ok(maps.config.set_overlay(
            s.ifindex,
            s.mtu,
            s.underlay.unwrap_or(Ipv4Addr::UNSPECIFIED),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn peers_parse_and_print_back() {
        let peer: PeerSpec = "node-2=10.255.0.2".parse().unwrap();
        assert_eq!(
            peer,
            PeerSpec {
                node: "node-2".into(),
                address: Ipv4Addr::new(10, 255, 0, 2)
            }
        );
        assert_eq!(peer.to_string(), "node-2=10.255.0.2");
        for bad in ["node-2", "=10.0.0.1", "node-2=fe80::1", "node-2=10.0.0"] {
            let err = bad.parse::<PeerSpec>().unwrap_err().to_string();
            assert!(err.contains("NODE=IP"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_node_table_merges_the_server_and_the_flags() {
        let mut overlay = Overlay::new(
            "n1",
            Some(OverlayConfig {
                underlay: Underlay::Interface("ul0".into()),
                peers: vec!["n2=10.0.0.2".parse().unwrap()],
            }),
        );
        assert!(overlay.set_learned(
            [
                ("n2".to_string(), Ipv4Addr::new(10, 9, 9, 2)),
                ("n3".to_string(), Ipv4Addr::new(10, 0, 0, 3)),
            ]
            .into()
        ));
        assert!(!overlay.set_learned(overlay.learned.clone()), "unchanged");
        let nodes = overlay.nodes();
        assert_eq!(nodes["n2"], Ipv4Addr::new(10, 0, 0, 2), "the flag wins");
        assert_eq!(nodes["n3"], Ipv4Addr::new(10, 0, 0, 3));
        assert!(!nodes.contains_key("n1"), "not up: no own address yet");
    }

    /// A network namespace made for a test, deleted on drop.
    struct TestNetns(String);

    impl TestNetns {
        fn new(tag: &str) -> TestNetns {
            let name = format!("pa-{tag}-{}", std::process::id());
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap();
            assert!(ok.success());
            TestNetns(name)
        }

        fn ip(&self, args: &str) -> String {
            let out = Command::new("ip")
                .args(["-n", &self.0])
                .args(args.split_whitespace())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Runs `work` on a thread inside the namespace.
        fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
            std::thread::scope(|s| {
                s.spawn(|| {
                    crate::netns::enter_netns(&self.0).unwrap();
                    work()
                })
                .join()
                .unwrap()
            })
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn the_device_is_created_adopted_and_a_wrong_one_refused() {
        let ns = TestNetns::new("vx");
        ns.ip("link add ul0 mtu 9000 type veth peer name ul1 mtu 9000");
        ns.ip("addr add 10.254.7.1/24 dev ul0");
        ns.ip("link set ul0 up");

        let underlay = ns
            .run(|| find_underlay(&Underlay::Interface("ul0".into())))
            .unwrap();
        assert_eq!(
            underlay,
            UnderlayLink {
                address: Ipv4Addr::new(10, 254, 7, 1),
                interface: "ul0".into(),
                mtu: 9000
            }
        );
        assert_eq!(underlay.overlay_mtu(), 8950);
        let by_address = ns.run(|| find_underlay(&Underlay::Address(Ipv4Addr::new(10, 254, 7, 1))));
        assert_eq!(by_address.unwrap().interface, "ul0");
        let missing = ns.run(|| find_underlay(&Underlay::Address(Ipv4Addr::new(10, 254, 7, 9))));
        assert!(missing.unwrap_err().contains("10.254.7.9"));

        let (ifindex, created) = ns.run(|| ensure_device(8950)).unwrap();
        assert!(created);
        let shown = ns.ip(&format!("-d link show {OVERLAY_DEVICE}"));
        assert!(
            shown.contains("vxlan external")
                && shown.contains("dstport 4789")
                && shown.contains(" gbp")
                && shown.contains("nolearning")
                && shown.contains("mtu 8950")
                && shown.contains(",UP"),
            "{shown}"
        );
        // A restarted agent adopts it (same ifindex) and fixes its MTU.
        ns.ip(&format!("link set {OVERLAY_DEVICE} mtu 1400"));
        assert_eq!(ns.run(|| ensure_device(8950)).unwrap(), (ifindex, false));
        assert!(ns
            .ip(&format!("link show {OVERLAY_DEVICE}"))
            .contains("mtu 8950"));

        // A device of that name with other settings is refused, not changed.
        ns.ip(&format!("link del {OVERLAY_DEVICE}"));
        ns.ip(&format!(
            "link add {OVERLAY_DEVICE} type vxlan id 5 dstport 4789"
        ));
        let err = ns.run(|| ensure_device(8950)).unwrap_err().to_string();
        assert!(
            err.contains("external gbp") && err.contains("ip link del"),
            "{err}"
        );
        // What `palisade agent --uninstall` does last.
        assert!(ns.run(|| vxlan::delete_link(OVERLAY_DEVICE)).unwrap());
        assert!(
            !ns.run(|| vxlan::delete_link(OVERLAY_DEVICE)).unwrap(),
            "gone"
        );
    }
}
