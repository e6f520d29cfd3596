//! The pps harness against the real kernel, so that it cannot silently
//! measure nothing: the counter sees the flood on a plain lab, sees nothing
//! when the node drops the flow, and each firewall's rule set really sits in
//! the path (the flow passes its 1,000 non-matching rules, and is dropped
//! once its own pair is among them). Needs root. Every test builds its own
//! testbed with a unique lab name; the testbed takes the lab down on drop,
//! also when the test panics. Speed is never asserted.

use std::time::Duration;

use palisade_bench::firewall::{self, Firewall, Setup};
use palisade_bench::testbed::Testbed;
use palisade_bench::traffic::{self, Rates, Window};

const WINDOW: Window = Window {
    warmup: Duration::from_millis(200),
    length: Duration::from_millis(400),
};

fn testbed(tag: &str) -> Testbed {
    let name = format!("t{}-pps-{tag}", std::process::id());
    let responder = vec![env!("CARGO_BIN_EXE_pps").into(), "lab-serve".into()];
    Testbed::up(&name, true, responder).unwrap_or_else(|e| panic!("testbed {name}: {e}"))
}

fn measure(testbed: &Testbed) -> Rates {
    let flow = testbed.flow().expect("testbed flow");
    traffic::measure(&flow, WINDOW).expect("measure")
}

#[test]
fn counts_the_flood_on_a_plain_lab() {
    let testbed = testbed("plain");
    let rates = measure(&testbed);
    assert!(rates.sent > 0, "the sender sent nothing: {rates:?}");
    assert!(rates.received > 0, "the counter saw nothing: {rates:?}");
    // Counters are read a batch apart at most; received can never be far above sent.
    assert!(
        rates.received <= rates.sent + 1024,
        "received more than was sent: {rates:?}"
    );
}

#[test]
fn counts_nothing_when_the_node_drops_the_flow() {
    let testbed = testbed("drop");
    let flow = testbed.flow().unwrap();
    let rules = format!(
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -d {}/32 -p udp --dport {} -j DROP\nCOMMIT\n",
        flow.dst, flow.port
    );
    firewall::load(testbed.node_netns(), "iptables-restore", &[], &rules).unwrap();
    let rates = measure(&testbed);
    assert!(rates.sent > 0, "the sender sent nothing: {rates:?}");
    assert_eq!(rates.received, 0, "packets got through a DROP: {rates:?}");
}

/// Sets `fw` up with 1,000 non-matching pairs (the flow passes), then again
/// with the flow's own pair last among them (the flow is dropped).
fn rules_sit_in_the_path(fw: Firewall, tag: &str) {
    let testbed = testbed(tag);
    let flow = testbed.flow().unwrap();
    let mut blocked = firewall::unused_pairs(1000);
    assert!(!blocked.contains(&(flow.src, flow.port)));

    let setup = fw.setup(&testbed, &blocked).unwrap();
    assert!(matches!(setup, Setup::Ready { .. }), "{fw}: {setup:?}");
    let passing = measure(&testbed);
    assert!(
        passing.received > 0,
        "{fw}: the allowed flow was blocked: {passing:?}"
    );

    blocked.push((flow.src, flow.port));
    let setup = fw.setup(&testbed, &blocked).unwrap();
    assert!(matches!(setup, Setup::Ready { .. }), "{fw}: {setup:?}");
    let blocked = measure(&testbed);
    assert!(
        blocked.sent > 0,
        "{fw}: the sender sent nothing: {blocked:?}"
    );
    assert_eq!(
        blocked.received, 0,
        "{fw}: the flow got past its DROP: {blocked:?}"
    );
}

#[test]
fn iptables_rules_sit_in_the_path() {
    rules_sit_in_the_path(Firewall::Iptables, "ipt");
}

#[test]
fn iptables_legacy_rules_sit_in_the_path() {
    rules_sit_in_the_path(Firewall::IptablesLegacy, "iptl");
}

#[test]
fn nft_linear_rules_sit_in_the_path() {
    rules_sit_in_the_path(Firewall::NftLinear, "nftl");
}

#[test]
fn nft_set_rules_sit_in_the_path() {
    rules_sit_in_the_path(Firewall::NftSet, "nfts");
}

#[test]
fn palisade_reports_itself_unavailable_until_wired() {
    // Firewall mode, as the palisade variant runs; nothing flows here without the agent.
    let name = format!("t{}-pps-pal", std::process::id());
    let responder = vec![env!("CARGO_BIN_EXE_pps").into(), "lab-serve".into()];
    let testbed = Testbed::up(&name, Firewall::Palisade.plain_lab(), responder).unwrap();
    let setup = Firewall::Palisade
        .setup(&testbed, &firewall::unused_pairs(10))
        .unwrap();
    match setup {
        Setup::Unavailable { reason } => assert!(reason.contains("agent"), "{reason}"),
        Setup::Ready { .. } => {
            // Wired: then the flow must pass through palisade.
            let rates = measure(&testbed);
            assert!(
                rates.received > 0,
                "palisade blocked the allowed flow: {rates:?}"
            );
        }
    }
}
