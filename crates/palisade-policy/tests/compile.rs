//! The compiler's promises to the agent: the shape of the tables (lookup
//! contract, minimal entries), limits that fail loudly, stable cookies,
//! incremental updates that touch only what changed, and the diff.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use palisade_model::{Direction, Intent, TenantDefault};
use palisade_policy::{
    diff, lookup, Attribution, CompileError, Compiler, Identity, IdentityAllocator, Limits,
    PolicyKey, PolicyValue, Verdict, COOKIE_CROSS_TENANT, COOKIE_SELF_TRAFFIC,
};

/// acme: web-1 [app=web], web-2 [app=web, v=2], db-1 [app=db]; db accepts
/// tcp/5432 from app=web.
fn three_tier(db_port: u16) -> Intent {
    IntentBuilder::new()
        .tenant("acme", TenantDefault::Deny)
        .endpoint("acme", "web-1", &[("app", "web")], &["10.0.0.1"])
        .endpoint(
            "acme",
            "web-2",
            &[("app", "web"), ("v", "2")],
            &["10.0.0.2"],
        )
        .endpoint("acme", "db-1", &[("app", "db")], &["10.0.0.3"])
        .policy(policy("acme", "db-in").select(eq("app", "db")).ingress(
            vec![allow().peers(vec![sel_peer(eq("app", "web"))]).ports(vec![tcp(db_port)])],
        ))
        .policy(
            policy("acme", "web-out")
                .select(eq("app", "web"))
                .egress(vec![allow()]),
        )
        .build()
}

#[test]
fn a_single_allowed_port_costs_a_handful_of_entries() {
    let c = Compiled::new(three_tier(5432));
    let db = c.ids.labels("acme", &labels(&[("app", "db")])).unwrap();
    let web = c.ids.labels("acme", &labels(&[("app", "web")])).unwrap();
    let entries: Vec<(PolicyKey, PolicyValue)> = c.tables.table(db).unwrap().entries().collect();
    let keys: Vec<(Direction, Identity, u8, u16, u8)> = entries
        .iter()
        .map(|(k, _)| (k.direction, k.peer, k.proto, k.port, k.port_prefix_len))
        .collect();
    let web2 = c
        .ids
        .labels("acme", &labels(&[("app", "web"), ("v", "2")]))
        .unwrap();
    assert_eq!(
        keys,
        [
            // ingress: ANY peer denies everything; each web identity: deny,
            // tcp deny, tcp/5432 allow.
            (Direction::Ingress, Identity::ANY, 0, 0, 0),
            (Direction::Ingress, web, 0, 0, 0),
            (Direction::Ingress, web, 6, 0, 0),
            (Direction::Ingress, web, 6, 5432, 16),
            (Direction::Ingress, web2, 0, 0, 0),
            (Direction::Ingress, web2, 6, 0, 0),
            (Direction::Ingress, web2, 6, 5432, 16),
            // egress: one entry, the tenant's default deny.
            (Direction::Egress, Identity::ANY, 0, 0, 0),
        ]
    );
    let allow = entries[3].1;
    assert_eq!(allow.verdict, Verdict::Allow);
    assert_eq!(
        c.tables.attribution(allow.cookie).unwrap().to_string(),
        "default/db-in ingress rule 0 (allow)"
    );
    assert_eq!(c.tables.table(db).unwrap().len(), 8);
}

#[test]
fn every_table_keeps_the_lookup_contract() {
    let intent = IntentBuilder::new()
        .tenant("acme", TenantDefault::Kubernetes)
        .tenant("beta", TenantDefault::Deny)
        .endpoint("acme", "a", &[("app", "a")], &["10.0.0.1"])
        .endpoint("acme", "b", &[("app", "b")], &["10.0.0.2"])
        .endpoint("beta", "a", &[("app", "a")], &["10.0.0.1"])
        .policy(policy("acme", "p").select(eq("app", "a")).ingress(vec![
                deny()
                    .peers(vec![cidr("10.0.0.0/8", &["10.1.0.0/16"])])
                    .ports(vec![ports(
                        palisade_model::Protocol::Udp,
                        Some(1000),
                        Some(2000),
                    )]),
                allow()
                    .peers(vec![sel_peer(eq("app", "b"))])
                    .ports(vec![tcp(80), icmp(Some(8), None)]),
                log(),
            ]))
        .build();
    let c = Compiled::new(intent);
    // Tables for every endpoint identity of every tenant.
    let subjects: BTreeSet<Identity> = c.tables.tables().map(|t| t.subject()).collect();
    let endpoints: BTreeSet<Identity> = c
        .intent
        .endpoints
        .iter()
        .map(|e| c.ids.endpoint(e).unwrap())
        .collect();
    assert_eq!(subjects, endpoints);

    // (subject, direction, peer, proto) → port prefixes.
    let mut groups = BTreeMap::<_, Vec<(u16, u8)>>::new();
    for (k, v) in c.tables.entries() {
        assert!(v.cookie != 0);
        assert!(k.port_prefix_len <= 16);
        assert_eq!(
            k.port
                & !(u16::MAX
                    .checked_shl(16 - u32::from(k.port_prefix_len))
                    .unwrap_or(0)),
            0,
            "host bits clear: {k:?}"
        );
        groups
            .entry((k.subject, k.direction, k.peer, k.proto))
            .or_default()
            .push((k.port, k.port_prefix_len));
    }
    for (&(subject, direction, peer, proto), prefixes) in &groups {
        // Every (subject, dir, peer, proto) covers all ports with a /0 entry.
        assert!(
            prefixes.contains(&(0, 0)),
            "{subject} {direction} {peer} {proto}: {prefixes:?}"
        );
        // proto 0 entries are single /0 entries; a peer with entries has one.
        if proto == 0 {
            assert_eq!(prefixes, &[(0, 0)]);
        }
        assert!(groups.contains_key(&(subject, direction, peer, 0)));
        assert!(groups.contains_key(&(subject, direction, Identity::ANY, 0)));
    }
}

