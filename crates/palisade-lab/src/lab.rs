//! The `Lab`: bring a lab up from an intent, open it again from another
//! process, probe it, run commands in it, and take it down — also after a
//! crash, by finding its namespaces and processes by name.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use palisade_model::{Intent, Protocol};
use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::ip;
use crate::naming::{self, lab_prefix};
use crate::netns;
use crate::plan;
use crate::probe::{self, Job, Place, ProbeRecord, ProbeResult};
use crate::process;
use crate::responder::{self, ServeArgs, WORLD_PORTS};
use crate::state::{
    agents_bpffs_root, state_dir, state_file, AgentInfo, EndpointInfo, NodeInfo, State, Uplink,
    WorldInfo, STATE_ROOT,
};
use crate::topology;

/// How long a stopping agent gets to exit on SIGTERM before SIGKILL.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(5);

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The lab's name (`a-z`, `0-9`, `-`); its namespaces are named `pl_<name>_...`.
    pub name: String,
    /// Forward with the kernel alone (no firewall): the benchmarks' baseline.
    pub plain: bool,
    /// Take down a lab of the same name first instead of failing.
    pub replace: bool,
    /// Program and leading arguments that run a responder; the lab appends
    /// [`ServeArgs::to_args`]. The CLI passes `[<its own path>, "lab", "serve"]`.
    pub responder_command: Vec<OsString>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            name: naming::DEFAULT_LAB_NAME.to_string(),
            plain: false,
            replace: false,
            responder_command: Vec::new(),
        }
    }
}

/// What [`Lab::move_endpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The endpoint's full ref.
    pub endpoint: String,
    /// The node it ran on.
    pub from: String,
    /// The node it runs on now.
    pub to: String,
    /// Its host-side port (same name and MAC on the new node).
    pub host_port: String,
}

/// Name of the workload's new link while it is made, before it becomes `eth0`.
const MOVING_IFNAME: &str = "eth0-moving";

/// What `down` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DownSummary {
    /// Network namespaces deleted.
    pub namespaces: usize,
    /// Processes killed (responders, and anything else left inside the namespaces).
    pub processes: usize,
}

/// A lab that is up: its layout and responders, as recorded in its state file.
#[derive(Debug, Clone)]
pub struct Lab {
    state: State,
}

impl Lab {
    /// Builds the lab for `intent`: one namespace per node, endpoint and
    /// (node, tenant) world, an underlay bridge, and a responder in every
    /// endpoint that serves ports and in every world. Returns once every
    /// responder listens. On failure, removes whatever it made.
    pub fn up(intent: &Intent, options: &LabOptions) -> Result<Lab> {
        let started = Instant::now();
        let mut state = plan::plan(intent, &options.name, options.plain)?;
        if options.responder_command.is_empty() && !state.worlds.is_empty() {
            return Err(LabError::NoResponderCommand);
        }
        if options.replace {
            Lab::down(&options.name)?;
        }
        claim(&options.name)?;
        let built = state
            .write()
            .and_then(|()| topology::build(&state))
            .and_then(|()| start_responders(&mut state, &options.responder_command))
            .and_then(|()| state.write());
        if let Err(e) = built {
            if let Err(cleanup) = Lab::down(&options.name) {
                tracing::warn!(lab = %options.name, error = %cleanup, "cleaning up after a failed up");
            }
            return Err(e);
        }
        tracing::info!(
            lab = %options.name,
            nodes = state.nodes.len(),
            endpoints = state.endpoints.len(),
            worlds = state.worlds.len(),
            plain = state.plain,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "lab is up"
        );
        Ok(Lab { state })
    }

    /// Opens lab `name` from its state file (written by `up`, maybe in another process).
    pub fn open(name: &str) -> Result<Lab> {
        naming::validate_lab_name(name)?;
        match State::read(name)? {
            Some(state) => Ok(Lab { state }),
            None => Err(LabError::LabNotFound {
                name: name.to_string(),
                path: state_file(name),
            }),
        }
    }

