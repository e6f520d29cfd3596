//! The lab a benchmark runs in: one node forwarding between two endpoints,
//! `bench:src` and `bench:dst`, built from a small built-in intent, and a
//! guard that takes the lab down when dropped, also on panic.

use palisade_lab::{Lab, LabOptions};
use palisade_model::{load_str, Intent, LoadOptions};
use std::ffi::OsString;

use crate::error::{BenchError, Result};
use crate::traffic::Flow;

/// The testbed's intent: one tenant, two endpoints on one node, no policy
/// (a firewall variant adds its own). The endpoints serve nothing: the
/// traffic generator brings its own sockets.
pub const TESTBED_YAML: &str = "\
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
spec: {node: node-1, ips: [10.0.2.10]}
";

/// Full ref of the sending endpoint.
pub const SRC_ENDPOINT: &str = "bench:src";
/// Full ref of the receiving endpoint.
pub const DST_ENDPOINT: &str = "bench:dst";
/// UDP port the receiver listens on.
pub const FLOW_PORT: u16 = 9000;

/// The testbed's intent, validated by the model's loader.
pub fn intent() -> Result<Intent> {
    load_str(
        TESTBED_YAML,
        "bench/src/testbed.rs",
        &LoadOptions::default(),
    )
    .map_err(|diagnostics| BenchError::Intent(diagnostics.to_string()))
}

/// A testbed lab that is up; dropping it takes the lab down.
#[derive(Debug)]
pub struct Testbed {
    lab: Lab,
    _down: DownOnDrop,
}

impl Testbed {
    /// Builds lab `name` from the testbed intent. `plain`: the node forwards
    /// with the kernel alone; otherwise nothing flows until a firewall (the
    /// palisade agent) does it. `responder_command` starts the world's
    /// responder (see `LabOptions::responder_command`).
    pub fn up(name: &str, plain: bool, responder_command: Vec<OsString>) -> Result<Testbed> {
        let intent = intent()?;
        // The guard exists before the lab, so a failure half-way is cleaned too.
        let down = DownOnDrop(name.to_string());
        let options = LabOptions {
            name: name.to_string(),
            plain,
            replace: false,
            responder_command,
        };
        let lab = Lab::up(&intent, &options)?;
        Ok(Testbed { lab, _down: down })
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The network namespace of the (only) node, where firewalls go.
    pub fn node_netns(&self) -> &str {
        &self.lab.nodes()[0].netns
    }

    /// The benchmark's flow: `bench:src` → `bench:dst`, UDP port [`FLOW_PORT`].
    pub fn flow(&self) -> Result<Flow> {
        let endpoint = |full_ref: &str| {
            self.lab
                .endpoint(full_ref)
                .and_then(|e| Some((e.netns.clone(), *e.ips.first()?)))
                .ok_or_else(|| BenchError::MissingEndpoint {
                    lab: self.lab.name().to_string(),
                    endpoint: full_ref.to_string(),
                })
        };
        let (src_netns, src) = endpoint(SRC_ENDPOINT)?;
        let (dst_netns, dst) = endpoint(DST_ENDPOINT)?;
        Ok(Flow {
            src_netns,
            dst_netns,
            src,
            dst,
            port: FLOW_PORT,
        })
    }
}

/// Takes lab `.0` down when dropped.
#[derive(Debug)]
struct DownOnDrop(String);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0) {
            tracing::warn!(lab = %self.0, error = %e, "taking the benchmark lab down failed; run `palisade lab down {}`", self.0);
        }
    }
}

/// Lab name `<prefix>-<pid>-<index>`: unique per process, and tells
/// [`down_orphans`] whether its owner still runs.
pub fn lab_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{}-{index}", std::process::id())
}

/// Takes down the labs named by [`lab_name`] with `prefix` whose process is
/// gone (a run killed by Ctrl-C or a crash, where no guard ran), and returns
/// their names. Labs of running processes are left alone.
pub fn down_orphans(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in Lab::list()? {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if is_running(pid) {
            continue;
        }
        Lab::down(&name)?;
        tracing::info!(lab = %name, "removed a lab left by an earlier run");
        removed.push(name);
    }
    Ok(removed)
}

/// Whether process `pid` exists and is not a zombie (a killed run whose
/// parent has not reaped it yet is gone for our purpose).
fn is_running(pid: u32) -> bool {
    // `/proc/<pid>/stat` is `pid (comm) state ...`; comm may contain spaces.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
