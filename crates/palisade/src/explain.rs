//! `palisade explain`: the verdict of a flow and the rule that decided it,
//! straight from resource files (one flow, or a batch of JSON lines).

use std::io::{BufRead, BufReader, Write};

use anyhow::{Context, Result};
use palisade_model::Intent;
use palisade_policy::{evaluate, FlowRequest};

use crate::check::load_or_report;
use crate::cli::{ExplainArgs, ExplainOutput};
use crate::Outcome;

/// Runs `palisade explain`.
pub fn run(args: &ExplainArgs) -> Result<Outcome> {
    let intent = load_or_report(&args.sources)?;
    match &args.flows {
        Some(path) => batch(&intent, path, args.output),
        None => {
            let request = FlowRequest {
                from: args
                    .from
                    .clone()
                    .expect("clap requires --from without --flows"),
                to: args.to.clone().expect("clap requires --to without --flows"),
                proto: args
                    .proto
                    .clone()
                    .expect("clap requires --proto without --flows"),
                port: args.port,
                icmp_type: args.icmp_type,
                icmp_code: args.icmp_code,
            };
            let flow = request.resolve(&intent)?;
            let explanation = evaluate(&intent, &flow);
            match args.output {
                ExplainOutput::Text if args.steps => println!("{explanation:#}"),
                ExplainOutput::Text => println!("{explanation}"),
                ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
                ExplainOutput::Jsonl => println!("{}", serde_json::to_string(&explanation)?),
            }
            Ok(Outcome::Yes)
        }
    }
}

/// One flow per input line, one verdict per output line, in order. A line
/// that is not a flow gives an error line naming the line and the problem;
/// the exit status is 0 whatever the verdicts.
fn batch(intent: &Intent, path: &std::path::Path, output: ExplainOutput) -> Result<Outcome> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open flows file {}", path.display()))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let where_ = format!("{}:{}", path.display(), i + 1);
        let result = serde_json::from_str::<FlowRequest>(&line)
            .map_err(|e| format!("{where_}: not a flow: {e}"))
            .and_then(|request| {
                let flow = request
                    .resolve(intent)
                    .map_err(|e| format!("{where_}: {e}"))?;
                Ok(evaluate(intent, &flow))
            });
        match (result, output) {
            (Ok(explanation), ExplainOutput::Text) => writeln!(out, "{explanation}")?,
            (Ok(explanation), _) => writeln!(out, "{}", serde_json::to_string(&explanation)?)?,
            (Err(message), ExplainOutput::Text) => writeln!(out, "ERROR {message}")?,
            (Err(message), _) => writeln!(out, "{}", serde_json::json!({ "error": message }))?,
        }
    }
    Ok(Outcome::Yes)
}
