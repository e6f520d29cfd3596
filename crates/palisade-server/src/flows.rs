//! Flows across the fleet: agents push batches of flow records
//! (`POST /api/v1/nodes/<node>/flows`); the server validates them and keeps
//! a bounded history in memory (oldest dropped first, and counted) that
//! clients read and follow (`GET /api/v1/flows`, NDJSON).
//!
//! Each server holds the flows its own agents sent. Flows are many, short
//! lived and only interesting while recent: sending them through the store
//! (etcd: a raft round and an fsync per write, and revisions that every
//! agent's stream would wake up for) would make the intent's store carry a
//! firehose it is not built for.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use palisade_client::api::ErrorDetail;
use palisade_client::visibility::{FlowRecord, FlowVerdict, FlowsAccepted};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::metrics::StreamKind;
use crate::routes::{ndjson, parse_since, JsonBody};
use crate::Shared;

/// Records one push may carry; larger batches are refused (split them).
pub const MAX_BATCH: usize = 5_000;
/// New records a follower may fall behind by before it skips some.
const FOLLOW_CAPACITY: usize = 4096;
/// A follow stream with nothing to say sends an empty line this often, so
/// that a client that went away is noticed and idle proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Validation problems listed in one answer.
const MAX_DETAILS: usize = 20;

/// One record as the server keeps it.
#[derive(Debug)]
pub struct StoredFlow {
    /// The record.
    pub record: FlowRecord,
    /// Its `@timestamp`.
    pub at: SystemTime,
    /// The record as received (unknown fields kept), one NDJSON line.
    pub line: Bytes,
}

/// Counts of the history, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Records held now.
    pub records: usize,
    /// The bound (`--flow-history`).
    pub capacity: usize,
    /// Records accepted since the server started.
    pub received: u64,
    /// Records dropped (oldest first) to stay within the bound.
    pub dropped: u64,
}

#[derive(Debug)]
struct Inner {
    records: VecDeque<Arc<StoredFlow>>,
    counts: HistoryCounts,
}

/// The recent flows this server received, and the followers' channel.
#[derive(Debug)]
pub struct FlowHistory {
    inner: Mutex<Inner>,
    sender: broadcast::Sender<Arc<StoredFlow>>,
}

impl FlowHistory {
    /// A history of at most `capacity` records.
    pub fn new(capacity: usize) -> FlowHistory {
        let (sender, _) = broadcast::channel(FOLLOW_CAPACITY);
        FlowHistory {
            inner: Mutex::new(Inner {
                records: VecDeque::with_capacity(capacity.min(65_536)),
                counts: HistoryCounts {
                    capacity,
                    ..HistoryCounts::default()
                },
            }),
            sender,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds records, dropping the oldest beyond the bound; returns how many
    /// were dropped.
    pub fn push(&self, records: Vec<StoredFlow>) -> u64 {
        let mut inner = self.lock();
        let mut dropped = 0;
        for record in records {
            let record = Arc::new(record);
            inner.counts.received += 1;
            // No follower is not an error: the record is in the history.
            let _ = self.sender.send(record.clone());
            if inner.counts.capacity == 0 {
                dropped += 1;
                continue;
            }
            if inner.records.len() == inner.counts.capacity {
                inner.records.pop_front();
                dropped += 1;
            }
            inner.records.push_back(record);
        }
        inner.counts.dropped += dropped;
        dropped
    }

    /// The records that pass `filter`, oldest first.
    pub fn matching(&self, filter: &FlowFilter) -> Vec<Arc<StoredFlow>> {
        self.lock()
            .records
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect()
    }

    /// The records that pass `filter`, and a receiver of every later one
    /// (subscribed under the same lock, so none is missed or repeated).
    fn follow(
        &self,
        filter: &FlowFilter,
    ) -> (Vec<Arc<StoredFlow>>, broadcast::Receiver<Arc<StoredFlow>>) {
        let inner = self.lock();
        let receiver = self.sender.subscribe();
        let records = inner
            .records
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        (records, receiver)
    }

    /// Its counts now.
    pub fn counts(&self) -> HistoryCounts {
        let inner = self.lock();
        HistoryCounts {
            records: inner.records.len(),
            ..inner.counts
        }
    }
}

/// Which records a reader wants.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only from or to this endpoint (`tenant:name` or `name`).
    pub endpoint: Option<String>,
    /// Only this verdict.
    pub verdict: Option<FlowVerdict>,
    /// Only at or after this time.
    pub since: Option<SystemTime>,
}

impl FlowFilter {
    /// Whether a record passes.
    pub fn matches(&self, flow: &StoredFlow) -> bool {
        let record = &flow.record;
        if let Some(t) = &self.tenant {
            if &record.palisade.tenant != t {
                return false;
            }
        }
        if let Some(v) = self.verdict {
            if record.verdict() != v {
                return false;
            }
        }
        if let Some(since) = self.since {
            if flow.at < since {
                return false;
            }
        }
        if let Some(wanted) = &self.endpoint {
            let ends = [record.source_endpoint(), record.destination_endpoint()];
            if !ends.iter().flatten().any(|e| endpoint_matches(wanted, e)) {
                return false;
            }
        }
        true
    }
}

/// `tenant:name` matches exactly; a bare `name` matches in any tenant.
fn endpoint_matches(wanted: &str, full_ref: &str) -> bool {
    if wanted.contains(':') {
        wanted == full_ref
    } else {
        full_ref.split_once(':').map(|(_, name)| name) == Some(wanted)
    }
}

/// Validates one pushed record; fills in `palisade.node` when absent.
fn validate(
    index: usize,
    mut value: serde_json::Value,
    node: &str,
) -> Result<StoredFlow, Box<ErrorDetail>> {
    let fail = |field: &str, message: String| {
        Box::new(ErrorDetail {
            document: Some(index),
            field: (!field.is_empty()).then(|| field.to_owned()),
            message,
            ..ErrorDetail::default()
        })
    };
    if !value.is_object() {
        return Err(fail("", "a flow record must be a JSON object".to_owned()));
    }
    let palisade = value
        .get_mut("palisade")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| {
            fail(
                "palisade",
                "missing: the palisade object (tenant, node, ...)".to_owned(),
            )
        })?;
    match palisade.get("node") {
        None | Some(serde_json::Value::Null) => {
            palisade.insert("node".to_owned(), node.into());
        }
        Some(serde_json::Value::String(n)) if n == node => {}
        Some(other) => {
            return Err(fail(
                "palisade.node",
                format!(
                    "{other} is not {node}: push each node's flows to its own /nodes/<node>/flows"
                ),
            ))
        }
    }
    let record: FlowRecord = serde_json::from_value(value.clone()).map_err(|e| {
        fail(
            "",
            format!("not a flow record: {e} (see docs/visibility.md for the fields)"),
        )
    })?;
    let at = humantime::parse_rfc3339_weak(&record.timestamp).map_err(|e| {
        fail(
            "@timestamp",
            format!("'{}' is not an RFC 3339 time: {e}", record.timestamp),
        )
    })?;
    if record.palisade.tenant.is_empty() {
        return Err(fail("palisade.tenant", "is empty".to_owned()));
    }
    if record.network.transport.is_empty() {
        return Err(fail("network.transport", "is empty".to_owned()));
    }
    let mut line = serde_json::to_vec(&value).expect("a JSON value serializes");
    line.push(b'\n');
    Ok(StoredFlow {
        record,
        at,
        line: Bytes::from(line),
    })
}

