//! Probes: real packets sent from inside a source namespace with plain
//! sockets, and what came back. TCP connects and reads the responder's name,
//! UDP sends a datagram and waits for the answer, ICMP sends echo requests on
//! a raw socket. Many probes run side by side on a pool of threads, each of
//! which enters the source namespace of the probe it runs.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use palisade_model::{Endpoint, Protocol};
use serde::{Deserialize, Serialize};

use crate::netns;

/// What a probe sends over TCP before reading the answer.
const HELLO: &[u8] = b"palisade-probe\n";

/// How often UDP and ICMP probes send again while waiting (a lost first
/// packet must not turn into "blocked").
const RESEND_EVERY: Duration = Duration::from_millis(250);

/// Most probe threads at once: enough for a 20 × 19 matrix of blocked probes
/// to take one timeout, not two.
const MAX_THREADS: usize = 512;

/// Stack size of a probe thread: the probe needs little.
const THREAD_STACK: usize = 256 * 1024;

/// Where a probe starts or ends: an endpoint, a world or a node of the lab.
///
/// Written as text (`Display`, `FromStr`): an endpoint by its full ref
/// (`acme:web-1`, `acme:prod/web-1`), a world as `world:<tenant>@<node>`, a
/// node as `node@<node>`. Resource names never hold `@`, so the forms cannot
/// be confused (except that a tenant named `world` cannot be written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    /// A workload, by full ref; a probe to it goes to its first IPv4 address.
    Endpoint(String),
    /// The outside, as `tenant` sees it from `node`; a probe to it goes to the
    /// lab's world address.
    World {
        /// The node.
        node: String,
        /// The tenant.
        tenant: String,
    },
    /// A node itself; a probe to it goes to its underlay address.
    Node(String),
}

impl Place {
    /// The place of an endpoint of the intent.
    pub fn endpoint(endpoint: &Endpoint) -> Place {
        Place::Endpoint(endpoint.full_ref())
    }

    /// The world of `tenant` on `node`.
    pub fn world(node: &str, tenant: &str) -> Place {
        Place::World {
            node: node.to_string(),
            tenant: tenant.to_string(),
        }
    }

    /// How records and responders name this place (its text form).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Endpoint(full_ref) => f.write_str(full_ref),
            Place::World { node, tenant } => f.write_str(&world_label(node, tenant)),
            Place::Node(node) => write!(f, "node@{node}"),
        }
    }
}

impl FromStr for Place {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Place, String> {
        let not_a_place = || {
            format!(
                "{text:?} is not a place: write an endpoint as tenant:name or tenant:namespace/name, \
                 a world as world:<tenant>@<node>, a node as node@<node>"
            )
        };
        // `world:` always starts a world (a tenant named `world` is not addressable as text).
        if let Some(rest) = text.strip_prefix("world:") {
            return match rest.split_once('@') {
                Some((tenant, node)) if !tenant.is_empty() && !node.is_empty() => {
                    Ok(Place::world(node, tenant))
                }
                _ => Err(not_a_place()),
            };
        }
        if let Some(node) = text.strip_prefix("node@") {
            if !node.is_empty() {
                return Ok(Place::Node(node.to_string()));
            }
        }
        match text.split_once(':') {
            Some((tenant, name))
                if !tenant.is_empty() && !name.is_empty() && !text.contains('@') =>
            {
                Ok(Place::Endpoint(text.to_string()))
            }
            _ => Err(not_a_place()),
        }
    }
}

/// The name of the world of `tenant` on `node`, as its responder answers.
pub fn world_label(node: &str, tenant: &str) -> String {
    format!("world:{tenant}@{node}")
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ProbeResult {
    /// The packets got through: TCP connected (and the responder answered with
    /// `reply`, or the port was closed: reset, `reply` is `None`), UDP was
    /// answered (or refused by an ICMP port unreachable, `reply` is `None`),
    /// or an ICMP echo was answered.
    Reachable {
        /// The responder's name, when one answered.
        reply: Option<String>,
    },
    /// Nothing came back within the timeout, or the network said the
    /// destination cannot be reached.
    Blocked,
    /// The probe could not be run (unknown place, no address, no such namespace).
    Error {
        /// What went wrong.
        message: String,
    },
}

impl ProbeResult {
    /// Whether packets got through.
    pub fn is_reachable(&self) -> bool {
        matches!(self, ProbeResult::Reachable { .. })
    }

    pub(crate) fn error(message: impl Into<String>) -> ProbeResult {
        ProbeResult::Error {
            message: message.into(),
        }
    }
}

/// One probe and its result, as `probe_matrix` returns them and the CLI prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Label of the source place.
    pub from: String,
    /// Label of the destination place (or the address probed).
    pub to: String,
    /// Protocol probed.
    pub protocol: Protocol,
    /// Port probed (`None` for ICMP).
    pub port: Option<u16>,
    /// What came back.
    #[serde(flatten)]
    pub result: ProbeResult,
    /// Time the probe took, in milliseconds.
    pub elapsed_ms: f64,
}

