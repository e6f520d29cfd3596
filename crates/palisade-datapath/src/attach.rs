//! Attaching the hooks to interfaces with TCX links pinned under the bpffs
//! directory, so attachments outlive the agent and a restarted agent replaces
//! them atomically.
//!
//! A link is pinned at `<bpffs_dir>/links/<netns>/<ifindex>-<hook>`. When
//! [`Datapath::attach`] finds a live pin for the same interface and hook it
//! swaps the program in place with BPF_LINK_UPDATE: packets see the old or the
//! new program, never none. A pin whose interface is gone (the kernel reports
//! ifindex 0 for it) is stale: it is removed and a new link is created.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::abi::Hook;
use crate::datapath::Datapath;
use crate::error::{Error, Result};
use crate::netns::NetnsGuard;
use crate::sys;

/// Namespace directory name used for `netns: None` (the caller's namespace).
pub const DEFAULT_NETNS: &str = "default";

/// An interface, by name or index, inside the namespace given alongside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// By name (`ip link` name).
    Name(String),
    /// By ifindex.
    Index(u32),
}

impl Interface {
    /// The interface called `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Interface::Name(name.into())
    }

    fn describe(&self) -> String {
        match self {
            Interface::Name(name) => name.clone(),
            Interface::Index(index) => format!("#{index}"),
        }
    }
}

/// The result of [`Datapath::attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The interface's index in its namespace.
    pub ifindex: u32,
    /// The hook attached.
    pub hook: Hook,
    /// Where the link is pinned.
    pub pin: PathBuf,
    /// `true` when an existing link was updated in place (agent restart),
    /// `false` when a new link was created.
    pub replaced: bool,
}

fn tcx_attach_type(hook: Hook) -> Result<u32> {
    match hook {
        Hook::FromEndpoint | Hook::FromUplink | Hook::FromOverlay => Ok(sys::BPF_TCX_INGRESS),
        Hook::ToEndpoint => Ok(sys::BPF_TCX_EGRESS),
        Hook::Deliver => Err(Error::NotAttachable { hook }),
    }
}

fn hook_file_name(hook: Hook) -> &'static str {
    match hook {
        Hook::FromEndpoint => "from_endpoint",
        Hook::ToEndpoint => "to_endpoint",
        Hook::FromUplink => "from_uplink",
        Hook::Deliver => "deliver",
        Hook::FromOverlay => "from_overlay",
    }
}

/// The ifindex of `iface` in the calling thread's namespace.
fn resolve(iface: &Interface, netns: &str) -> Result<u32> {
    let missing = || Error::NoInterface {
        interface: iface.describe(),
        netns: netns.to_string(),
    };
    match iface {
        Interface::Name(name) => {
            let name = CString::new(name.as_str()).map_err(|_| missing())?;
            // SAFETY: `name` is a valid NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                Err(missing())
            } else {
                Ok(index)
            }
        }
        Interface::Index(index) => {
            let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
            // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
            let found = unsafe { libc::if_indextoname(*index, buf.as_mut_ptr()) };
            if found.is_null() {
                Err(missing())
            } else {
                Ok(*index)
            }
        }
    }
}

impl Datapath {
    fn links_dir(&self, netns: &str) -> PathBuf {
        self.bpffs_dir().join("links").join(netns)
    }

    fn link_pin(&self, netns: &str, ifindex: u32, hook: Hook) -> PathBuf {
        self.links_dir(netns)
            .join(format!("{ifindex}-{}", hook_file_name(hook)))
    }

