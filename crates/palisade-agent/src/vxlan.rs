//! The node's VXLAN device over rtnetlink: read a link (index, MTU, up, kind
//! and VXLAN settings), create the overlay device (`external gbp`, one UDP
//! port, no learning), set a link's MTU and up state, delete a link.
//!
//! Why netlink by hand: the agent needs three messages of one protocol
//! (`RTM_GETLINK`, `RTM_NEWLINK` to create, `RTM_NEWLINK` to change), and
//! already speaks rtnetlink for its link notifications (`interfaces.rs`).
//! Running `ip` would make a production daemon depend on a program and on
//! parsing its text; the netlink crates would add several dependencies whose
//! APIs change from release to release, for these few fixed messages. The
//! kernel checks every attribute and answers each request with an errno.
//!
//! Message layout (netlink(7), rtnetlink(7)): `nlmsghdr` (16 bytes),
//! `ifinfomsg` (16 bytes), then attributes `rtattr {len u16, type u16}` +
//! payload, each padded to 4 bytes; nested attributes carry attributes.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
/// The type bits of an attribute (the flags above are not part of it).
const NLA_TYPE_MASK: u16 = 0x3fff;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_GBP: u16 = 23;
const IFLA_VXLAN_COLLECT_METADATA: u16 = 25;
const IFF_UP: u32 = 0x1;

const HEADER_LEN: usize = 16;
const IFINFO_LEN: usize = 16;

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    /// Its index.
    pub ifindex: u32,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it is administratively up.
    pub up: bool,
    /// `IFLA_INFO_KIND` (`vxlan`, `veth`, ...), for virtual links.
    pub kind: Option<String>,
    /// The VXLAN settings, for a VXLAN link.
    pub vxlan: Option<VxlanInfo>,
}

/// The VXLAN settings palisade cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VxlanInfo {
    /// `external`: the tunnel key comes with each packet (collect metadata).
    pub collect_metadata: bool,
    /// `gbp`: the Group Policy extension.
    pub gbp: bool,
    /// The UDP port it listens on and sends to.
    pub port: Option<u16>,
    /// Whether it learns remote MACs (palisade wants it off).
    pub learning: Option<bool>,
}

/// One rtnetlink request/response exchange at a time on its own socket (in
/// the calling thread's network namespace).
struct Netlink {
    socket: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request (with `NLM_F_ACK`) and returns the payloads of the
    /// kernel's `RTM_NEWLINK` answers before its acknowledgement; a negative
    /// acknowledgement is the errno it carries.
    fn request(&mut self, message: Message) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = message.finish(self.seq);
        send(self.socket.as_raw_fd(), &bytes, MsgFlags::empty())?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + HEADER_LEN <= n {
                let len = u32_at(&buf, at) as usize;
                let ty = u16_at(&buf, at + 4);
                let seq = u32_at(&buf, at + 8);
                if len < HEADER_LEN || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &buf[at + HEADER_LEN..at + len];
                if seq == self.seq {
                    match ty {
                        NLMSG_ERROR => {
                            let errno = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
                            return if errno == 0 {
                                Ok(answers)
                            } else {
                                Err(io::Error::from_raw_os_error(-errno))
                            };
                        }
                        NLMSG_DONE => return Ok(answers),
                        RTM_NEWLINK => answers.push(payload.to_vec()),
                        _ => {}
                    }
                }
                at += align(len);
            }
        }
    }
}

/// A netlink message being built.
struct Message {
    buf: Vec<u8>,
    ty: u16,
    flags: u16,
}

