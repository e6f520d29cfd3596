//! Builders for intents in tests (until then the model's loader is not
//! needed), and the check that compiled tables agree with the evaluator.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use palisade_model::{
    Action, Direction, Endpoint, Entity, Expr, Intent, Labels, Mode, Peer, Policy, PortMatch,
    Protocol, Rule, Selector, Tenant, TenantDefault, Tier, TierDefault, DEFAULT_TIER,
    DEFAULT_TIER_ORDER,
};
use palisade_policy::{
    evaluate, lookup, CompiledTables, Compiler, Explanation, Flow, FlowPeer, Identities,
    IdentityAllocator, PolicyValue, Verdict,
};

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `key == 'value'`.
pub fn eq(key: &str, value: &str) -> Selector {
    Selector::new(Expr::Eq(key.into(), value.into()))
}

/// `key in {values}`.
pub fn is_in(key: &str, values: &[&str]) -> Expr {
    Expr::In(
        key.into(),
        values
            .iter()
            .map(|v| v.to_string())
            .collect::<BTreeSet<_>>(),
    )
}

pub fn all() -> Selector {
    Selector::all()
}

pub fn net(text: &str) -> ipnet::IpNet {
    text.parse().unwrap()
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Builds an `Intent` as validation would leave it: tier `default` present,
/// endpoints and policies sorted.
pub struct IntentBuilder {
    intent: Intent,
}

impl IntentBuilder {
    pub fn new() -> IntentBuilder {
        let mut intent = Intent::default();
        intent.tiers.insert(
            DEFAULT_TIER.into(),
            Tier {
                name: DEFAULT_TIER.into(),
                order: DEFAULT_TIER_ORDER,
                default_action: TierDefault::Deny,
            },
        );
        IntentBuilder { intent }
    }

    pub fn tenant(mut self, name: &str, default_action: TenantDefault) -> Self {
        let vni = self.intent.tenants.len() as u32 + 100;
        self.intent.tenants.insert(
            name.into(),
            Tenant {
                name: name.into(),
                default_action,
                vni: Some(vni),
                cidrs: vec![],
            },
        );
        self
    }

    pub fn tier(mut self, name: &str, order: i64, default_action: TierDefault) -> Self {
        self.intent.tiers.insert(
            name.into(),
            Tier {
                name: name.into(),
                order,
                default_action,
            },
        );
        self
    }

    pub fn endpoint(
        mut self,
        tenant: &str,
        name: &str,
        pairs: &[(&str, &str)],
        ips: &[&str],
    ) -> Self {
        self.intent.endpoints.push(Endpoint {
            tenant: tenant.into(),
            namespace: None,
            name: name.into(),
            labels: labels(pairs),
            ips: ips.iter().map(|i| ip(i)).collect(),
            mac: None,
            node: "node-1".into(),
            interface: None,
            serve: vec![],
        });
        self
    }

    pub fn policy(mut self, p: PolicyBuilder) -> Self {
        self.intent.policies.push(p.0);
        self
    }

    pub fn build(mut self) -> Intent {
        sort(&mut self.intent);
        self.intent
    }
}

/// Sorts endpoints and policies as validation does.
pub fn sort(intent: &mut Intent) {
    intent.endpoints.sort_by_key(|e| e.full_ref());
    intent.policies.sort_by(|a, b| {
        (&a.tenant, &a.namespace, &a.name).cmp(&(&b.tenant, &b.namespace, &b.name))
    });
}

pub struct PolicyBuilder(pub Policy);

/// A policy in tier `default`, no order, enforce mode, selecting everything,
/// covering no direction yet.
pub fn policy(tenant: &str, name: &str) -> PolicyBuilder {
    PolicyBuilder(Policy {
        tenant: tenant.into(),
        namespace: None,
        name: name.into(),
        tier: DEFAULT_TIER.into(),
        order: None,
        selector: all(),
        mode: Mode::Enforce,
        ingress: None,
        egress: None,
    })
}

impl PolicyBuilder {
    pub fn select(mut self, s: Selector) -> Self {
        self.0.selector = s;
        self
    }
    pub fn tier(mut self, tier: &str) -> Self {
        self.0.tier = tier.into();
        self
    }
    pub fn order(mut self, order: i64) -> Self {
        self.0.order = Some(order);
        self
    }
    pub fn audit(mut self) -> Self {
        self.0.mode = Mode::Audit;
        self
    }
    pub fn ingress(mut self, rules: Vec<Rule>) -> Self {
        self.0.ingress = Some(rules);
        self
    }
    pub fn egress(mut self, rules: Vec<Rule>) -> Self {
        self.0.egress = Some(rules);
        self
    }
}

/// A rule with any peer and any port.
pub fn rule(action: Action) -> Rule {
    Rule {
        action,
        peers: None,
        ports: None,
    }
}

pub fn allow() -> Rule {
    rule(Action::Allow)
}
pub fn deny() -> Rule {
    rule(Action::Deny)
}
pub fn pass() -> Rule {
    rule(Action::Pass)
}
pub fn log() -> Rule {
    rule(Action::Log)
}

pub trait RuleExt {
    fn peers(self, peers: Vec<Peer>) -> Rule;
    fn ports(self, ports: Vec<PortMatch>) -> Rule;
}

impl RuleExt for Rule {
    fn peers(mut self, peers: Vec<Peer>) -> Rule {
        self.peers = Some(peers);
        self
    }
    fn ports(mut self, ports: Vec<PortMatch>) -> Rule {
        self.ports = Some(ports);
        self
    }
}

pub fn sel_peer(s: Selector) -> Peer {
    Peer::Selector(s)
}
pub fn cidr(c: &str, except: &[&str]) -> Peer {
    Peer::Cidr {
        cidr: net(c),
        except: except.iter().map(|x| net(x)).collect(),
    }
}
pub fn entity(e: Entity) -> Peer {
    Peer::Entity(e)
}

pub fn tcp(port: u16) -> PortMatch {
    PortMatch::Ports {
        protocol: Protocol::Tcp,
        port: Some(port),
        end_port: None,
    }
}
pub fn ports(protocol: Protocol, port: Option<u16>, end_port: Option<u16>) -> PortMatch {
    PortMatch::Ports {
        protocol,
        port,
        end_port,
    }
}
pub fn icmp(icmp_type: Option<u8>, icmp_code: Option<u8>) -> PortMatch {
    PortMatch::Icmp {
        protocol: Protocol::Icmp,
        icmp_type,
        icmp_code,
    }
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const GRE: u8 = 47;

/// The endpoint `tenant:name`.
pub fn ep<'a>(intent: &'a Intent, tenant: &str, name: &str) -> &'a Endpoint {
    intent
        .endpoints
        .iter()
        .find(|e| e.tenant == tenant && e.name == name)
        .unwrap_or_else(|| panic!("no endpoint {tenant}:{name}"))
}

