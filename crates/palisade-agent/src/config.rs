//! How an agent is set up: the node it enforces, where its intent comes from
//! (files, or a control plane), where it pins its maps and keeps its state,
//! its uplinks, its flow log and its metrics. The CLI (`palisade agent`)
//! fills an [`AgentConfig`] from its flags.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use palisade_client::{ClientConfig, NodeStreamOptions};
use palisade_datapath::MapSizes;
use palisade_model::LoadOptions;

use crate::error::AgentError;
use crate::netns::NetnsHandle;

/// Where agents pin their maps and links by default: `<this>/<node>`.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/palisade";

/// Where agents keep their state by default: `<this>/<node>`.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/palisade/agent";

/// `/sys/fs/bpf/palisade/<node>`: the default pin directory of `node`'s agent.
pub fn default_bpffs_dir(node: &str) -> PathBuf {
    Path::new(DEFAULT_BPFFS_ROOT).join(node)
}

/// `/var/lib/palisade/agent/<node>`: the default state directory of `node`'s agent.
pub fn default_state_dir(node: &str) -> PathBuf {
    Path::new(DEFAULT_STATE_ROOT).join(node)
}

/// A tenant's way out to its world: `TENANT=IFNAME@NEXTHOP`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UplinkSpec {
    /// The tenant.
    pub tenant: String,
    /// The node's interface toward that tenant's world.
    pub ifname: String,
    /// The IPv4 next hop on that interface.
    pub nexthop: Ipv4Addr,
}

impl FromStr for UplinkSpec {
    type Err = AgentError;

    fn from_str(text: &str) -> Result<UplinkSpec, AgentError> {
        let invalid = |reason: &str| AgentError::InvalidUplink {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (tenant, rest) = text.split_once('=').ok_or_else(|| invalid("no '='"))?;
        let (ifname, nexthop) = rest.split_once('@').ok_or_else(|| invalid("no '@'"))?;
        if tenant.is_empty() {
            return Err(invalid("the tenant is empty"));
        }
        if ifname.is_empty() || ifname.len() > 15 {
            return Err(invalid("the interface name must have 1 to 15 bytes"));
        }
        let nexthop = nexthop
            .parse()
            .map_err(|_| invalid("the next hop is not an IPv4 address"))?;
        Ok(UplinkSpec {
            tenant: tenant.to_string(),
            ifname: ifname.to_string(),
            nexthop,
        })
    }
}

impl fmt::Display for UplinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}@{}", self.tenant, self.ifname, self.nexthop)
    }
}

/// Where flow records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowLogTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to (created if missing).
    File(PathBuf),
}

impl FromStr for FlowLogTarget {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<FlowLogTarget, Self::Err> {
        Ok(if text == "-" {
            FlowLogTarget::Stdout
        } else {
            FlowLogTarget::File(PathBuf::from(text))
        })
    }
}

/// Size-based rotation of a flow log file: `flows.jsonl` is renamed to
/// `flows.jsonl.1` (and older ones shifted up) before a record would take it
/// past `max_bytes`; `keep` files are kept in all, the current one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Largest size of one file, in bytes.
    pub max_bytes: u64,
    /// Files kept, the one being written included (at least 1).
    pub keep: usize,
}

impl Default for Rotation {
    /// 100 MiB per file, 5 files.
    fn default() -> Rotation {
        Rotation {
            max_bytes: 100 << 20,
            keep: 5,
        }
    }
}

/// How the flow log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogConfig {
    /// Where records go.
    pub target: FlowLogTarget,
    /// Rotation of a file target (`None`: the file grows without bound).
    pub rotation: Option<Rotation>,
}

impl FlowLogConfig {
    /// A target with the default rotation (files only).
    pub fn new(target: FlowLogTarget) -> FlowLogConfig {
        FlowLogConfig {
            target,
            rotation: Some(Rotation::default()),
        }
    }
}

/// A control plane to follow instead of policy files.
#[derive(Clone)]
pub struct ServerSettings {
    /// The servers (tried in turn), the agent's token and the CA to trust.
    pub client: ClientConfig,
    /// When the stream counts as dead and how reconnects back off.
    pub stream: NodeStreamOptions,
}

impl fmt::Debug for ServerSettings {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("servers", &self.client.servers)
            .field("token", &self.client.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.client.ca_file)
            .field("stream", &self.stream)
            .finish()
    }
}

impl ServerSettings {
    /// Settings for `client` with the default stream timing.
    pub fn new(client: ClientConfig) -> ServerSettings {
        ServerSettings {
            client,
            stream: NodeStreamOptions::default(),
        }
    }
}

/// How often the agent does its periodic work. The defaults suit
/// production; tests keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time after the last change in a policy path before it is read
    /// again (editors write a file in several steps).
    pub debounce: Duration,
    /// Longest wait from the first change to the read, however busy the directory.
    pub debounce_max: Duration,
    /// Conntrack garbage collection interval.
    pub ct_gc: Duration,
    /// Interfaces are rescanned at least this often even without a netlink
    /// notification (a lost notification must not leave a port unprotected
    /// for long).
    pub link_rescan: Duration,
    /// How often the datapath's counters and map fill levels are read (for
    /// metrics and the server's rule counters).
    pub sample: Duration,
    /// How often the conntrack table is counted (a walk over every entry).
    pub conntrack_count: Duration,
    /// Status reports to the server: at least this often, and after every
    /// reconcile.
    pub status_report: Duration,
    /// Rule counters to the server: at most this often, when they changed.
    pub counters_report: Duration,
    /// Flow records to the server: sent as they come (a burst as one
    /// batch); when the server is away, tried again at least this often.
    pub flow_push: Duration,
    /// Denied and audit records of one flow are aggregated over this
    /// interval (the first goes out at once); zero turns aggregation off.
    pub flow_aggregate: Duration,
}

