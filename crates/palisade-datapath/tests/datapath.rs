//! The datapath programs run in the kernel through BPF_PROG_TEST_RUN, with
//! maps filled by hand: ARP, anti-spoofing, each policy lookup step, fail
//! closed, ports and ICMP, related ICMP errors, conntrack states, expiry and
//! revocation, delivery rewrites, audit, rate-limited events, malformed
//! packets, the chain slot, the other two hooks and tenant isolation.

mod common;

use std::net::Ipv4Addr;
use std::thread::sleep;
use std::time::Duration;

use common::*;
use palisade_datapath::abi::{
    icmp_port, ip_proto, policy_flags, CtKey, CtState, Endpoint, IpcacheKey, IpcacheValue,
    PolicyKey, PolicyValue,
};
use palisade_datapath::testing::packet::{self, *};
use palisade_datapath::testing::{
    classifier, load_with_datapath_maps, prog_test_run, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    TEST_STAGES_OBJECT,
};
use palisade_datapath::{monotonic_now, Direction, DropReason, FlowEvent, Hook};

const TCP: u8 = ip_proto::TCP;
const UDP: u8 = ip_proto::UDP;
const ICMP: u8 = ip_proto::ICMP;

/// The Denied events among `events`, as (reason, side, cookie, suppressed).
fn denials(events: &[FlowEvent]) -> Vec<(DropReason, Option<Direction>, u32, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            FlowEvent::Denied {
                reason,
                side,
                cookie,
                suppressed,
                ..
            } => Some((reason, side, cookie, suppressed)),
            _ => None,
        })
        .collect()
}

/// The (egress, ingress) cookies of the NewAllowed events among `events`.
fn admissions(events: &[FlowEvent]) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter_map(|e| match *e {
            FlowEvent::NewAllowed {
                egress_cookie,
                ingress_cookie,
                ..
            } => Some((egress_cookie, ingress_cookie)),
            _ => None,
        })
        .collect()
}

fn ct(fx: &Fixture, key: CtKey) -> Option<palisade_datapath::abi::CtEntry> {
    fx.dp.maps().conntrack.get(&key).unwrap()
}

// ---- ARP --------------------------------------------------------------------

#[test]
fn arp_request_is_answered_in_place_with_the_host_port_mac() {
    let fx = Fixture::new("arp");
    let gateway = Ipv4Addr::new(169, 254, 1, 1);
    let out = fx.send(&fx.a, &arp_request(fx.a.mac, IP_A, gateway));

    assert_eq!(out.retval, TC_ACT_REDIRECT, "sent back out of the port");
    let p = &out.packet;
    assert_eq!(p[0..6], fx.a.mac, "Ethernet destination: the workload");
    assert_eq!(
        p[6..12],
        fx.a.host_mac,
        "Ethernet source: the host-side port"
    );
    assert_eq!(u16::from_be_bytes([p[12], p[13]]), ETH_P_ARP);
    let arp = &p[ETH_HLEN..];
    assert_eq!(u16::from_be_bytes([arp[6], arp[7]]), 2, "ARP reply");
    assert_eq!(arp[8..14], fx.a.host_mac, "sender MAC = host-side port");
    assert_eq!(
        arp[14..18],
        gateway.octets(),
        "sender IP = the address asked for"
    );
    assert_eq!(arp[18..24], fx.a.mac, "target MAC = the asking workload");
    assert_eq!(
        arp[24..28],
        IP_A.octets(),
        "target IP = the asking workload"
    );
    assert_eq!(fx.all_drops(), 0);

    // Any address is answered: all traffic is routed through the port.
    let out = fx.send(&fx.a, &arp_request(fx.a.mac, IP_A, IP_B));
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(out.packet[ETH_HLEN + 14..ETH_HLEN + 18], IP_B.octets());
}

#[test]
fn arp_that_is_not_a_plain_request_is_dropped() {
    let fx = Fixture::new("arpx");
    let gw = Ipv4Addr::new(169, 254, 1, 1);
    let probe = arp_request(fx.a.mac, Ipv4Addr::UNSPECIFIED, IP_A);
    let announcement = arp_request(fx.a.mac, IP_A, IP_A);
    let reply = fx.a.frame(
        ETH_P_ARP,
        &packet::arp(2, fx.a.mac, IP_A, fx.a.host_mac, gw),
    );
    let mut short = arp_request(fx.a.mac, IP_A, gw);
    short.truncate(ETH_HLEN + 20);
    for (what, frame) in [
        ("probe", probe),
        ("announcement", announcement),
        ("reply", reply),
        ("truncated", short),
    ] {
        assert_eq!(fx.send(&fx.a, &frame).retval, TC_ACT_SHOT, "{what}");
    }
    assert_eq!(fx.drops(DropReason::ArpOther), 4);

    // The ARP sender MAC must be the workload's too.
    let forged = ethernet(
        [0xff; 6],
        fx.a.mac,
        ETH_P_ARP,
        &packet::arp(1, fx.b.mac, IP_A, [0; 6], gw),
    );
    assert_eq!(fx.send(&fx.a, &forged).retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::SpoofMac), 1);
}

// ---- anti-spoofing and unknown ports ------------------------------------------

