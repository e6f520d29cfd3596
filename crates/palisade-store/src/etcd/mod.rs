//! The etcd backend: several palisade servers in front of one etcd cluster.
//!
//! Revisions, `mod_revision`s, compares and transactions map directly onto
//! etcd's. Requests go to one member at a time (as etcd's own client does):
//! when it fails in a way another member may not (unreachable, no leader,
//! timeout), the store moves on to the next member and stays there. A
//! request that never reached a working member is retried for a few
//! seconds, reads also on other transient failures. A transaction whose
//! outcome is unknown is not retried: the caller gets an error telling it
//! to re-read first.

mod watcher;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, KvClient,
    Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchClient,
};
use tokio::sync::watch;

use crate::txn::check_key;
use crate::{
    BoxFuture, Expect, KeyValue, Listing, Op, Result, Revision, Store, StoreError, Txn, Watch,
};

/// How long one request may wait for its response. A write forwarded to a
/// leader that just died waits this long: etcd drops it silently.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings that detect a member that vanished without closing its
/// connections (interval, timeout).
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3));
/// How long a retryable failure is retried before it is reported; covers a
/// leader election with etcd's default timeouts.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// Keys fetched per range request when listing, so that a large prefix
/// never exceeds a message size limit.
const LIST_PAGE: i64 = 500;
/// Largest response accepted (a list page of large values).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What to tell the caller when a read or a watch fails.
const ADVICE_RETRY: &str = "check that the cluster is up and has a leader, then retry";
/// What to tell the caller when a transaction failed in a way that may have
/// applied it.
const ADVICE_UNKNOWN: &str =
    "the transaction may or may not have been applied: re-read the keys before retrying";

/// A store in an etcd cluster. Cheap to share behind an `Arc`.
pub struct EtcdStore {
    inner: Arc<Inner>,
}

/// The clients of one member.
#[derive(Clone)]
struct Member {
    kv: KvClient,
    watch: WatchClient,
}

/// State shared with the watcher tasks.
struct Inner {
    members: Vec<Member>,
    /// The member requests go to, until it fails.
    current: AtomicUsize,
    /// The endpoints, comma-separated, for messages.
    endpoints: String,
    /// Set to `true` on close; ends the watchers.
    closed: watch::Sender<bool>,
}

/// How safe it is to send a failed request again.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Retry {
    /// The request never reached a member that could apply it.
    Safe,
    /// It may have been applied: retry only what is idempotent.
    IfIdempotent,
    /// Retrying will not help.
    Never,
}

/// Classifies a client error by whether the request could have been applied.
fn classify(error: &etcd_client::Error) -> Retry {
    use tonic::Code;
    match error {
        etcd_client::Error::TransportError(_) => Retry::Safe,
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message().to_ascii_lowercase();
            // Failures to connect, and etcd refusing before proposing.
            let not_sent = [
                "tcp connect error",
                "error trying to connect",
                "connection refused",
                "etcdserver: no leader",
            ];
            match status.code() {
                Code::Unavailable if not_sent.iter().any(|m| message.contains(m)) => Retry::Safe,
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    Retry::IfIdempotent
                }
                _ => Retry::Never,
            }
        }
        etcd_client::Error::IoError(_) => Retry::IfIdempotent,
        _ => Retry::Never,
    }
}

/// Whether etcd refused a revision because history before it was compacted.
fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("required revision has been compacted"))
}

/// Whether etcd refused a revision because it does not exist yet.
fn is_future_revision(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("required revision is a future revision"))
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: every key from the prefix on.
    vec![0]
}

