//! The built `palisade` binary against `palisade server` processes started
//! by the tests: apply/get/delete as a user types them, error messages,
//! config file contexts, tokens kept out of logs, and no acknowledged apply
//! lost when the server is killed with SIGKILL.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_client::{Client, ClientConfig};
use serde_json::json;
use tempfile::TempDir;

const PALISADE: &str = env!("CARGO_BIN_EXE_palisade");

/// A `palisade server` process, killed on drop.
struct ServerProcess {
    child: Child,
    url: String,
    log: PathBuf,
}

impl ServerProcess {
    fn start(dir: &Path, extra: &[&str]) -> ServerProcess {
        let store = dir.join("store.redb");
        ServerProcess::start_on(&store, dir, "127.0.0.1:0", extra)
    }

    fn start_on(store: &Path, dir: &Path, listen: &str, extra: &[&str]) -> ServerProcess {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("server-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(PALISADE)
            .args(["server", "--listen", listen, "--store"])
            .arg(store)
            .args(extra)
            .env_remove("PALISADE_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start palisade server");
        let mut server = ServerProcess {
            child,
            url: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = server.log_text();
            if let Some(rest) = text.split("listening on ").nth(1) {
                server.url = rest.split_whitespace().next().unwrap().to_owned();
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("palisade server exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// SIGKILL, as a crash.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the graceful exit.
    fn stop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which is not reaped
        // yet (so the pid cannot have been reused).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("palisade-cli-test-")
        .tempdir()
        .unwrap()
}

/// Runs the binary with a clean environment for the client settings.
fn palisade(dir: &Path, args: &[&str]) -> Output {
    Command::new(PALISADE)
        .args(args)
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PALISADE_SERVER")
        .env_remove("PALISADE_TOKEN")
        .env_remove("PALISADE_CONFIG")
        .output()
        .expect("run palisade")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const TENANTS: &str = "\
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: acme}
---
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: globex}
";

fn endpoints_yaml() -> String {
    let mut out = String::new();
    for (tenant, name, app, ip) in [
        ("acme", "web-1", "web", "10.0.0.1"),
        ("acme", "db-1", "db", "10.0.0.2"),
        ("globex", "web-1", "web", "10.0.0.1"),
    ] {
        out.push_str(&format!(
            "---\napiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata:\n  name: {name}\n  tenant: {tenant}\n  labels: {{app: {app}}}\nspec:\n  node: n1\n  ips: [{ip}]\n"
        ));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn audit_len(url: &str) -> usize {
    let client = Client::new(&ClientConfig::for_server(url, None)).unwrap();
    runtime()
        .block_on(client.audit(None, None))
        .unwrap()
        .items
        .len()
}

#[test]
fn apply_with_a_local_error_names_file_line_col_and_sends_nothing() {
    let dir = tempdir();
    let server = ServerProcess::start(dir.path(), &[]);
    let files = dir.path().join("intent");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("tenants.yaml"), TENANTS).unwrap();
    std::fs::write(
        files.join("bad.yaml"),
        "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web-1, tenant: acme}\nspec:\n  node: n1\n  ipz: [10.0.0.1]\n",
    )
    .unwrap();
    let out = palisade(
        dir.path(),
        &[
            "apply",
            "-f",
            files.to_str().unwrap(),
            "--server",
            &server.url,
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.yaml:6:3"), "{stderr}");
    assert!(stderr.contains("did you mean 'ips'"), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert_eq!(audit_len(&server.url), 0, "the server received nothing");

    // A whole-intent error found by the server is placed in the file too.
    std::fs::write(
        files.join("bad.yaml"),
        "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web-1, tenant: acmee}\nspec:\n  node: n1\n  ips: [10.0.0.1]\n",
    )
    .unwrap();
    let out = palisade(
        dir.path(),
        &[
            "apply",
            "-f",
            files.to_str().unwrap(),
            "--server",
            &server.url,
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:1:1: Endpoint acmee/web-1: metadata.tenant"),
        "{stderr}"
    );
    assert_eq!(audit_len(&server.url), 0);
}

#[test]
fn get_prints_tables_and_conflicts_say_who_changed_what() {
    let dir = tempdir();
    let server = ServerProcess::start(dir.path(), &[]);
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, format!("{TENANTS}{}", endpoints_yaml())).unwrap();
    let url = server.url.as_str();
    let out = palisade(
        dir.path(),
        &["apply", "-f", path.to_str().unwrap(), "--server", url],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("endpoint/acme/web-1 created (version 1)"),
        "{stdout}"
    );

    let out = palisade(dir.path(), &["get", "ep", "--server", url]);
    let (stdout, _) = text(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["TENANT", "NAME", "NODE", "IPS", "VERSION"]
    );
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["acme", "db-1", "n1", "10.0.0.2", "1"]
    );

    let out = palisade(
        dir.path(),
        &[
            "get",
            "endpoints",
            "-l",
            "app == 'web'",
            "--tenant",
            "acme",
            "-o",
            "wide",
            "--server",
            url,
        ],
    );
    let (stdout, _) = text(&out);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("app=web"), "{stdout}");

    let out = palisade(
        dir.path(),
        &[
            "get",
            "endpoint",
            "acme/web-1",
            "-o",
            "json",
            "--server",
            url,
        ],
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["metadata"]["resourceVersion"], "1");

    // Someone else changes web-1; applying the old version is a conflict.
    let mut stale = doc.clone();
    let mut newer = doc.clone();
    newer["metadata"]["labels"] = json!({"app": "web", "v": "2"});
    let client = Client::new(&ClientConfig::for_server(url, None)).unwrap();
    let changed = runtime()
        .block_on(client.apply(vec![newer]))
        .unwrap()
        .revision;
    stale["spec"]["ips"] = json!(["10.0.0.9"]);
    let stale_path = dir.path().join("stale.json");
    std::fs::write(&stale_path, serde_json::to_string(&stale).unwrap()).unwrap();
    let out = palisade(
        dir.path(),
        &["apply", "-f", stale_path.to_str().unwrap(), "--server", url],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("Endpoint acme/web-1 was changed by anonymous since you read it: its current version is {changed}")),
        "{stderr}"
    );
    assert!(stderr.contains("palisade get"), "{stderr}");
    assert!(!stderr.contains("HTTP"), "no HTTP dump: {stderr}");

    // Delete with referrers names them; tiers table.
    let out = palisade(dir.path(), &["delete", "tenant", "acme", "--server", url]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("Endpoint acme/db-1"), "{stderr}");
    let out = palisade(
        dir.path(),
        &[
            "delete", "ep", "web-1", "--tenant", "globex", "--server", url,
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = palisade(
        dir.path(),
        &["get", "ep", "--tenant", "globex", "--server", url],
    );
    assert_eq!(text(&out).0, "");

    let out = palisade(dir.path(), &["status", "--server", url]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("auth:     disabled"), "{stdout}");
}

#[test]
fn config_file_contexts_flags_and_environment() {
    let dir = tempdir();
    let tokens = dir.path().join("tokens.yaml");
    let hash = |t: &str| palisade_server::token_hash(t);
    std::fs::write(
        &tokens,
        format!(
            "- {{sha256: {}, subject: alice, role: admin}}\n- {{sha256: {}, subject: bob, role: 'tenant:acme'}}\n",
            hash("admin-secret-xyz"),
            hash("bob-secret-xyz")
        ),
    )
    .unwrap();
    let server = ServerProcess::start(dir.path(), &["--tokens", tokens.to_str().unwrap()]);
    let config_dir = dir.path().join(".config/palisade");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(dir.path().join("bob.token"), "bob-secret-xyz\n").unwrap();
    std::fs::write(
        config_dir.join("config.yaml"),
        format!(
            "current-context: admin\ncontexts:\n  - name: admin\n    server: {url}\n    token: admin-secret-xyz\n  - name: bob\n    server: {url}\n    token-file: ~/bob.token\n  - name: dead\n    server: http://127.0.0.1:1\n",
            url = server.url
        ),
    )
    .unwrap();

    // current-context: the admin.
    let out = palisade(dir.path(), &["status"]);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("you:      alice (admin)"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("auth:     enabled"), "{stdout}");
    // --context picks another; its token comes from its token-file.
    let out = palisade(dir.path(), &["status", "--context", "bob"]);
    assert!(
        text(&out).0.contains("bob (tenant:acme)"),
        "{:?}",
        text(&out)
    );
    // A flag beats the context.
    let out = palisade(dir.path(), &["status", "--token", "bob-secret-xyz"]);
    assert!(text(&out).0.contains("bob (tenant:acme)"));
    // The environment beats the context too.
    let out = Command::new(PALISADE)
        .args(["status", "--context", "dead"])
        .env("HOME", dir.path())
        .env("PALISADE_SERVER", &server.url)
        .env("PALISADE_TOKEN", "admin-secret-xyz")
        .output()
        .unwrap();
    assert!(text(&out).0.contains("alice (admin)"), "{:?}", text(&out));
    // A refused connection names the URL and what to do.
    let out = palisade(dir.path(), &["status", "--context", "dead"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("http://127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("palisade server"), "{stderr}");
    // An unknown context lists the known ones.
    let out = palisade(dir.path(), &["status", "--context", "nope"]);
    assert!(
        text(&out).1.contains("known contexts: admin, bob, dead"),
        "{:?}",
        text(&out)
    );
    // A tenant token cannot write tiers: the message names the role needed.
    let tier = dir.path().join("tier.yaml");
    std::fs::write(
        &tier,
        "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1}\n",
    )
    .unwrap();
    let out = palisade(
        dir.path(),
        &["apply", "-f", tier.to_str().unwrap(), "--context", "bob"],
    );
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("forbidden") && stderr.contains("needs role admin"),
        "{stderr}"
    );
}

#[test]
fn tokens_never_appear_in_the_server_log() {
    let dir = tempdir();
    let tokens = dir.path().join("tokens.yaml");
    let secret = "very-secret-token-4711";
    std::fs::write(
        &tokens,
        format!(
            "- {{sha256: {}, subject: alice, role: admin}}\n",
            palisade_server::token_hash(secret)
        ),
    )
    .unwrap();
    let server = {
        // Debug logging: everything the server logs about requests.
        let log = dir.path().join("debug.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(PALISADE)
            .args(["-vv", "server", "--listen", "127.0.0.1:0", "--store"])
            .arg(dir.path().join("s.redb"))
            .args(["--tokens", tokens.to_str().unwrap()])
            .env("PALISADE_LOG", "trace")
            .stderr(file)
            .spawn()
            .unwrap();
        let mut server = ServerProcess {
            child,
            url: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.log_text().contains("listening on ") {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = server.log_text();
        let rest = text.split("listening on ").nth(1).unwrap();
        server.url = rest.split_whitespace().next().unwrap().to_owned();
        server
    };
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, TENANTS).unwrap();
    for token in [secret, "wrong-token-0815"] {
        palisade(
            dir.path(),
            &[
                "apply",
                "-f",
                path.to_str().unwrap(),
                "--server",
                &server.url,
                "--token",
                token,
            ],
        );
        palisade(
            dir.path(),
            &["get", "tenants", "--server", &server.url, "--token", token],
        );
    }
    let mut server = server;
    server.stop();
    let log = server.log_text();
    assert!(
        log.contains("intent changed"),
        "the log has the requests:\n{log}"
    );
    assert!(!log.contains(secret), "the token leaked into the log");
    assert!(
        !log.contains("wrong-token-0815"),
        "a wrong token leaked into the log"
    );
}

#[test]
fn no_acknowledged_apply_is_lost_when_the_server_is_killed() {
    let dir = tempdir();
    let store = dir.path().join("store.redb");
    let rt = runtime();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut n = 0;
    for round in 0..3 {
        let mut server = ServerProcess::start_on(&store, dir.path(), "127.0.0.1:0", &[]);
        let client = Client::new(&ClientConfig::for_server(&server.url, None)).unwrap();
        if round == 0 {
            rt.block_on(client.apply(vec![json!({"apiVersion": "palisade.dev/v1", "kind": "Tenant", "metadata": {"name": "acme"}})]))
                .unwrap();
        }
        // Everything acknowledged before is there after the restart.
        let listed = rt
            .block_on(client.list(palisade_model::Kind::Endpoint, &Default::default()))
            .unwrap();
        let names: std::collections::BTreeSet<String> = listed
            .items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        for name in &acknowledged {
            assert!(
                names.contains(name),
                "round {round}: acknowledged {name} is missing"
            );
        }
        // Applies in flight while the server is killed at a random moment.
        let kill_after = Duration::from_millis(150 + (round as u64 * 97) % 200);
        let start = Instant::now();
        let applies = rt.spawn({
            let client = client.clone();
            let first = n;
            async move {
                let mut done = Vec::new();
                for i in first..first + 10_000 {
                    let doc = json!({
                        "apiVersion": "palisade.dev/v1", "kind": "Endpoint",
                        "metadata": {"name": format!("e{i}"), "tenant": "acme", "labels": {"n": format!("{}", i % 7)}},
                        "spec": {"node": "n1", "ips": [format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)]}
                    });
                    match client.apply(vec![doc]).await {
                        Ok(_) => done.push(format!("e{i}")),
                        Err(_) => break,
                    }
                }
                done
            }
        });
        std::thread::sleep(kill_after.saturating_sub(start.elapsed()));
        server.kill9();
        let done = rt.block_on(applies).unwrap();
        assert!(
            !done.is_empty(),
            "round {round}: no apply was acknowledged before the kill"
        );
        n += done.len() + 1;
        acknowledged.extend(done);
    }
    let server = ServerProcess::start_on(&store, dir.path(), "127.0.0.1:0", &[]);
    let client = Client::new(&ClientConfig::for_server(&server.url, None)).unwrap();
    let listed = rt
        .block_on(client.list(palisade_model::Kind::Endpoint, &Default::default()))
        .unwrap();
    assert!(listed.items.len() >= acknowledged.len());
    let audit = rt.block_on(client.audit(None, None)).unwrap().items;
    assert!(
        audit.len() > acknowledged.len(),
        "every acknowledged apply has its audit record"
    );
}
