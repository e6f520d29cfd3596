//! One tenant's identities as the compiler sees them, with a label index so
//! that a selector is evaluated for every identity at once as bitset
//! operations (`==` is one index lookup, `&&` an intersection, `!` a
//! complement...), and the interned peer specs (selectors, CIDRs, entities)
//! of the tenant's policies with the identities each one matches, kept up to
//! date as identities come and go.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use palisade_model::{Expr, Labels};

use crate::bitset::Bitset;
use crate::identity::{Identity, IdentityKind};

/// Handle of an interned [`SpecKey`].
pub(crate) type SpecId = u32;

/// Something a policy uses to pick identities: its own selector, or one peer
/// of a rule (`entity: all` is not a spec: it matches every peer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SpecKey {
    /// Endpoint identities whose labels match.
    Selector(Expr),
    /// CIDR identities inside `cidr` and outside every `except` (prefixes
    /// truncated, `except` sorted).
    Cidr { cidr: IpNet, except: Vec<IpNet> },
    /// World and every CIDR identity.
    World,
    /// The host identity.
    Host,
}

impl SpecKey {
    /// Whether an identity of this kind is matched (how a single new
    /// identity is checked against existing specs).
    fn matches(&self, kind: &IdentityKind) -> bool {
        match (self, kind) {
            (SpecKey::Selector(e), IdentityKind::Labels(l)) => e.matches(l),
            (SpecKey::Cidr { cidr, except }, IdentityKind::Cidr(p)) => {
                cidr_matches(cidr, except, p)
            }
            (SpecKey::World, IdentityKind::World | IdentityKind::Cidr(_)) => true,
            (SpecKey::Host, IdentityKind::Host) => true,
            _ => false,
        }
    }
}

/// Every address of a CIDR identity `p` is in `cidr` and outside every
/// `except` exactly when `p` itself is: policy prefixes are all identities,
/// so each one contains all of `p` or none of its addresses.
fn cidr_matches(cidr: &IpNet, except: &[IpNet], p: &IpNet) -> bool {
    cidr.contains(p) && !except.iter().any(|x| x.contains(p))
}

struct Spec {
    key: SpecKey,
    bits: Bitset,
    refs: usize,
}

/// Identities of one label key: all that have it, and by value.
#[derive(Default)]
struct KeyIndex {
    any: Bitset,
    values: HashMap<String, Bitset>,
}

/// One tenant's identities, label index and interned specs.
pub(crate) struct Universe {
    pub(crate) tenant_index: u16,
    kinds: BTreeMap<u16, IdentityKind>,
    labels_all: Bitset,
    cidrs: BTreeMap<u16, IpNet>,
    keys: HashMap<String, KeyIndex>,
    specs: Vec<Option<Spec>>,
    free: Vec<SpecId>,
    by_key: HashMap<SpecKey, SpecId>,
}

impl Universe {
    pub(crate) fn new(tenant_index: u16) -> Universe {
        Universe {
            tenant_index,
            kinds: BTreeMap::new(),
            labels_all: Bitset::new(),
            cidrs: BTreeMap::new(),
            keys: HashMap::new(),
            specs: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
        }
    }

    /// The kind of every identity, by local.
    pub(crate) fn kinds(&self) -> &BTreeMap<u16, IdentityKind> {
        &self.kinds
    }

    /// The identity of a local of this tenant.
    pub(crate) fn identity(&self, local: u16) -> Identity {
        Identity::new(self.tenant_index, local)
    }

    /// Adds an identity; returns the specs that now match it.
    pub(crate) fn add(&mut self, local: u16, kind: IdentityKind) -> Vec<SpecId> {
        match &kind {
            IdentityKind::Labels(labels) => {
                self.labels_all.insert(local);
                for (k, v) in labels {
                    let index = self.keys.entry(k.clone()).or_default();
                    index.any.insert(local);
                    index.values.entry(v.clone()).or_default().insert(local);
                }
            }
            IdentityKind::Cidr(p) => {
                self.cidrs.insert(local, *p);
            }
            _ => {}
        }
        let mut changed = Vec::new();
        for (id, spec) in self.specs.iter_mut().enumerate() {
            if let Some(spec) = spec {
                if spec.key.matches(&kind) && spec.bits.insert(local) {
                    changed.push(id as SpecId);
                }
            }
        }
        self.kinds.insert(local, kind);
        changed
    }

