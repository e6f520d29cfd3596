//! The store's error type: what went wrong, in which backend, on which key,
//! and what to do about it.

use std::path::PathBuf;

use crate::{Expect, Revision};

/// Errors of both store backends.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare of a transaction did not hold, so nothing was written. The
    /// API turns this into 409 with the current version.
    #[error(
        "conflict on {key}: expected {expected}, but its mod_revision is {}; \
         re-read the key and retry",
        match current { Some(r) => r.to_string(), None => "none (the key is absent)".to_owned() }
    )]
    Conflict {
        /// The key whose compare failed.
        key: String,
        /// What the compare expected.
        expected: Expect,
        /// The key's current `mod_revision`, `None` when it is absent.
        current: Option<Revision>,
    },

    /// The history a watch needs was discarded by a compaction.
    #[error(
        "history up to revision {compacted_revision} was compacted; \
         list a fresh snapshot and watch from its revision"
    )]
    Compacted {
        /// Events up to and including this revision are gone.
        compacted_revision: Revision,
    },

    /// A key or prefix is not a store key.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A transaction breaks a rule both backends enforce.
    #[error("invalid transaction: {reason}")]
    InvalidTxn {
        /// What is wrong and what to do.
        reason: String,
    },

    /// A `--store` value names no backend.
    #[error("invalid store {spec:?}: {reason}")]
    InvalidSpec {
        /// The value as given.
        spec: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// A compaction was asked beyond the current revision.
    #[error(
        "cannot compact {backend} at revision {requested}: the current revision is {current}; \
         compact at most at the current revision"
    )]
    FutureRevision {
        /// The backend asked.
        backend: String,
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },

    /// The store was closed (or dropped) while in use.
    #[error("{backend} is closed; open the store again")]
    Closed {
        /// The backend that was closed.
        backend: String,
    },

    /// The redb file is held by another process.
    #[error(
        "redb file {path} is already open in another process (another palisade server?); \
         stop it or give this server its own --store path"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },

    /// The redb file failed to open, read or commit.
    #[error(
        "redb file {path}: {action} failed: {source}; \
         check the file, its permissions and free disk space"
    )]
    Embedded {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        action: &'static str,
        /// The error redb reported (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },

    /// The redb file holds data this version does not understand.
    #[error("redb file {path} is not a palisade store this version can read: {reason}")]
    Format {
        /// The database file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// etcd could not be reached at all.
    #[error(
        "etcd at {endpoints} unreachable: {source}; \
         check that the cluster is up and that --store lists its members"
    )]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error of the client.
        #[source]
        source: etcd_client::Error,
    },

    /// An etcd request failed.
    #[error("etcd at {endpoints}: {action} failed: {source}; {advice}")]
    Etcd {
        /// The endpoints of the cluster.
        endpoints: String,
        /// What the store was doing.
        action: &'static str,
        /// The error of the client.
        #[source]
        source: etcd_client::Error,
        /// What to do, which depends on whether the request may have been
        /// applied.
        advice: &'static str,
    },

    /// etcd returned something the store cannot interpret.
    #[error("etcd at {endpoints}: unexpected response to {action}: {reason}")]
    Protocol {
        /// The endpoints of the cluster.
        endpoints: String,
        /// What the store was doing.
        action: &'static str,
        /// What was wrong with the response.
        reason: String,
    },

    /// A blocking task of the embedded store panicked or was cancelled.
    #[error("redb file {path}: the worker thread for {action} failed: {source}")]
    Worker {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        action: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
}
