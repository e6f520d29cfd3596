//! `propagation`: how long a policy change takes from the API's
//! acknowledgement (the server's commit) to enforcement, in one run: (a) a
//! three-node lab (examples/three-tier) with real agents following a real
//! `palisade server`; (b) the same server and agents plus 97 SIMULATED
//! agents (`palisade agent --simulate-datapath`, which enforce nothing) and
//! 10,000 endpoints over 25 tenants, each apply changing one tenant's
//! policy as in (a); (c) the same fleet with every tenant's policy changed
//! in one apply, so that all 100 agents work at once on this machine's
//! cores. Prints p50/p99 of each, the ratio of the p99s of (b) and (a), the
//! CPU time per apply, and the agents' resident memory. Needs root (the
//! lab) and the `palisade` binary next to this one. See bench/README.md,
//! "Propagation".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use palisade_bench::propagation::{
    generate, palisade_binary, pause, percentile, run_series, toggle_document, wait_reconciled,
    AgentKind, AgentProcess, Applier, Memory, Scale, Series, SeriesOptions, Server, Step,
};
use palisade_bench::startup::init_logging;
use palisade_bench::testbed::{down_orphans, lab_name};
use palisade_lab::{agent_bpffs_dir, Lab, LabOptions, Place};
use palisade_model::{LoadOptions, Protocol};
use serde::Serialize;

/// Prefix of the benchmark's lab names.
const LAB_PREFIX: &str = "propbench";
/// The tenant of the lab whose policy (a) toggles.
const LAB_TENANT: &str = "acme";

/// Propagation latency with 3 real agents, then with 100 agents (97 simulated).
#[derive(Debug, Parser)]
#[command(name = "propagation")]
struct Args {
    /// Print the report as JSON (with every sample) instead of a table.
    #[arg(long)]
    json: bool,
    /// Applies measured in parts (a) and (b).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    applies: u64,
    /// Applies measured in part (c), every tenant at once.
    #[arg(long = "burst-applies", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    burst_applies: u64,
    /// Pause after every affected agent has applied one change, before the next, in ms.
    #[arg(long = "gap-ms", default_value_t = 200)]
    gap_ms: u64,
    /// An agent that has not applied a change after this many seconds is a timeout.
    #[arg(long = "timeout-s", default_value_t = 10)]
    timeout_s: u64,
    /// Agents in part (b), the lab's three real ones included.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(4..))]
    agents: u64,
    /// Endpoints in part (b), the lab's included.
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// Generated tenants in part (b) (besides the lab's).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=50))]
    tenants: u64,
    /// Nodes each generated tenant spreads over.
    #[arg(long = "nodes-per-tenant", default_value_t = 12)]
    nodes_per_tenant: usize,
    /// Keep the work directory (store, agents' state and logs) and print where it is.
    #[arg(long = "keep-work")]
    keep_work: bool,
}

fn main() -> ExitCode {
    init_logging("warn,propagation=info");
    let args = Args::parse();
    // Ctrl-C and SIGTERM raise `stop` (every thread starts with them
    // blocked), so that the guards take the lab and the processes down.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("propagation: cannot block SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let raise = stop.clone();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            eprintln!("propagation: interrupted, cleaning up");
            raise.store(true, Ordering::Relaxed);
        }
    });
    match run(&args, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("propagation: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The lab, taken down when dropped (after the agents, which are dropped first).
struct LabGuard(Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(self.0.name()) {
            eprintln!("taking lab {} down: {e}", self.0.name());
        }
    }
}

/// The work directory, removed on drop unless it is to be kept.
struct KeptOrNot(Option<tempfile::TempDir>, bool);

impl KeptOrNot {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("until dropped").path()
    }
}

impl Drop for KeptOrNot {
    fn drop(&mut self) {
        if let (Some(dir), true) = (self.0.take(), self.1) {
            let _ = dir.keep();
        }
    }
}

/// The repository's `examples/three-tier`.
fn three_tier() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/three-tier")
}

