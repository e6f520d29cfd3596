//! The fan-out: ONE store watch per server feeds every agent's node stream.
//!
//! A task follows the store from a listing, keeps the state agents need in
//! memory (every resource and identity record, pre-serialized once; which
//! node has endpoints of which tenant) and turns each store revision into a
//! [`Batch`] that it broadcasts to the streams and keeps in a bounded history
//! for agents that resume. A stream filters batches by its node's tenants;
//! nothing is re-read or recomputed per agent and change.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use palisade_client::api::{NodeChange, NodeResource, ResourceRef};
use palisade_model::{Kind, LoadOptions, Resource};
use palisade_store::{EventKind, Revision, Store, StoreError, WatchEvent};
use tokio::sync::broadcast;

use crate::stored;

/// Batches kept for agents that resume; older resumes get a fresh snapshot.
const HISTORY_LIMIT: usize = 10_000;
/// Batches a stream may fall behind before it is sent a fresh snapshot.
const BROADCAST_CAPACITY: usize = 1024;
/// How long the events of one revision may trickle in before the batch is
/// sent (a transaction's events arrive back to back).
const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// A resource in the fan-out's state.
#[derive(Debug)]
struct Entry {
    reference: ResourceRef,
    /// The node, for endpoints.
    node: Option<String>,
    /// The `NodeResource` as JSON.
    json: Arc<str>,
}

/// The changes of one store revision, ready for every stream.
#[derive(Debug)]
pub struct Batch {
    /// The store revision.
    pub revision: u64,
    /// The changes for agents: the tenant they concern (`None`: every node,
    /// as for Tiers) and the `NodeChange` as JSON.
    changes: Vec<(Option<String>, Arc<str>)>,
    /// Nodes whose set of tenants changed: they get a fresh snapshot.
    nodes_changed: BTreeSet<String>,
    /// The state was reloaded (after a compaction overtook the watch): every
    /// stream sends a fresh snapshot.
    reset: bool,
    /// When the fan-out saw the revision (RFC 3339, ms): agents measure
    /// propagation from it.
    time: Option<Arc<str>>,
}

/// The in-memory state, at `revision`.
#[derive(Debug, Default)]
struct State {
    revision: u64,
    /// The last revision that changed resources or identities.
    intent_revision: u64,
    /// When the fan-out saw the last change of the state (`intent_revision`)
    /// committed (`None` after loading the state).
    revision_time: Option<Arc<str>>,
    /// Resources by store key.
    resources: HashMap<String, Arc<Entry>>,
    /// Store keys by the tenant that owns them (`""` for Tiers).
    by_tenant: BTreeMap<String, BTreeSet<String>>,
    /// Identity records (`TenantIdentities` JSON) by tenant.
    identities: BTreeMap<String, Arc<str>>,
    /// For each node, its tenants and how many of its endpoints each has.
    node_tenants: HashMap<String, BTreeMap<String, usize>>,
    /// Every node's underlay address, from the agents' status reports
    /// (`/agents/<node>`): sent to every node, which reaches the endpoints of
    /// the others over the overlay there.
    nodes: BTreeMap<String, Ipv4Addr>,
    /// Recent batches, oldest first.
    history: VecDeque<Arc<Batch>>,
    /// Deltas after any revision `>= history_from` are all in `history`.
    history_from: u64,
}

const TIERS: &str = "";

