//! `palisade server`: the control plane. Parses the flags into a
//! `ServerConfig`, runs the server until Ctrl-C or SIGTERM, then shuts down
//! gracefully (streams closed, store closed).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use palisade_server::{Server, ServerConfig, TlsFiles};
use palisade_store::StoreSpec;

use crate::Outcome;

/// `palisade server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7400")]
    pub listen: String,

    /// The store: a file path or embedded:PATH (one server), or
    /// etcd:http://HOST:2379,http://HOST:2379 (several servers).
    #[arg(long, value_name = "STORE")]
    pub store: String,

    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Tokens file: a YAML list of {sha256, subject, role}. Without it the
    /// server runs open (every caller is an admin).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,

    /// Revisions of history the periodic compaction keeps (agents away for
    /// fewer resume with deltas, others get a fresh snapshot).
    #[arg(long = "keep-revisions", value_name = "N", default_value_t = 10_000)]
    pub keep_revisions: u64,

    /// How often to compact, e.g. 1m, 30s.
    #[arg(long = "compact-every", value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub compact_every: Duration,

    /// How often node streams send a heartbeat, e.g. 5s.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Tenant that Kubernetes Pods and NetworkPolicies land in.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,

    /// Flow records from agents kept in memory; the oldest are dropped
    /// beyond it (and counted).
    #[arg(long = "flow-history", value_name = "N", default_value_t = 20_000)]
    pub flow_history: usize,

    /// Also serve /metrics without a token on this address (plain HTTP; keep
    /// it on a private network). /metrics on --listen needs an admin token.
    #[arg(long = "metrics-listen", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// A duration such as `5s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 5s, 1m, 2h)"))
}

fn listen_addr(text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| {
            format!("--listen {text}: not an address (write host:port, e.g. 0.0.0.0:7400)")
        })?
        .next()
        .with_context(|| format!("--listen {text}: the name resolves to no address"))
}

/// Runs `palisade server` until it is stopped.
pub fn run(args: ServerArgs) -> Result<Outcome> {
    let store: StoreSpec = args
        .store
        .parse()
        .with_context(|| format!("--store {}", args.store))?;
    let mut config = ServerConfig::new(listen_addr(&args.listen)?, store);
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    config.tokens = args.tokens;
    config.keep_revisions = args.keep_revisions;
    config.compact_every = args.compact_every;
    config.heartbeat = args.heartbeat;
    config.kubernetes_tenant = args.kubernetes_tenant;
    config.flow_history = args.flow_history;
    config.metrics_listen = args
        .metrics_listen
        .as_deref()
        .map(listen_addr)
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config))?;
    Ok(Outcome::Yes)
}

async fn serve(config: ServerConfig) -> Result<()> {
    let auth = config.tokens.is_some();
    let mut server = Server::start(config).await?;
    eprintln!(
        "palisade server listening on {} (auth: {})",
        server.url(),
        if auth {
            "enabled"
        } else {
            "DISABLED, every caller is an admin; use --tokens FILE"
        }
    );
    eprintln!("web UI: {}/ui/", server.url());
    if let Some(metrics) = server.metrics_addr() {
        eprintln!("metrics without a token: http://{metrics}/metrics");
    }
    let stopped = tokio::select! {
        result = server.wait() => Some(result),
        _ = stop_signal() => None,
    };
    match stopped {
        Some(result) => result.map_err(Into::into),
        None => {
            eprintln!("palisade server stopping");
            server.shutdown().await;
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
