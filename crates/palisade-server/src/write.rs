//! Every change to the intent, apply and delete alike, goes through
//! [`write`]: read the current state, check versions and references,
//! validate the whole resulting intent, allocate identities, then commit the
//! resources, the allocator state, the changed identity records and the
//! audit records in ONE store transaction.
//!
//! The transaction compares the allocator key, which every write swaps, so
//! writes are serialised across servers: a server whose write lost that race
//! (another server or request committed in between) reads the new state and
//! tries again. A document that names `metadata.resourceVersion` also
//! compares its own key; when that fails the caller gets 409.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use palisade_client::api::{
    split_identities, ApplyAction, ApplyResponse, ApplyResult, AuditRecord, ErrorDetail,
    ResourceRef, TenantIdentities,
};
use palisade_model::{Diagnostic, Intent, Kind, Resource};
use palisade_policy::IdentityAllocator;
use palisade_store::{Expect, Revision, StoreError, Txn};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::stored::{self, Current, StoredDocument};
use crate::Shared;

/// How often a write is tried when other writers keep winning the race.
const MAX_ATTEMPTS: u32 = 30;

/// One requested change.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create or update a resource.
    Apply {
        /// Which resource.
        reference: ResourceRef,
        /// The user's document, without `metadata.resourceVersion`.
        document: serde_json::Value,
        /// The version the document was based on, when it names one.
        expected: Option<u64>,
    },
    /// Delete a resource.
    Delete {
        /// Which resource.
        reference: ResourceRef,
        /// The version the caller saw, when given (`?resourceVersion=`).
        expected: Option<u64>,
    },
}

impl Change {
    fn reference(&self) -> &ResourceRef {
        match self {
            Change::Apply { reference, .. } | Change::Delete { reference, .. } => reference,
        }
    }

    fn expected(&self) -> Option<u64> {
        match self {
            Change::Apply { expected, .. } | Change::Delete { expected, .. } => *expected,
        }
    }
}

/// What one attempt ended with.
enum Attempt {
    Done(ApplyResponse),
    /// Another writer committed first; read again.
    Retry,
}

