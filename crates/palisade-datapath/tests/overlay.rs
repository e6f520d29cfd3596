//! The overlay through BPF_PROG_TEST_RUN: what `from_endpoint` decides for a
//! destination on another node (tunnel delivery toward that node with the
//! tenant's VNI and the source identity, the ICMP "fragmentation needed"
//! answer for DF packets too big for the overlay, NO_TUNNEL without an
//! overlay), and how `from_overlay` verifies what other nodes send (VNI →
//! tenant, the GBP identity and the sending node against IPCACHE, the
//! destination's ingress policy, replies, cached routes that never serve
//! another node or identity, tenants sharing addresses).
//!
//! `inject_tunnel` (bpf/test_overlay.c) attaches the tunnel metadata a VXLAN
//! device would and tail-calls `from_overlay`. The tunnel key and GBP option
//! that `from_endpoint` sets are checked on real packets in
//! `overlay_traffic.rs` (test runs have no device to encapsulate).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{Array, Map, MapData, PerCpuArray, ProgramArray};
use aya::Ebpf;
use common::*;
use palisade_datapath::abi::{
    ip_proto, CtKey, DeliverAction, IpcacheKey, IpcacheValue, TenantInfo, VerdictMeta,
};
use palisade_datapath::testing::packet::{self, *};
use palisade_datapath::testing::{
    load_with_datapath_maps, prog_test_run, TestRunOutput, TC_ACT_REDIRECT, TC_ACT_SHOT,
    TEST_NO_TARGET, TEST_OVERLAY_OBJECT,
};
use palisade_datapath::{Direction, DropReason, FlowEvent, Hook};

const TCP: u8 = ip_proto::TCP;
const UDP: u8 = ip_proto::UDP;

const VNI: u32 = 100;
const VNI2: u32 = 200;
/// This node's underlay address.
const NODE_SELF: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// The node hosting IP_REMOTE.
const NODE_R: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// The node hosting IP_R2.
const NODE_OTHER: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 3);
const IP_R2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const ID_R2: u32 = TENANT << 16 | 20;
/// Tenant 2's endpoint on NODE_R, with IP_REMOTE too.
const ID_C2: u32 = TENANT2 << 16 | 9;
const OVERLAY_MTU: u32 = 1450;

/// `struct test_tunnel` of bpf/test_overlay.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct TestTunnel {
    vni: u32,
    sender: u32,
    gbp: u32,
    has_gbp: u32,
}
// SAFETY: repr(C), four u32 fields, no padding, valid for any bits.
unsafe impl aya::Pod for TestTunnel {}

/// The Fixture with an overlay: a VXLAN device (`external gbp`) as the
/// node's overlay, tenant 1 on VNI 100 and tenant 2 on VNI 200, IP_REMOTE
/// on NODE_R in both tenants (identities ID_REMOTE and ID_C2), IP_R2 on
/// NODE_OTHER, and the metadata injector aimed at from_overlay.
struct Overlay {
    fx: Fixture,
    vx: u32,
    injector: Ebpf,
}

impl Overlay {
    fn new(tag: &str) -> Overlay {
        let mut fx = Fixture::new(tag);
        ip(
            &fx.netns.name,
            "link add vx0 type vxlan external gbp dstport 4789",
        );
        let vx = ifindex("vx0");
        let uplink = fx.uplink;
        let maps = fx.dp.maps_mut();
        maps.tenants
            .insert(
                TENANT,
                &TenantInfo {
                    uplink_ifindex: uplink,
                    nexthop: NEXTHOP.octets(),
                    vni: VNI,
                    flags: 0,
                },
            )
            .unwrap();
        maps.tenants
            .insert(
                TENANT2,
                &TenantInfo {
                    vni: VNI2,
                    ..TenantInfo::default()
                },
            )
            .unwrap();
        for (tenant, ip, value) in [
            (
                TENANT,
                IP_REMOTE,
                IpcacheValue::remote_endpoint(ID_REMOTE, NODE_R),
            ),
            (
                TENANT,
                IP_R2,
                IpcacheValue::remote_endpoint(ID_R2, NODE_OTHER),
            ),
            (
                TENANT2,
                IP_REMOTE,
                IpcacheValue::remote_endpoint(ID_C2, NODE_R),
            ),
        ] {
            maps.ipcache
                .insert(&IpcacheKey::new(tenant, ip, 32), &value)
                .unwrap();
        }
        assert!(maps.config.set_overlay(vx, OVERLAY_MTU, NODE_SELF).unwrap());

        let mut injector = load_with_datapath_maps(&fx.dp, TEST_OVERLAY_OBJECT).unwrap();
        let target = fx.dp.program(Hook::FromOverlay).unwrap().fd().unwrap();
        let mut slots = ProgramArray::try_from(injector.map_mut("TEST_TARGET").unwrap()).unwrap();
        slots.set(0, target, 0).unwrap();
        Overlay { fx, vx, injector }
    }

