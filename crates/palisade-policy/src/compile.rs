//! The compiler: [`Intent`] + [`Identities`] → [`CompiledTables`], with tiers,
//! order, pass, log, audit and deny precedence resolved at compile time so
//! that the datapath decides a packet with at most four map lookups (see
//! `tables` for the lookup contract).
//!
//! How a table is built, for one subject side (an identity's ingress or
//! egress):
//! - The policies that select the identity for the direction form the
//!   table's key; every identity selected by the same policies shares one
//!   table (labels the policies do not look at do not multiply work).
//! - Each peer identity is matched against the rules' peers through
//!   bitsets; peers with the same rule-match signature are decided once, and
//!   a peer gets entries only if its decisions differ from those of a peer
//!   that only wildcard rules match (the ANY peer).
//! - For each protocol the rules name, the port space is split at every rule
//!   boundary, each interval is decided once by walking the tiers (a faster
//!   equivalent of the evaluator's walk; the property tests prove them
//!   equal), equal neighbours merge, and the result becomes the fewest
//!   longest-prefix-match entries (`prefixes`).
//!
//! The compiler keeps its state between runs. [`Compiler::update`] finds what
//! changed (policies by content, identities by tenant) and recomputes only
//! the identities whose selecting policies changed, plus the tables whose
//! peer specs now match other identities; unchanged tables are shared with
//! the previous result. A change of tiers recompiles everything; a change of
//! a tenant's settings recompiles that tenant.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;
use palisade_model::{
    Direction, Entity, Intent, Labels, Mode, Peer, Policy, PortMatch, Tenant, TenantDefault, Tier,
    TierDefault,
};

use crate::cookies::Cookies;
use crate::decide::{direction_table, CompiledPolicy, CompiledRule, Defaults, ProtoRanges};
use crate::digest;
use crate::explain::{Attribution, LabelList};
use crate::identity::{Identities, Identity, IdentityKind, TenantIdentities};
use crate::index::{labels_of, SpecId, SpecKey, Universe};
use crate::tables::{CompiledTables, DirectionTable, IdentityTable, TenantTables};

/// Table size limits. Exceeding one fails the compile; nothing is ever
/// silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries one identity's table (both directions) may have.
    pub max_entries_per_identity: usize,
    /// Most entries all identities' tables may have together.
    pub max_entries: usize,
}

impl Default for Limits {
    /// 65,536 per identity, 1,048,576 in total.
    fn default() -> Limits {
        Limits {
            max_entries_per_identity: 65_536,
            max_entries: 1_048_576,
        }
    }
}

/// Why a compile failed. After an error the compiler starts from scratch on
/// the next [`Compiler::update`]; the previous tables stay valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// One identity's table would exceed `Limits::max_entries_per_identity`.
    #[error(
        "the policy table of identity {identity} (tenant {tenant}, labels {}) needs {needed} \
         entries, more than the limit of {limit} per identity; reduce the distinct peers or \
         port ranges of the policies that select these labels, or raise \
         Limits::max_entries_per_identity",
        LabelList(.labels)
    )]
    TableFull {
        /// The identity.
        identity: Identity,
        /// Its tenant.
        tenant: String,
        /// Its labels.
        labels: Labels,
        /// Entries its table needs.
        needed: usize,
        /// The limit.
        limit: usize,
    },
    /// All tables together would exceed `Limits::max_entries`.
    #[error(
        "the policy tables need {needed} entries in total, more than the limit of {limit}; \
         reduce the number of distinct label sets, peers or port ranges, or raise \
         Limits::max_entries"
    )]
    TooManyEntries {
        /// Entries needed.
        needed: usize,
        /// The limit.
        limit: usize,
    },
    /// The identities were allocated for another intent.
    #[error(
        "identities do not match the intent: {what}; allocate identities for this intent \
         (IdentityAllocator::allocate) before compiling it"
    )]
    StaleIdentities {
        /// What is missing.
        what: String,
    },
    /// The intent breaks an invariant validation guarantees.
    #[error("invalid intent: {what}; load it through palisade_model's validation first")]
    InvalidIntent {
        /// What is wrong.
        what: String,
    },
}

const DIRECTIONS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

