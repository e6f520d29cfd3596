//! The API's wire types: what the server sends and receives as JSON, shared
//! by the server, the CLI and the agent so that both ends agree by
//! construction. The routes are described in `docs/api.md`.

use std::fmt;

use palisade_model::{Kind, Resource};
use palisade_policy::{Identities, Identity, IdentityKind};
use serde::{Deserialize, Serialize};

/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// The path segment of a kind's routes (`tenants`, `tiers`, `endpoints`,
/// `policies`).
pub fn kind_path(kind: Kind) -> &'static str {
    match kind {
        Kind::Tenant => "tenants",
        Kind::Tier => "tiers",
        Kind::Endpoint => "endpoints",
        Kind::Policy => "policies",
    }
}

/// The kind a route segment or a command-line word names: singular, plural
/// or short form, in any case (`policy`, `policies`, `pol`, `ep`).
pub fn parse_kind(word: &str) -> Option<Kind> {
    match word.to_ascii_lowercase().as_str() {
        "tenant" | "tenants" => Some(Kind::Tenant),
        "tier" | "tiers" => Some(Kind::Tier),
        "endpoint" | "endpoints" | "ep" | "pod" | "pods" => Some(Kind::Endpoint),
        "policy" | "policies" | "pol" | "networkpolicy" | "networkpolicies" | "netpol" => {
            Some(Kind::Policy)
        }
        _ => None,
    }
}

/// Whether resources of a kind belong to a tenant (Endpoint, Policy) or to
/// the whole installation (Tenant, Tier).
pub fn kind_has_tenant(kind: Kind) -> bool {
    matches!(kind, Kind::Endpoint | Kind::Policy)
}

/// The error body of every failed request:
/// `{"error": {"code", "message", "details": [...]}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ApiErrorObject,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorObject {
    /// A stable machine-readable code: `invalid`, `conflict`, `forbidden`,
    /// `unauthorized`, `not_found`, `referenced`, `gone`, `too_large`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// One sentence for a person: what went wrong and what to do.
    pub message: String,
    /// Individual problems (validation errors, conflicting resources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
}

/// One problem of an error: a validation error of a resource's field, a
/// conflicting version, a referrer that blocks a delete.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Index of the document in the request, when the problem is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The resource: `Kind name`, `Kind tenant/name` or `Kind tenant/namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Field path inside the resource, e.g. `spec.ingress[0].ports[1].endPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
    /// For conflicts: the resource's current version (`None`: it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// For conflicts: who wrote the current version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

impl fmt::Display for ErrorDetail {
    /// `Resource: field: message`, as the model prints a diagnostic without a file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(resource) = &self.resource {
            write!(f, "{resource}: ")?;
        } else if let Some(index) = self.document {
            write!(f, "document {}: ", index + 1)?;
        }
        if let Some(field) = self.field.as_deref().filter(|p| !p.is_empty()) {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Body of `POST /api/v1/apply`: the documents, as the user wrote them (a
/// bare JSON array is accepted too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Tenant, Tier, Endpoint, Policy, Pod or NetworkPolicy documents. A
    /// document with `metadata.resourceVersion` is written only if the stored
    /// version is still that one.
    pub items: Vec<serde_json::Value>,
}

/// What an apply did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// It did not exist before.
    Created,
    /// It existed and the document differs.
    Updated,
    /// It existed with the same document; nothing was written.
    Unchanged,
    /// It was deleted.
    Deleted,
}

impl ApplyAction {
    /// `created`, `updated`, `unchanged`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Updated => "updated",
            ApplyAction::Unchanged => "unchanged",
            ApplyAction::Deleted => "deleted",
        }
    }
}

/// Which resource: kind, tenant (Endpoint, Policy), namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    /// The kind.
    pub kind: Kind,
    /// The tenant, for Endpoints and Policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The namespace, when the resource has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ResourceRef {
    /// The reference of a validated resource.
    pub fn of(resource: &Resource) -> ResourceRef {
        match resource {
            Resource::Tenant(t) => ResourceRef {
                kind: Kind::Tenant,
                tenant: None,
                namespace: None,
                name: t.name.clone(),
            },
            Resource::Tier(t) => ResourceRef {
                kind: Kind::Tier,
                tenant: None,
                namespace: None,
                name: t.name.clone(),
            },
            Resource::Endpoint(e) => ResourceRef {
                kind: Kind::Endpoint,
                tenant: Some(e.tenant.clone()),
                namespace: e.namespace.clone(),
                name: e.name.clone(),
            },
            Resource::Policy(p) => ResourceRef {
                kind: Kind::Policy,
                tenant: Some(p.tenant.clone()),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            },
        }
    }

    /// The tenant this resource is visible to: its own for Endpoints and
    /// Policies, the tenant itself for a Tenant, `None` for a Tier.
    pub fn owner_tenant(&self) -> Option<&str> {
        match self.kind {
            Kind::Tenant => Some(&self.name),
            Kind::Tier => None,
            Kind::Endpoint | Kind::Policy => self.tenant.as_deref(),
        }
    }
}

