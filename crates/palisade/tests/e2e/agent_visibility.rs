//! What agents that follow a control plane let a person see, with real
//! packets: a blocked probe in `palisade flows` and in the flow log with the
//! rule that blocked it within a second; an audit policy's would-deny; flow
//! records that use ECS field names with their types; flow log rotation;
//! a flood aggregated per flow; metrics that move with the traffic and a
//! map filling up; tenant tokens that see only their tenant's flows.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use palisade_client::visibility::FlowQuery;
use palisade_lab::ProbeResult;
use palisade_model::Protocol;
use serde_json::{json, Value};

use crate::server_support::*;
use crate::support::*;

const TCP: Protocol = Protocol::Tcp;
/// The bound: a blocked probe is visible within a second.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// A three-tier lab, a server holding three-tier, and every node's agent
/// following it (with `extra` flags).
fn setup(tag: &str, extra: &[&str]) -> (TestLab, ServerProcess, ServerAgents) {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up(tag, &example);
    let server = ServerProcess::start(&node_names(&lab));
    let applied = apply_files(&server.client(ADMIN), &example);
    let agents = ServerAgents::start(&lab, &server.url, extra);
    agents.wait_applied(applied.revision);
    (lab, server, agents)
}

/// Probes in the background; returns when the probe started.
fn probe_in_background(lab: &TestLab, from: &str, to: &str, port: u16) -> Instant {
    lab.forget_gateway(from);
    let (from, to, name) = (from.to_owned(), to.to_owned(), lab.name().to_owned());
    let started = Instant::now();
    thread::spawn(move || {
        let lab = palisade_lab::Lab::open(&name).unwrap();
        lab.probe(
            &place(&from),
            &place(&to),
            TCP,
            port,
            Duration::from_millis(PROBE_TIMEOUT_MS),
        )
    });
    started
}

