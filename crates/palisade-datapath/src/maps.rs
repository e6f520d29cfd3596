//! Typed handles on the datapath's maps, in the ABI types of [`crate::abi`]:
//! insert, remove, look up and list entries, read the counters, and collect
//! expired connections ([`Conntrack::gc`]).
//!
//! Every handle owns an fd of the pinned map, so updates made here are seen by
//! the programs at once, and by any later agent that adopts the pins. The
//! handles of the tables that routes are resolved from (ENDPOINTS, IPCACHE,
//! TENANTS, UPLINKS, and CONFIG's overlay settings) bump ROUTE_GEN after
//! every change, so that the routes the datapath caches in conntrack entries
//! are resolved again.

use std::collections::HashMap as StdHashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};

use crate::abi::{
    ct_flags, limits, policy_flags, route_gen, Config, Counter, CtEntry, CtKey, Endpoint,
    EndpointSlot, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, StatSlot, TenantInfo,
    UplinkInfo, VniInfo, POLICY_PREFIX_BITS,
};
use crate::drop_reason::DropReason;
use crate::error::{Error, Result};
use crate::sys::MappedWords;

/// Whether `e` means "no such key".
fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Turns "no such key" into `None`.
fn optional<T>(map: &'static str, op: &'static str, r: Result<T, MapError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(Error::map(map, op, e)),
    }
}

/// Turns "no such key" on removal into `false`.
fn removed(map: &'static str, r: Result<(), MapError>) -> Result<bool> {
    optional(map, "remove", r).map(|v| v.is_some())
}

/// All typed handles, split so several can be borrowed at once.
#[derive(Debug)]
pub struct Maps {
    /// ENDPOINTS: host-side port ifindex -> endpoint.
    pub endpoints: Endpoints,
    /// IPCACHE: (tenant, prefix) -> identity and location.
    pub ipcache: Ipcache,
    /// POLICY: compiled policy.
    pub policy: Policy,
    /// CT: tracked connections.
    pub conntrack: Conntrack,
    /// TENANTS: tenant -> uplink and VNI (and VNIS, VNI -> tenant).
    pub tenants: Tenants,
    /// UPLINKS: uplink ifindex -> tenant.
    pub uplinks: Uplinks,
    /// CONFIG: the agent's settings.
    pub config: ConfigMap,
    /// DROP_COUNTERS, RULE_COUNTERS and STATS.
    pub counters: Counters,
}

impl Maps {
    /// Builds the handles from the maps `take` returns by name.
    pub(crate) fn new(take: &mut impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            take: &mut impl FnMut(&'static str) -> Result<Map>,
            name: &'static str,
        ) -> Result<T> {
            T::try_from(take(name)?).map_err(|e| Error::map(name, "open", e))
        }
        let gen = Arc::new(RouteGen::new(take("ROUTE_GEN")?)?);
        Ok(Self {
            endpoints: Endpoints::new(
                typed(take, "ENDPOINTS")?,
                take("ENDPOINT_INDEX")?,
                gen.clone(),
            )?,
            ipcache: Ipcache(typed(take, "IPCACHE")?, gen.clone()),
            policy: Policy::new(typed(take, "POLICY")?, typed(take, "POLICY_RANGES")?)?,
            conntrack: Conntrack(typed(take, "CT")?),
            tenants: Tenants::new(typed(take, "TENANTS")?, typed(take, "VNIS")?, gen.clone())?,
            uplinks: Uplinks(typed(take, "UPLINKS")?, gen.clone()),
            config: ConfigMap(typed(take, "CONFIG")?, gen),
            counters: Counters {
                drops: typed(take, "DROP_COUNTERS")?,
                rules: typed(take, "RULE_COUNTERS")?,
                stats: typed(take, "STATS")?,
            },
        })
    }
}

// ---- ROUTE_GEN -------------------------------------------------------------

/// ROUTE_GEN[0], shared by the handles of the tables routes are resolved
/// from. Mapped into memory, so that a bump is one atomic increment: bumps of
/// several handles, or of two agents during a handover, are never lost and
/// the value never returns to one a cached route may carry.
pub(crate) struct RouteGen {
    value: MappedWords,
    _map: MapData,
}

impl std::fmt::Debug for RouteGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteGen")
            .field("value", &self.value.words()[0].load(Ordering::Relaxed))
            .finish()
    }
}

/// Maps the values of the array map `map` (named `name`) into memory.
fn map_shared(name: &'static str, map: Map, bytes: usize) -> Result<(MappedWords, MapData)> {
    let Map::Array(map) = map else {
        return Err(Error::Missing {
            object: crate::datapath::OBJECTS[0].0,
            what: "array map",
            name,
        });
    };
    let words = MappedWords::map(map.fd().as_fd(), bytes).map_err(|source| Error::Io {
        action: "map into memory the BPF map",
        path: name.into(),
        source,
    })?;
    Ok((words, map))
}

