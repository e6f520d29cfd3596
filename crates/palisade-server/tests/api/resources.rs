//! Apply, get, list, delete: round trips, filters, validation, versions,
//! references, audit records, explain and watch.

use palisade_client::api::{ApplyAction, WatchEventKind};
use palisade_client::{GetOptions, ListOptions};
use palisade_model::Kind;
use serde_json::json;

use crate::common::*;

fn acme() -> GetOptions {
    GetOptions {
        tenant: Some("acme".into()),
        namespace: None,
    }
}

#[tokio::test]
async fn apply_get_list_delete_round_trip_with_filters() {
    let t = TestServer::open().await;
    let c = t.admin();
    let applied = c.apply(two_tenants()).await.unwrap();
    assert!(applied
        .results
        .iter()
        .all(|r| r.action == ApplyAction::Created && r.resource_version == applied.revision));

    // The document comes back as written, with its version.
    let web = c.get(Kind::Endpoint, "web-1", &acme()).await.unwrap();
    assert_eq!(web["spec"]["ips"], json!(["10.0.0.1"]));
    assert_eq!(
        web["metadata"]["resourceVersion"],
        applied.revision.to_string()
    );

    let all = c
        .list(Kind::Endpoint, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(
        names(&all.items),
        ["acme/db-1", "acme/web-1", "globex/web-1"]
    );
    let acme_only = ListOptions {
        tenant: Some("acme".into()),
        ..ListOptions::default()
    };
    let listed = c.list(Kind::Endpoint, &acme_only).await.unwrap();
    assert_eq!(names(&listed.items), ["acme/db-1", "acme/web-1"]);
    let webs = ListOptions {
        label_selector: Some("app == 'web'".into()),
        ..ListOptions::default()
    };
    let listed = c.list(Kind::Endpoint, &webs).await.unwrap();
    assert_eq!(names(&listed.items), ["acme/web-1", "globex/web-1"]);
    let bad = ListOptions {
        label_selector: Some("app = web".into()),
        ..ListOptions::default()
    };
    assert_eq!(status_of(c.list(Kind::Endpoint, &bad).await).0, 400);

    // Applying the same documents again changes nothing.
    let again = c.apply(two_tenants()).await.unwrap();
    assert!(again
        .results
        .iter()
        .all(|r| r.action == ApplyAction::Unchanged));
    assert_eq!(again.revision, applied.revision);

    // An update gets a new version; delete removes it.
    let moved = endpoint("acme", "web-1", "web", "n2", "10.0.0.1");
    let updated = c.apply(vec![moved]).await.unwrap();
    assert_eq!(updated.results[0].action, ApplyAction::Updated);
    assert!(updated.revision > applied.revision);
    let deleted = c
        .delete(Kind::Endpoint, "web-1", &acme(), None)
        .await
        .unwrap();
    assert_eq!(deleted.results[0].action, ApplyAction::Deleted);
    assert_eq!(
        status_of(c.get(Kind::Endpoint, "web-1", &acme()).await).0,
        404
    );
    assert_eq!(
        status_of(c.delete(Kind::Endpoint, "web-1", &acme(), None).await).0,
        404
    );
}

#[tokio::test]
async fn namespaced_resources_and_kubernetes_pods_are_addressable() {
    let t = TestServer::open().await;
    let c = t.admin();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-0", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIP": "10.1.0.5"}
    });
    let applied = c.apply(vec![pod.clone()]).await.unwrap();
    let r = &applied.results[0].resource;
    assert_eq!(
        (r.kind, r.tenant.as_deref(), r.namespace.as_deref()),
        (Kind::Endpoint, Some("kubernetes"), Some("shop"))
    );
    let got = c
        .get(
            Kind::Endpoint,
            "api-0",
            &GetOptions {
                tenant: Some("kubernetes".into()),
                namespace: Some("shop".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(got["kind"], "Pod");
    let listed = c
        .list(
            Kind::Endpoint,
            &ListOptions {
                namespace: Some("other".into()),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

#[tokio::test]
async fn validation_errors_are_400_with_field_paths_and_change_nothing() {
    let t = TestServer::open().await;
    let c = t.admin();
    c.apply(vec![tenant("acme")]).await.unwrap();
    let revision = |c: &palisade_client::Client| {
        let c = c.clone();
        async move {
            c.list(Kind::Tenant, &ListOptions::default())
                .await
                .unwrap()
                .revision
        }
    };
    let before = revision(&c).await;

    let mut bad_port = policy("acme", "p", "app == 'db'", "app == 'web'", 80);
    bad_port["spec"]["ingress"][0]["ports"][0]["endPort"] = json!(10);
    let unknown_tenant = endpoint("acmee", "e", "x", "n1", "10.0.0.9");
    let fine = endpoint("acme", "ok", "x", "n1", "10.0.0.8");
    let (status, err) = status_of(c.apply(vec![fine, bad_port.clone(), unknown_tenant]).await);
    assert_eq!(status, 400);
    let text = err.to_string();
    // The model's own message, with the field path.
    let model = palisade_model::resource_from_json(&bad_port, &Default::default()).unwrap_err();
    let first = &model.0[0];
    let detail = err
        .details()
        .iter()
        .find(|d| d.field.as_deref() == Some(first.path.as_str()))
        .expect("the endPort error is reported with its field path");
    assert_eq!(detail.message, first.message);
    assert_eq!(detail.document, Some(1));
    assert!(text.contains("spec.ingress[0].ports[0].endPort"), "{text}");

    // Nothing was written, not even the valid document.
    assert_eq!(revision(&c).await, before);
    assert!(c
        .list(Kind::Endpoint, &ListOptions::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // Whole-intent errors: an unknown tenant and an address used twice.
    let (status, err) = status_of(
        c.apply(vec![
            endpoint("acmee", "e", "x", "n1", "10.0.0.9"),
            endpoint("acme", "a", "x", "n1", "10.0.0.7"),
            endpoint("acme", "b", "x", "n1", "10.0.0.7"),
        ])
        .await,
    );
    assert_eq!(status, 400);
    let text = err.to_string();
    assert!(text.contains("metadata.tenant"), "{text}");
    assert!(text.contains("did you mean 'acme'"), "{text}");
    assert!(text.contains("10.0.0.7"), "{text}");
    assert_eq!(revision(&c).await, before);
}

#[tokio::test]
async fn concurrent_writers_with_the_same_version_exactly_one_wins() {
    let t = TestServer::open().await;
    let c = t.admin();
    c.apply(vec![tenant("acme")]).await.unwrap();
    let v = c
        .apply(vec![endpoint("acme", "web-1", "web", "n1", "10.0.0.1")])
        .await
        .unwrap()
        .revision;

    for round in 0..5 {
        let version = c.get(Kind::Endpoint, "web-1", &acme()).await.unwrap()["metadata"]
            ["resourceVersion"]
            .clone();
        let writes = (0..2).map(|i| {
            let c = c.clone();
            let mut doc = endpoint("acme", "web-1", &format!("w{round}-{i}"), "n1", "10.0.0.1");
            doc["metadata"]["resourceVersion"] = version.clone();
            tokio::spawn(async move { c.apply(vec![doc]).await })
        });
        let results: Vec<_> = futures_util::future::join_all(writes)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0].as_ref().unwrap();
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(loser.status(), Some(409));
        assert_eq!(
            loser.details()[0].current_version,
            Some(winner.revision),
            "the 409 names the winner's version"
        );
        assert!(loser.to_string().contains("re-read it"), "{loser}");
        // The winner's document is what is stored.
        let stored = c.get(Kind::Endpoint, "web-1", &acme()).await.unwrap();
        assert_eq!(
            stored["metadata"]["resourceVersion"],
            winner.revision.to_string()
        );
    }
    assert!(v > 0);

    // A stale version on delete is refused too.
    let (status, _) = status_of(c.delete(Kind::Endpoint, "web-1", &acme(), Some(v)).await);
    assert_eq!(status, 409);
}

#[tokio::test]
async fn deleting_referenced_tenants_and_tiers_names_the_referrers() {
    let t = TestServer::open().await;
    let c = t.admin();
    let mut p = policy("acme", "db-ingress", "app == 'db'", "app == 'web'", 5432);
    p["spec"]["tier"] = json!("security");
    c.apply(vec![
        tenant("acme"),
        tier("security", 10),
        endpoint("acme", "db-1", "db", "n1", "10.0.0.2"),
        p,
    ])
    .await
    .unwrap();
    let (status, err) = status_of(
        c.delete(Kind::Tenant, "acme", &GetOptions::default(), None)
            .await,
    );
    assert_eq!(status, 409);
    let text = err.to_string();
    assert!(text.contains("Endpoint acme/db-1"), "{text}");
    assert!(text.contains("Policy acme/db-ingress"), "{text}");
    let (status, err) = status_of(
        c.delete(Kind::Tier, "security", &GetOptions::default(), None)
            .await,
    );
    assert_eq!(status, 409);
    assert!(err.to_string().contains("Policy acme/db-ingress"), "{err}");

    c.delete(Kind::Policy, "db-ingress", &acme(), None)
        .await
        .unwrap();
    c.delete(Kind::Tier, "security", &GetOptions::default(), None)
        .await
        .unwrap();
    c.delete(Kind::Endpoint, "db-1", &acme(), None)
        .await
        .unwrap();
    c.delete(Kind::Tenant, "acme", &GetOptions::default(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_over_the_transaction_limit_is_refused_whole() {
    let t = TestServer::open().await;
    let c = t.admin();
    c.apply(vec![tenant("acme")]).await.unwrap();
    let before = c
        .list(Kind::Tenant, &ListOptions::default())
        .await
        .unwrap()
        .revision;
    let many: Vec<_> = (0..100)
        .map(|i| endpoint("acme", &format!("e{i}"), "x", "n1", &format!("10.0.1.{i}")))
        .collect();
    let (status, err) = status_of(c.apply(many).await);
    assert_eq!(status, 400);
    assert!(err.to_string().contains("split"), "{err}");
    let after = c
        .list(Kind::Tenant, &ListOptions::default())
        .await
        .unwrap()
        .revision;
    assert_eq!(after, before);
    let fits: Vec<_> = (0..40)
        .map(|i| endpoint("acme", &format!("e{i}"), "x", "n1", &format!("10.0.1.{i}")))
        .collect();
    c.apply(fits).await.unwrap();
}

#[tokio::test]
async fn every_change_has_an_audit_record_with_subject_and_versions() {
    let t = TestServer::with_auth().await;
    let admin = t.admin();
    let bob = t.client(Some("acme-token-1"));
    let first = admin
        .apply(vec![tenant("acme"), tenant("globex")])
        .await
        .unwrap();
    let created = bob
        .apply(vec![endpoint("acme", "web-1", "web", "n1", "10.0.0.1")])
        .await
        .unwrap();
    let updated = bob
        .apply(vec![endpoint("acme", "web-1", "web", "n2", "10.0.0.1")])
        .await
        .unwrap();
    let deleted = bob
        .delete(Kind::Endpoint, "web-1", &acme(), None)
        .await
        .unwrap();
    admin
        .apply(vec![endpoint("globex", "x", "x", "n1", "10.0.0.1")])
        .await
        .unwrap();

    let log = admin.audit(None, None).await.unwrap().items;
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].subject, "alice");
    assert_eq!(log[0].revision, first.revision);
    let web: Vec<_> = log.iter().filter(|r| r.resource.name == "web-1").collect();
    assert_eq!(
        web.iter()
            .map(|r| (r.subject.as_str(), r.action, r.old_version, r.new_version))
            .collect::<Vec<_>>(),
        [
            ("bob", ApplyAction::Created, None, Some(created.revision)),
            (
                "bob",
                ApplyAction::Updated,
                Some(created.revision),
                Some(updated.revision)
            ),
            ("bob", ApplyAction::Deleted, Some(updated.revision), None),
        ]
    );
    assert!(deleted.revision > updated.revision);

    // Tenant tokens see only their tenant's records.
    let mine = bob.audit(None, None).await.unwrap().items;
    assert_eq!(mine.len(), 4, "acme's Tenant and web-1's three changes");
    assert!(mine
        .iter()
        .all(|r| r.resource.owner_tenant() == Some("acme")));
    assert_eq!(status_of(bob.audit(Some("globex"), None).await).0, 403);
    // since filters by time.
    assert!(admin.audit(None, Some("1h")).await.unwrap().items.len() == 6);
    assert!(admin
        .audit(None, Some("2999-01-01T00:00:00Z"))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn explain_answers_like_the_policy_engine_on_the_live_state() {
    let t = TestServer::open().await;
    let c = t.admin();
    let mut docs = two_tenants();
    docs.push(json!({
        "apiVersion": "palisade.dev/v1", "kind": "Policy",
        "metadata": {"name": "web-egress", "tenant": "acme"},
        "spec": {"selector": "app == 'web'", "egress": [{"action": "allow", "to": [{"selector": "app == 'db'"}]}]}
    }));
    c.apply(docs.clone()).await.unwrap();
    let ask = |from: &str, to: &str, port: u16| palisade_client::api::ExplainRequest {
        from: from.into(),
        to: to.into(),
        proto: "tcp".into(),
        port: Some(port),
        icmp_type: None,
        icmp_code: None,
    };
    let allowed = c
        .explain(&ask("acme:web-1", "acme:db-1", 5432))
        .await
        .unwrap();
    let denied = c
        .explain(&ask("acme:web-1", "acme:db-1", 22))
        .await
        .unwrap();

    // The same files evaluated locally give the same explanation and text.
    let intent = palisade_model::Intent::from_resources(
        docs.iter()
            .map(|d| palisade_model::resource_from_json(d, &Default::default()).unwrap())
            .collect(),
        vec![],
        &Default::default(),
    )
    .unwrap();
    let peer = |r: &str| match intent.resolve(r).unwrap() {
        palisade_model::Target::Endpoint(e) => palisade_policy::FlowPeer::Endpoint(e),
        palisade_model::Target::Address { tenant, ip } => {
            palisade_policy::FlowPeer::Address { tenant, ip }
        }
    };
    for (response, port) in [(&allowed, 5432), (&denied, 22)] {
        let local = palisade_policy::evaluate(
            &intent,
            &palisade_policy::Flow {
                src: peer("acme:web-1"),
                dst: peer("acme:db-1"),
                protocol: 6,
                port,
            },
        );
        assert_eq!(response.explanation, local);
        assert_eq!(response.text, local.to_string());
    }
    assert!(allowed.text.starts_with("ALLOW"), "{}", allowed.text);
    assert!(allowed.text.contains("db-ingress"), "{}", allowed.text);
    assert!(denied.text.starts_with("DENY"), "{}", denied.text);
    let (status, err) = status_of(c.explain(&ask("acme:web-9", "acme:db-1", 1)).await);
    assert_eq!(status, 400);
    assert!(err.to_string().contains("web-9"), "{err}");
}

#[tokio::test]
async fn watch_streams_changes_after_a_revision_and_410_when_compacted() {
    let t = TestServer::open().await;
    let c = t.admin();
    let start = c.apply(vec![tenant("acme")]).await.unwrap().revision;
    c.apply(vec![endpoint("acme", "web-1", "web", "n1", "10.0.0.1")])
        .await
        .unwrap();
    c.delete(Kind::Endpoint, "web-1", &acme(), None)
        .await
        .unwrap();
    let mut watch = c.watch(Some(start)).await.unwrap();
    let put = watch.next().await.unwrap().unwrap();
    assert_eq!(put.kind, WatchEventKind::Put);
    assert_eq!(put.resource["metadata"]["name"], "web-1");
    assert_eq!(
        put.resource["metadata"]["resourceVersion"],
        put.revision.to_string()
    );
    let delete = watch.next().await.unwrap().unwrap();
    assert_eq!(delete.kind, WatchEventKind::Delete);
    assert_eq!(delete.resource["metadata"]["tenant"], "acme");
    assert!(delete.revision > put.revision);
    // Live changes follow.
    let live = c.apply(vec![tenant("globex")]).await.unwrap().revision;
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.revision, event.resource["metadata"]["name"].as_str()),
        (live, Some("globex"))
    );

    // After a compaction, watching from before it is 410.
    let mut t2 = TestServer::start_with(false, |config| {
        config.keep_revisions = 1;
        config.compact_every = std::time::Duration::from_millis(100);
    })
    .await;
    let c2 = t2.admin();
    let old = c2.apply(vec![tenant("a")]).await.unwrap().revision;
    for name in ["b", "c", "d"] {
        c2.apply(vec![tenant(name)]).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, err) = status_of(c2.watch(Some(old - 1)).await);
    assert_eq!(status, 410, "{err}");
    t2.stop().await;
}
