//! Cookies: the numbers the datapath carries instead of attributions.
//! [`COOKIE_SELF_TRAFFIC`] and [`COOKIE_CROSS_TENANT`] are fixed; the others
//! are handed out by the compiler and kept while the attribution is in use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::explain::Attribution;

/// Cookie of [`Attribution::SelfTraffic`], which the datapath decides itself.
pub const COOKIE_SELF_TRAFFIC: u32 = 1;
/// Cookie of [`Attribution::CrossTenant`], which the datapath decides itself.
pub const COOKIE_CROSS_TENANT: u32 = 2;
/// First cookie handed to rules and defaults.
const FIRST_COOKIE: u32 = 3;

/// Cookie numbers of the attributions in use. New attributions get numbers
/// in sorted order (so the same intent from a fresh compiler gets the same
/// cookies); an attribution keeps its number as long as it is in use, and a
/// number is not reused until the counter has gone round all 32 bits.
pub(crate) struct Cookies {
    numbers: HashMap<Attribution, u32>,
    pub(crate) table: Arc<BTreeMap<u32, Attribution>>,
    next: u32,
}

impl Default for Cookies {
    fn default() -> Cookies {
        let table = BTreeMap::from([
            (COOKIE_SELF_TRAFFIC, Attribution::SelfTraffic),
            (COOKIE_CROSS_TENANT, Attribution::CrossTenant),
        ]);
        Cookies {
            numbers: HashMap::new(),
            table: Arc::new(table),
            next: FIRST_COOKIE,
        }
    }
}

impl Cookies {
    /// Gives numbers to the attributions that have none.
    pub(crate) fn assign(&mut self, attributions: &[Attribution]) {
        let mut new: Vec<&Attribution> = attributions
            .iter()
            .filter(|a| !self.numbers.contains_key(*a))
            .collect();
        if new.is_empty() {
            return;
        }
        new.sort();
        new.dedup();
        let table = Arc::make_mut(&mut self.table);
        for a in new {
            let number = loop {
                let n = self.next;
                self.next = n.checked_add(1).unwrap_or(FIRST_COOKIE);
                if !table.contains_key(&n) {
                    break n;
                }
            };
            self.numbers.insert(a.clone(), number);
            table.insert(number, a.clone());
        }
    }

    /// The number of an attribution given by [`assign`](Cookies::assign).
    pub(crate) fn get(&self, a: &Attribution) -> u32 {
        *self
            .numbers
            .get(a)
            .expect("attributions get cookies before tables use them")
    }

    pub(crate) fn remove(&mut self, a: &Attribution) {
        if let Some(n) = self.numbers.remove(a) {
            Arc::make_mut(&mut self.table).remove(&n);
        }
    }

    /// Forgets every attribution not in `keep`.
    pub(crate) fn retain(&mut self, keep: &[Attribution]) {
        let keep: HashSet<&Attribution> = keep.iter().collect();
        let gone: Vec<Attribution> = self
            .numbers
            .keys()
            .filter(|a| !keep.contains(a))
            .cloned()
            .collect();
        for a in &gone {
            self.remove(a);
        }
    }
}
