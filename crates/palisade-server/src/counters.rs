//! Per-rule hit counters: every agent reports the packets and bytes each
//! rule (or default) decided on its node, as absolute values by
//! attribution (`PUT /api/v1/nodes/<node>/counters`); the server keeps each
//! node's last report and sums them per rule. Every rule of a tenant's
//! intent is listed with its sum (`GET /api/v1/tenants/<tenant>/rules`),
//! so a rule that never matches shows as 0.
//!
//! Reports are written to the store under `/counters/<node>` when the set
//! of rules changed or at most every [`PERSIST_EVERY`] (so every server of
//! a cluster sums every agent's counters without a store write per report).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use palisade_client::visibility::{
    attribution_text, names_attribution, CounterReport, FlowAction, RuleCounter, RuleHits,
    RuleHitsList,
};
use palisade_model::{Direction, Intent, Mode, TenantDefault, TierDefault};
use palisade_policy::Attribution;
use palisade_store::{Expect, Store};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::flows::{FlowFilter, FlowHistory};
use crate::routes::{live_intent, JsonBody};
use crate::Shared;

/// Prefix of the stored reports.
pub const COUNTERS: &str = "/counters/";
/// Unchanged reports are written to the store at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(10);

/// A report as stored under `/counters/<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCounters {
    counters: Vec<RuleCounter>,
    /// Milliseconds since the Unix epoch.
    unix_ms: u64,
}

#[derive(Debug)]
struct NodeCounters {
    stored: StoredCounters,
    /// When it was last written, and the rules it held then.
    persisted: Option<(Instant, BTreeSet<Attribution>)>,
}

/// Packets and bytes of one rule summed over the agents, and who counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sum {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Nodes with a non-zero count.
    pub nodes: BTreeSet<String>,
}

/// The agents' last counter reports.
#[derive(Debug, Default)]
pub struct Counters {
    reports: Mutex<HashMap<String, NodeCounters>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The tenant an attribution belongs to (`None`: self traffic, cross tenant).
fn tenant_of(a: &Attribution) -> Option<&str> {
    match a {
        Attribution::Rule { tenant, .. }
        | Attribution::TierDefault { tenant, .. }
        | Attribution::TenantDefault { tenant, .. }
        | Attribution::NotIsolated { tenant, .. } => Some(tenant),
        Attribution::SelfTraffic | Attribution::CrossTenant => None,
    }
}

impl Counters {
    /// Replaces a node's counters; writes them to the store when the set of
    /// rules changed or the last write is old.
    pub async fn report(
        &self,
        store: &Arc<dyn Store>,
        node: &str,
        report: CounterReport,
    ) -> Result<(), ApiError> {
        // The same rule twice in one report (an agent summing per cookie
        // may meet two cookies of one rule across a recompile) adds up.
        let mut merged: BTreeMap<Attribution, (u64, u64)> = BTreeMap::new();
        for c in report.counters {
            let entry = merged.entry(c.attribution).or_default();
            entry.0 = entry.0.saturating_add(c.packets);
            entry.1 = entry.1.saturating_add(c.bytes);
        }
        let rules: BTreeSet<Attribution> = merged.keys().cloned().collect();
        let stored = StoredCounters {
            counters: merged
                .into_iter()
                .map(|(attribution, (packets, bytes))| RuleCounter {
                    attribution,
                    packets,
                    bytes,
                })
                .collect(),
            unix_ms: unix_ms(SystemTime::now()),
        };
        let persist = {
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = reports.entry(node.to_owned()).or_insert(NodeCounters {
                stored: stored.clone(),
                persisted: None,
            });
            entry.stored = stored.clone();
            match &entry.persisted {
                Some((at, last)) => *last != rules || at.elapsed() >= PERSIST_EVERY,
                None => true,
            }
        };
        if persist {
            let value = serde_json::to_vec(&stored).expect("counters serialize");
            store
                .put(&format!("{COUNTERS}{node}"), value, Expect::Any)
                .await?;
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = reports.get_mut(node) {
                entry.persisted = Some((Instant::now(), rules));
            }
        }
        Ok(())
    }

