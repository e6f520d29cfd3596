//! The values the store hands out: revisions, stored keys and snapshots.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in the store's history: one global counter that every write
/// advances (etcd's revision). A key's `mod_revision` is the revision of the
/// write that last changed it, which the API exposes as a resource version.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision before any write: watching from it replays all history.
    pub const ZERO: Revision = Revision(0);

    /// The counter as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for Revision {
    fn from(value: u64) -> Self {
        Revision(value)
    }
}

/// One stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/resources/policy/acme/web`.
    pub key: String,
    /// The value, byte for byte as written.
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the write that last changed the key.
    pub mod_revision: Revision,
    /// Number of writes to the key since it was created (1 after creation).
    pub version: u64,
}

/// The keys under a prefix, as one consistent snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The keys, sorted by key.
    pub items: Vec<KeyValue>,
    /// The revision the snapshot was taken at: watch from it to follow on
    /// without a gap.
    pub revision: Revision,
}
