//! The propagation harness measures something: a tiny run (a `palisade
//! server`, five SIMULATED agents, a few applies) gets one latency per
//! agent and apply, and an agent deliberately frozen (SIGSTOP) is reported
//! as a timeout, not as a number. Needs the `palisade` binary that `cargo
//! test --workspace` builds (or PALISADE_BIN); no root. Speed is never
//! asserted. Every process is killed and the work directory removed on
//! drop, also when the test panics.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use palisade_bench::propagation::{
    generate, palisade_binary, run_series, toggle_document, wait_reconciled, AgentKind,
    AgentProcess, Applier, Scale, SeriesOptions, Server, Step,
};

#[test]
fn applies_are_timed_per_agent_and_a_frozen_agent_is_a_timeout() {
    let palisade = palisade_binary().unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::Builder::new()
        .prefix("palisade-propagation-test-")
        .tempdir()
        .unwrap();
    let stop = AtomicBool::new(false);
    let server = Server::start(&palisade, work.path()).unwrap();
    let applier = Applier::new(&server.url).unwrap();

    let nodes: Vec<String> = (1..=5)
        .map(|i| format!("t{}-sim-{i}", std::process::id()))
        .collect();
    let scale = Scale {
        endpoints: 40,
        tenants: 2,
        nodes_per_tenant: 3,
    };
    let generated = generate(scale, &nodes);
    let revision = applier.apply_all(&generated.documents(), &stop).unwrap();
    let mut agents: Vec<AgentProcess> = nodes
        .iter()
        .map(|node| {
            AgentProcess::spawn(
                &palisade,
                work.path(),
                &server.url,
                node,
                AgentKind::Simulated,
                &[],
            )
            .unwrap()
        })
        .collect();
    wait_reconciled(&mut agents, revision, Duration::from_secs(60), &stop)
        .unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", server.log_tail()));
    let status = agents[0].status().unwrap();
    assert!(
        status.simulated,
        "the status file says SIMULATED: {status:?}"
    );

    let toggles = |k: usize| Step {
        documents: generated
            .tenant_names
            .iter()
            .map(|t| toggle_document(t, k))
            .collect(),
        nodes: None,
    };
    let options = SeriesOptions {
        applies: 3,
        gap: Duration::from_millis(50),
        timeout: Duration::from_secs(20),
    };
    let series = run_series(&applier, server.pid(), &agents, toggles, options, &stop).unwrap();
    assert_eq!(series.samples.len(), 15, "one sample per agent and apply");
    assert_eq!(series.timeouts(), 0, "{:?}", series.samples);
    let latencies = series.latencies(|_| true);
    assert_eq!(latencies.len(), 15);
    assert!(
        latencies.iter().all(|l| l.is_finite() && *l >= 0.0),
        "{latencies:?}"
    );
    assert!(
        series.samples.iter().all(|s| s.simulated),
        "every agent here is simulated"
    );
    assert!(series.agents_cpu_ms > 0.0, "the agents worked: {series:?}");

    // An apply of one tenant is waited for on that tenant's nodes only.
    let tenant = &generated.tenant_names[0];
    let hosts = generated.tenant_nodes[tenant].clone();
    assert!(hosts.len() < agents.len(), "{hosts:?}");
    let one = |k: usize| Step {
        documents: vec![toggle_document(tenant, k + 3)],
        nodes: Some(hosts.clone()),
    };
    // Twice, so that every tenant is at a deny again (toggles 3 and 5).
    let options = SeriesOptions {
        applies: 2,
        gap: Duration::ZERO,
        timeout: Duration::from_secs(20),
    };
    let series = run_series(&applier, server.pid(), &agents, one, options, &stop).unwrap();
    let measured: std::collections::BTreeSet<String> =
        series.samples.iter().map(|s| s.node.clone()).collect();
    assert_eq!(measured, hosts);
    assert_eq!(series.timeouts(), 0, "{:?}", series.samples);

    // A frozen agent never applies: a timeout, the others still measured.
    agents[2].freeze().unwrap();
    let options = SeriesOptions {
        applies: 1,
        gap: Duration::ZERO,
        timeout: Duration::from_secs(8),
    };
    let toggles = |k: usize| Step {
        documents: generated
            .tenant_names
            .iter()
            .map(|t| toggle_document(t, k + 5))
            .collect(),
        nodes: None,
    };
    let series = run_series(&applier, server.pid(), &agents, toggles, options, &stop).unwrap();
    assert_eq!(series.samples.len(), 5);
    let timed_out: Vec<&str> = series
        .samples
        .iter()
        .filter(|s| s.latency_ms.is_none())
        .map(|s| s.node.as_str())
        .collect();
    assert_eq!(timed_out, [nodes[2].as_str()]);
    assert_eq!(series.latencies(|_| true).len(), 4);
}
