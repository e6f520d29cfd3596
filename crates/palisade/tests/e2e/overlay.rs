//! The overlay across nodes, with real packets: labs whose workloads run on
//! three nodes, one agent per node, VXLAN between them. The upstream
//! Kubernetes scenarios with pods spread over the nodes match the evaluator;
//! what crosses the underlay carries the tenant's VNI and the source's
//! identity and never a denied flow; forged VXLAN packets are dropped and
//! counted; tenants sharing addresses on the same nodes stay apart; an
//! endpoint moves between nodes keeping its identity and policy while a
//! probe every 50 ms loses allowed traffic for under a second and no denied
//! packet passes; TCP moves bulk data across nodes; agents following a
//! control plane learn the other nodes' addresses from it. (The three-tier
//! matrix across nodes is `matrix.rs`.)

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use palisade_lab::{Lab, ProbeResult, UnderlayPacket};
use palisade_model::{Intent, Protocol};
use palisade_policy::IdentityAllocator;
use serde_json::Value;

use crate::server_support::*;
use crate::support::*;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;
const ICMP: Protocol = Protocol::Icmp;

/// Drop reasons, as numbered in bpf/include/drop.h.
const UNKNOWN_VNI: u32 = 25;
const FORGED_IDENTITY: u32 = 26;
const FRAG_NEEDED: u32 = 27;

/// The underlay address of `node` in `lab`.
fn underlay(lab: &TestLab, node: &str) -> Ipv4Addr {
    lab.lab
        .nodes()
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("no node {node}"))
        .underlay_address
}

/// The local part of the identity of endpoint `full_ref` (what the GBP
/// option carries), as the agents allocate it from these files.
fn gbp_of(intent: &Intent, full_ref: &str) -> u16 {
    let ids = IdentityAllocator::new().allocate(intent).unwrap();
    let ep = intent
        .endpoints
        .iter()
        .find(|e| e.full_ref() == full_ref)
        .unwrap_or_else(|| panic!("no endpoint {full_ref}"));
    ids.endpoint(ep).expect("an identity").local()
}

fn vni_of(intent: &Intent, tenant: &str) -> u32 {
    intent.tenants[tenant].vni.expect("every tenant has a VNI")
}

/// Captures the lab's underlay on a thread while `work` runs.
fn capture_while(lab: &TestLab, work: impl FnOnce()) -> Vec<UnderlayPacket> {
    let mut capture = lab.lab.capture_underlay().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let collector = thread::spawn(move || {
        let mut packets = Vec::new();
        while !s.load(Ordering::SeqCst) {
            if let Some(p) = capture.next(Duration::from_millis(50)).unwrap() {
                packets.push(p);
            }
        }
        // What is still queued.
        while let Some(p) = capture.next(Duration::from_millis(100)).unwrap() {
            packets.push(p);
        }
        packets
    });
    work();
    stop.store(true, Ordering::SeqCst);
    collector.join().unwrap()
}