impl RouteGen {
    fn new(map: Map) -> Result<Self> {
        let (value, map) = map_shared("ROUTE_GEN", map, 4)?;
        let gen = Self { value, _map: map };
        if gen.value.words()[0].load(Ordering::SeqCst) < route_gen::FIRST {
            gen.bump();
        }
        Ok(gen)
    }

    /// A new value: every cached route is resolved again on its next packet.
    /// Called after the table write it covers (bpf/include/deliver.h).
    fn bump(&self) {
        let value = &self.value.words()[0];
        // Skips the values that are not generations when the counter wraps.
        while value.fetch_add(1, Ordering::SeqCst).wrapping_add(1) < route_gen::FIRST {}
    }
}

/// Bumps ROUTE_GEN after a successful write.
fn bumped<T>(gen: &RouteGen, r: Result<T>) -> Result<T> {
    let out = r?;
    gen.bump();
    Ok(out)
}

// ---- ENDPOINTS -------------------------------------------------------------

/// Words of one [`EndpointSlot`] (40 bytes, the array's element stride).
const SLOT_WORDS: usize = std::mem::size_of::<EndpointSlot>() / 4;
/// Words of an [`Endpoint`] inside its slot, after `seq` and `ifindex`.
const ENDPOINT_WORDS: usize = std::mem::size_of::<Endpoint>() / 4;
// The mapping strides by the array's element size: the value size rounded up to 8.
const _: () = assert!(
    std::mem::size_of::<EndpointSlot>() == std::mem::size_of::<EndpointSlot>().next_multiple_of(8)
);

/// ENDPOINT_INDEX, mapped into memory: a copy of each endpoint in the slot of
/// its port, which the datapath reads without a hash lookup
/// (`bpf/include/endpoints.h`). Each slot is a sequence lock: a writer makes
/// `seq` odd (compare-and-swap, so that two agents during a handover take
/// turns), writes the slot and makes `seq` even again.
struct EndpointIndex {
    slots: MappedWords,
    _map: MapData,
}

/// (port, endpoint) of a slot; port 0 = empty.
type SlotContent = (u32, Endpoint);

fn endpoint_words(ep: &Endpoint) -> [u32; ENDPOINT_WORDS] {
    let mut bytes = [0u8; ENDPOINT_WORDS * 4];
    bytes[0..4].copy_from_slice(&ep.identity.to_ne_bytes());
    bytes[4..8].copy_from_slice(&ep.tenant.to_ne_bytes());
    bytes[8..12].copy_from_slice(&ep.flags.to_ne_bytes());
    bytes[12..16].copy_from_slice(&ep.ipv4);
    bytes[16..22].copy_from_slice(&ep.mac);
    bytes[22..28].copy_from_slice(&ep.host_mac);
    std::array::from_fn(|i| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()))
}

fn endpoint_from_words(words: &[u32; ENDPOINT_WORDS]) -> Endpoint {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    Endpoint {
        identity: u32_at(0),
        tenant: u32_at(4),
        flags: u32_at(8),
        ipv4: bytes[12..16].try_into().unwrap(),
        mac: bytes[16..22].try_into().unwrap(),
        host_mac: bytes[22..28].try_into().unwrap(),
    }
}

/// The slot of port `ifindex`.
fn slot_of(ifindex: u32) -> usize {
    (ifindex & (limits::ENDPOINT_INDEX_SLOTS - 1)) as usize
}

impl EndpointIndex {
    fn new(map: Map) -> Result<Self> {
        let bytes = limits::ENDPOINT_INDEX_SLOTS as usize * SLOT_WORDS * 4;
        let (slots, map) = map_shared("ENDPOINT_INDEX", map, bytes)?;
        Ok(Self { slots, _map: map })
    }

    fn words(&self, slot: usize) -> &[AtomicU32] {
        &self.slots.words()[slot * SLOT_WORDS..(slot + 1) * SLOT_WORDS]
    }

    /// What slot `slot` holds (as last written; `None` while being written).
    fn read(&self, slot: usize) -> Option<SlotContent> {
        let words = self.words(slot);
        let seq = words[0].load(Ordering::SeqCst);
        let ifindex = words[1].load(Ordering::SeqCst);
        let ep: [u32; ENDPOINT_WORDS] =
            std::array::from_fn(|i| words[2 + i].load(Ordering::SeqCst));
        (seq & 1 == 0 && words[0].load(Ordering::SeqCst) == seq)
            .then(|| (ifindex, endpoint_from_words(&ep)))
    }

