//! Property tests: on random intents (deny and kubernetes tenants, label sets
//! over a small alphabet, selectors of every operator, tiers with deny and
//! pass defaults, orders with ties and none, allow/deny/log/pass, audit mode,
//! peers of every kind with overlapping CIDRs and excepts, port ranges, ICMP
//! type/code, protocol-less rules) the compiled tables must decide every
//! side of every flow exactly as the evaluator does (verdict, attribution,
//! log flag, audit result), and an incremental update must equal a full
//! compile.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;

use common::*;
use palisade_model::{
    Direction, Endpoint, Entity, Expr, Intent, Labels, Mode, Peer, Policy, PortMatch, Protocol,
    Rule, Selector, TenantDefault, TierDefault,
};
use palisade_policy::{
    diff, evaluate, lookup, Attribution, CompiledTables, Compiler, Flow, FlowPeer, Identities,
    IdentityAllocator, PolicyKey, Verdict,
};
use proptest::prelude::*;
use proptest::sample::select;

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const TENANTS: [&str; 2] = ["t0", "t1"];
const TIERS: [&str; 3] = ["default", "t1", "t2"];
/// Overlapping prefixes of both families, /0 included; 10.0.0.0/29 holds endpoint addresses.
const PREFIXES: [&str; 10] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "::/0",
    "fd00::/8",
    "fd00:1::/32",
    "10.0.0.0/29",
];
/// World addresses for flows: inside, on the edge of and outside the prefixes
/// (those that are endpoint addresses become endpoints).
const ADDRESSES: [&str; 12] = [
    "10.0.0.2",
    "10.0.0.7",
    "10.1.2.3",
    "10.1.2.4",
    "10.1.5.5",
    "10.2.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "fd00:1::1",
    "fd00:1::9",
    "fd00:2::1",
    "2001:db8::1",
];
const PORTS: [u16; 8] = [0, 1, 53, 80, 443, 1000, 8080, 65535];
/// Ports for flows: every rule boundary and its neighbours.
const PROBE_PORTS: [u16; 20] = [
    0, 1, 2, 52, 53, 54, 79, 80, 81, 442, 443, 444, 999, 1000, 1001, 8079, 8080, 8081, 65534, 65535,
];
const ICMP_TYPES: [u8; 3] = [0, 3, 8];
const ICMP_CODES: [u8; 3] = [0, 1, 4];
/// Protocols of flows: the five named ones, GRE and protocol 0.
const PROTOCOLS: [u8; 7] = [6, 17, 132, 1, 58, 47, 0];

fn key() -> impl Strategy<Value = String> {
    select(&KEYS[..]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    select(&VALUES[..]).prop_map(String::from)
}

fn value_set() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(value(), 1..3)
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        1 => Just(Expr::All),
        2 => key().prop_map(Expr::Has),
        4 => (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        2 => (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        2 => (key(), value_set()).prop_map(|(k, v)| Expr::In(k, v)),
        2 => (key(), value_set()).prop_map(|(k, v)| Expr::NotIn(k, v)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Expr::And),
            prop::collection::vec(inner, 0..3).prop_map(Expr::Or),
        ]
    })
}

fn labels_strategy() -> impl Strategy<Value = Labels> {
    prop::collection::vec(prop::option::weighted(0.7, select(&VALUES[..])), KEYS.len()).prop_map(
        |vs| {
            KEYS.iter()
                .zip(vs)
                .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                .collect()
        },
    )
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => expr().prop_map(|e| Peer::Selector(Selector::new(e))),
        3 => (select(&PREFIXES[..]), prop::collection::vec(select(&PREFIXES[..]), 0..3)).prop_map(|(c, x)| Peer::Cidr {
            cidr: net(c),
            except: x.into_iter().map(net).collect(),
        }),
        2 => select(&[Entity::All, Entity::World, Entity::Host][..]).prop_map(Peer::Entity),
    ]
}

