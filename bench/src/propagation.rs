//! The propagation benchmark's harness (bench/README.md, "Propagation"): a
//! `palisade server` process on an embedded store ([`Server`]), `palisade
//! agent --server` processes ([`AgentProcess`]: real ones in lab nodes, or
//! SIMULATED ones, `--simulate-datapath`, which enforce nothing), a
//! generated multi-tenant intent ([`Scale`]), and the measurement
//! ([`run_series`]): a series of applies, each timed to the end of the map
//! writes of each affected agent's reconcile of that revision, as the
//! agent's status file records it (`server.reconciled_at`), from three
//! starts: the server's commit (`committedAt` of the apply response: the
//! API has acknowledged the change), the response arriving at the client,
//! and the request leaving it. One clock, one machine. An agent that does
//! not get there in time is a timeout, never a number. The CPU time the
//! server and the agents spend on a series comes from `/proc`.
//!
//! Every process is killed and every file removed when its guard drops,
//! also when a panic unwinds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use palisade_agent::{read_status, AgentStatus};
use palisade_client::{Client, ClientConfig};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{BenchError, Result};

/// How often the statuses of agents still pending are read. The latency
/// comes from the agents' own timestamps, so this only decides how soon the
/// next apply can go; reading a hundred files much more often would take
/// CPU from the agents being measured.
const POLL: Duration = Duration::from_millis(20);

/// Documents per apply request when loading an intent (the server takes
/// about 60 in one transaction).
pub const APPLY_CHUNK: usize = 40;

/// Name of the policy every measured apply changes, in each tenant.
pub const TOGGLE_POLICY: &str = "propagation-toggle";

/// The `palisade` binary the server and the agents run: `$PALISADE_BIN`,
/// else the one cargo built next to the running executable (for tests,
/// next to their `deps` directory).
pub fn palisade_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PALISADE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        action: "find the running executable".into(),
        source,
    })?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("palisade");
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(BenchError::NoPalisade { looked: candidate })
    }
}

/// Waits `wait`, in short steps, unless `stop` is raised; `false` then.
pub fn pause(wait: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    !stop.load(Ordering::Relaxed)
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `palisade server` on an embedded store in `dir`, listening on a free
/// port of 127.0.0.1, without tokens (every caller is an admin); killed on
/// drop.
#[derive(Debug)]
pub struct Server {
    child: KillOnDrop,
    /// Its URL.
    pub url: String,
    log: PathBuf,
}

impl Server {
    /// Starts it; returns once it listens.
    pub fn start(palisade: &Path, dir: &Path) -> Result<Server> {
        let log_path = dir.join("server.log");
        let mut log = fs::File::create(&log_path).map_err(|source| BenchError::Write {
            path: log_path.clone(),
            source,
        })?;
        let mut child = Command::new(palisade)
            .args(["server", "--listen", "127.0.0.1:0", "--store"])
            .arg(dir.join("store.redb"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BenchError::Start {
                what: "palisade server".into(),
                source,
            })?;
        let stderr = child.stderr.take().expect("piped");
        let child = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if let Some(url) = line.strip_prefix("palisade server listening on ") {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_owned());
                }
                let _ = writeln!(log, "{line}");
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(Server {
                child,
                url,
                log: log_path,
            }),
            Err(_) => Err(BenchError::NotReady {
                what: "palisade server".into(),
                waited_s: 30,
                log: tail(&log_path, 20),
            }),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }
}

/// Applies documents through the API, as `palisade apply` does.
pub struct Applier {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

/// One acknowledged apply.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// The store revision it made.
    pub revision: u64,
    /// When the server's store committed it (the server's clock), when
    /// something was written.
    pub committed_at: Option<SystemTime>,
    /// When the request went (the clock the agents stamp with).
    pub sent_at: SystemTime,
    /// When the response arrived.
    pub at: SystemTime,
    /// From sending the request to the response.
    pub took: Duration,
}

impl Applier {
    /// A client of `url` (no token).
    pub fn new(url: &str) -> Result<Applier> {
        let client = Client::new(&ClientConfig::for_server(url, None))
            .map_err(|e| BenchError::Api(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| BenchError::Io {
                action: "start an async runtime".into(),
                source,
            })?;
        Ok(Applier { client, runtime })
    }

    /// Applies `docs` in one request.
    pub fn apply(&self, docs: Vec<Value>) -> Result<Ack> {
        let sent = Instant::now();
        let sent_at = SystemTime::now();
        let response = self
            .runtime
            .block_on(self.client.apply(docs))
            .map_err(|e| BenchError::Api(e.to_string()))?;
        Ok(Ack {
            revision: response.revision,
            committed_at: response
                .committed_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok()),
            sent_at,
            at: SystemTime::now(),
            took: sent.elapsed(),
        })
    }

    /// Applies `docs` in requests of [`APPLY_CHUNK`]; the last revision.
    pub fn apply_all(&self, docs: &[Value], stop: &AtomicBool) -> Result<u64> {
        let mut revision = 0;
        for chunk in docs.chunks(APPLY_CHUNK) {
            interrupted(stop)?;
            revision = self.apply(chunk.to_vec())?.revision;
        }
        Ok(revision)
    }
}

/// What an agent process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// A real agent: the kernel's datapath of a lab node.
    Real,
    /// `--simulate-datapath`: a SIMULATION that enforces nothing.
    Simulated,
}

