//! Flows as one node sees them, and the packets that carry them.
//!
//! A [`FlowChoice`] is a random pick (proptest shrinks it) that
//! [`FlowChoice::resolve`] turns into a [`NodeFlow`] of a given intent: an
//! endpoint of the node to another endpoint (local or remote), to an
//! address of its tenant's world, or to the node itself; or the world or
//! the node to an endpoint of the node. [`NodeFlow::evaluator_flow`] is the
//! same flow for `palisade_policy::evaluate`, [`NodeFlow::explain_command`]
//! the command line that replays it, and [`NodeFlow::ipv4_packet`] builds
//! its first packet, its reply and a later packet of the connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use palisade_datapath::abi::ip_proto;
use palisade_datapath::testing::packet::{
    icmp, icmp_echo, tcp, udp, Ipv4, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, TCP_ACK, TCP_SYN,
};
use palisade_model::{Endpoint, Intent};
use palisade_policy::{Flow, FlowPeer, FlowRequest};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::intents::ADDRESSES;

/// The node's own address (the host identity), inside several policy
/// prefixes, which must not match it.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 200);

/// Destination ports flows use: every port a rule names, and its neighbours.
pub const PROBE_PORTS: [u16; 19] = [
    1, 2, 52, 53, 54, 79, 80, 81, 442, 443, 444, 999, 1000, 1001, 8079, 8080, 8081, 65534, 65535,
];
/// ICMP types of first packets: echo reply and request, and two other
/// informational types (errors are never decided by policy: they pass only
/// when related to a tracked connection).
const ICMP_TYPES: [u8; 4] = [0, 8, 9, 13];
const ICMP_CODES: [u8; 3] = [0, 1, 4];
/// GRE: a protocol without ports.
const GRE: u8 = 47;

/// What a flow carries: protocol and destination port or ICMP type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// TCP to a port.
    Tcp(u16),
    /// UDP to a port.
    Udp(u16),
    /// SCTP to a port.
    Sctp(u16),
    /// ICMP of a type and code.
    Icmp(u8, u8),
    /// Another IP protocol (no ports).
    Other(u8),
}

impl Probe {
    /// The IP protocol number.
    pub fn proto(self) -> u8 {
        match self {
            Probe::Tcp(_) => ip_proto::TCP,
            Probe::Udp(_) => ip_proto::UDP,
            Probe::Sctp(_) => 132,
            Probe::Icmp(..) => ip_proto::ICMP,
            Probe::Other(p) => p,
        }
    }

    /// The port the evaluator decides on: the destination port, ICMP
    /// `type << 8 | code`, 0 for protocols without ports.
    pub fn port(self) -> u16 {
        match self {
            Probe::Tcp(p) | Probe::Udp(p) | Probe::Sctp(p) => p,
            Probe::Icmp(t, c) => u16::from(t) << 8 | u16::from(c),
            Probe::Other(_) => 0,
        }
    }
}

impl fmt::Display for Probe {
    /// `tcp/80`, `icmp 8/0`, `proto 47`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp(p) => write!(f, "tcp/{p}"),
            Probe::Udp(p) => write!(f, "udp/{p}"),
            Probe::Sctp(p) => write!(f, "sctp/{p}"),
            Probe::Icmp(t, c) => write!(f, "icmp {t}/{c}"),
            Probe::Other(p) => write!(f, "proto {p}"),
        }
    }
}

/// A random [`Probe`].
pub fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![
        7 => select(&PROBE_PORTS[..]).prop_map(Probe::Tcp),
        5 => select(&PROBE_PORTS[..]).prop_map(Probe::Udp),
        2 => select(&PROBE_PORTS[..]).prop_map(Probe::Sctp),
        4 => (select(&ICMP_TYPES[..]), select(&ICMP_CODES[..])).prop_map(|(t, c)| Probe::Icmp(t, c)),
        2 => select(&[GRE, 0][..]).prop_map(Probe::Other),
    ]
}

