//! The overlay with real packets: two node namespaces joined by an underlay
//! link, each with its own datapath (own pins), a VXLAN device created
//! `external gbp` carrying `from_overlay`, and one workload. What crosses the
//! underlay is captured and decoded: allowed flows carry the tenant's VNI and
//! the sender's identity in the Group Policy ID, denied ones never appear.
//! TCP moves bulk data with GSO through the VXLAN devices, and a workload
//! whose MTU is larger than the overlay's learns the right one from the
//! datapath's ICMP "fragmentation needed" answer (no black hole).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use palisade_datapath::abi::{
    ip_proto, Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, TenantInfo,
};
use palisade_datapath::testing::packet;
use palisade_datapath::{Datapath, DatapathConfig, Direction, DropReason, Hook, Interface};

const WAIT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(400);
const VNI: u32 = 100;
const UNDERLAY_1: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const UNDERLAY_2: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// Underlay MTU 1500 minus the 50 bytes of encapsulation.
const OVERLAY_MTU: u32 = 1450;

/// One node: its namespace, its workload's, its pins and its datapath.
struct Node {
    dp: Datapath,
    workload: Netns,
    _bpffs: BpffsDir,
    netns: Netns,
}

/// Node 1 with workload A (10.0.0.1), node 2 with workload B (10.0.0.2),
/// the underlay link `ul0` between them (10.255.0.1/24, 10.255.0.2/24,
/// MTU 1500), a VXLAN device `vx0` (`external gbp`, UDP 4789) on each, and
/// on each node both workloads in the tables (the other one remote). Policy
/// on both: A may reach B on tcp/8080, udp/5353 and ping; nothing else
/// (cookie 99).
/// Workload links have the overlay's MTU unless a test changes it.
struct TwoNodes {
    n1: Node,
    n2: Node,
}

impl TwoNodes {
    fn new(tag: &str) -> TwoNodes {
        let base = unique(tag);
        let ns = |suffix: &str| Netns::new(&format!("{base}{suffix}"));
        let (n1, n2, a, b) = (ns("n1"), ns("n2"), ns("a"), ns("b"));
        ip(
            &n1.name,
            &format!("link add ul0 type veth peer name ul0 netns {}", n2.name),
        );
        for (n, addr) in [(&n1, UNDERLAY_1), (&n2, UNDERLAY_2)] {
            ip(&n.name, &format!("addr add {addr}/24 dev ul0"));
            ip(&n.name, "link set ul0 up");
            ip(&n.name, "link add vx0 type vxlan external gbp dstport 4789");
            ip(&n.name, "link set vx0 up");
        }
        for (n, w, port, addr, last) in [(&n1, &a, "hA", IP_A, 0x0a), (&n2, &b, "hB", IP_B, 0x0b)] {
            ip(
                &n.name,
                &format!(
                    "link add {port} mtu {OVERLAY_MTU} address {} type veth peer name eth0 netns {}",
                    mac_str(packet::mac(last | 0x80)),
                    w.name
                ),
            );
            ip(
                &w.name,
                &format!("link set eth0 address {}", mac_str(packet::mac(last))),
            );
            ip(&w.name, &format!("link set eth0 mtu {OVERLAY_MTU}"));
            ip(&w.name, &format!("addr add {addr}/32 dev eth0"));
            ip(&w.name, "link set eth0 up");
            ip(&w.name, "route add default via 169.254.1.1 dev eth0 onlink");
            ip(&n.name, &format!("link set {port} up"));
        }
        let open = |n: Netns, w: Netns, suffix: &str| {
            let bpffs = BpffsDir::new(&format!("{base}{suffix}"));
            let dp = in_netns(&n.name, || {
                Datapath::open(&DatapathConfig {
                    bpffs_dir: bpffs.path.clone(),
                    map_sizes: test_sizes(),
                })
                .expect("open datapath")
            });
            Node {
                dp,
                workload: w,
                _bpffs: bpffs,
                netns: n,
            }
        };
        let mut nodes = TwoNodes {
            n1: open(n1, a, "p1"),
            n2: open(n2, b, "p2"),
        };
        nodes.fill(true);
        nodes.fill(false);
        nodes
    }