/// A `palisade agent --server` process, its state directory and log under
/// a work directory; killed on drop.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<KillOnDrop>,
    /// Its node.
    pub node: String,
    /// Real or simulated.
    pub kind: AgentKind,
    state_dir: PathBuf,
    log: PathBuf,
}

/// CPU time (user and system, every thread) a process has used so far,
/// from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)? as u64;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// `VmRSS`, bytes: resident now.
    pub rss: u64,
    /// `VmHWM`, bytes: the peak resident size.
    pub hwm: u64,
}

impl AgentProcess {
    /// Starts the agent of `node` following `url`, its files under `work`.
    /// A simulated agent gets `--simulate-datapath`; `extra` flags follow
    /// (a real one's `--netns`, `--bpffs`, overlay and uplinks).
    pub fn spawn(
        palisade: &Path,
        work: &Path,
        url: &str,
        node: &str,
        kind: AgentKind,
        extra: &[String],
    ) -> Result<AgentProcess> {
        let dir = work.join("agents").join(node);
        fs::create_dir_all(&dir).map_err(|source| BenchError::Write {
            path: dir.clone(),
            source,
        })?;
        let log = dir.join("agent.log");
        let file = fs::File::create(&log).map_err(|source| BenchError::Write {
            path: log.clone(),
            source,
        })?;
        let state_dir = dir.join("state");
        let mut command = Command::new(palisade);
        command
            .args(["agent", "--node", node, "--server", url, "--state-dir"])
            .arg(&state_dir);
        if kind == AgentKind::Simulated {
            command.arg("--simulate-datapath");
        }
        let stderr = file.try_clone().map_err(|source| BenchError::Write {
            path: log.clone(),
            source,
        })?;
        let child = command
            .args(extra)
            .env_remove("PALISADE_TOKEN")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .map_err(|source| BenchError::Start {
                what: format!("palisade agent of {node}"),
                source,
            })?;
        Ok(AgentProcess {
            child: Some(KillOnDrop(child)),
            node: node.to_string(),
            kind,
            state_dir,
            log,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// Its status file, when this process wrote it.
    pub fn status(&self) -> Option<AgentStatus> {
        let pid = self.pid()?;
        read_status(&self.state_dir)
            .ok()
            .flatten()
            .filter(|s| s.pid == pid)
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 15)
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.0.try_wait().ok().flatten().is_some())
    }

    /// Its resident memory now.
    pub fn memory(&self) -> Option<Memory> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib = |field: &str| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        Some(Memory {
            rss: kib("VmRSS")? * 1024,
            hwm: kib("VmHWM")? * 1024,
        })
    }

