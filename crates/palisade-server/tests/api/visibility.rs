//! Visibility: agents push flow records and rule counters; people read
//! flows (filtered, followed, only their tenant's), per-rule hits (zero-hit
//! rules too), the segmentation map of the three-tier example, and the
//! Prometheus metrics.

use std::path::PathBuf;
use std::time::Duration;

use palisade_client::visibility::{
    CounterReport, Coverage, FlowQuery, FlowRecord, FlowVerdict, GroupBy, RuleCounter,
};
use palisade_client::Client;
use palisade_model::{Action, Direction, LoadOptions};
use palisade_policy::Attribution;
use serde_json::{json, Value};

use crate::common::*;

/// A flow record as an agent writes it (ECS names, nested).
pub fn flow(tenant: &str, action: &str, src: &str, dst: &str, port: u16, rule: &str) -> Value {
    let mut record = json!({
        "@timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "event": {"kind": "event", "category": ["network"], "action": action,
                  "outcome": if action == "packet-denied" { "failure" } else { "success" }},
        "source": {"ip": "10.0.1.10", "port": 41000},
        "destination": {"ip": "10.0.3.10", "port": port},
        "network": {"transport": "tcp", "direction": "ingress"},
        "rule": {"name": rule, "ruleset": "default"},
        "palisade": {"tenant": tenant, "source": {"endpoint": src}, "destination": {"endpoint": dst}}
    });
    if action == "audit-would-deny" {
        record["palisade"]["audit"] = json!({"rule": rule});
    }
    record
}

fn records(values: &[Value]) -> Vec<FlowRecord> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect()
}

/// Pushes records as node `node`'s agent would.
async fn push(t: &TestServer, node: &str, values: &[Value]) {
    let agent = t.client(Some(&format!("agent-{node}-token")));
    let accepted = agent.post_flows(node, &records(values)).await.unwrap();
    assert_eq!(accepted.accepted, values.len());
}

fn pairs(flows: &[FlowRecord]) -> Vec<String> {
    flows
        .iter()
        .map(|f| format!("{} {}", f.source_name(), f.destination_name()))
        .collect()
}

#[tokio::test]
async fn agents_push_flows_for_their_own_node_only() {
    let t = TestServer::with_auth().await;
    let n1 = t.client(Some("agent-n1-token"));
    let denied = records(&[flow(
        "acme",
        "packet-denied",
        "web-1",
        "db-1",
        5432,
        "default deny of tenant acme",
    )]);
    n1.post_flows("n1", &denied).await.unwrap();

    // Another node's token, a tenant token, no token: refused.
    let (status, err) = status_of(
        t.client(Some("agent-n2-token"))
            .post_flows("n1", &denied)
            .await,
    );
    assert_eq!(status, 403);
    assert!(err.to_string().contains("agent:n1"), "{err}");
    assert_eq!(
        status_of(
            t.client(Some("acme-token-1"))
                .post_flows("n1", &denied)
                .await
        )
        .0,
        403
    );
    assert_eq!(
        status_of(t.client(None).post_flows("n1", &denied).await).0,
        401
    );

    // A record naming another node, or not a record: 400, nothing kept.
    let mut other = flow("acme", "packet-denied", "web-1", "db-1", 5432, "x");
    other["palisade"]["node"] = "n2".into();
    let bad = json!({"records": [flow("acme", "connection-allowed", "a", "b", 1, "r"), other, {"hello": 1}]});
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/nodes/n1/flows", t.url()))
        .bearer_auth("agent-n1-token")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2, "{body}");
    assert_eq!(details[0]["document"], 1);
    assert_eq!(details[0]["field"], "palisade.node");
    assert_eq!(details[1]["document"], 2);

    // Only the first push is there, with the node filled in; agents cannot read flows.
    let all = t.admin().flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(pairs(&all), ["acme:web-1 acme:db-1"]);
    assert_eq!(all[0].palisade.node.as_deref(), Some("n1"));
    assert_eq!(status_of(n1.flows(&FlowQuery::default()).await).0, 403);
}

#[tokio::test]
async fn the_history_keeps_the_newest_records_and_counts_the_dropped() {
    let t = TestServer::start_with(false, |c| c.flow_history = 3).await;
    let admin = t.admin();
    let batch: Vec<Value> = (1..=5)
        .map(|port| {
            flow(
                "acme",
                "connection-allowed",
                "web-1",
                "app-1",
                port,
                "default/app ingress rule 0",
            )
        })
        .collect();
    admin.post_flows("n1", &records(&batch)).await.unwrap();
    let kept: Vec<u16> = admin
        .flows(&FlowQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|f| f.destination.port.unwrap())
        .collect();
    assert_eq!(kept, [3, 4, 5]);
    let counts = admin.status().await.unwrap().flows.unwrap();
    assert_eq!(
        (
            counts.records,
            counts.capacity,
            counts.received,
            counts.dropped
        ),
        (3, 3, 5, 2)
    );
    let limited = FlowQuery {
        limit: Some(2),
        ..FlowQuery::default()
    };
    assert_eq!(admin.flows(&limited).await.unwrap().len(), 2);
}

