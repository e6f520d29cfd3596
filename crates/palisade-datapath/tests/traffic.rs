//! Real packets through attached programs: a node namespace (forwarding off)
//! with two workload namespaces and a world behind an uplink. Ping, TCP and
//! UDP pass when the policy allows and not otherwise; the node's own stack
//! and the world are filtered by the endpoint's ingress policy; a stage in the
//! chain slot stops traffic until it is removed; malformed frames too short
//! for BPF_PROG_TEST_RUN are dropped as TRUNCATED.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use palisade_datapath::testing::packet::{self, ETH_P_IP};
use palisade_datapath::testing::{classifier, load_with_datapath_maps, TEST_STAGES_OBJECT};
use palisade_datapath::{DropReason, Hook, Interface};

const WAIT: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(400);

fn addr(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn endpoints_reach_each_other_only_as_the_policy_allows() {
    let topo = Topology::new("tr");
    let mut dp = topo.open();
    topo.fill_tables(&mut dp);
    topo.standard_policy(&mut dp);
    let attachments = topo.attach_all(&dp);
    assert!(attachments.iter().all(|a| !a.replaced && a.pin.exists()));
    let (a, b) = (topo.a.name.as_str(), topo.b.name.as_str());

    let _tcp_allowed = tcp_echo_server(b, addr(IP_B, 8080));
    let tcp_denied = tcp_echo_server(b, addr(IP_B, 8081));
    let _udp_allowed = udp_echo_server(b, addr(IP_B, 5353));
    let udp_denied = udp_echo_server(b, addr(IP_B, 5354));
    let _back = tcp_echo_server(a, addr(IP_A, 8080));

    assert!(ping(a, IP_B, WAIT), "ping A -> B is allowed");
    assert!(!ping(b, IP_A, SHORT), "ping B -> A is not");
    assert!(
        tcp_bulk_ok(a, addr(IP_B, 8080), 8 << 20),
        "8 MiB each way (GSO packets) on an allowed connection"
    );
    assert!(
        tcp_echo_ok(a, addr(IP_B, 8080), WAIT),
        "tcp A -> B:8080 is allowed"
    );
    assert!(
        !tcp_echo_ok(a, addr(IP_B, 8081), SHORT),
        "tcp A -> B:8081 is not"
    );
    assert_eq!(tcp_denied.count(), 0, "the denied SYN never reached B");
    assert!(
        !tcp_echo_ok(b, addr(IP_A, 8080), SHORT),
        "B may open nothing"
    );
    assert!(
        udp_echo_ok(a, addr(IP_B, 5353), WAIT),
        "udp A -> B:5353 and its reply"
    );
    assert!(
        !udp_echo_ok(a, addr(IP_B, 5354), SHORT),
        "udp A -> B:5354 is not allowed"
    );
    assert_eq!(udp_denied.count(), 0);

    let counters = &dp.maps().counters;
    assert!(counters.drops(DropReason::PolicyDenied).unwrap().packets >= 4);
    assert!(
        counters.rule(1).unwrap().packets >= 1,
        "tcp/8080 decided by its rule"
    );
    assert_eq!(counters.drops(DropReason::SpoofMac).unwrap().packets, 0);
    assert_eq!(
        counters.drops(DropReason::ArpOther).unwrap().packets,
        0,
        "ARP for the gateway was answered"
    );
}

#[test]
fn the_node_and_the_world_are_filtered_by_the_endpoint_ingress_policy() {
    let topo = Topology::new("tw");
    let mut dp = topo.open();
    topo.fill_tables(&mut dp);
    topo.standard_policy(&mut dp);
    topo.attach_all(&dp);
    let (a, node, world) = (
        topo.a.name.as_str(),
        topo.node.name.as_str(),
        topo.world.name.as_str(),
    );

    // The node's own stack (to_endpoint): tcp/22 allowed, tcp/23 not.
    let _ssh = tcp_echo_server(a, addr(IP_A, 22));
    let telnet = tcp_echo_server(a, addr(IP_A, 23));
    assert!(tcp_echo_ok(node, addr(IP_A, 22), WAIT), "node -> A:22");
    assert!(!tcp_echo_ok(node, addr(IP_A, 23), SHORT), "node -> A:23");
    assert_eq!(telnet.count(), 0);

    // A reaches the world through the uplink (redirect_neigh to the next hop),
    // and the world's replies come back (from_uplink, conntrack).
    let _web = tcp_echo_server(world, addr(IP_WAN, 80));
    let other = tcp_echo_server(world, addr(IP_WAN, 81));
    assert!(tcp_echo_ok(a, addr(IP_WAN, 80), WAIT), "A -> world:80");
    assert!(!tcp_echo_ok(a, addr(IP_WAN, 81), SHORT), "A -> world:81");
    assert_eq!(other.count(), 0);

    // The world may open tcp/443 on A only.
    let _https = tcp_echo_server(a, addr(IP_A, 443));
    let admin = tcp_echo_server(a, addr(IP_A, 444));
    assert!(tcp_echo_ok(world, addr(IP_A, 443), WAIT), "world -> A:443");
    assert!(
        !tcp_echo_ok(world, addr(IP_A, 444), SHORT),
        "world -> A:444"
    );
    assert_eq!(admin.count(), 0);
    assert!(
        !tcp_echo_ok(world, addr(IP_B, 443), SHORT),
        "world -> B:443 (B's ingress denies)"
    );
}

#[test]
fn a_chained_stage_stops_traffic_until_the_slot_is_emptied() {
    let topo = Topology::new("tc");
    let mut dp = topo.open();
    topo.fill_tables(&mut dp);
    topo.standard_policy(&mut dp);
    topo.attach_all(&dp);
    let a = topo.a.name.as_str();
    let _server = tcp_echo_server(&topo.b.name, addr(IP_B, 8080));
    let _udp = udp_echo_server(&topo.b.name, addr(IP_B, 5353));
    assert!(tcp_echo_ok(a, addr(IP_B, 8080), WAIT));

    let stages = load_with_datapath_maps(&dp, TEST_STAGES_OBJECT).unwrap();
    dp.set_chain_stage(classifier(&stages, "stage_drop_all").unwrap().fd().unwrap())
        .unwrap();
    assert!(
        !tcp_echo_ok(a, addr(IP_B, 8080), SHORT),
        "the stage drops everything"
    );
    assert!(!udp_echo_ok(a, addr(IP_B, 5353), SHORT));

    dp.clear_chain_stage().unwrap();
    assert!(
        tcp_echo_ok(a, addr(IP_B, 8080), WAIT),
        "empty slot: traffic flows again"
    );

    dp.set_chain_stage(classifier(&stages, "stage_pass").unwrap().fd().unwrap())
        .unwrap();
    assert!(
        udp_echo_ok(a, addr(IP_B, 5353), WAIT),
        "a stage that hands packets to delivery"
    );
    assert!(
        dp.maps().counters.stat_slot(7).unwrap() >= 2,
        "request and reply went through the stage"
    );
}

#[test]
fn frames_too_short_for_their_headers_are_dropped_as_truncated() {
    let topo = Topology::new("tt");
    let mut dp = topo.open();
    topo.fill_tables(&mut dp);
    topo.standard_policy(&mut dp);
    topo.attach_all(&dp);
    let (host_mac, mac) = (packet::mac(0x8a), packet::mac(0x0a));
    let ethernet_only = packet::ethernet(host_mac, mac, ETH_P_IP, &[]);
    let mut ip_cut = packet::ethernet(
        host_mac,
        mac,
        ETH_P_IP,
        &packet::Ipv4::new(IP_A, IP_B, 17).packet(&[0; 8]),
    );
    ip_cut.truncate(packet::ETH_HLEN + 12);
    let before = dp
        .maps()
        .counters
        .drops(DropReason::Truncated)
        .unwrap()
        .packets;
    send_raw_frame(&topo.a.name, "eth0", &ethernet_only);
    send_raw_frame(&topo.a.name, "eth0", &ip_cut);
    let deadline = std::time::Instant::now() + WAIT;
    while dp
        .maps()
        .counters
        .drops(DropReason::Truncated)
        .unwrap()
        .packets
        < before + 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "both frames counted as TRUNCATED"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Detaching stops the filtering of that port: nothing passes the node
    // (forwarding is off) but nothing is counted either.
    assert!(dp
        .detach(
            Some(&topo.node.name),
            &Interface::name("hA"),
            Hook::FromEndpoint
        )
        .unwrap());
    assert!(!dp
        .detach(
            Some(&topo.node.name),
            &Interface::name("hA"),
            Hook::FromEndpoint
        )
        .unwrap());
    send_raw_frame(&topo.a.name, "eth0", &ethernet_only);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        dp.maps()
            .counters
            .drops(DropReason::Truncated)
            .unwrap()
            .packets,
        before + 2
    );
}
