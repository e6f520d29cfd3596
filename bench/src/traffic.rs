//! The traffic generator and counter: a sender floods 64-byte-frame UDP
//! packets from one network namespace with `sendmmsg`, a receiver counts
//! them in another with `recvmmsg`, and [`measure`] turns the two counters
//! into packets per second over a fixed window.
//!
//! A socket stays in the namespace it was created in, so each socket is
//! created on a thread that entered its namespace (`palisade_lab::netns::run_in`)
//! and then driven from an ordinary thread.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn,
};
use nix::unistd::gettid;
use palisade_lab::netns;
use serde::Serialize;

use crate::error::{BenchError, Result};

/// UDP payload of every packet: with 14 (Ethernet) + 20 (IPv4) + 8 (UDP)
/// bytes of headers it makes a 60-byte frame, 64 bytes with the FCS — the
/// smallest Ethernet frame, where per-packet costs dominate.
pub const PAYLOAD: [u8; 18] = *b"palisade pps probe";

/// Messages per `sendmmsg` call.
const SEND_BATCH: usize = 64;

/// Messages per `recvmmsg` call.
const RECV_BATCH: usize = 256;

/// Receive buffer of the counter: deep enough that a receiver briefly
/// descheduled on the shared machine does not turn into drops.
const RECEIVE_BUFFER: usize = 32 << 20;

/// How often a blocked receiver wakes up to see whether it should stop.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(50);

/// One UDP flow between two namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// Namespace the sender runs in.
    pub src_netns: String,
    /// Namespace the receiver runs in.
    pub dst_netns: String,
    /// Source address (the sender binds it; the source port is ephemeral).
    pub src: Ipv4Addr,
    /// Destination address (the receiver binds it).
    pub dst: Ipv4Addr,
    /// Destination UDP port.
    pub port: u16,
}

/// When to count: after `warmup` (ARP resolved, caches warm), for `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Traffic flows this long before counting starts.
    pub warmup: Duration,
    /// Counting lasts this long.
    pub length: Duration,
}

/// What one measurement saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// Packets the sender handed to the kernel per second.
    pub sent_pps: f64,
    /// Packets the receiver got per second.
    pub received_pps: f64,
    /// Packets sent in the window.
    pub sent: u64,
    /// Packets received in the window.
    pub received: u64,
    /// The window's measured length in seconds.
    pub seconds: f64,
    /// Share of one CPU the sender thread ran during the window (1.0 = a
    /// whole core). Sending, and forwarding through the node (softirq work
    /// done on the way out of `sendmmsg`), are accounted to it; on a shared
    /// machine it says how much CPU the flood actually got. `None` when the
    /// kernel's schedstat could not be read.
    pub sender_cpu: Option<f64>,
}

impl Rates {
    /// Received packets per second of sender CPU time: the cost of the path
    /// with the competition for the CPU taken out.
    pub fn received_per_sender_core(&self) -> Option<f64> {
        self.sender_cpu
            .filter(|cpu| *cpu > 0.0)
            .map(|cpu| self.received_pps / cpu)
    }
}

/// Floods `flow` and counts what arrives: packets go out during
/// `window.warmup + window.length`, counting covers `window.length`.
/// Blocks for that long.
pub fn measure(flow: &Flow, window: Window) -> Result<Rates> {
    let receiver = netns::run_in(&flow.dst_netns, || Ok(bind_receiver(flow)))??;
    let sender = netns::run_in(&flow.src_netns, || Ok(connect_sender(flow)))??;

    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let sender_tid = AtomicI32::new(0);
    thread::scope(|s| {
        // Whatever happens below, the workers must end or the scope never returns.
        let _stop = StopOnDrop(&stop);
        let counting = s.spawn(|| receive(&receiver, &flow.dst_netns, &stop, &received));
        let sending = s.spawn(|| {
            sender_tid.store(gettid().as_raw(), Ordering::Relaxed);
            send(&sender, &flow.src_netns, &stop, &sent)
        });

        thread::sleep(window.warmup);
        let tid = sender_tid.load(Ordering::Relaxed);
        let (start, cpu0, sent0, received0) = (
            Instant::now(),
            thread_cpu(tid),
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        thread::sleep(window.length);
        let (seconds, cpu1, sent1, received1) = (
            start.elapsed().as_secs_f64(),
            thread_cpu(tid),
            sent.load(Ordering::Relaxed),
            received.load(Ordering::Relaxed),
        );
        stop.store(true, Ordering::Relaxed);

        join(sending)?;
        join(counting)?;
        let (sent, received) = (sent1 - sent0, received1 - received0);
        Ok(Rates {
            sent_pps: sent as f64 / seconds,
            received_pps: received as f64 / seconds,
            sent,
            received,
            seconds,
            sender_cpu: cpu0
                .zip(cpu1)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64() / seconds),
        })
    })
}