    /// Removes everything lab `name` made: its responders (by recorded pid
    /// and start time) and any other process inside its namespaces, every
    /// namespace named `pl_<name>_...` (from the state file and from a scan of
    /// `/run/netns`, so it works without the state file), and the state
    /// directory. Doing it again does nothing.
    pub fn down(name: &str) -> Result<DownSummary> {
        naming::validate_lab_name(name)?;
        let state = State::read(name).unwrap_or_else(|e| {
            tracing::warn!(lab = name, error = %e, "ignoring the state file; cleaning up by name");
            None
        });
        let mut namespaces: BTreeSet<String> = netns::list_with_prefix(&lab_prefix(name))?
            .into_iter()
            .collect();
        if let Some(state) = &state {
            namespaces.extend(state.namespaces());
        }

        let identities: HashSet<_> = namespaces
            .iter()
            .filter_map(|n| netns::identity(n))
            .collect();
        let mut pids = process::pids_in_namespaces(&identities);
        if let Some(state) = &state {
            pids.extend(
                state
                    .responders
                    .iter()
                    .filter(|r| process::is_same_process(r.pid, r.start_time))
                    .map(|r| r.pid),
            );
            pids.extend(
                state
                    .agents
                    .iter()
                    .filter(|a| a.is_running())
                    .map(|a| a.pid),
            );
        }
        pids.sort_unstable();
        pids.dedup();
        let processes = process::kill_all(&pids);

        let existing: Vec<&String> = namespaces
            .iter()
            .filter(|n| netns::netns_path(n).exists())
            .collect();
        let mut batch = ip::Batch::new(None);
        for ns in &existing {
            batch.push(format!("netns del {ns}"));
        }
        ip::run(&batch)?;

        // The agents' pins (maps and links; the links died with the namespaces).
        let pins = agents_bpffs_root(name);
        match fs::remove_dir_all(&pins) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LabError::Io {
                    action: "remove",
                    path: pins,
                    source: e,
                })
            }
            _ => {}
        }

        let dir = state_dir(name);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(LabError::Io {
                    action: "remove",
                    path: dir,
                    source: e,
                })
            }
            _ => {}
        }
        let summary = DownSummary {
            namespaces: existing.len(),
            processes,
        };
        if summary != DownSummary::default() {
            tracing::info!(lab = name, ?summary, "lab is down");
        }
        Ok(summary)
    }

    /// Names of the labs on this machine: those with a state directory and
    /// those with namespaces left (e.g. after a crash).
    pub fn list() -> Result<Vec<String>> {
        let mut labs = BTreeSet::new();
        if let Ok(entries) = fs::read_dir(STATE_ROOT) {
            labs.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
        }
        for ns in netns::list_with_prefix("pl_")? {
            if let Some((lab, _)) = ns["pl_".len()..].split_once('_') {
                labs.insert(lab.to_string());
            }
        }
        Ok(labs
            .into_iter()
            .filter(|l| naming::validate_lab_name(l).is_ok())
            .collect())
    }

    /// The agents recorded for the lab's nodes.
    pub fn agents(&self) -> &[AgentInfo] {
        &self.state.agents
    }

    /// Records an agent started for one of the lab's nodes, so that `down`
    /// and [`Lab::stop_agents`] stop it; replaces an earlier record of the node.
    pub fn record_agent(&mut self, agent: AgentInfo) -> Result<()> {
        self.state.agents.retain(|a| a.node != agent.node);
        self.state.agents.push(agent);
        self.state.agents.sort_by(|a, b| a.node.cmp(&b.node));
        self.state.write()
    }

    /// Stops the recorded agents (SIGTERM, SIGKILL after a few seconds) and
    /// forgets them; returns their records. Their pins stay
    /// and keep the datapath enforcing: remove them with `palisade agent
    /// --uninstall` (`palisade lab agents down` does), or take the lab down.
    pub fn stop_agents(&mut self) -> Result<Vec<AgentInfo>> {
        let running: Vec<AgentInfo> = self
            .state
            .agents
            .iter()
            .filter(|a| a.is_running())
            .cloned()
            .collect();
        let pids: Vec<i32> = running.iter().map(|a| a.pid).collect();
        process::terminate_all(&pids, AGENT_STOP_GRACE);
        let all = std::mem::take(&mut self.state.agents);
        self.state.write()?;
        Ok(all)
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.state.lab
    }

    /// Whether nodes forward with the kernel alone (no firewall).
    pub fn is_plain(&self) -> bool {
        self.state.plain
    }

    /// Everything the lab is made of, as in its state file.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Nodes, in name order.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.state.nodes
    }

    /// Endpoints, in full ref order.
    pub fn endpoints(&self) -> &[EndpointInfo] {
        &self.state.endpoints
    }

    /// Worlds, by node then tenant.
    pub fn worlds(&self) -> &[WorldInfo] {
        &self.state.worlds
    }

    /// The address every world answers on.
    pub fn world_address(&self) -> Ipv4Addr {
        self.state.world_address
    }

    /// The endpoint with full ref `full_ref` (`tenant:ns/name`).
    pub fn endpoint(&self, full_ref: &str) -> Option<&EndpointInfo> {
        self.state.endpoints.iter().find(|e| e.full_ref == full_ref)
    }

    /// Every endpoint as a probe place, in full ref order (for a matrix).
    pub fn endpoint_places(&self) -> Vec<Place> {
        self.state
            .endpoints
            .iter()
            .map(|e| Place::Endpoint(e.full_ref.clone()))
            .collect()
    }

    /// The `palisade agent` flags that place an agent on `node` of this lab:
    /// `--netns`, the overlay's ([`Lab::overlay_args`]) and its `--uplink`s.
    pub fn agent_node_args(&self, node: &str) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(info) = self.nodes().iter().find(|n| n.name == node) {
            args.extend(["--netns".to_string(), info.netns.clone()]);
        }
        args.extend(self.overlay_args(node));
        args.extend(self.uplink_args(node));
        args
    }

    /// The `--uplink` flags of `palisade agent` on `node`, one per tenant
    /// with a world there.
    pub fn uplink_args(&self, node: &str) -> Vec<String> {
        self.uplinks(node)
            .into_iter()
            .flat_map(|u| {
                [
                    "--uplink".to_string(),
                    format!("{}={}@{}", u.tenant, u.ifname, u.nexthop),
                ]
            })
            .collect()
    }

    /// The overlay flags of `palisade agent` on `node`: its
    /// `--underlay-address`, and every other node of the lab as `--peer`.
    pub fn overlay_args(&self, node: &str) -> Vec<String> {
        let mut args = Vec::new();
        for other in self.nodes() {
            if other.name == node {
                args.extend([
                    "--underlay-address".to_string(),
                    other.underlay_address.to_string(),
                ]);
            } else {
                args.extend([
                    "--peer".to_string(),
                    format!("{}={}", other.name, other.underlay_address),
                ]);
            }
        }
        args
    }

    /// The uplinks of `node`: per tenant, the interface toward its world and
    /// the next hop there. Empty for an unknown node.
    pub fn uplinks(&self, node: &str) -> Vec<Uplink> {
        self.state
            .worlds
            .iter()
            .filter(|w| w.node == node)
            .map(|w| Uplink {
                tenant: w.tenant.clone(),
                ifname: w.node_ifname.clone(),
                nexthop: w.nexthop,
            })
            .collect()
    }

    /// The network namespace of `place`.
    pub fn netns(&self, place: &Place) -> Result<String> {
        self.resolve(place).map(|(netns, _)| netns.to_string())
    }

    /// Where `place` lives and the address probes to it go to.
    fn resolve(&self, place: &Place) -> Result<(&str, Option<Ipv4Addr>)> {
        let found = match place {
            Place::Endpoint(full_ref) => self
                .endpoint(full_ref)
                .map(|e| (e.netns.as_str(), e.ips.first().copied())),
            Place::World { node, tenant } => self
                .state
                .worlds
                .iter()
                .find(|w| &w.node == node && &w.tenant == tenant)
                .map(|w| (w.netns.as_str(), Some(self.state.world_address))),
            Place::Node(node) => self
                .state
                .nodes
                .iter()
                .find(|n| &n.name == node)
                .map(|n| (n.netns.as_str(), Some(n.underlay_address))),
        };
        found.ok_or_else(|| LabError::UnknownPlace {
            lab: self.state.lab.clone(),
            place: place.label(),
        })
    }

    /// Sends real packets from `from` to `to` (its first IPv4 address) and
    /// reports what came back within `timeout`. `port` is ignored for ICMP.
    pub fn probe(
        &self,
        from: &Place,
        to: &Place,
        protocol: Protocol,
        port: u16,
        timeout: Duration,
    ) -> ProbeResult {
        self.probe_matrix(&[(from.clone(), to.clone())], protocol, port, timeout)
            .remove(0)
            .result
    }

    /// Like [`Lab::probe`], to any address (e.g. one nobody has).
    pub fn probe_address(
        &self,
        from: &Place,
        to: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        timeout: Duration,
    ) -> ProbeResult {
        let netns = match self.resolve(from) {
            Ok((netns, _)) => netns,
            Err(e) => return ProbeResult::error(e.to_string()),
        };
        let file = match netns::open(netns) {
            Ok(file) => file,
            Err(e) => return ProbeResult::error(e.to_string()),
        };
        let job = Job {
            netns,
            netns_file: &file,
            dst: to,
        };
        probe::run_jobs(&[job], protocol, port, timeout).remove(0).0
    }

    /// Probes every pair side by side and returns one record per pair, in order.
    pub fn probe_matrix(
        &self,
        pairs: &[(Place, Place)],
        protocol: Protocol,
        port: u16,
        timeout: Duration,
    ) -> Vec<ProbeRecord> {
        let mut files: HashMap<&str, Result<File>> = HashMap::new();
        let mut planned: Vec<std::result::Result<(&str, Ipv4Addr), String>> = Vec::new();
        for (from, to) in pairs {
            let resolved = (|| {
                let (netns, _) = self.resolve(from).map_err(|e| e.to_string())?;
                let (_, addr) = self.resolve(to).map_err(|e| e.to_string())?;
                let addr = addr.ok_or_else(|| format!("{} has no IPv4 address", to.label()))?;
                match files.entry(netns).or_insert_with(|| netns::open(netns)) {
                    Ok(_) => Ok((netns, addr)),
                    Err(e) => Err(e.to_string()),
                }
            })();
            planned.push(resolved);
        }
        let jobs: Vec<Job<'_>> = planned
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|(netns, dst)| Job {
                netns,
                netns_file: files[netns].as_ref().expect("opened above"),
                dst: *dst,
            })
            .collect();
        let mut results = probe::run_jobs(&jobs, protocol, port, timeout).into_iter();
        pairs
            .iter()
            .zip(planned)
            .map(|((from, to), planned)| {
                let (result, elapsed) = match planned {
                    Ok(_) => results.next().expect("one result per job"),
                    Err(message) => (ProbeResult::Error { message }, Duration::ZERO),
                };
                ProbeRecord {
                    from: from.label(),
                    to: to.label(),
                    protocol,
                    port: (protocol != Protocol::Icmp).then_some(port),
                    result,
                    elapsed_ms: elapsed.as_secs_f64() * 1000.0,
                }
            })
            .collect()
    }

    /// Moves endpoint `full_ref` to node `to` as a live migration would: the
    /// workload keeps its namespace, addresses, MAC, responder and sockets;
    /// its port is made anew on `to`. Firewall mode only, and the intent
    /// must say `to` first (`palisade lab move` does both in that order; see
    /// docs/lab.md): from then the old node no longer serves the port and
    /// the new one is ready for it, so nothing passes unchecked.
    ///
    /// Steps, each one batch of `ip` commands: a veth pair on `to` (host side
    /// with the port's name, MAC and MTU; the workload's side, with its MAC,
    /// as `eth0-moving` in the workload's namespace); the old pair goes
    /// (with the old `eth0`); `eth0-moving` becomes `eth0`, gets the
    /// addresses and the default route, and comes up. The workload is
    /// without a link for a few milliseconds. The state file is updated.
    pub fn move_endpoint(&mut self, full_ref: &str, to: &str) -> Result<Moved> {
        let refused = |reason: String| LabError::Move {
            lab: self.state.lab.clone(),
            endpoint: full_ref.to_string(),
            reason,
        };
        if self.state.plain {
            return Err(refused(
                "the lab is in plain mode (no firewall, routes per node): build it without                  --plain"
                    .into(),
            ));
        }
        let ep = self
            .endpoint(full_ref)
            .cloned()
            .ok_or_else(|| LabError::UnknownPlace {
                lab: self.state.lab.clone(),
                place: full_ref.to_string(),
            })?;
        let from = ep.node.clone();
        if from == to {
            return Err(refused(format!("it already runs on node {to}")));
        }
        let node_ns = |name: &str| {
            self.state
                .nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.netns.clone())
        };
        let to_ns = node_ns(to).ok_or_else(|| {
            let nodes: Vec<&str> = self.state.nodes.iter().map(|n| n.name.as_str()).collect();
            refused(format!(
                "the lab has no node {to} (it has {})",
                nodes.join(", ")
            ))
        })?;
        let from_ns = node_ns(&from).expect("an endpoint's node is one of the lab's");
        if self
            .state
            .endpoints
            .iter()
            .any(|e| e.node == to && e.host_port == ep.host_port)
        {
            return Err(refused(format!(
                "node {to} already has a port named {}",
                ep.host_port
            )));
        }

        // A leftover of an interrupted move would block the name.
        let mut cleanup = ip::Batch::new(Some(&ep.netns));
        cleanup.push(format!("link del {MOVING_IFNAME}"));
        let _ = ip::run(&cleanup);

        let mut create = ip::Batch::new(Some(&to_ns));
        create.push(topology::endpoint_link(
            &ep,
            topology::workload_mtu(false),
            MOVING_IFNAME,
        ));
        create.push(format!("link set {} up", ep.host_port));
        ip::run(&create)?;
        let mut remove = ip::Batch::new(Some(&from_ns));
        remove.push(format!("link del {}", ep.host_port));
        ip::run(&remove)?;
        let mut inside = ip::Batch::new(Some(&ep.netns));
        inside.push(format!(
            "link set {MOVING_IFNAME} name {}",
            crate::naming::INNER_IFNAME
        ));
        for line in topology::endpoint_inside(&ep) {
            inside.push(line);
        }
        ip::run(&inside)?;

        let entry = self
            .state
            .endpoints
            .iter_mut()
            .find(|e| e.full_ref == full_ref)
            .expect("found above");
        entry.node = to.to_string();
        self.state.write()?;
        tracing::info!(endpoint = full_ref, from = %from, to, "endpoint moved");
        Ok(Moved {
            endpoint: full_ref.to_string(),
            from,
            to: to.to_string(),
            host_port: ep.host_port,
        })
    }

    /// Starts capturing what crosses the lab's underlay (see [`crate::UnderlayCapture`]).
    pub fn capture_underlay(&self) -> Result<crate::capture::UnderlayCapture> {
        crate::capture::UnderlayCapture::open(&self.state)
    }

    /// Runs `argv` inside the namespace of `place` with inherited standard
    /// input, output and error, and returns its exit status.
    pub fn exec<S: AsRef<OsStr>>(&self, place: &Place, argv: &[S]) -> Result<ExitStatus> {
        let (netns, _) = self.resolve(place)?;
        netns::exec(netns, argv)
    }
}

