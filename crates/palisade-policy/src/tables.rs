//! The compiled tables the agent loads into the datapath's maps, the lookup
//! contract the datapath mirrors in C, and the diff between two compiles.
//!
//! # Lookup contract
//!
//! A policy entry is keyed by (subject identity, direction, peer identity or
//! [`Identity::ANY`], protocol or 0 for any, port prefix). A packet is decided
//! by at most four longest-prefix-match lookups, whatever the number of rules:
//!
//! 1. (subject, dir, peer, proto, port), longest port prefix;
//! 2. if none: (subject, dir, peer, proto 0, port prefix /0);
//! 3. if none: (subject, dir, ANY, proto, port), longest port prefix;
//! 4. if none: (subject, dir, ANY, proto 0, port prefix /0).
//!
//! For ICMP and ICMPv6 the port is `type << 8 | code`; protocols other than
//! TCP, UDP, SCTP, ICMP and ICMPv6 are looked up as they are and fall through
//! to the protocol-0 entry. The compiler guarantees that this is exact:
//! - every (subject, dir) has its (ANY, proto 0) entry, so step 4 always hits;
//! - a peer has entries only when its decisions differ from the ANY peer's
//!   for some protocol or port, and then it has its own proto-0 entry and
//!   entries for each protocol whose decisions differ from that entry;
//! - a (subject, dir, peer, proto) that has entries has a /0 port entry, so
//!   its prefixes cover every port; more specific (nested) prefixes override
//!   it, as in any longest-prefix-match table.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use palisade_model::Direction;
use serde::{Deserialize, Serialize};

use crate::explain::{Attribution, Verdict};
use crate::identity::{Identity, IpcacheKey};
use crate::prefixes::{prefix_contains, PortPrefix};

/// Key of one policy entry (plain Rust; the agent converts it to the
/// kernel's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    /// The identity whose policy this is.
    pub subject: Identity,
    /// Which side of the subject.
    pub direction: Direction,
    /// The identity on the other end, or [`Identity::ANY`].
    pub peer: Identity,
    /// IP protocol number, or 0 for any protocol (then the port prefix is /0).
    pub proto: u8,
    /// Port (or ICMP `type << 8 | code`) prefix value, host bits cleared.
    pub port: u16,
    /// Number of leading port bits that must match, 0..=16.
    pub port_prefix_len: u8,
}

/// What a policy entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PolicyValue {
    /// The enforced verdict.
    pub verdict: Verdict,
    /// The deciding attribution (see [`CompiledTables::attribution`]); never 0.
    pub cookie: u32,
    /// [`PolicyValue::FLAG_LOG`] and [`PolicyValue::FLAG_AUDIT_DENY`].
    pub flags: u8,
    /// With `FLAG_AUDIT_DENY`: what denies in the audit view; else 0.
    pub audit_cookie: u32,
}

impl PolicyValue {
    /// A `log` rule matched before the decision.
    pub const FLAG_LOG: u8 = 1;
    /// The audit view (audit policies enforced) denies what is allowed.
    pub const FLAG_AUDIT_DENY: u8 = 2;

    /// Whether `FLAG_LOG` is set.
    pub fn logged(&self) -> bool {
        self.flags & PolicyValue::FLAG_LOG != 0
    }

    /// Whether `FLAG_AUDIT_DENY` is set.
    pub fn audit_denies(&self) -> bool {
        self.flags & PolicyValue::FLAG_AUDIT_DENY != 0
    }
}

/// The entries of one protocol of one peer: prefixes covering every port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProtoTable {
    pub(crate) proto: u8,
    pub(crate) prefixes: Vec<PortPrefix<PolicyValue>>,
}

/// The decisions for one peer (or the ANY peer) of one subject side: the
/// protocol-0 value and the protocols that differ from it. Shared between
/// all peers that decide alike.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerTable {
    pub(crate) any: PolicyValue,
    /// Sorted by protocol; protocol 0 never appears here.
    pub(crate) protos: Vec<ProtoTable>,
}

impl PeerTable {
    fn len(&self) -> usize {
        1 + self.protos.iter().map(|p| p.prefixes.len()).sum::<usize>()
    }

    /// Step 1 or 3 of the lookup: longest prefix of this protocol.
    fn longest_match(&self, proto: u8, port: u16) -> Option<&PolicyValue> {
        let i = self.protos.binary_search_by_key(&proto, |p| p.proto).ok()?;
        self.protos[i]
            .prefixes
            .iter()
            .filter(|p| prefix_contains(p.port, p.len, port))
            .max_by_key(|p| p.len)
            .map(|p| &p.value)
    }

