//! palisade's lab: a data centre on one machine, built from the same intent
//! the firewall enforces. Nodes, workloads (endpoints) and the outside world
//! are network namespaces joined by veth pairs and an underlay bridge;
//! responders answer inside them with their names; probes send real packets
//! from inside a namespace and report what came back.
//!
//! Everything lives in namespaces named `pl_<lab>_...`; the machine's own
//! interfaces, routes and firewall are never touched. See `docs/lab.md` for
//! the layout, addresses and commands.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use palisade_lab::{Lab, LabOptions, Place};
//! # use palisade_model::{Intent, Protocol};
//! # fn demo(intent: &Intent) -> palisade_lab::Result<()> {
//! let options = LabOptions {
//!     plain: true,
//!     responder_command: vec!["palisade".into(), "lab".into(), "serve".into()],
//!     ..LabOptions::default()
//! };
//! let lab = Lab::up(intent, &options)?;
//! let web: Place = "acme:web-1".parse().unwrap();
//! let db = Place::endpoint(&intent.endpoints[0]);
//! let result = lab.probe(&web, &db, Protocol::Tcp, 5432, Duration::from_secs(1));
//! println!("{}", serde_json::to_string(&result).unwrap());
//! Lab::down(lab.name())?;
//! # Ok(()) }
//! ```

pub mod capture;
mod error;
pub mod intent_copy;
mod ip;
mod lab;
pub mod naming;
pub mod netns;
mod plan;
mod probe;
mod process;
pub mod responder;
mod state;
mod topology;

pub use capture::{UnderlayCapture, UnderlayPacket};
pub use error::{LabError, Result};
pub use intent_copy::{copy_intent, intent_dir, set_endpoint_node};
pub use lab::{ordered_pairs, DownSummary, Lab, LabOptions, Moved};
pub use naming::MacAddr;
pub use probe::{world_label, Place, ProbeRecord, ProbeResult};
pub use state::{
    agent_bpffs_dir, agents_bpffs_root, state_dir, state_file, AgentInfo, EndpointInfo, NodeInfo,
    ResponderInfo, State, Uplink, WorldInfo, STATE_ROOT,
};
pub use topology::{workload_mtu, ENDPOINT_GATEWAY, OVERLAY_OVERHEAD, UNDERLAY_MTU};
