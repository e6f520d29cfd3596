//! The redb file layout of the embedded store and the transactions on it.
//! Everything here is synchronous and runs on a blocking thread.
//!
//! Tables:
//! - `meta`: `format` (layout version), `revision` (current revision),
//!   `compacted` (history up to it was discarded).
//! - `kv`: key → (create_revision, mod_revision, version, value).
//! - `history`: (revision, index in the transaction) → (key, value or
//!   `None` for a delete), so that a watch resumes from any revision after
//!   the compacted one, also across restarts.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{EventKind, KeyValue, Op, Revision, StoreError, Txn, WatchEvent};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KV: TableDefinition<&str, (u64, u64, u64, &[u8])> = TableDefinition::new("kv");
/// One history row: the key and its new value, `None` for a delete.
type HistoryEvent = (&'static str, Option<&'static [u8]>);
const HISTORY: TableDefinition<HistoryKey, HistoryEvent> = TableDefinition::new("history");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// The layout version this code writes and reads.
pub(super) const FORMAT: u64 = 1;

/// Revisions of history removed per write transaction when compacting, so
/// that writers never wait long behind a large compaction.
const COMPACT_CHUNK: u64 = 4096;

/// A position in the history table: (revision, index in its transaction).
pub(super) type HistoryKey = (u64, u32);

/// The events one committed transaction produced.
#[derive(Debug)]
pub(super) struct Batch {
    /// The transaction's revision.
    pub revision: Revision,
    /// Its events, in the order of its operations.
    pub events: Vec<WatchEvent>,
}

/// What applying a transaction did.
pub(super) enum Applied {
    /// It changed something and was committed durably.
    Changed(Arc<Batch>),
    /// Its compares held but it changed nothing (deletes of absent keys).
    Unchanged(Revision),
    /// A compare failed; nothing was written.
    Conflict(StoreError),
}

/// One page of history read for a catching-up watcher.
pub(super) struct HistoryPage {
    /// The matching events of the page.
    pub events: Vec<WatchEvent>,
    /// Where the next page starts (exclusive), `None` when done.
    pub next: Option<HistoryKey>,
}

/// The revision counters.
#[derive(Copy, Clone, Debug)]
pub(super) struct Counters {
    /// The current revision.
    pub revision: Revision,
    /// History up to and including this revision was discarded.
    pub compacted: Revision,
}

/// Creates the tables of a new file, or checks the layout version of an
/// existing one; returns the version found.
pub(super) fn init(db: &Database) -> Result<u64, redb::Error> {
    let wtx = db.begin_write()?;
    let format = {
        let mut meta = wtx.open_table(META)?;
        wtx.open_table(KV)?;
        wtx.open_table(HISTORY)?;
        let found = meta.get(META_FORMAT)?.map(|g| g.value());
        match found {
            Some(format) => format,
            None => {
                meta.insert(META_FORMAT, FORMAT)?;
                FORMAT
            }
        }
    };
    wtx.commit()?;
    Ok(format)
}

fn read_counters(meta: &impl ReadableTable<&'static str, u64>) -> Result<Counters, redb::Error> {
    let get =
        |name| -> Result<u64, redb::Error> { Ok(meta.get(name)?.map(|g| g.value()).unwrap_or(0)) };
    Ok(Counters {
        revision: Revision(get(META_REVISION)?),
        compacted: Revision(get(META_COMPACTED)?),
    })
}

/// Reads the revision counters.
pub(super) fn counters(db: &Database) -> Result<Counters, redb::Error> {
    let rtx = db.begin_read()?;
    read_counters(&rtx.open_table(META)?)
}

fn decode(key: &str, (create, modified, version, value): (u64, u64, u64, &[u8])) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: Revision(create),
        mod_revision: Revision(modified),
        version,
    }
}

/// Reads one key.
pub(super) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>, redb::Error> {
    let rtx = db.begin_read()?;
    let kv = rtx.open_table(KV)?;
    let found = kv.get(key)?.map(|g| decode(key, g.value()));
    Ok(found)
}

/// Reads every key under `prefix` and the revision, from one snapshot.
pub(super) fn list(db: &Database, prefix: &str) -> Result<(Vec<KeyValue>, Revision), redb::Error> {
    let rtx = db.begin_read()?;
    let revision = read_counters(&rtx.open_table(META)?)?.revision;
    let kv = rtx.open_table(KV)?;
    let mut items = Vec::new();
    for entry in kv.range(prefix..)? {
        let (key, value) = entry?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        items.push(decode(key, value.value()));
    }
    Ok((items, revision))
}

