//! What the numbers in datapath events stand for: rule cookies → their
//! [`Attribution`] (keeping recently replaced ones, and the previous run's,
//! so that an event emitted just before a recompile or a restart is still
//! named), tenant indexes → tenant names, (tenant, address) → endpoint, and
//! identities → what they are. The agent's loop updates these after every
//! reconcile; the flow log reads them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_model::Intent;
use palisade_policy::{Attribution, Identities, Identity, IdentityKind};

/// How long a replaced cookie keeps its name. Connections revalidated after
/// a change carry the new cookies; only idle connections keep old ones.
pub const RETIRED_COOKIE_TTL: Duration = Duration::from_secs(3600);
/// Most replaced cookies remembered (the oldest go first).
const MAX_RETIRED: usize = 200_000;

/// Cookie → attribution, current and recently replaced.
#[derive(Debug, Clone, Default)]
pub struct CookieBook {
    current: Arc<BTreeMap<u32, Attribution>>,
    retired: HashMap<u32, (Attribution, Instant)>,
}

impl CookieBook {
    /// A book that remembers `previous` (the last run's table) as retired.
    pub fn new(previous: BTreeMap<u32, Attribution>) -> CookieBook {
        let now = Instant::now();
        CookieBook {
            current: Arc::default(),
            retired: previous.into_iter().map(|(c, a)| (c, (a, now))).collect(),
        }
    }

    /// Makes `table` current; cookies of the old table that are gone or
    /// changed meaning are kept as retired for [`RETIRED_COOKIE_TTL`].
    pub fn update(&mut self, table: &Arc<BTreeMap<u32, Attribution>>) {
        if Arc::ptr_eq(&self.current, table) {
            return;
        }
        let now = Instant::now();
        for (cookie, attribution) in self.current.iter() {
            if table.get(cookie) != Some(attribution) {
                self.retired.insert(*cookie, (attribution.clone(), now));
            }
        }
        self.retired
            .retain(|_, (_, since)| now.duration_since(*since) < RETIRED_COOKIE_TTL);
        if self.retired.len() > MAX_RETIRED {
            let mut by_age: Vec<(u32, Instant)> =
                self.retired.iter().map(|(c, (_, t))| (*c, *t)).collect();
            by_age.sort_by_key(|(_, t)| *t);
            for (cookie, _) in by_age.iter().take(self.retired.len() - MAX_RETIRED) {
                self.retired.remove(cookie);
            }
        }
        self.current = table.clone();
    }

    /// What `cookie` stands for: the current meaning, else the last one it had.
    pub fn get(&self, cookie: u32) -> Option<&Attribution> {
        self.current
            .get(&cookie)
            .or_else(|| self.retired.get(&cookie).map(|(a, _)| a))
    }

    /// The current table.
    pub fn current(&self) -> &Arc<BTreeMap<u32, Attribution>> {
        &self.current
    }
}

/// What an identity of an event is, for the flow log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A palisade endpoint (full ref).
    Endpoint(String),
    /// Outside palisade, in no policy prefix.
    World,
    /// Outside palisade, in this policy prefix.
    Cidr(String),
    /// The node itself.
    Host,
}

/// Everything the flow log needs to name what an event is about.
#[derive(Debug, Clone, Default)]
pub struct EventNames {
    /// The node.
    pub node: String,
    /// Rule cookies.
    pub cookies: CookieBook,
    tenants: BTreeMap<u32, String>,
    endpoints: HashMap<(u32, Ipv4Addr), String>,
    kinds: HashMap<u32, Peer>,
}

impl EventNames {
    /// Names for `node` that know only the cookies of a previous run.
    pub fn new(node: &str, previous_cookies: BTreeMap<u32, Attribution>) -> EventNames {
        EventNames {
            node: node.to_string(),
            cookies: CookieBook::new(previous_cookies),
            ..EventNames::default()
        }
    }

    /// Learns the tenants, endpoints and identities of a new desired state
    /// and its cookie table.
    pub fn update(
        &mut self,
        intent: &Intent,
        identities: &Identities,
        cookies: &Arc<BTreeMap<u32, Attribution>>,
    ) {
        self.cookies.update(cookies);
        self.tenants.clear();
        self.endpoints.clear();
        self.kinds.clear();
        for (identity, info) in identities.iter() {
            let peer = match &info.kind {
                IdentityKind::World => Peer::World,
                IdentityKind::Cidr(net) => Peer::Cidr(net.to_string()),
                IdentityKind::Host => Peer::Host,
                IdentityKind::Labels(_) | IdentityKind::Unknown => continue,
            };
            self.kinds.insert(identity.0, peer);
        }
        for tenant in intent.tenants.keys() {
            if let Some(index) = identities.tenant_index(tenant) {
                self.tenants.insert(u32::from(index), tenant.clone());
            }
        }
        for endpoint in &intent.endpoints {
            let Some(index) = identities.tenant_index(&endpoint.tenant) else {
                continue;
            };
            for ip in &endpoint.ips {
                if let IpAddr::V4(v4) = ip {
                    self.endpoints
                        .insert((u32::from(index), *v4), endpoint.full_ref());
                }
            }
        }
    }

    /// The tenant with index `tenant`.
    pub fn tenant(&self, tenant: u32) -> Option<&str> {
        self.tenants.get(&tenant).map(String::as_str)
    }

    /// What is at `addr` with `identity` in `tenant`.
    pub fn peer(&self, tenant: u32, addr: Ipv4Addr, identity: u32) -> Option<Peer> {
        if let Some(name) = self.endpoints.get(&(tenant, addr)) {
            return Some(Peer::Endpoint(name.clone()));
        }
        if identity == 0 {
            return None;
        }
        self.kinds.get(&identity).cloned().or_else(|| {
            // Reserved identities have fixed locals in every tenant.
            match Identity(identity).local() {
                Identity::LOCAL_WORLD => Some(Peer::World),
                Identity::LOCAL_HOST => Some(Peer::Host),
                _ => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use palisade_model::Direction;

    use super::*;

    fn tenant_default(tenant: &str) -> Attribution {
        Attribution::TenantDefault {
            tenant: tenant.into(),
            direction: Direction::Ingress,
        }
    }

    #[test]
    fn a_replaced_cookie_keeps_its_name_and_a_current_one_wins() {
        let mut book = CookieBook::new(BTreeMap::from([(9, Attribution::SelfTraffic)]));
        assert_eq!(book.get(9), Some(&Attribution::SelfTraffic), "previous run");

        let first = Arc::new(BTreeMap::from([(3, tenant_default("acme"))]));
        book.update(&first);
        let second = Arc::new(BTreeMap::from([(4, tenant_default("globex"))]));
        book.update(&second);
        assert_eq!(book.get(3), Some(&tenant_default("acme")), "retired");
        assert_eq!(book.get(4), Some(&tenant_default("globex")));
        assert_eq!(book.get(5), None);

        // A number that is current again means what the current table says.
        let third = Arc::new(BTreeMap::from([(3, Attribution::CrossTenant)]));
        book.update(&third);
        assert_eq!(book.get(3), Some(&Attribution::CrossTenant));
    }
}
