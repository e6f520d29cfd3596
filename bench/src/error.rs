//! Errors of the benchmark library: building the testbed, loading a
//! firewall inside a namespace, and running the traffic generator.

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