fn port_match() -> impl Strategy<Value = PortMatch> {
    let ported = select(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp][..]);
    let icmp = select(&[Protocol::Icmp, Protocol::Icmpv6][..]);
    prop_oneof![
        3 => (ported, prop::option::of(select(&PORTS[..])), prop::option::of(select(&PORTS[..]))).prop_map(|(protocol, port, end)| {
            // endPort only with a port, never below it (validation's rules).
            let end_port = match (port, end) {
                (Some(p), Some(e)) => Some(e.max(p)),
                _ => None,
            };
            PortMatch::Ports { protocol, port, end_port }
        }),
        1 => (icmp, prop::option::of(select(&ICMP_TYPES[..])), prop::option::of(select(&ICMP_CODES[..]))).prop_map(|(protocol, t, c)| {
            PortMatch::Icmp { protocol, icmp_type: t, icmp_code: c }
        }),
    ]
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    (
        select(&ACTIONS[..]),
        prop::option::weighted(0.7, prop::collection::vec(peer(), 0..3)),
        prop::option::weighted(0.7, prop::collection::vec(port_match(), 0..3)),
    )
        .prop_map(|(action, peers, ports)| Rule {
            action,
            peers,
            ports,
        })
}

fn rules() -> impl Strategy<Value = Option<Vec<Rule>>> {
    prop::option::weighted(0.7, prop::collection::vec(rule_strategy(), 0..4))
}

/// A policy without its name (given by position).
fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        (
            select(&TENANTS[..]),
            prop::option::weighted(0.2, Just("ns")),
        ),
        select(&TIERS[..]),
        prop::option::of(1i64..3),
        expr(),
        prop::bool::weighted(0.2),
        rules(),
        rules(),
    )
        .prop_map(
            |((tenant, namespace), tier, order, selector, audit, ingress, egress)| Policy {
                tenant: tenant.into(),
                namespace: namespace.map(String::from),
                name: String::new(),
                tier: tier.into(),
                order,
                selector: Selector::new(selector),
                mode: if audit { Mode::Audit } else { Mode::Enforce },
                ingress,
                egress,
            },
        )
}

fn intent_strategy() -> impl Strategy<Value = Intent> {
    (
        prop::collection::vec(any::<bool>(), 1..=2),
        [any::<bool>(), any::<bool>(), any::<bool>()],
        [
            select(&[1i64, 5, 1_000_000][..]),
            select(&[1i64, 5, 1_000_000][..]),
        ],
        prop::collection::vec((0..2usize, labels_strategy(), any::<bool>()), 1..7),
        prop::collection::vec(policy_strategy(), 0..8),
    )
        .prop_map(|(tenants, tier_pass, tier_orders, endpoints, policies)| {
            let mut b = IntentBuilder::new();
            for (i, kubernetes) in tenants.iter().enumerate() {
                b = b.tenant(TENANTS[i], tenant_default(*kubernetes));
            }
            let default_of = |pass| {
                if pass {
                    TierDefault::Pass
                } else {
                    TierDefault::Deny
                }
            };
            b = b.tier("t1", tier_orders[0], default_of(tier_pass[1])).tier(
                "t2",
                tier_orders[1],
                default_of(tier_pass[2]),
            );
            let mut intent = b.build();
            intent.tiers.get_mut("default").unwrap().default_action = default_of(tier_pass[0]);
            for (i, (tenant, labels, v6)) in endpoints.into_iter().enumerate() {
                let tenant = TENANTS[tenant % tenants.len()];
                let mut ips: Vec<IpAddr> = vec![format!("10.0.0.{}", i + 1).parse().unwrap()];
                if v6 {
                    ips.push(format!("fd00:1::{}", i + 1).parse().unwrap());
                }
                intent.endpoints.push(Endpoint {
                    tenant: tenant.into(),
                    namespace: None,
                    name: format!("e{i}"),
                    labels,
                    ips,
                    mac: None,
                    node: "n".into(),
                    interface: None,
                    serve: vec![],
                });
            }
            for (i, mut p) in policies.into_iter().enumerate() {
                if !intent.tenants.contains_key(&p.tenant) {
                    p.tenant = TENANTS[0].into();
                }
                p.name = format!("p{i}");
                intent.policies.push(p);
            }
            sort(&mut intent);
            intent
        })
}

