//! Random intents and random changes to them, as proptest strategies.
//!
//! Every intent is one that validation accepts (so that its YAML, see
//! [`crate::yaml`], loads back and a person can run `palisade explain` on
//! it): deny and kubernetes tenants, endpoints with label sets over a small
//! alphabet (so identities are shared), tenants reusing each other's
//! addresses, selectors of every operator, the tiers `default`, `t1` and
//! `t2` with deny or pass defaults and tied orders, policies with tied and
//! missing orders, allow/deny/log/pass rules, audit mode, peers of every
//! kind (selectors, overlapping CIDRs with excepts, world/host/all), port
//! ranges, ICMP type/code and protocol-less rules.
//!
//! Addresses are IPv4 only (the datapath drops IPv6 with a counted reason).
//! Endpoint `k` of a tenant has `10.0.0.(k+1)` and, optionally,
//! `10.1.2.(k+3)`, which lies inside several policy prefixes (and is
//! exactly `10.1.2.3/32` for `k = 0`): a CIDR peer must never match an
//! endpoint's address.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use palisade_model::{
    Action, Endpoint, Entity, Expr, Intent, Labels, Mode, Peer, Policy, PortMatch, Protocol, Rule,
    Selector, Tenant, TenantDefault, Tier, TierDefault, DEFAULT_TIER, DEFAULT_TIER_ORDER,
};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The node the tests enforce on.
pub const NODE: &str = "n1";
/// Another node: its endpoints are remote peers.
pub const REMOTE_NODE: &str = "n2";
/// Tenant names (the first always exists).
pub const TENANTS: [&str; 2] = ["t0", "t1"];
/// Tier names besides `default`.
pub const TIERS: [&str; 2] = ["t1", "t2"];
/// Label keys.
const KEYS: [&str; 3] = ["app", "tier", "env"];
/// Label values.
const VALUES: [&str; 3] = ["a", "b", "c"];
/// Policy prefixes: nested and overlapping, around the endpoint addresses,
/// the world addresses of [`ADDRESSES`] and the lab's world address.
pub const PREFIXES: [&str; 10] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.0.0.0/29",
    "10.0.0.4/30",
    "192.168.0.0/16",
    "198.51.100.0/24",
    "198.51.100.1/32",
];
/// Addresses flows go to or come from: inside, on the edge of and outside
/// the prefixes; some are endpoint addresses of one tenant (then they are
/// that endpoint) and world addresses of the other.
pub const ADDRESSES: [&str; 11] = [
    "10.0.0.2",
    "10.0.0.5",
    "10.0.0.9",
    "10.1.2.3",
    "10.1.2.4",
    "10.1.5.5",
    "10.2.0.1",
    "192.168.1.1",
    "8.8.8.8",
    "198.51.100.1",
    "198.51.100.7",
];
/// Ports rules name (`port` and `endPort`).
const PORTS: [u16; 7] = [1, 53, 80, 443, 1000, 8080, 65535];
/// ICMP types and codes rules name.
const ICMP_TYPES: [u8; 4] = [0, 3, 8, 13];
const ICMP_CODES: [u8; 3] = [0, 1, 4];
/// Most endpoints of one intent.
pub const MAX_ENDPOINTS: usize = 8;

/// What the generated intents may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Some endpoints run on [`REMOTE_NODE`] (peers the node checks the
    /// ingress side of, at the source).
    pub remote_endpoints: bool,
    /// The node every local endpoint runs on.
    pub node: &'static str,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            remote_endpoints: true,
            node: NODE,
        }
    }
}

/// The primary address of the `k`-th endpoint of a tenant.
pub fn primary_address(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, k as u8 + 1)
}

/// The second address of the `k`-th endpoint of a tenant.
pub fn secondary_address(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 2, k as u8 + 3)
}

fn key() -> impl Strategy<Value = String> {
    select(&KEYS[..]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    select(&VALUES[..]).prop_map(String::from)
}

fn value_set() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set(value(), 1..3)
}

