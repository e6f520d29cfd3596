//! The differential check of one [`Case`] on a [`TestNode`]: every flow's
//! first packet, its reply, and the connection after a policy change, each
//! compared with what `palisade_policy::evaluate` says about the flow.
//!
//! What must agree, per flow (DESIGN.md "Verdict semantics"):
//! - the first packet: the hook's verdict (redirected or passed on as the
//!   destination needs, or dropped), and the attribution: a drop names the
//!   side that denied first (the source's egress side is decided before
//!   the destination's ingress side) and that side's deciding rule or
//!   default (its cookie, through the compiled cookie table); an admission
//!   names both sides' rules and whether a `log` rule matched; audit
//!   would-deny events name each side the evaluator's audit view denies;
//! - conntrack: an admitted connection is tracked with those rules, a
//!   denied one leaves nothing;
//! - the reply of an admitted connection passes with no decision (no event,
//!   no rule counted);
//! - after a random change and the agent's reconcile (with its revision
//!   bump), the connection's next packet passes iff the evaluator allows its
//!   first packet under the new intent; otherwise it is cut, naming the
//!   side and rule that now deny.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use palisade_datapath::testing::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};
use palisade_datapath::{Direction as DpDirection, DropReason, FlowEvent};
use palisade_model::{Direction, Intent};
use palisade_policy::{
    evaluate, Attribution, CompiledTables, Compiler, Explanation, IdentityAllocator, Verdict,
};
use proptest::prelude::*;

use crate::flows::{flow_choice, FlowChoice, NodeFlow, Stage};
use crate::intents::{self, Change, Shape, NODE};
use crate::node::{Delivery, Fault, Observation, TestNode};
use crate::yaml::to_yaml;

/// One random case: an intent, flows in it, and a change to it.
#[derive(Clone)]
pub struct Case {
    /// The intent.
    pub intent: Intent,
    /// Flows, resolved against the intent (unresolvable ones are skipped).
    pub flows: Vec<FlowChoice>,
    /// The change applied after the flows' first packets and replies.
    pub change: Change,
}

impl fmt::Debug for Case {
    /// The intent as YAML (to save and replay), the flows and the change.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n--- intent.yaml ---\n{}", to_yaml(&self.intent))?;
        writeln!(f, "--- flows ---")?;
        for (_, flow) in resolve(&self.intent, &self.flows) {
            writeln!(f, "{}", flow.describe(&self.intent))?;
        }
        let (_, change) = intents::apply(&self.intent, &self.change);
        writeln!(f, "--- then: {change} ---")
    }
}

/// A random [`Case`] of `flows` flows on average.
pub fn case(shape: Shape, flows: usize) -> impl Strategy<Value = Case> {
    (
        intents::intent(shape),
        // Up to twice `flows`, `flows` on average; shrinking drops flows.
        prop::collection::vec(flow_choice(), 1..=2 * flows),
        intents::change(),
    )
        .prop_map(|(intent, flows, change)| Case {
            intent,
            flows,
            change,
        })
}

/// The flows of `choices` that exist in `intent`, numbered by position,
/// without a flow whose conntrack tuple (either way) an earlier one has:
/// its first packet would be taken for a packet of that connection.
pub fn resolve(intent: &Intent, choices: &[FlowChoice]) -> Vec<(u16, NodeFlow)> {
    let mut seen: BTreeSet<(String, u8, Ipv4Addr, u16, Ipv4Addr, u16)> = BTreeSet::new();
    let mut out = Vec::new();
    for (i, choice) in choices.iter().enumerate() {
        let Some(flow) = choice.resolve(intent, NODE) else {
            continue;
        };
        let id = connection_id(i);
        let (s, sp, d, dp) = flow.tuple(id);
        let proto = flow.probe.proto();
        if seen.contains(&(flow.tenant.clone(), proto, d, dp, s, sp)) {
            continue;
        }
        if !seen.insert((flow.tenant.clone(), proto, s, sp, d, dp)) {
            continue;
        }
        out.push((id, flow));
    }
    out
}

/// The source port / echo id of the `i`-th flow of a case.
fn connection_id(i: usize) -> u16 {
    20000 + i as u16
}

