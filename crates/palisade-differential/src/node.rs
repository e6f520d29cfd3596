//! [`TestNode`]: node `n1`'s real datapath, filled exactly as the agent fills
//! it, with packets run through its programs by BPF_PROG_TEST_RUN.
//!
//! One node serves many intents one after the other: loading an intent
//! computes the agent's desired map contents (`palisade_agent::desired`,
//! the same pure function the agent runs), diffs them against what the maps
//! hold and applies the agent's ordered plan (`palisade_agent::reconcile`),
//! then checks that the maps hold exactly the desired contents. So a
//! stale entry left by an earlier intent would show up as a disagreement,
//! and a case costs milliseconds instead of a fresh load of every program.
//!
//! BPF_PROG_TEST_RUN needs the interfaces a packet names to exist in the
//! calling thread's network namespace: the node lives in a namespace of its
//! own with a pool of veth ports (one per local endpoint) and one uplink per
//! tenant; the thread that makes the node stays in that namespace until it
//! drops it. The namespace and the bpffs directory are removed on drop, also
//! when a test panics.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_agent::reconcile::{apply_additions, apply_policy, apply_removals, RemovalsFirst};
use palisade_agent::UplinkSpec;
use palisade_agent::{desired, node_intent, Link, MapContents, NodeInputs, NodeLinks, Plan};
use palisade_datapath::abi::{self, Config, CtEntry, CtKey};
use palisade_datapath::testing::packet::{ethernet, ETH_P_IP};
use palisade_datapath::testing::{prog_test_run, TC_ACT_OK, TC_ACT_REDIRECT};
use palisade_datapath::NetnsGuard;
use palisade_datapath::{Datapath, DatapathConfig, EventReader, FlowEvent, Hook, MapSizes};
use palisade_model::Intent;
use palisade_policy::{CompiledTables, Identities};

use crate::flows::{End, NodeFlow, Stage, NODE_ADDRESS};
use crate::intents::{MAX_ENDPOINTS, NODE, REMOTE_NODE, TENANTS};

/// A name unique to this process and call, short enough for interface and
/// namespace names.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{:x}x{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace made for the test, deleted on drop.
#[derive(Debug)]
struct Netns(String);