    /// Stops the process (SIGSTOP) without killing it: it holds its
    /// connection but does nothing. The guard still kills it.
    pub fn freeze(&self) -> Result<()> {
        let pid = self.pid().ok_or(BenchError::NotRunning {
            node: self.node.clone(),
        })?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .map_err(|e| BenchError::Io {
            action: format!("stop the agent of {} (SIGSTOP)", self.node),
            source: e.into(),
        })
    }

    /// The server revision it has in its maps (its applied revision).
    fn applied_revision(&self) -> Option<u64> {
        Some(self.status()?.server?.applied_revision)
    }

    /// The server revision its last reconcile wrote, and when its writes ended.
    fn reconciled(&self) -> Option<(u64, SystemTime)> {
        let link = self.status()?.server?;
        let at = humantime::parse_rfc3339(link.reconciled_at.as_deref()?).ok()?;
        Some((link.reconciled_revision?, at))
    }
}

/// Waits until every agent has server revision `revision` or a later one in
/// its maps (its first snapshot, after a load); fails naming the agents
/// that did not within `timeout`.
pub fn wait_reconciled(
    agents: &mut [AgentProcess],
    revision: u64,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<usize> = (0..agents.len()).collect();
    loop {
        interrupted(stop)?;
        // Caught up: the agent has `revision` in its maps. An agent that no
        // change since its last reconcile concerned says so with its applied
        // revision (moved by the stream's heartbeats), not a reconcile.
        pending.retain(|&i| agents[i].applied_revision().is_none_or(|r| r < revision));
        if pending.is_empty() {
            return Ok(());
        }
        if let Some(&i) = pending.iter().find(|&&i| agents[i].exited()) {
            return Err(BenchError::AgentExited {
                node: agents[i].node.clone(),
                log: agents[i].log_tail(),
            });
        }
        if Instant::now() > deadline {
            let first = &agents[pending[0]];
            return Err(BenchError::NotReady {
                what: format!(
                    "{} agents at server revision {revision} (e.g. {}, status {:?})",
                    pending.len(),
                    first.node,
                    first.status()
                ),
                waited_s: timeout.as_secs(),
                log: first.log_tail(),
            });
        }
        thread::sleep(POLL * 5);
    }
}

/// One affected agent's result for one apply.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The apply's number in the series, from 1.
    pub apply: usize,
    /// The agent's node.
    pub node: String,
    /// Whether the agent is simulated.
    pub simulated: bool,
    /// From the server's commit to the end of the agent's writes; `None`:
    /// it did not reconcile the revision within the timeout.
    pub latency_ms: Option<f64>,
    /// From the apply response arriving to the end of the agent's writes
    /// (0 when they ended first).
    pub from_response_ms: Option<f64>,
    /// From sending the apply request to the end of the agent's writes:
    /// the server's work on the apply included.
    pub from_request_ms: Option<f64>,
}

/// A series of applies and what every affected agent did with each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// One per (apply, affected agent).
    pub samples: Vec<Sample>,
    /// From sending each apply to its response, milliseconds.
    pub ack_ms: Vec<f64>,
    /// Agents whose writes ended before the response arrived (counted as
    /// 0 ms from the response).
    pub before_ack: usize,
    /// CPU time the server used during the series, milliseconds.
    pub server_cpu_ms: f64,
    /// CPU time all agents used during the series, milliseconds.
    pub agents_cpu_ms: f64,
}

impl Series {
    /// The latencies from the commit (timeouts left out), milliseconds,
    /// sorted.
    pub fn latencies(&self, filter: impl Fn(&Sample) -> bool) -> Vec<f64> {
        sorted(
            self.samples
                .iter()
                .filter(|s| filter(s))
                .filter_map(|s| s.latency_ms),
        )
    }

    /// The latencies from the response arriving, milliseconds, sorted.
    pub fn from_response(&self) -> Vec<f64> {
        sorted(self.samples.iter().filter_map(|s| s.from_response_ms))
    }