/// What one case checked, for the summary of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Cases run.
    pub cases: usize,
    /// First packets compared.
    pub flows: usize,
    /// Of which the evaluator allowed.
    pub allowed: usize,
    /// Replies checked.
    pub replies: usize,
    /// Connections checked again after a change.
    pub rechecked: usize,
    /// Of which cut.
    pub cut: usize,
    /// Audit would-deny events expected.
    pub audits: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.cases += o.cases;
        self.flows += o.flows;
        self.allowed += o.allowed;
        self.replies += o.replies;
        self.rechecked += o.rechecked;
        self.cut += o.cut;
        self.audits += o.audits;
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cases, {} first packets ({} allowed, {} denied), {} replies, \
             {} connections after a change ({} cut), {} audit events",
            self.cases,
            self.flows,
            self.allowed,
            self.flows - self.allowed,
            self.replies,
            self.rechecked,
            self.cut,
            self.audits
        )
    }
}

/// Runs `case` on `node` with `fault` in the maps; `Err` describes the
/// first disagreement with the evaluator, with what it takes to replay it.
pub fn check_case(node: &mut TestNode, case: &Case, fault: Fault) -> Result<Tally, String> {
    let flows = resolve(&case.intent, &case.flows);
    let (next, described) = intents::apply(&case.intent, &case.change);
    check_flows(node, &case.intent, &flows, Some((&next, &described)), fault)
}

/// Loads `intent` on `node` (with `fault` in the maps) and checks `flows`
/// (each with its connection number): first packets, conntrack, replies;
/// then, given `then` (the intent after a change, and what changed), loads
/// it and checks every admitted connection again.
pub fn check_flows(
    node: &mut TestNode,
    intent: &Intent,
    flows: &[(u16, NodeFlow)],
    then: Option<(&Intent, &str)>,
    fault: Fault,
) -> Result<Tally, String> {
    let mut tally = Tally {
        cases: 1,
        ..Tally::default()
    };
    // One allocator and compiler for the case, as one agent keeps them.
    let mut allocator = IdentityAllocator::new();
    let mut compiler = Compiler::default();
    let ids = allocator
        .allocate(intent)
        .map_err(|e| format!("identities: {e}"))?;
    let local = palisade_agent::node_intent(intent, NODE);
    let tables = compiler
        .update(&local, &ids)
        .map_err(|e| format!("compile: {e}"))?;
    node.reset_connections();
    node.load(intent, &ids, &tables, fault)?;

    let mut admitted = Vec::new();
    for (id, flow) in flows {
        let (id, flow) = (*id, flow);
        let fail = |what: String| replay(intent, flow, &what);
        let e = evaluate(intent, &flow.evaluator_flow(intent));
        if let Some(special) = &e.special {
            return Err(fail(format!(
                "the flow is a special case ({special}): the generator must not make it"
            )));
        }
        let Some((hook, ifindex, frame, delivery)) = node.packet(flow, Stage::First, id) else {
            continue;
        };
        let seen = node.send(hook, ifindex, &frame);
        tally.flows += 1;
        tally.audits += expected_audits(&e).len();
        check_first(&e, delivery, &seen, &tables)
            .map_err(|m| fail(report(&e, &seen, &tables, &m)))?;
        match e.verdict {
            Verdict::Deny => {
                if node.tracks(flow, id) {
                    return Err(fail("a denied flow left a conntrack entry".into()));
                }
            }
            // Beyond the policy decision, a remote destination is the
            // overlay's business (see `Delivery::Remote`).
            Verdict::Allow if delivery == Delivery::Remote => tally.allowed += 1,
            Verdict::Allow => {
                tally.allowed += 1;
                let ct = node
                    .connection(flow, id)
                    .ok_or_else(|| fail("an admitted flow has no conntrack entry".into()))?;
                check_cookies(&e, ct.egress_cookie, ct.ingress_cookie, &tables)
                    .map_err(|m| fail(format!("the conntrack entry of the admitted flow: {m}")))?;
                if flow.has_reply() {
                    tally.replies += 1;
                    check_reply(node, flow, id).map_err(&fail)?;
                }
                admitted.push((id, flow));
            }
        }
    }

    // The change, reconciled as the agent does it; then every admitted
    // connection sends again.
    let Some((next, described)) = then else {
        return Ok(tally);
    };
    let ids = allocator
        .allocate(next)
        .map_err(|e| format!("identities after the change: {e}"))?;
    let tables = compiler
        .update(&palisade_agent::node_intent(next, NODE), &ids)
        .map_err(|e| format!("compile after the change: {e}"))?;
    node.load(next, &ids, &tables, fault)?;
    for (id, flow) in admitted {
        tally.rechecked += 1;
        let fail = |what: String| {
            format!(
                "after the change ({described}):\n{}\n--- intent after the change ---\n{}",
                replay(next, flow, &what),
                to_yaml(next)
            )
        };
        let e = evaluate(next, &flow.evaluator_flow(next));
        let (hook, ifindex, frame, delivery) = node
            .packet(flow, Stage::Again, id)
            .expect("a local flow has packets");
        let seen = node.send(hook, ifindex, &frame);
        if e.verdict == Verdict::Deny {
            tally.cut += 1;
        }
        check_again(node, flow, id, &e, delivery, &seen, &tables)
            .map_err(|m| fail(report(&e, &seen, &tables, &m)))?;
    }
    Ok(tally)
}

