//! The control plane as the agent's source: [`ServerSource`] follows the
//! node's stream (`GET /api/v1/nodes/<node>/stream`, through
//! `palisade_client::NodeStream`, which reconnects with backoff and resumes
//! from the last revision it delivered) and keeps a copy of the node's
//! resources and identities ([`NodeState`]): a snapshot replaces it, each
//! delta changes it in order. After each message the agent gets a complete
//! [`Snapshot`]: the intent (built with `Intent::from_resources`, as the
//! server validates it) and the **server's** identities, so every agent and
//! the server agree on every number.
//!
//! The same thread runs what the agent sends back ([`crate::reports`]):
//! status, flow records, rule counters. While the server is away the agent
//! keeps enforcing what it last applied ("fail static"); the loop hears of
//! the connection through [`SourceUpdate::Link`] and says so in its status
//! file, its metrics and its log.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use palisade_client::api::{
    join_identities, NodeChange, NodeMessage, ResourceRef, TenantIdentities,
};
use palisade_client::{Client, NodeEvent, NodeStream};
use palisade_model::{Diagnostics, Intent, Kind, LoadOptions, Policy, PolicyName, Resource};
use palisade_policy::Identities;

use crate::config::{ServerSettings, Timing};
use crate::error::{AgentError, Result};
use crate::metrics::Metrics;
use crate::netns::NetnsHandle;
use crate::reports::{self, Reports};
use crate::source::{LinkEvent, ServerRevision, Snapshot, Source, SourceUpdate, StopFlag, Updates};

/// How often the stream task checks whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// The node's resources and identities as the server streamed them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    resources: BTreeMap<ResourceRef, Resource>,
    identities: BTreeMap<String, TenantIdentities>,
    revision: u64,
    time: Option<String>,
    /// Every node's underlay address (the overlay's node table).
    nodes: BTreeMap<String, std::net::Ipv4Addr>,
    /// Whether `nodes` changed since [`NodeState::take_nodes`].
    nodes_changed: bool,
    /// The intent and identities of the state, kept between messages so
    /// that a delta of policies only patches the intent instead of
    /// building it again from every resource; `None`: build it.
    built: Option<(Intent, Identities)>,
}

/// The policies a delta puts and removes, while it changes nothing else.
#[derive(Debug, Default)]
struct PolicyChanges {
    put: Vec<Policy>,
    removed: Vec<PolicyName>,
}

impl PolicyChanges {
    /// Applies them to a built intent; `false` when they do not validate
    /// (building it again then reports why).
    fn patch(self, intent: &mut Intent) -> bool {
        intent.change_policies(self.put, &self.removed).is_ok()
    }

    fn put(&mut self, policy: &Policy) {
        let name = PolicyName::of(policy);
        self.removed.retain(|n| *n != name);
        self.put.retain(|p| PolicyName::of(p) != name);
        self.put.push(policy.clone());
    }

    fn remove(&mut self, reference: &ResourceRef) {
        let name = PolicyName {
            tenant: reference.tenant.clone().unwrap_or_default(),
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
        };
        self.put.retain(|p| PolicyName::of(p) != name);
        self.removed.push(name);
    }
}

/// What a message did to a [`NodeState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The resources or identities changed (a snapshot or a delta).
    Changed,
    /// Nothing changed; the node has every change up to the revision.
    UpTo(u64),
}

