//! Per-packet cost of the datapath, measured in the kernel with
//! BPF_PROG_TEST_RUN and printed as ratios to an empty TC program measured in
//! the same round (bench/README.md, "Per-packet cost").
//!
//! For each POLICY size (10, 1k, 10k, 100k entries for other identities,
//! peers and ports, plus the entries that decide) it measures `from_endpoint`
//! on:
//!   - the first packet of a connection decided by an exact-port entry of
//!     its peer (step 1 of the lookup): CONFIG's conntrack timeouts are set to
//!     0, so the entry each run creates is expired on the next one and every
//!     repetition takes the whole new-connection path (conntrack miss, policy
//!     lookup, delivery resolution, CT entry written, rule counter,
//!     NEW_ALLOWED event into the ring buffer, which is sized to hold every
//!     event of a run and drained between runs);
//!   - the first packet of a connection that no entry names, decided by the
//!     subject's default (step 4: the longest lookup there is);
//!   - a packet of an established connection (normal timeouts: one CT hit).
//!
//! Each size has its own datapath (maps and programs), all built before the
//! first measurement, and every round measures every size, starting with a
//! different one each round: load from other work on the machine falls on
//! all sizes alike.
//!
//! The packets go from endpoint A to the node's own address, so delivery is
//! TC_ACT_OK and the packet buffer, which BPF_PROG_TEST_RUN reuses across
//! repetitions, is not rewritten between them. Needs root (netns, bpffs).
//!
//! Usage: packet [--repeat N] [--rounds N]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aya::programs::SchedClassifier;
use clap::Parser;
use palisade_datapath::abi::{
    ip_proto, Config, Endpoint, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue, StatSlot,
};
use palisade_datapath::testing::packet::{self, ETH_P_IP};
use palisade_datapath::testing::{classifier, prog_test_run_repeat, BENCH_EMPTY_OBJECT};
use palisade_datapath::{
    Datapath, DatapathConfig, Direction, EventReader, Hook, MapSizes, NetnsGuard,
};

