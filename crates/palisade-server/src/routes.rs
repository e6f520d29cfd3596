//! The HTTP routes: one handler per route, each authenticating the caller,
//! checking its role and calling into the write path, the store or the
//! fan-out. Routes and bodies are described in `docs/api.md` and served as
//! OpenAPI at `/openapi.json`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use palisade_client::api::{
    kind_has_tenant, kind_path, parse_kind, ApplyResponse, AuditList, AuditRecord, ErrorDetail,
    ExplainRequest, ExplainResponse, NodeStatus, ResourceList, ResourceRef, ServerStatus,
    WatchEvent, WatchEventKind,
};
use palisade_model::{Intent, Kind, Resource, Selector};
use palisade_policy::evaluate;
use palisade_store::{EventKind, Revision};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::fanout::{self, Fanout, Opened};
use crate::metrics::StreamKind;
use crate::stored::{self, StoredDocument};
use crate::write::{self, Change};
use crate::Shared;
use crate::{counters, flows, map, metrics, ui};

/// Largest request body: above the store's transaction limit, so that an
/// oversized apply gets the "split it" answer rather than a bare 413.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The router of every route.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/explain", post(explain))
        .route("/api/v1/watch", get(watch))
        .route("/api/v1/status", get(status))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/nodes/{node}/stream", get(node_stream))
        .route("/api/v1/nodes/{node}/status", put(node_status))
        .route("/api/v1/nodes/{node}/flows", post(flows::push))
        .route("/api/v1/nodes/{node}/counters", put(counters::put))
        .route("/api/v1/flows", get(flows::list))
        .route("/api/v1/tenants/{tenant}/map", get(map::get))
        .route("/api/v1/tenants/{tenant}/rules", get(counters::list))
        .route("/metrics", get(metrics::metrics))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/{*path}", get(ui::file))
        .route("/api/v1/{kinds}", get(list))
        .route(
            "/api/v1/{kinds}/{name}",
            get(get_short).delete(delete_short),
        )
        .route(
            "/api/v1/{kinds}/{tenant}/{name}",
            get(get_one).delete(delete_one),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            metrics::track,
        ))
        .fallback(|| async {
            ApiError::not_found("no such route; GET /openapi.json lists every route")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

impl FromRequestParts<Arc<Shared>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Principal, ApiError> {
        shared.tokens.authenticate(&parts.headers)
    }
}

/// A JSON body whose syntax errors are answered in the API's error format.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Arc<Shared>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        shared: &Arc<Shared>,
    ) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, shared).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid(
                    format!(
                        "the request body is larger than {} MiB; split the apply into several",
                        BODY_LIMIT >> 20
                    ),
                    Vec::new(),
                )
            } else {
                ApiError::invalid(
                    format!("the body is not valid JSON for this route: {rejection}"),
                    Vec::new(),
                )
            }),
        }
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

// ---- apply ---------------------------------------------------------------

/// The documents of an apply body: a JSON array, `{"items": [...]}`, a
/// `kind: List`, or one document.
fn documents(body: serde_json::Value) -> Result<Vec<serde_json::Value>, ApiError> {
    match body {
        serde_json::Value::Array(items) => Ok(items),
        serde_json::Value::Object(mut obj) => match obj.remove("items") {
            Some(serde_json::Value::Array(items)) => Ok(items),
            Some(_) => Err(ApiError::invalid(
                "'items' must be a list of documents",
                Vec::new(),
            )),
            None => Ok(vec![serde_json::Value::Object(obj)]),
        },
        _ => Err(ApiError::invalid(
            "send a list of documents: [{...}, ...] or {\"items\": [...]}",
            Vec::new(),
        )),
    }
}

