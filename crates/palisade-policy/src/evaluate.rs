//! The reference semantics: decides one flow straight from the [`Intent`]
//! with plain loops over tiers, policies and rules (DESIGN.md "Verdict
//! semantics"). It is written to be read, not to be fast; the compiler must
//! agree with it on every flow, and the datapath is tested against it.
//!
//! Clarifications of the contract that this file fixes:
//! - A rule's `peers` or `ports` that is absent *or empty* matches anything
//!   (as in Kubernetes, where `from: []` and `ports: []` select everything).
//! - `log` rules are recorded for every policy of every step consulted, up to
//!   that policy's own answer; the step that decides is consulted whole.
//! - Non-endpoint peers (addresses, host) belong to a tenant; a flow whose two
//!   ends name different tenants is cross-tenant and denied.

use std::net::IpAddr;

use palisade_model::{
    Action, Direction, Endpoint, Entity, Intent, Mode, Peer, Policy, PortMatch, Rule,
    TenantDefault, TierDefault,
};

use crate::explain::{
    Attribution, AuditView, Explanation, FlowEnd, PolicyTrace, RuleTrace, SideExplanation,
    StepTrace, TierOutcome, TierTrace, Verdict,
};

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FlowPeer<'a> {
    /// A palisade endpoint.
    Endpoint(&'a Endpoint),
    /// An address of a tenant's address space that is not one of its
    /// endpoints (use [`FlowPeer::address`] to tell them apart).
    Address {
        /// The tenant whose address space it is in.
        tenant: &'a str,
        /// The address.
        ip: IpAddr,
    },
    /// The node (host) on the tenant's side of the flow.
    Host {
        /// The tenant.
        tenant: &'a str,
    },
}

impl<'a> FlowPeer<'a> {
    /// The endpoint of `tenant` that owns `ip`, or else the address as a
    /// non-endpoint peer.
    pub fn address(intent: &'a Intent, tenant: &'a str, ip: IpAddr) -> FlowPeer<'a> {
        intent
            .endpoints
            .iter()
            .find(|e| e.tenant == tenant && e.ips.contains(&ip))
            .map_or(FlowPeer::Address { tenant, ip }, FlowPeer::Endpoint)
    }

    /// The tenant this end belongs to.
    pub fn tenant(&self) -> &'a str {
        match *self {
            FlowPeer::Endpoint(e) => &e.tenant,
            FlowPeer::Address { tenant, .. } | FlowPeer::Host { tenant } => tenant,
        }
    }

    fn describe(&self) -> FlowEnd {
        match *self {
            FlowPeer::Endpoint(e) => FlowEnd::Endpoint {
                tenant: e.tenant.clone(),
                name: e.qualified_name(),
                labels: e.labels.clone(),
            },
            FlowPeer::Address { tenant, ip } => FlowEnd::Address {
                tenant: tenant.to_string(),
                ip,
            },
            FlowPeer::Host { tenant } => FlowEnd::Host {
                tenant: tenant.to_string(),
            },
        }
    }
}

/// A flow to decide: source, destination, IP protocol number and destination
/// port (for ICMP and ICMPv6: `type << 8 | code`; other protocols without
/// ports: any value, only rules without `ports` can match them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flow<'a> {
    /// Where the flow comes from.
    pub src: FlowPeer<'a>,
    /// Where it goes.
    pub dst: FlowPeer<'a>,
    /// IP protocol number (6 = TCP, 17 = UDP, 132 = SCTP, 1 = ICMP, 58 = ICMPv6, ...).
    pub protocol: u8,
    /// Destination port, or ICMP `type << 8 | code`.
    pub port: u16,
}

/// Decides a flow and explains the decision: special cases first (same
/// endpoint → allow, different tenants → deny), then the egress side of the
/// source and the ingress side of the destination (each only if that end is
/// an endpoint); the flow is allowed when every side decided allows.
pub fn evaluate(intent: &Intent, flow: &Flow<'_>) -> Explanation {
    let mut explanation = Explanation {
        verdict: Verdict::Allow,
        src: flow.src.describe(),
        dst: flow.dst.describe(),
        protocol: flow.protocol,
        port: flow.port,
        special: None,
        egress: None,
        ingress: None,
    };
    if let (FlowPeer::Endpoint(s), FlowPeer::Endpoint(d)) = (flow.src, flow.dst) {
        if s.tenant == d.tenant && s.namespace == d.namespace && s.name == d.name {
            explanation.special = Some(Attribution::SelfTraffic);
            return explanation;
        }
    }
    if flow.src.tenant() != flow.dst.tenant() {
        explanation.verdict = Verdict::Deny;
        explanation.special = Some(Attribution::CrossTenant);
        return explanation;
    }
    if let FlowPeer::Endpoint(s) = flow.src {
        explanation.egress = Some(decide_side(intent, s, Direction::Egress, &flow.dst, flow));
    }
    if let FlowPeer::Endpoint(d) = flow.dst {
        explanation.ingress = Some(decide_side(intent, d, Direction::Ingress, &flow.src, flow));
    }
    if explanation.sides().any(|s| s.verdict == Verdict::Deny) {
        explanation.verdict = Verdict::Deny;
    }
    explanation
}

