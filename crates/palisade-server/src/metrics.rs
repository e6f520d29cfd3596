//! The server's Prometheus metrics (`GET /metrics`, OpenMetrics text):
//! API requests and their latency by route, method and status; open
//! streams by kind; agents' lag and health; flows received and dropped;
//! the store's revision. Counters move as things happen; agent and store
//! gauges are read when scraped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::Shared;

/// The content type of the OpenMetrics text format (Prometheus scrapes it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of an API request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// The route template, e.g. `/api/v1/{kinds}`: never the raw path, so
    /// that names in URLs do not multiply the series.
    route: String,
    method: String,
    status: String,
}

/// Labels of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    kind: &'static str,
}

/// Labels of an agent's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// The kinds of long-lived responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /api/v1/watch`.
    Watch,
    /// `GET /api/v1/nodes/<node>/stream`.
    Node,
    /// `GET /api/v1/flows?follow=true`.
    Flows,
}

impl StreamKind {
    fn as_str(self) -> &'static str {
        match self {
            StreamKind::Watch => "watch",
            StreamKind::Node => "node",
            StreamKind::Flows => "flows",
        }
    }
}

type LatencyFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Every metric of the server, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
    streams_open: Family<StreamLabels, Gauge>,
    streams_opened: Family<StreamLabels, Counter>,
    agent_lag: Family<NodeLabels, Gauge>,
    agent_healthy: Family<NodeLabels, Gauge>,
    agent_report_age: Family<NodeLabels, Gauge>,
    flows_received: Family<NodeLabels, Counter>,
    flows_dropped: Counter,
    flows_rejected: Counter,
    flow_history: Gauge,
    counter_reports: Family<NodeLabels, Counter>,
    store_revision: Gauge,
    intent_revision: Gauge,
}

/// Keeps a stream counted as open until dropped.
#[derive(Debug)]
pub struct StreamGuard {
    gauge: Gauge,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `palisade_server` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_server");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an API request (streams: until the response starts)",
            Unit::Seconds,
            latency.clone(),
        );
        let streams_open = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "streams_open",
            "Open long-lived responses: watch, node (agents' streams), flows (followers)",
            streams_open.clone(),
        );
        let streams_opened = Family::<StreamLabels, Counter>::default();
        registry.register(
            "streams_opened",
            "Long-lived responses opened since the start, by kind",
            streams_opened.clone(),
        );
        let agent_lag = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "agent_lag_revisions",
            "Revisions of intent each agent is behind (0: up to date)",
            agent_lag.clone(),
        );
        let agent_healthy = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "agent_healthy",
            "1 when the agent's last report says ok, else 0",
            agent_healthy.clone(),
        );
        let agent_report_age = Family::<NodeLabels, Gauge>::default();
        registry.register_with_unit(
            "agent_last_report_age",
            "Time since the agent's last status report",
            Unit::Seconds,
            agent_report_age.clone(),
        );
        let flows_received = Family::<NodeLabels, Counter>::default();
        registry.register(
            "flows_received",
            "Flow records accepted from agents, by node",
            flows_received.clone(),
        );
        let flows_dropped = Counter::default();
        registry.register(
            "flows_dropped",
            "Flow records dropped from the history (oldest first) to stay within --flow-history",
            flows_dropped.clone(),
        );
        let flows_rejected = Counter::default();
        registry.register(
            "flows_rejected",
            "Flow records refused because their batch was invalid",
            flows_rejected.clone(),
        );
        let flow_history = Gauge::default();
        registry.register(
            "flow_history_records",
            "Flow records held in the history now",
            flow_history.clone(),
        );
        let counter_reports = Family::<NodeLabels, Counter>::default();
        registry.register(
            "counter_reports",
            "Rule counter reports received from agents, by node",
            counter_reports.clone(),
        );
        let store_revision = Gauge::default();
        registry.register(
            "store_revision",
            "The store revision this server has seen",
            store_revision.clone(),
        );
        let intent_revision = Gauge::default();
        registry.register(
            "intent_revision",
            "The last store revision that changed the intent",
            intent_revision.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            streams_open,
            streams_opened,
            agent_lag,
            agent_healthy,
            agent_report_age,
            flows_received,
            flows_dropped,
            flows_rejected,
            flow_history,
            counter_reports,
            store_revision,
            intent_revision,
        }
    }

    /// Counts one answered request.
    fn observe(&self, route: &str, method: &str, status: StatusCode, took: Duration) {
        let labels = RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status: status.as_u16().to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts a stream as open until the guard is dropped.
    pub fn stream_opened(&self, kind: StreamKind) -> StreamGuard {
        let labels = StreamLabels {
            kind: kind.as_str(),
        };
        self.streams_opened.get_or_create(&labels).inc();
        let gauge = self.streams_open.get_or_create_owned(&labels);
        gauge.inc();
        StreamGuard { gauge }
    }

    /// Counts accepted flow records and those the history dropped for them.
    pub fn flows_received(&self, node: &str, accepted: u64, dropped: u64) {
        self.flows_received
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc_by(accepted);
        self.flows_dropped.inc_by(dropped);
    }

    /// Counts refused flow records.
    pub fn flows_rejected(&self, records: usize) {
        self.flows_rejected.inc_by(records as u64);
    }

    /// Counts a rule counter report.
    pub fn counter_report(&self, node: &str) {
        self.counter_reports
            .get_or_create(&NodeLabels {
                node: node.to_owned(),
            })
            .inc();
    }

    /// The text exposition, after reading the gauges that are computed at
    /// scrape time.
    async fn render(&self, shared: &Shared) -> Result<String, ApiError> {
        let (revision, intent_revision) = shared.fanout.revisions();
        self.store_revision.set(gauge_value(revision));
        self.intent_revision.set(gauge_value(intent_revision));
        self.flow_history
            .set(gauge_value(shared.flows.counts().records as u64));
        let agents = shared.agents.list(&shared.store, intent_revision).await?;
        // Agents that are gone must not linger as stale series.
        self.agent_lag.clear();
        self.agent_healthy.clear();
        self.agent_report_age.clear();
        for agent in agents {
            let labels = NodeLabels { node: agent.node };
            self.agent_lag
                .get_or_create(&labels)
                .set(gauge_value(agent.lag));
            self.agent_healthy
                .get_or_create(&labels)
                .set(i64::from(agent.health == "ok"));
            self.agent_report_age
                .get_or_create(&labels)
                .set(gauge_value(agent.seconds_since_report));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| ApiError::internal(format!("cannot encode the metrics: {e}")))?;
        Ok(text)
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Middleware: counts every routed request with its route template.
pub async fn track(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    shared
        .metrics
        .observe(&route, &method, response.status(), started.elapsed());
    response
}

/// `GET /metrics` on the API listener: admins only (it names every agent).
pub async fn metrics(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_admin("reading /metrics")?;
    metrics_response(&shared).await
}

/// `GET /metrics` on `--metrics-listen`: no token (bind it to a private address).
pub async fn metrics_open(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    metrics_response(&shared).await
}

async fn metrics_response(shared: &Shared) -> Result<Response, ApiError> {
    let text = shared.metrics.render(shared).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
