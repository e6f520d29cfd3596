//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand: the
//! API is small, and a generator would add a derive crate to every wire type
//! for little gain. A test checks that it names every route the router has.

use serde_json::{json, Value};

fn error_responses(codes: &[u16]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        let what = match code {
            400 => "invalid request: every validation error with resource, field path and message",
            401 => "no or unknown bearer token",
            403 => "the token's role may not do this; the message names the role needed",
            404 => "no such resource or kind",
            409 => "a resourceVersion did not match (details carry the current version), or a delete is blocked by referrers",
            410 => "the history asked for was compacted: list again and watch from the list's revision",
            503 => "the store is unreachable, or a write's outcome is unknown: retry",
            _ => "error",
        };
        out.insert(
            code.to_string(),
            json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(out)
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ndjson(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/x-ndjson": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn with_errors(mut responses: Value, codes: &[u16]) -> Value {
    if let (Some(r), Value::Object(errors)) = (responses.as_object_mut(), error_responses(codes)) {
        r.extend(errors);
    }
    responses
}

fn param(name: &str, location: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": description, "schema": schema})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn schemas() -> Value {
    let mut all = core_schemas();
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), visibility_schemas()) {
        all.extend(more);
    }
    all
}

/// The intent's, the audit log's and the agents' schemas.
fn core_schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object", "properties": {
                "document": {"type": "integer"}, "resource": {"type": "string"}, "field": {"type": "string"},
                "message": {"type": "string"}, "currentVersion": {"type": "integer"}, "changedBy": {"type": "string"}}}}}}}},
        "Document": {"type": "object", "description": "A Tenant, Tier, Endpoint, Policy, Pod or NetworkPolicy document as in docs/resources.md; reads add metadata.resourceVersion",
            "required": ["apiVersion", "kind", "metadata"]},
        "ApplyRequest": {"oneOf": [
            {"type": "array", "items": {"$ref": "#/components/schemas/Document"}},
            {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}}}}]},
        "ApplyResponse": {"type": "object", "properties": {"revision": {"type": "integer"}, "committedAt": {"type": "string", "format": "date-time", "description": "when the store committed the change (absent when nothing was written)"}, "results": {"type": "array", "items": {"type": "object", "properties": {
            "kind": {"type": "string"}, "tenant": {"type": "string"}, "namespace": {"type": "string"}, "name": {"type": "string"},
            "action": {"enum": ["created", "updated", "unchanged", "deleted"]}, "resourceVersion": {"type": "integer"}}}}}},
        "ResourceList": {"type": "object", "properties": {"revision": {"type": "integer"}, "items": {"type": "array", "items": {"$ref": "#/components/schemas/Document"}}}},
        "WatchEvent": {"type": "object", "properties": {"revision": {"type": "integer"}, "type": {"enum": ["put", "delete"]}, "resource": {"$ref": "#/components/schemas/Document"}}},
        "ExplainRequest": {"type": "object", "required": ["from", "to", "proto"], "properties": {
            "from": {"type": "string", "description": "[tenant:][namespace/]name, an IP, or tenant:IP"},
            "to": {"type": "string"}, "proto": {"type": "string", "description": "tcp, udp, sctp, icmp, icmpv6 or a number"},
            "port": {"type": "integer", "description": "destination port; ICMP: type << 8 | code"}}},
        "ExplainResponse": {"type": "object", "properties": {"revision": {"type": "integer"}, "explanation": {"type": "object"}, "text": {"type": "string"}, "detail": {"type": "string"}}},
        "AuditList": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {
            "revision": {"type": "integer"}, "subject": {"type": "string"}, "time": {"type": "string", "format": "date-time"},
            "kind": {"type": "string"}, "tenant": {"type": "string"}, "namespace": {"type": "string"}, "name": {"type": "string"},
            "action": {"enum": ["created", "updated", "deleted"]}, "oldVersion": {"type": ["integer", "null"]}, "newVersion": {"type": ["integer", "null"]}}}}}},
        "NodeStatus": {"type": "object", "required": ["appliedRevision", "health"], "properties": {
            "appliedRevision": {"type": "integer"}, "health": {"type": "string", "description": "ok, degraded: <why>, disconnected since <time>"},
            "endpoints": {"type": "array", "items": {"type": "string"}}}},
        "ServerStatus": {"type": "object", "properties": {"revision": {"type": "integer"}, "intentRevision": {"type": "integer"},
            "auth": {"enum": ["enabled", "disabled"]}, "store": {"type": "string"}, "subject": {"type": "string"}, "role": {"type": "string"},
            "agents": {"type": "array", "items": {"type": "object", "properties": {"node": {"type": "string"}, "appliedRevision": {"type": "integer"},
                "lag": {"type": "integer"}, "lastReport": {"type": "string"}, "secondsSinceReport": {"type": "integer"}, "health": {"type": "string"},
                "endpoints": {"type": "array", "items": {"type": "string"}}}}}}},
        "NodeMessage": {"oneOf": [
            {"type": "object", "description": "type snapshot: everything the node needs", "properties": {"type": {"const": "snapshot"}, "revision": {"type": "integer"},
                "tenants": {"type": "array", "items": {"type": "string"}}, "resources": {"type": "array"}, "identities": {"type": "array"}}},
            {"type": "object", "description": "type delta: the changes of one revision for the node's tenants", "properties": {"type": {"const": "delta"}, "revision": {"type": "integer"},
                "changes": {"type": "array", "items": {"type": "object", "properties": {"op": {"enum": ["put", "delete", "identities"]}}}}}},
            {"type": "object", "description": "type heartbeat, every few seconds", "properties": {"type": {"const": "heartbeat"}, "revision": {"type": "integer"}}}]}
    })
}

