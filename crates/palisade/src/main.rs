//! `palisade`: one thin binary over the library crates. `main` turns a
//! command's result into an exit code and a report; the commands live in
//! modules named after them.

use std::process::ExitCode;

use clap::Parser;

mod agent_cmd;
mod check;
mod cli;
mod compile;
mod demo;
mod explain;
mod flows_cmd;
mod lab;
mod lab_agents;
mod remote;
mod server_cmd;
mod table;

use cli::{Cli, Command};

/// What a command reports besides success: exit 1 means "the answer is no"
/// (check found errors, a probe was blocked); errors are exit 2.
pub enum Outcome {
    /// Exit 0.
    Yes,
    /// Exit 1: the command ran and its answer is negative.
    No,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The lab's responder must enter its namespace before any thread exists,
    // so it runs before anything else (no logging setup, no clap).
    if args.get(1).map(String::as_str) == Some("lab")
        && args.get(2).map(String::as_str) == Some("serve")
    {
        return lab::serve(args[3..].to_vec());
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(Outcome::Yes) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) if args.sources.paths.is_empty() => remote::explain(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Compile(args) => compile::run(&args),
        Command::Lab(args) => lab::run(args),
        Command::Server(args) => server_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Apply(args) => remote::apply(args),
        Command::Get(args) => remote::get(args),
        Command::Delete(args) => remote::delete(args),
        Command::Status(args) => remote::status(args),
        Command::Audit(args) => remote::audit(args),
        Command::Flows(args) => flows_cmd::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