/// Checks the compares of `txn` and applies its operations in one durable
/// write transaction. The caller serialises calls, so that it can publish
/// batches in revision order.
pub(super) fn apply(db: &Database, txn: &Txn) -> Result<Applied, redb::Error> {
    let mut wtx = db.begin_write()?;
    // Every acknowledged write must survive a crash: fsync before returning.
    wtx.set_durability(Durability::Immediate)?;
    let applied = {
        let mut meta = wtx.open_table(META)?;
        let mut kv = wtx.open_table(KV)?;
        let mut history = wtx.open_table(HISTORY)?;
        let current = read_counters(&meta)?.revision;

        let mut compared = HashMap::new();
        for compare in txn.compares() {
            let now = kv.get(compare.key.as_str())?.map(|g| Revision(g.value().1));
            compared.insert(compare.key.as_str(), now);
        }
        if let Some(conflict) = txn.first_conflict(|key| compared.get(key).copied().flatten()) {
            Applied::Conflict(conflict)
        } else {
            let revision = Revision(current.0 + 1);
            let mut events = Vec::new();
            for op in txn.ops() {
                let index = events.len() as u32;
                match op {
                    Op::Put { key, value } => {
                        let old = kv.get(key.as_str())?.map(|g| {
                            let (create, _, version, _) = g.value();
                            (create, version)
                        });
                        let (create, version) = match old {
                            Some((create, version)) => (create, version + 1),
                            None => (revision.0, 1),
                        };
                        kv.insert(
                            key.as_str(),
                            (create, revision.0, version, value.as_slice()),
                        )?;
                        history
                            .insert((revision.0, index), (key.as_str(), Some(value.as_slice())))?;
                        events.push(WatchEvent {
                            revision,
                            kind: EventKind::Put {
                                key: key.clone(),
                                value: value.clone(),
                                mod_revision: revision,
                            },
                        });
                    }
                    Op::Delete { key } => {
                        if kv.remove(key.as_str())?.is_some() {
                            history.insert((revision.0, index), (key.as_str(), None))?;
                            events.push(WatchEvent {
                                revision,
                                kind: EventKind::Delete { key: key.clone() },
                            });
                        }
                    }
                }
            }
            if events.is_empty() {
                Applied::Unchanged(current)
            } else {
                meta.insert(META_REVISION, revision.0)?;
                Applied::Changed(Arc::new(Batch { revision, events }))
            }
        }
    };
    match applied {
        Applied::Changed(_) => wtx.commit()?,
        Applied::Unchanged(_) | Applied::Conflict(_) => wtx.abort()?,
    }
    Ok(applied)
}

/// Reads up to `limit` history rows after `after` (exclusive) and up to
/// revision `upto` (inclusive), keeping the events under `prefix`. Fails
/// with `Compacted` when history after `delivered` is no longer complete.
pub(super) fn read_history(
    db: &Database,
    prefix: &str,
    after: HistoryKey,
    upto: Revision,
    delivered: Revision,
    limit: usize,
) -> Result<Result<HistoryPage, StoreError>, redb::Error> {
    let rtx = db.begin_read()?;
    let compacted = read_counters(&rtx.open_table(META)?)?.compacted;
    if compacted > delivered {
        return Ok(Err(StoreError::Compacted {
            compacted_revision: compacted,
        }));
    }
    let history = rtx.open_table(HISTORY)?;
    let range = (Bound::Excluded(after), Bound::Included((upto.0, u32::MAX)));
    let mut events = Vec::new();
    let mut scanned = 0;
    let mut last = None;
    for entry in history.range(range)? {
        let (position, event) = entry?;
        let position = position.value();
        let (key, value) = event.value();
        if key.starts_with(prefix) {
            let revision = Revision(position.0);
            let kind = match value {
                Some(value) => EventKind::Put {
                    key: key.to_owned(),
                    value: value.to_vec(),
                    mod_revision: revision,
                },
                None => EventKind::Delete {
                    key: key.to_owned(),
                },
            };
            events.push(WatchEvent { revision, kind });
        }
        last = Some(position);
        scanned += 1;
        if scanned == limit {
            break;
        }
    }
    let next = if scanned == limit { last } else { None };
    Ok(Ok(HistoryPage { events, next }))
}

/// Records that history up to `target` is discarded. Inner result:
/// `Ok(true)` when recorded, `Ok(false)` when an earlier compaction already
/// covered it, `Err(counters)` when `target` is beyond the current revision.
pub(super) fn mark_compacted(
    db: &Database,
    target: Revision,
) -> Result<Result<bool, Counters>, redb::Error> {
    let wtx = db.begin_write()?;
    let outcome = {
        let mut meta = wtx.open_table(META)?;
        let counters = read_counters(&meta)?;
        if target > counters.revision {
            Err(counters)
        } else if target <= counters.compacted {
            Ok(false)
        } else {
            meta.insert(META_COMPACTED, target.0)?;
            Ok(true)
        }
    };
    match outcome {
        Ok(true) => wtx.commit()?,
        _ => wtx.abort()?,
    }
    Ok(outcome)
}

/// Removes one chunk of history rows at or below `target`; returns whether
/// rows may remain. Starts from the oldest row rather than the previous
/// compaction, so that rows left by a crash between chunks go too.
pub(super) fn trim_history(db: &Database, target: Revision) -> Result<bool, redb::Error> {
    let wtx = db.begin_write()?;
    let more = {
        let mut history = wtx.open_table(HISTORY)?;
        let oldest = history.first()?.map(|(k, _)| k.value().0);
        match oldest {
            Some(oldest) if oldest <= target.0 => {
                let end = oldest.saturating_add(COMPACT_CHUNK).min(target.0 + 1);
                history.retain_in((oldest, 0)..(end, 0), |_, _| false)?;
                end <= target.0
            }
            _ => false,
        }
    };
    wtx.commit()?;
    Ok(more)
}
