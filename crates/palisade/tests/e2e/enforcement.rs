//! The agent over time: anti-spoofing, revocation of established
//! connections, edits while traffic flows (and invalid edits), a SIGKILLed
//! agent replaced without a gap, ports that come and go, stopping and
//! uninstalling.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use palisade_lab::ProbeResult;
use palisade_model::Protocol;

use crate::support::*;

const TCP: Protocol = Protocol::Tcp;
const SPOOF_MAC: u32 = 5;
const SPOOF_IP: u32 = 6;

/// Lets the client reach TCP 9000 on the server (where tests run an echo server).
const ECHO_POLICY: &str = "\
apiVersion: palisade.dev/v1
kind: Policy
metadata: {name: server-echo, tenant: acme}
spec:
  order: 100
  selector: app == 'server'
  ingress:
    - action: allow
      from: [{selector: app == 'client'}]
      ports: [{protocol: TCP, port: 9000}]
";

const ECHO_PORT: u16 = 9000;

/// The features lab with the echo policy, its agent, and an echo server.
struct EchoSetup {
    lab: TestLab,
    policy: PolicyDir,
    agent: AgentProcess,
    _echo: EchoServer,
    server: SocketAddr,
}

fn echo_setup(tag: &str) -> EchoSetup {
    let paths = [fixture("features")];
    let lab = TestLab::up(tag, &paths);
    let policy = PolicyDir::copy_of(&paths);
    policy.write("echo.yaml", ECHO_POLICY);
    let agent = AgentProcess::start(&lab, "node-1", policy.path());
    let server = SocketAddr::from((lab.ip("acme:server"), ECHO_PORT));
    let echo = EchoServer::start(&lab.netns("acme:server"), server);
    EchoSetup {
        lab,
        policy,
        agent,
        _echo: echo,
        server,
    }
}

#[test]
fn spoofed_addresses_are_blocked_and_counted() {
    let paths = [fixture("features")];
    let lab = TestLab::up("spoof", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let agent = AgentProcess::start(&lab, "node-1", policy.path());
    let client = lab.netns("acme:client");
    assert!(lab
        .probe("acme:client", "acme:server", TCP, 80)
        .is_reachable());

    // The client takes the other workload's address: its allowed flow is dropped.
    let before = agent.drops(SPOOF_IP);
    swap_address(&client, "10.0.0.10", "10.0.0.30");
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 80),
        ProbeResult::Blocked,
        "a workload using another's address"
    );
    let after_other = agent.drops(SPOOF_IP);
    assert!(after_other > before, "SPOOF_IP drops are counted");
    // ... or an address nobody has.
    swap_address(&client, "10.0.0.30", "10.0.0.99");
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 80),
        ProbeResult::Blocked,
        "a workload using an address it was not given"
    );
    assert!(
        agent.drops(SPOOF_IP) > after_other,
        "SPOOF_IP drops are counted"
    );
    let record = agent.wait_flow("SPOOF_IP", |r| r["event"]["reason"] == "SPOOF_IP");
    assert_eq!(record["palisade"]["hook"], "from_endpoint");
    swap_address(&client, "10.0.0.99", "10.0.0.10");
    assert!(
        lab.probe("acme:client", "acme:server", TCP, 80)
            .is_reachable(),
        "its own address works again"
    );

    // Another MAC address.
    let before = agent.drops(SPOOF_MAC);
    let mac = lab.lab.endpoint("acme:client").unwrap().mac.to_string();
    ip(&client, "link set eth0 address 02:00:5e:00:00:99");
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 80),
        ProbeResult::Blocked,
        "a workload using a MAC it was not given"
    );
    assert!(
        agent.drops(SPOOF_MAC) > before,
        "SPOOF_MAC drops are counted"
    );
    ip(&client, &format!("link set eth0 address {mac}"));
    // ARP sent with the wrong MAC went unanswered: resolve the gateway afresh.
    lab.forget_gateway("acme:client");
    assert!(lab
        .probe("acme:client", "acme:server", TCP, 80)
        .is_reachable());
}

