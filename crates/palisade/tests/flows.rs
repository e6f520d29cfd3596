//! `palisade flows` as a user types it, against a server in this process
//! that agents (here: their tokens) pushed flow records to: one line per
//! flow, filters, JSON output, --follow, and a tenant token that sees only
//! its tenant.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use palisade_client::visibility::FlowRecord;
use palisade_client::{Client, ClientConfig};
use palisade_server::{token_hash, Server, ServerConfig};
use palisade_store::StoreSpec;
use serde_json::json;
use tempfile::TempDir;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

struct Setup {
    /// The store, the tokens, and HOME of the CLI (no config file in it).
    dir: TempDir,
    server: Server,
}

async fn server() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("palisade-flows-cli-")
        .tempdir()
        .unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let entries = [
        ("cli-admin", "admin"),
        ("cli-acme", "tenant:acme"),
        ("cli-agent-n1", "agent:n1"),
    ];
    let text: String = entries
        .iter()
        .map(|(token, role)| {
            format!(
                "- {{sha256: {}, subject: {token}, role: '{role}'}}\n",
                token_hash(token)
            )
        })
        .collect();
    std::fs::write(&tokens, text).unwrap();
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        StoreSpec::Embedded(dir.path().join("store.redb")),
    );
    config.tokens = Some(tokens);
    let server = Server::start(config).await.unwrap();
    Setup { dir, server }
}

fn record(tenant: &str, action: &str, src: &str, dst: &str, port: u16, rule: &str) -> FlowRecord {
    serde_json::from_value(json!({
        "@timestamp": "2025-01-10T12:01:07.120Z",
        "event": {"action": action},
        "source": {"ip": "10.0.1.10", "port": 40000},
        "destination": {"ip": "10.0.3.10", "port": port},
        "network": {"transport": "tcp", "direction": "ingress"},
        "rule": {"name": rule},
        "palisade": {"tenant": tenant, "source": {"endpoint": src}, "destination": {"endpoint": dst},
                     "audit": {"rule": rule}}
    }))
    .unwrap()
}

async fn push(url: &str, records: &[FlowRecord]) {
    let agent = Client::new(&ClientConfig::for_server(url, Some("cli-agent-n1"))).unwrap();
    agent.post_flows("n1", records).await.unwrap();
}

/// Runs `palisade flows ARGS` with a token, off the async workers.
async fn flows(setup: &Setup, token: &str, args: &[&str]) -> Output {
    let url = setup.server.url();
    let mut command = Command::new(PALISADE);
    command
        .arg("flows")
        .args(args)
        .args(["--server", &url, "--token", token])
        .env_remove("PALISADE_SERVER")
        .env_remove("PALISADE_TOKEN")
        .env_remove("PALISADE_CONFIG")
        .env("HOME", setup.dir.path());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "palisade flows failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn flows_print_one_line_per_flow_and_tenants_see_only_their_own() {
    let setup = server().await;
    let url = setup.server.url();
    push(
        &url,
        &[
            record(
                "acme",
                "packet-denied",
                "web-1",
                "db-1",
                5432,
                "default deny of tenant acme",
            ),
            record(
                "acme",
                "audit-would-deny",
                "web-1",
                "web-2",
                443,
                "default/web-lockdown ingress rule 0",
            ),
            record(
                "globex",
                "packet-denied",
                "web-1",
                "db-1",
                5432,
                "default deny of tenant globex",
            ),
        ],
    )
    .await;

    let text = stdout(&flows(&setup, "cli-acme", &[]).await);
    assert_eq!(
        text,
        "12:01:07 DENY acme:web-1 → acme:db-1 tcp/5432 default deny of tenant acme\n\
         12:01:07 AUDIT would deny acme:web-1 → acme:web-2 tcp/443 by default/web-lockdown ingress rule 0\n"
    );
    // The admin sees every tenant; filters narrow it down.
    let all = stdout(&flows(&setup, "cli-admin", &[]).await);
    assert_eq!(all.lines().count(), 3);
    let globex = stdout(
        &flows(
            &setup,
            "cli-admin",
            &["--tenant", "globex", "--verdict", "deny"],
        )
        .await,
    );
    assert!(globex.contains("globex:web-1 → globex:db-1"), "{globex}");
    assert_eq!(globex.lines().count(), 1);
    let audits = stdout(&flows(&setup, "cli-admin", &["--verdict", "audit", "-o", "json"]).await);
    let parsed: Vec<FlowRecord> = audits
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].palisade.node.as_deref(), Some("n1"));

    // A tenant token asking for another tenant: refused, with the reason.
    let refused = flows(&setup, "cli-acme", &["--tenant", "globex"]).await;
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("tenant:acme") && err.contains("globex"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_prints_new_flows_as_they_arrive() {
    let setup = server().await;
    let url = setup.server.url();
    let mut child = Command::new(PALISADE)
        .args([
            "flows",
            "--follow",
            "--verdict",
            "deny",
            "--server",
            &url,
            "--token",
            "cli-acme",
        ])
        .env_remove("PALISADE_CONFIG")
        .env("HOME", setup.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Pushed after the follower connected (retried until it has): the
    // allowed flow and globex's are filtered out, the denied one arrives.
    let wanted =
        "12:01:07 DENY acme:web-2 → acme:app-1 tcp/8080 security/quarantine ingress rule 0";
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            push(
                &url,
                &[
                    record(
                        "acme",
                        "connection-allowed",
                        "web-1",
                        "app-1",
                        8080,
                        "default/app ingress rule 0",
                    ),
                    record(
                        "globex",
                        "packet-denied",
                        "web-2",
                        "app-1",
                        8080,
                        "security/quarantine ingress rule 0",
                    ),
                    record(
                        "acme",
                        "packet-denied",
                        "web-2",
                        "app-1",
                        8080,
                        "security/quarantine ingress rule 0",
                    ),
                ],
            )
            .await;
            if let Ok(Some(line)) =
                tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
            {
                return line;
            }
        }
    })
    .await
    .expect("palisade flows --follow printed the new flow");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line, wanted);
}
