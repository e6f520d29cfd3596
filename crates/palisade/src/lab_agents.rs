//! `palisade lab agents up|down|status`: one `palisade agent` per node of a
//! lab, as background processes recorded in the lab's state (so that `lab
//! down` stops them too), following the resource files (the default) or a
//! control plane (`--server`), each serving metrics on a free port of the
//! machine's loopback and with its files under the lab's directories:
//!
//! | what | where |
//! | --- | --- |
//! | pins (maps, links) | `/sys/fs/bpf/palisade/lab-<lab>/<node>` |
//! | state (identities, `status.json`) | `/run/palisade/lab/<lab>/agents/<node>` |
//! | flow log | `/run/palisade/lab/<lab>/<node>.flows.jsonl` |
//! | its log (stderr) | `/run/palisade/lab/<lab>/<node>.agent.log` |
//! | the intent it reads (from files: a copy `lab move` rewrites) | `/run/palisade/lab/<lab>/intent/` |

use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use palisade_agent::read_status;
use palisade_lab::{agent_bpffs_dir, state_dir, AgentInfo, Lab};

use crate::check::load_or_report;
use crate::cli::{LabName, Output, Sources};
use crate::Outcome;

/// `palisade lab agents ...`.
#[derive(Debug, Subcommand)]
pub enum LabAgentsCommand {
    /// Start one palisade agent per node of a firewall-mode lab, in the background, and wait
    /// until each enforces the resources.
    #[command(
        after_help = "Examples:\n  palisade lab agents up -f examples/three-tier\n  \
        palisade lab agents up --server http://127.0.0.1:7400 --token-file admin.token\n\n\
        Each -f path (a directory, read recursively, or a file) is made absolute and given to every\n\
        agent as --policy-dir; the agents watch them, so editing the files changes the policy live.\n\
        Give the paths the lab was built from (or a copy to edit): endpoints of other nodes are peers.\n\
        With --server the agents follow the control plane instead (apply resources there); the token\n\
        (an admin's, or one per node: agent:<node>) reaches them through their environment. Each agent\n\
        serves metrics on 127.0.0.1 (`palisade lab agents status` shows where)."
    )]
    Up(LabAgentsUpArgs),

    /// Stop the lab's agents and remove their pins (in firewall mode nothing flows afterwards).
    Down(LabName),

    /// Show each agent: node, pid, whether it runs, its last reconcile.
    Status(LabAgentsStatusArgs),
}

/// `palisade lab agents up`.
#[derive(Debug, Args)]
#[command(mut_arg("paths", |a| a.required(false).required_unless_present("server")))]
pub struct LabAgentsUpArgs {
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub lab: LabName,
    /// Follow this control plane instead of files (URL, or several comma separated).
    #[arg(long, value_name = "URL", conflicts_with = "paths")]
    pub server: Option<String>,
    /// The agents' token (else PALISADE_TOKEN): an admin token, or see --token-dir.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PALISADE_TOKEN",
        hide_env_values = true,
        requires = "server"
    )]
    pub token: Option<String>,
    /// A directory with one token file per node, named <node>.token (role agent:<node>).
    #[arg(
        long = "token-dir",
        value_name = "DIR",
        requires = "server",
        conflicts_with = "token"
    )]
    pub token_dir: Option<PathBuf>,
    /// How long to wait for every agent's first reconcile, in seconds.
    #[arg(long = "timeout-s", default_value_t = 60)]
    pub timeout_s: u64,
}

/// Where the lab's agents get their intent.
#[derive(Debug, Clone)]
pub enum AgentSource {
    /// Resource files or directories (absolute).
    Files(Vec<PathBuf>),
    /// A control plane; the token reaches the agent through its environment
    /// (never on its command line, which `ps` shows).
    Server {
        /// URL(s).
        url: String,
    },
}

/// `palisade lab agents status`.
#[derive(Debug, Args)]
pub struct LabAgentsStatusArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs a `palisade lab agents` command.
pub fn run(command: LabAgentsCommand) -> Result<Outcome> {
    match command {
        LabAgentsCommand::Up(args) => {
            up(&args)?;
            println!(
                "stop them with `palisade lab agents down --name {}` (or `palisade lab down`)",
                args.lab.name
            );
            Ok(Outcome::Yes)
        }
        LabAgentsCommand::Down(lab) => down(&lab.name),
        LabAgentsCommand::Status(args) => status(&args),
    }
}

/// The files of `node`'s agent in lab `lab`.
struct AgentFiles {
    bpffs: PathBuf,
    state: PathBuf,
    flow_log: PathBuf,
    log: PathBuf,
}