impl Message {
    /// A link message: the header, then `ifinfomsg` for `ifindex` (0: by
    /// name) with `flags` under the `change` mask.
    fn link(ty: u16, flags: u16, ifindex: u32, if_flags: u32, change: u32) -> Message {
        let mut buf = vec![0u8; HEADER_LEN];
        buf.extend_from_slice(&[0, 0]); // family AF_UNSPEC, pad
        buf.extend_from_slice(&0u16.to_ne_bytes()); // device type
        buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        buf.extend_from_slice(&if_flags.to_ne_bytes());
        buf.extend_from_slice(&change.to_ne_bytes());
        Message {
            buf,
            ty,
            flags: NLM_F_REQUEST | NLM_F_ACK | flags,
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// Starts a nested attribute; returns where its header is, for [`Message::end`].
    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        at
    }

    fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[4..6].copy_from_slice(&self.ty.to_ne_bytes());
        self.buf[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(buf[at..at + 2].try_into().unwrap())
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

/// The attributes in `buf` as (type, payload), flags stripped from the type.
fn attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = usize::from(u16_at(buf, at));
        if len < 4 || at + len > buf.len() {
            break;
        }
        out.push((u16_at(buf, at + 2) & NLA_TYPE_MASK, &buf[at + 4..at + len]));
        at += align(len);
    }
    out
}

/// Parses an `RTM_NEWLINK` payload (`ifinfomsg` + attributes).
fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < IFINFO_LEN {
        return None;
    }
    let ifindex = i32::from_ne_bytes(payload[4..8].try_into().unwrap()) as u32;
    let flags = u32_at(payload, 8);
    let mut info = LinkInfo {
        ifindex,
        mtu: 0,
        up: flags & IFF_UP != 0,
        kind: None,
        vxlan: None,
    };
    let mut data = None;
    for (ty, value) in attributes(&payload[IFINFO_LEN..]) {
        match ty {
            IFLA_MTU if value.len() >= 4 => info.mtu = u32_at(value, 0),
            IFLA_LINKINFO => {
                for (ty, value) in attributes(value) {
                    match ty {
                        IFLA_INFO_KIND => {
                            let text = value.split(|&b| b == 0).next().unwrap_or_default();
                            info.kind = Some(String::from_utf8_lossy(text).into_owned());
                        }
                        IFLA_INFO_DATA => data = Some(value),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some("vxlan"), Some(data)) = (info.kind.as_deref(), data) {
        let mut vxlan = VxlanInfo::default();
        for (ty, value) in attributes(data) {
            match ty {
                IFLA_VXLAN_COLLECT_METADATA => {
                    vxlan.collect_metadata = value.first().is_some_and(|&v| v != 0)
                }
                IFLA_VXLAN_GBP => vxlan.gbp = true,
                IFLA_VXLAN_PORT if value.len() >= 2 => {
                    vxlan.port = Some(u16::from_be_bytes([value[0], value[1]]))
                }
                IFLA_VXLAN_LEARNING => vxlan.learning = value.first().map(|&v| v != 0),
                _ => {}
            }
        }
        info.vxlan = Some(vxlan);
    }
    Some(info)
}

/// The link called `name` in the calling thread's namespace; `None` if there is none.
pub(crate) fn get_link(name: &str) -> io::Result<Option<LinkInfo>> {
    let mut message = Message::link(RTM_GETLINK, 0, 0, 0, 0);
    message.attr(IFLA_IFNAME, &nul_terminated(name));
    match Netlink::open()?.request(message) {
        Ok(answers) => Ok(answers.first().and_then(|a| parse_link(a))),
        Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates VXLAN device `name`: collect metadata (`external`), Group Policy
/// extension (`gbp`), UDP `port`, no learning, MTU `mtu`; down.
pub(crate) fn create_vxlan(name: &str, port: u16, mtu: u32) -> io::Result<()> {
    let mut message = Message::link(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0, 0, 0);
    message.attr(IFLA_IFNAME, &nul_terminated(name));
    message.attr(IFLA_MTU, &mtu.to_ne_bytes());
    let linkinfo = message.nest(IFLA_LINKINFO);
    message.attr(IFLA_INFO_KIND, b"vxlan");
    let data = message.nest(IFLA_INFO_DATA);
    message.attr(IFLA_VXLAN_COLLECT_METADATA, &[1]);
    message.attr(IFLA_VXLAN_PORT, &port.to_be_bytes());
    message.attr(IFLA_VXLAN_LEARNING, &[0]);
    message.attr(IFLA_VXLAN_GBP, &[]);
    message.end(data);
    message.end(linkinfo);
    Netlink::open()?.request(message).map(drop)
}

/// Sets link `ifindex`'s MTU (when given) and brings it up.
pub(crate) fn set_link(ifindex: u32, mtu: Option<u32>) -> io::Result<()> {
    let mut message = Message::link(RTM_NEWLINK, 0, ifindex, IFF_UP, IFF_UP);
    if let Some(mtu) = mtu {
        message.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    Netlink::open()?.request(message).map(drop)
}

/// Deletes link `name`; `false` if there was none.
pub(crate) fn delete_link(name: &str) -> io::Result<bool> {
    let mut message = Message::link(RTM_DELLINK, 0, 0, 0, 0);
    message.attr(IFLA_IFNAME, &nul_terminated(name));
    match Netlink::open()?.request(message) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(false),
        Err(e) => Err(e),
    }
}

fn nul_terminated(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_built_and_parsed_back() {
        let mut message = Message::link(RTM_NEWLINK, NLM_F_CREATE, 7, IFF_UP, IFF_UP);
        message.attr(IFLA_MTU, &1450u32.to_ne_bytes());
        let linkinfo = message.nest(IFLA_LINKINFO);
        message.attr(IFLA_INFO_KIND, b"vxlan");
        let data = message.nest(IFLA_INFO_DATA);
        message.attr(IFLA_VXLAN_COLLECT_METADATA, &[1]);
        message.attr(IFLA_VXLAN_PORT, &4789u16.to_be_bytes());
        message.attr(IFLA_VXLAN_GBP, &[]);
        message.end(data);
        message.end(linkinfo);
        let bytes = message.finish(42);
        assert_eq!(u32_at(&bytes, 0) as usize, bytes.len());
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(u32_at(&bytes, 8), 42);
        let link = parse_link(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(
            link,
            LinkInfo {
                ifindex: 7,
                mtu: 1450,
                up: true,
                kind: Some("vxlan".into()),
                vxlan: Some(VxlanInfo {
                    collect_metadata: true,
                    gbp: true,
                    port: Some(4789),
                    learning: None,
                }),
            }
        );
    }

    #[test]
    fn loopback_is_read_and_a_missing_link_is_none() {
        let lo = get_link("lo").unwrap().expect("every namespace has lo");
        assert_eq!(lo.ifindex, 1);
        assert!(lo.mtu > 0);
        assert_eq!(lo.vxlan, None);
        assert_eq!(get_link("palisade-nope0").unwrap(), None);
    }
}
