//! `palisade demo`: the whole system on one machine. Starts an embedded
//! control plane (a temporary store, tokens), builds a lab of the example's
//! nodes and tenants, starts one agent per node following the server,
//! applies the example through the API, waits until every agent has it in
//! the kernel, then probes every endpoint's served ports with real packets
//! (from the other endpoints of its tenant and from the world) and prints
//! each result next to the rule that decided it, as the server explains it,
//! flagging any probe where the kernel and the evaluator disagree. Then it
//! says where to look and stays up until Ctrl-C (or `--once`, or
//! `--keep-running-secs`), and removes everything it made — also on Ctrl-C
//! or an error at any step.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use palisade_client::api::ExplainRequest;
use palisade_client::{Client, ClientConfig};
use palisade_lab::{Lab, LabOptions, Place, ProbeResult};
use palisade_model::{Intent, LoadOptions, Protocol};
use palisade_policy::{Explanation, Verdict};
use palisade_server::{token_hash, Server, ServerConfig};
use palisade_store::StoreSpec;

use crate::cli::{LabName, Sources};
use crate::lab_agents::LabAgentsUpArgs;
use crate::table::render;
use crate::Outcome;

/// How long every agent gets to have the applied example in the kernel.
const APPLIED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a probe waits before it says "blocked".
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// `palisade demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the probe matrix, then clean up and exit (instead of staying up).
    #[arg(long)]
    pub once: bool,

    /// Stay up this many seconds, then clean up and exit (default: until Ctrl-C).
    #[arg(long = "keep-running-secs", value_name = "N", conflicts_with = "once")]
    pub keep_running_secs: Option<u64>,

    /// The example's resource files [default: examples/three-tier, looked up from the
    /// current directory and from the palisade binary's].
    #[arg(long, value_name = "DIR")]
    pub example: Option<PathBuf>,

    /// The server's address; when 7400 is taken, a free port is used instead.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,

    /// The lab's name (its namespaces are pl_<name>_...).
    #[arg(long = "name", value_name = "NAME", default_value = "palisade-demo")]
    pub lab: String,
}

/// Ctrl-C or SIGTERM arrived.
#[derive(Debug, Clone, Default)]
struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Blocks SIGINT and SIGTERM for every thread started from now on and
    /// lets one thread receive them.
    fn install() -> Result<(Interrupt, std::sync::mpsc::Receiver<()>)> {
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGINT);
        signals.add(Signal::SIGTERM);
        signals
            .thread_block()
            .context("cannot block SIGINT/SIGTERM for the signal thread")?;
        let flag = Interrupt::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let raised = flag.clone();
        std::thread::Builder::new()
            .name("palisade-signals".into())
            .spawn(move || {
                if signals.wait().is_ok() {
                    raised.0.store(true, Ordering::SeqCst);
                    let _ = tx.send(());
                }
            })
            .context("cannot start the signal thread")?;
        Ok((flag, rx))
    }

    /// An error when Ctrl-C was pressed, so that the demo unwinds and cleans up.
    fn check(&self) -> Result<()> {
        if self.0.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// Everything the demo made; dropping it removes it all, in order.
struct Demo {
    runtime: tokio::runtime::Runtime,
    work: PathBuf,
    server: Option<Server>,
    lab: Option<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        eprintln!("cleaning up: agents, lab, server, store");
        if let Some(lab) = self.lab.take() {
            if let Err(e) = crate::lab_agents::down(&lab) {
                eprintln!("warning: stopping the agents of lab {lab}: {e:#}");
            }
            if let Err(e) = Lab::down(&lab) {
                eprintln!("warning: taking lab {lab} down: {e}");
            }
        }
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.work) {
            eprintln!("warning: removing {}: {e}", self.work.display());
        }
    }
}

/// The demo's tokens: an admin's, one per node's agent, one per tenant.
struct Tokens {
    admin: String,
    tenants: BTreeMap<String, String>,
}