#[test]
fn spoofed_mac_and_ip_are_dropped_before_any_policy() {
    let mut fx = Fixture::new("spoof");
    fx.allow_all_a_b();

    let mut wrong_mac = fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN);
    wrong_mac[6..12].copy_from_slice(&fx.b.mac);
    assert_eq!(fx.send(&fx.a, &wrong_mac).retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::SpoofMac), 1);

    // A claims B's address, then an address nobody has.
    let as_b = Port { ip: IP_B, ..fx.a };
    assert_eq!(
        fx.send(&fx.a, &as_b.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    let as_other = Port {
        ip: Ipv4Addr::new(10, 0, 0, 77),
        ..fx.a
    };
    assert_eq!(
        fx.send(&fx.a, &as_other.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofIp), 2);

    assert_eq!(
        fx.all_rule_hits(),
        0,
        "spoofed packets never reach a policy"
    );
    let events = fx.events();
    assert_eq!(
        denials(&events),
        vec![
            (DropReason::SpoofMac, None, 0, 0),
            (DropReason::SpoofIp, None, 0, 0),
            (DropReason::SpoofIp, None, 0, 0)
        ]
    );
    assert_eq!(events[0].flow().ifindex, fx.a.ifindex);
    assert_eq!(events[0].flow().hook, Hook::FromEndpoint);

    // A further address of A (IPCACHE: local, A's port) is A's own, and only A's.
    let secondary = Ipv4Addr::new(10, 0, 0, 11);
    let key = IpcacheKey::new(TENANT, secondary, 32);
    fx.dp
        .maps_mut()
        .ipcache
        .insert(&key, &IpcacheValue::local_endpoint(ID_A, fx.a.ifindex))
        .unwrap();
    let a2 = Port {
        ip: secondary,
        ..fx.a
    };
    assert_eq!(
        fx.send(&fx.a, &a2.tcp_to(IP_B, 40000, 80, TCP_SYN)).retval,
        TC_ACT_REDIRECT
    );
    let b_as_a2 = Port {
        ip: secondary,
        ..fx.b
    };
    assert_eq!(
        fx.send(&fx.b, &b_as_a2.tcp_to(IP_A, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofIp), 3);

    // Without a primary address in ENDPOINTS every source goes through IPCACHE,
    // and 0.0.0.0 (the "none" value) is never taken for the endpoint's own.
    let endpoints = &mut fx.dp.maps_mut().endpoints;
    let stored = endpoints.get(fx.a.ifindex).unwrap().unwrap();
    let no_primary = Endpoint {
        ipv4: [0; 4],
        ..stored
    };
    endpoints.insert(fx.a.ifindex, &no_primary).unwrap();
    let out = fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40001, 80, TCP_SYN));
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    let unspecified = Port {
        ip: Ipv4Addr::UNSPECIFIED,
        ..fx.a
    };
    let out = fx.send(&fx.a, &unspecified.tcp_to(IP_B, 40002, 80, TCP_SYN));
    assert_eq!(out.retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::SpoofIp), 4);
}

#[test]
fn packets_on_a_port_without_an_endpoint_are_dropped() {
    let fx = Fixture::new("unkep");
    let out = fx.run(
        Hook::FromEndpoint,
        fx.uplink,
        &fx.a.tcp_to(IP_B, 1, 2, TCP_SYN),
    );
    assert_eq!(out.retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::UnknownEndpoint), 1);
}

// ---- policy lookup ----------------------------------------------------------

#[test]
fn each_of_the_four_lookup_steps_decides() {
    let mut fx = Fixture::new("steps");
    fx.allow(ID_A, Direction::Egress, ID_B, TCP, 80, 11); // step 1
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, 0, 0, 0),
        PolicyValue::deny(12),
    ); // step 2
    fx.allow(ID_A, Direction::Egress, 0, UDP, 53, 13); // step 3
    fx.default_deny(ID_A, Direction::Egress, 14); // step 4
    fx.policy(
        PolicyKey::default_for(ID_B, Direction::Ingress),
        PolicyValue::allow(20),
    );

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        admissions(&fx.events()),
        vec![(11, 20)],
        "step 1 (peer, proto, port) and the ingress default"
    );

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 81, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    // Step 2 (peer, any protocol) comes before step 3 (any peer, protocol).
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 40000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        denials(&fx.events()),
        vec![
            (DropReason::PolicyDenied, Some(Direction::Egress), 12, 0),
            (DropReason::PolicyDenied, Some(Direction::Egress), 12, 0)
        ]
    );

    // The host is not an endpoint: only A's egress side decides.
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_HOST, 40000, 53)).retval,
        TC_ACT_OK
    );
    assert_eq!(
        admissions(&fx.events()),
        vec![(13, 0)],
        "step 3 (any peer, proto, port)"
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_HOST, 40000, 22, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        denials(&fx.events()),
        vec![(DropReason::PolicyDenied, Some(Direction::Egress), 14, 0)],
        "step 4"
    );

    let counters = &fx.dp.maps().counters;
    assert_eq!(counters.rule(11).unwrap().packets, 1);
    assert_eq!(counters.rule(12).unwrap().packets, 2);
    assert_eq!(counters.rule(13).unwrap().packets, 1);
    assert_eq!(counters.rule(14).unwrap().packets, 1);
    assert_eq!(counters.rule(20).unwrap().packets, 1);
    assert_eq!(fx.drops(DropReason::PolicyDenied), 3);
}

#[test]
fn the_destination_ingress_side_is_decided_at_the_source() {
    let mut fx = Fixture::new("ingr");
    fx.allow(ID_A, Direction::Egress, ID_B, TCP, 443, 15);
    fx.allow(ID_A, Direction::Egress, ID_B, TCP, 80, 16);
    fx.allow(ID_B, Direction::Ingress, ID_A, TCP, 80, 22);
    fx.default_deny(ID_B, Direction::Ingress, 21);

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(admissions(&fx.events()), vec![(16, 22)]);
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 443, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        denials(&fx.events()),
        vec![(DropReason::PolicyDenied, Some(Direction::Ingress), 21, 0)]
    );
}

