//! End-to-end tests of the single-host firewall: the `palisade` binary
//! builds labs of network namespaces, runs agents on their nodes, and real
//! packets check what gets through. Needs root, the BPF objects and a kernel
//! with TCX (as CI has).
//!
//! Every test makes its own lab (unique name) and takes it down on drop,
//! with its agents and pins, also when it fails.

mod enforcement;
mod lab_agents;
mod matrix;
mod semantics;
mod support;
