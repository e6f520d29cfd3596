//! Disagreements the differential tests found, pinned as small cases named
//! after the bug (root, BPF). Each runs the same checks as the property
//! test (`check::check_flows`) on a hand-written intent and flows, and
//! first asserts that the evaluator gives the verdicts the case is about.

use std::net::Ipv4Addr;

use palisade_differential::check::check_flows;
use palisade_differential::flows::{End, NodeFlow, Probe};
use palisade_differential::node::{Fault, TestNode};
use palisade_model::{load_str, Intent, LoadOptions};
use palisade_policy::{evaluate, Verdict};

fn intent(yaml: &str) -> Intent {
    load_str(yaml, "case.yaml", &LoadOptions::default()).unwrap_or_else(|d| panic!("{d}"))
}

fn endpoint(intent: &Intent, name: &str) -> End {
    let index = intent
        .endpoints
        .iter()
        .position(|e| e.name == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"));
    let ip = match intent.endpoints[index].ips[0] {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => panic!("IPv4 endpoints only"),
    };
    End::Endpoint { index, ip }
}

fn flow(src: End, dst: End, probe: Probe) -> NodeFlow {
    NodeFlow {
        tenant: "t0".into(),
        src,
        dst,
        probe,
    }
}

const SCTP_INTENT: &str = "
apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: t0}
spec: {defaultAction: deny}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: e0, tenant: t0, labels: {app: a}}
spec: {node: n1, ips: [10.0.0.1]}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: e1, tenant: t0, labels: {app: b}}
spec: {node: n1, ips: [10.0.0.2]}
---
apiVersion: palisade.dev/v1
kind: Policy
metadata: {name: p0, tenant: t0}
spec:
  selector: all()
  ingress:
    - action: allow
      ports: [{protocol: SCTP, port: 8080}]
  egress:
    - action: allow
";

/// The datapath decided SCTP with port 0 (bpf/include/parse.h parsed only
/// TCP and UDP ports), so a rule on an SCTP port never matched: the world's
/// SCTP to an allowed port was dropped by the tier's default deny, while the
/// evaluator allowed it by the rule.
#[test]
fn sctp_rules_on_ports_never_matched_in_the_datapath() {
    let before = intent(SCTP_INTENT);
    let after = intent(&SCTP_INTENT.replace("port: 8080", "port: 9090"));
    let (e0, e1) = (endpoint(&before, "e0"), endpoint(&before, "e1"));
    let world = End::Address(Ipv4Addr::new(198, 51, 100, 7));
    let flows = vec![
        (30001, flow(world, e0, Probe::Sctp(8080))),
        (30002, flow(world, e0, Probe::Sctp(8081))),
        (30003, flow(e1, e0, Probe::Sctp(8080))),
        (30004, flow(e1, e0, Probe::Sctp(80))),
    ];
    let verdicts: Vec<Verdict> = flows
        .iter()
        .map(|(_, f)| evaluate(&before, &f.evaluator_flow(&before)).verdict)
        .collect();
    assert_eq!(
        verdicts,
        [Verdict::Allow, Verdict::Deny, Verdict::Allow, Verdict::Deny]
    );

    let mut node = TestNode::new("regs");
    let tally = check_flows(
        &mut node,
        &before,
        &flows,
        Some((&after, "the SCTP rule moves to port 9090")),
        Fault::None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (tally.allowed, tally.replies, tally.cut),
        (2, 2, 2),
        "{tally}"
    );
}