/// 128 random bits, hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the demo's tokens")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the tokens file (hashes only) and one token file per node's agent.
fn make_tokens(work: &Path, intent: &Intent, nodes: &[String]) -> Result<(Tokens, PathBuf)> {
    let mut lines = String::new();
    let mut entry = |token: &str, subject: &str, role: &str| {
        lines.push_str(&format!(
            "- {{sha256: {}, subject: {subject}, role: '{role}'}}\n",
            token_hash(token)
        ));
    };
    let admin = random_token()?;
    entry(&admin, "demo-admin", "admin");
    let agent_dir = work.join("agent-tokens");
    std::fs::create_dir_all(&agent_dir)?;
    for node in nodes {
        let token = random_token()?;
        entry(&token, &format!("agent-{node}"), &format!("agent:{node}"));
        std::fs::write(
            agent_dir.join(format!("{node}.token")),
            format!("{token}\n"),
        )?;
    }
    let mut tenants = BTreeMap::new();
    for tenant in intent.tenants.keys() {
        let token = random_token()?;
        entry(
            &token,
            &format!("{tenant}-user"),
            &format!("tenant:{tenant}"),
        );
        tenants.insert(tenant.clone(), token);
    }
    let file = work.join("tokens.yaml");
    std::fs::write(&file, lines)?;
    Ok((Tokens { admin, tenants }, agent_dir))
}

/// The example directory: as given, or examples/three-tier under the
/// current directory or above the binary (target/release/palisade).
fn find_example(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return std::fs::canonicalize(path)
            .with_context(|| format!("cannot find the example {}", path.display()));
    }
    let mut candidates = vec![PathBuf::from("examples/three-tier")];
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join("examples/three-tier"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_dir())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .context(
            "cannot find examples/three-tier: run the demo from the repository's root, or give --example DIR",
        )
}