/// A failure message that names the flow and the command that replays it.
fn replay(intent: &Intent, flow: &NodeFlow, what: &str) -> String {
    format!(
        "flow {}: {what}\nreplay, with the intent saved as intent.yaml:\n  {}\n",
        flow.describe(intent),
        flow.explain_command(intent, "intent.yaml")
    )
}

/// `what`, the kernel's outcome and the evaluator's explanation.
fn report(e: &Explanation, seen: &Observation, tables: &CompiledTables, what: &str) -> String {
    format!(
        "{what}\nkernel ({:?}): {}\nevaluator: {e:#}",
        seen.hook,
        describe(seen, tables)
    )
}

/// A hook's result and events, cookies shown with their attributions.
fn describe(seen: &Observation, tables: &CompiledTables) -> String {
    let retval = match seen.retval {
        TC_ACT_OK => "TC_ACT_OK".to_string(),
        TC_ACT_SHOT => "TC_ACT_SHOT".to_string(),
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT".to_string(),
        other => format!("return value {other}"),
    };
    let rule = |cookie: u32| match tables.attribution(cookie) {
        Some(a) => format!("{cookie} = {a}"),
        None if cookie == 0 => "0".to_string(),
        None => format!("{cookie} = (unknown cookie)"),
    };
    let mut lines = vec![retval];
    for event in &seen.events {
        lines.push(match *event {
            FlowEvent::NewAllowed {
                egress_cookie,
                ingress_cookie,
                log,
                ..
            } => format!(
                "  NEW_ALLOWED egress {} ingress {} log {log}",
                rule(egress_cookie),
                rule(ingress_cookie)
            ),
            FlowEvent::Denied {
                reason,
                side,
                cookie,
                ..
            } => format!("  DENIED {reason:?} side {side:?} rule {}", rule(cookie)),
            FlowEvent::AuditWouldDeny {
                side, audit_cookie, ..
            } => format!(
                "  AUDIT_WOULD_DENY side {side:?} rule {}",
                rule(audit_cookie)
            ),
            FlowEvent::ConnClosed { .. } => "  CONN_CLOSED".to_string(),
            FlowEvent::ConnCut { side, cookie, .. } => {
                format!("  CONN_CUT side {side:?} rule {}", rule(cookie))
            }
        });
    }
    lines.join("\n")
}

fn dp_direction(d: Direction) -> DpDirection {
    match d {
        Direction::Ingress => DpDirection::Ingress,
        Direction::Egress => DpDirection::Egress,
    }
}

/// The side that denies the flow first, as the datapath decides: the
/// source's egress side, then the destination's ingress side.
fn denying_side(e: &Explanation) -> Option<(Direction, &Attribution)> {
    [&e.egress, &e.ingress]
        .into_iter()
        .flatten()
        .find(|s| s.verdict == Verdict::Deny)
        .map(|s| (s.direction, &s.attribution))
}

