//! What keeps the per-packet cost flat must never change a verdict: routes
//! cached in conntrack entries follow every table change and never serve
//! another port or hook; ports sharing an ENDPOINT_INDEX slot keep their own
//! endpoints; and the policy split into POLICY (exact ports, all ports) and
//! POLICY_RANGES decides exactly as one longest-prefix table would, through
//! inserts, removals and an agent restart.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use common::*;
use palisade_datapath::abi::{ip_proto, policy_flags, CtKey, Endpoint, IpcacheKey, IpcacheValue};
use palisade_datapath::abi::{PolicyKey, PolicyValue, Verdict, POLICY_PREFIX_BITS};
use palisade_datapath::testing::packet::{self, *};
use palisade_datapath::testing::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};
use palisade_datapath::{Datapath, DatapathConfig, Direction, DropReason, Error, FlowEvent, Hook};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const TCP: u8 = ip_proto::TCP;
const UDP: u8 = ip_proto::UDP;

fn ct(fx: &Fixture, key: CtKey) -> Option<palisade_datapath::abi::CtEntry> {
    fx.dp.maps().conntrack.get(&key).unwrap()
}

fn reasons(events: &[FlowEvent]) -> Vec<DropReason> {
    events
        .iter()
        .filter_map(|e| match e {
            FlowEvent::Denied { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

// ---- routes cached in conntrack ----------------------------------------------

#[test]
fn established_connections_follow_endpoint_and_ipcache_changes() {
    let mut fx = Fixture::new("rtchg");
    fx.allow_all_a_b();
    let key = CtKey::new(TENANT, UDP, IP_A, 5000, IP_B, 53);
    for _ in 0..2 {
        let out = fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53));
        assert_eq!(out.retval, TC_ACT_REDIRECT);
        assert_eq!(out.packet[0..6], fx.b.mac);
    }
    assert_eq!(
        fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_REDIRECT
    );

    // B's workload gets a new MAC: the next packet of the connection goes to it,
    // and B's replies must come from it.
    let new_mac = [0x02, 0, 0, 0, 0xbb, 0xbb];
    let endpoint = fx.dp.maps().endpoints.get(fx.b.ifindex).unwrap().unwrap();
    fx.dp
        .maps_mut()
        .endpoints
        .insert(
            fx.b.ifindex,
            &Endpoint {
                mac: new_mac,
                ..endpoint
            },
        )
        .unwrap();
    let out = fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53));
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(out.packet[0..6], new_mac, "delivered to the new MAC");
    assert_eq!(
        fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_SHOT,
        "the old MAC is spoofed now"
    );
    let b_new = Port {
        mac: new_mac,
        ..fx.b
    };
    assert_eq!(
        fx.send(&fx.b, &b_new.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_REDIRECT
    );
    assert_eq!(fx.drops(DropReason::SpoofMac), 1);

    // B's address now points at another tenant's port: dropped, connection kept.
    let ipcache = &mut fx.dp.maps_mut().ipcache;
    let b_key = IpcacheKey::new(TENANT, IP_B, 32);
    ipcache
        .insert(&b_key, &IpcacheValue::local_endpoint(ID_B, fx.c.ifindex))
        .unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::TenantMismatch), 1);
    fx.dp
        .maps_mut()
        .ipcache
        .insert(&b_key, &IpcacheValue::local_endpoint(ID_B, fx.b.ifindex))
        .unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_REDIRECT
    );

    // B's address is gone: it is the world now, which A may not reach.
    fx.events();
    fx.dp.maps_mut().ipcache.remove(&b_key).unwrap();
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    let events = fx.events();
    assert_eq!(reasons(&events), vec![DropReason::PolicyRevoked]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FlowEvent::ConnCut { flow, .. }
            if flow.dst_identity == WORLD_ID)),
        "cut as a flow to the world: {events:?}"
    );
    assert!(ct(&fx, key).is_none());
}