/// Every ordered pair of distinct places: what a full reachability matrix probes.
pub fn ordered_pairs(places: &[Place]) -> Vec<(Place, Place)> {
    let mut pairs = Vec::new();
    for (i, from) in places.iter().enumerate() {
        for (j, to) in places.iter().enumerate() {
            if i != j {
                pairs.push((from.clone(), to.clone()));
            }
        }
    }
    pairs
}

/// Makes sure no lab of this name exists, then takes the name by creating its
/// state directory (atomic, so two `up`s of one name cannot both proceed).
fn claim(name: &str) -> Result<()> {
    let leftovers = netns::list_with_prefix(&lab_prefix(name))?;
    if !leftovers.is_empty() {
        return Err(LabError::LabExists {
            name: name.to_string(),
            evidence: format!("{} namespaces such as {}", leftovers.len(), leftovers[0]),
        });
    }
    fs::create_dir_all(STATE_ROOT).map_err(|source| LabError::Io {
        action: "create",
        path: STATE_ROOT.into(),
        source,
    })?;
    let dir = state_dir(name);
    match fs::create_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(LabError::LabExists {
            name: name.to_string(),
            evidence: format!("state directory {}", dir.display()),
        }),
        Err(source) => Err(LabError::Io {
            action: "create",
            path: dir,
            source,
        }),
    }
}

