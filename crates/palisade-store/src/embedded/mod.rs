//! The embedded backend: one redb file, for a site served by one server.
//!
//! Writes are serialised (redb has one writer anyway) and committed with
//! immediate durability before they are acknowledged. After each commit the
//! transaction's events are published on an in-process broadcast channel
//! for live watchers; every event is also kept in the history table, from
//! which a watcher catches up when it starts at an old revision or falls
//! behind the channel.

mod tables;
mod watcher;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use redb::Database;
use tokio::sync::{broadcast, mpsc, watch};

use crate::txn::check_key;
use crate::watch::WATCH_BUFFER;
use crate::{BoxFuture, KeyValue, Listing, Result, Revision, Store, StoreError, Txn, Watch};
use tables::{Applied, Batch};

/// Committed transactions the live channel holds for watchers; one that
/// falls further behind catches up from the history table instead.
const LIVE_BUFFER: usize = 1024;

/// A store in one redb file. Cheap to share behind an `Arc`.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// State shared with the watcher tasks.
struct Inner {
    path: PathBuf,
    /// `None` once closed; readers hold the read lock for the length of one
    /// redb transaction, so that closing waits for them.
    db: RwLock<Option<Database>>,
    /// Held from the start of a write transaction until its events are
    /// published, so that watchers receive batches in revision order and a
    /// new watcher subscribes between two commits.
    commit: Mutex<()>,
    live: broadcast::Sender<Arc<Batch>>,
    /// Set to `true` on close; wakes idle watchers so that they end.
    closed: watch::Sender<bool>,
}

impl EmbeddedStore {
    /// Opens the store in the redb file at `path`, creating it when absent.
    ///
    /// Blocks: after a crash redb checks and repairs the file first. Fails
    /// with [`StoreError::Locked`] when another process (or another handle
    /// in this one) has the file open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: path.clone() },
            other => StoreError::Embedded {
                path: path.clone(),
                action: "open",
                source: Box::new(other.into()),
            },
        })?;
        let format = tables::init(&db).map_err(|source| StoreError::Embedded {
            path: path.clone(),
            action: "initialise",
            source: Box::new(source),
        })?;
        if format != tables::FORMAT {
            return Err(StoreError::Format {
                path,
                reason: format!(
                    "layout version {format}, this version reads {}",
                    tables::FORMAT
                ),
            });
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let (closed, _) = watch::channel(false);
        tracing::info!(path = %path.display(), "opened embedded store");
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                path,
                db: RwLock::new(Some(db)),
                commit: Mutex::new(()),
                live,
                closed,
            }),
        })
    }

    /// The redb file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Inner {
    fn describe(&self) -> String {
        format!("redb file {}", self.path.display())
    }

    fn closed_error(&self) -> StoreError {
        StoreError::Closed {
            backend: self.describe(),
        }
    }

    /// Runs `f` on the open database; fails when the store is closed.
    fn with_db<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_ref().ok_or_else(|| self.closed_error())?;
        f(db).map_err(|source| StoreError::Embedded {
            path: self.path.clone(),
            action,
            source: Box::new(source),
        })
    }

    /// Ends the watchers and closes the file; later calls fail with
    /// `Closed`. Waits for in-flight redb transactions.
    fn shut_down(&self) {
        self.closed.send_replace(true);
        let db = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(db) = db {
            drop(db);
            tracing::info!(path = %self.path.display(), "closed embedded store");
        }
    }
}

/// Runs blocking redb work off the async threads.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    action: &'static str,
    f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
) -> Result<T> {
    let shared = Arc::clone(inner);
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|source| StoreError::Worker {
            path: inner.path.clone(),
            action,
            source,
        })?
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            check_key(key)?;
            let key = key.to_owned();
            blocking(&self.inner, "read", move |inner| {
                inner.with_db("read", |db| tables::get(db, &key))
            })
            .await
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(async move {
            check_key(prefix)?;
            let prefix = prefix.to_owned();
            let (items, revision) = blocking(&self.inner, "list", move |inner| {
                inner.with_db("list", |db| tables::list(db, &prefix))
            })
            .await?;
            Ok(Listing { items, revision })
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move {
            let counters = blocking(&self.inner, "read the revision", |inner| {
                inner.with_db("read the revision", tables::counters)
            })
            .await?;
            Ok(counters.revision)
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(async move {
            txn.validate()?;
            blocking(&self.inner, "commit", move |inner| {
                let _order = inner.commit.lock().unwrap_or_else(PoisonError::into_inner);
                match inner.with_db("commit", |db| tables::apply(db, &txn))? {
                    Applied::Changed(batch) => {
                        let revision = batch.revision;
                        // No live watcher is not an error: history has it.
                        let _ = inner.live.send(batch);
                        Ok(revision)
                    }
                    Applied::Unchanged(revision) => Ok(revision),
                    Applied::Conflict(conflict) => Err(conflict),
                }
            })
            .await
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            check_key(prefix)?;
            let subscription = watcher::subscribe(&self.inner, from).await?;
            let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
            let task = tokio::spawn(watcher::run(
                Arc::clone(&self.inner),
                prefix.to_owned(),
                from,
                subscription,
                sender,
            ));
            Ok(Watch::new(receiver, task.abort_handle()))
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let marked = blocking(&self.inner, "compact", move |inner| {
                inner.with_db("compact", |db| tables::mark_compacted(db, revision))
            })
            .await?;
            match marked {
                Err(counters) => {
                    return Err(StoreError::FutureRevision {
                        backend: self.inner.describe(),
                        requested: revision,
                        current: counters.revision,
                    })
                }
                Ok(false) => return Ok(()),
                Ok(true) => {}
            }
            // Watchers now refuse to read below the mark; remove the rows
            // in short write transactions.
            loop {
                let more = blocking(&self.inner, "compact", move |inner| {
                    inner.with_db("compact", |db| tables::trim_history(db, revision))
                })
                .await?;
                if !more {
                    break;
                }
            }
            tracing::debug!(path = %self.inner.path.display(), %revision, "compacted history");
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            blocking(&self.inner, "close", |inner| {
                inner.shut_down();
                Ok(())
            })
            .await
        })
    }
}