    /// (proto, port, prefix length, value) in key order, protocol 0 first.
    fn entries(&self) -> impl Iterator<Item = (u8, u16, u8, PolicyValue)> + '_ {
        std::iter::once((0, 0, 0, self.any)).chain(
            self.protos
                .iter()
                .flat_map(|t| t.prefixes.iter().map(|p| (t.proto, p.port, p.len, p.value))),
        )
    }
}

/// One side (direction) of a subject: the ANY peer's decisions and the peers
/// that decide differently. Shared by every identity selected by the same
/// policies.
#[derive(Debug)]
pub(crate) struct DirectionTable {
    pub(crate) any: Arc<PeerTable>,
    /// Sorted by identity.
    pub(crate) peers: Vec<(Identity, Arc<PeerTable>)>,
    pub(crate) len: usize,
}

impl DirectionTable {
    pub(crate) fn new(any: Arc<PeerTable>, peers: Vec<(Identity, Arc<PeerTable>)>) -> Self {
        let len = any.len() + peers.iter().map(|(_, t)| t.len()).sum::<usize>();
        DirectionTable { any, peers, len }
    }

    fn peer(&self, peer: Identity) -> Option<&PeerTable> {
        let i = self.peers.binary_search_by_key(&peer, |(p, _)| *p).ok()?;
        Some(&self.peers[i].1)
    }

    fn entries(
        &self,
        subject: Identity,
        direction: Direction,
    ) -> impl Iterator<Item = (PolicyKey, PolicyValue)> + '_ {
        std::iter::once((Identity::ANY, &self.any))
            .chain(self.peers.iter().map(|(p, t)| (*p, t)))
            .flat_map(move |(peer, table)| {
                table.entries().map(move |(proto, port, len, value)| {
                    let key = PolicyKey {
                        subject,
                        direction,
                        peer,
                        proto,
                        port,
                        port_prefix_len: len,
                    };
                    (key, value)
                })
            })
    }
}

/// The policy entries of one subject identity, both directions.
#[derive(Debug)]
pub struct IdentityTable {
    pub(crate) subject: Identity,
    pub(crate) ingress: Arc<DirectionTable>,
    pub(crate) egress: Arc<DirectionTable>,
}

impl IdentityTable {
    /// The identity whose policy this is.
    pub fn subject(&self) -> Identity {
        self.subject
    }

    /// Number of entries (both directions).
    pub fn len(&self) -> usize {
        self.ingress.len + self.egress.len
    }

    /// Whether the table is empty (never: each direction has its ANY entry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (PolicyKey, PolicyValue)> + '_ {
        self.ingress
            .entries(self.subject, Direction::Ingress)
            .chain(self.egress.entries(self.subject, Direction::Egress))
    }

    pub(crate) fn direction(&self, direction: Direction) -> &Arc<DirectionTable> {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// The tables of one tenant's endpoint identities.
pub(crate) type TenantTables = BTreeMap<Identity, Arc<IdentityTable>>;

/// Everything the datapath needs for policy: the entries of every endpoint
/// identity of every tenant (the agent loads the ones its endpoints and
/// their peers need), the ipcache, and the cookie → attribution table.
/// Cheap to clone: unchanged parts are shared with earlier compiles.
#[derive(Debug, Clone, Default)]
pub struct CompiledTables {
    /// By tenant index, so an update copies only the tenants it changed.
    pub(crate) tenants: BTreeMap<u16, Arc<TenantTables>>,
    pub(crate) ipcache: Arc<BTreeMap<IpcacheKey, Identity>>,
    pub(crate) cookies: Arc<BTreeMap<u32, Attribution>>,
    pub(crate) len: usize,
}

impl CompiledTables {
    /// The table of one subject identity.
    pub fn table(&self, subject: Identity) -> Option<&IdentityTable> {
        self.tenants
            .get(&subject.tenant_index())?
            .get(&subject)
            .map(|t| &**t)
    }

    /// Every subject identity's table, in identity order.
    pub fn tables(&self) -> impl Iterator<Item = &IdentityTable> {
        self.tenants.values().flat_map(|t| t.values().map(|t| &**t))
    }

    /// Total number of policy entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no policy entries (no endpoint identities).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every policy entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (PolicyKey, PolicyValue)> + '_ {
        self.tables().flat_map(|t| t.entries())
    }

    /// The ipcache: (tenant, prefix) → identity.
    pub fn ipcache(&self) -> &BTreeMap<IpcacheKey, Identity> {
        &self.ipcache
    }

    /// Every cookie in use with its attribution.
    pub fn cookies(&self) -> &BTreeMap<u32, Attribution> {
        &self.cookies
    }

    /// What a cookie stands for.
    pub fn attribution(&self, cookie: u32) -> Option<&Attribution> {
        self.cookies.get(&cookie)
    }
}

