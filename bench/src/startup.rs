//! What every benchmark binary does as it starts: answer as the lab's
//! responder when the lab runs it as one (the benchmarks are their labs'
//! responder command, so they need no `palisade` binary), and send logs to
//! standard error.

use std::ffi::OsString;
use std::process::ExitCode;

/// The first argument that makes a benchmark binary the lab's responder.
pub const SERVE_COMMAND: &str = "lab-serve";

/// When the binary was started as `<program> lab-serve ...`, serves as the
/// lab's responder (never returning unless it fails) and gives the exit
/// code; `None` otherwise. Call it before any other thread starts: the
/// responder enters its namespace on this one.
pub fn serve_if_responder(program: &str) -> Option<ExitCode> {
    let rest: Vec<OsString> = std::env::args_os().skip(1).collect();
    if rest.first().is_none_or(|a| a != SERVE_COMMAND) {
        return None;
    }
    let args = rest[1..].iter().map(|a| a.to_string_lossy().into_owned());
    match palisade_lab::responder::serve_main(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{program} {SERVE_COMMAND}: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` or else `default`.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}
