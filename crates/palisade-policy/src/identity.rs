//! Identities: the small numbers the datapath uses instead of labels and
//! addresses, and the allocator that hands them out.
//!
//! An [`Identity`] is `tenant_index << 16 | local`. The overlay carries only
//! `local` (16 bits of the VXLAN Group Policy option) and the VNI names the
//! tenant, so every tenant has its own space of locals:
//!
//! | local      | meaning                                              |
//! |------------|------------------------------------------------------|
//! | 0          | invalid (`Identity::ANY` in table keys)              |
//! | 1          | world: an address in no policy prefix of the tenant  |
//! | 2          | host: the node the endpoint runs on                  |
//! | 3          | unknown                                              |
//! | 4..=255    | reserved                                             |
//! | 256..      | one per label set of the tenant's endpoints, and one per CIDR prefix named in its policies |
//!
//! CIDR identities make addresses exact to decide: an address maps by
//! longest-prefix match to the most specific policy prefix containing it, and
//! every policy prefix either contains that whole prefix or none of it, so all
//! addresses of one identity get the same verdict. Addresses in no policy
//! prefix map to `world` through the default routes (`0.0.0.0/0`, `::/0`); a
//! default route that a policy names itself is an ordinary CIDR identity,
//! because `0.0.0.0/0` must not match IPv6 addresses that also map to `world`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use ipnet::IpNet;
use palisade_model::{Endpoint, Intent, Labels, Peer};
use serde::{Deserialize, Serialize};

use crate::evaluate::FlowPeer;

/// A datapath identity: `tenant_index << 16 | local` (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(pub u32);

impl Identity {
    /// The wildcard peer of table keys ("any peer"); never a real identity.
    pub const ANY: Identity = Identity(0);
    /// Local of the world identity.
    pub const LOCAL_WORLD: u16 = 1;
    /// Local of the host identity.
    pub const LOCAL_HOST: u16 = 2;
    /// Local of the unknown identity.
    pub const LOCAL_UNKNOWN: u16 = 3;
    /// First local given to label sets and CIDR prefixes.
    pub const FIRST_ALLOCATED: u16 = 256;
    /// How many label-set and CIDR identities one tenant can have.
    pub const MAX_PER_TENANT: usize = 65_536 - Identity::FIRST_ALLOCATED as usize;

    /// The identity `local` of the tenant with index `tenant_index`.
    pub fn new(tenant_index: u16, local: u16) -> Identity {
        Identity(u32::from(tenant_index) << 16 | u32::from(local))
    }

    /// The tenant's index (upper 16 bits).
    pub fn tenant_index(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// The number inside the tenant (lower 16 bits), as the overlay carries it.
    pub fn local(self) -> u16 {
        self.0 as u16
    }
}

impl fmt::Display for Identity {
    /// `tenant_index:local`, e.g. `1:256`; `any` for [`Identity::ANY`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Identity::ANY {
            return f.write_str("any");
        }
        write!(f, "{}:{}", self.tenant_index(), self.local())
    }
}

/// What an identity stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// The endpoints with exactly these labels.
    Labels(Labels),
    /// Addresses (not endpoints) whose most specific policy prefix is this one.
    Cidr(IpNet),
    /// Addresses (not endpoints) in no policy prefix of the tenant.
    World,
    /// The node an endpoint runs on.
    Host,
    /// A peer the datapath could not place.
    Unknown,
}

/// The tenant and meaning of one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// Name of the tenant the identity belongs to.
    pub tenant: String,
    /// What it stands for.
    pub kind: IdentityKind,
}

/// Key of the ipcache: an address prefix inside one tenant's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpcacheKey {
    /// Index of the tenant (the address space).
    pub tenant_index: u16,
    /// The prefix, host bits cleared.
    pub prefix: IpNet,
}

