//! palisade's eBPF datapath, user-space side.
//!
//! The C programs in `bpf/` (compiled by build.rs and embedded) drop
//! unauthorized packets at the source, in the host kernel, and deliver
//! authorized ones straight to the destination port. This crate loads them,
//! pins and adopts their maps ([`Datapath`]), mirrors the map layouts
//! ([`abi`]), attaches the hooks with TCX links that outlive the agent
//! ([`Datapath::attach`]), reads the event ring buffer ([`EventReader`]) and
//! offers BPF_PROG_TEST_RUN support for tests ([`testing`]).
//!
//! See `bpf/README.md` for the pipeline, the drop reasons, the chain contract
//! and what happens to malformed packets.

pub mod abi;
mod attach;
mod clock;
mod datapath;
mod drop_reason;
mod error;
mod events;
mod maps;
mod netns;
mod sys;
pub mod testing;

pub use abi::{Direction, Hook};
pub use attach::{Attachment, Interface, DEFAULT_NETNS};
pub use datapath::{Datapath, DatapathConfig, MapSizes, BPFFS_ROOT};
pub use drop_reason::DropReason;
pub use error::{Error, MapShape, Result};
pub use events::{ConnCounters, EventReader, FlowEvent, FlowInfo};
pub use maps::{
    monotonic_now, ClosedFlow, ConfigMap, Conntrack, Counters, Endpoints, Ipcache, Maps, Policy,
    Tenants, Uplinks,
};
pub use netns::{NetnsGuard, NETNS_DIR};
