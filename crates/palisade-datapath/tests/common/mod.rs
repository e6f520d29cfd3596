//! Shared test support: uniquely named network namespaces and bpffs
//! directories that are removed on drop (even when a test panics), and the
//! [`Fixture`] the BPF_PROG_TEST_RUN tests start from.
#![allow(dead_code)] // each test binary uses a different part

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use palisade_datapath::abi::{
    Config, Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, TenantInfo, UplinkInfo,
};
use palisade_datapath::testing::{packet, prog_test_run, TestRunOutput};
use palisade_datapath::{
    Datapath, DatapathConfig, Direction, DropReason, EventReader, FlowEvent, Hook, MapSizes,
    NetnsGuard,
};

/// A short name unique to this process and call (interface names allow 15 bytes).
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{:x}x{}",
        std::process::id() % 0xfffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NETNS args...`
pub fn ip(netns: &str, args: &str) {
    let mut all = vec!["-n", netns];
    all.extend(args.split_whitespace());
    run("ip", &all);
}

/// A network namespace created for the test and deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates `ip netns add NAME` with loopback up.
    pub fn new(name: &str) -> Self {
        run("ip", &["netns", "add", name]);
        let ns = Self {
            name: name.to_string(),
        };
        ip(name, "link set lo up");
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A bpffs directory removed (pins and all) on drop.
#[derive(Debug)]
pub struct BpffsDir {
    /// The directory.
    pub path: PathBuf,
}

impl BpffsDir {
    /// `/sys/fs/bpf/palisade-test/<name>` (not created: Datapath::open does).
    pub fn new(name: &str) -> Self {
        Self {
            path: Path::new("/sys/fs/bpf/palisade-test").join(name),
        }
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0, "no interface {name}");
    index
}

/// Small maps: tests create many datapaths.
pub fn test_sizes() -> MapSizes {
    MapSizes {
        endpoints: 64,
        ipcache: 256,
        policy: 1024,
        conntrack: 1024,
        tenants: 16,
        rule_counters: 256,
        ratelimit: 256,
        events_bytes: 1 << 20,
    }
}

pub const TENANT: u32 = 1;
pub const TENANT2: u32 = 2;
pub const HOST_ID: u32 = 1;
pub const WORLD_ID: u32 = 2;
pub const ID_A: u32 = TENANT << 16 | 1;
pub const ID_B: u32 = TENANT << 16 | 2;
pub const ID_C: u32 = TENANT2 << 16 | 1;
pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const IP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
pub const IP_WORLD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
pub const IP_REMOTE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 9);
pub const NEXTHOP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
pub const ID_REMOTE: u32 = TENANT << 16 | 9;

/// One endpoint of the fixture.
#[derive(Clone, Copy, Debug)]
pub struct Port {
    pub ifindex: u32,
    pub identity: u32,
    pub tenant: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
}

impl Port {
    /// An Ethernet frame from this workload to its gateway.
    pub fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        packet::ethernet(self.host_mac, self.mac, ethertype, payload)
    }

    /// An IPv4 packet from this workload.
    pub fn ipv4(&self, ip: &packet::Ipv4, l4: &[u8]) -> Vec<u8> {
        self.frame(packet::ETH_P_IP, &ip.packet(l4))
    }

    /// A TCP segment from this workload to `dst`.
    pub fn tcp_to(&self, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let l4 = packet::tcp(self.ip, sport, dst, dport, flags, b"");
        self.ipv4(&packet::Ipv4::new(self.ip, dst, 6), &l4)
    }

    /// A UDP datagram from this workload to `dst`.
    pub fn udp_to(&self, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let l4 = packet::udp(self.ip, sport, dst, dport, b"hello");
        self.ipv4(&packet::Ipv4::new(self.ip, dst, 17), &l4)
    }

    /// An ICMP message from this workload to `dst`.
    pub fn icmp_to(&self, dst: Ipv4Addr, icmp: &[u8]) -> Vec<u8> {
        self.ipv4(&packet::Ipv4::new(self.ip, dst, 1), icmp)
    }
}

/// A netns with veth ports (to give BPF_PROG_TEST_RUN real ifindexes), a
/// datapath pinned in its own bpffs directory, and the standard tables:
/// tenant 1 with endpoints A and B and an uplink, tenant 2 with endpoint C
/// using A's address, the host at 10.0.0.254 and the world at 0.0.0.0/0.
/// POLICY starts empty. The test thread stays inside the netns until drop.
pub struct Fixture {
    pub dp: Datapath,
    pub events: EventReader,
    pub a: Port,
    pub b: Port,
    pub c: Port,
    pub uplink: u32,
    _inside: NetnsGuard,
    pub bpffs: BpffsDir,
    pub netns: Netns,
}

impl Fixture {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        let netns = Netns::new(&name);
        for (host, peer) in [("hA", "pA"), ("hB", "pB"), ("hC", "pC"), ("up0", "up1")] {
            ip(
                &name,
                &format!("link add {host} type veth peer name {peer}"),
            );
        }
        let inside = NetnsGuard::enter(&name).expect("enter the test netns");
        let bpffs = BpffsDir::new(&name);
        let mut dp = Datapath::open(&DatapathConfig {
            bpffs_dir: bpffs.path.clone(),
            map_sizes: test_sizes(),
        })
        .expect("open datapath");
        let events = dp.take_event_reader().expect("event reader");
        let port = |dev: &str, identity, tenant, ip, last: u8| Port {
            ifindex: ifindex(dev),
            identity,
            tenant,
            ip,
            mac: packet::mac(last),
            host_mac: packet::mac(last | 0x80),
        };
        let a = port("hA", ID_A, TENANT, IP_A, 0x0a);
        let b = port("hB", ID_B, TENANT, IP_B, 0x0b);
        let c = port("hC", ID_C, TENANT2, IP_A, 0x0c);
        let uplink = ifindex("up0");

        let maps = dp.maps_mut();
        for p in [a, b, c] {
            let ep = Endpoint {
                identity: p.identity,
                tenant: p.tenant,
                flags: 0,
                ipv4: p.ip.octets(),
                mac: p.mac,
                host_mac: p.host_mac,
            };
            maps.endpoints.insert(p.ifindex, &ep).unwrap();
            maps.ipcache
                .insert(
                    &IpcacheKey::new(p.tenant, p.ip, 32),
                    &IpcacheValue::local_endpoint(p.identity, p.ifindex),
                )
                .unwrap();
        }
        for tenant in [TENANT, TENANT2] {
            maps.ipcache
                .insert(
                    &IpcacheKey::new(tenant, Ipv4Addr::UNSPECIFIED, 0),
                    &IpcacheValue::world(WORLD_ID),
                )
                .unwrap();
        }
        maps.ipcache
            .insert(
                &IpcacheKey::new(TENANT, IP_HOST, 32),
                &IpcacheValue::host(HOST_ID),
            )
            .unwrap();
        maps.ipcache
            .insert(
                &IpcacheKey::new(TENANT, IP_REMOTE, 32),
                &IpcacheValue::remote_endpoint(ID_REMOTE, NEXTHOP),
            )
            .unwrap();
        maps.tenants
            .insert(
                TENANT,
                &TenantInfo {
                    uplink_ifindex: uplink,
                    nexthop: NEXTHOP.octets(),
                    vni: 0,
                    flags: 0,
                },
            )
            .unwrap();
        maps.uplinks
            .insert(
                uplink,
                &UplinkInfo {
                    tenant: TENANT,
                    flags: 0,
                },
            )
            .unwrap();
        maps.config
            .set(&Config {
                event_interval_ms: 0,
                ..Config::DEFAULT
            })
            .unwrap();

        Self {
            dp,
            events,
            a,
            b,
            c,
            uplink,
            _inside: inside,
            bpffs,
            netns,
        }
    }

    /// Runs `hook`'s program on `frame` received on `ifindex`.
    pub fn run(&self, hook: Hook, ifindex: u32, frame: &[u8]) -> TestRunOutput {
        prog_test_run(self.dp.program(hook).unwrap(), frame, ifindex).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs from_endpoint on a frame sent by `port`.
    pub fn send(&self, port: &Port, frame: &[u8]) -> TestRunOutput {
        self.run(Hook::FromEndpoint, port.ifindex, frame)
    }

    /// Adds a POLICY entry.
    pub fn policy(&mut self, key: PolicyKey, value: PolicyValue) {
        self.dp.maps_mut().policy.insert(&key, &value).unwrap();
    }

    /// Allows `subject` `dir` toward `peer` on (`proto`, exact `port`) by rule `cookie`.
    pub fn allow(
        &mut self,
        subject: u32,
        dir: Direction,
        peer: u32,
        proto: u8,
        port: u16,
        cookie: u32,
    ) {
        let bits = if proto == 0 { 0 } else { 16 };
        self.policy(
            PolicyKey::new(subject, dir, peer, proto, port, bits),
            PolicyValue::allow(cookie),
        );
    }

    /// Sets the (subject, dir) default entry to deny by rule `cookie`.
    pub fn default_deny(&mut self, subject: u32, dir: Direction, cookie: u32) {
        self.policy(
            PolicyKey::default_for(subject, dir),
            PolicyValue::deny(cookie),
        );
    }

    /// Allows every flow A <-> B in both policy sides (cookies 1..=4).
    pub fn allow_all_a_b(&mut self) {
        self.allow(ID_A, Direction::Egress, ID_B, 0, 0, 1);
        self.allow(ID_B, Direction::Ingress, ID_A, 0, 0, 2);
        self.allow(ID_B, Direction::Egress, ID_A, 0, 0, 3);
        self.allow(ID_A, Direction::Ingress, ID_B, 0, 0, 4);
    }

    /// Packets dropped so far for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.dp.maps().counters.drops(reason).unwrap().packets
    }

    /// Total packets dropped so far, all reasons.
    pub fn all_drops(&self) -> u64 {
        self.dp
            .maps()
            .counters
            .all_drops()
            .unwrap()
            .iter()
            .map(|(_, c)| c.packets)
            .sum()
    }

    /// Total packets counted for any rule.
    pub fn all_rule_hits(&self) -> u64 {
        self.dp
            .maps()
            .counters
            .all_rules()
            .unwrap()
            .values()
            .map(|c| c.packets)
            .sum()
    }

    /// Events emitted so far and not read yet.
    pub fn events(&mut self) -> Vec<FlowEvent> {
        self.events.drain().unwrap()
    }

    /// Updates CONFIG with `f`.
    pub fn config(&mut self, f: impl FnOnce(&mut Config)) {
        let mut config = self.dp.maps().config.get().unwrap();
        f(&mut config);
        self.dp.maps_mut().config.set(&config).unwrap();
    }
}

// ---- real traffic ---------------------------------------------------------------

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use palisade_datapath::abi::ip_proto;
use palisade_datapath::Interface;

/// Runs `work` on a new thread inside namespace `netns`.
pub fn in_netns<T: Send>(netns: &str, work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _inside = NetnsGuard::enter(netns).expect("enter netns");
            work()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A server thread inside a namespace, stopped on drop; counts what it received.
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Connections accepted (TCP) or datagrams received (UDP).
    pub received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Connections or datagrams received so far.
    pub fn count(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn spawn_server(
    netns: &str,
    serve: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) + Send + 'static,
) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let netns = netns.to_string();
    let (s, r) = (stop.clone(), received.clone());
    let thread = std::thread::spawn(move || {
        let _inside = NetnsGuard::enter(&netns).expect("enter netns");
        ready_tx.send(()).unwrap();
        serve(s, r);
    });
    ready_rx.recv().unwrap();
    Server {
        stop,
        received,
        thread: Some(thread),
    }
}

/// A TCP echo server on `addr` inside `netns` (one thread per connection).
pub fn tcp_echo_server(netns: &str, addr: SocketAddr) -> Server {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server = spawn_server(netns, move |stop, received| {
        let listener = TcpListener::bind(addr).expect("bind TCP");
        listener.set_nonblocking(true).unwrap();
        bound_tx.send(()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    received.fetch_add(1, Ordering::SeqCst);
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 1024];
                        while !stop.load(Ordering::SeqCst) {
                            match stream.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    bound_rx.recv().unwrap();
    server
}

/// A UDP echo server on `addr` inside `netns`.
pub fn udp_echo_server(netns: &str, addr: SocketAddr) -> Server {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server = spawn_server(netns, move |stop, received| {
        let socket = UdpSocket::bind(addr).expect("bind UDP");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        bound_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                received.fetch_add(1, Ordering::SeqCst);
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    bound_rx.recv().unwrap();
    server
}

/// Connects from `netns` to `addr`, sends a line and reads it back.
pub fn tcp_echo_ok(netns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    in_netns(netns, || {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 5];
        stream.write_all(b"hello").is_ok()
            && stream.read_exact(&mut buf).is_ok()
            && &buf == b"hello"
    })
}

/// Streams `bytes` to the echo server at `addr` from `netns` and reads them
/// all back (large writes become GSO packets on veth).
pub fn tcp_bulk_ok(netns: &str, addr: SocketAddr, bytes: usize) -> bool {
    in_netns(netns, || {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // A black hole must fail the transfer, not hang the test.
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let chunk = vec![0x5au8; 64 << 10];
            let mut sent = 0;
            while sent < bytes {
                let n = chunk.len().min(bytes - sent);
                if writer.write_all(&chunk[..n]).is_err() {
                    return false;
                }
                sent += n;
            }
            true
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut received = 0;
        while received < bytes {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
        sender.join().unwrap() && received == bytes
    })
}

/// Sends a datagram from `netns` to `addr` and waits for the echo.
pub fn udp_echo_ok(netns: &str, addr: SocketAddr, timeout: Duration) -> bool {
    in_netns(netns, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 16];
        socket.send_to(b"hello", addr).is_ok() && matches!(socket.recv_from(&mut buf), Ok((5, _)))
    })
}

/// One ICMP echo from `netns` to `dst` over a raw socket; true when the reply came.
pub fn ping(netns: &str, dst: Ipv4Addr, timeout: Duration) -> bool {
    in_netns(netns, || {
        // SAFETY: plain socket(2) call; the fd is owned by `sock` below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket nobody else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let id: u16 = 0x4000 | (std::process::id() as u16 & 0x3fff);
        let request = packet::icmp_echo(packet::ICMP_ECHO_REQUEST, id, 1);
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and sockaddr_in of the right length.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(
            sent,
            request.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        while std::time::Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&sock),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                continue;
            }
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe { libc::recv(pfd.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 28 {
                continue;
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let icmp = &buf[ihl..n as usize];
            if icmp[0] == packet::ICMP_ECHO_REPLY && u16::from_be_bytes([icmp[4], icmp[5]]) == id {
                return true;
            }
        }
        false
    })
}

/// Sends a raw Ethernet frame out of `dev` inside `netns` (AF_PACKET).
pub fn send_raw_frame(netns: &str, dev: &str, frame: &[u8]) {
    in_netns(netns, || {
        // SAFETY: plain socket(2) call; the fd is owned by `sock` below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket nobody else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex(dev) as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: valid buffer and sockaddr_ll of the right length.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            sent,
            frame.len() as isize,
            "send raw frame: {}",
            std::io::Error::last_os_error()
        );
    })
}

/// Address of the world host behind the uplink.
pub const IP_WAN: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
/// The node's address on the uplink.
pub const IP_NODE_WAN: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);

/// Real namespaces: a node (forwarding off) with endpoints A (10.0.0.1) and
/// B (10.0.0.2) behind veth ports hA/hB, the node's own address 10.0.0.254
/// on lo, and a world namespace W (192.168.100.1) behind the uplink up0
/// (192.168.100.2). Tables are filled like the [`Fixture`]'s; nothing is
/// attached and POLICY is empty.
pub struct Topology {
    pub bpffs: BpffsDir,
    pub node: Netns,
    pub a: Netns,
    pub b: Netns,
    pub world: Netns,
}

impl Topology {
    pub fn new(tag: &str) -> Self {
        let base = unique(tag);
        let t = Self {
            bpffs: BpffsDir::new(&base),
            node: Netns::new(&format!("{base}n")),
            a: Netns::new(&format!("{base}a")),
            b: Netns::new(&format!("{base}b")),
            world: Netns::new(&format!("{base}w")),
        };
        let n = t.node.name.as_str();
        ip(n, &format!("addr add {IP_HOST}/32 dev lo"));
        for (port, ep, addr, last) in [("hA", &t.a.name, IP_A, 0x0a), ("hB", &t.b.name, IP_B, 0x0b)]
        {
            ip(
                n,
                &format!(
                    "link add {port} address {} type veth peer name eth0 netns {ep}",
                    mac_str(packet::mac(last | 0x80))
                ),
            );
            ip(
                ep,
                &format!("link set eth0 address {}", mac_str(packet::mac(last))),
            );
            ip(ep, &format!("addr add {addr}/32 dev eth0"));
            ip(ep, "link set eth0 up");
            ip(ep, "route add default via 169.254.1.1 dev eth0 onlink");
            ip(n, &format!("link set {port} up"));
            // The node reaches the workload through its port (to_endpoint path).
            ip(n, &format!("route add {addr}/32 dev {port} src {IP_HOST}"));
            ip(
                n,
                &format!(
                    "neigh add {addr} lladdr {} dev {port} nud permanent",
                    mac_str(packet::mac(last))
                ),
            );
        }
        let w = t.world.name.as_str();
        ip(
            n,
            &format!("link add up0 type veth peer name wan0 netns {w}"),
        );
        ip(n, &format!("addr add {IP_NODE_WAN}/24 dev up0"));
        ip(n, "link set up0 up");
        ip(w, &format!("addr add {IP_WAN}/24 dev wan0"));
        ip(w, "link set wan0 up");
        ip(w, &format!("route add 10.0.0.0/24 via {IP_NODE_WAN}"));
        t
    }

    /// Opens (or adopts) the datapath of this topology.
    pub fn open(&self) -> Datapath {
        Datapath::open(&DatapathConfig {
            bpffs_dir: self.bpffs.path.clone(),
            map_sizes: test_sizes(),
        })
        .expect("open")
    }

    /// Fills ENDPOINTS, IPCACHE, TENANTS, UPLINKS for this topology.
    pub fn fill_tables(&self, dp: &mut Datapath) {
        let (ha, hb, up0) = in_netns(&self.node.name, || {
            (ifindex("hA"), ifindex("hB"), ifindex("up0"))
        });
        let maps = dp.maps_mut();
        for (port, identity, ip, last) in [(ha, ID_A, IP_A, 0x0a), (hb, ID_B, IP_B, 0x0b)] {
            let ep = Endpoint {
                identity,
                tenant: TENANT,
                flags: 0,
                ipv4: ip.octets(),
                mac: packet::mac(last),
                host_mac: packet::mac(last | 0x80),
            };
            maps.endpoints.insert(port, &ep).unwrap();
            maps.ipcache
                .insert(
                    &IpcacheKey::new(TENANT, ip, 32),
                    &IpcacheValue::local_endpoint(identity, port),
                )
                .unwrap();
        }
        maps.ipcache
            .insert(
                &IpcacheKey::new(TENANT, Ipv4Addr::UNSPECIFIED, 0),
                &IpcacheValue::world(WORLD_ID),
            )
            .unwrap();
        maps.ipcache
            .insert(
                &IpcacheKey::new(TENANT, IP_HOST, 32),
                &IpcacheValue::host(HOST_ID),
            )
            .unwrap();
        maps.tenants
            .insert(
                TENANT,
                &TenantInfo {
                    uplink_ifindex: up0,
                    nexthop: IP_WAN.octets(),
                    vni: 0,
                    flags: 0,
                },
            )
            .unwrap();
        maps.uplinks
            .insert(
                up0,
                &UplinkInfo {
                    tenant: TENANT,
                    flags: 0,
                },
            )
            .unwrap();
    }

    /// The standard policy of the traffic tests: A may reach B on tcp/8080,
    /// udp/5353 and ping, the world on tcp/80, and the node may reach A on
    /// tcp/22; the world may reach A on tcp/443. Everything else is denied
    /// (cookie 99), and B may open nothing.
    pub fn standard_policy(&self, dp: &mut Datapath) {
        let policy = &mut dp.maps_mut().policy;
        let mut allow = |subject, dir, peer, proto, port, cookie| {
            policy
                .insert(
                    &PolicyKey::new(subject, dir, peer, proto, port, 16),
                    &PolicyValue::allow(cookie),
                )
                .unwrap();
        };
        allow(ID_A, Direction::Egress, ID_B, ip_proto::TCP, 8080, 1);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::TCP, 8080, 2);
        allow(ID_A, Direction::Egress, ID_B, ip_proto::UDP, 5353, 3);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::UDP, 5353, 4);
        allow(ID_A, Direction::Egress, ID_B, ip_proto::ICMP, 8 << 8, 5);
        allow(ID_B, Direction::Ingress, ID_A, ip_proto::ICMP, 8 << 8, 6);
        allow(ID_A, Direction::Egress, WORLD_ID, ip_proto::TCP, 80, 7);
        allow(ID_A, Direction::Ingress, HOST_ID, ip_proto::TCP, 22, 8);
        allow(ID_A, Direction::Ingress, WORLD_ID, ip_proto::TCP, 443, 9);
        for id in [ID_A, ID_B] {
            for dir in [Direction::Egress, Direction::Ingress] {
                policy
                    .insert(&PolicyKey::default_for(id, dir), &PolicyValue::deny(99))
                    .unwrap();
            }
        }
    }

    /// Attaches from_endpoint/to_endpoint on hA and hB, from_uplink on up0.
    pub fn attach_all(&self, dp: &Datapath) -> Vec<palisade_datapath::Attachment> {
        let n = Some(self.node.name.as_str());
        let mut out = Vec::new();
        for port in ["hA", "hB"] {
            out.push(
                dp.attach(n, &Interface::name(port), Hook::FromEndpoint)
                    .expect("attach from_endpoint"),
            );
            out.push(
                dp.attach(n, &Interface::name(port), Hook::ToEndpoint)
                    .expect("attach to_endpoint"),
            );
        }
        out.push(
            dp.attach(n, &Interface::name("up0"), Hook::FromUplink)
                .expect("attach from_uplink"),
        );
        out
    }
}

/// `aa:bb:cc:dd:ee:ff`
pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---- capture ----------------------------------------------------------------------

/// Every frame seen on one interface (both directions) while it runs: an
/// AF_PACKET socket opened inside the interface's namespace.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    /// Starts capturing on `dev` inside `netns`; returns once the socket is bound.
    pub fn start(netns: &str, dev: &str) -> Capture {
        Capture::start_keeping(netns, dev, |_| true)
    }

    /// Like [`Capture::start`], keeping only the frames `keep` accepts.
    pub fn start_keeping(netns: &str, dev: &str, keep: fn(&[u8]) -> bool) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (netns, dev, s) = (netns.to_string(), dev.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let _inside = NetnsGuard::enter(&netns).expect("enter netns");
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the fd is owned by `sock` below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is a fresh socket nobody else owns.
            let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
            let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            at.sll_family = libc::AF_PACKET as u16;
            at.sll_protocol = all;
            at.sll_ifindex = ifindex(&dev) as i32;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
            // SAFETY: valid sockaddr_ll of the right length.
            let bound = unsafe {
                libc::bind(
                    raw,
                    (&at as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            ready_tx.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let mut pfd = libc::pollfd {
                    fd: raw,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 20) } <= 0 {
                    continue;
                }
                // SAFETY: buf is valid for buf.len() bytes.
                let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && keep(&buf[..n as usize]) {
                    frames.push(buf[..n as usize].to_vec());
                }
            }
            frames
        });
        ready_rx.recv().unwrap();
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns the frames, in arrival order.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A VXLAN packet on the underlay, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub outer_df: bool,
    pub vni: u32,
    /// The Group Policy ID, when the G flag is set.
    pub gbp: Option<u16>,
    pub inner_src: Ipv4Addr,
    pub inner_dst: Ipv4Addr,
    pub inner_proto: u8,
    pub inner_sport: u16,
    pub inner_dport: u16,
}

/// Decodes an Ethernet frame carrying IPv4/UDP/4789/VXLAN/Ethernet/IPv4;
/// `None` for anything else (ARP, other UDP, outer fragments after the first).
pub fn decode_vxlan(frame: &[u8]) -> Option<Vxlan> {
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let addr = |b: &[u8], at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
    if frame.len() < 14 + 20 + 8 + 8 + 14 + 20 || be16(frame, 12) != 0x0800 {
        return None;
    }
    let ip = &frame[14..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 || be16(ip, 6) & 0x1fff != 0 {
        return None;
    }
    let udp = &ip[hlen..];
    if be16(udp, 2) != 4789 {
        return None;
    }
    let vx = &udp[8..];
    let inner = &vx[8..];
    if be16(inner, 12) != 0x0800 {
        return None;
    }
    let iip = &inner[14..];
    let ihlen = usize::from(iip[0] & 0x0f) * 4;
    let l4 = &iip[ihlen..];
    let ports = matches!(iip[9], 6 | 17) && l4.len() >= 4;
    Some(Vxlan {
        outer_src: addr(ip, 12),
        outer_dst: addr(ip, 16),
        outer_df: be16(ip, 6) & 0x4000 != 0,
        vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        gbp: (vx[0] & 0x80 != 0).then(|| be16(vx, 2)),
        inner_src: addr(iip, 12),
        inner_dst: addr(iip, 16),
        inner_proto: iip[9],
        inner_sport: if ports { be16(l4, 0) } else { 0 },
        inner_dport: if ports { be16(l4, 2) } else { 0 },
    })
}