fn dir_index(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// Which table a subject side uses: the direction and the versions of the
/// policies selecting it, sorted.
type TableKey = (u8, Arc<[u64]>);

/// A shared direction table, the peer specs it depends on, and how many
/// subject sides use it.
struct Memo {
    table: Arc<DirectionTable>,
    specs: Vec<SpecId>,
    users: usize,
}

/// One endpoint identity of a tenant: the policies that select it per
/// direction and the tables it uses.
#[derive(Default)]
struct Subject {
    selected: [Vec<u64>; 2],
    keys: [Option<TableKey>; 2],
}

/// Everything the compiler keeps about one tenant between runs.
struct TenantState {
    settings: Tenant,
    ids: Arc<TenantIdentities>,
    universe: Universe,
    /// Current versions, sorted by (namespace, name).
    policies: Vec<Arc<CompiledPolicy>>,
    /// `digest::encode` of each of `policies`.
    digests: Digests,
    versions: HashMap<u64, Arc<CompiledPolicy>>,
    subjects: BTreeMap<u16, Subject>,
    memo: HashMap<TableKey, Memo>,
    defaults: Defaults,
    /// The tenant's part of the output, shared with it while unchanged.
    tables: Arc<TenantTables>,
    /// Entries in `tables`.
    len: usize,
}

struct State {
    tiers: BTreeMap<String, Tier>,
    tenants: BTreeMap<String, TenantState>,
}

/// Turns intent into datapath tables, keeping state between runs so that a
/// small change is a small recompile.
pub struct Compiler {
    limits: Limits,
    cookies: Cookies,
    next_version: u64,
    state: Option<State>,
}

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler::new(Limits::default())
    }
}

/// What the last update did, for logs.
#[derive(Default)]
struct Stats {
    subjects: usize,
    tables: usize,
}

impl Compiler {
    /// A compiler that has compiled nothing yet.
    pub fn new(limits: Limits) -> Compiler {
        Compiler {
            limits,
            cookies: Cookies::default(),
            next_version: 0,
            state: None,
        }
    }

    /// Compiles `intent` with `ids` (allocated for this intent), reusing what
    /// did not change since the last successful update. Tables exist for
    /// every endpoint identity in `ids`.
    pub fn update(
        &mut self,
        intent: &Intent,
        ids: &Identities,
    ) -> Result<CompiledTables, CompileError> {
        let result = self.try_update(intent, ids);
        if let Err(e) = &result {
            tracing::warn!(error = %e, "policy compile failed; the next update starts from scratch");
            self.state = None;
        }
        result
    }

    fn try_update(
        &mut self,
        intent: &Intent,
        ids: &Identities,
    ) -> Result<CompiledTables, CompileError> {
        let by_tenant = policies_by_tenant(intent)?;
        let mut stats = Stats::default();
        let reuse = self.state.as_ref().is_some_and(|s| s.tiers == intent.tiers);
        let mut state = match self.state.take() {
            Some(state) if reuse => state,
            _ => State {
                tiers: intent.tiers.clone(),
                tenants: BTreeMap::new(),
            },
        };
        if !reuse {
            // Everything is new: hand out cookies in one sorted batch so a
            // fresh compiler always numbers the same intent the same way.
            let mut all = Vec::new();
            for (name, tenant) in &intent.tenants {
                all.extend(default_attributions(name, tenant, &intent.tiers));
            }
            for p in &intent.policies {
                all.extend(policy_attributions(p));
            }
            self.cookies.assign(&all);
            self.cookies.retain(&all);
        }

        let names: BTreeSet<&String> = state.tenants.keys().chain(intent.tenants.keys()).collect();
        for name in names.into_iter().cloned().collect::<Vec<_>>() {
            let policies = by_tenant.get(name.as_str()).map_or(&[][..], |v| &v[..]);
            let Some(settings) = intent.tenants.get(&name) else {
                // Gone: its tables go with its state, its cookies here.
                let old = state.tenants.remove(&name).expect("known tenant");
                for a in tenant_attributions(&old) {
                    self.cookies.remove(&a);
                }
                continue;
            };
            let tids = ids
                .tenants
                .get(&name)
                .ok_or_else(|| CompileError::StaleIdentities {
                    what: format!("tenant {name} has no identities"),
                })?;
            match state.tenants.get_mut(&name) {
                Some(t) if t.settings == *settings && t.universe.tenant_index == tids.index => {
                    self.update_tenant(t, policies, tids, &intent.tiers, &mut stats)?;
                }
                old => {
                    let old = old
                        .is_some()
                        .then(|| state.tenants.remove(&name).expect("known"));
                    if reuse {
                        let mut attrs = default_attributions(&name, settings, &intent.tiers);
                        attrs.extend(policies.iter().flat_map(|p| policy_attributions(p)));
                        self.cookies.assign(&attrs);
                    }
                    if let Some(old) = old {
                        // Cookies of the old tenant that the new one does not use.
                        let keep: HashSet<Attribution> =
                            default_attributions(&name, settings, &intent.tiers)
                                .into_iter()
                                .chain(policies.iter().flat_map(|p| policy_attributions(p)))
                                .collect();
                        for a in tenant_attributions(&old)
                            .iter()
                            .filter(|a| !keep.contains(*a))
                        {
                            self.cookies.remove(a);
                        }
                    }
                    let t =
                        self.build_tenant(settings, tids, policies, &intent.tiers, &mut stats)?;
                    state.tenants.insert(name.clone(), t);
                }
            }
        }

        let len: usize = state.tenants.values().map(|t| t.len).sum();
        if len > self.limits.max_entries {
            return Err(CompileError::TooManyEntries {
                needed: len,
                limit: self.limits.max_entries,
            });
        }
        tracing::debug!(
            full = !reuse,
            subjects = stats.subjects,
            tables = stats.tables,
            entries = len,
            "compiled policy"
        );
        let out = CompiledTables {
            tenants: state
                .tenants
                .values()
                .map(|t| (t.universe.tenant_index, t.tables.clone()))
                .collect(),
            ipcache: ids.ipcache.clone(),
            cookies: self.cookies.table.clone(),
            len,
        };
        self.state = Some(state);
        Ok(out)
    }

