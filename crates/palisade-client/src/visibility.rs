//! Wire types of the visibility API (`docs/visibility.md`): the flow records
//! agents push and clients read (Elastic Common Schema field names, dotted
//! names as nested objects), per-rule hit counters, and the segmentation map
//! of a tenant. Shared by the server, the CLI, the agent and the tests.

use std::fmt;
use std::net::IpAddr;

use palisade_model::Labels;
use palisade_policy::Attribution;
use serde::{Deserialize, Serialize};

/// What happened to a flow (`event.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowAction {
    /// A new connection was allowed.
    ConnectionAllowed,
    /// A packet was dropped (by a rule, a default, or a check such as anti-spoofing).
    PacketDenied,
    /// Allowed, but a `mode: audit` policy would deny it.
    AuditWouldDeny,
    /// An admitted connection ended (conntrack expiry or close).
    ConnectionClosed,
    /// An admitted connection was cut because the policy no longer allows it.
    ConnectionCut,
}

impl FlowAction {
    /// The ECS spelling, e.g. `packet-denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowAction::ConnectionAllowed => "connection-allowed",
            FlowAction::PacketDenied => "packet-denied",
            FlowAction::AuditWouldDeny => "audit-would-deny",
            FlowAction::ConnectionClosed => "connection-closed",
            FlowAction::ConnectionCut => "connection-cut",
        }
    }

    /// The verdict filter this action answers to.
    pub fn verdict(self) -> FlowVerdict {
        match self {
            FlowAction::ConnectionAllowed | FlowAction::ConnectionClosed => FlowVerdict::Allow,
            FlowAction::PacketDenied | FlowAction::ConnectionCut => FlowVerdict::Deny,
            FlowAction::AuditWouldDeny => FlowVerdict::Audit,
        }
    }
}

/// The `verdict=` filter of `GET /api/v1/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowVerdict {
    /// `connection-allowed` and `connection-closed`.
    Allow,
    /// `packet-denied` and `connection-cut`.
    Deny,
    /// `audit-would-deny`.
    Audit,
}

impl FlowVerdict {
    /// `allow`, `deny` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowVerdict::Allow => "allow",
            FlowVerdict::Deny => "deny",
            FlowVerdict::Audit => "audit",
        }
    }
}

impl std::str::FromStr for FlowVerdict {
    type Err = String;

    fn from_str(text: &str) -> Result<FlowVerdict, String> {
        match text {
            "allow" => Ok(FlowVerdict::Allow),
            "deny" => Ok(FlowVerdict::Deny),
            "audit" => Ok(FlowVerdict::Audit),
            other => Err(format!(
                "verdict '{other}' is not one of allow, deny, audit"
            )),
        }
    }
}

/// One flow record, as the agent's flow log writes it and as it is pushed
/// to `POST /api/v1/nodes/<node>/flows`. Fields not listed here are kept by
/// the server and served back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// When it happened, RFC 3339 (`2025-01-10T12:01:07.123Z`).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// What happened.
    pub event: FlowEvent,
    /// Where the flow comes from.
    pub source: FlowAddress,
    /// Where it goes.
    pub destination: FlowAddress,
    /// Protocol and the side that decided.
    pub network: FlowNetwork,
    /// The rule or default that decided (absent for drops no policy made,
    /// such as anti-spoofing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<FlowRule>,
    /// palisade's own fields.
    pub palisade: FlowPalisade,
}

/// `event.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowEvent {
    /// `event` (ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `["network"]` (ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Vec<String>>,
    /// What happened.
    pub action: FlowAction,
    /// `success` (allowed) or `failure` (denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The drop reason's name, e.g. `POLICY_DENIED`, `SPOOF_IP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `source.*` / `destination.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAddress {
    /// The address.
    pub ip: IpAddr,
    /// The port (TCP, UDP, SCTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `network.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowNetwork {
    /// `tcp`, `udp`, `sctp`, `icmp`, `ipv6-icmp` or a protocol number.
    pub transport: String,
    /// `ingress` or `egress`: the side that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
}

/// `rule.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRule {
    /// The attribution's text: `security/quarantine ingress rule 0`,
    /// `default deny of tenant acme`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<String>,
}