#[test]
fn missing_entries_fail_closed() {
    let mut fx = Fixture::new("closed");
    // No policy at all.
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    // Egress allowed, but nothing at all for B's ingress.
    fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        denials(&fx.events()),
        vec![
            (DropReason::NoPolicy, Some(Direction::Egress), 0, 0),
            (DropReason::NoPolicy, Some(Direction::Ingress), 0, 0)
        ]
    );
    assert_eq!(fx.drops(DropReason::NoPolicy), 2);

    // No IPCACHE entry for the destination (no world entry either).
    fx.dp
        .maps_mut()
        .ipcache
        .remove(&IpcacheKey::new(TENANT, Ipv4Addr::UNSPECIFIED, 0))
        .unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_WORLD, 1, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::UnknownDestination), 1);

    // IPCACHE points to a port that is not an endpoint, or to another tenant's endpoint.
    let ipcache = &mut fx.dp.maps_mut().ipcache;
    let stale = Ipv4Addr::new(10, 0, 0, 50);
    ipcache
        .insert(
            &IpcacheKey::new(TENANT, stale, 32),
            &IpcacheValue::local_endpoint(ID_B, fx.uplink),
        )
        .unwrap();
    let foreign = Ipv4Addr::new(10, 0, 0, 60);
    ipcache
        .insert(
            &IpcacheKey::new(TENANT, foreign, 32),
            &IpcacheValue::local_endpoint(ID_B, fx.c.ifindex),
        )
        .unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(stale, 1, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(foreign, 1, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NoRoute), 1);
    assert_eq!(fx.drops(DropReason::TenantMismatch), 1);
}

#[test]
fn port_ranges_are_prefixes_and_the_longest_wins() {
    let mut fx = Fixture::new("ports");
    fx.policy(
        PolicyKey::default_for(ID_B, Direction::Ingress),
        PolicyValue::allow(30),
    );
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, TCP, 8080, 12),
        PolicyValue::allow(31),
    ); // 8080-8095
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, 0, 0, 0),
        PolicyValue::deny(32),
    );
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, UDP, 0, 0),
        PolicyValue::allow(33),
    ); // every UDP port
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, UDP, 5353, 16),
        PolicyValue::deny(34),
    );

    for (port, verdict) in [
        (8079, TC_ACT_SHOT),
        (8080, TC_ACT_REDIRECT),
        (8095, TC_ACT_REDIRECT),
        (8096, TC_ACT_SHOT),
    ] {
        assert_eq!(
            fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, port, TCP_SYN))
                .retval,
            verdict,
            "tcp/{port}"
        );
    }
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 40000, 5353)).retval,
        TC_ACT_SHOT,
        "udp/5353"
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 40000, 5354)).retval,
        TC_ACT_REDIRECT,
        "udp/5354"
    );
    let counters = &fx.dp.maps().counters;
    assert_eq!(counters.rule(31).unwrap().packets, 2);
    assert_eq!(counters.rule(32).unwrap().packets, 2);
    assert_eq!(counters.rule(33).unwrap().packets, 1);
    assert_eq!(counters.rule(34).unwrap().packets, 1);
}

#[test]
fn icmp_is_decided_by_type_and_code_and_echo_replies_follow_conntrack() {
    let mut fx = Fixture::new("icmp");
    fx.default_deny(ID_A, Direction::Egress, 40);
    fx.default_deny(ID_B, Direction::Ingress, 40);
    fx.default_deny(ID_B, Direction::Egress, 40);
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, ICMP, icmp_port(8, 0), 16),
        PolicyValue::allow(41),
    );
    fx.policy(
        PolicyKey::new(ID_B, Direction::Ingress, ID_A, ICMP, icmp_port(8, 0), 16),
        PolicyValue::allow(42),
    );
    // Type 13 with any code: an 8-bit prefix.
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, ICMP, icmp_port(13, 0), 8),
        PolicyValue::allow(43),
    );
    fx.policy(
        PolicyKey::new(ID_B, Direction::Ingress, ID_A, ICMP, icmp_port(13, 0), 8),
        PolicyValue::allow(44),
    );

    let echo = icmp_echo(ICMP_ECHO_REQUEST, 0x1234, 1);
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_B, &echo)).retval,
        TC_ACT_REDIRECT
    );
    let key = CtKey::new(TENANT, ICMP, IP_A, 0x1234, IP_B, 0);
    assert!(
        ct(&fx, key).is_some(),
        "the echo id is the request's conntrack port"
    );
    // The reply passes as part of the connection although B may send no ICMP.
    let reply = icmp_echo(ICMP_ECHO_REPLY, 0x1234, 1);
    assert_eq!(
        fx.send(&fx.b, &fx.b.icmp_to(IP_A, &reply)).retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(ct(&fx, key).unwrap().packets_rev, 1);
    // A reply with another id is not part of it, nor is a request from B with the same id.
    let other = icmp_echo(ICMP_ECHO_REPLY, 0x9999, 1);
    assert_eq!(
        fx.send(&fx.b, &fx.b.icmp_to(IP_A, &other)).retval,
        TC_ACT_SHOT
    );
    let b_request = icmp_echo(ICMP_ECHO_REQUEST, 0x1234, 1);
    assert_eq!(
        fx.send(&fx.b, &fx.b.icmp_to(IP_A, &b_request)).retval,
        TC_ACT_SHOT
    );

    let with_code = packet::icmp(ICMP_ECHO_REQUEST, 1, [0x12, 0x35, 0, 1], b"");
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_B, &with_code)).retval,
        TC_ACT_SHOT,
        "8/1 is not 8/0"
    );
    for code in [0, 5] {
        let timestamp = packet::icmp(13, code, [0; 4], &[0; 12]);
        assert_eq!(
            fx.send(&fx.a, &fx.a.icmp_to(IP_B, &timestamp)).retval,
            TC_ACT_REDIRECT,
            "13/{code}"
        );
    }
    let reply14 = packet::icmp(14, 0, [0; 4], &[0; 12]);
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_B, &reply14)).retval,
        TC_ACT_SHOT,
        "type 14"
    );
    assert_eq!(fx.drops(DropReason::PolicyDenied), 4);
}