/// A selector expression of every operator, nested up to two levels.
pub fn expr() -> impl Strategy<Value = Expr> {
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
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

/// A label set over the small alphabet (each key present with odds 0.7).
pub fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::vec(prop::option::weighted(0.7, select(&VALUES[..])), KEYS.len()).prop_map(
        |vs| {
            KEYS.iter()
                .zip(vs)
                .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                .collect()
        },
    )
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a valid prefix")
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => expr().prop_map(|e| Peer::Selector(Selector::new(e))),
        3 => (select(&PREFIXES[..]), prop::collection::vec(any::<Index>(), 0..3)).prop_map(|(c, xs)| {
            let cidr = net(c);
            // Validation wants every except strictly inside its cidr.
            let inside: Vec<IpNet> = PREFIXES
                .iter()
                .map(|p| net(p))
                .filter(|p| *p != cidr && cidr.contains(p))
                .collect();
            let mut except: Vec<IpNet> = if inside.is_empty() {
                Vec::new()
            } else {
                xs.iter().map(|i| *i.get(&inside)).collect()
            };
            except.sort();
            except.dedup();
            Peer::Cidr { cidr, except }
        }),
        2 => select(&[Entity::All, Entity::World, Entity::Host][..]).prop_map(Peer::Entity),
    ]
}

fn port_match() -> impl Strategy<Value = PortMatch> {
    let ported = select(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp][..]);
    let icmp = prop_oneof![4 => Just(Protocol::Icmp), 1 => Just(Protocol::Icmpv6)];
    prop_oneof![
        3 => (ported, prop::option::of(select(&PORTS[..])), prop::option::of(select(&PORTS[..]))).prop_map(|(protocol, port, end)| {
            // endPort only with a port, never below it (validation's rules).
            let end_port = match (port, end) {
                (Some(p), Some(e)) if e > p => Some(e),
                _ => None,
            };
            PortMatch::Ports { protocol, port, end_port }
        }),
        1 => (icmp, prop::option::of(select(&ICMP_TYPES[..])), prop::option::of(select(&ICMP_CODES[..]))).prop_map(|(protocol, t, c)| {
            // A code only with a type.
            PortMatch::Icmp { protocol, icmp_type: t, icmp_code: t.and(c) }
        }),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        select(&[Action::Allow, Action::Deny, Action::Log, Action::Pass][..]),
        // Native policies reject empty lists: absent means "any".
        prop::option::weighted(0.7, prop::collection::vec(peer(), 1..3)),
        prop::option::weighted(0.6, prop::collection::vec(port_match(), 1..3)),
    )
        .prop_map(|(action, peers, ports)| Rule {
            action,
            peers,
            ports,
        })
}

fn rules() -> impl Strategy<Value = Option<Vec<Rule>>> {
    prop::option::weighted(0.7, prop::collection::vec(rule(), 0..4))
}

