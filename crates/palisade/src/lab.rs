//! `palisade lab ...`: build, probe, enter and remove a lab (see docs/lab.md).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use palisade_lab::{ordered_pairs, Lab, LabOptions, Place, ProbeRecord};
use palisade_model::Protocol;

use crate::check::load_or_report;
use crate::cli::{LabCommand, LabExecArgs, LabProbeArgs, LabUpArgs, Output, ProbeProto};
use crate::Outcome;

/// Runs a `palisade lab` command.
pub fn run(command: LabCommand) -> Result<Outcome> {
    match command {
        LabCommand::Up(args) => up(&args),
        LabCommand::Down(lab) => {
            let summary = Lab::down(&lab.name)?;
            println!(
                "lab {} is down: removed {} namespace(s), stopped {} process(es)",
                lab.name, summary.namespaces, summary.processes
            );
            Ok(Outcome::Yes)
        }
        LabCommand::List => {
            for name in Lab::list()? {
                println!("{name}");
            }
            Ok(Outcome::Yes)
        }
        LabCommand::Status(lab) => {
            let lab = Lab::open(&lab.name)?;
            println!("{}", serde_json::to_string_pretty(lab.state())?);
            Ok(Outcome::Yes)
        }
        LabCommand::Probe(args) => probe(&args),
        LabCommand::Exec(args) => exec(&args),
        LabCommand::Agents(command) => crate::lab_agents::run(command),
    }
}

/// The hidden `palisade lab serve`: a responder inside a namespace. Runs
/// before anything else in `main` because it must enter its namespace while
/// the process has a single thread.
pub fn serve(args: Vec<String>) -> ExitCode {
    match palisade_lab::responder::serve_main(args) {
        Ok(never) => match never {},
        Err(err) => {
            eprintln!("error: lab responder: {err}");
            ExitCode::from(2)
        }
    }
}

fn up(args: &LabUpArgs) -> Result<Outcome> {
    let intent = load_or_report(&args.sources)?;
    let exe = std::env::current_exe()
        .context("cannot find the palisade executable for the lab's responders")?;
    let options = LabOptions {
        name: args.lab.name.clone(),
        plain: args.plain,
        replace: args.replace,
        responder_command: vec![exe.into(), "lab".into(), "serve".into()],
    };
    let lab = Lab::up(&intent, &options)?;
    println!(
        "lab {} is up: {} node(s), {} endpoint(s), {} world(s){}",
        lab.name(),
        lab.nodes().len(),
        lab.endpoints().len(),
        lab.worlds().len(),
        if lab.is_plain() {
            " (plain: kernel forwarding, no firewall)"
        } else {
            ""
        }
    );
    for node in lab.nodes() {
        println!(
            "  node {} (namespace {}, underlay {})",
            node.name, node.netns, node.underlay_address
        );
        for ep in lab.endpoints().iter().filter(|e| e.node == node.name) {
            let ips: Vec<String> = ep.ips.iter().map(ToString::to_string).collect();
            let serve: Vec<String> = ep.serve.iter().map(ToString::to_string).collect();
            println!(
                "    {:<24} {:<16} port {:<11} serves {}",
                ep.full_ref,
                ips.join(","),
                ep.host_port,
                if serve.is_empty() {
                    "-".to_string()
                } else {
                    serve.join(",")
                }
            );
        }
    }
    if !lab.is_plain() {
        println!("nothing flows until a palisade agent enforces policy on each node:");
        let paths = crate::lab_agents::absolute_paths(&args.sources.paths)?;
        let sources: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        println!(
            "  palisade lab agents up --name {} -f {}",
            lab.name(),
            sources.join(" ")
        );
        println!("or by hand, one per node (in the background):");
        for node in lab.nodes() {
            let args = crate::lab_agents::agent_args(&lab, &node.name, &paths);
            println!("  palisade {}", args.join(" "));
        }
    }
    Ok(Outcome::Yes)
}

fn protocol(proto: ProbeProto) -> Protocol {
    match proto {
        ProbeProto::Tcp => Protocol::Tcp,
        ProbeProto::Udp => Protocol::Udp,
        ProbeProto::Icmp => Protocol::Icmp,
    }
}

