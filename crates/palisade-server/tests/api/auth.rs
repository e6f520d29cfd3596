//! Roles: tenant tokens see and change only their tenant, never Tiers or
//! Tenants; agent tokens only their node's stream and status; no token is
//! 401; without --tokens the server says auth is disabled.

use palisade_client::api::{ExplainRequest, NodeStatus};
use palisade_client::{GetOptions, ListOptions};
use palisade_model::Kind;

use crate::common::*;

#[tokio::test]
async fn tenant_tokens_cannot_see_or_change_other_tenants() {
    let t = TestServer::with_auth().await;
    t.admin().apply(two_tenants()).await.unwrap();
    let bob = t.client(Some("acme-token-1"));

    // Lists are filtered: globex is not even visible.
    let eps = bob
        .list(Kind::Endpoint, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&eps.items), ["acme/db-1", "acme/web-1"]);
    let tenants = bob
        .list(Kind::Tenant, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&tenants.items), ["acme"]);
    let asked = ListOptions {
        tenant: Some("globex".into()),
        ..ListOptions::default()
    };
    assert_eq!(status_of(bob.list(Kind::Endpoint, &asked).await).0, 403);

    // Reads, writes and deletes of another tenant are 403.
    let globex = GetOptions {
        tenant: Some("globex".into()),
        namespace: None,
    };
    assert_eq!(
        status_of(bob.get(Kind::Endpoint, "web-1", &globex).await).0,
        403
    );
    assert_eq!(
        status_of(
            bob.get(Kind::Tenant, "globex", &GetOptions::default())
                .await
        )
        .0,
        403
    );
    let (status, err) = status_of(
        bob.apply(vec![endpoint("globex", "evil", "x", "n2", "10.0.0.66")])
            .await,
    );
    assert_eq!(status, 403);
    assert!(err.to_string().contains("tenant:globex"), "{err}");
    assert_eq!(
        status_of(bob.delete(Kind::Endpoint, "web-1", &globex, None).await).0,
        403
    );
    let ask = ExplainRequest {
        from: "globex:web-1".into(),
        to: "acme:db-1".into(),
        proto: "tcp".into(),
        port: Some(5432),
        icmp_type: None,
        icmp_code: None,
    };
    assert_eq!(status_of(bob.explain(&ask).await).0, 403);

    // Tiers and Tenants are admin-only, even bob's own tenant.
    let (status, err) = status_of(bob.apply(vec![tier("mine", 5)]).await);
    assert_eq!(status, 403);
    assert!(err.to_string().contains("needs role admin"), "{err}");
    assert_eq!(status_of(bob.apply(vec![tenant("acme")]).await).0, 403);

    // Their own tenant works.
    bob.apply(vec![endpoint("acme", "web-2", "web", "n1", "10.0.0.3")])
        .await
        .unwrap();
    let acme = GetOptions {
        tenant: Some("acme".into()),
        namespace: None,
    };
    bob.get(Kind::Endpoint, "web-2", &acme).await.unwrap();
    assert!(bob.status().await.unwrap().agents.is_empty());
}

#[tokio::test]
async fn agent_tokens_only_read_their_stream_and_report_status() {
    let t = TestServer::with_auth().await;
    t.admin().apply(two_tenants()).await.unwrap();
    let agent = t.client(Some("agent-n1-token"));
    let (status, err) = status_of(
        agent
            .apply(vec![policy("acme", "open", "all()", "all()", 22)])
            .await,
    );
    assert_eq!(status, 403);
    assert!(err.to_string().contains("agent:n1"), "{err}");
    assert_eq!(
        status_of(agent.list(Kind::Policy, &ListOptions::default()).await).0,
        403
    );
    let report = NodeStatus {
        applied_revision: 1,
        health: "ok".into(),
        endpoints: vec![],
        underlay_address: None,
    };
    agent.report_status("n1", &report).await.unwrap();
    assert_eq!(status_of(agent.report_status("n2", &report).await).0, 403);

    // Without a token, or with an unknown one: 401 with what to do.
    let (status, err) = status_of(
        t.client(None)
            .list(Kind::Tenant, &ListOptions::default())
            .await,
    );
    assert_eq!(status, 401);
    assert!(err.to_string().contains("--token"), "{err}");
    assert_eq!(
        status_of(
            t.client(Some("nope"))
                .list(Kind::Tenant, &ListOptions::default())
                .await
        )
        .0,
        401
    );
}

#[tokio::test]
async fn status_says_whether_auth_is_enabled() {
    let open = TestServer::open().await;
    let status = open.admin().status().await.unwrap();
    assert_eq!(
        (status.auth.as_str(), status.subject.as_str()),
        ("disabled", "anonymous")
    );
    let closed = TestServer::with_auth().await;
    let status = closed.admin().status().await.unwrap();
    assert_eq!(
        (status.auth.as_str(), status.role.as_str()),
        ("enabled", "admin")
    );
}

#[tokio::test]
async fn agents_report_status_and_the_server_shows_their_lag() {
    let t = TestServer::with_auth().await;
    let admin = t.admin();
    let first = admin.apply(two_tenants()).await.unwrap().revision;
    settle(&admin, first).await;
    let agent = t.client(Some("agent-n1-token"));
    agent
        .report_status(
            "n1",
            &NodeStatus {
                applied_revision: first,
                health: "ok".into(),
                endpoints: vec!["acme:web-1".into(), "acme:db-1".into()],
                underlay_address: None,
            },
        )
        .await
        .unwrap();
    let status = admin.status().await.unwrap();
    assert_eq!(status.agents.len(), 1);
    let n1 = &status.agents[0];
    assert_eq!(
        (n1.node.as_str(), n1.applied_revision, n1.lag),
        ("n1", first, 0)
    );
    assert_eq!((n1.health.as_str(), n1.endpoints.len()), ("ok", 2));

    // The intent moves on; the agent has not applied it yet.
    let second = admin
        .apply(vec![endpoint("acme", "web-2", "web", "n1", "10.0.0.3")])
        .await
        .unwrap()
        .revision;
    settle(&admin, second).await;
    let n1 = admin.status().await.unwrap().agents.remove(0);
    assert_eq!(n1.lag, second - first);
    agent
        .report_status(
            "n1",
            &NodeStatus {
                applied_revision: second,
                health: "degraded: map full".into(),
                endpoints: vec![],
                underlay_address: None,
            },
        )
        .await
        .unwrap();
    let n1 = admin.status().await.unwrap().agents.remove(0);
    assert_eq!((n1.lag, n1.health.as_str()), (0, "degraded: map full"));
}
