//! `pps`: packets per second between two lab endpoints through each firewall
//! (none, iptables, nftables, palisade), measured in one run; prints a table
//! or JSON. Needs root. See bench/README.md, "Packets per second".

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use palisade_bench::firewall::Firewall;
use palisade_bench::pps::{self, Options};
use palisade_bench::startup::{init_logging, serve_if_responder, SERVE_COMMAND};
use palisade_bench::traffic::Window;

/// Packets per second between two lab endpoints, through each firewall.
#[derive(Debug, Parser)]
#[command(name = "pps")]
struct Args {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Non-matching rules (set elements) in each firewall before the flow is accepted.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Measurements per variant (the table shows the median).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Counting window of each measurement, in seconds.
    #[arg(long, default_value_t = 3.0)]
    window: f64,
    /// Traffic before counting starts, in seconds.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Measure only these variants (repeatable): none, iptables,
    /// iptables-legacy, nft-linear, nft-set, palisade.
    #[arg(long = "only", value_name = "FIREWALL")]
    only: Vec<Firewall>,
}

fn main() -> ExitCode {
    if let Some(code) = serve_if_responder("pps") {
        return code;
    }
    init_logging("warn,palisade_bench=info");
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pps: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let seconds = |value: f64, flag: &str| {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|d| !d.is_zero() || flag == "--warmup")
            .with_context(|| format!("{flag} {value}: expected a positive number of seconds"))
    };
    let exe = std::env::current_exe()
        .context("cannot find this program's path to start the lab's responder")?;
    let options = Options {
        firewalls: if args.only.is_empty() {
            Firewall::ALL.to_vec()
        } else {
            args.only
        },
        rules: args.rules,
        runs: args.runs as usize,
        window: Window {
            warmup: seconds(args.warmup, "--warmup")?,
            length: seconds(args.window, "--window")?,
        },
        responder_command: vec![exe.into(), SERVE_COMMAND.into()],
    };
    let report = pps::run(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