#[test]
fn revoking_an_allow_cuts_an_established_connection_within_a_second() {
    let s = echo_setup("revoke");
    let client = s.lab.netns("acme:client");
    let mut conn = connect(&client, s.server).expect("the echo port is allowed");
    for n in 0..10 {
        round_trip(&mut conn, n).expect("the connection works");
    }

    let before = s.agent.reconciles();
    let edited = Instant::now();
    s.policy.remove("echo.yaml");
    let mut n = 10;
    let cut_after = loop {
        let attempt = edited.elapsed();
        if round_trip(&mut conn, n).is_err() {
            break attempt;
        }
        n += 1;
        assert!(
            edited.elapsed() < Duration::from_secs(5),
            "the connection still works 5 s after its allow was removed"
        );
        thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "connection cut {:.0} ms after the edit ({} round trips in between)",
        cut_after.as_secs_f64() * 1000.0,
        n - 10
    );
    assert!(
        cut_after < Duration::from_secs(1),
        "cut {cut_after:?} after the edit: more than the 1 s the agent promises"
    );
    assert!(s.agent.reconciles() > before);
    let cut = s.agent.wait_flow("connection-cut", |r| {
        r["event"]["action"] == "connection-cut" && r["destination"]["port"] == ECHO_PORT
    });
    assert_eq!(cut["event"]["reason"], "POLICY_REVOKED");
    assert_eq!(cut["network"]["direction"], "ingress");
    assert_eq!(
        cut["rule"]["name"],
        "default deny of tier default (ingress)"
    );
    assert!(cut["palisade"]["packets"].as_u64().unwrap() > 10);
    assert!(
        connect(&client, s.server).is_err(),
        "a new connection is refused too"
    );
}

#[test]
fn edits_are_enforced_while_traffic_flows_and_invalid_ones_change_nothing() {
    let mut s = echo_setup("edit");
    let client = s.lab.netns("acme:client");
    let mut conn = connect(&client, s.server).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                match round_trip(&mut conn, n) {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                };
                n += 1;
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Allow client -> server:8082 (past the range until now).
    let target = SocketAddr::from((s.lab.ip("acme:server"), 8082));
    assert!(connect(&client, target).is_err());
    let before = s.agent.reconciles();
    let edited = Instant::now();
    s.policy.write(
        "extra.yaml",
        &ECHO_POLICY
            .replace("server-echo", "server-8082")
            .replace("port: 9000", "port: 8082"),
    );
    let latency = poll(Duration::from_secs(5), || {
        in_netns(&client, || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_millis(20)).ok()
        })
        .map(|_| edited.elapsed())
    })
    .expect("the new allow is enforced");
    let status = s.agent.wait_reconciles(before + 1);
    eprintln!(
        "edit enforced: first connection {:.0} ms after the write; the reconcile took {:.1} ms",
        latency.as_secs_f64() * 1000.0,
        status.last_reconcile.as_ref().unwrap().duration_ms
    );
    // The agent promises 100 ms; allow a busy machine ten times that.
    assert!(
        latency < Duration::from_secs(1),
        "enforced after {latency:?}"
    );

    // An invalid edit: logged with its position, nothing changes.
    let before = s.agent.reconciles();
    s.policy.write(
        "extra.yaml",
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: broken, tenant: acme}\nspec:\n  selector: app == 'server'\n  ingres: []\n",
    );
    let error = poll(Duration::from_secs(5), || {
        s.agent.status().and_then(|st| st.last_error)
    })
    .expect("the agent reports the invalid input");
    assert!(error.contains("extra.yaml:6:"), "{error}");
    assert!(
        s.agent.log().contains("extra.yaml:6:3"),
        "{}",
        s.agent.log()
    );
    assert_eq!(s.agent.reconciles(), before, "nothing was applied");
    assert!(
        in_netns(&client, || std::net::TcpStream::connect_timeout(
            &target,
            Duration::from_millis(500)
        ))
        .is_ok(),
        "the last good state stays enforced"
    );

    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(
        ok > 20,
        "traffic flowed during the edits ({ok} round trips)"
    );
    assert_eq!(failed, 0, "the established connection never stalled");
}