/// One end of a flow on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// An endpoint (index into the intent's endpoints) at one of its addresses.
    Endpoint {
        /// Index in `Intent::endpoints`.
        index: usize,
        /// The address used.
        ip: Ipv4Addr,
    },
    /// An address of the tenant's world (no endpoint of the tenant has it).
    Address(Ipv4Addr),
    /// The node itself.
    Host,
}

/// A flow between two ends of one tenant, at least one of them an
/// endpoint of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFlow {
    /// The tenant.
    pub tenant: String,
    /// Where it comes from.
    pub src: End,
    /// Where it goes.
    pub dst: End,
    /// What it carries.
    pub probe: Probe,
}

/// Which packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The first packet (TCP SYN, a UDP datagram, an ICMP message, ...).
    First,
    /// The answer of the destination (TCP SYN+ACK, UDP back, echo reply).
    Reply,
    /// A later packet of the originator (TCP ACK, UDP again, echo again).
    Again,
}

impl NodeFlow {
    /// The address of one end (the host: [`NODE_ADDRESS`]).
    fn address(end: End) -> Ipv4Addr {
        match end {
            End::Endpoint { ip, .. } | End::Address(ip) => ip,
            End::Host => NODE_ADDRESS,
        }
    }

    /// Source address of the first packet.
    pub fn src_ip(&self) -> Ipv4Addr {
        Self::address(self.src)
    }

    /// Destination address of the first packet.
    pub fn dst_ip(&self) -> Ipv4Addr {
        Self::address(self.dst)
    }

    /// The same flow for the evaluator.
    pub fn evaluator_flow<'a>(&'a self, intent: &'a Intent) -> Flow<'a> {
        let peer = |end: End| match end {
            End::Endpoint { index, .. } => FlowPeer::Endpoint(&intent.endpoints[index]),
            End::Address(ip) => FlowPeer::Address {
                tenant: &self.tenant,
                ip: IpAddr::V4(ip),
            },
            End::Host => FlowPeer::Host {
                tenant: &self.tenant,
            },
        };
        Flow {
            src: peer(self.src),
            dst: peer(self.dst),
            protocol: self.probe.proto(),
            port: self.probe.port(),
        }
    }

    /// `t0:e1 (10.0.0.2, on n1) -> t0:10.1.2.4 (world) tcp/80`.
    pub fn describe(&self, intent: &Intent) -> String {
        let end = |end: End| match end {
            End::Endpoint { index, ip } => {
                let e = &intent.endpoints[index];
                format!("{} ({ip}, on {})", e.full_ref(), e.node)
            }
            End::Address(ip) => format!("{}:{ip} (world)", self.tenant),
            End::Host => format!("{}:host", self.tenant),
        };
        format!("{} -> {} {}", end(self.src), end(self.dst), self.probe)
    }

    /// This flow as `palisade explain` takes it (`--from`, `--to`, ...).
    pub fn request(&self, intent: &Intent) -> FlowRequest {
        let reference = |end: End| match end {
            End::Endpoint { index, .. } => intent.endpoints[index].full_ref(),
            End::Address(ip) => format!("{}:{ip}", self.tenant),
            End::Host => format!("{}:host", self.tenant),
        };
        let (proto, port, icmp_type, icmp_code) = match self.probe {
            Probe::Tcp(p) => ("tcp".to_string(), Some(p), None, None),
            Probe::Udp(p) => ("udp".to_string(), Some(p), None, None),
            Probe::Sctp(p) => ("sctp".to_string(), Some(p), None, None),
            Probe::Icmp(t, c) => ("icmp".to_string(), None, Some(t), Some(c)),
            Probe::Other(p) => (p.to_string(), None, None, None),
        };
        FlowRequest {
            from: reference(self.src),
            to: reference(self.dst),
            proto,
            port,
            icmp_type,
            icmp_code,
        }
    }

    /// The `palisade explain` command line of this flow, on the intent
    /// saved as `file`.
    pub fn explain_command(&self, intent: &Intent, file: &str) -> String {
        let r = self.request(intent);
        let mut line = format!(
            "palisade explain -f {file} --from {} --to {} --proto {}",
            r.from, r.to, r.proto
        );
        if let Some(port) = r.port {
            line.push_str(&format!(" --port {port}"));
        }
        if let (Some(t), Some(c)) = (r.icmp_type, r.icmp_code) {
            line.push_str(&format!(" --icmp-type {t} --icmp-code {c}"));
        }
        line
    }