    /// The sums per rule of one tenant over every agent's latest report
    /// (this server's, or the store's when another server has a newer one).
    pub async fn sums(
        &self,
        store: &Arc<dyn Store>,
        tenant: &str,
    ) -> Result<BTreeMap<Attribution, Sum>, ApiError> {
        let listing = store.list(COUNTERS).await?;
        let mut latest: HashMap<String, StoredCounters> = HashMap::new();
        for kv in listing.items {
            let Some(node) = kv.key.strip_prefix(COUNTERS) else {
                continue;
            };
            match serde_json::from_slice::<StoredCounters>(&kv.value) {
                Ok(c) => {
                    latest.insert(node.to_owned(), c);
                }
                Err(error) => tracing::warn!(key = %kv.key, %error, "unreadable counter report"),
            }
        }
        {
            let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            for (node, report) in reports.iter() {
                if latest
                    .get(node)
                    .is_none_or(|c| c.unix_ms <= report.stored.unix_ms)
                {
                    latest.insert(node.clone(), report.stored.clone());
                }
            }
        }
        let mut sums: BTreeMap<Attribution, Sum> = BTreeMap::new();
        for (node, report) in latest {
            for c in report.counters {
                if tenant_of(&c.attribution) != Some(tenant) {
                    continue;
                }
                let sum = sums.entry(c.attribution).or_default();
                sum.packets = sum.packets.saturating_add(c.packets);
                sum.bytes = sum.bytes.saturating_add(c.bytes);
                if c.packets > 0 {
                    sum.nodes.insert(node.clone());
                }
            }
        }
        Ok(sums)
    }
}

/// Every rule and default of a tenant's intent, in evaluation order:
/// policies by tier order, then order and name, ingress rules before egress;
/// then the tiers' and the tenant's defaults. With each rule's mode.
fn intent_rules(intent: &Intent, tenant: &str) -> Vec<(Attribution, Mode)> {
    let tier_order = |name: &str| intent.tiers.get(name).map_or(i64::MAX, |t| t.order);
    let mut policies: Vec<_> = intent
        .policies
        .iter()
        .filter(|p| p.tenant == tenant)
        .collect();
    policies.sort_by_cached_key(|p| {
        (
            tier_order(&p.tier),
            p.tier.clone(),
            p.order.is_none(),
            p.order,
            p.qualified_name(),
        )
    });
    let mut out = Vec::new();
    let mut tiers_used: BTreeMap<(i64, String), BTreeSet<Direction>> = BTreeMap::new();
    for p in &policies {
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = p.rules(direction) else {
                continue;
            };
            tiers_used
                .entry((tier_order(&p.tier), p.tier.clone()))
                .or_default()
                .insert(direction);
            for (index, rule) in rules.iter().enumerate() {
                out.push((
                    Attribution::Rule {
                        tier: p.tier.clone(),
                        tenant: tenant.to_owned(),
                        policy: p.qualified_name(),
                        direction,
                        index,
                        action: rule.action,
                    },
                    p.mode,
                ));
            }
        }
    }
    for ((_, tier), directions) in tiers_used {
        let deny = intent
            .tiers
            .get(&tier)
            .is_some_and(|t| t.default_action == TierDefault::Deny);
        if !deny {
            continue;
        }
        for direction in directions {
            out.push((
                Attribution::TierDefault {
                    tier: tier.clone(),
                    tenant: tenant.to_owned(),
                    direction,
                },
                Mode::Enforce,
            ));
        }
    }
    let kubernetes = intent
        .tenants
        .get(tenant)
        .is_some_and(|t| t.default_action == TenantDefault::Kubernetes);
    for direction in [Direction::Ingress, Direction::Egress] {
        out.push((
            Attribution::TenantDefault {
                tenant: tenant.to_owned(),
                direction,
            },
            Mode::Enforce,
        ));
        if kubernetes {
            out.push((
                Attribution::NotIsolated {
                    tenant: tenant.to_owned(),
                    direction,
                },
                Mode::Enforce,
            ));
        }
    }
    out
}

