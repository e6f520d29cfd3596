//! Test support: run a program on a packet with BPF_PROG_TEST_RUN, load the
//! test-only objects (chained test stages, the overlay's metadata injector,
//! the empty benchmark baseline, the ABI type catalogue), and build packets
//! ([`packet`]).
//!
//! BPF_PROG_TEST_RUN with an ifindex needs that interface to exist in the
//! calling thread's network namespace: tests create one and enter it with
//! [`crate::NetnsGuard`].

pub mod packet;

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};

use crate::datapath::Datapath;
use crate::error::{Error, Result};

/// `TC_ACT_OK`: the packet continues in the kernel.
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: the packet is dropped.
pub const TC_ACT_SHOT: u32 = 2;
/// `TC_ACT_REDIRECT`: the packet was redirected (bpf_redirect*).
pub const TC_ACT_REDIRECT: u32 = 7;

/// `bpf/test_stages.c`: `stage_drop_all` and `stage_pass` (see bpf/README.md, "Chain").
pub const TEST_STAGES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test_stages.o"));
/// `bpf/test_overlay.c`: `inject_tunnel`, which attaches tunnel metadata as a
/// VXLAN device would on receive and tail-calls its `TEST_TARGET[0]` (tests
/// of `from_overlay`).
pub const TEST_OVERLAY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test_overlay.o"));
/// `inject_tunnel`'s return value when it could not attach the metadata or
/// its target slot is empty.
pub const TEST_NO_TARGET: u32 = 99;
/// `bpf/bench_empty.c`: the empty TC program used as the benchmarks' baseline.
pub const BENCH_EMPTY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_empty.o"));
/// `bpf/abi_btf.c`: a global of every ABI type, for the BTF layout check.
pub const ABI_BTF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/abi_btf.o"));
/// The datapath's own objects, by name (for checks on their map definitions).
pub const DATAPATH_OBJECTS: [(&str, &[u8]); 5] = crate::datapath::OBJECTS;

/// What a program did with a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (`TC_ACT_*`).
    pub retval: u32,
    /// The packet after the program ran (rewrites included).
    pub packet: Vec<u8>,
    /// Average time per run as the kernel measured it.
    pub duration: Duration,
}

/// Runs `prog` once on `packet` as if received on interface `ifindex`.
pub fn prog_test_run(prog: &SchedClassifier, packet: &[u8], ifindex: u32) -> Result<TestRunOutput> {
    prog_test_run_repeat(prog, packet, ifindex, 1)
}

/// Runs `prog` `repeat` times on the same packet buffer (the kernel does not
/// reset it between runs: rewrites accumulate) and reports the average time.
pub fn prog_test_run_repeat(
    prog: &SchedClassifier,
    packet: &[u8],
    ifindex: u32,
    repeat: u32,
) -> Result<TestRunOutput> {
    // struct __sk_buff up to and including `ifindex` (offset 40); the kernel
    // zero-fills the rest and accepts only the fields it allows as input.
    let mut ctx = [0u8; 44];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; packet.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let result = prog.test_run(opts).map_err(|source| Error::TestRun {
        program: prog_name(prog),
        source: Box::new(source),
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutput {
        retval: result.return_value,
        packet: out,
        duration: result.duration,
    })
}

fn prog_name(prog: &SchedClassifier) -> String {
    prog.info()
        .ok()
        .and_then(|i| i.name_as_str().map(str::to_string))
        .unwrap_or_else(|| "program".to_string())
}

/// Loads `object` sharing `dp`'s pinned maps (same bpffs directory) and
/// loads all its TC programs; the returned `Ebpf` owns them.
pub fn load_with_datapath_maps(dp: &Datapath, object: &[u8]) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(dp.bpffs_dir())
        .load(object)
        .map_err(|source| Error::LoadObject {
            object: "test object",
            source: Box::new(source),
        })?;
    for (_, program) in ebpf.programs_mut() {
        let program: &mut SchedClassifier =
            program.try_into().map_err(|source| Error::LoadProgram {
                program: "test object",
                source: Box::new(source),
            })?;
        program.load().map_err(|source| Error::LoadProgram {
            program: "test object",
            source: Box::new(source),
        })?;
    }
    Ok(ebpf)
}

/// The TC program `name` of a loaded object.
pub fn classifier<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a SchedClassifier> {
    let missing = || Error::Missing {
        object: "test object",
        what: "program",
        name,
    };
    ebpf.program(name)
        .ok_or_else(missing)?
        .try_into()
        .map_err(|_| missing())
}
