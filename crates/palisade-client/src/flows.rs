//! The visibility routes on [`Client`]: agents push flow records and rule
//! counters; people read flows (once, or followed as they arrive), per-rule
//! hits and a tenant's segmentation map. `docs/visibility.md` describes them.

use std::time::Duration;

use reqwest::Method;

use crate::client::{encode, encode_query, Lines};
use crate::visibility::{
    CounterReport, FlowBatch, FlowQuery, FlowRecord, FlowsAccepted, GroupBy, RuleHitsList,
    TenantMap,
};
use crate::{Client, ClientError};

/// How long a push or a plain read may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Pushes an agent's flow records (agents; `node` must be the token's node).
    pub async fn post_flows(
        &self,
        node: &str,
        records: &[FlowRecord],
    ) -> Result<FlowsAccepted, ClientError> {
        let body = FlowBatch {
            records: records.to_vec(),
        };
        self.call(
            Method::POST,
            &format!("/nodes/{}/flows", encode(node)),
            Some(&body),
        )
        .await
    }

    /// Pushes flow records as JSON objects, every field kept as it is (the
    /// agent sends its flow log's records: more fields than
    /// [`FlowRecord`] names, which the server keeps and serves back).
    pub async fn post_flow_values(
        &self,
        node: &str,
        records: &[serde_json::Value],
    ) -> Result<FlowsAccepted, ClientError> {
        self.call(
            Method::POST,
            &format!("/nodes/{}/flows", encode(node)),
            Some(&serde_json::json!({ "records": records })),
        )
        .await
    }

    /// Replaces an agent's rule counters (absolute values).
    pub async fn put_counters(
        &self,
        node: &str,
        report: &CounterReport,
    ) -> Result<(), ClientError> {
        let path = format!("/nodes/{}/counters", encode(node));
        self.send(|server| {
            self.request(server, Method::PUT, &path)
                .timeout(REQUEST_TIMEOUT)
                .json(report)
        })
        .await?;
        Ok(())
    }

    /// The flows the server holds that match the query, oldest first.
    pub async fn flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, ClientError> {
        let path = flows_path(query, false);
        let response = self
            .send(|server| {
                self.request(server, Method::GET, &path)
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        let mut lines = FlowStream {
            lines: Lines::new(response),
        };
        let mut out = Vec::new();
        while let Some(record) = lines.next().await {
            out.push(record?);
        }
        Ok(out)
    }

    /// The flows that match the query, then new ones as they arrive
    /// (`limit` is ignored).
    pub async fn follow_flows(&self, query: &FlowQuery) -> Result<FlowStream, ClientError> {
        let path = flows_path(query, true);
        let response = self
            .send(|server| self.request(server, Method::GET, &path))
            .await?;
        Ok(FlowStream {
            lines: Lines::new(response),
        })
    }

    /// Every rule of a tenant with its hits.
    pub async fn rule_hits(&self, tenant: &str) -> Result<RuleHitsList, ClientError> {
        self.call(
            Method::GET,
            &format!("/tenants/{}/rules", encode(tenant)),
            None::<&()>,
        )
        .await
    }

    /// A tenant's segmentation map: groups and the edges the policy allows.
    pub async fn tenant_map(
        &self,
        tenant: &str,
        group_by: &GroupBy,
    ) -> Result<TenantMap, ClientError> {
        let group_by = group_by.to_string();
        let path = format!(
            "/tenants/{}/map?{}",
            encode(tenant),
            encode_query(&[("groupBy", group_by.as_str())])
        );
        self.call(Method::GET, &path, None::<&()>).await
    }
}

fn flows_path(query: &FlowQuery, follow: bool) -> String {
    let limit = query.limit.map(|l| l.to_string());
    let mut pairs = Vec::new();
    if let Some(t) = &query.tenant {
        pairs.push(("tenant", t.as_str()));
    }
    if let Some(e) = &query.endpoint {
        pairs.push(("endpoint", e.as_str()));
    }
    if let Some(v) = query.verdict {
        pairs.push(("verdict", v.as_str()));
    }
    if let Some(s) = &query.since {
        pairs.push(("since", s.as_str()));
    }
    if follow {
        pairs.push(("follow", "true"));
    } else if let Some(l) = &limit {
        pairs.push(("limit", l.as_str()));
    }
    format!("/flows?{}", encode_query(&pairs))
}

/// Flow records from `GET /api/v1/flows` (NDJSON), as they arrive.
pub struct FlowStream {
    lines: Lines,
}

impl std::fmt::Debug for FlowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowStream")
            .field("url", &self.lines.url())
            .finish_non_exhaustive()
    }
}

impl FlowStream {
    /// The next record; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<FlowRecord, ClientError>> {
        let line = match self.lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol {
                url: self.lines.url().to_owned(),
                reason: format!("bad flow record line: {e}"),
            }),
        )
    }
}