/// The rules list: the intent's rules with their sums, audit rules with the
/// would-deny records of the history, then counted rules the intent no
/// longer has.
pub fn rule_hits(
    intent: &Intent,
    tenant: &str,
    revision: u64,
    mut sums: BTreeMap<Attribution, Sum>,
    flows: &FlowHistory,
) -> RuleHitsList {
    let audits = flows.matching(&FlowFilter {
        tenant: Some(tenant.to_owned()),
        ..FlowFilter::default()
    });
    let audit_names: Vec<(&str, u64)> = audits
        .iter()
        .filter(|f| f.record.event.action == FlowAction::AuditWouldDeny)
        .filter_map(|f| {
            let rule = f.record.palisade.audit.as_ref()?;
            Some((
                rule.rule.as_str(),
                1 + f.record.palisade.suppressed.unwrap_or(0),
            ))
        })
        .collect();
    let mut rules = Vec::new();
    for (attribution, mode) in intent_rules(intent, tenant) {
        let sum = sums.remove(&attribution).unwrap_or_default();
        let would_deny = if mode == Mode::Audit {
            audit_names
                .iter()
                .filter(|(name, _)| names_attribution(name, &attribution))
                .map(|(_, n)| n)
                .sum()
        } else {
            0
        };
        rules.push(hits(attribution, mode, sum, would_deny, true));
    }
    for (attribution, sum) in sums {
        rules.push(hits(attribution, Mode::Enforce, sum, 0, false));
    }
    RuleHitsList {
        tenant: tenant.to_owned(),
        revision,
        rules,
    }
}

fn hits(
    attribution: Attribution,
    mode: Mode,
    sum: Sum,
    would_deny: u64,
    in_intent: bool,
) -> RuleHits {
    RuleHits {
        text: attribution_text(&attribution),
        attribution,
        mode: match mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
        .to_owned(),
        packets: sum.packets,
        bytes: sum.bytes,
        nodes: sum.nodes.into_iter().collect(),
        would_deny,
        in_intent,
    }
}

/// `PUT /api/v1/nodes/<node>/counters`.
pub async fn put(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(node): Path<String>,
    JsonBody(report): JsonBody<CounterReport>,
) -> Result<StatusCode, ApiError> {
    principal.check_node(&node)?;
    shared.counters.report(&shared.store, &node, report).await?;
    shared.metrics.counter_report(&node);
    Ok(StatusCode::NO_CONTENT)
}

/// Checks that the caller may read a tenant's visibility data.
pub fn check_tenant(principal: &Principal, tenant: &str) -> Result<(), ApiError> {
    principal.require_user()?;
    match principal.tenant() {
        Some(own) if own != tenant => Err(ApiError::forbidden(format!(
            "{} has role tenant:{own} and cannot read tenant {tenant}",
            principal.subject
        ))),
        _ => Ok(()),
    }
}

/// `GET /api/v1/tenants/<tenant>/rules`.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(tenant): Path<String>,
) -> Result<Json<RuleHitsList>, ApiError> {
    check_tenant(&principal, &tenant)?;
    let (intent, revision) = live_intent(&shared).await?;
    if !intent.tenants.contains_key(&tenant) {
        return Err(ApiError::not_found(format!(
            "tenant {tenant} does not exist; list them with palisade get tenants"
        )));
    }
    let sums = shared.counters.sums(&shared.store, &tenant).await?;
    Ok(Json(rule_hits(
        &intent,
        &tenant,
        revision,
        sums,
        &shared.flows,
    )))
}
