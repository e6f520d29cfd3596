//! End-to-end tests of the single-host firewall: the `palisade` binary
//! builds labs of network namespaces, runs agents on their nodes, and real
//! packets check what gets through. Needs root, the BPF objects and a kernel
//! with TCX (as CI has).
//!
//! Every test makes its own lab (unique name) and takes it down on drop,
//! with its agents and pins, also when it fails; tests with a control plane
//! run `palisade server` processes on free ports with their own stores.

mod agent_visibility;
mod browser;
mod control_plane;
mod demo;
mod differential;
mod enforcement;
mod lab_agents;
mod matrix;
mod overlay;
mod semantics;
mod server_support;
mod support;
