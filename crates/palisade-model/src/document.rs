//! One document into one resource: `apiVersion` and `kind`, the metadata
//! every kind shares, `List` documents, and the dispatch to the decoders of
//! native kinds (`native`) and Kubernetes objects (`kubernetes`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::decode::{unknown_word, Doc, Field, Map, Unknown};
use crate::diagnostic::{Diagnostic, Origin};
use crate::kubernetes;
use crate::load::LoadOptions;
use crate::native;
use crate::policy_parts as parts;
use crate::resource::{Labels, Namespace, Resource, API_VERSION};
use crate::yaml::Node;

/// The kinds a document may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocKind {
    Tenant,
    Tier,
    Endpoint,
    Policy,
    Namespace,
    Pod,
    NetworkPolicy,
    List,
}

impl DocKind {
    const ALL: [DocKind; 8] = [
        DocKind::Tenant,
        DocKind::Tier,
        DocKind::Endpoint,
        DocKind::Policy,
        DocKind::Namespace,
        DocKind::Pod,
        DocKind::NetworkPolicy,
        DocKind::List,
    ];

    fn name(self) -> &'static str {
        match self {
            DocKind::Tenant => "Tenant",
            DocKind::Tier => "Tier",
            DocKind::Endpoint => "Endpoint",
            DocKind::Policy => "Policy",
            DocKind::Namespace => "Namespace",
            DocKind::Pod => "Pod",
            DocKind::NetworkPolicy => "NetworkPolicy",
            DocKind::List => "List",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            DocKind::Tenant | DocKind::Tier | DocKind::Endpoint | DocKind::Policy => API_VERSION,
            DocKind::Namespace | DocKind::Pod | DocKind::List => "v1",
            DocKind::NetworkPolicy => "networking.k8s.io/v1",
        }
    }

    fn is_kubernetes(self) -> bool {
        matches!(
            self,
            DocKind::Namespace | DocKind::Pod | DocKind::NetworkPolicy | DocKind::List
        )
    }
}

/// Fields of Kubernetes ObjectMeta that palisade accepts and ignores.
const KUBERNETES_METADATA: [&str; 15] = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "generateName",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Metadata as read, before the kind's own checks.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub name: Option<String>,
    pub tenant: Option<String>,
    pub namespace: Option<String>,
    pub labels: Labels,
}

/// What a document became.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Resource(Resource),
    Namespace(Namespace),
}

/// A decoded document and where it came from.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub item: Item,
    pub origin: Origin,
}

/// Everything decoded from the documents of one run so far.
#[derive(Debug, Default)]
pub(crate) struct Decoding {
    pub decoded: Vec<Decoded>,
    pub diagnostics: Vec<Diagnostic>,
    /// Names of tenants and tiers whose documents had errors: known to exist,
    /// so that references to them do not add a second, misleading error.
    pub failed_tenants: BTreeSet<String>,
    pub failed_tiers: BTreeSet<String>,
}

/// Decodes one document (or each item of a `List`) into `out`.
pub(crate) fn decode_document(
    file: Option<Arc<str>>,
    root: &Node,
    opts: &LoadOptions,
    out: &mut Decoding,
) {
    decode(file, root, opts, out, true);
}

