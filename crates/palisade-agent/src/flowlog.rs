//! The flow log: one JSON line per datapath event (and per connection that
//! conntrack GC expired), with Elastic Common Schema field names as nested
//! objects, and the writer that appends them to a file (rotated by size) or
//! standard output. The same records go to the control plane.
//!
//! ```json
//! {"@timestamp":"2026-05-01T12:00:00.123Z","ecs":{"version":"8.11.0"},
//!  "event":{"kind":"event","category":["network"],"type":["connection","denied"],
//!           "action":"packet-denied","outcome":"failure","reason":"POLICY_DENIED"},
//!  "source":{"ip":"10.0.1.10","port":40312},"destination":{"ip":"10.0.3.10","port":5432},
//!  "network":{"transport":"tcp","iana_number":"6","direction":"ingress"},
//!  "rule":{"name":"default deny of tenant acme (ingress)"},
//!  "palisade":{"node":"node-1","tenant":"acme","hook":"from_endpoint","count":1,"suppressed":0,
//!    "attribution":{"kind":"tenant_default","tenant":"acme","direction":"ingress"},
//!    "source":{"endpoint":"acme:web-1","identity":65793},
//!    "destination":{"endpoint":"acme:db-1","identity":65794}}}
//! ```

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use palisade_datapath::abi::{ip_proto, CtKey};
use palisade_datapath::{ClosedFlow, ConnCounters, Direction, FlowEvent, FlowInfo, Hook};
use palisade_policy::Attribution;
use serde_json::{Map, Value};

use crate::config::{FlowLogConfig, FlowLogTarget, Rotation};
use crate::error::{AgentError, Result};
use crate::names::{EventNames, Peer};

/// The ECS version whose field names and types the records follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Turns datapath times (CLOCK_MONOTONIC) into wall-clock times.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    wall: SystemTime,
    monotonic: Duration,
}

impl WallClock {
    /// The clocks now.
    pub fn now() -> WallClock {
        WallClock {
            wall: SystemTime::now(),
            monotonic: palisade_datapath::monotonic_now(),
        }
    }

    /// The wall-clock time of monotonic instant `at`.
    pub fn at(&self, at: Duration) -> SystemTime {
        if at <= self.monotonic {
            self.wall - (self.monotonic - at)
        } else {
            self.wall + (at - self.monotonic)
        }
    }
}

/// Sets `path` (dotted) in `object`, creating the nested objects on the way.
fn set(object: &mut Map<String, Value>, path: &str, value: impl Into<Value>) {
    match path.split_once('.') {
        None => {
            object.insert(path.to_string(), value.into());
        }
        Some((head, rest)) => {
            let child = object
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            set(
                child.as_object_mut().expect("made an object above"),
                rest,
                value,
            );
        }
    }
}

fn transport(proto: u8) -> String {
    match proto {
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMP => "icmp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromEndpoint => "from_endpoint",
        Hook::ToEndpoint => "to_endpoint",
        Hook::FromUplink => "from_uplink",
        Hook::Deliver => "deliver",
        Hook::FromOverlay => "from_overlay",
    }
}