    /// Whether a reply of the destination belongs to the connection in the
    /// datapath's conntrack: TCP, UDP, SCTP and other protocols by their
    /// reversed tuple, ICMP only for echo requests (an echo reply carries
    /// the request's id; other types are tracked each on its own).
    pub fn has_reply(&self) -> bool {
        !matches!(self.probe, Probe::Icmp(t, _) if t != ICMP_ECHO_REQUEST)
    }

    /// The conntrack tuple of the first packet, `(saddr, sport, daddr,
    /// dport)`, as the datapath keys it (bpf/include/parse.h): ICMP echo
    /// ids stand for ports, other ICMP types use `type << 8 | code` for both,
    /// protocols without ports have ports 0.
    pub fn tuple(&self, id: u16) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let (sport, dport) = match self.probe {
            Probe::Tcp(p) | Probe::Udp(p) | Probe::Sctp(p) => (id, p),
            Probe::Icmp(ICMP_ECHO_REQUEST, _) => (id, 0),
            Probe::Icmp(ICMP_ECHO_REPLY, _) => (0, id),
            Probe::Icmp(..) => (self.probe.port(), self.probe.port()),
            Probe::Other(_) => (0, 0),
        };
        (self.src_ip(), sport, self.dst_ip(), dport)
    }

    /// The IPv4 packet (header and payload) of `stage` of the connection
    /// numbered `id` (its source port, or its ICMP echo id).
    pub fn ipv4_packet(&self, stage: Stage, id: u16) -> Vec<u8> {
        let (src, dst) = match stage {
            Stage::First | Stage::Again => (self.src_ip(), self.dst_ip()),
            Stage::Reply => (self.dst_ip(), self.src_ip()),
        };
        let reply = stage == Stage::Reply;
        let l4 = match self.probe {
            Probe::Tcp(port) => {
                let flags = match stage {
                    Stage::First => TCP_SYN,
                    Stage::Reply => TCP_SYN | TCP_ACK,
                    Stage::Again => TCP_ACK,
                };
                let (sport, dport) = if reply { (port, id) } else { (id, port) };
                tcp(src, sport, dst, dport, flags, b"")
            }
            Probe::Udp(port) => {
                let (sport, dport) = if reply { (port, id) } else { (id, port) };
                udp(src, sport, dst, dport, b"palisade")
            }
            Probe::Sctp(port) => {
                let (sport, dport) = if reply { (port, id) } else { (id, port) };
                sctp(sport, dport)
            }
            Probe::Icmp(ICMP_ECHO_REQUEST, code) if reply => {
                let mut m = icmp_echo(ICMP_ECHO_REPLY, id, 1);
                m[1] = code;
                fix_icmp_checksum(&mut m);
                m
            }
            Probe::Icmp(t @ (ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY), code) => {
                let seq = if stage == Stage::Again { 2 } else { 1 };
                let mut m = icmp_echo(t, id, seq);
                m[1] = code;
                fix_icmp_checksum(&mut m);
                m
            }
            Probe::Icmp(t, c) => icmp(t, c, [0; 4], b"palisade"),
            Probe::Other(_) => vec![0, 0, 0x08, 0], // a GRE header carrying IPv4
        };
        Ipv4::new(src, dst, self.probe.proto()).packet(&l4)
    }
}

/// An SCTP common header (ports, verification tag, checksum the datapath
/// does not check) and an empty chunk.
fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&[1, 0, 0, 4]); // INIT chunk header, no parameters
    p
}

