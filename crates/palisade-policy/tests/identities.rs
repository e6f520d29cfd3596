//! Identity allocation: determinism, stability, the hold-back of freed
//! numbers, limits, CIDR identities and the ipcache.

mod common;

use common::*;
use palisade_model::{Intent, TenantDefault};
use palisade_policy::{
    FlowPeer, Identities, Identity, IdentityAllocator, IdentityError, IdentityKind, IpcacheKey,
};

fn intent_with(label_sets: &[&[(&str, &str)]]) -> Intent {
    let mut b = IntentBuilder::new().tenant("acme", TenantDefault::Deny);
    for (i, l) in label_sets.iter().enumerate() {
        b = b.endpoint("acme", &format!("e{i}"), l, &[&format!("10.0.0.{}", i + 1)]);
    }
    b.build()
}

fn id_of(ids: &Identities, pairs: &[(&str, &str)]) -> Identity {
    ids.labels("acme", &labels(pairs)).expect("identity")
}

#[test]
fn the_same_input_from_empty_gets_the_same_numbers_in_sorted_order() {
    let intent = intent_with(&[&[("app", "web")], &[("app", "db")], &[("app", "web")], &[]]);
    let a = IdentityAllocator::new().allocate(&intent).unwrap();
    let b = IdentityAllocator::new().allocate(&intent).unwrap();
    assert_eq!(a, b);
    let acme = a.tenant_index("acme").unwrap();
    assert_eq!(acme, 1);
    // Sorted: {} < {app=db} < {app=web}; endpoints with equal labels share one.
    assert_eq!(id_of(&a, &[]), Identity::new(acme, 256));
    assert_eq!(id_of(&a, &[("app", "db")]), Identity::new(acme, 257));
    assert_eq!(id_of(&a, &[("app", "web")]), Identity::new(acme, 258));
    assert_eq!(
        a.endpoint(ep(&intent, "acme", "e2")),
        Some(Identity::new(acme, 258))
    );
    assert_eq!(Identity::new(acme, 258).0, 1 << 16 | 258);
    assert_eq!(Identity::new(acme, 258).to_string(), "1:258");
    assert_eq!(
        a.info(Identity::new(acme, Identity::LOCAL_HOST))
            .unwrap()
            .kind,
        IdentityKind::Host
    );
    assert_eq!(a.tenant_name(acme), Some("acme"));
}

#[test]
fn identities_in_use_keep_their_numbers() {
    let mut alloc = IdentityAllocator::new();
    let first = alloc
        .allocate(&intent_with(&[&[("app", "web")], &[("app", "db")]]))
        .unwrap();
    // A label set that sorts first arrives: the others keep their numbers.
    let second = alloc
        .allocate(&intent_with(&[
            &[("app", "web")],
            &[("app", "db")],
            &[("app", "aaa")],
        ]))
        .unwrap();
    for pairs in [&[("app", "web")][..], &[("app", "db")][..]] {
        assert_eq!(id_of(&first, pairs), id_of(&second, pairs));
    }
    assert_eq!(id_of(&second, &[("app", "aaa")]).local(), 258);
}

#[test]
fn a_freed_number_is_held_back_for_one_whole_round() {
    let mut alloc = IdentityAllocator::new();
    let r1 = alloc
        .allocate(&intent_with(&[&[("app", "a")], &[("app", "b")]]))
        .unwrap();
    let b = id_of(&r1, &[("app", "b")]);
    assert_eq!(b.local(), 257);
    // Round 2: b is gone, c arrives: c must not get b's number.
    let r2 = alloc
        .allocate(&intent_with(&[&[("app", "a")], &[("app", "c")]]))
        .unwrap();
    assert_eq!(id_of(&r2, &[("app", "c")]).local(), 258);
    // Round 3: still held back.
    let r3 = alloc
        .allocate(&intent_with(&[
            &[("app", "a")],
            &[("app", "c")],
            &[("app", "d")],
        ]))
        .unwrap();
    assert_eq!(id_of(&r3, &[("app", "d")]).local(), 259);
    // Round 4: free again, the lowest free number goes to the next new set.
    let r4 = alloc
        .allocate(&intent_with(&[
            &[("app", "a")],
            &[("app", "c")],
            &[("app", "d")],
            &[("app", "e")],
        ]))
        .unwrap();
    assert_eq!(id_of(&r4, &[("app", "e")]).local(), 257);
    assert_eq!(alloc.round(), 4);
}