#[test]
fn entries_beyond_a_limit_fail_with_a_message_that_says_what_to_do() {
    let intent = three_tier(5432);
    let ids = IdentityAllocator::new().allocate(&intent).unwrap();
    let db = ids.labels("acme", &labels(&[("app", "db")])).unwrap();
    let mut c = Compiler::new(Limits {
        max_entries_per_identity: 7,
        max_entries: 1000,
    });
    let err = c.update(&intent, &ids).unwrap_err();
    assert_eq!(
        err,
        CompileError::TableFull {
            identity: db,
            tenant: "acme".into(),
            labels: labels(&[("app", "db")]),
            needed: 8,
            limit: 7
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the policy table of identity {db} (tenant acme, labels [app=db]) needs 8 entries, more \
             than the limit of 7 per identity; reduce the distinct peers or port ranges of the \
             policies that select these labels, or raise Limits::max_entries_per_identity"
        )
    );
    let mut c = Compiler::new(Limits {
        max_entries_per_identity: 100,
        max_entries: 10,
    });
    let err = c.update(&intent, &ids).unwrap_err();
    assert_eq!(
        err,
        CompileError::TooManyEntries {
            needed: 12,
            limit: 10
        }
    );
    assert!(err.to_string().contains("raise Limits::max_entries"));
    // Exactly at the limits is fine.
    let ok = Compiler::new(Limits {
        max_entries_per_identity: 8,
        max_entries: 12,
    })
    .update(&intent, &ids)
    .unwrap();
    assert_eq!(ok.len(), 12);
}

