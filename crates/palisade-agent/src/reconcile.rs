//! Reconciling the kernel's maps with the desired state: [`MapContents`]
//! (what the agent-owned maps hold), [`Plan`] (the smallest set of changes
//! from what is there to what should be), and its application in an order
//! that never opens a hole:
//!
//! 1. [`apply_additions`]: new and changed TENANTS, UPLINKS, IPCACHE and
//!    ENDPOINTS entries — identities and addresses before the policy that
//!    names them (an address whose identity has no policy yet is denied);
//! 2. (the agent attaches new ports: their ENDPOINTS entries exist now)
//! 3. [`apply_policy`]: POLICY upserts, then deletes;
//! 4. (the agent detaches ports that went away)
//! 5. [`apply_removals`]: ENDPOINTS, IPCACHE, UPLINKS and TENANTS entries that
//!    are gone;
//! 6. the agent bumps the policy revision when anything a verdict depends on
//!    changed, so that every established connection is decided again on its
//!    next packet against the complete new state, and cut if it is no longer
//!    allowed. (Bumping before the deletes would let a connection be
//!    revalidated against a stale, more specific allow and keep it.)
//!
//! When a map is nearly full, its removals go before its additions so the
//! peak fits ([`Capacities::order`]); a map that cannot hold the desired
//! state at all fails the reconcile before anything changes.
//!
//! The steps write through [`MapWriter`]: the kernel's maps
//! (`palisade_datapath::Maps`), or the recording maps of the simulated
//! datapath (`crate::simulation`, for benchmarks), which go through the same
//! steps in the same order.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::path::Path;

use palisade_datapath::abi::{
    Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, TenantInfo, UplinkInfo,
    POLICY_PREFIX_BITS,
};
use palisade_datapath::{MapSizes, Maps};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};

/// The contents of the maps the agent owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapContents {
    /// ENDPOINTS: host-side port ifindex → endpoint.
    pub endpoints: BTreeMap<u32, Endpoint>,
    /// IPCACHE.
    pub ipcache: HashMap<IpcacheKey, IpcacheValue>,
    /// POLICY.
    pub policy: HashMap<PolicyKey, PolicyValue>,
    /// TENANTS: tenant index → uplink and VNI.
    pub tenants: BTreeMap<u32, TenantInfo>,
    /// UPLINKS: uplink ifindex → tenant.
    pub uplinks: BTreeMap<u32, UplinkInfo>,
}

impl MapContents {
    /// Reads what the kernel's maps hold now (an adopted datapath keeps
    /// what the previous agent wrote).
    pub fn read(maps: &Maps) -> Result<MapContents> {
        Ok(MapContents {
            endpoints: maps.endpoints.entries()?.into_iter().collect(),
            ipcache: maps.ipcache.entries()?.into_iter().collect(),
            policy: maps.policy.entries()?.into_iter().collect(),
            tenants: maps.tenants.entries()?.into_iter().collect(),
            uplinks: maps.uplinks.entries()?.into_iter().collect(),
        })
    }
}

