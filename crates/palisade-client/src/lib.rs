//! palisade's control-plane client, used by the CLI and by the agent:
//!
//! - [`api`]: the API's wire types (always built; the server uses them too);
//! - [`Client`]: apply, get, list, delete, explain, status, audit and watch
//!   over HTTP(S) with bearer tokens, errors turned into messages for people;
//! - [`NodeStream`]: an agent's stream of snapshots and deltas that detects a
//!   silent server and reconnects from its last revision;
//! - [`visibility`]: flow records, rule counters and the segmentation map
//!   (the wire types of `docs/visibility.md`), and their routes on [`Client`];
//! - [`ClientConfig`]: `--server`/`--token` > `PALISADE_SERVER`/`PALISADE_TOKEN`
//!   > `~/.config/palisade/config.yaml` contexts.
//!
//! The routes are described in `docs/api.md`.

#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
mod config;
#[cfg(feature = "http")]
mod error;
#[cfg(feature = "http")]
mod flows;
#[cfg(feature = "http")]
mod node_stream;
pub mod visibility;

#[cfg(feature = "http")]
pub use client::{Client, GetOptions, ListOptions, WatchStream};
#[cfg(feature = "http")]
pub use config::{ClientConfig, ConfigFile, Context, Overrides};
#[cfg(feature = "http")]
pub use error::ClientError;
#[cfg(feature = "http")]
pub use flows::FlowStream;
#[cfg(feature = "http")]
pub use node_stream::{NodeEvent, NodeStream, NodeStreamOptions};