/// The identities of one tenant (shared, so an unchanged tenant is cheap to
/// compare and to hand on).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TenantIdentities {
    pub(crate) name: String,
    pub(crate) index: u16,
    /// Every identity of the tenant by local, reserved ones included.
    pub(crate) infos: BTreeMap<u16, IdentityInfo>,
    pub(crate) by_labels: HashMap<Labels, u16>,
    pub(crate) by_prefix: HashMap<IpNet, u16>,
}

/// The result of an allocation round: every identity with its meaning, and the
/// ipcache contents (tenant, prefix) → identity for endpoint addresses (/32,
/// /128), CIDR identities and the default routes.
///
/// JSON form: `{"tenants": [{"name", "index", "identities": [{"identity",
/// "kind"}]}], "ipcache": [{"tenant_index", "prefix", "identity"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "IdentitiesWire", from = "IdentitiesWire")]
pub struct Identities {
    pub(crate) tenants: BTreeMap<String, Arc<TenantIdentities>>,
    pub(crate) names: BTreeMap<u16, String>,
    pub(crate) ipcache: Arc<BTreeMap<IpcacheKey, Identity>>,
}

impl Identities {
    /// The index of a tenant, if it has one.
    pub fn tenant_index(&self, tenant: &str) -> Option<u16> {
        self.tenants.get(tenant).map(|t| t.index)
    }

    /// The name of the tenant with this index.
    pub fn tenant_name(&self, tenant_index: u16) -> Option<&str> {
        self.names.get(&tenant_index).map(String::as_str)
    }

    /// The identity of an endpoint (that of its tenant and label set).
    pub fn endpoint(&self, endpoint: &Endpoint) -> Option<Identity> {
        self.labels(&endpoint.tenant, &endpoint.labels)
    }

    /// The identity of a label set in a tenant.
    pub fn labels(&self, tenant: &str, labels: &Labels) -> Option<Identity> {
        let t = self.tenants.get(tenant)?;
        t.by_labels
            .get(labels)
            .map(|&local| Identity::new(t.index, local))
    }

    /// What an identity stands for.
    pub fn info(&self, identity: Identity) -> Option<&IdentityInfo> {
        let name = self.names.get(&identity.tenant_index())?;
        self.tenants[name].infos.get(&identity.local())
    }

    /// Every identity, reserved ones included, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = (Identity, &IdentityInfo)> {
        self.names.values().flat_map(|name| {
            let t = &self.tenants[name];
            t.infos
                .iter()
                .map(|(&local, info)| (Identity::new(t.index, local), info))
        })
    }

    /// The ipcache: (tenant, prefix) → identity, as the datapath's LPM map holds it.
    pub fn ipcache(&self) -> &BTreeMap<IpcacheKey, Identity> {
        &self.ipcache
    }

    /// The identity an address of a tenant maps to, by longest-prefix match
    /// over the ipcache (what the datapath does).
    pub fn lookup_address(&self, tenant_index: u16, ip: IpAddr) -> Option<Identity> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let prefix = IpNet::new(ip, len).ok()?.trunc();
            self.ipcache
                .get(&IpcacheKey {
                    tenant_index,
                    prefix,
                })
                .copied()
        })
    }

    /// The identity the datapath would see for one side of a flow.
    pub fn resolve(&self, peer: &FlowPeer<'_>) -> Option<Identity> {
        match *peer {
            FlowPeer::Endpoint(e) => self.endpoint(e),
            FlowPeer::Address { tenant, ip } => self.lookup_address(self.tenant_index(tenant)?, ip),
            FlowPeer::Host { tenant } => Some(Identity::new(
                self.tenant_index(tenant)?,
                Identity::LOCAL_HOST,
            )),
        }
    }
}