/// Runs `palisade demo`.
pub fn run(args: DemoArgs) -> Result<Outcome> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo builds network namespaces and loads eBPF programs: run it as root (sudo)");
    }
    let (interrupt, interrupted) = Interrupt::install()?;
    let example = find_example(args.example.as_deref())?;
    let intent =
        palisade_model::load_paths(std::slice::from_ref(&example), &LoadOptions::default())
            .map_err(|d| anyhow::anyhow!("the example {} is invalid:\n{d}", example.display()))?;

    let work = std::env::temp_dir().join(format!("palisade-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let mut demo = Demo {
        runtime: tokio::runtime::Runtime::new().context("cannot start the async runtime")?,
        work: work.clone(),
        server: None,
        lab: None,
    };
    let mut nodes: Vec<String> = intent.endpoints.iter().map(|e| e.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let (tokens, agent_tokens) = make_tokens(&work, &intent, &nodes)?;

    // 1. The control plane.
    let server = demo.runtime.block_on(start_server(&args, &work))?;
    let url = server.url();
    let server_metrics = server.metrics_addr();
    demo.server = Some(server);
    println!("palisade demo: {}", example.display());
    println!(
        "server    {url} (store {}, auth on)",
        work.join("store.redb").display()
    );
    interrupt.check()?;

    // 2. The lab and its agents, following the server.
    let exe = std::env::current_exe().context("cannot find the palisade executable")?;
    demo.lab = Some(args.lab.clone());
    let lab = Lab::up(
        &intent,
        &LabOptions {
            name: args.lab.clone(),
            plain: false,
            replace: true,
            responder_command: vec![exe.into(), "lab".into(), "serve".into()],
        },
    )?;
    println!(
        "lab       {}: {} node(s), {} endpoint(s), {} world(s)",
        lab.name(),
        lab.nodes().len(),
        lab.endpoints().len(),
        lab.worlds().len()
    );
    interrupt.check()?;
    crate::lab_agents::up(&LabAgentsUpArgs {
        sources: Sources {
            paths: Vec::new(),
            kubernetes_tenant: LoadOptions::default().kubernetes_tenant,
        },
        lab: LabName {
            name: args.lab.clone(),
        },
        server: Some(url.clone()),
        token: None,
        token_dir: Some(agent_tokens),
        timeout_s: 60,
    })?;
    interrupt.check()?;

    // 3. The example, through the API.
    let admin = Client::new(&ClientConfig::for_server(&url, Some(&tokens.admin)))?;
    let documents =
        palisade_model::read_documents(std::slice::from_ref(&example), &LoadOptions::default())
            .map_err(|d| anyhow::anyhow!("{d}"))?;
    let values = documents.into_iter().map(|d| d.value).collect();
    let applied = demo.runtime.block_on(admin.apply(values))?;
    println!(
        "applied   {} resources of {} at revision {}",
        applied.results.len(),
        example.display(),
        applied.revision
    );
    let took = wait_applied(&demo.runtime, &admin, &nodes, applied.revision, &interrupt)?;
    println!(
        "enforcing every agent has revision {} in the kernel ({} ms after the apply)",
        applied.revision,
        took.as_millis()
    );

    // 4. Real packets, and why.
    println!();
    let disagreements = probe_and_explain(&demo.runtime, &admin, &lab, &intent)?;
    interrupt.check()?;

    // 5. Where to look.
    println!();
    let lab = Lab::open(lab.name())?; // with its agents now
    print_pointers(&url, &tokens, &lab, server_metrics);
    if disagreements > 0 {
        eprintln!(
            "\n!!! {disagreements} probe(s) above got a different verdict from the kernel than from the \
             evaluator: that is a bug, please report it with the output above"
        );
    }

    if !args.once {
        match args.keep_running_secs {
            Some(secs) => {
                println!("\nthe demo stays up for {secs} s (Ctrl-C stops it sooner)");
                let _ = interrupted.recv_timeout(Duration::from_secs(secs));
            }
            None => {
                println!("\nthe demo runs until Ctrl-C");
                let _ = interrupted.recv();
            }
        }
    }
    drop(demo);
    Ok(if disagreements > 0 {
        Outcome::No
    } else {
        Outcome::Yes
    })
}

/// Starts the embedded server with the demo's tokens on `args.listen`, or
/// on a free port when that one is taken.
async fn start_server(args: &DemoArgs, work: &Path) -> Result<Server> {
    let store: StoreSpec = work
        .join("store.redb")
        .display()
        .to_string()
        .parse()
        .context("the demo's store path")?;
    let mut config = ServerConfig::new(args.listen, store);
    config.tokens = Some(work.join("tokens.yaml"));
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.heartbeat = Duration::from_secs(2);
    match Server::start(config.clone()).await {
        Ok(server) => Ok(server),
        Err(palisade_server::ServerError::Listen { .. }) if args.listen.port() != 0 => {
            eprintln!(
                "{} is taken; the demo's server listens on a free port instead",
                args.listen
            );
            config.listen = SocketAddr::new(args.listen.ip(), 0);
            Ok(Server::start(config).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Waits until every node's agent reports `revision` applied; returns how long it took.
fn wait_applied(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    nodes: &[String],
    revision: u64,
    interrupt: &Interrupt,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        interrupt.check()?;
        let status = runtime.block_on(client.status())?;
        let behind: Vec<String> = nodes
            .iter()
            .filter(|node| {
                !status
                    .agents
                    .iter()
                    .any(|a| &a.node == *node && a.applied_revision >= revision && a.health == "ok")
            })
            .cloned()
            .collect();
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > APPLIED_TIMEOUT {
            let reports: Vec<String> = status
                .agents
                .iter()
                .map(|a| format!("{}: applied {}, {}", a.node, a.applied_revision, a.health))
                .collect();
            bail!(
                "agents of {} did not apply revision {revision} within {} s ({}); see their logs \
                 under /run/palisade/lab/",
                behind.join(", "),
                APPLIED_TIMEOUT.as_secs(),
                reports.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One probe of the matrix.
struct Probe {
    from: Place,
    to: Place,
    /// How explain names the ends.
    explain_from: String,
    explain_to: String,
    protocol: Protocol,
    port: u16,
}

/// Every served port of every endpoint, from the other endpoints of its
/// tenant and from its tenant's world; prints one line per probe with the
/// server's explanation. Returns how many probes the kernel and the
/// evaluator disagree on.
fn probe_and_explain(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    lab: &Lab,
    intent: &Intent,
) -> Result<usize> {
    let mut probes = Vec::new();
    for to in lab.endpoints() {
        let sources = lab
            .endpoints()
            .iter()
            .filter(|from| from.tenant == to.tenant && from.full_ref != to.full_ref)
            .map(|from| {
                (
                    Place::Endpoint(from.full_ref.clone()),
                    from.full_ref.clone(),
                )
            })
            .chain(std::iter::once((
                Place::world(&to.node, &to.tenant),
                format!("{}:world", to.tenant),
            )))
            .collect::<Vec<_>>();
        for serve in &to.serve {
            for (from, explain_from) in &sources {
                probes.push(Probe {
                    from: from.clone(),
                    to: Place::Endpoint(to.full_ref.clone()),
                    explain_from: explain_from.clone(),
                    explain_to: to.full_ref.clone(),
                    protocol: serve.protocol,
                    port: serve.port,
                });
            }
        }
    }
    // One matrix per service, all at once.
    let mut groups: BTreeMap<(Protocol, u16), Vec<usize>> = BTreeMap::new();
    for (i, p) in probes.iter().enumerate() {
        groups.entry((p.protocol, p.port)).or_default().push(i);
    }
    let mut results: Vec<Option<ProbeResult>> = vec![None; probes.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|(&(protocol, port), members)| {
                let pairs: Vec<(Place, Place)> = members
                    .iter()
                    .map(|&i| (probes[i].from.clone(), probes[i].to.clone()))
                    .collect();
                let handle =
                    s.spawn(move || lab.probe_matrix(&pairs, protocol, port, PROBE_TIMEOUT));
                (members, handle)
            })
            .collect();
        for (members, handle) in handles {
            let records = handle.join().expect("a probe thread panicked");
            for (&i, record) in members.iter().zip(records) {
                results[i] = Some(record.result);
            }
        }
    });

    let tenants: Vec<&String> = intent.tenants.keys().collect();
    let mut disagreements = 0;
    let mut rows = vec![[
        "FROM",
        "TO",
        "SERVICE",
        "KERNEL",
        "DECIDED BY (server's explain)",
    ]
    .map(String::from)
    .to_vec()];
    let mut flagged = Vec::new();
    for (probe, result) in probes.iter().zip(results) {
        let result = result.expect("every probe ran");
        let explained = runtime.block_on(client.explain(&ExplainRequest {
            from: probe.explain_from.clone(),
            to: probe.explain_to.clone(),
            proto: probe.protocol.as_str().to_ascii_lowercase(),
            port: Some(probe.port),
            icmp_type: None,
            icmp_code: None,
        }))?;
        let expected = explained.explanation.verdict;
        let (kernel, agrees) = match &result {
            ProbeResult::Reachable { .. } => ("ALLOW", expected == Verdict::Allow),
            ProbeResult::Blocked => ("DENY", expected == Verdict::Deny),
            ProbeResult::Error { message } => bail!("a probe could not run: {message}"),
        };
        let why = why(&explained.explanation);
        let mark = if agrees {
            why
        } else {
            disagreements += 1;
            flagged.push(format!(
                "{} -> {} {}/{}: the kernel says {kernel}, the evaluator {expected}",
                probe.from,
                probe.explain_to,
                probe.protocol.as_str().to_ascii_lowercase(),
                probe.port
            ));
            format!("!!! KERNEL DISAGREES WITH THE EVALUATOR ({expected}): {why}")
        };
        rows.push(vec![
            probe.from.to_string(),
            probe.explain_to.clone(),
            format!(
                "{}/{}",
                probe.protocol.as_str().to_ascii_lowercase(),
                probe.port
            ),
            kernel.to_owned(),
            mark,
        ]);
    }
    println!(
        "probe matrix: TCP to every served port from the other endpoints of the tenant and from \
         the world ({} probes, tenants {})",
        rows.len() - 1,
        tenants
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{}", render(&rows));
    let allowed = rows.iter().skip(1).filter(|r| r[3] == "ALLOW").count();
    println!(
        "{} probes: {allowed} allowed, {} denied; the kernel {}",
        rows.len() - 1,
        rows.len() - 1 - allowed,
        if disagreements == 0 {
            "agrees with the evaluator on every one".to_owned()
        } else {
            format!("DISAGREES with the evaluator on {disagreements}")
        }
    );
    for line in &flagged {
        eprintln!("!!! {line}");
    }
    Ok(disagreements)
}

/// What decided, as flow records name it (`default/app ingress rule 0
/// (allow)`, `default deny of tier default (egress)`), with the audit
/// rules that would deny.
fn why(explanation: &Explanation) -> String {
    let mut out: Vec<String> = explanation
        .reasons()
        .iter()
        .map(|a| a.to_string())
        .collect();
    if out.is_empty() {
        out.push("neither end is an endpoint: no policy has a say".into());
    }
    for side in explanation.sides() {
        if side.audit.would_deny {
            out.push(format!("audit: would deny by {}", side.audit.attribution));
        }
    }
    out.join(", ")
}

/// The directory of this executable when `palisade` on the PATH is not it
/// (a fresh clone runs `target/release/palisade`).
fn exe_dir_off_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::canonicalize(dir.join("palisade")).ok().as_deref() == Some(exe.as_path())
        })
    });
    (!on_path)
        .then(|| exe.parent().map(Path::to_path_buf))
        .flatten()
}

fn print_pointers(url: &str, tokens: &Tokens, lab: &Lab, server_metrics: Option<SocketAddr>) {
    let name = lab.name();
    println!("where to look (in another terminal, as root):");
    if let Some(dir) = exe_dir_off_path() {
        println!("  export PATH={}:$PATH", dir.display());
    }
    println!(
        "  export PALISADE_SERVER={url} PALISADE_TOKEN={}",
        tokens.admin
    );
    println!(
        "  palisade flows --follow                 # every verdict as it happens, with its rule"
    );
    println!("  palisade status                         # agents, applied revision, lag, health");
    println!("  palisade explain --from acme:web-1 --to acme:db-1 --proto tcp --port 5432");
    println!(
        "  palisade lab probe --name {name} --from acme:web-2 --to acme:app-1 --proto tcp --port 8080"
    );
    println!("  palisade lab agents status --name {name}");
    println!("web UI    {url}/ui/  (paste a token when it asks)");
    println!("  admin token: {}", tokens.admin);
    for (tenant, token) in &tokens.tenants {
        println!("  tenant {tenant} token: {token} (sees only {tenant})");
    }
    println!("metrics");
    if let Some(addr) = server_metrics {
        println!("  server: http://{addr}/metrics");
    }
    for agent in lab.agents() {
        if let Ok(Some(status)) = palisade_agent::read_status(&agent.state_dir) {
            if let Some(metrics) = status.metrics {
                println!("  agent of {}: {metrics}", agent.node);
            }
        }
        println!("  flow log of {}: {}", agent.node, agent.flow_log.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = vec![
            vec!["FROM".to_owned(), "TO".to_owned(), "WHY".to_owned()],
            vec!["acme:web-1".to_owned(), "x".to_owned(), "a rule".to_owned()],
        ];
        assert_eq!(
            render(&rows),
            "FROM        TO  WHY\nacme:web-1  x   a rule\n"
        );
    }
}
