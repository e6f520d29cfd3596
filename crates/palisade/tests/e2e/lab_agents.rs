//! `palisade lab agents up|status|down` and `palisade lab down` with agents,
//! through the binary as a person runs them.

use palisade_lab::{agents_bpffs_root, Lab, ProbeResult};
use palisade_model::Protocol;

use crate::support::*;

#[test]
fn lab_agents_start_report_and_stop_with_the_lab() {
    let paths = [fixture("features")];
    let lab = TestLab::up("agents", &paths);
    let name = lab.name().to_string();
    let source = fixture("features").display().to_string();
    let probe = || {
        lab.forget_gateway("acme:client");
        lab.probe("acme:client", "acme:server", Protocol::Tcp, 80)
    };
    assert_eq!(
        probe(),
        ProbeResult::Blocked,
        "nothing flows without agents"
    );

    let (ok, out, err) = run_palisade(&["lab", "agents", "up", "--name", &name, "-f", &source]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("agent of node-1 enforcing"), "{out}");
    assert!(probe().is_reachable());

    let (ok, out, err) = run_palisade(&["lab", "agents", "status", "--name", &name, "-o", "json"]);
    assert!(ok, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["node"], "node-1");
    assert_eq!(status[0]["running"], true);
    assert!(status[0]["reconciles"].as_u64().unwrap() >= 1);
    let flow_log = status[0]["flow_log"].as_str().unwrap().to_string();
    let (ok, out, _) = run_palisade(&["lab", "agents", "status", "--name", &name]);
    assert!(
        ok && out.contains("running") && out.contains("last reconcile"),
        "{out}"
    );

    // Down: the agents stop and their pins go, so the programs go too.
    let (ok, out, err) = run_palisade(&["lab", "agents", "down", "--name", &name]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("stopped 1 agent"), "{out}");
    assert_eq!(probe(), ProbeResult::Blocked);
    assert!(!palisade_lab::agent_bpffs_dir(&name, "node-1").exists());
    assert!(
        std::path::Path::new(&flow_log).exists(),
        "the flow log stays"
    );

    // Up again, then the whole lab down: the agent goes with it.
    let (ok, out, err) = run_palisade(&["lab", "agents", "up", "--name", &name, "-f", &source]);
    assert!(ok, "{out}{err}");
    let pid = Lab::open(&name).unwrap().agents()[0].pid;
    assert!(probe().is_reachable());
    let (ok, out, err) = run_palisade(&["lab", "down", "--name", &name]);
    assert!(ok, "{out}{err}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/exe")).exists(),
        "the agent was stopped"
    );
    assert!(!agents_bpffs_root(&name).exists(), "the pins were removed");
}

#[test]
fn lab_up_prints_the_agent_commands() {
    let name = unique("print");
    let source = fixture("features").display().to_string();
    let _down = scopeguard(&name);
    let (ok, out, err) = run_palisade(&["lab", "up", "--name", &name, "-f", &source]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("palisade lab agents up --name {name} -f {source}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "palisade agent --node node-1 --netns pl_{name}_n_node-1 --policy-dir {source}"
        )),
        "{out}"
    );
    assert!(out.contains("--uplink acme=up1@169.254.101.2"), "{out}");
}

/// Takes lab `name` down on drop.
fn scopeguard(name: &str) -> impl Drop + '_ {
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Lab::down(self.0);
        }
    }
    Down(name)
}
