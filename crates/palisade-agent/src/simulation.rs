//! The simulated datapath: a SIMULATION for benchmarks, which enforces
//! nothing. With it (`AgentConfig::simulate_datapath`, `palisade agent
//! --simulate-datapath`) an agent does all its real work — follows its
//! source, compiles, computes the desired map contents, diffs them against
//! what the maps hold and goes through the reconcile steps in their order,
//! with the same capacity checks — but the maps are [`RecordingMaps`] in
//! memory, which record each write instead of making it, and no program is
//! loaded or attached. It needs neither root nor bpffs, so one machine can
//! run a hundred agents to measure the control plane (bench/README.md,
//! "Propagation").
//!
//! The node's ports are pretended: every local endpoint's host-side port
//! "exists" with a made-up ifindex ([`SimulatedDatapath::links`]), so the
//! desired state is the one of a node whose workloads are all up.

use std::collections::BTreeMap;

use palisade_datapath::abi::{
    Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, TenantInfo, UplinkInfo,
};
use palisade_model::Intent;

use crate::desired::Port;
use crate::error::{AgentError, Result};
use crate::interfaces::{Link, NodeLinks};
use crate::reconcile::{
    apply_additions, apply_policy, apply_removals, exact_policy_key, Capacities, MapContents,
    MapWriter, Plan, RemovalsFirst,
};

/// First ifindex given to a pretended port.
const FIRST_IFINDEX: u32 = 1000;

/// A write the simulated datapath recorded instead of making it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedWrite {
    /// The map, as the kernel names it (`POLICY`, `IPCACHE`, ...).
    pub map: &'static str,
    /// Whether an entry was inserted (added or replaced) or removed.
    pub op: WriteOp,
}

/// What a [`RecordedWrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// Added or replaced an entry.
    Insert,
    /// Removed an entry.
    Remove,
}

/// The agent-owned maps of the simulation: their contents in memory, the
/// kernel's capacity limits on inserts, and the writes of the last
/// reconcile in order. Part of a SIMULATION: nothing reaches the kernel.
#[derive(Debug, Clone)]
pub struct RecordingMaps {
    contents: MapContents,
    capacities: Capacities,
    /// POLICY entries kept in POLICY (exact ports and all ports); the
    /// others are in POLICY_RANGES when the capacities split them.
    policy_exact: usize,
    writes: Vec<RecordedWrite>,
    total_writes: u64,
}

impl RecordingMaps {
    /// Empty maps of these sizes.
    pub fn new(capacities: Capacities) -> RecordingMaps {
        RecordingMaps {
            contents: MapContents::default(),
            capacities,
            policy_exact: 0,
            writes: Vec::new(),
            total_writes: 0,
        }
    }

    /// What the maps hold.
    pub fn contents(&self) -> &MapContents {
        &self.contents
    }

    /// The writes since [`RecordingMaps::clear_writes`], in order.
    pub fn writes(&self) -> &[RecordedWrite] {
        &self.writes
    }

    /// Every write recorded since the maps were made.
    pub fn total_writes(&self) -> u64 {
        self.total_writes
    }

    /// Forgets the recorded writes (kept: the contents and the total).
    pub fn clear_writes(&mut self) {
        self.writes.clear();
    }

    fn record(&mut self, map: &'static str, op: WriteOp) {
        self.writes.push(RecordedWrite { map, op });
        self.total_writes += 1;
    }
}

/// A new key into a map holding `len` of `capacity` entries fails as the
/// kernel's insert does (E2BIG).
fn room(map: &'static str, new_key: bool, len: usize, capacity: u32) -> Result<()> {
    if new_key && len >= capacity as usize {
        return Err(AgentError::MapFull {
            map,
            needed: len + 1,
            capacity,
        });
    }
    Ok(())
}

impl MapWriter for RecordingMaps {
    fn insert_tenant(&mut self, tenant: u32, info: &TenantInfo) -> Result<()> {
        let map = &mut self.contents.tenants;
        room(
            "TENANTS",
            !map.contains_key(&tenant),
            map.len(),
            self.capacities.tenants,
        )?;
        map.insert(tenant, *info);
        self.record("TENANTS", WriteOp::Insert);
        Ok(())
    }

    fn remove_tenant(&mut self, tenant: u32) -> Result<()> {
        self.contents.tenants.remove(&tenant);
        self.record("TENANTS", WriteOp::Remove);
        Ok(())
    }