#[test]
fn a_new_identity_behind_an_address_re_decides_its_connections() {
    let mut fx = Fixture::new("relbl");
    fx.allow_all_a_b();
    let tcp = CtKey::new(TENANT, TCP, IP_A, 40000, IP_B, 80);
    let udp = CtKey::new(TENANT, UDP, IP_A, 5000, IP_B, 53);
    for frame in [
        fx.a.tcp_to(IP_B, 40000, 80, TCP_SYN),
        fx.a.udp_to(IP_B, 5000, 53),
    ] {
        assert_eq!(fx.send(&fx.a, &frame).retval, TC_ACT_REDIRECT);
    }

    // B is relabelled (new identity), with no policy revision bump. Its new
    // identity may receive UDP/53 from A, nothing else.
    let id_b2 = TENANT << 16 | 22;
    fx.allow(ID_A, Direction::Egress, id_b2, UDP, 53, 30);
    fx.policy(
        PolicyKey::new(ID_A, Direction::Egress, id_b2, 0, 0, 0),
        PolicyValue::deny(32),
    );
    fx.allow(id_b2, Direction::Ingress, ID_A, 0, 0, 31);
    let endpoint = fx.dp.maps().endpoints.get(fx.b.ifindex).unwrap().unwrap();
    let maps = fx.dp.maps_mut();
    maps.endpoints
        .insert(
            fx.b.ifindex,
            &Endpoint {
                identity: id_b2,
                ..endpoint
            },
        )
        .unwrap();
    maps.ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_B, 32),
            &IpcacheValue::local_endpoint(id_b2, fx.b.ifindex),
        )
        .unwrap();
    fx.events();

    // Each connection is decided again on its next packet, from either side.
    assert_eq!(
        fx.send(&fx.b, &fx.b.tcp_to(IP_A, 80, 40000, TCP_SYN | TCP_ACK))
            .retval,
        TC_ACT_SHOT
    );
    let events = fx.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FlowEvent::ConnCut { cookie: 32, flow, .. }
            if flow.dst_identity == id_b2)),
        "{events:?}"
    );
    assert!(ct(&fx, tcp).is_none());
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_REDIRECT
    );
    let entry = ct(&fx, udp).unwrap();
    assert_eq!(
        (
            entry.dst_identity,
            entry.egress_cookie,
            entry.ingress_cookie
        ),
        (id_b2, 30, 31),
        "the connection goes on under the new identity and rules"
    );
    assert_eq!(fx.dp.maps().counters.rule(30).unwrap().packets, 1);
}