    fn fill(&mut self, first: bool) {
        let (node, port, underlay, local, remote, remote_node) = if first {
            (
                &mut self.n1,
                "hA",
                UNDERLAY_1,
                (ID_A, IP_A, 0x0a),
                (ID_B, IP_B),
                UNDERLAY_2,
            )
        } else {
            (
                &mut self.n2,
                "hB",
                UNDERLAY_2,
                (ID_B, IP_B, 0x0b),
                (ID_A, IP_A),
                UNDERLAY_1,
            )
        };
        let (port_ifindex, vx) = in_netns(&node.netns.name, || (ifindex(port), ifindex("vx0")));
        let maps = node.dp.maps_mut();
        let (identity, addr, last) = local;
        maps.endpoints
            .insert(
                port_ifindex,
                &Endpoint {
                    identity,
                    tenant: TENANT,
                    flags: 0,
                    ipv4: addr.octets(),
                    mac: packet::mac(last),
                    host_mac: packet::mac(last | 0x80),
                },
            )
            .unwrap();
        let entries = [
            (
                addr,
                32,
                IpcacheValue::local_endpoint(identity, port_ifindex),
            ),
            (
                remote.1,
                32,
                IpcacheValue::remote_endpoint(remote.0, remote_node),
            ),
            (Ipv4Addr::UNSPECIFIED, 0, IpcacheValue::world(WORLD_ID)),
        ];
        for (ip, len, value) in entries {
            maps.ipcache
                .insert(&IpcacheKey::new(TENANT, ip, len), &value)
                .unwrap();
        }
        maps.tenants
            .insert(
                TENANT,
                &TenantInfo {
                    vni: VNI,
                    ..TenantInfo::default()
                },
            )
            .unwrap();
        maps.config.set_overlay(vx, OVERLAY_MTU, underlay).unwrap();
        let policy = &mut maps.policy;
        let mut allow = |subject, dir, peer, proto, port, cookie| {
            policy
                .insert(
                    &PolicyKey::new(subject, dir, peer, proto, port, 16),
                    &PolicyValue::allow(cookie),
                )
                .unwrap();
        };
        allow(ID_A, Direction::Egress, ID_B, ip_proto::TCP, 8080, 1);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::TCP, 8080, 2);
        allow(ID_A, Direction::Egress, ID_B, ip_proto::ICMP, 8 << 8, 3);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::ICMP, 8 << 8, 4);
        allow(ID_A, Direction::Egress, ID_B, ip_proto::UDP, 5353, 5);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::UDP, 5353, 6);
        for id in [ID_A, ID_B] {
            for dir in [Direction::Egress, Direction::Ingress] {
                policy
                    .insert(&PolicyKey::default_for(id, dir), &PolicyValue::deny(99))
                    .unwrap();
            }
        }
        let n = Some(node.netns.name.as_str());
        for hook in [Hook::FromEndpoint, Hook::ToEndpoint] {
            node.dp
                .attach(n, &Interface::name(port), hook)
                .expect("attach the port");
        }
        node.dp
            .attach(n, &Interface::name("vx0"), Hook::FromOverlay)
            .expect("attach from_overlay to the VXLAN device");
    }

    fn a(&self) -> &str {
        &self.n1.workload.name
    }

    fn b(&self) -> &str {
        &self.n2.workload.name
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn drops(node: &Node, reason: DropReason) -> u64 {
    node.dp.maps().counters.drops(reason).unwrap().packets
}

#[test]
fn allowed_flows_cross_with_vni_and_identity_and_denied_ones_never_leave() {
    let t = TwoNodes::new("ovw");
    let _allowed = tcp_echo_server(t.b(), addr(IP_B, 8080));
    let denied = tcp_echo_server(t.b(), addr(IP_B, 8081));
    let _back = tcp_echo_server(t.a(), addr(IP_A, 8080));

    let capture = Capture::start(&t.n2.netns.name, "ul0");
    assert!(ping(t.a(), IP_B, WAIT), "ping A -> B across nodes");
    assert!(
        tcp_echo_ok(t.a(), addr(IP_B, 8080), WAIT),
        "tcp A -> B:8080"
    );
    assert!(
        !tcp_echo_ok(t.a(), addr(IP_B, 8081), SHORT),
        "tcp A -> B:8081 is denied"
    );
    assert!(
        !tcp_echo_ok(t.b(), addr(IP_A, 8080), SHORT),
        "B may open nothing"
    );
    let frames = capture.finish();

    let vxlan: Vec<Vxlan> = frames.iter().filter_map(|f| decode_vxlan(f)).collect();
    let a_to_b: Vec<&Vxlan> = vxlan.iter().filter(|v| v.inner_src == IP_A).collect();
    let b_to_a: Vec<&Vxlan> = vxlan.iter().filter(|v| v.inner_src == IP_B).collect();
    assert!(a_to_b.len() >= 4 && b_to_a.len() >= 4, "{vxlan:#?}");
    for v in &a_to_b {
        assert_eq!(
            (v.outer_src, v.outer_dst, v.vni, v.gbp),
            (UNDERLAY_1, UNDERLAY_2, VNI, Some((ID_A & 0xffff) as u16)),
            "{v:?}"
        );
        assert_eq!(v.inner_dst, IP_B);
    }
    for v in &b_to_a {
        assert_eq!(
            (v.outer_src, v.outer_dst, v.vni, v.gbp),
            (UNDERLAY_2, UNDERLAY_1, VNI, Some((ID_B & 0xffff) as u16)),
            "{v:?}"
        );
    }
    assert!(
        a_to_b.iter().any(|v| v.inner_proto == ip_proto::ICMP)
            && a_to_b.iter().any(|v| v.inner_dport == 8080),
        "ping and tcp/8080 crossed"
    );
    assert!(
        !vxlan
            .iter()
            .any(|v| v.inner_dport == 8081 || (v.inner_src == IP_B && v.inner_dport == 8080)),
        "denied flows never reach the underlay: {vxlan:#?}"
    );
    assert_eq!(denied.count(), 0);
    assert!(
        drops(&t.n1, DropReason::PolicyDenied) >= 1,
        "denied at A's node"
    );
    assert!(
        drops(&t.n2, DropReason::PolicyDenied) >= 1,
        "B's attempt denied at B's node"
    );
    assert_eq!(drops(&t.n2, DropReason::ForgedIdentity), 0);
    assert_eq!(drops(&t.n1, DropReason::ForgedIdentity), 0);
}

#[test]
fn a_forged_vxlan_packet_from_the_underlay_is_dropped_and_counted() {
    let t = TwoNodes::new("ovf");
    let server = udp_echo_server(t.b(), addr(IP_B, 5353));
    // Node 1 is compromised: it sends VXLAN packets of its own making, from
    // its own underlay address, to B.
    let datagram = |src: Ipv4Addr, sport| {
        let l4 = packet::udp(src, sport, IP_B, 5353, b"forged");
        packet::ethernet(
            packet::mac(0x0b | 0x80),
            packet::mac(0x0a),
            packet::ETH_P_IP,
            &packet::Ipv4::new(src, IP_B, ip_proto::UDP).packet(&l4),
        )
    };
    let vxlan = |gbp: u16, vni: u32, inner: &[u8]| {
        // Flags G (group policy) and I (VNI valid), the policy id, the VNI.
        let mut v = vec![0x88, 0, 0, 0, 0, 0, 0, 0];
        v[2..4].copy_from_slice(&gbp.to_be_bytes());
        v[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
        v.extend_from_slice(inner);
        v
    };
    let send = |payload: Vec<u8>| {
        in_netns(&t.n1.netns.name, || {
            let socket = std::net::UdpSocket::bind((UNDERLAY_1, 0)).unwrap();
            socket.send_to(&payload, (UNDERLAY_2, 4789)).unwrap();
        })
    };
    let a_local = (ID_A & 0xffff) as u16;
    // A's identity on an address that is not A's.
    send(vxlan(
        a_local,
        VNI,
        &datagram(Ipv4Addr::new(10, 0, 0, 77), 1000),
    ));
    // Another identity on A's address.
    send(vxlan(0x0777, VNI, &datagram(IP_A, 1001)));
    // B's own address and identity, from node 1 (B lives on node 2).
    send(vxlan((ID_B & 0xffff) as u16, VNI, &datagram(IP_B, 1002)));
    // A VNI nobody uses.
    send(vxlan(a_local, 4242, &datagram(IP_A, 1003)));
    let counted = poll_until(WAIT, || {
        drops(&t.n2, DropReason::ForgedIdentity) == 3 && drops(&t.n2, DropReason::UnknownVni) == 1
    });
    assert!(
        counted,
        "forged {} unknown vni {}",
        drops(&t.n2, DropReason::ForgedIdentity),
        drops(&t.n2, DropReason::UnknownVni)
    );
    assert_eq!(server.count(), 0, "nothing reached B");
    // The same path with A's true address and identity is delivered: the
    // drops above were the verification's doing.
    send(vxlan(a_local, VNI, &datagram(IP_A, 1004)));
    assert!(
        poll_until(WAIT, || server.count() == 1),
        "the genuine datagram reached B"
    );
}

#[test]
fn tcp_bulk_crosses_nodes_with_gso_and_learns_the_overlay_mtu() {
    let t = TwoNodes::new("ovb");
    let _server = tcp_echo_server(t.b(), addr(IP_B, 8080));
    // Only what GSO keeps whole: VXLAN frames longer than the underlay MTU.
    let capture = Capture::start_keeping(&t.n2.netns.name, "ul0", |f| f.len() > 1514);
    assert!(
        tcp_bulk_ok(t.a(), addr(IP_B, 8080), 32 << 20),
        "32 MiB each way at the overlay MTU"
    );
    let large: Vec<Vxlan> = capture
        .finish()
        .iter()
        .filter_map(|f| decode_vxlan(f))
        .collect();
    assert!(
        large
            .iter()
            .any(|v| v.inner_src == IP_A && v.inner_dport == 8080),
        "GSO packets crossed the VXLAN devices whole (segmented after encapsulation)"
    );
    assert_eq!(drops(&t.n1, DropReason::FragNeeded), 0);

    // Workloads that think the path carries 1500 bytes: the first big
    // segments get "fragmentation needed" from their own node, then fit.
    for (n, w, port) in [(&t.n1, t.a(), "hA"), (&t.n2, t.b(), "hB")] {
        ip(&n.netns.name, &format!("link set {port} mtu 1500"));
        ip(w, "link set eth0 mtu 1500");
    }
    // What A receives: only ICMP kept (the bulk itself is large).
    let capture = Capture::start_keeping(t.a(), "eth0", |f| f.len() > 23 && f[23] == 1);
    assert!(
        tcp_bulk_ok(t.a(), addr(IP_B, 8080), 32 << 20),
        "32 MiB each way with path MTU discovery (no black hole)"
    );
    let frames = capture.finish();
    assert!(drops(&t.n1, DropReason::FragNeeded) >= 1, "A was told");
    assert!(drops(&t.n2, DropReason::FragNeeded) >= 1, "B was told");
    let told = frames.iter().any(|f| {
        f.len() >= 14 + 20 + 8
            && f[14 + 9] == ip_proto::ICMP
            && (f[34], f[35]) == (3, 4)
            && u16::from_be_bytes([f[40], f[41]]) == OVERLAY_MTU as u16
    });
    assert!(told, "an ICMP fragmentation-needed with MTU 1450 went to A");
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
fn poll_until(timeout: Duration, check: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}
