//! The web UI in a real browser: a server with tokens and examples/three-tier,
//! headless Chromium (Debian's `/usr/bin/chromium`) driven by
//! `ui/tests/map.browser.mjs` through playwright-core. The user pastes a
//! tenant token, the map shows the groups and the policy edges, a denied
//! flow appears in red after it happens, clicking its edge names the rule
//! that denied it, and "explain" asks the server. A screenshot is saved to
//! `<target>/ui-screenshot.png`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_client::visibility::{CounterReport, FlowRecord, RuleCounter};
use palisade_model::{Action, Direction};
use palisade_policy::Attribution;
use serde_json::json;

use crate::common::*;
use crate::visibility::{apply_three_tier, flow};

const CHROMIUM: &str = "/usr/bin/chromium";

/// The denied flow the page must show.
struct ExpectedDeny {
    /// The id of the map's observed-denied edge between the two groups.
    denied_edge: String,
    /// The rule the flow record names.
    rule: String,
    /// What the server's explain answers for it.
    explain: String,
    /// A rule the agents counted one packet for.
    hit_rule: String,
}

/// THE FLOW SOURCE of this test. Today a stand-in for agents: it posts
/// records through the agents' flows and counters API exactly as an agent
/// would (node-1's token). Switch it to a lab with real agents (`palisade
/// lab up` + agents on examples/three-tier, probes web-1 -> app-1:8080 and
/// the blocked web-1 -> db-1:5432) and keep the rest of the test.
async fn stand_in_agent_traffic(t: &TestServer) -> ExpectedDeny {
    let agent = t.client(Some("agent-node-1-token"));
    let mut world = flow(
        "acme",
        "connection-allowed",
        "",
        "web-1",
        443,
        "default/web ingress rule 0",
    );
    world["palisade"]["source"] = json!({});
    world["source"]["ip"] = "198.51.100.1".into();
    let mut audit = world.clone();
    audit["event"]["action"] = "audit-would-deny".into();
    audit["palisade"]["audit"] = json!({"rule": "default/web-lockdown ingress rule 0"});
    let mut denied = flow(
        "acme",
        "packet-denied",
        "web-1",
        "db-1",
        5432,
        "default deny of tier default (egress)",
    );
    denied["network"]["direction"] = "egress".into();
    denied["event"]["reason"] = "POLICY_DENIED".into();
    let values = [
        flow(
            "acme",
            "connection-allowed",
            "web-1",
            "app-1",
            8080,
            "default/app ingress rule 0",
        ),
        flow(
            "acme",
            "connection-allowed",
            "app-1",
            "db-1",
            5432,
            "default/db ingress rule 0",
        ),
        world,
        audit,
        flow(
            "acme",
            "packet-denied",
            "web-2",
            "app-1",
            8080,
            "security/quarantine ingress rule 0",
        ),
        // Another tenant's flow: the acme user must never see it.
        flow(
            "globex",
            "packet-denied",
            "web-1",
            "db-1",
            5432,
            "default deny of tenant globex",
        ),
        denied,
    ];
    let records: Vec<FlowRecord> = values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    agent.post_flows("node-1", &records).await.unwrap();
    let rule = |policy: &str, tier: &str, direction, action| Attribution::Rule {
        tier: tier.into(),
        tenant: "acme".into(),
        policy: policy.into(),
        direction,
        index: 0,
        action,
    };
    let counters = vec![
        (rule("app", "default", Direction::Ingress, Action::Allow), 1),
        (rule("db", "default", Direction::Ingress, Action::Allow), 1),
        (rule("web", "default", Direction::Ingress, Action::Allow), 1),
        (
            rule("quarantine", "security", Direction::Ingress, Action::Deny),
            1,
        ),
        (
            Attribution::TierDefault {
                tier: "default".into(),
                tenant: "acme".into(),
                direction: Direction::Egress,
            },
            1,
        ),
    ];
    let report = CounterReport {
        counters: counters
            .into_iter()
            .map(|(attribution, packets)| RuleCounter {
                attribution,
                packets,
                bytes: packets * 74,
            })
            .collect(),
    };
    agent.put_counters("node-1", &report).await.unwrap();
    ExpectedDeny {
        denied_edge: "flow:deny:app=web->app=db".into(),
        rule: "default deny of tier default (egress)".into(),
        explain: "DENY acme:web-1 -> acme:db-1 tcp/5432: default deny of tier default".into(),
        hit_rule: "default/app ingress rule 0".into(),
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .unwrap()
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    std::fs::create_dir_all(&target).unwrap();
    target.join("ui-screenshot.png")
}

#[tokio::test]
async fn the_map_shows_groups_and_a_denied_flow_with_its_rule() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (make deps does)"
    );
    let ui = workspace().join("ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "ui/node_modules has no playwright-core: run `npm ci` in ui/ (building the server does)"
    );
    let t = TestServer::start_with(true, |c| {
        c.tokens = Some(write_browser_tokens(c.tokens.as_deref().unwrap()));
    })
    .await;
    apply_three_tier(&t.admin()).await;
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);

    let mut child = Command::new("node")
        .arg("tests/map.browser.mjs")
        .current_dir(&ui)
        .env("PALISADE_URL", t.url())
        .env("PALISADE_TOKEN", "acme-token-1")
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (Node.js must be installed)");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // The script's lines, read on a thread: the server runs on this runtime.
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines_rx.recv().await {
            log.push(line.clone());
            if line == "READY" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    if ready {
        let expected = stand_in_agent_traffic(&t).await;
        let line = json!({
            "deniedEdge": expected.denied_edge,
            "rule": expected.rule,
            "explain": expected.explain,
            "hitRule": expected.hit_rule,
        });
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    while let Ok(line) = lines_rx.try_recv() {
        log.push(line);
    }
    let report = format!(
        "browser test log:\n{}\n{}",
        log.join("\n"),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(ready, "the map never showed the groups\n{report}");
    assert!(status.status.success(), "{report}");
    let png = std::fs::read(&screenshot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "no screenshot at {}\n{report}",
        screenshot.display()
    );
    eprintln!("{report}\nscreenshot: {}", screenshot.display());
}

/// The test tokens plus node-1's agent (the node of examples/three-tier).
fn write_browser_tokens(tokens: &std::path::Path) -> PathBuf {
    let mut text = std::fs::read_to_string(tokens).unwrap();
    text.push_str(&format!(
        "- {{sha256: {}, subject: agent-node-1, role: 'agent:node-1'}}\n",
        palisade_server::token_hash("agent-node-1-token")
    ));
    std::fs::write(tokens, text).unwrap();
    tokens.to_path_buf()
}
