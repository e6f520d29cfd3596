//! The datapath's error type: loading and adopting pinned maps, map
//! operations, attaching, namespaces and events. Every message says what
//! failed, where, and what to do about it.

use std::io;
use std::path::PathBuf;

use crate::abi::Hook;

/// Shape of a map as the kernel reports it (for pinned-map mismatches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Map flags (`BPF_F_*`).
    pub flags: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.flags
        )
    }
}

/// Everything that can go wrong in the datapath crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// bpffs could not be mounted at /sys/fs/bpf.
    #[error("cannot mount bpffs at /sys/fs/bpf: {source} (run as root, or mount it: `mount -t bpf bpf /sys/fs/bpf`)")]
    MountBpffs {
        /// The mount error.
        source: io::Error,
    },

    /// The configured pin directory is not on a bpffs.
    #[error("{} is not on a bpf filesystem: choose a directory under /sys/fs/bpf", path.display())]
    NotBpffs {
        /// The configured directory.
        path: PathBuf,
    },

    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create directory`, `remove stale link pin`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A pinned map does not have the layout this build expects.
    #[error(
        "pinned map {name} at {} has {found}, but this build expects {expected}: the datapath \
         layout changed. Run the palisade version that created it, or remove the pin directory \
         (this drops its tables and connections) and start again",
        path.display()
    )]
    PinnedMapMismatch {
        /// The map's name.
        name: String,
        /// Where it is pinned.
        path: PathBuf,
        /// What this build's object declares.
        expected: MapShape,
        /// What the kernel reports for the pinned map.
        found: MapShape,
    },

    /// A pinned object could not be inspected.
    #[error("cannot inspect pinned map {name} at {}: {source}", path.display())]
    InspectPin {
        /// The map's name.
        name: String,
        /// Where it is pinned.
        path: PathBuf,
        /// The underlying error.
        source: Box<aya::maps::MapError>,
    },

    /// An embedded object failed to parse or its maps could not be created.
    #[error("cannot load BPF object {object}: {source}")]
    LoadObject {
        /// Object name (`from_endpoint`, ...).
        object: &'static str,
        /// The loader's error.
        source: Box<aya::EbpfError>,
    },

    /// The embedded object could not be parsed to read its map definitions.
    #[error("cannot parse BPF object {object}: {source}")]
    ParseObject {
        /// Object name.
        object: &'static str,
        /// The parser's error.
        source: Box<aya::EbpfError>,
    },

    /// A program was rejected by the kernel (the verifier log is in the source).
    #[error("cannot load program {program}: {source}")]
    LoadProgram {
        /// Program name.
        program: &'static str,
        /// The loader's error, with the verifier log.
        source: Box<aya::programs::ProgramError>,
    },

    /// The object lacks a program or map the crate expects (a build bug).
    #[error("BPF object {object} has no {what} named {name}: the object and the crate are out of sync (rebuild)")]
    Missing {
        /// Object name.
        object: &'static str,
        /// `program` or `map`.
        what: &'static str,
        /// The missing name.
        name: &'static str,
    },

    /// A map operation failed.
    #[error("{op} on map {map} failed: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The operation (`insert`, `remove`, `read`, ...).
        op: &'static str,
        /// aya's error.
        source: Box<aya::maps::MapError>,
    },

    /// A POLICY key with a prefix the lookup never asks for.
    #[error(
        "POLICY key prefixlen {prefixlen} is outside 80..=96: subject, peer, direction and \
         protocol always match in full, only the port is a prefix (build keys with PolicyKey::new)"
    )]
    PolicyPrefix {
        /// The key's prefixlen.
        prefixlen: u32,
    },

    /// A network namespace could not be entered or left.
    #[error(
        "cannot {action} network namespace {netns}: {source} (does /run/netns/{netns} exist?)"
    )]
    Netns {
        /// `enter` or `open`.
        action: &'static str,
        /// The namespace's name.
        netns: String,
        /// The underlying error.
        source: io::Error,
    },

    /// The interface does not exist in the namespace.
    #[error("no interface {interface} in network namespace {netns}")]
    NoInterface {
        /// Name or `#ifindex`.
        interface: String,
        /// The namespace (`default` = the caller's).
        netns: String,
    },

    /// A TCX attachment could not be created, updated or detached.
    #[error("cannot {action} {hook:?} on ifindex {ifindex} (netns {netns}): {source}")]
    Attach {
        /// `attach`, `update`, `pin`, `detach`.
        action: &'static str,
        /// The hook.
        hook: Hook,
        /// The interface.
        ifindex: u32,
        /// The namespace.
        netns: String,
        /// The kernel's error.
        source: io::Error,
    },

    /// This hook cannot be attached to an interface.
    #[error("{hook:?} is not an attachable hook (use FromEndpoint, ToEndpoint, FromUplink or FromOverlay)")]
    NotAttachable {
        /// The hook asked for.
        hook: Hook,
    },

    /// The event ring buffer was already handed out.
    #[error("the event reader was already taken from this Datapath (there is one consumer per ring buffer)")]
    EventsTaken,

    /// The event ring buffer could not be polled.
    #[error("cannot poll the event ring buffer: {source}")]
    PollEvents {
        /// The poll(2) error.
        source: io::Error,
    },

    /// An event record is not one this build understands.
    #[error(
        "malformed event record: {reason} (is the datapath object from another palisade version?)"
    )]
    BadEvent {
        /// What is wrong with it.
        reason: String,
    },

    /// The kernel's tick rate could not be identified.
    #[error("cannot calibrate the datapath clock: measured {measured:.1} ticks per second, not a known HZ (is the machine heavily overloaded?)")]
    ClockCalibration {
        /// Ticks per second measured.
        measured: f64,
    },

    /// BPF_PROG_TEST_RUN failed.
    #[error("BPF_PROG_TEST_RUN of {program} failed: {source}")]
    TestRun {
        /// Program name.
        program: String,
        /// aya's error.
        source: Box<aya::programs::ProgramError>,
    },
}

/// Result with the datapath's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn map(map: &'static str, op: &'static str, source: aya::maps::MapError) -> Self {
        Error::Map {
            map,
            op,
            source: Box::new(source),
        }
    }
}
