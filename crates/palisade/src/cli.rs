//! The command line: every command, its flags and an example, with clap's
//! derive API. The modules named after the commands do the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// palisade: identity-based micro-segmentation firewall.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug; PALISADE_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate resources; every error names file:line:col, the resource and the fix.
    #[command(after_help = "Example:\n  palisade check -f examples/three-tier\n\n\
        Exit status: 0 when valid, 1 when any error was found (all are printed), 2 when the files cannot be read.")]
    Check(CheckArgs),

    /// Build a data centre of network namespaces from resource files and probe it with real packets.
    #[command(subcommand)]
    Lab(LabCommand),
}

/// Where resources come from.
#[derive(Debug, Args)]
pub struct Sources {
    /// Resource files or directories (YAML or JSON; directories are read recursively).
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,

    /// Tenant that Kubernetes objects (Pod, Namespace, NetworkPolicy) land in.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,
}

/// `palisade check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub sources: Sources,
}

/// Protocols a probe can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeProto {
    Tcp,
    Udp,
    Icmp,
}

/// Output formats of commands that print records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// For a person.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// `palisade lab ...`.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the nodes, endpoints and worlds of the resources as network namespaces.
    #[command(after_help = "Example:\n  palisade lab up -f examples/three-tier\n\n\
        Each node becomes a network namespace, each endpoint a namespace joined to its node by a veth,\n\
        with a responder on the ports of its spec.lab.serve; each tenant gets a 'world' namespace per node.\n\
        The machine's own interfaces, routes and firewall are never touched.")]
    Up(LabUpArgs),

    /// Remove everything a lab made (also after a crash of the run that built it).
    #[command(after_help = "Example:\n  palisade lab down")]
    Down(LabName),

    /// List the labs that are up.
    List,

    /// Show what a lab is made of (JSON).
    Status(LabName),

    /// Send real packets from one place to another and say whether they got through.
    #[command(
        after_help = "Examples:\n  palisade lab probe --from acme:web-1 --to acme:app-1 --proto tcp --port 8080\n  \
        palisade lab probe --from world --to acme:web-1 --proto tcp --port 443\n  \
        palisade lab probe --matrix --proto tcp --port 80 -o json\n\n\
        A place is an endpoint (tenant:name, tenant:namespace/name, or a name unique in the lab),\n\
        'world' (the outside as the other side's tenant sees it from its node), world:<tenant>@<node>,\n\
        or node@<node>. Exit status: 0 when reachable (or, with --matrix, when every probe ran), 1 when blocked."
    )]
    Probe(LabProbeArgs),

    /// Run a command inside a place's network namespace.
    #[command(
        after_help = "Example:\n  palisade lab exec acme:web-1 -- curl -s http://10.0.2.10:8080"
    )]
    Exec(LabExecArgs),
}

/// A lab's name.
#[derive(Debug, Args)]
pub struct LabName {
    /// The lab's name: its namespaces are called pl_<name>_...
    #[arg(long = "name", value_name = "NAME", default_value = "palisade")]
    pub name: String,
}

/// `palisade lab up`.
#[derive(Debug, Args)]
pub struct LabUpArgs {
    #[command(flatten)]
    pub sources: Sources,
    #[command(flatten)]
    pub lab: LabName,
    /// No firewall: the nodes forward with the kernel alone (a baseline for benchmarks).
    #[arg(long)]
    pub plain: bool,
    /// Take down a lab of the same name first.
    #[arg(long)]
    pub replace: bool,
}

/// `palisade lab probe`.
#[derive(Debug, Args)]
pub struct LabProbeArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// Where the packets start.
    #[arg(long, value_name = "PLACE", required_unless_present = "matrix")]
    pub from: Option<String>,
    /// Where the packets go.
    #[arg(long, value_name = "PLACE", required_unless_present = "matrix")]
    pub to: Option<String>,
    /// Probe every ordered pair of endpoints, in parallel.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub matrix: bool,
    /// Protocol.
    #[arg(long, value_enum)]
    pub proto: ProbeProto,
    /// Destination port (TCP, UDP).
    #[arg(long, required_if_eq_any = [("proto", "tcp"), ("proto", "udp")])]
    pub port: Option<u16>,
    /// How long to wait for an answer, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `palisade lab exec`.
#[derive(Debug, Args)]
pub struct LabExecArgs {
    #[command(flatten)]
    pub lab: LabName,
    /// The place to run in (an endpoint, world:<tenant>@<node>, node@<node>).
    pub place: String,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}
