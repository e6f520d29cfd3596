//! The hooks the agent has attached, port by port: attaching to ports as
//! they appear, detaching from ports that go away, and taking over the
//! attachments a previous agent left (pinned TCX links, updated in place so
//! that no packet goes unfiltered; see `palisade_datapath::Datapath::attach`).

use std::collections::BTreeMap;
use std::fs;

use palisade_datapath::{Datapath, Hook, Interface, DEFAULT_NETNS};

use crate::desired::Port;

/// One port's attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attached {
    /// Its name when attached (empty for a previous agent's link).
    name: String,
    /// Hooks attached.
    hooks: Vec<Hook>,
    /// Left by a previous agent: still runs that agent's programs.
    adopted: bool,
}

/// Attachments by ifindex.
#[derive(Debug, Default)]
pub struct Ports {
    attached: BTreeMap<u32, Attached>,
}

/// The hook of a link pin named `<ifindex>-<hook>`.
pub(crate) fn hook_from_pin(name: &str) -> Option<Hook> {
    match name {
        "from_endpoint" => Some(Hook::FromEndpoint),
        "to_endpoint" => Some(Hook::ToEndpoint),
        "from_uplink" => Some(Hook::FromUplink),
        "from_overlay" => Some(Hook::FromOverlay),
        _ => None,
    }
}

impl Ports {
    /// The links a previous agent pinned in `dp`'s directory for the
    /// agent's own namespace (`links/default/<ifindex>-<hook>`).
    pub fn adopt(dp: &Datapath) -> Ports {
        let mut ports = Ports::default();
        let dir = dp.bpffs_dir().join("links").join(DEFAULT_NETNS);
        let Ok(entries) = fs::read_dir(&dir) else {
            return ports;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((ifindex, hook)) = name.split_once('-') else {
                continue;
            };
            let (Ok(ifindex), Some(hook)) = (ifindex.parse::<u32>(), hook_from_pin(hook)) else {
                continue;
            };
            let port = ports.attached.entry(ifindex).or_insert(Attached {
                name: String::new(),
                hooks: Vec::new(),
                adopted: true,
            });
            port.hooks.push(hook);
        }
        if !ports.attached.is_empty() {
            tracing::info!(
                ports = ports.attached.len(),
                "found the attachments of a previous agent"
            );
        }
        ports
    }

    /// Attaches every hook of `desired` ports that this agent has not
    /// attached yet (a previous agent's links get this agent's programs in
    /// place). A port that fails is logged and tried again next time.
    /// Returns the number of hooks attached.
    pub fn attach_new(&mut self, dp: &Datapath, desired: &BTreeMap<u32, Port>) -> usize {
        let mut count = 0;
        for (&ifindex, port) in desired {
            let current = self.attached.get(&ifindex);
            let missing: Vec<Hook> = port
                .hooks()
                .iter()
                .copied()
                .filter(|hook| match current {
                    Some(a) if !a.adopted && a.name == port.name => !a.hooks.contains(hook),
                    _ => true,
                })
                .collect();
            if missing.is_empty() {
                continue;
            }
            let entry = self.attached.entry(ifindex).or_insert(Attached {
                name: port.name.clone(),
                hooks: Vec::new(),
                adopted: false,
            });
            if entry.adopted || entry.name != port.name {
                *entry = Attached {
                    name: port.name.clone(),
                    hooks: Vec::new(),
                    adopted: false,
                };
            }
            for hook in missing {
                match dp.attach(None, &Interface::Index(ifindex), hook) {
                    Ok(a) => {
                        tracing::debug!(
                            port = %port.name,
                            ifindex,
                            ?hook,
                            replaced = a.replaced,
                            role = ?port.role,
                            "attached"
                        );
                        entry.hooks.push(hook);
                        count += 1;
                    }
                    Err(e) => tracing::warn!(
                        port = %port.name,
                        ifindex,
                        ?hook,
                        error = %e,
                        "cannot attach; will try again when the node's interfaces change"
                    ),
                }
            }
        }
        count
    }

    /// Detaches the ports that are no longer desired (their endpoint or
    /// uplink went away) and forgets those whose interface is gone. Returns
    /// the number of hooks detached.
    pub fn detach_gone(&mut self, dp: &Datapath, desired: &BTreeMap<u32, Port>) -> usize {
        let gone: Vec<u32> = self
            .attached
            .keys()
            .filter(|ifindex| !desired.contains_key(ifindex))
            .copied()
            .collect();
        let mut count = 0;
        let mut prune = false;
        for ifindex in gone {
            let port = self.attached.remove(&ifindex).expect("listed above");
            for hook in &port.hooks {
                match dp.detach(None, &Interface::Index(ifindex), *hook) {
                    Ok(true) => count += 1,
                    Ok(false) => {}
                    // The interface is gone and its links with it: only the pins remain.
                    Err(palisade_datapath::Error::NoInterface { .. }) => prune = true,
                    Err(e) => {
                        tracing::warn!(ifindex, ?hook, error = %e, "cannot detach");
                        prune = true;
                    }
                }
            }
            tracing::info!(port = %port.name, ifindex, "detached");
        }
        if prune {
            match dp.prune_stale_links() {
                Ok(n) if n > 0 => tracing::debug!(pins = n, "removed pins of vanished ports"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove stale link pins"),
            }
        }
        count
    }

    /// Number of ports with at least one hook attached.
    pub fn count(&self) -> usize {
        self.attached.len()
    }

    /// Whether this agent attached every hook of `port` at `ifindex`.
    pub fn is_attached(&self, ifindex: u32, port: &Port) -> bool {
        self.attached.get(&ifindex).is_some_and(|a| {
            !a.adopted && a.name == port.name && port.hooks().iter().all(|h| a.hooks.contains(h))
        })
    }
}
