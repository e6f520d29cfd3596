//! The firewalls the benchmarks compare, each set up in the node namespace
//! of a [`Testbed`]: iptables (Debian's default backend, and the legacy one),
//! nftables as a linear chain and with one set lookup, and palisade (its
//! agent, in this process).
//!
//! Every firewall gets the same rules: one DROP per (source address,
//! destination port) pair that no flow uses, then an ACCEPT of the measured
//! flow, and a FORWARD policy of DROP. Rule sets are generated as text and
//! loaded with the tool's own loader through `ip netns exec <node>`, so the
//! machine's own firewall is never touched.

use std::any::Any;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::testbed::Testbed;
use crate::traffic::Flow;

/// A firewall in the node between the two endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firewall {
    /// The kernel forwards; nothing filters (plain-mode lab).
    None,
    /// `iptables-restore`, with whichever backend the system's `iptables` uses
    /// (Debian: nf_tables; see [`iptables_version`]).
    Iptables,
    /// `iptables-legacy-restore`: the x_tables backend.
    IptablesLegacy,
    /// nftables, one rule per blocked pair in one chain.
    NftLinear,
    /// nftables, one rule looking the (source, port) pair up in a set.
    NftSet,
    /// palisade's eBPF datapath on the endpoint ports, driven by its agent.
    Palisade,
}

impl Firewall {
    /// Every firewall, in the order the benchmark reports them.
    pub const ALL: [Firewall; 6] = [
        Firewall::None,
        Firewall::Iptables,
        Firewall::IptablesLegacy,
        Firewall::NftLinear,
        Firewall::NftSet,
        Firewall::Palisade,
    ];

    /// The short name used on the command line and in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Firewall::None => "none",
            Firewall::Iptables => "iptables",
            Firewall::IptablesLegacy => "iptables-legacy",
            Firewall::NftLinear => "nft-linear",
            Firewall::NftSet => "nft-set",
            Firewall::Palisade => "palisade",
        }
    }

    /// Whether the testbed forwards with the kernel alone (every firewall
    /// but palisade sits on top of that); palisade needs a firewall-mode lab.
    pub fn plain_lab(self) -> bool {
        self != Firewall::Palisade
    }

    /// Sets this firewall up in `testbed`'s node: DROP for every pair in
    /// `blocked`, then ACCEPT of the testbed's flow.
    pub fn setup(self, testbed: &Testbed, blocked: &[(Ipv4Addr, u16)]) -> Result<Setup> {
        let flow = testbed.flow()?;
        let node = testbed.node_netns();
        let (program, args, rules): (&str, &[&str], String) = match self {
            Firewall::None => return Ok(Setup::ready()),
            Firewall::Palisade => return setup_palisade(testbed, blocked),
            Firewall::Iptables => ("iptables-restore", &[], iptables_rules(blocked, &flow)),
            Firewall::IptablesLegacy => (
                "iptables-legacy-restore",
                &[],
                iptables_rules(blocked, &flow),
            ),
            Firewall::NftLinear => ("nft", &["-f", "-"], nft_linear_rules(blocked, &flow)),
            Firewall::NftSet => ("nft", &["-f", "-"], nft_set_rules(blocked, &flow)),
        };
        if !on_path(program) {
            return Ok(Setup::Unavailable {
                reason: format!("{program} is not installed"),
            });
        }
        load(node, program, args, &rules)?;
        Ok(Setup::ready())
    }
}

impl fmt::Display for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Firewall {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Firewall, String> {
        Firewall::ALL
            .into_iter()
            .find(|f| f.key() == s)
            .ok_or_else(|| {
                let keys: Vec<&str> = Firewall::ALL.iter().map(|f| f.key()).collect();
                format!(
                    "unknown firewall {s:?}; expected one of {}",
                    keys.join(", ")
                )
            })
    }
}

/// Whether a firewall could be set up.
pub enum Setup {
    /// Traffic can be measured.
    Ready {
        /// Whatever must stay alive while the variant is measured (an agent
        /// process guard, say); dropped before the lab goes down.
        keep: Option<Box<dyn Any>>,
    },
    /// This firewall cannot run here; the benchmark reports why.
    Unavailable {
        /// Why, for the report (e.g. "iptables-legacy-restore is not installed").
        reason: String,
    },
}

impl Setup {
    fn ready() -> Setup {
        Setup::Ready { keep: None }
    }
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setup::Ready { keep } => f
                .debug_struct("Ready")
                .field("keep", &keep.is_some())
                .finish(),
            Setup::Unavailable { reason } => f
                .debug_struct("Unavailable")
                .field("reason", reason)
                .finish(),
        }
    }
}