    /// Compiles one tenant from nothing.
    fn build_tenant(
        &mut self,
        settings: &Tenant,
        tids: &Arc<TenantIdentities>,
        policies: &[&Policy],
        tiers: &BTreeMap<String, Tier>,
        stats: &mut Stats,
    ) -> Result<TenantState, CompileError> {
        let mut universe = Universe::new(tids.index);
        let mut subjects = BTreeMap::new();
        for (&local, info) in &tids.infos {
            if matches!(info.kind, IdentityKind::Labels(_)) {
                subjects.insert(local, Subject::default());
            }
            universe.add(local, info.kind.clone());
        }
        let defaults = self.defaults(&tids.name, settings, tiers);
        let mut t = TenantState {
            settings: settings.clone(),
            ids: tids.clone(),
            universe,
            policies: Vec::with_capacity(policies.len()),
            digests: Digests::with_capacity(0, policies.len()),
            versions: HashMap::with_capacity(policies.len()),
            subjects,
            memo: HashMap::new(),
            defaults,
            tables: Arc::default(),
            len: 0,
        };
        let mut digest = Vec::new();
        for p in sorted(policies)? {
            let cp = Arc::new(self.compile_policy(&mut t.universe, tids, p, tiers)?);
            select(&mut t, &cp, true, &mut |_| {});
            t.versions.insert(cp.version, cp.clone());
            t.policies.push(cp);
            digest.clear();
            digest::encode(p, &mut digest);
            t.digests.push(&digest);
        }
        let all: Vec<u16> = t.subjects.keys().copied().collect();
        recompute(&mut t, all, &self.limits, stats)?;
        Ok(t)
    }

