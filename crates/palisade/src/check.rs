//! `palisade check`: load and validate resources, print every error.

use anyhow::Result;
use palisade_model::{Intent, LoadOptions};

use crate::cli::{CheckArgs, Sources};
use crate::Outcome;

/// Loads resources as every command does: all errors, or the validated intent.
pub fn load(sources: &Sources) -> Result<Intent, palisade_model::Diagnostics> {
    let opts = LoadOptions {
        kubernetes_tenant: sources.kubernetes_tenant.clone(),
    };
    palisade_model::load_paths(&sources.paths, &opts)
}

/// Loads resources for a command that needs them valid: errors become one report.
pub fn load_or_report(sources: &Sources) -> Result<Intent> {
    load(sources).map_err(|diags| {
        anyhow::anyhow!(
            "{diags}\n{} error(s) in the resources; nothing was done (run `palisade check` for the same list)",
            diags.len()
        )
    })
}

/// Runs `palisade check`.
pub fn run(args: &CheckArgs) -> Result<Outcome> {
    match load(&args.sources) {
        Ok(intent) => {
            println!(
                "ok: {} tenant(s), {} tier(s), {} endpoint(s), {} polic{}",
                intent.tenants.len(),
                intent.tiers.len(),
                intent.endpoints.len(),
                intent.policies.len(),
                if intent.policies.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
            Ok(Outcome::Yes)
        }
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!(
                "{} error(s); nothing is applied from input that has an error",
                diags.len()
            );
            Ok(Outcome::No)
        }
    }
}