fn direction_name(side: Direction) -> &'static str {
    match side {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The attribution text of a cookie (`tier/policy ingress rule 0 (deny)`,
/// `default deny of tenant acme (ingress)`), and its tier.
fn rule(names: &EventNames, cookie: u32) -> (String, Option<String>) {
    match names.cookies.get(cookie) {
        Some(a) => {
            let tier = match a {
                Attribution::Rule { tier, .. } | Attribution::TierDefault { tier, .. } => {
                    Some(tier.clone())
                }
                _ => None,
            };
            (a.to_string(), tier)
        }
        None => (format!("unknown rule (cookie {cookie})"), None),
    }
}

/// `rule.name`, `rule.ruleset` and `palisade.attribution` (the engine's
/// attribution as JSON: kind, tier, tenant, policy, direction, index,
/// action) of the rule or default that decided.
fn set_rule(record: &mut Map<String, Value>, names: &EventNames, cookie: u32) {
    if cookie == 0 {
        return;
    }
    let (name, tier) = rule(names, cookie);
    set(record, "rule.name", name);
    if let Some(tier) = tier {
        set(record, "rule.ruleset", tier);
    }
    if let Some(attribution) = names.cookies.get(cookie) {
        set(
            record,
            "palisade.attribution",
            serde_json::to_value(attribution).expect("attributions serialize"),
        );
    }
}

/// The fields every record has: time, flow, tenant, peers.
fn base(
    names: &EventNames,
    clock: &WallClock,
    flow: &FlowInfo,
    action: &str,
    outcome: &str,
    types: &[&str],
) -> Map<String, Value> {
    let mut r = Map::new();
    set(
        &mut r,
        "@timestamp",
        humantime::format_rfc3339_millis(clock.at(flow.timestamp)).to_string(),
    );
    set(&mut r, "ecs.version", ECS_VERSION);
    set(&mut r, "event.kind", "event");
    set(&mut r, "event.category", vec!["network"]);
    set(&mut r, "event.type", types.to_vec());
    set(&mut r, "event.action", action);
    set(&mut r, "event.outcome", outcome);
    set(&mut r, "source.ip", flow.saddr.to_string());
    set(&mut r, "destination.ip", flow.daddr.to_string());
    if flow.proto != ip_proto::ICMP {
        set(&mut r, "source.port", flow.sport);
        set(&mut r, "destination.port", flow.dport);
    }
    set(&mut r, "network.transport", transport(flow.proto));
    set(&mut r, "network.iana_number", flow.proto.to_string());
    set(&mut r, "palisade.node", names.node.clone());
    set(&mut r, "palisade.hook", hook_name(flow.hook));
    if let Some(tenant) = names.tenant(flow.tenant) {
        set(&mut r, "palisade.tenant", tenant);
    }
    for (side, addr, identity) in [
        ("source", flow.saddr, flow.src_identity),
        ("destination", flow.daddr, flow.dst_identity),
    ] {
        if identity != 0 {
            set(&mut r, &format!("palisade.{side}.identity"), identity);
        }
        match names.peer(flow.tenant, addr, identity) {
            Some(Peer::Endpoint(name)) => set(&mut r, &format!("palisade.{side}.endpoint"), name),
            Some(Peer::World) => set(&mut r, &format!("palisade.{side}.entity"), "world"),
            Some(Peer::Host) => set(&mut r, &format!("palisade.{side}.entity"), "host"),
            Some(Peer::Cidr(net)) => set(&mut r, &format!("palisade.{side}.cidr"), net),
            None => {}
        }
    }
    r
}

fn set_counters(r: &mut Map<String, Value>, c: &ConnCounters) {
    set(r, "source.packets", c.packets_fwd);
    set(r, "source.bytes", c.bytes_fwd);
    set(r, "destination.packets", c.packets_rev);
    set(r, "destination.bytes", c.bytes_rev);
    set(r, "palisade.packets", c.packets_fwd + c.packets_rev);
    set(r, "palisade.bytes", c.bytes_fwd + c.bytes_rev);
}

/// The rules of both sides of a connection, and the one named `rule.name`:
/// the destination's ingress rule when there is one, else the source's egress rule.
fn set_connection_rules(r: &mut Map<String, Value>, names: &EventNames, egress: u32, ingress: u32) {
    if egress != 0 {
        set(r, "palisade.rules.egress", rule(names, egress).0);
    }
    if ingress != 0 {
        set(r, "palisade.rules.ingress", rule(names, ingress).0);
    }
    let (cookie, side) = if ingress != 0 {
        (ingress, "ingress")
    } else {
        (egress, "egress")
    };
    if cookie != 0 {
        set(r, "network.direction", side);
    }
    set_rule(r, names, cookie);
}

/// `palisade.count` (packets the record stands for) and
/// `palisade.suppressed` (those of them not reported one by one).
pub(crate) fn set_count(r: &mut Map<String, Value>, count: u64) {
    set(r, "palisade.count", count);
    set(r, "palisade.suppressed", count.saturating_sub(1));
}

/// `palisade.audit.*`: the audit-mode rule that would deny (the traffic
/// passed), its policy and tier.
fn set_audit(r: &mut Map<String, Value>, names: &EventNames, cookie: u32) {
    set(r, "palisade.audit.would_deny", true);
    set(r, "palisade.audit.rule", rule(names, cookie).0);
    if let Some(Attribution::Rule { policy, tier, .. }) = names.cookies.get(cookie) {
        set(r, "palisade.audit.policy", policy.clone());
        set(r, "palisade.audit.tier", tier.clone());
    }
}

/// The flow log record of one datapath event.
pub fn event_record(event: &FlowEvent, names: &EventNames, clock: &WallClock) -> Value {
    let r = match event {
        FlowEvent::NewAllowed {
            flow,
            egress_cookie,
            ingress_cookie,
            log,
        } => {
            let mut r = base(
                names,
                clock,
                flow,
                "connection-allowed",
                "success",
                &["connection", "start", "allowed"],
            );
            set_connection_rules(&mut r, names, *egress_cookie, *ingress_cookie);
            if *log {
                set(&mut r, "palisade.logged", true);
            }
            r
        }
        FlowEvent::Denied {
            flow,
            reason,
            side,
            cookie,
            suppressed,
        } => {
            let mut r = base(
                names,
                clock,
                flow,
                "packet-denied",
                "failure",
                &["connection", "denied"],
            );
            set(&mut r, "event.reason", reason.name());
            if let Some(side) = side {
                set(&mut r, "network.direction", direction_name(*side));
            }
            set_rule(&mut r, names, *cookie);
            set_count(&mut r, 1 + u64::from(*suppressed));
            r
        }
        FlowEvent::AuditWouldDeny {
            flow,
            side,
            audit_cookie,
            suppressed,
        } => {
            let mut r = base(
                names,
                clock,
                flow,
                "audit-would-deny",
                "success",
                &["connection", "allowed"],
            );
            if let Some(side) = side {
                set(&mut r, "network.direction", direction_name(*side));
            }
            set_audit(&mut r, names, *audit_cookie);
            set_rule(&mut r, names, *audit_cookie);
            set_count(&mut r, 1 + u64::from(*suppressed));
            r
        }
        FlowEvent::ConnClosed {
            flow,
            egress_cookie,
            ingress_cookie,
            counters,
        } => {
            let mut r = base(
                names,
                clock,
                flow,
                "connection-closed",
                "success",
                &["connection", "end"],
            );
            set(&mut r, "event.reason", "closed");
            set_connection_rules(&mut r, names, *egress_cookie, *ingress_cookie);
            set_counters(&mut r, counters);
            r
        }
        FlowEvent::ConnCut {
            flow,
            side,
            cookie,
            counters,
        } => {
            let mut r = base(
                names,
                clock,
                flow,
                "connection-cut",
                "failure",
                &["connection", "end", "denied"],
            );
            set(&mut r, "event.reason", "POLICY_REVOKED");
            if let Some(side) = side {
                set(&mut r, "network.direction", direction_name(*side));
            }
            set_rule(&mut r, names, *cookie);
            set_counters(&mut r, counters);
            r
        }
    };
    Value::Object(r)
}

/// The flow log record of a connection conntrack GC removed after its idle
/// timeout (UDP, ICMP, and TCP that never closed properly).
pub fn expired_record(closed: &ClosedFlow, names: &EventNames, clock: &WallClock) -> Value {
    let CtKey { tenant, proto, .. } = closed.key;
    let e = &closed.entry;
    let flow = FlowInfo {
        hook: Hook::from_raw(e.hook).unwrap_or(Hook::FromEndpoint),
        ifindex: e.ifindex,
        tenant,
        proto,
        saddr: closed.key.saddr(),
        sport: closed.key.sport(),
        daddr: closed.key.daddr(),
        dport: closed.key.dport(),
        src_identity: e.src_identity,
        dst_identity: e.dst_identity,
        timestamp: Duration::from_nanos(e.last_seen_ns),
    };
    let mut r = base(
        names,
        clock,
        &flow,
        "connection-closed",
        "success",
        &["connection", "end"],
    );
    set(&mut r, "event.reason", "idle-timeout");
    set_connection_rules(&mut r, names, e.egress_cookie, e.ingress_cookie);
    set_counters(
        &mut r,
        &ConnCounters {
            packets_fwd: e.packets_fwd,
            bytes_fwd: e.bytes_fwd,
            packets_rev: e.packets_rev,
            bytes_rev: e.bytes_rev,
        },
    );
    // The entry's last packet is when the connection ended; the record is
    // written now.
    set(
        &mut r,
        "event.end",
        humantime::format_rfc3339_millis(clock.at(flow.timestamp)).to_string(),
    );
    set(
        &mut r,
        "@timestamp",
        humantime::format_rfc3339_millis(clock.wall).to_string(),
    );
    Value::Object(r)
}

/// Where records are written: standard output, or a file rotated by size.
pub struct FlowLog {
    out: BufWriter<Box<dyn Write + Send>>,
    path: PathBuf,
    rotation: Option<Rotation>,
    /// Bytes in the current file (written or buffered).
    size: u64,
    /// Files rotated since the log was opened.
    rotations: u64,
    line: Vec<u8>,
}

impl std::fmt::Debug for FlowLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowLog")
            .field("path", &self.path)
            .field("rotation", &self.rotation)
            .finish()
    }
}