    /// Writes `content` into `slot` under its sequence lock.
    fn write(&self, slot: usize, content: Option<SlotContent>) {
        let words = self.words(slot);
        let seq = &words[0];
        let mut tries = 0u32;
        loop {
            let current = seq.load(Ordering::SeqCst);
            if current & 1 == 0 {
                if seq
                    .compare_exchange(current, current + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    break;
                }
            } else if tries > 100_000 {
                // A writer died between its two increments (killed agent):
                // the slot stays odd, readers use ENDPOINTS; take it over.
                tracing::warn!(slot, "taking over an ENDPOINT_INDEX slot left mid-write");
                break;
            }
            tries += 1;
            std::thread::yield_now();
        }
        let (ifindex, ep) = content.unwrap_or_default();
        words[1].store(ifindex, Ordering::SeqCst);
        for (word, value) in words[2..2 + ENDPOINT_WORDS].iter().zip(endpoint_words(&ep)) {
            word.store(value, Ordering::SeqCst);
        }
        seq.fetch_add(1, Ordering::SeqCst);
    }
}

/// ENDPOINTS: host-side port ifindex -> [`Endpoint`], with its index
/// ENDPOINT_INDEX kept in step: a port owns its slot unless another port
/// took it first (then the datapath reads that port from ENDPOINTS).
pub struct Endpoints {
    map: HashMap<MapData, u32, Endpoint>,
    index: EndpointIndex,
    gen: Arc<RouteGen>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Adopts ENDPOINTS and its index, and makes the index agree with it
    /// (an agent killed between the two writes leaves them apart).
    fn new(map: HashMap<MapData, u32, Endpoint>, index: Map, gen: Arc<RouteGen>) -> Result<Self> {
        let endpoints = Self {
            map,
            index: EndpointIndex::new(index)?,
            gen,
        };
        let mut wanted: StdHashMap<usize, SlotContent> = StdHashMap::new();
        for (ifindex, ep) in endpoints.entries()? {
            let slot = slot_of(ifindex);
            // The port already in its slot keeps it.
            let owner = endpoints.index.read(slot).map(|(port, _)| port);
            if owner == Some(ifindex) || !wanted.contains_key(&slot) {
                wanted.insert(slot, (ifindex, ep));
            }
        }
        for slot in 0..limits::ENDPOINT_INDEX_SLOTS as usize {
            let want = wanted.get(&slot).copied();
            let have = endpoints.index.read(slot);
            if have != Some(want.unwrap_or_default()) {
                endpoints.index.write(slot, want);
            }
        }
        Ok(endpoints)
    }

    /// Adds or replaces the endpoint behind port `ifindex`.
    pub fn insert(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        self.map
            .insert(ifindex, endpoint, 0)
            .map_err(|e| Error::map("ENDPOINTS", "insert", e))?;
        // After ENDPOINTS: a reader sees the old or the new endpoint, both
        // of which ENDPOINTS held.
        let slot = slot_of(ifindex);
        if matches!(self.index.read(slot), Some((0, _))) || self.owns(slot, ifindex) {
            self.index.write(slot, Some((ifindex, *endpoint)));
        }
        self.gen.bump();
        Ok(())
    }

    /// Removes the endpoint of port `ifindex`; `false` if there was none.
    pub fn remove(&mut self, ifindex: u32) -> Result<bool> {
        let slot = slot_of(ifindex);
        let owned = self.owns(slot, ifindex);
        if owned {
            // Before ENDPOINTS: the index never names a port ENDPOINTS lacks.
            self.index.write(slot, None);
        }
        let found = removed("ENDPOINTS", self.map.remove(&ifindex))?;
        if owned {
            // Hand the slot to another port of the same slot, if any.
            if let Some(next) = self
                .entries()?
                .into_iter()
                .find(|(i, _)| slot_of(*i) == slot)
            {
                self.index.write(slot, Some(next));
            }
        }
        self.gen.bump();
        Ok(found)
    }

    /// Whether port `ifindex` holds its slot (or the slot is being written).
    fn owns(&self, slot: usize, ifindex: u32) -> bool {
        self.index
            .read(slot)
            .is_none_or(|(port, _)| port == ifindex)
    }

    /// The endpoint of port `ifindex`.
    pub fn get(&self, ifindex: u32) -> Result<Option<Endpoint>> {
        optional("ENDPOINTS", "read", self.map.get(&ifindex, 0))
    }

    /// Every (ifindex, endpoint).
    pub fn entries(&self) -> Result<Vec<(u32, Endpoint)>> {
        self.map
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("ENDPOINTS", "list", e))
    }
}