    /// Runs from_overlay on `frame` as received from node `sender` with
    /// `vni` and the GBP option `gbp` (`None`: no option).
    fn receive(&mut self, sender: Ipv4Addr, vni: u32, gbp: Option<u32>, frame: &[u8]) -> u32 {
        self.receive_full(sender, vni, gbp, frame).retval
    }

    fn receive_full(
        &mut self,
        sender: Ipv4Addr,
        vni: u32,
        gbp: Option<u32>,
        frame: &[u8],
    ) -> TestRunOutput {
        let mut tunnel: Array<&mut MapData, TestTunnel> =
            Array::try_from(self.injector.map_mut("TEST_TUNNEL").unwrap()).unwrap();
        tunnel
            .set(
                0,
                TestTunnel {
                    vni,
                    sender: u32::from(sender),
                    gbp: gbp.unwrap_or(0),
                    has_gbp: u32::from(gbp.is_some()),
                },
                0,
            )
            .unwrap();
        let inject =
            palisade_datapath::testing::classifier(&self.injector, "inject_tunnel").unwrap();
        let out = prog_test_run(inject, frame, self.vx).unwrap();
        assert_ne!(
            out.retval, TEST_NO_TARGET,
            "the injector reached from_overlay"
        );
        out
    }
}

/// A frame as the VXLAN device hands it up: the inner Ethernet header of
/// the sending node, then a TCP segment.
fn from_remote(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let l4 = packet::tcp(src, sport, dst, dport, flags, b"");
    packet::ethernet(
        packet::mac(0x77),
        packet::mac(0x66),
        ETH_P_IP,
        &packet::Ipv4::new(src, dst, TCP).packet(&l4),
    )
}

/// The local part of an identity, as the GBP option carries it.
fn gbp(identity: u32) -> Option<u32> {
    Some(identity & 0xffff)
}

/// META as the last packet on this CPU left it, for port `ifindex`.
fn last_meta(bpffs: &Path, ifindex: u32) -> VerdictMeta {
    let data = MapData::from_pin(bpffs.join("META")).unwrap();
    let meta: PerCpuArray<MapData, VerdictMeta> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).unwrap();
    let values = meta.get(&0, 0).unwrap();
    values
        .iter()
        .copied()
        .find(|m| m.ifindex == ifindex)
        .expect("META of a packet of this port on some CPU")
}

// ---- sending ----------------------------------------------------------------