#[test]
fn icmp_errors_pass_only_when_related_to_a_tracked_connection() {
    let mut fx = Fixture::new("relat");
    fx.allow(ID_A, Direction::Egress, WORLD_ID, UDP, 53, 1);
    fx.allow_all_a_b();
    let query = fx.a.udp_to(IP_WORLD, 5000, 53);
    assert_eq!(fx.send(&fx.a, &query).retval, TC_ACT_REDIRECT);

    // A router in the world reports "fragmentation needed" for the query.
    let router = Ipv4Addr::new(192, 0, 2, 254);
    let world_mac = packet::mac(0x77);
    let from_world = |icmp: &[u8]| {
        ethernet(
            packet::mac(0x70),
            world_mac,
            ETH_P_IP,
            &packet::Ipv4::new(router, IP_A, 1).packet(icmp),
        )
    };
    let error = icmp_error(ICMP_DEST_UNREACH, 4, &query[ETH_HLEN..]);
    let out = fx.run(Hook::FromUplink, fx.uplink, &from_world(&error));
    assert_eq!(out.retval, TC_ACT_REDIRECT, "related: delivered to A");
    assert_eq!(out.packet[0..6], fx.a.mac);

    // The same error about a query A never sent.
    let other_query = fx.a.udp_to(IP_WORLD, 5001, 53);
    let unrelated = icmp_error(ICMP_DEST_UNREACH, 4, &other_query[ETH_HLEN..]);
    assert_eq!(
        fx.run(Hook::FromUplink, fx.uplink, &from_world(&unrelated))
            .retval,
        TC_ACT_SHOT
    );

    // A reports "port unreachable" to B: related once B talked to A.
    let b_to_a = fx.b.udp_to(IP_A, 6000, 7000);
    let port_unreachable = icmp_error(ICMP_DEST_UNREACH, 3, &b_to_a[ETH_HLEN..]);
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_B, &port_unreachable))
            .retval,
        TC_ACT_SHOT,
        "before B sent"
    );
    assert_eq!(fx.send(&fx.b, &b_to_a).retval, TC_ACT_REDIRECT);
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_B, &port_unreachable))
            .retval,
        TC_ACT_REDIRECT,
        "after"
    );
    // ... but not when sent to someone other than the flow's sender.
    assert_eq!(
        fx.send(&fx.a, &fx.a.icmp_to(IP_HOST, &port_unreachable))
            .retval,
        TC_ACT_SHOT
    );

    assert_eq!(fx.drops(DropReason::IcmpUnrelated), 3);
    assert_eq!(fx.all_drops(), 3);
}

// ---- conntrack ----------------------------------------------------------------

#[test]
fn replies_pass_without_a_policy_and_tcp_states_follow_the_handshake() {
    let mut fx = Fixture::new("tcpst");
    // Only A -> B on tcp/80 is allowed: nothing lets B send to A.
    fx.allow(ID_A, Direction::Egress, ID_B, TCP, 80, 1);
    fx.allow(ID_B, Direction::Ingress, ID_A, TCP, 80, 2);
    let key = CtKey::new(TENANT, TCP, IP_A, 40000, IP_B, 80);
    let state = |fx: &Fixture| CtState::from_raw(ct(fx, key).unwrap().state).unwrap();

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::SynSent);
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_SYN | TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::SynRecv);
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::Established);
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_ACK | TCP_PSH))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.dp.maps().counters.rule(1).unwrap().packets,
        1,
        "established traffic is not re-decided"
    );
    assert_eq!(fx.dp.maps().counters.rule(2).unwrap().packets, 1);

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_FIN | TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::FinWait);
    assert!(fx
        .events()
        .iter()
        .all(|e| !matches!(e, FlowEvent::ConnClosed { .. })));
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_FIN | TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::Closed);
    let closed: Vec<_> = fx
        .events()
        .into_iter()
        .filter(|e| matches!(e, FlowEvent::ConnClosed { .. }))
        .collect();
    match closed.as_slice() {
        [FlowEvent::ConnClosed {
            flow,
            egress_cookie,
            ingress_cookie,
            counters,
        }] => {
            assert_eq!(
                (flow.saddr, flow.sport, flow.daddr, flow.dport),
                (IP_A, 40000, IP_B, 80)
            );
            assert_eq!((*egress_cookie, *ingress_cookie), (1, 2));
            assert_eq!((counters.packets_fwd, counters.packets_rev), (3, 3));
        }
        other => panic!("expected one ConnClosed, got {other:?}"),
    }
    // The last ACK still passes; a new SYN on the tuple is a new connection.
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(state(&fx), CtState::SynSent);
    assert_eq!(fx.dp.maps().counters.rule(1).unwrap().packets, 2);

    // A reset from either side closes at once.
    let key2 = CtKey::new(TENANT, TCP, IP_A, 40001, IP_B, 80);
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40001, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40001, TCP_RST | TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        CtState::from_raw(ct(&fx, key2).unwrap().state),
        Some(CtState::Closed)
    );
    assert!(fx
        .events()
        .iter()
        .any(|e| matches!(e, FlowEvent::ConnClosed { flow, .. } if flow.sport == 40001)));

    // B alone cannot open anything toward A.
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40002, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NoPolicy), 1);
}

