//! Test support for agents that follow a control plane: a `palisade server`
//! process (so that it can be stopped, killed with SIGKILL and started
//! again on the same port and store) with tokens for an admin, each node's
//! agent and each tenant; `palisade agent --server` processes for the nodes
//! of a lab; their status files, flow logs and metrics. Every process is
//! killed on drop, also when the test panics.

use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use palisade_agent::{read_status, AgentStatus};
use palisade_client::api::ApplyResponse;
use palisade_client::{Client, ClientConfig};
use palisade_lab::agent_bpffs_dir;
use serde_json::Value;

use crate::support::*;

/// The admin's token.
pub const ADMIN: &str = "e2e-admin-token";
/// Tenant acme's token.
pub const ACME: &str = "e2e-acme-token";
/// Tenant globex's token.
pub const GLOBEX: &str = "e2e-globex-token";

/// The token of `node`'s agent (role `agent:<node>`).
pub fn agent_token(node: &str) -> String {
    format!("e2e-agent-{node}-token")
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A `palisade server` process on an embedded store in a temporary
/// directory, with tokens; killed on drop.
pub struct ServerProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its URL (the same across restarts).
    pub url: String,
    starts: u32,
}

impl ServerProcess {
    /// Starts a server on a free port of 127.0.0.1 whose tokens know the
    /// admin, the tenants acme and globex, and the agents of `nodes`.
    pub fn start<S: AsRef<str>>(nodes: &[S]) -> ServerProcess {
        let dir = tempfile::Builder::new()
            .prefix("palisade-e2e-server-")
            .tempdir()
            .unwrap();
        let mut entries = vec![
            (ADMIN.to_owned(), "admin".to_owned()),
            (ACME.to_owned(), "tenant:acme".to_owned()),
            (GLOBEX.to_owned(), "tenant:globex".to_owned()),
        ];
        for node in nodes {
            let node = node.as_ref();
            entries.push((agent_token(node), format!("agent:{node}")));
        }
        let text: String = entries
            .iter()
            .map(|(token, role)| {
                format!(
                    "- {{sha256: {}, subject: '{role}', role: '{role}'}}\n",
                    palisade_server::token_hash(token)
                )
            })
            .collect();
        fs::write(dir.path().join("tokens.yaml"), text).unwrap();
        let mut server = ServerProcess {
            child: None,
            dir,
            url: String::new(),
            starts: 0,
        };
        server.url = server.spawn("127.0.0.1:0");
        server
    }

