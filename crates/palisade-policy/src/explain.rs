//! What a verdict is and why: [`Verdict`], [`Attribution`] (the rule or
//! default that decided) and [`Explanation`] (one flow, both sides, with the
//! steps consulted), rendered as text for people (`Display`, `{:#}` adds the
//! steps) and as JSON through serde.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use palisade_model::{Action, Direction, Labels, Protocol};
use serde::{Deserialize, Serialize};

/// The outcome for a flow or one side of it. JSON: `"allow"` / `"deny"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The flow may pass.
    Allow,
    /// The flow is dropped.
    Deny,
}

impl fmt::Display for Verdict {
    /// `ALLOW` or `DENY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
        })
    }
}

/// What decided a verdict. Every verdict palisade shows carries one; the
/// datapath carries it as a cookie (see `CompiledTables::attribution`).
///
/// JSON: an object with `"kind"` (`rule`, `tier_default`, `tenant_default`,
/// `not_isolated`, `self_traffic`, `cross_tenant`) and the variant's fields
/// under their names below.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attribution {
    /// A rule of a policy: `index` is its 0-based position in the policy's
    /// rules of `direction`.
    Rule {
        /// The policy's tier.
        tier: String,
        /// The policy's tenant.
        tenant: String,
        /// The policy's name inside its tenant (`namespace/name` or `name`).
        policy: String,
        /// Which rule list of the policy.
        direction: Direction,
        /// Position in that list, from 0.
        index: usize,
        /// The rule's action.
        action: Action,
    },
    /// The `defaultAction: deny` of a tier in which a policy selected the
    /// endpoint and no rule decided.
    TierDefault {
        /// The tier.
        tier: String,
        /// The endpoint's tenant.
        tenant: String,
        /// The side decided.
        direction: Direction,
    },
    /// The tenant's default deny: no tier decided (for a `kubernetes` tenant:
    /// a policy selected the endpoint for this direction, isolating it).
    TenantDefault {
        /// The tenant.
        tenant: String,
        /// The side decided.
        direction: Direction,
    },
    /// A `kubernetes` tenant's endpoint that no policy selects for this
    /// direction: not isolated, so allowed.
    NotIsolated {
        /// The tenant.
        tenant: String,
        /// The side decided.
        direction: Direction,
    },
    /// Source and destination are the same endpoint: traffic to oneself never
    /// leaves the workload.
    SelfTraffic,
    /// Source and destination are in different tenants: tenants are isolated.
    CrossTenant,
}

impl Attribution {
    /// Position of the variant in the sort order.
    fn rank(&self) -> u8 {
        match self {
            Attribution::Rule { .. } => 0,
            Attribution::TierDefault { .. } => 1,
            Attribution::TenantDefault { .. } => 2,
            Attribution::NotIsolated { .. } => 3,
            Attribution::SelfTraffic => 4,
            Attribution::CrossTenant => 5,
        }
    }

    /// Fields in comparison order (strings, direction, index, action).
    fn sort_key(&self) -> (u8, &str, &str, &str, Option<Direction>, usize, &'static str) {
        match self {
            Attribution::Rule {
                tier,
                tenant,
                policy,
                direction,
                index,
                action,
            } => (
                self.rank(),
                tenant,
                tier,
                policy,
                Some(*direction),
                *index,
                action.as_str(),
            ),
            Attribution::TierDefault {
                tier,
                tenant,
                direction,
            } => (self.rank(), tenant, tier, "", Some(*direction), 0, ""),
            Attribution::TenantDefault { tenant, direction }
            | Attribution::NotIsolated { tenant, direction } => {
                (self.rank(), tenant, "", "", Some(*direction), 0, "")
            }
            Attribution::SelfTraffic | Attribution::CrossTenant => {
                (self.rank(), "", "", "", None, 0, "")
            }
        }
    }
}

impl PartialOrd for Attribution {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Attribution {
    /// Rules first (by tenant, tier, policy, direction, index), then defaults.
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl fmt::Display for Attribution {
    /// Short form without the endpoint, e.g. `security/db-ingress ingress rule 0 (deny)`,
    /// `default deny of tier security (egress)`, `default deny of tenant acme (ingress)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribution::Rule { action, .. } => {
                write_rule_ref(f, self)?;
                write!(f, " ({})", action.as_str())
            }
            Attribution::TierDefault {
                tier, direction, ..
            } => write!(f, "default deny of tier {tier} ({direction})"),
            Attribution::TenantDefault { tenant, direction } => {
                write!(f, "default deny of tenant {tenant} ({direction})")
            }
            Attribution::NotIsolated { tenant, direction } => {
                write!(f, "not isolated in tenant {tenant} ({direction})")
            }
            Attribution::SelfTraffic => f.write_str("traffic to oneself never leaves the workload"),
            Attribution::CrossTenant => f.write_str("tenants are isolated"),
        }
    }
}