// ---- IPCACHE ---------------------------------------------------------------

/// The part of an IPCACHE key after `prefixlen` (aya's LPM key adds it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct IpcacheMatch {
    tenant: u32,
    addr: [u8; 4],
}
const _: () =
    assert!(core::mem::size_of::<Key<IpcacheMatch>>() == core::mem::size_of::<IpcacheKey>());
// SAFETY: repr(C), two 4-byte fields, no padding, valid for any bits.
unsafe impl aya::Pod for IpcacheMatch {}

fn ipcache_lpm_key(key: &IpcacheKey) -> Key<IpcacheMatch> {
    Key::new(
        key.prefixlen,
        IpcacheMatch {
            tenant: key.tenant,
            addr: key.addr,
        },
    )
}

/// IPCACHE: (tenant, IPv4 prefix) -> [`IpcacheValue`].
#[derive(Debug)]
pub struct Ipcache(LpmTrie<MapData, IpcacheMatch, IpcacheValue>, Arc<RouteGen>);

impl Ipcache {
    /// Adds or replaces the entry of `key` (see [`IpcacheKey::new`]).
    pub fn insert(&mut self, key: &IpcacheKey, value: &IpcacheValue) -> Result<()> {
        bumped(
            &self.1,
            self.0
                .insert(&ipcache_lpm_key(key), value, 0)
                .map_err(|e| Error::map("IPCACHE", "insert", e)),
        )
    }

    /// Removes the entry of exactly `key`; `false` if there was none.
    pub fn remove(&mut self, key: &IpcacheKey) -> Result<bool> {
        bumped(
            &self.1,
            removed("IPCACHE", self.0.remove(&ipcache_lpm_key(key))),
        )
    }

    /// What the datapath finds for `addr` in `tenant` (longest prefix).
    pub fn lookup(&self, tenant: u32, addr: Ipv4Addr) -> Result<Option<IpcacheValue>> {
        optional(
            "IPCACHE",
            "read",
            self.0
                .get(&ipcache_lpm_key(&IpcacheKey::new(tenant, addr, 32)), 0),
        )
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(IpcacheKey, IpcacheValue)>> {
        self.0
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let data = k.data();
                    (
                        IpcacheKey {
                            prefixlen: k.prefix_len(),
                            tenant: data.tenant,
                            addr: data.addr,
                        },
                        v,
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("IPCACHE", "list", e))
    }
}

// ---- POLICY ----------------------------------------------------------------

/// The part of a POLICY key after `prefixlen`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PolicyMatch {
    subject: u32,
    peer: u32,
    direction: u8,
    proto: u8,
    port: [u8; 2],
}
const _: () =
    assert!(core::mem::size_of::<Key<PolicyMatch>>() == core::mem::size_of::<PolicyKey>());
// SAFETY: repr(C), 12 bytes without padding, valid for any bits.
unsafe impl aya::Pod for PolicyMatch {}

fn policy_lpm_key(key: &PolicyKey) -> Key<PolicyMatch> {
    Key::new(
        key.prefixlen,
        PolicyMatch {
            subject: key.subject,
            peer: key.peer,
            direction: key.direction,
            proto: key.proto,
            port: key.port,
        },
    )
}

/// The compiled policy, in POLICY (a hash: entries of one exact port,
/// prefixlen 96, and of all ports, prefixlen 80) and POLICY_RANGES (an LPM
/// trie: port ranges, prefixlen 81..95), so that the datapath's lookup costs
/// the same whatever the number of entries (see `bpf/include/policy.h`).
///
/// Callers see one table of [`PolicyKey`]s, as the compiler produces them:
/// this handle puts each entry in its map, and marks the prefixlen-80 entry
/// of every (subject, peer, direction, proto) that has ranges with
/// [`policy_flags::PORT_RANGES`] (adding a [`policy_flags::NO_DECISION`]
/// placeholder when that entry does not exist), which tells the datapath to
/// look in POLICY_RANGES. Writes are ordered so that a packet decided in
/// between sees the table before or after the write, never a mix.
#[derive(Debug)]
pub struct Policy {
    exact: HashMap<MapData, PolicyKey, PolicyValue>,
    ranges: LpmTrie<MapData, PolicyMatch, PolicyValue>,
    /// Range entries per group (the group's prefixlen-80 key).
    range_groups: StdHashMap<PolicyKey, u32>,
}

/// `BPF_NOEXIST` map update flag (include/uapi/linux/bpf.h).
const BPF_NOEXIST: u64 = 1;

/// The flags only this handle sets; callers' values never carry them.
const POLICY_INTERNAL_FLAGS: u8 = policy_flags::PORT_RANGES | policy_flags::NO_DECISION;

