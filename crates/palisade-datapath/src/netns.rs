//! [`NetnsGuard`]: run the current thread inside a named network namespace
//! (`/run/netns/NAME`, as `ip netns` creates them) and return to the
//! original one on drop.
//!
//! `setns(2)` moves only the calling thread, so the agent can stay in the root
//! mount namespace (bpffs visible) while the thread doing netlink, ifindex
//! lookups and attachment works inside a node's namespace. The guard is not
//! `Send`: it must be dropped on the thread that entered.

use std::fs::File;
use std::marker::PhantomData;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// While alive, the current thread is in the named network namespace.
#[derive(Debug)]
pub struct NetnsGuard {
    original: File,
    name: String,
    // *const () makes the guard !Send and !Sync: setns is per thread.
    _thread_bound: PhantomData<*const ()>,
}

impl NetnsGuard {
    /// Moves the current thread into network namespace `name`.
    pub fn enter(name: &str) -> Result<Self> {
        let netns_err = |action, source| Error::Netns {
            action,
            netns: name.to_string(),
            source,
        };
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| netns_err("remember the current", e))?;
        let target =
            File::open(Path::new(NETNS_DIR).join(name)).map_err(|e| netns_err("open", e))?;
        setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| netns_err("enter", e.into()))?;
        Ok(Self {
            original,
            name: name.to_string(),
            _thread_bound: PhantomData,
        })
    }

    /// The namespace this guard entered.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            // The thread stays in the wrong namespace: say so loudly, there is
            // no way to report it from drop.
            tracing::error!(netns = %self.name, error = %e, "cannot return to the original network namespace");
        }
    }
}