    /// Brings one tenant up to date: identities that came or went, policies
    /// that changed, and the subjects either affects.
    fn update_tenant(
        &mut self,
        t: &mut TenantState,
        policies: &[&Policy],
        tids: &Arc<TenantIdentities>,
        tiers: &BTreeMap<String, Tier>,
        stats: &mut Stats,
    ) -> Result<(), CompileError> {
        let edits = match policy_edits(&t.digests, policies) {
            Ok(edits) => edits,
            Err(NotSorted) => return self.update_tenant(t, &sorted(policies)?, tids, tiers, stats),
        };
        let ids_changed = !Arc::ptr_eq(&t.ids, tids);
        if edits.is_empty() && !ids_changed {
            return Ok(());
        }
        let removed: Vec<Arc<CompiledPolicy>> = edits
            .iter()
            .filter_map(|e| match *e {
                Edit::Remove(i) | Edit::Replace(i, _, _) => Some(t.policies[i].clone()),
                Edit::Insert(..) => None,
            })
            .collect();
        let added: Vec<&Policy> = edits
            .iter()
            .filter_map(|e| match *e {
                Edit::Replace(_, p, _) | Edit::Insert(_, p, _) => Some(p),
                Edit::Remove(_) => None,
            })
            .collect();

        let new_attrs: Vec<Attribution> =
            added.iter().flat_map(|p| policy_attributions(p)).collect();
        self.cookies.assign(&new_attrs);

        let mut dirty = BTreeSet::new();
        if ids_changed {
            let gone: HashSet<u64> = removed.iter().map(|p| p.version).collect();
            for p in t.policies.iter().filter(|p| !gone.contains(&p.version)) {
                check_prefixes(tids, &p.prefixes, &p.source)?;
            }
            update_identities(t, tids, &mut dirty);
        }

        // Subjects of the old versions lose them, those of the new ones gain them.
        for old in &removed {
            select(t, old, false, &mut |local| {
                dirty.insert(local);
            });
        }
        let mut compiled = Vec::with_capacity(added.len());
        for p in &added {
            let cp = Arc::new(self.compile_policy(&mut t.universe, tids, p, tiers)?);
            select(t, &cp, true, &mut |local| {
                dirty.insert(local);
            });
            t.versions.insert(cp.version, cp.clone());
            compiled.push(cp);
        }
        apply_edits(t, edits, compiled);

        recompute(t, dirty, &self.limits, stats)?;

        let kept: HashSet<&Attribution> = new_attrs.iter().collect();
        for old in removed {
            t.versions.remove(&old.version);
            for &spec in &old.specs {
                t.universe.release(spec);
            }
            for a in old.attributions.iter().filter(|a| !kept.contains(a)) {
                self.cookies.remove(a);
            }
        }
        Ok(())
    }

    /// Cookies of a tenant's default attributions.
    fn defaults(
        &self,
        tenant: &str,
        settings: &Tenant,
        tiers: &BTreeMap<String, Tier>,
    ) -> Defaults {
        let cookie = |a: Attribution| self.cookies.get(&a);
        let per_dir = |f: &dyn Fn(Direction) -> Attribution| DIRECTIONS.map(|d| cookie(f(d)));
        let tier_cookies = tiers
            .values()
            .filter(|t| t.default_action == TierDefault::Deny)
            .map(|t| {
                let cookies = per_dir(&|direction| Attribution::TierDefault {
                    tier: t.name.clone(),
                    tenant: tenant.to_string(),
                    direction,
                });
                (t.name.clone(), cookies)
            })
            .collect();
        let tenant_cookies = per_dir(&|direction| Attribution::TenantDefault {
            tenant: tenant.to_string(),
            direction,
        });
        let not_isolated = match settings.default_action {
            TenantDefault::Kubernetes => per_dir(&|direction| Attribution::NotIsolated {
                tenant: tenant.to_string(),
                direction,
            }),
            TenantDefault::Deny => [0; 2],
        };
        Defaults {
            tiers: tier_cookies,
            tenant: tenant_cookies,
            not_isolated,
            action: settings.default_action,
            attributions: default_attributions(tenant, settings, tiers),
        }
    }

    /// Compiles one policy: interns its selector and peers, turns its ports
    /// into ranges and looks up its rules' cookies.
    fn compile_policy(
        &mut self,
        universe: &mut Universe,
        tids: &TenantIdentities,
        policy: &Policy,
        tiers: &BTreeMap<String, Tier>,
    ) -> Result<CompiledPolicy, CompileError> {
        let tier = tiers
            .get(&policy.tier)
            .ok_or_else(|| CompileError::InvalidIntent {
                what: format!(
                    "policy {} is in tier {}, which does not exist",
                    policy.full_ref(),
                    policy.tier
                ),
            })?;
        // Check the prefixes before interning anything, so an error leaves
        // the universe as it was.
        let mut prefixes = Vec::new();
        for rule in policy.ingress.iter().chain(&policy.egress).flatten() {
            for peer in rule.peers.iter().flatten() {
                if let Peer::Cidr { cidr, except } = peer {
                    prefixes.push(cidr.trunc());
                    prefixes.extend(except.iter().map(IpNet::trunc));
                }
            }
        }
        check_prefixes(tids, &prefixes, policy)?;

        let version = self.next_version;
        self.next_version += 1;
        let mut specs = Vec::new();
        let selector = universe.intern(SpecKey::Selector(policy.selector.expr.clone()));
        specs.push(selector);
        let attributions = policy_attributions(policy);
        let mut cookies = attributions.iter().map(|a| self.cookies.get(a));
        let mut rules: [Option<Vec<CompiledRule>>; 2] = [None, None];
        for direction in DIRECTIONS {
            let Some(list) = policy.rules(direction) else {
                continue;
            };
            let mut out = Vec::with_capacity(list.len());
            for rule in list {
                let peers = match rule.peers.as_deref() {
                    None | Some([]) => None,
                    Some(ps) if ps.contains(&Peer::Entity(Entity::All)) => None,
                    Some(ps) => Some(
                        ps.iter()
                            .map(|p| {
                                let id = universe.intern(spec_key(p));
                                specs.push(id);
                                id
                            })
                            .collect(),
                    ),
                };
                let ports = match rule.ports.as_deref() {
                    None | Some([]) => None,
                    Some(ms) => Some(port_ranges(ms)),
                };
                out.push(CompiledRule {
                    action: rule.action,
                    peers,
                    ports,
                    cookie: cookies.next().expect("one attribution per rule"),
                });
            }
            rules[dir_index(direction)] = Some(out);
        }
        Ok(CompiledPolicy {
            version,
            source: policy.clone(),
            name: policy.qualified_name(),
            tier_order: tier.order,
            tier: tier.name.clone(),
            tier_default: tier.default_action,
            audit: policy.mode == Mode::Audit,
            selector,
            rules,
            specs,
            prefixes,
            attributions,
        })
    }
}

