//! Node streams on the embedded store: snapshot of the node's tenants only,
//! deltas, a fresh snapshot when an endpoint moves in, resume after a
//! disconnect, a fresh snapshot after compaction, heartbeats; identities
//! stable across a restart.

use std::time::Duration;

use palisade_client::api::{NodeChange, NodeMessage, NodeSnapshot};
use palisade_client::{Client, NodeEvent, NodeStream, NodeStreamOptions};
use palisade_model::Kind;
use palisade_policy::Identity;

use crate::common::*;

fn options() -> NodeStreamOptions {
    NodeStreamOptions {
        silence: Duration::from_secs(2),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    }
}

/// The next message that is not a heartbeat (connection events must not
/// happen here).
pub async fn next_message(stream: &mut NodeStream) -> NodeMessage {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message within 10 s");
        match event {
            NodeEvent::Message(NodeMessage::Heartbeat { .. }) | NodeEvent::Connected { .. } => {}
            NodeEvent::Message(m) => return m,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Skips heartbeats until the stream reports its connection lost.
pub async fn until_disconnected(stream: &mut NodeStream) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a disconnect within 10 s")
        {
            NodeEvent::Disconnected { .. } => return,
            NodeEvent::Message(NodeMessage::Heartbeat { .. }) => {}
            other => panic!("expected a disconnect, got {other:?}"),
        }
    }
}

