//! Each feature of the policy language with real packets (tests/fixtures/
//! features): allowed and denied TCP, UDP and ICMP, replies of admitted
//! connections only (a server cannot initiate back), port ranges, CIDR peers
//! with except, deny over allow, tiers with pass, audit mode — and the flow
//! log naming the rule behind each verdict.

use palisade_lab::ProbeResult;
use palisade_model::Protocol;
use palisade_policy::Verdict;

use crate::support::*;

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;
const ICMP: Protocol = Protocol::Icmp;
const WORLD: &str = "world:acme@node-1";

#[test]
fn every_feature_does_what_it_says_with_real_packets() {
    let paths = [fixture("features")];
    let lab = TestLab::up("feat", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let _agent = AgentProcess::start(&lab, "node-1", policy.path());

    let cases: &[(&str, &str, Protocol, u16, bool, &str)] = &[
        (
            "acme:client",
            "acme:server",
            TCP,
            80,
            true,
            "an allowed TCP port",
        ),
        (
            "acme:client",
            "acme:server",
            TCP,
            8080,
            true,
            "the start of a port range",
        ),
        (
            "acme:client",
            "acme:server",
            TCP,
            8081,
            true,
            "the end of a port range",
        ),
        (
            "acme:client",
            "acme:server",
            TCP,
            8082,
            false,
            "just past the range",
        ),
        (
            "acme:client",
            "acme:server",
            UDP,
            53,
            true,
            "an allowed UDP port",
        ),
        (
            "acme:client",
            "acme:server",
            UDP,
            5353,
            false,
            "a UDP port not allowed",
        ),
        ("acme:client", "acme:server", ICMP, 0, true, "allowed ping"),
        (
            "acme:other",
            "acme:server",
            ICMP,
            0,
            false,
            "ping not allowed",
        ),
        (
            "acme:server",
            "acme:client",
            TCP,
            7000,
            false,
            "a server cannot initiate back over TCP",
        ),
        (
            "acme:server",
            "acme:client",
            UDP,
            7000,
            false,
            "nor over UDP",
        ),
        (
            "acme:other",
            "acme:server",
            TCP,
            80,
            false,
            "deny beats allow at the same order",
        ),
        (
            WORLD,
            "acme:server",
            TCP,
            8080,
            true,
            "a CIDR peer holding the world address",
        ),
        (
            WORLD,
            "acme:server",
            TCP,
            80,
            false,
            "a CIDR whose except leaves the world out",
        ),
        ("acme:client", WORLD, TCP, 80, true, "egress to the world"),
        (
            "acme:client",
            WORLD,
            TCP,
            443,
            false,
            "a security-tier deny before the default tier's allow",
        ),
        (
            "acme:client",
            "acme:other",
            TCP,
            8081,
            false,
            "a security-tier deny for what did not pass",
        ),
        (
            "acme:quarantined",
            "acme:server",
            TCP,
            80,
            false,
            "a quarantined workload reaches nothing",
        ),
        (
            "acme:quarantined",
            WORLD,
            TCP,
            80,
            false,
            "not even the world",
        ),
    ];
    let mut wrong = Vec::new();
    for &(from, to, proto, port, allowed, what) in cases {
        let probe = Probe::new(from, to, proto, port);
        let (verdict, why) = expected(&lab, &lab.intent, &probe);
        assert_eq!(
            verdict == Verdict::Allow,
            allowed,
            "the fixture does not mean what the test says for {what}: the evaluator says {verdict} ({why})"
        );
        let result = lab.probe(from, to, proto, port);
        let got = match &result {
            // Replies came back: the answer of an allowed connection passes.
            ProbeResult::Reachable { reply } => reply.as_deref().is_none_or(|r| r == to) && allowed,
            ProbeResult::Blocked => !allowed,
            ProbeResult::Error { .. } => false,
        };
        if !got {
            wrong.push(format!(
                "{what}: {from} -> {to} {proto:?}/{port}: {result:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let probes = matrix(
        &lab,
        &[
            (TCP, 80),
            (TCP, 7000),
            (TCP, 8080),
            (TCP, 8081),
            (TCP, 8082),
            (UDP, 53),
            (UDP, 5353),
            (UDP, 7000),
            (ICMP, 0),
        ],
        &[(TCP, 80), (TCP, 443), (TCP, 8080), (UDP, 53), (ICMP, 0)],
    );
    assert_matrix(&lab, &lab.intent, &probes, "tests/fixtures/features");
}

#[test]
fn the_flow_log_names_the_rule_behind_every_verdict() {
    let paths = [fixture("features")];
    let lab = TestLab::up("flog", &paths);
    let policy = PolicyDir::copy_of(&paths);
    let agent = AgentProcess::start(&lab, "node-1", policy.path());

    // A blocked probe: the deny rule that won, both ends by name.
    assert_eq!(
        lab.probe("acme:other", "acme:server", TCP, 80),
        ProbeResult::Blocked
    );
    let denied = agent.wait_flow("for other -> server:80", |r| {
        r["event"]["action"] == "packet-denied" && r["destination"]["port"] == 80
    });
    assert_eq!(denied["event"]["outcome"], "failure");
    assert_eq!(denied["event"]["reason"], "POLICY_DENIED");
    assert_eq!(
        denied["rule"]["name"],
        "default/server-deny-other ingress rule 0 (deny)"
    );
    assert_eq!(denied["rule"]["ruleset"], "default");
    assert_eq!(denied["network"]["direction"], "ingress");
    assert_eq!(denied["network"]["transport"], "tcp");
    assert_eq!(denied["source"]["ip"], "10.0.0.30");
    assert_eq!(denied["palisade"]["source"]["endpoint"], "acme:other");
    assert_eq!(denied["palisade"]["destination"]["endpoint"], "acme:server");
    assert_eq!(denied["palisade"]["tenant"], "acme");
    assert_eq!(denied["palisade"]["node"], "node-1");
    assert_eq!(denied["event"]["kind"], "event");
    assert_eq!(denied["event"]["category"][0], "network");
    assert!(denied["@timestamp"].as_str().unwrap().ends_with('Z'));

    // A default deny is named as such.
    assert_eq!(
        lab.probe("acme:client", "acme:server", TCP, 8082),
        ProbeResult::Blocked
    );
    let default = agent.wait_flow("for client -> server:8082", |r| {
        r["event"]["action"] == "packet-denied" && r["destination"]["port"] == 8082
    });
    assert_eq!(
        default["rule"]["name"],
        "default deny of tier default (ingress)"
    );

    // Audit mode: the connection passes, the would-deny names the audit policy.
    assert!(lab
        .probe("acme:client", "acme:server", TCP, 8080)
        .is_reachable());
    let audit = agent.wait_flow("audit for client -> server:8080", |r| {
        r["event"]["action"] == "audit-would-deny" && r["destination"]["port"] == 8080
    });
    assert_eq!(
        audit["palisade"]["audit"]["rule"],
        "default/server-lockdown ingress rule 0 (deny)"
    );
    assert_eq!(audit["event"]["outcome"], "success");
    let allowed = agent.wait_flow("allowed client -> server:8080", |r| {
        r["event"]["action"] == "connection-allowed" && r["destination"]["port"] == 8080
    });
    assert_eq!(
        allowed["palisade"]["rules"]["ingress"],
        "default/server ingress rule 0 (allow)"
    );
    assert_eq!(
        allowed["palisade"]["rules"]["egress"],
        "default/client egress rule 0 (allow)"
    );
    // The responder answered and closed: the close is reported with counters.
    let closed = agent.wait_flow("closed client -> server:8080", |r| {
        r["event"]["action"] == "connection-closed" && r["destination"]["port"] == 8080
    });
    assert!(closed["palisade"]["packets"].as_u64().unwrap() >= 4);
    assert!(closed["destination"]["bytes"].as_u64().unwrap() > 0);

    // A world flow names the CIDR the world address falls in.
    assert!(lab.probe(WORLD, "acme:server", TCP, 8080).is_reachable());
    let world = agent.wait_flow("allowed world -> server:8080", |r| {
        r["event"]["action"] == "connection-allowed" && r["source"]["ip"] == "198.51.100.1"
    });
    assert_eq!(world["palisade"]["source"]["cidr"], "198.51.100.1/32");
    assert_eq!(world["palisade"]["hook"], "from_uplink");
}
