//! How an agent is set up: the node it enforces, where its intent comes from,
//! where it pins its maps and keeps its state, its uplinks and its flow log.
//! The CLI (`palisade agent`) fills an [`AgentConfig`] from its flags.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use palisade_datapath::MapSizes;
use palisade_model::LoadOptions;

use crate::error::AgentError;

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
}

impl Default for Timing {
    /// Debounce 15 ms (at most 60 ms), GC every second, rescan every 2 s.
    fn default() -> Timing {
        Timing {
            debounce: Duration::from_millis(15),
            debounce_max: Duration::from_millis(60),
            ct_gc: Duration::from_secs(1),
            link_rescan: Duration::from_secs(2),
        }
    }
}

/// Everything an agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node (as `spec.node` of endpoints names it).
    pub node: String,
    /// Resource files or directories (read recursively) and watched.
    pub policy_paths: Vec<PathBuf>,
    /// Pin directory on bpffs for maps and links.
    pub bpffs_dir: PathBuf,
    /// The node's network namespace, `None` for the caller's. [`crate::Agent::start`]
    /// enters it on the agent's thread; the CLI enters it on the main thread first.
    pub netns: Option<String>,
    /// Uplinks toward the tenants' worlds.
    pub uplinks: Vec<UplinkSpec>,
    /// Where flow records go; `None`: nowhere (events are still drained).
    pub flow_log: Option<FlowLogTarget>,
    /// Identity allocator, cookie history and status file.
    pub state_dir: PathBuf,
    /// Map sizes used when the maps are created (adopted maps keep theirs).
    pub map_sizes: MapSizes,
    /// How resources are read (the Kubernetes tenant).
    pub load_options: LoadOptions,
    /// Periodic work.
    pub timing: Timing,
}

impl AgentConfig {
    /// The defaults for `node`: pins under [`default_bpffs_dir`], state
    /// under [`default_state_dir`], no uplinks, no flow log.
    pub fn new(node: &str, policy_paths: Vec<PathBuf>) -> AgentConfig {
        AgentConfig {
            node: node.to_string(),
            policy_paths,
            bpffs_dir: default_bpffs_dir(node),
            netns: None,
            uplinks: Vec::new(),
            flow_log: None,
            state_dir: default_state_dir(node),
            map_sizes: MapSizes::default(),
            load_options: LoadOptions::default(),
            timing: Timing::default(),
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