fn fix_icmp_checksum(m: &mut [u8]) {
    m[2] = 0;
    m[3] = 0;
    let sum = palisade_datapath::testing::packet::checksum(m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// The shapes of flows a node sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A local endpoint to another endpoint of its tenant (local or remote).
    EndpointToEndpoint,
    /// A local endpoint to an address (its tenant's world, or an endpoint's).
    ToAddress,
    /// The world (through the tenant's uplink) to a local endpoint.
    FromAddress,
    /// A local endpoint to the node.
    ToHost,
    /// The node to a local endpoint.
    FromHost,
}

/// A random flow, resolved against an intent by [`FlowChoice::resolve`].
#[derive(Debug, Clone, Copy)]
pub struct FlowChoice {
    kind: Kind,
    a: Index,
    b: Index,
    src_second: bool,
    dst_second: bool,
    probe: Probe,
}

/// A random [`FlowChoice`].
pub fn flow_choice() -> impl Strategy<Value = FlowChoice> {
    let kind = prop_oneof![
        5 => Just(Kind::EndpointToEndpoint),
        3 => Just(Kind::ToAddress),
        3 => Just(Kind::FromAddress),
        1 => Just(Kind::ToHost),
        1 => Just(Kind::FromHost),
    ];
    (
        kind,
        any::<Index>(),
        any::<Index>(),
        any::<bool>(),
        any::<bool>(),
        probe(),
    )
        .prop_map(|(kind, a, b, src_second, dst_second, probe)| FlowChoice {
            kind,
            a,
            b,
            src_second,
            dst_second,
            probe,
        })
}

fn ipv4s(e: &Endpoint) -> Vec<Ipv4Addr> {
    e.ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

impl FlowChoice {
    /// The flow this choice names in `intent`, seen from `node`; `None`
    /// when the intent has no such flow (no endpoint on the node, no other
    /// endpoint in the tenant, a world address that is an endpoint's).
    pub fn resolve(&self, intent: &Intent, node: &str) -> Option<NodeFlow> {
        let local: Vec<usize> = (0..intent.endpoints.len())
            .filter(|&i| intent.endpoints[i].node == node)
            .collect();
        if local.is_empty() {
            return None;
        }
        let at = |index: usize, second: bool| {
            let ips = ipv4s(&intent.endpoints[index]);
            let ip = if second && ips.len() > 1 {
                ips[1]
            } else {
                ips[0]
            };
            End::Endpoint { index, ip }
        };
        // An address of the tenant is an endpoint when one of its endpoints has it.
        let owner = |tenant: &str, ip: Ipv4Addr| {
            intent
                .endpoints
                .iter()
                .position(|e| e.tenant == tenant && e.ips.contains(&IpAddr::V4(ip)))
        };
        let address = |i: Index| -> Ipv4Addr { i.get(&ADDRESSES).parse().expect("an address") };
        let (src_index, src, dst) = match self.kind {
            Kind::EndpointToEndpoint => {
                let s = *self.a.get(&local);
                let tenant = &intent.endpoints[s].tenant;
                let others: Vec<usize> = (0..intent.endpoints.len())
                    .filter(|&i| i != s && intent.endpoints[i].tenant == *tenant)
                    .collect();
                if others.is_empty() {
                    return None;
                }
                let d = *self.b.get(&others);
                (s, at(s, self.src_second), at(d, self.dst_second))
            }
            Kind::ToAddress => {
                let s = *self.a.get(&local);
                let ip = address(self.b);
                let dst = match owner(&intent.endpoints[s].tenant, ip) {
                    Some(d) if d == s => return None,
                    Some(d) => End::Endpoint { index: d, ip },
                    None => End::Address(ip),
                };
                (s, at(s, self.src_second), dst)
            }
            Kind::FromAddress => {
                let d = *self.b.get(&local);
                let ip = address(self.a);
                if owner(&intent.endpoints[d].tenant, ip).is_some() {
                    return None;
                }
                (d, End::Address(ip), at(d, self.dst_second))
            }
            Kind::ToHost => {
                let s = *self.a.get(&local);
                (s, at(s, self.src_second), End::Host)
            }
            Kind::FromHost => {
                let d = *self.b.get(&local);
                (d, End::Host, at(d, self.dst_second))
            }
        };
        Some(NodeFlow {
            tenant: intent.endpoints[src_index].tenant.clone(),
            src,
            dst,
            probe: self.probe,
        })
    }
}
