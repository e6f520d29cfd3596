//! The behaviour both backends promise (docs/store.md), written once and
//! run against each: `suite_tests!` turns every function here into one test
//! per backend.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use palisade_store::{
    EventKind, Expect, Revision, Store, StoreError, Txn, Watch, WatchEvent, MAX_TXN_OPS,
};

/// Long enough for any event to arrive on a loaded CI machine; only hit
/// when something is wrong.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The next event of `watch`; panics on an error, the end, or a timeout.
pub async fn next_event(watch: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that `event` puts `value` at `key` at `revision`.
pub fn assert_put(event: &WatchEvent, key: &str, value: &[u8], revision: Revision) {
    let expected = WatchEvent {
        revision,
        kind: EventKind::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            mod_revision: revision,
        },
    };
    assert_eq!(event, &expected);
}

/// Asserts that `event` deletes `key` at `revision`.
pub fn assert_delete(event: &WatchEvent, key: &str, revision: Revision) {
    let expected = WatchEvent {
        revision,
        kind: EventKind::Delete {
            key: key.to_owned(),
        },
    };
    assert_eq!(event, &expected);
}

/// Writes a sentinel under `prefix` and asserts that it is the next event:
/// proves that nothing else was pending on the watch.
pub async fn assert_nothing_pending(store: &dyn Store, watch: &mut Watch, prefix: &str) {
    let key = format!("{prefix}~sentinel");
    let revision = store
        .put(&key, b"sentinel".to_vec(), Expect::Any)
        .await
        .unwrap();
    let event = next_event(watch).await;
    assert_put(&event, &key, b"sentinel", revision);
}

