//! Aggregation of denied and audit records, so that a flood does not become
//! a flood of lines.
//!
//! The datapath already sends at most one `DENIED` or `AUDIT_WOULD_DENY`
//! event per second per 5-tuple. A client that keeps retrying (each attempt
//! from a new source port) or a scan still gives one event per attempt, so
//! the agent aggregates per **flow**: tenant, source and destination
//! address, protocol, destination port, drop reason, side and rule (source
//! ports are not part of it). The first record of a flow goes out at once
//! (a blocked probe shows up without delay); the ones after it within the
//! interval are counted, and one record per interval stands for them:
//! `palisade.count` packets (`palisade.suppressed` = count − 1), from
//! `event.start` to `event.end`. A flow quiet for a whole interval starts
//! over. Connection records (allowed, closed, cut) are never aggregated:
//! there is one per connection already.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use palisade_datapath::{Direction, FlowEvent};
use serde_json::Value;

/// Flows aggregated at most at once; beyond it every window is flushed.
const MAX_WINDOWS: usize = 65_536;

/// What makes two denied (or audit) events the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    audit: bool,
    tenant: u32,
    proto: u8,
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    dport: u16,
    reason: u16,
    side: Option<Direction>,
    cookie: u32,
}

impl FlowKey {
    fn of(event: &FlowEvent) -> Option<(FlowKey, u64)> {
        let (audit, reason, side, cookie, suppressed) = match *event {
            FlowEvent::Denied {
                reason,
                side,
                cookie,
                suppressed,
                ..
            } => (false, reason as u16, side, cookie, suppressed),
            FlowEvent::AuditWouldDeny {
                side,
                audit_cookie,
                suppressed,
                ..
            } => (true, 0, side, audit_cookie, suppressed),
            _ => return None,
        };
        let flow = event.flow();
        Some((
            FlowKey {
                audit,
                tenant: flow.tenant,
                proto: flow.proto,
                saddr: flow.saddr,
                daddr: flow.daddr,
                dport: flow.dport,
                reason,
                side,
                cookie,
            },
            1 + u64::from(suppressed),
        ))
    }
}

/// One flow's interval.
#[derive(Debug)]
struct Window {
    /// When the interval ends.
    until: Instant,
    /// Packets counted since the last record of the flow.
    count: u64,
    /// The last record counted (its fields describe the aggregate).
    last: Option<Value>,
    /// `@timestamp` of the first record counted.
    first_at: Option<Value>,
}

/// Aggregates denied and audit records per flow and interval.
#[derive(Debug)]
pub struct Aggregator {
    interval: Duration,
    windows: HashMap<FlowKey, Window>,
    /// Records folded into aggregates since the start.
    folded: u64,
}

impl Aggregator {
    /// Aggregation over `interval`; zero passes every record through.
    pub fn new(interval: Duration) -> Aggregator {
        Aggregator {
            interval,
            windows: HashMap::new(),
            folded: 0,
        }
    }

    /// Records folded into an aggregate rather than written (since the start).
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Takes the record of `event` made at `now`: `Some` to write it now,
    /// `None` when it was counted into its flow's aggregate.
    pub fn offer(&mut self, event: &FlowEvent, record: Value, now: Instant) -> Option<Value> {
        if self.interval.is_zero() {
            return Some(record);
        }
        let Some((key, packets)) = FlowKey::of(event) else {
            return Some(record);
        };
        match self.windows.get_mut(&key) {
            Some(window) if now < window.until => {
                window.count += packets;
                if window.first_at.is_none() {
                    window.first_at = record.get("@timestamp").cloned();
                }
                window.last = Some(record);
                self.folded += 1;
                None
            }
            _ => {
                self.windows.insert(
                    key,
                    Window {
                        until: now + self.interval,
                        count: 0,
                        last: None,
                        first_at: None,
                    },
                );
                Some(record)
            }
        }
    }