    /// Removes an identity; returns the specs that matched it.
    pub(crate) fn remove(&mut self, local: u16) -> Vec<SpecId> {
        match self.kinds.remove(&local) {
            Some(IdentityKind::Labels(labels)) => {
                self.labels_all.remove(local);
                for (k, v) in &labels {
                    if let Some(index) = self.keys.get_mut(k) {
                        index.any.remove(local);
                        if let Some(bits) = index.values.get_mut(v) {
                            bits.remove(local);
                        }
                    }
                }
            }
            Some(IdentityKind::Cidr(_)) => {
                self.cidrs.remove(&local);
            }
            _ => {}
        }
        let mut changed = Vec::new();
        for (id, spec) in self.specs.iter_mut().enumerate() {
            if let Some(spec) = spec {
                if spec.bits.remove(local) {
                    changed.push(id as SpecId);
                }
            }
        }
        changed
    }

    /// The handle of a spec, evaluating it if it is new. Each call must be
    /// paired with a [`release`](Universe::release).
    pub(crate) fn intern(&mut self, key: SpecKey) -> SpecId {
        if let Some(&id) = self.by_key.get(&key) {
            if let Some(spec) = &mut self.specs[id as usize] {
                spec.refs += 1;
            }
            return id;
        }
        let bits = self.evaluate(&key);
        let spec = Spec {
            key: key.clone(),
            bits,
            refs: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.specs[id as usize] = Some(spec);
                id
            }
            None => {
                self.specs.push(Some(spec));
                (self.specs.len() - 1) as SpecId
            }
        };
        self.by_key.insert(key, id);
        id
    }

    /// Drops one use of a spec, forgetting it after the last.
    pub(crate) fn release(&mut self, id: SpecId) {
        let slot = &mut self.specs[id as usize];
        if let Some(spec) = slot {
            spec.refs -= 1;
            if spec.refs == 0 {
                self.by_key.remove(&spec.key);
                *slot = None;
                self.free.push(id);
            }
        }
    }

    /// The identities (locals) a spec matches.
    pub(crate) fn bits(&self, id: SpecId) -> &Bitset {
        &self.specs[id as usize]
            .as_ref()
            .expect("specs are released only by their last user")
            .bits
    }

    fn evaluate(&self, key: &SpecKey) -> Bitset {
        match key {
            SpecKey::Selector(e) => self.select(e),
            SpecKey::Cidr { cidr, except } => {
                let mut bits = Bitset::new();
                for (&local, p) in &self.cidrs {
                    if cidr_matches(cidr, except, p) {
                        bits.insert(local);
                    }
                }
                bits
            }
            SpecKey::World => {
                let mut bits = Bitset::new();
                if self.kinds.contains_key(&Identity::LOCAL_WORLD) {
                    bits.insert(Identity::LOCAL_WORLD);
                }
                for &local in self.cidrs.keys() {
                    bits.insert(local);
                }
                bits
            }
            SpecKey::Host => {
                let mut bits = Bitset::new();
                if self.kinds.contains_key(&Identity::LOCAL_HOST) {
                    bits.insert(Identity::LOCAL_HOST);
                }
                bits
            }
        }
    }

    /// The endpoint identities a selector expression matches.
    fn select(&self, e: &Expr) -> Bitset {
        let value = |k: &str, v: &str| {
            self.keys
                .get(k)
                .and_then(|i| i.values.get(v))
                .cloned()
                .unwrap_or_default()
        };
        let any_of = |k: &str, vs: &mut dyn Iterator<Item = &String>| {
            let mut bits = Bitset::new();
            if let Some(i) = self.keys.get(k) {
                for v in vs {
                    if let Some(b) = i.values.get(v) {
                        bits.union_with(b);
                    }
                }
            }
            bits
        };
        let complement = |bits: Bitset| {
            let mut all = self.labels_all.clone();
            all.subtract(&bits);
            all
        };
        match e {
            Expr::All => self.labels_all.clone(),
            Expr::Has(k) => self.keys.get(k).map(|i| i.any.clone()).unwrap_or_default(),
            Expr::Eq(k, v) => value(k, v),
            Expr::Ne(k, v) => complement(value(k, v)),
            Expr::In(k, vs) => any_of(k, &mut vs.iter()),
            Expr::NotIn(k, vs) => complement(any_of(k, &mut vs.iter())),
            Expr::Not(inner) => complement(self.select(inner)),
            Expr::And(es) => {
                let mut bits = self.labels_all.clone();
                for e in es {
                    bits.intersect_with(&self.select(e));
                }
                bits
            }
            Expr::Or(es) => {
                let mut bits = Bitset::new();
                for e in es {
                    bits.union_with(&self.select(e));
                }
                bits
            }
        }
    }
}