impl AgentFiles {
    fn of(lab: &str, node: &str) -> AgentFiles {
        let dir = state_dir(lab);
        AgentFiles {
            bpffs: agent_bpffs_dir(lab, node),
            state: dir.join("agents").join(node),
            flow_log: dir.join(format!("{node}.flows.jsonl")),
            log: dir.join(format!("{node}.agent.log")),
        }
    }
}

/// The arguments of `palisade agent` for `node` of `lab` (after the program name).
pub fn agent_args(lab: &Lab, node: &str, policy_paths: &[PathBuf]) -> Vec<String> {
    agent_args_for(lab, node, &AgentSource::Files(policy_paths.to_vec()))
}

/// The arguments of `palisade agent` for `node` of `lab` following `source`.
pub fn agent_args_for(lab: &Lab, node: &str, source: &AgentSource) -> Vec<String> {
    let files = AgentFiles::of(lab.name(), node);
    let netns = lab
        .nodes()
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.netns.clone())
        .unwrap_or_default();
    let mut args = vec![
        "agent".to_string(),
        "--node".into(),
        node.to_string(),
        "--netns".into(),
        netns,
    ];
    match source {
        AgentSource::Files(paths) => {
            for path in paths {
                args.push("--policy-dir".into());
                args.push(path.display().to_string());
            }
        }
        AgentSource::Server { url } => {
            args.push("--server".into());
            args.push(url.clone());
        }
    }
    args.push("--bpffs".into());
    args.push(files.bpffs.display().to_string());
    args.extend(lab.overlay_args(node));
    args.extend(lab.uplink_args(node));
    args.push("--flow-log".into());
    args.push(files.flow_log.display().to_string());
    args.push("--state-dir".into());
    args.push(files.state.display().to_string());
    args
}

/// The given paths, absolute (the agents run from another directory).
pub fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    paths
        .iter()
        .map(|p| std::fs::canonicalize(p).with_context(|| format!("cannot find {}", p.display())))
        .collect()
}