/// The policies of each tenant, in intent order (sorted by name when the
/// intent is validated; the users of these lists check).
fn policies_by_tenant(intent: &Intent) -> Result<HashMap<&str, Vec<&Policy>>, CompileError> {
    let mut by_tenant: HashMap<&str, Vec<&Policy>> = HashMap::new();
    // Validated intents are sorted by tenant, so this is one run per tenant.
    for run in intent.policies.chunk_by(|a, b| a.tenant == b.tenant) {
        let tenant = run[0].tenant.as_str();
        if !intent.tenants.contains_key(tenant) {
            return Err(CompileError::InvalidIntent {
                what: format!(
                    "policy {} belongs to tenant {tenant}, which does not exist",
                    run[0].full_ref()
                ),
            });
        }
        by_tenant.entry(tenant).or_default().extend(run);
    }
    Ok(by_tenant)
}

/// `policies` sorted by key, or why they cannot be.
fn sorted<'p>(policies: &[&'p Policy]) -> Result<Vec<&'p Policy>, CompileError> {
    let mut list = policies.to_vec();
    // Strictly sorted (the usual case) means no duplicates either.
    if !list.is_sorted_by(|a, b| policy_key(a) < policy_key(b)) {
        list.sort_by(|a, b| policy_key(a).cmp(&policy_key(b)));
        if let Some(w) = list
            .windows(2)
            .find(|w| policy_key(w[0]) == policy_key(w[1]))
        {
            return Err(duplicate(w[0]));
        }
    }
    Ok(list)
}

fn duplicate(p: &Policy) -> CompileError {
    CompileError::InvalidIntent {
        what: format!("policy {} is defined twice", p.full_ref()),
    }
}

/// The digests of a tenant's policies, one after another in one buffer.
struct Digests {
    bytes: Vec<u8>,
    /// Where each digest ends in `bytes`.
    ends: Vec<usize>,
}

impl Digests {
    fn with_capacity(bytes: usize, count: usize) -> Digests {
        Digests {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn push(&mut self, digest: &[u8]) {
        self.bytes.extend_from_slice(digest);
        self.ends.push(self.bytes.len());
    }
}

/// One difference between a tenant's compiled policies (old, by index) and
/// its policies in the new intent, in the order of a merge of the two.
/// New policies come with their digest.
enum Edit<'p> {
    /// Old policy `i` is gone.
    Remove(usize),
    /// Old policy `i` has new content.
    Replace(usize, &'p Policy, Box<[u8]>),
    /// A new policy goes before old policy `i` (or at the end).
    Insert(usize, &'p Policy, Box<[u8]>),
}

/// The new list is not sorted by key; sort it and ask again.
struct NotSorted;

/// The edits that turn the policies with `digests` into `new` (both sorted
/// by key). Every policy is looked at, so this reads only the new policy
/// and the old digests, which lie one after another in memory.
fn policy_edits<'p>(digests: &Digests, new: &[&'p Policy]) -> Result<Vec<Edit<'p>>, NotSorted> {
    let mut edits = Vec::new();
    let mut scratch = Vec::new();
    let mut i = 0;
    let mut previous = None;
    for &p in new {
        let key = (p.namespace.as_deref().map(str::as_bytes), p.name.as_bytes());
        if previous.is_some_and(|prev| prev >= key) {
            return Err(NotSorted);
        }
        previous = Some(key);
        scratch.clear();
        loop {
            match (i < digests.len()).then(|| digest::key(digests.get(i)).cmp(&key)) {
                Some(Ordering::Less) => {
                    edits.push(Edit::Remove(i));
                    i += 1;
                }
                Some(Ordering::Equal) => {
                    digest::encode(p, &mut scratch);
                    if digests.get(i) != scratch.as_slice() {
                        edits.push(Edit::Replace(i, p, scratch.as_slice().into()));
                    }
                    i += 1;
                    break;
                }
                _ => {
                    digest::encode(p, &mut scratch);
                    edits.push(Edit::Insert(i, p, scratch.as_slice().into()));
                    break;
                }
            }
        }
    }
    edits.extend((i..digests.len()).map(Edit::Remove));
    Ok(edits)
}

