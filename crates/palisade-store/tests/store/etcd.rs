//! The etcd store: the shared suite on a single real etcd member, and a
//! three-member cluster on loopback for failover and several clients.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_store::{EtcdStore, Expect, Revision, Store, StoreError, StoreSpec, WatchEvent};

use crate::suite::{assert_put, next_event};
use palisade_store::testing::EtcdCluster;

/// A store on a fresh single-member etcd; the member dies with the guard.
async fn fixture() -> (EtcdCluster, Arc<dyn Store>) {
    let cluster = EtcdCluster::start(1).await;
    let store = EtcdStore::connect(&cluster.endpoints())
        .await
        .expect("connect to etcd");
    (cluster, Arc::new(store))
}

crate::suite_tests!(fixture);

/// Puts `key`, retrying only errors that say the outcome is unknown, by
/// reading the key back: a member may die while the request is in flight.
async fn put_surely(store: &dyn Store, key: &str, value: &[u8]) -> Revision {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.put(key, value.to_vec(), Expect::Absent).await {
            Ok(revision) => return revision,
            Err(StoreError::Conflict {
                current: Some(revision),
                ..
            }) => {
                // An earlier attempt landed after all.
                assert_eq!(store.get(key).await.unwrap().unwrap().value, value);
                return revision;
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "writes did not resume: {error}");
                eprintln!("write of {key} failed, retrying: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_watches_continue_while_members_are_killed_one_at_a_time() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = EtcdStore::connect(&cluster.endpoints()).await.unwrap();
    let from = store.revision().await.unwrap();
    let mut watch = store.watch("/ha/", from).await.unwrap();

    // Kill each member in turn (so the one serving the watch dies at some
    // point), writing while it is down, then bring it back.
    let mut written = Vec::new();
    let mut n = 0;
    for victim in 0..3 {
        for _ in 0..5 {
            let key = format!("/ha/{n:03}");
            written.push((key.clone(), put_surely(&store, &key, b"up").await));
            n += 1;
        }
        cluster.kill(victim);
        for _ in 0..10 {
            let key = format!("/ha/{n:03}");
            written.push((key.clone(), put_surely(&store, &key, b"up").await));
            n += 1;
        }
        let listing = store.list("/ha/").await.expect("list with a member down");
        assert_eq!(listing.items.len(), n);
        cluster.restart(victim).await;
    }

    // The watch saw every write exactly once, in order, across the kills.
    for (key, revision) in &written {
        assert_put(&next_event(&mut watch).await, key, b"up", *revision);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_without_losing_acknowledged_writes() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = EtcdStore::connect(&cluster.endpoints()).await.unwrap();
    let before = put_surely(&store, "/leader/before", b"1").await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let after = put_surely(&store, "/leader/after", b"2").await;
    assert!(after > before);
    let listing = store.list("/leader/").await.unwrap();
    assert_eq!(listing.items.len(), 2);
    assert_ne!(cluster.leader().await, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_see_each_others_writes_and_the_same_events_in_order() {
    let cluster = EtcdCluster::start(3).await;
    // Two servers, each talking to a different member.
    let a: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[cluster.endpoint(0)]).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[cluster.endpoint(1)]).await.unwrap());
    let from = a.revision().await.unwrap();
    let mut watch_a = a.watch("/two/", from).await.unwrap();
    let mut watch_b = b.watch("/two/", from).await.unwrap();

    let writers: Vec<_> = [("a", Arc::clone(&a)), ("b", Arc::clone(&b))]
        .into_iter()
        .map(|(name, store)| {
            tokio::spawn(async move {
                for i in 0..20 {
                    store
                        .put(&format!("/two/{name}{i:02}"), name.into(), Expect::Absent)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }

    // Each reads what the other wrote.
    assert_eq!(a.get("/two/b19").await.unwrap().unwrap().value, b"b");
    assert_eq!(b.get("/two/a19").await.unwrap().unwrap().value, b"a");
    assert_eq!(
        a.list("/two/").await.unwrap(),
        b.list("/two/").await.unwrap()
    );

    // Both watches carry the same 40 events in the same order.
    let mut seen_a: Vec<WatchEvent> = Vec::new();
    let mut seen_b: Vec<WatchEvent> = Vec::new();
    for _ in 0..40 {
        seen_a.push(next_event(&mut watch_a).await);
        seen_b.push(next_event(&mut watch_b).await);
    }
    assert_eq!(seen_a, seen_b);
    assert!(seen_a.windows(2).all(|w| w[0].revision < w[1].revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_from_two_servers_has_exactly_one_winner() {
    let cluster = EtcdCluster::start(3).await;
    let a: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[cluster.endpoint(0)]).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(EtcdStore::connect(&[cluster.endpoint(2)]).await.unwrap());
    let key = "/identities/acme/counter";
    let mut current = a.put(key, b"0".to_vec(), Expect::Absent).await.unwrap();
    for round in 0..20 {
        let attempts: Vec<_> = [("a", Arc::clone(&a)), ("b", Arc::clone(&b))]
            .into_iter()
            .map(|(name, store)| {
                tokio::spawn(async move {
                    let value = format!("{round}{name}").into_bytes();
                    (
                        name,
                        store.put(key, value, Expect::ModRevision(current)).await,
                    )
                })
            })
            .collect();
        let mut winner = None;
        let mut loser_saw = None;
        for attempt in attempts {
            match attempt.await.unwrap() {
                (name, Ok(revision)) => {
                    assert!(winner.is_none(), "round {round}: both writers won");
                    winner = Some((name, revision));
                }
                (_, Err(StoreError::Conflict { current, .. })) => loser_saw = Some(current),
                (_, Err(other)) => panic!("round {round}: {other}"),
            }
        }
        let (name, revision) = winner.expect("one writer wins");
        assert_eq!(
            loser_saw,
            Some(Some(revision)),
            "the loser is told the winner's version"
        );
        let stored = b.get(key).await.unwrap().unwrap();
        assert_eq!(stored.value, format!("{round}{name}").into_bytes());
        current = revision;
    }
}

#[tokio::test]
async fn an_unreachable_cluster_is_reported_with_its_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    match EtcdStore::connect(&[&endpoint]).await {
        Err(error @ StoreError::Unreachable { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&endpoint), "{message}");
            assert!(message.contains("--store"), "{message}");
        }
        other => panic!("connecting to nothing: {other:?}"),
    }
}

#[tokio::test]
async fn an_etcd_spec_opens_the_etcd_store() {
    let cluster = EtcdCluster::start(1).await;
    let member = cluster.endpoint(0);
    let spec: StoreSpec = format!("etcd://{}", member.trim_start_matches("http://"))
        .parse()
        .unwrap();
    let store = spec.open().await.unwrap();
    assert_eq!(store.describe(), format!("etcd at {member}"));
    let revision = store
        .put("/k", b"v".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(
        store.get("/k").await.unwrap().unwrap().mod_revision,
        revision
    );
}