impl fmt::Display for ResourceRef {
    /// `Kind name`, `Kind tenant/name` or `Kind tenant/namespace/name`, as
    /// validation messages name resources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if let Some(t) = &self.tenant {
            write!(f, "{t}/")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        f.write_str(&self.name)
    }
}

/// The outcome for one document of an apply (or for a delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    /// Which resource.
    #[serde(flatten)]
    pub resource: ResourceRef,
    /// What happened to it.
    pub action: ApplyAction,
    /// Its version now (the store revision that last wrote it); for a
    /// deleted resource, the version it had.
    pub resource_version: u64,
}

/// Response of `POST /api/v1/apply` and `DELETE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResponse {
    /// The store revision after the change (unchanged when nothing was written).
    pub revision: u64,
    /// When the store committed the change, by the server's clock (RFC 3339,
    /// microseconds; taken as the commit starts, so never after it); absent
    /// when nothing was written.
    #[serde(
        default,
        rename = "committedAt",
        skip_serializing_if = "Option::is_none"
    )]
    pub committed_at: Option<String>,
    /// One result per document, in request order.
    pub results: Vec<ApplyResult>,
}

/// Response of `GET /api/v1/<kinds>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceList {
    /// The store revision the list was read at.
    pub revision: u64,
    /// The documents as the users wrote them, each with
    /// `metadata.resourceVersion`.
    pub items: Vec<serde_json::Value>,
}

/// One line of `GET /api/v1/watch`: a change after the `from` revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The store revision of the change.
    pub revision: u64,
    /// `put` or `delete`.
    #[serde(rename = "type")]
    pub kind: WatchEventKind,
    /// The document (with `metadata.resourceVersion`); for a delete, only
    /// `kind` and `metadata` naming what was deleted.
    pub resource: serde_json::Value,
}

/// What a watch event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchEventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// Body of `POST /api/v1/explain`: the flow as the CLI's `explain` takes it
/// (`from`, `to`, `proto`, `port`, `icmp_type`, `icmp_code`).
pub use palisade_policy::FlowRequest as ExplainRequest;

/// Response of `POST /api/v1/explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainResponse {
    /// The store revision of the state the flow was decided on.
    pub revision: u64,
    /// The verdict and everything that led to it (`palisade_policy::Explanation`).
    pub explanation: palisade_policy::Explanation,
    /// The one-line form, as `palisade explain` prints it.
    pub text: String,
    /// The long form with the tiers, steps and rules consulted.
    pub detail: String,
}

/// One record of the audit log (`GET /api/v1/audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The store revision of the change (the resource's new version).
    #[serde(default)]
    pub revision: u64,
    /// Who made the change: the token's subject (`anonymous` without auth).
    pub subject: String,
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// Which resource.
    #[serde(flatten)]
    pub resource: ResourceRef,
    /// What happened.
    pub action: ApplyAction,
    /// The version before the change (`None` when it was created).
    #[serde(default)]
    pub old_version: Option<u64>,
    /// The version after the change (`None` when it was deleted).
    #[serde(default)]
    pub new_version: Option<u64>,
}

/// Response of `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditList {
    /// The records, oldest first.
    pub items: Vec<AuditRecord>,
}

/// What an agent reports (`PUT /api/v1/nodes/<node>/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The last revision of the node stream the agent enforces.
    pub applied_revision: u64,
    /// `ok`, `degraded: <why>` or `disconnected since <time>`.
    pub health: String,
    /// The endpoints attached on the node (`tenant:namespace/name`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// The node's address on the underlay, where other nodes reach its
    /// endpoints over the overlay; the server shares it with every node
    /// (`NodeSnapshot::nodes`). Absent when the agent runs no overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_address: Option<std::net::Ipv4Addr>,
}

/// An agent as `GET /api/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The node's name.
    pub node: String,
    /// The last revision the agent reported as applied.
    pub applied_revision: u64,
    /// How many revisions of intent the agent is behind (0: up to date).
    pub lag: u64,
    /// When the agent last reported, RFC 3339.
    pub last_report: String,
    /// Seconds since the last report.
    pub seconds_since_report: u64,
    /// As the agent reported it.
    pub health: String,
    /// The endpoints attached on the node.
    pub endpoints: Vec<String>,
}

