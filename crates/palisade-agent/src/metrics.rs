//! The agent's Prometheus metrics (`--metrics-listen ADDR`, `GET /metrics`,
//! OpenMetrics text, written with `prometheus-client` as the server's are).
//!
//! Two kinds of series:
//! - **live** ones, updated as things happen: reconcile and propagation
//!   latency histograms, the server connection, flow records;
//! - **sampled** ones, read from the datapath's maps by the agent's loop
//!   every `Timing::sample` ([`DatapathSample`]) and written into the
//!   families when scraped: packets and bytes by verdict, by drop reason and
//!   by rule (every rule of the compiled tables, also those that never
//!   matched), conntrack entries, and every map's fill level against its
//!   capacity. A rule that leaves the intent leaves the metrics with it.
//!
//! `docs/visibility.md` lists every metric; `docs/grafana/palisade.json` is
//! a dashboard over them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_datapath::abi::Counter as DpCounter;
use palisade_datapath::DropReason;
use palisade_model::Action;
use palisade_policy::Attribution;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::error::{AgentError, Result};
use crate::netns::NetnsHandle;
use crate::source::StopFlag;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One map's fill level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    /// The map's name (`POLICY`, `CT`, ...).
    pub map: &'static str,
    /// Entries in it now.
    pub entries: u64,
    /// Entries it holds at most.
    pub capacity: u64,
}

/// What the agent's loop read from the datapath at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatapathSample {
    /// Every drop reason with its packets and bytes (zeros included).
    pub drops: Vec<(DropReason, DpCounter)>,
    /// Packets and bytes each rule decided, summed over the cookies that
    /// stand for it; zero for the rules of the compiled tables that never
    /// matched.
    pub rules: Vec<(Attribution, DpCounter)>,
    /// Fill level of every map the agent can size.
    pub maps: Vec<MapFill>,
    /// Events lost because the ring buffer was full.
    pub events_lost: u64,
    /// Connections dropped because their conntrack entry could not be made.
    pub conntrack_create_failed: u64,
    /// The datapath's policy revision.
    pub policy_revision: u32,
    /// Ports (endpoints and uplinks) with hooks attached.
    pub ports: usize,
}

/// The verdict a rule or default gives: `allow` or `deny`.
pub fn verdict_of(attribution: &Attribution) -> &'static str {
    match attribution {
        Attribution::Rule { action, .. } => match action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
            Action::Pass => "pass",
        },
        Attribution::NotIsolated { .. } | Attribution::SelfTraffic => "allow",
        Attribution::TierDefault { .. }
        | Attribution::TenantDefault { .. }
        | Attribution::CrossTenant => "deny",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WhyLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MapLabels {
    map: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A rule's attribution as labels: `rule` is the index in its policy's
/// list, or what kind of default decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabels {
    tenant: String,
    tier: String,
    policy: String,
    direction: String,
    rule: String,
    action: &'static str,
}

impl RuleLabels {
    fn of(attribution: &Attribution) -> RuleLabels {
        let action = verdict_of(attribution);
        let labels =
            |tenant: &str, tier: &str, policy: &str, direction: String, rule: String| RuleLabels {
                tenant: tenant.to_owned(),
                tier: tier.to_owned(),
                policy: policy.to_owned(),
                direction,
                rule,
                action,
            };
        match attribution {
            Attribution::Rule {
                tier,
                tenant,
                policy,
                direction,
                index,
                ..
            } => labels(
                tenant,
                tier,
                policy,
                direction.to_string(),
                index.to_string(),
            ),
            Attribution::TierDefault {
                tier,
                tenant,
                direction,
            } => labels(
                tenant,
                tier,
                "",
                direction.to_string(),
                "tier-default".into(),
            ),
            Attribution::TenantDefault { tenant, direction } => labels(
                tenant,
                "",
                "",
                direction.to_string(),
                "tenant-default".into(),
            ),
            Attribution::NotIsolated { tenant, direction } => {
                labels(tenant, "", "", direction.to_string(), "not-isolated".into())
            }
            Attribution::SelfTraffic => labels("", "", "", String::new(), "self".into()),
            Attribution::CrossTenant => labels("", "", "", String::new(), "cross-tenant".into()),
        }
    }
}

