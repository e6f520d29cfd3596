//! `palisade compile`: the identities and tables the datapath will hold, for
//! debugging a policy.

use anyhow::{bail, Result};
use palisade_policy::{Compiler, IdentityAllocator, IdentityKind, Limits};
use serde_json::json;

use crate::check::load_or_report;
use crate::cli::{CompileArgs, CompileOutput};
use crate::Outcome;

/// Runs `palisade compile`.
pub fn run(args: &CompileArgs) -> Result<Outcome> {
    let intent = load_or_report(&args.sources)?;
    let identities = IdentityAllocator::new().allocate(&intent)?;
    let tables = Compiler::new(Limits::default()).update(&intent, &identities)?;
    if let Some(id) = args.identity {
        if identities.info(palisade_policy::Identity(id)).is_none() {
            bail!("no identity {id}; `palisade compile -f ... -o text` lists them");
        }
    }
    let wanted = |subject: u32| args.identity.is_none_or(|id| id == subject);
    match args.output {
        CompileOutput::Json => {
            let ids: Vec<_> = identities
                .iter()
                .filter(|(id, _)| wanted(id.0))
                .map(|(id, info)| json!({ "identity": id.0, "tenant": info.tenant, "kind": info.kind }))
                .collect();
            let tables: Vec<_> = tables
                .tables()
                .filter(|t| wanted(t.subject().0))
                .map(|t| {
                    let entries: Vec<_> = t
                        .entries()
                        .map(|(k, v)| {
                            json!({
                                "direction": k.direction, "peer": k.peer.0, "proto": k.proto,
                                "port": k.port, "port_prefix_len": k.port_prefix_len,
                                "verdict": v.verdict, "cookie": v.cookie,
                                "log": v.logged(), "audit_deny": v.audit_denies(),
                                "audit_cookie": v.audit_cookie,
                                "decided_by": tables.attribution(v.cookie).map(ToString::to_string),
                            })
                        })
                        .collect();
                    json!({ "subject": t.subject().0, "entries": entries })
                })
                .collect();
            let ipcache: Vec<_> = identities
                .ipcache()
                .iter()
                .filter(|(_, id)| args.identity.is_none() || wanted(id.0))
                .map(|(k, id)| json!({ "tenant_index": k.tenant_index, "prefix": k.prefix, "identity": id.0 }))
                .collect();
            let doc = json!({ "identities": ids, "ipcache": ipcache, "tables": tables, "entries": tables_len(&tables) });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        CompileOutput::Text => {
            for (id, info) in identities.iter().filter(|(id, _)| wanted(id.0)) {
                let what = match &info.kind {
                    IdentityKind::Labels(labels) => {
                        let l: Vec<String> =
                            labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("labels [{}]", l.join(","))
                    }
                    IdentityKind::Cidr(net) => format!("cidr {net}"),
                    other => format!("{other:?}").to_lowercase(),
                };
                let n = tables.table(id).map_or(0, |t| t.len());
                println!("{:>10}  {:<10} {what}  ({n} entries)", id.0, info.tenant);
            }
            println!("{} table entries in all", tables.len());
        }
    }
    Ok(Outcome::Yes)
}

fn tables_len(tables: &[serde_json::Value]) -> usize {
    tables
        .iter()
        .map(|t| t["entries"].as_array().map_or(0, Vec::len))
        .sum()
}