#[tokio::test]
async fn flows_are_filtered_by_tenant_endpoint_verdict_and_time() {
    let t = TestServer::open().await;
    let admin = t.admin();
    let mut old = flow(
        "acme",
        "connection-allowed",
        "web-1",
        "app-1",
        8080,
        "default/app ingress rule 0",
    );
    old["@timestamp"] = "2020-01-01T00:00:00Z".into();
    admin
        .post_flows(
            "n1",
            &records(&[
                old,
                flow(
                    "acme",
                    "packet-denied",
                    "web-2",
                    "app-1",
                    8080,
                    "security/quarantine ingress rule 0",
                ),
                flow(
                    "acme",
                    "audit-would-deny",
                    "web-1",
                    "db-1",
                    443,
                    "default/web-lockdown ingress rule 0",
                ),
                flow(
                    "globex",
                    "packet-denied",
                    "web-1",
                    "db-1",
                    5432,
                    "default deny of tenant globex",
                ),
            ]),
        )
        .await
        .unwrap();
    let query =
        |tenant: Option<&str>, endpoint: Option<&str>, verdict, since: Option<&str>| FlowQuery {
            tenant: tenant.map(Into::into),
            endpoint: endpoint.map(Into::into),
            verdict,
            since: since.map(Into::into),
            limit: None,
        };
    let got = |q: FlowQuery| {
        let admin = admin.clone();
        async move { pairs(&admin.flows(&q).await.unwrap()) }
    };
    assert_eq!(
        got(query(Some("globex"), None, None, None)).await,
        ["globex:web-1 globex:db-1"]
    );
    assert_eq!(
        got(query(None, None, Some(FlowVerdict::Deny), None)).await,
        ["acme:web-2 acme:app-1", "globex:web-1 globex:db-1"]
    );
    assert_eq!(
        got(query(None, None, Some(FlowVerdict::Audit), None)).await,
        ["acme:web-1 acme:db-1"]
    );
    assert_eq!(
        got(query(None, Some("acme:app-1"), None, None)).await,
        ["acme:web-1 acme:app-1", "acme:web-2 acme:app-1"]
    );
    // A bare name matches in every tenant.
    assert_eq!(got(query(None, Some("db-1"), None, None)).await.len(), 2);
    assert_eq!(
        got(query(Some("acme"), None, None, Some("1h"))).await.len(),
        2
    );
    let (status, err) = status_of(admin.flows(&query(None, None, None, Some("soon"))).await);
    assert_eq!(status, 400);
    assert!(err.to_string().contains("soon"), "{err}");
}

#[tokio::test]
async fn a_follower_gets_the_history_then_new_records_of_its_tenant_only() {
    let t = TestServer::with_auth().await;
    push(
        &t,
        "n1",
        &[flow(
            "acme",
            "connection-allowed",
            "web-1",
            "app-1",
            8080,
            "default/app ingress rule 0",
        )],
    )
    .await;
    let bob = t.client(Some("acme-token-1"));
    let mut stream = bob.follow_flows(&FlowQuery::default()).await.unwrap();
    assert_eq!(
        next_flow(&mut stream).await.destination_name(),
        "acme:app-1"
    );

    // A globex record pushed meanwhile never reaches acme's follower.
    push(
        &t,
        "n2",
        &[flow(
            "globex",
            "packet-denied",
            "web-1",
            "db-1",
            5432,
            "default deny of tenant globex",
        )],
    )
    .await;
    push(
        &t,
        "n1",
        &[flow(
            "acme",
            "packet-denied",
            "web-1",
            "db-1",
            5432,
            "default deny of tenant acme",
        )],
    )
    .await;
    let live = next_flow(&mut stream).await;
    assert_eq!(live.palisade.tenant, "acme");
    assert_eq!(live.decided_by(), Some("default deny of tenant acme"));

    // Lists are filtered the same way; asking for another tenant is 403.
    let seen = bob.flows(&FlowQuery::default()).await.unwrap();
    assert!(seen.iter().all(|f| f.palisade.tenant == "acme"), "{seen:?}");
    assert_eq!(seen.len(), 2);
    let globex = FlowQuery {
        tenant: Some("globex".into()),
        ..FlowQuery::default()
    };
    assert_eq!(status_of(bob.flows(&globex).await).0, 403);
    assert_eq!(status_of(bob.follow_flows(&globex).await).0, 403);
    assert_eq!(t.admin().flows(&globex).await.unwrap().len(), 1);
}