/// Every metric of one agent. Cheap to clone; every thread updates its own.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Rendering fills the sampled families first: one scrape at a time.
    registry: Mutex<Registry>,
    sample: Mutex<Option<Arc<DatapathSample>>>,
    // live
    reconcile_duration: Histogram,
    reconciles: Family<ResultLabels, Counter>,
    propagation: Histogram,
    server_connected: Gauge,
    server_disconnects: Counter,
    /// Unix milliseconds of the last message from the server (0: never).
    last_contact_ms: AtomicU64,
    server_revision: Gauge,
    applied_revision: Gauge,
    flow_records: Counter,
    flow_aggregated: Counter,
    flow_pushed: Counter,
    flow_dropped: Family<WhyLabels, Counter>,
    flow_queue: Gauge,
    flow_log_rotations: Counter,
    // refreshed when scraped
    last_contact_age: Gauge<f64, AtomicU64>,
    watch_lag: Gauge,
    dropped_packets: Family<ReasonLabels, Counter>,
    dropped_bytes: Family<ReasonLabels, Counter>,
    verdict_packets: Family<VerdictLabels, Counter>,
    verdict_bytes: Family<VerdictLabels, Counter>,
    rule_packets: Family<RuleLabels, Counter>,
    rule_bytes: Family<RuleLabels, Counter>,
    map_entries: Family<MapLabels, Gauge>,
    map_capacity: Family<MapLabels, Gauge>,
    conntrack_entries: Gauge,
    events_lost: Counter,
    conntrack_create_failed: Counter,
    policy_revision: Gauge,
    ports: Gauge,
}