/// palisade on the testbed: the agent enforcing, on the endpoint ports of
/// `testbed` (a firewall-mode lab: nothing flows without it), a deny for
/// every pair in `blocked` (as world CIDR `/32` peers on that UDP port) and
/// an allow of the flow `bench:src` → `bench:dst` on
/// [`FLOW_PORT`](crate::testbed::FLOW_PORT).
///
/// The agent runs in this process (its threads in the node's namespace),
/// with its policy directory, state and pins under the lab's directories
/// (removed when the lab goes down). Returns once the flow passes; the agent
/// stops when the returned `keep` is dropped. One palisade setup per testbed
/// at a time: drop the previous `Setup` before setting up again.
pub fn setup_palisade(testbed: &Testbed, blocked: &[(Ipv4Addr, u16)]) -> Result<Setup> {
    let lab = testbed.lab();
    let node = &lab.nodes()[0];
    let dir = palisade_lab::state_dir(lab.name()).join("bench-palisade");
    let policies = dir.join("policies");
    let write = |path: std::path::PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| BenchError::Write { path, source })
    };
    write(policies.join("testbed.yaml"), crate::testbed::TESTBED_YAML)?;
    write(policies.join("rules.yaml"), &palisade_rules(blocked))?;

    let mut config = palisade_agent::AgentConfig::new(&node.name, vec![policies]);
    config.netns = Some(node.netns.clone());
    config.bpffs_dir = palisade_lab::agent_bpffs_dir(lab.name(), &node.name);
    config.state_dir = dir.join("state");
    config.uplinks = lab
        .uplinks(&node.name)
        .into_iter()
        .map(|u| palisade_agent::UplinkSpec {
            tenant: u.tenant,
            ifname: u.ifname,
            nexthop: u.nexthop,
        })
        .collect();
    let started = std::time::Instant::now();
    let state_dir = config.state_dir.clone();
    let agent = palisade_agent::Agent::start(config)?;

    // Compiling and loading thousands of rules takes a moment: wait for the
    // agent's first reconcile (probing earlier only fails, and leaves the
    // sender's ARP for its gateway to be retried a second later), then
    // until the flow passes (UDP to a port nobody listens on yet is
    // answered by an ICMP port unreachable, which counts as reachable).
    let wait = std::time::Duration::from_secs(300);
    let reconciled = || {
        palisade_agent::read_status(&state_dir)
            .ok()
            .flatten()
            .is_some_and(|s| s.reconciles > 0)
    };
    while !reconciled() {
        if started.elapsed() > wait {
            return Err(BenchError::FlowBlocked {
                firewall: Firewall::Palisade.to_string(),
                waited_s: wait.as_secs(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (src, dst) = (
        palisade_lab::Place::Endpoint(crate::testbed::SRC_ENDPOINT.into()),
        palisade_lab::Place::Endpoint(crate::testbed::DST_ENDPOINT.into()),
    );
    while !lab
        .probe(
            &src,
            &dst,
            palisade_model::Protocol::Udp,
            crate::testbed::FLOW_PORT,
            std::time::Duration::from_millis(500),
        )
        .is_reachable()
    {
        if started.elapsed() > wait {
            return Err(BenchError::FlowBlocked {
                firewall: Firewall::Palisade.to_string(),
                waited_s: wait.as_secs(),
            });
        }
    }
    tracing::info!(
        rules = blocked.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "palisade enforces the benchmark's policy"
    );
    Ok(Setup::Ready {
        keep: Some(Box::new(agent)),
    })
}

/// The palisade policy of the benchmark: the destination denies each pair
/// of `blocked` (a `/32` CIDR peer on a UDP port), then allows the flow;
/// the source may send the flow.
pub fn palisade_rules(blocked: &[(Ipv4Addr, u16)]) -> String {
    let port = crate::testbed::FLOW_PORT;
    let mut text = String::from(
        "apiVersion: palisade.dev/v1\n\
         kind: Policy\n\
         metadata: {name: bench-dst, tenant: bench}\n\
         spec:\n  selector: role == 'dst'\n  ingress:\n",
    );
    for (addr, port) in blocked {
        writeln!(
            text,
            "    - {{action: deny, from: [{{cidr: {addr}/32}}], ports: [{{protocol: UDP, port: {port}}}]}}"
        )
        .unwrap();
    }
    writeln!(
        text,
        "    - {{action: allow, from: [{{selector: role == 'src'}}], ports: [{{protocol: UDP, port: {port}}}]}}"
    )
    .unwrap();
    text.push_str(
        "---\n\
         apiVersion: palisade.dev/v1\n\
         kind: Policy\n\
         metadata: {name: bench-src, tenant: bench}\n\
         spec:\n  selector: role == 'src'\n  egress:\n",
    );
    writeln!(
        text,
        "    - {{action: allow, to: [{{selector: role == 'dst'}}], ports: [{{protocol: UDP, port: {port}}}]}}"
    )
    .unwrap();
    text
}

/// `count` (source address, UDP destination port) pairs that no flow of a
/// lab uses: sources from 100.64.0.0/10 (shared address space, never given
/// to a lab), ports from 1024 up. Up to about four million.
pub fn unused_pairs(count: usize) -> Vec<(Ipv4Addr, u16)> {
    (0..count as u32)
        .map(|i| {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i);
            let port = 1024 + (i % 60_000) as u16;
            (addr, port)
        })
        .collect()
}

/// An `iptables-restore` input for the filter table: FORWARD drops each
/// pair of `blocked`, accepts `flow`, and drops the rest.
pub fn iptables_rules(blocked: &[(Ipv4Addr, u16)], flow: &Flow) -> String {
    let mut text =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for (addr, port) in blocked {
        writeln!(
            text,
            "-A FORWARD -s {addr}/32 -p udp -m udp --dport {port} -j DROP"
        )
        .unwrap();
    }
    writeln!(
        text,
        "-A FORWARD -s {}/32 -d {}/32 -p udp -m udp --dport {} -j ACCEPT\nCOMMIT",
        flow.src, flow.dst, flow.port
    )
    .unwrap();
    text
}

/// An `nft -f` input: a forward chain with one rule per pair of `blocked`,
/// then an accept of `flow`, policy drop. Replaces the namespace's ruleset.
pub fn nft_linear_rules(blocked: &[(Ipv4Addr, u16)], flow: &Flow) -> String {
    let mut text = String::from(
        "flush ruleset\ntable ip bench {\n  chain forward {\n    type filter hook forward priority filter; policy drop;\n",
    );
    for (addr, port) in blocked {
        writeln!(text, "    ip saddr {addr} udp dport {port} drop").unwrap();
    }
    text.push_str(&nft_accept(flow));
    text.push_str("  }\n}\n");
    text
}

/// An `nft -f` input: a forward chain that drops what is in a set of the
/// pairs of `blocked` (one hash lookup), then accepts `flow`, policy drop.
/// Replaces the namespace's ruleset.
pub fn nft_set_rules(blocked: &[(Ipv4Addr, u16)], flow: &Flow) -> String {
    let mut text = String::from(
        "flush ruleset\ntable ip bench {\n  set blocked {\n    type ipv4_addr . inet_service\n",
    );
    if !blocked.is_empty() {
        let elements: Vec<String> = blocked.iter().map(|(a, p)| format!("{a} . {p}")).collect();
        writeln!(text, "    elements = {{ {} }}", elements.join(", ")).unwrap();
    }
    text.push_str(
        "  }\n  chain forward {\n    type filter hook forward priority filter; policy drop;\n    ip saddr . udp dport @blocked drop\n",
    );
    text.push_str(&nft_accept(flow));
    text.push_str("  }\n}\n");
    text
}

fn nft_accept(flow: &Flow) -> String {
    format!(
        "    ip saddr {} ip daddr {} udp dport {} accept\n",
        flow.src, flow.dst, flow.port
    )
}

/// Runs `program args` inside `netns` (through `ip netns exec`) with `input`
/// on its standard input, and fails with its standard error if it fails.
pub fn load(netns: &str, program: &str, args: &[&str], input: &str) -> Result<()> {
    let spawn_error = |source| BenchError::Spawn {
        program: program.to_string(),
        netns: netns.to_string(),
        source,
    };
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A loader that fails early closes its input: its exit status says why.
    let written = stdin.write_all(input.as_bytes());
    drop(stdin);
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(BenchError::Command {
            program: program.to_string(),
            netns: netns.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    written.map_err(spawn_error)?;
    tracing::debug!(netns, program, bytes = input.len(), "firewall loaded");
    Ok(())
}

/// What `iptables -V` says (e.g. `iptables v1.8.9 (nf_tables)`): the backend
/// the [`Firewall::Iptables`] variant measures. `None` when it cannot run.
pub fn iptables_version() -> Option<String> {
    let output = Command::new("iptables").arg("-V").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Whether `program` is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_palisade_rules_are_valid_and_allow_only_the_flow() {
        let text = format!(
            "{}---\n{}",
            crate::testbed::TESTBED_YAML,
            palisade_rules(&unused_pairs(3))
        );
        let intent = palisade_model::load_str(&text, "rules.yaml", &Default::default()).unwrap();
        let dst = &intent.policies[0];
        assert_eq!(dst.name, "bench-dst");
        let rules = dst.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 4, "three denies, then the allow");
        assert_eq!(rules[3].action, palisade_model::Action::Allow);
    }
}
