//! Network namespaces: entering the node's for good, and keeping a handle on
//! the one the agent came from.
//!
//! `setns(2)` moves only the calling thread, and threads inherit the
//! namespace of the thread that creates them. The agent therefore enters the
//! node's namespace on the thread that then creates all the others: the CLI
//! on the main thread before any other thread exists (so that tools that look
//! at a process's main thread, such as `ip netns identify` or `lab down`, see
//! it in the node), [`crate::Agent::start`] on the agent's own thread. The
//! mount namespace does not change, so bpffs at /sys/fs/bpf stays visible
//! (unlike `ip netns exec`, which remounts /sys).
//!
//! The control-plane connection and the metrics listener belong to the
//! management network, which is where the agent was started: the threads
//! that run them go back there with a [`NetnsHandle`] taken before entering
//! the node's namespace. (On a real host both are the same namespace; in a
//! lab the node's namespace cannot reach a server on the machine's loopback.)

use std::fs::File;
use std::sync::Arc;

use nix::sched::{setns, CloneFlags};

use crate::error::{AgentError, Result};

/// An open network namespace that a thread can enter.
#[derive(Debug, Clone)]
pub struct NetnsHandle {
    file: Arc<File>,
}

impl NetnsHandle {
    /// The network namespace of the calling thread.
    pub fn current() -> Result<NetnsHandle> {
        let file =
            File::open("/proc/thread-self/ns/net").map_err(|source| AgentError::HomeNetns {
                action: "open",
                source,
            })?;
        Ok(NetnsHandle {
            file: Arc::new(file),
        })
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> Result<()> {
        setns(self.file.as_ref(), CloneFlags::CLONE_NEWNET).map_err(|errno| AgentError::HomeNetns {
            action: "enter",
            source: errno.into(),
        })
    }
}

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`)
/// and leaves it there; threads it creates afterwards start there too.
/// Returns a handle on the namespace the thread was in before.
pub fn enter_netns(name: &str) -> Result<NetnsHandle> {
    let before = NetnsHandle::current()?;
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
    Ok(before)
}
