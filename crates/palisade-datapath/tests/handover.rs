//! Attachments outlive the process that made them, and a new process takes
//! them over atomically: traffic keeps being filtered while the loader exits,
//! and while a second loader replaces every program (BPF_LINK_UPDATE on the
//! pinned TCX links) not one allowed packet is lost and not one denied packet
//! gets through.
//!
//! The loaders are real processes: this binary re-executes itself with
//! `child-attach <bpffs dir> <node netns>` (harness = false for that reason).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_datapath::{Datapath, DatapathConfig, Hook, Interface};

const TEST_NAME: &str = "traffic_is_filtered_across_an_agent_handover";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child-attach") {
        child_attach(&args[1], &args[2]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    // Respect cargo test name filters like the default harness does.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("running 0 tests (filtered out)");
        return;
    }
    println!("running 1 test");
    traffic_is_filtered_across_an_agent_handover();
    println!("test {TEST_NAME} ... ok");
}

/// The "agent": open (adopting the pinned maps), attach every hook, exit.
fn child_attach(bpffs_dir: &str, node: &str) {
    let dp = Datapath::open(&DatapathConfig {
        bpffs_dir: bpffs_dir.into(),
        map_sizes: test_sizes(),
    })
    .expect("child: open datapath");
    for (port, hook) in [
        ("hA", Hook::FromEndpoint),
        ("hA", Hook::ToEndpoint),
        ("hB", Hook::FromEndpoint),
        ("hB", Hook::ToEndpoint),
        ("up0", Hook::FromUplink),
    ] {
        let a = dp
            .attach(Some(node), &Interface::name(port), hook)
            .expect("child: attach");
        println!("{} replaced={}", a.pin.display(), a.replaced);
    }
}

/// Runs a loader process; returns the `replaced=` flag of each attachment.
fn run_loader(topo: &Topology) -> Vec<bool> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "child-attach",
            topo.bpffs.path.to_str().unwrap(),
            &topo.node.name,
        ])
        .output()
        .expect("run the loader process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loader failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| l.ends_with("replaced=true"))
        .collect()
}

/// The program id a pinned link runs (bpftool's JSON).
fn link_prog_id(pin: &Path) -> u64 {
    let json = run(
        "bpftool",
        &["-j", "link", "show", "pinned", pin.to_str().unwrap()],
    );
    let at = json
        .find("\"prog_id\":")
        .expect("prog_id in bpftool output")
        + "\"prog_id\":".len();
    json[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

fn link_pins(topo: &Topology) -> Vec<std::path::PathBuf> {
    let dir = topo.bpffs.path.join("links").join(&topo.node.name);
    let mut pins: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pins.sort();
    pins
}

fn traffic_is_filtered_across_an_agent_handover() {
    let topo = Topology::new("ho");
    let (a, b) = (topo.a.name.clone(), topo.b.name.clone());
    {
        // The tables, as a previous agent left them.
        let mut dp = topo.open();
        topo.fill_tables(&mut dp);
        topo.standard_policy(&mut dp);
    }
    let addr = |port| SocketAddr::from((IP_B, port));
    let _tcp = tcp_echo_server(&b, addr(8080));
    let _udp = udp_echo_server(&b, addr(5353));
    let denied = udp_echo_server(&b, addr(5354));

    // First loader: creates the links, then exits.
    assert_eq!(
        run_loader(&topo),
        vec![false; 5],
        "first loader creates every link"
    );
    let pins = link_pins(&topo);
    assert_eq!(pins.len(), 5);
    let first_progs: Vec<u64> = pins.iter().map(|p| link_prog_id(p)).collect();
    assert!(
        tcp_echo_ok(&a, addr(8080), Duration::from_secs(2)),
        "allowed traffic flows with no loader running"
    );
    assert!(
        !udp_echo_ok(&a, addr(5354), Duration::from_millis(300)),
        "denied traffic stays denied"
    );

    // A connection that must survive the handover (conntrack is pinned too).
    let mut conn = in_netns(&a, || {
        std::net::TcpStream::connect_timeout(&addr(8080), Duration::from_secs(2))
    })
    .expect("long-lived connection");
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    // Steady traffic while the second loader replaces every program.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, sent, answered, a) = (stop.clone(), sent.clone(), answered.clone(), a.clone());
        std::thread::spawn(move || {
            let _inside = palisade_datapath::NetnsGuard::enter(&a).unwrap();
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                socket.send_to(&n.to_be_bytes(), addr(5353)).unwrap();
                socket.send_to(b"denied", addr(5354)).unwrap();
                if matches!(socket.recv_from(&mut buf), Ok((8, _))) && buf[..8] == n.to_be_bytes() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        run_loader(&topo),
        vec![true; 5],
        "second loader updates every link in place"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();

    let (sent, answered) = (sent.load(Ordering::SeqCst), answered.load(Ordering::SeqCst));
    assert!(sent > 50, "enough traffic during the handover ({sent})");
    assert_eq!(answered, sent, "no allowed packet lost during the handover");
    assert_eq!(denied.count(), 0, "no denied packet got through");
    let second_progs: Vec<u64> = pins.iter().map(|p| link_prog_id(p)).collect();
    for (before, after) in first_progs.iter().zip(&second_progs) {
        assert_ne!(before, after, "the link runs the new loader's program");
    }
    use std::io::{Read, Write};
    conn.write_all(b"still").unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).expect("the connection survived");
    assert_eq!(&buf, b"still");
}
