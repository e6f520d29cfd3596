//! The web UI in a real browser over real traffic: a server with tokens
//! holding examples/three-tier, a lab of it with every node's agent
//! following the server, and headless Chromium (Debian's `/usr/bin/chromium`) driven
//! by `ui/tests/map.browser.mjs` through playwright-core. The user pastes a
//! tenant token; the map shows the groups and the policy edges; then real
//! probes run in the lab (allowed, blocked, audited, quarantined, and one in
//! the other tenant), the agent pushes their records and rule counters, and
//! the page must draw the blocked flow in red, name the rule that blocked
//! it when its edge is clicked, answer "explain" from the server, show the
//! counted rule hits, and never show the other tenant. A screenshot is saved
//! to `<target>/ui-screenshot.png` (`docs/img/map.png` is one).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_client::visibility::FlowQuery;
use palisade_lab::ProbeResult;
use palisade_model::Protocol;
use serde_json::json;

use crate::server_support::*;
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const TCP: Protocol = Protocol::Tcp;

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target"));
    std::fs::create_dir_all(&target).unwrap();
    target.join("ui-screenshot.png")
}

/// The traffic the page must show, made with real packets; returns the
/// line that tells the script what to expect.
fn real_traffic(lab: &TestLab, server: &ServerProcess) -> serde_json::Value {
    lab.forget_gateway("acme:web-1");
    assert!(lab
        .probe("acme:web-1", "acme:app-1", TCP, 8080)
        .is_reachable());
    assert_eq!(
        lab.probe("acme:web-1", "acme:db-1", TCP, 5432),
        ProbeResult::Blocked
    );
    assert!(lab
        .probe("world:acme@node-1", "acme:web-1", TCP, 443)
        .is_reachable());
    lab.forget_gateway("acme:web-2");
    assert_eq!(
        lab.probe("acme:web-2", "acme:app-1", TCP, 8080),
        ProbeResult::Blocked
    );
    // The other tenant's blocked flow: the acme user must never see it.
    lab.forget_gateway("globex:web-1");
    assert_eq!(
        lab.probe("globex:web-1", "globex:db-1", TCP, 5432),
        ProbeResult::Blocked
    );

    // The agent's records and counters are on the server before the page
    // is told to look.
    let admin = server.client(ADMIN);
    let denied = eventually(Duration::from_secs(10), || {
        block_on(admin.flows(&FlowQuery {
            tenant: Some("acme".into()),
            ..FlowQuery::default()
        }))
        .unwrap()
        .iter()
        .any(|r| {
            r.event.action.as_str() == "packet-denied"
                && r.destination_endpoint().as_deref() == Some("acme:db-1")
        })
    });
    assert!(denied, "the blocked flow never reached the server");
    // The world's connection to web-1 was decided once, on web-1's node
    // (traffic between nodes is decided at both ends: zero trust).
    let counted = eventually(Duration::from_secs(20), || {
        block_on(admin.rule_hits("acme"))
            .unwrap()
            .rules
            .iter()
            .any(|r| r.text == "default/web ingress rule 0" && r.packets == 1)
    });
    assert!(
        counted,
        "the agent's rule counters never reached the server"
    );
    json!({
        "deniedEdge": "flow:deny:app=web->app=db",
        "rule": "default deny of tier default (egress)",
        "explain": "DENY acme:web-1 -> acme:db-1 tcp/5432: default deny of tier default",
        "hitRule": "default/web ingress rule 0",
    })
}

#[test]
fn the_map_shows_real_flows_and_names_the_rule_that_blocked_one() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (make deps does)"
    );
    let ui = repo("ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "ui/node_modules has no playwright-core: run `npm ci` in ui/ (building the server does)"
    );
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("browser", &example);
    let server = ServerProcess::start(&node_names(&lab));
    let applied = apply_files(&server.client(ADMIN), &example);
    let agents = ServerAgents::start(&lab, &server.url, &[]);
    agents.wait_applied(applied.revision);
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);

    let mut child = Command::new("node")
        .arg("tests/map.browser.mjs")
        .current_dir(&ui)
        .env("PALISADE_URL", &server.url)
        .env("PALISADE_TOKEN", ACME)
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (Node.js must be installed)");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = Vec::new();
    let mut ready = false;
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) {
        log.push(line.clone());
        if line == "READY" {
            ready = true;
            break;
        }
    }
    if ready {
        let expected = real_traffic(&lab, &server);
        writeln!(stdin, "{expected}").unwrap();
    }
    drop(stdin);
    let status = child.wait_with_output().unwrap();
    log.extend(lines.try_iter());
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