/// Which policies count: the enforced verdict ignores `mode: audit` policies;
/// the audit view treats them as enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Enforced,
    Audit,
}

/// The result of walking the tiers for one side in one view.
struct Walk {
    verdict: Verdict,
    attribution: Attribution,
    logs: Vec<Attribution>,
    tiers: Vec<TierTrace>,
}

/// One side of a flow: the policy of `endpoint` for `direction`, with `peer`
/// on the other end.
fn decide_side(
    intent: &Intent,
    endpoint: &Endpoint,
    direction: Direction,
    peer: &FlowPeer<'_>,
    flow: &Flow<'_>,
) -> SideExplanation {
    let enforced = walk(intent, endpoint, direction, peer, flow, View::Enforced);
    let audit = walk(intent, endpoint, direction, peer, flow, View::Audit);
    SideExplanation {
        direction,
        endpoint: endpoint.full_ref(),
        labels: endpoint.labels.clone(),
        verdict: enforced.verdict,
        attribution: enforced.attribution,
        logs: enforced.logs,
        audit: AuditView {
            verdict: audit.verdict,
            attribution: audit.attribution,
            would_deny: enforced.verdict == Verdict::Allow && audit.verdict == Verdict::Deny,
        },
        tiers: enforced.tiers,
    }
}

/// Tiers in order; in each, the selecting policies in steps of equal order;
/// in each step every policy's first matching allow/deny/pass rule, the
/// safest of which decides; then tier defaults, then the tenant's default.
fn walk(
    intent: &Intent,
    endpoint: &Endpoint,
    direction: Direction,
    peer: &FlowPeer<'_>,
    flow: &Flow<'_>,
    view: View,
) -> Walk {
    let mut tiers: Vec<_> = intent.tiers.values().collect();
    tiers.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));

    let mut logs = Vec::new();
    let mut trace = Vec::new();
    let mut any_selected = false;
    let decided = |verdict, attribution, logs, tiers| Walk {
        verdict,
        attribution,
        logs,
        tiers,
    };

    for tier in tiers {
        let mut policies: Vec<&Policy> = intent
            .policies
            .iter()
            .filter(|p| {
                p.tenant == endpoint.tenant
                    && p.tier == tier.name
                    && (view == View::Audit || p.mode == Mode::Enforce)
                    && p.rules(direction).is_some()
                    && p.selector.matches(&endpoint.labels)
            })
            .collect();
        if policies.is_empty() {
            continue;
        }
        any_selected = true;
        // Ascending order, no order last, then by name.
        policies.sort_by_cached_key(|p| (p.order.is_none(), p.order, p.qualified_name()));

        let mut steps = Vec::new();
        let mut outcome = None;
        for step in policies.chunk_by(|a, b| a.order == b.order) {
            let mut step_trace = StepTrace {
                order: step[0].order,
                policies: Vec::new(),
                answer: None,
            };
            // (rank, attribution): deny 0 beats allow 1 beats pass 2; on a
            // tie the first policy in name order keeps it.
            let mut best: Option<(u8, Attribution)> = None;
            for policy in step {
                let mut policy_trace = PolicyTrace {
                    policy: policy.qualified_name(),
                    rules: Vec::new(),
                    answer: None,
                };
                let rules = policy.rules(direction).unwrap_or_default();
                for (index, rule) in rules.iter().enumerate() {
                    let matched = rule_matches(rule, endpoint, peer, flow);
                    policy_trace.rules.push(RuleTrace {
                        index,
                        action: rule.action,
                        matched,
                    });
                    if !matched {
                        continue;
                    }
                    let attribution = Attribution::Rule {
                        tier: tier.name.clone(),
                        tenant: policy.tenant.clone(),
                        policy: policy.qualified_name(),
                        direction,
                        index,
                        action: rule.action,
                    };
                    let rank = match rule.action {
                        Action::Log => {
                            logs.push(attribution);
                            continue;
                        }
                        Action::Deny => 0,
                        Action::Allow => 1,
                        Action::Pass => 2,
                    };
                    policy_trace.answer = Some(index);
                    if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                        best = Some((rank, attribution));
                    }
                    break;
                }
                step_trace.policies.push(policy_trace);
            }
            step_trace.answer = best.as_ref().map(|(_, a)| a.clone());
            steps.push(step_trace);
            if let Some((rank, attribution)) = best {
                outcome = Some((rank, attribution));
                break;
            }
        }

        let (tier_outcome, verdict) = match outcome {
            Some((0, a)) => (TierOutcome::Denied, Some((Verdict::Deny, a))),
            Some((1, a)) => (TierOutcome::Allowed, Some((Verdict::Allow, a))),
            Some(_) => (TierOutcome::Passed, None),
            None => match tier.default_action {
                TierDefault::Deny => (
                    TierOutcome::DefaultDeny,
                    Some((
                        Verdict::Deny,
                        Attribution::TierDefault {
                            tier: tier.name.clone(),
                            tenant: endpoint.tenant.clone(),
                            direction,
                        },
                    )),
                ),
                TierDefault::Pass => (TierOutcome::DefaultPass, None),
            },
        };
        trace.push(TierTrace {
            tier: tier.name.clone(),
            steps,
            outcome: tier_outcome,
        });
        if let Some((verdict, attribution)) = verdict {
            return decided(verdict, attribution, logs, trace);
        }
    }

    let tenant = endpoint.tenant.clone();
    let default = intent
        .tenants
        .get(&endpoint.tenant)
        .map(|t| t.default_action)
        .unwrap_or_default();
    let (verdict, attribution) = match default {
        TenantDefault::Kubernetes if !any_selected => (
            Verdict::Allow,
            Attribution::NotIsolated { tenant, direction },
        ),
        _ => (
            Verdict::Deny,
            Attribution::TenantDefault { tenant, direction },
        ),
    };
    decided(verdict, attribution, logs, trace)
}