impl NodeState {
    /// Takes one message of the stream.
    pub fn apply(&mut self, message: NodeMessage) -> Applied {
        match message {
            NodeMessage::Snapshot(s) => {
                self.resources = s
                    .resources
                    .into_iter()
                    .map(|r| (r.reference, r.resource))
                    .collect();
                self.identities = s
                    .identities
                    .into_iter()
                    .map(|t| (t.tenant.clone(), t))
                    .collect();
                self.revision = s.revision;
                self.time = s.time;
                self.set_nodes(s.nodes);
                self.built = None;
                Applied::Changed
            }
            NodeMessage::Delta(d) => {
                // `None` once the delta changes anything but policies.
                let mut policies = Some(PolicyChanges::default());
                for change in d.changes {
                    match change {
                        NodeChange::Put { resource } => {
                            let resource = *resource;
                            match (&resource.resource, &mut policies) {
                                (Resource::Policy(p), Some(changes)) => changes.put(p),
                                _ => policies = None,
                            }
                            self.resources.insert(resource.reference, resource.resource);
                        }
                        NodeChange::Delete { reference } => {
                            match (reference.kind, &mut policies) {
                                (Kind::Policy, Some(changes)) => changes.remove(&reference),
                                _ => policies = None,
                            }
                            self.resources.remove(&reference);
                        }
                        NodeChange::Identities { identities } => {
                            self.identities
                                .insert(identities.tenant.clone(), identities);
                            policies = None;
                        }
                        NodeChange::Nodes { nodes } => self.set_nodes(nodes),
                    }
                }
                let patched = match (policies, &mut self.built) {
                    (Some(changes), Some((intent, _))) => changes.patch(intent),
                    _ => false,
                };
                if !patched {
                    self.built = None;
                }
                self.revision = d.revision;
                self.time = d.time;
                Applied::Changed
            }
            NodeMessage::Heartbeat { revision } => {
                self.revision = self.revision.max(revision);
                Applied::UpTo(revision)
            }
        }
    }

    fn set_nodes(&mut self, nodes: BTreeMap<String, std::net::Ipv4Addr>) {
        if nodes != self.nodes {
            self.nodes = nodes;
            self.nodes_changed = true;
        }
    }

    /// The node table, when it changed since the last call (for the overlay).
    pub fn take_nodes(&mut self) -> Option<BTreeMap<String, std::net::Ipv4Addr>> {
        std::mem::take(&mut self.nodes_changed).then(|| self.nodes.clone())
    }

    /// The revision the state is at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The intent and identities of the state. Tenants without a VNI take
    /// the one the server allocated (its identities record carries it).
    pub fn intent(&self, opts: &LoadOptions) -> Result<(Intent, Identities), Diagnostics> {
        let resources: Vec<Resource> = self
            .resources
            .values()
            .cloned()
            .map(|r| match r {
                Resource::Tenant(mut t) if t.vni.is_none() => {
                    t.vni = self.identities.get(&t.name).map(|i| i.vni);
                    Resource::Tenant(t)
                }
                other => other,
            })
            .collect();
        let intent = Intent::from_resources(resources, Vec::new(), opts)?;
        Ok((intent, join_identities(self.identities.values())))
    }

    /// The agent's snapshot of the state (or why the resources do not make
    /// an intent, which the server should never let happen).
    pub fn update(&mut self, opts: &LoadOptions) -> SourceUpdate {
        let server = ServerRevision {
            revision: self.revision,
            committed_at: self
                .time
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
        };
        let built = match self.built.take() {
            Some(built) => Ok(built),
            None => self.intent(opts),
        };
        match built {
            Ok((intent, identities)) => {
                self.built = Some((intent.clone(), identities.clone()));
                SourceUpdate::Snapshot(Box::new(Snapshot {
                    revision: format!(
                        "server revision {}: {} endpoints, {} policies",
                        self.revision,
                        intent.endpoints.len(),
                        intent.policies.len()
                    ),
                    intent,
                    identities: Some(identities),
                    server: Some(server),
                }))
            }
            Err(diagnostics) => SourceUpdate::Rejected { diagnostics },
        }
    }
}

/// The control plane as a [`Source`], with the reports that go back to it.
#[derive(Debug)]
pub struct ServerSource {
    node: String,
    settings: ServerSettings,
    load_options: LoadOptions,
    timing: Timing,
    reports: Reports,
    metrics: Metrics,
    netns: Option<NetnsHandle>,
}

impl ServerSource {
    /// A source for `node`; its connections are made from `netns` (the
    /// management network) when given.
    pub fn new(
        node: &str,
        settings: ServerSettings,
        load_options: LoadOptions,
        timing: Timing,
        reports: Reports,
        metrics: Metrics,
        netns: Option<NetnsHandle>,
    ) -> ServerSource {
        ServerSource {
            node: node.to_owned(),
            settings,
            load_options,
            timing,
            reports,
            metrics,
            netns,
        }
    }
}