    /// The latencies from sending the request, milliseconds, sorted.
    pub fn from_request(&self) -> Vec<f64> {
        sorted(self.samples.iter().filter_map(|s| s.from_request_ms))
    }

    /// Samples that timed out.
    pub fn timeouts(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.latency_ms.is_none())
            .count()
    }
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut out: Vec<f64> = values.collect();
    out.sort_by(f64::total_cmp);
    out
}

/// How a series runs.
#[derive(Debug, Clone, Copy)]
pub struct SeriesOptions {
    /// Applies measured.
    pub applies: usize,
    /// Pause between the last affected agent of one apply and the next apply.
    pub gap: Duration,
    /// How long an agent may take before it counts as a timeout.
    pub timeout: Duration,
}

/// One apply of a series: its documents, and the nodes whose agents it
/// affects (`None`: every agent of the series).
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The documents applied in one request.
    pub documents: Vec<Value>,
    /// The nodes whose agents must enforce it.
    pub nodes: Option<BTreeSet<String>>,
}

/// Runs `options.applies` applies, the `k`-th (from 1) being `step(k)`, and
/// times each from its commit to the end of every affected agent's
/// reconcile of the revision. The next apply goes after every affected
/// agent got there (or timed out) and `options.gap`. `server` is the
/// server's pid, for its CPU time.
pub fn run_series(
    applier: &Applier,
    server: u32,
    agents: &[AgentProcess],
    mut step: impl FnMut(usize) -> Step,
    options: SeriesOptions,
    stop: &AtomicBool,
) -> Result<Series> {
    let mut series = Series::default();
    let cpu = |agents: &[AgentProcess]| -> (Duration, Duration) {
        let server = cpu_time(server).unwrap_or_default();
        let agents = agents
            .iter()
            .filter_map(|a| cpu_time(a.pid()?))
            .sum::<Duration>();
        (server, agents)
    };
    let (server_before, agents_before) = cpu(agents);
    for k in 1..=options.applies {
        interrupted(stop)?;
        let Step { documents, nodes } = step(k);
        let ack = applier.apply(documents)?;
        series.ack_ms.push(ack.took.as_secs_f64() * 1000.0);
        let committed_at = ack.committed_at.ok_or_else(|| {
            BenchError::Api(format!(
                "apply {k} wrote nothing (revision {}): every apply of a series must change a policy",
                ack.revision
            ))
        })?;
        let deadline = Instant::now() + options.timeout;
        let mut pending: Vec<&AgentProcess> = agents
            .iter()
            .filter(|a| nodes.as_ref().is_none_or(|n| n.contains(&a.node)))
            .collect();
        let ms = |from: SystemTime, to: SystemTime| {
            to.duration_since(from).unwrap_or_default().as_secs_f64() * 1000.0
        };
        loop {
            interrupted(stop)?;
            pending.retain(|agent| match agent.reconciled() {
                Some((revision, at)) if revision >= ack.revision => {
                    if at < ack.at {
                        series.before_ack += 1;
                    }
                    series.samples.push(Sample {
                        apply: k,
                        node: agent.node.clone(),
                        simulated: agent.kind == AgentKind::Simulated,
                        latency_ms: Some(ms(committed_at, at)),
                        from_response_ms: Some(ms(ack.at, at)),
                        from_request_ms: Some(ms(ack.sent_at, at)),
                    });
                    false
                }
                _ => true,
            });
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for agent in pending {
                    tracing::warn!(node = %agent.node, revision = ack.revision, "agent timed out");
                    series.samples.push(Sample {
                        apply: k,
                        node: agent.node.clone(),
                        simulated: agent.kind == AgentKind::Simulated,
                        latency_ms: None,
                        from_response_ms: None,
                        from_request_ms: None,
                    });
                }
                break;
            }
            thread::sleep(POLL);
        }
        if !pause(options.gap, stop) {
            return Err(BenchError::Interrupted);
        }
    }
    let (server_after, agents_after) = cpu(agents);
    series.server_cpu_ms = server_after.saturating_sub(server_before).as_secs_f64() * 1000.0;
    series.agents_cpu_ms = agents_after.saturating_sub(agents_before).as_secs_f64() * 1000.0;
    Ok(series)
}

