//! What an agent that follows a control plane sends back to it: its status
//! (applied revision, health, endpoints), its flow records and its rule
//! counters. The agent's threads hand them over through [`Reports`] without
//! ever waiting for the network; tasks on the server link's runtime send
//! them ([`run_status`], [`run_flows`], [`run_counters`]).
//!
//! Flow records wait in a bounded queue: when the server is away and the
//! queue is full, the oldest records are dropped and counted
//! (`palisade_agent_flow_records_dropped_total{reason="queue_full"}`), so
//! that neither enforcement nor the event reader ever waits for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use palisade_client::api::NodeStatus;
use palisade_client::visibility::{CounterReport, FlowRecord};
use palisade_client::{Client, ClientError};
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::metrics::Metrics;

/// Records pushed in one request at most (the server takes up to 5,000).
pub const FLOW_BATCH: usize = 500;
/// Pause after a failed push before the next attempt.
const PUSH_RETRY: Duration = Duration::from_secs(1);
/// How long the first record of a burst waits for the rest, so that a burst
/// goes out as one request (and a lone denied probe still shows up at once).
const LINGER: Duration = Duration::from_millis(50);

/// The agent's side of the reports: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Reports {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: watch::Sender<Option<NodeStatus>>,
    counters: watch::Sender<Option<CounterReport>>,
    flows: Mutex<VecDeque<Value>>,
    flow_capacity: usize,
    flows_ready: Notify,
    metrics: Metrics,
}

impl Reports {
    /// Reports with a flow queue of `flow_capacity` records.
    pub fn new(flow_capacity: usize, metrics: Metrics) -> Reports {
        Reports {
            inner: Arc::new(Inner {
                status: watch::channel(None).0,
                counters: watch::channel(None).0,
                flows: Mutex::new(VecDeque::new()),
                flow_capacity: flow_capacity.max(1),
                flows_ready: Notify::new(),
                metrics,
            }),
        }
    }

    /// The status to report now (sent at once, and again periodically).
    pub fn set_status(&self, status: NodeStatus) {
        self.inner.status.send_replace(Some(status));
    }

    /// The rule counters to report (sent when they changed).
    pub fn set_counters(&self, report: CounterReport) {
        self.inner.counters.send_if_modified(|current| {
            if current.as_ref() == Some(&report) {
                false
            } else {
                *current = Some(report);
                true
            }
        });
    }

    /// Queues flow records for the server; records the server would refuse
    /// (no tenant: packets that matched no tenant) stay in the flow log only.
    pub fn push_flows(&self, records: impl IntoIterator<Item = Value>) {
        let mut dropped = 0;
        {
            let mut queue = self.lock_flows();
            let was_empty = queue.is_empty();
            for record in records {
                if serde_json::from_value::<FlowRecord>(record.clone()).is_err() {
                    self.inner.metrics.flow_records_dropped("unaddressable", 1);
                    continue;
                }
                if queue.len() >= self.inner.flow_capacity {
                    queue.pop_front();
                    dropped += 1;
                }
                queue.push_back(record);
            }
            self.inner.metrics.set_flow_queue(queue.len());
            if (was_empty && !queue.is_empty()) || queue.len() >= FLOW_BATCH {
                self.inner.flows_ready.notify_one();
            }
        }
        if dropped > 0 {
            self.inner
                .metrics
                .flow_records_dropped("queue_full", dropped);
        }
    }

    /// Records waiting for the server.
    pub fn queued_flows(&self) -> usize {
        self.lock_flows().len()
    }

    fn lock_flows(&self) -> std::sync::MutexGuard<'_, VecDeque<Value>> {
        self.inner
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes up to [`FLOW_BATCH`] records, oldest first.
    fn take_flows(&self) -> Vec<Value> {
        let mut queue = self.lock_flows();
        let n = queue.len().min(FLOW_BATCH);
        let batch = queue.drain(..n).collect();
        self.inner.metrics.set_flow_queue(queue.len());
        batch
    }

    /// Puts back a batch that could not be sent, in front, as far as the
    /// queue has room (newer records win).
    fn put_back(&self, batch: Vec<Value>) {
        let mut queue = self.lock_flows();
        let room = self.inner.flow_capacity.saturating_sub(queue.len());
        let dropped = batch.len().saturating_sub(room);
        for record in batch.into_iter().skip(dropped).rev() {
            queue.push_front(record);
        }
        self.inner.metrics.set_flow_queue(queue.len());
        drop(queue);
        if dropped > 0 {
            self.inner
                .metrics
                .flow_records_dropped("queue_full", dropped as u64);
        }
    }
}