pub fn flow<'a>(src: FlowPeer<'a>, dst: FlowPeer<'a>, protocol: u8, port: u16) -> Flow<'a> {
    Flow {
        src,
        dst,
        protocol,
        port,
    }
}

/// An intent with identities and compiled tables, checked against the
/// evaluator on every flow asked.
pub struct Compiled {
    pub intent: Intent,
    pub ids: Identities,
    pub tables: CompiledTables,
}

impl Compiled {
    pub fn new(intent: Intent) -> Compiled {
        let ids = IdentityAllocator::new()
            .allocate(&intent)
            .expect("identities");
        let tables = Compiler::default().update(&intent, &ids).expect("compile");
        Compiled {
            intent,
            ids,
            tables,
        }
    }

    /// Evaluates the flow and asserts that the tables give the same result
    /// on each side and for the whole flow.
    pub fn explain(&self, flow: &Flow<'_>) -> Explanation {
        let e = evaluate(&self.intent, flow);
        assert_tables_agree(&self.ids, &self.tables, flow, &e);
        e
    }
}

/// Asserts that looking up each side of `flow` in `tables` gives the
/// evaluator's verdict, attribution, log flag and audit result, and that the
/// datapath's combination of the sides gives the flow's verdict.
pub fn assert_tables_agree(
    ids: &Identities,
    tables: &CompiledTables,
    flow: &Flow<'_>,
    e: &Explanation,
) {
    let special = match (flow.src, flow.dst) {
        (FlowPeer::Endpoint(s), FlowPeer::Endpoint(d))
            if s.tenant == d.tenant && s.namespace == d.namespace && s.name == d.name =>
        {
            Some(Verdict::Allow)
        }
        _ if flow.src.tenant() != flow.dst.tenant() => Some(Verdict::Deny),
        _ => None,
    };
    let mut datapath = Verdict::Allow;
    if let Some(v) = special {
        datapath = v;
        assert!(e.special.is_some(), "{e}");
    } else {
        for (direction, subject, other, side) in [
            (Direction::Egress, flow.src, flow.dst, &e.egress),
            (Direction::Ingress, flow.dst, flow.src, &e.ingress),
        ] {
            let FlowPeer::Endpoint(_) = subject else {
                assert!(side.is_none());
                continue;
            };
            let side = side.as_ref().expect("endpoint side decided");
            let s = ids.resolve(&subject).expect("subject identity");
            let p = ids.resolve(&other).expect("peer identity");
            let v = lookup(tables, s, direction, p, flow.protocol, flow.port).expect("table");
            let ctx = || format!("{direction} of {s} peer {p}: tables {v:?}\n{e:#}");
            assert_eq!(v.verdict, side.verdict, "verdict, {}", ctx());
            assert_eq!(
                tables.attribution(v.cookie),
                Some(&side.attribution),
                "attribution, {}",
                ctx()
            );
            assert_eq!(v.logged(), !side.logs.is_empty(), "log flag, {}", ctx());
            assert_eq!(
                v.audit_denies(),
                side.audit.would_deny,
                "audit flag, {}",
                ctx()
            );
            if side.audit.would_deny {
                assert_eq!(
                    tables.attribution(v.audit_cookie),
                    Some(&side.audit.attribution),
                    "audit attribution, {}",
                    ctx()
                );
            } else {
                assert_eq!(v.audit_cookie, 0, "{}", ctx());
            }
            if v.verdict == Verdict::Deny {
                datapath = Verdict::Deny;
            }
        }
    }
    assert_eq!(datapath, e.verdict, "whole flow: {e:#}");
}

