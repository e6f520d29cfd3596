//! Agents' status reports: kept in memory as they arrive, and written to the
//! store (so every server of a cluster lists every agent) when something in
//! them changed or at most every [`PERSIST_EVERY`], so that frequent reports
//! of many agents do not turn into a stream of store writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_client::api::{AgentStatus, NodeStatus};
use palisade_store::{Expect, Store};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::stored;

/// Unchanged reports are written to the store at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(10);

/// A report as stored under `/agents/<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredReport {
    status: NodeStatus,
    /// Milliseconds since the Unix epoch.
    unix_ms: u64,
}

#[derive(Debug)]
struct Report {
    stored: StoredReport,
    persisted: Option<(Instant, NodeStatus)>,
}

/// The agents' reports this server received.
#[derive(Debug, Default)]
pub struct Agents {
    reports: Mutex<HashMap<String, Report>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Agents {
    /// Records a report; writes it to the store when it changed or the last
    /// write is old.
    pub async fn report(
        &self,
        store: &Arc<dyn Store>,
        node: &str,
        status: NodeStatus,
    ) -> Result<(), ApiError> {
        let stored_report = StoredReport {
            status: status.clone(),
            unix_ms: unix_ms(SystemTime::now()),
        };
        let persist = {
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            let report = reports.entry(node.to_owned()).or_insert(Report {
                stored: stored_report.clone(),
                persisted: None,
            });
            report.stored = stored_report.clone();
            match &report.persisted {
                Some((at, last)) => {
                    // The applied revision moves with every change: only
                    // health and endpoints count as news.
                    last.health != status.health
                        || last.endpoints != status.endpoints
                        || at.elapsed() >= PERSIST_EVERY
                }
                None => true,
            }
        };
        if persist {
            let value = serde_json::to_vec(&stored_report).expect("reports serialize");
            store
                .put(&stored::agent_key(node), value, Expect::Any)
                .await?;
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(report) = reports.get_mut(node) {
                report.persisted = Some((Instant::now(), status));
            }
        }
        Ok(())
    }

    /// Every agent known to the store or to this server (the fresher report
    /// wins), with its lag against `intent_revision`.
    pub async fn list(
        &self,
        store: &Arc<dyn Store>,
        intent_revision: u64,
    ) -> Result<Vec<AgentStatus>, ApiError> {
        let listing = store.list(stored::AGENTS).await?;
        let mut all: HashMap<String, StoredReport> = HashMap::new();
        for kv in listing.items {
            let Some(node) = kv.key.strip_prefix(stored::AGENTS) else {
                continue;
            };
            match serde_json::from_slice::<StoredReport>(&kv.value) {
                Ok(r) => {
                    all.insert(node.to_owned(), r);
                }
                Err(error) => tracing::warn!(key = %kv.key, %error, "unreadable agent report"),
            }
        }
        {
            let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            for (node, report) in reports.iter() {
                let newer = all
                    .get(node)
                    .is_none_or(|r| r.unix_ms <= report.stored.unix_ms);
                if newer {
                    all.insert(node.clone(), report.stored.clone());
                }
            }
        }
        let now = unix_ms(SystemTime::now());
        let mut out: Vec<AgentStatus> = all
            .into_iter()
            .map(|(node, r)| AgentStatus {
                node,
                applied_revision: r.status.applied_revision,
                lag: intent_revision.saturating_sub(r.status.applied_revision),
                last_report: humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_millis(r.unix_ms),
                )
                .to_string(),
                seconds_since_report: now.saturating_sub(r.unix_ms) / 1000,
                health: r.status.health,
                endpoints: r.status.endpoints,
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}