/// Resolves a place as a person writes it: the lab's text forms, a name that
/// is unique among the lab's endpoints, or `world` relative to `other`.
fn resolve_place(lab: &Lab, text: &str, other: Option<&str>) -> Result<Place> {
    if text == "world" {
        let other = other
            .ok_or_else(|| anyhow!("'world' needs an endpoint on the other side to know which tenant and node; write world:<tenant>@<node>"))?;
        let other = resolve_place(lab, other, None)?;
        let Place::Endpoint(full_ref) = &other else {
            bail!("'world' needs an endpoint on the other side; write world:<tenant>@<node>");
        };
        let ep = lab.endpoint(full_ref).expect("resolved endpoints exist");
        return Ok(Place::world(&ep.node, &ep.tenant));
    }
    if let Ok(place) = text.parse::<Place>() {
        if let Place::Endpoint(full_ref) = &place {
            if lab.endpoint(full_ref).is_none() {
                bail!("lab {} has no endpoint {full_ref}", lab.name());
            }
        }
        return Ok(place);
    }
    let matches: Vec<&str> = lab
        .endpoints()
        .iter()
        .map(|e| e.full_ref.as_str())
        .filter(|r| {
            r.rsplit([':', '/']).next() == Some(text)
                || r.split_once(':').map(|(_, n)| n) == Some(text)
        })
        .collect();
    // A name in two tenants is read in the tenant of the other side, if that is known.
    let other_tenant = other
        .and_then(|o| o.split_once(':'))
        .map(|(tenant, _)| tenant)
        .filter(|t| *t != "world" && *t != "node@");
    let in_other_tenant: Vec<&str> = matches
        .iter()
        .copied()
        .filter(|r| Some(r.split_once(':').map_or("", |(t, _)| t)) == other_tenant)
        .collect();
    let matches = if matches.len() > 1 && in_other_tenant.len() == 1 {
        in_other_tenant
    } else {
        matches
    };
    match matches.as_slice() {
        [one] => Ok(Place::Endpoint(one.to_string())),
        [] => bail!(
            "lab {} has no endpoint named {text:?} (see `palisade lab status --name {}`)",
            lab.name(),
            lab.name()
        ),
        many => bail!(
            "{text:?} is ambiguous in lab {}: {}; prefix the tenant",
            lab.name(),
            many.join(", ")
        ),
    }
}

fn print_record(record: &ProbeRecord) {
    let what = match record.port {
        Some(port) => format!("{}/{port}", record.protocol.as_str().to_ascii_lowercase()),
        None => record.protocol.as_str().to_ascii_lowercase(),
    };
    let result = match &record.result {
        palisade_lab::ProbeResult::Reachable { reply: Some(reply) } => {
            format!("REACHABLE (answered by {reply})")
        }
        palisade_lab::ProbeResult::Reachable { reply: None } => {
            "REACHABLE (port closed)".to_string()
        }
        palisade_lab::ProbeResult::Blocked => "BLOCKED".to_string(),
        palisade_lab::ProbeResult::Error { message } => format!("ERROR {message}"),
    };
    println!("{} -> {} {what}: {result}", record.from, record.to);
}

fn probe(args: &LabProbeArgs) -> Result<Outcome> {
    let lab = Lab::open(&args.lab.name)?;
    let proto = protocol(args.proto);
    let port = args.port.unwrap_or(0);
    let timeout = Duration::from_millis(args.timeout_ms);
    let pairs = if args.matrix {
        ordered_pairs(&lab.endpoint_places())
    } else {
        let (from, to) = (args.from.as_deref().unwrap(), args.to.as_deref().unwrap());
        vec![(
            resolve_place(&lab, from, Some(to))?,
            resolve_place(&lab, to, Some(from))?,
        )]
    };
    let records = lab.probe_matrix(&pairs, proto, port, timeout);
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&records)?),
        Output::Text => records.iter().for_each(print_record),
    }
    if let Some(err) = records.iter().find_map(|r| match &r.result {
        palisade_lab::ProbeResult::Error { message } => Some(message),
        _ => None,
    }) {
        bail!("a probe could not run: {err}");
    }
    let all_reachable = records.iter().all(|r| r.result.is_reachable());
    Ok(if args.matrix || all_reachable {
        Outcome::Yes
    } else {
        Outcome::No
    })
}

fn exec(args: &LabExecArgs) -> Result<Outcome> {
    let lab = Lab::open(&args.lab.name)?;
    let place = resolve_place(&lab, &args.place, None)?;
    let status = lab.exec(&place, &args.command)?;
    match status.code() {
        Some(0) => Ok(Outcome::Yes),
        Some(code) => std::process::exit(code),
        None => bail!("{} was killed by a signal", args.command[0]),
    }
}