/// Every record the server sends to a follower, with when it arrived.
fn follow(url: &str, token: &str, query: FlowQuery) -> mpsc::Receiver<(Instant, Value)> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let client = ServerProcess::client_of(url, token);
    thread::spawn(move || {
        block_on(async move {
            let mut stream = client.follow_flows(&query).await.unwrap();
            let _ = ready_tx.send(());
            while let Some(Ok(record)) = stream.next().await {
                let value = serde_json::to_value(record).unwrap();
                if tx.send((Instant::now(), value)).is_err() {
                    return;
                }
            }
        })
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the follow stream opened");
    rx
}

fn is_deny_web_to_db(r: &Value) -> bool {
    r["event"]["action"] == "packet-denied"
        && r["palisade"]["source"]["endpoint"] == "acme:web-1"
        && r["palisade"]["destination"]["endpoint"] == "acme:db-1"
        && r["destination"]["port"] == 5432
}

#[test]
fn a_blocked_probe_is_in_palisade_flows_and_the_flow_log_with_its_rule_within_a_second() {
    let (lab, server, agents) = setup("vis-deny", &[]);
    // Flows are decided, logged and counted where they start: web-1's node.
    let agent = agents.of_endpoint(&lab, "acme:web-1");
    let followed = follow(
        &server.url,
        ADMIN,
        FlowQuery {
            tenant: Some("acme".into()),
            ..FlowQuery::default()
        },
    );

    let started = probe_in_background(&lab, "acme:web-1", "acme:db-1", 5432);
    let logged = agent
        .wait_flow(Duration::from_secs(5), is_deny_web_to_db)
        .unwrap_or_else(|| panic!("no denied record in the flow log:\n{:?}", agent.flows()));
    let in_log = started.elapsed();
    let (arrived, pushed) = loop {
        let (at, record) = followed
            .recv_timeout(Duration::from_secs(5))
            .expect("the denied flow reaches the server's followers");
        if is_deny_web_to_db(&record) {
            break (at, record);
        }
    };
    let at_server = arrived - started;
    assert!(
        in_log < VISIBLE_WITHIN && at_server < VISIBLE_WITHIN,
        "the blocked probe took {in_log:?} to the flow log and {at_server:?} to `palisade flows`"
    );
    eprintln!("blocked probe visible: flow log {in_log:?}, palisade flows {at_server:?}");

    // The rule that blocked it, in both: web's egress policy covers web and
    // allows only app:8080, so the default tier's default denies.
    for record in [&logged, &pushed] {
        assert_eq!(
            record["rule"]["name"],
            "default deny of tier default (egress)"
        );
        assert_eq!(record["rule"]["ruleset"], "default");
        assert_eq!(record["network"]["direction"], "egress");
        assert_eq!(record["event"]["reason"], "POLICY_DENIED");
        assert_eq!(record["palisade"]["tenant"], "acme");
        assert_eq!(record["palisade"]["node"], "node-1");
    }
    assert_eq!(
        logged["palisade"]["attribution"],
        json!({"kind": "tier_default", "tier": "default", "tenant": "acme", "direction": "egress"})
    );
    // The server keeps every field the agent sends.
    let raw = http_get_with(
        &format!("{}/api/v1/flows?tenant=acme&verdict=deny", server.url),
        Some(ADMIN),
    );
    let stored: Vec<Value> = raw
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored = stored
        .iter()
        .find(|r| is_deny_web_to_db(r))
        .unwrap_or_else(|| panic!("not on the server: {raw}"));
    assert_eq!(
        stored["palisade"]["attribution"],
        logged["palisade"]["attribution"]
    );
    assert_eq!(stored["ecs"], logged["ecs"]);

    // `palisade flows` prints it with its rule.
    let (ok, out, err) = run_palisade(&[
        "flows",
        "--server",
        &server.url,
        "--token",
        ADMIN,
        "--verdict",
        "deny",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("DENY acme:web-1 → acme:db-1 tcp/5432 default deny of tier default (egress)"),
        "{out}"
    );
}

/// ECS fields the records use, with their types; everything else must be
/// under `palisade.`.
fn ecs_type(field: &str) -> Option<&'static str> {
    Some(match field {
        "@timestamp" | "event.start" | "event.end" => "date",
        "ecs.version"
        | "event.kind"
        | "event.action"
        | "event.outcome"
        | "event.reason"
        | "network.transport"
        | "network.iana_number"
        | "network.direction"
        | "rule.name"
        | "rule.ruleset" => "keyword",
        "event.category" | "event.type" => "keyword[]",
        "source.ip" | "destination.ip" => "ip",
        "source.port" | "destination.port" => "port",
        "source.packets" | "source.bytes" | "destination.packets" | "destination.bytes" => "long",
        _ => return None,
    })
}

/// Every leaf of a record as (dotted name, value).
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(&name, child, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// What is wrong with a record's field names and types.
fn ecs_problems(record: &Value) -> Vec<String> {
    let mut fields = Vec::new();
    leaves("", record, &mut fields);
    let mut problems = Vec::new();
    for (name, value) in fields {
        if name.starts_with("palisade.") {
            // Our own: numbers where they count, strings or booleans else.
            let numeric = [
                "identity",
                "count",
                "suppressed",
                "packets",
                "bytes",
                "index",
            ];
            let last = name.rsplit('.').next().unwrap();
            if numeric.contains(&last) && !value.is_u64() {
                problems.push(format!("{name} = {value} is not a number"));
            }
            continue;
        }
        let ok = match ecs_type(&name) {
            None => {
                problems.push(format!(
                    "{name} is neither an ECS field nor under palisade."
                ));
                continue;
            }
            Some("date") => value
                .as_str()
                .is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
            Some("keyword") => value.is_string(),
            Some("keyword[]") => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            Some("ip") => value.as_str().is_some_and(|t| t.parse::<IpAddr>().is_ok()),
            Some("port") => value.as_u64().is_some_and(|p| p <= 65535),
            Some("long") => value.is_u64(),
            Some(other) => unreachable!("{other}"),
        };
        if !ok {
            problems.push(format!(
                "{name} = {value} is not a valid {:?}",
                ecs_type(&name)
            ));
        }
    }
    problems
}

#[test]
fn audit_would_deny_is_reported_as_such_records_are_ecs_and_tenants_see_only_their_own() {
    let (lab, server, agents) = setup("vis-audit", &[]);
    // Flows are decided, logged and counted where they start: web-1's node.
    let agent = agents.of_endpoint(&lab, "acme:web-1");

    // World -> web 443: allowed, and the audit policy web-lockdown would deny it.
    lab.forget_gateway("acme:web-1");
    assert!(lab
        .probe("world:acme@node-1", "acme:web-1", TCP, 443)
        .is_reachable());
    let audit = agent
        .wait_flow(Duration::from_secs(5), |r| {
            r["event"]["action"] == "audit-would-deny"
                && r["palisade"]["destination"]["endpoint"] == "acme:web-1"
        })
        .unwrap_or_else(|| panic!("no audit record:\n{:?}", agent.flows()));
    assert_eq!(audit["event"]["outcome"], "success", "the traffic passed");
    assert_eq!(audit["palisade"]["audit"]["would_deny"], true);
    assert_eq!(audit["palisade"]["audit"]["policy"], "web-lockdown");
    assert_eq!(
        audit["palisade"]["audit"]["rule"],
        "default/web-lockdown ingress rule 0 (deny)"
    );
    assert_eq!(audit["palisade"]["source"]["entity"], "world");
    let allowed = agent
        .wait_flow(Duration::from_secs(5), |r| {
            r["event"]["action"] == "connection-allowed"
                && r["palisade"]["destination"]["endpoint"] == "acme:web-1"
                && r["destination"]["port"] == 443
        })
        .expect("the connection itself is allowed");
    assert_eq!(
        allowed["rule"]["name"],
        "default/web ingress rule 0 (allow)"
    );

    // More kinds of records, in both tenants.
    for tenant in ["acme", "globex"] {
        let web = format!("{tenant}:web-1");
        lab.forget_gateway(&web);
        assert!(lab
            .probe(&web, &format!("{tenant}:app-1"), TCP, 8080)
            .is_reachable());
        assert_eq!(
            lab.probe(&web, &format!("{tenant}:db-1"), TCP, 5432),
            ProbeResult::Blocked
        );
    }
    lab.forget_gateway("acme:web-2");
    assert_eq!(
        lab.probe("acme:web-2", "acme:app-1", TCP, 8080),
        ProbeResult::Blocked,
        "quarantined"
    );
    let actions = |records: &[Value]| -> BTreeSet<String> {
        records
            .iter()
            .map(|r| r["event"]["action"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(5), || actions(&agent.flows()).len()
            >= 4),
        "{:?}",
        actions(&agent.flows())
    );

    // Every record of every node: ECS names and types, or palisade's own fields.
    let records: Vec<Value> = agents.all().iter().flat_map(|a| a.flows()).collect();
    for record in &records {
        let problems = ecs_problems(record);
        assert!(problems.is_empty(), "{record}:\n{}", problems.join("\n"));
        for required in [
            "@timestamp",
            "event",
            "source",
            "destination",
            "network",
            "palisade",
        ] {
            assert!(
                record.get(required).is_some(),
                "{required} missing in {record}"
            );
        }
    }
    // Every verdict names what decided it.
    for record in &records {
        let action = record["event"]["action"].as_str().unwrap();
        if action != "packet-denied" || record["event"]["reason"] == "POLICY_DENIED" {
            assert!(
                record["rule"]["name"].is_string() && record["palisade"]["attribution"].is_object(),
                "no attribution in {record}"
            );
        }
    }

    // In the CLI: the audit line; a tenant's token sees only its tenant.
    let flows = |token: &str, args: &[&str]| {
        let mut all = vec!["flows", "--server", &server.url, "--token", token];
        all.extend_from_slice(args);
        run_palisade(&all)
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            let (_, out, _) = flows(ADMIN, &[]);
            out.contains("globex:web-1") && out.contains("acme:web-2")
        }),
        "{}",
        flows(ADMIN, &[]).1
    );
    let (ok, out, err) = flows(ADMIN, &["--verdict", "audit"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("AUDIT would deny acme:198.51.100.1 → acme:web-1 tcp/443 by default/web-lockdown ingress rule 0"),
        "{out}"
    );
    let (ok, out, err) = flows(ACME, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("acme:web-1") && !out.contains("globex"),
        "{out}"
    );
    let (ok, out, err) = flows(GLOBEX, &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("globex:web-1") && !out.contains("acme"),
        "{out}"
    );
    let (ok, _, err) = flows(ACME, &["--tenant", "globex"]);
    assert!(
        !ok && err.contains("forbidden") && err.contains("globex"),
        "a tenant asking for another: {err}"
    );
}

#[test]
fn the_flow_log_rotates_by_size_and_keeps_the_configured_number_of_files() {
    let (lab, _server, agents) = setup(
        "vis-rotate",
        &["--flow-log-max-bytes", "3000", "--flow-log-keep", "3"],
    );
    let agent = agents.of_endpoint(&lab, "acme:web-1");
    // Each allowed connection is two records (allowed, closed) of ~1 kB.
    for _ in 0..20 {
        assert!(lab
            .probe("acme:web-1", "acme:app-1", TCP, 8080)
            .is_reachable());
    }
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(agent.work())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("flows.jsonl"))
            .collect();
        names.sort();
        names
    };
    agent.wait_metrics("40 records in rotated files", |t| {
        metric(t, "palisade_agent_flow_records_total").is_some_and(|n| n >= 40.0)
            && metric(t, "palisade_agent_flow_log_rotations_total").is_some_and(|n| n >= 5.0)
    });
    assert_eq!(names(), ["flows.jsonl", "flows.jsonl.1", "flows.jsonl.2"]);
    for name in names() {
        let path = agent.work().join(&name);
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 3000, "{name} has {len} bytes");
        for record in read_records(&path) {
            assert!(
                record["event"]["action"].is_string(),
                "{name}: whole records only"
            );
        }
    }
}

