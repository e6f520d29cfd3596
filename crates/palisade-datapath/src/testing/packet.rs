//! Packet builders for tests and benchmarks: Ethernet, ARP, IPv4 (with
//! options, fragments and deliberately wrong header fields), TCP, UDP and
//! ICMP (echo and errors), with correct checksums unless told otherwise, and
//! small readers for checking what a program wrote.

use std::net::Ipv4Addr;

/// Ethertype IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// Ethertype IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// Length of an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// TCP FIN flag.
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN flag.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST flag.
pub const TCP_RST: u8 = 0x04;
/// TCP PSH flag.
pub const TCP_PSH: u8 = 0x08;
/// TCP ACK flag.
pub const TCP_ACK: u8 = 0x10;

/// An Ethernet frame: `dst`, `src`, `ethertype`, then `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An ARP packet for IPv4 over Ethernet (`op` 1 = request, 2 = reply).
pub fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(28);
    p.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    p.extend_from_slice(&ETH_P_IP.to_be_bytes());
    p.push(6);
    p.push(4);
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa.octets());
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa.octets());
    p
}

/// A broadcast ARP request frame: who has `target`, tell `sender_ip` (`sender_mac`).
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    ethernet(
        [0xff; 6],
        sender_mac,
        ETH_P_ARP,
        &arp(1, sender_mac, sender_ip, [0; 6], target),
    )
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from(chunk[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header description; [`Ipv4::packet`] serialises it with a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub id: u16,
    /// Flags and fragment offset field (host order): 0x4000 DF, 0x2000 MF, low 13 bits offset.
    pub frag: u16,
    /// Option bytes (padded to a multiple of 4 with zeros).
    pub options: Vec<u8>,
    /// Overrides the IHL field (for malformed headers).
    pub ihl: Option<u8>,
    /// Overrides the total length field (for malformed headers).
    pub total_len: Option<u16>,
    /// Version field (4 unless testing a bad one).
    pub version: u8,
}

impl Ipv4 {
    /// A plain header: TTL 64, DF, no options.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            ttl: 64,
            id: 1,
            frag: 0x4000,
            options: Vec::new(),
            ihl: None,
            total_len: None,
            version: 4,
        }
    }

    /// This header followed by `payload`, checksum computed.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut options = self.options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let hlen = 20 + options.len();
        let ihl = self.ihl.unwrap_or((hlen / 4) as u8);
        let total = self.total_len.unwrap_or((hlen + payload.len()) as u16);
        let mut p = Vec::with_capacity(hlen + payload.len());
        p.push(self.version << 4 | (ihl & 0x0f));
        p.push(0);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&options);
        let sum = checksum(&p[..hlen]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(12 + segment.len());
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.push(0);
    data.push(proto);
    data.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    data.extend_from_slice(segment);
    checksum(&data)
}

/// A TCP segment (20-byte header, no options) with checksum for `src` -> `dst`.
pub fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&1u32.to_be_bytes()); // sequence
    s.extend_from_slice(&(if flags & TCP_ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    s.push(5 << 4);
    s.push(flags);
    s.extend_from_slice(&65535u16.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    s.extend_from_slice(payload);
    let sum = pseudo_header_sum(src, dst, 6, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// A UDP datagram with checksum for `src` -> `dst`.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::with_capacity(len as usize);
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let sum = pseudo_header_sum(src, dst, 17, &d);
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

/// ICMP type echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP type echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP type time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// An ICMP message: type, code, the 4 "rest of header" bytes, then `body`.
pub fn icmp(icmp_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An ICMP echo request or reply.
pub fn icmp_echo(icmp_type: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&id.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    icmp(icmp_type, 0, rest, b"palisade")
}

/// An ICMP error quoting `original` (an IPv4 packet: its header and first 8 bytes are kept).
pub fn icmp_error(icmp_type: u8, code: u8, original: &[u8]) -> Vec<u8> {
    let hlen = usize::from(original[0] & 0x0f) * 4;
    let quoted = &original[..original.len().min(hlen + 8)];
    icmp(icmp_type, code, [0; 4], quoted)
}

/// Reads the IPv4 header of an Ethernet frame: (ttl, checksum valid).
pub fn ipv4_ttl_and_checksum_ok(frame: &[u8]) -> (u8, bool) {
    let ip = &frame[ETH_HLEN..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    (ip[8], checksum(&ip[..hlen]) == 0)
}

/// A locally administered MAC address ending in `last`.
pub fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, 0x00, last]
}