/// Time thread `tid` of this process has run on a CPU (first field of its
/// schedstat, in nanoseconds); `None` if it cannot be read.
fn thread_cpu(tid: i32) -> Option<Duration> {
    if tid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Sets the flag when dropped, so that workers stop on every way out.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn join(handle: thread::ScopedJoinHandle<'_, Result<()>>) -> Result<()> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The counter's socket, bound to the flow's destination (call inside `dst_netns`).
fn bind_receiver(flow: &Flow) -> Result<UdpSocket> {
    let addr = SocketAddrV4::new(flow.dst, flow.port);
    let socket_error = |action: String| {
        let netns = flow.dst_netns.clone();
        move |source| BenchError::Socket {
            action,
            netns,
            source,
        }
    };
    let socket =
        UdpSocket::bind(addr).map_err(socket_error(format!("bind the receiver to {addr}")))?;
    // Forcing the size past rmem_max needs CAP_NET_ADMIN; without it take what the limit allows.
    if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER)
            .map_err(|errno| socket_error("set SO_RCVBUF".into())(errno.into()))?;
    }
    socket
        .set_read_timeout(Some(RECEIVE_TIMEOUT))
        .map_err(socket_error("set SO_RCVTIMEO".into()))?;
    Ok(socket)
}

/// The sender's socket, connected to the flow's destination (call inside `src_netns`).
fn connect_sender(flow: &Flow) -> Result<UdpSocket> {
    let error = |action: String| {
        let netns = flow.src_netns.clone();
        move |source| BenchError::Socket {
            action,
            netns,
            source,
        }
    };
    let socket = UdpSocket::bind(SocketAddrV4::new(flow.src, 0))
        .map_err(error(format!("bind the sender to {}", flow.src)))?;
    let dst = SocketAddrV4::new(flow.dst, flow.port);
    // Connected: the route is looked up once, not per packet.
    socket
        .connect(dst)
        .map_err(error(format!("connect the sender to {dst}")))?;
    Ok(socket)
}

/// Counts datagrams until `stop`.
fn receive(socket: &UdpSocket, netns: &str, stop: &AtomicBool, received: &AtomicU64) -> Result<()> {
    let mut buffers = [[0u8; 64]; RECV_BATCH];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(RECV_BATCH, None);
    while !stop.load(Ordering::Relaxed) {
        // Made anew each call (on the stack): nix ties them to the headers' borrow.
        let mut slices = buffers.each_mut().map(|b| [IoSliceMut::new(b)]);
        // Wait for one datagram (up to SO_RCVTIMEO), then take whatever else is queued.
        match recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(batch) => {
                received.fetch_add(batch.count() as u64, Ordering::Relaxed);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(errno) => {
                return Err(BenchError::Socket {
                    action: "recvmmsg".into(),
                    netns: netns.to_string(),
                    source: errno.into(),
                })
            }
        }
    }
    Ok(())
}

/// Sends batches of [`PAYLOAD`] as fast as the kernel takes them, until `stop`.
fn send(socket: &UdpSocket, netns: &str, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    let slices: Vec<[IoSlice<'_>; 1]> = (0..SEND_BATCH).map(|_| [IoSlice::new(&PAYLOAD)]).collect();
    // The socket is connected: no per-message address.
    let addresses = [None::<SockaddrIn>; SEND_BATCH];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(SEND_BATCH, None);
    while !stop.load(Ordering::Relaxed) {
        match sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            addresses,
            [] as [ControlMessage<'_>; 0],
            MsgFlags::empty(),
        ) {
            Ok(batch) => {
                sent.fetch_add(batch.count() as u64, Ordering::Relaxed);
            }
            // An ICMP error for an earlier packet (port unreachable before the
            // receiver bound, say) is reported once on the next send: go on.
            Err(Errno::ECONNREFUSED | Errno::EINTR | Errno::ENOBUFS | Errno::EAGAIN) => {}
            Err(errno) => {
                return Err(BenchError::Socket {
                    action: "sendmmsg".into(),
                    netns: netns.to_string(),
                    source: errno.into(),
                })
            }
        }
    }
    Ok(())
}