/// Entries keyed like the kernel's LPM map, looked up in the four steps of
/// the contract: a check that `lookup` and the flat entries agree.
pub struct FlatTables(pub BTreeMap<FlatKey, Vec<(u16, u8, PolicyValue)>>);

/// (subject, direction, peer, proto): the part of a key before the port.
pub type FlatKey = (u32, Direction, u32, u8);

impl FlatTables {
    pub fn new(tables: &CompiledTables) -> FlatTables {
        let mut map: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for (k, v) in tables.entries() {
            map.entry((k.subject.0, k.direction, k.peer.0, k.proto))
                .or_default()
                .push((k.port, k.port_prefix_len, v));
        }
        FlatTables(map)
    }

    fn lpm(&self, key: FlatKey, port: u16) -> Option<PolicyValue> {
        self.0
            .get(&key)?
            .iter()
            .filter(|(p, len, _)| *len == 0 || (port ^ p) >> (16 - len) == 0)
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, v)| *v)
    }

    pub fn lookup(
        &self,
        subject: u32,
        dir: Direction,
        peer: u32,
        proto: u8,
        port: u16,
    ) -> Option<PolicyValue> {
        self.lpm((subject, dir, peer, proto), port)
            .or_else(|| self.lpm((subject, dir, peer, 0), 0))
            .or_else(|| self.lpm((subject, dir, 0, proto), port))
            .or_else(|| self.lpm((subject, dir, 0, 0), 0))
    }
}

/// Every action, for loops in tests.
pub const ACTIONS: [Action; 4] = [Action::Allow, Action::Deny, Action::Log, Action::Pass];

/// `entity: all`, `world`, `host`.
pub const ENTITIES: [Entity; 3] = [Entity::All, Entity::World, Entity::Host];

pub fn tenant_default(kubernetes: bool) -> TenantDefault {
    if kubernetes {
        TenantDefault::Kubernetes
    } else {
        TenantDefault::Deny
    }
}
