//! What a lab is made of, as recorded in `/run/palisade/lab/<lab>/state.json`:
//! nodes, endpoints, worlds and responder processes. `up` writes it, `open`
//! reads it back in another process, `down` uses it (and a scan by name, for
//! when it is lost).

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use palisade_model::ServePort;
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::naming::MacAddr;

/// Directory under which every lab keeps its state directory.
pub const STATE_ROOT: &str = "/run/palisade/lab";

/// Version of the state file's layout; bumped on incompatible changes.
const STATE_VERSION: u32 = 1;

/// The state directory of lab `lab`.
pub fn state_dir(lab: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(lab)
}

/// The state file of lab `lab`.
pub fn state_file(lab: &str) -> PathBuf {
    state_dir(lab).join("state.json")
}

/// A node: a network namespace with an underlay leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name in the intent.
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Position in node name order, from 1.
    pub index: usize,
    /// Address of `underlay0`: `10.255.0.<index>` (/24).
    pub underlay_address: Ipv4Addr,
}

/// An endpoint: a namespace joined to its node by a veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// `tenant:namespace/name`.
    pub full_ref: String,
    /// The tenant.
    pub tenant: String,
    /// The node it runs on.
    pub node: String,
    /// Its network namespace.
    pub netns: String,
    /// MAC of its `eth0`.
    pub mac: MacAddr,
    /// IPv4 addresses on its `eth0` (/32 each); IPv6 ones are not built yet.
    pub ips: Vec<Ipv4Addr>,
    /// Host-side interface in the node namespace.
    pub host_port: String,
    /// MAC of the host-side interface.
    pub host_mac: MacAddr,
    /// Ports its responder serves.
    pub serve: Vec<ServePort>,
}

/// A world: the outside as one tenant sees it from one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldInfo {
    /// The node.
    pub node: String,
    /// The tenant.
    pub tenant: String,
    /// Its network namespace.
    pub netns: String,
    /// Tenant position on this node, from 1 (the `k` of `up<k>`).
    pub index: usize,
    /// Node-side interface (`up<k>`).
    pub node_ifname: String,
    /// Node-side address, `169.254.<100+k>.1` (/30).
    pub node_address: Ipv4Addr,
    /// World-side address of `eth0`, `169.254.<100+k>.2` (/30): the next hop toward the world.
    pub nexthop: Ipv4Addr,
}

/// What the agent needs to send a tenant's traffic to the world from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// The tenant.
    pub tenant: String,
    /// Node-side interface (`up<k>`).
    pub ifname: String,
    /// The world side's address on that link.
    pub nexthop: Ipv4Addr,
}

/// A responder process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponderInfo {
    /// The namespace it serves in.
    pub netns: String,
    /// The name it answers with.
    pub name: String,
    /// Process id.
    pub pid: i32,
    /// Start time from `/proc/<pid>/stat` (clock ticks since boot), so that a
    /// reused pid is never mistaken for the responder.
    pub start_time: u64,
}

/// Where the agents of lab `lab` pin their maps and links:
/// `/sys/fs/bpf/palisade/lab-<lab>` (one directory per node below it).
/// `down` removes it.
pub fn agents_bpffs_root(lab: &str) -> PathBuf {
    Path::new(AGENTS_BPFFS_ROOT).join(format!("lab-{lab}"))
}

/// Where the agent of `node` in lab `lab` pins its maps and links.
pub fn agent_bpffs_dir(lab: &str, node: &str) -> PathBuf {
    agents_bpffs_root(lab).join(node)
}

/// The bpffs directory under which palisade agents pin by default.
const AGENTS_BPFFS_ROOT: &str = "/sys/fs/bpf/palisade";

