//! The commands that talk to a control plane: `apply`, `get`, `delete`,
//! `status`, `audit` and `explain` without `-f`. Each resolves where to connect (flags > environment >
//! config file), calls the client and prints for a person: tables by
//! default, JSON or YAML on request, and the server's errors as the
//! client words them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use palisade_client::api::{
    parse_kind, ApplyAction, ApplyResult, ErrorDetail, ExplainRequest, ResourceRef,
};
use palisade_client::{Client, ClientConfig, ClientError, GetOptions, ListOptions, Overrides};
use palisade_model::{FileDocument, Kind, LoadOptions, Resource};

use crate::cli::ExplainOutput;
use crate::table::render;
use crate::Outcome;

/// Where the control plane is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Server URL(s), comma separated (else PALISADE_SERVER, else the config
    /// file's context, else http://127.0.0.1:7400).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token (else PALISADE_TOKEN, else the context's token).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Context of the config file to use instead of its current-context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// PEM CA certificate to trust for https (else the context's ca-file).
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Config file (else PALISADE_CONFIG, else ~/.config/palisade/config.yaml).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl Connection {
    pub(crate) fn client(&self) -> Result<Client> {
        let config = ClientConfig::resolve(&Overrides {
            server: self.server.clone(),
            token: self.token.clone(),
            context: self.context.clone(),
            ca_file: self.ca_file.clone(),
            config_file: self.config.clone(),
        })?;
        Ok(Client::new(&config)?)
    }
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A table.
    #[default]
    Table,
    /// A table with more columns.
    Wide,
    /// The documents as JSON.
    Json,
    /// The documents as YAML.
    Yaml,
}

/// `palisade apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Resource files or directories (YAML or JSON; directories are read recursively).
    #[arg(short = 'f', long = "file", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Tenant that Kubernetes objects (Pod, NetworkPolicy) land in.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `palisade get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// policy|policies|pol, endpoint|endpoints|ep, tenant|tenants, tier|tiers.
    pub kind: String,
    /// One resource: NAME, or TENANT/NAME for endpoints and policies.
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Only endpoints whose labels match this selector (app == 'web').
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Only this tenant's resources.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only this namespace's resources.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// `palisade delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind (as for get), unless -f is given.
    #[arg(required_unless_present = "paths")]
    pub kind: Option<String>,
    /// NAME, or TENANT/NAME for endpoints and policies.
    #[arg(required_unless_present = "paths")]
    pub name: Option<String>,
    /// Delete every resource of these files instead.
    #[arg(short = 'f', long = "file", value_name = "PATH", num_args = 1.., conflicts_with_all = ["kind", "name"])]
    pub paths: Vec<PathBuf>,
    /// The tenant of an endpoint or policy.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// The namespace, when the resource has one.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Delete only if the stored version is still this one.
    #[arg(long = "resource-version", value_name = "N")]
    pub resource_version: Option<u64>,
    /// Tenant that Kubernetes objects in -f files land in.
    #[arg(long = "k8s-tenant", value_name = "NAME", default_value = "kubernetes")]
    pub kubernetes_tenant: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// `palisade status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `palisade audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's records.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Only records of the last DURATION (1h, 30m) or since a time (2024-05-01T10:00:00Z).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn kind_arg(word: &str) -> Result<Kind> {
    parse_kind(word).with_context(|| {
        format!("'{word}' is not a kind; use policy (pol), endpoint (ep), tenant or tier")
    })
}

/// `TENANT/NAME` or `NAME` (with `--tenant`) for kinds of a tenant.
fn split_name(kind: Kind, name: &str, tenant: Option<&str>) -> Result<(Option<String>, String)> {
    if !palisade_client::api::kind_has_tenant(kind) {
        return Ok((None, name.to_owned()));
    }
    match (name.split_once('/'), tenant) {
        (Some((t, n)), _) => Ok((Some(t.to_owned()), n.to_owned())),
        (None, Some(t)) => Ok((Some(t.to_owned()), name.to_owned())),
        (None, None) => bail!(
            "name the tenant of {}: TENANT/{name} or --tenant TENANT",
            palisade_client::api::kind_path(kind)
        ),
    }
}

// ---- apply -------------------------------------------------------------------