#[test]
fn a_cached_route_never_serves_another_port_or_hook() {
    let mut fx = Fixture::new("rtspf");
    fx.allow_all_a_b();
    let key = CtKey::new(TENANT, UDP, IP_A, 5000, IP_B, 53);
    for _ in 0..2 {
        assert_eq!(
            fx.send(&fx.a, &fx.a.udp_to(IP_B, 5000, 53)).retval,
            TC_ACT_REDIRECT
        );
        assert_eq!(
            fx.send(&fx.b, &fx.b.udp_to(IP_A, 53, 5000)).retval,
            TC_ACT_REDIRECT
        );
    }
    let before = ct(&fx, key).unwrap();

    // B sends A's side of the connection, A sends B's side: both spoofed.
    let b_as_a = Port { ip: IP_A, ..fx.b };
    assert_eq!(
        fx.send(&fx.b, &b_as_a.udp_to(IP_B, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    let a_as_b = Port { ip: IP_B, ..fx.a };
    assert_eq!(
        fx.send(&fx.a, &a_as_b.udp_to(IP_A, 53, 5000)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofIp), 2);
    // A's packet coming from the node's stack toward A's own port.
    let out = fx.run(Hook::ToEndpoint, fx.a.ifindex, &fx.a.udp_to(IP_B, 5000, 53));
    assert_eq!(out.retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::NotLocalDestination), 1);

    let after = ct(&fx, key).unwrap();
    assert_eq!(
        (after.packets_fwd, after.packets_rev),
        (before.packets_fwd, before.packets_rev),
        "dropped packets never count for the connection"
    );
}

// ---- the ENDPOINTS index --------------------------------------------------------

#[test]
fn ports_sharing_an_index_slot_keep_their_own_endpoints() {
    let mut fx = Fixture::new("epidx");
    // A port whose ifindex falls on A's slot of ENDPOINT_INDEX.
    let index = fx.a.ifindex + palisade_datapath::abi::limits::ENDPOINT_INDEX_SLOTS;
    ip(
        &fx.netns.name,
        &format!("link add hX index {index} type veth peer name pX"),
    );
    let x = Port {
        ifindex: ifindex("hX"),
        identity: TENANT << 16 | 7,
        tenant: TENANT,
        ip: Ipv4Addr::new(10, 0, 0, 7),
        mac: packet::mac(0x07),
        host_mac: packet::mac(0x87),
    };
    assert_eq!(x.ifindex, index);
    let x_endpoint = Endpoint {
        identity: x.identity,
        tenant: x.tenant,
        flags: 0,
        ipv4: x.ip.octets(),
        mac: x.mac,
        host_mac: x.host_mac,
    };
    let a_endpoint = fx.dp.maps().endpoints.get(fx.a.ifindex).unwrap().unwrap();
    fx.dp
        .maps_mut()
        .endpoints
        .insert(x.ifindex, &x_endpoint)
        .unwrap();
    fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    fx.allow(x.identity, Direction::Egress, 0, 0, 0, 2);

    // A new connection from `port` each time: (verdict, [(identity, cookie) admitted]).
    let mut sport = 5000;
    let mut sent_by = |fx: &mut Fixture, port: &Port| {
        sport += 1;
        let out = fx.send(port, &port.udp_to(IP_HOST, sport, 53));
        let admitted: Vec<(u32, u32)> = fx
            .events()
            .iter()
            .filter_map(|e| match e {
                FlowEvent::NewAllowed {
                    flow,
                    egress_cookie,
                    ..
                } => Some((flow.src_identity, *egress_cookie)),
                _ => None,
            })
            .collect();
        (out.retval, admitted)
    };
    let a = fx.a;
    assert_eq!(sent_by(&mut fx, &a), (TC_ACT_OK, vec![(ID_A, 1)]));
    assert_eq!(sent_by(&mut fx, &x), (TC_ACT_OK, vec![(x.identity, 2)]));
    let x_with_a_mac = Port { mac: fx.a.mac, ..x };
    assert_eq!(
        fx.send(&x, &x_with_a_mac.udp_to(IP_HOST, 4000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::SpoofMac), 1);

    // A leaves: X carries on (and takes the slot), A's port is nobody's.
    assert!(fx.dp.maps_mut().endpoints.remove(a.ifindex).unwrap());
    assert_eq!(
        fx.send(&a, &a.udp_to(IP_HOST, 4001, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::UnknownEndpoint), 1);
    assert_eq!(sent_by(&mut fx, &x), (TC_ACT_OK, vec![(x.identity, 2)]));

    // A comes back next to X: each is itself again.
    fx.dp
        .maps_mut()
        .endpoints
        .insert(a.ifindex, &a_endpoint)
        .unwrap();
    assert_eq!(sent_by(&mut fx, &a), (TC_ACT_OK, vec![(ID_A, 1)]));
    assert_eq!(sent_by(&mut fx, &x), (TC_ACT_OK, vec![(x.identity, 2)]));
}

// ---- the policy maps ---------------------------------------------------------------

/// Verdict and cookie of a first packet from A to `dst` on (`proto`, `port`):
/// `Ok(cookie)` admitted, `Err(cookie)` denied (0: no policy).
fn decide(fx: &mut Fixture, dst: Ipv4Addr, proto: u8, port: u16) -> Result<u32, u32> {
    let frame = match proto {
        TCP => fx.a.tcp_to(dst, 40000, port, TCP_SYN),
        _ => fx.a.udp_to(dst, 40000, port),
    };
    let out = fx.send(&fx.a, &frame);
    let events = fx.events();
    let cookie = events.iter().find_map(|e| match e {
        FlowEvent::NewAllowed { egress_cookie, .. } => Some(Ok(*egress_cookie)),
        FlowEvent::Denied { cookie, .. } => Some(Err(*cookie)),
        _ => None,
    });
    let cookie = cookie.unwrap_or_else(|| panic!("no event for {proto}/{port}: {events:?}"));
    assert_eq!(out.retval == TC_ACT_SHOT, cookie.is_err(), "{events:?}");
    cookie
}

/// A fixture whose every packet is a new connection, and whose host and
/// world peers are decided by A's egress side alone.
fn policy_fixture(tag: &str) -> Fixture {
    let mut fx = Fixture::new(tag);
    fx.config(|c| {
        c.ct_tcp_syn_ms = 0;
        c.ct_udp_ms = 0;
    });
    fx
}

#[test]
fn port_ranges_decide_with_or_without_an_all_ports_entry() {
    let mut fx = policy_fixture("rngs");
    let range = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, TCP, 8080, 12); // 8080-8095
    let all_ports = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, TCP, 0, 0);
    let exact = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, TCP, 8085, 16);
    let default = PolicyKey::default_for(ID_A, Direction::Egress);
    fx.policy(default, PolicyValue::deny(49));
    fx.policy(range, PolicyValue::allow(41));
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8085), Ok(41));
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 9000), Err(49));

    fx.policy(all_ports, PolicyValue::deny(42));
    fx.policy(exact, PolicyValue::deny(43));
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 9000), Err(42));
    assert_eq!(
        decide(&mut fx, IP_HOST, TCP, 8084),
        Ok(41),
        "a range beats /0"
    );
    assert_eq!(
        decide(&mut fx, IP_HOST, TCP, 8085),
        Err(43),
        "an exact port beats a range"
    );

    // Entries as (peer, proto, prefixlen, port) -> cookie.
    let listed = |fx: &Fixture| -> BTreeMap<(u32, u8, u32, u16), u32> {
        fx.dp
            .maps()
            .policy
            .entries()
            .unwrap()
            .into_iter()
            .map(|(k, v)| ((k.peer, k.proto, k.prefixlen, k.port()), v.cookie))
            .collect()
    };
    let group = |prefixlen, port| (HOST_ID, TCP, prefixlen, port);
    assert_eq!(
        listed(&fx),
        BTreeMap::from([
            ((0, 0, 80, 0), 49),
            (group(80, 0), 42),
            (group(92, 8080), 41),
            (group(96, 8085), 43)
        ])
    );

    // Without its all-ports entry the group keeps its range and exact port.
    assert!(fx.dp.maps_mut().policy.remove(&all_ports).unwrap());
    assert!(!fx.dp.maps_mut().policy.remove(&all_ports).unwrap());
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 9000), Err(49));
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8084), Ok(41));
    assert_eq!(
        listed(&fx),
        BTreeMap::from([
            ((0, 0, 80, 0), 49),
            (group(92, 8080), 41),
            (group(96, 8085), 43)
        ]),
        "no placeholder is ever listed"
    );

    assert!(fx.dp.maps_mut().policy.remove(&range).unwrap());
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8084), Err(49));
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8085), Err(43));
    assert!(fx.dp.maps_mut().policy.remove(&exact).unwrap());
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8085), Err(49));
    assert_eq!(listed(&fx), BTreeMap::from([((0, 0, 80, 0), 49)]));

    // Internal flags are the maps' own: a caller's are dropped, never reported.
    fx.policy(
        range,
        PolicyValue {
            flags: 0xff,
            ..PolicyValue::allow(44)
        },
    );
    let (_, value) = fx.dp.maps().policy.entries().unwrap()[..]
        .iter()
        .copied()
        .find(|(k, _)| *k == range)
        .unwrap();
    assert_eq!(
        value.flags & (policy_flags::PORT_RANGES | policy_flags::NO_DECISION),
        0
    );
    assert_eq!(
        value.flags & (policy_flags::LOG | policy_flags::AUDIT_DENY),
        policy_flags::LOG | policy_flags::AUDIT_DENY
    );
}