/// The `p`-th percentile (nearest rank) of sorted values; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The toggled policy of `tenant` for the `k`-th apply: in tier
/// `security`, the ingress of `app == 'app'` from `app == 'web'` on TCP
/// 8080 is denied when `k` is odd and passed on to the default tier (where
/// the tenant's own policies allow it) when `k` is even, so every apply
/// changes a verdict on every node of the tenant (the destination's
/// ingress is checked on the source's node too).
pub fn toggle_document(tenant: &str, k: usize) -> Value {
    let action = if k % 2 == 1 { "deny" } else { "pass" };
    json!({
        "apiVersion": "palisade.dev/v1",
        "kind": "Policy",
        "metadata": {"name": TOGGLE_POLICY, "tenant": tenant},
        "spec": {
            "tier": "security",
            "order": 5,
            "selector": "app == 'app'",
            "ingress": [{
                "action": action,
                "from": [{"selector": "app == 'web'"}],
                "ports": [{"protocol": "TCP", "port": 8080}],
            }],
        },
    })
}

/// The tier the toggles live in (the three-tier example has it too; an
/// apply of the same document changes nothing).
pub fn security_tier() -> Value {
    json!({
        "apiVersion": "palisade.dev/v1",
        "kind": "Tier",
        "metadata": {"name": "security"},
        "spec": {"order": 100, "defaultAction": "pass"},
    })
}

/// The size of a generated intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Endpoints in all.
    pub endpoints: usize,
    /// Tenants they belong to.
    pub tenants: usize,
    /// Nodes each tenant's endpoints are spread over.
    pub nodes_per_tenant: usize,
}

/// The apps of a generated tenant, each with its clients and port.
const APPS: [(&str, &str, u16); 8] = [
    ("web", "", 443),
    ("app", "web", 8080),
    ("api", "web", 8443),
    ("db", "app", 5432),
    ("cache", "app", 6379),
    ("queue", "app", 5672),
    ("auth", "api", 9000),
    ("search", "api", 9200),
];

/// A generated intent: its documents by kind (apply the tenants first, the
/// policies last) and its tenant names.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Tenant documents.
    pub tenants: Vec<Value>,
    /// Endpoint documents.
    pub endpoints: Vec<Value>,
    /// Policy documents, toggles included (as for apply 0: `pass`).
    pub policies: Vec<Value>,
    /// The tenants' names.
    pub tenant_names: Vec<String>,
    /// The nodes each tenant has endpoints on.
    pub tenant_nodes: BTreeMap<String, BTreeSet<String>>,
}

impl Generated {
    /// Every document, in apply order.
    pub fn documents(&self) -> Vec<Value> {
        let mut docs = vec![security_tier()];
        docs.extend(self.tenants.iter().cloned());
        docs.extend(self.endpoints.iter().cloned());
        docs.extend(self.policies.iter().cloned());
        docs
    }
}