/// Reads documents for apply or delete: local errors (file:line:col) are
/// printed and the command answers no without contacting the server.
fn read_documents(paths: &[PathBuf], k8s_tenant: &str) -> Result<Option<Vec<FileDocument>>> {
    let opts = LoadOptions {
        kubernetes_tenant: k8s_tenant.to_owned(),
    };
    match palisade_model::read_documents(paths, &opts) {
        Ok(docs) => {
            let namespaces: Vec<String> = docs
                .iter()
                .filter(|d| d.value["kind"] == "Namespace")
                .map(|d| format!("{}:{}:{}", d.file, d.line, d.col))
                .collect();
            if !namespaces.is_empty() {
                eprintln!(
                    "{}: Namespace objects are not stored by the server; remove them from the \
                     files (namespace labels then come only from kubernetes.io/metadata.name)",
                    namespaces.join(", ")
                );
                eprintln!("nothing was sent");
                return Ok(None);
            }
            if docs.is_empty() {
                bail!("the files hold no document");
            }
            Ok(Some(docs))
        }
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("{} error(s); nothing was sent to the server", diags.len());
            Ok(None)
        }
    }
}

/// Runs `palisade apply`.
pub fn apply(args: ApplyArgs) -> Result<Outcome> {
    let Some(docs) = read_documents(&args.paths, &args.kubernetes_tenant)? else {
        return Ok(Outcome::No);
    };
    let client = args.connection.client()?;
    let values: Vec<serde_json::Value> = docs.iter().map(|d| d.value.clone()).collect();
    match runtime()?.block_on(client.apply(values)) {
        Ok(response) => {
            for r in &response.results {
                println!("{}", describe_result(r));
            }
            Ok(Outcome::Yes)
        }
        Err(err @ ClientError::Api { status: 400, .. }) => {
            // The server's errors, placed in the user's files where possible.
            for d in err.details() {
                eprintln!("{}", locate(d, &docs));
            }
            if let ClientError::Api { message, .. } = &err {
                eprintln!("{message}");
            }
            Ok(Outcome::No)
        }
        Err(err) => Err(err.into()),
    }
}

/// `file:line:col: Resource: field: message` when the detail names a document.
fn locate(d: &ErrorDetail, docs: &[FileDocument]) -> String {
    let at = d.document.and_then(|i| docs.get(i)).or_else(|| {
        // Whole-intent errors name the resource, not the document.
        let resource = d.resource.as_deref()?;
        docs.iter()
            .find(|doc| doc_label(doc).as_deref() == Some(resource))
    });
    match at {
        Some(doc) => format!("{}:{}:{}: {d}", doc.file, doc.line, doc.col),
        None => d.to_string(),
    }
}

/// The label the model gives a document's resource (`Endpoint acme/web-1`).
fn doc_label(doc: &FileDocument) -> Option<String> {
    let resource = palisade_model::resource_from_json(&doc.value, &LoadOptions::default()).ok()?;
    Some(ResourceRef::of(&resource).to_string())
}

fn describe_result(r: &ApplyResult) -> String {
    let what = match r.action {
        ApplyAction::Unchanged => format!("unchanged (version {})", r.resource_version),
        action => format!("{} (version {})", action.as_str(), r.resource_version),
    };
    format!("{} {what}", short_ref(&r.resource))
}

/// `endpoint/acme/web-1`, as kubectl names things.
fn short_ref(r: &ResourceRef) -> String {
    let mut out = r.kind.as_str().to_ascii_lowercase();
    for part in [&r.tenant, &r.namespace].into_iter().flatten() {
        out.push('/');
        out.push_str(part);
    }
    out.push('/');
    out.push_str(&r.name);
    out
}

// ---- get ---------------------------------------------------------------------