/// Response of `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The store revision the server has seen.
    pub revision: u64,
    /// The last revision that changed the intent (resources or identities).
    pub intent_revision: u64,
    /// `enabled`, or `disabled` when the server runs without `--tokens`.
    pub auth: String,
    /// The backend, e.g. `redb file /var/lib/palisade/store.redb`.
    pub store: String,
    /// Who is asking, as the server sees the token.
    pub subject: String,
    /// The caller's role (`admin`, `tenant:NAME`, `agent:NODE`).
    pub role: String,
    /// Agents that reported (admins only; empty for other roles).
    pub agents: Vec<AgentStatus>,
    /// This server's flow history (`docs/visibility.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<crate::visibility::FlowHistoryCounts>,
}

/// A resource as the node stream carries it: the user's document and its
/// validated form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResource {
    /// Which resource.
    #[serde(flatten)]
    pub reference: ResourceRef,
    /// Its version.
    pub resource_version: u64,
    /// The validated resource (a Pod already as its Endpoint).
    pub resource: Resource,
}

/// The identities of one tenant, as the node stream carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantIdentities {
    /// The tenant.
    pub tenant: String,
    /// Its index (upper 16 bits of its identities).
    pub index: u16,
    /// Its VXLAN network identifier as the control plane resolved it (use
    /// this one: a VNI left out of the Tenant is allocated over all tenants).
    pub vni: u32,
    /// Every identity of the tenant, reserved ones included.
    pub identities: Vec<IdentityEntry>,
    /// The tenant's ipcache entries.
    pub ipcache: Vec<IpcacheEntry>,
}

/// One identity and what it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityEntry {
    /// The number.
    pub identity: Identity,
    /// What it stands for.
    pub kind: IdentityKind,
}

/// One ipcache entry: a prefix of a tenant's address space and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheEntry {
    /// The tenant's index.
    pub tenant_index: u16,
    /// The prefix.
    pub prefix: String,
    /// The identity addresses in it map to.
    pub identity: Identity,
}

/// Splits allocated identities into per-tenant records (what the server
/// stores and streams). `vni` gives each tenant's resolved VNI.
pub fn split_identities(
    identities: &Identities,
    vni: impl Fn(&str) -> u32,
) -> Vec<TenantIdentities> {
    // The wire form of `Identities` is public and stable: go through it
    // rather than through the allocator's private maps.
    let wire = serde_json::to_value(identities).expect("identities serialize");
    let tenants: Vec<WireTenant> =
        serde_json::from_value(wire["tenants"].clone()).expect("identities wire form");
    let ipcache: Vec<IpcacheEntry> =
        serde_json::from_value(wire["ipcache"].clone()).expect("identities wire form");
    tenants
        .into_iter()
        .map(|t| TenantIdentities {
            vni: vni(&t.name),
            ipcache: ipcache
                .iter()
                .filter(|e| e.tenant_index == t.index)
                .cloned()
                .collect(),
            tenant: t.name,
            index: t.index,
            identities: t.identities,
        })
        .collect()
}

/// Joins per-tenant records back into [`Identities`] (what the agent's
/// compiler takes).
pub fn join_identities<'a>(records: impl IntoIterator<Item = &'a TenantIdentities>) -> Identities {
    let mut tenants = Vec::new();
    let mut ipcache = Vec::new();
    for r in records {
        tenants.push(WireTenant {
            name: r.tenant.clone(),
            index: r.index,
            identities: r.identities.clone(),
        });
        ipcache.extend(r.ipcache.iter().cloned());
    }
    let wire = serde_json::json!({ "tenants": tenants, "ipcache": ipcache });
    serde_json::from_value(wire).expect("identities wire form")
}

#[derive(Serialize, Deserialize)]
struct WireTenant {
    name: String,
    index: u16,
    identities: Vec<IdentityEntry>,
}

/// One line of the node stream (`GET /api/v1/nodes/<node>/stream`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NodeMessage {
    /// Everything the node needs, replacing what it had.
    Snapshot(NodeSnapshot),
    /// The changes of one store revision, for the node's tenants.
    Delta(NodeDelta),
    /// Nothing changed for the node up to `revision`; the server is alive.
    Heartbeat {
        /// The server's revision: the node has every change up to it.
        revision: u64,
    },
}

impl NodeMessage {
    /// The revision the node has everything up to once it applied this message.
    pub fn revision(&self) -> u64 {
        match self {
            NodeMessage::Snapshot(s) => s.revision,
            NodeMessage::Delta(d) => d.revision,
            NodeMessage::Heartbeat { revision } => *revision,
        }
    }
}