/// Starts one agent per node of the lab and waits until each enforces
/// (`palisade demo` uses it too).
pub(crate) fn up(args: &LabAgentsUpArgs) -> Result<Outcome> {
    let mut lab = Lab::open(&args.lab.name)?;
    if lab.is_plain() {
        bail!(
            "lab {} is in plain mode (the kernel forwards, no firewall); agents need a lab built \
             without --plain",
            lab.name()
        );
    }
    if let Some(running) = lab.agents().iter().find(|a| a.is_running()) {
        bail!(
            "lab {} already has agents (node {} runs pid {}); run `palisade lab agents down --name {}` first",
            lab.name(),
            running.node,
            running.pid,
            lab.name()
        );
    }
    let source = match &args.server {
        Some(url) => AgentSource::Server { url: url.clone() },
        None => {
            // Invalid files would leave every agent waiting for a first good state.
            load_or_report(&args.sources)?;
            // The agents read the lab's own copy, which `lab move` rewrites.
            let paths = absolute_paths(&args.sources.paths)?;
            AgentSource::Files(vec![palisade_lab::copy_intent(lab.name(), &paths)?])
        }
    };
    let exe = std::env::current_exe().context("cannot find the palisade executable")?;

    let nodes: Vec<String> = lab.nodes().iter().map(|n| n.name.clone()).collect();
    let mut started = Vec::new();
    for node in &nodes {
        let files = AgentFiles::of(lab.name(), node);
        // A status file of an earlier run must not pass for readiness.
        let _ = std::fs::remove_file(files.state.join(palisade_agent::STATUS_FILE));
        let mut log = File::create(&files.log)
            .with_context(|| format!("cannot create {}", files.log.display()))?;
        let mut command = Command::new(&exe);
        command
            .arg("-v")
            .args(agent_args_for(&lab, node, &source))
            .args(["--k8s-tenant", &args.sources.kubernetes_tenant])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("PALISADE_TOKEN");
        match (&args.token, &args.token_dir) {
            (Some(token), _) => {
                command.env("PALISADE_TOKEN", token);
            }
            (None, Some(dir)) => {
                command.args([
                    "--token-file",
                    &dir.join(format!("{node}.token")).display().to_string(),
                ]);
            }
            (None, None) => {}
        }
        writeln!(log, "# palisade agent of node {node} (lab {})", lab.name())?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for this command does not reach it.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the agent of node {node}"))?;
        let pid = child.id() as i32;
        let info = AgentInfo::for_process(
            node,
            pid,
            files.bpffs.clone(),
            files.state.clone(),
            files.flow_log.clone(),
            files.log.clone(),
        );
        match info {
            Some(mut info) => {
                if let AgentSource::Server { url } = &source {
                    info.server = Some(url.clone());
                }
                lab.record_agent(info)?
            }
            None => bail!(
                "the agent of node {node} exited at once; see {}",
                files.log.display()
            ),
        }
        started.push((node.clone(), child, files));
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    for (node, mut child, files) in started {
        loop {
            if let Some(status) = read_status(&files.state).ok().flatten() {
                if status.pid == child.id() && status.reconciles > 0 {
                    let last = status.last_reconcile.expect("reconciles > 0");
                    let server = status
                        .server
                        .as_ref()
                        .map(|s| format!(", server revision {}", s.applied_revision))
                        .unwrap_or_default();
                    println!(
                        "agent of {node} enforcing (pid {}): {} in {:.1} ms{server}; flow log {}; metrics {}",
                        status.pid,
                        last.changes,
                        last.duration_ms,
                        files.flow_log.display(),
                        status.metrics.as_deref().unwrap_or("-"),
                    );
                    break;
                }
            }
            if let Ok(Some(exit)) = child.try_wait() {
                bail!(
                    "the agent of node {node} exited ({exit}) before enforcing; its log:\n{}",
                    tail(&files.log)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent of node {node} did not enforce within {} s; its log:\n{}",
                    args.timeout_s,
                    tail(&files.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(Outcome::Yes)
}

/// Stops the agents, then detaches their programs and removes their pins
/// (what `palisade agent --uninstall` does), node by node.
pub(crate) fn down(name: &str) -> Result<Outcome> {
    let mut lab = Lab::open(name)?;
    let agents = lab.stop_agents()?;
    let mut detached = 0;
    for agent in &agents {
        let netns = lab
            .nodes()
            .iter()
            .find(|n| n.name == agent.node)
            .map(|n| n.netns.clone());
        let bpffs = agent.bpffs_dir.clone();
        // Links pinned for the agent's namespace are found from inside it.
        let done = std::thread::spawn(move || -> Result<_> {
            if let Some(netns) = netns {
                palisade_agent::enter_netns(&netns)?;
            }
            Ok(palisade_agent::uninstall(&bpffs)?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("removing the pins of node {} panicked", agent.node))??;
        detached += done.detached;
    }
    println!(
        "lab {name}: stopped {} agent(s), detached {detached} hooks and removed their pins",
        agents.len()
    );
    Ok(Outcome::Yes)
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn status(args: &LabAgentsStatusArgs) -> Result<Outcome> {
    let lab = Lab::open(&args.lab.name)?;
    let mut rows = Vec::new();
    for agent in lab.agents() {
        let status = read_status(&agent.state_dir).ok().flatten();
        rows.push(serde_json::json!({
            "node": agent.node,
            "pid": agent.pid,
            "running": agent.is_running(),
            "bpffs_dir": agent.bpffs_dir,
            "flow_log": agent.flow_log,
            "log": agent.log,
            "reconciles": status.as_ref().map(|s| s.reconciles),
            "last_reconcile": status.as_ref().and_then(|s| s.last_reconcile.clone()),
            "last_error": status.as_ref().and_then(|s| s.last_error.clone()),
            "server": status.as_ref().and_then(|s| s.server.clone()),
            "metrics": status.as_ref().and_then(|s| s.metrics.clone()),
        }));
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            if rows.is_empty() {
                println!(
                    "lab {} has no agents (start them: palisade lab agents up --name {} -f PATH)",
                    lab.name(),
                    lab.name()
                );
            }
            for agent in lab.agents() {
                let status = read_status(&agent.state_dir).ok().flatten();
                let last = status
                    .as_ref()
                    .and_then(|s| s.last_reconcile.as_ref())
                    .map(|r| {
                        format!(
                            "last reconcile {} ({}, {:.1} ms, datapath policy revision {})",
                            r.at, r.changes, r.duration_ms, r.policy_revision
                        )
                    })
                    .unwrap_or_else(|| "no reconcile yet".into());
                let error = status
                    .as_ref()
                    .and_then(|s| s.last_error.as_ref())
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                let server = status
                    .as_ref()
                    .and_then(|s| s.server.as_ref())
                    .map(|s| {
                        if s.connected {
                            format!(
                                "; server {} connected, applied revision {}",
                                s.server.as_deref().unwrap_or("?"),
                                s.applied_revision
                            )
                        } else {
                            format!(
                                "; server DISCONNECTED since {} ({}): enforcing applied revision {} (fail static)",
                                s.since,
                                s.reason.as_deref().unwrap_or("unknown"),
                                s.applied_revision
                            )
                        }
                    })
                    .unwrap_or_default();
                let metrics = status
                    .as_ref()
                    .and_then(|s| s.metrics.as_ref())
                    .map(|m| format!("; metrics {m}"))
                    .unwrap_or_default();
                println!(
                    "{:<16} pid {:<8} {:<8} {last}{server}{error}{metrics}",
                    agent.node,
                    agent.pid,
                    if agent.is_running() {
                        "running"
                    } else {
                        "stopped"
                    }
                );
            }
        }
    }
    Ok(Outcome::Yes)
}
