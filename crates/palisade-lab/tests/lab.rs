//! The lab against the real kernel: namespaces, veth pairs, responders and
//! probes with real packets. Needs root. Every test builds its own lab with a
//! unique name and a guard that takes it down even when the test panics.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_lab::naming::{lab_prefix, node_netns};
use palisade_lab::netns::{list_with_prefix, read_sysctl};
use palisade_lab::{
    ordered_pairs, state_dir, Lab, LabError, LabOptions, Place, ProbeResult, Uplink,
};
use palisade_model::{Endpoint, Intent, Protocol, Tenant, TenantDefault};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_millis(800);

/// Takes the lab down when dropped, also on panic.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            eprintln!("cleaning up lab {}: {e}", self.0);
        }
    }
}

/// A lab name no other test, test run or engineer uses at the same time.
fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

fn options(name: &str, plain: bool) -> LabOptions {
    LabOptions {
        name: name.to_string(),
        plain,
        replace: false,
        responder_command: vec![env!("CARGO_BIN_EXE_palisade-lab-responder").into()],
    }
}

fn endpoint(tenant: &str, name: &str, node: &str, ips: &[&str], serve: &[&str]) -> Endpoint {
    Endpoint {
        tenant: tenant.into(),
        namespace: None,
        name: name.into(),
        labels: Default::default(),
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        mac: None,
        node: node.into(),
        interface: None,
        serve: serve
            .iter()
            .map(|s| palisade_lab::responder::parse_serve_port(s).unwrap())
            .collect(),
    }
}

fn intent(endpoints: Vec<Endpoint>) -> Intent {
    let mut intent = Intent {
        endpoints,
        ..Default::default()
    };
    for ep in &intent.endpoints {
        intent.tenants.insert(
            ep.tenant.clone(),
            Tenant {
                name: ep.tenant.clone(),
                default_action: TenantDefault::Deny,
                vni: Some(1),
                cidrs: vec![],
            },
        );
    }
    intent.endpoints.sort_by_key(|e| e.full_ref());
    intent
}

fn p(text: &str) -> Place {
    text.parse().unwrap()
}

/// Brings up a lab; the guard comes first so that it is dropped last.
fn up(tag: &str, plain: bool, intent: &Intent) -> (Guard, Lab) {
    let name = unique(tag);
    let guard = Guard(name.clone());
    let lab = Lab::up(intent, &options(&name, plain)).unwrap_or_else(|e| panic!("up {name}: {e}"));
    (guard, lab)
}

/// Three endpoints of one tenant on one node, each serving tcp/80 and udp/53.
fn one_node() -> Intent {
    let serve = ["tcp/80", "udp/53"];
    intent(vec![
        endpoint("acme", "web-1", "node-1", &["10.0.1.10"], &serve),
        endpoint(
            "acme",
            "app-1",
            "node-1",
            &["10.0.2.10", "10.0.2.11"],
            &serve,
        ),
        endpoint("acme", "db-1", "node-1", &["10.0.3.10"], &serve),
    ])
}

fn reply(name: &str) -> ProbeResult {
    ProbeResult::Reachable {
        reply: Some(name.to_string()),
    }
}

fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {netns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

/// (ifname, mac, [addr/prefix]) of every interface in `netns`.
fn interfaces(netns: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let json = ip_json(netns, &["addr", "show"]);
    json.as_array()
        .unwrap()
        .iter()
        .map(|link| {
            let addrs = link["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
                .collect();
            (
                link["ifname"].as_str().unwrap().to_string(),
                (
                    link["address"].as_str().unwrap_or_default().to_string(),
                    addrs,
                ),
            )
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie has exited: only a running process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn up_then_down_leaves_nothing_behind() {
    let intent = intent(vec![
        endpoint("acme", "web-1", "node-1", &["10.0.1.10"], &["tcp/80"]),
        endpoint("acme", "db-1", "node-2", &["10.0.3.10"], &["tcp/5432"]),
        endpoint("globex", "web-1", "node-1", &["10.0.1.10"], &[]),
    ]);
    let (_guard, lab) = up("updown", false, &intent);
    let name = lab.name().to_string();
    let prefix = lab_prefix(&name);

    // underlay + 2 nodes + 3 endpoints + 3 worlds (acme@1, globex@1, acme@2)
    assert_eq!(list_with_prefix(&prefix).unwrap().len(), 9);
    // Responders: two endpoints that serve something, three worlds.
    let pids: Vec<i32> = lab.state().responders.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 5);
    assert!(pids.iter().all(|p| alive(*p)));
    assert_eq!(Lab::open(&name).unwrap().state(), lab.state());
    assert!(Lab::list().unwrap().contains(&name));

    let summary = Lab::down(&name).unwrap();
    assert_eq!((summary.namespaces, summary.processes), (9, 5));
    assert!(list_with_prefix(&prefix).unwrap().is_empty());
    assert!(pids.iter().all(|p| !alive(*p)), "responders left running");
    assert!(!state_dir(&name).exists());
    assert!(matches!(
        Lab::open(&name),
        Err(LabError::LabNotFound { .. })
    ));
    assert!(!Lab::list().unwrap().contains(&name));

    // Idempotent.
    assert_eq!(Lab::down(&name).unwrap(), Default::default());
}

#[test]
fn down_after_a_crash_finds_namespaces_and_processes_by_name() {
    let (_guard, lab) = up("crash", true, &one_node());
    let name = lab.name().to_string();
    let pids: Vec<i32> = lab.state().responders.iter().map(|r| r.pid).collect();
    // A crash of the earlier run: the state is gone, namespaces and responders stay.
    std::fs::remove_dir_all(state_dir(&name)).unwrap();

    let summary = Lab::down(&name).unwrap();
    assert_eq!(summary.processes, pids.len());
    assert!(summary.namespaces >= 5);
    assert!(list_with_prefix(&lab_prefix(&name)).unwrap().is_empty());
    assert!(pids.iter().all(|p| !alive(*p)), "responders left running");
}

#[test]
fn topology_matches_the_documented_layout() {
    let mut intent = one_node();
    intent.endpoints.push(endpoint(
        "acme",
        "api",
        "node-2",
        &["10.0.9.9", "fd00::9"],
        &[],
    ));
    intent.endpoints[0].interface = Some("tap-app".into());
    intent.endpoints[0].mac = Some([0x52, 0x54, 0, 0, 0, 1]);
    let (_guard, lab) = up("layout", false, &intent);
    let name = lab.name();

    let app = lab.endpoint("acme:app-1").unwrap();
    assert_eq!(app.netns, format!("pl_{name}_e_acme_-_app-1"));
    let inside = interfaces(&app.netns);
    assert_eq!(inside["eth0"].0, "52:54:00:00:00:01");
    assert_eq!(inside["eth0"].1, ["10.0.2.10/32", "10.0.2.11/32"]);
    assert_eq!(inside["lo"].1, ["127.0.0.1/8"]);
    let routes = ip_json(&app.netns, &["route", "show"]);
    assert_eq!(routes[0]["dst"], "default");
    assert_eq!(routes[0]["gateway"], "169.254.1.1");
    assert_eq!(routes[0]["flags"][0], "onlink");
    let neighbours = ip_json(&app.netns, &["neigh", "show"]);
    assert_eq!(
        neighbours.as_array().unwrap().len(),
        0,
        "no static gateway neighbour"
    );
    assert_eq!(
        read_sysctl(&app.netns, "net/ipv6/conf/all/disable_ipv6").unwrap(),
        "1"
    );

    let node1 = node_netns(name, "node-1");
    let on_node = interfaces(&node1);
    assert_eq!(on_node["tap-app"].0, app.host_mac.to_string());
    assert!(
        on_node["tap-app"].1.is_empty(),
        "host-side ports have no address"
    );
    let web = lab.endpoint("acme:web-1").unwrap();
    assert!(web.host_port.starts_with("pe") && on_node.contains_key(&web.host_port));
    assert_eq!(on_node["underlay0"].1, ["10.255.0.1/24"]);
    assert_eq!(on_node["up1"].1, ["169.254.101.1/30"]);
    assert_eq!(read_sysctl(&node1, "net/ipv4/ip_forward").unwrap(), "0");
    assert_eq!(
        read_sysctl(
            &node1,
            &format!("net/ipv4/conf/{}/proxy_arp", web.host_port)
        )
        .unwrap(),
        "0"
    );

    // node-2 is second in name order; the IPv6 address was skipped.
    assert_eq!(
        interfaces(&node_netns(name, "node-2"))["underlay0"].1,
        ["10.255.0.2/24"]
    );
    assert_eq!(
        lab.endpoint("acme:api").unwrap().ips,
        [Ipv4Addr::new(10, 0, 9, 9)]
    );

    let world = &lab.worlds()[0];
    assert_eq!(world.netns, format!("pl_{name}_w_node-1_acme"));
    assert_eq!(
        interfaces(&world.netns)["eth0"].1,
        ["169.254.101.2/30", "198.51.100.1/32"]
    );
    assert_eq!(
        lab.uplinks("node-1"),
        [Uplink {
            tenant: "acme".into(),
            ifname: "up1".into(),
            nexthop: Ipv4Addr::new(169, 254, 101, 2),
        }]
    );

    let bridge_ports = ip_json(
        &lab.state().underlay_netns,
        &["link", "show", "master", "br0"],
    );
    let mut ports: Vec<_> = bridge_ports
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, ["node1", "node2"]);
}

#[test]
fn plain_mode_carries_tcp_udp_and_icmp_between_endpoints_on_a_node() {
    let (_guard, lab) = up("plain", true, &one_node());
    let (web, app, db) = (p("acme:web-1"), p("acme:app-1"), p("acme:db-1"));
    let probe = |from, to, proto, port| lab.probe(from, to, proto, port, TIMEOUT);

    assert_eq!(probe(&web, &db, Protocol::Tcp, 80), reply("acme:db-1"));
    assert_eq!(probe(&db, &web, Protocol::Tcp, 80), reply("acme:web-1"));
    assert_eq!(probe(&web, &app, Protocol::Udp, 53), reply("acme:app-1"));
    assert_eq!(
        probe(&app, &db, Protocol::Icmp, 0),
        ProbeResult::Reachable { reply: None }
    );

    // UDP answers come from the address that was asked, also the second one.
    let second = Ipv4Addr::new(10, 0, 2, 11);
    assert_eq!(
        lab.probe_address(&web, second, Protocol::Udp, 53, TIMEOUT),
        reply("acme:app-1")
    );
    assert_eq!(
        read_sysctl(&node_netns(lab.name(), "node-1"), "net/ipv4/ip_forward").unwrap(),
        "1"
    );
}

#[test]
fn closed_ports_are_reachable_without_reply_and_silent_addresses_are_blocked() {
    let (_guard, lab) = up("closed", true, &one_node());
    let (web, db) = (p("acme:web-1"), p("acme:db-1"));

    // Nobody serves tcp/81 or udp/54: a reset and a port unreachable come back.
    let refused = ProbeResult::Reachable { reply: None };
    assert_eq!(lab.probe(&web, &db, Protocol::Tcp, 81, TIMEOUT), refused);
    assert_eq!(lab.probe(&web, &db, Protocol::Udp, 54, TIMEOUT), refused);

    // Nobody has 10.99.0.1: the world drops it and nothing comes back.
    let silent = Ipv4Addr::new(10, 99, 0, 1);
    for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
        let started = Instant::now();
        let result = lab.probe_address(&web, silent, proto, 80, TIMEOUT);
        let took = started.elapsed();
        assert_eq!(result, ProbeResult::Blocked, "{proto}");
        // Not a speed check: the probe must honour its timeout, neither
        // giving up early nor hanging.
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(2),
            "{proto} took {took:?}"
        );
    }
}

#[test]
fn the_world_and_endpoints_reach_each_other_in_plain_mode() {
    let (_guard, lab) = up("world", true, &one_node());
    let web = p("acme:web-1");
    let world = p("world:acme@node-1");
    assert_eq!(world, Place::world("node-1", "acme"));

    assert_eq!(
        lab.probe(&web, &world, Protocol::Tcp, 443, TIMEOUT),
        reply("world:acme@node-1")
    );
    assert_eq!(
        lab.probe(&web, &world, Protocol::Udp, 53, TIMEOUT),
        reply("world:acme@node-1")
    );
    assert_eq!(
        lab.probe(&world, &web, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:web-1")
    );
    assert_eq!(
        lab.probe(&world, &web, Protocol::Icmp, 0, TIMEOUT),
        ProbeResult::Reachable { reply: None }
    );
}

#[test]
fn plain_mode_reaches_endpoints_and_worlds_of_other_nodes_over_the_underlay() {
    let intent = intent(vec![
        endpoint("acme", "a", "node-1", &["10.0.0.1"], &["tcp/80"]),
        endpoint("acme", "b", "node-2", &["10.0.0.2"], &["tcp/80"]),
        endpoint("globex", "c", "node-2", &["10.0.0.3"], &["tcp/80"]),
    ]);
    let (_guard, lab) = up("multinode", true, &intent);
    let (a, b, c) = (p("acme:a"), p("acme:b"), p("globex:c"));
    assert_eq!(
        lab.probe(&a, &b, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:b")
    );
    assert_eq!(
        lab.probe(&c, &a, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:a")
    );
    // Each tenant on node-2 leaves through its own world (same address, own namespace).
    let world = p("world:acme@node-2");
    assert_eq!(
        lab.probe(&b, &world, Protocol::Tcp, 80, TIMEOUT),
        reply("world:acme@node-2")
    );
    assert_eq!(
        lab.probe(&c, &world, Protocol::Tcp, 80, TIMEOUT),
        reply("world:globex@node-2")
    );
}

#[test]
fn three_nodes_two_tenants_all_pairs_reachable_in_plain_mode() {
    let endpoints = (0..12)
        .map(|i| {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let node = format!("node-{}", i % 3 + 1);
            endpoint(
                tenant,
                &format!("w{i}"),
                &node,
                &[&format!("10.2.0.{}", i + 1)],
                &["tcp/80"],
            )
        })
        .collect();
    let intent = intent(endpoints);
    let started = Instant::now();
    let (guard, lab) = up("three", true, &intent);
    println!(
        "up, 3 nodes, 12 endpoints, 6 worlds: {:?}",
        started.elapsed()
    );
    assert_eq!(lab.nodes().len(), 3);
    assert_eq!(lab.worlds().len(), 6);

    let pairs = ordered_pairs(&lab.endpoint_places());
    let records = lab.probe_matrix(&pairs, Protocol::Tcp, 80, Duration::from_secs(2));
    for record in &records {
        assert_eq!(
            record.result,
            reply(&record.to),
            "{} -> {}",
            record.from,
            record.to
        );
    }
    let started = Instant::now();
    drop(guard);
    println!("down: {:?}", started.elapsed());
}

#[test]
fn without_the_firewall_a_non_plain_lab_forwards_nothing() {
    let (_guard, lab) = up("nofw", false, &one_node());
    let (web, db) = (p("acme:web-1"), p("acme:db-1"));
    let world = p("world:acme@node-1");
    assert_eq!(
        lab.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT),
        ProbeResult::Blocked
    );
    assert_eq!(
        lab.probe(&web, &world, Protocol::Icmp, 0, TIMEOUT),
        ProbeResult::Blocked
    );
    assert_eq!(
        lab.probe(&world, &web, Protocol::Tcp, 80, TIMEOUT),
        ProbeResult::Blocked
    );
    // The uplink itself works: the node reaches the world's side of it.
    let nexthop = lab.uplinks("node-1")[0].nexthop;
    assert_eq!(
        lab.probe_address(&p("node@node-1"), nexthop, Protocol::Tcp, 80, TIMEOUT),
        reply("world:acme@node-1")
    );
}

#[test]
fn a_matrix_of_twenty_endpoints_probes_every_ordered_pair() {
    let endpoints = (0..20)
        .map(|i| {
            endpoint(
                "acme",
                &format!("w{i:02}"),
                "node-1",
                &[&format!("10.1.0.{}", i + 1)],
                &["tcp/80", "udp/53"],
            )
        })
        .collect();
    let intent = intent(endpoints);
    let started = Instant::now();
    let (_guard, lab) = up("matrix", true, &intent);
    println!("up with 20 endpoints: {:?}", started.elapsed());

    let places: Vec<Place> = intent.endpoints.iter().map(Place::endpoint).collect();
    let pairs = ordered_pairs(&places);
    assert_eq!(pairs.len(), 380);
    for (proto, port) in [
        (Protocol::Tcp, 80),
        (Protocol::Udp, 53),
        (Protocol::Icmp, 0),
    ] {
        let started = Instant::now();
        let records = lab.probe_matrix(&pairs, proto, port, Duration::from_secs(2));
        println!(
            "{proto} matrix of {} probes: {:?}",
            records.len(),
            started.elapsed()
        );
        assert_eq!(records.len(), 380);
        for (record, (from, to)) in records.iter().zip(&pairs) {
            assert_eq!(
                (record.from.as_str(), record.to.as_str()),
                (from.label().as_str(), to.label().as_str())
            );
            let expected = match proto {
                Protocol::Icmp => ProbeResult::Reachable { reply: None },
                _ => reply(&to.label()),
            };
            assert_eq!(
                record.result, expected,
                "{} -> {} {proto}",
                record.from, record.to
            );
        }
    }

    // A place the lab does not have spoils its own record only.
    let mixed = [
        (p("acme:w00"), p("acme:nope")),
        (p("acme:w00"), p("acme:w01")),
    ];
    let records = lab.probe_matrix(&mixed, Protocol::Tcp, 80, TIMEOUT);
    assert!(
        matches!(&records[0].result, ProbeResult::Error { message } if message.contains("acme:nope"))
    );
    assert_eq!(records[1].result, reply("acme:w01"));
}

#[test]
fn a_matrix_of_blocked_probes_waits_out_the_timeout_once() {
    let endpoints = (0..20)
        .map(|i| {
            endpoint(
                "acme",
                &format!("w{i:02}"),
                "node-1",
                &[&format!("10.1.0.{}", i + 1)],
                &["tcp/80"],
            )
        })
        .collect();
    let intent = intent(endpoints);
    // Without the firewall and without plain mode nothing gets through.
    let (_guard, lab) = up("blocked", false, &intent);
    let pairs = ordered_pairs(&lab.endpoint_places());
    let started = Instant::now();
    let records = lab.probe_matrix(&pairs, Protocol::Tcp, 80, Duration::from_secs(1));
    println!(
        "TCP matrix of {} blocked probes, 1 s timeout: {:?}",
        records.len(),
        started.elapsed()
    );
    assert_eq!(records.len(), 380);
    assert!(
        records.iter().all(|r| r.result == ProbeResult::Blocked),
        "{records:?}"
    );
}

#[test]
fn two_labs_at_once_do_not_interfere() {
    // The same intent twice, built at the same time: same addresses, same names.
    let intent = one_node();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| up("twin-a", true, &intent));
        let b = s.spawn(|| up("twin-b", true, &intent));
        (a.join().unwrap(), b.join().unwrap())
    });
    let ((guard_a, lab_a), (_guard_b, lab_b)) = (a, b);
    let (web, db) = (p("acme:web-1"), p("acme:db-1"));
    assert_eq!(
        lab_a.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:db-1")
    );
    assert_eq!(
        lab_b.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:db-1")
    );
    assert_ne!(lab_a.netns(&web).unwrap(), lab_b.netns(&web).unwrap());

    drop(guard_a);
    assert!(list_with_prefix(&lab_prefix(lab_a.name()))
        .unwrap()
        .is_empty());
    assert_eq!(
        list_with_prefix(&lab_prefix(lab_b.name())).unwrap().len(),
        lab_b.state().namespaces().len()
    );
    assert!(lab_b.state().responders.iter().all(|r| alive(r.pid)));
    assert_eq!(
        lab_b.probe(&web, &db, Protocol::Udp, 53, TIMEOUT),
        reply("acme:db-1")
    );
    // lab_a's namespaces are gone: probing it says so instead of hanging.
    let gone = lab_a.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT);
    assert!(
        matches!(&gone, ProbeResult::Error { message } if message.contains("/run/netns")),
        "{gone:?}"
    );
}

