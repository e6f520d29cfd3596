//! What crosses the underlay: an AF_PACKET socket on the underlay bridge
//! (`br0`, promiscuous, inside the underlay namespace) sees every frame
//! between nodes, and [`decode`] reads the VXLAN packets among them: outer
//! source and destination (and so the nodes), VNI, Group Policy ID, the inner
//! 5-tuple. So anyone can see that allowed flows carry their tenant's VNI and
//! their source's identity, and that denied traffic never leaves its node.
//!
//! VXLAN with the Group Policy extension (draft-smith-vxlan-group-policy):
//! 8 bytes after the outer UDP header —
//! `G.R.R.R.I.R.R.R | R.D.R.R.A.R.R.R | Group Policy ID (16) | VNI (24) | reserved (8)`;
//! G (0x80 of the first byte) says a Group Policy ID is present, I (0x08)
//! that the VNI is valid.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::{LabError, Result};
use crate::naming::UNDERLAY_BRIDGE;
use crate::netns;
use crate::state::State;

/// The overlay's UDP port.
pub const VXLAN_PORT: u16 = 4789;

/// One VXLAN packet seen on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnderlayPacket {
    /// When it was seen (RFC 3339, ms).
    pub time: String,
    /// Outer source address: the sending node's underlay address.
    pub outer_src: Ipv4Addr,
    /// Outer destination address.
    pub outer_dst: Ipv4Addr,
    /// The sending node, when the address is one of the lab's.
    pub src_node: Option<String>,
    /// The receiving node.
    pub dst_node: Option<String>,
    /// Whether the outer packet forbids fragmentation (DF).
    pub outer_df: bool,
    /// The VNI: the tenant.
    pub vni: u32,
    /// The Group Policy ID (the local part of the source identity); `None`
    /// when the G flag is not set.
    pub gbp: Option<u16>,
    /// The inner packet.
    pub inner: Inner,
}

/// The packet inside a VXLAN frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inner {
    /// Ethertype of the inner frame (0x0800 IPv4).
    pub ethertype: u16,
    /// IPv4 source (unspecified for non-IPv4).
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// TCP/UDP source port; ICMP: the type.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP: the code.
    pub dport: u16,
    /// IPv4 total length.
    pub len: u16,
}

impl std::fmt::Display for UnderlayPacket {
    /// `node-1 -> node-2 vni 100 gbp 256: tcp 10.0.1.10:40000 -> 10.0.2.10:8080 (60 B)`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = |name: &Option<String>, addr: Ipv4Addr| match name {
            Some(n) => n.clone(),
            None => addr.to_string(),
        };
        write!(
            f,
            "{} {} -> {} vni {} gbp {}: ",
            self.time,
            node(&self.src_node, self.outer_src),
            node(&self.dst_node, self.outer_dst),
            self.vni,
            self.gbp.map_or("-".to_string(), |g| g.to_string())
        )?;
        let i = &self.inner;
        match i.proto {
            6 | 17 => write!(
                f,
                "{} {}:{} -> {}:{}",
                if i.proto == 6 { "tcp" } else { "udp" },
                i.src,
                i.sport,
                i.dst,
                i.dport
            )?,
            1 => write!(
                f,
                "icmp {} -> {} type {} code {}",
                i.src, i.dst, i.sport, i.dport
            )?,
            _ if i.ethertype != 0x0800 => write!(f, "ethertype {:#06x}", i.ethertype)?,
            p => write!(f, "proto {p} {} -> {}", i.src, i.dst)?,
        }
        write!(f, " ({} B)", i.len)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Decodes an Ethernet frame carrying IPv4 / UDP to [`VXLAN_PORT`] / VXLAN;
