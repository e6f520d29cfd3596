//! Pins across `Datapath::open` calls and attachments: a second open adopts
//! the pinned maps with their contents (a restarted agent keeps its tables and
//! connections), a pin with another layout is refused with a clear error, and
//! link pins are created, updated in place, detached and pruned.

mod common;

use std::net::Ipv4Addr;

use common::*;
use palisade_datapath::abi::{
    ip_proto, Config, CtEntry, CtKey, Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue,
};
use palisade_datapath::{Datapath, DatapathConfig, Direction, Error, Hook, Interface};

fn config(dir: &BpffsDir) -> DatapathConfig {
    DatapathConfig {
        bpffs_dir: dir.path.clone(),
        map_sizes: test_sizes(),
    }
}

#[test]
fn a_second_open_adopts_the_pinned_maps_with_their_contents() {
    let dir = BpffsDir::new(&unique("adopt"));
    let endpoint = Endpoint {
        identity: ID_A,
        tenant: TENANT,
        flags: 0,
        ipv4: IP_A.octets(),
        mac: [2, 0, 0, 0, 0, 1],
        host_mac: [2, 0, 0, 0, 0, 2],
    };
    let ipcache_key = IpcacheKey::new(TENANT, IP_A, 32);
    let policy_key = PolicyKey::new(ID_A, Direction::Egress, ID_B, ip_proto::TCP, 443, 16);
    let ct_key = CtKey::new(TENANT, ip_proto::TCP, IP_A, 40000, IP_B, 443);
    let ct_entry = CtEntry {
        packets_fwd: 7,
        revision: 1,
        state: 3,
        ..CtEntry::default()
    };
    {
        let mut dp = Datapath::open(&config(&dir)).expect("first open");
        assert!(!dp.adopted());
        assert_eq!(
            dp.maps().config.get().unwrap(),
            Config::DEFAULT,
            "fresh maps get the default config"
        );
        let maps = dp.maps_mut();
        maps.endpoints.insert(7, &endpoint).unwrap();
        maps.ipcache
            .insert(&ipcache_key, &IpcacheValue::local_endpoint(ID_A, 7))
            .unwrap();
        maps.policy
            .insert(&policy_key, &PolicyValue::allow(99))
            .unwrap();
        maps.conntrack.insert(&ct_key, &ct_entry).unwrap();
        assert_eq!(dp.bump_policy_revision().unwrap(), 1);
    } // the first "agent" exits: its fds close, the pins stay

    let dp = Datapath::open(&config(&dir)).expect("second open");
    assert!(dp.adopted());
    let maps = dp.maps();
    assert_eq!(maps.endpoints.get(7).unwrap(), Some(endpoint));
    assert_eq!(
        maps.ipcache.lookup(TENANT, IP_A).unwrap(),
        Some(IpcacheValue::local_endpoint(ID_A, 7))
    );
    assert_eq!(
        maps.ipcache
            .lookup(TENANT, Ipv4Addr::new(10, 9, 9, 9))
            .unwrap(),
        None
    );
    assert_eq!(
        maps.policy.entries().unwrap(),
        vec![(policy_key, PolicyValue::allow(99))]
    );
    assert_eq!(maps.conntrack.get(&ct_key).unwrap(), Some(ct_entry));
    assert_eq!(
        maps.config.get().unwrap().policy_revision,
        1,
        "the revision is not reset"
    );
}

#[test]
fn a_pinned_map_with_another_layout_is_refused() {
    let dir = BpffsDir::new(&unique("layout"));
    std::fs::create_dir_all(&dir.path).unwrap();
    // What an ABI 2 build (a 144-byte conntrack value: routes without a VNI) left behind.
    let pin = dir.path.join("CT");
    run(
        "bpftool",
        &[
            "map",
            "create",
            pin.to_str().unwrap(),
            "type",
            "lru_hash",
            "key",
            "20",
            "value",
            "144",
            "entries",
            "16",
            "name",
            "CT",
        ],
    );

    let err = Datapath::open(&config(&dir)).expect_err("a layout mismatch must be refused");
    match &err {
        Error::PinnedMapMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "CT");
            assert_eq!((expected.value_size, found.value_size), (152, 144));
        }
        other => panic!("expected PinnedMapMismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("value 144 B") && message.contains("value 152 B"),
        "{message}"
    );
    assert!(
        message.contains("remove the pin directory"),
        "says what to do: {message}"
    );
    assert!(
        !dir.path.join("ENDPOINTS").exists(),
        "nothing was created next to the refused pin"
    );
}

#[test]
fn link_pins_are_created_updated_in_place_detached_and_pruned() {
    let fx = Fixture::new("links");
    let ns = Some(fx.netns.name.as_str());
    let first = fx
        .dp
        .attach(ns, &Interface::name("hA"), Hook::FromEndpoint)
        .unwrap();
    assert!(!first.replaced && first.pin.exists());
    assert_eq!(first.ifindex, fx.a.ifindex);
    // The same hook again (a restarted agent): the pinned link is updated.
    let again = fx
        .dp
        .attach(ns, &Interface::Index(fx.a.ifindex), Hook::FromEndpoint)
        .unwrap();
    assert!(again.replaced);
    assert_eq!(again.pin, first.pin);
    let egress = fx
        .dp
        .attach(ns, &Interface::name("hA"), Hook::ToEndpoint)
        .unwrap();
    assert_ne!(egress.pin, first.pin, "one link per hook");

    assert!(matches!(
        fx.dp
            .attach(ns, &Interface::name("nope0"), Hook::FromEndpoint),
        Err(Error::NoInterface { .. })
    ));
    assert!(matches!(
        fx.dp.attach(ns, &Interface::name("hA"), Hook::Deliver),
        Err(Error::NotAttachable { .. })
    ));

    assert!(fx
        .dp
        .detach(ns, &Interface::name("hA"), Hook::ToEndpoint)
        .unwrap());
    assert!(!egress.pin.exists());
    assert!(
        !fx.dp
            .detach(ns, &Interface::name("hA"), Hook::ToEndpoint)
            .unwrap(),
        "already detached"
    );

    // The interface goes away: its link is dead and its pin is pruned.
    assert_eq!(fx.dp.prune_stale_links().unwrap(), 0);
    ip(&fx.netns.name, "link del hA");
    assert_eq!(fx.dp.prune_stale_links().unwrap(), 1);
    assert!(!first.pin.exists());
}