/// The audit would-deny events of a first packet: a side's, when its audit
/// view denies what is enforced as allowed, for the sides the datapath
/// decides (none after a side that denies).
fn expected_audits(e: &Explanation) -> Vec<(DpDirection, Attribution)> {
    let mut out = Vec::new();
    for side in [&e.egress, &e.ingress].into_iter().flatten() {
        if side.audit.would_deny {
            out.push((dp_direction(side.direction), side.audit.attribution.clone()));
        }
        if side.verdict == Verdict::Deny {
            break;
        }
    }
    out
}

/// Whether `cookie` stands for the attribution of `side` (0 for no side).
fn cookie_is(
    tables: &CompiledTables,
    cookie: u32,
    side: Option<&Attribution>,
    name: &str,
) -> Result<(), String> {
    match side {
        None if cookie == 0 => Ok(()),
        None => Err(format!(
            "the {name} cookie is {cookie}, but the evaluator has no {name} side"
        )),
        Some(want) => match tables.attribution(cookie) {
            Some(got) if got == want => Ok(()),
            got => Err(format!(
                "the {name} cookie {cookie} stands for {}, the evaluator says {want}",
                got.map_or("nothing".to_string(), ToString::to_string)
            )),
        },
    }
}

/// Both sides' deciding rules of an admitted flow against the cookies.
fn check_cookies(
    e: &Explanation,
    egress: u32,
    ingress: u32,
    tables: &CompiledTables,
) -> Result<(), String> {
    cookie_is(
        tables,
        egress,
        e.egress.as_ref().map(|s| &s.attribution),
        "egress",
    )?;
    cookie_is(
        tables,
        ingress,
        e.ingress.as_ref().map(|s| &s.attribution),
        "ingress",
    )
}

/// The first packet: verdict, attribution, log flag and audit events.
fn check_first(
    e: &Explanation,
    delivery: Delivery,
    seen: &Observation,
    tables: &CompiledTables,
) -> Result<(), String> {
    let admissions: Vec<_> = seen
        .events
        .iter()
        .filter_map(|ev| match *ev {
            FlowEvent::NewAllowed {
                egress_cookie,
                ingress_cookie,
                log,
                ..
            } => Some((egress_cookie, ingress_cookie, log)),
            _ => None,
        })
        .collect();
    let denials: Vec<_> = seen
        .events
        .iter()
        .filter_map(|ev| match *ev {
            FlowEvent::Denied {
                reason,
                side,
                cookie,
                ..
            } => Some((reason, side, cookie)),
            _ => None,
        })
        .collect();
    let policy_drop = denials
        .iter()
        .any(|(r, _, _)| matches!(r, DropReason::PolicyDenied | DropReason::NoPolicy));
    match e.verdict {
        Verdict::Allow => {
            if policy_drop {
                return Err("the evaluator allows, the kernel denies by policy".into());
            }
            if let Some(retval) = delivery.retval() {
                if seen.retval != retval {
                    return Err(format!(
                        "the evaluator allows: the hook must return {retval}, it returned {}",
                        seen.retval
                    ));
                }
                if admissions.len() != 1 || !denials.is_empty() {
                    return Err(
                        "an admitted first packet emits one NEW_ALLOWED and nothing denied".into(),
                    );
                }
            }
            if let Some(&(egress, ingress, log)) = admissions.first() {
                check_cookies(e, egress, ingress, tables)?;
                let logged = e.sides().any(|s| !s.logs.is_empty());
                if log != logged {
                    return Err(format!(
                        "log flag: the kernel says {log}, the evaluator {logged}"
                    ));
                }
            }
        }
        Verdict::Deny => {
            if seen.retval != TC_ACT_SHOT {
                return Err("the evaluator denies, the kernel lets the packet through".into());
            }
            let (direction, want) = denying_side(e).expect("a denied flow has a denying side");
            match denials.as_slice() {
                [(DropReason::PolicyDenied, Some(side), cookie)]
                    if *side == dp_direction(direction) =>
                {
                    cookie_is(tables, *cookie, Some(want), direction.as_str())?
                }
                _ => {
                    return Err(format!(
                        "the evaluator denies on the {direction} side ({want}): the kernel must \
                         report one POLICY_DENIED on that side"
                    ))
                }
            }
            if !admissions.is_empty() {
                return Err("a denied packet emitted NEW_ALLOWED".into());
            }
        }
    }
    let audits: Vec<(DpDirection, Option<Attribution>)> = seen
        .events
        .iter()
        .filter_map(|ev| match *ev {
            FlowEvent::AuditWouldDeny {
                side: Some(side),
                audit_cookie,
                ..
            } => Some((side, tables.attribution(audit_cookie).cloned())),
            _ => None,
        })
        .collect();
    let want: Vec<(DpDirection, Option<Attribution>)> = expected_audits(e)
        .into_iter()
        .map(|(d, a)| (d, Some(a)))
        .collect();
    if audits != want {
        return Err(format!(
            "audit would-deny events: the kernel emitted {audits:?}, the evaluator's audit view gives {want:?}"
        ));
    }
    Ok(())
}