fn conflict(result: Result<Revision, StoreError>) -> (String, Expect, Option<Revision>) {
    match result {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => (key, expected, current),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub async fn cas_conflicts_report_the_current_mod_revision(store: Arc<dyn Store>) {
    let key = "/resources/policy/acme/web";
    let created = store
        .put(key, b"v1".to_vec(), Expect::Absent)
        .await
        .unwrap();

    // Creating it again conflicts and names the version that exists.
    let (conflict_key, expected, current) =
        conflict(store.put(key, b"again".to_vec(), Expect::Absent).await);
    assert_eq!(conflict_key, key);
    assert_eq!(expected, Expect::Absent);
    assert_eq!(current, Some(created));

    // An update at the version read succeeds once; a second writer holding
    // the same version is told the new one.
    let updated = store
        .put(key, b"v2".to_vec(), Expect::ModRevision(created))
        .await
        .unwrap();
    assert!(updated > created);
    let (_, expected, current) = conflict(
        store
            .put(key, b"lost".to_vec(), Expect::ModRevision(created))
            .await,
    );
    assert_eq!(expected, Expect::ModRevision(created));
    assert_eq!(current, Some(updated));

    let stored = store.get(key).await.unwrap().expect("the key exists");
    assert_eq!(stored.value, b"v2");
    assert_eq!(stored.create_revision, created);
    assert_eq!(stored.mod_revision, updated);
    assert_eq!(stored.version, 2);

    // Deleted and created again: a new life, version 1.
    store
        .delete(key, Expect::ModRevision(updated))
        .await
        .unwrap();
    assert_eq!(store.get(key).await.unwrap(), None);
    let recreated = store
        .put(key, b"v3".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let stored = store.get(key).await.unwrap().unwrap();
    assert_eq!(stored.create_revision, recreated);
    assert_eq!(stored.version, 1);
}

pub async fn concurrent_compare_and_swap_has_exactly_one_winner(store: Arc<dyn Store>) {
    let key = "/identities/acme/next";
    let start = store.put(key, b"0".to_vec(), Expect::Absent).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .put(key, format!("{i}").into_bytes(), Expect::ModRevision(start))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(revision) => winners.push(revision),
            Err(StoreError::Conflict { current, .. }) => losers.push(current),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    assert_eq!(losers.len(), 7);
    assert!(losers.iter().all(|current| *current == Some(winners[0])));
}

pub async fn a_failing_compare_writes_nothing(store: Arc<dyn Store>) {
    let a = store
        .put("/t/a", b"a".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let before = store.revision().await.unwrap();
    let mut watch = store.watch("/t/", before).await.unwrap();

    // The second compare fails: neither the put nor the delete happens.
    let failing = Txn::new()
        .when("/t/a", Expect::ModRevision(a))
        .when("/t/b", Expect::Present)
        .put("/t/c", b"c".to_vec())
        .delete("/t/a");
    let (key, expected, current) = conflict(store.txn(failing).await);
    assert_eq!(
        (key.as_str(), expected, current),
        ("/t/b", Expect::Present, None)
    );
    assert_eq!(store.get("/t/c").await.unwrap(), None);
    assert!(store.get("/t/a").await.unwrap().is_some());
    assert_eq!(store.revision().await.unwrap(), before);

    // When every compare holds, all writes land at one revision, and a
    // watcher sees them in the order written.
    let holding = Txn::new()
        .when("/t/a", Expect::ModRevision(a))
        .when("/t/b", Expect::Absent)
        .put("/t/c", b"c".to_vec())
        .delete("/t/a")
        .put("/t/b", b"b".to_vec());
    let revision = store.txn(holding).await.unwrap();
    assert!(revision > before);
    assert_put(&next_event(&mut watch).await, "/t/c", b"c", revision);
    assert_delete(&next_event(&mut watch).await, "/t/a", revision);
    assert_put(&next_event(&mut watch).await, "/t/b", b"b", revision);
    let listing = store.list("/t/").await.unwrap();
    let keys: Vec<&str> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/b", "/t/c"]);
    assert!(listing.items.iter().all(|kv| kv.mod_revision == revision));
    assert_nothing_pending(&*store, &mut watch, "/t/").await;
}

pub async fn a_delete_expecting_a_revision_fails_on_an_absent_key(store: Arc<dyn Store>) {
    let before = store.revision().await.unwrap();
    let (key, _, current) = conflict(
        store
            .delete("/absent", Expect::ModRevision(Revision(1)))
            .await,
    );
    assert_eq!((key.as_str(), current), ("/absent", None));
    let (_, _, current) = conflict(store.delete("/absent", Expect::Present).await);
    assert_eq!(current, None);

    // Without an expectation it succeeds, changes nothing and notifies
    // nobody.
    let mut watch = store.watch("/", before).await.unwrap();
    assert_eq!(store.delete("/absent", Expect::Any).await.unwrap(), before);
    assert_eq!(store.revision().await.unwrap(), before);
    assert_nothing_pending(&*store, &mut watch, "/").await;
}

pub async fn list_is_a_consistent_snapshot_with_its_revision(store: Arc<dyn Store>) {
    for (key, value) in [
        ("/list/b", "2"),
        ("/list/a", "1"),
        ("/list/c/deep", "3"),
        ("/listx", "outside"),
        ("/other", "outside"),
    ] {
        store.put(key, value.into(), Expect::Absent).await.unwrap();
    }
    let listing = store.list("/list/").await.unwrap();
    let found: Vec<(&str, &[u8])> = listing
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    assert_eq!(
        found,
        [
            ("/list/a", &b"1"[..]),
            ("/list/b", b"2"),
            ("/list/c/deep", b"3")
        ]
    );
    assert_eq!(listing.revision, store.revision().await.unwrap());
    assert!(store.list("/nothing/").await.unwrap().items.is_empty());

    // A writer moves two keys together; every listing sees them equal and
    // no key newer than the listing's revision.
    store
        .put("/pair/x", b"0".to_vec(), Expect::Absent)
        .await
        .unwrap();
    store
        .put("/pair/y", b"0".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 1..=60u32 {
                let value = i.to_string().into_bytes();
                store
                    .txn(
                        Txn::new()
                            .put("/pair/x", value.clone())
                            .put("/pair/y", value),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut listings = 0;
    while !writer.is_finished() || listings == 0 {
        let listing = store.list("/pair/").await.unwrap();
        assert_eq!(listing.items.len(), 2);
        assert_eq!(
            listing.items[0].value, listing.items[1].value,
            "torn snapshot"
        );
        assert!(listing
            .items
            .iter()
            .all(|kv| kv.mod_revision <= listing.revision));
        listings += 1;
    }
    writer.await.unwrap();
}

pub async fn a_large_listing_is_complete_and_sorted(store: Arc<dyn Store>) {
    // More keys than one etcd list page, written in transactions of 100.
    for batch in 0..12 {
        let txn = (0..100).fold(Txn::new(), |t, i| {
            let n = batch * 100 + i;
            t.put(format!("/big/{n:05}"), n.to_string().into_bytes())
        });
        store.txn(txn).await.unwrap();
    }
    let listing = store.list("/big/").await.unwrap();
    assert_eq!(listing.items.len(), 1200);
    for (n, kv) in listing.items.iter().enumerate() {
        assert_eq!(kv.key, format!("/big/{n:05}"));
        assert_eq!(kv.value, n.to_string().into_bytes());
    }
    assert_eq!(listing.revision, store.revision().await.unwrap());
}

pub async fn watch_from_a_revision_yields_exactly_the_later_events(store: Arc<dyn Store>) {
    let r1 = store
        .put("/w/a", b"1".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let r2 = store
        .put("/w/b", b"2".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let r3 = store.put("/w/a", b"3".to_vec(), Expect::Any).await.unwrap();
    store
        .put("/elsewhere", b"x".to_vec(), Expect::Any)
        .await
        .unwrap();
    let r4 = store.delete("/w/b", Expect::Present).await.unwrap();
    assert!(r1 < r2 && r2 < r3 && r3 < r4);

    // From r2: the events after it (replayed), then live ones, nothing from
    // outside the prefix.
    let mut watch = store.watch("/w/", r2).await.unwrap();
    assert_put(&next_event(&mut watch).await, "/w/a", b"3", r3);
    assert_delete(&next_event(&mut watch).await, "/w/b", r4);
    let r5 = store
        .put("/w/c", b"5".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_put(&next_event(&mut watch).await, "/w/c", b"5", r5);
    assert_nothing_pending(&*store, &mut watch, "/w/").await;

    // From the very beginning: every event under the prefix.
    let mut all = store.watch("/w/", Revision::ZERO).await.unwrap();
    assert_put(&next_event(&mut all).await, "/w/a", b"1", r1);
    assert_put(&next_event(&mut all).await, "/w/b", b"2", r2);
    assert_put(&next_event(&mut all).await, "/w/a", b"3", r3);

    // From the current revision: only what comes next.
    let now = store.revision().await.unwrap();
    let mut live = store.watch("/w/", now).await.unwrap();
    assert_nothing_pending(&*store, &mut live, "/w/").await;
}

pub async fn a_watch_started_during_writes_misses_nothing_and_repeats_nothing(
    store: Arc<dyn Store>,
) {
    // One event per write, so a watch from revision N must see exactly
    // N+1, N+2, ... while writes keep landing around its start: between
    // reading N and the watch starting, and while it replays history.
    const WATCHES: usize = 10;
    let base = store.revision().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut last = Revision::ZERO;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 50 {
                last = store
                    .put(
                        &format!("/race/{i}"),
                        i.to_string().into_bytes(),
                        Expect::Absent,
                    )
                    .await
                    .unwrap();
                i += 1;
            }
            last
        })
    };
    let mut watches = Vec::new();
    while watches.len() < WATCHES {
        let now = store.revision().await.unwrap();
        // Some start at the present, some a little in the past.
        let back = watches.len() as u64 % 3 * 4;
        let from = Revision(now.0.saturating_sub(back).max(base.0));
        watches.push((from, store.watch("/race/", from).await.unwrap()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.await.unwrap();
    for (from, watch) in &mut watches {
        for expected in from.0 + 1..=last.0 {
            let event = next_event(watch).await;
            assert_eq!(event.revision, Revision(expected), "watch from {from}");
        }
    }
    // Nothing more is pending on any of them: the next event is the next
    // write.
    let sentinel = store
        .put("/race/~sentinel", b"s".to_vec(), Expect::Absent)
        .await
        .unwrap();
    for (_, watch) in &mut watches {
        assert_put(&next_event(watch).await, "/race/~sentinel", b"s", sentinel);
    }
}

pub async fn a_compacted_resume_reports_compacted(store: Arc<dyn Store>) {
    let mut revisions = Vec::new();
    for i in 0..5u8 {
        revisions.push(store.put("/c/k", vec![i], Expect::Any).await.unwrap());
    }
    let mark = revisions[2];
    store.compact(mark).await.unwrap();

    for from in [Revision::ZERO, revisions[0], Revision(mark.0 - 1)] {
        match store.watch("/c/", from).await {
            Err(StoreError::Compacted { compacted_revision }) => {
                assert_eq!(compacted_revision, mark, "watch from {from}");
            }
            other => panic!("watch from {from} below the compaction: {other:?}"),
        }
    }
    // At the compacted revision and later, history is complete.
    let mut watch = store.watch("/c/", mark).await.unwrap();
    assert_put(&next_event(&mut watch).await, "/c/k", &[3], revisions[3]);
    assert_put(&next_event(&mut watch).await, "/c/k", &[4], revisions[4]);
    // Current values survive compaction.
    assert_eq!(store.get("/c/k").await.unwrap().unwrap().value, [4]);

    // Compacting again at or below is a no-op; beyond the present, an error.
    store.compact(revisions[1]).await.unwrap();
    store.compact(mark).await.unwrap();
    let now = store.revision().await.unwrap();
    match store.compact(Revision(now.0 + 10)).await {
        Err(StoreError::FutureRevision {
            requested, current, ..
        }) => {
            assert_eq!(requested, Revision(now.0 + 10));
            assert_eq!(current, now);
        }
        other => panic!("compacting the future: {other:?}"),
    }
    // A second compaction moves the mark.
    store.compact(now).await.unwrap();
    match store.watch("/c/", mark).await {
        Err(StoreError::Compacted { compacted_revision }) => assert_eq!(compacted_revision, now),
        other => panic!("watch after the second compaction: {other:?}"),
    }
}

pub async fn revisions_strictly_increase(store: Arc<dyn Store>) {
    let mut previous = store.revision().await.unwrap();
    for i in 0..20u32 {
        let key = format!("/seq/{}", i % 3);
        let revision = store
            .put(&key, i.to_be_bytes().to_vec(), Expect::Any)
            .await
            .unwrap();
        assert!(revision > previous, "{revision} after {previous}");
        assert_eq!(
            store.get(&key).await.unwrap().unwrap().mod_revision,
            revision
        );
        assert_eq!(store.revision().await.unwrap(), revision);
        previous = revision;
    }
    // Concurrent writers never share a revision.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .put(&format!("/par/{i}"), vec![i], Expect::Absent)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        let revision = task.await.unwrap();
        assert!(revision > previous);
        assert!(
            seen.insert(revision),
            "revision {revision} handed out twice"
        );
    }
}

pub async fn values_round_trip_bytes_exactly(store: Arc<dyn Store>) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let invalid_utf8 = vec![0xff, 0xfe, 0x00, 0xc3, 0x28];
    let large: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases: [(&str, &[u8]); 4] = [
        ("/bytes/all", &all_bytes),
        ("/bytes/empty", &[]),
        ("/bytes/invalid-utf8", &invalid_utf8),
        ("/bytes/large", &large),
    ];
    let mut watch = store
        .watch("/bytes/", store.revision().await.unwrap())
        .await
        .unwrap();
    for (key, value) in cases {
        let revision = store
            .put(key, value.to_vec(), Expect::Absent)
            .await
            .unwrap();
        assert_eq!(store.get(key).await.unwrap().unwrap().value, value, "{key}");
        assert_put(&next_event(&mut watch).await, key, value, revision);
    }
    let listing = store.list("/bytes/").await.unwrap();
    let mut listed: Vec<(&str, &[u8])> = listing
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    listed.sort();
    let mut expected = cases.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
}

pub async fn malformed_requests_are_refused_alike(store: Arc<dyn Store>) {
    assert!(matches!(
        store.get("no-slash").await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.list("no-slash").await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        store.watch("no-slash", Revision::ZERO).await,
        Err(StoreError::InvalidKey { .. })
    ));
    let twice = Txn::new().put("/k", b"1".to_vec()).put("/k", b"2".to_vec());
    assert!(matches!(
        store.txn(twice).await,
        Err(StoreError::InvalidTxn { .. })
    ));
    let too_many = (0..=MAX_TXN_OPS).fold(Txn::new(), |t, i| t.put(format!("/many/{i}"), vec![]));
    assert!(matches!(
        store.txn(too_many).await,
        Err(StoreError::InvalidTxn { .. })
    ));
    let at_limit = (0..MAX_TXN_OPS).fold(Txn::new(), |t, i| t.put(format!("/many/{i}"), vec![]));
    store.txn(at_limit).await.unwrap();
    assert_eq!(store.list("/many/").await.unwrap().items.len(), MAX_TXN_OPS);
}

pub async fn closing_ends_watches_and_refuses_requests(store: Arc<dyn Store>) {
    let mut watch = store.watch("/", Revision::ZERO).await.unwrap();
    store.close().await.unwrap();
    let ended = tokio::time::timeout(EVENT_TIMEOUT, watch.next())
        .await
        .expect("the watch ends promptly");
    assert!(
        matches!(ended, Some(Err(StoreError::Closed { .. }))),
        "{ended:?}"
    );
    assert!(watch.next().await.is_none());
    assert!(matches!(
        store.get("/k").await,
        Err(StoreError::Closed { .. })
    ));
    assert!(matches!(
        store.put("/k", vec![], Expect::Any).await,
        Err(StoreError::Closed { .. })
    ));
    assert!(matches!(
        store.watch("/", Revision::ZERO).await,
        Err(StoreError::Closed { .. })
    ));
}

pub async fn a_slow_watcher_neither_blocks_writers_nor_loses_events(store: Arc<dyn Store>) {
    // More events than the live channel and the watch buffer hold.
    const WRITES: usize = 1600;
    let from = store.revision().await.unwrap();
    let mut watch = store.watch("/slow/", from).await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in (w..WRITES).step_by(4) {
                    store
                        .put(&format!("/slow/{i:05}"), vec![1], Expect::Absent)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    // Nobody reads the watch until every write is acknowledged; a writer
    // blocked by the watcher would hang here (and the test time out).
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(300), writer)
            .await
            .expect("writers were blocked by a watcher that does not read")
            .unwrap();
    }
    let mut keys = HashSet::new();
    let mut previous = from;
    for _ in 0..WRITES {
        let event = next_event(&mut watch).await;
        assert!(event.revision > previous, "out of order or repeated");
        previous = event.revision;
        assert!(keys.insert(event.key().to_owned()));
    }
    assert_eq!(keys.len(), WRITES);
    assert_nothing_pending(&*store, &mut watch, "/slow/").await;
}

/// Instantiates every suite test for one backend. `$fixture` is an async
/// fn returning `(guard, Arc<dyn Store>)`; the guard lives until the end of
/// the test.
#[macro_export]
macro_rules! suite_tests {
    ($fixture:path) => {
        $crate::suite_tests!(@each $fixture;
            cas_conflicts_report_the_current_mod_revision,
            concurrent_compare_and_swap_has_exactly_one_winner,
            a_failing_compare_writes_nothing,
            a_delete_expecting_a_revision_fails_on_an_absent_key,
            list_is_a_consistent_snapshot_with_its_revision,
            a_large_listing_is_complete_and_sorted,
            watch_from_a_revision_yields_exactly_the_later_events,
            a_watch_started_during_writes_misses_nothing_and_repeats_nothing,
            a_compacted_resume_reports_compacted,
            revisions_strictly_increase,
            values_round_trip_bytes_exactly,
            malformed_requests_are_refused_alike,
            closing_ends_watches_and_refuses_requests,
            a_slow_watcher_neither_blocks_writers_nor_loses_events,
        );
    };
    (@each $fixture:path; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::init_logging();
                let (_guard, store) = $fixture().await;
                $crate::suite::$name(store).await;
            }
        )*
    };
}