/// The all-ports key of `key`'s (subject, peer, direction, proto).
fn policy_group(key: &PolicyKey) -> PolicyKey {
    PolicyKey {
        prefixlen: POLICY_PREFIX_BITS,
        port: [0; 2],
        ..*key
    }
}

/// `key` with the port bits past its prefix cleared (the trie ignores them;
/// the hash must not see them), or an error for a prefix the lookup never
/// asks for.
fn policy_canonical(key: &PolicyKey) -> Result<PolicyKey> {
    let port_bits = key.prefixlen.wrapping_sub(POLICY_PREFIX_BITS);
    if port_bits > 16 {
        return Err(Error::PolicyPrefix {
            prefixlen: key.prefixlen,
        });
    }
    let mask = if port_bits == 0 {
        0
    } else {
        u16::MAX << (16 - port_bits)
    };
    Ok(PolicyKey {
        port: (key.port() & mask).to_be_bytes(),
        ..*key
    })
}

impl Policy {
    /// Adopts the two maps; repairs the range marks a writer interrupted
    /// between a range insert and its mark (crash) would have left missing.
    fn new(
        exact: HashMap<MapData, PolicyKey, PolicyValue>,
        ranges: LpmTrie<MapData, PolicyMatch, PolicyValue>,
    ) -> Result<Self> {
        let mut policy = Self {
            exact,
            ranges,
            range_groups: StdHashMap::new(),
        };
        for (key, _) in policy.range_entries()? {
            *policy.range_groups.entry(policy_group(&key)).or_default() += 1;
        }
        let groups: Vec<PolicyKey> = policy.range_groups.keys().copied().collect();
        for group in groups {
            policy.mark_ranges(&group, true)?;
        }
        Ok(policy)
    }