/// `palisade.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPalisade {
    /// The tenant of the flow (whose firewall decided).
    pub tenant: String,
    /// The source endpoint and identity, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FlowParty>,
    /// The destination endpoint and identity, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<FlowParty>,
    /// The node that saw it. The server fills it in from the route when
    /// absent and refuses a record naming another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Packets (of a connection, for `connection-closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Bytes (of a connection, for `connection-closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Records of the same flow left out by rate limiting since the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// For `audit-would-deny`: the audit rule that would deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<FlowAudit>,
}

/// `palisade.source` / `palisade.destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowParty {
    /// The endpoint: `tenant:[namespace/]name` (a bare name is read in the
    /// record's tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its security identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<u32>,
}

/// `palisade.audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowAudit {
    /// The audit rule that would deny, e.g. `default/web-lockdown ingress rule 0`.
    pub rule: String,
}

impl FlowRecord {
    /// The verdict filter the record answers to.
    pub fn verdict(&self) -> FlowVerdict {
        self.event.action.verdict()
    }

    /// The source endpoint as `tenant:[namespace/]name`, when the record names one.
    pub fn source_endpoint(&self) -> Option<String> {
        self.full_ref(self.palisade.source.as_ref())
    }

    /// The destination endpoint as `tenant:[namespace/]name`, when the record names one.
    pub fn destination_endpoint(&self) -> Option<String> {
        self.full_ref(self.palisade.destination.as_ref())
    }

    fn full_ref(&self, party: Option<&FlowParty>) -> Option<String> {
        let name = party?.endpoint.as_deref().filter(|n| !n.is_empty())?;
        Some(if name.contains(':') {
            name.to_owned()
        } else {
            format!("{}:{name}", self.palisade.tenant)
        })
    }

    /// The source for a person: its endpoint, else `tenant:ip`.
    pub fn source_name(&self) -> String {
        self.source_endpoint()
            .unwrap_or_else(|| format!("{}:{}", self.palisade.tenant, self.source.ip))
    }

    /// The destination for a person: its endpoint, else `tenant:ip`.
    pub fn destination_name(&self) -> String {
        self.destination_endpoint()
            .unwrap_or_else(|| format!("{}:{}", self.palisade.tenant, self.destination.ip))
    }

    /// `tcp/5432`, `icmp`, `udp`: the protocol and destination port.
    pub fn service(&self) -> String {
        match self.destination.port {
            Some(port) if port != 0 => format!("{}/{port}", self.network.transport),
            _ => self.network.transport.clone(),
        }
    }

    /// What decided, in words: the rule's name, else the drop reason.
    pub fn decided_by(&self) -> Option<&str> {
        self.rule
            .as_ref()
            .and_then(|r| r.name.as_deref())
            .or(self.event.reason.as_deref())
    }
}

/// The body of `POST /api/v1/nodes/<node>/flows`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowBatch {
    /// The records, oldest first.
    pub records: Vec<FlowRecord>,
}

/// The answer to `POST /api/v1/nodes/<node>/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsAccepted {
    /// How many records were kept.
    pub accepted: usize,
}

/// The flow history of one server, as `GET /api/v1/status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowHistoryCounts {
    /// Records held now.
    pub records: usize,
    /// The most it holds (`--flow-history`).
    pub capacity: usize,
    /// Records accepted since the server started.
    pub received: u64,
    /// Records dropped, oldest first, to stay within the capacity.
    pub dropped: u64,
}

/// The filters of `GET /api/v1/flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowQuery {
    /// Only this tenant's flows (tenant tokens: always their own).
    pub tenant: Option<String>,
    /// Only flows from or to this endpoint: `tenant:[namespace/]name`, or
    /// `[namespace/]name` in any tenant.
    pub endpoint: Option<String>,
    /// Only flows with this verdict.
    pub verdict: Option<FlowVerdict>,
    /// Only flows since this time: a duration back from now (`15m`) or RFC 3339.
    pub since: Option<String>,
    /// At most this many of the newest (not with `follow`).
    pub limit: Option<usize>,
}