impl Default for Timing {
    /// Debounce 15 ms (at most 60 ms), GC every second, rescan every 2 s,
    /// counters read every second and the conntrack table counted every
    /// 5 s, status every 5 s, rule counters every 5 s, flows retried every 200 ms,
    /// aggregation over 1 s.
    fn default() -> Timing {
        Timing {
            debounce: Duration::from_millis(15),
            debounce_max: Duration::from_millis(60),
            ct_gc: Duration::from_secs(1),
            link_rescan: Duration::from_secs(2),
            sample: Duration::from_secs(1),
            conntrack_count: Duration::from_secs(5),
            status_report: Duration::from_secs(5),
            counters_report: Duration::from_secs(5),
            flow_push: Duration::from_millis(200),
            flow_aggregate: Duration::from_secs(1),
        }
    }
}

/// Everything an agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node (as `spec.node` of endpoints names it).
    pub node: String,
    /// Resource files or directories (read recursively) and watched; not
    /// used when `server` is set.
    pub policy_paths: Vec<PathBuf>,
    /// Follow this control plane instead of files: the intent and the
    /// identities come from the node stream, and the agent reports its
    /// status, flows and rule counters back.
    pub server: Option<ServerSettings>,
    /// Pin directory on bpffs for maps and links.
    pub bpffs_dir: PathBuf,
    /// The node's network namespace, `None` for the caller's. [`crate::Agent::start`]
    /// enters it on the agent's thread; the CLI enters it on the main thread first.
    pub netns: Option<String>,
    /// Uplinks toward the tenants' worlds.
    pub uplinks: Vec<UplinkSpec>,
    /// The overlay toward other nodes (`None`: endpoints reach only this
    /// node's; see `docs/overlay.md`).
    pub overlay: Option<crate::overlay::OverlayConfig>,
    /// Where flow records go; `None`: nowhere (events are still drained,
    /// and pushed to the server when there is one).
    pub flow_log: Option<FlowLogConfig>,
    /// Flow records waiting for the server at most; beyond it the oldest
    /// are dropped (and counted), so a server that is away never holds up
    /// the agent.
    pub flow_queue: usize,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// The network namespace the server connection and the metrics listener
    /// use (the management network). `None`: the caller's when `netns` is
    /// set (captured by [`crate::Agent::start`] before it enters the node's),
    /// else the agent's own.
    pub control_netns: Option<NetnsHandle>,
    /// Identity allocator, cookie history and status file.
    pub state_dir: PathBuf,
    /// Map sizes used when the maps are created (adopted maps keep theirs).
    pub map_sizes: MapSizes,
    /// How resources are read (the Kubernetes tenant).
    pub load_options: LoadOptions,
    /// Periodic work.
    pub timing: Timing,
    /// A SIMULATION for benchmarks: reconcile the simulated datapath of
    /// [`crate::simulation`] (maps recorded in memory, ports pretended)
    /// instead of the kernel's. The agent then enforces NOTHING; it needs
    /// no root, bpffs or interfaces, and ignores `overlay`.
    pub simulate_datapath: bool,
}

impl AgentConfig {
    /// The defaults for `node`: pins under [`default_bpffs_dir`], state
    /// under [`default_state_dir`], no uplinks, no flow log, no server, no
    /// metrics listener, the kernel's datapath.
    pub fn new(node: &str, policy_paths: Vec<PathBuf>) -> AgentConfig {
        AgentConfig {
            node: node.to_string(),
            policy_paths,
            server: None,
            bpffs_dir: default_bpffs_dir(node),
            netns: None,
            uplinks: Vec::new(),
            overlay: None,
            flow_log: None,
            flow_queue: 20_000,
            metrics_listen: None,
            control_netns: None,
            state_dir: default_state_dir(node),
            map_sizes: MapSizes::default(),
            load_options: LoadOptions::default(),
            timing: Timing::default(),
            simulate_datapath: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uplinks_parse_and_print_back() {
        let uplink: UplinkSpec = "acme=up1@169.254.101.2".parse().unwrap();
        assert_eq!(
            uplink,
            UplinkSpec {
                tenant: "acme".into(),
                ifname: "up1".into(),
                nexthop: Ipv4Addr::new(169, 254, 101, 2),
            }
        );
        assert_eq!(uplink.to_string(), "acme=up1@169.254.101.2");
        for bad in [
            "acme",
            "acme=up1",
            "=up1@1.2.3.4",
            "acme=@1.2.3.4",
            "acme=up1@fe80::1",
        ] {
            let err = bad.parse::<UplinkSpec>().unwrap_err().to_string();
            assert!(err.contains("TENANT=IFNAME@NEXTHOP"), "{bad}: {err}");
        }
    }
}