/// Why identities could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A tenant has more distinct label sets and policy prefixes than its
    /// 16-bit identity space holds.
    #[error(
        "tenant {tenant} needs {needed} identities (one per distinct endpoint label set and \
         policy CIDR prefix) but only {limit} fit in a tenant's 16-bit identity space{}; reduce \
         the number of distinct label sets or CIDR prefixes, or split the tenant",
        held_note(*.held_back)
    )]
    TenantFull {
        /// The tenant.
        tenant: String,
        /// How many identities it needs.
        needed: usize,
        /// How many fit.
        limit: usize,
        /// Numbers freed in the last round, held back before reuse.
        held_back: usize,
    },
    /// More tenants than tenant indexes.
    #[error(
        "{needed} tenants need an index but only {limit} fit in 16 bits{}; remove unused tenants",
        held_note(*.held_back)
    )]
    TooManyTenants {
        /// How many tenants need an index.
        needed: usize,
        /// How many fit.
        limit: usize,
        /// Indexes freed in the last round, held back before reuse.
        held_back: usize,
    },
}

fn held_note(held_back: usize) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more are freed but held back for one round before reuse)")
    }
}

/// What a tenant's local identity stands for, as the allocator keys it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IdentityKey {
    Labels(Labels),
    Cidr(IpNet),
}

/// A number given to a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Assigned<K> {
    key: K,
    number: u16,
}

/// A number whose key disappeared in `round`; the key gets it back if it
/// returns before the number is given to another key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Released<K> {
    key: K,
    number: u16,
    round: u64,
}

/// The identity numbers of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TenantRecord {
    name: String,
    index: u16,
    identities: Vec<Assigned<IdentityKey>>,
    released: Vec<Released<IdentityKey>>,
}

/// Hands out identities and tenant indexes, round after round.
///
/// Each [`allocate`](IdentityAllocator::allocate) call is one round and:
/// - gives one identity per distinct (tenant, label set) and per distinct
///   prefix in the tenant's policies, and one index per tenant;
/// - keeps every number that is still in use (a workload keeps its identity);
/// - assigns new keys in sorted order, each the lowest free number, so the
///   same input from an empty allocator always gives the same numbers;
/// - never hands a number freed in round N to another key before round N+2:
///   for one whole round after the one that dropped it, nobody receives it
///   anew, so hosts one round apart never read it with two meanings. A key
///   that comes back before its number went elsewhere gets it back;
/// - fails, changing nothing, when a tenant would need more than
///   [`Identity::MAX_PER_TENANT`] identities or there are more than 65,535
///   tenants; numbers never wrap.
///
/// The state is plain data (serde) so the control plane can store it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityAllocator {
    round: u64,
    /// Tenants in use.
    tenants: Vec<TenantRecord>,
    /// Tenants that disappeared while their index is still held for them.
    dormant: Vec<TenantRecord>,
    released_tenants: Vec<Released<String>>,
}

impl IdentityAllocator {
    /// An allocator that has given out nothing yet.
    pub fn new() -> IdentityAllocator {
        IdentityAllocator::default()
    }

    /// How many rounds have been allocated.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Allocates identities for `intent` (one round). On error the allocator
    /// is unchanged.
    pub fn allocate(&mut self, intent: &Intent) -> Result<Identities, IdentityError> {
        let round = self.round + 1;
        let wanted = wanted_keys(intent);

        let tenant_names: BTreeSet<String> = wanted.keys().cloned().collect();
        let old_tenants: Vec<Assigned<String>> = self
            .tenants
            .iter()
            .map(|t| Assigned {
                key: t.name.clone(),
                number: t.index,
            })
            .collect();
        let Numbers {
            assigned: tenant_indexes,
            released: released_tenants,
        } = reassign(
            old_tenants,
            self.released_tenants.clone(),
            &tenant_names,
            1..=u16::MAX,
            round,
        )
        .map_err(|full| IdentityError::TooManyTenants {
            needed: full.needed,
            limit: usize::from(u16::MAX),
            held_back: full.held_back,
        })?;

        let mut active: HashMap<String, TenantRecord> = self
            .tenants
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let mut dormant: HashMap<String, TenantRecord> = self
            .dormant
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let mut records = Vec::with_capacity(tenant_indexes.len());
        for Assigned { key: name, number } in tenant_indexes {
            let old = active.remove(&name).or_else(|| dormant.remove(&name));
            // A tenant that got a different index lost its old one long ago:
            // its old identities belong to nobody any more.
            let (identities, released) = match old {
                Some(r) if r.index == number => (r.identities, r.released),
                _ => (Vec::new(), Vec::new()),
            };
            let Numbers {
                assigned: identities,
                released,
            } = reassign(
                identities,
                released,
                &wanted[&name],
                Identity::FIRST_ALLOCATED..=u16::MAX,
                round,
            )
            .map_err(|full| IdentityError::TenantFull {
                tenant: name.clone(),
                needed: full.needed,
                limit: Identity::MAX_PER_TENANT,
                held_back: full.held_back,
            })?;
            records.push(TenantRecord {
                name,
                index: number,
                identities,
                released,
            });
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));

