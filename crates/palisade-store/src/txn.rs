//! Transactions: compares on keys, then puts and deletes applied
//! all-or-nothing, and the checks both backends run before sending one.

use std::collections::HashSet;
use std::fmt;

use crate::{Revision, StoreError};

/// Most operations (and, separately, compares) one transaction may hold:
/// etcd's default `--max-txn-ops`, enforced by both backends alike.
pub const MAX_TXN_OPS: usize = 128;

/// Most bytes of keys and values one transaction may write: below etcd's
/// default `--max-request-bytes` (1.5 MiB), enforced by both backends alike.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// What a write expects of a key's current state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// No expectation: write whatever the key holds.
    Any,
    /// The key must not exist (create).
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with this `mod_revision` (compare-and-swap on the
    /// resource version).
    ModRevision(Revision),
}

impl Expect {
    /// Whether the expectation holds for a key whose current
    /// `mod_revision` is `current` (`None` when absent).
    pub fn holds(self, current: Option<Revision>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Present => current.is_some(),
            Expect::ModRevision(n) => current == Some(n),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => write!(f, "any state"),
            Expect::Absent => write!(f, "the key to be absent"),
            Expect::Present => write!(f, "the key to be present"),
            Expect::ModRevision(n) => write!(f, "mod_revision {n}"),
        }
    }
}

/// One compare of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// What its state must be.
    pub expect: Expect,
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value` (creates it when absent).
    Put {
        /// The key written.
        key: String,
        /// The bytes stored.
        value: Vec<u8>,
    },
    /// Removes `key`; nothing happens when it is absent.
    Delete {
        /// The key removed.
        key: String,
    },
}

impl Op {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Compares, then writes applied atomically when every compare holds.
///
/// ```
/// use palisade_store::{Expect, Revision, Txn};
/// // Update a resource at the version the client read, and record it in
/// // the audit log, in one step.
/// let txn = Txn::new()
///     .when("/resources/policy/acme/web", Expect::ModRevision(Revision(41)))
///     .put("/resources/policy/acme/web", b"{...}".to_vec())
///     .put("/audit/0000000042", b"{...}".to_vec());
/// assert_eq!(txn.ops().len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    compares: Vec<Compare>,
    ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compare; [`Expect::Any`] adds nothing.
    pub fn when(mut self, key: impl Into<String>, expect: Expect) -> Self {
        if expect != Expect::Any {
            self.compares.push(Compare {
                key: key.into(),
                expect,
            });
        }
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// The compares, in the order added.
    pub fn compares(&self) -> &[Compare] {
        &self.compares
    }

    /// The writes, in the order added (and in which watchers see them).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Checks what both backends require, so that a transaction one backend
    /// accepts the other accepts too: valid keys, each key written at most
    /// once, and the size limits.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.ops.len() > MAX_TXN_OPS || self.compares.len() > MAX_TXN_OPS {
            return Err(StoreError::InvalidTxn {
                reason: format!(
                    "{} operations and {} compares, at most {MAX_TXN_OPS} of each are allowed; \
                     split the transaction",
                    self.ops.len(),
                    self.compares.len()
                ),
            });
        }
        for compare in &self.compares {
            check_key(&compare.key)?;
        }
        let mut written = HashSet::new();
        let mut bytes = 0usize;
        for op in &self.ops {
            check_key(op.key())?;
            if !written.insert(op.key()) {
                return Err(StoreError::InvalidTxn {
                    reason: format!(
                        "key {} is written twice; write each key at most once per transaction",
                        op.key()
                    ),
                });
            }
            bytes += op.key().len();
            if let Op::Put { value, .. } = op {
                bytes += value.len();
            }
        }
        if bytes > MAX_TXN_BYTES {
            return Err(StoreError::InvalidTxn {
                reason: format!(
                    "writes {bytes} bytes of keys and values, at most {MAX_TXN_BYTES} are allowed; \
                     split the transaction or store less"
                ),
            });
        }
        Ok(())
    }

    /// The first compare that does not hold, given each compared key's
    /// current `mod_revision` (`None` when absent), as a conflict error.
    pub(crate) fn first_conflict(
        &self,
        mut current: impl FnMut(&str) -> Option<Revision>,
    ) -> Option<StoreError> {
        self.compares.iter().find_map(|compare| {
            let now = current(&compare.key);
            (!compare.expect.holds(now)).then(|| StoreError::Conflict {
                key: compare.key.clone(),
                expected: compare.expect,
                current: now,
            })
        })
    }
}

/// Checks that `key` is a store key: it starts with `/`.
pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.starts_with('/') {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "keys and prefixes start with '/', e.g. /resources/policy/acme/web",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_hold_only_for_matching_state() {
        assert!(Expect::Any.holds(None));
        assert!(Expect::Absent.holds(None));
        assert!(!Expect::Absent.holds(Some(Revision(3))));
        assert!(Expect::Present.holds(Some(Revision(3))));
        assert!(!Expect::Present.holds(None));
        assert!(Expect::ModRevision(Revision(3)).holds(Some(Revision(3))));
        assert!(!Expect::ModRevision(Revision(3)).holds(Some(Revision(4))));
        assert!(!Expect::ModRevision(Revision(3)).holds(None));
    }

    #[test]
    fn a_key_written_twice_is_refused() {
        let txn = Txn::new().put("/a", b"1".to_vec()).delete("/a");
        assert!(matches!(txn.validate(), Err(StoreError::InvalidTxn { .. })));
    }

    #[test]
    fn keys_must_start_with_a_slash() {
        let txn = Txn::new().put("a", b"1".to_vec());
        assert!(matches!(txn.validate(), Err(StoreError::InvalidKey { .. })));
        let txn = Txn::new().when("b", Expect::Absent);
        assert!(matches!(txn.validate(), Err(StoreError::InvalidKey { .. })));
    }

    #[test]
    fn oversized_transactions_are_refused() {
        let many = (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.delete(format!("/k/{i}")));
        assert!(matches!(
            many.validate(),
            Err(StoreError::InvalidTxn { .. })
        ));
        let big = Txn::new().put("/big", vec![0u8; MAX_TXN_BYTES]);
        assert!(matches!(big.validate(), Err(StoreError::InvalidTxn { .. })));
        let fits = Txn::new().put("/big", vec![0u8; MAX_TXN_BYTES - 4]);
        assert!(fits.validate().is_ok());
    }

    #[test]
    fn the_first_failing_compare_is_reported_with_the_current_revision() {
        let txn = Txn::new()
            .when("/a", Expect::Present)
            .when("/b", Expect::ModRevision(Revision(5)))
            .when("/c", Expect::Absent);
        let err = txn
            .first_conflict(|key| (key != "/c").then_some(Revision(7)))
            .expect("the compare on /b fails");
        match err {
            StoreError::Conflict {
                key,
                expected,
                current,
            } => {
                assert_eq!(key, "/b");
                assert_eq!(expected, Expect::ModRevision(Revision(5)));
                assert_eq!(current, Some(Revision(7)));
            }
            other => panic!("expected a conflict, got {other}"),
        }
    }
}
