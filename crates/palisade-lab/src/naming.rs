//! Names and link-layer addresses the lab derives: network namespace names,
//! host-side interface names and MAC addresses. Pure functions of the intent,
//! so that the agent, the CLI and tests derive the same values as `Lab::up`
//! without a running lab.

use std::fmt;
use std::str::FromStr;

use palisade_model::Endpoint;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LabError, Result};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Longest lab name: keeps namespace names readable.
pub const MAX_LAB_NAME_LEN: usize = 32;

/// The lab's name when none is given.
pub const DEFAULT_LAB_NAME: &str = "palisade";

/// Name of a node's underlay leg (inside the node namespace).
pub const UNDERLAY_IFNAME: &str = "underlay0";

/// Name of the bridge joining every node's underlay leg.
pub const UNDERLAY_BRIDGE: &str = "br0";

/// Name of the workload's side of an endpoint veth, and of a world's side of its uplink.
pub const INNER_IFNAME: &str = "eth0";

/// Prefix of every network namespace of lab `lab`: `pl_<lab>_`.
///
/// Lab names never contain `_`, so one lab's prefix is never a prefix of
/// another lab's namespaces.
pub fn lab_prefix(lab: &str) -> String {
    format!("pl_{lab}_")
}

/// The namespace standing for node `node`: `pl_<lab>_n_<node>`.
pub fn node_netns(lab: &str, node: &str) -> String {
    format!("{}n_{node}", lab_prefix(lab))
}

/// The namespace of an endpoint: `pl_<lab>_e_<tenant>_<namespace or ->_<name>`.
pub fn endpoint_netns(lab: &str, endpoint: &Endpoint) -> String {
    let ns = endpoint.namespace.as_deref().unwrap_or("-");
    format!(
        "{}e_{}_{ns}_{}",
        lab_prefix(lab),
        endpoint.tenant,
        endpoint.name
    )
}

/// The namespace standing for the world outside, as tenant `tenant` sees it
/// from node `node`: `pl_<lab>_w_<node>_<tenant>`.
pub fn world_netns(lab: &str, node: &str, tenant: &str) -> String {
    format!("{}w_{node}_{tenant}", lab_prefix(lab))
}

/// The namespace holding the underlay bridge: `pl_<lab>_underlay`.
pub fn underlay_netns(lab: &str) -> String {
    format!("{}underlay", lab_prefix(lab))
}

/// The node-side interface of the uplink to the `k`-th tenant's world on a node: `up<k>`.
pub fn uplink_ifname(k: usize) -> String {
    format!("up{k}")
}

/// The underlay bridge's port for node number `n` (inside the underlay namespace).
pub fn underlay_port_ifname(n: usize) -> String {
    format!("node{n}")
}

/// The endpoint's host-side interface (see [`Endpoint::host_interface`]).
pub fn host_port_name(endpoint: &Endpoint) -> String {
    endpoint.host_interface()
}

/// The workload's MAC (see [`Endpoint::workload_mac`]).
pub fn endpoint_mac(endpoint: &Endpoint) -> MacAddr {
    MacAddr(endpoint.workload_mac())
}

/// The host-side port's MAC, derived from the full ref (`06:` + 5 bytes of a
/// hash: locally administered unicast, and never equal to a derived workload MAC).
pub fn host_port_mac(endpoint: &Endpoint) -> MacAddr {
    MacAddr(palisade_model::derived_mac(
        0x06,
        "host-mac",
        &endpoint.full_ref(),
    ))
}