#[test]
fn identities_of_another_intent_are_refused_and_the_compiler_recovers() {
    let old = three_tier(5432);
    let mut new = old.clone();
    new.policies[0].ingress.as_mut().unwrap()[0].peers = Some(vec![cidr("192.168.0.0/16", &[])]);
    let old_ids = IdentityAllocator::new().allocate(&old).unwrap();
    let mut compiler = Compiler::default();
    let err = compiler.update(&new, &old_ids).unwrap_err();
    assert!(
        matches!(err, CompileError::StaleIdentities { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "identities do not match the intent: prefix 192.168.0.0/16 of policy acme:db-in has no \
         identity; allocate identities for this intent (IdentityAllocator::allocate) before \
         compiling it"
    );
    let new_ids = IdentityAllocator::new().allocate(&new).unwrap();
    assert!(compiler.update(&new, &new_ids).is_ok());

    let mut bad = old.clone();
    bad.policies[0].tier = "nope".into();
    let err = Compiler::default().update(&bad, &old_ids).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid intent: policy acme:db-in is in tier nope, which does not exist; load it through \
         palisade_model's validation first"
    );
}

#[test]
fn changing_one_policy_touches_only_the_identities_it_selects() {
    let before_intent = three_tier(5432);
    let after_intent = three_tier(5433);
    let mut alloc = IdentityAllocator::new();
    let mut compiler = Compiler::default();
    let ids = alloc.allocate(&before_intent).unwrap();
    let before = compiler.update(&before_intent, &ids).unwrap();
    let ids = alloc.allocate(&after_intent).unwrap();
    let after = compiler.update(&after_intent, &ids).unwrap();

    let db = ids.labels("acme", &labels(&[("app", "db")])).unwrap();
    let d = diff(&before, &after);
    let touched: BTreeSet<Identity> = d
        .upserts
        .iter()
        .map(|(k, _)| k.subject)
        .chain(d.deletes.iter().map(|k| k.subject))
        .collect();
    assert_eq!(touched, BTreeSet::from([db]));
    // Per web identity: 5432 deleted, 5433 added.
    assert_eq!((d.upserts.len(), d.deletes.len()), (2, 2));
    assert!(d.ipcache_upserts.is_empty() && d.ipcache_deletes.is_empty());
    assert!(diff(&after, &after).is_empty());

    // The same intent again: nothing recomputed, nothing to do.
    let again = compiler.update(&after_intent, &ids).unwrap();
    assert!(diff(&after, &again).is_empty());
    // Unchanged rules kept their cookies.
    assert_eq!(before.cookies(), after.cookies());

    let web1 = ids.endpoint(ep(&after_intent, "acme", "web-1")).unwrap();
    let v = lookup(&after, db, Direction::Ingress, web1, TCP, 5433).unwrap();
    assert_eq!(v.verdict, Verdict::Allow);
}

#[test]
fn cookies_are_deterministic_and_survive_unrelated_changes() {
    let intent = three_tier(5432);
    let ids = IdentityAllocator::new().allocate(&intent).unwrap();
    let a = Compiler::default().update(&intent, &ids).unwrap();
    let b = Compiler::default().update(&intent, &ids).unwrap();
    assert_eq!(a.cookies(), b.cookies());
    assert_eq!(
        a.attribution(COOKIE_SELF_TRAFFIC),
        Some(&Attribution::SelfTraffic)
    );
    assert_eq!(
        a.attribution(COOKIE_CROSS_TENANT),
        Some(&Attribution::CrossTenant)
    );

    // A policy added in front (by name) does not renumber the others.
    let mut compiler = Compiler::default();
    let before = compiler.update(&intent, &ids).unwrap();
    let mut more = intent.clone();
    more.policies.push(
        policy("acme", "aaa")
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(22)])])
            .0,
    );
    sort(&mut more);
    let after = compiler.update(&more, &ids).unwrap();
    for (cookie, attribution) in before.cookies() {
        assert_eq!(after.attribution(*cookie), Some(attribution));
    }
    assert_eq!(after.cookies().len(), before.cookies().len() + 1);
    // Removing it drops its cookie again.
    let back = compiler.update(&intent, &ids).unwrap();
    assert_eq!(back.cookies(), before.cookies());
}

#[test]
fn unchanged_tables_are_shared_not_copied() {
    let intent = three_tier(5432);
    let ids = IdentityAllocator::new().allocate(&intent).unwrap();
    let mut compiler = Compiler::default();
    let a = compiler.update(&intent, &ids).unwrap();
    let b = compiler.update(&intent, &ids).unwrap();
    for (x, y) in a.tables().zip(b.tables()) {
        assert!(std::ptr::eq(x, y), "table of {} was rebuilt", x.subject());
    }
}

#[test]
fn new_identities_reach_the_tables_that_name_them_as_peers() {
    let before_intent = three_tier(5432);
    let mut after_intent = before_intent.clone();
    after_intent
        .endpoints
        .push(ep(&before_intent, "acme", "web-1").clone());
    let new = after_intent.endpoints.last_mut().unwrap();
    new.name = "web-3".into();
    new.labels = labels(&[("app", "web"), ("v", "3")]);
    new.ips = vec![ip("10.0.0.9")];
    sort(&mut after_intent);

    let mut alloc = IdentityAllocator::new();
    let mut compiler = Compiler::default();
    let ids = alloc.allocate(&before_intent).unwrap();
    let before = compiler.update(&before_intent, &ids).unwrap();
    let ids = alloc.allocate(&after_intent).unwrap();
    let after = compiler.update(&after_intent, &ids).unwrap();

    let web3 = ids
        .labels("acme", &labels(&[("app", "web"), ("v", "3")]))
        .unwrap();
    let db = ids.labels("acme", &labels(&[("app", "db")])).unwrap();
    let d = diff(&before, &after);
    // db's ingress gains web-3 as a peer; web-3 gets its own table.
    assert!(d
        .upserts
        .iter()
        .any(|(k, _)| k.subject == db && k.peer == web3));
    assert!(d.upserts.iter().any(|(k, _)| k.subject == web3));
    assert!(d
        .ipcache_upserts
        .iter()
        .any(|(k, id)| k.prefix == net("10.0.0.9/32") && *id == web3));
    assert!(d.deletes.is_empty());
    let v = lookup(&after, db, Direction::Ingress, web3, TCP, 5432).unwrap();
    assert_eq!(v.verdict, Verdict::Allow);
}

#[test]
fn results_can_be_handed_to_other_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<palisade_policy::CompiledTables>();
    send_sync::<palisade_policy::Identities>();
    send_sync::<palisade_policy::Explanation>();
    send_sync::<Compiler>();
    send_sync::<IdentityAllocator>();
}
