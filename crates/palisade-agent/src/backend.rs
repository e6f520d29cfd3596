//! Where the agent's reconcile goes: the kernel (the eBPF datapath, its
//! maps and the hooks on the node's ports) or, for benchmarks only, the
//! simulated datapath (`simulation.rs`), which enforces nothing. The loop
//! (`agent.rs`) computes, diffs and orders the same way for both.

use std::collections::BTreeMap;

use palisade_datapath::{Datapath, DatapathConfig, EventReader};

use crate::config::AgentConfig;
use crate::desired::Port;
use crate::error::Result;
use crate::ports::Ports;
use crate::reconcile::{
    apply_additions, apply_policy, apply_removals, Capacities, MapContents, Plan, RemovalsFirst,
};
use crate::sample::Sampler;
use crate::simulation::SimulatedDatapath;

/// The kernel's datapath and what the agent keeps about it.
pub(crate) struct Kernel {
    /// The loaded (or adopted) datapath.
    pub dp: Datapath,
    /// Its maps' sizes.
    pub capacities: Capacities,
    /// Reads its counters and fill levels.
    pub sampler: Sampler,
    /// The hooks attached to the node's ports.
    pub ports: Ports,
}

/// The datapath the agent reconciles.
pub(crate) enum Backend {
    /// The kernel: what the agent is for.
    Kernel(Box<Kernel>),
    /// A SIMULATION for benchmarks (`--simulate-datapath`): recording maps
    /// in memory, nothing enforced.
    Simulated(Box<SimulatedDatapath>),
}

impl Backend {
    /// Loads (or adopts) the kernel's datapath, or makes the simulated one
    /// when `config.simulate_datapath`. The kernel's also hands over its
    /// event reader.
    pub fn open(config: &AgentConfig) -> Result<(Backend, Option<EventReader>)> {
        if config.simulate_datapath {
            let capacities = Capacities::of_sizes(&config.map_sizes);
            let sim = SimulatedDatapath::new(capacities);
            return Ok((Backend::Simulated(Box::new(sim)), None));
        }
        let mut dp = Datapath::open(&DatapathConfig {
            bpffs_dir: config.bpffs_dir.clone(),
            map_sizes: config.map_sizes,
        })?;
        let capacities = Capacities::read(&config.bpffs_dir)?;
        let sampler = Sampler::open(&config.bpffs_dir, capacities, config.timing.conntrack_count);
        let events = dp.take_event_reader()?;
        let ports = Ports::adopt(&dp);
        let kernel = Kernel {
            dp,
            capacities,
            sampler,
            ports,
        };
        Ok((Backend::Kernel(Box::new(kernel)), Some(events)))
    }

    /// Whether this is the simulation.
    pub fn simulated(&self) -> bool {
        matches!(self, Backend::Simulated(_))
    }

    /// Whether the maps of an earlier agent were adopted.
    pub fn adopted(&self) -> bool {
        match self {
            Backend::Kernel(k) => k.dp.adopted(),
            Backend::Simulated(_) => false,
        }
    }

    /// The maps' sizes.
    pub fn capacities(&self) -> &Capacities {
        match self {
            Backend::Kernel(k) => &k.capacities,
            Backend::Simulated(sim) => sim.capacities(),
        }
    }

    /// What the maps hold now.
    pub fn read_contents(&self) -> Result<MapContents> {
        match self {
            Backend::Kernel(k) => MapContents::read(k.dp.maps()),
            Backend::Simulated(sim) => Ok(sim.contents()),
        }
    }

    /// Applies a plan in order (see `reconcile.rs`), attaching new ports
    /// after the additions and detaching gone ones after the policy; bumps
    /// the policy revision when a verdict may change. Returns the hooks
    /// attached and detached.
    pub fn apply(
        &mut self,
        plan: &Plan,
        first: RemovalsFirst,
        ports: &BTreeMap<u32, Port>,
    ) -> Result<(usize, usize)> {
        match self {
            Backend::Kernel(k) => {
                apply_additions(plan, first, k.dp.maps_mut())?;
                let attached = k.ports.attach_new(&k.dp, ports);
                apply_policy(plan, first, k.dp.maps_mut())?;
                let detached = k.ports.detach_gone(&k.dp, ports);
                apply_removals(plan, first, k.dp.maps_mut())?;
                if plan.changes_verdicts() {
                    k.dp.bump_policy_revision()?;
                }
                Ok((attached, detached))
            }
            Backend::Simulated(sim) => sim.apply(plan, first, ports),
        }
    }

    /// The datapath's policy revision (0 when it cannot be read).
    pub fn policy_revision(&self) -> u32 {
        match self {
            Backend::Kernel(k) => {
                k.dp.maps()
                    .config
                    .get()
                    .map(|c| c.policy_revision)
                    .unwrap_or(0)
            }
            Backend::Simulated(sim) => sim.policy_revision(),
        }
    }

    /// Whether every hook of `port` at `ifindex` is attached.
    pub fn is_attached(&self, ifindex: u32, port: &Port) -> bool {
        match self {
            Backend::Kernel(k) => k.ports.is_attached(ifindex, port),
            Backend::Simulated(sim) => sim.is_attached(ifindex, port),
        }
    }

    /// Ports with hooks attached.
    pub fn port_count(&self) -> usize {
        match self {
            Backend::Kernel(k) => k.ports.count(),
            Backend::Simulated(sim) => sim.port_count(),
        }
    }
}
