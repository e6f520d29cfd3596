//! One subject side's decisions: a compiled form of the rules, the tier walk
//! over it (the fast equivalent of the evaluator's walk, proved equal by the
//! property tests), and the table of one side built from it: the ANY peer's
//! decisions, and the peers whose rule-match signature decides differently,
//! each protocol's ports as the fewest longest-prefix entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ipnet::IpNet;
use palisade_model::{Action, Policy, TenantDefault, TierDefault};

use crate::explain::{Attribution, Verdict};
use crate::index::{SpecId, Universe};
use crate::prefixes::to_prefixes;
use crate::tables::{DirectionTable, PeerTable, PolicyValue, ProtoTable};

/// Ports of one protocol a rule matches, as inclusive ranges.
#[derive(Debug)]
pub(crate) struct ProtoRanges {
    pub(crate) proto: u8,
    pub(crate) ranges: Vec<(u16, u16)>,
}

/// A rule ready for deciding: peers as spec handles, ports as ranges.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) action: Action,
    /// `None`: any peer (no peers, or `entity: all`).
    pub(crate) peers: Option<Vec<SpecId>>,
    /// `None`: any protocol and port.
    pub(crate) ports: Option<Vec<ProtoRanges>>,
    pub(crate) cookie: u32,
}

impl CompiledRule {
    pub(crate) fn ports_match(&self, proto: u8, port: u16) -> bool {
        match &self.ports {
            None => true,
            Some(ports) => ports.iter().any(|p| {
                p.proto == proto && p.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
            }),
        }
    }
}

/// One version of a policy, compiled against its tenant's universe.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    /// Unique per content: a changed policy gets a new version, so table keys
    /// (lists of versions) never go stale.
    pub(crate) version: u64,
    pub(crate) source: Policy,
    pub(crate) name: String,
    pub(crate) tier_order: i64,
    pub(crate) tier: String,
    pub(crate) tier_default: TierDefault,
    pub(crate) audit: bool,
    pub(crate) selector: SpecId,
    pub(crate) rules: [Option<Vec<CompiledRule>>; 2],
    /// Every spec handle it holds (to release), and the prefixes it names.
    pub(crate) specs: Vec<SpecId>,
    pub(crate) prefixes: Vec<IpNet>,
    pub(crate) attributions: Vec<Attribution>,
}

impl CompiledPolicy {
    /// Tier order, tier name, order (none last), name: the walk's order.
    pub(crate) fn walk_key(&self) -> (i64, &str, bool, Option<i64>, &str) {
        (
            self.tier_order,
            &self.tier,
            self.source.order.is_none(),
            self.source.order,
            &self.name,
        )
    }
}

/// Cookies of a tenant's defaults.
pub(crate) struct Defaults {
    /// Per tier with `defaultAction: deny`: the cookie per direction.
    pub(crate) tiers: HashMap<String, [u32; 2]>,
    pub(crate) tenant: [u32; 2],
    pub(crate) not_isolated: [u32; 2],
    pub(crate) action: TenantDefault,
    pub(crate) attributions: Vec<Attribution>,
}

/// The walk for one view (enforced, or with audit policies) of one side.
struct Plan<'a> {
    tiers: Vec<PlanTier<'a>>,
    /// Verdict and cookie when no tier decides.
    end: (Verdict, u32),
}

struct PlanTier<'a> {
    /// `Some(cookie)` for a deny default, `None` for pass.
    default: Option<u32>,
    /// Steps of policies of equal order, in order; each policy as (rules,
    /// index of its first rule in the side's flat rule list).
    steps: Vec<Vec<(&'a [CompiledRule], usize)>>,
}

/// Builds the plan of one view from the side's policies, sorted in walk order.
fn plan<'a>(
    policies: &[(&'a CompiledPolicy, usize)],
    d: usize,
    audit_view: bool,
    defaults: &Defaults,
) -> Plan<'a> {
    let chosen: Vec<&(&CompiledPolicy, usize)> = policies
        .iter()
        .filter(|(p, _)| audit_view || !p.audit)
        .collect();
    let mut tiers = Vec::new();
    for tier in chosen.chunk_by(|a, b| a.0.tier == b.0.tier) {
        let head = tier[0].0;
        let default = match head.tier_default {
            TierDefault::Deny => Some(defaults.tiers[&head.tier][d]),
            TierDefault::Pass => None,
        };
        let steps = tier
            .chunk_by(|a, b| a.0.source.order == b.0.source.order)
            .map(|step| {
                step.iter()
                    .map(|(p, base)| (p.rules[d].as_deref().unwrap_or_default(), *base))
                    .collect()
            })
            .collect();
        tiers.push(PlanTier { default, steps });
    }
    let end = match defaults.action {
        TenantDefault::Kubernetes if chosen.is_empty() => {
            (Verdict::Allow, defaults.not_isolated[d])
        }
        _ => (Verdict::Deny, defaults.tenant[d]),
    };
    Plan { tiers, end }
}

