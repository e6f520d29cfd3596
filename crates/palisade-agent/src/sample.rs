//! Reading the datapath for the metrics and the server's rule counters: the
//! per-CPU counters summed (drops by reason, packets by rule cookie, health
//! counters), the rule counters summed per attribution (a rule keeps its
//! counts across recompiles that renumber its cookie), and every map's fill
//! level against its capacity.
//!
//! The maps the agent writes (ENDPOINTS, IPCACHE, POLICY, POLICY_RANGES,
//! TENANTS, UPLINKS) are counted from what the agent knows they hold, with
//! no syscall; the ones the datapath fills (CT, RATELIMIT, RULE_COUNTERS)
//! are walked, CT only every `Timing::conntrack_count` (a walk visits every
//! connection).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, Map, MapData};
use palisade_client::visibility::{CounterReport, RuleCounter};
use palisade_datapath::abi::{Counter, CtEntry, CtKey, RatelimitKey, RatelimitValue, StatSlot};
use palisade_datapath::{Datapath, DropReason};
use palisade_policy::Attribution;

use crate::metrics::{DatapathSample, MapFill};
use crate::names::EventNames;
use crate::reconcile::{exact_policy_key, pinned_capacity, Capacities, MapContents};

/// A hash map pinned by the datapath, opened again for counting its keys.
type Pinned<K, V> = HashMap<MapData, K, V>;

fn open_pinned<K: aya::Pod, V: aya::Pod>(bpffs_dir: &Path, name: &str) -> Option<Pinned<K, V>> {
    let opened = MapData::from_pin(bpffs_dir.join(name))
        .map_err(|e| e.to_string())
        .and_then(|data| Map::from_map_data(data).map_err(|e| e.to_string()))
        .and_then(|map| HashMap::try_from(map).map_err(|e| e.to_string()));
    match opened {
        Ok(map) => Some(map),
        Err(error) => {
            tracing::warn!(map = name, %error, "cannot open the map for its fill level; it is left out of the metrics");
            None
        }
    }
}

fn count_keys<K: aya::Pod, V: aya::Pod>(map: &Pinned<K, V>) -> u64 {
    map.keys().take_while(Result::is_ok).count() as u64
}

/// Reads samples of one datapath.
pub struct Sampler {
    capacities: Capacities,
    conntrack_capacity: u32,
    ratelimit_capacity: Option<u32>,
    rule_counters_capacity: Option<u32>,
    conntrack: Option<Pinned<CtKey, CtEntry>>,
    ratelimit: Option<Pinned<RatelimitKey, RatelimitValue>>,
    count_every: Duration,
    /// CT entries at the last walk, and when the next one is due.
    conntrack_entries: Option<u64>,
    next_count: Instant,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("capacities", &self.capacities)
            .field("conntrack_entries", &self.conntrack_entries)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler of the maps pinned in `bpffs_dir`; CT is walked at most
    /// every `count_every`.
    pub fn open(bpffs_dir: &Path, capacities: Capacities, count_every: Duration) -> Sampler {
        let capacity = |name: &str| match pinned_capacity(bpffs_dir, name) {
            Ok(c) => Some(c),
            Err(error) => {
                tracing::warn!(map = name, %error, "cannot read the map's size");
                None
            }
        };
        Sampler {
            capacities,
            conntrack_capacity: capacity("CT").unwrap_or(0),
            ratelimit_capacity: capacity("RATELIMIT"),
            rule_counters_capacity: capacity("RULE_COUNTERS"),
            conntrack: open_pinned(bpffs_dir, "CT"),
            ratelimit: open_pinned(bpffs_dir, "RATELIMIT"),
            count_every,
            conntrack_entries: None,
            next_count: Instant::now(),
        }
    }

    /// Reads the datapath now. `contents` is what the agent's maps hold (as
    /// last written); `current` the cookie table in force, whose rules are
    /// listed with zero when they never matched.
    pub fn sample(
        &mut self,
        dp: &Datapath,
        contents: Option<&MapContents>,
        names: &EventNames,
        current: Option<&BTreeMap<u32, Attribution>>,
        ports: usize,
    ) -> palisade_datapath::Result<DatapathSample> {
        let counters = &dp.maps().counters;
        let mut drops = Vec::with_capacity(DropReason::ALL.len());
        for &reason in DropReason::ALL {
            drops.push((reason, counters.drops(reason)?));
        }
        let by_cookie = counters.all_rules()?;
        let mut rules: BTreeMap<Attribution, Counter> = current
            .into_iter()
            .flat_map(|table| table.values())
            .map(|a| (a.clone(), Counter::default()))
            .collect();
        for (cookie, counter) in &by_cookie {
            // A cookie no table of this run or the last one knows cannot be
            // named; its packets are in the drop and verdict totals anyway.
            let Some(attribution) = names.cookies.get(*cookie) else {
                continue;
            };
            let sum = rules.entry(attribution.clone()).or_default();
            sum.packets += counter.packets;
            sum.bytes += counter.bytes;
        }

        let now = Instant::now();
        if now >= self.next_count {
            self.conntrack_entries = self.conntrack.as_ref().map(count_keys);
            self.next_count = now + self.count_every;
        }
        let mut maps = Vec::new();
        let mut fill = |map: &'static str, entries: usize, capacity: u32| {
            maps.push(MapFill {
                map,
                entries: entries as u64,
                capacity: u64::from(capacity),
            });
        };
        if let Some(c) = contents {
            let caps = &self.capacities;
            fill("ENDPOINTS", c.endpoints.len(), caps.endpoints);
            fill("IPCACHE", c.ipcache.len(), caps.ipcache);
            match caps.policy_ranges {
                Some(ranges) => {
                    let exact = c.policy.keys().filter(|k| exact_policy_key(k)).count();
                    fill("POLICY", exact, caps.policy);
                    fill("POLICY_RANGES", c.policy.len() - exact, ranges);
                }
                None => fill("POLICY", c.policy.len(), caps.policy),
            }
            fill("TENANTS", c.tenants.len(), caps.tenants);
            fill("UPLINKS", c.uplinks.len(), caps.uplinks);
        }
        if let Some(entries) = self.conntrack_entries {
            fill("CT", entries as usize, self.conntrack_capacity);
        }
        if let (Some(map), Some(capacity)) = (&self.ratelimit, self.ratelimit_capacity) {
            fill("RATELIMIT", count_keys(map) as usize, capacity);
        }
        if let Some(capacity) = self.rule_counters_capacity {
            fill("RULE_COUNTERS", by_cookie.len(), capacity);
        }

        Ok(DatapathSample {
            drops,
            rules: rules.into_iter().collect(),
            maps,
            events_lost: counters.stat(StatSlot::EventsLost)?,
            conntrack_create_failed: counters.stat(StatSlot::CtCreateFailed)?,
            policy_revision: dp.maps().config.get()?.policy_revision,
            ports,
        })
    }
}

/// The server's counter report of a sample: every rule with its totals.
pub fn counter_report(sample: &DatapathSample) -> CounterReport {
    CounterReport {
        counters: sample
            .rules
            .iter()
            .map(|(attribution, c)| RuleCounter {
                attribution: attribution.clone(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect(),
    }
}
