//! The agent: loads (or adopts) the datapath, then keeps the kernel equal to
//! the desired state of its node as the intent and the node's interfaces
//! change, writes the flow log, collects expired connections and keeps its
//! metrics (and, following a control plane, reports back to it).
//!
//! Threads, all created by the agent's own thread (so all in the node's
//! network namespace, except that the server link and the metrics listener
//! go back to the management namespace, see `netns.rs`):
//! - the **loop** (the agent's thread) owns the datapath and the compiler.
//!   It waits for inputs — a new snapshot from the source, a change of the
//!   node's interfaces or of the server connection, a stop — takes every
//!   input waiting, compiles the newest intent, and reconciles once
//!   (`reconcile.rs` for the order); every second it runs conntrack GC and
//!   reads the datapath's counters and fill levels (`sample.rs`);
//! - the **source** ([`Source`]: [`DirectorySource`], or the control plane's
//!   [`crate::server::ServerSource`], which also sends the reports);
//! - **links**: netlink notifications → a rescan → the loop;
//! - **events**: the ring buffer and the GC's expired connections → flow
//!   records (aggregated, `aggregate.rs`) → the flow log and the server;
//! - **metrics**: `GET /metrics` (with `metrics_listen`).
//!
//! With `AgentConfig::simulate_datapath` (benchmarks only) the loop
//! reconciles the simulated datapath of `simulation.rs` instead: no
//! events, links or GC, and nothing is enforced (`backend.rs`).
//!
//! Input that fails (invalid files, a compile error, a table that does not
//! fit) is logged with every detail and changes nothing: the kernel keeps
//! enforcing the last good state. So does a control plane that goes away
//! ("fail static"). Stopping leaves the datapath enforcing.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use palisade_client::api::NodeStatus;
use palisade_datapath::{ClosedFlow, EventReader};
use palisade_model::Intent;
use palisade_policy::{CompiledTables, Compiler, Identities, IdentityAllocator};

use crate::aggregate::Aggregator;
use crate::backend::Backend;
use crate::config::AgentConfig;
use crate::desired::{self, into_node_intent, NodeInputs, PortRole};
use crate::error::{AgentError, Result};
use crate::flowlog::{self, FlowLog, WallClock};
use crate::interfaces::{LinkWatcher, NodeLinks};
use crate::metrics::{self, Metrics};
use crate::names::EventNames;
use crate::netns::NetnsHandle;
use crate::reconcile::{ChangeCounts, MapContents, Plan};
use crate::reports::Reports;
use crate::sample::counter_report;
use crate::server::ServerSource;
use crate::source::{
    DirectorySource, LinkEvent, ServerRevision, Snapshot, Source, SourceUpdate, StopFlag, Updates,
};
use crate::state::{AgentStatus, ReconcileStatus, ServerLinkStatus, StateDir};

/// How often helper threads with nothing to do check whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(200);
/// First wait before a failed reconcile is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between attempts of a failing reconcile.
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Most events written per flush of the flow log.
const EVENT_BATCH: usize = 4096;

/// What the loop waits for.
enum Input {
    Source(SourceUpdate),
    Links(NodeLinks),
    Failed {
        thread: &'static str,
        error: AgentError,
    },
    Stop,
}

/// Asks a running agent to stop; clonable, usable from any thread (a signal handler thread).
#[derive(Debug, Clone)]
pub struct Stopper(Sender<Input>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Source(_) => "Source",
            Input::Links(_) => "Links",
            Input::Failed { .. } => "Failed",
            Input::Stop => "Stop",
        })
    }
}

impl Stopper {
    /// Asks the agent to stop (it returns from [`Agent::wait`] shortly).
    pub fn stop(&self) {
        let _ = self.0.send(Input::Stop);
    }
}