#[test]
fn kubernetes_scenarios_across_three_nodes_match_the_evaluator() {
    let base = [
        fixture("netpol/namespaces.yaml"),
        fixture("netpol-nodes/pods.yaml"),
    ];
    let lab = TestLab::up("ovnp", &base);
    assert_eq!(lab.lab.nodes().len(), 3);
    let policy = PolicyDir::copy_of(&base);
    let mut agents = agents_on_every_node(&lab, policy.path());
    let probes = matrix(
        &lab,
        &[(TCP, 80), (TCP, 81), (UDP, 80), (ICMP, 0)],
        &[(TCP, 80)],
    );
    let across = probes
        .iter()
        .filter(|p| {
            let node = |r: &str| lab.lab.endpoint(r).map(|e| e.node.clone());
            node(&p.from).is_some() && node(&p.to).is_some() && node(&p.from) != node(&p.to)
        })
        .count();
    assert!(
        across > probes.len() / 2,
        "most probes cross nodes ({across})"
    );

    let mut scenarios: Vec<_> = std::fs::read_dir(fixture("netpol/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scenarios.sort();
    let mut failures = Vec::new();
    let mut enforced = lab.intent.clone();
    for scenario in &scenarios {
        let name = scenario.file_name().unwrap().to_string_lossy().into_owned();
        let before: Vec<u64> = agents.iter().map(|a| a.reconciles()).collect();
        policy.write("policy.yaml", &std::fs::read_to_string(scenario).unwrap());
        let intent = policy.intent();
        if intent != enforced {
            for (agent, before) in agents.iter_mut().zip(before) {
                agent.wait_reconciles(before + 1);
            }
            enforced = intent.clone();
        }
        let wrong = mismatches(&lab, &intent, &probes);
        if !wrong.is_empty() {
            failures.push(format!("{name}:\n  {}", wrong.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "scenarios across nodes differing from the evaluator ({} probes each):\n{}",
        probes.len(),
        failures.join("\n")
    );
    for agent in &agents {
        assert_eq!(agent.drops(FORGED_IDENTITY), 0, "no genuine packet refused");
    }
}

#[test]
fn the_underlay_carries_vni_and_identity_of_allowed_flows_and_never_denied_ones() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("ovcap", &paths);
    let source = paths[0].display().to_string();
    let (ok, out, err) =
        run_palisade(&["lab", "agents", "up", "--name", lab.name(), "-f", &source]);
    assert!(ok, "{out}{err}");
    let intent = &lab.intent;
    // (from, to, port, allowed): tiers on different nodes, both tenants.
    let flows = [
        ("acme:web-1", "acme:app-1", 8080, true),
        ("globex:web-1", "globex:app-1", 8080, true),
        ("acme:app-1", "acme:db-1", 5432, true),
        ("acme:web-1", "acme:db-1", 5432, false),
        ("globex:web-1", "globex:db-1", 5432, false),
        ("acme:web-2", "acme:app-1", 8080, false),
    ];
    let packets = capture_while(&lab, || {
        for (from, to, port, allowed) in flows {
            lab.forget_gateway(from);
            let result = lab.probe(from, to, TCP, port);
            assert_eq!(
                result.is_reachable(),
                allowed,
                "{from} -> {to}:{port}: {result:?}"
            );
        }
    });

    let node = |r: &str| lab.lab.endpoint(r).unwrap().node.clone();
    for (from, to, port, allowed) in flows {
        let (src, dst) = (lab.ip(from), lab.ip(to));
        let tenant = from.split(':').next().unwrap();
        let forward: Vec<&UnderlayPacket> = packets
            .iter()
            .filter(|p| {
                p.inner.src == src
                    && p.inner.dst == dst
                    && p.inner.dport == port
                    && p.vni == vni_of(intent, tenant)
            })
            .collect();
        if !allowed {
            assert!(
                forward.is_empty(),
                "{from} -> {to}:{port} is denied: it must never reach the underlay, yet {forward:#?}"
            );
            continue;
        }
        assert!(
            !forward.is_empty(),
            "{from} -> {to}:{port} crossed: {packets:#?}"
        );
        for p in &forward {
            assert_eq!(
                (p.src_node.clone(), p.dst_node.clone()),
                (Some(node(from)), Some(node(to)))
            );
            assert_eq!(
                p.gbp,
                Some(gbp_of(intent, from)),
                "the source's identity: {p:?}"
            );
            assert!(p.outer_df, "DF copied from the inner packet");
        }
        let replies = packets
            .iter()
            .filter(|p| p.inner.src == dst && p.inner.sport == port && p.inner.dst == src)
            .count();
        assert!(replies > 0, "{to} answered over the overlay");
    }
    assert!(
        packets.iter().all(|p| matches!(p.vni, 100 | 200)),
        "only the tenants' VNIs"
    );

    // The CLI shows the same, one JSON object per packet.
    let name = lab.name().to_string();
    let cli = thread::spawn(move || {
        run_palisade(&[
            "lab",
            "capture",
            "--name",
            &name,
            "--underlay",
            "--count",
            "1",
            "--timeout-ms",
            "5000",
            "-o",
            "json",
        ])
    });
    thread::sleep(Duration::from_millis(300));
    lab.probe("acme:web-1", "acme:app-1", TCP, 8080);
    let (ok, out, err) = cli.join().unwrap();
    assert!(ok, "{out}{err}");
    let record: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(record["vni"], 100);
    assert!(
        record["src_node"].is_string() && record["inner"]["proto"] == 6,
        "{record}"
    );
}

/// A VXLAN packet as a compromised node would make it: flags G and I, the
/// group policy id, the VNI, then an inner Ethernet frame with a TCP SYN.
fn forged_vxlan(
    gbp: u16,
    vni: u32,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut packet = vec![0x88, 0, 0, 0, 0, 0, 0, 0];
    packet[2..4].copy_from_slice(&gbp.to_be_bytes());
    packet[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
    packet.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&checksum(&pseudo).to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&ip);
    packet.extend_from_slice(&tcp);
    packet
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `payload` to UDP 4789 of `to` from node `netns`'s address `from`.
fn send_from_node(netns: &str, from: Ipv4Addr, to: Ipv4Addr, payload: &[u8]) {
    in_netns(netns, || {
        let socket = UdpSocket::bind((from, 0)).unwrap();
        socket.send_to(payload, (to, 4789)).unwrap();
    });
}

#[test]
fn forged_vxlan_packets_from_the_underlay_are_dropped_and_counted() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("ovforge", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let agents = agents_on_every_node(&lab, policy.path());
    let node2 = agents.iter().find(|a| a.netns.ends_with("node-2")).unwrap();
    let intent = &lab.intent;
    let (web, app) = (lab.ip("acme:web-1"), lab.ip("acme:app-1"));
    let web_gbp = gbp_of(intent, "acme:web-1");
    let app_gbp = gbp_of(intent, "acme:app-1");
    let (n1, n2, n3) = (
        underlay(&lab, "node-1"),
        underlay(&lab, "node-2"),
        underlay(&lab, "node-3"),
    );
    let ns = |node: &str| {
        lab.lab
            .nodes()
            .iter()
            .find(|n| n.name == node)
            .unwrap()
            .netns
            .clone()
    };

    // node-3 impersonates web-1 (which lives on node-1).
    send_from_node(
        &ns("node-3"),
        n3,
        n2,
        &forged_vxlan(web_gbp, 100, web, app, 40001, 8080),
    );
    // node-1 claims another identity for web-1's address.
    send_from_node(
        &ns("node-1"),
        n1,
        n2,
        &forged_vxlan(app_gbp, 100, web, app, 40002, 8080),
    );
    // A VNI of no tenant.
    send_from_node(
        &ns("node-1"),
        n1,
        n2,
        &forged_vxlan(web_gbp, 4242, web, app, 40003, 8080),
    );
    // The genuine article, for contrast.
    send_from_node(
        &ns("node-1"),
        n1,
        n2,
        &forged_vxlan(web_gbp, 100, web, app, 40004, 8080),
    );

    let counted = poll(Duration::from_secs(5), || {
        (node2.drops(FORGED_IDENTITY) == 2 && node2.drops(UNKNOWN_VNI) == 1).then_some(())
    });
    assert!(
        counted.is_some(),
        "node-2 counts forged {} and unknown VNI {}",
        node2.drops(FORGED_IDENTITY),
        node2.drops(UNKNOWN_VNI)
    );
    let denied = node2.wait_flow("of a forged identity", |r| {
        r["event"]["reason"] == "FORGED_IDENTITY" && r["palisade"]["hook"] == "from_overlay"
    });
    assert_eq!(denied["source"]["ip"], web.to_string());
    node2.wait_flow("admitting the genuine packet", |r| {
        r["event"]["action"] == "connection-allowed"
            && r["palisade"]["hook"] == "from_overlay"
            && r["source"]["port"] == 40004
    });
    assert!(
        !node2
            .flows()
            .iter()
            .any(|r| r["event"]["action"] == "connection-allowed"
                && matches!(r["source"]["port"].as_u64(), Some(40001..=40003))),
        "no forged packet was admitted"
    );
}

#[test]
fn tenants_with_the_same_addresses_on_the_same_nodes_reach_only_their_own() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("ovten", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let _agents = agents_on_every_node(&lab, policy.path());
    for tenant in ["acme", "globex"] {
        for (from, to, port) in [("web-1", "app-1", 8080), ("app-1", "db-1", 5432)] {
            let (from, to) = (format!("{tenant}:{from}"), format!("{tenant}:{to}"));
            let node = |r: &str| lab.lab.endpoint(r).unwrap().node.clone();
            assert_ne!(
                node(&from),
                node(&to),
                "{from} and {to} are on different nodes"
            );
            let other = if tenant == "acme" { "globex" } else { "acme" };
            let twin = to.replacen(tenant, other, 1);
            assert_eq!(
                lab.ip(&to),
                lab.ip(&twin),
                "{to} shares its address with {twin}"
            );
            assert_eq!(node(&to), node(&twin), "on the same node");
            assert_eq!(
                lab.probe(&from, &to, TCP, port),
                ProbeResult::Reachable {
                    reply: Some(to.clone())
                },
                "{from} reaches its own tenant's {to}, never {twin}"
            );
        }
    }
}

/// Probes `from` -> `to` every 50 ms until finished: each probe on its own
/// thread, so that blocked probes (which wait for their timeout) keep the pace.
struct Prober {
    results: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prober {
    fn start(lab: &Lab, from: &str, to: &str, port: u16) -> Prober {
        let results = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (lab, from, to) = (lab.clone(), place(from), place(to));
        let (r, s) = (results.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut next = Instant::now();
            let mut probes = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let (lab, from, to, r) = (lab.clone(), from.clone(), to.clone(), r.clone());
                probes.push(thread::spawn(move || {
                    let at = Instant::now();
                    let result = lab.probe(&from, &to, TCP, port, Duration::from_millis(200));
                    r.lock().unwrap().push((at, result.is_reachable()));
                }));
                next += Duration::from_millis(50);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            for probe in probes {
                let _ = probe.join();
            }
        });
        Prober {
            results,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let mut results = self.results.lock().unwrap().clone();
        results.sort_by_key(|(at, _)| *at);
        results
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest time between two successful probes around a failure.
fn longest_outage(results: &[(Instant, bool)]) -> Duration {
    let successes: Vec<Instant> = results
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| *t)
        .collect();
    successes
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

/// The identity the flow log of `node` gives endpoint `full_ref` as a destination.
fn identity_in_flow_log(lab: &str, node: &str, full_ref: &str) -> Option<u64> {
    let path = palisade_lab::state_dir(lab).join(format!("{node}.flows.jsonl"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["palisade"]["destination"]["endpoint"] == full_ref)
        .find_map(|r| r["palisade"]["destination"]["identity"].as_u64())
}

#[test]
fn a_moved_endpoint_keeps_identity_and_policy_losing_under_a_second_and_passing_nothing_denied() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("ovmove", &paths);
    let source = paths[0].display().to_string();
    let (ok, out, err) =
        run_palisade(&["lab", "agents", "up", "--name", lab.name(), "-f", &source]);
    assert!(ok, "{out}{err}");
    let name = lab.name().to_string();
    let before = lab.lab.endpoint("acme:app-1").unwrap().clone();
    assert_eq!(before.node, "node-2");

    let allowed = Prober::start(&lab.lab, "acme:web-1", "acme:app-1", 8080);
    let denied = Prober::start(&lab.lab, "acme:web-2", "acme:app-1", 8080);
    thread::sleep(Duration::from_millis(700));
    let (ok, out, err) = run_palisade(&[
        "lab",
        "move",
        "--name",
        &name,
        "acme:app-1",
        "--to-node",
        "node-3",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("moved acme:app-1 from node-2 to node-3"),
        "{out}"
    );
    let moved_at = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    let allowed = allowed.finish();
    let denied = denied.finish();

    let outage = longest_outage(&allowed);
    eprintln!("moving acme:app-1: allowed traffic stopped for {outage:?} at most");
    assert!(
        outage <= Duration::from_secs(1),
        "allowed traffic stopped for {outage:?} (probes every 50 ms: {} ok of {})",
        allowed.iter().filter(|(_, ok)| *ok).count(),
        allowed.len()
    );
    assert!(
        allowed.iter().any(|(t, ok)| *ok && *t > moved_at),
        "allowed traffic reaches it on its new node"
    );
    assert!(
        denied.iter().all(|(_, ok)| !ok),
        "a denied probe got through during the move"
    );
    assert!(denied.len() > 20, "the denied flow was probed throughout");

    // Same namespace, addresses and MAC; a new port on node-3.
    let lab_now = Lab::open(&name).unwrap();
    let after = lab_now.endpoint("acme:app-1").unwrap().clone();
    assert_eq!(after.node, "node-3");
    assert_eq!(
        (
            &after.netns,
            &after.ips,
            after.mac,
            &after.host_port,
            after.host_mac
        ),
        (
            &before.netns,
            &before.ips,
            before.mac,
            &before.host_port,
            before.host_mac
        )
    );
    // Its identity: what node-2 used before is what node-3 uses now.
    let old = identity_in_flow_log(&name, "node-2", "acme:app-1");
    let new = poll(Duration::from_secs(3), || {
        identity_in_flow_log(&name, "node-3", "acme:app-1")
    });
    assert!(
        old.is_some() && old == new,
        "identity before {old:?}, after {new:?}; node-3's flow log:\n{}",
        std::fs::read_to_string(palisade_lab::state_dir(&name).join("node-3.flows.jsonl"))
            .unwrap_or_default()
    );
    // Its policy.
    let mut lab = lab;
    lab.lab = lab_now;
    lab.intent
        .endpoints
        .iter_mut()
        .find(|e| e.full_ref() == "acme:app-1")
        .unwrap()
        .node = "node-3".into();
    let probes = vec![
        Probe::new("acme:web-1", "acme:app-1", TCP, 8080),
        Probe::new("acme:web-2", "acme:app-1", TCP, 8080),
        Probe::new("acme:app-1", "acme:db-1", TCP, 5432),
        Probe::new("acme:app-1", "acme:web-1", TCP, 80),
        Probe::new("acme:db-1", "acme:app-1", TCP, 8080),
    ];
    let wrong = mismatches(&lab, &lab.intent, &probes);
    assert!(wrong.is_empty(), "after the move:\n{}", wrong.join("\n"));
}

/// Streams `bytes` from `netns` to the echo server at `addr` and reads them
/// all back; false when the transfer stalls (a black hole).
fn bulk(netns: &str, addr: SocketAddr, bytes: usize) -> bool {
    let mut stream = in_netns(netns, || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let chunk = vec![0x5au8; 64 << 10];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            if writer.write_all(&chunk[..n]).is_err() {
                return false;
            }
            sent += n;
        }
        true
    });
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0;
    while received < bytes {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    sender.join().unwrap() && received == bytes
}

#[test]
fn tcp_bulk_crosses_nodes_at_the_default_mtu_and_with_path_mtu_discovery() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("ovbulk", &paths);
    let policy = PolicyDir::copy_of(&paths);
    policy.write(
        "bulk.yaml",
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: bulk, tenant: acme}\n\
         spec:\n  order: 1\n  selector: app == 'web' || app == 'app'\n\
         \x20 ingress: [{action: allow, from: [{selector: app == 'web'}], ports: [{protocol: TCP, port: 9000}]}]\n\
         \x20 egress: [{action: allow, to: [{selector: app == 'app'}], ports: [{protocol: TCP, port: 9000}]}]\n",
    );
    let agents = agents_on_every_node(&lab, policy.path());
    let node1 = agents.iter().find(|a| a.netns.ends_with("node-1")).unwrap();
    let (web, app) = ("acme:web-1", "acme:app-1");
    let _echo = EchoServer::start(&lab.netns(app), SocketAddr::from((lab.ip(app), 9000)));

    // The lab's MTUs leave room for the encapsulation: full-size segments, GSO.
    let started = Instant::now();
    assert!(
        bulk(
            &lab.netns(web),
            SocketAddr::from((lab.ip(app), 9000)),
            64 << 20
        ),
        "64 MiB each way between nodes"
    );
    eprintln!("64 MiB each way in {:?}", started.elapsed());
    assert_eq!(
        node1.drops(FRAG_NEEDED),
        0,
        "nothing too big at the lab's MTU"
    );

    // A workload that believes in 1500 bytes learns the overlay's MTU from
    // the datapath's ICMP answer and completes.
    for full_ref in [web, app] {
        let ep = lab.lab.endpoint(full_ref).unwrap();
        let node_ns = lab
            .lab
            .nodes()
            .iter()
            .find(|n| n.name == ep.node)
            .unwrap()
            .netns
            .clone();
        ip(&node_ns, &format!("link set {} mtu 1500", ep.host_port));
        ip(&ep.netns, "link set eth0 mtu 1500");
    }
    assert!(
        bulk(
            &lab.netns(web),
            SocketAddr::from((lab.ip(app), 9000)),
            64 << 20
        ),
        "64 MiB each way with path MTU discovery (no black hole)"
    );
    assert!(
        node1.drops(FRAG_NEEDED) > 0,
        "web-1 was told the overlay's MTU"
    );
}

/// One `ip -n NETNS -o link show DEV` line.
fn link_line(netns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "-d", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agents_following_a_control_plane_learn_the_node_table() {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("ovsrv", &example);
    let server = ServerProcess::start(&["node-1", "node-2", "node-3"]);
    apply_files(&server.client(ADMIN), &example.map(PathBuf::from));
    // No --peer: the other nodes' addresses come from the server only.
    let agents: Vec<ServerAgent> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|node| {
            ServerAgent::start(
                &lab,
                node,
                &server.url,
                &["--underlay-interface", "underlay0"],
            )
        })
        .collect();
    let node1_ns = lab.lab.nodes()[0].netns.clone();
    let device = link_line(&node1_ns, "palisade-vxlan");
    assert!(
        device.contains("vxlan external") && device.contains(" gbp") && device.contains("mtu 1450"),
        "the agent made the overlay device: {device}"
    );
    let reached = poll(Duration::from_secs(20), || {
        lab.forget_gateway("acme:web-1");
        (lab.probe("acme:web-1", "acme:app-1", TCP, 8080)
            .is_reachable()
            && lab
                .probe("globex:app-1", "globex:db-1", TCP, 5432)
                .is_reachable())
        .then_some(())
    });
    assert!(
        reached.is_some(),
        "tiers on other nodes are reached once the server sent the node table:\n{}",
        agents[0].log()
    );
    assert!(!lab
        .probe("acme:web-1", "acme:db-1", TCP, 5432)
        .is_reachable());
}

#[test]
fn a_move_in_a_lab_following_a_control_plane_goes_through_the_api() {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("ovsrvmove", &example);
    let server = ServerProcess::start(&["node-1", "node-2", "node-3"]);
    let admin = server.client(ADMIN);
    apply_files(&admin, &example.map(PathBuf::from));
    let (ok, out, err) = run_palisade(&[
        "lab",
        "agents",
        "up",
        "--name",
        lab.name(),
        "--server",
        &server.url,
        "--token",
        ADMIN,
    ]);
    assert!(ok, "{out}{err}");
    let reached = |lab: &TestLab| {
        poll(Duration::from_secs(20), || {
            lab.forget_gateway("acme:web-1");
            lab.probe("acme:web-1", "acme:app-1", TCP, 8080)
                .is_reachable()
                .then_some(())
        })
        .is_some()
    };
    assert!(reached(&lab), "web-1 reaches app-1 across nodes");

    let (ok, out, err) = run_palisade(&[
        "lab",
        "move",
        "--name",
        lab.name(),
        "acme:app-1",
        "--to-node",
        "node-3",
        "--token",
        ADMIN,
    ]);
    assert!(ok, "{out}{err}");
    let options = palisade_client::GetOptions {
        tenant: Some("acme".into()),
        namespace: None,
    };
    let stored = block_on(admin.get(palisade_model::Kind::Endpoint, "app-1", &options)).unwrap();
    assert_eq!(
        stored["spec"]["node"], "node-3",
        "the control plane says where it runs"
    );
    let mut lab = lab;
    lab.lab = Lab::open(lab.name()).unwrap();
    assert_eq!(lab.lab.endpoint("acme:app-1").unwrap().node, "node-3");
    assert!(reached(&lab), "and it is reached there");
    assert!(!lab
        .probe("acme:web-2", "acme:app-1", TCP, 8080)
        .is_reachable());
}