/// Applies `edits` to the tenant's policies and digests, taking the new
/// versions from `compiled` (one per replace and insert, in order).
/// Both lists are rebuilt by moving policies and copying digest bytes, both
/// cheap next to comparing.
fn apply_edits(t: &mut TenantState, edits: Vec<Edit<'_>>, compiled: Vec<Arc<CompiledPolicy>>) {
    let mut compiled = compiled.into_iter();
    let mut digests = Digests::with_capacity(t.digests.bytes.len(), t.policies.len() + edits.len());
    let mut copied = 0;
    let mut policies = Vec::with_capacity(t.policies.len() + edits.len());
    let mut old = std::mem::take(&mut t.policies)
        .into_iter()
        .enumerate()
        .peekable();
    for e in edits {
        let (at, skip_old, new_digest) = match e {
            Edit::Remove(i) => (i, true, None),
            Edit::Replace(i, _, d) => (i, true, Some(d)),
            Edit::Insert(i, _, d) => (i, false, Some(d)),
        };
        while copied < at {
            digests.push(t.digests.get(copied));
            copied += 1;
        }
        while let Some((_, p)) = old.next_if(|(k, _)| *k < at) {
            policies.push(p);
        }
        if skip_old {
            old.next();
            copied += 1;
        }
        if let Some(d) = new_digest {
            policies.push(compiled.next().expect("one per replace or insert"));
            digests.push(&d);
        }
    }
    while copied < t.digests.len() {
        digests.push(t.digests.get(copied));
        copied += 1;
    }
    policies.extend(old.map(|(_, p)| p));
    t.policies = policies;
    t.digests = digests;
}

/// A policy's key inside its tenant.
fn policy_key(p: &Policy) -> (&Option<String>, &String) {
    (&p.namespace, &p.name)
}

/// One attribution per rule of a policy, ingress rules first.
fn policy_attributions(policy: &Policy) -> Vec<Attribution> {
    let name = policy.qualified_name();
    DIRECTIONS
        .into_iter()
        .flat_map(|direction| {
            let rules = policy.rules(direction).unwrap_or_default();
            let name = &name;
            rules
                .iter()
                .enumerate()
                .map(move |(index, rule)| Attribution::Rule {
                    tier: policy.tier.clone(),
                    tenant: policy.tenant.clone(),
                    policy: name.clone(),
                    direction,
                    index,
                    action: rule.action,
                })
        })
        .collect()
}

/// The defaults a tenant's sides can end in.
fn default_attributions(
    tenant: &str,
    settings: &Tenant,
    tiers: &BTreeMap<String, Tier>,
) -> Vec<Attribution> {
    let mut out = Vec::new();
    for direction in DIRECTIONS {
        for tier in tiers
            .values()
            .filter(|t| t.default_action == TierDefault::Deny)
        {
            out.push(Attribution::TierDefault {
                tier: tier.name.clone(),
                tenant: tenant.to_string(),
                direction,
            });
        }
        out.push(Attribution::TenantDefault {
            tenant: tenant.to_string(),
            direction,
        });
        if settings.default_action == TenantDefault::Kubernetes {
            out.push(Attribution::NotIsolated {
                tenant: tenant.to_string(),
                direction,
            });
        }
    }
    out
}

fn tenant_attributions(t: &TenantState) -> Vec<Attribution> {
    let mut out = t.defaults.attributions.clone();
    for p in &t.policies {
        out.extend(p.attributions.iter().cloned());
    }
    out
}

fn check_prefixes(
    tids: &TenantIdentities,
    prefixes: &[IpNet],
    policy: &Policy,
) -> Result<(), CompileError> {
    match prefixes.iter().find(|p| !tids.by_prefix.contains_key(p)) {
        Some(p) => Err(CompileError::StaleIdentities {
            what: format!("prefix {p} of policy {} has no identity", policy.full_ref()),
        }),
        None => Ok(()),
    }
}

