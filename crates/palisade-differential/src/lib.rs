//! Differential tests of palisade: the kernel datapath, filled by the real
//! agent code, must decide every flow exactly as the reference evaluator
//! (`palisade_policy::evaluate`) does.
//!
//! - [`intents`]: random valid intents and changes (proptest strategies);
//! - [`yaml`]: an intent as resource YAML, to replay a failing case with
//!   `palisade explain` or `palisade lab up`;
//! - [`flows`]: flows as one node sees them, and their packets;
//! - [`node`]: a node's datapath in a namespace of its own, filled by the
//!   agent's desired-state and reconcile code, run with BPF_PROG_TEST_RUN;
//! - [`check`]: the comparison of one case, packet by packet.
//!
//! The tests live in `tests/` (root and a kernel with BPF, as CI has):
//! `kernel.rs` (the property test, and checks that deliberately broken maps
//! are caught), `regressions.rs` (disagreements found, pinned) and
//! `yaml.rs` (a failure's YAML and `palisade explain` command replay it).
//! `PROPTEST_CASES=N` runs more cases. The `palisade` crate's end-to-end
//! module `differential` uses the generators and the YAML for labs with
//! real agents.
//!
//! ```text
//! CARGO_TARGET_DIR=target-diff cargo test -p palisade-differential
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod flows;
pub mod intents;
pub mod node;
pub mod yaml;