/// The body of `PUT /api/v1/nodes/<node>/counters`: every counter of the
/// agent, absolute (since its maps were created), replacing its last report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterReport {
    /// One entry per rule or default that decided packets.
    pub counters: Vec<RuleCounter>,
}

/// Packets and bytes one rule (or default) decided on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleCounter {
    /// Which rule or default, as the policy engine names it (never a cookie:
    /// cookies differ from agent to agent).
    pub attribution: Attribution,
    /// Packets it decided.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The answer of `GET /api/v1/tenants/<tenant>/rules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHitsList {
    /// The tenant.
    pub tenant: String,
    /// The store revision of the intent the rules come from.
    pub revision: u64,
    /// Every rule of the tenant's policies (also those that never matched),
    /// then the tier and tenant defaults, then counted rules that are no
    /// longer in the intent.
    pub rules: Vec<RuleHits>,
}

/// One rule (or default) and how much it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleHits {
    /// Which rule or default.
    pub attribution: Attribution,
    /// Its name as flow records write it (`tier/policy ingress rule 0`,
    /// `default deny of tenant acme (ingress)`).
    pub text: String,
    /// `enforce` or `audit` (the policy's mode); `enforce` for defaults.
    pub mode: String,
    /// Packets it decided, summed over every agent's last report.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Nodes whose agents reported hits for it.
    pub nodes: Vec<String>,
    /// For audit rules: `audit-would-deny` records in this server's flow
    /// history that name it (counting suppressed ones).
    pub would_deny: u64,
    /// `false` for counters of a rule that is no longer in the intent.
    pub in_intent: bool,
}

/// The rule text of an attribution as flow records name it, without the
/// action: `security/quarantine ingress rule 0`, `default deny of tenant acme (ingress)`.
pub fn attribution_text(attribution: &Attribution) -> String {
    match attribution {
        Attribution::Rule {
            tier,
            policy,
            direction,
            index,
            ..
        } => format!("{tier}/{policy} {direction} rule {index}"),
        other => other.to_string(),
    }
}

/// Whether a record's rule name (`rule.name`, `palisade.audit.rule`) names
/// this attribution. A trailing parenthesis (`(deny)`, `(ingress)`) is
/// optional on either side.
pub fn names_attribution(name: &str, attribution: &Attribution) -> bool {
    fn bare(text: &str) -> &str {
        let text = text.trim();
        match text.rfind(" (") {
            Some(at) if text.ends_with(')') => &text[..at],
            _ => text,
        }
    }
    bare(name) == bare(&attribution_text(attribution))
}

/// How a map groups endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// By security identity (the same labels).
    Identity,
    /// By the value of one label.
    Label(String),
}

impl fmt::Display for GroupBy {
    /// `identity` or `label:KEY`, the query's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupBy::Identity => f.write_str("identity"),
            GroupBy::Label(key) => write!(f, "label:{key}"),
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = String;

    fn from_str(text: &str) -> Result<GroupBy, String> {
        match text.split_once(':') {
            None if text == "identity" => Ok(GroupBy::Identity),
            Some(("label", key)) if !key.is_empty() => Ok(GroupBy::Label(key.to_owned())),
            _ => Err(format!(
                "groupBy '{text}' is not identity or label:KEY (e.g. label:app)"
            )),
        }
    }
}

/// The answer of `GET /api/v1/tenants/<tenant>/map`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantMap {
    /// The tenant.
    pub tenant: String,
    /// The store revision of the intent.
    pub revision: u64,
    /// `identity` or `label:KEY`.
    pub group_by: String,
    /// The groups, endpoint groups first (by id), then `world`.
    pub groups: Vec<MapGroup>,
    /// Group pairs the policy allows something between.
    pub edges: Vec<MapEdge>,
}

/// What a group stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Endpoints of the tenant.
    Endpoints,
    /// Addresses outside the tenant's endpoints.
    World,
}

/// One node of the map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapGroup {
    /// Stable id: `app=web`, `app=(none)`, `identity:65793`, `world`.
    pub id: String,
    /// For a person: `app=web`, `app=web, quarantine=true`, `world`.
    pub label: String,
    /// Endpoints or the world.
    pub kind: GroupKind,
    /// The endpoints in it.
    pub members: Vec<MapMember>,
    /// Policies that select a member (`name`, `namespace/name`), with
    /// `(audit)` after audit-mode ones.
    pub policies: Vec<String>,
}