/// The body of a push: `{"records": [...]}` or a bare array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PushBody {
    /// `{"records": [...]}`.
    Batch {
        /// The records.
        records: Vec<serde_json::Value>,
    },
    /// `[...]`.
    List(Vec<serde_json::Value>),
}

/// `POST /api/v1/nodes/<node>/flows`: all records or none.
pub async fn push(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(node): Path<String>,
    JsonBody(body): JsonBody<PushBody>,
) -> Result<Json<FlowsAccepted>, ApiError> {
    principal.check_node(&node)?;
    let values = match body {
        PushBody::Batch { records } | PushBody::List(records) => records,
    };
    if values.len() > MAX_BATCH {
        shared.metrics.flows_rejected(values.len());
        return Err(ApiError::invalid(
            format!(
                "{} records in one push; send at most {MAX_BATCH} per request",
                values.len()
            ),
            Vec::new(),
        ));
    }
    let count = values.len();
    let mut records = Vec::with_capacity(count);
    let mut problems = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        match validate(index, value, &node) {
            Ok(record) => records.push(record),
            Err(detail) => problems.push(*detail),
        }
    }
    if !problems.is_empty() {
        shared.metrics.flows_rejected(count);
        let total = problems.len();
        problems.truncate(MAX_DETAILS);
        return Err(ApiError::invalid(
            format!(
                "{total} of {count} flow records are invalid (the first {} are listed); nothing was kept",
                problems.len()
            ),
            problems,
        ));
    }
    let dropped = shared.flows.push(records);
    shared.metrics.flows_received(&node, count as u64, dropped);
    Ok(Json(FlowsAccepted { accepted: count }))
}

/// The query of `GET /api/v1/flows`.
#[derive(Debug, Default, Deserialize)]
pub struct FlowsQuery {
    tenant: Option<String>,
    endpoint: Option<String>,
    verdict: Option<String>,
    since: Option<String>,
    follow: Option<bool>,
    limit: Option<usize>,
}

/// The filter of a query; tenant tokens only ever see their tenant.
fn filter_of(principal: &Principal, query: &FlowsQuery) -> Result<FlowFilter, ApiError> {
    principal.require_user()?;
    let tenant = match (principal.tenant(), query.tenant.as_deref()) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiError::forbidden(format!(
                "{} has role tenant:{own} and cannot read tenant {asked}'s flows",
                principal.subject
            )))
        }
        (Some(own), _) => Some(own.to_owned()),
        (None, asked) => asked.map(str::to_owned),
    };
    let verdict = query
        .verdict
        .as_deref()
        .map(str::parse::<FlowVerdict>)
        .transpose()
        .map_err(|e| ApiError::invalid(e, Vec::new()))?;
    Ok(FlowFilter {
        tenant,
        endpoint: query.endpoint.clone().filter(|e| !e.is_empty()),
        verdict,
        since: query.since.as_deref().map(parse_since).transpose()?,
    })
}