#[test]
fn a_remote_destination_is_encapsulated_toward_its_node_with_vni_and_identity() {
    let mut ov = Overlay::new("ovsend");
    let fx = &mut ov.fx;
    fx.allow(ID_A, Direction::Egress, ID_REMOTE, TCP, 8080, 1);
    fx.allow(ID_REMOTE, Direction::Ingress, ID_A, TCP, 8080, 2);
    fx.default_deny(ID_A, Direction::Egress, 9);
    fx.default_deny(ID_REMOTE, Direction::Ingress, 9);

    let syn = fx.a.tcp_to(IP_REMOTE, 40000, 8080, TCP_SYN);
    let out = fx.send(&fx.a, &syn);
    assert_eq!(out.retval, TC_ACT_REDIRECT, "to the VXLAN device");
    assert_eq!(
        ipv4_ttl_and_checksum_ok(&out.packet),
        (63, true),
        "an IP hop"
    );
    let meta = last_meta(&fx.bpffs.path, fx.a.ifindex);
    assert_eq!(meta.action, DeliverAction::Tunnel as u8);
    assert_eq!(meta.target_ifindex, ov.vx);
    assert_eq!(
        Ipv4Addr::from(meta.nexthop),
        NODE_R,
        "toward IP_REMOTE's node"
    );
    assert_eq!(meta.vni, VNI, "the tenant's VNI");
    assert_eq!(meta.src_identity, ID_A, "GBP carries A's local part");

    // Established packets use the route cached in CT, with the same result.
    let key = CtKey::new(TENANT, TCP, IP_A, 40000, IP_REMOTE, 8080);
    let ct = fx.dp.maps().conntrack.get(&key).unwrap().unwrap();
    assert_eq!(ct.route_fwd.action, DeliverAction::Tunnel as u8);
    assert_eq!(
        (Ipv4Addr::from(ct.route_fwd.nexthop), ct.route_fwd.vni),
        (NODE_R, VNI)
    );
    let ack = fx.a.tcp_to(IP_REMOTE, 40000, 8080, TCP_ACK);
    assert_eq!(fx.send(&fx.a, &ack).retval, TC_ACT_REDIRECT);
    let meta = last_meta(&fx.bpffs.path, fx.a.ifindex);
    assert_eq!(
        (meta.action, Ipv4Addr::from(meta.nexthop), meta.vni),
        (DeliverAction::Tunnel as u8, NODE_R, VNI)
    );

    // The destination moves to another node: the next packet follows it.
    fx.dp
        .maps_mut()
        .ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_REMOTE, 32),
            &IpcacheValue::remote_endpoint(ID_REMOTE, NODE_OTHER),
        )
        .unwrap();
    assert_eq!(fx.send(&fx.a, &ack).retval, TC_ACT_REDIRECT);
    let meta = last_meta(&fx.bpffs.path, fx.a.ifindex);
    assert_eq!(Ipv4Addr::from(meta.nexthop), NODE_OTHER);

    // Denied at the source, by the destination's ingress side: never sent.
    let denied = fx.a.tcp_to(IP_REMOTE, 40001, 9999, TCP_SYN);
    assert_eq!(fx.send(&fx.a, &denied).retval, TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::PolicyDenied), 1);
    assert_eq!(fx.drops(DropReason::NoTunnel), 0);
}

#[test]
fn without_an_overlay_a_vni_or_the_node_address_remote_destinations_drop() {
    let mut ov = Overlay::new("ovnotun");
    let fx = &mut ov.fx;
    fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    fx.allow(ID_REMOTE, Direction::Ingress, 0, 0, 0, 2);
    let mut sport = 41000;
    let mut send = |fx: &mut Fixture| {
        sport += 1;
        fx.send(&fx.a, &fx.a.udp_to(IP_REMOTE, sport, 53)).retval
    };
    assert_eq!(send(fx), TC_ACT_REDIRECT, "the overlay works");

    // Node address unknown.
    fx.dp
        .maps_mut()
        .ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_REMOTE, 32),
            &IpcacheValue::remote_endpoint(ID_REMOTE, Ipv4Addr::UNSPECIFIED),
        )
        .unwrap();
    assert_eq!(send(fx), TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::NoTunnel), 1);
    fx.dp
        .maps_mut()
        .ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_REMOTE, 32),
            &IpcacheValue::remote_endpoint(ID_REMOTE, NODE_R),
        )
        .unwrap();
    assert_eq!(send(fx), TC_ACT_REDIRECT);

    // No overlay device.
    fx.dp
        .maps_mut()
        .config
        .set_overlay(0, OVERLAY_MTU, NODE_SELF)
        .unwrap();
    assert_eq!(send(fx), TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::NoTunnel), 2);
    fx.dp
        .maps_mut()
        .config
        .set_overlay(ov.vx, OVERLAY_MTU, NODE_SELF)
        .unwrap();

    // The tenant has no VNI.
    let mut info = fx.dp.maps().tenants.get(TENANT).unwrap().unwrap();
    info.vni = 0;
    fx.dp.maps_mut().tenants.insert(TENANT, &info).unwrap();
    assert_eq!(fx.dp.maps().tenants.by_vni(VNI).unwrap(), None);
    assert_eq!(send(fx), TC_ACT_SHOT);
    assert_eq!(fx.drops(DropReason::NoTunnel), 3);
    assert_eq!(fx.drops(DropReason::RemoteUnsupported), 0, "retired");
}

