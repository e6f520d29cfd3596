//! `palisade lab ...`: build, probe, enter and remove a lab (see docs/lab.md).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use palisade_lab::{ordered_pairs, AgentInfo, Lab, LabOptions, Place, ProbeRecord};
use palisade_model::{LoadOptions, Protocol};

use crate::check::load_or_report;
use crate::cli::{LabCommand, LabExecArgs, LabName, LabProbeArgs, LabUpArgs, Output, ProbeProto};
use crate::Outcome;

/// `palisade lab move`.
#[derive(Debug, Args)]
pub struct LabMoveArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// The endpoint: tenant:name, tenant:namespace/name, or a name unique in the lab.
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: String,
    /// The node it moves to (one of the lab's).
    #[arg(long = "to-node", value_name = "NODE")]
    pub to_node: String,
    /// The control plane token, when the lab's agents follow one (else PALISADE_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PALISADE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Tenant of Kubernetes objects in the lab's copy of the files.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,
    /// How long to wait for the agents to follow, in seconds.
    #[arg(long = "timeout-s", default_value_t = 10)]
    pub timeout_s: u64,
}

/// `palisade lab capture`.
#[derive(Debug, Args)]
pub struct LabCaptureArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// Capture the underlay between nodes (the only capture point so far).
    #[arg(long, required = true)]
    pub underlay: bool,
    /// Stop after this many VXLAN packets.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Stop after this long, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Output format: text lines, or JSON lines (one object per packet).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

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
        LabCommand::Move(args) => move_endpoint(&args),
        LabCommand::Capture(args) => capture(&args),
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

/// `palisade lab move`: the intent first (the control plane, or the lab's
/// copy of the files), then, once every agent concerned has followed, the
/// port (`Lab::move_endpoint`). Until the agents follow the old node still
/// serves the endpoint; from then the old node no longer does and the new
/// one is ready for its port: no packet passes unchecked, and allowed
/// traffic stops only while the port is made anew and attached.
fn move_endpoint(args: &LabMoveArgs) -> Result<Outcome> {
    let started = Instant::now();
    let mut lab = Lab::open(&args.lab.name)?;
    let Place::Endpoint(full_ref) = resolve_place(&lab, &args.endpoint, None)? else {
        bail!("{} is not an endpoint", args.endpoint);
    };
    let ep = lab.endpoint(&full_ref).expect("resolved").clone();
    let to = args.to_node.as_str();
    if !lab.nodes().iter().any(|n| n.name == to) {
        let nodes: Vec<&str> = lab.nodes().iter().map(|n| n.name.as_str()).collect();
        bail!(
            "lab {} has no node {to} (it has {})",
            lab.name(),
            nodes.join(", ")
        );
    }
    if ep.node == to {
        bail!("{full_ref} already runs on node {to}");
    }
    let agents: Vec<AgentInfo> = lab
        .agents()
        .iter()
        .filter(|a| a.is_running())
        .cloned()
        .collect();
    if agents.is_empty() {
        bail!(
            "lab {} has no running agents: the intent must follow the move, start them with \
             `palisade lab agents up --name {}`",
            lab.name(),
            lab.name()
        );
    }
    // Every node that holds the endpoint's tenant changes its tables.
    let concerned: Vec<&AgentInfo> = agents
        .iter()
        .filter(|a| {
            a.node == to
                || lab
                    .endpoints()
                    .iter()
                    .any(|e| e.node == a.node && e.tenant == ep.tenant)
        })
        .collect();
    let reconciles = |agent: &AgentInfo| {
        palisade_agent::read_status(&agent.state_dir)
            .ok()
            .flatten()
            .filter(|s| s.pid == agent.pid as u32)
            .map_or(0, |s| s.reconciles)
    };
    let before: BTreeMap<&str, u64> = concerned
        .iter()
        .map(|a| (a.node.as_str(), reconciles(a)))
        .collect();

    match agents.iter().find_map(|a| a.server.clone()) {
        Some(server) => set_node_on_server(&server, args.token.as_deref(), &full_ref, to)?,
        None => {
            let opts = LoadOptions {
                kubernetes_tenant: args.kubernetes_tenant.clone(),
            };
            let file = palisade_lab::set_endpoint_node(lab.name(), &full_ref, to, &opts)?;
            tracing::info!(file = %file.display(), "rewrote the lab's intent copy");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    for agent in &concerned {
        while reconciles(agent) <= before[agent.node.as_str()] {
            if Instant::now() > deadline {
                bail!(
                    "the agent of node {} did not follow the intent within {} s (see {}); the \
                     port was not moved",
                    agent.node,
                    args.timeout_s,
                    agent.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let followed = started.elapsed();

    let new_agent = agents.iter().find(|a| a.node == to);
    let ready = new_agent.map(reconciles).unwrap_or(0);
    let moved = lab.move_endpoint(&full_ref, to)?;
    // The new node's agent attaches to the new port on its next reconcile.
    let attached = new_agent.and_then(|agent| {
        let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
        while reconciles(agent) <= ready {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Some(started.elapsed())
    });
    println!(
        "moved {} from {} to {}: agents followed the intent in {:.0} ms, port {} re-created{}",
        moved.endpoint,
        moved.from,
        moved.to,
        followed.as_secs_f64() * 1000.0,
        moved.host_port,
        match attached {
            Some(t) => format!(
                ", enforced on {} after {:.0} ms",
                moved.to,
                t.as_secs_f64() * 1000.0
            ),
            None => format!(
                " (the agent of {} has not reconciled since; see its log)",
                moved.to
            ),
        }
    );
    Ok(Outcome::Yes)
}

/// Sets `spec.node` (a Pod's `spec.nodeName`) of endpoint `full_ref` through
/// the control plane, only if nobody changed it meanwhile (its resource version).
fn set_node_on_server(server: &str, token: Option<&str>, full_ref: &str, node: &str) -> Result<()> {
    let (tenant, rest) = full_ref
        .split_once(':')
        .ok_or_else(|| anyhow!("{full_ref} is not tenant:name"))?;
    let (namespace, name) = match rest.split_once('/') {
        Some((ns, name)) => (Some(ns.to_string()), name),
        None => (None, rest),
    };
    let client =
        palisade_client::Client::new(&palisade_client::ClientConfig::for_server(server, token))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = palisade_client::GetOptions {
        tenant: Some(tenant.to_string()),
        namespace,
    };
    let mut doc = rt
        .block_on(client.get(palisade_model::Kind::Endpoint, name, &options))
        .with_context(|| format!("cannot read {full_ref} from {server}"))?;
    let field = if doc["kind"] == "Pod" {
        "nodeName"
    } else {
        "node"
    };
    doc["spec"][field] = node.into();
    let response = rt
        .block_on(client.apply(vec![doc]))
        .with_context(|| format!("cannot update {full_ref} on {server}"))?;
    tracing::info!(
        revision = response.revision,
        "the control plane has the new node"
    );
    Ok(())
}

/// `palisade lab capture --underlay`.
fn capture(args: &LabCaptureArgs) -> Result<Outcome> {
    let lab = Lab::open(&args.lab.name)?;
    let mut capture = lab.capture_underlay()?;
    let packets = capture.collect(
        args.count,
        Duration::from_millis(args.timeout_ms),
        |packet| match args.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string(packet).expect("packets serialize")
            ),
            Output::Text => println!("{packet}"),
        },
    )?;
    if packets.is_empty() && args.output == Output::Text {
        eprintln!("no VXLAN packet crossed the underlay of lab {}", lab.name());
    }
    Ok(Outcome::Yes)
}