/// Sends the status whenever it changes, and every `every` anyway (the
/// server shows how long ago each agent reported).
pub async fn run_status(client: Client, node: String, reports: Reports, every: Duration) {
    let mut changes = reports.inner.status.subscribe();
    loop {
        let status = changes.borrow_and_update().clone();
        if let Some(status) = status {
            if let Err(e) = client.report_status(&node, &status).await {
                log_failure("status report", &e);
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Sends the rule counters when they changed, at most every `every`.
pub async fn run_counters(client: Client, node: String, reports: Reports, every: Duration) {
    let mut changes = reports.inner.counters.subscribe();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        loop {
            let report = changes.borrow_and_update().clone();
            let Some(report) = report else { break };
            match client.put_counters(&node, &report).await {
                Ok(()) => break,
                Err(e) => {
                    log_failure("rule counter report", &e);
                    tokio::time::sleep(every).await;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Pushes the queued flow records as they come: the first of a burst waits
/// [`LINGER`] for the rest, a full batch goes at once, and what could not be
/// sent is tried again after a pause (and at least every `every`).
pub async fn run_flows(client: Client, node: String, reports: Reports, every: Duration) {
    loop {
        tokio::select! {
            _ = reports.inner.flows_ready.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        if reports.queued_flows() < FLOW_BATCH {
            tokio::time::sleep(LINGER.min(every)).await;
        }
        loop {
            let batch = reports.take_flows();
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            match client.post_flow_values(&node, &batch).await {
                Ok(_) => reports.inner.metrics.flow_records_pushed(n),
                Err(e)
                    if e.status().is_some_and(|s| {
                        (400..500).contains(&s) && s != 401 && s != 403 && s != 429
                    }) =>
                {
                    // The server found a record invalid: sending it again
                    // would fail again. A bug in the agent; say so.
                    tracing::error!(error = %e, records = n, "the server refused a batch of flow records; dropping it");
                    reports.inner.metrics.flow_records_dropped("rejected", n);
                }
                Err(e) => {
                    log_failure("flow push", &e);
                    reports.put_back(batch);
                    tokio::time::sleep(PUSH_RETRY).await;
                    break;
                }
            }
            if reports.queued_flows() < FLOW_BATCH {
                break;
            }
        }
    }
}

/// Pushes what is queued once (when the agent stops).
pub async fn push_remaining(client: &Client, node: &str, reports: &Reports) {
    loop {
        let batch = reports.take_flows();
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        match client.post_flow_values(node, &batch).await {
            Ok(_) => reports.inner.metrics.flow_records_pushed(n),
            Err(e) => {
                log_failure("flow push", &e);
                return;
            }
        }
    }
}

/// A failed report is expected while the server is away (the node stream
/// says so once); log it quietly.
fn log_failure(what: &str, error: &ClientError) {
    tracing::debug!(error = %error, "{what} failed; retrying later");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(n: u64) -> Value {
        json!({"@timestamp": "2025-01-01T00:00:00.000Z",
               "event": {"action": "packet-denied"},
               "source": {"ip": "10.0.0.1", "port": n}, "destination": {"ip": "10.0.0.2"},
               "network": {"transport": "tcp"}, "palisade": {"tenant": "acme"}})
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let metrics = Metrics::new("n1");
        let reports = Reports::new(3, metrics.clone());
        reports.push_flows((0..5).map(record));
        assert_eq!(reports.queued_flows(), 3);
        let batch = reports.take_flows();
        let ports: Vec<u64> = batch
            .iter()
            .map(|r| r["source"]["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [2, 3, 4], "the oldest went first");
        // A batch put back after a failure goes in front of newer records.
        reports.push_flows([record(5)]);
        reports.put_back(batch);
        let ports: Vec<u64> = reports
            .take_flows()
            .iter()
            .map(|r| r["source"]["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [3, 4, 5]);
        let text = metrics.render();
        assert!(
            text.contains("palisade_agent_flow_records_dropped_total{reason=\"queue_full\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn records_the_server_would_refuse_are_not_queued() {
        let metrics = Metrics::new("n1");
        let reports = Reports::new(10, metrics.clone());
        let mut no_tenant = record(1);
        no_tenant["palisade"] = json!({});
        reports.push_flows([no_tenant, record(2)]);
        assert_eq!(reports.queued_flows(), 1);
        assert!(metrics
            .render()
            .contains("palisade_agent_flow_records_dropped_total{reason=\"unaddressable\"} 1"));
    }
}
