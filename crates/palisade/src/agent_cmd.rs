//! `palisade agent`: the per-host agent (docs/agent.md). Enters the node's
//! network namespace on the main thread before any other thread exists,
//! blocks SIGINT/SIGTERM so that a dedicated thread receives them, then runs
//! `palisade_agent::Agent` until a signal stops it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use palisade_agent::{
    default_bpffs_dir, default_state_dir, read_status, Agent, AgentConfig, UplinkSpec,
};
use palisade_model::LoadOptions;

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
        required_unless_present = "uninstall"
    )]
    pub policy_dirs: Vec<PathBuf>,

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

    /// Write flow records (JSON lines, ECS field names) to FILE, or '-' for standard output.
    #[arg(long = "flow-log", value_name = "FILE|-")]
    pub flow_log: Option<String>,

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
}

/// Runs `palisade agent`.
pub fn run(args: AgentArgs) -> Result<Outcome> {
    // First, while this is the only thread: every thread created later
    // starts in the node's namespace.
    if let Some(netns) = &args.netns {
        palisade_agent::enter_netns(netns)?;
    }
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
    config.flow_log = args
        .flow_log
        .as_deref()
        .map(|f| f.parse().expect("infallible"));
    config.load_options = LoadOptions {
        kubernetes_tenant: args.kubernetes_tenant.clone(),
    };
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