#[test]
fn a_flood_of_denied_packets_is_one_record_per_flow_and_interval_with_the_count() {
    let (lab, _server, agents) = setup("vis-flood", &[]);
    // Flows are decided, logged and counted where they start: web-1's node.
    let agent = agents.of_endpoint(&lab, "acme:web-1");
    let dropped = |text: &str| {
        must_metric(
            text,
            "palisade_agent_dropped_packets_total{reason=\"POLICY_DENIED\"}",
        )
    };
    // The gateway's address resolved, so that no datagram waits for ARP.
    lab.forget_gateway("acme:web-1");
    assert!(lab
        .probe("acme:web-1", "acme:app-1", TCP, 8080)
        .is_reachable());
    let before = dropped(&agent.metrics());
    // 200 datagrams, each from its own source port: 200 flows for the
    // datapath's rate limit, one flow (web-1 -> db-1 udp/5432) for a person.
    let target = SocketAddr::from((lab.ip("acme:db-1"), 5432));
    let sent = in_netns(&lab.netns("acme:web-1"), || {
        let sockets: Vec<UdpSocket> = (0..200)
            .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
            .collect();
        sockets
            .iter()
            .filter(|s| s.send_to(b"flood", target).is_ok())
            .count()
    });
    assert_eq!(sent, 200);
    let is_flood = |r: &Value| {
        r["event"]["action"] == "packet-denied"
            && r["network"]["transport"] == "udp"
            && r["destination"]["port"] == 5432
    };
    let counted = |records: &[Value]| -> u64 {
        records
            .iter()
            .filter(|r| is_flood(r))
            .map(|r| r["palisade"]["count"].as_u64().unwrap())
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(5), || counted(&agent.flows()) >= 200),
        "the aggregates count every packet: {} counted\n{:?}",
        counted(&agent.flows()),
        agent.flows()
    );
    let records: Vec<Value> = agent.flows().into_iter().filter(|r| is_flood(r)).collect();
    assert!(
        records.len() <= 3,
        "200 denied packets of one flow in about a second: {} records",
        records.len()
    );
    assert_eq!(counted(&records), 200);
    assert_eq!(
        records[0]["palisade"]["count"], 1,
        "the first goes out at once"
    );
    let last = records.last().unwrap();
    assert!(last["event"]["start"].is_string() && last["event"]["end"].is_string());
    assert_eq!(
        last["palisade"]["suppressed"].as_u64().unwrap() + 1,
        last["palisade"]["count"].as_u64().unwrap()
    );
    let text = agent.wait_metrics("the drops", |t| dropped(t) >= before + 200.0);
    assert!(must_metric(&text, "palisade_agent_flow_records_aggregated_total") >= 198.0);
}

