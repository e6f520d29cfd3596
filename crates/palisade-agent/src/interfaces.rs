//! The node's interfaces as the agent needs them: name → ifindex and MAC,
//! and the node's own IPv4 addresses ([`NodeLinks`], read with
//! `getifaddrs`, which asks the kernel over netlink and so sees the calling
//! thread's network namespace). [`LinkWatcher`] wakes the agent up when a
//! link or an address appears, changes or goes away (netlink notifications
//! `RTMGRP_LINK` and `RTMGRP_IPV4_IFADDR`); the agent then scans again
//! rather than parse the messages, so there is one way to read the state.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::error::{AgentError, Result};

/// `RTMGRP_LINK`: link created, changed or deleted.
const RTMGRP_LINK: u32 = 0x1;
/// `RTMGRP_IPV4_IFADDR`: IPv4 address added or removed.
const RTMGRP_IPV4_IFADDR: u32 = 0x10;

/// One interface of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// Its index in the node's namespace.
    pub ifindex: u32,
    /// Its MAC address (`None` for interfaces without one, such as `lo`).
    pub mac: Option<[u8; 6]>,
}

/// The node's interfaces and its own IPv4 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLinks {
    /// Every interface by name.
    pub links: BTreeMap<String, Link>,
    /// The node's IPv4 addresses, loopback excluded.
    pub addresses: BTreeSet<Ipv4Addr>,
}

impl NodeLinks {
    /// Reads the interfaces of the calling thread's network namespace.
    pub fn scan() -> Result<NodeLinks> {
        let all = nix::ifaddrs::getifaddrs().map_err(|errno| AgentError::Interfaces {
            action: "list",
            source: errno.into(),
        })?;
        let mut out = NodeLinks::default();
        for entry in all {
            let Some(address) = entry.address else {
                continue;
            };
            if let Some(link) = address.as_link_addr() {
                out.links.insert(
                    entry.interface_name.clone(),
                    Link {
                        ifindex: link.ifindex() as u32,
                        mac: link.addr().filter(|mac| *mac != [0; 6]),
                    },
                );
            } else if let Some(v4) = address.as_sockaddr_in() {
                if !v4.ip().is_loopback() {
                    out.addresses.insert(v4.ip());
                }
            }
        }
        Ok(out)
    }

    /// The interface called `name`.
    pub fn get(&self, name: &str) -> Option<&Link> {
        self.links.get(name)
    }
}

/// A netlink socket subscribed to link and IPv4 address notifications.
#[derive(Debug)]
pub struct LinkWatcher {
    socket: OwnedFd,
}

impl LinkWatcher {
    /// Subscribes in the calling thread's network namespace.
    pub fn open() -> Result<LinkWatcher> {
        let watch_err = |errno: Errno| AgentError::Interfaces {
            action: "watch",
            source: errno.into(),
        };
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(watch_err)?;
        bind(
            socket.as_raw_fd(),
            &NetlinkAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR),
        )
        .map_err(watch_err)?;
        Ok(LinkWatcher { socket })
    }

    /// Waits up to `timeout` for a notification; `true` if something
    /// changed (or notifications were lost: scan again either way).
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(errno) => {
                return Err(AgentError::Interfaces {
                    action: "watch",
                    source: io::Error::from(errno),
                })
            }
        }
        // Drain: the content does not matter, a scan follows.
        let mut buf = [0u8; 16 * 1024];
        loop {
            match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(_) => {}
                // The kernel dropped notifications: a scan sees everything anyway.
                Err(Errno::ENOBUFS) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(AgentError::Interfaces {
                        action: "watch",
                        source: io::Error::from(errno),
                    })
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_sees_loopback_without_a_mac_and_skips_its_address() {
        let links = NodeLinks::scan().unwrap();
        let lo = links.get("lo").expect("every namespace has lo");
        assert_eq!(lo.mac, None);
        assert_eq!(lo.ifindex, 1);
        assert!(!links.addresses.iter().any(|a| a.is_loopback()));
    }
}
