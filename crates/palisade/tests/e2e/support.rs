//! Test support: labs and agents that clean up after themselves (guards
//! that take labs down and kill agents on drop, also when a test panics),
//! policy directories edited atomically, probe matrices compared with the
//! evaluator, long-lived connections inside namespaces, the flow log and
//! the datapath's counters.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use palisade_agent::{read_status, AgentStatus};
use palisade_lab::{agent_bpffs_dir, Lab, LabOptions, Place, ProbeResult};
use palisade_model::{Intent, LoadOptions, Protocol};
use palisade_policy::{evaluate, Flow, FlowPeer, Verdict};
use serde_json::Value;

/// The `palisade` binary under test.
pub fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// A fixture path under `tests/fixtures`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A path of the repository (examples).
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A lab name unique to this process and call (`a-z0-9-`, at most 32 bytes).
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "e2e-{tag}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every few milliseconds until it returns `Some` or
/// `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads resources as the agent does.
pub fn load(paths: &[PathBuf]) -> Intent {
    palisade_model::load_paths(paths, &LoadOptions::default())
        .unwrap_or_else(|d| panic!("fixtures are invalid:\n{d}"))
}

/// A firewall-mode lab, taken down on drop (with every process in it,
/// agents included, and their pins).
pub struct TestLab {
    pub lab: Lab,
    pub intent: Intent,
}

impl TestLab {
    /// Builds lab `unique(tag)` from the resources at `paths`.
    pub fn up(tag: &str, paths: &[PathBuf]) -> TestLab {
        let intent = load(paths);
        let name = unique(tag);
        // The guard before the lab: a failed `up` is cleaned as well.
        let guard = DownOnDrop(name.clone());
        let lab = Lab::up(
            &intent,
            &LabOptions {
                name: name.clone(),
                plain: false,
                replace: false,
                responder_command: vec![palisade().into(), "lab".into(), "serve".into()],
            },
        )
        .unwrap_or_else(|e| panic!("lab {name} does not come up: {e}"));
        std::mem::forget(guard);
        TestLab { lab, intent }
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        self.lab.name()
    }

    /// The namespace of an endpoint.
    pub fn netns(&self, full_ref: &str) -> String {
        self.lab
            .netns(&Place::Endpoint(full_ref.into()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first address of an endpoint.
    pub fn ip(&self, full_ref: &str) -> Ipv4Addr {
        self.lab
            .endpoint(full_ref)
            .and_then(|e| e.ips.first().copied())
            .unwrap_or_else(|| panic!("no endpoint {full_ref}"))
    }

    /// Makes an endpoint forget its gateway's MAC. A probe sent while no
    /// firewall answered ARP leaves the resolution failed and retried only
    /// every second; after agents start or stop, a probe must not wait for that.
    pub fn forget_gateway(&self, full_ref: &str) {
        ip(&self.netns(full_ref), "neigh flush dev eth0");
    }

    /// Probes once.
    pub fn probe(&self, from: &str, to: &str, proto: Protocol, port: u16) -> ProbeResult {
        self.lab.probe(
            &place(from),
            &place(to),
            proto,
            port,
            Duration::from_millis(PROBE_TIMEOUT_MS),
        )
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = Lab::down(self.lab.name());
    }
}

struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = Lab::down(&self.0);
    }
}

/// A place from its text (`acme:web-1`, `world:acme@node-1`).
pub fn place(text: &str) -> Place {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// How long a probe waits before it says "blocked".
pub const PROBE_TIMEOUT_MS: u64 = 1000;

/// A directory of resource files the agent watches; files are replaced
/// atomically (written under a hidden name, then renamed), as editors and
/// deployment tools do.
pub struct PolicyDir {
    dir: tempfile::TempDir,
}

impl PolicyDir {
    /// A directory holding copies of the files at `paths` (files or directories).
    pub fn copy_of(paths: &[PathBuf]) -> PolicyDir {
        let dir = tempfile::tempdir().expect("temporary directory");
        for path in paths {
            copy_into(path, dir.path());
        }
        PolicyDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `name` atomically.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    /// Reads `name`.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap()
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) {
        fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    /// The intent the directory holds now.
    pub fn intent(&self) -> Intent {
        load(&[self.dir.path().to_path_buf()])
    }
}

fn copy_into(path: &Path, dir: &Path) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            copy_into(&entry.unwrap().path(), dir);
        }
    } else {
        fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// One agent per node of `lab`, each watching `policy` (see [`AgentProcess::start`]).
pub fn agents_on_every_node(lab: &TestLab, policy: &Path) -> Vec<AgentProcess> {
    let nodes: Vec<String> = lab.lab.nodes().iter().map(|n| n.name.clone()).collect();
    nodes
        .iter()
        .map(|node| AgentProcess::start(lab, node, policy))
        .collect()
}

/// A `palisade agent` process for one node of a lab, killed on drop. Its
/// state, flow log and log live in a temporary directory; its pins under
/// the lab's agent directory (removed when the lab goes down).
pub struct AgentProcess {
    child: Option<Child>,
    args: Vec<String>,
    work: tempfile::TempDir,
    pub bpffs: PathBuf,
    pub netns: String,
    starts: u32,
}

impl AgentProcess {
    /// Starts the agent of `node` watching `policy`, and waits for its
    /// first reconcile.
    pub fn start(lab: &TestLab, node: &str, policy: &Path) -> AgentProcess {
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
            netns.clone(),
            "--policy-dir".into(),
            policy.display().to_string(),
            "--bpffs".into(),
            bpffs.display().to_string(),
            "--state-dir".into(),
            work.path().join("state").display().to_string(),
            "--flow-log".into(),
            work.path().join("flows.jsonl").display().to_string(),
        ];
        args.extend(lab.lab.uplink_args(node));
        // The overlay between the lab's nodes, as `lab agents up` sets it up
        // (a one-node lab needs none: its tests count the node's hooks).
        if lab.lab.nodes().len() > 1 {
            args.push("--underlay-interface".into());
            args.push("underlay0".into());
            for other in lab.lab.nodes().iter().filter(|n| n.name != node) {
                args.push("--peer".into());
                args.push(format!("{}={}", other.name, other.underlay_address));
            }
        }
        let mut agent = AgentProcess {
            child: None,
            args,
            work,
            bpffs,
            netns,
            starts: 0,
        };
        agent.spawn();
        agent.wait_reconciles(1);
        agent
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        writeln!(&log, "==== start {} ====", self.starts).unwrap();
        let child = Command::new(palisade())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start palisade agent");
        self.child = Some(child);
    }

    /// The agent's log (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.work.path().join("agent.log")
    }