async fn apply(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Json<ApplyResponse>, ApiError> {
    principal.require_user()?;
    let docs = documents(body)?;
    if docs.is_empty() {
        return Err(ApiError::invalid("the apply holds no document", Vec::new()));
    }
    let mut details = Vec::new();
    let mut changes = Vec::with_capacity(docs.len());
    let mut keys = BTreeSet::new();
    for (index, mut document) in docs.into_iter().enumerate() {
        let expected = match stored::take_version(&mut document) {
            Ok(v) => v,
            Err(reason) => {
                details.push(ErrorDetail {
                    document: Some(index),
                    field: Some("metadata.resourceVersion".to_owned()),
                    message: format!("{reason}; give the version a read returned, or leave it out"),
                    ..ErrorDetail::default()
                });
                continue;
            }
        };
        let resource = match palisade_model::resource_from_json(&document, &shared.opts) {
            Ok(r) => r,
            Err(diags) => {
                details.extend(diags.iter().map(|d| ErrorDetail {
                    document: Some(index),
                    resource: d.resource.clone(),
                    field: (!d.path.is_empty()).then(|| d.path.clone()),
                    message: d.message.clone(),
                    ..ErrorDetail::default()
                }));
                continue;
            }
        };
        let reference = ResourceRef::of(&resource);
        if !keys.insert(stored::resource_key(&reference)) {
            details.push(ErrorDetail {
                document: Some(index),
                resource: Some(reference.to_string()),
                field: Some("metadata.name".to_owned()),
                message: "the apply holds this resource twice; keep one".to_owned(),
                ..ErrorDetail::default()
            });
            continue;
        }
        changes.push(Change::Apply {
            reference,
            document,
            expected,
        });
    }
    if !details.is_empty() {
        return Err(ApiError::invalid(
            format!(
                "{} error(s) in the documents; nothing was written",
                details.len()
            ),
            details,
        ));
    }
    for change in &changes {
        if let Change::Apply { reference, .. } = change {
            principal.check_write(reference)?;
        }
    }
    Ok(Json(write::write(&shared, &principal, changes).await?))
}

// ---- get, list, delete -----------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    tenant: Option<String>,
    namespace: Option<String>,
    label_selector: Option<String>,
}

fn kind_of(word: &str) -> Result<Kind, ApiError> {
    parse_kind(word).ok_or_else(|| {
        ApiError::not_found(format!(
            "no kind '{word}'; the kinds are tenants, tiers, endpoints and policies"
        ))
    })
}

async fn list(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(kinds): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ResourceList>, ApiError> {
    list_kind(&shared, &principal, kind_of(&kinds)?, query).await
}

async fn list_kind(
    shared: &Shared,
    principal: &Principal,
    kind: Kind,
    query: ListQuery,
) -> Result<Json<ResourceList>, ApiError> {
    principal.require_user()?;
    if let (Some(own), Some(asked)) = (principal.tenant(), query.tenant.as_deref()) {
        if own != asked {
            return Err(ApiError::forbidden(format!(
                "{} has role tenant:{own} and cannot list tenant {asked}",
                principal.subject
            )));
        }
    }
    let tenant = query.tenant.as_deref().or(principal.tenant());
    let selector = match &query.label_selector {
        Some(text) => Some(Selector::parse(text).map_err(|e| {
            ApiError::invalid(
                format!("labelSelector '{text}': {e}"),
                vec![ErrorDetail {
                    field: Some("labelSelector".to_owned()),
                    message: e.to_string(),
                    ..ErrorDetail::default()
                }],
            )
        })?),
        None => None,
    };
    let prefix = match tenant {
        Some(t) if kind_has_tenant(kind) => format!("{}{t}/", stored::kind_prefix(kind)),
        _ => stored::kind_prefix(kind),
    };
    let listing = shared.store.list(&prefix).await?;
    let mut items = Vec::new();
    for kv in &listing.items {
        let current = shared
            .cache
            .parse(kv, &shared.opts)
            .map_err(ApiError::internal)?;
        let r = &current.reference;
        if !principal.can_read(r) {
            continue;
        }
        if let Some(t) = tenant {
            if r.owner_tenant().is_some_and(|owner| owner != t) {
                continue;
            }
        }
        if query.namespace.is_some() && r.namespace != query.namespace {
            continue;
        }
        if let Some(selector) = &selector {
            let empty = Default::default();
            let labels = match &current.resource {
                Resource::Endpoint(e) => &e.labels,
                _ => &empty,
            };
            if !selector.matches(labels) {
                continue;
            }
        }
        items.push(current.stored.with_version(current.version));
    }
    Ok(Json(ResourceList {
        revision: listing.revision.get(),
        items,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OneQuery {
    namespace: Option<String>,
    resource_version: Option<u64>,
}

fn reference(kind: Kind, tenant: Option<String>, name: String, q: &OneQuery) -> ResourceRef {
    ResourceRef {
        kind,
        tenant,
        namespace: q.namespace.clone(),
        name,
    }
}

/// `/api/v1/tenants/<name>`, `/api/v1/tiers/<name>`; for endpoints and
/// policies, `/api/v1/<kinds>/<tenant>` lists the tenant's.
async fn get_short(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path((kinds, name)): Path<(String, String)>,
    Query(query): Query<OneQuery>,
) -> Result<Response, ApiError> {
    let kind = kind_of(&kinds)?;
    if kind_has_tenant(kind) {
        let list_query = ListQuery {
            tenant: Some(name),
            namespace: query.namespace,
            label_selector: None,
        };
        return Ok(list_kind(&shared, &principal, kind, list_query)
            .await?
            .into_response());
    }
    Ok(
        get_resource(&shared, &principal, reference(kind, None, name, &query))
            .await?
            .into_response(),
    )
}

async fn get_one(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path((kinds, tenant, name)): Path<(String, String, String)>,
    Query(query): Query<OneQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let kind = tenant_kind(&kinds)?;
    get_resource(
        &shared,
        &principal,
        reference(kind, Some(tenant), name, &query),
    )
    .await
}

fn tenant_kind(kinds: &str) -> Result<Kind, ApiError> {
    let kind = kind_of(kinds)?;
    if !kind_has_tenant(kind) {
        return Err(ApiError::not_found(format!(
            "{} have no tenant: use /api/v1/{}/<name>",
            kind_path(kind),
            kind_path(kind)
        )));
    }
    Ok(kind)
}

fn check_read(principal: &Principal, r: &ResourceRef) -> Result<(), ApiError> {
    principal.require_user()?;
    if principal.can_read(r) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "reading {r} needs role admin or tenant:{}; {} has role {}",
            r.owner_tenant().unwrap_or("?"),
            principal.subject,
            principal.role
        )))
    }
}

async fn get_resource(
    shared: &Shared,
    principal: &Principal,
    r: ResourceRef,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_read(principal, &r)?;
    let kv = shared
        .store
        .get(&stored::resource_key(&r))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{r} does not exist; list what there is with palisade get {}",
                kind_path(r.kind)
            ))
        })?;
    let doc = StoredDocument::decode(&kv).map_err(ApiError::internal)?;
    Ok(Json(doc.with_version(kv.mod_revision)))
}