/// `tier/policy direction rule index` of a rule attribution.
fn write_rule_ref(f: &mut fmt::Formatter<'_>, a: &Attribution) -> fmt::Result {
    if let Attribution::Rule {
        tier,
        policy,
        direction,
        index,
        ..
    } = a
    {
        write!(f, "{tier}/{policy} {direction} rule {index}")
    } else {
        write!(f, "{a}")
    }
}

/// One end of a flow as the explanation names it.
///
/// JSON: `{"kind": "endpoint", "tenant", "name", "labels"}`,
/// `{"kind": "address", "tenant", "ip"}` or `{"kind": "host", "tenant"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FlowEnd {
    /// A palisade endpoint.
    Endpoint {
        /// Its tenant.
        tenant: String,
        /// `namespace/name` or `name`.
        name: String,
        /// Its labels.
        labels: Labels,
    },
    /// An address that is not an endpoint.
    Address {
        /// The tenant whose address space it is in.
        tenant: String,
        /// The address.
        ip: IpAddr,
    },
    /// The node.
    Host {
        /// The tenant on whose side the host is.
        tenant: String,
    },
}

impl FlowEnd {
    /// The tenant of this end.
    pub fn tenant(&self) -> &str {
        match self {
            FlowEnd::Endpoint { tenant, .. }
            | FlowEnd::Address { tenant, .. }
            | FlowEnd::Host { tenant } => tenant,
        }
    }
}

impl fmt::Display for FlowEnd {
    /// `tenant:name`, `tenant:ip` or `tenant:host`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowEnd::Endpoint { tenant, name, .. } => write!(f, "{tenant}:{name}"),
            FlowEnd::Address { tenant, ip } => write!(f, "{tenant}:{ip}"),
            FlowEnd::Host { tenant } => write!(f, "{tenant}:host"),
        }
    }
}

/// The verdict a side would get with `mode: audit` policies enforced.
///
/// JSON: `{"verdict", "attribution", "would_deny"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditView {
    /// Verdict with audit policies treated as enforced.
    pub verdict: Verdict,
    /// What decided it.
    pub attribution: Attribution,
    /// The audit view denies what the enforced verdict allows ("audit: would deny").
    pub would_deny: bool,
}

/// How a tier ended for one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierOutcome {
    /// A rule allowed.
    Allowed,
    /// A rule denied.
    Denied,
    /// A `pass` rule answered: the rest of the tier (and its default) was skipped.
    Passed,
    /// No rule decided; the tier's default is deny.
    DefaultDeny,
    /// No rule decided; the tier's default passes to the next tier.
    DefaultPass,
}

/// One rule looked at in a policy.
///
/// JSON: `{"index", "action", "matched"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTrace {
    /// Position in the policy's rules of the side's direction.
    pub index: usize,
    /// The rule's action.
    pub action: Action,
    /// Whether its peers and ports matched the flow.
    pub matched: bool,
}

/// One policy of a step, with the rules looked at until its answer.
///
/// JSON: `{"policy", "rules", "answer"}` (`answer`: index of the deciding rule or null).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyTrace {
    /// The policy's name inside its tenant.
    pub policy: String,
    /// The rules looked at, in order, up to and including its answer.
    pub rules: Vec<RuleTrace>,
    /// Index of its first matching allow/deny/pass rule.
    pub answer: Option<usize>,
}

/// Policies of equal `order` in a tier, evaluated together.
///
/// JSON: `{"order", "policies", "answer"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTrace {
    /// Their `order` (null: no order, evaluated last).
    pub order: Option<i64>,
    /// The policies, in name order.
    pub policies: Vec<PolicyTrace>,
    /// The step's answer (deny beats allow beats pass), if any policy answered.
    pub answer: Option<Attribution>,
}

/// One tier in which policies selected the endpoint.
///
/// JSON: `{"tier", "steps", "outcome"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTrace {
    /// The tier's name.
    pub tier: String,
    /// The steps consulted, in order.
    pub steps: Vec<StepTrace>,
    /// How the tier ended.
    pub outcome: TierOutcome,
}