/// Reconcile latencies: 0.5 ms .. ~16 s.
fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Propagation latencies: 1 ms .. ~33 s (a server that was away adds its outage).
fn propagation_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    /// Every metric of `node`'s agent, registered under `palisade_agent`
    /// (`node` is a constant label of `palisade_agent_info`).
    pub fn new(node: &str) -> Metrics {
        let mut r = Registry::with_prefix("palisade_agent");
        let info = prometheus_client::metrics::info::Info::new(vec![
            ("node".to_owned(), node.to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]);
        r.register("build", "The agent's node and version", info);

        let reconcile_duration = reconcile_buckets();
        r.register_with_unit(
            "reconcile_duration",
            "Time to reconcile the kernel's maps with a new desired state (diff, ordered writes, attach)",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconciles = Family::<ResultLabels, Counter>::default();
        r.register(
            "reconciles",
            "Reconciles by result: ok, or error (the last good state stays enforced)",
            reconciles.clone(),
        );
        let propagation = propagation_buckets();
        r.register_with_unit(
            "propagation",
            "From the server committing a revision to the agent having it in the kernel",
            Unit::Seconds,
            propagation.clone(),
        );
        let server_connected = Gauge::default();
        r.register(
            "server_connected",
            "1 while the node stream is connected; 0: failing static on the last state applied",
            server_connected.clone(),
        );
        let server_disconnects = Counter::default();
        r.register(
            "server_disconnects",
            "Times the node stream was lost",
            server_disconnects.clone(),
        );
        let last_contact_age = Gauge::<f64, AtomicU64>::default();
        r.register_with_unit(
            "server_last_contact_age",
            "Time since the last message (heartbeats included) from the server; absent before the first",
            Unit::Seconds,
            last_contact_age.clone(),
        );
        let server_revision = Gauge::default();
        r.register(
            "server_revision",
            "The last revision the server's stream said the node has everything up to",
            server_revision.clone(),
        );
        let applied_revision = Gauge::default();
        r.register(
            "applied_revision",
            "The last server revision the agent has in the kernel",
            applied_revision.clone(),
        );
        let watch_lag = Gauge::default();
        r.register(
            "watch_lag_revisions",
            "Revisions received from the server but not yet in the kernel",
            watch_lag.clone(),
        );
        let flow_records = Counter::default();
        r.register(
            "flow_records",
            "Flow records made (written to the flow log and queued for the server)",
            flow_records.clone(),
        );
        let flow_aggregated = Counter::default();
        r.register(
            "flow_records_aggregated",
            "Denied and audit records folded into an aggregate of their flow instead of written",
            flow_aggregated.clone(),
        );
        let flow_pushed = Counter::default();
        r.register(
            "flow_records_pushed",
            "Flow records the server accepted",
            flow_pushed.clone(),
        );
        let flow_dropped = Family::<WhyLabels, Counter>::default();
        r.register(
            "flow_records_dropped",
            "Flow records not sent to the server: queue_full (server away, oldest dropped), rejected (refused by the server), unaddressable (no tenant)",
            flow_dropped.clone(),
        );
        let flow_queue = Gauge::default();
        r.register(
            "flow_records_queued",
            "Flow records waiting to be sent to the server",
            flow_queue.clone(),
        );
        let flow_log_rotations = Counter::default();
        r.register(
            "flow_log_rotations",
            "Times the flow log file was rotated",
            flow_log_rotations.clone(),
        );
        let dropped_packets = Family::<ReasonLabels, Counter>::default();
        r.register(
            "dropped_packets",
            "Packets the datapath dropped, by drop reason (DROP_COUNTERS)",
            dropped_packets.clone(),
        );
        let dropped_bytes = Family::<ReasonLabels, Counter>::default();
        r.register(
            "dropped_bytes",
            "Bytes the datapath dropped, by drop reason",
            dropped_bytes.clone(),
        );
        let verdict_packets = Family::<VerdictLabels, Counter>::default();
        r.register(
            "packets",
            "Packets the policy decided (first packets of connections, denied packets, revalidations), by verdict",
            verdict_packets.clone(),
        );
        let verdict_bytes = Family::<VerdictLabels, Counter>::default();
        r.register(
            "bytes",
            "Bytes of the packets the policy decided, by verdict",
            verdict_bytes.clone(),
        );
        let rule_packets = Family::<RuleLabels, Counter>::default();
        r.register(
            "rule_packets",
            "Packets each rule or default decided on this node (0: never matched)",
            rule_packets.clone(),
        );
        let rule_bytes = Family::<RuleLabels, Counter>::default();
        r.register(
            "rule_bytes",
            "Bytes of the packets each rule or default decided",
            rule_bytes.clone(),
        );
        let map_entries = Family::<MapLabels, Gauge>::default();
        r.register(
            "map_entries",
            "Entries in each datapath map",
            map_entries.clone(),
        );
        let map_capacity = Family::<MapLabels, Gauge>::default();
        r.register(
            "map_capacity",
            "Entries each datapath map holds at most",
            map_capacity.clone(),
        );
        let conntrack_entries = Gauge::default();
        r.register(
            "conntrack_entries",
            "Tracked connections (CT entries, expired ones not yet collected included)",
            conntrack_entries.clone(),
        );
        let events_lost = Counter::default();
        r.register(
            "events_lost",
            "Datapath events lost because the ring buffer was full",
            events_lost.clone(),
        );
        let conntrack_create_failed = Counter::default();
        r.register(
            "conntrack_create_failed",
            "Packets dropped because their conntrack entry could not be made",
            conntrack_create_failed.clone(),
        );
        let policy_revision = Gauge::default();
        r.register(
            "policy_revision",
            "The datapath's policy revision (bumped when verdicts may change)",
            policy_revision.clone(),
        );
        let ports = Gauge::default();
        r.register(
            "ports",
            "Ports (endpoint ports and uplinks) with the datapath's hooks attached",
            ports.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(r),
                sample: Mutex::new(None),
                reconcile_duration,
                reconciles,
                propagation,
                server_connected,
                server_disconnects,
                last_contact_ms: AtomicU64::new(0),
                server_revision,
                applied_revision,
                flow_records,
                flow_aggregated,
                flow_pushed,
                flow_dropped,
                flow_queue,
                flow_log_rotations,
                last_contact_age,
                watch_lag,
                dropped_packets,
                dropped_bytes,
                verdict_packets,
                verdict_bytes,
                rule_packets,
                rule_bytes,
                map_entries,
                map_capacity,
                conntrack_entries,
                events_lost,
                conntrack_create_failed,
                policy_revision,
                ports,
            }),
        }
    }

    /// A reconcile that took `took`.
    pub fn reconciled(&self, took: Duration, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner
            .reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if ok {
            self.inner.reconcile_duration.observe(took.as_secs_f64());
        }
    }

    /// A revision the server committed `took` before the agent applied it.
    pub fn propagated(&self, took: Duration) {
        self.inner.propagation.observe(took.as_secs_f64());
    }

    /// The node stream connected (`true`) or was lost.
    pub fn set_connected(&self, connected: bool) {
        self.inner.server_connected.set(i64::from(connected));
        if connected {
            self.contact();
        } else {
            self.inner.server_disconnects.inc();
        }
    }

    /// A message from the server arrived now.
    pub fn contact(&self) {
        self.inner
            .last_contact_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    /// The revision the server's stream has brought the node up to.
    pub fn set_server_revision(&self, revision: u64) {
        self.inner.server_revision.set(gauge_value(revision));
    }

    /// The revision in the kernel.
    pub fn set_applied_revision(&self, revision: u64) {
        self.inner.applied_revision.set(gauge_value(revision));
    }

    /// Flow records made.
    pub fn flow_records(&self, n: u64) {
        self.inner.flow_records.inc_by(n);
    }

    /// Records folded into aggregates.
    pub fn flow_records_aggregated(&self, n: u64) {
        self.inner.flow_aggregated.inc_by(n);
    }

    /// Records the server accepted.
    pub fn flow_records_pushed(&self, n: u64) {
        self.inner.flow_pushed.inc_by(n);
    }

    /// Records not sent, and why.
    pub fn flow_records_dropped(&self, reason: &'static str, n: u64) {
        self.inner
            .flow_dropped
            .get_or_create(&WhyLabels { reason })
            .inc_by(n);
    }

    /// Records waiting for the server.
    pub fn set_flow_queue(&self, n: usize) {
        self.inner.flow_queue.set(gauge_value(n as u64));
    }

    /// Flow log rotations.
    pub fn flow_log_rotated(&self, n: u64) {
        self.inner.flow_log_rotations.inc_by(n);
    }

    /// The datapath as last read.
    pub fn set_sample(&self, sample: Arc<DatapathSample>) {
        *self
            .inner
            .sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sample);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let registry = self
            .inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.refresh();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Writes the sampled and time-based values into their families.
    fn refresh(&self) {
        let i = &self.inner;
        let last = i.last_contact_ms.load(Ordering::Relaxed);
        if last > 0 {
            let age = unix_ms(SystemTime::now()).saturating_sub(last);
            i.last_contact_age.set(age as f64 / 1000.0);
        }
        i.watch_lag
            .set((i.server_revision.get() - i.applied_revision.get()).max(0));
        let sample = i
            .sample
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(sample) = sample else { return };
        // Absolute values: clear, then set each counter to its total.
        i.dropped_packets.clear();
        i.dropped_bytes.clear();
        for (reason, c) in &sample.drops {
            let labels = ReasonLabels {
                reason: reason.name(),
            };
            i.dropped_packets.get_or_create(&labels).inc_by(c.packets);
            i.dropped_bytes.get_or_create(&labels).inc_by(c.bytes);
        }
        i.verdict_packets.clear();
        i.verdict_bytes.clear();
        i.rule_packets.clear();
        i.rule_bytes.clear();
        for verdict in ["allow", "deny"] {
            i.verdict_packets
                .get_or_create(&VerdictLabels { verdict })
                .inc_by(0);
            i.verdict_bytes
                .get_or_create(&VerdictLabels { verdict })
                .inc_by(0);
        }
        for (attribution, c) in &sample.rules {
            let labels = RuleLabels::of(attribution);
            let verdict = VerdictLabels {
                verdict: labels.action,
            };
            i.verdict_packets.get_or_create(&verdict).inc_by(c.packets);
            i.verdict_bytes.get_or_create(&verdict).inc_by(c.bytes);
            i.rule_packets.get_or_create(&labels).inc_by(c.packets);
            i.rule_bytes.get_or_create(&labels).inc_by(c.bytes);
        }
        i.map_entries.clear();
        i.map_capacity.clear();
        for fill in &sample.maps {
            let labels = MapLabels { map: fill.map };
            i.map_entries
                .get_or_create(&labels)
                .set(gauge_value(fill.entries));
            i.map_capacity
                .get_or_create(&labels)
                .set(gauge_value(fill.capacity));
            if fill.map == "CT" {
                i.conntrack_entries.set(gauge_value(fill.entries));
            }
        }
        set_counter(&i.events_lost, sample.events_lost);
        set_counter(&i.conntrack_create_failed, sample.conntrack_create_failed);
        i.policy_revision.set(i64::from(sample.policy_revision));
        i.ports.set(gauge_value(sample.ports as u64));
    }
}