#[test]
fn policy_keys_outside_the_lookup_are_refused() {
    let mut fx = Fixture::new("pfx");
    for prefixlen in [0, POLICY_PREFIX_BITS - 1, POLICY_PREFIX_BITS + 17] {
        let key = PolicyKey {
            prefixlen,
            ..PolicyKey::default_for(ID_A, Direction::Egress)
        };
        let err = fx
            .dp
            .maps_mut()
            .policy
            .insert(&key, &PolicyValue::allow(1))
            .expect_err("refused");
        assert!(
            matches!(err, Error::PolicyPrefix { prefixlen: p } if p == prefixlen),
            "{err}"
        );
        assert!(err.to_string().contains("PolicyKey::new"), "{err}");
    }
    assert!(fx.dp.maps().policy.entries().unwrap().is_empty());
}

#[test]
fn range_bookkeeping_survives_an_agent_restart() {
    let mut fx = policy_fixture("rngrs");
    fx.policy(
        PolicyKey::default_for(ID_A, Direction::Egress),
        PolicyValue::deny(49),
    );
    let first = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, TCP, 8080, 12);
    let second = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, TCP, 9000, 14);
    fx.policy(first, PolicyValue::allow(41));

    // A second agent adopts the maps and carries on with the same group.
    let mut again = Datapath::open(&DatapathConfig {
        bpffs_dir: fx.bpffs.path.clone(),
        map_sizes: test_sizes(),
    })
    .expect("adopt");
    let policy = &mut again.maps_mut().policy;
    policy.insert(&second, &PolicyValue::allow(42)).unwrap();
    assert!(policy.remove(&first).unwrap());
    assert_eq!(
        decide(&mut fx, IP_HOST, TCP, 9001),
        Ok(42),
        "the remaining range still decides"
    );
    assert_eq!(decide(&mut fx, IP_HOST, TCP, 8081), Err(49));
    let mut listed = again.maps().policy.entries().unwrap();
    listed.sort_by_key(|(k, _)| sort_key(k));
    assert_eq!(
        listed,
        vec![
            (
                PolicyKey::default_for(ID_A, Direction::Egress),
                PolicyValue::deny(49)
            ),
            (second, PolicyValue::allow(42))
        ]
    );
}