/// Opens `path` for appending (creating it and its directory).
fn open_append(path: &Path) -> Result<(fs::File, u64)> {
    let fail = |action, source| AgentError::FlowLog {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| fail("open", e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// `flows.jsonl.N`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl FlowLog {
    /// Opens the target (a file is appended to, and created if missing).
    pub fn open(config: &FlowLogConfig) -> Result<FlowLog> {
        let (out, path, size): (Box<dyn Write + Send>, PathBuf, u64) = match &config.target {
            FlowLogTarget::Stdout => (Box::new(std::io::stdout()), PathBuf::from("-"), 0),
            FlowLogTarget::File(path) => {
                let (file, size) = open_append(path)?;
                (Box::new(file), path.clone(), size)
            }
        };
        let rotation = match config.target {
            FlowLogTarget::Stdout => None,
            FlowLogTarget::File(_) => config.rotation.map(|r| Rotation {
                keep: r.keep.max(1),
                ..r
            }),
        };
        Ok(FlowLog {
            out: BufWriter::new(out),
            path,
            rotation,
            size,
            rotations: 0,
            line: Vec::new(),
        })
    }

    /// Appends one record (buffered until [`FlowLog::flush`]); rotates the
    /// file first when the record would take it past its size.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record).expect("a JSON value serializes");
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if let Some(rotation) = self.rotation {
            if self.size > 0 && self.size + len > rotation.max_bytes {
                self.rotate(rotation)?;
            }
        }
        self.out
            .write_all(&self.line)
            .map_err(|source| AgentError::FlowLog {
                action: "write",
                path: self.path.clone(),
                source,
            })?;
        self.size += len;
        Ok(())
    }

    /// Writes out buffered records.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| AgentError::FlowLog {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// Files rotated since the log was opened.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// `flows.jsonl` → `flows.jsonl.1` → ... → `flows.jsonl.<keep-1>` (the
    /// oldest beyond is removed), then a new `flows.jsonl`.
    fn rotate(&mut self, rotation: Rotation) -> Result<()> {
        self.flush()?;
        let fail = |action, path: &Path, source| AgentError::FlowLog {
            action,
            path: path.to_path_buf(),
            source,
        };
        let oldest = numbered(&self.path, rotation.keep.saturating_sub(1).max(1));
        match fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("remove", &oldest, e)),
        }
        if rotation.keep == 1 {
            fs::remove_file(&self.path).map_err(|e| fail("remove", &self.path, e))?;
        } else {
            for n in (1..rotation.keep - 1).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    let to = numbered(&self.path, n + 1);
                    fs::rename(&from, &to).map_err(|e| fail("rename", &from, e))?;
                }
            }
            let first = numbered(&self.path, 1);
            fs::rename(&self.path, &first).map_err(|e| fail("rename", &self.path, e))?;
        }
        let (file, size) = open_append(&self.path)?;
        self.out = BufWriter::new(Box::new(file));
        self.size = size;
        self.rotations += 1;
        tracing::debug!(path = %self.path.display(), keep = rotation.keep, "flow log rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use palisade_datapath::DropReason;
    use palisade_model::{Action, Direction as ModelDirection};

    use super::*;

    fn names() -> EventNames {
        let intent = palisade_model::load_str(
            "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultAction: deny}\n---\napiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: db-1, tenant: acme, labels: {app: db}}\nspec: {node: n1, ips: [10.0.3.10]}\n",
            "t.yaml",
            &Default::default(),
        )
        .unwrap();
        let ids = palisade_policy::IdentityAllocator::new()
            .allocate(&intent)
            .unwrap();
        let mut names = EventNames::new("n1", BTreeMap::new());
        let cookies = Arc::new(BTreeMap::from([
            (
                7,
                Attribution::Rule {
                    tier: "security".into(),
                    tenant: "acme".into(),
                    policy: "db-ingress".into(),
                    direction: ModelDirection::Ingress,
                    index: 0,
                    action: Action::Deny,
                },
            ),
            (
                8,
                Attribution::Rule {
                    tier: "default".into(),
                    tenant: "acme".into(),
                    policy: "db-lockdown".into(),
                    direction: ModelDirection::Ingress,
                    index: 2,
                    action: Action::Deny,
                },
            ),
        ]));
        names.update(&intent, &ids, &cookies);
        names
    }

    fn flow(tenant: u32) -> FlowInfo {
        FlowInfo {
            hook: Hook::FromUplink,
            ifindex: 3,
            tenant,
            proto: 6,
            saddr: Ipv4Addr::new(198, 51, 100, 1),
            sport: 40000,
            daddr: Ipv4Addr::new(10, 0, 3, 10),
            dport: 5432,
            src_identity: tenant << 16 | 1,
            dst_identity: tenant << 16 | 256,
            timestamp: Duration::from_secs(100),
        }
    }

    #[test]
    fn a_denied_packet_is_an_ecs_record_naming_the_rule_and_both_ends() {
        let names = names();
        let clock = WallClock {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            monotonic: Duration::from_secs(101),
        };
        let event = FlowEvent::Denied {
            flow: flow(1),
            reason: DropReason::PolicyDenied,
            side: Some(Direction::Ingress),
            cookie: 7,
            suppressed: 4,
        };
        let r = event_record(&event, &names, &clock);
        assert_eq!(r["@timestamp"], "2023-11-14T22:13:19.000Z");
        assert_eq!(r["event"]["action"], "packet-denied");
        assert_eq!(r["event"]["outcome"], "failure");
        assert_eq!(r["event"]["reason"], "POLICY_DENIED");
        assert_eq!(r["event"]["category"][0], "network");
        assert_eq!(r["source"]["ip"], "198.51.100.1");
        assert_eq!(r["destination"]["port"], 5432);
        assert_eq!(r["network"]["transport"], "tcp");
        assert_eq!(r["network"]["direction"], "ingress");
        assert_eq!(
            r["rule"]["name"],
            "security/db-ingress ingress rule 0 (deny)"
        );
        assert_eq!(r["rule"]["ruleset"], "security");
        assert_eq!(r["palisade"]["tenant"], "acme");
        assert_eq!(r["palisade"]["node"], "n1");
        assert_eq!(r["palisade"]["suppressed"], 4);
        assert_eq!(r["palisade"]["count"], 5);
        assert_eq!(r["palisade"]["source"]["entity"], "world");
        assert_eq!(r["palisade"]["destination"]["endpoint"], "acme:db-1");
        assert_eq!(r["ecs"]["version"], ECS_VERSION);
        assert_eq!(
            r["palisade"]["attribution"],
            serde_json::json!({"kind": "rule", "tier": "security", "tenant": "acme",
                "policy": "db-ingress", "direction": "ingress", "index": 0, "action": "deny"})
        );
    }

    #[test]
    fn an_audit_record_says_would_deny_and_names_the_audit_policy() {
        let names = names();
        let event = FlowEvent::AuditWouldDeny {
            flow: flow(1),
            side: Some(Direction::Ingress),
            audit_cookie: 8,
            suppressed: 0,
        };
        let r = event_record(&event, &names, &WallClock::now());
        assert_eq!(r["event"]["action"], "audit-would-deny");
        assert_eq!(r["event"]["outcome"], "success", "the traffic passed");
        assert_eq!(r["palisade"]["audit"]["would_deny"], true);
        assert_eq!(r["palisade"]["audit"]["policy"], "db-lockdown");
        assert_eq!(r["palisade"]["audit"]["tier"], "default");
        assert_eq!(
            r["palisade"]["audit"]["rule"],
            "default/db-lockdown ingress rule 2 (deny)"
        );
        assert_eq!(r["rule"]["name"], r["palisade"]["audit"]["rule"]);
        assert_eq!(r["palisade"]["attribution"]["policy"], "db-lockdown");
    }

    #[test]
    fn an_unknown_cookie_is_named_as_such_and_icmp_has_no_ports() {
        let names = names();
        let mut f = flow(1);
        f.proto = 1;
        let event = FlowEvent::ConnCut {
            flow: f,
            side: Some(Direction::Egress),
            cookie: 99,
            counters: ConnCounters {
                packets_fwd: 3,
                bytes_fwd: 300,
                packets_rev: 2,
                bytes_rev: 200,
            },
        };
        let r = event_record(&event, &names, &WallClock::now());
        assert_eq!(r["event"]["action"], "connection-cut");
        assert_eq!(r["rule"]["name"], "unknown rule (cookie 99)");
        assert_eq!(r["network"]["transport"], "icmp");
        assert!(r["source"].get("port").is_none());
        assert_eq!(r["palisade"]["packets"], 5);
        assert_eq!(r["destination"]["bytes"], 200);
    }

    #[test]
    fn an_expired_connection_is_a_closed_record_with_its_counters() {
        use palisade_datapath::abi::{CtEntry, CtKey};
        let names = names();
        let clock = WallClock {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            monotonic: Duration::from_secs(200),
        };
        let closed = ClosedFlow {
            key: CtKey::new(
                1,
                17,
                Ipv4Addr::new(10, 0, 3, 10),
                5353,
                Ipv4Addr::new(198, 51, 100, 1),
                53,
            ),
            entry: CtEntry {
                last_seen_ns: 140_000_000_000,
                packets_fwd: 2,
                bytes_fwd: 120,
                packets_rev: 1,
                bytes_rev: 80,
                egress_cookie: 7,
                hook: Hook::FromEndpoint as u8,
                ..CtEntry::default()
            },
        };
        let r = expired_record(&closed, &names, &clock);
        assert_eq!(r["event"]["action"], "connection-closed");
        assert_eq!(r["event"]["reason"], "idle-timeout");
        assert_eq!(r["event"]["end"], "2023-11-14T22:12:20.000Z");
        assert_eq!(r["@timestamp"], "2023-11-14T22:13:20.000Z");
        assert_eq!(r["network"]["transport"], "udp");
        assert_eq!(r["network"]["direction"], "egress");
        assert_eq!(r["source"]["port"], 5353);
        assert_eq!(r["palisade"]["source"]["endpoint"], "acme:db-1");
        assert_eq!(r["palisade"]["packets"], 3);
        assert_eq!(r["palisade"]["bytes"], 200);
        assert_eq!(r["palisade"]["rules"]["egress"], r["rule"]["name"]);
    }

    #[test]
    fn records_are_appended_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/flows.jsonl");
        let config = FlowLogConfig::new(FlowLogTarget::File(path.clone()));
        let mut log = FlowLog::open(&config).unwrap();
        log.write(&serde_json::json!({"a": 1})).unwrap();
        log.flush().unwrap();
        drop(log);
        let mut log = FlowLog::open(&config).unwrap();
        log.write(&serde_json::json!({"b": 2})).unwrap();
        log.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
    }

    #[test]
    fn a_file_is_rotated_by_size_and_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.jsonl");
        let config = FlowLogConfig {
            target: FlowLogTarget::File(path.clone()),
            rotation: Some(Rotation {
                max_bytes: 100,
                keep: 3,
            }),
        };
        let mut log = FlowLog::open(&config).unwrap();
        // 30 records of 20 bytes: five per 100-byte file.
        for n in 0..30 {
            log.write(&serde_json::json!({ "n": format!("{n:010}") }))
                .unwrap();
        }
        log.flush().unwrap();
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["flows.jsonl", "flows.jsonl.1", "flows.jsonl.2"]);
        for file in &files {
            let len = std::fs::metadata(dir.path().join(file)).unwrap().len();
            assert!(len <= 100, "{file}: {len} bytes");
        }
        // The newest records are in the current file, older ones in .1.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("0000000029"), "{current}");
        let older = std::fs::read_to_string(dir.path().join("flows.jsonl.1")).unwrap();
        assert!(older.contains("0000000024"), "{older}");
        assert_eq!(log.rotations(), 5);

        // Reopened, the size already written counts.
        drop(log);
        let mut log = FlowLog::open(&config).unwrap();
        for n in 0..5 {
            log.write(&serde_json::json!({ "n": format!("{n:010}") }))
                .unwrap();
        }
        assert_eq!(log.rotations(), 1);
    }
}