/// A palisade agent started for a node of the lab (`palisade lab agents
/// up`), recorded so that `down` stops it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The node it enforces.
    pub node: String,
    /// Process id.
    pub pid: i32,
    /// Start time from `/proc/<pid>/stat`, so that a reused pid is never
    /// mistaken for the agent.
    pub start_time: u64,
    /// Its pin directory on bpffs.
    pub bpffs_dir: PathBuf,
    /// Its state directory (with its `status.json`).
    pub state_dir: PathBuf,
    /// Its flow log.
    pub flow_log: PathBuf,
    /// Its standard output and error.
    pub log: PathBuf,
    /// The control plane it follows (`None`: the lab's intent copy, see
    /// [`crate::intent_dir`]); absent in state files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl AgentInfo {
    /// The record of running process `pid` (`None` when it is gone).
    pub fn for_process(
        node: &str,
        pid: i32,
        bpffs_dir: PathBuf,
        state_dir: PathBuf,
        flow_log: PathBuf,
        log: PathBuf,
    ) -> Option<AgentInfo> {
        Some(AgentInfo {
            node: node.to_string(),
            pid,
            start_time: crate::process::start_time(pid)?,
            bpffs_dir,
            state_dir,
            flow_log,
            log,
            server: None,
        })
    }

    /// Whether the recorded process still runs.
    pub fn is_running(&self) -> bool {
        crate::process::is_same_process(self.pid, self.start_time)
    }
}

/// Everything a lab is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Layout version of this file.
    pub version: u32,
    /// The lab's name.
    pub lab: String,
    /// Whether the nodes forward with the kernel alone (no firewall).
    pub plain: bool,
    /// The address every world answers on.
    pub world_address: Ipv4Addr,
    /// The namespace of the underlay bridge.
    pub underlay_netns: String,
    /// Nodes in name order.
    pub nodes: Vec<NodeInfo>,
    /// Endpoints in full ref order.
    pub endpoints: Vec<EndpointInfo>,
    /// Worlds by node, then tenant.
    pub worlds: Vec<WorldInfo>,
    /// Responder processes.
    pub responders: Vec<ResponderInfo>,
    /// Agents started for the lab's nodes (absent in state files written
    /// before agents existed).
    #[serde(default)]
    pub agents: Vec<AgentInfo>,
}

impl State {
    /// An empty state of the current layout version.
    pub(crate) fn new(lab: &str, plain: bool, world_address: Ipv4Addr) -> State {
        State {
            version: STATE_VERSION,
            lab: lab.to_string(),
            plain,
            world_address,
            underlay_netns: crate::naming::underlay_netns(lab),
            nodes: vec![],
            endpoints: vec![],
            worlds: vec![],
            responders: vec![],
            agents: vec![],
        }
    }

    /// Every namespace of the lab, underlay first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.underlay_netns.clone()];
        all.extend(self.nodes.iter().map(|n| n.netns.clone()));
        all.extend(self.endpoints.iter().map(|e| e.netns.clone()));
        all.extend(self.worlds.iter().map(|w| w.netns.clone()));
        all
    }

    /// Reads the state of lab `lab`; `Ok(None)` when there is none.
    pub(crate) fn read(lab: &str) -> Result<Option<State>> {
        let path = state_file(lab);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LabError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| LabError::CorruptState { path, source })
    }

    /// Writes the state file atomically (write a temporary file, then rename),
    /// so that a crash never leaves half a file for `open` or `down`.
    pub(crate) fn write(&self) -> Result<()> {
        let path = state_file(&self.lab);
        let tmp = path.with_extension("json.tmp");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| LabError::Io {
                action,
                path,
                source,
            }
        };
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename into place", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_written_before_agents_existed_reads_with_none() {
        let mut state = State::new("t", false, Ipv4Addr::new(198, 51, 100, 1));
        let mut json = serde_json::to_value(&state).unwrap();
        json.as_object_mut().unwrap().remove("agents");
        let read: State = serde_json::from_value(json).unwrap();
        assert_eq!(read, state);

        state.agents.push(AgentInfo {
            node: "n1".into(),
            pid: 1,
            start_time: u64::MAX,
            bpffs_dir: agent_bpffs_dir("t", "n1"),
            state_dir: "/run/palisade/lab/t/agents/n1".into(),
            flow_log: "/run/palisade/lab/t/n1.flows.jsonl".into(),
            log: "/run/palisade/lab/t/n1.agent.log".into(),
            server: Some("http://127.0.0.1:7400".into()),
        });
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
        assert_eq!(
            agent_bpffs_dir("t", "n1"),
            Path::new("/sys/fs/bpf/palisade/lab-t/n1")
        );
        assert!(
            !state.agents[0].is_running(),
            "pid 1 is not the recorded process"
        );
    }
}
