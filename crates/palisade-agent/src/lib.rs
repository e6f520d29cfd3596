//! palisade's per-host agent: keeps one node's eBPF datapath equal to the
//! intent.
//!
//! A [`Source`] hands over complete [`Snapshot`]s: [`DirectorySource`]
//! (resource files, watched), or [`ServerSource`] (a control plane's node
//! stream, whose identities the agent then uses; the agent reports its
//! status, flow records and rule counters back, and keeps enforcing the last
//! state while the server is away). Otherwise the agent allocates identities
//! (persisted in its state directory, so a restart keeps them), compiles the
//! tenants present on its node, turns the result into map contents
//! ([`desired()`], a pure function), diffs them against what the kernel's
//! maps hold ([`Plan`]) and applies the changes in an order that never opens
//! a hole, then bumps the policy revision so established connections are
//! decided again. It attaches the programs to endpoint ports and uplinks as
//! they appear (TCX links pinned on bpffs: they outlive the agent, and a new
//! agent takes them over in place), turns datapath events into the flow
//! log (ECS JSON lines, aggregated, rotated) and serves Prometheus metrics.
//!
//! ```no_run
//! # fn demo() -> palisade_agent::Result<()> {
//! use palisade_agent::{Agent, AgentConfig};
//! let mut config = AgentConfig::new("node-1", vec!["/etc/palisade/policies".into()]);
//! config.netns = Some("pl_demo_n_node-1".into());
//! config.uplinks.push("acme=up1@169.254.101.2".parse()?);
//! let agent = Agent::start(config)?;
//! // ... later:
//! agent.stop()?;
//! # Ok(()) }
//! ```
//!
//! For benchmarks only, `AgentConfig::simulate_datapath` swaps the kernel
//! for a SIMULATION ([`simulation`]): the same work against maps recorded
//! in memory, nothing enforced, no root needed.
//!
//! See `docs/agent.md` for the command, the restart behaviour and the flow
//! log's fields.

mod agent;
pub mod aggregate;
mod backend;
mod config;
pub mod desired;
mod error;
pub mod flowlog;
mod interfaces;
pub mod metrics;
pub mod names;
mod netns;
pub mod overlay;
mod ports;
pub mod reconcile;
pub mod reports;
mod sample;
pub mod server;
pub mod simulation;
pub mod source;
mod state;
mod uninstall;
mod vxlan;

pub use agent::{Agent, Stopper};
pub use config::{
    default_bpffs_dir, default_state_dir, AgentConfig, FlowLogConfig, FlowLogTarget, Rotation,
    ServerSettings, Timing, UplinkSpec, DEFAULT_BPFFS_ROOT, DEFAULT_STATE_ROOT,
};
pub use desired::{desired, ipcache_key, node_intent, policy_entry, Desired, NodeInputs};
pub use error::{AgentError, Result};
pub use interfaces::{Link, NodeLinks};
pub use netns::{enter_netns, NetnsHandle};
pub use overlay::{OverlayConfig, PeerSpec, Underlay, OVERLAY_DEVICE};
pub use reconcile::{ChangeCounts, MapContents, Plan};
pub use server::ServerSource;
pub use source::{
    DirectorySource, LinkEvent, ServerRevision, Snapshot, Source, SourceUpdate, StopFlag, Updates,
};
pub use state::{
    read_status, AgentStatus, ReconcileStatus, ServerLinkStatus, StateDir, STATUS_FILE,
};
pub use uninstall::{uninstall, Uninstalled};
