//! Integration tests of palisade-store: the shared suite against a real
//! redb file and a real etcd server, and the tests particular to each
//! backend (restart, etcd cluster failover, several clients).

mod embedded;
mod etcd;
mod suite;

/// Shows the store's logs in a test's output, filtered by `RUST_LOG`
/// (e.g. `RUST_LOG=palisade_store=debug`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
