//! The agent's error type. Every message says what failed, where, and what
//! to do about it. Errors of one reconcile (a bad policy file, a table over
//! its limit) are logged and the last good state stays enforced; only errors
//! that stop the agent from enforcing at all are returned from [`crate::Agent`].

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The datapath could not be loaded, read or updated.
    #[error("datapath: {source}")]
    Datapath {
        /// The datapath's error.
        #[from]
        source: palisade_datapath::Error,
    },

    /// The node's network namespace could not be entered.
    #[error("cannot enter network namespace {netns}: {source} (does /run/netns/{netns} exist? `ip netns list` shows them)")]
    Netns {
        /// The namespace's name.
        netns: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The agent's own network namespace (where it talks to the server and
    /// serves metrics) could not be opened or entered again.
    #[error("cannot {action} the agent's own network namespace: {source} (the agent needs root: CAP_SYS_ADMIN)")]
    HomeNetns {
        /// `open` or `enter`.
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// A policy path does not exist or cannot be watched.
    #[error("cannot watch policy path {}: {reason}", path.display())]
    PolicyPath {
        /// The path given with --policy-dir.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file of the agent's state directory could not be read or written.
    #[error("cannot {action} {}: {source} (the agent keeps identities there; check the --state-dir permissions)", path.display())]
    StateIo {
        /// What was being done (`read`, `write`, `create directory`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file of the state directory is not what this agent wrote.
    #[error(
        "{} is corrupt: {source}. The agent refuses to guess identities that other tables may \
         still use; stop the agent, remove the file (identities are then allocated afresh and \
         every table is rewritten) and start it again",
        path.display()
    )]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// Identities could not be allocated for the intent.
    #[error("identity allocation failed: {source}")]
    Identities {
        /// The allocator's error.
        #[from]
        source: palisade_policy::IdentityError,
    },

    /// The policy could not be compiled (for example a table over its limit).
    #[error("policy compile failed: {source}")]
    Compile {
        /// The compiler's error.
        #[from]
        source: palisade_policy::CompileError,
    },

    /// The desired contents of a map do not fit in it.
    #[error(
        "map {map} would need {needed} entries but holds at most {capacity}: nothing was \
         changed and the previous tables stay enforced. Reduce the policy, or restart the agent \
         with a fresh --bpffs directory and larger map sizes"
    )]
    MapFull {
        /// The map.
        map: &'static str,
        /// Entries the desired state needs.
        needed: usize,
        /// The map's size.
        capacity: u32,
    },

    /// The node's interfaces could not be listed or watched.
    #[error("cannot {action} the node's interfaces: {source}")]
    Interfaces {
        /// `list` or `watch`.
        action: &'static str,
        /// The underlying error.
        source: io::Error,
    },

    /// The flow log could not be opened or written.
    #[error("cannot {action} the flow log {}: {source}", path.display())]
    FlowLog {
        /// `open` or `write`.
        action: &'static str,
        /// The file (`-` for standard output).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// An `--uplink` value is not `TENANT=IFNAME@NEXTHOP`.
    #[error("invalid uplink {text:?}: {reason} (write TENANT=IFNAME@NEXTHOP, e.g. acme=up1@169.254.101.2)")]
    InvalidUplink {
        /// The value given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `--peer` value is not `NODE=IP`.
    #[error("invalid peer {text:?}: {reason} (write NODE=IP, e.g. node-2=10.255.0.2)")]
    InvalidPeer {
        /// The value given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The node's overlay device could not be created, adopted or set up.
    #[error("overlay device {device}: {reason}")]
    Overlay {
        /// The device's name.
        device: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },

    /// The metrics listener could not listen.
    #[error("cannot serve metrics on {addr}: {source} (is the address in use? --metrics-listen 127.0.0.1:0 picks a free port)")]
    MetricsListen {
        /// The address given with --metrics-listen.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The connection to the control plane could not be set up.
    #[error("cannot set up the connection to the server: {source}")]
    Server {
        /// The client's error.
        #[from]
        source: palisade_client::ClientError,
    },

    /// A thread of the agent could not be started or ended abnormally.
    #[error("agent thread {thread}: {reason}")]
    Thread {
        /// The thread's name.
        thread: &'static str,
        /// What happened.
        reason: String,
    },
}

/// Result with the agent's [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