async fn delete_short(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path((kinds, name)): Path<(String, String)>,
    Query(query): Query<OneQuery>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let kind = kind_of(&kinds)?;
    if kind_has_tenant(kind) {
        return Err(ApiError::not_found(format!(
            "name the tenant: DELETE /api/v1/{}/<tenant>/<name>",
            kind_path(kind)
        )));
    }
    delete_resource(
        &shared,
        &principal,
        reference(kind, None, name, &query),
        &query,
    )
    .await
}

async fn delete_one(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path((kinds, tenant, name)): Path<(String, String, String)>,
    Query(query): Query<OneQuery>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let kind = tenant_kind(&kinds)?;
    let r = reference(kind, Some(tenant), name, &query);
    delete_resource(&shared, &principal, r, &query).await
}

async fn delete_resource(
    shared: &Arc<Shared>,
    principal: &Principal,
    r: ResourceRef,
    query: &OneQuery,
) -> Result<Json<ApplyResponse>, ApiError> {
    principal.check_write(&r)?;
    let change = Change::Delete {
        reference: r,
        expected: query.resource_version,
    };
    Ok(Json(write::write(shared, principal, vec![change]).await?))
}

// ---- watch -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct FromQuery {
    from: Option<u64>,
}

type Lines = mpsc::Sender<Result<Bytes, Infallible>>;

pub(crate) fn ndjson(receiver: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(receiver)),
    )
        .into_response()
}

async fn send_line(lines: &Lines, mut line: String) -> bool {
    line.push('\n');
    lines.send(Ok(Bytes::from(line))).await.is_ok()
}

async fn watch(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Query(query): Query<FromQuery>,
) -> Result<Response, ApiError> {
    principal.require_user()?;
    let from = match query.from {
        Some(from) => Revision(from),
        None => shared.store.revision().await?,
    };
    let mut events = shared.store.watch(stored::RESOURCES, from).await?;
    let (sender, receiver) = mpsc::channel(64);
    let guard = shared.metrics.stream_opened(StreamKind::Watch);
    tokio::spawn(async move {
        let _guard = guard;
        while let Some(event) = events.next().await {
            let line = match event {
                Ok(event) => match watch_line(&principal, event) {
                    Some(line) => line,
                    None => continue,
                },
                Err(error) => {
                    let body = ApiError::from(error).body();
                    let _ =
                        send_line(&sender, serde_json::to_string(&body).unwrap_or_default()).await;
                    return;
                }
            };
            if !send_line(&sender, line).await {
                return;
            }
        }
    });
    Ok(ndjson(receiver))
}