        // A tenant that disappears keeps its numbers as released ones while
        // its index is held, so that it gets them back if it returns and
        // nobody else reads them with another meaning meanwhile.
        let mut new_dormant = Vec::new();
        for r in &released_tenants {
            if let Some(mut rec) = active.remove(&r.key) {
                let gone = std::mem::take(&mut rec.identities);
                rec.released.extend(gone.into_iter().map(|a| Released {
                    key: a.key,
                    number: a.number,
                    round,
                }));
                new_dormant.push(rec);
            } else if let Some(rec) = dormant.remove(&r.key) {
                new_dormant.push(rec);
            }
        }
        new_dormant.sort_by(|a, b| a.name.cmp(&b.name));

        let identities = build_identities(&records, intent);
        self.round = round;
        self.tenants = records;
        self.dormant = new_dormant;
        self.released_tenants = released_tenants;
        tracing::debug!(
            round,
            tenants = self.tenants.len(),
            identities = self
                .tenants
                .iter()
                .map(|t| t.identities.len())
                .sum::<usize>(),
            "allocated identities"
        );
        Ok(identities)
    }
}

/// Every key each tenant needs this round: its endpoints' label sets and the
/// prefixes its policies name (`cidr` and `except`, host bits cleared).
fn wanted_keys(intent: &Intent) -> BTreeMap<String, BTreeSet<IdentityKey>> {
    let mut wanted: BTreeMap<String, BTreeSet<IdentityKey>> = intent
        .tenants
        .keys()
        .map(|t| (t.clone(), BTreeSet::new()))
        .collect();
    let mut labels: HashMap<&str, HashSet<&Labels>> = HashMap::new();
    for e in &intent.endpoints {
        labels.entry(&e.tenant).or_default().insert(&e.labels);
    }
    for (tenant, sets) in labels {
        let keys = wanted.entry(tenant.to_string()).or_default();
        keys.extend(sets.into_iter().map(|l| IdentityKey::Labels(l.clone())));
    }
    for p in &intent.policies {
        let keys = wanted.entry(p.tenant.clone()).or_default();
        let rules = p.ingress.iter().chain(&p.egress).flatten();
        for peer in rules.flat_map(|r| r.peers.iter().flatten()) {
            if let Peer::Cidr { cidr, except } = peer {
                keys.insert(IdentityKey::Cidr(cidr.trunc()));
                keys.extend(except.iter().map(|x| IdentityKey::Cidr(x.trunc())));
            }
        }
    }
    wanted
}

/// A number space after [`reassign`].
struct Numbers<K> {
    assigned: Vec<Assigned<K>>,
    released: Vec<Released<K>>,
}

/// Why [`reassign`] failed.
struct Full {
    needed: usize,
    held_back: usize,
}