/// The schemas of the visibility routes (docs/visibility.md).
fn visibility_schemas() -> Value {
    json!({
        "FlowRecord": {"type": "object", "description": "One flow event with Elastic Common Schema field names, dotted names as nested objects (docs/visibility.md); other fields are kept",
            "required": ["@timestamp", "event", "source", "destination", "network", "palisade"], "properties": {
            "@timestamp": {"type": "string", "format": "date-time"},
            "event": {"type": "object", "required": ["action"], "properties": {
                "kind": {"type": "string"}, "category": {"type": "array", "items": {"type": "string"}},
                "action": {"enum": ["connection-allowed", "packet-denied", "audit-would-deny", "connection-closed", "connection-cut"]},
                "outcome": {"enum": ["success", "failure"]}, "reason": {"type": "string"}}},
            "source": {"type": "object", "required": ["ip"], "properties": {"ip": {"type": "string"}, "port": {"type": "integer"}}},
            "destination": {"type": "object", "required": ["ip"], "properties": {"ip": {"type": "string"}, "port": {"type": "integer"}}},
            "network": {"type": "object", "required": ["transport"], "properties": {"transport": {"type": "string"}, "direction": {"enum": ["ingress", "egress"]}}},
            "rule": {"type": "object", "properties": {"name": {"type": "string"}, "ruleset": {"type": "string"}}},
            "palisade": {"type": "object", "required": ["tenant"], "properties": {
                "tenant": {"type": "string"}, "node": {"type": "string"},
                "source": {"type": "object", "properties": {"endpoint": {"type": "string"}, "identity": {"type": "integer"}}},
                "destination": {"type": "object", "properties": {"endpoint": {"type": "string"}, "identity": {"type": "integer"}}},
                "packets": {"type": "integer"}, "bytes": {"type": "integer"}, "suppressed": {"type": "integer"},
                "audit": {"type": "object", "properties": {"rule": {"type": "string"}}}}}}},
        "FlowBatch": {"oneOf": [
            {"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": {"$ref": "#/components/schemas/FlowRecord"}}}},
            {"type": "array", "items": {"$ref": "#/components/schemas/FlowRecord"}}]},
        "FlowsAccepted": {"type": "object", "properties": {"accepted": {"type": "integer"}}},
        "Attribution": {"type": "object", "required": ["kind"], "description": "kind rule (tier, tenant, policy, direction, index, action), tier_default (tier, tenant, direction), tenant_default / not_isolated (tenant, direction), self_traffic, cross_tenant",
            "properties": {"kind": {"enum": ["rule", "tier_default", "tenant_default", "not_isolated", "self_traffic", "cross_tenant"]},
                "tier": {"type": "string"}, "tenant": {"type": "string"}, "policy": {"type": "string"}, "direction": {"enum": ["ingress", "egress"]},
                "index": {"type": "integer"}, "action": {"enum": ["allow", "deny", "log", "pass"]}}},
        "CounterReport": {"type": "object", "required": ["counters"], "properties": {"counters": {"type": "array", "items": {"type": "object",
            "required": ["attribution", "packets", "bytes"], "properties": {"attribution": {"$ref": "#/components/schemas/Attribution"},
                "packets": {"type": "integer"}, "bytes": {"type": "integer"}}}}}},
        "RuleHitsList": {"type": "object", "properties": {"tenant": {"type": "string"}, "revision": {"type": "integer"}, "rules": {"type": "array", "items": {"type": "object", "properties": {
            "attribution": {"$ref": "#/components/schemas/Attribution"}, "text": {"type": "string"}, "mode": {"enum": ["enforce", "audit"]},
            "packets": {"type": "integer"}, "bytes": {"type": "integer"}, "nodes": {"type": "array", "items": {"type": "string"}},
            "wouldDeny": {"type": "integer"}, "inIntent": {"type": "boolean"}}}}}},
        "TenantMap": {"type": "object", "properties": {"tenant": {"type": "string"}, "revision": {"type": "integer"}, "groupBy": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "label": {"type": "string"}, "kind": {"enum": ["endpoints", "world"]},
                "members": {"type": "array", "items": {"type": "object", "properties": {"ref": {"type": "string"}, "name": {"type": "string"}, "labels": {"type": "object"},
                    "ips": {"type": "array", "items": {"type": "string"}}, "node": {"type": "string"}, "identity": {"type": ["integer", "null"]}}}},
                "policies": {"type": "array", "items": {"type": "string"}}}}},
            "edges": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
                "ports": {"type": "array", "items": {"type": "object", "properties": {"protocol": {"type": "string"}, "first": {"type": "integer"}, "last": {"type": "integer"},
                    "text": {"type": "string"}, "coverage": {"enum": ["all", "some"]}, "allowedBy": {"type": "array", "items": {"type": "string"}},
                    "auditWouldDeny": {"type": "array", "items": {"type": "string"}}}}}}}}}}
    })
}