#[test]
fn a_df_packet_too_big_for_the_overlay_is_answered_with_fragmentation_needed() {
    let mut ov = Overlay::new("ovmtu");
    let fx = &mut ov.fx;
    fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    fx.allow(ID_REMOTE, Direction::Ingress, 0, 0, 0, 2);

    // 1451 bytes of IPv4 with DF: one more than the overlay carries.
    let payload = vec![0xabu8; 1451 - 28];
    let ip = packet::Ipv4::new(IP_A, IP_REMOTE, UDP);
    let big =
        fx.a.ipv4(&ip, &packet::udp(IP_A, 5000, IP_REMOTE, 53, &payload));
    let out = fx.send(&fx.a, &big);
    assert_eq!(
        out.retval, TC_ACT_REDIRECT,
        "the answer goes back to the workload"
    );
    let answer = &out.packet;
    assert_eq!(answer.len(), ETH_HLEN + 20 + 8 + 20 + 8, "headers + quote");
    assert_eq!(&answer[0..6], &fx.a.mac, "to the workload");
    assert_eq!(&answer[6..12], &fx.a.host_mac, "from its gateway");
    let (ttl, checksum_ok) = ipv4_ttl_and_checksum_ok(answer);
    assert!(checksum_ok && ttl == 64);
    let ip_hdr = &answer[ETH_HLEN..ETH_HLEN + 20];
    assert_eq!(ip_hdr[9], ip_proto::ICMP);
    assert_eq!(
        Ipv4Addr::from(<[u8; 4]>::try_from(&ip_hdr[12..16]).unwrap()),
        NODE_SELF
    );
    assert_eq!(
        Ipv4Addr::from(<[u8; 4]>::try_from(&ip_hdr[16..20]).unwrap()),
        IP_A
    );
    let icmp = &answer[ETH_HLEN + 20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), OVERLAY_MTU as u16);
    assert_eq!(packet::checksum(icmp), 0, "ICMP checksum");
    assert_eq!(
        &icmp[8..],
        &big[ETH_HLEN..ETH_HLEN + 28],
        "quotes the packet as sent"
    );
    assert_eq!(fx.drops(DropReason::FragNeeded), 1);
    let events = fx.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            FlowEvent::Denied {
                reason: DropReason::FragNeeded,
                ..
            }
        )),
        "{events:?}"
    );

    // Exactly the overlay MTU fits.
    let payload = vec![0xabu8; 1450 - 28];
    let fits =
        fx.a.ipv4(&ip, &packet::udp(IP_A, 5001, IP_REMOTE, 53, &payload));
    let out = fx.send(&fx.a, &fits);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(out.packet.len(), fits.len(), "sent as is");
    assert_eq!(
        last_meta(&fx.bpffs.path, fx.a.ifindex).action,
        DeliverAction::Tunnel as u8
    );

    // Without DF the packet goes out (the outer packet is fragmented).
    let mut no_df = packet::Ipv4::new(IP_A, IP_REMOTE, UDP);
    no_df.frag = 0;
    let payload = vec![0xabu8; 1451 - 28];
    let frame =
        fx.a.ipv4(&no_df, &packet::udp(IP_A, 5002, IP_REMOTE, 53, &payload));
    let out = fx.send(&fx.a, &frame);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(out.packet.len(), frame.len());
    assert_eq!(fx.drops(DropReason::FragNeeded), 1);
}

// ---- receiving --------------------------------------------------------------

