//! palisade's control plane: a REST API (JSON) over the store.
//!
//! - Resources (Tenant, Tier, Endpoint, Policy; Pods and NetworkPolicies land
//!   as Endpoints and Policies) with resource versions and compare-and-swap;
//!   every change validated against the whole resulting intent and written in
//!   one transaction with its audit records and identities ([`write`]).
//! - Bearer tokens with roles admin, `tenant:NAME`, `agent:NODE` ([`auth`]).
//! - One store watch per server fanned out to every agent's node stream
//!   ([`fanout`]).
//! - Explain against the live state, agents' status, audit log, OpenAPI.
//! - Visibility (`docs/visibility.md`): agents' flow records in a bounded
//!   history, followed by clients ([`flows`]); per-rule hit counters
//!   ([`counters`]); a tenant's segmentation map ([`map`]); Prometheus
//!   metrics ([`metrics`]); the web UI at `/ui/` ([`ui`]).
//!
//! Start one with [`Server::start`]; the routes are in `docs/api.md`.

#![warn(missing_docs)]

mod agents;
pub mod auth;
mod counters;
mod error;
mod fanout;
mod flows;
mod map;
mod metrics;
mod openapi;
mod routes;
mod stored;
mod ui;
mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade_model::LoadOptions;
use palisade_store::{Revision, Store, StoreSpec};

pub use auth::{token_hash, Principal, Role, Tokens};
pub use error::{ApiError, ServerError};

/// A certificate and key for TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to run a server. Build it with [`ServerConfig::new`] and adjust the
/// fields; the defaults suit production.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The store.
    pub store: StoreSpec,
    /// Serve HTTPS with these files; plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// The tokens file; without one the server runs open (and says so).
    pub tokens: Option<PathBuf>,
    /// Revisions of history kept by the periodic compaction (agents that
    /// were away for fewer revisions resume with deltas).
    pub keep_revisions: u64,
    /// How often to compact.
    pub compact_every: Duration,
    /// How often node streams send a heartbeat.
    pub heartbeat: Duration,
    /// The tenant Kubernetes Pods and NetworkPolicies land in.
    pub kubernetes_tenant: String,
    /// Flow records kept in memory; the oldest are dropped beyond it.
    pub flow_history: usize,
    /// Also serve `/metrics`, without a token, on this address (plain HTTP).
    pub metrics_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// A configuration with the defaults: no TLS, no tokens, 10,000
    /// revisions kept, compaction every minute, heartbeats every 5 s,
    /// 20,000 flow records, no separate metrics listener.
    pub fn new(listen: SocketAddr, store: StoreSpec) -> ServerConfig {
        ServerConfig {
            listen,
            store,
            tls: None,
            tokens: None,
            keep_revisions: 10_000,
            compact_every: Duration::from_secs(60),
            heartbeat: Duration::from_secs(5),
            kubernetes_tenant: LoadOptions::default().kubernetes_tenant,
            flow_history: 20_000,
            metrics_listen: None,
        }
    }
}

/// What every route shares.
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub opts: LoadOptions,
    pub cache: stored::ParseCache,
    pub tokens: Tokens,
    pub fanout: fanout::Fanout,
    pub agents: agents::Agents,
    pub heartbeat: Duration,
    pub flows: flows::FlowHistory,
    pub counters: counters::Counters,
    pub metrics: metrics::Metrics,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    metrics_addr: Option<SocketAddr>,
    handle: axum_server::Handle,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    store: Arc<dyn Store>,
}