/// How one side (egress of the source or ingress of the destination) decided.
///
/// JSON: `{"direction", "endpoint", "labels", "verdict", "attribution",
/// "logs", "audit", "tiers"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideExplanation {
    /// `egress` for the source's side, `ingress` for the destination's.
    pub direction: Direction,
    /// The endpoint whose policy decided (`tenant:namespace/name`).
    pub endpoint: String,
    /// Its labels.
    pub labels: Labels,
    /// The enforced verdict.
    pub verdict: Verdict,
    /// What decided it.
    pub attribution: Attribution,
    /// `log` rules that matched in the steps consulted (in order).
    pub logs: Vec<Attribution>,
    /// The verdict with audit policies enforced.
    pub audit: AuditView,
    /// Tiers in which a policy selected the endpoint, as consulted (enforced view).
    pub tiers: Vec<TierTrace>,
}

/// The verdict for one flow and everything that led to it.
///
/// JSON: `{"verdict", "src", "dst", "protocol", "port", "special", "egress",
/// "ingress"}`: `special` is the attribution when a special case decided
/// (`self_traffic`, `cross_tenant`) and null otherwise; `egress` / `ingress`
/// are null when that end is not an endpoint (it has no say) or a special
/// case decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// The flow's verdict: allowed when every side that has a say allows.
    pub verdict: Verdict,
    /// The source.
    pub src: FlowEnd,
    /// The destination.
    pub dst: FlowEnd,
    /// IP protocol number.
    pub protocol: u8,
    /// Destination port, or ICMP `type << 8 | code`.
    pub port: u16,
    /// A special case that decided before any policy.
    pub special: Option<Attribution>,
    /// The source's egress side.
    pub egress: Option<SideExplanation>,
    /// The destination's ingress side.
    pub ingress: Option<SideExplanation>,
}

impl Explanation {
    /// The sides that were decided: the destination's ingress first (usually
    /// the one that matters), then the source's egress.
    pub fn sides(&self) -> impl Iterator<Item = &SideExplanation> {
        self.ingress.iter().chain(&self.egress)
    }

    /// What decided the flow: the special case, or the denying sides'
    /// attributions for a denied flow, or every side's for an allowed one.
    pub fn reasons(&self) -> Vec<&Attribution> {
        if let Some(s) = &self.special {
            return vec![s];
        }
        self.sides()
            .filter(|s| self.verdict == Verdict::Allow || s.verdict == Verdict::Deny)
            .map(|s| &s.attribution)
            .collect()
    }
}

/// `tcp/5432`, `icmp type 8 code 0`, `proto 47`.
pub(crate) struct ProtoPort(pub(crate) u8, pub(crate) u16);

impl fmt::Display for ProtoPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProtoPort(protocol, port) = *self;
        match Protocol::from_number(protocol) {
            Some(p) if p.has_ports() => write!(f, "{}/{port}", p.as_str().to_lowercase()),
            Some(p) => write!(
                f,
                "{} type {} code {}",
                p.as_str().to_lowercase(),
                port >> 8,
                port & 0xff
            ),
            None => write!(f, "proto {protocol}"),
        }
    }
}

/// `[app=db, tier=x]`: the user's labels. The derived ones (namespace and
/// namespace labels, under the reserved prefixes) are left out of the text:
/// the endpoint's name already says its namespace. JSON keeps them all.
pub(crate) struct LabelList<'a>(pub(crate) &'a Labels);

impl fmt::Display for LabelList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        let user = self.0.iter().filter(|(k, _)| {
            !palisade_model::RESERVED_LABEL_PREFIXES
                .iter()
                .any(|p| k.starts_with(p))
        });
        for (i, (k, v)) in user.enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("]")
    }
}