#[test]
fn a_label_set_that_comes_back_gets_its_number_back() {
    let mut alloc = IdentityAllocator::new();
    let r1 = alloc
        .allocate(&intent_with(&[&[("app", "a")], &[("app", "b")]]))
        .unwrap();
    alloc.allocate(&intent_with(&[&[("app", "a")]])).unwrap();
    let r3 = alloc
        .allocate(&intent_with(&[&[("app", "a")], &[("app", "b")]]))
        .unwrap();
    assert_eq!(id_of(&r1, &[("app", "b")]), id_of(&r3, &[("app", "b")]));
}

#[test]
fn tenants_keep_their_index_and_it_is_held_back_too() {
    let two = |a: &str, b: &str| {
        IntentBuilder::new()
            .tenant(a, TenantDefault::Deny)
            .tenant(b, TenantDefault::Kubernetes)
            .build()
    };
    let mut alloc = IdentityAllocator::new();
    let r1 = alloc.allocate(&two("acme", "beta")).unwrap();
    assert_eq!(
        (r1.tenant_index("acme"), r1.tenant_index("beta")),
        (Some(1), Some(2))
    );
    let r2 = alloc.allocate(&two("beta", "aaa")).unwrap();
    assert_eq!(r2.tenant_index("beta"), Some(2));
    assert_eq!(r2.tenant_index("aaa"), Some(3), "acme's index is held back");
    assert_eq!(r2.tenant_index("acme"), None);
    let r3 = alloc.allocate(&two("acme", "beta")).unwrap();
    assert_eq!(
        r3.tenant_index("acme"),
        Some(1),
        "acme comes back to its index"
    );
}

#[test]
fn a_tenant_that_returns_gets_its_identities_back() {
    let mut alloc = IdentityAllocator::new();
    let with = |present: bool| {
        let b = IntentBuilder::new().tenant("keep", TenantDefault::Deny);
        let b = if present {
            b.tenant("acme", TenantDefault::Deny)
                .endpoint("acme", "e0", &[("app", "z")], &["10.0.0.1"])
                .endpoint("acme", "e1", &[("app", "y")], &["10.0.0.2"])
        } else {
            b
        };
        b.build()
    };
    let r1 = alloc.allocate(&with(true)).unwrap();
    alloc.allocate(&with(false)).unwrap();
    let r3 = alloc.allocate(&with(true)).unwrap();
    assert_eq!(id_of(&r1, &[("app", "z")]), id_of(&r3, &[("app", "z")]));
}