impl State {
    fn tenants_of(&self, node: &str) -> BTreeSet<String> {
        self.node_tenants
            .get(node)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds or replaces a resource; records nodes whose tenant set changed.
    fn put(&mut self, key: &str, entry: Entry, nodes_changed: &mut BTreeSet<String>) {
        self.remove(key, nodes_changed);
        let owner = entry.reference.owner_tenant().unwrap_or(TIERS).to_owned();
        if let Some(node) = &entry.node {
            let tenants = self.node_tenants.entry(node.clone()).or_default();
            let count = tenants.entry(owner.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                nodes_changed.insert(node.clone());
            }
        }
        self.by_tenant
            .entry(owner)
            .or_default()
            .insert(key.to_owned());
        self.resources.insert(key.to_owned(), Arc::new(entry));
    }

    fn remove(&mut self, key: &str, nodes_changed: &mut BTreeSet<String>) -> Option<Arc<Entry>> {
        let old = self.resources.remove(key)?;
        let owner = old.reference.owner_tenant().unwrap_or(TIERS);
        if let Some(keys) = self.by_tenant.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_tenant.remove(owner);
            }
        }
        if let Some(node) = &old.node {
            if let Some(tenants) = self.node_tenants.get_mut(node) {
                if let Some(count) = tenants.get_mut(owner) {
                    *count -= 1;
                    if *count == 0 {
                        tenants.remove(owner);
                        nodes_changed.insert(node.clone());
                    }
                }
                if tenants.is_empty() {
                    self.node_tenants.remove(node);
                }
            }
        }
        Some(old)
    }

    /// Records the underlay address an agent's stored report `value` holds
    /// (none: forgets the node's); `true` when the table changed.
    fn set_node_address(&mut self, node: &str, value: Option<&[u8]>) -> bool {
        let address = value.and_then(reported_underlay_address);
        let old = match address {
            Some(a) => self.nodes.insert(node.to_owned(), a),
            None => self.nodes.remove(node),
        };
        old != address
    }

    /// The node table as a `NodeChange::Nodes` line item.
    fn nodes_change(&self) -> Arc<str> {
        Arc::from(format!(
            r#"{{"op":"nodes","nodes":{}}}"#,
            serde_json::to_string(&self.nodes).expect("addresses serialize")
        ))
    }

    fn push_history(&mut self, batch: Arc<Batch>) {
        self.history.push_back(batch);
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.history_from = old.revision;
            }
        }
    }
}

/// What a node stream starts with.
pub struct Opened {
    /// Batches after `revision`.
    pub receiver: broadcast::Receiver<Arc<Batch>>,
    /// The first lines to send (a snapshot, or the deltas since `from`).
    pub lines: Vec<String>,
    /// The node's tenants.
    pub tenants: BTreeSet<String>,
    /// The stream has sent everything up to this revision.
    pub revision: u64,
}

/// Handle on the fan-out, shared by the routes.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    sender: broadcast::Sender<Arc<Batch>>,
    store: Arc<dyn Store>,
    opts: LoadOptions,
}

impl Fanout {
    /// Loads the state from the store and starts following it. The task ends
    /// when the store is closed.
    pub async fn start(
        store: Arc<dyn Store>,
        opts: LoadOptions,
    ) -> Result<(Fanout, tokio::task::JoinHandle<()>), StoreError> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            sender,
            store,
            opts,
        });
        let from = inner.reload().await?;
        let task = tokio::spawn(follow(inner.clone(), from));
        Ok((Fanout { inner }, task))
    }

    /// The revision the fan-out has applied, and the last one that changed
    /// the intent.
    pub fn revisions(&self) -> (u64, u64) {
        let state = self.inner.lock();
        (state.revision, state.intent_revision)
    }

    /// Opens a node's stream: subscribes and, in the same moment, takes a
    /// snapshot, or the deltas since `from` when the history still has them
    /// and the node's tenants did not change since.
    pub fn open(&self, node: &str, from: Option<u64>) -> Opened {
        let state = self.inner.lock();
        let receiver = self.inner.sender.subscribe();
        let tenants = state.tenants_of(node);
        if let Some(from) = from.filter(|f| *f >= state.history_from) {
            let later: Vec<&Arc<Batch>> =
                state.history.iter().filter(|b| b.revision > from).collect();
            let changed = later
                .iter()
                .any(|b| b.reset || b.nodes_changed.contains(node));
            if !changed {
                let lines = later
                    .iter()
                    .filter_map(|b| delta_line(b, &tenants))
                    .collect();
                return Opened {
                    receiver,
                    lines,
                    tenants,
                    revision: from.max(state.revision),
                };
            }
        }
        let (line, tenants) = snapshot_line(&state, node);
        Opened {
            receiver,
            lines: vec![line],
            tenants,
            revision: state.revision,
        }
    }

    /// A fresh snapshot of a node's state (for a stream whose node's tenants
    /// changed, or that fell behind), with the tenants and revision.
    pub fn snapshot(&self, node: &str) -> (String, BTreeSet<String>, u64) {
        let state = self.inner.lock();
        let (line, tenants) = snapshot_line(&state, node);
        (line, tenants, state.revision)
    }

    /// The fan-out's revision when `receiver` has no batch waiting: then the
    /// stream has everything up to it (batches are sent under the same lock).
    pub fn heartbeat_revision(&self, receiver: &broadcast::Receiver<Arc<Batch>>) -> Option<u64> {
        let state = self.inner.lock();
        receiver.is_empty().then_some(state.revision)
    }

    /// A new subscription with a snapshot taken at the same moment.
    pub fn resubscribe(&self, node: &str) -> Opened {
        self.open(node, None)
    }
}