/// A running agent. Dropping it stops it.
#[derive(Debug)]
pub struct Agent {
    inputs: Sender<Input>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Agent {
    /// Starts an agent following `config.server` when set, else reading
    /// `config.policy_paths`. Returns once the datapath is loaded (or
    /// adopted) and every thread runs; the first reconcile follows as soon
    /// as the files are read or the server's snapshot arrives.
    pub fn start(config: AgentConfig) -> Result<Agent> {
        if config.server.is_some() {
            return Agent::launch(config, None);
        }
        let source = DirectorySource::new(
            config.policy_paths.clone(),
            config.load_options.clone(),
            config.timing,
        )?;
        Agent::launch(config, Some(Box::new(source)))
    }

    /// Starts an agent whose desired state comes from `source`.
    pub fn start_with_source(config: AgentConfig, source: Box<dyn Source>) -> Result<Agent> {
        Agent::launch(config, Some(source))
    }

    /// Starts the agent's thread; without a `source`, it follows `config.server`.
    fn launch(config: AgentConfig, source: Option<Box<dyn Source>>) -> Result<Agent> {
        let (inputs, receiver) = mpsc::channel();
        let (started_tx, started) = mpsc::sync_channel(1);
        let loop_inputs = inputs.clone();
        let thread = thread::Builder::new()
            .name("palisade-agent".into())
            .spawn(move || {
                let opened = Enforcer::open(config).and_then(|mut enforcer| {
                    let source = match source {
                        Some(source) => source,
                        None => enforcer.server_source()?,
                    };
                    let helpers = enforcer.start_helpers(source, &loop_inputs)?;
                    Ok((enforcer, helpers))
                });
                match opened {
                    Ok((enforcer, helpers)) => {
                        let _ = started_tx.send(Ok(()));
                        let result = enforcer.run(&receiver);
                        helpers.stop();
                        result
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        Ok(())
                    }
                }
            })
            .map_err(|e| AgentError::Thread {
                thread: "palisade-agent",
                reason: format!("cannot start: {e}"),
            })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Agent {
                inputs,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(join(thread).err().unwrap_or(AgentError::Thread {
                thread: "palisade-agent",
                reason: "ended before it started".into(),
            })),
        }
    }

    /// A handle that stops the agent from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.inputs.clone())
    }

    /// Waits until the agent ends: after [`Stopper::stop`], or on an error
    /// that keeps it from following the intent (the datapath keeps
    /// enforcing the last state either way).
    pub fn wait(mut self) -> Result<()> {
        match self.thread.take() {
            Some(thread) => join(thread),
            None => Ok(()),
        }
    }

    /// Stops the agent and waits for it.
    pub fn stop(self) -> Result<()> {
        self.stopper().stop();
        self.wait()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.inputs.send(Input::Stop);
            if let Err(e) = join(thread) {
                tracing::warn!(error = %e, "agent ended with an error");
            }
        }
    }
}

fn join(thread: JoinHandle<Result<()>>) -> Result<()> {
    thread.join().unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        Err(AgentError::Thread {
            thread: "palisade-agent",
            reason: format!("panicked: {reason}"),
        })
    })
}

