//! `palisade agent`: the per-host agent (docs/agent.md). Enters the node's
//! network namespace on the main thread before any other thread exists
//! (keeping a handle on its own, where it talks to the server and serves
//! metrics), blocks SIGINT/SIGTERM so that a dedicated thread receives them,
//! then runs `palisade_agent::Agent` until a signal stops it. With
//! `--simulate-datapath` (benchmarks only) the agent enforces nothing: see
//! `palisade_agent::simulation`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use palisade_agent::{
    default_bpffs_dir, default_state_dir, read_status, Agent, AgentConfig, FlowLogConfig, Rotation,
    ServerSettings, UplinkSpec,
};
use palisade_client::ClientConfig;
use palisade_model::LoadOptions;

use crate::server_cmd::parse_duration;

use crate::Outcome;

/// `palisade agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node to enforce, as endpoints name it in spec.node.
    #[arg(long, value_name = "NAME")]
    pub node: String,

    /// Resource files or directories to enforce; directories are read recursively. All are
    /// watched: an edit is enforced within about 100 ms. Repeat for several.
    #[arg(
        long = "policy-dir",
        value_name = "DIR",
        required_unless_present_any = ["uninstall", "server"],
        conflicts_with = "server"
    )]
    pub policy_dirs: Vec<PathBuf>,

    /// Follow a control plane instead of files: server URL(s), comma separated, tried in
    /// turn. The agent uses the server's identities, reports its status, flows and rule
    /// counters, and keeps enforcing the last state while the server is away.
    #[arg(long, value_name = "URL[,URL...]")]
    pub server: Option<String>,

    /// The agent's bearer token (role agent:<node>).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PALISADE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file holding the token (its first line).
    #[arg(long = "token-file", value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate to trust for https servers.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks
    /// one, written to the status file).
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Pin directory on bpffs for the maps and links [default: /sys/fs/bpf/palisade/<node>].
    #[arg(long, value_name = "PATH")]
    pub bpffs: Option<PathBuf>,

    /// The node's network namespace (/run/netns/NAME); the agent stays in the root mount
    /// namespace. Never run the agent under `ip netns exec`, which hides bpffs.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    /// A tenant's way to its world: the node's interface and the IPv4 next hop there.
    #[arg(long = "uplink", value_name = "TENANT=IFNAME@NEXTHOP")]
    pub uplinks: Vec<String>,

    /// The node's address on the underlay (the network between nodes): endpoints of other
    /// nodes are reached over a VXLAN overlay from it (docs/overlay.md).
    #[arg(
        long = "underlay-address",
        value_name = "IP",
        conflicts_with = "underlay_interface"
    )]
    pub underlay_address: Option<std::net::Ipv4Addr>,

    /// The node's interface toward the underlay; its first IPv4 address is the node's
    /// underlay address (instead of --underlay-address).
    #[arg(long = "underlay-interface", value_name = "NAME")]
    pub underlay_interface: Option<String>,

    /// Another node's underlay address; repeat for every node (with --server the control
    /// plane also sends them, a --peer wins).
    #[arg(long = "peer", value_name = "NODE=IP")]
    pub peers: Vec<String>,

    /// Write flow records (JSON lines, ECS field names) to FILE, or '-' for standard output.
    #[arg(long = "flow-log", value_name = "FILE|-")]
    pub flow_log: Option<String>,

    /// Rotate the flow log file before it grows past this many bytes (0: never).
    #[arg(long = "flow-log-max-bytes", value_name = "BYTES", default_value_t = 100 << 20)]
    pub flow_log_max_bytes: u64,

    /// Flow log files kept, the current one included (flows.jsonl, flows.jsonl.1, ...).
    #[arg(long = "flow-log-keep", value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_log_keep: u64,

    /// Aggregate denied and audit records per flow over this interval (the first goes out
    /// at once); 0s turns aggregation off.
    #[arg(long = "flow-aggregate", value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub flow_aggregate: Duration,

    /// Identity allocator, cookie history and status file [default: /var/lib/palisade/agent/<node>].
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Tenant that Kubernetes objects (Pod, Namespace, NetworkPolicy) land in.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,

    /// Remove palisade from the node instead: detach every hook and remove the pin directory.
    /// Stop the agent first.
    #[arg(long)]
    pub uninstall: bool,

    /// SIMULATION FOR BENCHMARKS, ENFORCES NOTHING: do all the work (stream, compile, diff,
    /// ordered reconcile) against maps recorded in memory instead of the kernel's; no program is
    /// loaded or attached, no root or bpffs needed. For running many agents on one machine.
    #[arg(
        long = "simulate-datapath",
        conflicts_with_all = ["uninstall", "netns", "uplinks", "underlay_address", "underlay_interface", "peers"]
    )]
    pub simulate_datapath: bool,
}