/// One probe to run: from inside `netns` to `dst`.
pub(crate) struct Job<'a> {
    pub netns: &'a str,
    pub netns_file: &'a File,
    pub dst: Ipv4Addr,
}

/// Runs `jobs` side by side and returns their results (and durations) in
/// order. Each thread enters the namespace of every job it takes.
pub(crate) fn run_jobs(
    jobs: &[Job<'_>],
    protocol: Protocol,
    port: u16,
    timeout: Duration,
) -> Vec<(ProbeResult, Duration)> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        let mut current: Option<&str> = None;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { break };
            let started = Instant::now();
            let result = if current == Some(job.netns) {
                probe_here(job.dst, protocol, port, timeout)
            } else {
                match netns::enter(job.netns, job.netns_file) {
                    Ok(()) => {
                        current = Some(job.netns);
                        probe_here(job.dst, protocol, port, timeout)
                    }
                    Err(e) => ProbeResult::error(e.to_string()),
                }
            };
            done.push((i, result, started.elapsed()));
        }
        done
    };
    let wanted = jobs.len().min(MAX_THREADS);
    let mut results: Vec<Option<(ProbeResult, Duration)>> = vec![None; jobs.len()];
    thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..wanted {
            match thread::Builder::new()
                .name("lab-probe".into())
                .stack_size(THREAD_STACK)
                .spawn_scoped(s, work)
            {
                Ok(handle) => handles.push(handle),
                // Out of threads: the ones running take the rest of the jobs.
                Err(e) if !handles.is_empty() => {
                    tracing::debug!(error = %e, threads = handles.len(), "probing with fewer threads");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no thread to probe on");
                    break;
                }
            }
        }
        for handle in handles {
            let done = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (i, result, elapsed) in done {
                results[i] = Some((result, elapsed));
            }
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or((
                ProbeResult::error("no thread could run this probe"),
                Duration::ZERO,
            ))
        })
        .collect()
}

/// Probes `dst` from the calling thread's namespace.
fn probe_here(dst: Ipv4Addr, protocol: Protocol, port: u16, timeout: Duration) -> ProbeResult {
    let timeout = timeout.max(Duration::from_millis(1));
    match protocol {
        Protocol::Tcp => tcp(SocketAddrV4::new(dst, port), timeout),
        Protocol::Udp => udp(SocketAddrV4::new(dst, port), timeout),
        Protocol::Icmp => icmp(dst, timeout),
        other => ProbeResult::error(format!("the lab cannot probe {other} yet (tcp, udp, icmp)")),
    }
}

/// What a socket error says about reachability.
fn classify(e: &io::Error) -> ProbeResult {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ProbeResult::Blocked,
        // A reset or a port unreachable came back from the destination: the
        // network let the packet through, nobody listens there.
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
            ProbeResult::Reachable { reply: None }
        }
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => ProbeResult::Blocked,
        _ => ProbeResult::error(e.to_string()),
    }
}

fn tcp(dst: SocketAddrV4, timeout: Duration) -> ProbeResult {
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&SocketAddr::V4(dst), timeout) {
        Ok(stream) => stream,
        Err(e) => return classify(&e),
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    if stream.write_all(HELLO).is_err() {
        // Connected, then reset: reachable, nobody answered.
        return ProbeResult::Reachable { reply: None };
    }
    let mut line = Vec::new();
    let _ = BufReader::new((&stream).take(1024)).read_until(b'\n', &mut line);
    let text = String::from_utf8_lossy(&line).trim().to_string();
    ProbeResult::Reachable {
        reply: (!text.is_empty()).then_some(text),
    }
}