/// Decides one (protocol, port) for a peer whose rule matches are `matched`:
/// verdict, cookie, and whether a log rule matched on the way.
fn walk(plan: &Plan<'_>, matched: &[bool], proto: u8, port: u16) -> (Verdict, u32, bool) {
    let mut logged = false;
    'tiers: for tier in &plan.tiers {
        for step in &tier.steps {
            // (rank, cookie): deny 0 beats allow 1 beats pass 2; the first
            // policy in name order keeps a tie.
            let mut best: Option<(u8, u32)> = None;
            for &(rules, base) in step {
                for (i, rule) in rules.iter().enumerate() {
                    if !matched[base + i] || !rule.ports_match(proto, port) {
                        continue;
                    }
                    let rank = match rule.action {
                        Action::Log => {
                            logged = true;
                            continue;
                        }
                        Action::Deny => 0,
                        Action::Allow => 1,
                        Action::Pass => 2,
                    };
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, rule.cookie));
                    }
                    break;
                }
            }
            match best {
                Some((0, cookie)) => return (Verdict::Deny, cookie, logged),
                Some((1, cookie)) => return (Verdict::Allow, cookie, logged),
                Some(_) => continue 'tiers,
                None => {}
            }
        }
        if let Some(cookie) = tier.default {
            return (Verdict::Deny, cookie, logged);
        }
    }
    (plan.end.0, plan.end.1, logged)
}

/// The table value of one (protocol, port): the enforced decision, the log
/// flag, and the audit view when it denies what is allowed.
fn value(
    enforced: &Plan<'_>,
    audit: Option<&Plan<'_>>,
    matched: &[bool],
    proto: u8,
    port: u16,
) -> PolicyValue {
    let (verdict, cookie, logged) = walk(enforced, matched, proto, port);
    let mut flags = if logged { PolicyValue::FLAG_LOG } else { 0 };
    let mut audit_cookie = 0;
    if let (Verdict::Allow, Some(audit)) = (verdict, audit) {
        let (audit_verdict, c, _) = walk(audit, matched, proto, port);
        if audit_verdict == Verdict::Deny {
            flags |= PolicyValue::FLAG_AUDIT_DENY;
            audit_cookie = c;
        }
    }
    PolicyValue {
        verdict,
        cookie,
        flags,
        audit_cookie,
    }
}

/// Every decision for one peer signature: the protocol-0 value, and for each
/// protocol the rules name, its port intervals as prefixes when they differ.
fn decide(
    enforced: &Plan<'_>,
    audit: Option<&Plan<'_>>,
    rules: &[&CompiledRule],
    matched: &[bool],
) -> PeerTable {
    let value = |proto, port| value(enforced, audit, matched, proto, port);
    // Protocol 0 stands for every protocol no rule names: no port match
    // covers it, so only rules without ports can match, as for GRE.
    let any = value(0, 0);
    let mut bounds: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
    for (rule, _) in rules.iter().zip(matched).filter(|(_, m)| **m) {
        for p in rule.ports.iter().flatten() {
            let b = bounds.entry(p.proto).or_default();
            for &(lo, hi) in &p.ranges {
                b.push(lo);
                if let Some(after) = hi.checked_add(1) {
                    b.push(after);
                }
            }
        }
    }
    let mut protos = Vec::new();
    for (proto, mut starts) in bounds {
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let mut intervals: Vec<(u16, PolicyValue)> = Vec::new();
        for start in starts {
            let v = value(proto, start);
            if intervals.last().is_none_or(|(_, last)| *last != v) {
                intervals.push((start, v));
            }
        }
        if intervals.len() == 1 && intervals[0].1 == any {
            continue;
        }
        protos.push(ProtoTable {
            proto,
            prefixes: to_prefixes(&intervals),
        });
    }
    PeerTable { any, protos }
}

/// The table of one subject side selected by `policies` (direction index
/// `d`), and the peer specs it depends on.
pub(crate) fn direction_table(
    mut policies: Vec<&CompiledPolicy>,
    d: usize,
    defaults: &Defaults,
    universe: &Universe,
) -> (DirectionTable, Vec<SpecId>) {
    policies.sort_by(|a, b| a.walk_key().cmp(&b.walk_key()));

    // One flat list of the side's rules; `matched[g]` says whether rule g's
    // peers match the peer being decided.
    let mut rules: Vec<&CompiledRule> = Vec::new();
    let mut with_base = Vec::with_capacity(policies.len());
    for p in &policies {
        with_base.push((*p, rules.len()));
        rules.extend(p.rules[d].iter().flatten());
    }
    let enforced = plan(&with_base, d, false, defaults);
    let audit = policies
        .iter()
        .any(|p| p.audit)
        .then(|| plan(&with_base, d, true, defaults));
    let wildcard: Vec<bool> = rules.iter().map(|r| r.peers.is_none()).collect();
    let any = Arc::new(decide(&enforced, audit.as_ref(), &rules, &wildcard));

    // Peer signatures: which non-wildcard rules match each peer identity.
    let mut pairs: Vec<(u16, u32)> = Vec::new();
    let mut specs: Vec<SpecId> = Vec::new();
    for (g, rule) in rules.iter().enumerate() {
        for &spec in rule.peers.iter().flatten() {
            specs.push(spec);
            pairs.extend(universe.bits(spec).iter().map(|local| (local, g as u32)));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    specs.sort_unstable();
    specs.dedup();
    let mut groups: HashMap<Vec<u32>, Vec<u16>> = HashMap::new();
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        let signature = run.iter().map(|&(_, g)| g).collect();
        groups.entry(signature).or_default().push(run[0].0);
    }

    let mut peers = Vec::new();
    for (signature, locals) in groups {
        let mut matched = wildcard.clone();
        for g in signature {
            matched[g as usize] = true;
        }
        let table = decide(&enforced, audit.as_ref(), &rules, &matched);
        if table == *any {
            continue;
        }
        let table = Arc::new(table);
        peers.extend(
            locals
                .into_iter()
                .map(|l| (universe.identity(l), table.clone())),
        );
    }
    peers.sort_by_key(|(identity, _)| *identity);
    (DirectionTable::new(any, peers), specs)
}
