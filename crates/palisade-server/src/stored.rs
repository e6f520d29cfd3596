//! What the server keeps in the store and how: the key layout, the record
//! around each user document, and reading the current resources back as
//! validated model resources (with a cache, so an unchanged record is parsed
//! once, not on every apply).
//!
//! | key | value |
//! |---|---|
//! | `/resources/<kind>/<tenant or _>/<namespace or _>/<name>` | [`StoredDocument`] |
//! | `/identities/allocator` | the `IdentityAllocator` state (CAS'd by every write) |
//! | `/identities/tenants/<tenant>` | that tenant's `TenantIdentities` |
//! | `/audit/<revision, 20 digits>/<n>` | one `AuditRecord` per change |
//! | `/agents/<node>` | the node's last `NodeStatus` report |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_client::api::{ResourceRef, TenantIdentities};
use palisade_model::{Diagnostics, Kind, LoadOptions, Resource};
use palisade_store::{KeyValue, Revision};
use serde::{Deserialize, Serialize};

/// Prefix of every resource key.
pub const RESOURCES: &str = "/resources/";
/// The allocator's state: every write compares and swaps it.
pub const ALLOCATOR: &str = "/identities/allocator";
/// Prefix of per-tenant identity records.
pub const TENANT_IDENTITIES: &str = "/identities/tenants/";
/// Prefix of audit records.
pub const AUDIT: &str = "/audit/";
/// Prefix of agents' status reports.
pub const AGENTS: &str = "/agents/";

/// Placeholder for an absent tenant or namespace in a key (names never
/// contain `_`).
const NONE: &str = "_";

/// The key segment of a kind.
fn kind_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Tenant => "tenant",
        Kind::Tier => "tier",
        Kind::Endpoint => "endpoint",
        Kind::Policy => "policy",
    }
}

/// The prefix of every key of one kind.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{RESOURCES}{}/", kind_segment(kind))
}

/// The store key of a resource.
pub fn resource_key(r: &ResourceRef) -> String {
    format!(
        "{}{}/{}/{}",
        kind_prefix(r.kind),
        r.tenant.as_deref().unwrap_or(NONE),
        r.namespace.as_deref().unwrap_or(NONE),
        r.name
    )
}

/// The resource a store key names, if it is a resource key.
pub fn parse_resource_key(key: &str) -> Option<ResourceRef> {
    let rest = key.strip_prefix(RESOURCES)?;
    let mut parts = rest.splitn(4, '/');
    let kind = match parts.next()? {
        "tenant" => Kind::Tenant,
        "tier" => Kind::Tier,
        "endpoint" => Kind::Endpoint,
        "policy" => Kind::Policy,
        _ => return None,
    };
    let some = |s: &str| (s != NONE).then(|| s.to_owned());
    let tenant = some(parts.next()?);
    let namespace = some(parts.next()?);
    let name = parts.next()?.to_owned();
    Some(ResourceRef {
        kind,
        tenant,
        namespace,
        name,
    })
}

/// The key of a tenant's identity record.
pub fn tenant_identities_key(tenant: &str) -> String {
    format!("{TENANT_IDENTITIES}{tenant}")
}

/// The key of one audit record: revisions are zero-padded so that keys sort
/// in time order.
pub fn audit_key(revision: u64, n: usize) -> String {
    format!("{AUDIT}{revision:020}/{n}")
}

/// The key of a node's status report.
pub fn agent_key(node: &str) -> String {
    format!("{AGENTS}{node}")
}

/// The value under a resource key: the user's document as sent (without
/// `metadata.resourceVersion`, which is the key's `mod_revision`) and who
/// wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// The document.
    pub document: serde_json::Value,
    /// The subject of the token that wrote it.
    pub subject: String,
    /// When, RFC 3339.
    pub time: String,
}

impl StoredDocument {
    /// Decodes a stored value.
    pub fn decode(kv: &KeyValue) -> Result<StoredDocument, String> {
        serde_json::from_slice(&kv.value)
            .map_err(|e| format!("stored record {} is not a palisade document: {e}", kv.key))
    }

    /// The document as the API returns it: with `metadata.resourceVersion`.
    pub fn with_version(&self, version: Revision) -> serde_json::Value {
        with_version(self.document.clone(), version.get())
    }
}