/// Every end a flow can have in this intent: endpoints, world addresses and
/// the host, of each tenant.
fn flow_ends(intent: &Intent) -> Vec<FlowPeer<'_>> {
    let mut ends: Vec<FlowPeer<'_>> = intent.endpoints.iter().map(FlowPeer::Endpoint).collect();
    for tenant in intent.tenants.keys() {
        for a in ADDRESSES {
            ends.push(FlowPeer::address(intent, tenant, ip(a)));
        }
        ends.push(FlowPeer::Host { tenant });
    }
    ends
}

/// Which end of a flow: mostly an endpoint (sides with a say), else any end.
fn end_choice() -> impl Strategy<Value = (bool, prop::sample::Index)> {
    (prop::bool::weighted(0.75), any::<prop::sample::Index>())
}

/// The end chosen by `end_choice`; endpoints come first in `ends`.
fn pick<'a>(
    ends: &[FlowPeer<'a>],
    endpoints: usize,
    (endpoint, i): (bool, prop::sample::Index),
) -> FlowPeer<'a> {
    if endpoint {
        ends[i.index(endpoints)]
    } else {
        *i.get(ends)
    }
}

/// (protocol, port) of a flow probe, from an index into all probes.
fn probe(i: usize) -> (u8, u16) {
    let ported = PROBE_PORTS.len();
    let icmp = ICMP_TYPES.len() * 4 * 3;
    let i = i % (3 * ported + 2 * icmp + 2);
    if i < 3 * ported {
        return (PROTOCOLS[i / ported], PROBE_PORTS[i % ported]);
    }
    let i = i - 3 * ported;
    if i < 2 * icmp {
        let proto = PROTOCOLS[3 + i / icmp];
        let i = i % icmp;
        // types and codes of the rules, and one beyond each.
        let t = [0u16, 3, 8, 9][i / 3 % 4];
        let c = [0u16, 1, 4][i % 3];
        return (proto, t << 8 | c);
    }
    (PROTOCOLS[5 + (i - 2 * icmp)], 0)
}

fn compile(intent: &Intent) -> (Identities, CompiledTables) {
    let ids = IdentityAllocator::new()
        .allocate(intent)
        .expect("identities");
    let tables = Compiler::default().update(intent, &ids).expect("compile");
    (ids, tables)
}

/// Entries with cookies replaced by what they stand for, so two compiles
/// with different cookie numbering compare.
type Resolved = Vec<(
    PolicyKey,
    Verdict,
    Option<Attribution>,
    u8,
    Option<Attribution>,
)>;

