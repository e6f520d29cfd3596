//! The packets-per-second benchmark: the same UDP flood between two lab
//! endpoints through each firewall, and a report of medians and ratios to
//! "no firewall".
//!
//! Every variant gets its own testbed, all set up before the first
//! measurement; runs are then interleaved (run 1 of every variant, then
//! run 2, ...) so that drift on the shared machine hits every variant alike.

use std::any::Any;
use std::ffi::OsString;
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::error::Result;
use crate::firewall::{self, Firewall, Setup};
use crate::testbed::{self, Testbed};
use crate::traffic::{self, Flow, Rates, Window};

/// Prefix of the benchmark's lab names (`pps-<pid>-<index>`).
pub const LAB_PREFIX: &str = "pps";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// The variants, in report order.
    pub firewalls: Vec<Firewall>,
    /// Non-matching rules (set elements) before the flow is accepted.
    pub rules: usize,
    /// Measurements per variant; the report shows the median.
    pub runs: usize,
    /// Warm-up and counting window of each measurement.
    pub window: Window,
    /// Starts the lab's world responder (see `LabOptions::responder_command`).
    pub responder_command: Vec<OsString>,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `iptables -V` (which backend the `iptables` variant used).
    pub iptables_version: Option<String>,
    /// Non-matching rules per firewall.
    pub rules: usize,
    /// Measurements per variant.
    pub runs: usize,
    /// Warm-up before each measurement, in seconds.
    pub warmup_s: f64,
    /// Counting window of each measurement, in seconds.
    pub window_s: f64,
    /// One entry per variant, in the order asked.
    pub variants: Vec<VariantReport>,
}

/// One variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// Which firewall.
    pub firewall: Firewall,
    /// Its name in the table, e.g. `iptables (nf_tables), 10k rules`.
    pub label: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What happened to one variant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// Measured.
    Measured {
        /// Median of the received packets per second.
        received_pps: f64,
        /// Median of the sent packets per second.
        sent_pps: f64,
        /// Median share of a CPU the sender got (see `Rates::sender_cpu`).
        sender_cpu: Option<f64>,
        /// Median of received packets per second of sender CPU
        /// (`Rates::received_per_sender_core`).
        per_core_pps: Option<f64>,
        /// `received_pps` over that of "no firewall" in the same run; `None`
        /// without a measured "no firewall" variant.
        ratio: Option<f64>,
        /// `per_core_pps` over that of "no firewall": the same comparison
        /// with the competition for the CPU taken out.
        per_core_ratio: Option<f64>,
        /// Every measurement, in order.
        runs: Vec<Rates>,
    },
    /// The firewall cannot run here (yet).
    NotAvailable {
        /// Why.
        reason: String,
    },
    /// Setting up or measuring failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// A variant ready to measure. The firewall's `keep` and the testbed are
/// held only to be dropped at the end; `keep` is declared first so that it
/// is dropped before the testbed goes down.
struct Prepared {
    _keep: Option<Box<dyn Any>>,
    _testbed: Testbed,
    flow: Flow,
    runs: Vec<Rates>,
}

enum Slot {
    Ready(Box<Prepared>),
    Done(Outcome),
}