fn decode(
    file: Option<Arc<str>>,
    root: &Node,
    opts: &LoadOptions,
    out: &mut Decoding,
    allow_list: bool,
) {
    let mut doc = Doc::new(file.clone());
    let field = Field::root(root);
    let Some(map) = field.map(&mut doc, &[], Unknown::Ignore) else {
        let d = doc.diagnostics.pop().expect("a type error was recorded");
        out.diagnostics.push(Diagnostic {
            message: format!(
                "a resource must be a mapping with apiVersion, kind, metadata and spec; {}",
                d.message.replacen("expected a mapping, ", "", 1)
            ),
            ..d
        });
        return;
    };
    let Some(kind) = header(&mut doc, &map) else {
        out.diagnostics.append(&mut doc.diagnostics);
        return;
    };
    if kind == DocKind::List {
        if !allow_list {
            map.error_at_key(&mut doc, "kind", "a List item cannot be a List itself");
            out.diagnostics.append(&mut doc.diagnostics);
            return;
        }
        let m = field.map(
            &mut doc,
            &["apiVersion", "kind", "metadata", "items"],
            Unknown::Reject,
        );
        let items = m
            .and_then(|m| m.required(&mut doc, "items"))
            .and_then(|f| f.seq(&mut doc))
            .unwrap_or_default();
        out.diagnostics.append(&mut doc.diagnostics);
        for item in items {
            decode(file.clone(), item.node, opts, out, false);
        }
        return;
    }

    let top: &[&str] = if kind.is_kubernetes() {
        &["apiVersion", "kind", "metadata", "spec", "status"]
    } else {
        &["apiVersion", "kind", "metadata", "spec"]
    };
    let map = field
        .map(&mut doc, top, Unknown::Reject)
        .expect("the root is a mapping");
    let meta = metadata(&mut doc, &map, kind, opts);
    let label = resource_label(kind, &meta);
    doc.resource = label.clone();
    // Problems found so far were recorded before the label was known.
    for d in &mut doc.diagnostics {
        d.resource.clone_from(&label);
    }

    let spec = map.get("spec");
    if kind != DocKind::Tenant
        && kind != DocKind::Namespace
        && !kind.is_kubernetes()
        && spec.is_none()
    {
        map.required(&mut doc, "spec");
    }
    let mut origin = Origin::of_document(file, label, root);
    let spec = spec.as_ref();
    let item = match kind {
        DocKind::Tenant => {
            native::tenant(&mut doc, &meta, spec).map(|t| Item::Resource(Resource::Tenant(t)))
        }
        DocKind::Tier => {
            native::tier(&mut doc, &meta, spec).map(|t| Item::Resource(Resource::Tier(t)))
        }
        DocKind::Endpoint => native::endpoint(&mut doc, &meta, spec).map(|mut e| {
            crate::intent::derive_labels(&mut e, None);
            Item::Resource(Resource::Endpoint(e))
        }),
        DocKind::Policy => {
            native::policy(&mut doc, &meta, spec).map(|p| Item::Resource(Resource::Policy(p)))
        }
        DocKind::Namespace => meta.name.clone().map(|name| {
            Item::Namespace(Namespace {
                name,
                labels: meta.labels.clone(),
            })
        }),
        DocKind::Pod => kubernetes::pod(&mut doc, &map, &meta).map(|(mut e, aliases)| {
            for (path, pos) in aliases {
                origin.alias(&path, pos);
            }
            crate::intent::derive_labels(&mut e, None);
            Item::Resource(Resource::Endpoint(e))
        }),
        DocKind::NetworkPolicy => kubernetes::network_policy(&mut doc, spec, &meta)
            .map(|p| Item::Resource(Resource::Policy(p))),
        DocKind::List => unreachable!("handled above"),
    };
    match item {
        Some(item) if doc.diagnostics.is_empty() => out.decoded.push(Decoded { item, origin }),
        _ => {
            if let Some(name) = meta.name {
                match kind {
                    DocKind::Tenant => {
                        out.failed_tenants.insert(name);
                    }
                    DocKind::Tier => {
                        out.failed_tiers.insert(name);
                    }
                    _ => {}
                }
            }
        }
    }
    out.diagnostics.append(&mut doc.diagnostics);
}