/// The watch line of a store event, when the caller may see it.
fn watch_line(principal: &Principal, event: palisade_store::WatchEvent) -> Option<String> {
    let r = stored::parse_resource_key(event.key())?;
    if !principal.can_read(&r) {
        return None;
    }
    let revision = event.revision.get();
    let (kind, resource) = match event.kind {
        EventKind::Put {
            key,
            value,
            mod_revision,
        } => {
            let kv = palisade_store::KeyValue {
                key,
                value,
                create_revision: mod_revision,
                mod_revision,
                version: 1,
            };
            let doc = StoredDocument::decode(&kv).ok()?;
            (WatchEventKind::Put, doc.with_version(mod_revision))
        }
        EventKind::Delete { .. } => {
            let mut meta = serde_json::json!({ "name": r.name });
            if let Some(t) = &r.tenant {
                meta["tenant"] = t.clone().into();
            }
            if let Some(ns) = &r.namespace {
                meta["namespace"] = ns.clone().into();
            }
            (
                WatchEventKind::Delete,
                serde_json::json!({ "kind": r.kind.as_str(), "metadata": meta }),
            )
        }
    };
    serde_json::to_string(&WatchEvent {
        revision,
        kind,
        resource,
    })
    .ok()
}

// ---- explain ---------------------------------------------------------------

/// The validated intent of the current state, and its revision.
pub(crate) async fn live_intent(shared: &Shared) -> Result<(Intent, u64), ApiError> {
    let listing = shared.store.list(stored::RESOURCES).await?;
    let mut resources = Vec::with_capacity(listing.items.len());
    for kv in &listing.items {
        let current = shared
            .cache
            .parse(kv, &shared.opts)
            .map_err(ApiError::internal)?;
        resources.push(current.resource.clone());
    }
    let intent = Intent::from_resources(resources, Vec::new(), &shared.opts)
        .map_err(|d| ApiError::internal(format!("the stored intent does not validate: {d}")))?;
    Ok((intent, listing.revision.get()))
}

async fn explain(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    JsonBody(request): JsonBody<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    principal.require_user()?;
    let (intent, revision) = live_intent(&shared).await?;
    let flow = request.resolve(&intent).map_err(|e| {
        ApiError::invalid(
            e.to_string(),
            vec![ErrorDetail {
                message: e.to_string(),
                ..ErrorDetail::default()
            }],
        )
    })?;
    let (src, dst) = (flow.src, flow.dst);
    if let Some(own) = principal.tenant() {
        for end in [&src, &dst] {
            if end.tenant() != own {
                return Err(ApiError::forbidden(format!(
                    "{} has role tenant:{own} and cannot explain flows of tenant {}",
                    principal.subject,
                    end.tenant()
                )));
            }
        }
    }
    let explanation = evaluate(&intent, &flow);
    Ok(Json(ExplainResponse {
        revision,
        text: explanation.to_string(),
        detail: format!("{explanation:#}"),
        explanation,
    }))
}

// ---- status and audit ------------------------------------------------------

async fn status(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
) -> Result<Json<ServerStatus>, ApiError> {
    let (revision, intent_revision) = shared.fanout.revisions();
    let agents = match principal.role {
        Role::Admin => shared.agents.list(&shared.store, intent_revision).await?,
        _ => Vec::new(),
    };
    Ok(Json(ServerStatus {
        revision,
        intent_revision,
        auth: if shared.tokens.enabled() {
            "enabled"
        } else {
            "disabled"
        }
        .to_owned(),
        store: shared.store.describe(),
        subject: principal.subject.clone(),
        role: principal.role.to_string(),
        agents,
        flows: Some({
            let counts = shared.flows.counts();
            palisade_client::visibility::FlowHistoryCounts {
                records: counts.records,
                capacity: counts.capacity,
                received: counts.received,
                dropped: counts.dropped,
            }
        }),
    }))
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    tenant: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

/// `since`: an RFC 3339 time, or a duration back from now (`1h`, `30m`).
pub(crate) fn parse_since(text: &str) -> Result<SystemTime, ApiError> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .or_else(|| {
            humantime::parse_duration(text)
                .ok()
                .and_then(|d| SystemTime::now().checked_sub(d))
        })
        .ok_or_else(|| {
            ApiError::invalid(
                format!("since '{text}' is neither a time (2024-05-01T10:00:00Z) nor a duration (1h, 30m)"),
                Vec::new(),
            )
        })
}