fn paths(kinds: Value, namespace: Value, version: Value) -> Value {
    json!({
        "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/api/v1/apply": {"post": {
            "summary": "Create or update resources, all or nothing, in one transaction with their audit records",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApplyRequest"}}}},
            "responses": with_errors(json!({"200": ok("what happened to each document", "ApplyResponse")}), &[400, 401, 403, 409, 503])}},
        "/api/v1/{kinds}": {"get": {
            "summary": "List resources of a kind",
            "parameters": [kinds, param("tenant", "query", "only this tenant's", string()), namespace,
                param("labelSelector", "query", "selector expression, e.g. app == 'web' && tier in {'a','b'}", string())],
            "responses": with_errors(json!({"200": ok("the documents", "ResourceList")}), &[400, 401, 403, 404])}},
        "/api/v1/{kinds}/{name}": {
            "get": {"summary": "One tenant or tier; for endpoints and policies, the list of tenant {name}'s",
                "parameters": [kinds, param("name", "path", "tenant or tier name (for endpoints/policies: the tenant)", string()), namespace],
                "responses": with_errors(json!({"200": ok("the document", "Document")}), &[401, 403, 404])},
            "delete": {"summary": "Delete a tenant or tier (409 when still referenced)",
                "parameters": [kinds, param("name", "path", "tenant or tier name", string()), version],
                "responses": with_errors(json!({"200": ok("the deleted resource", "ApplyResponse")}), &[401, 403, 404, 409, 503])}},
        "/api/v1/{kinds}/{tenant}/{name}": {
            "get": {"summary": "One endpoint or policy",
                "parameters": [kinds, param("tenant", "path", "the tenant", string()), param("name", "path", "the name", string()), namespace],
                "responses": with_errors(json!({"200": ok("the document", "Document")}), &[401, 403, 404])},
            "delete": {"summary": "Delete an endpoint or policy",
                "parameters": [kinds, param("tenant", "path", "the tenant", string()), param("name", "path", "the name", string()), namespace, version],
                "responses": with_errors(json!({"200": ok("the deleted resource", "ApplyResponse")}), &[401, 403, 404, 409, 503])}},
        "/api/v1/watch": {"get": {
            "summary": "Changes of resources after a revision, as NDJSON lines; an error line with code gone ends it when compacted",
            "parameters": [param("from", "query", "the revision of the caller's last list or event (default: now)", integer())],
            "responses": with_errors(json!({"200": ndjson("one event per line", "WatchEvent")}), &[401, 403, 410])}},
        "/api/v1/explain": {"post": {
            "summary": "The verdict of a flow against the live state, and the rule that decided it",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExplainRequest"}}}},
            "responses": with_errors(json!({"200": ok("the explanation", "ExplainResponse")}), &[400, 401, 403])}},
        "/api/v1/status": {"get": {
            "summary": "Server revision, whether auth is on, and the agents (admins) with lag and health",
            "responses": with_errors(json!({"200": ok("status", "ServerStatus")}), &[401])}},
        "/api/v1/audit": {"get": {
            "summary": "The audit log: who changed what, when, from which version to which",
            "parameters": [param("tenant", "query", "only this tenant's records", string()),
                param("since", "query", "RFC 3339 time or a duration back from now (1h)", string()),
                param("limit", "query", "at most this many, the newest (default 1000)", integer())],
            "responses": with_errors(json!({"200": ok("records, oldest first", "AuditList")}), &[400, 401, 403])}},
        "/api/v1/nodes/{node}/stream": {"get": {
            "summary": "An agent's stream: a snapshot of its tenants, then deltas; heartbeats in between",
            "parameters": [param("node", "path", "the node", string()),
                param("from", "query", "the agent's last applied revision: resume with deltas when possible", integer())],
            "responses": with_errors(json!({"200": ndjson("snapshot, deltas and heartbeats", "NodeMessage")}), &[401, 403])}},
        "/api/v1/nodes/{node}/status": {"put": {
            "summary": "An agent reports its applied revision, health and endpoints",
            "parameters": [param("node", "path", "the node", string())],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NodeStatus"}}}},
            "responses": with_errors(json!({"204": {"description": "recorded"}}), &[400, 401, 403, 503])}}
    })
}