/// Why a side got its verdict, in words, e.g. `allowed by security/db
/// ingress rule 0` or `default deny of tenant acme (no policy allows ingress
/// to db-1 [app=db])`.
struct Reason<'a> {
    attribution: &'a Attribution,
    side: Option<&'a SideExplanation>,
    explanation: &'a Explanation,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "ingress to db-1 [app=db]" / "egress from web-1 [app=web]"
        let subject = |f: &mut fmt::Formatter<'_>, s: &SideExplanation| {
            let name = s.endpoint.split_once(':').map_or(&*s.endpoint, |x| x.1);
            let preposition = match s.direction {
                Direction::Ingress => "to",
                Direction::Egress => "from",
            };
            write!(
                f,
                "{} {preposition} {name} {}",
                s.direction,
                LabelList(&s.labels)
            )
        };
        match (self.attribution, self.side) {
            (Attribution::Rule { action, .. }, _) => {
                let verb = match action {
                    Action::Allow => "allowed",
                    Action::Deny => "denied",
                    Action::Log => "logged",
                    Action::Pass => "passed",
                };
                write!(f, "{verb} by ")?;
                write_rule_ref(f, self.attribution)
            }
            (Attribution::TierDefault { tier, .. }, Some(s)) => {
                write!(
                    f,
                    "default deny of tier {tier} (no rule of the tier decided "
                )?;
                subject(f, s)?;
                f.write_str(")")
            }
            (Attribution::TenantDefault { tenant, .. }, Some(s)) => {
                write!(f, "default deny of tenant {tenant} (no policy allows ")?;
                subject(f, s)?;
                f.write_str(")")
            }
            (Attribution::NotIsolated { tenant, .. }, Some(s)) => {
                write!(f, "not isolated: no policy of tenant {tenant} selects ")?;
                subject(f, s)
            }
            (Attribution::CrossTenant, _) => {
                write!(
                    f,
                    "tenants are isolated ({} and {})",
                    self.explanation.src.tenant(),
                    self.explanation.dst.tenant()
                )
            }
            (a, _) => write!(f, "{a}"),
        }
    }
}

impl fmt::Display for Explanation {
    /// One line `VERDICT src -> dst proto/port: reasons`, then one line per
    /// log rule and per audit would-deny. The alternate form (`{:#}`) adds
    /// the tiers, steps and rules consulted on each side.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} {}: ",
            self.verdict,
            self.src,
            self.dst,
            ProtoPort(self.protocol, self.port)
        )?;
        let reasons: Vec<Reason<'_>> = match &self.special {
            Some(a) => vec![Reason {
                attribution: a,
                side: None,
                explanation: self,
            }],
            None => self
                .sides()
                .filter(|s| self.verdict == Verdict::Allow || s.verdict == Verdict::Deny)
                .map(|s| Reason {
                    attribution: &s.attribution,
                    side: Some(s),
                    explanation: self,
                })
                .collect(),
        };
        if reasons.is_empty() {
            f.write_str("neither end is a palisade endpoint, so no policy has a say")?;
        }
        for (i, r) in reasons.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        for side in self.sides() {
            for log in &side.logs {
                f.write_str("\n  log: ")?;
                write_rule_ref(f, log)?;
            }
            if side.audit.would_deny {
                f.write_str("\n  audit: would deny ")?;
                match &side.audit.attribution {
                    a @ Attribution::Rule { .. } => {
                        f.write_str("by ")?;
                        write_rule_ref(f, a)?;
                    }
                    a => write!(
                        f,
                        "({})",
                        Reason {
                            attribution: a,
                            side: Some(side),
                            explanation: self
                        }
                    )?,
                }
            }
        }
        if f.alternate() {
            for side in self.sides() {
                write_trace(f, side)?;
            }
        }
        Ok(())
    }
}

/// The steps of one side, indented, for `{:#}`.
fn write_trace(f: &mut fmt::Formatter<'_>, side: &SideExplanation) -> fmt::Result {
    write!(
        f,
        "\n  {} of {} {}: {}",
        side.direction,
        side.endpoint,
        LabelList(&side.labels),
        side.verdict
    )?;
    if side.tiers.is_empty() {
        f.write_str("\n    no policy selects it")?;
    }
    for tier in &side.tiers {
        let outcome = match tier.outcome {
            TierOutcome::Allowed => "allowed",
            TierOutcome::Denied => "denied",
            TierOutcome::Passed => "passed to the next tier",
            TierOutcome::DefaultDeny => "no rule decided: tier default deny",
            TierOutcome::DefaultPass => "no rule decided: tier default pass",
        };
        write!(f, "\n    tier {}: {outcome}", tier.tier)?;
        for step in &tier.steps {
            match step.order {
                Some(o) => write!(f, "\n      order {o}:")?,
                None => f.write_str("\n      no order:")?,
            }
            for p in &step.policies {
                write!(f, "\n        {}:", p.policy)?;
                if p.rules.is_empty() {
                    f.write_str(" no rules")?;
                }
                for r in &p.rules {
                    let mark = if r.matched { "matched" } else { "no match" };
                    write!(f, " rule {} {} {mark};", r.index, r.action.as_str())?;
                }
            }
        }
    }
    write!(f, "\n    decided by {}", side.attribution)
}