#[test]
fn a_killed_agent_is_replaced_without_a_gap_or_a_hole() {
    let mut s = echo_setup("restart");
    let client = s.lab.netns("acme:client");
    let server_ns = s.lab.netns("acme:server");
    // UDP 5454 is not allowed: nothing may arrive, ever.
    let denied = SocketAddr::from((s.lab.ip("acme:server"), 5454));
    let counter = UdpCounter::start(&server_ns, denied);
    let mut conn = connect(&client, s.server).unwrap();
    let sender = in_netns(&client, || std::net::UdpSocket::bind("0.0.0.0:0")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, sent) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let traffic = {
        let (stop, ok, failed, sent) = (stop.clone(), ok.clone(), failed.clone(), sent.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                match round_trip(&mut conn, n) {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("round trip {n} failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
                if sender.send_to(b"must not pass", denied).is_ok() {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
                thread::sleep(Duration::from_millis(3));
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    s.agent.kill();
    // No agent at all for a while: the pinned programs and maps enforce alone.
    thread::sleep(Duration::from_millis(500));
    let during = ok.load(Ordering::SeqCst);
    let status = s.agent.restart();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();

    let (ok, failed, sent) = (
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst),
    );
    assert!(during > 50, "traffic flowed while no agent ran");
    assert!(ok > during, "and after the restart");
    assert_eq!(failed, 0, "the established connection never stalled");
    assert!(sent > 100, "the denied flow was tried throughout ({sent})");
    assert_eq!(counter.received(), 0, "no denied packet passed");
    assert!(status.adopted, "the new agent adopted the pinned maps");
    let last = status.last_reconcile.unwrap();
    assert!(
        last.changes.maps_unchanged(),
        "nothing changed, so the first reconcile changes no map entry: {}",
        last.changes
    );
    assert!(
        s.agent
            .log()
            .contains("no changes, the adopted maps already hold the desired state"),
        "the no-op is logged"
    );
}

/// Replaces the workload's address `old` by `new` (adding first: a device
/// without addresses loses its routes) and keeps its default route.
fn swap_address(netns: &str, old: &str, new: &str) {
    ip(netns, &format!("addr add {new}/32 dev eth0"));
    ip(netns, &format!("addr del {old}/32 dev eth0"));
    ip(
        netns,
        "route replace default via 169.254.1.1 dev eth0 onlink",
    );
}

/// The features fixture without the quarantined endpoint.
fn without_quarantined(endpoints: &str) -> String {
    endpoints
        .split("---\n")
        .filter(|doc| !doc.contains("name: quarantined"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn ports_are_attached_as_endpoints_appear_and_detached_when_they_go() {
    let paths = [fixture("features")];
    let lab = TestLab::up("ports", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let mut agent = AgentProcess::start(&lab, "node-1", policy.path());
    // Four endpoints with two hooks each, one uplink.
    assert_eq!(agent.link_pins().len(), 9, "{:?}", agent.link_pins());

    let endpoints = policy.read("endpoints.yaml");
    let before = agent.reconciles();
    policy.write("endpoints.yaml", &without_quarantined(&endpoints));
    let status = agent.wait_reconciles(before + 1);
    let changes = status.last_reconcile.unwrap().changes;
    assert_eq!((changes.detached, changes.endpoints.removed), (2, 1));
    assert_eq!(agent.link_pins().len(), 7);
    // Its port is an ordinary interface now and the node does not forward.
    assert_eq!(
        lab.probe("acme:quarantined", "acme:client", TCP, 7000),
        ProbeResult::Blocked
    );

    policy.write("endpoints.yaml", &endpoints);
    let status = agent.wait_reconciles(before + 2);
    assert_eq!(status.last_reconcile.unwrap().changes.attached, 2);
    assert_eq!(agent.link_pins().len(), 9);

    // A port that vanishes from the node: its pins and entry go too.
    let port = lab.lab.endpoint("acme:other").unwrap().host_port.clone();
    let node = lab.lab.nodes()[0].netns.clone();
    let before = agent.reconciles();
    ip(&node, &format!("link del {port}"));
    let status = agent.wait_reconciles(before + 1);
    assert_eq!(status.last_reconcile.unwrap().changes.endpoints.removed, 1);
    assert_eq!(agent.link_pins().len(), 7, "{:?}", agent.link_pins());
    assert!(agent.log().contains("does not exist (yet)"));
}

#[test]
fn a_stopped_agent_leaves_the_datapath_enforcing_until_uninstalled() {
    let paths = [fixture("features")];
    let lab = TestLab::up("stop", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let mut agent = AgentProcess::start(&lab, "node-1", policy.path());
    let exit = agent.terminate();
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");

    assert!(lab
        .probe("acme:client", "acme:server", TCP, 80)
        .is_reachable());
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 8082),
        ProbeResult::Blocked
    );

    let bpffs = agent.bpffs.display().to_string();
    let (ok, stdout, stderr) = run_palisade(&[
        "agent",
        "--node",
        "node-1",
        "--netns",
        &agent.netns,
        "--bpffs",
        &bpffs,
        "--uninstall",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("9 hooks detached"), "{stdout}");
    assert!(!agent.bpffs.exists());
    // Nothing filters or delivers any more, and the node does not forward.
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 80),
        ProbeResult::Blocked
    );
}