    fn insert_uplink(&mut self, ifindex: u32, info: &UplinkInfo) -> Result<()> {
        let map = &mut self.contents.uplinks;
        room(
            "UPLINKS",
            !map.contains_key(&ifindex),
            map.len(),
            self.capacities.uplinks,
        )?;
        map.insert(ifindex, *info);
        self.record("UPLINKS", WriteOp::Insert);
        Ok(())
    }

    fn remove_uplink(&mut self, ifindex: u32) -> Result<()> {
        self.contents.uplinks.remove(&ifindex);
        self.record("UPLINKS", WriteOp::Remove);
        Ok(())
    }

    fn insert_ipcache(&mut self, key: &IpcacheKey, value: &IpcacheValue) -> Result<()> {
        let map = &mut self.contents.ipcache;
        room(
            "IPCACHE",
            !map.contains_key(key),
            map.len(),
            self.capacities.ipcache,
        )?;
        map.insert(*key, *value);
        self.record("IPCACHE", WriteOp::Insert);
        Ok(())
    }

    fn remove_ipcache(&mut self, key: &IpcacheKey) -> Result<()> {
        self.contents.ipcache.remove(key);
        self.record("IPCACHE", WriteOp::Remove);
        Ok(())
    }

    fn insert_endpoint(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        let map = &mut self.contents.endpoints;
        room(
            "ENDPOINTS",
            !map.contains_key(&ifindex),
            map.len(),
            self.capacities.endpoints,
        )?;
        map.insert(ifindex, *endpoint);
        self.record("ENDPOINTS", WriteOp::Insert);
        Ok(())
    }

    fn remove_endpoint(&mut self, ifindex: u32) -> Result<()> {
        self.contents.endpoints.remove(&ifindex);
        self.record("ENDPOINTS", WriteOp::Remove);
        Ok(())
    }

    fn insert_policy(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        let new_key = !self.contents.policy.contains_key(key);
        let exact = exact_policy_key(key);
        let ranges = self.contents.policy.len() - self.policy_exact;
        match self.capacities.policy_ranges {
            Some(capacity) if !exact => room("POLICY_RANGES", new_key, ranges, capacity)?,
            Some(_) => room("POLICY", new_key, self.policy_exact, self.capacities.policy)?,
            None => room(
                "POLICY",
                new_key,
                self.contents.policy.len(),
                self.capacities.policy,
            )?,
        }
        self.contents.policy.insert(*key, *value);
        if new_key && exact {
            self.policy_exact += 1;
        }
        self.record("POLICY", WriteOp::Insert);
        Ok(())
    }

    fn remove_policy(&mut self, key: &PolicyKey) -> Result<()> {
        if self.contents.policy.remove(key).is_some() && exact_policy_key(key) {
            self.policy_exact -= 1;
        }
        self.record("POLICY", WriteOp::Remove);
        Ok(())
    }
}

/// The simulated datapath of one agent: recording maps, a policy revision,
/// pretended ports and attachments. A SIMULATION for benchmarks: it
/// enforces nothing.
#[derive(Debug, Clone)]
pub struct SimulatedDatapath {
    maps: RecordingMaps,
    policy_revision: u32,
    /// Pretended attachments by ifindex.
    attached: BTreeMap<u32, Port>,
    /// Pretended ports: host-side interface name → ifindex.
    ifindexes: BTreeMap<String, u32>,
    next_ifindex: u32,
}

impl SimulatedDatapath {
    /// A simulated datapath whose maps have the sizes of `capacities`.
    pub fn new(capacities: Capacities) -> SimulatedDatapath {
        SimulatedDatapath {
            maps: RecordingMaps::new(capacities),
            policy_revision: 0,
            attached: BTreeMap::new(),
            ifindexes: BTreeMap::new(),
            next_ifindex: FIRST_IFINDEX,
        }
    }