impl Source for ServerSource {
    fn run(self: Box<Self>, updates: Updates, stop: StopFlag) -> Result<()> {
        if let Some(netns) = &self.netns {
            netns.enter()?;
        }
        let client = Client::new(&self.settings.client)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AgentError::Thread {
                thread: "palisade-source",
                reason: format!("cannot start the async runtime: {e}"),
            })?;
        let ServerSource {
            node,
            settings,
            load_options,
            timing,
            reports,
            metrics,
            ..
        } = *self;
        runtime.block_on(async move {
            let tasks = [
                tokio::spawn(reports::run_status(
                    client.clone(),
                    node.clone(),
                    reports.clone(),
                    timing.status_report,
                )),
                tokio::spawn(reports::run_counters(
                    client.clone(),
                    node.clone(),
                    reports.clone(),
                    timing.counters_report,
                )),
                tokio::spawn(reports::run_flows(
                    client.clone(),
                    node.clone(),
                    reports.clone(),
                    timing.flow_push,
                )),
            ];
            let stream = NodeStream::new(client.clone(), &node, None, settings.stream.clone());
            tokio::select! {
                () = follow(stream, &load_options, &updates, &metrics) => {}
                () = stopped(&stop) => {}
            }
            for task in tasks {
                task.abort();
            }
            // The last records, if the server answers quickly.
            let last = reports::push_remaining(&client, &node, &reports);
            let _ = tokio::time::timeout(Duration::from_secs(1), last).await;
        });
        Ok(())
    }
}

async fn stopped(stop: &StopFlag) {
    while !stop.is_raised() {
        tokio::time::sleep(STOP_CHECK).await;
    }
}

/// Follows the node stream until the agent stops listening.
async fn follow(mut stream: NodeStream, opts: &LoadOptions, updates: &Updates, metrics: &Metrics) {
    let mut state = NodeState::default();
    loop {
        let update = match stream.next().await {
            NodeEvent::Connected { server } => SourceUpdate::Link(LinkEvent::Connected { server }),
            NodeEvent::Disconnected { reason, since } => {
                SourceUpdate::Link(LinkEvent::Disconnected { reason, since })
            }
            NodeEvent::Message(message) => {
                metrics.contact();
                let applied = state.apply(message);
                // The node table before the intent it may serve.
                if let Some(nodes) = state.take_nodes() {
                    if !updates.send(SourceUpdate::Nodes(nodes)) {
                        return;
                    }
                }
                match applied {
                    Applied::Changed => state.update(opts),
                    Applied::UpTo(revision) => SourceUpdate::UpTo { revision },
                }
            }
        };
        if !updates.send(update) {
            return;
        }
    }
}