impl Netns {
    /// `ip netns add`, loopback up, then `lines` through `ip -batch`.
    fn new(name: &str, lines: &[String]) -> Netns {
        run("ip", &["netns", "add", name], "");
        let ns = Netns(name.to_string());
        let mut batch = String::from("link set lo up\n");
        for line in lines {
            batch.push_str(line);
            batch.push('\n');
        }
        run("ip", &["-n", name, "-batch", "-"], &batch);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A bpffs directory for the node's pins, removed (pins and all) on drop.
#[derive(Debug)]
struct BpffsDir(PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program args` with `stdin`, panicking with its output on failure.
fn run(program: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Small maps: several test threads make nodes at once.
fn sizes() -> MapSizes {
    MapSizes {
        endpoints: 64,
        ipcache: 1024,
        policy: 16384,
        conntrack: 4096,
        tenants: 16,
        rule_counters: 4096,
        ratelimit: 1024,
        events_bytes: 1 << 20,
    }
}

/// One interface of the node.
#[derive(Debug, Clone)]
struct Port {
    name: String,
    ifindex: u32,
    mac: [u8; 6],
}

/// The underlay address of [`REMOTE_NODE`].
const REMOTE_NODE_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 255, 0, 2);

/// The next hop of tenant `i`'s uplink.
fn nexthop(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(169, 254, 0, 4 * i as u8 + 1)
}

/// What a program did with one packet.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The hook that ran.
    pub hook: Hook,
    /// `TC_ACT_*`.
    pub retval: u32,
    /// The events it emitted.
    pub events: Vec<FlowEvent>,
}

/// Where an admitted packet goes, as the hook returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Redirected: into a local workload, or out of the uplink.
    Redirect,
    /// On into the kernel: to the node's stack, or on to the workload
    /// (`to_endpoint`).
    Pass,
    /// To an endpoint of another node: the overlay's business, not checked
    /// here beyond "not dropped by policy".
    Remote,
}

impl Delivery {
    /// The hook's return value, when there is one to expect.
    pub fn retval(self) -> Option<u32> {
        match self {
            Delivery::Redirect => Some(TC_ACT_REDIRECT),
            Delivery::Pass => Some(TC_ACT_OK),
            Delivery::Remote => None,
        }
    }
}

/// A deliberate fault in the maps, to check that the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The maps hold exactly what the agent computes.
    None,
    /// Every POLICY entry that denies allows instead.
    DenyBecomesAllow,
    /// Every entry of the ingress side allows, as if the datapath skipped
    /// the destination's ingress check.
    IngressIgnored,
    /// Every entry names the next rule's cookie (in cookie order): the
    /// verdicts stay right, the attributions go wrong.
    CookiesRotated,
}

/// The intent the node enforces now, and where its endpoints are.
#[derive(Debug, Default)]
struct Loaded {
    /// Endpoint index (in the intent) -> its port, for local endpoints.
    ports: BTreeMap<usize, Port>,
    /// Endpoint index -> the workload's MAC.
    macs: BTreeMap<usize, [u8; 6]>,
    /// Tenant name -> (tenant index, uplink).
    tenants: BTreeMap<String, (u32, Port)>,
}

/// Node `n1`'s datapath in a namespace of its own (see the module docs).
pub struct TestNode {
    dp: Datapath,
    events: EventReader,
    pool: Vec<Port>,
    uplinks: Vec<Port>,
    loaded: Loaded,
    // Dropped in this order: the datapath's fds, then back to the original
    // namespace, then the pins, then the namespace.
    _inside: NetnsGuard,
    _bpffs: BpffsDir,
    _netns: Netns,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("bpffs", &self._bpffs.0)
            .field("netns", &self._netns.0)
            .finish_non_exhaustive()
    }
}

impl TestNode {
    /// A node with a fresh datapath in namespace and bpffs directory
    /// `unique(tag)`; the calling thread enters the namespace until drop.
    pub fn new(tag: &str) -> TestNode {
        let name = unique(tag);
        let mut lines = Vec::new();
        for k in 0..MAX_ENDPOINTS {
            lines.push(format!("link add dp{k} type veth peer name dq{k}"));
        }
        for i in 0..TENANTS.len() {
            lines.push(format!("link add up{i} type veth peer name uq{i}"));
        }
        let netns = Netns::new(&name, &lines);
        let inside = NetnsGuard::enter(&name).expect("enter the node's namespace");
        let bpffs = BpffsDir(PathBuf::from("/sys/fs/bpf/palisade-test").join(&name));
        let mut dp = Datapath::open(&DatapathConfig {
            bpffs_dir: bpffs.0.clone(),
            map_sizes: sizes(),
        })
        .expect("open the datapath");
        let events = dp.take_event_reader().expect("the event reader");
        // Every event, none rate-limited: each packet's events are checked.
        dp.maps_mut()
            .config
            .set(&Config {
                event_interval_ms: 0,
                ..Config::DEFAULT
            })
            .expect("write CONFIG");
        let port = |name: String, last: u8| {
            let ifindex = nix::net::if_::if_nametoindex(name.as_str())
                .unwrap_or_else(|e| panic!("no interface {name}: {e}"));
            Port {
                name,
                ifindex,
                mac: [0x06, 0, 0, 0, 0x10, last],
            }
        };
        let pool = (0..MAX_ENDPOINTS)
            .map(|k| port(format!("dp{k}"), k as u8))
            .collect();
        let uplinks = (0..TENANTS.len())
            .map(|i| port(format!("up{i}"), 0x80 | i as u8))
            .collect();
        TestNode {
            dp,
            events,
            pool,
            uplinks,
            loaded: Loaded::default(),
            _inside: inside,
            _bpffs: bpffs,
            _netns: netns,
        }
    }

    /// The node's interfaces as the agent would scan them for `intent`:
    /// each local endpoint's host interface is a port of the pool.
    fn links_for(&mut self, intent: &Intent, ids: &Identities) -> (NodeLinks, Vec<UplinkSpec>) {
        let mut loaded = Loaded::default();
        let mut links = NodeLinks::default();
        links.addresses.insert(NODE_ADDRESS);
        let local = intent
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.node == NODE);
        for ((index, e), port) in local.zip(&self.pool) {
            links.links.insert(
                e.host_interface(),
                Link {
                    ifindex: port.ifindex,
                    mac: Some(port.mac),
                },
            );
            loaded.ports.insert(index, port.clone());
        }
        for (index, e) in intent.endpoints.iter().enumerate() {
            loaded.macs.insert(index, e.workload_mac());
        }
        let mut uplinks = Vec::new();
        for (i, (tenant, port)) in TENANTS.iter().zip(&self.uplinks).enumerate() {
            links.links.insert(
                port.name.clone(),
                Link {
                    ifindex: port.ifindex,
                    mac: Some(port.mac),
                },
            );
            if let Some(index) = ids.tenant_index(tenant) {
                loaded
                    .tenants
                    .insert(tenant.to_string(), (u32::from(index), port.clone()));
                uplinks.push(UplinkSpec {
                    tenant: tenant.to_string(),
                    ifname: port.name.clone(),
                    nexthop: nexthop(i),
                });
            }
        }
        self.loaded = loaded;
        (links, uplinks)
    }

    /// Makes the maps hold what the agent computes for `intent` (compiled
    /// into `tables` with `ids`), by the agent's own diff and ordered plan,
    /// with `fault` applied to the desired contents; bumps the policy
    /// revision when the agent would (a verdict may have changed). Fails
    /// when the maps then hold anything else.
    pub fn load(
        &mut self,
        intent: &Intent,
        ids: &Identities,
        tables: &CompiledTables,
        fault: Fault,
    ) -> Result<(), String> {
        let (links, uplinks) = self.links_for(intent, ids);
        let local = node_intent(intent, NODE);
        let nodes = BTreeMap::from([(REMOTE_NODE.to_string(), REMOTE_NODE_ADDRESS)]);
        let mut want = desired(&NodeInputs {
            node: NODE,
            intent: &local,
            identities: ids,
            tables,
            links: &links,
            uplinks: &uplinks,
            nodes: &nodes,
        });
        apply_fault(&mut want.maps, fault);
        let maps = self.dp.maps_mut();
        let actual = MapContents::read(maps).map_err(|e| format!("read the maps: {e}"))?;
        let plan = Plan::between(&actual, &want.maps);
        let order = RemovalsFirst::default();
        apply_additions(&plan, order, maps).map_err(|e| format!("apply additions: {e}"))?;
        apply_policy(&plan, order, maps).map_err(|e| format!("apply policy: {e}"))?;
        apply_removals(&plan, order, maps).map_err(|e| format!("apply removals: {e}"))?;
        if plan.changes_verdicts() {
            self.dp
                .bump_policy_revision()
                .map_err(|e| format!("bump the policy revision: {e}"))?;
        }
        let now = MapContents::read(self.dp.maps()).map_err(|e| format!("read the maps: {e}"))?;
        if now != want.maps {
            return Err(format!(
                "after the agent's plan the maps differ from its desired state:\n{}",
                contents_diff(&now, &want.maps)
            ));
        }
        Ok(())
    }

    /// Forgets every connection and every event not read yet.
    pub fn reset_connections(&mut self) {
        let ct = &mut self.dp.maps_mut().conntrack;
        for (key, _) in ct.entries().expect("list CT") {
            ct.remove(&key).expect("delete a CT entry");
        }
        self.events.drain().expect("drain events");
    }

    /// The tenant index of `tenant` in the loaded intent.
    pub fn tenant_index(&self, tenant: &str) -> u32 {
        self.loaded.tenants[tenant].0
    }

    /// The conntrack entry of the connection whose first packet is `flow`'s
    /// numbered `id`, found under its key as the datapath made it.
    pub fn connection(&self, flow: &NodeFlow, id: u16) -> Option<CtEntry> {
        let (saddr, sport, daddr, dport) = flow.tuple(id);
        let tenant = self.tenant_index(&flow.tenant);
        let key = CtKey::new(tenant, flow.probe.proto(), saddr, sport, daddr, dport);
        self.dp.maps().conntrack.get(&key).expect("read CT")
    }

    /// Whether CT holds the connection of `flow` numbered `id` under its
    /// own key or reversed.
    pub fn tracks(&self, flow: &NodeFlow, id: u16) -> bool {
        let (saddr, sport, daddr, dport) = flow.tuple(id);
        let tenant = self.tenant_index(&flow.tenant);
        let proto = flow.probe.proto();
        let ct = &self.dp.maps().conntrack;
        [
            CtKey::new(tenant, proto, saddr, sport, daddr, dport),
            CtKey::new(tenant, proto, daddr, dport, saddr, sport),
        ]
        .iter()
        .any(|k| ct.get(k).expect("read CT").is_some())
    }

    /// Packets counted for any rule so far (a rule decided them).
    pub fn rule_hits(&self) -> u64 {
        self.dp
            .maps()
            .counters
            .all_rules()
            .expect("read RULE_COUNTERS")
            .values()
            .map(|c| c.packets)
            .sum()
    }

    /// The hook, interface and frame of `stage` of `flow`'s connection
    /// numbered `id`, and where it must go when admitted. `None` when the
    /// packet would not reach this node's programs (it comes from another
    /// node).
    pub fn packet(
        &self,
        flow: &NodeFlow,
        stage: Stage,
        id: u16,
    ) -> Option<(Hook, u32, Vec<u8>, Delivery)> {
        let (sender, receiver) = match stage {
            Stage::First | Stage::Again => (flow.src, flow.dst),
            Stage::Reply => (flow.dst, flow.src),
        };
        let ip = flow.ipv4_packet(stage, id);
        let world_mac = [0x06, 0, 0, 0, 0x20, 1];
        let (hook, port, frame) = match sender {
            End::Endpoint { index, .. } => {
                let port = self.loaded.ports.get(&index)?;
                let frame = ethernet(port.mac, self.loaded.macs[&index], ETH_P_IP, &ip);
                (Hook::FromEndpoint, port, frame)
            }
            End::Address(_) => {
                let (_, uplink) = &self.loaded.tenants[&flow.tenant];
                let frame = ethernet(uplink.mac, world_mac, ETH_P_IP, &ip);
                (Hook::FromUplink, uplink, frame)
            }
            End::Host => {
                let End::Endpoint { index, .. } = receiver else {
                    return None;
                };
                let port = self.loaded.ports.get(&index)?;
                let frame = ethernet(self.loaded.macs[&index], port.mac, ETH_P_IP, &ip);
                (Hook::ToEndpoint, port, frame)
            }
        };
        let delivery = match receiver {
            _ if hook == Hook::ToEndpoint => Delivery::Pass,
            End::Host => Delivery::Pass,
            End::Endpoint { index, .. } if !self.loaded.ports.contains_key(&index) => {
                Delivery::Remote
            }
            _ => Delivery::Redirect,
        };
        Some((hook, port.ifindex, frame, delivery))
    }

    /// Runs `hook`'s program on `frame` received on `ifindex` and collects
    /// the events it emitted.
    pub fn send(&mut self, hook: Hook, ifindex: u32, frame: &[u8]) -> Observation {
        let program = self.dp.program(hook).expect("the hook's program");
        let out = prog_test_run(program, frame, ifindex).expect("BPF_PROG_TEST_RUN");
        Observation {
            hook,
            retval: out.retval,
            events: self.events.drain().expect("read events"),
        }
    }
}

/// Breaks `maps` as `fault` says.
fn apply_fault(maps: &mut MapContents, fault: Fault) {
    match fault {
        Fault::None => {}
        Fault::DenyBecomesAllow => {
            for v in maps.policy.values_mut() {
                v.verdict = abi::Verdict::Allow as u8;
            }
        }
        Fault::IngressIgnored => {
            for (k, v) in maps.policy.iter_mut() {
                if k.direction == abi::Direction::Ingress as u8 {
                    v.verdict = abi::Verdict::Allow as u8;
                }
            }
        }
        Fault::CookiesRotated => {
            let cookies: std::collections::BTreeSet<u32> =
                maps.policy.values().map(|v| v.cookie).collect();
            let cookies: Vec<u32> = cookies.into_iter().collect();
            for v in maps.policy.values_mut() {
                let i = cookies.binary_search(&v.cookie).expect("listed above");
                v.cookie = cookies[(i + 1) % cookies.len()];
            }
        }
    }
}

/// The first differences between two map contents, for a failure message.
fn contents_diff(now: &MapContents, want: &MapContents) -> String {
    let mut out = Vec::new();
    for (k, v) in &want.policy {
        if now.policy.get(k) != Some(v) {
            out.push(format!(
                "POLICY {k:?}: want {v:?}, have {:?}",
                now.policy.get(k)
            ));
        }
    }
    for k in now.policy.keys().filter(|k| !want.policy.contains_key(k)) {
        out.push(format!("POLICY {k:?}: stale"));
    }
    for (k, v) in &want.ipcache {
        if now.ipcache.get(k) != Some(v) {
            out.push(format!(
                "IPCACHE {k:?}: want {v:?}, have {:?}",
                now.ipcache.get(k)
            ));
        }
    }
    for k in now.ipcache.keys().filter(|k| !want.ipcache.contains_key(k)) {
        out.push(format!("IPCACHE {k:?}: stale"));
    }
    if now.endpoints != want.endpoints {
        out.push(format!(
            "ENDPOINTS: want {:?}, have {:?}",
            want.endpoints, now.endpoints
        ));
    }
    if now.tenants != want.tenants || now.uplinks != want.uplinks {
        out.push(format!(
            "TENANTS/UPLINKS: want {:?} {:?}, have {:?} {:?}",
            want.tenants, want.uplinks, now.tenants, now.uplinks
        ));
    }
    out.truncate(20);
    out.join("\n")
}