/// Where the reconcile steps write: one insert (add or replace) and one
/// remove per agent-owned map. Implemented by the kernel's maps and by the
/// simulated datapath's recording maps (`crate::simulation`).
pub trait MapWriter {
    /// TENANTS: adds or replaces a tenant.
    fn insert_tenant(&mut self, tenant: u32, info: &TenantInfo) -> Result<()>;
    /// TENANTS: removes a tenant.
    fn remove_tenant(&mut self, tenant: u32) -> Result<()>;
    /// UPLINKS: adds or replaces an uplink.
    fn insert_uplink(&mut self, ifindex: u32, info: &UplinkInfo) -> Result<()>;
    /// UPLINKS: removes an uplink.
    fn remove_uplink(&mut self, ifindex: u32) -> Result<()>;
    /// IPCACHE: adds or replaces a prefix.
    fn insert_ipcache(&mut self, key: &IpcacheKey, value: &IpcacheValue) -> Result<()>;
    /// IPCACHE: removes a prefix.
    fn remove_ipcache(&mut self, key: &IpcacheKey) -> Result<()>;
    /// ENDPOINTS: adds or replaces the endpoint of a port.
    fn insert_endpoint(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()>;
    /// ENDPOINTS: removes the endpoint of a port.
    fn remove_endpoint(&mut self, ifindex: u32) -> Result<()>;
    /// POLICY: adds or replaces an entry.
    fn insert_policy(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()>;
    /// POLICY: removes an entry.
    fn remove_policy(&mut self, key: &PolicyKey) -> Result<()>;
}

impl MapWriter for Maps {
    fn insert_tenant(&mut self, tenant: u32, info: &TenantInfo) -> Result<()> {
        Ok(self.tenants.insert(tenant, info)?)
    }
    fn remove_tenant(&mut self, tenant: u32) -> Result<()> {
        self.tenants.remove(tenant)?;
        Ok(())
    }
    fn insert_uplink(&mut self, ifindex: u32, info: &UplinkInfo) -> Result<()> {
        Ok(self.uplinks.insert(ifindex, info)?)
    }
    fn remove_uplink(&mut self, ifindex: u32) -> Result<()> {
        self.uplinks.remove(ifindex)?;
        Ok(())
    }
    fn insert_ipcache(&mut self, key: &IpcacheKey, value: &IpcacheValue) -> Result<()> {
        Ok(self.ipcache.insert(key, value)?)
    }
    fn remove_ipcache(&mut self, key: &IpcacheKey) -> Result<()> {
        self.ipcache.remove(key)?;
        Ok(())
    }
    fn insert_endpoint(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        Ok(self.endpoints.insert(ifindex, endpoint)?)
    }
    fn remove_endpoint(&mut self, ifindex: u32) -> Result<()> {
        self.endpoints.remove(ifindex)?;
        Ok(())
    }
    fn insert_policy(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        Ok(self.policy.insert(key, value)?)
    }
    fn remove_policy(&mut self, key: &PolicyKey) -> Result<()> {
        self.policy.remove(key)?;
        Ok(())
    }
}

/// Changes to one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapChanges<K, V> {
    /// Keys that are new.
    pub added: Vec<(K, V)>,
    /// Keys whose value changes.
    pub updated: Vec<(K, V)>,
    /// Keys that go away.
    pub removed: Vec<K>,
}

impl<K, V> Default for MapChanges<K, V> {
    fn default() -> Self {
        MapChanges {
            added: Vec::new(),
            updated: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash, V: Copy + PartialEq> MapChanges<K, V> {
    /// What turns `actual` into `desired`.
    fn between<'a>(
        actual: impl Fn(&K) -> Option<&'a V>,
        actual_keys: impl Iterator<Item = &'a K>,
        desired: impl Iterator<Item = (&'a K, &'a V)> + Clone,
        desired_has: impl Fn(&K) -> bool,
    ) -> Self
    where
        K: 'a,
        V: 'a,
    {
        let mut out = MapChanges::default();
        for (k, v) in desired {
            match actual(k) {
                None => out.added.push((*k, *v)),
                Some(old) if old != v => out.updated.push((*k, *v)),
                Some(_) => {}
            }
        }
        out.removed = actual_keys.filter(|k| !desired_has(k)).copied().collect();
        out
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// The counts, for logs.
    pub fn counts(&self) -> Counts {
        Counts {
            added: self.added.len(),
            updated: self.updated.len(),
            removed: self.removed.len(),
        }
    }

    fn upserts(&self) -> impl Iterator<Item = &(K, V)> {
        self.added.iter().chain(&self.updated)
    }
}

fn hash_changes<K: Copy + Eq + Hash, V: Copy + PartialEq>(
    actual: &HashMap<K, V>,
    desired: &HashMap<K, V>,
) -> MapChanges<K, V> {
    MapChanges::between(
        |k| actual.get(k),
        actual.keys(),
        desired.iter(),
        |k| desired.contains_key(k),
    )
}

fn tree_changes<V: Copy + PartialEq>(
    actual: &BTreeMap<u32, V>,
    desired: &BTreeMap<u32, V>,
) -> MapChanges<u32, V> {
    MapChanges::between(
        |k| actual.get(k),
        actual.keys(),
        desired.iter(),
        |k| desired.contains_key(k),
    )
}

/// Added, updated and removed entries of one map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// New entries.
    pub added: usize,
    /// Changed entries.
    pub updated: usize,
    /// Removed entries.
    pub removed: usize,
}

impl Counts {
    /// Whether nothing changed.
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// What one reconcile changed, for the log line and the status file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    /// POLICY.
    pub policy: Counts,
    /// IPCACHE.
    pub ipcache: Counts,
    /// ENDPOINTS.
    pub endpoints: Counts,
    /// TENANTS.
    pub tenants: Counts,
    /// UPLINKS.
    pub uplinks: Counts,
    /// Hooks attached (new links, or links of a previous agent updated in place).
    pub attached: usize,
    /// Hooks detached.
    pub detached: usize,
}

impl ChangeCounts {
    /// Whether no map entry changed (attachments aside).
    pub fn maps_unchanged(&self) -> bool {
        [
            self.policy,
            self.ipcache,
            self.endpoints,
            self.tenants,
            self.uplinks,
        ]
        .iter()
        .all(Counts::is_zero)
    }
}

impl std::fmt::Display for ChangeCounts {
    /// `policy +3 ~1 -2, ipcache +1, ...`, only the maps that changed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (name, c) in [
            ("policy", self.policy),
            ("ipcache", self.ipcache),
            ("endpoints", self.endpoints),
            ("tenants", self.tenants),
            ("uplinks", self.uplinks),
        ] {
            if !c.is_zero() {
                parts.push(format!("{name} +{} ~{} -{}", c.added, c.updated, c.removed));
            }
        }
        if self.attached > 0 {
            parts.push(format!("{} hooks attached", self.attached));
        }
        if self.detached > 0 {
            parts.push(format!("{} hooks detached", self.detached));
        }
        if parts.is_empty() {
            f.write_str("no changes")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The changes from the maps' contents to the desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// ENDPOINTS.
    pub endpoints: MapChanges<u32, Endpoint>,
    /// IPCACHE.
    pub ipcache: MapChanges<IpcacheKey, IpcacheValue>,
    /// POLICY.
    pub policy: MapChanges<PolicyKey, PolicyValue>,
    /// TENANTS.
    pub tenants: MapChanges<u32, TenantInfo>,
    /// UPLINKS.
    pub uplinks: MapChanges<u32, UplinkInfo>,
}

impl Plan {
    /// The smallest set of changes that turns `actual` into `desired`.
    pub fn between(actual: &MapContents, desired: &MapContents) -> Plan {
        Plan {
            endpoints: tree_changes(&actual.endpoints, &desired.endpoints),
            ipcache: hash_changes(&actual.ipcache, &desired.ipcache),
            policy: hash_changes(&actual.policy, &desired.policy),
            tenants: tree_changes(&actual.tenants, &desired.tenants),
            uplinks: tree_changes(&actual.uplinks, &desired.uplinks),
        }
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
            && self.ipcache.is_empty()
            && self.policy.is_empty()
            && self.tenants.is_empty()
            && self.uplinks.is_empty()
    }

    /// Whether a verdict may change: policy, identities of addresses, or
    /// endpoints changed. Established connections must then be revalidated.
    pub fn changes_verdicts(&self) -> bool {
        !(self.policy.is_empty() && self.ipcache.is_empty() && self.endpoints.is_empty())
    }

    /// The counts (attachments are the agent's to fill in).
    pub fn counts(&self) -> ChangeCounts {
        ChangeCounts {
            policy: self.policy.counts(),
            ipcache: self.ipcache.counts(),
            endpoints: self.endpoints.counts(),
            tenants: self.tenants.counts(),
            uplinks: self.uplinks.counts(),
            attached: 0,
            detached: 0,
        }
    }
}

/// Sizes of the agent-owned maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacities {
    /// ENDPOINTS.
    pub endpoints: u32,
    /// IPCACHE.
    pub ipcache: u32,
    /// POLICY (with POLICY_RANGES: the exact-port and all-ports entries).
    pub policy: u32,
    /// POLICY_RANGES, when the datapath keeps port ranges apart from POLICY.
    pub policy_ranges: Option<u32>,
    /// TENANTS.
    pub tenants: u32,
    /// UPLINKS.
    pub uplinks: u32,
}

/// Whether a POLICY key is kept in POLICY when the datapath splits port
/// ranges into POLICY_RANGES: all ports (/0) and exact ports (/16).
pub(crate) fn exact_policy_key(key: &PolicyKey) -> bool {
    key.prefixlen == POLICY_PREFIX_BITS || key.prefixlen == POLICY_PREFIX_BITS + 16
}

/// Which maps get their removals before their additions in one reconcile
/// because both together would not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovalsFirst {
    /// POLICY.
    pub policy: bool,
    /// IPCACHE.
    pub ipcache: bool,
    /// ENDPOINTS.
    pub endpoints: bool,
}

/// The size (max entries) of the map pinned as `bpffs_dir/name`.
pub(crate) fn pinned_capacity(bpffs_dir: &Path, name: &str) -> Result<u32> {
    aya::maps::MapInfo::from_pin(bpffs_dir.join(name))
        .map(|info| info.max_entries())
        .map_err(|e| AgentError::Datapath {
            source: palisade_datapath::Error::InspectPin {
                name: name.to_string(),
                path: bpffs_dir.join(name),
                source: Box::new(e),
            },
        })
}

impl Capacities {
    /// Reads the sizes of the maps pinned in `bpffs_dir`.
    pub fn read(bpffs_dir: &Path) -> Result<Capacities> {
        let size = |name: &str| pinned_capacity(bpffs_dir, name);
        let ranges = bpffs_dir.join("POLICY_RANGES");
        Ok(Capacities {
            endpoints: size("ENDPOINTS")?,
            ipcache: size("IPCACHE")?,
            policy: size("POLICY")?,
            policy_ranges: ranges.exists().then(|| size("POLICY_RANGES")).transpose()?,
            tenants: size("TENANTS")?,
            uplinks: size("UPLINKS")?,
        })
    }