    /// Starts the process listening on `listen`; returns its URL once it listens.
    fn spawn(&mut self, listen: &str) -> String {
        self.starts += 1;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        writeln!(log, "==== start {} on {listen} ====", self.starts).unwrap();
        let mut child = Command::new(palisade())
            .args(["-v", "server", "--listen", listen, "--store"])
            .arg(self.dir.path().join("store.redb"))
            .arg("--tokens")
            .arg(self.dir.path().join("tokens.yaml"))
            // Agents notice a silent server by its missing heartbeats.
            .args(["--heartbeat", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("palisade server listening on ") {
                    let url = url.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(url);
                }
                let _ = writeln!(log, "{line}");
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => panic!("the server did not listen within 30 s:\n{}", self.log()),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log (every run).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGTERM, and wait for it to exit (it closes its streams and store).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let exited = poll(Duration::from_secs(15), || child.try_wait().unwrap());
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not stop on SIGTERM:\n{}", self.log());
            }
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its port and store.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let listen = self.url.trim_start_matches("http://").to_owned();
        let url = self.spawn(&listen);
        assert_eq!(url, self.url);
    }

    /// Starts it on its store but another (free) port, where its agents do
    /// not look; returns that URL.
    pub fn start_elsewhere(&mut self) -> String {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn("127.0.0.1:0")
    }

    /// A client of `url` with `token`.
    pub fn client_of(url: &str, token: &str) -> Client {
        Client::new(&ClientConfig::for_server(url, Some(token))).unwrap()
    }

    /// A client of this server with `token`.
    pub fn client(&self, token: &str) -> Client {
        ServerProcess::client_of(&self.url, token)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

/// Applies resource files through the API (as `palisade apply` sends them).
pub fn apply_files(client: &Client, paths: &[PathBuf]) -> ApplyResponse {
    let docs = palisade_model::read_documents(paths, &Default::default())
        .unwrap_or_else(|d| panic!("invalid files:\n{d}"));
    let values = docs.into_iter().map(|d| d.value).collect();
    block_on(client.apply(values)).unwrap_or_else(|e| panic!("apply: {e}"))
}

/// Applies YAML documents through the API.
pub fn apply_yaml(client: &Client, yaml: &str) -> ApplyResponse {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resources.yaml");
    fs::write(&file, yaml).unwrap();
    apply_files(client, &[file])
}

/// The examples/three-tier files, one by one.
pub fn three_tier(files: &[&str]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| repo("examples/three-tier").join(f))
        .collect()
}

/// The names of a lab's nodes.
pub fn node_names(lab: &TestLab) -> Vec<String> {
    lab.lab.nodes().iter().map(|n| n.name.clone()).collect()
}

/// One `palisade agent --server` per node of a lab.
pub struct ServerAgents {
    agents: Vec<ServerAgent>,
}

impl ServerAgents {
    /// Starts every node's agent (see [`ServerAgent::start`]) with the
    /// lab's overlay: the node's underlay address and every other node's.
    pub fn start(lab: &TestLab, url: &str, extra: &[&str]) -> ServerAgents {
        ServerAgents {
            agents: node_names(lab)
                .iter()
                .map(|node| {
                    let mut args = lab.lab.overlay_args(node);
                    args.extend(extra.iter().map(|s| s.to_string()));
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    ServerAgent::start(lab, node, url, &args)
                })
                .collect(),
        }
    }

    /// Every agent.
    pub fn all(&self) -> &[ServerAgent] {
        &self.agents
    }

    /// The agent of the node where `endpoint` runs (which sees the flows
    /// that endpoint starts: they are decided at their source).
    pub fn of_endpoint(&self, lab: &TestLab, endpoint: &str) -> &ServerAgent {
        let node = &lab
            .lab
            .endpoint(endpoint)
            .unwrap_or_else(|| panic!("no endpoint {endpoint}"))
            .node;
        self.agents
            .iter()
            .find(|a| &a.node == node)
            .unwrap_or_else(|| panic!("no agent on {node}"))
    }

    /// Waits until every agent has server revision `revision` in the kernel.
    pub fn wait_applied(&self, revision: u64) {
        for agent in &self.agents {
            agent.wait_applied(revision);
        }
    }

    /// Waits until every agent's status satisfies `ok`.
    pub fn wait_status(&self, what: &str, timeout: Duration, ok: impl Fn(&AgentStatus) -> bool) {
        for agent in &self.agents {
            agent.wait_status(what, timeout, &ok);
        }
    }
}

/// A `palisade agent --server` process for one node of a lab; its state,
/// flow log and log in a temporary directory, its pins under the lab's
/// agent directory. Killed on drop.
pub struct ServerAgent {
    child: Option<Child>,
    work: tempfile::TempDir,
    /// The node.
    pub node: String,
}

impl ServerAgent {
    /// Starts the agent of `node` following `url` with its own token, with
    /// metrics on a free port and `extra` flags; waits for its first
    /// reconcile.
    pub fn start(lab: &TestLab, node: &str, url: &str, extra: &[&str]) -> ServerAgent {
        let work = tempfile::tempdir().unwrap();
        let netns = lab
            .lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .netns
            .clone();
        let bpffs = agent_bpffs_dir(lab.name(), node);
        let mut args: Vec<String> = vec![
            "-v".into(),
            "agent".into(),
            "--node".into(),
            node.into(),
            "--netns".into(),
            netns,
            "--server".into(),
            url.into(),
            "--bpffs".into(),
            bpffs.display().to_string(),
            "--state-dir".into(),
            work.path().join("state").display().to_string(),
            "--flow-log".into(),
            work.path().join("flows.jsonl").display().to_string(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(lab.lab.uplink_args(node));
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = fs::File::create(work.path().join("agent.log")).unwrap();
        let child = Command::new(palisade())
            .args(&args)
            .env("PALISADE_TOKEN", agent_token(node))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start palisade agent");
        let agent = ServerAgent {
            child: Some(child),
            work,
            node: node.into(),
        };
        agent.wait_status("its first reconcile", Duration::from_secs(30), |s| {
            s.reconciles >= 1
        });
        agent
    }

    /// The agent's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.work.path().join("agent.log")).unwrap_or_default()
    }

    /// The status file of the running process.
    pub fn status(&self) -> Option<AgentStatus> {
        let pid = self.child.as_ref()?.id();
        read_status(&self.work.path().join("state"))
            .ok()
            .flatten()
            .filter(|s| s.pid == pid)
    }

    /// Waits until the status satisfies `ok`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&AgentStatus) -> bool,
    ) -> AgentStatus {
        poll(timeout, || self.status().filter(|s| ok(s))).unwrap_or_else(|| {
            panic!(
                "the agent of {} did not reach {what} within {} s; status {:?}\n{}",
                self.node,
                timeout.as_secs(),
                self.status(),
                self.log()
            )
        })
    }

    /// Waits until the agent has server revision `revision` in the kernel.
    pub fn wait_applied(&self, revision: u64) -> AgentStatus {
        self.wait_status(
            &format!("server revision {revision}"),
            Duration::from_secs(30),
            |s| {
                s.server
                    .as_ref()
                    .is_some_and(|l| l.applied_revision >= revision)
            },
        )
    }

    /// The flow log file.
    pub fn flow_log(&self) -> PathBuf {
        self.work.path().join("flows.jsonl")
    }

    /// The directory of the flow log.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// The flow log's records.
    pub fn flows(&self) -> Vec<Value> {
        read_records(&self.flow_log())
    }

    /// Waits up to `timeout` for a flow log record matching `matches`.
    pub fn wait_flow(&self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        poll(timeout, || self.flows().into_iter().find(|r| matches(r)))
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        let url = self
            .status()
            .and_then(|s| s.metrics)
            .unwrap_or_else(|| panic!("the agent serves no metrics:\n{}", self.log()));
        http_get(&url)
    }

    /// Waits until `ok` holds for the metrics text; returns it.
    pub fn wait_metrics(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        poll(Duration::from_secs(15), || {
            let text = self.metrics();
            ok(&text).then_some(text)
        })
        .unwrap_or_else(|| {
            panic!(
                "the metrics did not show {what} within 15 s:\n{}",
                self.metrics()
            )
        })
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerAgent {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("---- agent log ({}) ----\n{}", self.node, self.log());
        }
    }
}

/// The records of a flow log file.
pub fn read_records(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad flow line {l}: {e}")))
        .collect()
}

/// `GET url` over plain HTTP/1.1; the body.
pub fn http_get(url: &str) -> String {
    http_get_with(url, None)
}

/// `GET url` over plain HTTP/1.1 with a bearer token; the body (chunked
/// bodies are not decoded: use it for answers with a length).
pub fn http_get_with(url: &str, token: Option<&str>) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(head.contains(" 200 "), "GET {url}: {head}");
    body.to_owned()
}

/// The value of the series `series` (name and labels exactly as written,
/// e.g. `palisade_agent_packets_total{verdict="deny"}`), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Like [`metric`], panicking when the series is missing.
pub fn must_metric(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Waits until `check` holds, up to `timeout`; true when it did.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