/// Runs `palisade get`.
pub fn get(args: GetArgs) -> Result<Outcome> {
    let kind = kind_arg(&args.kind)?;
    let client = args.connection.client()?;
    let rt = runtime()?;
    let items = match &args.name {
        Some(name) => {
            let (tenant, name) = split_name(kind, name, args.tenant.as_deref())?;
            let options = GetOptions {
                tenant,
                namespace: args.namespace.clone(),
            };
            vec![rt.block_on(client.get(kind, &name, &options))?]
        }
        None => {
            let options = ListOptions {
                tenant: args.tenant.clone(),
                namespace: args.namespace.clone(),
                label_selector: args.selector.clone(),
            };
            rt.block_on(client.list(kind, &options))?.items
        }
    };
    let single = args.name.is_some();
    match args.output {
        Format::Json => {
            let value = if single {
                items[0].clone()
            } else {
                serde_json::Value::Array(items)
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Format::Yaml => {
            if single {
                print!("{}", serde_yaml::to_string(&items[0])?);
            } else {
                for item in &items {
                    print!("---\n{}", serde_yaml::to_string(item)?);
                }
            }
        }
        Format::Table | Format::Wide => {
            if items.is_empty() {
                eprintln!("no {} found", palisade_client::api::kind_path(kind));
            } else {
                print!("{}", table(kind, &items, args.output == Format::Wide));
            }
        }
    }
    Ok(Outcome::Yes)
}

/// The rows of a kind's table: header, then one row per document.
fn table(kind: Kind, items: &[serde_json::Value], wide: bool) -> String {
    let opts = LoadOptions::default();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: &[&str] = match (kind, wide) {
        (Kind::Tenant, _) => &["NAME", "DEFAULT", "VNI", "CIDRS", "VERSION"],
        (Kind::Tier, _) => &["NAME", "ORDER", "DEFAULT", "VERSION"],
        (Kind::Endpoint, false) => &["TENANT", "NAME", "NODE", "IPS", "VERSION"],
        (Kind::Endpoint, true) => &["TENANT", "NAME", "NODE", "IPS", "LABELS", "KIND", "VERSION"],
        (Kind::Policy, false) => &["TENANT", "NAME", "TIER", "ORDER", "SELECTOR", "VERSION"],
        (Kind::Policy, true) => &[
            "TENANT", "NAME", "TIER", "ORDER", "SELECTOR", "MODE", "INGRESS", "EGRESS", "KIND",
            "VERSION",
        ],
    };
    rows.push(header.iter().map(|h| h.to_string()).collect());
    for item in items {
        let version = item["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let doc_kind = item["kind"].as_str().unwrap_or("").to_owned();
        let mut plain = item.clone();
        if let Some(meta) = plain["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let Ok(resource) = palisade_model::resource_from_json(&plain, &opts) else {
            continue;
        };
        let row = match resource {
            Resource::Tenant(t) => vec![
                t.name,
                format!("{:?}", t.default_action).to_lowercase(),
                t.vni.map_or("auto".to_owned(), |v| v.to_string()),
                join(t.cidrs.iter()),
            ],
            Resource::Tier(t) => vec![
                t.name,
                t.order.to_string(),
                format!("{:?}", t.default_action).to_lowercase(),
            ],
            Resource::Endpoint(e) => {
                let mut row = vec![
                    e.tenant.clone(),
                    e.qualified_name(),
                    e.node.clone(),
                    join(e.ips.iter()),
                ];
                if wide {
                    let labels: BTreeMap<_, _> = e
                        .labels
                        .iter()
                        .filter(|(k, _)| {
                            !k.starts_with("palisade.dev/")
                                && !k.starts_with("nslabel.palisade.dev/")
                        })
                        .collect();
                    row.push(join(labels.iter().map(|(k, v)| format!("{k}={v}"))));
                    row.push(doc_kind);
                }
                row
            }
            Resource::Policy(p) => {
                let mut row = vec![
                    p.tenant.clone(),
                    p.qualified_name(),
                    p.tier.clone(),
                    p.order.map_or("-".to_owned(), |o| o.to_string()),
                    p.selector.to_string(),
                ];
                if wide {
                    let rules = |r: &Option<Vec<palisade_model::Rule>>| {
                        r.as_ref().map_or("-".to_owned(), |r| r.len().to_string())
                    };
                    row.push(format!("{:?}", p.mode).to_lowercase());
                    row.push(rules(&p.ingress));
                    row.push(rules(&p.egress));
                    row.push(doc_kind);
                }
                row
            }
        };
        let mut row = row;
        row.push(version);
        rows.push(row);
    }
    render(&rows)
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let all: Vec<String> = items.map(|i| i.to_string()).collect();
    if all.is_empty() {
        "-".to_owned()
    } else {
        all.join(",")
    }
}

// ---- delete ------------------------------------------------------------------

/// Runs `palisade delete`.
pub fn delete(args: DeleteArgs) -> Result<Outcome> {
    let mut targets: Vec<(Kind, GetOptions, String)> = Vec::new();
    if !args.paths.is_empty() {
        let Some(docs) = read_documents(&args.paths, &args.kubernetes_tenant)? else {
            return Ok(Outcome::No);
        };
        let opts = LoadOptions {
            kubernetes_tenant: args.kubernetes_tenant.clone(),
        };
        for doc in &docs {
            let resource = palisade_model::resource_from_json(&doc.value, &opts)
                .map_err(|d| anyhow::anyhow!("{}:{}: {d}", doc.file, doc.line))?;
            let r = ResourceRef::of(&resource);
            targets.push((
                r.kind,
                GetOptions {
                    tenant: r.tenant,
                    namespace: r.namespace,
                },
                r.name,
            ));
        }
        // Referrers before what they refer to: policies and endpoints, then
        // tiers and tenants.
        targets.sort_by_key(|(kind, _, _)| match kind {
            Kind::Policy => 0,
            Kind::Endpoint => 1,
            Kind::Tier => 2,
            Kind::Tenant => 3,
        });
    } else {
        let kind = kind_arg(args.kind.as_deref().unwrap_or_default())?;
        let (tenant, name) = split_name(
            kind,
            args.name.as_deref().unwrap_or_default(),
            args.tenant.as_deref(),
        )?;
        targets.push((
            kind,
            GetOptions {
                tenant,
                namespace: args.namespace.clone(),
            },
            name,
        ));
    }
    let client = args.connection.client()?;
    let rt = runtime()?;
    for (kind, options, name) in targets {
        let response = rt.block_on(client.delete(kind, &name, &options, args.resource_version))?;
        for r in &response.results {
            println!("{}", describe_result(r));
        }
    }
    Ok(Outcome::Yes)
}

// ---- status, audit, explain --------------------------------------------------

/// Runs `palisade status`.
pub fn status(args: StatusArgs) -> Result<Outcome> {
    let client = args.connection.client()?;
    let status = runtime()?.block_on(client.status())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(Outcome::Yes);
    }
    println!("server:   {}", client.server());
    println!("store:    {}", status.store);
    println!(
        "revision: {} (intent changed at {})",
        status.revision, status.intent_revision
    );
    println!("auth:     {}", status.auth);
    println!("you:      {} ({})", status.subject, status.role);
    if status.role != "admin" {
        return Ok(Outcome::Yes);
    }
    if status.agents.is_empty() {
        println!("agents:   none has reported");
        return Ok(Outcome::Yes);
    }
    println!();
    let mut rows = vec![[
        "NODE",
        "APPLIED",
        "LAG",
        "LAST REPORT",
        "HEALTH",
        "ENDPOINTS",
    ]
    .map(String::from)
    .to_vec()];
    for a in &status.agents {
        rows.push(vec![
            a.node.clone(),
            a.applied_revision.to_string(),
            a.lag.to_string(),
            format!("{}s ago", a.seconds_since_report),
            a.health.clone(),
            a.endpoints.len().to_string(),
        ]);
    }
    print!("{}", render(&rows));
    Ok(Outcome::Yes)
}

/// Runs `palisade audit`.
pub fn audit(args: AuditArgs) -> Result<Outcome> {
    let client = args.connection.client()?;
    let log = runtime()?.block_on(client.audit(args.tenant.as_deref(), args.since.as_deref()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(Outcome::Yes);
    }
    let mut rows = vec![[
        "REVISION", "TIME", "SUBJECT", "ACTION", "RESOURCE", "OLD", "NEW",
    ]
    .map(String::from)
    .to_vec()];
    let version = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for r in &log.items {
        rows.push(vec![
            r.revision.to_string(),
            r.time.clone(),
            r.subject.clone(),
            r.action.as_str().to_owned(),
            short_ref(&r.resource),
            version(r.old_version),
            version(r.new_version),
        ]);
    }
    print!("{}", render(&rows));
    Ok(Outcome::Yes)
}

/// Runs `palisade explain` without `-f`: against the server's live state,
/// printed as the local form prints it.
pub fn explain(args: &crate::cli::ExplainArgs) -> Result<Outcome> {
    if args.flows.is_some() {
        bail!("--flows needs -f FILES; the server explains one flow per request");
    }
    let request = ExplainRequest {
        from: args.from.clone().context("give --from")?,
        to: args.to.clone().context("give --to")?,
        proto: args.proto.clone().context("give --proto")?,
        port: args.port,
        icmp_type: args.icmp_type,
        icmp_code: args.icmp_code,
    };
    let client = args.connection.client()?;
    let response = runtime()?.block_on(client.explain(&request))?;
    match args.output {
        ExplainOutput::Text if args.steps => println!("{}", response.detail),
        ExplainOutput::Text => println!("{}", response.text),
        ExplainOutput::Json => println!("{}", serde_json::to_string_pretty(&response.explanation)?),
        ExplainOutput::Jsonl => println!("{}", serde_json::to_string(&response.explanation)?),
    }
    Ok(Outcome::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_tenant_kinds_need_a_tenant() {
        assert_eq!(
            split_name(Kind::Policy, "acme/db", None).unwrap(),
            (Some("acme".to_owned()), "db".to_owned())
        );
        assert!(split_name(Kind::Policy, "db", None).is_err());
        assert_eq!(
            split_name(Kind::Tier, "sec", None).unwrap(),
            (None, "sec".to_owned())
        );
    }
}
