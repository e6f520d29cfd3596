//! The lab's error type: one enum for building, opening, probing and tearing
//! down labs. Every message says what failed, where, and what to do next.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A lab name that cannot be used as the prefix of namespace names.
    #[error("invalid lab name {name:?}: {reason}")]
    InvalidLabName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// A tenant, namespace, endpoint or node name that cannot become part of a
    /// network namespace name.
    #[error("{what} {value:?} cannot name a network namespace: {reason}; rename it in the intent")]
    InvalidResourceName {
        /// Which kind of name (`tenant`, `node`, ...).
        what: &'static str,
        /// The name as written.
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A lab of this name already exists.
    #[error(
        "lab {name:?} already exists ({evidence}): run `palisade lab down {name}` first \
         (or `up` with the replace option)"
    )]
    LabExists {
        /// The lab's name.
        name: String,
        /// What shows that it exists (a state directory, namespaces).
        evidence: String,
    },

    /// `open` found no state for the lab.
    #[error("no lab named {name:?} is up (no {path}): run `palisade lab up` first", path = .path.display())]
    LabNotFound {
        /// The lab's name.
        name: String,
        /// The state file that was looked for.
        path: PathBuf,
    },

    /// `up` was asked to start responders without a command to start them with.
    #[error(
        "LabOptions::responder_command is empty: pass the program (and leading arguments) \
         that runs palisade_lab::responder::serve_main, e.g. [\"palisade\", \"lab\", \"serve\"]"
    )]
    NoResponderCommand,

    /// Two endpoints share an IPv4 address in plain mode, where the kernel's one
    /// routing table cannot tell them apart.
    #[error(
        "plain mode cannot build endpoints {first} and {second}: both use {ip} and the node's \
         routing table has one route per address; give them distinct addresses or drop plain mode"
    )]
    PlainOverlap {
        /// The shared address.
        ip: Ipv4Addr,
        /// The first endpoint using it (full ref).
        first: String,
        /// The second endpoint using it (full ref).
        second: String,
    },

    /// A host-side interface name the kernel would refuse, or one the lab reserves.
    #[error("endpoint {endpoint}: host-side interface {name:?} is unusable: {reason}; fix spec.interface")]
    InvalidInterface {
        /// The endpoint's full ref.
        endpoint: String,
        /// The interface name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },

    /// Two endpoints on one node would get the same host-side interface name.
    #[error(
        "endpoints {first} and {second} on node {node} both get host-side interface {name:?}: \
         set a distinct spec.interface on one of them"
    )]
    InterfaceClash {
        /// The node.
        node: String,
        /// The interface name.
        name: String,
        /// The first endpoint (full ref).
        first: String,
        /// The second endpoint (full ref).
        second: String,
    },

    /// Every candidate world address is inside a tenant's CIDRs or used by an endpoint.
    #[error(
        "no world address left: every address of 198.51.100.0/24 and 203.0.113.0/24 is inside a \
         tenant CIDR or used by an endpoint; free one of them for the lab's world"
    )]
    NoWorldAddress,

    /// More of something than the lab's address plan has room for.
    #[error("the lab supports at most {max} {what}, the intent has {count}")]
    TooMany {
        /// What there are too many of (`nodes`, `tenants on node x`).
        what: String,
        /// The limit.
        max: usize,
        /// How many the intent has.
        count: usize,
    },

    /// An `ip` command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line (and, for batches, the failing batch line).
        command: String,
        /// The command's standard error, or why it could not run.
        detail: String,
    },

    /// A file or directory operation failed.
    #[error("could not {action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done (`create`, `read`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Entering a network namespace failed.
    #[error("could not enter network namespace {netns}: {source} (does /run/netns/{netns} exist? is this root?)")]
    EnterNetns {
        /// The namespace's name.
        netns: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The state file exists but cannot be understood.
    #[error("state file {path} is corrupt ({source}): run `palisade lab down` to clean up by name", path = .path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A responder process could not be started, or exited before it was ready.
    #[error("responder in {netns} failed: {detail}")]
    Responder {
        /// The namespace it serves.
        netns: String,
        /// What happened (with the tail of its log when it exited).
        detail: String,
    },

    /// The responder's command line could not be understood.
    #[error("responder arguments: {0} (expected --netns NAME --name NAME [--serve tcp/80]...)")]
    ResponderArgs(String),

    /// The responder could not bind one of its ports.
    #[error("responder {name} in {netns} could not bind {port}: {source}")]
    Bind {
        /// The namespace.
        netns: String,
        /// The responder's name.
        name: String,
        /// The port (`tcp/80`).
        port: String,
        /// The underlying error.
        source: io::Error,
    },

    /// A place (endpoint, world, node) that this lab did not build.
    #[error("{place} is not part of lab {lab:?}: was the lab built from other files? (`palisade lab down` then `up` again)")]
    UnknownPlace {
        /// The lab's name.
        lab: String,
        /// The place as written.
        place: String,
    },

    /// A command run inside a namespace could not be started.
    #[error("could not run {program:?} in {netns}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// The namespace.
        netns: String,
        /// The underlying error.
        source: io::Error,
    },

    /// An endpoint cannot be moved as asked.
    #[error("cannot move {endpoint} in lab {lab:?}: {reason}")]
    Move {
        /// The lab's name.
        lab: String,
        /// The endpoint's full ref.
        endpoint: String,
        /// Why, and what to do.
        reason: String,
    },

    /// The lab's copy of the intent (what its directory-mode agents read)
    /// cannot be read or does not hold what was asked.
    #[error("the lab's intent copy {}: {reason}", dir.display())]
    IntentCopy {
        /// The copy's directory.
        dir: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// The underlay could not be captured.
    #[error("cannot capture on {interface} in {netns}: {source} (run as root)")]
    Capture {
        /// The namespace.
        netns: String,
        /// The interface.
        interface: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