async fn audit(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    principal.require_user()?;
    if let (Some(own), Some(asked)) = (principal.tenant(), query.tenant.as_deref()) {
        if own != asked {
            return Err(ApiError::forbidden(format!(
                "{} has role tenant:{own} and cannot read tenant {asked}'s audit records",
                principal.subject
            )));
        }
    }
    let tenant = query.tenant.as_deref().or(principal.tenant());
    let since = query.since.as_deref().map(parse_since).transpose()?;
    let listing = shared.store.list(stored::AUDIT).await?;
    let mut items = Vec::new();
    for kv in &listing.items {
        let mut record: AuditRecord = match serde_json::from_slice(&kv.value) {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(key = %kv.key, %error, "unreadable audit record");
                continue;
            }
        };
        if let Some(t) = tenant {
            if record.resource.owner_tenant() != Some(t) {
                continue;
            }
        }
        if let Some(since) = since {
            let at = humantime::parse_rfc3339_weak(&record.time).unwrap_or(SystemTime::UNIX_EPOCH);
            if at < since {
                continue;
            }
        }
        record.revision = kv.mod_revision.get();
        record.new_version = match record.action {
            palisade_client::api::ApplyAction::Deleted => None,
            _ => Some(kv.mod_revision.get()),
        };
        items.push(record);
    }
    let limit = query.limit.unwrap_or(1000);
    if items.len() > limit {
        items.drain(..items.len() - limit);
    }
    Ok(Json(AuditList { items }))
}

// ---- agents ----------------------------------------------------------------

async fn node_stream(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(node): Path<String>,
    Query(query): Query<FromQuery>,
) -> Result<Response, ApiError> {
    principal.check_node(&node)?;
    let opened = shared.fanout.open(&node, query.from);
    tracing::info!(
        %node,
        from = ?query.from,
        revision = opened.revision,
        subject = %principal.subject,
        "node stream opened"
    );
    let (sender, receiver) = mpsc::channel(64);
    let guard = shared.metrics.stream_opened(StreamKind::Node);
    let stream = run_node_stream(
        shared.fanout.clone(),
        node,
        opened,
        shared.heartbeat,
        sender,
    );
    tokio::spawn(async move {
        let _guard = guard;
        stream.await;
    });
    Ok(ndjson(receiver))
}

/// Feeds one node's stream until the agent goes away or the server stops.
async fn run_node_stream(
    fanout: Fanout,
    node: String,
    opened: Opened,
    heartbeat: Duration,
    lines: Lines,
) {
    let Opened {
        mut receiver,
        lines: first,
        mut tenants,
        mut revision,
    } = opened;
    for line in first {
        if !send_line(&lines, line).await {
            return;
        }
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Ok(batch) => {
                    if batch.revision <= revision {
                        continue;
                    }
                    let line = if fanout::needs_snapshot(&batch, &node) {
                        let (line, now_tenants, now_revision) = fanout.snapshot(&node);
                        tenants = now_tenants;
                        revision = now_revision;
                        Some(line)
                    } else {
                        revision = batch.revision;
                        fanout::delta_line(&batch, &tenants)
                    };
                    if let Some(line) = line {
                        if !send_line(&lines, line).await {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(%node, missed, "node stream fell behind; sending a fresh snapshot");
                    let opened = fanout.resubscribe(&node);
                    receiver = opened.receiver;
                    tenants = opened.tenants;
                    revision = opened.revision;
                    for line in opened.lines {
                        if !send_line(&lines, line).await {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                if let Some(current) = fanout.heartbeat_revision(&receiver) {
                    revision = revision.max(current);
                }
                let line = format!(r#"{{"type":"heartbeat","revision":{revision}}}"#);
                if !send_line(&lines, line).await {
                    return;
                }
            }
        }
    }
}

async fn node_status(
    State(shared): State<Arc<Shared>>,
    principal: Principal,
    Path(node): Path<String>,
    JsonBody(status): JsonBody<NodeStatus>,
) -> Result<StatusCode, ApiError> {
    principal.check_node(&node)?;
    shared.agents.report(&shared.store, &node, status).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Used by the OpenAPI check: every route the router serves.
#[cfg(test)]
pub(crate) const ROUTES: [&str; 18] = [
    "/openapi.json",
    "/api/v1/apply",
    "/api/v1/explain",
    "/api/v1/watch",
    "/api/v1/status",
    "/api/v1/audit",
    "/api/v1/nodes/{node}/stream",
    "/api/v1/nodes/{node}/status",
    "/api/v1/nodes/{node}/flows",
    "/api/v1/nodes/{node}/counters",
    "/api/v1/flows",
    "/api/v1/tenants/{tenant}/map",
    "/api/v1/tenants/{tenant}/rules",
    "/metrics",
    "/ui/",
    "/api/v1/{kinds}",
    "/api/v1/{kinds}/{name}",
    "/api/v1/{kinds}/{tenant}/{name}",
];