/// Labels of an identity kind, for messages.
pub(crate) fn labels_of(kind: Option<&IdentityKind>) -> Labels {
    match kind {
        Some(IdentityKind::Labels(l)) => l.clone(),
        _ => Labels::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_as_bitsets_agree_with_matching_labels_one_by_one() {
        let sets = [
            labels(&[("app", "web"), ("env", "prod")]),
            labels(&[("app", "db"), ("env", "prod")]),
            labels(&[("app", "web")]),
            labels(&[]),
        ];
        let mut u = Universe::new(1);
        for (i, l) in sets.iter().enumerate() {
            u.add(256 + i as u16, IdentityKind::Labels(l.clone()));
        }
        let s = |x: &str| x.to_string();
        let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
        let exprs = [
            Expr::All,
            Expr::Has(s("env")),
            Expr::Eq(s("app"), s("web")),
            Expr::Ne(s("app"), s("web")),
            Expr::In(s("app"), set(&["web", "db"])),
            Expr::NotIn(s("app"), set(&["db"])),
            Expr::Not(Box::new(Expr::Has(s("app")))),
            Expr::And(vec![
                Expr::Eq(s("env"), s("prod")),
                Expr::Ne(s("app"), s("db")),
            ]),
            Expr::Or(vec![
                Expr::Eq(s("app"), s("db")),
                Expr::Not(Box::new(Expr::All)),
            ]),
            Expr::And(vec![]),
            Expr::Or(vec![]),
        ];
        for e in exprs {
            let id = u.intern(SpecKey::Selector(e.clone()));
            let got: Vec<u16> = u.bits(id).iter().collect();
            let want: Vec<u16> = sets
                .iter()
                .enumerate()
                .filter(|(_, l)| e.matches(l))
                .map(|(i, _)| 256 + i as u16)
                .collect();
            assert_eq!(got, want, "{e}");
        }
    }

    #[test]
    fn specs_follow_identities_that_come_and_go() {
        let mut u = Universe::new(1);
        u.add(Identity::LOCAL_WORLD, IdentityKind::World);
        let p8: IpNet = "10.0.0.0/8".parse().unwrap();
        let p16: IpNet = "10.1.0.0/16".parse().unwrap();
        u.add(300, IdentityKind::Cidr(p8));
        let cidr = u.intern(SpecKey::Cidr {
            cidr: p8,
            except: vec![p16],
        });
        let world = u.intern(SpecKey::World);
        assert_eq!(u.bits(cidr).iter().collect::<Vec<_>>(), [300]);
        let changed = u.add(301, IdentityKind::Cidr(p16));
        assert_eq!(
            changed,
            [world],
            "the excepted prefix is world, not the cidr"
        );
        assert_eq!(u.remove(300), [cidr, world]);
        u.release(cidr);
        u.release(world);
        assert!(u.by_key.is_empty());
    }
}