/// Starts a responder in every endpoint that serves ports and in every world,
/// all at once, and records each as it reports ready.
fn start_responders(state: &mut State, command: &[OsString]) -> Result<()> {
    let mut wanted: Vec<ServeArgs> = state
        .endpoints
        .iter()
        .filter(|e| !e.serve.is_empty())
        .map(|e| ServeArgs {
            netns: e.netns.clone(),
            name: e.full_ref.clone(),
            ports: e.serve.clone(),
        })
        .collect();
    wanted.extend(state.worlds.iter().map(|w| ServeArgs {
        netns: w.netns.clone(),
        name: probe::world_label(&w.node, &w.tenant),
        ports: WORLD_PORTS.to_vec(),
    }));
    if wanted.is_empty() {
        return Ok(());
    }

    let dir = state_dir(&state.lab);
    let mut starting = Vec::new();
    let mut pids = Vec::new();
    let mut outcome = Ok(());
    for args in &wanted {
        let log = dir.join(format!("{}.log", args.netns));
        match responder::spawn(command, args, &log) {
            Ok(s) => {
                pids.push(s.pid());
                starting.push(s);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        let deadline = Instant::now() + responder::READY_TIMEOUT;
        for s in starting {
            match responder::wait_ready(s, deadline) {
                Ok(info) => state.responders.push(info),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
    }
    if outcome.is_err() {
        // Some may not have entered their namespace yet, where `down` would
        // not find them: kill every one started, by pid.
        process::kill_all(&pids);
    }
    outcome
}