#[test]
fn a_packet_from_the_right_node_with_the_right_identity_is_delivered() {
    let mut ov = Overlay::new("ovrx");
    ov.fx.allow(ID_A, Direction::Ingress, ID_REMOTE, TCP, 22, 7);
    ov.fx.default_deny(ID_A, Direction::Ingress, 9);

    let syn = from_remote(IP_REMOTE, IP_A, 50000, 22, TCP_SYN);
    let out = ov.receive_full(NODE_R, VNI, gbp(ID_REMOTE), &syn);
    assert_eq!(out.retval, TC_ACT_REDIRECT, "into A");
    assert_eq!(&out.packet[0..6], &ov.fx.a.mac);
    assert_eq!(&out.packet[6..12], &ov.fx.a.host_mac);
    assert_eq!(ipv4_ttl_and_checksum_ok(&out.packet), (63, true));
    let events = ov.fx.events();
    match events.as_slice() {
        [FlowEvent::NewAllowed {
            flow,
            ingress_cookie,
            egress_cookie,
            ..
        }] => {
            assert_eq!(flow.hook, Hook::FromOverlay);
            assert_eq!((flow.src_identity, flow.dst_identity), (ID_REMOTE, ID_A));
            assert_eq!(
                (*egress_cookie, *ingress_cookie),
                (0, 7),
                "A's ingress decided here; the source's egress at its node"
            );
        }
        other => panic!("{other:?}"),
    }

    // Denied by A's ingress, decided again here.
    let other_port = from_remote(IP_REMOTE, IP_A, 50001, 23, TCP_SYN);
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &other_port),
        TC_ACT_SHOT
    );
    assert_eq!(ov.fx.drops(DropReason::PolicyDenied), 1);
    assert_eq!(ov.fx.all_drops(), 1);
}

#[test]
fn forged_identities_unknown_vnis_and_impersonated_nodes_are_dropped() {
    let mut ov = Overlay::new("ovforge");
    ov.fx.allow(ID_A, Direction::Ingress, 0, 0, 0, 7);
    let syn = |sport| from_remote(IP_REMOTE, IP_A, sport, 22, TCP_SYN);

    // The right node, another identity's GBP.
    assert_eq!(ov.receive(NODE_R, VNI, gbp(ID_R2), &syn(1)), TC_ACT_SHOT);
    // The right identity from another node (a compromised NODE_OTHER).
    assert_eq!(
        ov.receive(NODE_OTHER, VNI, gbp(ID_REMOTE), &syn(2)),
        TC_ACT_SHOT
    );
    // No GBP option at all, or a zero one.
    assert_eq!(ov.receive(NODE_R, VNI, None, &syn(3)), TC_ACT_SHOT);
    assert_eq!(ov.receive(NODE_R, VNI, Some(0), &syn(4)), TC_ACT_SHOT);
    // A local endpoint's address claimed from outside (B lives here).
    let as_b = from_remote(IP_B, IP_A, 5, 22, TCP_SYN);
    assert_eq!(ov.receive(NODE_R, VNI, gbp(ID_B), &as_b), TC_ACT_SHOT);
    // An address nobody has in the tenant (the world entry).
    let nobody = from_remote(Ipv4Addr::new(10, 0, 9, 9), IP_A, 6, 22, TCP_SYN);
    assert_eq!(ov.receive(NODE_R, VNI, gbp(WORLD_ID), &nobody), TC_ACT_SHOT);
    assert_eq!(ov.fx.drops(DropReason::ForgedIdentity), 6);

    // A VNI of no tenant here.
    assert_eq!(
        ov.receive(NODE_R, 4242, gbp(ID_REMOTE), &syn(7)),
        TC_ACT_SHOT
    );
    assert_eq!(ov.fx.drops(DropReason::UnknownVni), 1);

    // Flags in the GBP option's upper bits (don't learn, policy applied) do
    // not change the identity.
    let flagged = gbp(ID_REMOTE).map(|g| g | 0x0048_0000);
    assert_eq!(ov.receive(NODE_R, VNI, flagged, &syn(8)), TC_ACT_REDIRECT);
    assert_eq!(ov.fx.all_drops(), 7, "nothing else was dropped");
}