    /// Adds or replaces one entry. Keys must have a prefixlen of 80 to 96
    /// ([`PolicyKey::new`] builds them so); port bits past the prefix are
    /// ignored.
    pub fn insert(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        let key = policy_canonical(key)?;
        let mut value = PolicyValue {
            flags: value.flags & !POLICY_INTERNAL_FLAGS,
            ..*value
        };
        if key.prefixlen == POLICY_PREFIX_BITS {
            if self.has_ranges(&key) {
                value.flags |= policy_flags::PORT_RANGES;
            }
            return self.exact_insert(&key, &value);
        }
        if key.prefixlen == POLICY_PREFIX_BITS + 16 {
            return self.exact_insert(&key, &value);
        }
        let lpm = policy_lpm_key(&key);
        let new = match self.ranges.insert(&lpm, value, BPF_NOEXIST) {
            Ok(()) => true,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                self.ranges
                    .insert(&lpm, value, 0)
                    .map_err(|e| Error::map("POLICY_RANGES", "insert", e))?;
                false
            }
            Err(e) => return Err(Error::map("POLICY_RANGES", "insert", e)),
        };
        if new {
            let group = policy_group(&key);
            let count = self.range_groups.entry(group).or_default();
            *count += 1;
            if *count == 1 {
                // After the range: until the mark, packets see the table without it.
                self.mark_ranges(&group, true)?;
            }
        }
        Ok(())
    }

    /// Removes exactly `key`; `false` if it was not there.
    pub fn remove(&mut self, key: &PolicyKey) -> Result<bool> {
        let key = policy_canonical(key)?;
        if key.prefixlen == POLICY_PREFIX_BITS + 16 {
            return removed("POLICY", self.exact.remove(&key));
        }
        if key.prefixlen == POLICY_PREFIX_BITS {
            return match self.exact_get(&key)? {
                None => Ok(false),
                Some(v) if v.flags & policy_flags::NO_DECISION != 0 => Ok(false),
                // The group keeps its ranges: leave the mark behind.
                Some(_) if self.has_ranges(&key) => {
                    self.exact_insert(&key, &Self::placeholder())?;
                    Ok(true)
                }
                Some(_) => removed("POLICY", self.exact.remove(&key)),
            };
        }
        if !removed("POLICY_RANGES", self.ranges.remove(&policy_lpm_key(&key)))? {
            return Ok(false);
        }
        let group = policy_group(&key);
        let count = self.range_groups.entry(group).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.range_groups.remove(&group);
            self.mark_ranges(&group, false)?;
        }
        Ok(true)
    }

    /// Every entry, as inserted (in no particular order).
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>> {
        let mut out = Vec::new();
        for entry in self.exact.iter() {
            let (key, value) = entry.map_err(|e| Error::map("POLICY", "list", e))?;
            if value.flags & policy_flags::NO_DECISION == 0 {
                let flags = value.flags & !POLICY_INTERNAL_FLAGS;
                out.push((key, PolicyValue { flags, ..value }));
            }
        }
        out.extend(self.range_entries()?);
        Ok(out)
    }

    fn range_entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>> {
        self.ranges
            .iter()
            .map(|r| {
                r.map(|(k, v)| {
                    let d = k.data();
                    let key = PolicyKey {
                        prefixlen: k.prefix_len(),
                        subject: d.subject,
                        peer: d.peer,
                        direction: d.direction,
                        proto: d.proto,
                        port: d.port,
                    };
                    (key, v)
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("POLICY_RANGES", "list", e))
    }

    fn has_ranges(&self, group: &PolicyKey) -> bool {
        self.range_groups.get(group).is_some_and(|&n| n > 0)
    }

    /// A prefixlen-80 entry that only says "look at the ranges".
    fn placeholder() -> PolicyValue {
        PolicyValue {
            flags: policy_flags::PORT_RANGES | policy_flags::NO_DECISION,
            ..PolicyValue::default()
        }
    }

    /// Sets or clears the mark of `group` in its prefixlen-80 entry, adding
    /// or removing the placeholder where there is no entry of its own.
    fn mark_ranges(&mut self, group: &PolicyKey, ranges: bool) -> Result<()> {
        match self.exact_get(group)? {
            None if ranges => self.exact_insert(group, &Self::placeholder()),
            None => Ok(()),
            Some(v) if !ranges && v.flags & policy_flags::NO_DECISION != 0 => {
                removed("POLICY", self.exact.remove(group)).map(|_| ())
            }
            Some(v) => {
                let flags = if ranges {
                    v.flags | policy_flags::PORT_RANGES
                } else {
                    v.flags & !policy_flags::PORT_RANGES
                };
                if flags == v.flags {
                    return Ok(());
                }
                self.exact_insert(group, &PolicyValue { flags, ..v })
            }
        }
    }

    fn exact_get(&self, key: &PolicyKey) -> Result<Option<PolicyValue>> {
        optional("POLICY", "read", self.exact.get(key, 0))
    }

    fn exact_insert(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        self.exact
            .insert(key, value, 0)
            .map_err(|e| Error::map("POLICY", "insert", e))
    }
}

// ---- CT --------------------------------------------------------------------

/// A connection removed by [`Conntrack::gc`], with its final counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedFlow {
    /// The originator's tuple.
    pub key: CtKey,
    /// The entry as it was when removed.
    pub entry: CtEntry,
}

impl ClosedFlow {
    /// Whether the datapath already emitted a CONN_CLOSED event for it (TCP
    /// FIN/RST), so the agent does not report it twice.
    pub fn close_reported(&self) -> bool {
        self.entry.flags & ct_flags::CLOSE_REPORTED != 0
    }
}

/// CT: tracked connections, keyed by the originator's tuple.
#[derive(Debug)]
pub struct Conntrack(HashMap<MapData, CtKey, CtEntry>);

impl Conntrack {
    /// The entry of exactly `key` (the originator's tuple), expired or not.
    pub fn get(&self, key: &CtKey) -> Result<Option<CtEntry>> {
        optional("CT", "read", self.0.get(key, 0))
    }

    /// Adds or replaces an entry (tests and state restore).
    pub fn insert(&mut self, key: &CtKey, entry: &CtEntry) -> Result<()> {
        self.0
            .insert(key, entry, 0)
            .map_err(|e| Error::map("CT", "insert", e))
    }

    /// Removes a connection; its next packet is decided as a new one.
    pub fn remove(&mut self, key: &CtKey) -> Result<bool> {
        removed("CT", self.0.remove(key))
    }

    /// Every entry, expired or not.
    pub fn entries(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        self.0
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("CT", "list", e))
    }

    /// Deletes the connections idle longer than their timeout in `config` at
    /// `now` (CLOCK_MONOTONIC, see [`monotonic_now`]) and returns them with
    /// their counters, for the agent to report (UDP/ICMP expiry has no packet
    /// to report it). An entry refreshed between the scan and the delete is
    /// kept.
    pub fn gc(&mut self, now: Duration, config: &Config) -> Result<Vec<ClosedFlow>> {
        let now = now.as_nanos() as u64;
        let mut closed = Vec::new();
        for (key, _) in self.entries()? {
            let Some(entry) = self.get(&key)? else {
                continue;
            };
            let timeout = u64::from(config.ct_timeout_ms(key.proto, entry.state)) * 1_000_000;
            // Same rule as ct_live() in conntrack.h.
            if timeout != 0 && (entry.last_seen_ns >= now || now - entry.last_seen_ns < timeout) {
                continue;
            }
            if self.remove(&key)? {
                closed.push(ClosedFlow { key, entry });
            }
        }
        Ok(closed)
    }
}