#[test]
fn metrics_move_with_the_traffic_and_show_a_map_filling_up() {
    let (lab, server, agents) = setup("vis-metrics", &[]);
    // Flows are decided, logged and counted where they start: web-1's node.
    let agent = agents.of_endpoint(&lab, "acme:web-1");
    let app_rule = "palisade_agent_rule_packets_total{tenant=\"acme\",tier=\"default\",policy=\"app\",direction=\"ingress\",rule=\"0\",action=\"allow\"}";
    let app_bytes = app_rule.replace("rule_packets", "rule_bytes");
    let quarantine = "palisade_agent_rule_packets_total{tenant=\"acme\",tier=\"security\",policy=\"quarantine\",direction=\"ingress\",rule=\"0\",action=\"deny\"}";
    let web_default = "palisade_agent_rule_packets_total{tenant=\"acme\",tier=\"default\",policy=\"\",direction=\"egress\",rule=\"tier-default\",action=\"deny\"}";
    let denied = "palisade_agent_dropped_packets_total{reason=\"POLICY_DENIED\"}";
    let allow = "palisade_agent_packets_total{verdict=\"allow\"}";

    let before = agent.wait_metrics("the first sample", |t| metric(t, app_rule).is_some());
    assert_eq!(
        must_metric(&before, quarantine),
        0.0,
        "a rule that never matched is listed with 0"
    );
    for series in [
        "palisade_agent_server_connected 1",
        "palisade_agent_build_info{node=\"node-1\"",
    ] {
        assert!(before.contains(series), "{series}:\n{before}");
    }
    assert!(must_metric(&before, "palisade_agent_reconcile_duration_seconds_count") >= 1.0);
    let propagated_before = must_metric(&before, "palisade_agent_propagation_seconds_count");
    assert_eq!(
        must_metric(&before, "palisade_agent_map_capacity{map=\"POLICY\"}"),
        262_144.0
    );

    for _ in 0..5 {
        assert!(lab
            .probe("acme:web-1", "acme:app-1", TCP, 8080)
            .is_reachable());
    }
    for _ in 0..3 {
        assert_eq!(
            lab.probe("acme:web-1", "acme:db-1", TCP, 5432),
            ProbeResult::Blocked
        );
    }
    let after = agent.wait_metrics("the traffic", |t| {
        metric(t, app_rule) == Some(must_metric(&before, app_rule) + 5.0)
            && metric(t, denied).is_some_and(|d| d >= must_metric(&before, denied) + 3.0)
    });
    assert!(must_metric(&after, &app_bytes) > must_metric(&before, &app_bytes));
    assert!(must_metric(&after, web_default) >= must_metric(&before, web_default) + 3.0);
    assert!(
        must_metric(&after, allow) >= must_metric(&before, allow) + 10.0,
        "both sides' rules decided each allowed connection"
    );
    assert_eq!(must_metric(&after, quarantine), 0.0);
    agent.wait_metrics("tracked connections", |t| {
        metric(t, "palisade_agent_conntrack_entries").is_some_and(|n| n >= 5.0)
            && metric(t, "palisade_agent_map_entries{map=\"CT\"}").is_some_and(|n| n >= 5.0)
    });

    // A policy of 300 CIDR peers fills POLICY and IPCACHE.
    let policy_entries = |t: &str| must_metric(t, "palisade_agent_map_entries{map=\"POLICY\"}");
    let ipcache_entries = |t: &str| must_metric(t, "palisade_agent_map_entries{map=\"IPCACHE\"}");
    let mut big = String::from(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: partners, tenant: acme}\nspec:\n  selector: app == 'db'\n  ingress:\n",
    );
    for i in 0..300 {
        big.push_str(&format!(
            "    - {{action: allow, from: [{{cidr: 192.0.{}.{}/32}}], ports: [{{protocol: TCP, port: 5432}}]}}\n",
            i / 250 + 2,
            i % 250 + 1
        ));
    }
    let applied = apply_yaml(&server.client(ADMIN), &big);
    agents.wait_applied(applied.revision);
    let filled = agent.wait_metrics("the bigger maps", |t| {
        policy_entries(t) >= policy_entries(&after) + 300.0
            && ipcache_entries(t) >= ipcache_entries(&after) + 300.0
    });
    assert!(
        must_metric(&filled, "palisade_agent_map_entries{map=\"POLICY\"}")
            <= must_metric(&filled, "palisade_agent_map_capacity{map=\"POLICY\"}")
    );
    assert_eq!(
        metric(&filled, "palisade_agent_watch_lag_revisions"),
        Some(0.0)
    );
    // Applied while the agent ran: measured from the server's commit.
    let propagations = must_metric(&filled, "palisade_agent_propagation_seconds_count");
    assert!(propagations > propagated_before, "{filled}");
    let status = agent.status().unwrap();
    let last = status.last_reconcile.unwrap();
    eprintln!(
        "300 CIDR rules: reconcile {:.1} ms, propagation {:.1} ms (server commit -> kernel)",
        last.duration_ms,
        last.propagation_ms.unwrap_or(f64::NAN)
    );
}