fn resolved(t: &CompiledTables) -> Resolved {
    t.entries()
        .map(|(k, v)| {
            let audit = (v.audit_cookie != 0)
                .then(|| t.attribution(v.audit_cookie).cloned())
                .flatten();
            (
                k,
                v.verdict,
                t.attribution(v.cookie).cloned(),
                v.flags,
                audit,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]


    /// Tables through `lookup` decide every side as the evaluator does, and
    /// the datapath's combination of the sides gives the flow's verdict.
    #[test]
    fn compiled_tables_agree_with_the_evaluator(
        intent in intent_strategy(),
        flows in prop::collection::vec((end_choice(), end_choice(), 0..1000usize), 64),
    ) {
        let (ids, tables) = compile(&intent);
        let ends = flow_ends(&intent);
        let endpoints = intent.endpoints.len();
        for (src, dst, p) in flows {
            let (protocol, port) = probe(p);
            let f = Flow { src: pick(&ends, endpoints, src), dst: pick(&ends, endpoints, dst), protocol, port };
            let e = evaluate(&intent, &f);
            assert_tables_agree(&ids, &tables, &f, &e);
        }
        // Every attribution in the tables is in the cookie table, never 0.
        for (_, v) in tables.entries() {
            prop_assert!(v.cookie != 0 && tables.attribution(v.cookie).is_some());
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// The flat entries, looked up in the four steps of the contract as the
    /// kernel's LPM maps would, give what `lookup` gives.
    #[test]
    fn flat_entries_follow_the_lookup_contract(intent in intent_strategy()) {
        let (ids, tables) = compile(&intent);
        let flat = FlatTables::new(&tables);
        let peers: Vec<_> = ids.iter().map(|(id, _)| id).collect();
        for t in tables.tables() {
            for dir in [Direction::Ingress, Direction::Egress] {
                for &peer in &peers {
                    for p in (0..200).step_by(7) {
                        let (proto, port) = probe(p);
                        let want = lookup(&tables, t.subject(), dir, peer, proto, port).copied();
                        prop_assert_eq!(flat.lookup(t.subject().0, dir, peer.0, proto, port), want);
                    }
                }
            }
        }
    }
}

/// One change between two intents.
#[derive(Debug, Clone)]
enum Change {
    ReplacePolicy(prop::sample::Index, Policy),
    RemovePolicy(prop::sample::Index),
    AddPolicy(Policy),
    Relabel(prop::sample::Index, Labels),
    AddEndpoint(Labels),
    TierDefault(bool),
    TenantDefault(bool),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => (any::<prop::sample::Index>(), policy_strategy()).prop_map(|(i, p)| Change::ReplacePolicy(i, p)),
        2 => any::<prop::sample::Index>().prop_map(Change::RemovePolicy),
        2 => policy_strategy().prop_map(Change::AddPolicy),
        2 => (any::<prop::sample::Index>(), labels_strategy()).prop_map(|(i, l)| Change::Relabel(i, l)),
        1 => labels_strategy().prop_map(Change::AddEndpoint),
        1 => any::<bool>().prop_map(Change::TierDefault),
        1 => any::<bool>().prop_map(Change::TenantDefault),
    ]
}

fn apply(intent: &Intent, change: &Change) -> Intent {
    let mut next = intent.clone();
    let fresh_policy = |next: &Intent, mut p: Policy| {
        if !next.tenants.contains_key(&p.tenant) {
            p.tenant = TENANTS[0].into();
        }
        p.name = (0..)
            .map(|n| format!("x{n}"))
            .find(|name| !next.policies.iter().any(|q| &q.name == name))
            .unwrap();
        p
    };
    match change.clone() {
        Change::ReplacePolicy(i, mut p) if !next.policies.is_empty() => {
            let at = i.index(next.policies.len());
            p.tenant = next.policies[at].tenant.clone();
            p.namespace = next.policies[at].namespace.clone();
            p.name = next.policies[at].name.clone();
            next.policies[at] = p;
        }
        Change::ReplacePolicy(_, p) | Change::AddPolicy(p) => {
            let p = fresh_policy(&next, p);
            next.policies.push(p);
        }
        Change::RemovePolicy(i) => {
            if !next.policies.is_empty() {
                let at = i.index(next.policies.len());
                next.policies.remove(at);
            }
        }
        Change::Relabel(i, labels) => {
            let at = i.index(next.endpoints.len());
            next.endpoints[at].labels = labels;
        }
        Change::AddEndpoint(labels) => {
            let n = next.endpoints.len();
            next.endpoints.push(Endpoint {
                tenant: TENANTS[0].into(),
                namespace: None,
                name: format!("added-{n}"),
                labels,
                ips: vec![format!("10.0.0.{}", 100 + n).parse().unwrap()],
                mac: None,
                node: "n".into(),
                interface: None,
                serve: vec![],
            });
        }
        Change::TierDefault(pass) => {
            next.tiers.get_mut("t1").unwrap().default_action = if pass {
                TierDefault::Pass
            } else {
                TierDefault::Deny
            };
        }
        Change::TenantDefault(kubernetes) => {
            next.tenants.get_mut(TENANTS[0]).unwrap().default_action = tenant_default(kubernetes);
        }
    }
    sort(&mut next);
    next
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// After a random change, an update of a compiler that compiled the old
    /// intent gives the same tables as a fresh compile; rules that survive
    /// keep their cookies; and the diff turns the old entries into the new.
    #[test]
    fn incremental_update_equals_full_compile(
        intent in intent_strategy(),
        changes in prop::collection::vec((change(), prop::bool::weighted(0.1)), 1..3),
    ) {
        let mut allocator = IdentityAllocator::new();
        let mut compiler = Compiler::default();
        let ids = allocator.allocate(&intent).unwrap();
        let mut before = compiler.update(&intent, &ids).unwrap();
        let mut current = intent;
        for (c, unsorted) in &changes {
            let mut next = apply(&current, c);
            if *unsorted {
                // Validation sorts policies; the compiler must not depend on it.
                next.policies.reverse();
            }
            let ids = allocator.allocate(&next).unwrap();
            let after = compiler.update(&next, &ids).unwrap();
            let full = Compiler::default().update(&next, &ids).unwrap();
            prop_assert_eq!(resolved(&after), resolved(&full), "after {:?}", c);
            prop_assert_eq!(after.len(), full.len());
            prop_assert_eq!(after.cookies().len(), full.cookies().len(), "no stale cookies");

            for (cookie, a) in after.cookies() {
                if let Some((&old, _)) = before.cookies().iter().find(|(_, b)| *b == a) {
                    prop_assert_eq!(old, *cookie, "{} changed its cookie", a);
                }
            }

            let d = diff(&before, &after);
            let mut entries: std::collections::BTreeMap<_, _> = before.entries().collect();
            for k in &d.deletes {
                prop_assert!(entries.remove(k).is_some());
            }
            for (k, v) in &d.upserts {
                entries.insert(*k, *v);
            }
            prop_assert!(entries.into_iter().eq(after.entries()));
            let mut ipcache = before.ipcache().clone();
            for k in &d.ipcache_deletes {
                ipcache.remove(k);
            }
            ipcache.extend(d.ipcache_upserts.iter().copied());
            prop_assert_eq!(&ipcache, after.ipcache());

            before = after;
            current = next;
        }
    }
}

#[test]
fn probes_cover_every_protocol_and_icmp_code() {
    let all: BTreeSet<(u8, u16)> = (0..1000).map(probe).collect();
    for proto in PROTOCOLS {
        assert!(all.iter().any(|(p, _)| *p == proto), "protocol {proto}");
    }
    assert!(all.contains(&(1, 3 << 8 | 4)) && all.contains(&(58, 9 << 8 | 1)));
    assert!(all.contains(&(17, 65535)) && all.contains(&(132, 8081)));
}

#[test]
fn a_hand_made_intent_with_every_feature_agrees_everywhere() {
    // Exhaustive over all ends and probes on one rich intent, as a
    // deterministic complement to the random cases.
    let intent = IntentBuilder::new()
        .tenant("t0", TenantDefault::Deny)
        .tier("t1", 1, TierDefault::Pass)
        .tier("t2", 1, TierDefault::Deny)
        .endpoint("t0", "e0", &[("app", "a")], &["10.0.0.1", "fd00:1::1"])
        .endpoint("t0", "e1", &[("app", "b"), ("env", "c")], &["10.0.0.2"])
        .endpoint("t0", "e2", &[("app", "b")], &["10.0.0.3"])
        .policy(
            policy("t0", "a")
                .tier("t1")
                .select(eq("app", "b"))
                .ingress(vec![
                    log().ports(vec![tcp(80)]),
                    pass().peers(vec![cidr("10.0.0.0/8", &["10.1.2.0/24"])]),
                    deny()
                        .peers(vec![sel_peer(eq("app", "a"))])
                        .ports(vec![icmp(Some(8), None)]),
                ]),
        )
        .policy(
            policy("t0", "b")
                .tier("t2")
                .order(1)
                .select(all())
                .audit()
                .ingress(vec![deny().ports(vec![tcp(443)])])
                .egress(vec![allow()]),
        )
        .policy(
            policy("t0", "c")
                .tier("t2")
                .order(1)
                .select(Selector::new(is_in("app", &["a", "b"])))
                .ingress(vec![
                    allow().peers(vec![entity(Entity::World)]).ports(vec![ports(
                        Protocol::Tcp,
                        Some(80),
                        Some(1000),
                    )]),
                    allow().peers(vec![entity(Entity::Host), sel_peer(all())]),
                ]),
        )
        .build();
    let (ids, tables) = compile(&intent);
    let ends = flow_ends(&intent);
    for &src in &ends {
        for &dst in &ends {
            for p in 0..(3 * PROBE_PORTS.len() + 2 * 36 + 2) {
                let (protocol, port) = probe(p);
                let f = Flow {
                    src,
                    dst,
                    protocol,
                    port,
                };
                assert_tables_agree(&ids, &tables, &f, &evaluate(&intent, &f));
            }
        }
    }
}