#[test]
fn a_cached_route_serves_only_the_node_vni_and_identity_it_was_verified_for() {
    let mut ov = Overlay::new("ovcache");
    ov.fx.allow(ID_A, Direction::Ingress, 0, 0, 0, 7);
    let syn = from_remote(IP_REMOTE, IP_A, 50000, 22, TCP_SYN);
    let ack = from_remote(IP_REMOTE, IP_A, 50000, 22, TCP_ACK);
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &syn),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &ack),
        TC_ACT_REDIRECT
    );
    let key = CtKey::new(TENANT, TCP, IP_REMOTE, 50000, IP_A, 22);
    let ct = ov.fx.dp.maps().conntrack.get(&key).unwrap().unwrap();
    assert_eq!(ct.route_fwd.hook, Hook::FromOverlay as u8);
    assert_eq!(
        (Ipv4Addr::from(ct.route_fwd.nexthop), ct.route_fwd.vni),
        (NODE_R, VNI),
        "the route records where its packets must come from"
    );
    assert_ne!(ct.route_fwd.gen, 0, "cached");

    // The same connection's tuple, injected by another node or with another
    // identity: verified in full, and dropped.
    assert_eq!(
        ov.receive(NODE_OTHER, VNI, gbp(ID_REMOTE), &ack),
        TC_ACT_SHOT
    );
    assert_eq!(ov.receive(NODE_R, VNI, gbp(ID_R2), &ack), TC_ACT_SHOT);
    assert_eq!(ov.fx.drops(DropReason::ForgedIdentity), 2);
    // The genuine packets still pass.
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &ack),
        TC_ACT_REDIRECT
    );

    // The source moves to NODE_OTHER: its packets come from there now, and
    // what still claims NODE_R is refused.
    ov.fx
        .dp
        .maps_mut()
        .ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_REMOTE, 32),
            &IpcacheValue::remote_endpoint(ID_REMOTE, NODE_OTHER),
        )
        .unwrap();
    assert_eq!(
        ov.receive(NODE_OTHER, VNI, gbp(ID_REMOTE), &ack),
        TC_ACT_REDIRECT
    );
    assert_eq!(ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &ack), TC_ACT_SHOT);
    assert_eq!(ov.fx.drops(DropReason::ForgedIdentity), 3);
}

#[test]
fn replies_of_connections_a_local_endpoint_opened_pass_its_ingress() {
    let mut ov = Overlay::new("ovreply");
    let fx = &mut ov.fx;
    fx.allow(ID_A, Direction::Egress, ID_REMOTE, TCP, 443, 1);
    fx.allow(ID_REMOTE, Direction::Ingress, ID_A, TCP, 443, 2);
    fx.default_deny(ID_A, Direction::Ingress, 9);
    let syn = fx.a.tcp_to(IP_REMOTE, 40000, 443, TCP_SYN);
    assert_eq!(fx.send(&fx.a, &syn).retval, TC_ACT_REDIRECT);

    let syn_ack = from_remote(IP_REMOTE, IP_A, 443, 40000, TCP_SYN | TCP_ACK);
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &syn_ack),
        TC_ACT_REDIRECT,
        "a reply"
    );
    // A new connection the other way is A's ingress to decide: denied.
    let syn_in = from_remote(IP_REMOTE, IP_A, 443, 40001, TCP_SYN);
    assert_eq!(
        ov.receive(NODE_R, VNI, gbp(ID_REMOTE), &syn_in),
        TC_ACT_SHOT
    );
    assert_eq!(ov.fx.drops(DropReason::PolicyDenied), 1);
    // A reply needs the right identity all the same.
    let forged_reply = from_remote(IP_REMOTE, IP_A, 443, 40000, TCP_ACK);
    assert_eq!(
        ov.receive(NODE_OTHER, VNI, gbp(ID_REMOTE), &forged_reply),
        TC_ACT_SHOT
    );
    assert_eq!(ov.fx.drops(DropReason::ForgedIdentity), 1);
}