    /// The sizes of maps created with `sizes` (the datapath makes
    /// POLICY_RANGES as large as POLICY, and UPLINKS as large as TENANTS).
    pub fn of_sizes(sizes: &MapSizes) -> Capacities {
        Capacities {
            endpoints: sizes.endpoints,
            ipcache: sizes.ipcache,
            policy: sizes.policy,
            policy_ranges: Some(sizes.policy),
            tenants: sizes.tenants,
            uplinks: sizes.tenants,
        }
    }

    /// Fails when a map cannot hold the desired state; otherwise says which
    /// maps must remove before they add so that the peak fits.
    pub fn order(&self, desired: &MapContents, plan: &Plan) -> Result<RemovalsFirst> {
        let check = |map: &'static str, len: usize, capacity: u32| {
            if len > capacity as usize {
                Err(AgentError::MapFull {
                    map,
                    needed: len,
                    capacity,
                })
            } else {
                Ok(())
            }
        };
        check("ENDPOINTS", desired.endpoints.len(), self.endpoints)?;
        check("IPCACHE", desired.ipcache.len(), self.ipcache)?;
        let exact = desired
            .policy
            .keys()
            .filter(|k| exact_policy_key(k))
            .count();
        let removed_exact = plan
            .policy
            .removed
            .iter()
            .filter(|k| exact_policy_key(k))
            .count();
        match self.policy_ranges {
            Some(ranges) => {
                check("POLICY", exact, self.policy)?;
                check("POLICY_RANGES", desired.policy.len() - exact, ranges)?;
            }
            None => check("POLICY", desired.policy.len(), self.policy)?,
        }
        check("TENANTS", desired.tenants.len(), self.tenants)?;
        check("UPLINKS", desired.uplinks.len(), self.uplinks)?;
        let peak_over =
            |desired: usize, removed: usize, capacity: u32| desired + removed > capacity as usize;
        let first = RemovalsFirst {
            policy: match self.policy_ranges {
                Some(ranges) => {
                    peak_over(exact, removed_exact, self.policy)
                        || peak_over(
                            desired.policy.len() - exact,
                            plan.policy.removed.len() - removed_exact,
                            ranges,
                        )
                }
                None => peak_over(desired.policy.len(), plan.policy.removed.len(), self.policy),
            },
            ipcache: peak_over(
                desired.ipcache.len(),
                plan.ipcache.removed.len(),
                self.ipcache,
            ),
            endpoints: peak_over(
                desired.endpoints.len(),
                plan.endpoints.removed.len(),
                self.endpoints,
            ),
        };
        if first != RemovalsFirst::default() {
            tracing::warn!(
                ?first,
                "maps nearly full: removing old entries before adding new ones in this reconcile"
            );
        }
        Ok(first)
    }
}