/// The threads besides the loop.
struct Helpers {
    stop: StopFlag,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl Helpers {
    fn stop(self) {
        self.stop.raise();
        for (name, thread) in self.threads {
            if thread.join().is_err() {
                tracing::error!(thread = name, "agent thread panicked");
            }
        }
    }
}

/// A compiled desired state.
struct Compiled {
    intent: Intent,
    identities: Identities,
    tables: CompiledTables,
    revision: String,
    server: Option<ServerRevision>,
}

/// The agent's view of its control plane.
#[derive(Debug, Clone)]
struct Link {
    servers: Vec<String>,
    connected: bool,
    server: Option<String>,
    since: SystemTime,
    reason: Option<String>,
    last_contact: Option<SystemTime>,
    /// The revision the stream brought the agent up to.
    seen: u64,
    /// The revision in the kernel.
    applied: u64,
    /// The last revision whose propagation was measured.
    measured: u64,
    /// The server revision the last reconcile wrote, and when its writes ended.
    reconciled: Option<(u64, SystemTime)>,
}

impl Link {
    fn status(&self) -> ServerLinkStatus {
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        ServerLinkStatus {
            servers: self.servers.clone(),
            connected: self.connected,
            server: self.server.clone(),
            since: time(self.since),
            reason: self.reason.clone(),
            last_contact: self.last_contact.map(time),
            seen_revision: self.seen,
            applied_revision: self.applied,
            reconciled_revision: self.reconciled.map(|(revision, _)| revision),
            reconciled_at: self
                .reconciled
                .map(|(_, at)| humantime::format_rfc3339_micros(at).to_string()),
        }
    }
}

/// The loop's state: the datapath and everything needed to keep it right.
struct Enforcer {
    config: AgentConfig,
    /// The kernel's datapath, or the simulated one.
    datapath: Backend,
    events: Option<EventReader>,
    state: StateDir,
    allocator: IdentityAllocator,
    compiler: Compiler,
    compiled: Option<Compiled>,
    links: NodeLinks,
    /// What the maps hold, as last written or read; `None`: read them first.
    actual: Option<MapContents>,
    names: Arc<RwLock<EventNames>>,
    expired: Option<Sender<Vec<ClosedFlow>>>,
    status: AgentStatus,
    notes: Vec<String>,
    /// After a failed reconcile: when to try again, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// The cookie table of the last reconcile, shared with the event
    /// names (copied only when it changes), and whether it is on disk.
    cookies: Arc<std::collections::BTreeMap<u32, palisade_policy::Attribution>>,
    cookies_saved: bool,
    metrics: Metrics,
    /// With a control plane: what goes back to it, and the link's state.
    reports: Option<Reports>,
    link: Option<Link>,
    /// The namespace of the server link and the metrics listener.
    control_netns: Option<NetnsHandle>,
    /// Endpoints whose ports have the hooks attached (full refs).
    endpoints: Vec<String>,
    started_at: SystemTime,
    /// The overlay toward other nodes (`overlay.rs`).
    overlay: crate::overlay::Overlay,
}

impl Enforcer {
    /// Enters the namespace, opens the state directory and the datapath,
    /// and reads the node's interfaces and the previous agent's attachments.
    fn open(config: AgentConfig) -> Result<Enforcer> {
        let mut control_netns = config.control_netns.clone();
        if let Some(netns) = &config.netns {
            let home = crate::netns::enter_netns(netns)?;
            control_netns.get_or_insert(home);
        }
        let state = StateDir::open(&config.state_dir)?;
        let allocator = state.load_allocator()?;
        let (datapath, events) = Backend::open(&config)?;
        let simulated = datapath.simulated();
        // The simulation pretends its ports (`simulation.rs`) and has no overlay device.
        let links = if simulated {
            NodeLinks::default()
        } else {
            NodeLinks::scan()?
        };
        let overlay_config = config.overlay.clone().filter(|_| !simulated);
        let overlay = crate::overlay::Overlay::new(&config.node, overlay_config);
        let names = EventNames::new(&config.node, state.load_cookies());
        let status = AgentStatus {
            node: config.node.clone(),
            pid: std::process::id(),
            started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            bpffs_dir: config.bpffs_dir.clone(),
            adopted: datapath.adopted(),
            simulated,
            reconciles: 0,
            last_reconcile: None,
            last_error: None,
            server: None,
            metrics: None,
        };
        let metrics = Metrics::new(&config.node);
        let reports = config
            .server
            .as_ref()
            .map(|_| Reports::new(config.flow_queue, metrics.clone()));
        let link = config.server.as_ref().map(|s| Link {
            servers: s.client.servers.clone(),
            connected: false,
            server: None,
            since: SystemTime::now(),
            reason: Some("connecting".into()),
            last_contact: None,
            seen: 0,
            applied: 0,
            measured: 0,
            reconciled: None,
        });
        if simulated {
            tracing::warn!(
                node = %config.node,
                "SIMULATION: the datapath is simulated (maps recorded in memory, no program \
                 attached); this agent enforces NOTHING. For benchmarks only"
            );
        }
        tracing::info!(
            node = %config.node,
            bpffs = %config.bpffs_dir.display(),
            adopted = datapath.adopted(),
            interfaces = links.links.len(),
            "agent started"
        );
        Ok(Enforcer {
            config,
            datapath,
            events,
            state,
            allocator,
            compiler: Compiler::default(),
            compiled: None,
            links,
            actual: None,
            names: Arc::new(RwLock::new(names)),
            expired: None,
            status,
            notes: Vec::new(),
            retry: None,
            cookies: Arc::default(),
            cookies_saved: false,
            metrics,
            reports,
            link,
            control_netns,
            endpoints: Vec::new(),
            started_at: SystemTime::now(),
            overlay,
        })
    }

    /// The control plane source of `config.server`.
    fn server_source(&self) -> Result<Box<dyn Source>> {
        let settings = self.config.server.clone().ok_or(AgentError::Thread {
            thread: "palisade-agent",
            reason: "no server configured and no source given".into(),
        })?;
        let reports = self.reports.clone().expect("made with the server settings");
        Ok(Box::new(ServerSource::new(
            &self.config.node,
            settings,
            self.config.load_options.clone(),
            self.config.timing,
            reports,
            self.metrics.clone(),
            self.control_netns.clone(),
        )))
    }