/// The delta line of a batch for a node with these tenants; `None` when
/// nothing in it concerns the node.
pub fn delta_line(batch: &Batch, tenants: &BTreeSet<String>) -> Option<String> {
    let mine: Vec<&str> = batch
        .changes
        .iter()
        .filter(|(tenant, _)| tenant.as_ref().is_none_or(|t| tenants.contains(t)))
        .map(|(_, json)| &**json)
        .collect();
    if mine.is_empty() {
        return None;
    }
    Some(format!(
        r#"{{"type":"delta","revision":{},"changes":[{}]{}}}"#,
        batch.revision,
        mine.join(","),
        time_field(batch.time.as_deref())
    ))
}

/// Whether a batch needs a fresh snapshot for this node.
pub fn needs_snapshot(batch: &Batch, node: &str) -> bool {
    batch.reset || batch.nodes_changed.contains(node)
}

/// The snapshot line for a node (the shape of `NodeMessage::Snapshot`,
/// built from the pre-serialized pieces).
fn snapshot_line(state: &State, node: &str) -> (String, BTreeSet<String>) {
    let tenants = state.tenants_of(node);
    let mut resources: Vec<&str> = Vec::new();
    for owner in std::iter::once(TIERS).chain(tenants.iter().map(String::as_str)) {
        for key in state.by_tenant.get(owner).into_iter().flatten() {
            resources.push(&state.resources[key].json);
        }
    }
    let identities: Vec<&str> = tenants
        .iter()
        .filter_map(|t| state.identities.get(t).map(|j| &**j))
        .collect();
    let line = format!(
        r#"{{"type":"snapshot","revision":{},"tenants":{},"resources":[{}],"identities":[{}],"nodes":{}{}}}"#,
        state.revision,
        serde_json::to_string(&tenants).expect("names serialize"),
        resources.join(","),
        identities.join(","),
        serde_json::to_string(&state.nodes).expect("addresses serialize"),
        time_field(state.revision_time.as_deref())
    );
    (line, tenants)
}