#[test]
fn a_tenant_with_too_many_label_sets_fails_and_changes_nothing() {
    let max = Identity::MAX_PER_TENANT;
    assert_eq!(max, 65_280);
    let many = |n: usize, shift: usize| {
        let mut intent = IntentBuilder::new()
            .tenant("acme", TenantDefault::Deny)
            .build();
        let template = IntentBuilder::new()
            .tenant("acme", TenantDefault::Deny)
            .endpoint("acme", "e", &[], &[])
            .build()
            .endpoints
            .remove(0);
        for i in 0..n {
            let mut e = template.clone();
            e.name = format!("e{i}");
            e.labels = labels(&[("n", &(i + shift).to_string())]);
            intent.endpoints.push(e);
        }
        intent
    };
    let mut alloc = IdentityAllocator::new();
    let err = alloc.allocate(&many(max + 1, 0)).unwrap_err();
    assert_eq!(
        err,
        IdentityError::TenantFull {
            tenant: "acme".into(),
            needed: max + 1,
            limit: max,
            held_back: 0
        }
    );
    assert_eq!(
        err.to_string(),
        "tenant acme needs 65281 identities (one per distinct endpoint label set and policy CIDR \
         prefix) but only 65280 fit in a tenant's 16-bit identity space; reduce the number of \
         distinct label sets or CIDR prefixes, or split the tenant"
    );
    assert_eq!(
        alloc,
        IdentityAllocator::new(),
        "a failed round changes nothing"
    );

    // Exactly full works; replacing one set then fails while its number is held back.
    let full = alloc.allocate(&many(max, 0)).unwrap();
    assert_eq!(
        full.iter()
            .filter(|(_, i)| matches!(i.kind, IdentityKind::Labels(_)))
            .count(),
        max
    );
    let err = alloc.allocate(&many(max, 1)).unwrap_err();
    assert!(
        matches!(err, IdentityError::TenantFull { held_back: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("(1 more are freed but held back for one round before reuse)"),
        "{err}"
    );
}

#[test]
fn cidr_identities_map_addresses_by_longest_prefix_and_endpoints_win() {
    let intent = IntentBuilder::new()
        .tenant("acme", TenantDefault::Deny)
        .endpoint("acme", "web", &[("app", "web")], &["10.1.0.7", "fd00::7"])
        .policy(policy("acme", "out").egress(vec![allow().peers(vec![
            cidr("10.0.0.0/8", &["10.1.0.0/16"]),
            cidr("10.1.0.7/32", &[]),
        ])]))
        .build();
    let ids = IdentityAllocator::new().allocate(&intent).unwrap();
    let acme = ids.tenant_index("acme").unwrap();
    let cidr_id = |c: &str| {
        ids.iter()
            .find(|(_, i)| i.kind == IdentityKind::Cidr(net(c)))
            .map(|(id, _)| id)
            .unwrap_or_else(|| panic!("no identity for {c}"))
    };
    let world = Identity::new(acme, Identity::LOCAL_WORLD);
    let web = id_of(&ids, &[("app", "web")]);
    let at = |a: &str| ids.lookup_address(acme, ip(a)).unwrap();
    assert_eq!(at("10.2.3.4"), cidr_id("10.0.0.0/8"));
    assert_eq!(at("10.1.9.9"), cidr_id("10.1.0.0/16"));
    assert_eq!(at("8.8.8.8"), world);
    assert_eq!(at("2001:db8::1"), world);
    assert_eq!(
        at("10.1.0.7"),
        web,
        "the endpoint's /32 wins over the policy's /32"
    );
    assert_eq!(at("fd00::7"), web);
    assert_eq!(
        ids.resolve(&FlowPeer::Host { tenant: "acme" }),
        Some(Identity::new(acme, Identity::LOCAL_HOST))
    );
    let key = |p: &str| IpcacheKey {
        tenant_index: acme,
        prefix: net(p),
    };
    assert_eq!(ids.ipcache().get(&key("0.0.0.0/0")), Some(&world));
    assert_eq!(ids.ipcache().get(&key("::/0")), Some(&world));
    assert_eq!(ids.ipcache().get(&key("10.1.0.7/32")), Some(&web));
    // 10.0.0.0/8, 10.1.0.0/16, 10.1.0.7/32 (shadowed), 2 endpoint addresses, 2 default routes.
    assert_eq!(ids.ipcache().len(), 6);
}

#[test]
fn a_default_route_named_by_a_policy_is_its_own_identity() {
    let intent = IntentBuilder::new()
        .tenant("acme", TenantDefault::Deny)
        .endpoint("acme", "web", &[("app", "web")], &["10.0.0.1"])
        .policy(policy("acme", "out").egress(vec![
            allow().peers(vec![cidr("0.0.0.0/0", &["10.0.0.0/8"])]),
        ]))
        .build();
    let ids = IdentityAllocator::new().allocate(&intent).unwrap();
    let acme = ids.tenant_index("acme").unwrap();
    let v4 = ids.lookup_address(acme, ip("8.8.8.8")).unwrap();
    assert_eq!(
        ids.info(v4).unwrap().kind,
        IdentityKind::Cidr(net("0.0.0.0/0"))
    );
    // IPv6 addresses are not in 0.0.0.0/0 and stay world.
    assert_eq!(
        ids.lookup_address(acme, ip("2001:db8::1")).unwrap().local(),
        Identity::LOCAL_WORLD
    );
    // ... which the compiled tables get right (`explain` checks them).
    let c = Compiled::new(intent);
    let web = FlowPeer::Endpoint(ep(&c.intent, "acme", "web"));
    let to = |a: &'static str| {
        c.explain(&flow(
            web,
            FlowPeer::Address {
                tenant: "acme",
                ip: ip(a),
            },
            TCP,
            443,
        ))
        .verdict
    };
    use palisade_policy::Verdict::{Allow, Deny};
    assert_eq!(
        [to("8.8.8.8"), to("2001:db8::1"), to("10.9.9.9")],
        [Allow, Deny, Deny]
    );
}

#[test]
fn allocator_state_and_identities_round_trip_through_json() {
    let intent = IntentBuilder::new()
        .tenant("acme", TenantDefault::Deny)
        .endpoint("acme", "web", &[("app", "web")], &["10.0.0.1"])
        .policy(policy("acme", "out").egress(vec![allow().peers(vec![cidr("10.0.0.0/8", &[])])]))
        .build();
    let mut alloc = IdentityAllocator::new();
    let ids = alloc.allocate(&intent).unwrap();
    alloc.allocate(&intent_with(&[&[("app", "x")]])).unwrap();

    let json = serde_json::to_string(&alloc).unwrap();
    let mut restored: IdentityAllocator = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, alloc);
    assert_eq!(
        restored.allocate(&intent).unwrap(),
        alloc.allocate(&intent).unwrap()
    );

    let ids_json = serde_json::to_value(&ids).unwrap();
    assert_eq!(ids_json["tenants"][0]["name"], "acme");
    assert_eq!(ids_json["ipcache"][0]["prefix"], "0.0.0.0/0");
    let back: Identities = serde_json::from_value(ids_json).unwrap();
    assert_eq!(back, ids);
}
