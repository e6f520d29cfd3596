//! Watchers of the embedded store. A watcher first replays the history
//! table up to the revision at which it subscribed to the live channel,
//! then forwards live batches. When it falls behind the channel (a slow
//! consumer) it subscribes again and replays history from the last
//! revision it delivered, so it never loses an event and never slows a
//! writer.

use std::sync::{Arc, PoisonError};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::tables::{self, Batch, HistoryKey};
use super::{blocking, Inner};
use crate::{Result, Revision, StoreError, WatchEvent};

/// History rows read per redb read transaction while catching up.
const HISTORY_PAGE: usize = 1024;

/// A watcher's place in the live channel.
pub(super) struct Subscription {
    live: broadcast::Receiver<Arc<Batch>>,
    /// Every batch up to this revision was committed before the
    /// subscription and is in the history table; later ones come live.
    upto: Revision,
}

/// Subscribes to the live channel between two commits. Fails with
/// `Compacted` when history after `delivered` is no longer complete.
pub(super) async fn subscribe(inner: &Arc<Inner>, delivered: Revision) -> Result<Subscription> {
    blocking(inner, "start a watch", move |inner| {
        let _order = inner.commit.lock().unwrap_or_else(PoisonError::into_inner);
        let counters = inner.with_db("start a watch", tables::counters)?;
        if counters.compacted > delivered {
            return Err(StoreError::Compacted {
                compacted_revision: counters.compacted,
            });
        }
        Ok(Subscription {
            live: inner.live.subscribe(),
            upto: counters.revision,
        })
    })
    .await
}

/// Why forwarding stopped.
enum Stop {
    /// The consumer dropped its `Watch`.
    ConsumerGone,
    /// The watch ends with this error.
    Failed(StoreError),
}

/// Forwards the events under `prefix` after `from` to `out` until the
/// consumer goes away or the watch fails.
pub(super) async fn run(
    inner: Arc<Inner>,
    prefix: String,
    from: Revision,
    subscription: Subscription,
    out: mpsc::Sender<Result<WatchEvent>>,
) {
    if let Stop::Failed(error) = forward(&inner, &prefix, from, subscription, &out).await {
        tracing::debug!(path = %inner.path.display(), %prefix, %error, "watch ended");
        let _ = out.send(Err(error)).await;
    }
}

async fn forward(
    inner: &Arc<Inner>,
    prefix: &str,
    from: Revision,
    mut subscription: Subscription,
    out: &mpsc::Sender<Result<WatchEvent>>,
) -> Stop {
    let mut closed = inner.closed.subscribe();
    // Every event up to this revision has been sent (or precedes the watch).
    let mut delivered = from;
    loop {
        if let Err(stop) = catch_up(inner, prefix, delivered, subscription.upto, out).await {
            return stop;
        }
        delivered = delivered.max(subscription.upto);

        let missed = loop {
            let received = tokio::select! {
                _ = crate::watch::closed(&mut closed) => return Stop::Failed(inner.closed_error()),
                received = subscription.live.recv() => received,
            };
            match received {
                Ok(batch) => {
                    if batch.revision <= delivered {
                        continue;
                    }
                    for event in &batch.events {
                        if event.key().starts_with(prefix)
                            && out.send(Ok(event.clone())).await.is_err()
                        {
                            return Stop::ConsumerGone;
                        }
                    }
                    delivered = batch.revision;
                }
                Err(RecvError::Lagged(missed)) => break missed,
                Err(RecvError::Closed) => return Stop::Failed(inner.closed_error()),
            }
        };
        tracing::debug!(
            path = %inner.path.display(), %prefix, %delivered, missed,
            "watcher fell behind the live channel; catching up from history"
        );
        subscription = match subscribe(inner, delivered).await {
            Ok(subscription) => subscription,
            Err(error) => return Stop::Failed(error),
        };
    }
}

/// Sends the history events under `prefix` in `(delivered, upto]`, a page
/// at a time.
async fn catch_up(
    inner: &Arc<Inner>,
    prefix: &str,
    delivered: Revision,
    upto: Revision,
    out: &mpsc::Sender<Result<WatchEvent>>,
) -> Result<(), Stop> {
    if upto <= delivered {
        return Ok(());
    }
    let mut after: HistoryKey = (delivered.0, u32::MAX);
    loop {
        let page_prefix = prefix.to_owned();
        let page = blocking(inner, "read history", move |inner| {
            inner.with_db("read history", |db| {
                tables::read_history(db, &page_prefix, after, upto, delivered, HISTORY_PAGE)
            })?
        })
        .await
        .map_err(Stop::Failed)?;
        for event in page.events {
            out.send(Ok(event)).await.map_err(|_| Stop::ConsumerGone)?;
        }
        match page.next {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}
