//! Watchers of the etcd backend: one etcd watch per [`Watch`]. When its
//! stream breaks (a member died, lost its leader, or the connection
//! dropped) the watcher opens a new one, on whichever member answers, from
//! the last revision it delivered, so the consumer sees neither a gap nor a
//! duplicate.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::mpsc;

use super::{is_compacted, is_future_revision, revision_of, Inner, Member, REQUEST_TIMEOUT};
use crate::txn::check_key;
use crate::watch::WATCH_BUFFER;
use crate::{EventKind, Result, Revision, StoreError, Watch, WatchEvent};

/// Pause between attempts to resume a broken watch.
const RESUME_PAUSE: Duration = Duration::from_secs(1);

/// Opens the watch and spawns the task that forwards its events.
pub(super) async fn start(inner: Arc<Inner>, prefix: &str, from: Revision) -> Result<Watch> {
    check_key(prefix)?;
    inner.check_open()?;
    let stream = open(&inner, prefix, from).await?;
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
    let task = tokio::spawn(run(inner, prefix.to_owned(), from, stream, sender));
    Ok(Watch::new(receiver, task.abort_handle()))
}

/// etcd's start revision for a watch that has delivered everything up to
/// `delivered`. Starting *at* `delivered` (its events are skipped) rather
/// than after it makes etcd refuse exactly when `delivered` is below the
/// compacted revision, as the embedded store does. etcd has no revision 0
/// (0 means "now"), and nothing happens at revision 1, so start there.
fn start_revision(delivered: Revision) -> i64 {
    delivered.0.max(1) as i64
}

/// An error that makes the watch retry: etcd-client has no constructor for
/// a transient failure of its own.
fn transient(message: String) -> etcd_client::Error {
    etcd_client::Error::GRpcStatus(tonic::Status::unavailable(message))
}

/// Opens an etcd watch on `prefix` after `delivered`, retrying transient
/// failures; fails with `Compacted` when that history is gone.
async fn open(inner: &Inner, prefix: &str, delivered: Revision) -> Result<WatchStream> {
    inner
        .retry(true, |member| {
            try_open(member.clone(), prefix.to_owned(), delivered)
        })
        .await
        .map_err(|e| inner.error("start a watch", e))?
}

/// One attempt at opening a watch on `member`: the outer error is retried,
/// the inner one is final.
async fn try_open(
    member: Member,
    prefix: String,
    delivered: Revision,
) -> Result<Result<WatchStream>, etcd_client::Error> {
    let Member { mut kv, mut watch } = member;
    let prefix = prefix.as_str();
    let start = start_revision(delivered);
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = watch.watch(prefix, Some(options)).await?;
    let first = next_message(&mut stream).await?;
    if first.compact_revision() != 0 {
        return Ok(Err(compacted(&first)));
    }
    if first.canceled() || !first.created() {
        return Err(transient(format!(
            "watch not created: {}",
            first.cancel_reason()
        )));
    }
    // etcd reports a start below the compaction asynchronously on the
    // stream; a read at the start revision fails on exactly the same
    // condition, now, so that `watch` itself can refuse.
    let check = GetOptions::new()
        .with_prefix()
        .with_count_only()
        .with_revision(start);
    match kv.get(prefix, Some(check)).await {
        Ok(_) => Ok(Ok(stream)),
        Err(error) if is_future_revision(&error) => Ok(Ok(stream)),
        Err(error) if is_compacted(&error) => loop {
            // The stream names the compacted revision shortly.
            let message = next_message(&mut stream).await?;
            if message.compact_revision() != 0 {
                return Ok(Err(compacted(&message)));
            }
        },
        Err(error) => Err(error),
    }
}

/// The next response of a watch stream, within the request timeout.
async fn next_message(stream: &mut WatchStream) -> Result<WatchResponse, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(transient("the watch stream ended".to_owned())),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(transient(format!(
            "no answer on the watch stream within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

fn compacted(message: &WatchResponse) -> StoreError {
    StoreError::Compacted {
        compacted_revision: revision_of(message.compact_revision()),
    }
}

/// Forwards events to `out` until the consumer leaves, the store closes or
/// the watch fails; resumes broken streams.
async fn run(
    inner: Arc<Inner>,
    prefix: String,
    from: Revision,
    mut stream: WatchStream,
    out: mpsc::Sender<Result<WatchEvent>>,
) {
    let mut closed = inner.closed.subscribe();
    // Every event up to this revision has been sent (or precedes the watch).
    let mut delivered = from;
    loop {
        let broken = loop {
            let message = tokio::select! {
                _ = crate::watch::closed(&mut closed) => {
                    let _ = out.send(Err(inner.closed_error())).await;
                    return;
                }
                message = stream.message() => message,
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => break "the stream ended".to_owned(),
                Err(error) => break error.to_string(),
            };
            if message.compact_revision() != 0 {
                let _ = out.send(Err(compacted(&message))).await;
                return;
            }
            if message.canceled() {
                break format!("etcd canceled the watch: {}", message.cancel_reason());
            }
            let mut newest = delivered;
            for event in message.events() {
                let Some(kv) = event.kv() else { continue };
                let revision = revision_of(kv.mod_revision());
                if revision <= delivered {
                    continue;
                }
                let Ok(key) = kv.key_str() else {
                    tracing::warn!(endpoints = %inner.endpoints, %prefix, %revision,
                        "skipping a watch event whose key is not UTF-8");
                    continue;
                };
                let kind = match event.event_type() {
                    EventType::Put => EventKind::Put {
                        key: key.to_owned(),
                        value: kv.value().to_vec(),
                        mod_revision: revision,
                    },
                    EventType::Delete => EventKind::Delete {
                        key: key.to_owned(),
                    },
                };
                if out.send(Ok(WatchEvent { revision, kind })).await.is_err() {
                    return;
                }
                newest = newest.max(revision);
            }
            // etcd never splits one revision's events across responses.
            delivered = newest;
        };
        tracing::warn!(endpoints = %inner.endpoints, %prefix, %delivered, reason = %broken,
            "etcd watch broke; resuming on another member");
        stream = loop {
            let opened = tokio::select! {
                _ = crate::watch::closed(&mut closed) => {
                    let _ = out.send(Err(inner.closed_error())).await;
                    return;
                }
                _ = out.closed() => return,
                opened = open(&inner, &prefix, delivered) => opened,
            };
            match opened {
                Ok(stream) => break stream,
                Err(error @ StoreError::Compacted { .. }) => {
                    let _ = out.send(Err(error)).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%prefix, %delivered, %error, "cannot resume the etcd watch yet");
                    tokio::time::sleep(RESUME_PAUSE).await;
                }
            }
        };
    }
}