#[test]
fn connections_expire_after_the_configured_timeout() {
    let mut fx = Fixture::new("expir");
    fx.allow_all_a_b();
    fx.config(|c| c.ct_udp_ms = 1000);
    let key = CtKey::new(TENANT, UDP, IP_A, 5000, IP_B, 53);
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_REDIRECT
    );

    // Deny from now on, without bumping the revision: the live entry still passes.
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, 0, 0, 0),
        PolicyValue::deny(9),
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_REDIRECT
    );

    sleep(Duration::from_millis(1300));
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_SHOT,
        "the expired entry is ignored"
    );
    assert_eq!(
        fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_REDIRECT,
        "B -> A is allowed on its own"
    );
    assert_eq!(
        denials(&fx.events()),
        vec![(DropReason::PolicyDenied, Some(Direction::Egress), 9, 0)]
    );

    // The agent's garbage collector removes what expired and reports it.
    let c2 = CtKey::new(TENANT, UDP, IP_A, 5001, IP_B, 5353);
    fx.allow(ID_A, Direction::Egress, ID_B, UDP, 5353, 10);
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5001, 5353)).retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5001, 5353)).retval,
        TC_ACT_REDIRECT
    );
    let config = fx.dp.maps().config.get().unwrap();
    let before = fx
        .dp
        .maps_mut()
        .conntrack
        .gc(monotonic_now(), &config)
        .unwrap();
    assert!(before.iter().all(|f| f.key != c2), "the live entry is kept");
    assert!(
        before.iter().any(|f| f.key == key),
        "the expired one is collected"
    );
    sleep(Duration::from_millis(1300));
    let after = fx
        .dp
        .maps_mut()
        .conntrack
        .gc(monotonic_now(), &config)
        .unwrap();
    let flow = after
        .iter()
        .find(|f| f.key == c2)
        .expect("collected after its timeout");
    assert_eq!(flow.entry.packets_fwd, 2);
    assert!(!flow.close_reported());
    assert!(ct(&fx, c2).is_none());
}

#[test]
fn a_revision_bump_cuts_denied_connections_and_keeps_allowed_ones() {
    let mut fx = Fixture::new("revok");
    fx.allow_all_a_b();
    let tcp_key = CtKey::new(TENANT, TCP, IP_A, 40000, IP_B, 80);
    let udp_key = CtKey::new(TENANT, UDP, IP_A, 5000, IP_B, 53);
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_SYN | TCP_ACK))
            .retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_REDIRECT
    );
    fx.events();

    // New policy: A may only send UDP/53 to B.
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, 0, 0, 0),
        PolicyValue::deny(9),
    );
    fx.allow(ID_A, Direction::Egress, ID_B, UDP, 53, 8);
    let revision = fx.dp.bump_policy_revision().unwrap();
    assert_eq!(revision, 1);

    // The TCP connection is cut on its next packet, whichever side sends it.
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_ACK))
            .retval,
        TC_ACT_SHOT
    );
    assert!(ct(&fx, tcp_key).is_none(), "entry deleted");
    let events = fx.events();
    let cut = events
        .iter()
        .find(|e| matches!(e, FlowEvent::ConnCut { .. }))
        .expect("a ConnCut event");
    match cut {
        FlowEvent::ConnCut {
            flow,
            side,
            cookie,
            counters,
        } => {
            assert_eq!(
                (flow.saddr, flow.sport, flow.daddr, flow.dport),
                (IP_A, 40000, IP_B, 80),
                "original direction"
            );
            assert_eq!((*side, *cookie), (Some(Direction::Egress), 9));
            assert_eq!((counters.packets_fwd, counters.packets_rev), (1, 1));
        }
        _ => unreachable!(),
    }
    assert_eq!(
        denials(&events),
        vec![(DropReason::PolicyRevoked, Some(Direction::Egress), 9, 0)]
    );
    assert_eq!(fx.drops(DropReason::PolicyRevoked), 1);
    // Without the entry, A cannot reopen it.
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );

    // The UDP flow is still allowed: it goes on under the new revision and rule.
    assert_eq!(
        fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_REDIRECT
    );
    let entry = ct(&fx, udp_key).unwrap();
    assert_eq!(
        (entry.revision, entry.egress_cookie, entry.packets_rev),
        (1, 8, 1)
    );
    assert!(fx
        .events()
        .iter()
        .all(|e| !matches!(e, FlowEvent::ConnCut { .. })));
}

// ---- delivery ------------------------------------------------------------------

#[test]
fn local_delivery_rewrites_macs_and_decrements_ttl_with_a_valid_checksum() {
    let mut fx = Fixture::new("deliv");
    fx.allow_all_a_b();
    let mut ip = packet::Ipv4::new(IP_A, IP_B, TCP);
    ip.options = vec![0x94, 0x04, 0, 0]; // router alert: options are skipped, not refused
    let frame =
        fx.a.ipv4(&ip, &packet::tcp(IP_A, 40000, IP_B, 80, TCP_SYN, b"data"));
    let out = fx.send(&fx.a, &frame);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    let p = &out.packet;
    assert_eq!(p[0..6], fx.b.mac, "to B's workload MAC");
    assert_eq!(p[6..12], fx.b.host_mac, "from B's host-side port");
    assert_eq!(ipv4_ttl_and_checksum_ok(p), (63, true));
    // Nothing else changed: only TTL (byte 8) and checksum (10, 11) of the IP header.
    let changed: Vec<usize> = (ETH_HLEN..frame.len())
        .filter(|&i| frame[i] != p[i])
        .map(|i| i - ETH_HLEN)
        .collect();
    assert!(
        changed.contains(&8) && changed.iter().all(|i| [8, 10, 11].contains(i)),
        "changed: {changed:?}"
    );

    let mut last_hop = packet::Ipv4::new(IP_A, IP_B, TCP);
    last_hop.ttl = 1;
    let frame =
        fx.a.ipv4(&last_hop, &packet::tcp(IP_A, 40001, IP_B, 80, TCP_SYN, b""));
    assert_eq!(fx.send(&fx.a, &frame).retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::TtlExceeded), 1);
    assert!(
        ct(&fx, CtKey::new(TENANT, TCP, IP_A, 40001, IP_B, 80)).is_none(),
        "no entry for an undeliverable flow"
    );
}

#[test]
fn world_host_and_remote_destinations() {
    let mut fx = Fixture::new("dests");
    fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    fx.allow(ID_REMOTE, Direction::Ingress, ID_A, 0, 0, 2);

    let to_world = fx.a.udp_to(IP_WORLD, 5000, 53);
    let out = fx.send(&fx.a, &to_world);
    assert_eq!(
        out.retval, TC_ACT_REDIRECT,
        "out of the uplink via the next hop"
    );
    assert_eq!(ipv4_ttl_and_checksum_ok(&out.packet), (63, true));

    let to_host = fx.a.udp_to(IP_HOST, 5000, 53);
    let out = fx.send(&fx.a, &to_host);
    assert_eq!(out.retval, TC_ACT_OK, "to the node's stack");
    assert_eq!(out.packet, to_host, "untouched");

    // Another node's endpoint, but this node has no overlay configured.
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_REMOTE, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NoTunnel), 1);

    fx.dp.maps_mut().tenants.remove(TENANT).unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_WORLD, 5001, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NoRoute), 1);
}