    fn start_helpers(
        &mut self,
        source: Box<dyn Source>,
        inputs: &Sender<Input>,
    ) -> Result<Helpers> {
        let stop = StopFlag::new();
        let mut helpers = Helpers {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let spawn = |name: &'static str, work: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .map_err(|e| AgentError::Thread {
                    thread: name,
                    reason: format!("cannot start: {e}"),
                })
        };

        let flow_log = self
            .config
            .flow_log
            .as_ref()
            .map(FlowLog::open)
            .transpose()?;
        // The simulated datapath has no events and no interfaces to watch.
        if let Some(events) = self.events.take() {
            let (expired_tx, expired_rx) = mpsc::channel();
            self.expired = Some(expired_tx);
            let records = Records {
                log: flow_log,
                reports: self.reports.clone(),
                metrics: self.metrics.clone(),
                aggregator: Aggregator::new(self.config.timing.flow_aggregate),
            };
            let (names, s) = (self.names.clone(), stop.clone());
            let handle = spawn(
                "palisade-events",
                Box::new(move || run_events(events, expired_rx, names, records, &s)),
            );
            helpers.threads.push(("palisade-events", handle?));

            let watcher = LinkWatcher::open()?;
            let (tx, s, first, rescan) = (
                inputs.clone(),
                stop.clone(),
                self.links.clone(),
                self.config.timing.link_rescan,
            );
            let handle = spawn(
                "palisade-links",
                Box::new(move || {
                    if let Err(error) = run_links(&watcher, first, rescan, &tx, &s) {
                        let _ = tx.send(Input::Failed {
                            thread: "palisade-links",
                            error,
                        });
                    }
                }),
            );
            helpers.threads.push(("palisade-links", handle?));
        }

        let (tx, s) = (inputs.clone(), stop.clone());
        let handle = spawn(
            "palisade-source",
            Box::new(move || {
                let updates = {
                    let tx = tx.clone();
                    Updates::new(move |update| tx.send(Input::Source(update)).is_ok())
                };
                if let Err(error) = source.run(updates, s) {
                    let _ = tx.send(Input::Failed {
                        thread: "palisade-source",
                        error,
                    });
                }
            }),
        );
        helpers.threads.push(("palisade-source", handle?));