#[test]
fn up_on_an_existing_lab_fails_with_a_hint_unless_replace() {
    let intent = one_node();
    let (_guard, lab) = up("twice", true, &intent);
    let err = Lab::up(&intent, &options(lab.name(), true)).unwrap_err();
    assert!(matches!(err, LabError::LabExists { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("palisade lab down {}", lab.name())),
        "{text}"
    );
    // The failed up did not touch the running lab.
    let (web, db) = (p("acme:web-1"), p("acme:db-1"));
    assert_eq!(
        lab.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:db-1")
    );

    // Leftover namespaces alone (no state) also count as an existing lab.
    std::fs::remove_dir_all(state_dir(lab.name())).unwrap();
    assert!(matches!(
        Lab::up(&intent, &options(lab.name(), true)),
        Err(LabError::LabExists { .. })
    ));

    let replaced = Lab::up(
        &intent,
        &LabOptions {
            replace: true,
            ..options(lab.name(), true)
        },
    )
    .unwrap();
    assert!(
        lab.state().responders.iter().all(|r| !alive(r.pid)),
        "old responders survived replace"
    );
    assert_eq!(
        replaced.probe(&web, &db, Protocol::Tcp, 80, TIMEOUT),
        reply("acme:db-1")
    );
}

#[test]
fn a_failed_up_removes_what_it_made() {
    let name = unique("failed");
    let _guard = Guard(name.clone());
    let broken = LabOptions {
        responder_command: vec!["/bin/false".into()],
        ..options(&name, true)
    };
    let err = Lab::up(&one_node(), &broken).unwrap_err();
    assert!(matches!(err, LabError::Responder { .. }), "{err}");
    assert!(err.to_string().contains("exited"), "{err}");
    assert!(list_with_prefix(&lab_prefix(&name)).unwrap().is_empty());
    assert!(!state_dir(&name).exists());

    // Overlapping tenants cannot be built in plain mode, and nothing is made.
    let overlap = intent(vec![
        endpoint("acme", "web", "n", &["10.0.0.1"], &[]),
        endpoint("globex", "web", "n", &["10.0.0.1"], &[]),
    ]);
    let err = Lab::up(&overlap, &options(&name, true)).unwrap_err();
    assert!(matches!(err, LabError::PlainOverlap { .. }), "{err}");
    assert!(!Path::new(&state_dir(&name)).exists());
}

#[test]
fn exec_runs_a_command_inside_an_endpoint() {
    let (_guard, lab) = up("exec", false, &one_node());
    let web = p("acme:web-1");
    let mac = lab.endpoint("acme:web-1").unwrap().mac.to_string();
    // /sys shows the endpoint's own interfaces, and the exit status comes back.
    let check = format!("test \"$(cat /sys/class/net/eth0/address)\" = {mac} && ip -4 addr show dev eth0 | grep -q 10.0.1.10");
    let status = lab.exec(&web, &["sh", "-c", &check]).unwrap();
    assert!(status.success(), "{status}");
    let status = lab.exec(&web, &["sh", "-c", "exit 3"]).unwrap();
    assert_eq!(status.code(), Some(3));
    // The host's /sys is untouched.
    assert!(
        !Path::new("/sys/class/net/eth0/address").exists()
            || std::fs::read_to_string("/sys/class/net/eth0/address")
                .unwrap()
                .trim()
                != mac
    );

    let unknown = p("acme:nope");
    assert!(matches!(
        lab.exec(&unknown, &["true"]),
        Err(LabError::UnknownPlace { .. })
    ));
    let probed = lab.probe(&unknown, &web, Protocol::Tcp, 80, TIMEOUT);
    assert!(matches!(probed, ProbeResult::Error { .. }), "{probed:?}");
}

#[test]
fn the_three_tier_example_builds_from_its_yaml_files() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/three-tier");
    let intent = palisade_model::load_paths(&[&example], &palisade_model::LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e:?}", example.display()));

    // Two tenants with the same addresses: plain mode cannot route them.
    let name = unique("example-plain");
    let _plain_guard = Guard(name.clone());
    let err = Lab::up(&intent, &options(&name, true)).unwrap_err();
    assert!(matches!(err, LabError::PlainOverlap { .. }), "{err}");

    let (_guard, lab) = up("example", false, &intent);
    assert_eq!(lab.endpoints().len(), intent.endpoints.len());
    let serving = intent
        .endpoints
        .iter()
        .filter(|e| !e.serve.is_empty())
        .count();
    assert_eq!(lab.state().responders.len(), serving + lab.worlds().len());
    // The same address in two tenants, each in its own namespace.
    let acme = lab.endpoint("acme:web-1").unwrap();
    let globex = lab.endpoint("globex:web-1").unwrap();
    assert_eq!(acme.ips, globex.ips);
    assert_ne!(acme.netns, globex.netns);
    // The world address stays clear of both tenants' 10.0.0.0/16.
    assert_eq!(lab.world_address(), Ipv4Addr::new(198, 51, 100, 1));
}

