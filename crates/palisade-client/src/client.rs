//! [`Client`]: the API over HTTP(S) with reqwest (rustls, so no OpenSSL on
//! the hosts; streamed bodies for the NDJSON routes). Several server URLs
//! may be given: a request that cannot connect to one tries the next.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use palisade_model::Kind;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::api::{
    kind_has_tenant, kind_path, ApplyRequest, ApplyResponse, AuditList, ErrorBody, ExplainRequest,
    ExplainResponse, NodeStatus, ResourceList, ServerStatus, WatchEvent, API_PREFIX,
};
use crate::{ClientConfig, ClientError};

/// How long a plain request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Filters of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only this tenant's resources.
    pub tenant: Option<String>,
    /// Only this namespace's.
    pub namespace: Option<String>,
    /// Only endpoints whose labels match this selector expression.
    pub label_selector: Option<String>,
}

/// Which resource to get or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// The tenant (Endpoints and Policies).
    pub tenant: Option<String>,
    /// The namespace, when the resource has one.
    pub namespace: Option<String>,
}

/// A client of one palisade control plane (one server or several in front
/// of one etcd cluster). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    servers: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Option<Arc<str>>,
}

impl Client {
    /// A client for a resolved configuration.
    pub fn new(config: &ClientConfig) -> Result<Client, ClientError> {
        if config.servers.is_empty() {
            return Err(ClientError::Config {
                reason: "no server URL; give --server or PALISADE_SERVER".to_owned(),
            });
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| ClientError::Config {
                reason: format!("cannot read the CA file {}: {e}", path.display()),
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| ClientError::Config {
                reason: format!("{} is not a PEM certificate: {e}", path.display()),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| ClientError::Config {
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Client {
            http,
            servers: Arc::new(config.servers.clone()),
            current: Arc::new(AtomicUsize::new(0)),
            token: config.token.as_deref().map(Arc::from),
        })
    }

    /// The server URL requests go to now.
    pub fn server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Every configured server URL.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Moves on to the next server (after a failure).
    pub(crate) fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request(&self, server: &str, method: Method, path: &str) -> RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{server}{API_PREFIX}{path}"));
        if let Some(token) = &self.token {
            rb = rb.bearer_auth(token);
        }
        rb
    }

    /// Sends a request built by `build` for a server URL, trying the next
    /// server when one cannot be reached; turns error answers into
    /// [`ClientError::Api`].
    pub(crate) async fn send(
        &self,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let mut last = None;
        for _ in 0..self.servers.len() {
            let server = self.server().to_owned();
            match build(&server).send().await {
                Ok(response) => return check(response).await,
                Err(e) if e.is_connect() => {
                    last = Some(ClientError::Connect {
                        url: server,
                        reason: root_cause(&e),
                    });
                    self.rotate();
                }
                Err(e) => {
                    return Err(ClientError::Connect {
                        url: server,
                        reason: error_chain(&e),
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            url: self.servers.join(","),
            reason: "no server answered".to_owned(),
        }))
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl serde::Serialize + Sync)>,
    ) -> Result<T, ClientError> {
        let response = self
            .send(|server| {
                let rb = self
                    .request(server, method.clone(), path)
                    .timeout(REQUEST_TIMEOUT);
                match body {
                    Some(b) => rb.json(b),
                    None => rb,
                }
            })
            .await?;
        let url = response.url().to_string();
        response.json().await.map_err(|e| ClientError::Protocol {
            url,
            reason: error_chain(&e),
        })
    }

    /// Creates or updates resources in one transaction.
    pub async fn apply(&self, items: Vec<serde_json::Value>) -> Result<ApplyResponse, ClientError> {
        self.call(Method::POST, "/apply", Some(&ApplyRequest { items }))
            .await
    }

    /// Lists the resources of a kind.
    pub async fn list(
        &self,
        kind: Kind,
        options: &ListOptions,
    ) -> Result<ResourceList, ClientError> {
        let mut query = Vec::new();
        if let Some(t) = &options.tenant {
            query.push(("tenant", t.as_str()));
        }
        if let Some(ns) = &options.namespace {
            query.push(("namespace", ns.as_str()));
        }
        if let Some(s) = &options.label_selector {
            query.push(("labelSelector", s.as_str()));
        }
        let path = format!("/{}?{}", kind_path(kind), encode_query(&query));
        self.call(Method::GET, &path, None::<&()>).await
    }

    fn resource_path(kind: Kind, name: &str, options: &GetOptions) -> Result<String, ClientError> {
        let mut path = format!("/{}/", kind_path(kind));
        if kind_has_tenant(kind) {
            let tenant = options
                .tenant
                .as_deref()
                .ok_or_else(|| ClientError::Config {
                    reason: format!("{} belong to a tenant: give --tenant", kind_path(kind)),
                })?;
            path.push_str(&encode(tenant));
            path.push('/');
        }
        path.push_str(&encode(name));
        Ok(path)
    }

    /// Reads one resource (the document with `metadata.resourceVersion`).
    pub async fn get(
        &self,
        kind: Kind,
        name: &str,
        options: &GetOptions,
    ) -> Result<serde_json::Value, ClientError> {
        let mut path = Client::resource_path(kind, name, options)?;
        if let Some(ns) = &options.namespace {
            path.push_str(&format!("?namespace={}", encode(ns)));
        }
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Deletes one resource; with `resource_version`, only if it is still
    /// that version.
    pub async fn delete(
        &self,
        kind: Kind,
        name: &str,
        options: &GetOptions,
        resource_version: Option<u64>,
    ) -> Result<ApplyResponse, ClientError> {
        let mut path = Client::resource_path(kind, name, options)?;
        let mut query = Vec::new();
        let version = resource_version.map(|v| v.to_string());
        if let Some(ns) = &options.namespace {
            query.push(("namespace", ns.as_str()));
        }
        if let Some(v) = &version {
            query.push(("resourceVersion", v.as_str()));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&encode_query(&query));
        }
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// Explains a flow against the live state.
    pub async fn explain(&self, request: &ExplainRequest) -> Result<ExplainResponse, ClientError> {
        self.call(Method::POST, "/explain", Some(request)).await
    }

    /// The server's status and (for admins) its agents.
    pub async fn status(&self) -> Result<ServerStatus, ClientError> {
        self.call(Method::GET, "/status", None::<&()>).await
    }

    /// The audit log, optionally of one tenant and since a time or duration
    /// (`2024-05-01T10:00:00Z`, `1h`).
    pub async fn audit(
        &self,
        tenant: Option<&str>,
        since: Option<&str>,
    ) -> Result<AuditList, ClientError> {
        let mut query = Vec::new();
        if let Some(t) = tenant {
            query.push(("tenant", t));
        }
        if let Some(s) = since {
            query.push(("since", s));
        }
        let path = format!("/audit?{}", encode_query(&query));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Reports a node's status (agents).
    pub async fn report_status(&self, node: &str, status: &NodeStatus) -> Result<(), ClientError> {
        let path = format!("/nodes/{}/status", encode(node));
        self.send(|server| {
            self.request(server, Method::PUT, &path)
                .timeout(REQUEST_TIMEOUT)
                .json(status)
        })
        .await?;
        Ok(())
    }

    /// Follows changes after `from` (default: now).
    pub async fn watch(&self, from: Option<u64>) -> Result<WatchStream, ClientError> {
        let path = match from {
            Some(r) => format!("/watch?from={r}"),
            None => "/watch".to_owned(),
        };
        let response = self
            .send(|server| self.request(server, Method::GET, &path))
            .await?;
        Ok(WatchStream {
            lines: Lines::new(response),
        })
    }

    /// Opens a node stream (used by [`crate::NodeStream`]).
    pub(crate) async fn open_node_stream(
        &self,
        server: &str,
        node: &str,
        from: Option<u64>,
    ) -> Result<Lines, ClientError> {
        let mut path = format!("/nodes/{}/stream", encode(node));
        if let Some(r) = from {
            path.push_str(&format!("?from={r}"));
        }
        let response = match self.request(server, Method::GET, &path).send().await {
            Ok(r) => check(r).await?,
            Err(e) => {
                return Err(ClientError::Connect {
                    url: server.to_owned(),
                    reason: error_chain(&e),
                })
            }
        };
        Ok(Lines::new(response))
    }
}

/// Turns an error answer into [`ClientError::Api`].
async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().to_string();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            details: body.error.details,
        }),
        Err(_) => Err(ClientError::Protocol {
            url,
            reason: format!(
                "HTTP {}{}",
                status.as_u16(),
                status
                    .canonical_reason()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ),
        }),
    }
}

/// The error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The innermost cause (`Connection refused (os error 111)`): what a person
/// needs when a server cannot be reached.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The lines of a streamed (NDJSON) body.
pub(crate) struct Lines {
    url: String,
    body: ByteStream,
    buffer: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(response: reqwest::Response) -> Lines {
        Lines {
            url: response.url().to_string(),
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// The next non-empty line; `None` when the body ended.
    pub(crate) async fn next(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    return Err(ClientError::Connect {
                        url: self.url.clone(),
                        reason: error_chain(&e),
                    })
                }
                None => return Ok(None),
            }
        }
    }

    /// The URL of the stream.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

/// Changes after a revision, from `GET /api/v1/watch`.
pub struct WatchStream {
    lines: Lines,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("url", &self.lines.url)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The next change; `None` when the server ended the stream. An error
    /// with status 410 means history was compacted: list again and watch
    /// from the list's revision.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        let line = match self.lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        if let Ok(body) = serde_json::from_str::<ErrorBody>(&line) {
            let status = if body.error.code == "gone" {
                StatusCode::GONE
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return Some(Err(ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
                details: body.error.details,
            }));
        }
        Some(
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol {
                url: self.lines.url().to_owned(),
                reason: format!("bad watch line: {e}"),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query(&[("labelSelector", "app == 'web'")]),
            "labelSelector=app%20%3D%3D%20%27web%27"
        );
    }
}