/// An order on keys (PolicyKey is not Ord).
fn sort_key(k: &PolicyKey) -> (u32, u8, u32, u8, u32, u16) {
    (
        k.subject,
        k.direction,
        k.peer,
        k.proto,
        k.prefixlen,
        k.port(),
    )
}

/// One longest-prefix table over every entry: the four steps of policy.h,
/// as the single LPM trie before the split decided them.
fn reference(
    table: &HashMap<PolicyKey, PolicyValue>,
    peer: u32,
    proto: u8,
    port: u16,
) -> Result<u32, u32> {
    let longest = |peer: u32, proto: u8, port: u16, max_len: u32| {
        table
            .iter()
            .filter(|(k, _)| {
                let bits = k.prefixlen - POLICY_PREFIX_BITS;
                let mask = if bits == 0 {
                    0
                } else {
                    u16::MAX << (16 - bits)
                };
                k.subject == ID_A
                    && k.direction == Direction::Egress as u8
                    && k.peer == peer
                    && k.proto == proto
                    && k.prefixlen <= max_len
                    && k.port() == port & mask
            })
            .max_by_key(|(k, _)| k.prefixlen)
            .map(|(_, v)| *v)
    };
    let v = longest(peer, proto, port, 96)
        .or_else(|| longest(peer, 0, 0, 80))
        .or_else(|| longest(0, proto, port, 96))
        .or_else(|| longest(0, 0, 0, 80));
    match v {
        Some(v) if v.verdict == Verdict::Allow as u8 => Ok(v.cookie),
        Some(v) => Err(v.cookie),
        None => Err(0),
    }
}

/// One write to the table: insert (with a verdict) or remove.
#[derive(Clone, Debug)]
enum Op {
    Insert(PolicyKey, bool),
    Remove(PolicyKey),
}

fn key_strategy() -> impl Strategy<Value = PolicyKey> {
    (
        prop::sample::select(vec![ID_A, ID_A, ID_A, ID_B]),
        prop::sample::select(vec![0, HOST_ID, WORLD_ID]),
        prop::sample::select(vec![0u8, TCP, UDP]),
        prop::sample::select(vec![53u16, 80, 8080, 8095, 9000]),
        prop::sample::select(vec![0u8, 4, 12, 14, 15, 16]),
    )
        .prop_map(|(subject, peer, proto, port, bits)| {
            PolicyKey::new(subject, Direction::Egress, peer, proto, port, bits)
        })
}

#[test]
fn the_policy_maps_decide_as_one_longest_prefix_table() {
    let fx = RefCell::new(policy_fixture("lpmeq"));
    let ops = prop::collection::vec(
        prop_oneof![
            3 => (key_strategy(), any::<bool>()).prop_map(|(k, allow)| Op::Insert(k, allow)),
            1 => key_strategy().prop_map(Op::Remove),
        ],
        1..16,
    );
    let mut runner = TestRunner::new(ProptestConfig::with_cases(40));
    runner
        .run(&ops, |ops| {
            let mut fx = fx.borrow_mut();
            let mut table: HashMap<PolicyKey, PolicyValue> = HashMap::new();
            for old in fx.dp.maps().policy.entries().unwrap() {
                fx.dp.maps_mut().policy.remove(&old.0).unwrap();
            }
            for (i, op) in ops.iter().enumerate() {
                let policy = &mut fx.dp.maps_mut().policy;
                match *op {
                    Op::Insert(key, allow) => {
                        let cookie = 100 + i as u32;
                        let value = if allow {
                            PolicyValue::allow(cookie)
                        } else {
                            PolicyValue::deny(cookie)
                        };
                        policy.insert(&key, &value).unwrap();
                        table.insert(key, value);
                    }
                    Op::Remove(key) => {
                        let removed = policy.remove(&key).unwrap();
                        prop_assert_eq!(removed, table.remove(&key).is_some());
                    }
                }
            }
            let mut listed = fx.dp.maps().policy.entries().unwrap();
            listed.sort_by_key(|(k, _)| sort_key(k));
            let mut expected: Vec<_> = table.clone().into_iter().collect();
            expected.sort_by_key(|(k, _)| sort_key(k));
            prop_assert_eq!(listed, expected);
            for (dst, peer) in [(IP_HOST, HOST_ID), (IP_WORLD, WORLD_ID)] {
                for proto in [TCP, UDP] {
                    for port in [53u16, 80, 81, 8080, 8088, 8095, 9000, 9003] {
                        prop_assert_eq!(
                            decide(&mut fx, dst, proto, port),
                            reference(&table, peer, proto, port),
                            "{:?} {}/{}",
                            dst,
                            proto,
                            port
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