#[derive(Parser)]
#[command(about = "Per-packet cost of palisade's datapath, as ratios to an empty TC program")]
struct Args {
    /// Repetitions per measurement (BPF_PROG_TEST_RUN `repeat`).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per case; the median is reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

const TENANT: u32 = 1;
const ID_A: u32 = TENANT << 16 | 1;
const HOST_ID: u32 = 1;
const WORLD_ID: u32 = 2;
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const SIZES: [u32; 4] = [10, 1_000, 10_000, 100_000];
/// Port of the flow an exact-port entry decides.
const PORT_EXACT: u16 = 80;
/// Port of the flow only A's default decides (no filler uses it).
const PORT_DEFAULT: u16 = 8;

/// The namespace and bpffs directory of this run, removed on drop.
struct Scratch {
    netns: String,
    bpffs: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self> {
        let netns = format!("palisade-bench-{}", std::process::id());
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/palisade-bench-{}", std::process::id()));
        ip(&["netns", "add", &netns])?;
        let scratch = Self { netns, bpffs };
        ip(&[
            "-n",
            &scratch.netns,
            "link",
            "add",
            "hA",
            "type",
            "veth",
            "peer",
            "name",
            "pA",
        ])?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip").args(args).status().context("run ip")?;
    if !status.success() {
        bail!("ip {} failed (run as root)", args.join(" "));
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated interface name.
    let index = unsafe { nix::libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("no interface {name}");
    }
    Ok(index)
}

/// `n` POLICY entries that never decide the measured flows: other subjects,
/// and A's egress toward other peers and ports.
fn filler(n: u32) -> impl Iterator<Item = PolicyKey> {
    (0..n).map(|i| {
        let subject = if i % 4 == 0 {
            ID_A
        } else {
            (3 << 16) | (i / 16)
        };
        let peer = 0x0005_0000 + (i % 4093);
        let port = 1024 + (i % 60_000) as u16;
        PolicyKey::new(subject, Direction::Egress, peer, ip_proto::TCP, port, 16)
    })
}

/// One POLICY size: its own datapath, tables and event reader.
struct Setup {
    size: u32,
    dp: Datapath,
    events: EventReader,
}

impl Setup {
    fn new(dir: PathBuf, size: u32, port: u32, repeat: u32) -> Result<Self> {
        // One event per repetition must fit: 96-byte events + 8-byte headers.
        let events_bytes = (u64::from(repeat) * 104).next_power_of_two().max(1 << 20) as u32;
        let mut dp = Datapath::open(&DatapathConfig {
            bpffs_dir: dir,
            map_sizes: MapSizes {
                policy: 131_072,
                events_bytes,
                ..MapSizes::default()
            },
        })?;
        let events = dp.take_event_reader()?;
        let maps = dp.maps_mut();
        maps.endpoints.insert(
            port,
            &Endpoint {
                identity: ID_A,
                tenant: TENANT,
                flags: 0,
                ipv4: IP_A.octets(),
                mac: packet::mac(0x0a),
                host_mac: packet::mac(0x8a),
            },
        )?;
        maps.ipcache.insert(
            &IpcacheKey::new(TENANT, IP_A, 32),
            &IpcacheValue::local_endpoint(ID_A, port),
        )?;
        maps.ipcache.insert(
            &IpcacheKey::new(TENANT, IP_HOST, 32),
            &IpcacheValue::host(HOST_ID),
        )?;
        maps.ipcache.insert(
            &IpcacheKey::new(TENANT, Ipv4Addr::UNSPECIFIED, 0),
            &IpcacheValue::world(WORLD_ID),
        )?;
        let deciding = PolicyKey::new(
            ID_A,
            Direction::Egress,
            HOST_ID,
            ip_proto::TCP,
            PORT_EXACT,
            16,
        );
        maps.policy.insert(&deciding, &PolicyValue::allow(7))?;
        maps.policy.insert(
            &PolicyKey::default_for(ID_A, Direction::Egress),
            &PolicyValue::allow(8),
        )?;
        for key in filler(size) {
            maps.policy.insert(&key, &PolicyValue::allow(100))?;
        }
        Ok(Self { size, dp, events })
    }

    /// Average time of one first packet of `frame`'s flow, with its events checked.
    fn first_packet(&mut self, frame: &[u8], port: u32, repeat: u32) -> Result<Duration> {
        self.dp.maps_mut().config.set(&Config {
            ct_tcp_syn_ms: 0,
            ct_tcp_established_ms: 0,
            ct_tcp_fin_ms: 0,
            ct_tcp_close_ms: 0,
            ..Config::DEFAULT
        })?;
        let lost_before = self.dp.maps().counters.stat(StatSlot::EventsLost)?;
        let took = run(self.dp.program(Hook::FromEndpoint)?, frame, port, repeat)?;
        let emitted = self.events.drain()?.len();
        if emitted != repeat as usize
            || self.dp.maps().counters.stat(StatSlot::EventsLost)? != lost_before
        {
            bail!("{emitted} events for {repeat} first packets: the ring buffer is too small");
        }
        Ok(took)
    }

    /// Average time of one packet (`ack`) of a connection opened by `syn`.
    fn established(&mut self, syn: &[u8], ack: &[u8], port: u32, repeat: u32) -> Result<Duration> {
        self.dp.maps_mut().config.set(&Config::DEFAULT)?;
        // (Re)creates the connection under live timeouts.
        run(self.dp.program(Hook::FromEndpoint)?, syn, port, 1)?;
        self.events.drain()?;
        run(self.dp.program(Hook::FromEndpoint)?, ack, port, repeat)
    }
}

/// Average time of one run of `prog` on `frame`, which must pass (TC_ACT_OK).
fn run(prog: &SchedClassifier, frame: &[u8], port: u32, repeat: u32) -> Result<Duration> {
    let out = prog_test_run_repeat(prog, frame, port, repeat)?;
    if out.retval != 0 {
        bail!(
            "the measured path returned {} instead of TC_ACT_OK: the setup is wrong",
            out.retval
        );
    }
    Ok(out.duration)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Medians of one size: empty, first (exact), first (default), established.
#[derive(Default)]
struct Samples([Vec<Duration>; 4]);

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = Scratch::new()?;
    let _inside = NetnsGuard::enter(&scratch.netns)?;
    let port = ifindex("hA")?;

    let mut setups = Vec::new();
    for size in SIZES {
        let dir = scratch.bpffs.join(size.to_string());
        setups.push(Setup::new(dir, size, port, args.repeat)?);
    }
    let empty_obj =
        palisade_datapath::testing::load_with_datapath_maps(&setups[0].dp, BENCH_EMPTY_OBJECT)?;
    let empty = classifier(&empty_obj, "bench_empty")?;

    let frame = |dport, flags| {
        let tcp = packet::tcp(IP_A, 40000, IP_HOST, dport, flags, b"");
        packet::ethernet(
            packet::mac(0x8a),
            packet::mac(0x0a),
            ETH_P_IP,
            &packet::Ipv4::new(IP_A, IP_HOST, ip_proto::TCP).packet(&tcp),
        )
    };
    let syn = frame(PORT_EXACT, packet::TCP_SYN);
    let ack = frame(PORT_EXACT, packet::TCP_ACK);
    let syn_default = frame(PORT_DEFAULT, packet::TCP_SYN);

    println!(
        "per-packet cost, BPF_PROG_TEST_RUN, repeat {}, median of {} rounds, kernel {}",
        args.repeat,
        args.rounds,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    let mut samples: Vec<Samples> = setups.iter().map(|_| Samples::default()).collect();
    for round in 0..args.rounds {
        for i in 0..setups.len() {
            let i = (i + round) % setups.len();
            let (setup, samples) = (&mut setups[i], &mut samples[i]);
            let [empty_ns, first_ns, default_ns, est_ns] = &mut samples.0;
            empty_ns.push(run(empty, &syn, port, args.repeat)?);
            first_ns.push(setup.first_packet(&syn, port, args.repeat)?);
            default_ns.push(setup.first_packet(&syn_default, port, args.repeat)?);
            est_ns.push(setup.established(&syn, &ack, port, args.repeat)?);
        }
    }

    println!(
        "{:>8} {:>8} {:>10} {:>6} {:>12} {:>6} {:>12} {:>6}",
        "POLICY", "empty ns", "first ns", "ratio", "default ns", "ratio", "establ. ns", "ratio"
    );
    let mut rows = Vec::new();
    for (setup, samples) in setups.iter().zip(samples) {
        let [empty, first, default, est] = samples.0.map(median);
        let ratio = |d: Duration| d.as_nanos() as f64 / empty.as_nanos().max(1) as f64;
        println!(
            "{:>8} {:>8} {:>10} {:>6.2} {:>12} {:>6.2} {:>12} {:>6.2}",
            setup.size + 2,
            empty.as_nanos(),
            first.as_nanos(),
            ratio(first),
            default.as_nanos(),
            ratio(default),
            est.as_nanos(),
            ratio(est)
        );
        rows.push((ratio(first), ratio(default), ratio(est)));
    }

    let last = rows.len() - 1;
    let growth = rows[last].0 / rows[0].0;
    let growth_default = rows[last].1 / rows[0].1;
    let worst_established = rows.iter().map(|r| r.2).fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!(
        "first packet, 100k vs 10 entries: {growth:.2}x (target <= 1.10) {}",
        verdict(growth <= 1.10)
    );
    println!(
        "first packet decided by the default, 100k vs 10 entries: {growth_default:.2}x (no target)"
    );
    println!(
        "established vs empty, worst size: {worst_established:.2}x (target <= 3.00) {}",
        verdict(worst_established <= 3.0)
    );
    Ok(())
}
