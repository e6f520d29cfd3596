//! Per-packet cost of the datapath, measured in the kernel with
//! BPF_PROG_TEST_RUN and printed as ratios to an empty TC program measured in
//! the same run (bench/README.md, "Per-packet cost").
//!
//! For each POLICY size (10, 1k, 10k, 100k entries for other identities,
//! peers and ports, plus the one entry that decides) it measures
//! `from_endpoint` on:
//!   - the first packet of a connection: CONFIG's conntrack timeouts are set
//!     to 0, so the entry each run creates is expired on the next one and
//!     every repetition takes the whole new-connection path (conntrack miss,
//!     four-step policy lookup, delivery resolution, CT entry written, rule
//!     counter, NEW_ALLOWED event into the ring buffer, which is sized to
//!     hold every event of a run and drained between runs);
//!   - a packet of an established connection (normal timeouts: one CT hit).
//!
//! The packet goes from endpoint A to the node's own address, so delivery is
//! TC_ACT_OK and the packet buffer, which BPF_PROG_TEST_RUN reuses across
//! repetitions, is not rewritten between them. Needs root (netns, bpffs).
//!
//! Usage: packet [--repeat N] [--rounds N]

use std::net::Ipv4Addr;
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
use palisade_datapath::{Datapath, DatapathConfig, Direction, Hook, MapSizes, NetnsGuard};

#[derive(Parser)]
#[command(about = "Per-packet cost of palisade's datapath, as ratios to an empty TC program")]
struct Args {
    /// Repetitions per measurement (BPF_PROG_TEST_RUN `repeat`).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per case; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const TENANT: u32 = 1;
const ID_A: u32 = TENANT << 16 | 1;
const HOST_ID: u32 = 1;
const WORLD_ID: u32 = 2;
const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const SIZES: [u32; 4] = [10, 1_000, 10_000, 100_000];

/// The namespace and bpffs directory of this run, removed on drop.
struct Scratch {
    netns: String,
    bpffs: std::path::PathBuf,
}

impl Scratch {
    fn new() -> Result<Self> {
        let netns = format!("palisade-bench-{}", std::process::id());
        let bpffs =
            std::path::PathBuf::from(format!("/sys/fs/bpf/palisade-bench-{}", std::process::id()));
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

/// `n` POLICY entries that never decide the measured flow: other subjects,
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

fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = Scratch::new()?;
    let _inside = NetnsGuard::enter(&scratch.netns)?;
    let port = ifindex("hA")?;

    // One event per repetition must fit: 96-byte events + 8-byte headers.
    let events_bytes = (u64::from(args.repeat) * 104)
        .next_power_of_two()
        .max(1 << 20) as u32;
    let sizes = MapSizes {
        policy: 131_072,
        events_bytes,
        ..MapSizes::default()
    };
    let mut dp = Datapath::open(&DatapathConfig {
        bpffs_dir: scratch.bpffs.clone(),
        map_sizes: sizes,
    })?;
    let mut events = dp.take_event_reader()?;
    let empty_obj = palisade_datapath::testing::load_with_datapath_maps(&dp, BENCH_EMPTY_OBJECT)?;
    let empty = classifier(&empty_obj, "bench_empty")?;

    let host_mac = packet::mac(0x8a);
    let mac = packet::mac(0x0a);
    let maps = dp.maps_mut();
    maps.endpoints.insert(
        port,
        &Endpoint {
            identity: ID_A,
            tenant: TENANT,
            flags: 0,
            ipv4: IP_A.octets(),
            mac,
            host_mac,
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
    let deciding = PolicyKey::new(ID_A, Direction::Egress, HOST_ID, ip_proto::TCP, 80, 16);
    maps.policy.insert(&deciding, &PolicyValue::allow(7))?;
    maps.policy.insert(
        &PolicyKey::default_for(ID_A, Direction::Egress),
        &PolicyValue::deny(8),
    )?;

    let frame = |flags| {
        let tcp = packet::tcp(IP_A, 40000, IP_HOST, 80, flags, b"");
        packet::ethernet(
            host_mac,
            mac,
            ETH_P_IP,
            &packet::Ipv4::new(IP_A, IP_HOST, ip_proto::TCP).packet(&tcp),
        )
    };
    let (syn, ack) = (frame(packet::TCP_SYN), frame(packet::TCP_ACK));
    let measure = |prog: &SchedClassifier, frame: &[u8]| run(prog, frame, port, args.repeat);

    println!(
        "per-packet cost, BPF_PROG_TEST_RUN, repeat {}, median of {} rounds, kernel {}",
        args.repeat,
        args.rounds,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    println!(
        "{:>8} {:>9} {:>13} {:>7} {:>13} {:>7}",
        "POLICY", "empty ns", "first pkt ns", "ratio", "established", "ratio"
    );
    let mut rows = Vec::new();
    let mut inserted = 0;
    for size in SIZES {
        for key in filler(size).skip(inserted as usize) {
            dp.maps_mut()
                .policy
                .insert(&key, &PolicyValue::allow(100))?;
        }
        inserted = size;

        let (mut empty_ns, mut first_ns, mut est_ns) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            empty_ns.push(measure(empty, &syn)?);

            dp.maps_mut().config.set(&Config {
                ct_tcp_syn_ms: 0,
                ct_tcp_established_ms: 0,
                ct_tcp_fin_ms: 0,
                ct_tcp_close_ms: 0,
                ..Config::DEFAULT
            })?;
            let lost_before = dp.maps().counters.stat(StatSlot::EventsLost)?;
            first_ns.push(measure(dp.program(Hook::FromEndpoint)?, &syn)?);
            let emitted = events.drain()?.len();
            if emitted != args.repeat as usize
                || dp.maps().counters.stat(StatSlot::EventsLost)? != lost_before
            {
                bail!(
                    "{emitted} events for {} first packets: the ring buffer is too small",
                    args.repeat
                );
            }

            dp.maps_mut().config.set(&Config::DEFAULT)?;
            measure(dp.program(Hook::FromEndpoint)?, &syn)?; // (re)creates the connection under live timeouts
            events.drain()?;
            est_ns.push(measure(dp.program(Hook::FromEndpoint)?, &ack)?);
        }
        let (empty, first, est) = (median(empty_ns), median(first_ns), median(est_ns));
        let ratio = |d: Duration| d.as_nanos() as f64 / empty.as_nanos().max(1) as f64;
        println!(
            "{:>8} {:>9} {:>13} {:>7.2} {:>13} {:>7.2}",
            size + 2,
            empty.as_nanos(),
            first.as_nanos(),
            ratio(first),
            est.as_nanos(),
            ratio(est)
        );
        rows.push((ratio(first), ratio(est)));
    }

    let growth = rows[3].0 / rows[0].0;
    let worst_established = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    println!();
    println!(
        "first packet, 100k vs 10 entries: {growth:.2}x (target <= 1.10) {}",
        if growth <= 1.10 { "ok" } else { "MISSED" }
    );
    println!(
        "established vs empty, worst size: {worst_established:.2}x (target <= 3.00) {}",
        if worst_established <= 3.0 {
            "ok"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