fn all_paths(kinds: Value, namespace: Value, version: Value) -> Value {
    let mut all = paths(kinds, namespace, version);
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), visibility_paths()) {
        all.extend(more);
    }
    all
}

/// The visibility routes (docs/visibility.md).
fn visibility_paths() -> Value {
    json!({
        "/api/v1/nodes/{node}/flows": {"post": {
            "summary": "An agent pushes flow records (all or nothing, at most 5,000 or 4 MiB per push); palisade.node is filled in or must be this node",
            "parameters": [param("node", "path", "the node", string())],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FlowBatch"}}}},
            "responses": with_errors(json!({"200": ok("how many were kept", "FlowsAccepted")}), &[400, 401, 403])}},
        "/api/v1/nodes/{node}/counters": {"put": {
            "summary": "An agent reports every rule counter of its node (absolute values, replacing its last report)",
            "parameters": [param("node", "path", "the node", string())],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CounterReport"}}}},
            "responses": with_errors(json!({"204": {"description": "recorded"}}), &[400, 401, 403, 503])}},
        "/api/v1/flows": {"get": {
            "summary": "Flow records this server holds, oldest first, as NDJSON; follow=true keeps the stream open with new ones (empty lines keep it alive)",
            "parameters": [param("tenant", "query", "only this tenant's (tenant tokens: always their own)", string()),
                param("endpoint", "query", "only flows from or to this endpoint: tenant:name, or name in any tenant", string()),
                param("verdict", "query", "allow (connection-allowed, -closed), deny (packet-denied, connection-cut), audit (audit-would-deny)", json!({"enum": ["allow", "deny", "audit"]})),
                param("since", "query", "RFC 3339 time or a duration back from now (15m)", string()),
                param("follow", "query", "keep the stream open", json!({"type": "boolean"})),
                param("limit", "query", "at most this many, the newest (without follow)", integer())],
            "responses": with_errors(json!({"200": ndjson("one record per line", "FlowRecord")}), &[400, 401, 403])}},
        "/api/v1/tenants/{tenant}/map": {"get": {
            "summary": "The segmentation map: groups of endpoints (and world), and the edges the live policy allows between them",
            "parameters": [param("tenant", "path", "the tenant", string()),
                param("groupBy", "query", "identity (default) or label:KEY", string())],
            "responses": with_errors(json!({"200": ok("groups and edges", "TenantMap")}), &[400, 401, 403, 404])}},
        "/api/v1/tenants/{tenant}/rules": {"get": {
            "summary": "Every rule and default of the tenant's intent with the packets it decided (summed over agents); zero for rules that never matched",
            "parameters": [param("tenant", "path", "the tenant", string())],
            "responses": with_errors(json!({"200": ok("the rules", "RuleHitsList")}), &[401, 403, 404])}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (OpenMetrics text); admin token, or no token on --metrics-listen",
            "responses": with_errors(json!({"200": {"description": "application/openmetrics-text"}}), &[401, 403])}},
        "/ui/": {"get": {
            "summary": "The web UI (no token needed for the page; it asks for one)", "security": [],
            "responses": {"200": {"description": "text/html"}}}}
    })
}

/// The whole document.
pub fn document() -> Value {
    let kinds = param(
        "kinds",
        "path",
        "tenants, tiers, endpoints or policies (singular and short forms work too)",
        json!({"type": "string", "enum": ["tenants", "tiers", "endpoints", "policies"]}),
    );
    let namespace = param("namespace", "query", "only this namespace", string());
    let version = param(
        "resourceVersion",
        "query",
        "delete only if the stored version is still this one",
        integer(),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "palisade control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Intent (tenants, tiers, endpoints, policies) with resource versions, audit log, identities and the agents' node streams. Authenticate with 'Authorization: Bearer <token>'. See docs/api.md."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        },
        "security": [{"bearer": []}],
        "paths": all_paths(kinds, namespace, version)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described() {
        let doc = super::document();
        for route in crate::routes::ROUTES {
            assert!(
                doc["paths"].get(route).is_some(),
                "{route} is missing from the OpenAPI document"
            );
        }
    }
}
