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

    /// Explain the verdict of a flow: ALLOW or DENY and the rule (or default) that decided each side.
    #[command(after_help = "Examples:\n  \
        palisade explain -f examples/three-tier --from acme:app-1 --to acme:db-1 --proto tcp --port 5432\n  \
        palisade explain -f examples/three-tier --from world --to acme:web-1 --proto tcp --port 443 -o json\n  \
        palisade explain -f examples/three-tier --flows flows.jsonl -o jsonl\n  \
        palisade explain --server http://127.0.0.1:7400 --from acme:web-1 --to acme:db-1 --proto tcp --port 5432\n\n\
        REF: [tenant:][namespace/]name (the shortest unambiguous form), an IP or tenant:IP, or world / host\n\
        (in the tenant of the other end; tenant:world names it). A flows file holds one JSON flow per line:\n  \
        {\"from\":\"acme:web-1\",\"to\":\"acme:app-1\",\"proto\":\"tcp\",\"port\":8080}\n\
        and gives one verdict per line, in order (an unknown REF gives an error line; exit status 0).")]
    Explain(ExplainArgs),

    /// Show the identities and compiled tables the datapath will hold.
    #[command(
        after_help = "Examples:\n  palisade compile -f examples/three-tier -o text\n  \
        palisade compile -f examples/three-tier --identity 65792 -o json"
    )]
    Compile(CompileArgs),

    /// Build a data centre of network namespaces from resource files and probe it with real packets.
    #[command(subcommand)]
    Lab(LabCommand),

    /// Run the control plane: REST API over a store, tokens, audit log, identities, agents' streams.
    #[command(
        after_help = "Examples:\n  palisade server --store /var/lib/palisade/store.redb --tokens /etc/palisade/tokens.yaml\n  \
        palisade server --listen 0.0.0.0:7400 --store etcd:http://10.0.0.1:2379,http://10.0.0.2:2379 \\\n    \
        --tls-cert cert.pem --tls-key key.pem --tokens tokens.yaml\n\n\
        Tokens file: a YAML list of {sha256: <hex SHA-256 of the token>, subject: NAME, role: admin | tenant:NAME | agent:NODE}.\n\
        Without --tokens every caller is an admin, and the server says so."
    )]
    Server(crate::server_cmd::ServerArgs),

    /// Enforce the resources on one node: eBPF programs on its endpoint ports, kept in sync
    /// with the files or a control plane, flow log, metrics. Runs until SIGTERM/SIGINT; the
    /// datapath keeps enforcing after.
    #[command(after_help = "Examples:\n  \
        palisade agent --node node-1 --policy-dir /etc/palisade/policies --flow-log /var/log/palisade/flows.jsonl\n  \
        palisade agent --node node-1 --netns pl_palisade_n_node-1 --policy-dir examples/three-tier \\\n    \
        --uplink acme=up1@169.254.101.2 --uplink globex=up2@169.254.102.2 --flow-log -\n  \
        palisade agent --node node-1 --server https://cp-1:7400,https://cp-2:7400 --token-file /etc/palisade/agent.token \\\n    \
        --ca-file /etc/palisade/ca.pem --metrics-listen 0.0.0.0:9464 --flow-log /var/log/palisade/flows.jsonl\n  \
        palisade agent --node node-1 --uninstall     # detach everything and remove the pins\n\n\
        A restarted agent adopts the pinned maps and links of the previous one without a gap (docs/agent.md).")]
    Agent(crate::agent_cmd::AgentArgs),

    /// Create or update resources on the server from files, all or nothing.
    #[command(after_help = "Example:\n  palisade apply -f examples/three-tier\n\n\
        Files are checked locally first (errors name file:line:col and nothing is sent); the server then\n\
        validates the whole resulting intent. A document with metadata.resourceVersion is written only if\n\
        the stored version is still that one. Exit status: 0 applied, 1 invalid, 2 other errors.")]
    Apply(crate::remote::ApplyArgs),

    /// Show resources from the server: a table, or -o json|yaml|wide.
    #[command(
        after_help = "Examples:\n  palisade get policies\n  palisade get ep -l \"app == 'web'\" --tenant acme -o wide\n  \
        palisade get policy acme/db-ingress -o yaml\n  palisade get tenants"
    )]
    Get(crate::remote::GetArgs),

    /// Delete resources on the server, named or listed in files.
    #[command(
        after_help = "Examples:\n  palisade delete endpoint acme/web-1\n  palisade delete tier security --resource-version 42\n  \
        palisade delete -f policies/\n\n\
        A Tenant with endpoints or a Tier with policies cannot be deleted: the error names what refers to it."
    )]
    Delete(crate::remote::DeleteArgs),

    /// The server's revision and auth, and each agent's applied revision, lag and health.
    #[command(
        after_help = "Example:\n  palisade status --server https://cp-1:7400 --token $TOKEN"
    )]
    Status(crate::remote::StatusArgs),

    /// The audit log: who changed what, when, from which version to which.
    #[command(
        after_help = "Examples:\n  palisade audit --since 1h\n  palisade audit --tenant acme --since 2024-05-01T00:00:00Z"
    )]
    Audit(crate::remote::AuditArgs),

    /// Flows the agents saw, from the control plane: one line per flow, once or as they arrive.
    #[command(after_help = "Examples:\n  palisade flows --follow --tenant acme\n  \
        palisade flows --verdict deny --since 15m\n  palisade flows --endpoint acme:db-1 -o json\n\n\
        Lines read: 12:01:07 DENY acme:web-1 → acme:db-1 tcp/5432 default deny of tenant acme\n\
        (times in UTC). A server holds the flows of the agents connected to it; tenant tokens see\n\
        only their tenant's flows.")]
    Flows(crate::flows_cmd::FlowsArgs),

    /// The whole system on one machine: a control plane, a lab of the example's nodes with
    /// their agents, the example applied, and a probe matrix with the rule behind each verdict.
    #[command(
        after_help = "Examples:\n  sudo palisade demo                 # stays up until Ctrl-C, then removes everything\n  \
        sudo palisade demo --once          # print the matrix, clean up, exit\n\n\
        Needs root (network namespaces, eBPF). Everything it makes (lab, agents, server, store) is\n\
        removed when it stops, also on Ctrl-C or an error. Exit status 1 when a probe's verdict in the\n\
        kernel differs from the evaluator's."
    )]
    Demo(crate::demo::DemoArgs),
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

