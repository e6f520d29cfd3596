//! Test harness: servers in this process on loopback over real redb files
//! (or a real etcd), clients with tokens, and resource documents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_client::{Client, ClientConfig, ClientError};
use palisade_server::{token_hash, Server, ServerConfig};
use palisade_store::StoreSpec;
use serde_json::{json, Value};
use tempfile::TempDir;

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Tokens every test server with auth knows: token → (subject, role).
pub const TOKENS: [(&str, &str, &str); 5] = [
    ("admin-token-1", "alice", "admin"),
    ("acme-token-1", "bob", "tenant:acme"),
    ("globex-token-1", "carol", "tenant:globex"),
    ("agent-n1-token", "agent-n1", "agent:n1"),
    ("agent-n2-token", "agent-n2", "agent:n2"),
];

/// Writes the tokens file for [`TOKENS`].
pub fn write_tokens(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.yaml");
    let text: String = TOKENS
        .iter()
        .map(|(token, subject, role)| {
            format!(
                "- {{sha256: {}, subject: {subject}, role: '{role}'}}\n",
                token_hash(token)
            )
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A server on an embedded store in a temporary directory; the directory
/// outlives restarts of the server.
pub struct TestServer {
    pub dir: TempDir,
    pub server: Option<Server>,
    pub auth: bool,
}

impl TestServer {
    /// A server without tokens.
    pub async fn open() -> TestServer {
        TestServer::start_with(false, |_| {}).await
    }

    /// A server with [`TOKENS`].
    pub async fn with_auth() -> TestServer {
        TestServer::start_with(true, |_| {}).await
    }

    pub async fn start_with(auth: bool, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        init_logging();
        let dir = tempfile::Builder::new()
            .prefix("palisade-server-test-")
            .tempdir()
            .unwrap();
        let mut t = TestServer {
            dir,
            server: None,
            auth,
        };
        t.start(adjust).await;
        t
    }

    pub fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            StoreSpec::Embedded(self.dir.path().join("store.redb")),
        );
        config.heartbeat = Duration::from_millis(300);
        if self.auth {
            config.tokens = Some(write_tokens(self.dir.path()));
        }
        config
    }

    pub async fn start(&mut self, adjust: impl FnOnce(&mut ServerConfig)) {
        let mut config = self.config();
        adjust(&mut config);
        self.server = Some(Server::start(config).await.expect("server starts"));
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("running").url()
    }

    /// A client with a token (`None`: no token).
    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&ClientConfig::for_server(&self.url(), token)).unwrap()
    }

    /// The admin's client (or an anonymous one on an open server).
    pub fn admin(&self) -> Client {
        self.client(self.auth.then_some("admin-token-1"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the server's store releases the file; tasks end with the runtime.
        self.server.take();
    }
}

pub fn tenant(name: &str) -> Value {
    json!({"apiVersion": "palisade.dev/v1", "kind": "Tenant", "metadata": {"name": name}})
}

pub fn tier(name: &str, order: i64) -> Value {
    json!({"apiVersion": "palisade.dev/v1", "kind": "Tier", "metadata": {"name": name}, "spec": {"order": order}})
}

pub fn endpoint(tenant: &str, name: &str, app: &str, node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "palisade.dev/v1", "kind": "Endpoint",
        "metadata": {"name": name, "tenant": tenant, "labels": {"app": app}},
        "spec": {"node": node, "ips": [ip]}
    })
}

pub fn policy(tenant: &str, name: &str, selector: &str, from: &str, port: u16) -> Value {
    json!({
        "apiVersion": "palisade.dev/v1", "kind": "Policy",
        "metadata": {"name": name, "tenant": tenant},
        "spec": {"selector": selector, "ingress": [
            {"action": "allow", "from": [{"selector": from}], "ports": [{"protocol": "TCP", "port": port}]}
        ]}
    })
}

/// Two tenants with a web and a db endpoint each, on nodes n1 and n2, and a
/// policy in acme.
pub fn two_tenants() -> Vec<Value> {
    vec![
        tenant("acme"),
        tenant("globex"),
        endpoint("acme", "web-1", "web", "n1", "10.0.0.1"),
        endpoint("acme", "db-1", "db", "n1", "10.0.0.2"),
        endpoint("globex", "web-1", "web", "n2", "10.0.0.1"),
        policy("acme", "db-ingress", "app == 'db'", "app == 'web'", 5432),
    ]
}

/// The status of an API error, panicking on success.
pub fn status_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, ClientError) {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => (e.status().unwrap_or(0), e),
    }
}

/// The names of a list's items.
pub fn names(items: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = items
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            match m["tenant"].as_str() {
                Some(t) => format!("{t}/{}", m["name"].as_str().unwrap()),
                None => m["name"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    out.sort();
    out
}

/// Waits until the server's fan-out has seen revision `revision` (it
/// follows the store a moment after a write is acknowledged).
pub async fn settle(client: &Client, revision: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.status().await.expect("status").revision < revision {
        assert!(
            std::time::Instant::now() < deadline,
            "the fan-out did not reach revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