/// Checks a lab name: 1 to 32 of `a-z`, `0-9`, `-`, starting with a letter or digit.
pub fn validate_lab_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > MAX_LAB_NAME_LEN {
        Some(format!("it is longer than {MAX_LAB_NAME_LEN} bytes"))
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("use only a-z, 0-9 and '-' (no '_': it separates the parts of namespace names)".into())
    } else if name.starts_with('-') {
        Some("it starts with '-'".into())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidLabName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that a tenant, namespace, endpoint or node name can be part of a
/// namespace name (a file name under `/run/netns`).
pub(crate) fn validate_resource_name(what: &'static str, value: &str) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.contains('/') {
        Some("it contains '/'")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LabError::InvalidResourceName {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why the kernel (or the lab) would refuse `name` as a host-side interface
/// name, or `None` when it is fine.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Some(format!(
            "it is {} bytes, the kernel allows {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("'.' and '..' are not interface names".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some("it contains '/', ':', whitespace or control characters".into());
    }
    let reserved = name == "lo"
        || name == UNDERLAY_IFNAME
        || name
            .strip_prefix("up")
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    if reserved {
        return Some("the lab uses this name on every node (lo, underlay0, up<k>)".into());
    }
    None
}

/// A MAC address, written `02:00:5e:10:00:01` in text and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| format!("{s:?}: too short"))?;
            if part.len() != 2 {
                return Err(format!("{s:?}: each byte is two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|e| format!("{s:?}: {e}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?}: more than 6 bytes"));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn endpoint(tenant: &str, namespace: Option<&str>, name: &str) -> Endpoint {
        Endpoint {
            tenant: tenant.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
            labels: Default::default(),
            ips: vec![],
            mac: None,
            node: "node-1".into(),
            interface: None,
            serve: vec![],
        }
    }

    #[test]
    fn derived_names_and_macs_are_stable_across_runs() {
        // Pinned values: other programs (the agent, older labs) derive the same
        // names, so a change here is a compatibility break, not a refactor.
        let web = endpoint("acme", None, "web-1");
        assert_eq!(host_port_name(&web), "pef0fe8c8d");
        assert_eq!(endpoint_mac(&web).to_string(), "02:61:75:05:73:f7");
        assert_eq!(host_port_mac(&web).to_string(), "06:ab:7f:bf:4e:df");
    }

    #[test]
    fn derived_names_and_macs_are_unique_over_many_endpoints() {
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        for tenant in ["acme", "globex", "initech"] {
            for i in 0..4000 {
                let ns = (i % 3 == 0).then_some("prod");
                let ep = endpoint(tenant, ns, &format!("w-{i}"));
                assert!(names.insert(host_port_name(&ep)), "name clash at {ep:?}");
                assert!(macs.insert(endpoint_mac(&ep)), "mac clash at {ep:?}");
                assert!(macs.insert(host_port_mac(&ep)), "host mac clash at {ep:?}");
            }
        }
    }

    #[test]
    fn namespaced_and_plain_endpoints_get_different_names() {
        let a = endpoint("acme", Some("prod"), "web");
        let b = endpoint("acme", None, "web");
        assert_ne!(host_port_name(&a), host_port_name(&b));
        assert_eq!(endpoint_netns("lab", &a), "pl_lab_e_acme_prod_web");
        assert_eq!(endpoint_netns("lab", &b), "pl_lab_e_acme_-_web");
    }

    #[test]
    fn given_interface_and_mac_win() {
        let mut ep = endpoint("acme", None, "web");
        ep.interface = Some("tap-web".into());
        ep.mac = Some([0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(host_port_name(&ep), "tap-web");
        assert_eq!(endpoint_mac(&ep).to_string(), "52:54:00:01:02:03");
    }

    #[test]
    fn interface_names_the_kernel_or_lab_refuse_are_caught() {
        assert!(interface_name_problem("pe0123abcd").is_none());
        assert!(interface_name_problem("tap-web").is_none());
        assert!(interface_name_problem("upstream").is_none());
        for bad in [
            "",
            "a-very-long-name0",
            "a/b",
            "a b",
            "up1",
            "lo",
            "underlay0",
        ] {
            assert!(interface_name_problem(bad).is_some(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lab_names_cannot_make_one_prefix_cover_another() {
        assert!(validate_lab_name("palisade").is_ok());
        assert!(validate_lab_name("t-1-42").is_ok());
        for bad in ["", "a_b", "A", "-x", &"x".repeat(33)] {
            assert!(validate_lab_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mac_text_round_trips() {
        let mac: MacAddr = "02:ab:00:10:ff:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:00:10:ff:01");
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:ab:00:10:ff:01\""
        );
        assert!("02:ab:00".parse::<MacAddr>().is_err());
        assert!("02:ab:00:10:ff:01:00".parse::<MacAddr>().is_err());
    }
}