pub fn snapshot(m: NodeMessage) -> NodeSnapshot {
    match m {
        NodeMessage::Snapshot(s) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn resource_names(s: &NodeSnapshot) -> Vec<String> {
    let mut out: Vec<String> = s
        .resources
        .iter()
        .map(|r| r.reference.to_string())
        .collect();
    out.sort();
    out
}

/// The identity of a label set `app=<app>` in a snapshot's identities.
pub fn identity_of(s: &NodeSnapshot, tenant: &str, app: &str) -> Option<Identity> {
    let ids = palisade_client::api::join_identities(&s.identities);
    let labels = [("app".to_string(), app.to_string())].into();
    ids.labels(tenant, &labels)
}

#[tokio::test]
async fn a_node_gets_its_tenants_then_deltas_then_a_fresh_snapshot_when_a_tenant_moves_in() {
    let t = TestServer::with_auth().await;
    let admin = t.admin();
    admin.apply(two_tenants()).await.unwrap();
    let r = admin
        .apply(vec![tier("security", 10)])
        .await
        .unwrap()
        .revision;
    settle(&admin, r).await;

    let agent = t.client(Some("agent-n1-token"));
    let mut stream = NodeStream::new(agent.clone(), "n1", None, options());
    assert!(matches!(stream.next().await, NodeEvent::Connected { .. }));
    let first = snapshot(next_message(&mut stream).await);
    assert_eq!(first.tenants, ["acme"]);
    assert_eq!(
        resource_names(&first),
        [
            "Endpoint acme/db-1",
            "Endpoint acme/web-1",
            "Policy acme/db-ingress",
            "Tenant acme",
            "Tier security"
        ]
    );
    assert_eq!(first.identities.len(), 1);
    assert!(identity_of(&first, "acme", "web").is_some());

    // A change in globex is not sent to n1; the next delta is acme's.
    admin
        .apply(vec![endpoint("globex", "web-2", "web", "n2", "10.0.0.5")])
        .await
        .unwrap();
    let acme_change = admin
        .apply(vec![policy(
            "acme",
            "db-ingress",
            "app == 'db'",
            "app == 'web'",
            5433,
        )])
        .await
        .unwrap();
    match next_message(&mut stream).await {
        NodeMessage::Delta(d) => {
            assert_eq!(d.revision, acme_change.revision);
            assert_eq!(d.changes.len(), 1, "{d:?}");
            match &d.changes[0] {
                NodeChange::Put { resource } => {
                    assert_eq!(resource.reference.name, "db-ingress");
                    assert_eq!(resource.resource_version, acme_change.revision);
                }
                other => panic!("expected a put, got {other:?}"),
            }
        }
        other => panic!("expected a delta, got {other:?}"),
    }

    // A new label set changes acme's identities: the delta carries them.
    let new_labels = admin
        .apply(vec![endpoint("acme", "cache-1", "cache", "n2", "10.0.0.9")])
        .await
        .unwrap();
    match next_message(&mut stream).await {
        NodeMessage::Delta(d) => {
            assert_eq!(d.revision, new_labels.revision);
            assert!(d.changes.iter().any(|c| matches!(c, NodeChange::Identities { identities } if identities.tenant == "acme")));
        }
        other => panic!("expected a delta, got {other:?}"),
    }

    // A globex endpoint moves onto n1: n1 now needs globex, whole.
    let moved = admin
        .apply(vec![endpoint("globex", "web-2", "web", "n1", "10.0.0.5")])
        .await
        .unwrap();
    let second = snapshot(next_message(&mut stream).await);
    assert_eq!(second.tenants, ["acme", "globex"]);
    assert!(second.revision >= moved.revision);
    assert!(resource_names(&second).contains(&"Endpoint globex/web-1".to_string()));
    assert_eq!(second.identities.len(), 2);

    // Heartbeats keep coming with the revision the node has everything up to.
    let beat = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
        {
            NodeEvent::Message(NodeMessage::Heartbeat { revision }) => break revision,
            NodeEvent::Message(m) => panic!("unexpected {m:?}"),
            _ => {}
        }
    };
    assert!(beat >= moved.revision);

    // Another node's agent token cannot read n1's stream.
    let other = t.client(Some("agent-n2-token"));
    let mut foreign = NodeStream::new(other, "n1", None, options());
    assert!(
        matches!(foreign.next().await, NodeEvent::Disconnected { reason, .. } if reason.contains("agent:n1"))
    );
}

#[tokio::test]
async fn a_reconnecting_agent_resumes_with_deltas_and_gets_a_snapshot_after_compaction() {
    let mut t = TestServer::open().await;
    let admin = t.admin();
    let r = admin.apply(two_tenants()).await.unwrap().revision;
    settle(&admin, r).await;
    let mut stream = NodeStream::new(admin.clone(), "n1", None, options());
    let first = snapshot(next_message(&mut stream).await);
    let resume_from = first.revision;
    drop(stream);

    let a = admin
        .apply(vec![endpoint("acme", "web-2", "web", "n2", "10.0.0.3")])
        .await
        .unwrap();
    let b = admin
        .apply(vec![endpoint("acme", "web-2", "web", "n2", "10.0.0.4")])
        .await
        .unwrap();
    let mut resumed = NodeStream::new(admin.clone(), "n1", Some(resume_from), options());
    let revisions: Vec<u64> = [
        next_message(&mut resumed).await,
        next_message(&mut resumed).await,
    ]
    .into_iter()
    .map(|m| match m {
        NodeMessage::Delta(d) => d.revision,
        other => panic!("expected deltas on resume, got {other:?}"),
    })
    .collect();
    assert_eq!(revisions, [a.revision, b.revision]);

    // The server restarts on the same address: the stream notices, reconnects
    // and resumes; a change made while it was away arrives as a delta.
    let addr = t.server.as_ref().unwrap().local_addr();
    t.stop().await;
    until_disconnected(&mut resumed).await;
    t.start(|c| c.listen = addr).await;
    let c = t.admin();
    let while_away = c
        .apply(vec![policy(
            "acme",
            "db-ingress",
            "app == 'db'",
            "app == 'web'",
            1,
        )])
        .await
        .unwrap();
    match next_message(&mut resumed).await {
        NodeMessage::Delta(d) => assert_eq!(d.revision, while_away.revision),
        other => panic!("expected a delta after reconnecting, got {other:?}"),
    }
    assert!(resumed.is_connected());
    t.stop().await;

    // With history compacted beyond the agent's revision: a fresh snapshot.
    t.start(|config| {
        config.listen = addr;
        config.keep_revisions = 1;
        config.compact_every = Duration::from_millis(100);
    })
    .await;
    let c = t.admin();
    let mut last = 0;
    for i in 0..3 {
        last = c
            .apply(vec![tenant(&format!("t{i}"))])
            .await
            .unwrap()
            .revision;
    }
    settle(&c, last).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut late = NodeStream::new(c.clone(), "n1", Some(b.revision), options());
    let fresh = snapshot(next_message(&mut late).await);
    assert_eq!(fresh.tenants, ["acme"]);
    assert!(fresh.revision > while_away.revision);
}

#[tokio::test]
async fn identities_survive_a_restart() {
    let mut t = TestServer::open().await;
    let admin = t.admin();
    let r = admin.apply(two_tenants()).await.unwrap().revision;
    settle(&admin, r).await;
    let node_snapshot = |c: Client| async move {
        let mut s = NodeStream::new(c, "n1", None, options());
        snapshot(next_message(&mut s).await)
    };
    let before = node_snapshot(admin.clone()).await;
    let web = identity_of(&before, "acme", "web").unwrap();
    let db = identity_of(&before, "acme", "db").unwrap();

    // Removing the web endpoint and restarting: the next allocation must
    // not reuse web's number for a new label set in the next round.
    admin
        .delete(
            Kind::Endpoint,
            "web-1",
            &palisade_client::GetOptions {
                tenant: Some("acme".into()),
                namespace: None,
            },
            None,
        )
        .await
        .unwrap();
    t.stop().await;
    t.start(|_| {}).await;
    let admin = t.admin();
    admin
        .apply(vec![endpoint("acme", "api-1", "api", "n1", "10.0.0.7")])
        .await
        .unwrap();
    let r = admin
        .apply(vec![endpoint("acme", "web-1", "web", "n1", "10.0.0.1")])
        .await
        .unwrap()
        .revision;
    settle(&admin, r).await;
    let after = node_snapshot(admin).await;
    assert_eq!(identity_of(&after, "acme", "db"), Some(db));
    assert_eq!(
        identity_of(&after, "acme", "web"),
        Some(web),
        "web got its number back"
    );
    let api = identity_of(&after, "acme", "api").unwrap();
    assert!(api != web && api != db);
}
