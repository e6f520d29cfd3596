//! `overlay`: throughput between two endpoints on different nodes, palisade
//! (VXLAN overlay with GBP, 10,000 rules, an agent per node) against a
//! plain kernel VXLAN overlay without any policy (VXLAN devices between the
//! nodes with static FDB and neighbour entries, the kernel routing, no
//! eBPF), measured in one run: TCP with iperf3 and 64-byte UDP packets per
//! second (`palisade_bench::traffic`). Needs root and iperf3. See
//! bench/README.md, "Overlay".

use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use palisade_agent::{Agent, AgentConfig, OverlayConfig, PeerSpec, Underlay, UplinkSpec};
use palisade_bench::firewall::{palisade_rules, unused_pairs};
use palisade_bench::startup::{init_logging, serve_if_responder, SERVE_COMMAND};
use palisade_bench::testbed::{down_orphans, lab_name, FLOW_PORT};
use palisade_bench::traffic::{self, Flow, Window};
use palisade_lab::{Lab, LabOptions, Place};
use palisade_model::{load_str, LoadOptions, Protocol};
use serde::Serialize;

/// Prefix of the benchmark's lab names.
const LAB_PREFIX: &str = "ovbench";
/// The TCP port iperf3 listens on.
const IPERF_PORT: u16 = 5201;

/// The intent: one tenant, the sender on node-1, the receiver on node-2.
const INTENT: &str = "\
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: bench}
spec: {defaultAction: deny, vni: 4242}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: src, tenant: bench, labels: {role: src}}
spec: {node: node-1, ips: [10.0.1.10]}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: dst, tenant: bench, labels: {role: dst}}
spec: {node: node-2, ips: [10.0.2.10]}
";