/// Generates `scale`: tenants `t01`, `t02`, ... (default deny), each with
/// its share of the endpoints spread round-robin over `nodes_per_tenant`
/// consecutive nodes of `nodes` (tenant `i` starts where tenant `i - 1`
/// ended, so with enough tenants every node hosts some), labelled with an
/// app of eight (web → app, api → db, cache, queue, auth, search), an env
/// (prod, staging) and a zone (a, b): 32 label sets per tenant. Policies
/// per tenant: one per app (ingress from its clients on its port, web from
/// the world on 443, egress to the apps it calls), monitoring from a CIDR
/// on 9100, prod isolated from staging in tier `security`, and the toggle.
pub fn generate(scale: Scale, nodes: &[String]) -> Generated {
    let mut out = Generated::default();
    let tenants = scale.tenants.max(1);
    let per_node = scale.nodes_per_tenant.clamp(1, nodes.len().max(1));
    for t in 0..tenants {
        let tenant = format!("t{:02}", t + 1);
        out.tenants.push(json!({
            "apiVersion": "palisade.dev/v1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"defaultAction": "deny"},
        }));
        let count = scale.endpoints / tenants + usize::from(t < scale.endpoints % tenants);
        for i in 0..count {
            let node = &nodes[(t * per_node + i % per_node) % nodes.len()];
            out.tenant_nodes
                .entry(tenant.clone())
                .or_default()
                .insert(node.clone());
            let (app, _, _) = APPS[i % APPS.len()];
            let env = if (i / APPS.len()).is_multiple_of(2) {
                "prod"
            } else {
                "staging"
            };
            let zone = if (i / (2 * APPS.len())).is_multiple_of(2) {
                "a"
            } else {
                "b"
            };
            let ip = format!("10.{}.{}.{}", 16 + i / 62_500, (i / 250) % 250, i % 250 + 1);
            out.endpoints.push(json!({
                "apiVersion": "palisade.dev/v1",
                "kind": "Endpoint",
                "metadata": {
                    "name": format!("{app}-{i:05}"),
                    "tenant": tenant,
                    "labels": {"app": app, "env": env, "zone": zone},
                },
                "spec": {"node": node, "ips": [ip]},
            }));
        }
        out.policies.extend(tenant_policies(&tenant));
        out.tenant_names.push(tenant);
    }
    out
}

fn tenant_policies(tenant: &str) -> Vec<Value> {
    let policy = |name: &str, spec: Value| {
        json!({
            "apiVersion": "palisade.dev/v1",
            "kind": "Policy",
            "metadata": {"name": name, "tenant": tenant},
            "spec": spec,
        })
    };
    let mut out = Vec::new();
    for (app, client, port) in APPS {
        let from = if client.is_empty() {
            json!([{"entity": "world"}])
        } else {
            json!([{"selector": format!("app == '{client}'")}])
        };
        let egress: Vec<Value> = APPS
            .iter()
            .filter(|(_, c, _)| *c == app)
            .map(|(callee, _, callee_port)| {
                json!({
                    "action": "allow",
                    "to": [{"selector": format!("app == '{callee}'")}],
                    "ports": [{"protocol": "TCP", "port": callee_port}],
                })
            })
            .collect();
        out.push(policy(
            app,
            json!({
                "selector": format!("app == '{app}'"),
                "ingress": [{"action": "allow", "from": from, "ports": [{"protocol": "TCP", "port": port}]}],
                "egress": egress,
            }),
        ));
    }
    out.push(policy(
        "monitoring",
        json!({
            "selector": "all()",
            "ingress": [{"action": "allow", "from": [{"cidr": "192.0.2.0/24"}], "ports": [{"protocol": "TCP", "port": 9100}]}],
        }),
    ));
    out.push(policy(
        "prod-isolation",
        json!({
            "tier": "security",
            "order": 20,
            "selector": "env == 'prod'",
            "ingress": [{"action": "deny", "from": [{"selector": "env == 'staging'"}]}],
        }),
    ));
    out.push(toggle_document(tenant, 0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_generated_intent_validates_and_spreads_over_every_node() {
        let nodes: Vec<String> = (1..=10).map(|i| format!("n{i}")).collect();
        let scale = Scale {
            endpoints: 200,
            tenants: 4,
            nodes_per_tenant: 3,
        };
        let generated = generate(scale, &nodes);
        assert_eq!(generated.endpoints.len(), 200);
        let text: String = generated
            .documents()
            .iter()
            .map(|d| format!("---\n{}\n", serde_json::to_string(d).unwrap()))
            .collect();
        let intent = palisade_model::load_str(&text, "generated.yaml", &Default::default())
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(intent.tenants.len(), 4);
        let used: std::collections::BTreeSet<&str> =
            intent.endpoints.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(
            used.len(),
            10,
            "4 tenants x 3 nodes cover all 10 nodes: {used:?}"
        );
    }
}