/// The spec of one rule peer (not `entity: all`, which is a wildcard).
fn spec_key(peer: &Peer) -> SpecKey {
    match peer {
        Peer::Selector(s) => SpecKey::Selector(s.expr.clone()),
        Peer::Cidr { cidr, except } => {
            let mut except: Vec<IpNet> = except.iter().map(IpNet::trunc).collect();
            except.sort();
            except.dedup();
            SpecKey::Cidr {
                cidr: cidr.trunc(),
                except,
            }
        }
        Peer::Entity(Entity::World) => SpecKey::World,
        Peer::Entity(Entity::Host) => SpecKey::Host,
        Peer::Entity(Entity::All) => unreachable!("entity all is a wildcard, not a spec"),
    }
}

/// The port ranges a rule's port matches cover, by protocol. ICMP type and
/// code live in the port as `type << 8 | code`.
fn port_ranges(matches: &[PortMatch]) -> Vec<ProtoRanges> {
    let mut by_proto: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
    for m in matches {
        let ranges = by_proto.entry(m.protocol().number()).or_default();
        match *m {
            PortMatch::Ports { port, end_port, .. } => match (port, end_port) {
                (None, _) => ranges.push((0, u16::MAX)),
                (Some(p), None) => ranges.push((p, p)),
                // An inverted range matches nothing, as in the evaluator.
                (Some(p), Some(e)) if e < p => {}
                (Some(p), Some(e)) => ranges.push((p, e)),
            },
            PortMatch::Icmp {
                icmp_type,
                icmp_code,
                ..
            } => match (icmp_type.map(u16::from), icmp_code.map(u16::from)) {
                (Some(t), Some(c)) => ranges.push((t << 8 | c, t << 8 | c)),
                (Some(t), None) => ranges.push((t << 8, t << 8 | 0xff)),
                (None, None) => ranges.push((0, u16::MAX)),
                (None, Some(c)) => ranges.extend((0..=255u16).map(|t| (t << 8 | c, t << 8 | c))),
            },
        }
    }
    by_proto
        .into_iter()
        .map(|(proto, ranges)| ProtoRanges { proto, ranges })
        .collect()
}

/// Adds (or removes) a policy version to the selected lists of the subjects
/// its selector picks, for each direction it covers.
fn select(t: &mut TenantState, p: &CompiledPolicy, add: bool, touched: &mut dyn FnMut(u16)) {
    let bits = t.universe.bits(p.selector);
    for d in 0..2 {
        if p.rules[d].is_none() {
            continue;
        }
        for local in bits.iter() {
            let Some(subject) = t.subjects.get_mut(&local) else {
                continue;
            };
            let list = &mut subject.selected[d];
            match (list.binary_search(&p.version), add) {
                (Err(at), true) => list.insert(at, p.version),
                (Ok(at), false) => {
                    list.remove(at);
                }
                _ => {}
            }
            touched(local);
        }
    }
}

/// Applies a new identity set of a tenant: identities gone or new, specs
/// that match other identities now, and the tables that depend on them.
fn update_identities(t: &mut TenantState, tids: &Arc<TenantIdentities>, dirty: &mut BTreeSet<u16>) {
    let (old, new) = (&t.ids.infos, &tids.infos);
    let gone: Vec<u16> = old
        .iter()
        .filter(|(l, info)| new.get(l) != Some(info))
        .map(|(l, _)| *l)
        .collect();
    let came: Vec<(u16, IdentityKind)> = new
        .iter()
        .filter(|(l, info)| old.get(l) != Some(info))
        .map(|(l, info)| (*l, info.kind.clone()))
        .collect();

    let mut changed: HashSet<SpecId> = HashSet::new();
    for local in gone {
        changed.extend(t.universe.remove(local));
        if let Some(subject) = t.subjects.remove(&local) {
            for key in subject.keys.into_iter().flatten() {
                if let Some(m) = t.memo.get_mut(&key) {
                    m.users -= 1;
                    if m.users == 0 {
                        t.memo.remove(&key);
                    }
                }
            }
            // Its table is removed from the output by `recompute`.
            dirty.insert(local);
        }
    }
    for (local, kind) in came {
        let is_subject = matches!(kind, IdentityKind::Labels(_));
        changed.extend(t.universe.add(local, kind));
        if is_subject {
            let mut subject = Subject::default();
            for p in &t.policies {
                if t.universe.bits(p.selector).contains(local) {
                    for d in 0..2 {
                        if p.rules[d].is_some() {
                            subject.selected[d].push(p.version);
                        }
                    }
                }
            }
            subject.selected.iter_mut().for_each(|l| l.sort_unstable());
            t.subjects.insert(local, subject);
            dirty.insert(local);
        }
    }
    t.ids = tids.clone();

    // Tables whose peer specs now match other identities are stale.
    if !changed.is_empty() {
        let stale: HashSet<TableKey> = t
            .memo
            .iter()
            .filter(|(_, m)| m.specs.iter().any(|s| changed.contains(s)))
            .map(|(k, _)| k.clone())
            .collect();
        t.memo.retain(|k, _| !stale.contains(k));
        for (&local, subject) in t.subjects.iter_mut() {
            for key in &mut subject.keys {
                if key.as_ref().is_some_and(|k| stale.contains(k)) {
                    *key = None;
                    dirty.insert(local);
                }
            }
        }
    }
}

