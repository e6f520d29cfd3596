//! Calibration of the datapath clock (`struct clock` in abi.h).
//!
//! The programs read jiffies (inlined by the verifier, unlike
//! `bpf_ktime_get_ns()`, a helper call as costly as a map lookup) and turn
//! them into CLOCK_MONOTONIC nanoseconds with the HZ and offset measured here:
//! a probe program reports jiffies and `bpf_ktime_get_ns()` read at the same
//! instant, twice, [`SAMPLE_GAP`] apart.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::EbpfLoader;

use crate::abi::Clock;
use crate::error::{Error, Result};

/// `bpf/clock_probe.c`.
const PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/clock_probe.o"));
/// Time between the two samples: long enough to tell HZ 250 from 300.
const SAMPLE_GAP: Duration = Duration::from_millis(100);
/// Tick rates Linux can be built with.
const KNOWN_HZ: [u32; 6] = [100, 250, 300, 1000, 1024, 1200];

/// Measures the kernel's HZ and the offset between jiffies and CLOCK_MONOTONIC.
pub(crate) fn calibrate() -> Result<Clock> {
    let mut ebpf = EbpfLoader::new()
        .load(PROBE_OBJECT)
        .map_err(|source| Error::LoadObject {
            object: "clock_probe",
            source: Box::new(source),
        })?;
    let probe: &mut SchedClassifier = ebpf
        .program_mut("clock_probe")
        .ok_or(Error::Missing {
            object: "clock_probe",
            what: "program",
            name: "clock_probe",
        })?
        .try_into()
        .map_err(|source| Error::LoadProgram {
            program: "clock_probe",
            source: Box::new(source),
        })?;
    probe.load().map_err(|source| Error::LoadProgram {
        program: "clock_probe",
        source: Box::new(source),
    })?;

    let (j1, k1) = sample(probe)?;
    std::thread::sleep(SAMPLE_GAP);
    let (j2, k2) = sample(probe)?;
    let measured = (j2.wrapping_sub(j1)) as f64 * 1e9 / (k2.saturating_sub(k1)).max(1) as f64;
    let hz = KNOWN_HZ
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - measured)
                .abs()
                .total_cmp(&(f64::from(*b) - measured).abs())
        })
        .expect("KNOWN_HZ is not empty");
    if (f64::from(hz) - measured).abs() > f64::from(hz) * 0.1 {
        return Err(Error::ClockCalibration { measured });
    }
    let ns_per_jiffy = (1e9 / f64::from(hz)).round() as u32;
    let offset_ns = k2.wrapping_sub(j2.wrapping_mul(u64::from(ns_per_jiffy)));
    tracing::debug!(hz, measured, "datapath clock calibrated");
    Ok(Clock {
        offset_ns,
        ns_per_jiffy,
        hz,
    })
}

/// (jiffies, CLOCK_MONOTONIC ns) read together by the probe.
fn sample(probe: &SchedClassifier) -> Result<(u64, u64)> {
    let packet = [0u8; 64];
    let mut out = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&packet);
    opts.data_out = Some(&mut out);
    probe.test_run(opts).map_err(|source| Error::TestRun {
        program: "clock_probe".to_string(),
        source: Box::new(source),
    })?;
    let word = |i: usize| u64::from_ne_bytes(out[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok((word(0), word(1)))
}