    /// The aggregate records of the intervals that ended by `now` (all of
    /// them when `all`, e.g. when stopping). A flow with nothing counted in
    /// its interval is forgotten; the others start a new interval.
    pub fn flush(&mut self, now: Instant, all: bool) -> Vec<Value> {
        let all = all || self.windows.len() > MAX_WINDOWS;
        let mut out = Vec::new();
        let interval = self.interval;
        self.windows.retain(|_, window| {
            if !all && now < window.until {
                return true;
            }
            let Some(mut record) = window.last.take() else {
                return false;
            };
            if let Some(object) = record.as_object_mut() {
                let end = object.get("@timestamp").cloned();
                let palisade = object
                    .entry("palisade")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(palisade) = palisade.as_object_mut() {
                    palisade.insert("count".into(), window.count.into());
                    palisade.insert("suppressed".into(), (window.count - 1).into());
                }
                let event = object
                    .entry("event")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(event) = event.as_object_mut() {
                    if let Some(start) = window.first_at.take() {
                        event.insert("start".into(), start);
                    }
                    if let Some(end) = end {
                        event.insert("end".into(), end);
                    }
                }
            }
            out.push(record);
            window.count = 0;
            window.until = now + interval;
            !all
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use palisade_datapath::{DropReason, FlowInfo, Hook};
    use serde_json::json;

    use super::*;

    fn denied(sport: u16, suppressed: u32) -> FlowEvent {
        FlowEvent::Denied {
            flow: FlowInfo {
                hook: Hook::FromEndpoint,
                ifindex: 3,
                tenant: 1,
                proto: 6,
                saddr: Ipv4Addr::new(10, 0, 1, 10),
                sport,
                daddr: Ipv4Addr::new(10, 0, 3, 10),
                dport: 5432,
                src_identity: 1,
                dst_identity: 2,
                timestamp: Duration::ZERO,
            },
            reason: DropReason::PolicyDenied,
            side: Some(Direction::Egress),
            cookie: 7,
            suppressed,
        }
    }

    fn record(n: u64) -> Value {
        json!({"@timestamp": format!("t{n}"), "event": {"action": "packet-denied"},
               "palisade": {"count": 1, "suppressed": 0}})
    }

    #[test]
    fn a_flood_of_one_flow_is_one_record_per_interval_and_counts_every_packet() {
        let mut agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        // The first goes out at once.
        assert!(agg.offer(&denied(40000, 0), record(0), t0).is_some());
        // Retries from other source ports within the interval are counted.
        for i in 1..=50u64 {
            let at = t0 + Duration::from_millis(i * 10);
            assert!(agg
                .offer(&denied(40000 + i as u16, 2), record(i), at)
                .is_none());
        }
        assert!(agg.flush(t0 + Duration::from_millis(900), false).is_empty());
        let out = agg.flush(t0 + Duration::from_secs(1), false);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0]["palisade"]["count"], 150,
            "50 events of 1 + 2 suppressed"
        );
        assert_eq!(out[0]["palisade"]["suppressed"], 149);
        assert_eq!(out[0]["event"]["start"], "t1");
        assert_eq!(out[0]["event"]["end"], "t50");
        assert_eq!(agg.folded(), 50);

        // Still flooding: the next interval aggregates too.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(agg.offer(&denied(41000, 0), record(60), t1).is_none());
        let out = agg.flush(t0 + Duration::from_secs(2), false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["palisade"]["count"], 1);
        // A quiet interval forgets the flow: the next packet goes out at once.
        assert!(agg.flush(t0 + Duration::from_secs(3), false).is_empty());
        assert!(agg
            .offer(&denied(42000, 0), record(70), t0 + Duration::from_secs(4))
            .is_some());
    }

    #[test]
    fn other_flows_and_connection_records_are_not_folded() {
        let mut agg = Aggregator::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(agg.offer(&denied(1, 0), record(0), t0).is_some());
        let FlowEvent::Denied { flow, .. } = denied(1, 0) else {
            unreachable!()
        };
        let other_port = FlowEvent::Denied {
            flow: FlowInfo {
                dport: 5433,
                ..flow
            },
            reason: DropReason::PolicyDenied,
            side: Some(Direction::Egress),
            cookie: 7,
            suppressed: 0,
        };
        assert!(agg.offer(&other_port, record(1), t0).is_some());
        let allowed = FlowEvent::NewAllowed {
            flow,
            egress_cookie: 1,
            ingress_cookie: 2,
            log: false,
        };
        assert!(agg.offer(&allowed, record(2), t0).is_some());
        assert!(agg.offer(&allowed, record(3), t0).is_some());
        // Off: everything passes.
        let mut off = Aggregator::new(Duration::ZERO);
        assert!(off.offer(&denied(1, 0), record(0), t0).is_some());
        assert!(off.offer(&denied(1, 0), record(0), t0).is_some());
    }

    #[test]
    fn stopping_flushes_what_was_counted() {
        let mut agg = Aggregator::new(Duration::from_secs(10));
        let t0 = Instant::now();
        agg.offer(&denied(1, 0), record(0), t0);
        agg.offer(&denied(2, 0), record(1), t0);
        let out = agg.flush(t0, true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["palisade"]["count"], 1);
        assert!(agg.flush(t0, true).is_empty());
    }
}