fn revision_of(value: i64) -> Revision {
    Revision(value.max(0) as u64)
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (URLs such as
    /// `http://10.0.0.1:2379`; list several members so that the client
    /// fails over between them), and checks that it answers.
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Self> {
        let list: Vec<&str> = endpoints.iter().map(AsRef::as_ref).collect();
        let joined = list.join(",");
        let options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
            // A member cut off from its leader fails requests and ends its
            // watches instead of serving stale data or going silent.
            .with_require_leader(true);
        let unreachable = |source| StoreError::Unreachable {
            endpoints: joined.clone(),
            source,
        };
        if list.is_empty() {
            return Err(unreachable(etcd_client::Error::InvalidArgs(
                "no endpoint given".to_owned(),
            )));
        }
        let mut members = Vec::new();
        for endpoint in &list {
            // Connecting is lazy: this only checks the URL.
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(unreachable)?;
            members.push(Member {
                kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
                watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
            });
        }
        let (closed, _) = watch::channel(false);
        let store = EtcdStore {
            inner: Arc::new(Inner {
                members,
                current: AtomicUsize::new(0),
                endpoints: joined,
                closed,
            }),
        };
        // Fail at start-up, not at the first request.
        let inner = &store.inner;
        inner
            .retry(true, |member| {
                let mut kv = member.kv.clone();
                async move { kv.get("/", Some(GetOptions::new().with_count_only())).await }
            })
            .await
            .map_err(|source| StoreError::Unreachable {
                endpoints: inner.endpoints.clone(),
                source,
            })?;
        tracing::info!(endpoints = %store.inner.endpoints, "connected to etcd");
        Ok(store)
    }
}

impl Inner {
    fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints)
    }

    fn closed_error(&self) -> StoreError {
        StoreError::Closed {
            backend: self.describe(),
        }
    }

    fn error(&self, action: &'static str, source: etcd_client::Error) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            action,
            source,
            advice: ADVICE_RETRY,
        }
    }

    fn protocol(&self, action: &'static str, reason: impl Into<String>) -> StoreError {
        StoreError::Protocol {
            endpoints: self.endpoints.clone(),
            action,
            reason: reason.into(),
        }
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Runs `request` on the current member until it succeeds, fails in
    /// a way retrying cannot fix, or [`RETRY_FOR`] has passed. A failure
    /// another member may not share moves on to the next member: at once
    /// while some member has not been tried, then after a growing pause.
    async fn retry<T, F, Fut>(
        &self,
        idempotent: bool,
        mut request: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(&Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let mut pause = Duration::from_millis(25);
        let mut tried = 0;
        loop {
            let index = self.current.load(Ordering::Relaxed);
            let error = match request(&self.members[index]).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let kind = classify(&error);
            if kind == Retry::Never {
                return Err(error);
            }
            // Unreachable, cut off from its leader or too slow: whatever the
            // request, the next one goes to another member. Another caller
            // may have moved on already.
            let next = (index + 1) % self.members.len();
            let _ =
                self.current
                    .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            let retry = kind == Retry::Safe || idempotent;
            if !retry || Instant::now() + pause > deadline || self.is_closed() {
                return Err(error);
            }
            tracing::debug!(endpoints = %self.endpoints, %error, "etcd request failed; retrying");
            tried += 1;
            if tried >= self.members.len() {
                tried = 0;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(self.closed_error())
        } else {
            Ok(())
        }
    }

    fn key_value(&self, action: &'static str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = kv
            .key_str()
            .map_err(|e| self.protocol(action, format!("a key is not UTF-8: {e}")))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: revision_of(kv.create_revision()),
            mod_revision: revision_of(kv.mod_revision()),
            version: kv.version().max(0) as u64,
        })
    }

    async fn revision(&self) -> Result<Revision> {
        self.check_open()?;
        let response = self
            .retry(true, |member| {
                let mut kv = member.kv.clone();
                async move { kv.get("/", Some(GetOptions::new().with_count_only())).await }
            })
            .await
            .map_err(|e| self.error("read the revision", e))?;
        let header = response
            .header()
            .ok_or_else(|| self.protocol("read the revision", "no header"))?;
        Ok(revision_of(header.revision()))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(key)?;
        self.check_open()?;
        let response = self
            .retry(true, |member| {
                let mut kv = member.kv.clone();
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| self.error("read", e))?;
        response
            .kvs()
            .first()
            .map(|kv| self.key_value("read", kv))
            .transpose()
    }

    /// Lists `prefix` a page at a time, every page at the revision of the
    /// first; starts over when that revision is compacted meanwhile.
    async fn list(&self, prefix: &str) -> Result<Listing> {
        check_key(prefix)?;
        'snapshot: loop {
            self.check_open()?;
            let end = prefix_end(prefix);
            let mut items = Vec::new();
            let mut revision: Option<i64> = None;
            let mut start = prefix.as_bytes().to_vec();
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(LIST_PAGE);
                if let Some(revision) = revision {
                    options = options.with_revision(revision);
                }
                let result = self
                    .retry(true, |member| {
                        let mut kv = member.kv.clone();
                        let (start, options) = (start.clone(), options.clone());
                        async move { kv.get(start, Some(options)).await }
                    })
                    .await;
                let response = match result {
                    Ok(response) => response,
                    Err(error) if revision.is_some() && is_compacted(&error) => {
                        tracing::debug!(%prefix, "list snapshot compacted meanwhile; listing again");
                        continue 'snapshot;
                    }
                    Err(error) => return Err(self.error("list", error)),
                };
                if revision.is_none() {
                    let header = response
                        .header()
                        .ok_or_else(|| self.protocol("list", "no header"))?;
                    revision = Some(header.revision());
                }
                for kv in response.kvs() {
                    items.push(self.key_value("list", kv)?);
                }
                match (response.more(), response.kvs().last()) {
                    (true, Some(last)) => {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => break,
                }
            }
            return Ok(Listing {
                items,
                revision: revision_of(revision.unwrap_or(0)),
            });
        }
    }

    async fn txn(&self, txn: Txn) -> Result<Revision> {
        txn.validate()?;
        self.check_open()?;
        // On failure, read every compared key in the same transaction, so
        // that the conflict names the current mod_revision as of that
        // revision.
        let mut compared: Vec<&str> = Vec::new();
        for compare in txn.compares() {
            if !compared.contains(&compare.key.as_str()) {
                compared.push(&compare.key);
            }
        }
        let request = EtcdTxn::new()
            .when(
                txn.compares()
                    .iter()
                    .map(|c| match c.expect {
                        // `Txn::when` drops `Any`; this compare always holds.
                        Expect::Any => EtcdCompare::version(c.key.as_str(), CompareOp::Greater, -1),
                        Expect::Absent => EtcdCompare::version(c.key.as_str(), CompareOp::Equal, 0),
                        Expect::Present => {
                            EtcdCompare::version(c.key.as_str(), CompareOp::Greater, 0)
                        }
                        Expect::ModRevision(n) => {
                            EtcdCompare::mod_revision(c.key.as_str(), CompareOp::Equal, n.0 as i64)
                        }
                    })
                    .collect::<Vec<_>>(),
            )
            .and_then(
                txn.ops()
                    .iter()
                    .map(|op| match op {
                        Op::Put { key, value } => TxnOp::put(key.as_str(), value.as_slice(), None),
                        Op::Delete { key } => TxnOp::delete(key.as_str(), None),
                    })
                    .collect::<Vec<_>>(),
            )
            .or_else(
                compared
                    .iter()
                    .map(|key| TxnOp::get(*key, None))
                    .collect::<Vec<_>>(),
            );
        let response = self
            .retry(false, |member| {
                let mut kv = member.kv.clone();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await
            .map_err(|source| StoreError::Etcd {
                endpoints: self.endpoints.clone(),
                action: "transaction",
                advice: if classify(&source) == Retry::Never {
                    ADVICE_RETRY
                } else {
                    ADVICE_UNKNOWN
                },
                source,
            })?;
        if response.succeeded() {
            let header = response
                .header()
                .ok_or_else(|| self.protocol("transaction", "no header"))?;
            return Ok(revision_of(header.revision()));
        }
        let mut current = std::collections::HashMap::new();
        for (key, op) in compared.iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(get) = op else {
                return Err(self.protocol("transaction", "a failure branch answer is not a read"));
            };
            current.insert(
                *key,
                get.kvs().first().map(|kv| revision_of(kv.mod_revision())),
            );
        }
        Err(txn
            .first_conflict(|key| current.get(key).copied().flatten())
            .unwrap_or_else(|| {
                self.protocol(
                    "transaction",
                    "etcd reports a failed compare, but every compare holds on the keys it returned",
                )
            }))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.check_open()?;
        if revision == Revision::ZERO {
            return Ok(());
        }
        let result = self
            .retry(true, |member| {
                let mut kv = member.kv.clone();
                async move { kv.compact(revision.0 as i64, None).await }
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // An earlier compaction already covered it: nothing to do.
            Err(error) if is_compacted(&error) => Ok(()),
            Err(error) if is_future_revision(&error) => Err(StoreError::FutureRevision {
                backend: self.describe(),
                requested: revision,
                current: self.revision().await?,
            }),
            Err(error) => Err(self.error("compact", error)),
        }
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.inner.closed.send_replace(true);
    }
}

impl Store for EtcdStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(self.inner.get(key))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Listing>> {
        Box::pin(self.inner.list(prefix))
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(self.inner.revision())
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<Revision>> {
        Box::pin(self.inner.txn(txn))
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(watcher::start(Arc::clone(&self.inner), prefix, from))
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.inner.compact(revision))
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.inner.closed.send_replace(true) {
                tracing::info!(endpoints = %self.inner.endpoints, "closed etcd store");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("/"), b"0".to_vec());
    }
}