/// Step 1: new and changed TENANTS, UPLINKS, IPCACHE and ENDPOINTS entries
/// (and, for maps in `first`, their removals before).
pub fn apply_additions(plan: &Plan, first: RemovalsFirst, maps: &mut impl MapWriter) -> Result<()> {
    for (tenant, info) in plan.tenants.upserts() {
        maps.insert_tenant(*tenant, info)?;
    }
    for (ifindex, info) in plan.uplinks.upserts() {
        maps.insert_uplink(*ifindex, info)?;
    }
    if first.ipcache {
        for key in &plan.ipcache.removed {
            maps.remove_ipcache(key)?;
        }
    }
    for (key, value) in plan.ipcache.upserts() {
        maps.insert_ipcache(key, value)?;
    }
    if first.endpoints {
        for ifindex in &plan.endpoints.removed {
            maps.remove_endpoint(*ifindex)?;
        }
    }
    for (ifindex, endpoint) in plan.endpoints.upserts() {
        maps.insert_endpoint(*ifindex, endpoint)?;
    }
    Ok(())
}

/// Step 3: POLICY upserts, then deletes (deletes first when the map is full).
pub fn apply_policy(plan: &Plan, first: RemovalsFirst, maps: &mut impl MapWriter) -> Result<()> {
    if first.policy {
        for key in &plan.policy.removed {
            maps.remove_policy(key)?;
        }
    }
    for (key, value) in plan.policy.upserts() {
        maps.insert_policy(key, value)?;
    }
    if !first.policy {
        for key in &plan.policy.removed {
            maps.remove_policy(key)?;
        }
    }
    Ok(())
}