#[test]
fn the_vni_picks_the_tenant_when_tenants_share_addresses() {
    let mut ov = Overlay::new("ovtenant");
    ov.fx.allow(ID_A, Direction::Ingress, 0, 0, 0, 7);
    ov.fx.allow(ID_C, Direction::Ingress, 0, 0, 0, 8);
    // A (tenant 1) and C (tenant 2) both have 10.0.0.1; so do ID_REMOTE and ID_C2.
    let to_a = from_remote(IP_REMOTE, IP_A, 50000, 22, TCP_SYN);
    let out = ov.receive_full(NODE_R, VNI2, gbp(ID_C2), &to_a);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(&out.packet[0..6], &ov.fx.c.mac, "tenant 2's workload");
    let out = ov.receive_full(NODE_R, VNI, gbp(ID_REMOTE), &to_a);
    assert_eq!(out.retval, TC_ACT_REDIRECT);
    assert_eq!(&out.packet[0..6], &ov.fx.a.mac, "tenant 1's workload");
    // Tenant 1's identity on tenant 2's VNI is not tenant 2's endpoint.
    let again = from_remote(IP_REMOTE, IP_A, 50001, 22, TCP_SYN);
    assert_eq!(ov.receive(NODE_R, VNI2, gbp(ID_R2), &again), TC_ACT_SHOT);
    assert_eq!(ov.fx.drops(DropReason::ForgedIdentity), 1);
}

#[test]
fn vnis_follow_the_tenants_table_and_are_repaired_on_open() {
    let ov = Overlay::new("ovvnis");
    let tenants = &ov.fx.dp.maps().tenants;
    let mut vnis: Vec<(u32, u32)> = tenants
        .vnis()
        .unwrap()
        .into_iter()
        .map(|(vni, info)| (vni, info.tenant))
        .collect();
    vnis.sort();
    assert_eq!(vnis, [(VNI, TENANT), (VNI2, TENANT2)]);

    // A VNI left behind by an agent killed between its two writes, and a
    // tenant whose VNI is missing: the next open repairs both.
    let dir = ov.fx.bpffs.path.clone();
    let mut stale: aya::maps::HashMap<MapData, u32, [u32; 2]> =
        aya::maps::HashMap::try_from(Map::HashMap(MapData::from_pin(dir.join("VNIS")).unwrap()))
            .unwrap();
    stale.insert(777, [TENANT, 0], 0).unwrap();
    stale.remove(&VNI2).unwrap();
    let reopened = palisade_datapath::Datapath::open(&palisade_datapath::DatapathConfig {
        bpffs_dir: dir,
        map_sizes: test_sizes(),
    })
    .unwrap();
    let tenants = &reopened.maps().tenants;
    assert_eq!(tenants.by_vni(777).unwrap(), None);
    assert_eq!(tenants.by_vni(VNI2).unwrap(), Some(TENANT2));
    assert_eq!(tenants.by_vni(VNI).unwrap(), Some(TENANT));
    assert_eq!(
        reopened.maps().config.get().unwrap().overlay_mtu,
        OVERLAY_MTU,
        "the overlay settings are adopted"
    );
}

#[test]
fn a_destination_whose_port_is_not_there_yet_drops_as_no_route() {
    // The agent's entry for a local endpoint whose port is missing (ifindex
    // 0): what a node holds while an endpoint moves to it.
    let mut ov = Overlay::new("ovnoport");
    ov.fx.allow(ID_A, Direction::Egress, 0, 0, 0, 1);
    ov.fx.allow(ID_REMOTE, Direction::Ingress, 0, 0, 0, 2);
    ov.fx
        .dp
        .maps_mut()
        .ipcache
        .insert(
            &IpcacheKey::new(TENANT, IP_REMOTE, 32),
            &IpcacheValue::local_endpoint(ID_REMOTE, 0),
        )
        .unwrap();
    let fx = &mut ov.fx;
    assert_eq!(
        fx.send(&fx.a, &fx.a.udp_to(IP_REMOTE, 5000, 53)).retval,
        TC_ACT_SHOT
    );
    assert_eq!(fx.drops(DropReason::NoRoute), 1);
    assert_eq!(fx.drops(DropReason::TenantMismatch), 0);
    // From another node too.
    let syn = from_remote(IP_R2, IP_REMOTE, 50000, 22, TCP_SYN);
    assert_eq!(ov.receive(NODE_OTHER, VNI, gbp(ID_R2), &syn), TC_ACT_SHOT);
    assert_eq!(ov.fx.drops(DropReason::NoRoute), 2);
}