/// CLOCK_MONOTONIC now: the clock the datapath stamps CT entries, rate
/// limits and events with (at tick resolution, see bpf/README.md "Clock").
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(ret, 0, "clock_gettime(CLOCK_MONOTONIC) cannot fail");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---- TENANTS / UPLINKS / CONFIG --------------------------------------------

/// TENANTS: tenant index -> [`TenantInfo`], with VNIS (VNI -> tenant, what
/// `from_overlay` reads) kept in step: the VNI of every tenant names it in
/// VNIS, and no other VNI is there.
pub struct Tenants {
    map: HashMap<MapData, u32, TenantInfo>,
    vnis: HashMap<MapData, u32, VniInfo>,
    gen: Arc<RouteGen>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants").finish_non_exhaustive()
    }
}

impl Tenants {
    /// Adopts TENANTS and VNIS, and makes VNIS agree with TENANTS (an agent
    /// killed between the two writes leaves them apart).
    fn new(
        map: HashMap<MapData, u32, TenantInfo>,
        vnis: HashMap<MapData, u32, VniInfo>,
        gen: Arc<RouteGen>,
    ) -> Result<Self> {
        let mut tenants = Self { map, vnis, gen };
        let wanted: StdHashMap<u32, u32> = tenants
            .entries()?
            .into_iter()
            .filter(|(_, info)| info.vni != 0)
            .map(|(tenant, info)| (info.vni, tenant))
            .collect();
        for (vni, info) in tenants.vnis()? {
            if wanted.get(&vni) != Some(&info.tenant) {
                removed("VNIS", tenants.vnis.remove(&vni))?;
            }
        }
        for (vni, tenant) in wanted {
            tenants.vni_insert(vni, tenant)?;
        }
        Ok(tenants)
    }

    /// Adds or replaces a tenant's settings (and its VNI in VNIS).
    pub fn insert(&mut self, tenant: u32, info: &TenantInfo) -> Result<()> {
        let old = self.get(tenant)?;
        self.map
            .insert(tenant, info, 0)
            .map_err(|e| Error::map("TENANTS", "insert", e))?;
        if info.vni != 0 {
            self.vni_insert(info.vni, tenant)?;
        }
        if let Some(old) = old.filter(|old| old.vni != 0 && old.vni != info.vni) {
            self.vni_remove(old.vni, tenant)?;
        }
        self.gen.bump();
        Ok(())
    }

    /// Removes a tenant's settings (and its VNI); `false` if there were none.
    pub fn remove(&mut self, tenant: u32) -> Result<bool> {
        let old = self.get(tenant)?;
        let found = removed("TENANTS", self.map.remove(&tenant))?;
        if let Some(old) = old.filter(|old| old.vni != 0) {
            self.vni_remove(old.vni, tenant)?;
        }
        self.gen.bump();
        Ok(found)
    }

    /// A tenant's settings.
    pub fn get(&self, tenant: u32) -> Result<Option<TenantInfo>> {
        optional("TENANTS", "read", self.map.get(&tenant, 0))
    }

    /// Every (tenant, settings).
    pub fn entries(&self) -> Result<Vec<(u32, TenantInfo)>> {
        self.map
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("TENANTS", "list", e))
    }

    /// The tenant VNI `vni` names, as the datapath reads it.
    pub fn by_vni(&self, vni: u32) -> Result<Option<u32>> {
        Ok(optional("VNIS", "read", self.vnis.get(&vni, 0))?.map(|v| v.tenant))
    }

    /// Every (VNI, tenant) of VNIS.
    pub fn vnis(&self) -> Result<Vec<(u32, VniInfo)>> {
        self.vnis
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("VNIS", "list", e))
    }

    fn vni_insert(&mut self, vni: u32, tenant: u32) -> Result<()> {
        self.vnis
            .insert(vni, VniInfo { tenant, flags: 0 }, 0)
            .map_err(|e| Error::map("VNIS", "insert", e))
    }

    /// Removes `vni` if it still names `tenant` (another tenant may have taken it).
    fn vni_remove(&mut self, vni: u32, tenant: u32) -> Result<()> {
        if self.by_vni(vni)? == Some(tenant) {
            removed("VNIS", self.vnis.remove(&vni))?;
        }
        Ok(())
    }
}

/// UPLINKS: uplink ifindex -> [`UplinkInfo`].
#[derive(Debug)]
pub struct Uplinks(HashMap<MapData, u32, UplinkInfo>, Arc<RouteGen>);