/// `palisade explain`.
#[derive(Debug, Args)]
#[command(mut_arg("paths", |a| a.required(false).required_unless_present_any(["server", "context"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Without -f: ask the server (--server, PALISADE_SERVER or the config
    /// file) against its live state.
    #[command(flatten)]
    pub connection: crate::remote::Connection,
    /// Where the flow comes from (REF).
    #[arg(long, value_name = "REF", required_unless_present = "flows")]
    pub from: Option<String>,
    /// Where the flow goes (REF).
    #[arg(long, value_name = "REF", required_unless_present = "flows")]
    pub to: Option<String>,
    /// tcp, udp, sctp, icmp, icmpv6 or a protocol number.
    #[arg(long, value_name = "PROTO", required_unless_present = "flows")]
    pub proto: Option<String>,
    /// Destination port (TCP, UDP, SCTP).
    #[arg(long)]
    pub port: Option<u16>,
    /// ICMP type (default: echo request).
    #[arg(long = "icmp-type")]
    pub icmp_type: Option<u8>,
    /// ICMP code (default 0).
    #[arg(long = "icmp-code")]
    pub icmp_code: Option<u8>,
    /// A file of flows, one JSON object per line.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "proto", "port", "icmp_type", "icmp_code"])]
    pub flows: Option<PathBuf>,
    /// Also print the tiers, policies and rules consulted (text output).
    #[arg(long)]
    pub steps: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
}

/// Output formats of `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    /// For a person.
    Text,
    /// One pretty JSON document.
    Json,
    /// One JSON document per line.
    Jsonl,
}

/// `palisade compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub sources: Sources,
    /// Only this identity's table (and its ipcache entries).
    #[arg(long, value_name = "N")]
    pub identity: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = CompileOutput::Json)]
    pub output: CompileOutput,
}

/// Output formats of `compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompileOutput {
    /// Identities and entry counts, for a person.
    Text,
    /// Everything, as one JSON document.
    Json,
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

    /// Start, stop or show the palisade agents of a lab (one per node).
    #[command(subcommand)]
    Agents(crate::lab_agents::LabAgentsCommand),

    /// Move an endpoint to another node as a live migration would (same namespace, addresses,
    /// MAC, labels and identity; its port is re-created on the new node).
    #[command(
        after_help = "Example:\n  palisade lab move acme:app-1 --to-node node-3\n\n\
        The intent changes first (through the control plane when the lab's agents follow one,\n\
        else in the lab's copy of the files the agents read), and once every agent follows, the port\n\
        moves: nothing passes unchecked meanwhile (docs/lab.md)."
    )]
    Move(crate::lab::LabMoveArgs),

    /// Show what crosses the underlay between nodes: outer nodes, VNI, GBP identity, inner flow.
    #[command(after_help = "Examples:\n  palisade lab capture --underlay\n  \
        palisade lab capture --underlay --count 10 --timeout-ms 5000 -o json\n\n\
        Captured on the underlay bridge inside the underlay namespace. Denied traffic never\n\
        appears: it is dropped on its own node.")]
    Capture(crate::lab::LabCaptureArgs),
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