/// Throughput between nodes over palisade's overlay and over plain VXLAN.
#[derive(Debug, Parser)]
#[command(name = "overlay")]
struct Args {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Non-matching deny rules on the receiver before the flows are allowed.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Measurements per variant (the table shows the median); runs alternate.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Length of each iperf3 run and of each packet-counting window, in seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

fn main() -> ExitCode {
    if let Some(code) = serve_if_responder("overlay") {
        return code;
    }
    init_logging("warn,overlay=info");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One variant's lab, taken down when dropped (with iperf3 and the agents).
struct Testbed {
    lab: Lab,
    flow: Flow,
    _agents: Vec<Agent>,
    _iperf: Option<KillOnDrop>,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Agents and iperf3 first: the lab's files and namespaces go next.
        self._iperf.take();
        for agent in std::mem::take(&mut self._agents) {
            let _ = agent.stop();
        }
        if let Err(e) = Lab::down(self.lab.name()) {
            eprintln!("taking lab {} down: {e}", self.lab.name());
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ip -n NETNS` with every line of `lines` as a batch.
fn ip_batch(netns: &str, lines: &[String]) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip")?;
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        (lines.join("\n") + "\n").as_bytes(),
    )?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -n {netns} -batch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The MAC of `dev` in `netns`.
fn mac_of(netns: &str, dev: &str) -> Result<String> {
    let out = Command::new("ip")
        .args(["-n", netns, "-o", "link", "show", dev])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC for {dev} in {netns}: {text}"))
}

fn build_lab(name: &str, plain: bool, responder: &[OsString]) -> Result<Lab> {
    let intent = load_str(INTENT, "overlay.rs", &LoadOptions::default())
        .map_err(|d| anyhow::anyhow!("the benchmark's intent: {d}"))?;
    Ok(Lab::up(
        &intent,
        &LabOptions {
            name: name.to_string(),
            plain,
            replace: false,
            responder_command: responder.to_vec(),
        },
    )?)
}

fn flow_of(lab: &Lab) -> Flow {
    let ep = |r: &str| lab.endpoint(r).expect("the benchmark's endpoints").clone();
    let (src, dst) = (ep("bench:src"), ep("bench:dst"));
    Flow {
        src_netns: src.netns,
        dst_netns: dst.netns,
        src: src.ips[0],
        dst: dst.ips[0],
        port: FLOW_PORT,
    }
}

/// The plain overlay: a plain-mode lab (the kernel routes) whose nodes reach
/// each other's endpoints through kernel VXLAN devices (VNI 42, UDP 4790,
/// static FDB and neighbour entries, no learning) instead of the underlay's
/// direct routes; endpoints get palisade's lab MTU (1450) for the same
/// segment sizes.
fn plain_vxlan(name: &str, responder: &[OsString]) -> Result<Testbed> {
    let lab = build_lab(name, true, responder)?;
    let nodes = lab.nodes().to_vec();
    let overlay_addr = |n: &palisade_lab::NodeInfo| format!("10.254.0.{}", n.index);
    for n in &nodes {
        ip_batch(
            &n.netns,
            &[
                format!(
                    "link add vxplain type vxlan id 42 dstport 4790 local {} dev underlay0 nolearning",
                    n.underlay_address
                ),
                format!("addr add {}/24 dev vxplain", overlay_addr(n)),
                "link set vxplain up".into(),
            ],
        )?;
    }
    let mtu = palisade_lab::workload_mtu(false);
    for n in &nodes {
        let mut lines = Vec::new();
        for other in nodes.iter().filter(|o| o.name != n.name) {
            let mac = mac_of(&other.netns, "vxplain")?;
            lines.push(format!(
                "neigh add {} lladdr {mac} dev vxplain nud permanent",
                overlay_addr(other)
            ));
            let bridge = Command::new("bridge")
                .args([
                    "-n", &n.netns, "fdb", "append", &mac, "dev", "vxplain", "dst",
                ])
                .arg(other.underlay_address.to_string())
                .status()?;
            if !bridge.success() {
                bail!("bridge fdb append failed in {}", n.netns);
            }
            for ep in lab.endpoints().iter().filter(|e| e.node == other.name) {
                lines.push(format!(
                    "route replace {}/32 via {} dev vxplain onlink",
                    ep.ips[0],
                    overlay_addr(other)
                ));
            }
        }
        for ep in lab.endpoints().iter().filter(|e| e.node == n.name) {
            lines.push(format!("link set {} mtu {mtu}", ep.host_port));
            ip_batch(&ep.netns, &[format!("link set eth0 mtu {mtu}")])?;
        }
        ip_batch(&n.netns, &lines)?;
    }
    let flow = flow_of(&lab);
    Ok(Testbed {
        lab,
        flow,
        _agents: Vec::new(),
        _iperf: None,
    })
}

/// palisade: a firewall-mode lab, an agent per node (in this process) with
/// the overlay, `rules` deny rules on the receiver, the UDP flow and iperf3's
/// TCP port allowed.
fn palisade(name: &str, rules: usize, responder: &[OsString]) -> Result<Testbed> {
    let lab = build_lab(name, false, responder)?;
    let dir = palisade_lab::state_dir(name).join("bench-palisade");
    std::fs::create_dir_all(dir.join("policies"))?;
    std::fs::write(dir.join("policies/intent.yaml"), INTENT)?;
    let mut text = palisade_rules(&unused_pairs(rules));
    // iperf3 between the same two endpoints.
    writeln!(
        text,
        "---\napiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: bench-tcp, tenant: bench}}\n\
         spec:\n  selector: has(role)\n  ingress: [{{action: allow, from: [{{selector: role == 'src'}}], ports: [{{protocol: TCP, port: {IPERF_PORT}}}]}}]\n\
         \x20 egress: [{{action: allow, to: [{{selector: role == 'dst'}}], ports: [{{protocol: TCP, port: {IPERF_PORT}}}]}}]"
    )?;
    std::fs::write(dir.join("policies/rules.yaml"), text)?;
    let started = Instant::now();
    let mut agents = Vec::new();
    for node in lab.nodes() {
        let mut config = AgentConfig::new(&node.name, vec![dir.join("policies")]);
        config.netns = Some(node.netns.clone());
        config.bpffs_dir = palisade_lab::agent_bpffs_dir(name, &node.name);
        config.state_dir = dir.join("state").join(&node.name);
        config.uplinks = lab
            .uplinks(&node.name)
            .into_iter()
            .map(|u| UplinkSpec {
                tenant: u.tenant,
                ifname: u.ifname,
                nexthop: u.nexthop,
            })
            .collect();
        config.overlay = Some(OverlayConfig {
            underlay: Underlay::Address(node.underlay_address),
            peers: lab
                .nodes()
                .iter()
                .filter(|o| o.name != node.name)
                .map(|o| PeerSpec {
                    node: o.name.clone(),
                    address: o.underlay_address,
                })
                .collect(),
        });
        agents.push(Agent::start(config)?);
    }
    let flow = flow_of(&lab);
    let (src, dst) = (
        Place::Endpoint("bench:src".into()),
        Place::Endpoint("bench:dst".into()),
    );
    while !lab
        .probe(
            &src,
            &dst,
            Protocol::Udp,
            FLOW_PORT,
            Duration::from_millis(500),
        )
        .is_reachable()
    {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("palisade: the flow does not pass 300 s after the agents started");
        }
    }
    tracing::info!(
        rules,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "palisade enforces"
    );
    Ok(Testbed {
        lab,
        flow,
        _agents: agents,
        _iperf: None,
    })
}

/// Starts iperf3's server in the receiver's namespace.
fn start_iperf(bed: &mut Testbed) -> Result<()> {
    let child = Command::new("ip")
        .args(["netns", "exec", &bed.flow.dst_netns, "iperf3", "-s", "-p"])
        .arg(IPERF_PORT.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start iperf3 (install it: apt-get install iperf3)")?;
    bed._iperf = Some(KillOnDrop(child));
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// One iperf3 run from the sender: received bits per second.
fn iperf(flow: &Flow, seconds: u64) -> Result<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", &flow.src_netns, "iperf3", "-J", "-c"])
        .arg(flow.dst.to_string())
        .args(["-p", &IPERF_PORT.to_string(), "-t", &seconds.to_string()])
        .output()
        .context("cannot run iperf3")?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 said: {}", String::from_utf8_lossy(&out.stdout)))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 failed: {}", report["error"]))
}

#[derive(Debug, Default, Serialize)]
struct Variant {
    name: &'static str,
    tcp_bps: Vec<f64>,
    udp_pps: Vec<f64>,
    udp_sent_pps: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Debug, Serialize)]
struct Report {
    rules: usize,
    runs: u64,
    seconds: u64,
    variants: Vec<Variant>,
    tcp_ratio: f64,
    udp_ratio: f64,
}

fn run(args: Args) -> Result<()> {
    for lab in down_orphans(LAB_PREFIX)? {
        eprintln!("removed lab {lab} left by an earlier run");
    }
    let exe = std::env::current_exe()?;
    let responder = vec![exe.into_os_string(), SERVE_COMMAND.into()];
    let mut plain = plain_vxlan(&lab_name(LAB_PREFIX, 0), &responder)?;
    let mut ours = palisade(&lab_name(LAB_PREFIX, 1), args.rules, &responder)?;
    start_iperf(&mut plain)?;
    start_iperf(&mut ours)?;
    let window = Window {
        warmup: Duration::from_millis(500),
        length: Duration::from_secs(args.seconds),
    };
    let mut results = [
        Variant {
            name: "plain VXLAN, no policy",
            ..Variant::default()
        },
        Variant {
            name: "palisade overlay, 10k rules",
            ..Variant::default()
        },
    ];
    results[1].name = if args.rules == 10_000 {
        "palisade overlay, 10k rules"
    } else {
        "palisade overlay"
    };
    for run in 0..args.runs {
        for (variant, bed) in results.iter_mut().zip([&plain, &ours]) {
            let bps = iperf(&bed.flow, args.seconds)?;
            let rates = traffic::measure(&bed.flow, window)?;
            tracing::info!(
                run,
                variant = variant.name,
                gbps = bps / 1e9,
                pps = rates.received_pps,
                "measured"
            );
            variant.tcp_bps.push(bps);
            variant.udp_pps.push(rates.received_pps);
            variant.udp_sent_pps.push(rates.sent_pps);
        }
    }
    let ratio = |f: fn(&Variant) -> &Vec<f64>| median(f(&results[1])) / median(f(&results[0]));
    let report = Report {
        rules: args.rules,
        runs: args.runs,
        seconds: args.seconds,
        tcp_ratio: ratio(|v| &v.tcp_bps),
        udp_ratio: ratio(|v| &v.udp_pps),
        variants: results.into_iter().collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<30} {:>14} {:>16} {:>14}",
            "variant", "TCP Gbit/s", "UDP 64 B pps", "UDP sent pps"
        );
        for v in &report.variants {
            println!(
                "{:<30} {:>14.2} {:>16.0} {:>14.0}",
                v.name,
                median(&v.tcp_bps) / 1e9,
                median(&v.udp_pps),
                median(&v.udp_sent_pps)
            );
        }
        println!(
            "palisade / plain VXLAN: TCP {:.3}, UDP 64 B pps {:.3} (medians of {} runs, {} rules)",
            report.tcp_ratio, report.udp_ratio, report.runs, report.rules
        );
    }
    drop(ours);
    drop(plain);
    Ok(())
}