/// Applies `changes` for `principal` (already authorised per resource).
pub async fn write(
    shared: &Arc<Shared>,
    principal: &Principal,
    changes: Vec<Change>,
) -> Result<ApplyResponse, ApiError> {
    for attempt in 0..MAX_ATTEMPTS {
        match try_write(shared, principal, &changes).await? {
            Attempt::Done(response) => return Ok(response),
            Attempt::Retry => {
                tracing::debug!(
                    attempt,
                    "another writer committed first; retrying the write"
                );
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    Err(ApiError::unavailable(format!(
        "the write lost the race against other writers {MAX_ATTEMPTS} times; retry it"
    )))
}

/// A short, jittered pause that grows with the attempt, so that two servers
/// retrying against each other do not stay in step.
fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ceiling = 2 + 4 * u64::from(attempt.min(10));
    Duration::from_millis(1 + u64::from(nanos) % ceiling)
}

/// The state a write starts from.
struct State {
    revision: Revision,
    allocator: IdentityAllocator,
    allocator_version: Option<Revision>,
    resources: BTreeMap<String, Arc<Current>>,
    identities: BTreeMap<String, TenantIdentities>,
}

async fn read_state(shared: &Shared) -> Result<State, ApiError> {
    // The allocator first: any write committed after this read swaps it, so
    // the compare at commit proves the listings below are still current.
    let allocator_kv = shared.store.get(stored::ALLOCATOR).await?;
    let listing = shared.store.list(stored::RESOURCES).await?;
    let id_listing = shared.store.list(stored::TENANT_IDENTITIES).await?;
    let (allocator, allocator_version) = match allocator_kv {
        Some(kv) => (
            serde_json::from_slice(&kv.value).map_err(|e| {
                ApiError::internal(format!(
                    "the stored identity allocator state is unreadable ({e}); restore the store \
                     from a backup"
                ))
            })?,
            Some(kv.mod_revision),
        ),
        None => (IdentityAllocator::new(), None),
    };
    let mut resources = BTreeMap::new();
    for kv in &listing.items {
        let current = shared
            .cache
            .parse(kv, &shared.opts)
            .map_err(ApiError::internal)?;
        resources.insert(kv.key.clone(), current);
    }
    shared.cache.retain(|k| resources.contains_key(k));
    let mut identities = BTreeMap::new();
    for kv in &id_listing.items {
        let record = stored::decode_identities(kv).map_err(ApiError::internal)?;
        identities.insert(record.tenant.clone(), record);
    }
    Ok(State {
        revision: listing.revision.max(id_listing.revision),
        allocator,
        allocator_version,
        resources,
        identities,
    })
}

async fn try_write(
    shared: &Arc<Shared>,
    principal: &Principal,
    changes: &[Change],
) -> Result<Attempt, ApiError> {
    let state = read_state(shared).await?;

    // Versions and what each change does.
    let mut actions = Vec::with_capacity(changes.len());
    let mut conflicts = Vec::new();
    for change in changes {
        let key = stored::resource_key(change.reference());
        let current = state.resources.get(&key).map(|c| &**c);
        if let Some(expected) = change.expected() {
            if current.map(|c| c.version.get()) != Some(expected) {
                conflicts.push(conflict_detail(change.reference(), expected, current));
                continue;
            }
        }
        let action = match (change, current) {
            (Change::Apply { document, .. }, Some(c)) if c.stored.document == *document => {
                ApplyAction::Unchanged
            }
            (Change::Apply { .. }, Some(_)) => ApplyAction::Updated,
            (Change::Apply { .. }, None) => ApplyAction::Created,
            (Change::Delete { reference, .. }, None) => {
                return Err(ApiError::not_found(format!(
                    "{reference} does not exist; list what there is with palisade get {}",
                    palisade_client::api::kind_path(reference.kind)
                )))
            }
            (Change::Delete { .. }, Some(_)) => ApplyAction::Deleted,
        };
        actions.push(action);
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(conflicts));
    }
    if actions.iter().all(|a| *a == ApplyAction::Unchanged) {
        return Ok(Attempt::Done(ApplyResponse {
            revision: state.revision.get(),
            committed_at: None,
            results: changes
                .iter()
                .map(|c| ApplyResult {
                    resource: c.reference().clone(),
                    action: ApplyAction::Unchanged,
                    resource_version: state.resources[&stored::resource_key(c.reference())]
                        .version
                        .get(),
                })
                .collect(),
        }));
    }

    // The resources after the change, and who still refers to what is deleted.
    let mut after: BTreeMap<String, Resource> = state
        .resources
        .iter()
        .map(|(k, c)| (k.clone(), c.resource.clone()))
        .collect();
    let mut new_documents = Vec::new();
    for change in changes {
        let key = stored::resource_key(change.reference());
        match change {
            Change::Apply { document, .. } => {
                let resource =
                    palisade_model::resource_from_json(document, &shared.opts).map_err(|d| {
                        ApiError::internal(format!("a checked document no longer validates: {d}"))
                    })?;
                after.insert(key.clone(), resource);
                new_documents.push((key, Some(document)));
            }
            Change::Delete { .. } => {
                after.remove(&key);
                new_documents.push((key, None));
            }
        }
    }
    let referrers = referrers(changes, &after);
    if !referrers.is_empty() {
        return Err(ApiError::referenced(
            "resources that are still referenced cannot be deleted; delete or move their \
             referrers first",
            referrers,
        ));
    }

    let intent = Intent::from_resources(after.into_values().collect(), Vec::new(), &shared.opts)
        .map_err(|diags| validation_error(principal, changes, &diags.0))?;
    let mut allocator = state.allocator.clone();
    let identities = allocator.allocate(&intent).map_err(|e| {
        ApiError::invalid(
            format!("identities cannot be allocated for the resulting intent: {e}"),
            Vec::new(),
        )
    })?;
    let records = split_identities(&identities, |tenant| {
        intent.tenant(tenant).vni.unwrap_or_default()
    });

    // One transaction: compares, resources, allocator, identities, audit.
    let mut txn = Txn::new();
    for change in changes {
        if let Some(v) = change.expected() {
            txn = txn.when(
                stored::resource_key(change.reference()),
                Expect::ModRevision(Revision(v)),
            );
        }
    }
    txn = txn.when(
        stored::ALLOCATOR,
        match state.allocator_version {
            Some(v) => Expect::ModRevision(v),
            None => Expect::Absent,
        },
    );
    let time = stored::now_rfc3339();
    let mut audit_n = 0;
    // Audit keys carry the revision this write is expected to get: every
    // write swaps the allocator, so keys grow with the writes and never clash.
    let audit_revision = state
        .revision
        .max(state.allocator_version.unwrap_or_default())
        .get()
        + 1;
    for ((change, action), (key, document)) in changes.iter().zip(&actions).zip(&new_documents) {
        if *action == ApplyAction::Unchanged {
            continue;
        }
        let old = state.resources.get(key);
        txn = match document {
            Some(document) => txn.put(
                key.clone(),
                serde_json::to_vec(&StoredDocument {
                    document: (*document).clone(),
                    subject: principal.subject.clone(),
                    time: time.clone(),
                })
                .expect("documents serialize"),
            ),
            None => txn.delete(key.clone()),
        };
        let record = AuditRecord {
            revision: 0,
            subject: principal.subject.clone(),
            time: time.clone(),
            resource: change.reference().clone(),
            action: *action,
            old_version: old.map(|c| c.version.get()),
            new_version: None,
        };
        txn = txn.put(
            stored::audit_key(audit_revision, audit_n),
            serde_json::to_vec(&record).expect("audit records serialize"),
        );
        audit_n += 1;
    }
    txn = txn.put(
        stored::ALLOCATOR,
        serde_json::to_vec(&allocator).expect("the allocator serializes"),
    );
    let kept: BTreeSet<&str> = records.iter().map(|r| r.tenant.as_str()).collect();
    for record in &records {
        if state.identities.get(&record.tenant) != Some(record) {
            txn = txn.put(
                stored::tenant_identities_key(&record.tenant),
                serde_json::to_vec(record).expect("identities serialize"),
            );
        }
    }
    for tenant in state.identities.keys() {
        if !kept.contains(tenant.as_str()) {
            txn = txn.delete(stored::tenant_identities_key(tenant));
        }
    }

    // Stamped as the commit starts: the time after `txn` returns can trail
    // the watchers (and agents) it has already woken.
    let committing = std::time::SystemTime::now();
    let revision = match shared.store.txn(txn).await {
        Ok(revision) => revision,
        Err(StoreError::Conflict { key, current, .. }) => {
            let named = changes
                .iter()
                .find(|c| c.expected().is_some() && stored::resource_key(c.reference()) == key);
            return match named {
                Some(change) => {
                    let expected = change.expected().unwrap_or_default();
                    let mut detail = conflict_detail(change.reference(), expected, None);
                    detail.current_version = current.map(Revision::get);
                    Err(conflict_error(vec![detail]))
                }
                None => Ok(Attempt::Retry),
            };
        }
        Err(error) => return Err(error.into()),
    };
    let committed_at = humantime::format_rfc3339_micros(committing).to_string();
    tracing::info!(
        subject = %principal.subject,
        %revision,
        changes = audit_n,
        "intent changed"
    );
    let results = changes
        .iter()
        .zip(&actions)
        .map(|(change, action)| {
            let old = state
                .resources
                .get(&stored::resource_key(change.reference()))
                .map(|c| c.version.get());
            ApplyResult {
                resource: change.reference().clone(),
                action: *action,
                resource_version: match action {
                    ApplyAction::Unchanged | ApplyAction::Deleted => old.unwrap_or_default(),
                    ApplyAction::Created | ApplyAction::Updated => revision.get(),
                },
            }
        })
        .collect();
    Ok(Attempt::Done(ApplyResponse {
        revision: revision.get(),
        committed_at: Some(committed_at),
        results,
    }))
}

fn conflict_detail(r: &ResourceRef, expected: u64, current: Option<&Current>) -> ErrorDetail {
    let message = match current {
        Some(c) => format!(
            "the document is based on version {expected}, but the current version is {} \
             (written by {} at {}); re-read it with palisade get and apply again",
            c.version, c.stored.subject, c.stored.time
        ),
        None => format!(
            "the document is based on version {expected}, but the resource does not exist \
             (any more); leave metadata.resourceVersion out to create it"
        ),
    };
    ErrorDetail {
        resource: Some(r.to_string()),
        field: Some("metadata.resourceVersion".to_owned()),
        message,
        current_version: current.map(|c| c.version.get()),
        changed_by: current.map(|c| c.stored.subject.clone()),
        ..ErrorDetail::default()
    }
}

fn conflict_error(details: Vec<ErrorDetail>) -> ApiError {
    ApiError::conflict(
        "the resource was changed since the version given in metadata.resourceVersion; \
         nothing was written",
        details,
    )
}

/// Resources that still refer to a Tenant or Tier being deleted.
fn referrers(changes: &[Change], after: &BTreeMap<String, Resource>) -> Vec<ErrorDetail> {
    let mut out = Vec::new();
    for change in changes {
        let Change::Delete { reference, .. } = change else {
            continue;
        };
        let users: Vec<String> = after
            .values()
            .filter(|r| match (reference.kind, r) {
                (Kind::Tenant, Resource::Endpoint(e)) => e.tenant == reference.name,
                (Kind::Tenant, Resource::Policy(p)) => p.tenant == reference.name,
                (Kind::Tier, Resource::Policy(p)) => p.tier == reference.name,
                _ => false,
            })
            .map(|r| ResourceRef::of(r).to_string())
            .collect();
        if !users.is_empty() {
            out.push(ErrorDetail {
                resource: Some(reference.to_string()),
                message: format!(
                    "{reference} is still referenced by {} resource(s): {}",
                    users.len(),
                    users.join(", ")
                ),
                ..ErrorDetail::default()
            });
        }
    }
    out
}

/// The 400 for a resulting intent that does not validate. A tenant token's
/// answer does not list other tenants' names.
fn validation_error(principal: &Principal, changes: &[Change], diags: &[Diagnostic]) -> ApiError {
    let details = diags
        .iter()
        .map(|d| {
            let mut message = d.message.clone();
            if principal.tenant().is_some() {
                if let Some(i) = message.find(" (known tenants:") {
                    message.truncate(i);
                }
            }
            ErrorDetail {
                document: changes.iter().position(|c| {
                    d.resource.as_deref() == Some(c.reference().to_string().as_str())
                }),
                resource: d.resource.clone(),
                field: (!d.path.is_empty()).then(|| d.path.clone()),
                message,
                ..ErrorDetail::default()
            }
        })
        .collect();
    ApiError::invalid(
        format!(
            "the intent after this change would not be valid ({} error(s)); nothing was written",
            diags.len()
        ),
        details,
    )
}
