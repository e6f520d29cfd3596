//! Typed handles on the datapath's maps, in the ABI types of [`crate::abi`]:
//! insert, remove, look up and list entries, read the counters, and collect
//! expired connections ([`Conntrack::gc`]).
//!
//! Every handle owns an fd of the pinned map, so updates made here are seen by
//! the programs at once, and by any later agent that adopts the pins.

use std::collections::HashMap as StdHashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};

use crate::abi::{
    ct_flags, Config, Counter, CtEntry, CtKey, Endpoint, IpcacheKey, IpcacheValue, PolicyKey,
    PolicyValue, StatSlot, TenantInfo, UplinkInfo,
};
use crate::drop_reason::DropReason;
use crate::error::{Error, Result};

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
    /// TENANTS: tenant -> uplink.
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
        Ok(Self {
            endpoints: Endpoints(typed(take, "ENDPOINTS")?),
            ipcache: Ipcache(typed(take, "IPCACHE")?),
            policy: Policy(typed(take, "POLICY")?),
            conntrack: Conntrack(typed(take, "CT")?),
            tenants: Tenants(typed(take, "TENANTS")?),
            uplinks: Uplinks(typed(take, "UPLINKS")?),
            config: ConfigMap(typed(take, "CONFIG")?),
            counters: Counters {
                drops: typed(take, "DROP_COUNTERS")?,
                rules: typed(take, "RULE_COUNTERS")?,
                stats: typed(take, "STATS")?,
            },
        })
    }
}

// ---- ENDPOINTS -------------------------------------------------------------

/// ENDPOINTS: host-side port ifindex -> [`Endpoint`].
#[derive(Debug)]
pub struct Endpoints(HashMap<MapData, u32, Endpoint>);

impl Endpoints {
    /// Adds or replaces the endpoint behind port `ifindex`.
    pub fn insert(&mut self, ifindex: u32, endpoint: &Endpoint) -> Result<()> {
        self.0
            .insert(ifindex, endpoint, 0)
            .map_err(|e| Error::map("ENDPOINTS", "insert", e))
    }

    /// Removes the endpoint of port `ifindex`; `false` if there was none.
    pub fn remove(&mut self, ifindex: u32) -> Result<bool> {
        removed("ENDPOINTS", self.0.remove(&ifindex))
    }

    /// The endpoint of port `ifindex`.
    pub fn get(&self, ifindex: u32) -> Result<Option<Endpoint>> {
        optional("ENDPOINTS", "read", self.0.get(&ifindex, 0))
    }

    /// Every (ifindex, endpoint).
    pub fn entries(&self) -> Result<Vec<(u32, Endpoint)>> {
        self.0
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
pub struct Ipcache(LpmTrie<MapData, IpcacheMatch, IpcacheValue>);

impl Ipcache {
    /// Adds or replaces the entry of `key` (see [`IpcacheKey::new`]).
    pub fn insert(&mut self, key: &IpcacheKey, value: &IpcacheValue) -> Result<()> {
        self.0
            .insert(&ipcache_lpm_key(key), value, 0)
            .map_err(|e| Error::map("IPCACHE", "insert", e))
    }

    /// Removes the entry of exactly `key`; `false` if there was none.
    pub fn remove(&mut self, key: &IpcacheKey) -> Result<bool> {
        removed("IPCACHE", self.0.remove(&ipcache_lpm_key(key)))
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

/// POLICY: compiled policy entries (see `bpf/include/policy.h`).
#[derive(Debug)]
pub struct Policy(LpmTrie<MapData, PolicyMatch, PolicyValue>);

impl Policy {
    /// Adds or replaces one entry.
    pub fn insert(&mut self, key: &PolicyKey, value: &PolicyValue) -> Result<()> {
        self.0
            .insert(&policy_lpm_key(key), value, 0)
            .map_err(|e| Error::map("POLICY", "insert", e))
    }

    /// Removes exactly `key`; `false` if it was not there.
    pub fn remove(&mut self, key: &PolicyKey) -> Result<bool> {
        removed("POLICY", self.0.remove(&policy_lpm_key(key)))
    }

    /// Every entry.
    pub fn entries(&self) -> Result<Vec<(PolicyKey, PolicyValue)>> {
        self.0
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
            .map_err(|e| Error::map("POLICY", "list", e))
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

/// TENANTS: tenant index -> [`TenantInfo`].
#[derive(Debug)]
pub struct Tenants(HashMap<MapData, u32, TenantInfo>);

impl Tenants {
    /// Adds or replaces a tenant's settings.
    pub fn insert(&mut self, tenant: u32, info: &TenantInfo) -> Result<()> {
        self.0
            .insert(tenant, info, 0)
            .map_err(|e| Error::map("TENANTS", "insert", e))
    }

    /// Removes a tenant's settings; `false` if there were none.
    pub fn remove(&mut self, tenant: u32) -> Result<bool> {
        removed("TENANTS", self.0.remove(&tenant))
    }

    /// A tenant's settings.
    pub fn get(&self, tenant: u32) -> Result<Option<TenantInfo>> {
        optional("TENANTS", "read", self.0.get(&tenant, 0))
    }
}

/// UPLINKS: uplink ifindex -> [`UplinkInfo`].
#[derive(Debug)]
pub struct Uplinks(HashMap<MapData, u32, UplinkInfo>);

impl Uplinks {
    /// Declares interface `ifindex` the uplink of a tenant.
    pub fn insert(&mut self, ifindex: u32, info: &UplinkInfo) -> Result<()> {
        self.0
            .insert(ifindex, info, 0)
            .map_err(|e| Error::map("UPLINKS", "insert", e))
    }

    /// Forgets an uplink; `false` if it was not known.
    pub fn remove(&mut self, ifindex: u32) -> Result<bool> {
        removed("UPLINKS", self.0.remove(&ifindex))
    }

    /// An uplink's settings.
    pub fn get(&self, ifindex: u32) -> Result<Option<UplinkInfo>> {
        optional("UPLINKS", "read", self.0.get(&ifindex, 0))
    }
}

/// CONFIG[0].
pub struct ConfigMap(Array<MapData, Config>);

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

    /// Replaces the settings (takes effect for the next packet).
    pub fn set(&mut self, config: &Config) -> Result<()> {
        self.0
            .set(0, config, 0)
            .map_err(|e| Error::map("CONFIG", "write", e))
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