/// One round of a number space: keeps the numbers of keys still needed,
/// releases the others, gives back released numbers to returning keys, and
/// gives new keys (in sorted order) the lowest numbers that are neither used
/// nor held back (released less than two rounds ago).
fn reassign<K: Ord + Clone>(
    assigned: Vec<Assigned<K>>,
    released: Vec<Released<K>>,
    needed: &BTreeSet<K>,
    range: RangeInclusive<u16>,
    round: u64,
) -> Result<Numbers<K>, Full> {
    let mut keep: BTreeMap<K, u16> = BTreeMap::new();
    let mut released: BTreeMap<K, (u16, u64)> = released
        .into_iter()
        .map(|r| (r.key, (r.number, r.round)))
        .collect();
    for a in assigned {
        if needed.contains(&a.key) {
            keep.insert(a.key, a.number);
        } else {
            released.insert(a.key, (a.number, round));
        }
    }
    let mut pending = Vec::new();
    for key in needed {
        if keep.contains_key(key) {
            continue;
        }
        match released.remove(key) {
            Some((number, _)) => {
                keep.insert(key.clone(), number);
            }
            None => pending.push(key.clone()),
        }
    }

    if !pending.is_empty() {
        let mut used = vec![false; 65_536];
        for &n in keep.values() {
            used[usize::from(n)] = true;
        }
        let mut held: HashMap<u16, (K, u64)> = released
            .iter()
            .map(|(k, &(n, r))| (n, (k.clone(), r)))
            .collect();
        let held_back = held.values().filter(|(_, r)| r + 2 > round).count();
        let needed_total = keep.len() + pending.len();
        let mut candidates = range.clone();
        for key in pending {
            let number = loop {
                let Some(n) = candidates.next() else {
                    return Err(Full {
                        needed: needed_total,
                        held_back,
                    });
                };
                if used[usize::from(n)] {
                    continue;
                }
                match held.get(&n) {
                    Some((_, r)) if r + 2 > round => continue,
                    Some(_) => {
                        let (old_key, _) = held.remove(&n).expect("checked above");
                        released.remove(&old_key);
                    }
                    None => {}
                }
                break n;
            };
            keep.insert(key, number);
        }
    }

    let assigned = keep
        .into_iter()
        .map(|(key, number)| Assigned { key, number })
        .collect();
    let released = released
        .into_iter()
        .map(|(key, (number, round))| Released { key, number, round })
        .collect();
    Ok(Numbers { assigned, released })
}

/// The allocator's records turned into [`Identities`] and the ipcache.
fn build_identities(records: &[TenantRecord], intent: &Intent) -> Identities {
    let mut tenants = BTreeMap::new();
    let mut names = BTreeMap::new();
    let mut ipcache = BTreeMap::new();
    for r in records {
        let mut t = TenantIdentities {
            name: r.name.clone(),
            index: r.index,
            infos: BTreeMap::new(),
            by_labels: HashMap::new(),
            by_prefix: HashMap::new(),
        };
        let info = |kind| IdentityInfo {
            tenant: r.name.clone(),
            kind,
        };
        t.infos
            .insert(Identity::LOCAL_WORLD, info(IdentityKind::World));
        t.infos
            .insert(Identity::LOCAL_HOST, info(IdentityKind::Host));
        t.infos
            .insert(Identity::LOCAL_UNKNOWN, info(IdentityKind::Unknown));
        let world = Identity::new(r.index, Identity::LOCAL_WORLD);
        for default_route in ["0.0.0.0/0", "::/0"] {
            let prefix = default_route.parse().expect("valid default route");
            ipcache.insert(
                IpcacheKey {
                    tenant_index: r.index,
                    prefix,
                },
                world,
            );
        }
        for a in &r.identities {
            match &a.key {
                IdentityKey::Labels(labels) => {
                    t.by_labels.insert(labels.clone(), a.number);
                    t.infos
                        .insert(a.number, info(IdentityKind::Labels(labels.clone())));
                }
                IdentityKey::Cidr(prefix) => {
                    t.by_prefix.insert(*prefix, a.number);
                    t.infos.insert(a.number, info(IdentityKind::Cidr(*prefix)));
                    ipcache.insert(
                        IpcacheKey {
                            tenant_index: r.index,
                            prefix: *prefix,
                        },
                        Identity::new(r.index, a.number),
                    );
                }
            }
        }
        names.insert(r.index, r.name.clone());
        tenants.insert(r.name.clone(), Arc::new(t));
    }

    // Endpoint addresses last: an endpoint is never a CIDR peer, so its
    // own /32 or /128 wins over a policy prefix of the same length. With two
    // endpoints on one address (validation rejects it), the first one wins.
    let mut endpoint_keys = HashSet::new();
    for e in &intent.endpoints {
        let Some(t) = tenants.get(&e.tenant) else {
            continue;
        };
        let Some(&local) = t.by_labels.get(&e.labels) else {
            continue;
        };
        for &ip in &e.ips {
            let key = IpcacheKey {
                tenant_index: t.index,
                prefix: IpNet::from(ip),
            };
            if endpoint_keys.insert(key) {
                ipcache.insert(key, Identity::new(t.index, local));
            } else {
                tracing::warn!(endpoint = %e.full_ref(), %ip, "address already belongs to another endpoint");
            }
        }
    }
    Identities {
        tenants,
        names,
        ipcache: Arc::new(ipcache),
    }
}