    /// The flow log file.
    pub fn flow_log(&self) -> PathBuf {
        self.work.path().join("flows.jsonl")
    }

    /// The agent's status file, if the running process wrote one.
    pub fn status(&self) -> Option<AgentStatus> {
        let pid = self.child.as_ref()?.id();
        read_status(&self.work.path().join("state"))
            .ok()
            .flatten()
            .filter(|s| s.pid == pid)
    }

    /// Reconciles done so far by the running process.
    pub fn reconciles(&self) -> u64 {
        self.status().map_or(0, |s| s.reconciles)
    }

    /// Waits (up to 30 s: loading the datapath on a busy machine) until the
    /// running process has reconciled `count` times.
    pub fn wait_reconciles(&mut self, count: u64) -> AgentStatus {
        let found = poll(Duration::from_secs(30), || {
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the agent exited ({exit}):\n{}", self.log());
            }
            self.status().filter(|s| s.reconciles >= count)
        });
        found.unwrap_or_else(|| {
            panic!(
                "the agent did not reconcile {count} time(s) within 30 s:\n{}",
                self.log()
            )
        })
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the agent runs");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let exit = poll(Duration::from_secs(10), || child.try_wait().unwrap());
        exit.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the agent did not stop on SIGTERM:\n{}", self.log())
        })
    }

    /// Starts the agent again with the same arguments and files, and waits
    /// for its first reconcile.
    pub fn restart(&mut self) -> AgentStatus {
        assert!(self.child.is_none(), "stop the agent first");
        self.spawn();
        self.wait_reconciles(1)
    }

    /// The flow log's records.
    pub fn flows(&self) -> Vec<Value> {
        fs::read_to_string(self.flow_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad flow line {l}: {e}")))
            .collect()
    }

    /// Waits (up to 5 s) for a flow record matching `matches`.
    pub fn wait_flow(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        poll(Duration::from_secs(5), || {
            self.flows().into_iter().find(|r| matches(r))
        })
        .unwrap_or_else(|| {
            panic!(
                "no flow record {what} within 5 s; the flow log:\n{}",
                fs::read_to_string(self.flow_log()).unwrap_or_default()
            )
        })
    }

    /// Packets the datapath dropped for drop reason number `reason`
    /// (`DROP_COUNTERS`, summed over CPUs), read with bpftool.
    pub fn drops(&self, reason: u32) -> u64 {
        let out = Command::new("bpftool")
            .args(["-j", "map", "lookup", "pinned"])
            .arg(self.bpffs.join("DROP_COUNTERS"))
            .arg("key")
            .args(reason.to_le_bytes().iter().map(|b| b.to_string()))
            .output()
            .expect("run bpftool");
        assert!(
            out.status.success(),
            "bpftool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        json["formatted"]["values"]
            .as_array()
            .expect("per-CPU values, formatted with the map's BTF")
            .iter()
            .map(|v| v["value"]["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The link pins of the agent's namespace (`<ifindex>-<hook>` names).
    pub fn link_pins(&self) -> Vec<String> {
        let mut pins: Vec<String> = fs::read_dir(self.bpffs.join("links/default"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        pins.sort();
        pins
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
    }
}

/// One probe of a matrix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub proto: Protocol,
    pub port: u16,
}

impl Probe {
    /// A probe between two places.
    pub fn new(from: &str, to: &str, proto: Protocol, port: u16) -> Probe {
        Probe {
            from: from.into(),
            to: to.into(),
            proto,
            port,
        }
    }

    fn label(&self) -> String {
        match self.proto {
            Protocol::Icmp => format!("{} -> {} icmp", self.from, self.to),
            p => format!(
                "{} -> {} {}/{}",
                self.from,
                self.to,
                p.as_str().to_ascii_lowercase(),
                self.port
            ),
        }
    }
}

/// Every ordered pair of endpoints of the same tenant (tenants may share
/// addresses, so a probe to another tenant's endpoint would reach the
/// sender's own tenant), every (proto, port) given, plus every endpoint to
/// and from its tenant's world on `world_ports`.
pub fn matrix(
    lab: &TestLab,
    ports: &[(Protocol, u16)],
    world_ports: &[(Protocol, u16)],
) -> Vec<Probe> {
    let endpoints = lab.lab.endpoints();
    let mut probes = Vec::new();
    for from in endpoints {
        for to in endpoints {
            if from.full_ref == to.full_ref || from.tenant != to.tenant {
                continue;
            }
            for &(proto, port) in ports {
                probes.push(Probe::new(&from.full_ref, &to.full_ref, proto, port));
            }
        }
        let world = palisade_lab::world_label(&from.node, &from.tenant);
        for &(proto, port) in world_ports {
            probes.push(Probe::new(&world, &from.full_ref, proto, port));
            probes.push(Probe::new(&from.full_ref, &world, proto, port));
        }
    }
    probes
}

/// The evaluator's verdict for a probe, and why.
pub fn expected(lab: &TestLab, intent: &Intent, probe: &Probe) -> (Verdict, String) {
    let world = lab.lab.world_address();
    let peer = |text: &str, other: &str| -> FlowPeer<'_> {
        match place(text) {
            Place::Endpoint(full_ref) => FlowPeer::Endpoint(
                intent
                    .endpoints
                    .iter()
                    .find(|e| e.full_ref() == full_ref)
                    .unwrap_or_else(|| panic!("no endpoint {full_ref} in the intent")),
            ),
            Place::World { tenant, .. } => {
                let tenant = intent
                    .tenants
                    .keys()
                    .find(|t| **t == tenant)
                    .unwrap_or_else(|| panic!("no tenant {tenant} ({other})"));
                FlowPeer::Address {
                    tenant,
                    ip: world.into(),
                }
            }
            Place::Node(_) => panic!("node places are not probed"),
        }
    };
    let port = match probe.proto {
        Protocol::Icmp => 8 << 8,
        _ => probe.port,
    };
    let explanation = evaluate(
        intent,
        &Flow {
            src: peer(&probe.from, &probe.to),
            dst: peer(&probe.to, &probe.from),
            protocol: probe.proto.number(),
            port,
        },
    );
    let reasons: Vec<String> = explanation
        .reasons()
        .iter()
        .map(ToString::to_string)
        .collect();
    (explanation.verdict, reasons.join("; "))
}

/// How many of `probes` the evaluator allows.
pub fn allowed_count(lab: &TestLab, intent: &Intent, probes: &[Probe]) -> usize {
    probes
        .iter()
        .filter(|p| expected(lab, intent, p).0 == Verdict::Allow)
        .count()
}

/// Runs every probe (each (proto, port) group side by side) and returns the
/// ones whose outcome differs from the evaluator's verdict, as readable lines.
pub fn mismatches(lab: &TestLab, intent: &Intent, probes: &[Probe]) -> Vec<String> {
    let mut groups: BTreeMap<(String, u16), Vec<&Probe>> = BTreeMap::new();
    for p in probes {
        groups
            .entry((p.proto.as_str().to_string(), p.port))
            .or_default()
            .push(p);
    }
    let results: Vec<(Probe, ProbeResult)> = thread::scope(|s| {
        let handles: Vec<_> = groups
            .values()
            .map(|group| {
                s.spawn(move || {
                    let pairs: Vec<(Place, Place)> = group
                        .iter()
                        .map(|p| (place(&p.from), place(&p.to)))
                        .collect();
                    let records = lab.lab.probe_matrix(
                        &pairs,
                        group[0].proto,
                        group[0].port,
                        Duration::from_millis(PROBE_TIMEOUT_MS),
                    );
                    group
                        .iter()
                        .zip(records)
                        .map(|(p, r)| ((*p).clone(), r.result))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut out = Vec::new();
    for (probe, result) in results {
        let (verdict, why) = expected(lab, intent, &probe);
        let ok = match (&result, verdict) {
            (ProbeResult::Reachable { reply: None }, Verdict::Allow) => true,
            // Answered by the destination itself, not someone else.
            (ProbeResult::Reachable { reply: Some(r) }, Verdict::Allow) => *r == probe.to,
            (ProbeResult::Blocked, Verdict::Deny) => true,
            _ => false,
        };
        if !ok {
            out.push(format!(
                "{}: expected {verdict} ({why}), got {result:?}",
                probe.label()
            ));
        }
    }
    out.sort();
    out
}

/// Asserts that every probe gets the evaluator's verdict.
pub fn assert_matrix(lab: &TestLab, intent: &Intent, probes: &[Probe], what: &str) {
    let allowed = allowed_count(lab, intent, probes);
    assert!(
        allowed > 0 && allowed < probes.len(),
        "{what}: a matrix proves little unless some probes are allowed and some denied \
         ({allowed} of {} allowed)",
        probes.len()
    );
    let wrong = mismatches(lab, intent, probes);
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} probes differ from the evaluator:\n{}",
        wrong.len(),
        probes.len(),
        wrong.join("\n")
    );
}

/// Runs `work` on a new thread inside network namespace `netns`.
pub fn in_netns<T: Send>(netns: &str, work: impl FnOnce() -> T + Send) -> T {
    let file = palisade_lab::netns::open(netns).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            palisade_lab::netns::enter(netns, &file).unwrap();
            work()
        })
        .join()
        .unwrap()
    })
}

/// A TCP echo server inside a namespace: every connection gets back what it
/// sends, until the server is dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` inside `netns`.
    pub fn start(netns: &str, addr: SocketAddr) -> EchoServer {
        let listener = in_netns(netns, || TcpListener::bind(addr)).expect("bind echo server");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let s = s.clone();
                        thread::spawn(move || {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_millis(100)))
                                .unwrap();
                            let mut buf = [0u8; 1024];
                            while !s.load(Ordering::SeqCst) {
                                match conn.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::WouldBlock
                                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from inside `netns`.
pub fn connect(netns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = in_netns(netns, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    })?;
    // Generous: a round trip that fails must mean the network cut it, not
    // that the shared machine was slow.
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

/// One round trip of 8 bytes over an echo connection.
pub fn round_trip(stream: &mut TcpStream, n: u64) -> std::io::Result<()> {
    stream.write_all(&n.to_be_bytes())?;
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf)?;
    if buf != n.to_be_bytes() {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// A UDP socket inside a namespace that counts what it receives.
pub struct UdpCounter {
    pub count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    /// Binds `addr` inside `netns`.
    pub fn start(netns: &str, addr: SocketAddr) -> UdpCounter {
        let socket = in_netns(netns, || UdpSocket::bind(addr)).expect("bind UDP counter");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (count, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (c, s) = (count.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if socket.recv_from(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        UdpCounter {
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `ip -n NETNS args...`, panicking on failure.
pub fn ip(netns: &str, args: &str) {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip -n {netns} {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the palisade binary, returning (success, stdout, stderr).
pub fn run_palisade(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(palisade()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
