//! Several servers in front of one real etcd: identities stay unique under
//! concurrent applies through both servers (the loser of the allocator's
//! compare-and-swap retries against the new state); a node stream moves to
//! the other server when its server stops; applies go on when an etcd member
//! dies.

use std::time::Duration;

use palisade_client::api::NodeMessage;
use palisade_client::{
    Client, ClientConfig, ListOptions, NodeEvent, NodeStream, NodeStreamOptions,
};
use palisade_model::Kind;
use palisade_server::{Server, ServerConfig};
use palisade_store::StoreSpec;

use crate::common::*;
use crate::streams::{identity_of, next_message, snapshot, until_disconnected};
use palisade_store::testing::EtcdCluster;

async fn server_on(cluster: &EtcdCluster) -> Server {
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        StoreSpec::Etcd(cluster.endpoints()),
    );
    config.heartbeat = Duration::from_millis(300);
    Server::start(config).await.expect("server on etcd starts")
}

fn client(url: &str) -> Client {
    Client::new(&ClientConfig::for_server(url, None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_unique_across_two_servers_with_concurrent_applies() {
    let cluster = EtcdCluster::start(1).await;
    let s1 = server_on(&cluster).await;
    let s2 = server_on(&cluster).await;
    let (c1, c2) = (client(&s1.url()), client(&s2.url()));
    c1.apply(vec![tenant("acme")]).await.unwrap();

    // 16 applies at once, alternating servers, each a new label set.
    let applies = (0..16).map(|i| {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        tokio::spawn(async move {
            c.apply(vec![endpoint(
                "acme",
                &format!("e{i}"),
                &format!("app{i}"),
                "n1",
                &format!("10.0.0.{}", i + 1),
            )])
            .await
        })
    });
    for result in futures_util::future::join_all(applies).await {
        result
            .unwrap()
            .expect("every apply succeeds (losers retry)");
    }
    let listed = c2
        .list(Kind::Endpoint, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 16);
    settle(&c1, listed.revision).await;
    settle(&c2, listed.revision).await;

    // Both servers stream the same identities, one per label set, all distinct.
    let mut seen = Vec::new();
    for c in [&c1, &c2] {
        let mut s = NodeStream::new(c.clone(), "n1", None, NodeStreamOptions::default());
        let snap = snapshot(next_message(&mut s).await);
        let ids: Vec<_> = (0..16)
            .map(|i| identity_of(&snap, "acme", &format!("app{i}")).expect("allocated"))
            .collect();
        seen.push(ids);
    }
    assert_eq!(seen[0], seen[1]);
    let mut unique = seen[0].clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 16, "identities collide: {:?}", seen[0]);

    // Every change has exactly one audit record.
    assert_eq!(c1.audit(None, None).await.unwrap().items.len(), 17);
    s1.shutdown().await;
    s2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fail_over_between_servers_and_applies_survive_an_etcd_member() {
    let mut cluster = EtcdCluster::start(3).await;
    let s1 = server_on(&cluster).await;
    let s2 = server_on(&cluster).await;
    let (url1, url2) = (s1.url(), s2.url());
    let r = client(&url1).apply(two_tenants()).await.unwrap().revision;
    settle(&client(&url1), r).await;
    settle(&client(&url2), r).await;

    // The agent knows both servers and starts on the first.
    let agent = Client::new(&ClientConfig::for_server(&format!("{url1},{url2}"), None)).unwrap();
    let options = NodeStreamOptions {
        silence: Duration::from_secs(2),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };
    let mut stream = NodeStream::new(agent, "n1", None, options);
    match stream.next().await {
        NodeEvent::Connected { server } => assert_eq!(server, url1),
        other => panic!("expected to connect, got {other:?}"),
    }
    let first = snapshot(next_message(&mut stream).await);

    // Server 1 goes away: the stream reconnects to server 2 and resumes.
    s1.shutdown().await;
    until_disconnected(&mut stream).await;
    match tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        NodeEvent::Connected { server } => assert_eq!(server, url2),
        other => panic!("expected to reconnect to server 2, got {other:?}"),
    }
    let c2 = client(&url2);
    let change = c2
        .apply(vec![policy(
            "acme",
            "db-ingress",
            "app == 'db'",
            "app == 'web'",
            1,
        )])
        .await
        .unwrap();
    match next_message(&mut stream).await {
        NodeMessage::Delta(d) => assert_eq!(d.revision, change.revision),
        // Server 2's history may not reach back to the first snapshot.
        NodeMessage::Snapshot(s) => assert!(s.revision >= first.revision),
        other => panic!("unexpected {other:?}"),
    }

    // One etcd member dies (the leader, the hardest case): applies go on.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    let mut i = 0;
    while done < 5 {
        i += 1;
        let doc = endpoint(
            "acme",
            &format!("after-{i}"),
            "web",
            "n1",
            &format!("10.0.2.{i}"),
        );
        match c2.apply(vec![doc]).await {
            Ok(_) => done += 1,
            Err(e) if e.status() == Some(503) => {
                // The outcome of a write cut off by the leader's death is
                // unknown; the client retries, as the error says.
                assert!(
                    std::time::Instant::now() < deadline,
                    "applies did not resume: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("apply failed: {e}"),
        }
    }
    // The node stream kept up through the member's death.
    let latest = c2.status().await.unwrap().intent_revision;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            NodeEvent::Message(m) if m.revision() >= latest => break,
            NodeEvent::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    s2.shutdown().await;
}