/// Decides one packet side as the datapath does (see the module docs for the
/// four steps). `None` only when `subject` has no table.
pub fn lookup(
    tables: &CompiledTables,
    subject: Identity,
    direction: Direction,
    peer: Identity,
    proto: u8,
    port: u16,
) -> Option<&PolicyValue> {
    let side = tables.table(subject)?.direction(direction);
    if let Some(peer_table) = side.peer(peer) {
        return Some(
            peer_table
                .longest_match(proto, port)
                .unwrap_or(&peer_table.any),
        );
    }
    Some(side.any.longest_match(proto, port).unwrap_or(&side.any.any))
}

/// What changed between two compiles: entries to add or replace, and keys to
/// delete, for the policy map and the ipcache. Each list is in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablesDiff {
    /// Policy entries that are new or have a new value.
    pub upserts: Vec<(PolicyKey, PolicyValue)>,
    /// Policy keys that are gone.
    pub deletes: Vec<PolicyKey>,
    /// Ipcache entries that are new or point elsewhere.
    pub ipcache_upserts: Vec<(IpcacheKey, Identity)>,
    /// Ipcache keys that are gone.
    pub ipcache_deletes: Vec<IpcacheKey>,
}

impl TablesDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.ipcache_upserts.is_empty()
            && self.ipcache_deletes.is_empty()
    }
}

/// The changes that turn `old` into `new`. Tables shared between the two
/// (unchanged identities after an incremental update) are skipped without
/// looking at their entries.
pub fn diff(old: &CompiledTables, new: &CompiledTables) -> TablesDiff {
    let mut out = TablesDiff::default();
    let empty = TenantTables::new();
    let indexes: std::collections::BTreeSet<u16> = old
        .tenants
        .keys()
        .chain(new.tenants.keys())
        .copied()
        .collect();
    for index in indexes {
        let (a, b) = (old.tenants.get(&index), new.tenants.get(&index));
        if let (Some(a), Some(b)) = (a, b) {
            if Arc::ptr_eq(a, b) {
                continue;
            }
        }
        diff_tenant(
            a.map_or(&empty, |t| &**t),
            b.map_or(&empty, |t| &**t),
            &mut out,
        );
    }
    if !Arc::ptr_eq(&old.ipcache, &new.ipcache) {
        merge(
            old.ipcache.iter().map(|(k, v)| (*k, *v)),
            new.ipcache.iter().map(|(k, v)| (*k, *v)),
            &mut out.ipcache_upserts,
            &mut out.ipcache_deletes,
        );
    }
    out
}

/// The policy entry changes between two versions of one tenant's tables.
fn diff_tenant(old: &TenantTables, new: &TenantTables, out: &mut TablesDiff) {
    let mut olds = old.iter().peekable();
    let mut news = new.iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match order {
            Ordering::Less => {
                let (_, t) = olds.next().expect("peeked");
                out.deletes.extend(t.entries().map(|(k, _)| k));
            }
            Ordering::Greater => {
                let (_, t) = news.next().expect("peeked");
                out.upserts.extend(t.entries());
            }
            Ordering::Equal => {
                let (_, a) = olds.next().expect("peeked");
                let (_, b) = news.next().expect("peeked");
                if Arc::ptr_eq(a, b) {
                    continue;
                }
                for direction in [Direction::Ingress, Direction::Egress] {
                    let (x, y) = (a.direction(direction), b.direction(direction));
                    if a.subject == b.subject && Arc::ptr_eq(x, y) {
                        continue;
                    }
                    merge(
                        x.entries(a.subject, direction),
                        y.entries(b.subject, direction),
                        &mut out.upserts,
                        &mut out.deletes,
                    );
                }
            }
        }
    }
}

/// Walks two key-ordered entry lists and records what turns the first into
/// the second.
fn merge<K: Ord + Copy, V: PartialEq + Copy>(
    old: impl Iterator<Item = (K, V)>,
    new: impl Iterator<Item = (K, V)>,
    upserts: &mut Vec<(K, V)>,
    deletes: &mut Vec<K>,
) {
    let mut old = old.peekable();
    let mut new = new.peekable();
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => deletes.extend(old.by_ref().map(|(k, _)| k)),
            (None, Some(_)) => upserts.extend(new.by_ref()),
            (Some(&(a, va)), Some(&(b, vb))) => match a.cmp(&b) {
                Ordering::Less => {
                    deletes.push(a);
                    old.next();
                }
                Ordering::Greater => {
                    upserts.push((b, vb));
                    new.next();
                }
                Ordering::Equal => {
                    if va != vb {
                        upserts.push((b, vb));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}
