//! palisade's store: one [`Store`] trait with two backends that behave the
//! same, an embedded one ([`EmbeddedStore`], one redb file, the default) and
//! [`EtcdStore`] (an etcd cluster shared by several servers).
//!
//! The control-plane server keeps intent, identity allocations and the audit
//! log here. Every write advances one global [`Revision`]; keys carry their
//! `create_revision`, `mod_revision` and `version`; a [`Txn`] compares keys
//! and writes all-or-nothing (optimistic concurrency); [`Store::watch`]
//! streams every change after a revision, so a client resumes where it
//! stopped. The contract is written down in `docs/store.md`.

#![warn(missing_docs)]

mod embedded;
mod error;
mod etcd;
mod spec;
#[cfg(feature = "testing")]
pub mod testing;
mod txn;
mod types;
mod watch;

use std::future::Future;
use std::pin::Pin;

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use etcd::EtcdStore;
pub use spec::StoreSpec;
pub use txn::{Compare, Expect, Op, Txn, MAX_TXN_BYTES, MAX_TXN_OPS};
pub use types::{KeyValue, Listing, Revision};
pub use watch::{EventKind, Watch, WatchEvent};

/// A boxed future, so that [`Store`] stays object-safe (`Arc<dyn Store>`)
/// without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A revisioned key-value store with transactions and watch; both backends
/// keep exactly the same semantics (see `docs/store.md`).
///
/// Keys are `/`-separated strings that start with `/`; values are bytes.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Names the backend and where it lives, for logs and errors
    /// (`redb file /var/lib/palisade/store.redb`, `etcd at http://...`).
    fn describe(&self) -> String;

    /// Reads one key at the current revision; `None` when it is absent.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Reads every key under `prefix` (sorted by key) as one consistent
    /// snapshot, with the revision it was taken at.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>>;

    /// The store's current revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revision>>;

    /// Checks every compare of `txn` and, when all hold, applies its
    /// operations atomically. Returns the store's revision after the
    /// transaction: a new one when something changed, the current one when
    /// nothing did (only deletes of absent keys). The first compare that
    /// fails is reported as [`StoreError::Conflict`] and nothing is written.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<Revision>>;

    /// Streams every change under `prefix` with a revision strictly after
    /// `from`, in revision order, then live changes. Fails with
    /// [`StoreError::Compacted`] when the history after `from` is no longer
    /// complete (`from` is below the compacted revision); the stream itself
    /// ends with that error if a compaction overtakes it while it catches up.
    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>>;

    /// Discards history up to and including `revision`: watches from a
    /// revision below it then fail with [`StoreError::Compacted`]. Current
    /// values are kept. Compacting at or below an earlier compaction does
    /// nothing; beyond the current revision is an error.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>>;

    /// Releases the backend: ends every watch (with [`StoreError::Closed`])
    /// and, for the embedded store, closes the file. Later calls fail with
    /// [`StoreError::Closed`]. Dropping the store does the same.
    fn close(&self) -> BoxFuture<'_, Result<()>>;

    /// Writes `value` to `key` when `expect` holds for the key; returns the
    /// new revision (the key's new `mod_revision`).
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Revision>> {
        self.txn(Txn::new().when(key, expect).put(key, value))
    }

    /// Deletes `key` when `expect` holds for it. Deleting an absent key with
    /// [`Expect::Any`] succeeds and changes nothing; use [`Expect::Present`]
    /// or [`Expect::ModRevision`] to be told it was absent.
    fn delete<'a>(&'a self, key: &'a str, expect: Expect) -> BoxFuture<'a, Result<Revision>> {
        self.txn(Txn::new().when(key, expect).delete(key))
    }
}
