//! The kernel against the evaluator (root, BPF): random intents compiled by
//! the real compiler, loaded into a real datapath by the agent's own
//! desired-state and reconcile code, random flows run through the real
//! programs with BPF_PROG_TEST_RUN, every verdict and attribution compared
//! with `palisade_policy::evaluate` (see `check.rs` for what is compared).
//! A failure prints the intent as YAML and the `palisade explain` command
//! that replays the flow.
//!
//! Each test makes its own node (namespace and bpffs directory, removed on
//! drop). `PROPTEST_CASES` overrides the number of cases.

use std::cell::RefCell;
use std::time::Instant;

use palisade_differential::check::{case, check_case, Case, Tally};
use palisade_differential::intents::Shape;
use palisade_differential::node::{Fault, TestNode};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Flows per case, on average.
const FLOWS: usize = 24;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` random cases on a fresh node with `fault` in its maps.
fn run(tag: &str, cases: u32, fault: Fault) -> (Result<(), TestError<Case>>, Tally) {
    let node = RefCell::new(TestNode::new(tag));
    let tally = RefCell::new(Tally::default());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // A case takes milliseconds: shrink until the case is small.
        max_shrink_iters: 20_000,
        ..Config::default()
    });
    let result = runner.run(&case(Shape::default(), FLOWS), |case| {
        let t = check_case(&mut node.borrow_mut(), &case, fault).map_err(TestCaseError::fail)?;
        *tally.borrow_mut() += t;
        Ok(())
    });
    (result, tally.into_inner())
}

#[test]
fn the_kernel_decides_every_flow_as_the_evaluator() {
    let started = Instant::now();
    let (result, tally) = run("dif", cases(500), Fault::None);
    if let Err(e) = result {
        panic!("the kernel and the evaluator disagree:\n{e}");
    }
    eprintln!("{tally} in {:.1} s", started.elapsed().as_secs_f64());
    // The run proves something only if it saw both verdicts everywhere.
    assert!(tally.allowed > tally.flows / 10, "{tally}");
    assert!(tally.flows - tally.allowed > tally.flows / 10, "{tally}");
    assert!(
        tally.replies > 0 && tally.cut > 0 && tally.rechecked > tally.cut,
        "{tally}"
    );
    assert!(tally.audits > 0, "{tally}");
}

/// The check fails on maps that break the contract: it is not vacuous.
fn assert_caught(tag: &str, fault: Fault) {
    let (result, tally) = run(tag, 100, fault);
    match result {
        Err(TestError::Fail(reason, _)) => {
            eprintln!(
                "{fault:?} caught: {}",
                reason.message().lines().next().unwrap_or("")
            )
        }
        other => panic!("{fault:?} went unnoticed ({tally}): {other:?}"),
    }
}

#[test]
fn a_datapath_that_allows_what_policy_denies_is_caught() {
    assert_caught("difa", Fault::DenyBecomesAllow);
}

#[test]
fn a_datapath_that_skips_the_destination_ingress_check_is_caught() {
    assert_caught("difi", Fault::IngressIgnored);
}

#[test]
fn a_datapath_that_blames_the_wrong_rule_is_caught() {
    assert_caught("difc", Fault::CookiesRotated);
}