// ---- audit and events -------------------------------------------------------------

#[test]
fn audit_flag_reports_without_changing_the_verdict() {
    let mut fx = Fixture::new("audit");
    fx.allow(ID_B, Direction::Ingress, ID_A, 0, 0, 50);
    let audited_allow = PolicyValue {
        flags: policy_flags::AUDIT_DENY,
        audit_cookie: 77,
        ..PolicyValue::allow(51)
    };
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, TCP, 80, 16),
        audited_allow,
    );
    let audited_deny = PolicyValue {
        flags: policy_flags::AUDIT_DENY,
        audit_cookie: 78,
        ..PolicyValue::deny(52)
    };
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, ID_B, TCP, 81, 16),
        audited_deny,
    );

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT,
        "still allowed"
    );
    let events = fx.events();
    assert!(events.iter().any(|e| matches!(
        e,
        FlowEvent::AuditWouldDeny {
            side: Some(Direction::Egress),
            audit_cookie: 77,
            ..
        }
    )));
    assert_eq!(admissions(&events), vec![(51, 50)]);

    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40000, 81, TCP_SYN))
            .retval,
        TC_ACT_SHOT,
        "still denied"
    );
    let events = fx.events();
    assert!(events.iter().any(|e| matches!(
        e,
        FlowEvent::AuditWouldDeny {
            audit_cookie: 78,
            ..
        }
    )));
    assert_eq!(
        denials(&events),
        vec![(DropReason::PolicyDenied, Some(Direction::Egress), 52, 0)]
    );
}

#[test]
fn denied_events_are_rate_limited_per_flow_and_carry_the_suppressed_count() {
    let mut fx = Fixture::new("ratel");
    fx.config(|c| c.event_interval_ms = 1500);
    fx.default_deny(ID_A, Direction::Egress, 60);
    let flood = fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN);
    for _ in 0..10 {
        assert_eq!(fx.send(&fx.a, &flood).retval, TC_ACT_SHOT);
    }
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_B, 40001, 80, TCP_SYN))
            .retval,
        TC_ACT_SHOT
    );
    let events = fx.events();
    assert_eq!(denials(&events).len(), 2, "one per flow: {events:?}");
    assert_eq!(
        fx.drops(DropReason::PolicyDenied),
        11,
        "every drop is counted"
    );

    sleep(Duration::from_millis(1600));
    assert_eq!(fx.send(&fx.a, &flood).retval, TC_ACT_SHOT);
    let events = fx.events();
    assert_eq!(
        denials(&events),
        vec![(DropReason::PolicyDenied, Some(Direction::Egress), 60, 9)]
    );
    assert_eq!(events[0].flow().sport, 40000);
}

// ---- malformed packets ----------------------------------------------------------

#[test]
fn malformed_packets_are_dropped_with_their_reason_and_never_reach_a_policy() {
    let mut fx = Fixture::new("malf");
    fx.allow_all_a_b();
    let a = fx.a;
    let ip = |proto| packet::Ipv4::new(IP_A, IP_B, proto);
    let tcp_syn = packet::tcp(IP_A, 40000, IP_B, 80, TCP_SYN, b"");
    let udp = packet::udp(IP_A, 1, IP_B, 2, b"x");
    let icmp = icmp_echo(ICMP_ECHO_REQUEST, 1, 1);
    let truncate = |mut frame: Vec<u8>, len: usize| {
        frame.truncate(len);
        frame
    };
    let l4 = ETH_HLEN + 20;
    let with = |f: &dyn Fn(&mut packet::Ipv4), proto, payload: &[u8]| {
        let mut h = ip(proto);
        f(&mut h);
        a.ipv4(&h, payload)
    };
    let mut bad_doff = tcp_syn.clone();
    bad_doff[12] = 4 << 4;
    let b_to_a = fx.b.udp_to(IP_A, 6000, 7000);
    let mut short_quote = icmp_error(ICMP_DEST_UNREACH, 3, &b_to_a[ETH_HLEN..]);
    short_quote.truncate(8 + 20 + 4);

    // Frames too short for an IPv4 header are refused by BPF_PROG_TEST_RUN
    // itself (EINVAL); tests/traffic.rs sends those through a real port.
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "IHL < 5",
            with(&|h| h.ihl = Some(4), TCP, &tcp_syn),
            DropReason::BadIpHeader,
        ),
        (
            "version 6 in an IPv4 frame",
            with(&|h| h.version = 6, TCP, &tcp_syn),
            DropReason::BadIpHeader,
        ),
        (
            "total length past the packet",
            with(&|h| h.total_len = Some(200), TCP, &tcp_syn),
            DropReason::BadIpHeader,
        ),
        (
            "total length below the header",
            with(&|h| h.total_len = Some(16), TCP, &tcp_syn),
            DropReason::BadIpHeader,
        ),
        (
            "options past the end",
            truncate(with(&|h| h.options = vec![1; 8], TCP, &[]), l4 + 4),
            DropReason::BadIpHeader,
        ),
        (
            "TCP header cut",
            a.ipv4(&ip(TCP), &tcp_syn[..10]),
            DropReason::Truncated,
        ),
        (
            "TCP cut by total length",
            with(&|h| h.total_len = Some(30), TCP, &tcp_syn),
            DropReason::Truncated,
        ),
        (
            "TCP data offset < 5",
            a.ipv4(&ip(TCP), &bad_doff),
            DropReason::BadL4Header,
        ),
        (
            "UDP header cut",
            a.ipv4(&ip(UDP), &udp[..4]),
            DropReason::Truncated,
        ),
        (
            "ICMP header cut",
            a.ipv4(&ip(ICMP), &icmp[..4]),
            DropReason::Truncated,
        ),
        (
            "ICMP error quoting too little",
            a.ipv4(&ip(ICMP), &short_quote),
            DropReason::Truncated,
        ),
        (
            "first fragment (MF)",
            with(&|h| h.frag = 0x2000, UDP, &udp),
            DropReason::Fragment,
        ),
        (
            "later fragment (offset)",
            with(&|h| h.frag = 0x0010, UDP, &udp[..8]),
            DropReason::Fragment,
        ),
        (
            "IPv6",
            a.frame(ETH_P_IPV6, &[0x60; 40]),
            DropReason::Ipv6Unsupported,
        ),
        (
            "other ethertype",
            a.frame(0x88b5, &[0; 46]),
            DropReason::UnsupportedL3,
        ),
    ];
    for (what, frame, reason) in &cases {
        let before = fx.drops(*reason);
        let out = prog_test_run(fx.dp.program(Hook::FromEndpoint).unwrap(), frame, a.ifindex)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out.retval, TC_ACT_SHOT, "{what}");
        assert_eq!(fx.drops(*reason), before + 1, "{what}: counted as {reason}");
    }
    assert_eq!(
        fx.all_drops(),
        cases.len() as u64,
        "each counted once, under its own reason"
    );
    assert_eq!(fx.all_rule_hits(), 0, "never attributed to a policy");
    let events = fx.events();
    let reasons: Vec<DropReason> = denials(&events).iter().map(|d| d.0).collect();
    assert_eq!(reasons, cases.iter().map(|c| c.2).collect::<Vec<_>>());
    assert!(denials(&events).iter().all(|d| d.1.is_none() && d.2 == 0));

    // Documented as passing: options, and Ethernet padding after the IP packet.
    let mut options = ip(UDP);
    options.options = vec![1, 1, 1, 1, 1, 1, 1, 0];
    assert_eq!(
        fx.send(&a, &a.ipv4(&options, &udp)).retval,
        TC_ACT_REDIRECT,
        "options are skipped"
    );
    let mut padded = a.ipv4(&ip(UDP), &udp);
    padded.extend_from_slice(&[0; 20]);
    assert_eq!(
        fx.send(&a, &padded).retval,
        TC_ACT_REDIRECT,
        "padding after total length is ignored"
    );
}