impl Server {
    /// Opens the store, loads the state, binds the listener and serves in
    /// the background.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let tokens = match &config.tokens {
            Some(path) => Tokens::load(path)?,
            None => {
                tracing::warn!(
                    "AUTHENTICATION IS DISABLED: every caller is an admin. Start the server with \
                     --tokens FILE to require bearer tokens"
                );
                Tokens::disabled()
            }
        };
        let tls = match &config.tls {
            Some(files) => Some(tls_config(files)?),
            None => None,
        };
        let store = config
            .store
            .open()
            .await
            .map_err(|source| ServerError::Store {
                spec: config.store.to_string(),
                source,
            })?;
        let opts = LoadOptions {
            kubernetes_tenant: config.kubernetes_tenant.clone(),
        };
        let (fanout, fanout_task) = fanout::Fanout::start(store.clone(), opts.clone())
            .await
            .map_err(|e| ServerError::State {
                reason: e.to_string(),
            })?;
        let shared = Arc::new(Shared {
            store: store.clone(),
            opts,
            cache: stored::ParseCache::default(),
            tokens,
            fanout,
            agents: agents::Agents::default(),
            heartbeat: config.heartbeat,
            flows: flows::FlowHistory::new(config.flow_history),
            counters: counters::Counters::default(),
            metrics: metrics::Metrics::new(),
        });
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServerError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let listen_error = |source| ServerError::Listen {
            addr: config.listen.to_string(),
            source,
        };
        listener.set_nonblocking(true).map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let handle = axum_server::Handle::new();
        let mut background = Vec::new();
        let metrics_addr = match config.metrics_listen {
            Some(at) => {
                let (task, bound) = serve_metrics(at, shared.clone(), handle.clone())?;
                background.push(task);
                Some(bound)
            }
            None => None,
        };
        let app = routes::router(shared).into_make_service();
        let is_tls = tls.is_some();
        let serve = match tls {
            Some(tls) => {
                let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
            None => {
                let server = axum_server::from_tcp(listener).handle(handle.clone());
                tokio::spawn(server.serve(app))
            }
        };
        let compaction = tokio::spawn(compact_periodically(
            store.clone(),
            config.keep_revisions,
            config.compact_every,
        ));
        tracing::info!(
            %addr,
            tls = is_tls,
            store = %store.describe(),
            metrics = ?metrics_addr,
            "palisade server listening"
        );
        background.extend([fanout_task, compaction]);
        Ok(Server {
            addr,
            tls: is_tls,
            metrics_addr,
            handle,
            serve,
            background,
            store,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `--metrics-listen` address, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Its base URL, `http://` or `https://` and the address.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until the HTTP server fails (it does not stop by itself).
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        match (&mut self.serve).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ServerError::Serve { source }),
            Err(join) => Err(ServerError::Serve {
                source: std::io::Error::other(join),
            }),
        }
    }

    /// Stops accepting, ends open streams after a short grace period, stops
    /// the background tasks and closes the store (an embedded store's file
    /// can be opened again at once).
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(Duration::from_millis(500)));
        let _ = self.serve.await;
        for task in &self.background {
            task.abort();
        }
        for task in self.background {
            let _ = task.await;
        }
        if let Err(error) = self.store.close().await {
            tracing::warn!(%error, "closing the store failed");
        }
    }
}

/// Serves `/metrics` without a token on a second, plain-HTTP listener that
/// stops with the main one.
fn serve_metrics(
    at: SocketAddr,
    shared: Arc<Shared>,
    handle: axum_server::Handle,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), ServerError> {
    let fail = |source| ServerError::Listen {
        addr: at.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(at).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics::metrics_open))
        .with_state(shared)
        .into_make_service();
    let server = axum_server::from_tcp(listener).handle(handle);
    let task = tokio::spawn(async move {
        if let Err(error) = server.serve(app).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    Ok((task, bound))
}

/// Compacts the store every `every`, keeping the last `keep` revisions.
async fn compact_periodically(store: Arc<dyn Store>, keep: u64, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let revision = match store.revision().await {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%error, "compaction skipped: cannot read the revision");
                continue;
            }
        };
        if revision.get() <= keep {
            continue;
        }
        let at = Revision(revision.get() - keep);
        match store.compact(at).await {
            Ok(()) => tracing::debug!(%at, "store compacted"),
            Err(error) => tracing::warn!(%error, %at, "compaction failed"),
        }
    }
}

/// The rustls configuration of the certificate and key files (ring provider).
fn tls_config(files: &TlsFiles) -> Result<axum_server::tls_rustls::RustlsConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let fail = |reason: String| ServerError::Tls { reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| fail(format!("cannot read {}: {e}", files.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| fail(format!("{}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            fail(format!(
                "{} and {} do not make a usable certificate: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}