/// Moves a counter up to `total` (the datapath's counters only grow).
fn set_counter(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// Serves `GET /metrics` on `listen` from a thread of its own (in `netns`
/// when given) until `stop` is raised. Returns the bound address.
pub fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    netns: Option<NetnsHandle>,
    stop: StopFlag,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let (bound_tx, bound_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("palisade-metrics".into())
        .spawn(move || {
            let listener = netns
                .as_ref()
                .map_or(Ok(()), NetnsHandle::enter)
                .and_then(|()| {
                    let listener = std::net::TcpListener::bind(listen).map_err(|source| {
                        AgentError::MetricsListen {
                            addr: listen.to_string(),
                            source,
                        }
                    })?;
                    listener
                        .set_nonblocking(true)
                        .map_err(|source| AgentError::MetricsListen {
                            addr: listen.to_string(),
                            source,
                        })?;
                    Ok(listener)
                });
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = bound_tx.send(Err(AgentError::Thread {
                        thread: "palisade-metrics",
                        reason: format!("cannot start the async runtime: {e}"),
                    }));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(source) => {
                        let _ = bound_tx.send(Err(AgentError::MetricsListen {
                            addr: listen.to_string(),
                            source,
                        }));
                        return;
                    }
                };
                let _ = bound_tx.send(listener.local_addr().map_err(|source| {
                    AgentError::MetricsListen {
                        addr: listen.to_string(),
                        source,
                    }
                }));
                let app = axum::Router::new()
                    .route("/metrics", axum::routing::get(render))
                    .with_state(metrics);
                let stopped = async move {
                    while !stop.is_raised() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        })
        .map_err(|e| AgentError::Thread {
            thread: "palisade-metrics",
            reason: format!("cannot start: {e}"),
        })?;
    match bound_rx.recv() {
        Ok(Ok(addr)) => Ok((addr, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(AgentError::Thread {
            thread: "palisade-metrics",
            reason: "ended before it listened".into(),
        }),
    }
}

async fn render(
    axum::extract::State(metrics): axum::extract::State<Metrics>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use palisade_model::Direction;

    use super::*;

    fn counter(packets: u64, bytes: u64) -> DpCounter {
        DpCounter { packets, bytes }
    }

    #[test]
    fn samples_become_labelled_series_and_rules_that_never_matched_show_zero() {
        let metrics = Metrics::new("node-1");
        let quarantine = Attribution::Rule {
            tier: "security".into(),
            tenant: "acme".into(),
            policy: "quarantine".into(),
            direction: Direction::Ingress,
            index: 0,
            action: Action::Deny,
        };
        let app = Attribution::Rule {
            tier: "default".into(),
            tenant: "acme".into(),
            policy: "app".into(),
            direction: Direction::Ingress,
            index: 0,
            action: Action::Allow,
        };
        metrics.set_sample(Arc::new(DatapathSample {
            drops: vec![
                (DropReason::PolicyDenied, counter(3, 222)),
                (DropReason::SpoofIp, counter(0, 0)),
            ],
            rules: vec![(quarantine, counter(3, 222)), (app, counter(0, 0))],
            maps: vec![MapFill {
                map: "POLICY",
                entries: 12,
                capacity: 262_144,
            }],
            policy_revision: 4,
            ..DatapathSample::default()
        }));
        metrics.reconciled(Duration::from_millis(3), true);
        let text = metrics.render();
        for line in [
            "palisade_agent_dropped_packets_total{reason=\"POLICY_DENIED\"} 3",
            "palisade_agent_dropped_bytes_total{reason=\"POLICY_DENIED\"} 222",
            "palisade_agent_dropped_packets_total{reason=\"SPOOF_IP\"} 0",
            "palisade_agent_packets_total{verdict=\"deny\"} 3",
            "palisade_agent_packets_total{verdict=\"allow\"} 0",
            "palisade_agent_rule_packets_total{tenant=\"acme\",tier=\"security\",policy=\"quarantine\",direction=\"ingress\",rule=\"0\",action=\"deny\"} 3",
            "palisade_agent_rule_packets_total{tenant=\"acme\",tier=\"default\",policy=\"app\",direction=\"ingress\",rule=\"0\",action=\"allow\"} 0",
            "palisade_agent_map_entries{map=\"POLICY\"} 12",
            "palisade_agent_map_capacity{map=\"POLICY\"} 262144",
            "palisade_agent_reconcile_duration_seconds_count 1",
            "palisade_agent_reconciles_total{result=\"ok\"} 1",
            "palisade_agent_policy_revision 4",
            "palisade_agent_build_info{node=\"node-1\"",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));

        // A rule that leaves the intent leaves the metrics.
        metrics.set_sample(Arc::new(DatapathSample::default()));
        assert!(!metrics.render().contains("quarantine"));
    }

    #[test]
    fn the_server_connection_and_its_lag_are_visible() {
        let metrics = Metrics::new("node-1");
        metrics.set_connected(true);
        metrics.set_server_revision(12);
        metrics.set_applied_revision(10);
        let text = metrics.render();
        assert!(text.contains("palisade_agent_server_connected 1"), "{text}");
        assert!(
            text.contains("palisade_agent_watch_lag_revisions 2"),
            "{text}"
        );
        assert!(
            text.contains("palisade_agent_server_last_contact_age_seconds 0"),
            "{text}"
        );
        metrics.set_connected(false);
        let text = metrics.render();
        assert!(text.contains("palisade_agent_server_connected 0"), "{text}");
        assert!(
            text.contains("palisade_agent_server_disconnects_total 1"),
            "{text}"
        );
    }
}