// ---- chain --------------------------------------------------------------------

#[test]
fn a_stage_in_the_chain_slot_sees_allowed_packets_and_hands_them_to_delivery() {
    let mut fx = Fixture::new("chain");
    fx.allow_all_a_b();
    let stages = load_with_datapath_maps(&fx.dp, TEST_STAGES_OBJECT).unwrap();
    let frame = fx.a.udp_to(IP_B, 5000, 53);

    fx.dp
        .set_chain_stage(classifier(&stages, "stage_drop_all").unwrap().fd().unwrap())
        .unwrap();
    assert_eq!(
        fx.send(&fx.a, &frame).retval,
        TC_ACT_SHOT,
        "the stage drops everything"
    );
    fx.dp.clear_chain_stage().unwrap();
    let out = fx.send(&fx.a, &frame);
    assert_eq!(
        out.retval, TC_ACT_REDIRECT,
        "empty slot: straight to delivery"
    );
    assert_eq!(out.packet[0..6], fx.b.mac);

    fx.dp
        .set_chain_stage(classifier(&stages, "stage_pass").unwrap().fd().unwrap())
        .unwrap();
    let out = fx.send(&fx.a, &frame);
    assert_eq!(
        out.retval, TC_ACT_REDIRECT,
        "the stage tail-called the delivery program"
    );
    assert_eq!(
        out.packet[0..6],
        fx.b.mac,
        "and delivery rewrote the packet"
    );
    assert_eq!(ipv4_ttl_and_checksum_ok(&out.packet), (63, true));
    assert_eq!(
        fx.dp.maps().counters.stat_slot(7).unwrap(),
        1,
        "the stage ran once"
    );
    // Denied packets never reach the stage.
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_HOST, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.dp.maps().counters.stat_slot(7).unwrap(), 1);
}

// ---- to_endpoint and from_uplink ---------------------------------------------------

