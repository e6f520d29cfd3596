//! The resource types a user writes: tenants, endpoints, policies and tiers,
//! as they are after parsing and validation (see `load` for how text becomes
//! these). Every other crate consumes these types; they hold no positions.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// Labels of an endpoint: key → value, ordered so that equal sets compare equal.
pub type Labels = BTreeMap<String, String>;

/// The `apiVersion` of native resources.
pub const API_VERSION: &str = "palisade.dev/v1";

/// Label key that carries an endpoint's namespace (reserved prefix `palisade.dev/`).
pub const NAMESPACE_LABEL: &str = "palisade.dev/namespace";
/// Prefix under which a Kubernetes namespace's labels are copied onto its endpoints.
pub const NAMESPACE_LABELS_PREFIX: &str = "nslabel.palisade.dev/";
/// Label prefixes users may not set themselves: the system derives them.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["palisade.dev/", NAMESPACE_LABELS_PREFIX];

/// Name of the tier a policy lands in when it names none.
pub const DEFAULT_TIER: &str = "default";
/// Order of the `default` tier unless a Tier resource named `default` says otherwise.
pub const DEFAULT_TIER_ORDER: i64 = 1_000_000;

/// One validated resource of any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Resource {
    /// A tenant (`kind: Tenant`).
    Tenant(Tenant),
    /// An endpoint (`kind: Endpoint`, or an imported Pod).
    Endpoint(Endpoint),
    /// A policy (`kind: Policy`, or an imported NetworkPolicy).
    Policy(Policy),
    /// A tier (`kind: Tier`).
    Tier(Tier),
}

/// The kinds of native resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `kind: Tenant`.
    Tenant,
    /// `kind: Endpoint`.
    Endpoint,
    /// `kind: Policy`.
    Policy,
    /// `kind: Tier`.
    Tier,
}

impl Kind {
    /// All kinds, in the order they are applied (referenced before referencing).
    pub const ALL: [Kind; 4] = [Kind::Tenant, Kind::Tier, Kind::Endpoint, Kind::Policy];

    /// The name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tenant => "Tenant",
            Kind::Endpoint => "Endpoint",
            Kind::Policy => "Policy",
            Kind::Tier => "Tier",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a tenant is zero trust or follows Kubernetes isolation rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantDefault {
    /// Nothing flows unless a policy allows it.
    #[default]
    Deny,
    /// An endpoint is isolated in a direction only once a policy of that direction selects it.
    Kubernetes,
}

/// An isolated virtual network with its own address space and VNI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Unique name (`metadata.name`).
    pub name: String,
    /// What happens when no policy decides (`spec.defaultAction`).
    pub default_action: TenantDefault,
    /// VXLAN network identifier (24 bits). Filled in by `Intent` when absent in the input.
    pub vni: Option<u32>,
    /// Address ranges of the tenant's endpoints; empty means "any".
    pub cidrs: Vec<IpNet>,
}

/// A port a lab responder serves in an endpoint, e.g. `tcp/80`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServePort {
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// Port number, 1..=65535.
    pub port: u16,
}

impl fmt::Display for ServePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.protocol.as_str().to_ascii_lowercase(),
            self.port
        )
    }
}

/// A workload's port: where it runs, what it is called, which labels it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its namespace, if any (Kubernetes pods always have one).
    pub namespace: Option<String>,
    /// Name, unique per tenant and namespace.
    pub name: String,
    /// The user's labels plus the derived ones (namespace, namespace labels).
    pub labels: Labels,
    /// Its addresses (at least one), unique inside the tenant.
    pub ips: Vec<IpAddr>,
    /// The workload's MAC address; the lab derives one when absent.
    pub mac: Option<[u8; 6]>,
    /// The node (host) it runs on.
    pub node: String,
    /// Host-side interface name; the lab derives one when absent.
    pub interface: Option<String>,
    /// Ports the lab's responder serves inside this endpoint (`spec.lab.serve`).
    pub serve: Vec<ServePort>,
}

impl Endpoint {
    /// `namespace/name` or `name`: the endpoint's name inside its tenant.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `tenant:namespace/name`: unique across the whole intent.
    pub fn full_ref(&self) -> String {
        format!("{}:{}", self.tenant, self.qualified_name())
    }

    /// The host-side interface of the endpoint's port: `spec.interface` when
    /// given, else `pe` + 8 hex digits of a hash of the full ref. The lab
    /// creates it under this name and the agent finds it by this name.
    pub fn host_interface(&self) -> String {
        match &self.interface {
            Some(name) => name.clone(),
            None => {
                let h = fnv1a64("ifname", &self.full_ref());
                // Fold 64 bits to 32 so that every input bit counts.
                format!("pe{:08x}", (h ^ (h >> 32)) as u32)
            }
        }
    }

    /// The workload's MAC: `spec.mac` when given, else derived from the full
    /// ref (locally administered unicast, `02:` + 5 bytes of a hash). The
    /// datapath's anti-spoofing check expects exactly this address.
    pub fn workload_mac(&self) -> [u8; 6] {
        match self.mac {
            Some(mac) => mac,
            None => derived_mac(0x02, "mac", &self.full_ref()),
        }
    }
}

/// A locally administered unicast MAC: `first` + 5 bytes of a hash of `text`.
pub fn derived_mac(first: u8, domain: &str, text: &str) -> [u8; 6] {
    let h = fnv1a64(domain, text).to_be_bytes();
    [first, h[0], h[1], h[2], h[3], h[4]]
}