    /// The node's pretended interfaces: the host-side port of every
    /// endpoint of `node` in `intent`, each with an ifindex of its own
    /// (kept while the port stays) and a made-up MAC. No node address.
    pub fn links(&mut self, intent: &Intent, node: &str) -> NodeLinks {
        let mut links = NodeLinks::default();
        let mut ifindexes = BTreeMap::new();
        for endpoint in intent.endpoints.iter().filter(|e| e.node == node) {
            let name = endpoint.host_interface();
            let ifindex = match self.ifindexes.get(&name) {
                Some(&ifindex) => ifindex,
                None => {
                    self.next_ifindex += 1;
                    self.next_ifindex
                }
            };
            let [a, b, c, d] = ifindex.to_be_bytes();
            links.links.insert(
                name.clone(),
                Link {
                    ifindex,
                    mac: Some([0x02, 0x5e, a, b, c, d]),
                },
            );
            ifindexes.insert(name, ifindex);
        }
        self.ifindexes = ifindexes;
        links
    }

    /// The recording maps.
    pub fn maps(&self) -> &RecordingMaps {
        &self.maps
    }

    /// The sizes of the maps.
    pub fn capacities(&self) -> &Capacities {
        &self.maps.capacities
    }

    /// What the maps hold (the simulation's answer to reading the kernel).
    pub fn contents(&self) -> MapContents {
        self.maps.contents.clone()
    }

    /// The policy revision, bumped as the kernel's would be.
    pub fn policy_revision(&self) -> u32 {
        self.policy_revision
    }

    /// Goes through the reconcile steps of `plan` in the agent's order
    /// (`reconcile.rs`), recording the writes; "attaches" the new ports and
    /// "detaches" the ones gone. Returns the hooks attached and detached.
    pub fn apply(
        &mut self,
        plan: &Plan,
        first: RemovalsFirst,
        ports: &BTreeMap<u32, Port>,
    ) -> Result<(usize, usize)> {
        self.maps.clear_writes();
        apply_additions(plan, first, &mut self.maps)?;
        let mut attached = 0;
        for (&ifindex, port) in ports {
            if self.attached.get(&ifindex) != Some(port) {
                attached += port.hooks().len();
                self.attached.insert(ifindex, port.clone());
            }
        }
        apply_policy(plan, first, &mut self.maps)?;
        let gone: Vec<u32> = self
            .attached
            .keys()
            .filter(|ifindex| !ports.contains_key(ifindex))
            .copied()
            .collect();
        let mut detached = 0;
        for ifindex in gone {
            if let Some(port) = self.attached.remove(&ifindex) {
                detached += port.hooks().len();
            }
        }
        apply_removals(plan, first, &mut self.maps)?;
        if plan.changes_verdicts() {
            self.policy_revision = self.policy_revision.wrapping_add(1);
        }
        Ok((attached, detached))
    }

    /// Whether `port` at `ifindex` counts as attached.
    pub fn is_attached(&self, ifindex: u32, port: &Port) -> bool {
        self.attached.get(&ifindex) == Some(port)
    }

