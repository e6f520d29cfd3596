//! Entering the node's network namespace for good.
//!
//! `setns(2)` moves only the calling thread, and threads inherit the
//! namespace of the thread that creates them. The agent therefore enters the
//! node's namespace on the thread that then creates all the others: the CLI
//! on the main thread before any other thread exists (so that tools that look
//! at a process's main thread, such as `ip netns identify` or `lab down`, see
//! it in the node), [`crate::Agent::start`] on the agent's own thread. The
//! mount namespace does not change, so bpffs at /sys/fs/bpf stays visible
//! (unlike `ip netns exec`, which remounts /sys).

use std::fs::File;

use nix::sched::{setns, CloneFlags};

use crate::error::{AgentError, Result};

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`)
/// and leaves it there; threads it creates afterwards start there too.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = std::path::Path::new(palisade_datapath::NETNS_DIR).join(name);
    let file = File::open(&path).map_err(|source| AgentError::Netns {
        netns: name.to_string(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| AgentError::Netns {
        netns: name.to_string(),
        source: errno.into(),
    })?;
    tracing::debug!(netns = name, "entered the node's network namespace");
    Ok(())
}