/// Runs the benchmark: removes labs left by earlier killed runs, sets every
/// variant up, measures `options.runs` interleaved rounds, and takes every
/// lab down. A variant that cannot be set up or measured is reported as
/// such; the others go on.
pub fn run(options: &Options) -> Result<Report> {
    testbed::down_orphans(LAB_PREFIX)?;
    let iptables_version = firewall::iptables_version();
    let blocked = firewall::unused_pairs(options.rules);

    let mut slots: Vec<(Firewall, Slot)> = Vec::new();
    for (index, &fw) in options.firewalls.iter().enumerate() {
        let slot = match prepare(fw, index, &blocked, options) {
            Ok(slot) => slot,
            Err(e) => {
                tracing::error!(firewall = %fw, error = %e, "setup failed");
                Slot::Done(Outcome::Failed {
                    error: e.to_string(),
                })
            }
        };
        slots.push((fw, slot));
    }

    for round in 1..=options.runs {
        for (fw, slot) in &mut slots {
            let Slot::Ready(prepared) = slot else {
                continue;
            };
            match traffic::measure(&prepared.flow, options.window) {
                Ok(rates) => {
                    tracing::info!(
                        firewall = %fw,
                        round,
                        received_pps = rates.received_pps.round(),
                        sent_pps = rates.sent_pps.round(),
                        "measured"
                    );
                    prepared.runs.push(rates);
                }
                Err(e) => {
                    tracing::error!(firewall = %fw, error = %e, "measurement failed");
                    // Replacing the slot takes this variant's lab down now.
                    *slot = Slot::Done(Outcome::Failed {
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    let outcomes: Vec<(Firewall, Outcome)> = slots
        .into_iter()
        .map(|(fw, slot)| {
            let outcome = match slot {
                Slot::Done(outcome) => outcome,
                Slot::Ready(prepared) => {
                    let runs = prepared.runs.clone();
                    // Takes the lab down before the next one's summary.
                    drop(prepared);
                    Outcome::Measured {
                        received_pps: median(runs.iter().map(|r| r.received_pps)),
                        sent_pps: median(runs.iter().map(|r| r.sent_pps)),
                        sender_cpu: median_of_some(runs.iter().map(|r| r.sender_cpu)),
                        per_core_pps: median_of_some(
                            runs.iter().map(|r| r.received_per_sender_core()),
                        ),
                        ratio: None,
                        per_core_ratio: None,
                        runs,
                    }
                }
            };
            (fw, outcome)
        })
        .collect();

    let baseline = outcomes.iter().find_map(|(fw, outcome)| match outcome {
        Outcome::Measured {
            received_pps,
            per_core_pps,
            ..
        } if *fw == Firewall::None => Some((*received_pps, *per_core_pps)),
        _ => None,
    });
    let variants = outcomes
        .into_iter()
        .map(|(fw, mut outcome)| {
            if let (
                Outcome::Measured {
                    received_pps,
                    per_core_pps,
                    ratio,
                    per_core_ratio,
                    ..
                },
                Some((base, base_per_core)),
            ) = (&mut outcome, baseline)
            {
                *ratio = (base > 0.0).then(|| *received_pps / base);
                *per_core_ratio = per_core_pps
                    .zip(base_per_core.filter(|b| *b > 0.0))
                    .map(|(v, b)| v / b);
            }
            VariantReport {
                firewall: fw,
                label: label(fw, options.rules, iptables_version.as_deref()),
                outcome,
            }
        })
        .collect();

    Ok(Report {
        iptables_version,
        rules: options.rules,
        runs: options.runs,
        warmup_s: options.window.warmup.as_secs_f64(),
        window_s: options.window.length.as_secs_f64(),
        variants,
    })
}

/// Builds variant `index`'s testbed and sets its firewall up.
fn prepare(
    fw: Firewall,
    index: usize,
    blocked: &[(std::net::Ipv4Addr, u16)],
    options: &Options,
) -> Result<Slot> {
    let name = testbed::lab_name(LAB_PREFIX, index);
    let testbed = Testbed::up(&name, fw.plain_lab(), options.responder_command.clone())?;
    let flow = testbed.flow()?;
    match fw.setup(&testbed, blocked)? {
        Setup::Unavailable { reason } => {
            tracing::warn!(firewall = %fw, %reason, "not available");
            Ok(Slot::Done(Outcome::NotAvailable { reason }))
        }
        Setup::Ready { keep } => {
            tracing::info!(firewall = %fw, lab = %name, "ready");
            Ok(Slot::Ready(Box::new(Prepared {
                _keep: keep,
                _testbed: testbed,
                flow,
                runs: Vec::new(),
            })))
        }
    }
}

/// The median (mean of the two middle values for an even count); 0 for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of the values that are known; `None` if none is.
fn median_of_some(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let known: Vec<f64> = values.flatten().collect();
    (!known.is_empty()).then(|| median(known.into_iter()))
}

/// The variant's name in the table.
fn label(fw: Firewall, rules: usize, iptables_version: Option<&str>) -> String {
    let count = if rules > 0 && rules.is_multiple_of(1000) {
        format!("{}k", rules / 1000)
    } else {
        rules.to_string()
    };
    match fw {
        Firewall::None => "no firewall".to_string(),
        Firewall::Iptables => {
            // `iptables v1.8.9 (nf_tables)` → `nf_tables`.
            let backend = iptables_version
                .and_then(|v| Some(v.split_once('(')?.1.trim_end_matches(')')))
                .unwrap_or("unknown backend");
            format!("iptables ({backend}), {count} rules")
        }
        Firewall::IptablesLegacy => format!("iptables-legacy, {count} rules"),
        Firewall::NftLinear => format!("nftables linear, {count} rules"),
        Firewall::NftSet => format!("nftables set, {count} elements"),
        Firewall::Palisade => format!("palisade, {count} rules"),
    }
}

/// Packets per second for people: `614,210`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Report {
    /// The table (one line per variant) and a legend of its columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "64-byte UDP frames {} -> {} through one node; median of {} runs of {:.1} s after {:.1} s warm-up",
            testbed::SRC_ENDPOINT,
            testbed::DST_ENDPOINT,
            self.runs,
            self.window_s,
            self.warmup_s
        )?;
        writeln!(
            f,
            "iptables -V: {}",
            self.iptables_version.as_deref().unwrap_or("(cannot run)")
        )?;
        writeln!(f)?;
        let width = self
            .variants
            .iter()
            .map(|v| v.label.len())
            .max()
            .unwrap_or(0)
            .max("variant".len());
        writeln!(
            f,
            "{:<width$}  {:>12}  {:>12}  {:>7}  {:>6}  {:>10}  {:>12}  {:>7}  {:>10}",
            "variant",
            "received pps",
            "sent pps",
            "rx/sent",
            "spread",
            "sender CPU",
            "pps per core",
            "ratio",
            "ratio/core"
        )?;
        for v in &self.variants {
            let mut line = format!("{:<width$}  ", v.label);
            match &v.outcome {
                Outcome::Measured {
                    received_pps,
                    sent_pps,
                    sender_cpu,
                    per_core_pps,
                    ratio,
                    per_core_ratio,
                    runs,
                } => {
                    let delivered = if *sent_pps > 0.0 {
                        format!("{:.1}%", 100.0 * received_pps / sent_pps)
                    } else {
                        "-".into()
                    };
                    // Half the range of the runs around the median: how much to trust the digits.
                    let (lo, hi) = runs.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
                        (lo.min(r.received_pps), hi.max(r.received_pps))
                    });
                    let spread = if *received_pps > 0.0 && !runs.is_empty() {
                        format!("±{:.0}%", 50.0 * (hi - lo) / received_pps)
                    } else {
                        "-".into()
                    };
                    let cpu = sender_cpu.map_or("-".into(), |c| format!("{:.0}%", 100.0 * c));
                    let per_core = per_core_pps.map_or("-".into(), thousands);
                    let ratio_text = |r: &Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
                    write!(
                        line,
                        "{:>12}  {:>12}  {:>7}  {:>6}  {:>10}  {:>12}  {:>7}  {:>10}",
                        thousands(*received_pps),
                        thousands(*sent_pps),
                        delivered,
                        spread,
                        cpu,
                        per_core,
                        ratio_text(ratio),
                        ratio_text(per_core_ratio)
                    )?;
                    if *received_pps == 0.0 {
                        line.push_str("  (nothing received: the flow is blocked)");
                    }
                }
                Outcome::NotAvailable { reason } => write!(line, "not available: {reason}")?,
                Outcome::Failed { error } => write!(line, "failed: {error}")?,
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "spread: half the range of the runs, relative to the median. sender CPU: share of a core \
             the sending thread got (sending and forwarding run on it).\n\
             pps per core: received pps / sender CPU. ratio, ratio/core: to \"no firewall\", by pps \
             and by pps per core (the latter discounts other load on a shared machine)."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn labels_name_the_backend_and_the_rule_count() {
        let version = Some("iptables v1.8.9 (nf_tables)");
        assert_eq!(
            label(Firewall::Iptables, 10_000, version),
            "iptables (nf_tables), 10k rules"
        );
        assert_eq!(
            label(Firewall::NftLinear, 1500, None),
            "nftables linear, 1500 rules"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(614_210.4), "614,210");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