/// Sets `metadata.resourceVersion` (as a string, as Kubernetes does) on a
/// document.
pub fn with_version(mut document: serde_json::Value, version: u64) -> serde_json::Value {
    if let Some(obj) = document.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "resourceVersion".to_owned(),
                serde_json::Value::String(version.to_string()),
            );
        }
    }
    document
}

/// Removes `metadata.resourceVersion` from a document and returns it: a
/// number or a string of digits. `Err` names what is wrong with it.
pub fn take_version(document: &mut serde_json::Value) -> Result<Option<u64>, String> {
    let Some(meta) = document
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return Ok(None);
    };
    match meta.remove("resourceVersion") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{n} is not a version")),
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("'{s}' is not a version")),
        Some(other) => Err(format!("{other} is not a version")),
    }
}

/// A current resource: its key, version, record and validated form.
#[derive(Debug, Clone)]
pub struct Current {
    /// Which resource.
    pub reference: ResourceRef,
    /// Its `mod_revision`.
    pub version: Revision,
    /// The stored record.
    pub stored: StoredDocument,
    /// The validated resource.
    pub resource: Resource,
}

/// Parses stored records into resources, remembering the result per key and
/// version so that only changed records are parsed again.
#[derive(Debug, Default)]
pub struct ParseCache {
    entries: Mutex<HashMap<String, (Revision, Arc<Current>)>>,
}

impl ParseCache {
    /// The current resource of a stored key-value, shared with the cache
    /// (a write reads every resource: copying them all would cost more than
    /// the write).
    pub fn parse(&self, kv: &KeyValue, opts: &LoadOptions) -> Result<Arc<Current>, String> {
        if let Some((version, current)) = self.lock().get(&kv.key) {
            if *version == kv.mod_revision {
                return Ok(Arc::clone(current));
            }
        }
        let current = Arc::new(parse_current(kv, opts)?);
        self.lock()
            .insert(kv.key.clone(), (kv.mod_revision, Arc::clone(&current)));
        Ok(current)
    }

    /// Forgets keys that are no longer in the store.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Revision, Arc<Current>)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Parses one stored record without the cache.
pub fn parse_current(kv: &KeyValue, opts: &LoadOptions) -> Result<Current, String> {
    let reference =
        parse_resource_key(&kv.key).ok_or_else(|| format!("{} is not a resource key", kv.key))?;
    let stored = StoredDocument::decode(kv)?;
    let resource = palisade_model::resource_from_json(&stored.document, opts)
        .map_err(|d: Diagnostics| format!("stored record {} no longer validates: {d}", kv.key))?;
    Ok(Current {
        reference,
        version: kv.mod_revision,
        stored,
        resource,
    })
}

/// Decodes a tenant's identity record.
pub fn decode_identities(kv: &KeyValue) -> Result<TenantIdentities, String> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| format!("stored identities {} are unreadable: {e}", kv.key))
}

/// Now, RFC 3339 in UTC to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for r in [
            ResourceRef {
                kind: Kind::Policy,
                tenant: Some("acme".into()),
                namespace: Some("prod".into()),
                name: "db".into(),
            },
            ResourceRef {
                kind: Kind::Tier,
                tenant: None,
                namespace: None,
                name: "security".into(),
            },
        ] {
            let key = resource_key(&r);
            assert_eq!(parse_resource_key(&key), Some(r));
        }
        assert_eq!(
            resource_key(&ResourceRef {
                kind: Kind::Endpoint,
                tenant: Some("acme".into()),
                namespace: None,
                name: "web-1".into()
            }),
            "/resources/endpoint/acme/_/web-1"
        );
        assert!(audit_key(42, 1) < audit_key(100, 0));
    }

    #[test]
    fn resource_versions_come_off_and_go_back_on() {
        let mut doc =
            serde_json::json!({"kind": "Tier", "metadata": {"name": "t", "resourceVersion": "12"}});
        assert_eq!(take_version(&mut doc), Ok(Some(12)));
        assert_eq!(doc["metadata"].get("resourceVersion"), None);
        assert_eq!(with_version(doc, 13)["metadata"]["resourceVersion"], "13");
        let mut bad = serde_json::json!({"metadata": {"resourceVersion": "x"}});
        assert!(take_version(&mut bad).is_err());
    }
}