    /// Attaches `hook`'s program to `iface` in network namespace `netns`
    /// (`None`: the calling thread's). An existing pinned link of a previous
    /// agent is updated in place; otherwise a TCX link is created and pinned.
    pub fn attach(&self, netns: Option<&str>, iface: &Interface, hook: Hook) -> Result<Attachment> {
        let attach_type = tcx_attach_type(hook)?;
        let _inside = netns.map(NetnsGuard::enter).transpose()?;
        let ns = netns.unwrap_or(DEFAULT_NETNS);
        let ifindex = resolve(iface, ns)?;
        let pin = self.link_pin(ns, ifindex, hook);
        let attach_err = |action, source| Error::Attach {
            action,
            hook,
            ifindex,
            netns: ns.to_string(),
            source,
        };
        let program = self.program(hook)?;
        let prog_fd = program.fd().map_err(|source| Error::LoadProgram {
            program: hook_file_name(hook),
            source: Box::new(source),
        })?;

        match sys::obj_get(&pin) {
            Ok(link) => {
                let info = sys::link_info(link.as_fd())
                    .map_err(|e| attach_err("inspect pinned link of", e))?;
                if info.link_type == sys::BPF_LINK_TYPE_TCX
                    && info.tcx_ifindex == ifindex
                    && info.tcx_attach_type == attach_type
                {
                    sys::link_update(link.as_fd(), prog_fd.as_fd())
                        .map_err(|e| attach_err("update", e))?;
                    tracing::info!(
                        netns = ns,
                        ifindex,
                        ?hook,
                        "replaced program in pinned link"
                    );
                    return Ok(Attachment {
                        ifindex,
                        hook,
                        pin,
                        replaced: true,
                    });
                }
                tracing::info!(netns = ns, ifindex, ?hook, ?info, "removing stale link pin");
                remove_pin(&pin)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(attach_err("open pinned link of", e)),
        }

        let dir = self.links_dir(ns);
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create directory",
            path: dir,
            source,
        })?;
        let link = sys::link_create_tcx(prog_fd.as_fd(), ifindex, attach_type)
            .map_err(|e| attach_err("attach", e))?;
        // Dropping `link` after a failed pin detaches it again: no half state.
        sys::obj_pin(link.as_fd(), &pin).map_err(|e| attach_err("pin link of", e))?;
        tracing::info!(netns = ns, ifindex, ?hook, pin = %pin.display(), "attached");
        Ok(Attachment {
            ifindex,
            hook,
            pin,
            replaced: false,
        })
    }

    /// Detaches `hook` from `iface` in `netns` and removes its pin; `false`
    /// if it was not attached by this datapath.
    pub fn detach(&self, netns: Option<&str>, iface: &Interface, hook: Hook) -> Result<bool> {
        tcx_attach_type(hook)?;
        let _inside = netns.map(NetnsGuard::enter).transpose()?;
        let ns = netns.unwrap_or(DEFAULT_NETNS);
        let ifindex = resolve(iface, ns)?;
        let pin = self.link_pin(ns, ifindex, hook);
        let link = match sys::obj_get(&pin) {
            Ok(link) => link,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(Error::Attach {
                    action: "open pinned link of",
                    hook,
                    ifindex,
                    netns: ns.to_string(),
                    source,
                })
            }
        };
        sys::link_detach(link.as_fd()).map_err(|source| Error::Attach {
            action: "detach",
            hook,
            ifindex,
            netns: ns.to_string(),
            source,
        })?;
        remove_pin(&pin)?;
        tracing::info!(netns = ns, ifindex, ?hook, "detached");
        Ok(true)
    }

    /// Removes the pins of links whose interface is gone; returns how many.
    pub fn prune_stale_links(&self) -> Result<usize> {
        let root = self.bpffs_dir().join("links");
        let mut pruned = 0;
        let Ok(namespaces) = fs::read_dir(&root) else {
            return Ok(0);
        };
        for ns in namespaces.flatten() {
            let Ok(pins) = fs::read_dir(ns.path()) else {
                continue;
            };
            for pin in pins.flatten() {
                let path = pin.path();
                let Ok(link) = sys::obj_get(&path) else {
                    continue;
                };
                if matches!(sys::link_info(link.as_fd()), Ok(info) if info.tcx_ifindex == 0) {
                    remove_pin(&path)?;
                    pruned += 1;
                }
            }
        }
        Ok(pruned)
    }
}

fn remove_pin(path: &Path) -> Result<()> {
    fs::remove_file(path).map_err(|source| Error::Io {
        action: "remove link pin",
        path: path.to_path_buf(),
        source,
    })
}