/// `,"time":"..."` when the time is known.
fn time_field(time: Option<&str>) -> String {
    time.map(|t| format!(r#","time":"{t}""#))
        .unwrap_or_default()
}

/// Now, as node streams write times.
fn now_text() -> Arc<str> {
    Arc::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the state with a fresh listing; returns its revision. The two
    /// listings are retried until they were taken at the same revision, so
    /// that resources and identities match.
    async fn reload(&self) -> Result<u64, StoreError> {
        let mut attempt = 0;
        let (resources, identities, agents) = loop {
            let resources = self.store.list(stored::RESOURCES).await?;
            let identities = self.store.list(stored::TENANT_IDENTITIES).await?;
            let agents = self.store.list(stored::AGENTS).await?;
            attempt += 1;
            let same =
                resources.revision == identities.revision && identities.revision == agents.revision;
            if same || attempt >= 10 {
                break (resources, identities, agents);
            }
        };
        let mut state = State {
            revision: resources.revision.get(),
            intent_revision: resources.revision.get(),
            history_from: resources.revision.get(),
            ..State::default()
        };
        let mut ignored = BTreeSet::new();
        for kv in &resources.items {
            match entry(&kv.key, &kv.value, kv.mod_revision, &self.opts) {
                Ok(e) => state.put(&kv.key, e, &mut ignored),
                Err(error) => tracing::error!(key = %kv.key, %error, "skipping a stored resource"),
            }
        }
        for kv in &identities.items {
            if let Some(tenant) = kv.key.strip_prefix(stored::TENANT_IDENTITIES) {
                state.identities.insert(
                    tenant.to_owned(),
                    Arc::from(String::from_utf8_lossy(&kv.value).as_ref()),
                );
            }
        }
        for kv in &agents.items {
            if let Some(node) = kv.key.strip_prefix(stored::AGENTS) {
                state.set_node_address(node, Some(&kv.value));
            }
        }
        let revision = state.revision;
        let mut current = self.lock();
        let reset = current.revision != 0 || !current.resources.is_empty();
        *current = state;
        if reset {
            let batch = Arc::new(Batch {
                revision,
                changes: Vec::new(),
                nodes_changed: BTreeSet::new(),
                reset: true,
                time: None,
            });
            current.push_history(batch.clone());
            let _ = self.sender.send(batch);
        }
        tracing::info!(
            revision,
            resources = current.resources.len(),
            "fan-out loaded the state"
        );
        Ok(revision)
    }

    /// Applies the events of one revision and broadcasts the batch.
    fn apply(&self, revision: Revision, events: Vec<WatchEvent>) {
        let mut state = self.lock();
        let mut changes = Vec::new();
        let mut nodes_changed = BTreeSet::new();
        for event in events {
            let key = event.key().to_owned();
            if key.starts_with(stored::RESOURCES) {
                match event.kind {
                    EventKind::Put {
                        value,
                        mod_revision,
                        ..
                    } => match entry(&key, &value, mod_revision, &self.opts) {
                        Ok(e) => {
                            let owner = e.reference.owner_tenant().map(str::to_owned);
                            let json: Arc<str> =
                                Arc::from(format!(r#"{{"op":"put","resource":{}}}"#, e.json));
                            state.put(&key, e, &mut nodes_changed);
                            changes.push((owner, json));
                        }
                        Err(error) => {
                            tracing::error!(%key, %error, "skipping a stored resource")
                        }
                    },
                    EventKind::Delete { .. } => {
                        if let Some(old) = state.remove(&key, &mut nodes_changed) {
                            let change = NodeChange::Delete {
                                reference: old.reference.clone(),
                            };
                            let json = serde_json::to_string(&change).expect("changes serialize");
                            changes.push((
                                old.reference.owner_tenant().map(str::to_owned),
                                Arc::from(json),
                            ));
                        }
                    }
                }
            } else if let Some(tenant) = key.strip_prefix(stored::TENANT_IDENTITIES) {
                match event.kind {
                    EventKind::Put { value, .. } => {
                        let json: Arc<str> = Arc::from(String::from_utf8_lossy(&value).as_ref());
                        changes.push((
                            Some(tenant.to_owned()),
                            Arc::from(format!(r#"{{"op":"identities","identities":{json}}}"#)),
                        ));
                        state.identities.insert(tenant.to_owned(), json);
                    }
                    EventKind::Delete { .. } => {
                        state.identities.remove(tenant);
                    }
                }
            } else if let Some(node) = key.strip_prefix(stored::AGENTS) {
                let value = match &event.kind {
                    EventKind::Put { value, .. } => Some(value.as_slice()),
                    EventKind::Delete { .. } => None,
                };
                if state.set_node_address(node, value) {
                    // Every node: where the endpoints of the others are.
                    changes.push((None, state.nodes_change()));
                }
            }
        }
        let revision = revision.get();
        let time = now_text();
        state.revision = state.revision.max(revision);
        if !changes.is_empty() {
            state.intent_revision = revision;
            state.revision_time = Some(time.clone());
        }
        if changes.is_empty() && nodes_changed.is_empty() {
            return;
        }
        let batch = Arc::new(Batch {
            revision,
            changes,
            nodes_changed,
            reset: false,
            time: Some(time),
        });
        state.push_history(batch.clone());
        // No receivers is fine: no agent is connected.
        let _ = self.sender.send(batch);
    }
}

/// The underlay address in an agent's stored status report
/// (`{"status": NodeStatus, ...}`), if it has one.
fn reported_underlay_address(report: &[u8]) -> Option<Ipv4Addr> {
    let value: serde_json::Value = serde_json::from_slice(report).ok()?;
    value["status"]["underlayAddress"].as_str()?.parse().ok()
}

/// The fan-out entry of a stored resource record.
fn entry(key: &str, value: &[u8], version: Revision, opts: &LoadOptions) -> Result<Entry, String> {
    let kv = palisade_store::KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: version,
        mod_revision: version,
        version: 1,
    };
    let current = stored::parse_current(&kv, opts)?;
    let node = match &current.resource {
        Resource::Endpoint(e) => Some(e.node.clone()),
        _ => None,
    };
    debug_assert!(node.is_none() || current.reference.kind == Kind::Endpoint);
    let json = serde_json::to_string(&NodeResource {
        reference: current.reference.clone(),
        resource_version: version.get(),
        resource: current.resource,
    })
    .expect("resources serialize");
    Ok(Entry {
        reference: current.reference,
        node,
        json: Arc::from(json),
    })
}

/// Follows the store from `from`: groups the events of each revision into a
/// batch. A compaction that overtakes the watch reloads the state; other
/// errors are retried with a growing pause; a closed store ends the task.
async fn follow(inner: Arc<Inner>, mut from: u64) {
    let mut pause = Duration::from_millis(100);
    loop {
        let result = match inner.store.watch("/", Revision(from)).await {
            Ok(mut watch) => {
                pause = Duration::from_millis(100);
                follow_watch(&inner, &mut watch, &mut from).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(StoreError::Closed { .. }) => {
                tracing::debug!("store closed; fan-out stops");
                return;
            }
            Err(StoreError::Compacted { .. }) => {
                tracing::warn!(from, "fan-out watch overtaken by a compaction; reloading");
                match inner.reload().await {
                    Ok(revision) => from = revision,
                    Err(error) => {
                        tracing::error!(%error, "fan-out cannot reload the state; retrying");
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, from, "fan-out watch failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn follow_watch(
    inner: &Inner,
    watch: &mut palisade_store::Watch,
    from: &mut u64,
) -> Result<(), StoreError> {
    let mut pending: Vec<WatchEvent> = Vec::new();
    loop {
        let next = if pending.is_empty() {
            Ok(watch.next().await)
        } else {
            tokio::time::timeout(FLUSH_AFTER, watch.next()).await
        };
        match next {
            Err(_quiet) => flush(inner, &mut pending, from),
            Ok(None) => {
                flush(inner, &mut pending, from);
                return Ok(());
            }
            Ok(Some(Err(error))) => {
                flush(inner, &mut pending, from);
                return Err(error);
            }
            Ok(Some(Ok(event))) => {
                if pending
                    .first()
                    .is_some_and(|p| p.revision != event.revision)
                {
                    flush(inner, &mut pending, from);
                }
                pending.push(event);
            }
        }
    }
}

fn flush(inner: &Inner, pending: &mut Vec<WatchEvent>, from: &mut u64) {
    let Some(first) = pending.first() else {
        return;
    };
    let revision = first.revision;
    inner.apply(revision, std::mem::take(pending));
    *from = (*from).max(revision.get());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(address: Option<&str>) -> Vec<u8> {
        let mut status = serde_json::json!({"appliedRevision": 3, "health": "ok", "endpoints": []});
        if let Some(a) = address {
            status["underlayAddress"] = a.into();
        }
        serde_json::to_vec(&serde_json::json!({"status": status, "unixMs": 1})).unwrap()
    }

    #[test]
    fn agents_reports_make_the_node_table_every_snapshot_carries() {
        let mut state = State::default();
        assert!(state.set_node_address("n1", Some(&report(Some("10.255.0.1")))));
        assert!(state.set_node_address("n2", Some(&report(Some("10.255.0.2")))));
        assert!(
            !state.set_node_address("n1", Some(&report(Some("10.255.0.1")))),
            "a report with the same address changes nothing"
        );
        assert!(
            !state.set_node_address("n3", Some(&report(None))),
            "no overlay, no entry"
        );
        assert_eq!(
            &*state.nodes_change(),
            r#"{"op":"nodes","nodes":{"n1":"10.255.0.1","n2":"10.255.0.2"}}"#
        );
        let (line, _) = snapshot_line(&state, "n1");
        let snapshot: palisade_client::api::NodeMessage = serde_json::from_str(&line).unwrap();
        match snapshot {
            palisade_client::api::NodeMessage::Snapshot(s) => {
                assert_eq!(s.nodes.len(), 2);
                assert_eq!(s.nodes["n2"], Ipv4Addr::new(10, 255, 0, 2));
            }
            other => panic!("{other:?}"),
        }
        // A node whose report goes (or loses its address) leaves the table.
        assert!(state.set_node_address("n2", None));
        assert!(state.set_node_address("n1", Some(&report(None))));
        assert!(state.nodes.is_empty());
    }
}
