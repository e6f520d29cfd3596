//! palisade's benchmarks, measured with real packets in the lab: a testbed
//! (two endpoints on one node, `testbed`), a traffic generator and counter
//! (`traffic`), the firewalls compared (`firewall`), and the packets-per-second
//! benchmark that ties them together (`pps`, run by the `pps` binary), and
//! the harness of the propagation benchmark (`propagation`: a control plane,
//! real and simulated agents as processes, applies timed to enforcement).
//! See `bench/README.md` for how to run them and what they measured.

mod error;
pub mod firewall;
pub mod pps;
pub mod propagation;
pub mod startup;
pub mod testbed;
pub mod traffic;

pub use error::{BenchError, Result};
