//! Real packets against the reference semantics: for the examples and for
//! the upstream Kubernetes NetworkPolicy e2e scenarios, every probe of the
//! matrix (TCP on the served ports, UDP, ICMP, to and from the world) gets
//! exactly the verdict `palisade_policy::evaluate` gives, pair by pair.

use std::time::Instant;

use palisade_lab::ProbeResult;
use palisade_model::Protocol;

use crate::support::*;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;
const ICMP: Protocol = Protocol::Icmp;

#[test]
fn three_tier_example_matches_the_evaluator() {
    let paths = [repo("examples/three-tier")];
    let lab = TestLab::up("3t", &paths);
    let policy = PolicyDir::copy_of(&paths);
    // Its tiers run on three nodes: one agent each, the overlay between them.
    let _agents = agents_on_every_node(&lab, policy.path());

    let probes = matrix(
        &lab,
        &[(TCP, 80), (TCP, 443), (TCP, 8080), (TCP, 5432), (ICMP, 0)],
        &[(TCP, 443), (TCP, 80), (UDP, 53), (ICMP, 0)],
    );
    assert_matrix(&lab, &lab.intent, &probes, "examples/three-tier");

    // The two tenants use the same addresses: each one only ever reaches
    // its own workloads.
    for (from, to) in [("acme:app-1", "globex:db-1"), ("globex:app-1", "acme:db-1")] {
        let tenant = from.split(':').next().unwrap();
        match lab.probe(from, to, TCP, 5432) {
            ProbeResult::Reachable { reply: Some(reply) } => assert!(
                reply.starts_with(&format!("{tenant}:")),
                "{from} reached {reply}"
            ),
            other => panic!("{from} -> {to}'s address in its own tenant: {other:?}"),
        }
    }
}

#[test]
fn kubernetes_example_matches_the_evaluator() {
    let paths = [repo("examples/kubernetes")];
    let lab = TestLab::up("k8s", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let _agent = AgentProcess::start(&lab, "node-1", policy.path());
    let probes = matrix(
        &lab,
        &[(TCP, 80), (TCP, 81), (UDP, 80), (ICMP, 0)],
        &[(TCP, 80), (ICMP, 0)],
    );
    assert_matrix(&lab, &lab.intent, &probes, "examples/kubernetes");
}

/// One lab with namespaces x, y, z and pods a, b, c; the agent's directory
/// gets one scenario after another (an edit each time, enforced live).
#[test]
fn upstream_networkpolicy_scenarios_match_the_evaluator() {
    let base = [
        fixture("netpol/namespaces.yaml"),
        fixture("netpol/pods.yaml"),
    ];
    let lab = TestLab::up("np", &base);
    let policy = PolicyDir::copy_of(&base);
    let mut agent = AgentProcess::start(&lab, "node-1", policy.path());
    let probes = matrix(
        &lab,
        &[(TCP, 80), (TCP, 81), (UDP, 80), (ICMP, 0)],
        &[(TCP, 80)],
    );

    let mut scenarios: Vec<_> = std::fs::read_dir(fixture("netpol/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 15, "the scenario set is there");
    let mut failures = Vec::new();
    let mut enforced = lab.intent.clone();
    let mut mixed = 0;
    for scenario in &scenarios {
        let name = scenario.file_name().unwrap().to_string_lossy().into_owned();
        let before = agent.reconciles();
        let written = Instant::now();
        policy.write("policy.yaml", &std::fs::read_to_string(scenario).unwrap());
        let intent = policy.intent();
        if intent != enforced {
            agent.wait_reconciles(before + 1);
            enforced = intent.clone();
        }
        let allowed = allowed_count(&lab, &intent, &probes);
        eprintln!(
            "scenario {name}: enforced {:.0} ms after the edit; {allowed} of {} probes allowed",
            written.elapsed().as_secs_f64() * 1000.0,
            probes.len()
        );
        if allowed > 0 && allowed < probes.len() {
            mixed += 1;
        }
        let wrong = mismatches(&lab, &intent, &probes);
        if !wrong.is_empty() {
            failures.push(format!("{name}:\n  {}", wrong.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "scenarios differing from the evaluator ({} probes each):\n{}",
        probes.len(),
        failures.join("\n")
    );
    // Every scenario but "no policy" and "allow all" allows some probes and
    // denies others.
    assert_eq!(mixed, scenarios.len() - 2);
    // The agent never gave up on a scenario.
    assert!(agent.status().unwrap().last_error.is_none());
}