/// FNV-1a, 64 bits, over `domain`, a zero byte, then `text`: stable across
/// Rust versions and machines (unlike `DefaultHasher`), which derived names
/// must be because several programs derive them independently.
fn fnv1a64(domain: &str, text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = domain.bytes().chain([0]).chain(text.bytes());
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Whether a policy's verdicts are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    /// Verdicts are enforced.
    Enforce,
    /// Evaluated and reported ("audit: would deny"), never changes the enforced verdict.
    Audit,
}

/// The side of a flow a rule speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic arriving at the selected endpoint.
    Ingress,
    /// Traffic leaving the selected endpoint.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`, as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow the flow.
    Allow,
    /// Deny the flow.
    Deny,
    /// Record the flow and go on to the next rule.
    Log,
    /// Skip the rest of this tier.
    Pass,
}

impl Action {
    /// `allow`, `deny`, `log` or `pass`, as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Log => "log",
            Action::Pass => "pass",
        }
    }
}

/// Transport protocols a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1).
    Icmp,
    #[serde(rename = "ICMPv6")]
    /// ICMPv6 (58).
    Icmpv6,
}

impl Protocol {
    /// All protocols, in IP protocol number order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Icmp,
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmpv6,
        Protocol::Sctp,
    ];

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol for an IP protocol number, if it is one palisade names.
    pub fn from_number(n: u8) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.number() == n)
    }

    /// Whether flows of this protocol have ports (else ICMP type/code).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// Name as written in policies: `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port (or ICMP type/code) match of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortMatch {
    /// Ports `port..=end_port` of a protocol with ports; `None` = every port.
    Ports {
        /// A protocol with ports (TCP, UDP, SCTP).
        protocol: Protocol,
        /// First port; `None` = every port.
        port: Option<u16>,
        /// Last port of the range; `None` = just `port`.
        end_port: Option<u16>,
    },
    /// ICMP or ICMPv6, optionally one type, optionally one code of that type.
    Icmp {
        /// ICMP or ICMPv6.
        protocol: Protocol,
        /// The ICMP type; `None` = every type.
        icmp_type: Option<u8>,
        /// The ICMP code; `None` = every code of the type.
        icmp_code: Option<u8>,
    },
}

impl PortMatch {
    /// The protocol matched.
    pub fn protocol(&self) -> Protocol {
        match *self {
            PortMatch::Ports { protocol, .. } | PortMatch::Icmp { protocol, .. } => protocol,
        }
    }
}

/// Named sets of peers that are not endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    /// Every address that is not an endpoint of the tenant and not the host.
    World,
    /// The node the endpoint runs on.
    Host,
    /// Any peer at all.
    All,
}

/// One peer of a rule: who is on the other side of the flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Peer {
    /// Endpoints of the same tenant whose labels match.
    Selector(Selector),
    /// Addresses outside the tenant's endpoints inside `cidr` and outside every `except`.
    Cidr {
        /// The range (no host bits set).
        cidr: IpNet,
        /// Ranges inside `cidr` that are not matched.
        except: Vec<IpNet>,
    },
    /// A named set of peers.
    Entity(Entity),
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// What a matching flow gets.
    pub action: Action,
    /// `from` (ingress) or `to` (egress); `None` = any peer.
    pub peers: Option<Vec<Peer>>,
    /// `None` = any protocol and port.
    pub ports: Option<Vec<PortMatch>>,
}

/// A set of rules protecting the endpoints its selector picks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// The tenant it belongs to.
    pub tenant: String,
    /// The namespace a namespaced policy (`metadata.namespace`, or a Kubernetes
    /// NetworkPolicy) lives in. Informational only: validation already folded the
    /// namespace into `selector` and the peer selectors.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name, unique per tenant and namespace.
    pub name: String,
    /// The tier's name; `default` when the input names none.
    pub tier: String,
    /// Position inside the tier; `None` sorts after every number.
    pub order: Option<i64>,
    /// The endpoints it protects (namespace already folded in).
    pub selector: Selector,
    /// Enforce or only report.
    pub mode: Mode,
    /// `None` when the policy has no `ingress` key (and `types` does not name it).
    pub ingress: Option<Vec<Rule>>,
    /// `None` when the policy has no `egress` key (and `types` does not name it).
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// `namespace/name` or `name`: the policy's name inside its tenant.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `tenant:namespace/name`: unique across the whole intent.
    pub fn full_ref(&self) -> String {
        format!("{}:{}", self.tenant, self.qualified_name())
    }

    /// The rules of one direction, or `None` when the policy does not cover it.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// What a tier does when a policy of it selected an endpoint and no rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierDefault {
    #[default]
    /// Deny the flow.
    Deny,
    /// Go on to the next tier.
    Pass,
}

/// A namespace's labels (from a `v1 Namespace` object). Endpoints of a namespace
/// of this name, in any tenant, carry them under `NAMESPACE_LABELS_PREFIX` so
/// that `namespaceSelector` peers can match them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// The namespace's name.
    pub name: String,
    /// The user's labels, without `kubernetes.io/metadata.name` (always derived).
    pub labels: Labels,
}

/// An ordered layer of policies (cluster-wide, not per tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    /// Unique name.
    pub name: String,
    /// Position among tiers: lower orders are evaluated first.
    pub order: i64,
    /// What happens when a policy of the tier selected an endpoint and no rule decided.
    pub default_action: TierDefault,
}
