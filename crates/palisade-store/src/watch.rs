//! Watch events and the stream that carries them to a client.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::{Revision, StoreError};

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision of the write; the events of one transaction share it.
    pub revision: Revision,
    /// What changed.
    pub kind: EventKind,
}

/// What a [`WatchEvent`] did to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: Vec<u8>,
        /// Its new `mod_revision` (equal to the event's revision).
        mod_revision: Revision,
    },
    /// The key was deleted.
    Delete {
        /// The key.
        key: String,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match &self.kind {
            EventKind::Put { key, .. } | EventKind::Delete { key } => key,
        }
    }
}

/// Events a watch delivers to its consumer before the producer waits. A
/// consumer slower than that never blocks writers: its producer falls
/// behind and catches up from history.
pub(crate) const WATCH_BUFFER: usize = 256;

/// Resolves once `closed` turns `true` (the store was closed or dropped).
pub(crate) async fn closed(closed: &mut tokio::sync::watch::Receiver<bool>) {
    // Only the wake-up matters; an error means the store itself is gone.
    let _ = closed.wait_for(|closed| *closed).await;
}

/// A stream of [`WatchEvent`]s in revision order.
///
/// It ends after an error (such as [`StoreError::Compacted`] or
/// [`StoreError::Closed`]); the client then lists a fresh snapshot and
/// watches again from its revision. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    events: mpsc::Receiver<Result<WatchEvent, StoreError>>,
    producer: AbortHandle,
}

impl Watch {
    /// Wraps the receiving end of a producer task; the task is stopped when
    /// the watch is dropped.
    pub(crate) fn new(
        events: mpsc::Receiver<Result<WatchEvent, StoreError>>,
        producer: AbortHandle,
    ) -> Self {
        Watch { events, producer }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.events.recv().await
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.producer.abort();
    }
}