/// Reads `kind` and checks `apiVersion` against it.
fn header(doc: &mut Doc, map: &Map) -> Option<DocKind> {
    let names: Vec<&str> = DocKind::ALL.iter().map(|k| k.name()).collect();
    let kind_field = match map.get("kind") {
        Some(f) => f,
        None => {
            map.required(doc, "kind");
            let last = doc.diagnostics.last_mut().expect("reported");
            last.message = format!("{}; one of: {}", last.message, names.join(", "));
            return None;
        }
    };
    let text = kind_field.str(doc)?;
    let Some(kind) = DocKind::ALL.into_iter().find(|k| k.name() == text) else {
        kind_field.error(doc, unknown_word("kind", text, "known kinds", &names));
        return None;
    };
    let expected = kind.api_version();
    match map.get("apiVersion") {
        None => map.error_at_key(
            doc,
            "apiVersion",
            format!("missing required field 'apiVersion'; {text} uses '{expected}'"),
        ),
        Some(f) => {
            if let Some(version) = f.str(doc) {
                if version != expected {
                    f.error(
                        doc,
                        format!(
                            "apiVersion '{version}' is not valid for kind {text}; use '{expected}'"
                        ),
                    );
                }
            }
        }
    }
    Some(kind)
}

fn metadata(doc: &mut Doc, map: &Map, kind: DocKind, opts: &LoadOptions) -> Meta {
    let mut meta = Meta::default();
    let Some(field) = map.required(doc, "metadata") else {
        return meta;
    };
    // `resourceVersion` is the control plane's (a document read from it
    // carries one, and applying it back compares against it); it is ignored here.
    let (fields, unknown): (&[&str], Unknown) = match kind {
        DocKind::Tenant | DocKind::Tier => {
            (&["name", "tenant", "resourceVersion"], Unknown::Reject)
        }
        DocKind::Endpoint => (
            &["name", "tenant", "namespace", "labels", "resourceVersion"],
            Unknown::Reject,
        ),
        DocKind::Policy => (
            &["name", "tenant", "namespace", "resourceVersion"],
            Unknown::Reject,
        ),
        _ => (&KUBERNETES_METADATA, Unknown::Reject),
    };
    let Some(m) = field.map(doc, fields, unknown) else {
        return meta;
    };
    meta.name = m
        .required(doc, "name")
        .and_then(|f| parts::name(doc, &f, "name"));
    match kind {
        DocKind::Tenant | DocKind::Tier => {
            if m.key_pos("tenant").is_some() {
                let why = if kind == DocKind::Tier {
                    "tiers are shared by all tenants"
                } else {
                    "a tenant does not belong to another tenant"
                };
                m.error_at_key(
                    doc,
                    "tenant",
                    format!(
                        "'tenant' is not allowed in a {}: {why}; remove it",
                        kind.name()
                    ),
                );
            }
        }
        DocKind::Endpoint | DocKind::Policy => {
            meta.tenant = match m.get("tenant") {
                Some(f) => parts::name(doc, &f, "tenant"),
                None => {
                    m.required(doc, "tenant");
                    let last = doc.diagnostics.last_mut().expect("reported");
                    last.message = format!(
                        "{}: every {} belongs to a tenant",
                        last.message,
                        kind.name()
                    );
                    None
                }
            };
            meta.namespace = m
                .get("namespace")
                .and_then(|f| parts::name(doc, &f, "namespace"));
        }
        DocKind::Pod | DocKind::NetworkPolicy => {
            meta.tenant = Some(opts.kubernetes_tenant.clone());
            meta.namespace = match m.get("namespace") {
                Some(f) => parts::name(doc, &f, "namespace"),
                // As in Kubernetes: no namespace is the namespace `default`.
                None => Some("default".to_string()),
            };
        }
        DocKind::Namespace | DocKind::List => {}
    }
    if matches!(kind, DocKind::Endpoint | DocKind::Namespace | DocKind::Pod) {
        if let Some(f) = m.get("labels") {
            meta.labels = parts::user_labels(doc, &f);
        }
    }
    meta
}

/// `Kind name`, `Kind tenant/name` or `Kind tenant/namespace/name`.
fn resource_label(kind: DocKind, meta: &Meta) -> Option<String> {
    let name = meta.name.as_deref()?;
    let mut label = format!("{} ", kind.name());
    if let Some(tenant) = &meta.tenant {
        label.push_str(tenant);
        label.push('/');
    }
    if let Some(ns) = &meta.namespace {
        label.push_str(ns);
        label.push('/');
    }
    label.push_str(name);
    Some(label)
}