fn udp(dst: SocketAddrV4, timeout: Duration) -> ProbeResult {
    let socket = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(e) => return ProbeResult::error(format!("udp socket: {e}")),
    };
    // Connected, so that an ICMP port unreachable is reported to us.
    if let Err(e) = socket.connect(dst) {
        return classify(&e);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        if let Err(e) = socket.send(HELLO) {
            return classify(&e);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ProbeResult::Blocked;
        }
        let _ = socket.set_read_timeout(Some(left.min(RESEND_EVERY)));
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                return ProbeResult::Reachable {
                    reply: (!text.is_empty()).then_some(text),
                };
            }
            // Interrupted: a stop and continue (or a cgroup freeze) of this
            // process ends a timed receive early; just wait on.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() >= deadline {
                    return ProbeResult::Blocked;
                }
            }
            Err(e) => return classify(&e),
        }
    }
}

/// Sequence numbers of echo requests; with the process id as identifier they
/// tell our replies apart from every other ping in the namespace.
static ICMP_SEQ: AtomicU16 = AtomicU16::new(1);

fn icmp(dst: Ipv4Addr, timeout: Duration) -> ProbeResult {
    let fd = match socket::socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    ) {
        Ok(fd) => fd,
        Err(e) => return ProbeResult::error(format!("raw ICMP socket (needs root): {e}")),
    };
    let raw = fd.as_raw_fd();
    // Connected: the kernel hands us only packets from `dst`.
    if let Err(e) = socket::connect(raw, &SockaddrIn::from(SocketAddrV4::new(dst, 0))) {
        return classify(&io::Error::from(e));
    }
    let id = std::process::id() as u16;
    let seq = ICMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let request = echo_request(id, seq);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        if let Err(e) = socket::send(raw, &request, socket::MsgFlags::empty()) {
            return classify(&io::Error::from(e));
        }
        let resend_at = (Instant::now() + RESEND_EVERY).min(deadline);
        loop {
            let left = resend_at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
            if socket::setsockopt(&fd, sockopt::ReceiveTimeout, &wait).is_err() {
                return ProbeResult::error("could not set a receive timeout");
            }
            match socket::recv(raw, &mut buf, socket::MsgFlags::empty()) {
                Ok(n) if is_echo_reply(&buf[..n], id, seq) => {
                    return ProbeResult::Reachable { reply: None }
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return classify(&io::Error::from(e)),
            }
        }
        if Instant::now() >= deadline {
            return ProbeResult::Blocked;
        }
    }
}

/// An ICMP echo request with identifier `id` and sequence `seq`.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"palisade-lab-probe");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// Whether `packet` (an IPv4 packet as a raw socket hands it over) is the
/// echo reply to our request `id`/`seq`.
fn is_echo_reply(packet: &[u8], id: u16, seq: u16) -> bool {
    let Some(first) = packet.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    let Some(icmp) = packet.get(header..header + 8) else {
        return false;
    };
    icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero_and_replies_are_matched_by_id_and_seq() {
        let request = echo_request(0x1234, 7);
        assert_eq!(checksum(&request), 0);
        let mut reply = vec![0x45; 20];
        reply.extend_from_slice(&request);
        reply[20] = 0;
        assert!(is_echo_reply(&reply, 0x1234, 7));
        assert!(!is_echo_reply(&reply, 0x1234, 8));
        reply[20] = 8; // our own request, seen when probing ourselves
        assert!(!is_echo_reply(&reply, 0x1234, 7));
        assert!(!is_echo_reply(&reply[..22], 0x1234, 7));
    }

    #[test]
    fn places_round_trip_through_text() {
        for text in [
            "acme:web-1",
            "acme:prod/web-1",
            "world:acme@node-1",
            "node@node-1",
        ] {
            let place: Place = text.parse().unwrap();
            assert_eq!(place.to_string(), text);
        }
        assert_eq!("world:acme@n".parse(), Ok(Place::world("n", "acme")));
        assert_eq!("node@n".parse(), Ok(Place::Node("n".into())));
        assert_eq!("acme:web".parse(), Ok(Place::Endpoint("acme:web".into())));
        for bad in ["web-1", "", ":x", "world:acme", "node@", "a:b@c"] {
            assert!(bad.parse::<Place>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn records_serialize_flat() {
        let record = ProbeRecord {
            from: "acme:web-1".into(),
            to: "acme:db-1".into(),
            protocol: Protocol::Tcp,
            port: Some(5432),
            result: ProbeResult::Reachable {
                reply: Some("acme:db-1".into()),
            },
            elapsed_ms: 1.5,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["result"], "reachable");
        assert_eq!(json["reply"], "acme:db-1");
        assert_eq!(json["protocol"], "TCP");
        let back: ProbeRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        let blocked = serde_json::to_value(ProbeResult::Blocked).unwrap();
        assert_eq!(blocked, serde_json::json!({"result": "blocked"}));
    }
}