/// `ip -n NETNS -j link show DEV` of one link.
fn link(netns: &str, dev: &str) -> Value {
    ip_json(netns, &["link", "show", dev])[0].clone()
}

#[test]
fn an_endpoint_moves_to_another_node_with_its_namespace_addresses_and_macs() {
    let intent = intent(vec![
        endpoint(
            "acme",
            "web-1",
            "node-1",
            &["10.0.1.10", "10.0.1.11"],
            &["tcp/80"],
        ),
        endpoint("acme", "db-1", "node-2", &["10.0.3.10"], &[]),
    ]);
    let (_guard, mut lab) = up("move", false, &intent);
    let before = lab.endpoint("acme:web-1").unwrap().clone();
    let lab_name = lab.name().to_string();
    let node = |name: &str| node_netns(&lab_name, name);
    // Firewall mode: the workload's links leave room for the overlay.
    assert_eq!(link(&before.netns, "eth0")["mtu"], 1450);
    assert_eq!(link(&node("node-1"), &before.host_port)["mtu"], 1450);
    assert_eq!(link(&node("node-1"), "underlay0")["mtu"], 1500);
    let responder_before = lab.state().responders.clone();

    let moved = lab.move_endpoint("acme:web-1", "node-2").unwrap();
    assert_eq!(
        (moved.from.as_str(), moved.to.as_str()),
        ("node-1", "node-2")
    );
    let after = lab.endpoint("acme:web-1").unwrap().clone();
    assert_eq!(after.node, "node-2");
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
    assert_eq!(
        Lab::open(lab.name()).unwrap().state(),
        lab.state(),
        "recorded"
    );
    // The port left node-1 and is on node-2 with its name, MAC and MTU.
    assert!(!interfaces(&node("node-1")).contains_key(&before.host_port));
    let port = link(&node("node-2"), &before.host_port);
    assert_eq!(port["address"], before.host_mac.to_string());
    assert_eq!(port["mtu"], 1450);
    assert!(port["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    // Inside: eth0 again, same MAC, addresses, MTU, the route, the same responder.
    let inside = interfaces(&before.netns);
    let (mac, addrs) = &inside["eth0"];
    assert_eq!(mac, &before.mac.to_string());
    assert_eq!(addrs, &["10.0.1.10/32", "10.0.1.11/32"]);
    assert_eq!(link(&before.netns, "eth0")["mtu"], 1450);
    let routes = ip_json(&before.netns, &["route", "show"]);
    assert_eq!(routes[0]["gateway"], palisade_lab::ENDPOINT_GATEWAY);
    assert_eq!(lab.state().responders, responder_before);
    assert!(responder_before.iter().all(|r| alive(r.pid)));

    // Refused: the same node again, an unknown node, plain mode.
    assert!(matches!(
        lab.move_endpoint("acme:web-1", "node-2"),
        Err(LabError::Move { .. })
    ));
    let err = lab
        .move_endpoint("acme:web-1", "node-9")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node-9") && err.contains("node-1, node-2"),
        "{err}"
    );
    let (_plain_guard, mut plain) = up("move-plain", true, &intent);
    assert!(matches!(
        plain.move_endpoint("acme:web-1", "node-2"),
        Err(LabError::Move { .. })
    ));
}