        if let Some(listen) = self.config.metrics_listen {
            let (addr, handle) = metrics::serve(
                listen,
                self.metrics.clone(),
                self.control_netns.clone(),
                stop.clone(),
            )?;
            tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
            self.status.metrics = Some(format!("http://{addr}/metrics"));
            helpers.threads.push(("palisade-metrics", handle));
        }
        self.status.server = self.link.as_ref().map(Link::status);
        self.write_status();
        Ok(helpers)
    }

    /// The loop: inputs, reconciles, conntrack GC and samples, until told to stop.
    fn run(mut self, inputs: &Receiver<Input>) -> Result<()> {
        let timing = self.config.timing;
        let mut next_gc = Instant::now() + timing.ct_gc;
        let mut next_sample = Instant::now();
        loop {
            let mut due = next_gc.min(next_sample);
            if let Some((at, _)) = self.retry {
                due = due.min(at);
            }
            let wait = due.saturating_duration_since(Instant::now());
            match inputs.recv_timeout(wait) {
                Ok(first) => {
                    let mut reconcile = false;
                    // Of several snapshots waiting only the newest counts.
                    let mut newest: Option<Box<Snapshot>> = None;
                    // "Nothing more for you up to R" counts after the
                    // snapshots before it are in the maps.
                    let mut up_to: Option<u64> = None;
                    for input in std::iter::once(first).chain(inputs.try_iter()) {
                        match input {
                            Input::Stop => {
                                tracing::info!(
                                    "agent stopping; the datapath keeps enforcing the last state"
                                );
                                return Ok(());
                            }
                            Input::Failed { thread, error } => {
                                tracing::error!(thread, error = %error, "agent thread failed; the datapath keeps enforcing the last state");
                                return Err(error);
                            }
                            Input::Source(SourceUpdate::Snapshot(snapshot)) => {
                                self.seen(snapshot.server.map(|s| s.revision));
                                newest = Some(snapshot);
                            }
                            Input::Source(SourceUpdate::UpTo { revision }) => {
                                up_to = up_to.max(Some(revision));
                            }
                            Input::Source(update) => reconcile |= self.on_source(update),
                            Input::Links(links) => {
                                if links != self.links {
                                    self.links = links;
                                    reconcile = true;
                                }
                            }
                        }
                    }
                    if let Some(snapshot) = newest {
                        reconcile |= self.on_snapshot(*snapshot);
                    }
                    if reconcile {
                        self.reconcile_and_report();
                    }
                    if let Some(revision) = up_to {
                        self.on_source(SourceUpdate::UpTo { revision });
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_gc {
                self.collect_expired();
                next_gc = Instant::now() + timing.ct_gc;
            }
            // Samples feed the metrics and the server's counters: with
            // neither, the maps are not walked at all.
            let sampled = !self.datapath.simulated()
                && (self.config.metrics_listen.is_some() || self.reports.is_some());
            if sampled && now >= next_sample {
                self.sample();
                next_sample = Instant::now() + timing.sample;
            } else if !sampled {
                next_sample = now + Duration::from_secs(3600);
            }
            if self.retry.is_some_and(|(at, _)| Instant::now() >= at) {
                self.reconcile_and_report();
            }
        }
    }

    /// A source update other than a snapshot; `true` when there is a new
    /// state to reconcile.
    fn on_source(&mut self, update: SourceUpdate) -> bool {
        match update {
            SourceUpdate::Snapshot(snapshot) => self.on_snapshot(*snapshot),
            SourceUpdate::Rejected { diagnostics } => {
                for d in diagnostics.iter() {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    problems = diagnostics.len(),
                    "policy input rejected; nothing was changed, the last good state stays enforced"
                );
                let first = diagnostics.iter().next().map(ToString::to_string);
                self.report_error(format!(
                    "policy input rejected ({} problems){}",
                    diagnostics.len(),
                    first.map(|d| format!("; first: {d}")).unwrap_or_default()
                ));
                false
            }
            SourceUpdate::Nodes(nodes) => self.overlay.set_learned(nodes),
            SourceUpdate::Link(event) => {
                self.on_link(event);
                false
            }
            SourceUpdate::UpTo { revision } => {
                self.seen(Some(revision));
                let caught_up = self.retry.is_none()
                    && self.status.last_error.is_none()
                    && self
                        .compiled
                        .as_ref()
                        .and_then(|c| c.server)
                        .map(|s| s.revision)
                        == self.link.as_ref().map(|l| l.applied);
                if let (true, Some(link)) = (caught_up, &mut self.link) {
                    // Nothing for this node changed up to `revision`.
                    link.applied = link.applied.max(revision);
                    self.metrics.set_applied_revision(link.applied);
                }
                self.report_status();
                self.write_status();
                false
            }
        }
    }

    /// A message from the server arrived, bringing the node up to `revision`.
    fn seen(&mut self, revision: Option<u64>) {
        if let (Some(link), Some(revision)) = (&mut self.link, revision) {
            link.last_contact = Some(SystemTime::now());
            link.seen = link.seen.max(revision);
            self.metrics.set_server_revision(link.seen);
        }
    }

    /// The server connection changed: say so everywhere.
    fn on_link(&mut self, event: LinkEvent) {
        let Some(link) = &mut self.link else { return };
        match event {
            LinkEvent::Connected { server } => {
                tracing::info!(%server, applied = link.applied, "connected to the server; following the node stream");
                link.connected = true;
                link.server = Some(server);
                link.reason = None;
                link.since = SystemTime::now();
                link.last_contact = Some(link.since);
                self.metrics.set_connected(true);
            }
            LinkEvent::Disconnected { reason, since } => {
                tracing::warn!(
                    %reason,
                    applied = link.applied,
                    "lost the server: failing static, the datapath keeps enforcing the last state \
                     applied until the server is back"
                );
                if link.connected {
                    self.metrics.set_connected(false);
                }
                link.connected = false;
                link.reason = Some(reason);
                link.since = since;
            }
        }
        self.report_status();
        self.write_status();
    }

    /// Takes a new snapshot; `true` when there is a new state to reconcile.
    fn on_snapshot(&mut self, snapshot: Snapshot) -> bool {
        match self.compile(snapshot) {
            Ok(compiled) => {
                self.compiled = Some(compiled);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the new intent cannot be enforced; nothing was changed, the last good state stays enforced");
                self.report_error(e.to_string());
                false
            }
        }
    }

    /// Identities (allocated here unless the source brings them) and tables
    /// for this node. The allocator is saved only once both succeeded.
    fn compile(&mut self, snapshot: Snapshot) -> Result<Compiled> {
        let started = Instant::now();
        let (identities, allocator) = match snapshot.identities {
            Some(ids) => (ids, None),
            None => {
                let mut allocator = self.allocator.clone();
                let ids = allocator.allocate(&snapshot.intent)?;
                (ids, Some(allocator))
            }
        };
        let intent = into_node_intent(snapshot.intent, &self.config.node);
        let tables = self.compiler.update(&intent, &identities)?;
        if let Some(allocator) = allocator {
            self.state.save_allocator(&allocator)?;
            self.allocator = allocator;
        }
        tracing::debug!(
            entries = tables.len(),
            tenants = intent.tenants.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "compiled"
        );
        Ok(Compiled {
            intent,
            identities,
            tables,
            revision: snapshot.revision,
            server: snapshot.server,
        })
    }

    fn reconcile_and_report(&mut self) {
        let started = Instant::now();
        match self.reconcile() {
            Ok(None) => self.retry = None,
            Ok(Some((counts, written))) => {
                self.retry = None;
                let duration = started.elapsed();
                self.metrics.reconciled(duration, true);
                let propagation = self.applied(written);
                let revision = self.datapath.policy_revision();
                let first = self.status.reconciles == 0;
                self.status.reconciles += 1;
                self.status.last_error = None;
                self.status.last_reconcile = Some(ReconcileStatus {
                    at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                    duration_ms: duration.as_secs_f64() * 1000.0,
                    changes: counts,
                    policy_revision: revision,
                    source: self
                        .compiled
                        .as_ref()
                        .map(|c| c.revision.clone())
                        .unwrap_or_default(),
                    propagation_ms: propagation.map(|p| p.as_secs_f64() * 1000.0),
                });
                let ms = duration.as_secs_f64() * 1000.0;
                let ports = self.datapath.port_count();
                if self.datapath.simulated() {
                    tracing::info!(
                        duration_ms = ms,
                        revision,
                        ports,
                        "reconciled the SIMULATED datapath (nothing enforced): {counts}"
                    );
                } else if first && self.datapath.adopted() && counts.maps_unchanged() {
                    tracing::info!(
                        duration_ms = ms,
                        revision,
                        ports,
                        "reconciled: no changes, the adopted maps already hold the desired state ({counts})"
                    );
                } else {
                    tracing::info!(duration_ms = ms, revision, ports, "reconciled: {counts}");
                }
                self.report_status();
                self.write_status();
            }
            Err(e) => {
                self.metrics.reconciled(started.elapsed(), false);
                let wait = self
                    .retry
                    .map_or(RETRY_FIRST, |(_, wait)| (wait * 2).min(RETRY_MAX));
                self.retry = Some((Instant::now() + wait, wait));
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "reconcile failed; the maps keep what was applied so far");
                self.report_error(e.to_string());
            }
        }
    }

    /// After a good reconcile whose writes ended at `written`: the server
    /// revision is in the kernel; returns how long it took from the
    /// server's commit, when that can be known (revisions committed while
    /// the agent was not running are not propagation).
    fn applied(&mut self, written: SystemTime) -> Option<Duration> {
        let server = self.compiled.as_ref()?.server?;
        let link = self.link.as_mut()?;
        link.applied = server.revision;
        // The first reconcile of a revision is when it reached the kernel
        // (a later one, after an interface change, is not).
        if link.reconciled.is_none_or(|(r, _)| r < server.revision) {
            link.reconciled = Some((server.revision, written));
        }
        self.metrics.set_applied_revision(link.applied);
        let committed = server.committed_at?;
        if server.revision <= link.measured || committed < self.started_at {
            return None;
        }
        link.measured = server.revision;
        let took = written.duration_since(committed).unwrap_or_default();
        self.metrics.propagated(took);
        tracing::debug!(
            revision = server.revision,
            propagation_ms = took.as_secs_f64() * 1000.0,
            "server revision applied"
        );
        Some(took)
    }

    /// One reconcile; `None` when there is no desired state yet (an adopted
    /// datapath keeps enforcing what it holds). With the changes, when the
    /// writes ended.
    fn reconcile(&mut self) -> Result<Option<(ChangeCounts, SystemTime)>> {
        let Some(compiled) = &self.compiled else {
            return Ok(None);
        };
        match &mut self.datapath {
            Backend::Kernel(kernel) => {
                // The overlay first: creating its device changes the node's links,
                // and CONFIG names the device before tunnel routes are resolved.
                if self.overlay.prepare(&self.links) {
                    self.links = NodeLinks::scan()?;
                }
                self.overlay.apply(kernel.dp.maps_mut())?;
            }
            Backend::Simulated(sim) => {
                self.links = sim.links(&compiled.intent, &self.config.node);
            }
        }
        let nodes = self.overlay.nodes();
        let desired = desired::desired(&NodeInputs {
            node: &self.config.node,
            intent: &compiled.intent,
            identities: &compiled.identities,
            tables: &compiled.tables,
            links: &self.links,
            uplinks: &self.config.uplinks,
            nodes: &nodes,
        });
        if desired.notes != self.notes {
            for note in &desired.notes {
                tracing::warn!("{note}");
            }
            self.notes = desired.notes.clone();
        }
        let actual = match self.actual.take() {
            Some(actual) => actual,
            None => self.datapath.read_contents()?,
        };
        let plan = Plan::between(&actual, &desired.maps);
        let first = match self.datapath.capacities().order(&desired.maps, &plan) {
            Ok(first) => first,
            Err(e) => {
                self.actual = Some(actual);
                return Err(e);
            }
        };
        let mut counts = plan.counts();
        let written = match self.datapath.apply(&plan, first, &desired.ports) {
            Ok((attached, detached)) => {
                let written = SystemTime::now();
                counts.attached = attached;
                counts.detached = detached;
                self.actual = Some(desired.maps);
                let mut endpoints: Vec<String> = desired
                    .ports
                    .iter()
                    .filter(|(ifindex, port)| self.datapath.is_attached(**ifindex, port))
                    .filter_map(|(_, port)| match &port.role {
                        PortRole::Endpoint(name) => Some(name.clone()),
                        PortRole::Uplink(_) | PortRole::Overlay => None,
                    })
                    .collect();
                endpoints.sort();
                self.endpoints = endpoints;
                written
            }
            Err(e) => {
                // Part of the plan may be in: read the maps again next time.
                self.actual = None;
                return Err(e);
            }
        };

        let compiled = self.compiled.as_ref().expect("checked above");
        let cookies = compiled.tables.cookies();
        if *self.cookies != *cookies {
            self.cookies = Arc::new(cookies.clone());
            self.cookies_saved = false;
        }
        if let Ok(mut names) = self.names.write() {
            names.update(&compiled.intent, &compiled.identities, &self.cookies);
        }
        if !self.cookies_saved {
            match self.state.save_cookies(&self.cookies) {
                Ok(()) => self.cookies_saved = true,
                Err(e) => tracing::warn!(error = %e, "cannot save the cookie table"),
            }
        }
        Ok(Some((counts, written)))
    }

    /// Conntrack GC: expired connections the datapath did not report
    /// closed go to the flow log.
    fn collect_expired(&mut self) {
        let Backend::Kernel(kernel) = &mut self.datapath else {
            return;
        };
        match kernel.dp.ct_gc(palisade_datapath::monotonic_now()) {
            Ok(closed) => {
                let report: Vec<ClosedFlow> =
                    closed.into_iter().filter(|c| !c.close_reported()).collect();
                if let (false, Some(tx)) = (report.is_empty(), &self.expired) {
                    let _ = tx.send(report);
                }
            }
            Err(e) => tracing::warn!(error = %e, "conntrack GC failed"),
        }
    }

    /// Reads the datapath's counters and fill levels for the metrics and
    /// the server's rule counters.
    fn sample(&mut self) {
        let Backend::Kernel(kernel) = &mut self.datapath else {
            return;
        };
        let names = self
            .names
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.compiled.as_ref().map(|c| c.tables.cookies());
        let sample = kernel.sampler.sample(
            &kernel.dp,
            self.actual.as_ref(),
            &names,
            current,
            kernel.ports.count(),
        );
        drop(names);
        match sample {
            Ok(sample) => {
                if let Some(reports) = &self.reports {
                    reports.set_counters(counter_report(&sample));
                }
                self.metrics.set_sample(Arc::new(sample));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the datapath's counters"),
        }
    }

    fn report_error(&mut self, error: String) {
        self.status.last_error = Some(error);
        self.report_status();
        self.write_status();
    }

    /// Hands the server the agent's status (sent by the server link).
    fn report_status(&self) {
        let (Some(reports), Some(link)) = (&self.reports, &self.link) else {
            return;
        };
        let health = match &self.status.last_error {
            Some(error) => format!("degraded: {error}"),
            None => "ok".to_owned(),
        };
        reports.set_status(NodeStatus {
            applied_revision: link.applied,
            health,
            endpoints: self.endpoints.clone(),
            underlay_address: self.overlay.settings().underlay,
        });
    }

    fn write_status(&mut self) {
        self.status.server = self.link.as_ref().map(Link::status);
        if let Err(e) = self.state.write_status(&self.status) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }
}

/// The links thread: a rescan after every netlink notification (and every
/// `rescan` anyway); changes go to the loop.
fn run_links(
    watcher: &LinkWatcher,
    mut last: NodeLinks,
    rescan: Duration,
    inputs: &Sender<Input>,
    stop: &StopFlag,
) -> Result<()> {
    let mut next_rescan = Instant::now() + rescan;
    while !stop.is_raised() {
        let notified = watcher.wait(STOP_CHECK)?;
        if !notified && Instant::now() < next_rescan {
            continue;
        }
        next_rescan = Instant::now() + rescan;
        let links = NodeLinks::scan()?;
        if links != last {
            last = links.clone();
            if inputs.send(Input::Links(links)).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Where the events thread sends flow records.
struct Records {
    log: Option<FlowLog>,
    reports: Option<Reports>,
    metrics: Metrics,
    aggregator: Aggregator,
}

/// The events thread: ring buffer events and expired connections → flow
/// records (denied and audit ones aggregated per flow) → the flow log and
/// the server's queue.
fn run_events(
    mut reader: EventReader,
    expired: Receiver<Vec<ClosedFlow>>,
    names: Arc<RwLock<EventNames>>,
    mut records: Records,
    stop: &StopFlag,
) {
    let produce = records.log.is_some() || records.reports.is_some();
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut lost_batches: u64 = 0;
    let (mut folded, mut rotations) = (0, 0);
    loop {
        let stopping = stop.is_raised();
        events.clear();
        let first = if stopping {
            None
        } else {
            match reader.next(STOP_CHECK) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an event");
                    None
                }
            }
        };
        events.extend(first);
        while events.len() < EVENT_BATCH {
            match reader.try_next() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(e) => tracing::warn!(error = %e, "skipping an event"),
            }
        }
        let expired: Vec<ClosedFlow> = expired.try_iter().flatten().collect();
        if produce {
            let now = Instant::now();
            if !(events.is_empty() && expired.is_empty()) {
                let clock = WallClock::now();
                let names = names
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for event in &events {
                    let record = flowlog::event_record(event, &names, &clock);
                    out.extend(records.aggregator.offer(event, record, now));
                }
                out.extend(
                    expired
                        .iter()
                        .map(|closed| flowlog::expired_record(closed, &names, &clock)),
                );
            }
            out.extend(records.aggregator.flush(now, stopping));
            let now_folded = records.aggregator.folded();
            records.metrics.flow_records_aggregated(now_folded - folded);
            folded = now_folded;
            if !out.is_empty() {
                records.metrics.flow_records(out.len() as u64);
                if let Some(log) = &mut records.log {
                    let written = out
                        .iter()
                        .try_for_each(|record| log.write(record))
                        .and_then(|()| log.flush());
                    // Enforcement does not depend on the flow log: report, go on.
                    if let Err(e) = written {
                        lost_batches += 1;
                        if lost_batches.is_power_of_two() {
                            tracing::error!(error = %e, lost_batches, "flow records lost");
                        }
                    }
                    records
                        .metrics
                        .flow_log_rotated(log.rotations() - rotations);
                    rotations = log.rotations();
                }
                match &records.reports {
                    Some(reports) => reports.push_flows(out.drain(..)),
                    None => out.clear(),
                }
            }
        }
        if stopping {
            return;
        }
    }
}