/// Runs `palisade agent`.
pub fn run(args: AgentArgs) -> Result<Outcome> {
    // First, while this is the only thread: every thread created later
    // starts in the node's namespace. The server link and the metrics
    // listener go back to this one.
    let home = match &args.netns {
        Some(netns) => Some(palisade_agent::enter_netns(netns)?),
        None => None,
    };
    let bpffs = args
        .bpffs
        .clone()
        .unwrap_or_else(|| default_bpffs_dir(&args.node));
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&args.node));
    if args.uninstall {
        return uninstall(&args.node, &bpffs, &state_dir);
    }

    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .context("cannot block SIGINT/SIGTERM for the signal thread")?;

    let mut config = AgentConfig::new(&args.node, args.policy_dirs.clone());
    config.bpffs_dir = bpffs;
    config.state_dir = state_dir;
    config.netns = None; // entered above, on the main thread
    config.control_netns = home;
    config.flow_log = args.flow_log.as_deref().map(|f| FlowLogConfig {
        target: f.parse().expect("infallible"),
        rotation: (args.flow_log_max_bytes > 0).then_some(Rotation {
            max_bytes: args.flow_log_max_bytes,
            keep: args.flow_log_keep as usize,
        }),
    });
    config.timing.flow_aggregate = args.flow_aggregate;
    config.simulate_datapath = args.simulate_datapath;
    config.metrics_listen = args.metrics_listen;
    if let Some(servers) = &args.server {
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(file)) => Some(read_token(file)?),
            (None, None) => None,
        };
        let mut client = ClientConfig::for_server(servers, token.as_deref());
        client.ca_file = args.ca_file.clone();
        config.server = Some(ServerSettings::new(client));
    }
    config.load_options = LoadOptions {
        kubernetes_tenant: args.kubernetes_tenant.clone(),
    };
    let underlay = match (&args.underlay_address, &args.underlay_interface) {
        (Some(address), _) => Some(palisade_agent::Underlay::Address(*address)),
        (None, Some(name)) => Some(palisade_agent::Underlay::Interface(name.clone())),
        (None, None) => None,
    };
    let peers = args
        .peers
        .iter()
        .map(|p| p.parse::<palisade_agent::PeerSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    match underlay {
        Some(underlay) => config.overlay = Some(palisade_agent::OverlayConfig { underlay, peers }),
        None if !peers.is_empty() => {
            bail!("--peer needs the node's own underlay: give --underlay-address or --underlay-interface")
        }
        None => {}
    }
    for uplink in &args.uplinks {
        config.uplinks.push(uplink.parse::<UplinkSpec>()?);
    }

    let agent = Agent::start(config)?;
    let stopper = agent.stopper();
    std::thread::Builder::new()
        .name("palisade-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                tracing::info!(?signal, "stopping");
                stopper.stop();
            }
        })
        .context("cannot start the signal thread")?;
    agent.wait()?;
    Ok(Outcome::Yes)
}

/// The first line of a token file.
fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

fn uninstall(node: &str, bpffs: &std::path::Path, state_dir: &std::path::Path) -> Result<Outcome> {
    if let Ok(Some(status)) = read_status(state_dir) {
        if status.pid != std::process::id() && is_running(status.pid) {
            bail!(
                "the agent of node {node} still runs (pid {}, per {}); stop it first",
                status.pid,
                state_dir.join(palisade_agent::STATUS_FILE).display()
            );
        }
    }
    let done = palisade_agent::uninstall(bpffs)?;
    if done.removed_dir {
        println!(
            "palisade removed from node {node}: {} hooks detached, {} removed (identities stay in {})",
            done.detached,
            bpffs.display(),
            state_dir.display()
        );
    } else {
        println!("nothing to remove: {} does not exist", bpffs.display());
    }
    Ok(Outcome::Yes)
}

/// Whether process `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}