/// Recomputes the tables of the given subjects (sharing memoized direction
/// tables) and puts them into `tables`, keeping the old `Arc` when nothing
/// changed. Subjects that no longer exist lose their table.
fn recompute(
    t: &mut TenantState,
    dirty: impl IntoIterator<Item = u16>,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<(), CompileError> {
    // Copied on write when the last output still shares it; `compute_direction`
    // needs all of `t`, so the map is taken out meanwhile.
    let mut shared = std::mem::take(&mut t.tables);
    let tables = Arc::make_mut(&mut shared);
    let mut len = t.len;
    let mut unused = Vec::new();
    for local in dirty {
        let identity = t.universe.identity(local);
        let Some(subject) = t.subjects.get(&local) else {
            if let Some(old) = tables.remove(&identity) {
                len -= old.len();
            }
            continue;
        };
        stats.subjects += 1;
        let selected = subject.selected.clone();
        let old_keys = subject.keys.clone();
        let mut sides = Vec::with_capacity(2);
        let mut keys: [Option<TableKey>; 2] = [None, None];
        for d in 0..2 {
            let key: TableKey = (d as u8, Arc::from(selected[d].as_slice()));
            if old_keys[d].as_ref() != Some(&key) {
                if let Some(old) = &old_keys[d] {
                    if let Some(m) = t.memo.get_mut(old) {
                        m.users -= 1;
                        if m.users == 0 {
                            unused.push(old.clone());
                        }
                    }
                }
                if !t.memo.contains_key(&key) {
                    let (table, specs) = compute_direction(t, d, &key.1);
                    stats.tables += 1;
                    t.memo.insert(
                        key.clone(),
                        Memo {
                            table: Arc::new(table),
                            specs,
                            users: 0,
                        },
                    );
                }
                t.memo.get_mut(&key).expect("inserted above").users += 1;
            }
            sides.push(t.memo[&key].table.clone());
            keys[d] = Some(key);
        }
        t.subjects.get_mut(&local).expect("read above").keys = keys;

        let egress = sides.pop().expect("two sides");
        let ingress = sides.pop().expect("two sides");
        let old = tables.get(&identity);
        if old.is_some_and(|o| Arc::ptr_eq(&o.ingress, &ingress) && Arc::ptr_eq(&o.egress, &egress))
        {
            continue;
        }
        let table = IdentityTable {
            subject: identity,
            ingress,
            egress,
        };
        let needed = table.len();
        if needed > limits.max_entries_per_identity {
            return Err(CompileError::TableFull {
                identity,
                tenant: t.ids.name.clone(),
                labels: labels_of(t.universe.kinds().get(&local)),
                needed,
                limit: limits.max_entries_per_identity,
            });
        }
        len = len - old.map_or(0, |o| o.len()) + needed;
        tables.insert(identity, Arc::new(table));
    }
    t.tables = shared;
    t.len = len;
    for key in unused {
        if t.memo.get(&key).is_some_and(|m| m.users == 0) {
            t.memo.remove(&key);
        }
    }
    Ok(())
}

/// The direction table of the subjects selected by `versions`, and the peer
/// specs it depends on.
fn compute_direction(t: &TenantState, d: usize, versions: &[u64]) -> (DirectionTable, Vec<SpecId>) {
    let policies = versions.iter().map(|v| &*t.versions[v]).collect();
    direction_table(policies, d, &t.defaults, &t.universe)
}