/// Serialized form of [`Identities`] (maps with non-string keys as lists).
#[derive(Clone, Serialize, Deserialize)]
struct IdentitiesWire {
    tenants: Vec<TenantWire>,
    ipcache: Vec<IpcacheWire>,
}

#[derive(Clone, Serialize, Deserialize)]
struct TenantWire {
    name: String,
    index: u16,
    identities: Vec<IdentityWire>,
}

#[derive(Clone, Serialize, Deserialize)]
struct IdentityWire {
    identity: Identity,
    kind: IdentityKind,
}

#[derive(Clone, Serialize, Deserialize)]
struct IpcacheWire {
    tenant_index: u16,
    prefix: IpNet,
    identity: Identity,
}

impl From<Identities> for IdentitiesWire {
    fn from(ids: Identities) -> IdentitiesWire {
        let tenants = ids
            .tenants
            .values()
            .map(|t| TenantWire {
                name: t.name.clone(),
                index: t.index,
                identities: t
                    .infos
                    .iter()
                    .map(|(&local, info)| IdentityWire {
                        identity: Identity::new(t.index, local),
                        kind: info.kind.clone(),
                    })
                    .collect(),
            })
            .collect();
        let ipcache = ids
            .ipcache
            .iter()
            .map(|(k, &identity)| IpcacheWire {
                tenant_index: k.tenant_index,
                prefix: k.prefix,
                identity,
            })
            .collect();
        IdentitiesWire { tenants, ipcache }
    }
}

impl From<IdentitiesWire> for Identities {
    fn from(wire: IdentitiesWire) -> Identities {
        let mut ids = Identities::default();
        for tw in wire.tenants {
            let mut t = TenantIdentities {
                name: tw.name.clone(),
                index: tw.index,
                infos: BTreeMap::new(),
                by_labels: HashMap::new(),
                by_prefix: HashMap::new(),
            };
            for iw in tw.identities {
                let local = iw.identity.local();
                match &iw.kind {
                    IdentityKind::Labels(l) => {
                        t.by_labels.insert(l.clone(), local);
                    }
                    IdentityKind::Cidr(p) => {
                        t.by_prefix.insert(*p, local);
                    }
                    _ => {}
                }
                t.infos.insert(
                    local,
                    IdentityInfo {
                        tenant: tw.name.clone(),
                        kind: iw.kind,
                    },
                );
            }
            ids.names.insert(tw.index, tw.name.clone());
            ids.tenants.insert(tw.name, Arc::new(t));
        }
        ids.ipcache = Arc::new(
            wire.ipcache
                .into_iter()
                .map(|w| {
                    (
                        IpcacheKey {
                            tenant_index: w.tenant_index,
                            prefix: w.prefix,
                        },
                        w.identity,
                    )
                })
                .collect(),
        );
        ids
    }
}