/// Time since `at`, zero when `at` is in the future (clocks of different
/// machines).
pub fn since(at: SystemTime) -> Duration {
    SystemTime::now().duration_since(at).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use palisade_client::api::{NodeDelta, NodeResource, NodeSnapshot};

    use super::*;

    const YAML: &str = "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultAction: deny}\n---\n\
        apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: db, tenant: acme, labels: {app: db}}\nspec: {node: n1, ips: [10.0.0.2]}\n---\n\
        apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: db, tenant: acme}\nspec:\n  selector: app == 'db'\n  ingress: [{action: allow, from: [{cidr: 192.0.2.0/24}]}]\n";

    fn node_resource(resource: Resource, version: u64) -> NodeResource {
        NodeResource {
            reference: ResourceRef::of(&resource),
            resource_version: version,
            resource,
        }
    }

    fn snapshot() -> (NodeMessage, Intent) {
        let intent = palisade_model::load_str(YAML, "t.yaml", &LoadOptions::default()).unwrap();
        let ids = palisade_policy::IdentityAllocator::new()
            .allocate(&intent)
            .unwrap();
        let mut resources: Vec<Resource> = intent
            .tenants
            .values()
            .cloned()
            .map(|mut t| {
                t.vni = None;
                Resource::Tenant(t)
            })
            .collect();
        resources.extend(intent.endpoints.iter().cloned().map(Resource::Endpoint));
        resources.extend(intent.policies.iter().cloned().map(Resource::Policy));
        let message = NodeMessage::Snapshot(NodeSnapshot {
            revision: 7,
            tenants: vec!["acme".into()],
            resources: resources.into_iter().map(|r| node_resource(r, 7)).collect(),
            identities: palisade_client::api::split_identities(&ids, |_| 4242),
            time: Some("2025-01-10T12:00:00.250Z".into()),
            nodes: [("n2".to_string(), std::net::Ipv4Addr::new(10, 255, 0, 2))].into(),
        });
        (message, intent)
    }

    #[test]
    fn the_node_table_is_handed_on_when_it_changes() {
        let (message, _) = snapshot();
        let mut state = NodeState::default();
        state.apply(message.clone());
        let nodes = state.take_nodes().expect("the snapshot's table");
        assert_eq!(nodes["n2"], std::net::Ipv4Addr::new(10, 255, 0, 2));
        assert_eq!(state.take_nodes(), None, "handed on once");
        state.apply(message);
        assert_eq!(state.take_nodes(), None, "the same table again");
        let delta = NodeMessage::Delta(NodeDelta {
            revision: 8,
            changes: vec![NodeChange::Nodes {
                nodes: [("n3".to_string(), std::net::Ipv4Addr::new(10, 255, 0, 3))].into(),
            }],
            time: None,
        });
        assert_eq!(state.apply(delta), Applied::Changed);
        assert_eq!(
            state
                .take_nodes()
                .map(|n| n.into_keys().collect::<Vec<_>>()),
            Some(vec!["n3".to_string()])
        );
    }

    #[test]
    fn a_snapshot_then_deltas_make_the_intent_with_the_servers_identities() {
        let (message, intent) = snapshot();
        let mut state = NodeState::default();
        assert_eq!(state.apply(message), Applied::Changed);
        let SourceUpdate::Snapshot(s) = state.update(&LoadOptions::default()) else {
            panic!("a snapshot")
        };
        assert_eq!(s.intent.endpoints, intent.endpoints);
        assert_eq!(s.intent.tenants["acme"].vni, Some(4242), "the server's VNI");
        let server = s.server.unwrap();
        assert_eq!(server.revision, 7);
        assert_eq!(
            server.committed_at.unwrap(),
            humantime::parse_rfc3339("2025-01-10T12:00:00.250Z").unwrap()
        );
        let ids = s.identities.unwrap();
        assert!(ids.endpoint(&intent.endpoints[0]).is_some());

        // A delta deletes the policy; a heartbeat only moves the revision.
        let delta = NodeMessage::Delta(NodeDelta {
            revision: 9,
            changes: vec![NodeChange::Delete {
                reference: ResourceRef {
                    kind: Kind::Policy,
                    tenant: Some("acme".into()),
                    namespace: None,
                    name: "db".into(),
                },
            }],
            time: None,
        });
        assert_eq!(state.apply(delta), Applied::Changed);
        let SourceUpdate::Snapshot(s) = state.update(&LoadOptions::default()) else {
            panic!("a snapshot")
        };
        assert!(s.intent.policies.is_empty());
        assert_eq!(s.server.unwrap().committed_at, None);
        assert_eq!(
            state.apply(NodeMessage::Heartbeat { revision: 12 }),
            Applied::UpTo(12)
        );
        assert_eq!(state.revision(), 12);

        // A put brings it back.
        let policy = intent.policies[0].clone();
        let put = NodeMessage::Delta(NodeDelta {
            revision: 13,
            changes: vec![NodeChange::Put {
                resource: Box::new(node_resource(Resource::Policy(policy), 13)),
            }],
            time: None,
        });
        state.apply(put);
        let (intent, _) = state.intent(&LoadOptions::default()).unwrap();
        assert_eq!(intent.policies.len(), 1);
        // Deltas of policies patch the kept intent: the same as building it.
        let SourceUpdate::Snapshot(s) = state.update(&LoadOptions::default()) else {
            panic!("a snapshot")
        };
        assert_eq!(s.intent, intent);

        // A policy naming a tier nobody defined: rejected, as a rebuild says.
        let mut bad = intent.policies[0].clone();
        bad.tier = "nowhere".into();
        state.apply(NodeMessage::Delta(NodeDelta {
            revision: 14,
            changes: vec![NodeChange::Put {
                resource: Box::new(node_resource(Resource::Policy(bad), 14)),
            }],
            time: None,
        }));
        let SourceUpdate::Rejected { diagnostics } = state.update(&LoadOptions::default()) else {
            panic!("rejected")
        };
        assert!(
            diagnostics.to_string().contains("tier 'nowhere'"),
            "{diagnostics}"
        );
    }
}