/// The reply of an admitted connection passes with no decision.
fn check_reply(node: &mut TestNode, flow: &NodeFlow, id: u16) -> Result<(), String> {
    let (hook, ifindex, frame, delivery) = node
        .packet(flow, Stage::Reply, id)
        .expect("a local flow has packets");
    let hits = node.rule_hits();
    let seen = node.send(hook, ifindex, &frame);
    let want = delivery.retval().expect("replies go to this node's ends");
    if seen.retval != want {
        return Err(format!(
            "the reply of the admitted connection ({hook:?}) returned {}, not {want}; events {:?}",
            seen.retval, seen.events
        ));
    }
    if !seen.events.is_empty() || node.rule_hits() != hits {
        return Err(format!(
            "the reply of the admitted connection was decided again (events {:?}, rule counters {} -> {})",
            seen.events,
            hits,
            node.rule_hits()
        ));
    }
    Ok(())
}

/// A connection's next packet after a change: kept iff the evaluator now
/// allows its first packet.
fn check_again(
    node: &TestNode,
    flow: &NodeFlow,
    id: u16,
    e: &Explanation,
    delivery: Delivery,
    seen: &Observation,
    tables: &CompiledTables,
) -> Result<(), String> {
    let cuts: Vec<_> = seen
        .events
        .iter()
        .filter_map(|ev| match *ev {
            FlowEvent::ConnCut { side, cookie, .. } => Some((side, cookie)),
            _ => None,
        })
        .collect();
    match e.verdict {
        Verdict::Allow => {
            let want = delivery.retval().expect("local flows");
            if seen.retval != want || !cuts.is_empty() {
                return Err(format!(
                    "the evaluator now allows the connection's first packet: it must be kept \
                     (hook returns {want}), the kernel returned {}",
                    seen.retval
                ));
            }
            let ct = node
                .connection(flow, id)
                .ok_or("the kept connection has no conntrack entry")?;
            check_cookies(e, ct.egress_cookie, ct.ingress_cookie, tables)
                .map_err(|m| format!("the kept connection's rules: {m}"))
        }
        Verdict::Deny => {
            let (direction, want) = denying_side(e).expect("a denied flow has a denying side");
            if seen.retval != TC_ACT_SHOT {
                return Err(format!(
                    "the evaluator now denies the connection's first packet ({direction}: {want}): \
                     it must be cut, the kernel let the packet through"
                ));
            }
            match cuts.as_slice() {
                [(Some(side), cookie)] if *side == dp_direction(direction) => {
                    cookie_is(tables, *cookie, Some(want), direction.as_str())?
                }
                _ => {
                    return Err(format!(
                        "the connection must be cut with one CONN_CUT naming the {direction} side ({want})"
                    ))
                }
            }
            let revoked = seen.events.iter().any(|ev| {
                matches!(
                    ev,
                    FlowEvent::Denied {
                        reason: DropReason::PolicyRevoked,
                        ..
                    }
                )
            });
            if !revoked {
                return Err("the cut packet must be dropped as POLICY_REVOKED".into());
            }
            if node.tracks(flow, id) {
                return Err("the cut connection is still in conntrack".into());
            }
            Ok(())
        }
    }
}