/// The next record of a followed stream, within 10 s.
pub async fn next_flow(stream: &mut palisade_client::FlowStream) -> FlowRecord {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a record within 10 s")
        .expect("the stream stays open")
        .unwrap()
}

/// Applies `examples/three-tier` as `palisade apply` would.
pub async fn apply_three_tier(client: &Client) -> u64 {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/three-tier"
    ));
    let docs = palisade_model::read_documents(&[dir], &LoadOptions::default()).unwrap();
    let revision = client
        .apply(docs.into_iter().map(|d| d.value).collect())
        .await
        .unwrap()
        .revision;
    settle(client, revision).await;
    revision
}

fn rule(
    tier: &str,
    policy: &str,
    direction: Direction,
    index: usize,
    action: Action,
) -> Attribution {
    Attribution::Rule {
        tier: tier.into(),
        tenant: "acme".into(),
        policy: policy.into(),
        direction,
        index,
        action,
    }
}

#[tokio::test]
async fn rule_hits_sum_the_agents_and_list_rules_that_never_matched() {
    let t = TestServer::with_auth().await;
    apply_three_tier(&t.admin()).await;
    let app_in = rule("default", "app", Direction::Ingress, 0, Action::Allow);
    let quarantine = rule(
        "security",
        "quarantine",
        Direction::Ingress,
        0,
        Action::Deny,
    );
    let report = |counters: Vec<(Attribution, u64)>| CounterReport {
        counters: counters
            .into_iter()
            .map(|(attribution, packets)| RuleCounter {
                attribution,
                packets,
                bytes: packets * 100,
            })
            .collect(),
    };
    let n1 = t.client(Some("agent-n1-token"));
    let n2 = t.client(Some("agent-n2-token"));
    n1.put_counters(
        "n1",
        &report(vec![(app_in.clone(), 10), (quarantine.clone(), 2)]),
    )
    .await
    .unwrap();
    n2.put_counters("n2", &report(vec![(app_in.clone(), 5)]))
        .await
        .unwrap();
    // Absolute values: a second report replaces the first.
    n1.put_counters(
        "n1",
        &report(vec![(app_in.clone(), 12), (quarantine.clone(), 2)]),
    )
    .await
    .unwrap();
    assert_eq!(
        status_of(n2.put_counters("n1", &report(vec![])).await).0,
        403
    );

    let bob = t.client(Some("acme-token-1"));
    let list = bob.rule_hits("acme").await.unwrap();
    let find = |text: &str| {
        list.rules
            .iter()
            .find(|r| r.text == text)
            .unwrap_or_else(|| panic!("{text} is not listed: {:#?}", list.rules))
    };
    let app = find("default/app ingress rule 0");
    assert_eq!(
        (app.packets, app.bytes, app.nodes.clone()),
        (17, 1700, vec!["n1".to_owned(), "n2".to_owned()])
    );
    assert_eq!(find("security/quarantine ingress rule 0").packets, 2);
    // Every rule of the intent is listed, also those that never matched.
    let never = find("default/db ingress rule 0");
    assert_eq!((never.packets, never.in_intent), (0, true));
    assert_eq!(find("default/web-lockdown ingress rule 0").mode, "audit");
    assert_eq!(find("default deny of tenant acme (ingress)").packets, 0);
    // 3 policies x 2 rules minus db's egress (none) + quarantine + lockdown = 7 rules.
    let rules = list
        .rules
        .iter()
        .filter(|r| matches!(r.attribution, Attribution::Rule { .. }));
    assert_eq!(rules.count(), 7);

    assert_eq!(status_of(bob.rule_hits("globex").await).0, 403);
    assert_eq!(status_of(t.admin().rule_hits("nobody").await).0, 404);
}

#[tokio::test]
async fn audit_rules_count_their_would_deny_records() {
    let t = TestServer::open().await;
    let admin = t.admin();
    apply_three_tier(&admin).await;
    let mut audit = flow(
        "acme",
        "audit-would-deny",
        "web-1",
        "web-1",
        443,
        "default/web-lockdown ingress rule 0",
    );
    audit["palisade"]["suppressed"] = 4.into();
    admin
        .post_flows("node-1", &records(&[audit]))
        .await
        .unwrap();
    let list = admin.rule_hits("acme").await.unwrap();
    let lockdown = list
        .rules
        .iter()
        .find(|r| r.text == "default/web-lockdown ingress rule 0")
        .unwrap();
    assert_eq!(lockdown.would_deny, 5);
}

