//! A stand-alone lab responder: `palisade-lab-responder --netns NS --name NAME
//! [--serve tcp/80]...`. The same as the CLI's hidden `palisade lab serve`;
//! it exists so that the lab's tests (and users without the CLI) can start
//! responders.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match palisade_lab::responder::serve_main(std::env::args().skip(1)) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("palisade-lab-responder: {e}");
            ExitCode::FAILURE
        }
    }
}