impl Uplinks {
    /// Declares interface `ifindex` the uplink of a tenant.
    pub fn insert(&mut self, ifindex: u32, info: &UplinkInfo) -> Result<()> {
        bumped(
            &self.1,
            self.0
                .insert(ifindex, info, 0)
                .map_err(|e| Error::map("UPLINKS", "insert", e)),
        )
    }

    /// Forgets an uplink; `false` if it was not known.
    pub fn remove(&mut self, ifindex: u32) -> Result<bool> {
        bumped(&self.1, removed("UPLINKS", self.0.remove(&ifindex)))
    }

    /// An uplink's settings.
    pub fn get(&self, ifindex: u32) -> Result<Option<UplinkInfo>> {
        optional("UPLINKS", "read", self.0.get(&ifindex, 0))
    }

    /// Every (uplink ifindex, settings).
    pub fn entries(&self) -> Result<Vec<(u32, UplinkInfo)>> {
        self.0
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("UPLINKS", "list", e))
    }
}

/// CONFIG[0].
pub struct ConfigMap(Array<MapData, Config>, Arc<RouteGen>);

impl std::fmt::Debug for ConfigMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMap")
            .field("config", &self.get().ok())
            .finish()
    }
}

impl ConfigMap {
    /// The current settings.
    pub fn get(&self) -> Result<Config> {
        self.0
            .get(&0, 0)
            .map_err(|e| Error::map("CONFIG", "read", e))
    }

    /// Replaces the settings (takes effect for the next packet). A change of
    /// the overlay settings bumps ROUTE_GEN: cached tunnel routes name the
    /// VXLAN device.
    pub fn set(&mut self, config: &Config) -> Result<()> {
        let old = self.get()?;
        self.0
            .set(0, config, 0)
            .map_err(|e| Error::map("CONFIG", "write", e))?;
        let overlay = |c: &Config| (c.overlay_ifindex, c.overlay_mtu, c.underlay_ipv4);
        if overlay(&old) != overlay(config) {
            self.1.bump();
        }
        Ok(())
    }

    /// Sets the overlay: the node's VXLAN device (`ifindex`, 0 = none), the
    /// largest inner packet it carries (`mtu`, 0 = no check) and the node's
    /// underlay address. Returns whether anything changed.
    pub fn set_overlay(&mut self, ifindex: u32, mtu: u32, underlay: Ipv4Addr) -> Result<bool> {
        let old = self.get()?;
        let new = Config {
            overlay_ifindex: ifindex,
            overlay_mtu: mtu,
            underlay_ipv4: underlay.octets(),
            ..old
        };
        if new == old {
            return Ok(false);
        }
        self.set(&new)?;
        Ok(true)
    }
}

// ---- counters --------------------------------------------------------------

/// DROP_COUNTERS, RULE_COUNTERS and STATS, summed over CPUs when read.
pub struct Counters {
    drops: PerCpuArray<MapData, Counter>,
    rules: PerCpuHashMap<MapData, u32, Counter>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

fn sum(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

impl Counters {
    /// Packets and bytes dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> Result<Counter> {
        let values = self
            .drops
            .get(&(reason as u32), 0)
            .map_err(|e| Error::map("DROP_COUNTERS", "read", e))?;
        Ok(sum(&values))
    }

    /// Every reason with at least one drop.
    pub fn all_drops(&self) -> Result<Vec<(DropReason, Counter)>> {
        let mut out = Vec::new();
        for &reason in DropReason::ALL {
            let c = self.drops(reason)?;
            if c.packets > 0 {
                out.push((reason, c));
            }
        }
        Ok(out)
    }

    /// Packets and bytes decided by rule `cookie` (zero if none yet).
    pub fn rule(&self, cookie: u32) -> Result<Counter> {
        Ok(
            optional("RULE_COUNTERS", "read", self.rules.get(&cookie, 0))?
                .map(|v| sum(&v))
                .unwrap_or_default(),
        )
    }

    /// Every rule cookie with its counters.
    pub fn all_rules(&self) -> Result<StdHashMap<u32, Counter>> {
        self.rules
            .iter()
            .map(|r| r.map(|(cookie, values)| (cookie, sum(&values))))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::map("RULE_COUNTERS", "list", e))
    }

    /// A datapath health counter.
    pub fn stat(&self, slot: StatSlot) -> Result<u64> {
        self.stat_slot(slot as u32)
    }

    /// A STATS slot by number (slots past the [`StatSlot`] ones are free for
    /// chained stages, see bpf/README.md).
    pub fn stat_slot(&self, slot: u32) -> Result<u64> {
        let values = self
            .stats
            .get(&slot, 0)
            .map_err(|e| Error::map("STATS", "read", e))?;
        Ok(values.iter().sum())
    }
}