/// `GET /api/v1/flows`: NDJSON, oldest first; `follow=true` stays open.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Query(query): Query<FlowsQuery>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&principal, &query)?;
    let (sender, receiver) = mpsc::channel(64);
    if query.follow.unwrap_or(false) {
        let (records, live) = shared.flows.follow(&filter);
        let guard = shared.metrics.stream_opened(StreamKind::Flows);
        tokio::spawn(async move {
            let _guard = guard;
            follow(records, live, filter, sender).await;
        });
    } else {
        let mut records = shared.flows.matching(&filter);
        if let Some(limit) = query.limit {
            records.drain(..records.len().saturating_sub(limit));
        }
        tokio::spawn(async move {
            for r in records {
                if sender.send(Ok(r.line.clone())).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(ndjson(receiver))
}

type Lines = mpsc::Sender<Result<Bytes, Infallible>>;

/// Sends the history, then every new matching record until the client goes.
async fn follow(
    history: Vec<Arc<StoredFlow>>,
    mut live: broadcast::Receiver<Arc<StoredFlow>>,
    filter: FlowFilter,
    lines: Lines,
) {
    for r in history {
        if lines.send(Ok(r.line.clone())).await.is_err() {
            return;
        }
    }
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        let line = tokio::select! {
            received = live.recv() => match received {
                Ok(r) if filter.matches(&r) => r.line.clone(),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a flow follower fell behind and skipped records");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => Bytes::from_static(b"\n"),
        };
        if lines.send(Ok(line)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(tenant: &str, action: &str, src: &str, dst: &str) -> serde_json::Value {
        json!({
            "@timestamp": "2025-01-10T12:01:07Z",
            "event": {"action": action},
            "source": {"ip": "10.0.1.10", "port": 40000},
            "destination": {"ip": "10.0.3.10", "port": 5432},
            "network": {"transport": "tcp", "direction": "ingress"},
            "palisade": {"tenant": tenant, "source": {"endpoint": src}, "destination": {"endpoint": dst}}
        })
    }

    #[test]
    fn validation_fills_in_the_node_and_refuses_another_nodes_records() {
        let ok = validate(0, record("acme", "packet-denied", "web-1", "db-1"), "n1").unwrap();
        assert_eq!(ok.record.palisade.node.as_deref(), Some("n1"));
        assert!(std::str::from_utf8(&ok.line)
            .unwrap()
            .contains(r#""node":"n1""#));
        let mut other = record("acme", "packet-denied", "web-1", "db-1");
        other["palisade"]["node"] = "n2".into();
        let err = validate(3, other, "n1").unwrap_err();
        assert_eq!(err.document, Some(3));
        assert_eq!(err.field.as_deref(), Some("palisade.node"));
        let bad = validate(0, record("acme", "exploded", "a", "b"), "n1").unwrap_err();
        assert!(bad.message.contains("exploded"), "{}", bad.message);
        let mut late = record("acme", "packet-denied", "a", "b");
        late["@timestamp"] = "yesterday".into();
        assert_eq!(
            validate(0, late, "n1").unwrap_err().field.as_deref(),
            Some("@timestamp")
        );
    }

    #[test]
    fn filters_match_tenant_endpoint_and_verdict() {
        let flow = validate(
            0,
            record("acme", "packet-denied", "web-1", "acme:db-1"),
            "n1",
        )
        .unwrap();
        let f = |tenant: Option<&str>, endpoint: Option<&str>, verdict| FlowFilter {
            tenant: tenant.map(Into::into),
            endpoint: endpoint.map(Into::into),
            verdict,
            since: None,
        };
        assert!(f(Some("acme"), Some("db-1"), Some(FlowVerdict::Deny)).matches(&flow));
        assert!(f(None, Some("acme:web-1"), None).matches(&flow));
        assert!(!f(Some("globex"), None, None).matches(&flow));
        assert!(!f(None, Some("globex:db-1"), None).matches(&flow));
        assert!(!f(None, None, Some(FlowVerdict::Allow)).matches(&flow));
    }

    #[test]
    fn the_history_drops_the_oldest_and_counts_them() {
        let history = FlowHistory::new(2);
        let make = |port: u16| {
            let mut r = record("acme", "connection-allowed", "a", "b");
            r["destination"]["port"] = port.into();
            validate(0, r, "n1").unwrap()
        };
        assert_eq!(history.push(vec![make(1), make(2)]), 0);
        assert_eq!(history.push(vec![make(3)]), 1);
        let ports: Vec<_> = history
            .matching(&FlowFilter::default())
            .iter()
            .map(|r| r.record.destination.port.unwrap())
            .collect();
        assert_eq!(ports, [2, 3]);
        let counts = history.counts();
        assert_eq!((counts.records, counts.received, counts.dropped), (2, 3, 1));
    }
}