#[test]
fn to_endpoint_applies_the_ingress_policy_to_the_node_stack() {
    let mut fx = Fixture::new("toep");
    fx.allow(ID_A, Direction::Ingress, HOST_ID, TCP, 22, 61);
    fx.default_deny(ID_A, Direction::Ingress, 62);
    fx.allow(ID_A, Direction::Egress, HOST_ID, 0, 0, 63);
    let a = fx.a;
    let from_host = |src: Ipv4Addr, dst: Ipv4Addr, sport, dport, flags| {
        let l4 = packet::tcp(src, sport, dst, dport, flags, b"");
        ethernet(
            a.mac,
            a.host_mac,
            ETH_P_IP,
            &packet::Ipv4::new(src, dst, TCP).packet(&l4),
        )
    };

    let out = fx.run(
        Hook::ToEndpoint,
        a.ifindex,
        &from_host(IP_HOST, IP_A, 50000, 22, TCP_SYN),
    );
    assert_eq!(out.retval, TC_ACT_OK);
    assert_eq!(
        ipv4_ttl_and_checksum_ok(&out.packet).0,
        64,
        "not routed: TTL untouched"
    );
    assert_eq!(admissions(&fx.events()), vec![(0, 61)]);
    assert_eq!(
        fx.run(
            Hook::ToEndpoint,
            a.ifindex,
            &from_host(IP_HOST, IP_A, 50000, 23, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );
    assert_eq!(
        denials(&fx.events()),
        vec![(DropReason::PolicyDenied, Some(Direction::Ingress), 62, 0)]
    );

    // A opens a connection to the host: the host's replies pass despite the default deny.
    assert_eq!(
        fx.send(&a, &a.tcp_to(IP_HOST, 40000, 9000, TCP_SYN)).retval,
        TC_ACT_OK
    );
    let reply = from_host(IP_HOST, IP_A, 9000, 40000, TCP_SYN | TCP_ACK);
    assert_eq!(
        fx.run(Hook::ToEndpoint, a.ifindex, &reply).retval,
        TC_ACT_OK
    );

    // Wrong destination for the port, a local endpoint's address from the stack, ARP.
    assert_eq!(
        fx.run(
            Hook::ToEndpoint,
            a.ifindex,
            &from_host(IP_HOST, IP_B, 1, 22, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NotLocalDestination), 1);
    assert_eq!(
        fx.run(
            Hook::ToEndpoint,
            a.ifindex,
            &from_host(IP_B, IP_A, 1, 22, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofIp), 1);
    let arp = ethernet(
        [0xff; 6],
        a.host_mac,
        ETH_P_ARP,
        &packet::arp(1, a.host_mac, IP_HOST, [0; 6], IP_A),
    );
    assert_eq!(fx.run(Hook::ToEndpoint, a.ifindex, &arp).retval, TC_ACT_OK);
}

#[test]
fn from_uplink_admits_the_world_only_into_local_endpoints_by_their_ingress_policy() {
    let mut fx = Fixture::new("uplk");
    fx.allow(ID_A, Direction::Ingress, WORLD_ID, TCP, 443, 71);
    fx.default_deny(ID_A, Direction::Ingress, 72);
    fx.allow(ID_A, Direction::Egress, WORLD_ID, 0, 0, 73);
    let world_mac = packet::mac(0x77);
    let from_world = |src: Ipv4Addr, dst: Ipv4Addr, sport, dport, flags| {
        let l4 = packet::tcp(src, sport, dst, dport, flags, b"");
        ethernet(
            packet::mac(0x70),
            world_mac,
            ETH_P_IP,
            &packet::Ipv4::new(src, dst, TCP).packet(&l4),
        )
    };

    let out = fx.run(
        Hook::FromUplink,
        fx.uplink,
        &from_world(IP_WORLD, IP_A, 50000, 443, TCP_SYN),
    );
    assert_eq!(out.retval, TC_ACT_REDIRECT, "straight into A");
    assert_eq!(
        (out.packet[0..6].to_vec(), out.packet[6..12].to_vec()),
        (fx.a.mac.to_vec(), fx.a.host_mac.to_vec())
    );
    assert_eq!(ipv4_ttl_and_checksum_ok(&out.packet), (63, true));
    let events = fx.events();
    assert_eq!(admissions(&events), vec![(0, 71)]);
    assert_eq!(events[0].flow().src_identity, WORLD_ID);
    assert_eq!(
        fx.run(
            Hook::FromUplink,
            fx.uplink,
            &from_world(IP_WORLD, IP_A, 50000, 444, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );

    // Replies to a connection A opened pass.
    assert_eq!(
        fx.send(&fx.a, &fx.a.tcp_to(IP_WORLD, 40000, 80, TCP_SYN))
            .retval,
        TC_ACT_REDIRECT
    );
    let reply = from_world(IP_WORLD, IP_A, 80, 40000, TCP_SYN | TCP_ACK);
    assert_eq!(
        fx.run(Hook::FromUplink, fx.uplink, &reply).retval,
        TC_ACT_REDIRECT
    );

    // Only local endpoints are reachable, and the world cannot claim palisade addresses.
    for dst in [IP_HOST, Ipv4Addr::new(192, 0, 2, 99)] {
        assert_eq!(
            fx.run(
                Hook::FromUplink,
                fx.uplink,
                &from_world(IP_WORLD, dst, 1, 443, TCP_SYN)
            )
            .retval,
            TC_ACT_SHOT
        );
    }
    assert_eq!(fx.drops(DropReason::NotLocalDestination), 2);
    assert_eq!(
        fx.run(
            Hook::FromUplink,
            fx.uplink,
            &from_world(IP_B, IP_A, 1, 443, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofIp), 1);

    let arp = ethernet(
        [0xff; 6],
        world_mac,
        ETH_P_ARP,
        &packet::arp(1, world_mac, NEXTHOP, [0; 6], IP_HOST),
    );
    assert_eq!(
        fx.run(Hook::FromUplink, fx.uplink, &arp).retval,
        TC_ACT_OK,
        "ARP is the node's business"
    );
    assert_eq!(
        fx.run(
            Hook::FromUplink,
            fx.a.ifindex,
            &from_world(IP_WORLD, IP_A, 1, 443, TCP_SYN)
        )
        .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::UnknownUplink), 1);
}

#[test]
fn tenants_with_the_same_addresses_stay_apart() {
    let mut fx = Fixture::new("tenant");
    fx.allow_all_a_b();
    fx.allow(ID_C, Direction::Egress, 0, 0, 0, 80);
    // C (tenant 2) has A's address; its traffic to B's address is tenant 2's
    // world, never B, and tenant 2 has no uplink.
    let c = fx.c;
    assert_eq!(fx.send(&c, &c.udp_to(IP_B, 5000, 53)).retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::NoRoute), 1);
    assert_eq!(
        fx.drops(DropReason::SpoofIp),
        0,
        "10.0.0.1 is C's own address in tenant 2"
    );
    // A's identical address is still A's in tenant 1.
    let out = fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53));
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(out.packet[0..6], fx.b.mac);
    // A cannot use C's port, nor C A's.
    assert_eq!(
        fx.run(Hook::FromEndpoint, c.ifindex, &fx.a.udp_to(IP_B, 5000, 53))
            .retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofMac), 1);
    assert!(ct(&fx, CtKey::new(TENANT2, UDP, IP_A, 5000, IP_B, 53)).is_none());
}