/// The flags of a real agent on `node` of `lab`: its place in the lab
/// (namespace, overlay, uplinks), pins, flow log and metrics.
fn real_agent_flags(lab: &Lab, node: &str, work: &Path) -> Vec<String> {
    let mut flags = lab.agent_node_args(node);
    let bpffs = agent_bpffs_dir(lab.name(), node);
    let flow_log = work.join("agents").join(node).join("flows.jsonl");
    flags.extend([
        "--bpffs".into(),
        bpffs.display().to_string(),
        "--flow-log".into(),
        flow_log.display().to_string(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ]);
    flags
}

/// p50/p99 of one part.
#[derive(Debug, Serialize)]
struct Part {
    name: String,
    agents: usize,
    simulated: usize,
    endpoints: usize,
    applies: u64,
    samples: usize,
    timeouts: usize,
    /// From the server's commit to each affected agent's enforcement.
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// The real agents alone.
    real_p50_ms: Option<f64>,
    real_p99_ms: Option<f64>,
    /// From sending an apply to its response.
    ack_p50_ms: Option<f64>,
    /// From the response arriving to each agent's enforcement (0 when first).
    response_p99_ms: Option<f64>,
    /// From sending an apply to each agent's enforcement.
    request_p99_ms: Option<f64>,
    before_ack: usize,
    /// CPU time per apply: the server's, and all agents' together.
    server_cpu_ms: f64,
    agents_cpu_ms: f64,
    series: Series,
}

impl Part {
    fn new(name: &str, agents: &[AgentProcess], endpoints: usize, applies: u64, s: Series) -> Part {
        let all = s.latencies(|_| true);
        let real = s.latencies(|sample| !sample.simulated);
        let mut ack = s.ack_ms.clone();
        ack.sort_by(f64::total_cmp);
        let per_apply = |ms: f64| ms / applies as f64;
        Part {
            name: name.into(),
            agents: agents.len(),
            simulated: agents
                .iter()
                .filter(|a| a.kind == AgentKind::Simulated)
                .count(),
            endpoints,
            applies,
            samples: s.samples.len(),
            timeouts: s.timeouts(),
            p50_ms: percentile(&all, 50.0),
            p99_ms: percentile(&all, 99.0),
            max_ms: all.last().copied(),
            real_p50_ms: percentile(&real, 50.0),
            real_p99_ms: percentile(&real, 99.0),
            ack_p50_ms: percentile(&ack, 50.0),
            response_p99_ms: percentile(&s.from_response(), 99.0),
            request_p99_ms: percentile(&s.from_request(), 99.0),
            before_ack: s.before_ack,
            server_cpu_ms: per_apply(s.server_cpu_ms),
            agents_cpu_ms: per_apply(s.agents_cpu_ms),
            series: s,
        }
    }
}

/// One agent's memory after the run.
#[derive(Debug, Serialize)]
struct AgentMemory {
    node: String,
    simulated: bool,
    memory: Memory,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    load_average: String,
    parts: Vec<Part>,
    p99_ratio: Option<f64>,
    verdict_checked: bool,
    memory: Vec<AgentMemory>,
}

fn run(args: &Args, stop: &AtomicBool) -> Result<()> {
    let palisade = palisade_binary()?;
    for lab in down_orphans(LAB_PREFIX)? {
        eprintln!("removed lab {lab} of an earlier run");
    }
    let work = tempfile::Builder::new()
        .prefix("palisade-propagation-")
        .tempdir()
        .context("cannot make the work directory")?;
    if args.keep_work {
        eprintln!("work directory kept: {}", work.path().display());
    }
    let work = KeptOrNot(Some(work), args.keep_work);
    let options = SeriesOptions {
        applies: args.applies as usize,
        gap: Duration::from_millis(args.gap_ms),
        timeout: Duration::from_secs(args.timeout_s),
    };
    let server = Server::start(&palisade, work.path())?;
    let applier = Applier::new(&server.url)?;
    tracing::info!(url = %server.url, "server up");

    // (a) the lab's intent and three real agents.
    let load = LoadOptions::default();
    let paths = [three_tier()];
    let intent = palisade_model::load_paths(&paths, &load)
        .map_err(|d| anyhow::anyhow!("examples/three-tier does not validate:\n{d}"))?;
    let mut docs: Vec<serde_json::Value> = palisade_model::read_documents(&paths, &load)
        .map_err(|d| anyhow::anyhow!("examples/three-tier: {d}"))?
        .into_iter()
        .map(|d| d.value)
        .collect();
    docs.push(toggle_document(LAB_TENANT, 0));
    let revision = applier.apply_all(&docs, stop)?;
    let lab_endpoints = intent.endpoints.len();

    let name = lab_name(LAB_PREFIX, 0);
    let responder = vec![palisade.clone().into(), "lab".into(), "serve".into()];
    let lab = LabGuard(
        Lab::up(
            &intent,
            &LabOptions {
                name: name.clone(),
                plain: false,
                replace: false,
                responder_command: responder,
            },
        )
        .with_context(|| format!("building lab {name}"))?,
    );
    // Declared after the lab: dropped (killed) before it goes down.
    let mut agents: Vec<AgentProcess> = Vec::new();
    for node in lab.0.nodes() {
        let flags = real_agent_flags(&lab.0, &node.name, work.path());
        agents.push(AgentProcess::spawn(
            &palisade,
            work.path(),
            &server.url,
            &node.name,
            AgentKind::Real,
            &flags,
        )?);
    }
    wait_reconciled(&mut agents, revision, Duration::from_secs(60), stop)?;
    tracing::info!("part (a): {} applies to 3 real agents", args.applies);
    let lab_step = |k| Step {
        documents: vec![toggle_document(LAB_TENANT, k)],
        nodes: None,
    };
    let a = run_series(&applier, server.pid(), &agents, lab_step, options, stop)?;
    let part_a = Part::new("(a) 3 real agents", &agents, lab_endpoints, args.applies, a);
    let verdict_checked = check_verdict(&lab.0, &applier, &mut agents, args.applies, stop)?;

    // (b) the same server and real agents, the generated intent, simulated agents.
    let mut nodes: Vec<String> = agents.iter().map(|a| a.node.clone()).collect();
    let real = nodes.len();
    nodes.extend((real + 1..=args.agents as usize).map(|i| format!("sim-{i:03}")));
    let scale = Scale {
        endpoints: args.endpoints.saturating_sub(lab_endpoints),
        tenants: args.tenants as usize,
        nodes_per_tenant: args.nodes_per_tenant,
    };
    let generated = generate(scale, &nodes);
    tracing::info!(
        endpoints = generated.endpoints.len(),
        tenants = generated.tenant_names.len(),
        "loading the generated intent"
    );
    let mut bulk = generated.documents();
    bulk.push(toggle_document(LAB_TENANT, 0));
    let revision = applier.apply_all(&bulk, stop)?;
    tracing::info!(
        simulated = nodes.len() - real,
        "starting the simulated agents"
    );
    for node in &nodes[real..] {
        agents.push(AgentProcess::spawn(
            &palisade,
            work.path(),
            &server.url,
            node,
            AgentKind::Simulated,
            &[],
        )?);
        pause(Duration::from_millis(20), stop);
    }
    wait_reconciled(&mut agents, revision, Duration::from_secs(300), stop)?;
    // Settle: first reports, compactions and status writes out of the way.
    if !pause(Duration::from_secs(3), stop) {
        bail!("interrupted");
    }
    let lab_nodes: BTreeSet<String> = nodes[..real].iter().cloned().collect();
    let mut tenant_nodes = generated.tenant_nodes.clone();
    tenant_nodes.insert(LAB_TENANT.to_string(), lab_nodes);
    let tenants: Vec<String> = tenant_nodes.keys().cloned().collect();
    // Every tenant's toggle is at 0 (pass) after the load; each apply flips one.
    let mut toggled: BTreeMap<String, usize> = tenants.iter().map(|t| (t.clone(), 0)).collect();
    let mut flip = |tenant: &str| {
        let n = toggled.get_mut(tenant).expect("a known tenant");
        *n += 1;
        toggle_document(tenant, *n)
    };

    tracing::info!(
        "part (b): {} applies of one tenant's policy each, {} agents",
        args.applies,
        agents.len()
    );
    let one_tenant = |k: usize| {
        let tenant = &tenants[(k - 1) % tenants.len()];
        Step {
            documents: vec![flip(tenant)],
            nodes: Some(tenant_nodes[tenant].clone()),
        }
    };
    let b = run_series(&applier, server.pid(), &agents, one_tenant, options, stop)?;
    let fleet = format!(
        "{} agents ({} simulated)",
        agents.len(),
        agents.len() - real
    );
    let endpoints = lab_endpoints + generated.endpoints.len();
    let part_b = Part::new(
        &format!("(b) {fleet}, one tenant per apply"),
        &agents,
        endpoints,
        args.applies,
        b,
    );

    tracing::info!(
        "part (c): {} applies of every tenant's policy at once, {} agents",
        args.burst_applies,
        agents.len()
    );
    let every_tenant = |_| Step {
        documents: tenants.iter().map(|t| flip(t)).collect(),
        nodes: None,
    };
    let burst = SeriesOptions {
        applies: args.burst_applies as usize,
        ..options
    };
    let c = run_series(&applier, server.pid(), &agents, every_tenant, burst, stop)?;
    let part_c = Part::new(
        &format!("(c) {fleet}, every tenant at once"),
        &agents,
        endpoints,
        args.burst_applies,
        c,
    );

    let memory: Vec<AgentMemory> = agents
        .iter()
        .filter_map(|a| {
            Some(AgentMemory {
                node: a.node.clone(),
                simulated: a.kind == AgentKind::Simulated,
                memory: a.memory()?,
            })
        })
        .collect();
    let p99_ratio = match (part_a.p99_ms, part_b.p99_ms) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let report = Report {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        parts: vec![part_a, part_b, part_c],
        p99_ratio,
        verdict_checked,
        memory,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    drop(server);
    Ok(())
}

/// After part (a): probes acme:web-1 → acme:app-1 on TCP 8080 in the lab,
/// then flips the toggle once more and probes again, so the table's
/// numbers are known to stand for verdicts that changed in the kernel.
fn check_verdict(
    lab: &Lab,
    applier: &Applier,
    agents: &mut [AgentProcess],
    applies: u64,
    stop: &AtomicBool,
) -> Result<bool> {
    let from = Place::Endpoint("acme:web-1".into());
    let to = Place::Endpoint("acme:app-1".into());
    let mut k = applies as usize;
    for _ in 0..2 {
        let denied = k % 2 == 1;
        let result = lab.probe(&from, &to, Protocol::Tcp, 8080, Duration::from_secs(1));
        if result.is_reachable() == denied {
            bail!(
                "after toggle {k} acme:web-1 → acme:app-1 tcp/8080 should be {} but the probe says {result:?}",
                if denied { "denied" } else { "allowed" }
            );
        }
        k += 1;
        let ack = applier.apply(vec![toggle_document(LAB_TENANT, k)])?;
        wait_reconciled(agents, ack.revision, Duration::from_secs(30), stop)?;
    }
    Ok(true)
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(report: &Report) {
    println!(
        "propagation: from the server's commit of an apply (committedAt, the API's \
         acknowledgement) to the end of each affected agent's map writes, one clock; {} cores \
         shared with other work (load average {}); server, agents and benchmark on this one machine",
        report.cores, report.load_average
    );
    println!(
        "{:<52} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "part",
        "agents",
        "endpoints",
        "applies",
        "samples",
        "p50 ms",
        "p99 ms",
        "max ms",
        "real p50",
        "real p99",
        "timeouts"
    );
    for p in &report.parts {
        println!(
            "{:<52} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8}",
            p.name,
            p.agents,
            p.endpoints,
            p.applies,
            p.samples,
            ms(p.p50_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            ms(p.real_p50_ms),
            ms(p.real_p99_ms),
            p.timeouts
        );
    }
    for p in &report.parts {
        println!(
            "{}: apply request → response p50 {} ms; p99 from the response arriving {} ms \
             ({} agents done before it), from sending the request {} ms; CPU per apply: server \
             {:.1} ms, agents {:.1} ms together",
            p.name,
            ms(p.ack_p50_ms),
            ms(p.response_p99_ms),
            p.before_ack,
            ms(p.request_p99_ms),
            p.server_cpu_ms,
            p.agents_cpu_ms
        );
    }
    let b = &report.parts[1];
    match report.p99_ratio {
        Some(ratio) => println!(
            "p99 at {} agents (one tenant per apply) / p99 at 3 agents: {ratio:.2} (same run)",
            b.agents
        ),
        None => println!("p99 ratio: not measured"),
    }
    let verdict = match b.p99_ms {
        Some(p99) if p99 <= 100.0 && b.timeouts == 0 => "ok",
        _ => "MISSED",
    };
    println!(
        "target p99 <= 100 ms at {} agents: {} {verdict}",
        b.agents,
        ms(b.p99_ms)
    );
    if let Some(c) = report.parts.get(2) {
        println!(
            "{}: every agent recomputes at once on {} cores, so its p99 is about the agents' CPU \
             per apply ({:.0} ms) divided by the cores: a bound of this machine, not of the \
             fleet, where each agent has its own host",
            c.name, report.cores, c.agents_cpu_ms
        );
    }
    if report.verdict_checked {
        println!(
            "probes: the toggle flips acme:web-1 → acme:app-1 tcp/8080 in the kernel (checked after part (a))"
        );
    }
    let real: Vec<&AgentMemory> = report.memory.iter().filter(|m| !m.simulated).collect();
    for m in &real {
        println!(
            "memory, real agent {}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            m.node,
            mib(m.memory.rss),
            mib(m.memory.hwm)
        );
    }
    let mut sim_rss: Vec<f64> = report
        .memory
        .iter()
        .filter(|m| m.simulated)
        .map(|m| mib(m.memory.rss))
        .collect();
    sim_rss.sort_by(f64::total_cmp);
    let sim_hwm = report
        .memory
        .iter()
        .filter(|m| m.simulated)
        .map(|m| mib(m.memory.hwm))
        .fold(0.0, f64::max);
    if !sim_rss.is_empty() {
        println!(
            "memory, SIMULATED agents ({}): VmRSS median {:.1} MiB, max {:.1} MiB; VmHWM max {:.1} MiB",
            sim_rss.len(),
            percentile(&sim_rss, 50.0).unwrap_or(0.0),
            sim_rss.last().copied().unwrap_or(0.0),
            sim_hwm
        );
    }
    let worst = real.iter().map(|m| mib(m.memory.rss)).fold(0.0, f64::max);
    println!(
        "target steady-state memory <= 50 MiB per agent (real agents, VmRSS): {worst:.1} MiB {}",
        if worst <= 50.0 { "ok" } else { "MISSED" }
    );
}
