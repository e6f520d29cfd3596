//! Errors of the benchmark library: building the testbed, loading a
//! firewall inside a namespace, running the traffic generator, and the
//! processes and API calls of the propagation benchmark.

use std::io;
use std::process::ExitStatus;

use palisade_lab::LabError;

/// Result of the benchmark library.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// What can go wrong while setting up or measuring a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The lab could not be built, opened or entered.
    #[error("lab: {0}")]
    Lab(#[from] LabError),

    /// The testbed's built-in intent did not validate (a bug in this crate,
    /// or a model change it has not followed).
    #[error("the testbed intent does not validate; update bench/src/testbed.rs:\n{0}")]
    Intent(String),

    /// The lab was built but lacks an endpoint the testbed needs.
    #[error("lab {lab:?} has no endpoint {endpoint:?} with an IPv4 address; was it built from the testbed intent?")]
    MissingEndpoint {
        /// The lab's name.
        lab: String,
        /// The endpoint's full ref.
        endpoint: String,
    },

    /// A socket call of the traffic generator failed.
    #[error("{action} in namespace {netns}: {source}")]
    Socket {
        /// What was being done, e.g. `bind the receiver to 10.0.2.10:9000`.
        action: String,
        /// The namespace the socket lives in.
        netns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The palisade agent could not start or set up its policy.
    #[error("palisade agent: {0}")]
    Agent(#[from] palisade_agent::AgentError),

    /// A firewall was set up but the flow it must let through does not pass.
    #[error("{firewall}: the benchmark's flow does not pass within {waited_s} s after setup")]
    FlowBlocked {
        /// The firewall.
        firewall: String,
        /// How long the setup waited.
        waited_s: u64,
    },

    /// A file of a firewall's setup could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A program run inside a namespace (`ip netns exec NS PROGRAM`) could not start.
    #[error(
        "cannot run `{program}` in namespace {netns} (is it installed and on PATH?): {source}"
    )]
    Spawn {
        /// The program, e.g. `iptables-restore`.
        program: String,
        /// The namespace.
        netns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The `palisade` binary that the propagation benchmark runs as server and agents is missing.
    #[error(
        "no palisade binary at {}: build it first (`cargo build --release -p palisade` for the \
         benchmark, `cargo build -p palisade` for the tests) or point PALISADE_BIN at one",
        looked.display()
    )]
    NoPalisade {
        /// Where it was looked for.
        looked: std::path::PathBuf,
    },

    /// A process of the benchmark could not start.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What, e.g. `palisade server`.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A process did not get ready in time.
    #[error("{what} not ready within {waited_s} s (an outdated palisade binary? rebuild it); its log ends with:\n{log}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long.
        waited_s: u64,
        /// The end of the relevant log.
        log: String,
    },

    /// An agent process exited while the benchmark needed it.
    #[error("the agent of {node} exited (an outdated palisade binary without --simulate-datapath? rebuild it); its log ends with:\n{log}")]
    AgentExited {
        /// Its node.
        node: String,
        /// The end of its log.
        log: String,
    },

    /// An agent the benchmark wanted to signal does not run.
    #[error("the agent of {node} does not run")]
    NotRunning {
        /// Its node.
        node: String,
    },

    /// A call to the control plane's API failed.
    #[error("palisade API: {0}")]
    Api(String),

    /// A system call of the benchmark itself failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Ctrl-C (or SIGTERM) arrived: the benchmark stops and cleans up.
    #[error("interrupted")]
    Interrupted,

    /// A program run inside a namespace exited with an error.
    #[error("`{program}` in namespace {netns} failed ({status}): {stderr}")]
    Command {
        /// The program, e.g. `nft`.
        program: String,
        /// The namespace.
        netns: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on standard error (trimmed).
        stderr: String,
    },
}