/// Step 5: ENDPOINTS, IPCACHE, UPLINKS and TENANTS entries that are gone.
pub fn apply_removals(plan: &Plan, first: RemovalsFirst, maps: &mut impl MapWriter) -> Result<()> {
    if !first.endpoints {
        for ifindex in &plan.endpoints.removed {
            maps.remove_endpoint(*ifindex)?;
        }
    }
    if !first.ipcache {
        for key in &plan.ipcache.removed {
            maps.remove_ipcache(key)?;
        }
    }
    for ifindex in &plan.uplinks.removed {
        maps.remove_uplink(*ifindex)?;
    }
    for tenant in &plan.tenants.removed {
        maps.remove_tenant(*tenant)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use palisade_datapath::abi::Direction;

    use super::*;

    fn contents(policy: &[(u32, u32)], ipcache: &[(u8, u32)]) -> MapContents {
        MapContents {
            policy: policy
                .iter()
                .map(|&(subject, cookie)| {
                    (
                        PolicyKey::default_for(subject, Direction::Ingress),
                        PolicyValue::deny(cookie),
                    )
                })
                .collect(),
            ipcache: ipcache
                .iter()
                .map(|&(last, identity)| {
                    (
                        IpcacheKey::new(1, Ipv4Addr::new(10, 0, 0, last), 32),
                        IpcacheValue::world(identity),
                    )
                })
                .collect(),
            ..MapContents::default()
        }
    }

    #[test]
    fn the_plan_is_the_smallest_diff() {
        let actual = contents(&[(1, 10), (2, 20), (3, 30)], &[(1, 5), (2, 6)]);
        let desired = contents(&[(1, 10), (2, 21), (4, 40)], &[(1, 5), (2, 6)]);
        let plan = Plan::between(&actual, &desired);
        assert_eq!(
            plan.policy.counts(),
            Counts {
                added: 1,
                updated: 1,
                removed: 1
            }
        );
        assert!(plan.ipcache.is_empty());
        assert!(plan.changes_verdicts());
        assert_eq!(plan.counts().to_string(), "policy +1 ~1 -1");

        let same = Plan::between(&desired, &desired.clone());
        assert!(same.is_empty() && !same.changes_verdicts());
        assert_eq!(same.counts().to_string(), "no changes");
    }

    #[test]
    fn a_map_too_small_fails_and_a_full_one_removes_first() {
        let caps = Capacities {
            endpoints: 8,
            ipcache: 8,
            policy: 3,
            policy_ranges: None,
            tenants: 8,
            uplinks: 8,
        };
        let actual = contents(&[(1, 1), (2, 2), (3, 3)], &[]);
        let desired = contents(&[(1, 1), (4, 4), (5, 5)], &[]);
        let plan = Plan::between(&actual, &desired);
        let first = caps.order(&desired, &plan).unwrap();
        assert!(first.policy && !first.ipcache);

        let too_big = contents(&[(1, 1), (2, 2), (3, 3), (4, 4)], &[]);
        let err = caps
            .order(&too_big, &Plan::between(&actual, &too_big))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("POLICY") && err.contains("4") && err.contains("3"),
            "{err}"
        );
    }

    #[test]
    fn port_ranges_count_against_their_own_map() {
        let caps = Capacities {
            endpoints: 8,
            ipcache: 8,
            policy: 2,
            policy_ranges: Some(1),
            tenants: 8,
            uplinks: 8,
        };
        let entry = |port_bits| {
            (
                PolicyKey::new(1, Direction::Ingress, 0, 6, 8080, port_bits),
                PolicyValue::allow(3),
            )
        };
        let fits = MapContents {
            policy: [entry(0), entry(16), entry(12)].into_iter().collect(),
            ..MapContents::default()
        };
        let plan = Plan::between(&MapContents::default(), &fits);
        assert!(caps.order(&fits, &plan).is_ok());

        let two_ranges = MapContents {
            policy: [entry(0), entry(12), entry(13)].into_iter().collect(),
            ..MapContents::default()
        };
        let err = caps
            .order(&two_ranges, &Plan::between(&fits, &two_ranges))
            .unwrap_err()
            .to_string();
        assert!(err.contains("POLICY_RANGES"), "{err}");
    }
}