#[tokio::test]
async fn the_map_of_three_tier_has_the_policy_edges() {
    let t = TestServer::with_auth().await;
    apply_three_tier(&t.admin()).await;
    let bob = t.client(Some("acme-token-1"));
    let map = bob
        .tenant_map("acme", &GroupBy::Label("app".into()))
        .await
        .unwrap();
    let ids: Vec<&str> = map.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["app=app", "app=db", "app=web", "world"]);
    let edge = |from: &str, to: &str| map.edges.iter().find(|e| e.from == from && e.to == to);
    let web_app = edge("app=web", "app=app").expect("web -> app");
    assert_eq!(web_app.ports[0].text, "tcp/8080");
    // web-2 is quarantined: only some web members reach app.
    assert_eq!(web_app.ports[0].coverage, Coverage::Some);
    assert!(
        edge("app=db", "app=app").is_none(),
        "db -> app must have no edge"
    );
    assert_eq!(edge("app=app", "app=db").unwrap().ports[0].text, "tcp/5432");
    assert_eq!(edge("world", "app=web").unwrap().ports[0].text, "tcp/443");
    // Identities are filled in from the store.
    assert!(map.groups[0].members.iter().all(|m| m.identity.is_some()));

    let by_identity = bob.tenant_map("acme", &GroupBy::Identity).await.unwrap();
    assert_eq!(
        by_identity.groups.len(),
        5,
        "web, quarantined web, app, db, world"
    );
    assert_eq!(
        status_of(bob.tenant_map("globex", &GroupBy::Identity).await).0,
        403
    );
    let bad = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/tenants/acme/map?groupBy=colour",
            t.url()
        ))
        .bearer_auth("admin-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// `(name, labels, value)` of every sample of an OpenMetrics text.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF:\n{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad metric name in {line}"
            );
            (name.to_owned(), labels.to_owned(), value)
        })
        .collect()
}

fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|(_, _, v)| *v)
}

async fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let t = TestServer::start_with(true, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let admin = t.admin();
    let url = format!("{}/metrics", t.url());
    assert_eq!(scrape(&url, None).await.0, 401);
    assert_eq!(scrape(&url, Some("acme-token-1")).await.0, 403);

    let status_requests = r#"route="/api/v1/status",method="GET",status="200""#;
    let before = samples(&scrape(&url, Some("admin-token-1")).await.1);
    let base = value(
        &before,
        "palisade_server_http_requests_total",
        status_requests,
    )
    .unwrap_or(0.0);
    for _ in 0..3 {
        admin.status().await.unwrap();
    }
    push(
        &t,
        "n1",
        &[flow(
            "acme",
            "packet-denied",
            "web-1",
            "db-1",
            5432,
            "default deny of tenant acme",
        )],
    )
    .await;
    t.client(Some("agent-n1-token"))
        .report_status(
            "n1",
            &palisade_client::api::NodeStatus {
                applied_revision: 0,
                health: "ok".into(),
                endpoints: vec![],
                underlay_address: None,
            },
        )
        .await
        .unwrap();
    let mut following = admin.follow_flows(&FlowQuery::default()).await.unwrap();
    following.next().await.unwrap().unwrap();

    // The separate listener needs no token.
    let metrics_url = format!(
        "http://{}/metrics",
        t.server.as_ref().unwrap().metrics_addr().unwrap()
    );
    let (code, text) = scrape(&metrics_url, None).await;
    assert_eq!(code, 200);
    let after = samples(&text);
    assert_eq!(
        value(
            &after,
            "palisade_server_http_requests_total",
            status_requests
        ),
        Some(base + 3.0)
    );
    let count = value(
        &after,
        "palisade_server_http_request_duration_seconds_count",
        status_requests,
    );
    assert!(count >= Some(3.0), "{count:?}");
    assert!(after.iter().any(|(n, l, _)| n
        == "palisade_server_http_request_duration_seconds_bucket"
        && l.contains("le=")));
    assert_eq!(
        value(
            &after,
            "palisade_server_flows_received_total",
            r#"node="n1""#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "palisade_server_flows_dropped_total", ""),
        Some(0.0)
    );
    assert_eq!(
        value(&after, "palisade_server_streams_open", r#"kind="flows""#),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "palisade_server_agent_healthy", r#"node="n1""#),
        Some(1.0)
    );
    assert!(value(
        &after,
        "palisade_server_agent_lag_revisions",
        r#"node="n1""#
    )
    .is_some());
    assert!(value(&after, "palisade_server_store_revision", "").unwrap() >= 1.0);

    // A follower that goes away is no longer counted.
    drop(following);
    // The server notices at its next keepalive line (every 15 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let now = samples(&scrape(&metrics_url, None).await.1);
        if value(&now, "palisade_server_streams_open", r#"kind="flows""#) == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed follower is still counted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