/// `None` for anything else (ARP, other traffic, outer fragments but the
/// first, truncated frames). Node names are left empty.
pub fn decode(frame: &[u8], time: SystemTime) -> Option<UnderlayPacket> {
    if frame.len() < 14 + 20 || be16(frame, 12) != 0x0800 {
        return None;
    }
    let ip = &frame[14..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || hlen < 20 || ip.len() < hlen + 8 + 8 + 14 {
        return None;
    }
    let frag = be16(ip, 6);
    if ip[9] != 17 || frag & 0x1fff != 0 {
        return None;
    }
    let udp = &ip[hlen..];
    if be16(udp, 2) != VXLAN_PORT {
        return None;
    }
    let vx = &udp[8..];
    let eth = &vx[8..];
    let ethertype = be16(eth, 12);
    let mut inner = Inner {
        ethertype,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        proto: 0,
        sport: 0,
        dport: 0,
        len: 0,
    };
    let iip = &eth[14..];
    if ethertype == 0x0800 && iip.len() >= 20 {
        let ihlen = usize::from(iip[0] & 0x0f) * 4;
        inner.src = addr(iip, 12);
        inner.dst = addr(iip, 16);
        inner.proto = iip[9];
        inner.len = be16(iip, 2);
        if iip.len() >= ihlen + 4 {
            let l4 = &iip[ihlen..];
            match inner.proto {
                6 | 17 => {
                    inner.sport = be16(l4, 0);
                    inner.dport = be16(l4, 2);
                }
                1 => {
                    inner.sport = u16::from(l4[0]);
                    inner.dport = u16::from(l4[1]);
                }
                _ => {}
            }
        }
    }
    Some(UnderlayPacket {
        time: humantime::format_rfc3339_millis(time).to_string(),
        outer_src: addr(ip, 12),
        outer_dst: addr(ip, 16),
        src_node: None,
        dst_node: None,
        outer_df: frag & 0x4000 != 0,
        vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        gbp: (vx[0] & 0x80 != 0).then(|| be16(vx, 2)),
        inner,
    })
}

/// An AF_PACKET socket on the underlay bridge of a lab, promiscuous, made
/// inside the underlay namespace (a socket stays in the namespace it was
/// made in).
pub struct UnderlayCapture {
    socket: OwnedFd,
    nodes: Vec<(Ipv4Addr, String)>,
}

impl UnderlayCapture {
    /// Opens the capture of lab `state`'s underlay; frames are seen from now on.
    pub fn open(state: &State) -> Result<UnderlayCapture> {
        let ns = state.underlay_netns.clone();
        let capture_error = |source: io::Error| LabError::Capture {
            netns: ns.clone(),
            interface: UNDERLAY_BRIDGE.to_string(),
            source,
        };
        let socket = netns::run_in(&state.underlay_netns, || Ok(open_socket(UNDERLAY_BRIDGE)))?
            .map_err(capture_error)?;
        Ok(UnderlayCapture {
            socket,
            nodes: state
                .nodes
                .iter()
                .map(|n| (n.underlay_address, n.name.clone()))
                .collect(),
        })
    }

    /// The next VXLAN packet, waiting up to `timeout`; `None` when none came.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<UnderlayPacket>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let wait = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, wait) };
            if ready <= 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LabError::Capture {
                    netns: "underlay".into(),
                    interface: UNDERLAY_BRIDGE.into(),
                    source: e,
                });
            }
            if let Some(mut packet) = decode(&buf[..n as usize], SystemTime::now()) {
                let name = |a: Ipv4Addr| {
                    self.nodes
                        .iter()
                        .find(|(addr, _)| *addr == a)
                        .map(|(_, n)| n.clone())
                };
                packet.src_node = name(packet.outer_src);
                packet.dst_node = name(packet.outer_dst);
                return Ok(Some(packet));
            }
        }
    }

    /// Every VXLAN packet seen until `count` of them (when given) or until
    /// `timeout` passes; `each` is called for every one as it comes.
    pub fn collect(
        &mut self,
        count: Option<usize>,
        timeout: Duration,
        mut each: impl FnMut(&UnderlayPacket),
    ) -> Result<Vec<UnderlayPacket>> {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        while count.is_none_or(|c| packets.len() < c) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(p) => {
                    each(&p);
                    packets.push(p);
                }
                None => break,
            }
        }
        Ok(packets)
    }
}

/// A packet socket bound to `interface` of the calling thread's namespace,
/// in promiscuous mode (a bridge passes up what it forwards only then).
fn open_socket(interface: &str) -> io::Result<OwnedFd> {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(all),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_protocol = all;
    at.sll_ifindex = ifindex as i32;
    // SAFETY: `at` is a valid sockaddr_ll and the length is its size.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&at as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    let membership = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: `membership` is a valid packet_mreq and the length is its size.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&membership as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as u32,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outer Ethernet/IPv4/UDP/VXLAN around an inner TCP SYN.
    fn frame(flags: u8, gbp: u16, vni: u32, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 255, 0, 1, 10, 255, 0, 2,
        ];
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x12, 0x34, 0x12, 0xb5, 0, 0, 0, 0]); // UDP to 4789
        let mut vx = vec![flags, 0, 0, 0, 0, 0, 0, 0];
        vx[2..4].copy_from_slice(&gbp.to_be_bytes());
        vx[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
        f.extend_from_slice(&vx);
        let mut eth = vec![0u8; 14];
        eth[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&eth);
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 1, 10, 10, 0, 2, 10,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90]);
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    #[test]
    fn vxlan_with_group_policy_is_decoded() {
        let p = decode(&frame(0x88, 257, 100, 0x4000), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            (p.outer_src, p.outer_dst, p.outer_df, p.vni, p.gbp),
            (
                Ipv4Addr::new(10, 255, 0, 1),
                Ipv4Addr::new(10, 255, 0, 2),
                true,
                100,
                Some(257)
            )
        );
        assert_eq!(
            (
                p.inner.src,
                p.inner.dst,
                p.inner.proto,
                p.inner.sport,
                p.inner.dport,
                p.inner.len
            ),
            (
                Ipv4Addr::new(10, 0, 1, 10),
                Ipv4Addr::new(10, 0, 2, 10),
                6,
                40000,
                8080,
                40
            )
        );
        assert!(p
            .to_string()
            .contains("vni 100 gbp 257: tcp 10.0.1.10:40000 -> 10.0.2.10:8080"));

        let plain = decode(&frame(0x08, 0, 7, 0), SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((plain.vni, plain.gbp, plain.outer_df), (7, None, false));
        // A later fragment of an outer packet has no UDP header to read.
        assert_eq!(
            decode(&frame(0x88, 1, 1, 0x0010), SystemTime::UNIX_EPOCH),
            None
        );
        assert_eq!(
            decode(&frame(0x88, 1, 1, 0)[..40], SystemTime::UNIX_EPOCH),
            None
        );
    }
}