    /// Ports counted as attached.
    pub fn port_count(&self) -> usize {
        self.attached.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use palisade_datapath::abi::Direction;
    use palisade_datapath::MapSizes;

    use super::*;
    use crate::desired::PortRole;

    fn policy(subject: u32, cookie: u32) -> (PolicyKey, PolicyValue) {
        (
            PolicyKey::default_for(subject, Direction::Ingress),
            PolicyValue::deny(cookie),
        )
    }

    fn address(last: u8, identity: u32) -> (IpcacheKey, IpcacheValue) {
        (
            IpcacheKey::new(1, Ipv4Addr::new(10, 0, 0, last), 32),
            IpcacheValue::world(identity),
        )
    }

    fn contents(policy_entries: &[(u32, u32)], addresses: &[(u8, u32)]) -> MapContents {
        MapContents {
            policy: policy_entries.iter().map(|&(s, c)| policy(s, c)).collect(),
            ipcache: addresses.iter().map(|&(l, i)| address(l, i)).collect(),
            ..MapContents::default()
        }
    }

    fn endpoint_port(name: &str) -> Port {
        Port {
            name: name.into(),
            role: PortRole::Endpoint(format!("acme:{name}")),
        }
    }

    #[test]
    fn writes_follow_the_reconcile_order_and_the_contents_answer_the_next_diff() {
        let mut sim = SimulatedDatapath::new(Capacities::of_sizes(&MapSizes::default()));
        let desired = contents(&[(1, 10), (2, 20)], &[(1, 1), (2, 2)]);
        let plan = Plan::between(&sim.contents(), &desired);
        let ports = BTreeMap::from([(1001, endpoint_port("p1"))]);
        let (attached, detached) = sim.apply(&plan, RemovalsFirst::default(), &ports).unwrap();
        assert_eq!(
            (attached, detached),
            (2, 0),
            "both hooks of an endpoint port"
        );
        assert_eq!(sim.contents(), desired);
        assert_eq!(sim.policy_revision(), 1);
        // Identities and addresses before the policy that names them.
        let maps: Vec<&str> = sim.maps().writes().iter().map(|w| w.map).collect();
        assert_eq!(maps, ["IPCACHE", "IPCACHE", "POLICY", "POLICY"]);

        // Removals: POLICY before IPCACHE, the port detached.
        let next = contents(&[(1, 10)], &[(1, 1)]);
        let plan = Plan::between(&sim.contents(), &next);
        let (attached, detached) = sim
            .apply(&plan, RemovalsFirst::default(), &BTreeMap::new())
            .unwrap();
        assert_eq!((attached, detached), (0, 2));
        let writes: Vec<(&str, WriteOp)> =
            sim.maps().writes().iter().map(|w| (w.map, w.op)).collect();
        assert_eq!(
            writes,
            [("POLICY", WriteOp::Remove), ("IPCACHE", WriteOp::Remove)]
        );
        assert_eq!(sim.contents(), next);
        assert_eq!(sim.maps().total_writes(), 6);

        // Nothing changes: no write, no revision bump.
        let plan = Plan::between(&sim.contents(), &next);
        sim.apply(&plan, RemovalsFirst::default(), &BTreeMap::new())
            .unwrap();
        assert!(sim.maps().writes().is_empty());
        assert_eq!(sim.policy_revision(), 2);
    }

    #[test]
    fn a_full_map_refuses_a_new_key_as_the_kernel_does() {
        let caps = Capacities {
            endpoints: 8,
            ipcache: 2,
            policy: 8,
            policy_ranges: Some(8),
            tenants: 8,
            uplinks: 8,
        };
        let mut maps = RecordingMaps::new(caps);
        let (k1, v1) = address(1, 1);
        let (k2, v2) = address(2, 2);
        let (k3, v3) = address(3, 3);
        maps.insert_ipcache(&k1, &v1).unwrap();
        maps.insert_ipcache(&k2, &v2).unwrap();
        maps.insert_ipcache(&k2, &v1).unwrap(); // replacing needs no room
        let err = maps.insert_ipcache(&k3, &v3).unwrap_err().to_string();
        assert!(err.contains("IPCACHE"), "{err}");
        maps.remove_ipcache(&k1).unwrap();
        maps.insert_ipcache(&k3, &v3).unwrap();
        assert_eq!(maps.contents().ipcache.len(), 2);
    }

    #[test]
    fn the_capacity_check_of_the_plan_is_the_agents() {
        let caps = Capacities {
            endpoints: 8,
            ipcache: 8,
            policy: 3,
            policy_ranges: None,
            tenants: 8,
            uplinks: 8,
        };
        let sim = SimulatedDatapath::new(caps);
        let too_big = contents(&[(1, 1), (2, 2), (3, 3), (4, 4)], &[]);
        let plan = Plan::between(&sim.contents(), &too_big);
        let err = sim
            .capacities()
            .order(&too_big, &plan)
            .unwrap_err()
            .to_string();
        assert!(err.contains("POLICY"), "{err}");
    }

    #[test]
    fn every_local_endpoint_gets_a_pretended_port_that_keeps_its_ifindex() {
        let yaml = "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultAction: deny}\n---\n\
            apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: a, tenant: acme}\nspec: {node: n1, ips: [10.0.0.1]}\n---\n\
            apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: b, tenant: acme}\nspec: {node: n1, ips: [10.0.0.2]}\n---\n\
            apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: c, tenant: acme}\nspec: {node: n2, ips: [10.0.0.3]}\n";
        let intent = palisade_model::load_str(yaml, "t.yaml", &Default::default()).unwrap();
        let mut sim = SimulatedDatapath::new(Capacities::of_sizes(&MapSizes::default()));
        let links = sim.links(&intent, "n1");
        assert_eq!(links.links.len(), 2, "{links:?}");
        let a = intent.endpoints[0].host_interface();
        let first = links.get(&a).unwrap().ifindex;
        assert!(links.get(&intent.endpoints[2].host_interface()).is_none());
        assert_eq!(sim.links(&intent, "n1").get(&a).unwrap().ifindex, first);
    }
}
