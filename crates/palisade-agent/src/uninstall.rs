//! Removing palisade from a node (`palisade agent --uninstall`): detach
//! every hook the agent pinned, remove its bpffs directory (maps, links) and
//! the overlay's VXLAN device.
//! Run it with the agent stopped and in the node's network namespace (the
//! CLI's `--netns`): links pinned for the agent's own namespace are looked
//! up there.

use std::fs;
use std::path::Path;

use palisade_datapath::{Datapath, DatapathConfig, Interface, DEFAULT_NETNS};

use crate::error::{AgentError, Result};
use crate::ports::hook_from_pin;

/// What an uninstall removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uninstalled {
    /// Hooks detached.
    pub detached: usize,
    /// Whether the pin directory existed and was removed.
    pub removed_dir: bool,
    /// Whether the overlay device ([`crate::OVERLAY_DEVICE`]) was there and deleted.
    pub removed_overlay: bool,
}

/// Detaches every pinned hook under `bpffs_dir` and removes the directory.
/// Traffic on the ports is then no longer filtered by palisade (a node that
/// does not forward, like a lab node in firewall mode, then passes nothing).
pub fn uninstall(bpffs_dir: &Path) -> Result<Uninstalled> {
    if !bpffs_dir.exists() {
        return Ok(Uninstalled::default());
    }
    let mut out = Uninstalled::default();
    // Detach explicitly: removing a link's last pin also detaches it, but
    // only once the kernel releases it.
    match Datapath::open(&DatapathConfig::new(bpffs_dir)) {
        Ok(dp) => {
            let links = bpffs_dir.join("links");
            for ns in fs::read_dir(&links).into_iter().flatten().flatten() {
                let ns_name = ns.file_name().to_string_lossy().into_owned();
                let netns = (ns_name != DEFAULT_NETNS).then_some(ns_name.as_str());
                for pin in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    let name = pin.file_name().to_string_lossy().into_owned();
                    let Some((ifindex, hook)) = name.split_once('-') else {
                        continue;
                    };
                    let (Ok(ifindex), Some(hook)) = (ifindex.parse::<u32>(), hook_from_pin(hook))
                    else {
                        continue;
                    };
                    match dp.detach(netns, &Interface::Index(ifindex), hook) {
                        Ok(true) => out.detached += 1,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            pin = %pin.path().display(),
                            error = %e,
                            "cannot detach; removing the pin releases the link"
                        ),
                    }
                }
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot open the datapath; removing the pins releases its links"
        ),
    }
    fs::remove_dir_all(bpffs_dir).map_err(|source| AgentError::StateIo {
        action: "remove",
        path: bpffs_dir.to_path_buf(),
        source,
    })?;
    out.removed_dir = true;
    // Last: its hook went with the pins.
    out.removed_overlay =
        crate::vxlan::delete_link(crate::OVERLAY_DEVICE).map_err(|e| AgentError::Overlay {
            device: crate::OVERLAY_DEVICE,
            reason: format!("cannot delete it: {e}"),
        })?;
    Ok(out)
}
