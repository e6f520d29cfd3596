//! The agent in-process against the kernel (root): a desired state that does
//! not fit in a map changes nothing and says so; the next one that fits is
//! applied; input that does not validate is reported and changes nothing.
//! Each test runs in its own network namespace with its own bpffs
//! directory, both removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use palisade_agent::{read_status, Agent, AgentConfig, AgentStatus};
use palisade_datapath::MapSizes;

fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "pa-{tag}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = unique(tag);
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A bpffs directory, removed (pins and all) on drop.
struct Bpffs(PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TENANT: &str = "apiVersion: palisade.dev/v1
kind: Tenant
metadata: {name: acme}
spec: {defaultAction: deny}
---
apiVersion: palisade.dev/v1
kind: Endpoint
metadata: {name: db, tenant: acme, labels: {app: db}}
spec: {node: n1, ips: [10.0.0.2]}
";

/// A policy of `rules` ingress rules, each from its own CIDR.
fn policy(rules: usize) -> String {
    let mut text = String::from(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: db, tenant: acme}\nspec:\n  selector: app == 'db'\n  ingress:\n",
    );
    for i in 0..rules {
        text.push_str(&format!(
            "    - {{action: allow, from: [{{cidr: 192.0.2.{i}/32}}], ports: [{{protocol: TCP, port: 5432}}]}}\n"
        ));
    }
    text
}

fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn wait_status(state: &Path, what: &str, ok: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = read_status(state).unwrap().filter(|s| ok(s)) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Entries of a pinned map, counted with bpftool.
fn entries(map: &Path) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(map)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn a_state_that_does_not_fit_or_does_not_validate_changes_nothing() {
    let netns = Netns::new("fit");
    let bpffs = Bpffs(PathBuf::from("/sys/fs/bpf/palisade-test").join(&netns.0));
    let work = tempfile::tempdir().unwrap();
    let policies = work.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    write(&policies, "tenant.yaml", TENANT);
    write(&policies, "policy.yaml", &policy(2));

    let mut config = AgentConfig::new("n1", vec![policies.clone()]);
    config.netns = Some(netns.0.clone());
    config.bpffs_dir = bpffs.0.clone();
    config.state_dir = work.path().join("state");
    // Small maps, so that a policy of a few dozen rules does not fit.
    config.map_sizes = MapSizes::default();
    config.map_sizes.endpoints = 8;
    config.map_sizes.ipcache = 64;
    config.map_sizes.policy = 32;
    config.map_sizes.conntrack = 64;
    config.map_sizes.tenants = 4;
    config.map_sizes.rule_counters = 64;
    config.map_sizes.ratelimit = 64;
    config.map_sizes.events_bytes = 1 << 16;
    let state = config.state_dir.clone();
    let agent = Agent::start(config).unwrap();
    let first = wait_status(&state, "the first reconcile", |s| s.reconciles == 1);
    assert!(first.last_error.is_none());
    let policy_map = bpffs.0.join("POLICY");
    let applied = entries(&policy_map);
    assert!(applied > 0 && applied <= 32, "{applied}");

    // Forty CIDR peers need far more than 32 POLICY entries.
    write(&policies, "policy.yaml", &policy(40));
    let failed = wait_status(&state, "the error", |s| s.last_error.is_some());
    let error = failed.last_error.unwrap();
    assert!(
        error.contains("POLICY") && error.contains("at most 32"),
        "{error}"
    );
    assert_eq!(failed.reconciles, 1);
    assert_eq!(entries(&policy_map), applied, "nothing was changed");

    // Input that does not validate: reported with its position, nothing applied.
    write(&policies, "policy.yaml", "kind: Policy\n");
    let rejected = wait_status(&state, "the rejection", |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("policy.yaml"))
    });
    assert_eq!(rejected.reconciles, 1);

    // A state that fits is applied again and clears the error.
    write(&policies, "policy.yaml", &policy(3));
    let fixed = wait_status(&state, "the next reconcile", |s| s.reconciles == 2);
    assert!(fixed.last_error.is_none());
    assert!(entries(&policy_map) > applied);

    agent.stop().unwrap();
}