/// A rule matches when one of its peers matches and one of its ports does
/// (absent or empty lists match anything).
fn rule_matches(rule: &Rule, endpoint: &Endpoint, peer: &FlowPeer<'_>, flow: &Flow<'_>) -> bool {
    let peers_match = match rule.peers.as_deref() {
        None | Some([]) => true,
        Some(peers) => peers.iter().any(|p| peer_matches(p, endpoint, peer)),
    };
    let ports_match = match rule.ports.as_deref() {
        None | Some([]) => true,
        Some(ports) => ports
            .iter()
            .any(|m| port_matches(m, flow.protocol, flow.port)),
    };
    peers_match && ports_match
}

/// Whether one peer of a rule of `endpoint`'s policy matches the other end.
fn peer_matches(peer: &Peer, endpoint: &Endpoint, other: &FlowPeer<'_>) -> bool {
    match (peer, other) {
        (Peer::Entity(Entity::All), _) => true,
        (Peer::Selector(s), FlowPeer::Endpoint(e)) => {
            e.tenant == endpoint.tenant && s.matches(&e.labels)
        }
        (Peer::Cidr { cidr, except }, FlowPeer::Address { ip, .. }) => {
            cidr.contains(ip) && !except.iter().any(|x| x.contains(ip))
        }
        (Peer::Entity(Entity::World), FlowPeer::Address { .. }) => true,
        (Peer::Entity(Entity::Host), FlowPeer::Host { .. }) => true,
        _ => false,
    }
}

/// Whether a port match covers (protocol, port). Only the five named
/// protocols can match, so other protocols are left to rules without ports.
fn port_matches(m: &PortMatch, protocol: u8, port: u16) -> bool {
    match *m {
        PortMatch::Ports {
            protocol: p,
            port: first,
            end_port,
        } => {
            p.number() == protocol
                && match (first, end_port) {
                    (None, _) => true,
                    (Some(first), None) => port == first,
                    (Some(first), Some(last)) => (first..=last).contains(&port),
                }
        }
        PortMatch::Icmp {
            protocol: p,
            icmp_type,
            icmp_code,
        } => {
            p.number() == protocol
                && icmp_type.is_none_or(|t| u16::from(t) == port >> 8)
                && icmp_code.is_none_or(|c| u16::from(c) == port & 0xff)
        }
    }
}