/// An endpoint in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapMember {
    /// `tenant:[namespace/]name`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `[namespace/]name`.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its node.
    pub node: String,
    /// Its security identity, once allocated.
    pub identity: Option<u32>,
}

/// What the policy allows from one group to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapEdge {
    /// `FROM->TO`.
    pub id: String,
    /// The source group's id.
    pub from: String,
    /// The destination group's id.
    pub to: String,
    /// What is allowed, by protocol and port range.
    pub ports: Vec<MapPorts>,
}

/// Whether every member pair of an edge gets a service or only some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coverage {
    /// Every member of the source group reaches every member of the destination.
    All,
    /// Only some pairs (e.g. a quarantined member is cut off).
    Some,
}

/// One allowed service of an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapPorts {
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`.
    pub protocol: String,
    /// First port (ICMP: `type << 8 | code`).
    pub first: u16,
    /// Last port.
    pub last: u16,
    /// For a person: `tcp/8080`, `tcp/8000-8099`, `udp/any`, `icmp type 8`.
    pub text: String,
    /// All member pairs or only some.
    pub coverage: Coverage,
    /// The rules that allow it (both sides).
    pub allowed_by: Vec<String>,
    /// Audit rules that would deny it.
    pub audit_would_deny: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Action, Direction};

    #[test]
    fn records_read_the_agents_ecs_lines() {
        let line = r#"{"@timestamp":"2025-01-10T12:01:07.120Z","event":{"kind":"event","category":["network"],
            "action":"packet-denied","outcome":"failure","reason":"POLICY_DENIED"},
            "source":{"ip":"10.0.1.10","port":40000},"destination":{"ip":"10.0.3.10","port":5432},
            "network":{"transport":"tcp","direction":"ingress"},
            "rule":{"name":"default deny of tenant acme","ruleset":"default"},
            "palisade":{"tenant":"acme","source":{"endpoint":"web-1","identity":65793},
            "destination":{"endpoint":"acme:db-1","identity":65795},"node":"node-1","suppressed":3},
            "ecs":{"version":"8.11"}}"#;
        let record: FlowRecord = serde_json::from_str(line).unwrap();
        assert_eq!(record.verdict(), FlowVerdict::Deny);
        assert_eq!(record.source_name(), "acme:web-1");
        assert_eq!(record.destination_name(), "acme:db-1");
        assert_eq!(record.service(), "tcp/5432");
        assert_eq!(record.decided_by(), Some("default deny of tenant acme"));
    }

    #[test]
    fn rule_names_match_attributions_with_or_without_the_parenthesis() {
        let rule = Attribution::Rule {
            tier: "security".into(),
            tenant: "acme".into(),
            policy: "quarantine".into(),
            direction: Direction::Ingress,
            index: 0,
            action: Action::Deny,
        };
        assert_eq!(
            attribution_text(&rule),
            "security/quarantine ingress rule 0"
        );
        assert!(names_attribution(
            "security/quarantine ingress rule 0",
            &rule
        ));
        assert!(names_attribution(
            "security/quarantine ingress rule 0 (deny)",
            &rule
        ));
        assert!(!names_attribution(
            "security/quarantine ingress rule 1",
            &rule
        ));
        let default = Attribution::TenantDefault {
            tenant: "acme".into(),
            direction: Direction::Ingress,
        };
        assert!(names_attribution("default deny of tenant acme", &default));
        assert!(names_attribution(
            "default deny of tenant acme (ingress)",
            &default
        ));
    }

    #[test]
    fn group_by_parses_its_two_forms() {
        assert_eq!("identity".parse::<GroupBy>(), Ok(GroupBy::Identity));
        assert_eq!(
            "label:app".parse::<GroupBy>(),
            Ok(GroupBy::Label("app".into()))
        );
        assert!("label:".parse::<GroupBy>().is_err());
        assert!("app".parse::<GroupBy>().is_err());
    }
}