/// A policy of tenant `t0` or `t1`, without its name (given by position).
pub fn policy() -> impl Strategy<Value = Policy> {
    (
        select(&TENANTS[..]),
        select(&[DEFAULT_TIER, TIERS[0], TIERS[1]][..]),
        prop::option::of(1i64..3),
        expr(),
        prop::bool::weighted(0.2),
        rules(),
        rules(),
    )
        .prop_map(
            |(tenant, tier, order, selector, audit, ingress, egress)| Policy {
                tenant: tenant.into(),
                namespace: None,
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

fn tier_default(pass: bool) -> TierDefault {
    if pass {
        TierDefault::Pass
    } else {
        TierDefault::Deny
    }
}

fn tenant_default(kubernetes: bool) -> TenantDefault {
    if kubernetes {
        TenantDefault::Kubernetes
    } else {
        TenantDefault::Deny
    }
}

/// One endpoint before it gets its name and addresses: tenant, labels,
/// remote, with a second address.
type EndpointSeed = (usize, Labels, bool, bool);

/// A random valid intent of `shape`.
pub fn intent(shape: Shape) -> impl Strategy<Value = Intent> {
    (
        prop::collection::vec(any::<bool>(), 1..=2),
        [any::<bool>(), any::<bool>(), any::<bool>()],
        [
            select(&[1i64, 5, DEFAULT_TIER_ORDER][..]),
            select(&[1i64, 5, DEFAULT_TIER_ORDER][..]),
        ],
        prop::collection::vec(
            (
                0..2usize,
                labels(),
                prop::bool::weighted(0.2),
                prop::bool::weighted(0.3),
            ),
            1..=MAX_ENDPOINTS,
        ),
        prop::collection::vec(policy(), 0..8),
    )
        .prop_map(
            move |(tenants, tier_pass, tier_orders, endpoints, policies)| {
                build(shape, &tenants, tier_pass, tier_orders, endpoints, policies)
            },
        )
}

fn build(
    shape: Shape,
    tenants: &[bool],
    tier_pass: [bool; 3],
    tier_orders: [i64; 2],
    endpoints: Vec<EndpointSeed>,
    policies: Vec<Policy>,
) -> Intent {
    let mut intent = Intent::default();
    for (i, kubernetes) in tenants.iter().enumerate() {
        intent.tenants.insert(
            TENANTS[i].into(),
            Tenant {
                name: TENANTS[i].into(),
                default_action: tenant_default(*kubernetes),
                vni: Some(100 + i as u32),
                cidrs: vec![],
            },
        );
    }
    let tiers = [
        (DEFAULT_TIER, DEFAULT_TIER_ORDER, tier_pass[0]),
        (TIERS[0], tier_orders[0], tier_pass[1]),
        (TIERS[1], tier_orders[1], tier_pass[2]),
    ];
    for (name, order, pass) in tiers {
        intent.tiers.insert(
            name.into(),
            Tier {
                name: name.into(),
                order,
                default_action: tier_default(pass),
            },
        );
    }
    let mut per_tenant = [0usize; 2];
    for (i, (tenant, labels, remote, second)) in endpoints.into_iter().enumerate() {
        let t = tenant % tenants.len();
        let k = per_tenant[t];
        per_tenant[t] += 1;
        let mut ips = vec![IpAddr::V4(primary_address(k))];
        if second {
            ips.push(IpAddr::V4(secondary_address(k)));
        }
        let node = if remote && shape.remote_endpoints {
            REMOTE_NODE
        } else {
            shape.node
        };
        intent.endpoints.push(Endpoint {
            tenant: TENANTS[t].into(),
            namespace: None,
            name: format!("e{i}"),
            labels,
            ips,
            mac: None,
            node: node.into(),
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
}

/// Sorts endpoints and policies as validation does.
pub fn sort(intent: &mut Intent) {
    intent.endpoints.sort_by_key(|e| e.full_ref());
    intent.policies.sort_by(|a, b| {
        (&a.tenant, &a.namespace, &a.name).cmp(&(&b.tenant, &b.namespace, &b.name))
    });
}

/// One policy change, as an operator makes them. Endpoints are relabelled
/// but never added or removed, so a flow's ends stay where they were.
#[derive(Debug, Clone)]
pub enum Change {
    /// A policy gets new contents (same tenant and name).
    ReplacePolicy(Index, Policy),
    /// A policy is deleted.
    RemovePolicy(Index),
    /// A policy is added.
    AddPolicy(Policy),
    /// An endpoint gets new labels (and so, maybe, a new identity).
    Relabel(Index, Labels),
    /// A tier's `defaultAction` (`true`: pass).
    TierDefault(Index, bool),
    /// A tenant's `defaultAction` (`true`: kubernetes).
    TenantDefault(Index, bool),
}

/// A random [`Change`].
pub fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => (any::<Index>(), policy()).prop_map(|(i, p)| Change::ReplacePolicy(i, p)),
        2 => any::<Index>().prop_map(Change::RemovePolicy),
        2 => policy().prop_map(Change::AddPolicy),
        2 => (any::<Index>(), labels()).prop_map(|(i, l)| Change::Relabel(i, l)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, p)| Change::TierDefault(i, p)),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, k)| Change::TenantDefault(i, k)),
    ]
}

/// `intent` after `change`, valid and sorted; a short description of what changed.
pub fn apply(intent: &Intent, change: &Change) -> (Intent, String) {
    let mut next = intent.clone();
    let described;
    match change.clone() {
        Change::ReplacePolicy(i, mut p) if !next.policies.is_empty() => {
            let at = i.index(next.policies.len());
            p.tenant = next.policies[at].tenant.clone();
            p.name = next.policies[at].name.clone();
            described = format!("policy {} replaced", p.full_ref());
            next.policies[at] = p;
        }
        Change::ReplacePolicy(_, mut p) | Change::AddPolicy(mut p) => {
            if !next.tenants.contains_key(&p.tenant) {
                p.tenant = TENANTS[0].into();
            }
            p.name = (0..)
                .map(|n| format!("x{n}"))
                .find(|name| !next.policies.iter().any(|q| &q.name == name))
                .expect("a free name");
            described = format!("policy {} added", p.full_ref());
            next.policies.push(p);
        }
        Change::RemovePolicy(i) => {
            if next.policies.is_empty() {
                described = "nothing (no policy to remove)".to_string();
            } else {
                let gone = next.policies.remove(i.index(next.policies.len()));
                described = format!("policy {} removed", gone.full_ref());
            }
        }
        Change::Relabel(i, labels) => {
            let at = i.index(next.endpoints.len());
            described = format!(
                "endpoint {} relabelled {:?} -> {labels:?}",
                next.endpoints[at].full_ref(),
                next.endpoints[at].labels
            );
            next.endpoints[at].labels = labels;
        }
        Change::TierDefault(i, pass) => {
            let name = i.get(&[DEFAULT_TIER, TIERS[0], TIERS[1]]).to_string();
            next.tiers.get_mut(&name).expect("tier").default_action = tier_default(pass);
            described = format!(
                "tier {name} defaultAction {pass_text}",
                pass_text = if pass { "pass" } else { "deny" }
            );
        }
        Change::TenantDefault(i, kubernetes) => {
            let names: Vec<String> = next.tenants.keys().cloned().collect();
            let name = i.get(&names).clone();
            next.tenants.get_mut(&name).expect("tenant").default_action =
                tenant_default(kubernetes);
            described = format!(
                "tenant {name} defaultAction {}",
                if kubernetes { "kubernetes" } else { "deny" }
            );
        }
    }
    sort(&mut next);
    (next, described)
}

/// Random values from one seed, for tests that build a few big things
/// (labs with agents) rather than many small ones: the same seed gives the
/// same intents and picks.
pub struct Sampler {
    runner: proptest::test_runner::TestRunner,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler seeded with `seed`.
    pub fn new(seed: u64) -> Sampler {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        Sampler {
            runner: TestRunner::new_with_rng(Config::default(), rng),
        }
    }

    fn draw<S: Strategy>(&mut self, strategy: S) -> S::Value {
        use proptest::strategy::ValueTree;
        strategy
            .new_tree(&mut self.runner)
            .expect("the strategies here never reject")
            .current()
    }

    /// A random intent of `shape`.
    pub fn intent(&mut self, shape: Shape) -> Intent {
        self.draw(intent(shape))
    }

    /// Up to `n` of `items`, in their order.
    pub fn choose<T: Clone + std::fmt::Debug + 'static>(
        &mut self,
        items: &[T],
        n: usize,
    ) -> Vec<T> {
        let n = n.min(items.len());
        self.draw(proptest::sample::subsequence(items.to_vec(), n))
    }
}