/// The full state a node needs at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    /// The revision of the state.
    pub revision: u64,
    /// The tenants the node needs: those of the endpoints on it.
    pub tenants: Vec<String>,
    /// Those tenants' Tenant resources, Endpoints and Policies, and every Tier.
    pub resources: Vec<NodeResource>,
    /// Those tenants' identities.
    pub identities: Vec<TenantIdentities>,
    /// Every node's underlay address, as the agents reported it: where the
    /// endpoints of other nodes are reached over the overlay.
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    /// When the server saw the last change in this state committed (RFC
    /// 3339, ms); absent when it does not know (state loaded at its start).
    /// Agents measure the propagation delay from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// The changes of one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDelta {
    /// The revision of the changes.
    pub revision: u64,
    /// The changes, in the order they were written.
    pub changes: Vec<NodeChange>,
    /// When the server saw the revision committed (RFC 3339, ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// One change of a delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum NodeChange {
    /// A resource was created or updated.
    Put {
        /// The new resource.
        resource: Box<NodeResource>,
    },
    /// A resource was deleted.
    Delete {
        /// Which.
        #[serde(flatten)]
        reference: ResourceRef,
    },
    /// A tenant's identities changed.
    Identities {
        /// The tenant's identities now.
        identities: TenantIdentities,
    },
    /// The node table changed (sent to every node).
    Nodes {
        /// Every node's underlay address now.
        nodes: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_in_every_form() {
        for (word, kind) in [
            ("pol", Kind::Policy),
            ("Policies", Kind::Policy),
            ("ep", Kind::Endpoint),
            ("endpoint", Kind::Endpoint),
            ("tenants", Kind::Tenant),
            ("tier", Kind::Tier),
        ] {
            assert_eq!(parse_kind(word), Some(kind), "{word}");
        }
        assert_eq!(parse_kind("polcy"), None);
        for kind in Kind::ALL {
            assert_eq!(parse_kind(kind_path(kind)), Some(kind));
        }
    }

    #[test]
    fn the_node_table_travels_in_snapshots_and_deltas() {
        let change = NodeChange::Nodes {
            nodes: [("n1".to_string(), std::net::Ipv4Addr::new(10, 255, 0, 1))].into(),
        };
        let json = serde_json::to_value(&change).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"op": "nodes", "nodes": {"n1": "10.255.0.1"}})
        );
        assert_eq!(serde_json::from_value::<NodeChange>(json).unwrap(), change);
        // A server without node tables: an empty one.
        let old: NodeMessage = serde_json::from_str(
            r#"{"type":"snapshot","revision":3,"tenants":[],"resources":[],"identities":[]}"#,
        )
        .unwrap();
        match old {
            NodeMessage::Snapshot(s) => assert!(s.nodes.is_empty()),
            other => panic!("{other:?}"),
        }
        let status: NodeStatus = serde_json::from_str(
            r#"{"appliedRevision":1,"health":"ok","underlayAddress":"10.255.0.2"}"#,
        )
        .unwrap();
        assert_eq!(
            status.underlay_address,
            Some(std::net::Ipv4Addr::new(10, 255, 0, 2))
        );
    }

    #[test]
    fn node_messages_are_tagged_by_type() {
        let line = serde_json::to_string(&NodeMessage::Heartbeat { revision: 7 }).unwrap();
        assert_eq!(line, r#"{"type":"heartbeat","revision":7}"#);
        let delete = NodeChange::Delete {
            reference: ResourceRef {
                kind: Kind::Endpoint,
                tenant: Some("acme".into()),
                namespace: None,
                name: "web-1".into(),
            },
        };
        let json = serde_json::to_value(&delete).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"op": "delete", "kind": "Endpoint", "tenant": "acme", "name": "web-1"})
        );
        assert_eq!(serde_json::from_value::<NodeChange>(json).unwrap(), delete);
    }

    #[test]
    fn identities_split_per_tenant_and_join_back() {
        let intent = palisade_model::load_str(
            "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a}\n---\n\
             apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: b}\n---\n\
             apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: e, tenant: a, labels: {app: x}}\n\
             spec: {node: n1, ips: [10.0.0.1]}\n---\n\
             apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: f, tenant: b, labels: {app: y}}\n\
             spec: {node: n2, ips: [10.0.0.1]}\n",
            "t.yaml",
            &Default::default(),
        )
        .unwrap();
        let ids = palisade_policy::IdentityAllocator::new()
            .allocate(&intent)
            .unwrap();
        let records = split_identities(&ids, |t| if t == "a" { 5 } else { 6 });
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].vni, 5);
        assert!(records[0]
            .ipcache
            .iter()
            .all(|e| e.tenant_index == records[0].index));
        assert_eq!(join_identities(&records), ids);
        let only_a = join_identities(&records[..1]);
        assert!(only_a.endpoint(&intent.endpoints[0]).is_some());
        assert!(only_a.endpoint(&intent.endpoints[1]).is_none());
    }
}
