//! A complete, validated set of resources: what the policy engine compiles and
//! what the agent enforces. Built only through validation (`load_*`, or
//! `Intent::from_resources`), so every reference in it resolves. This module
//! holds the checks across resources (duplicates, tenants, tiers, VNIs,
//! addresses) and the defaults they fill in (VNIs, the `default` tier, the
//! labels derived from namespaces).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::decode::did_you_mean;
use crate::diagnostic::{Diagnostic, Diagnostics, Origin};
use crate::document::Item;
use crate::load::LoadOptions;
use crate::native::MAX_VNI;
use crate::resource::{
    Endpoint, Labels, Namespace, Policy, Resource, Tenant, TenantDefault, Tier, TierDefault,
    DEFAULT_TIER, DEFAULT_TIER_ORDER, NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX,
};

/// Label every namespace carries, as in Kubernetes.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Validated intent. Invariants (established by validation): every endpoint and
/// policy names a tenant in `tenants`; every policy's tier is in `tiers`; `tiers`
/// always holds `default`; every tenant has a `vni`, unique; names are unique per
/// kind, tenant and namespace; endpoints are sorted by `full_ref()`, policies by
/// (tenant, namespace, name); endpoint labels include the derived ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intent {
    /// Tenants by name.
    pub tenants: BTreeMap<String, Tenant>,
    /// Tiers by name (cluster-wide).
    pub tiers: BTreeMap<String, Tier>,
    /// Every endpoint of every tenant.
    pub endpoints: Vec<Endpoint>,
    /// Every policy of every tenant.
    pub policies: Vec<Policy>,
}

/// What names a policy: its tenant, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName {
    /// The tenant.
    pub tenant: String,
    /// The namespace, for a namespaced policy.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl PolicyName {
    /// The name of `p`.
    pub fn of(p: &Policy) -> PolicyName {
        PolicyName {
            tenant: p.tenant.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        }
    }
}

/// Names known to exist although their resources did not decode (their
/// errors are already reported; references to them are not errors too).
#[derive(Debug, Default)]
pub(crate) struct KnownNames {
    pub tenants: BTreeSet<String>,
    pub tiers: BTreeSet<String>,
}

impl Intent {
    /// Cross-resource validation and defaulting of resources that are each
    /// valid already (as `resource_from_json` returns them): duplicates,
    /// tenants and tiers that exist, VNIs (range, uniqueness, allocation),
    /// endpoint addresses (inside the tenant's `cidrs`, unique per tenant), and
    /// the labels endpoints derive from their namespace and `namespaces`.
    /// The Kubernetes tenant (`opts.kubernetes_tenant`) is created, with
    /// `defaultAction: kubernetes`, when resources use it and none defines it.
    /// Errors carry field paths and no file.
    pub fn from_resources(
        resources: Vec<Resource>,
        namespaces: Vec<Namespace>,
        opts: &LoadOptions,
    ) -> Result<Intent, Diagnostics> {
        let items = resources
            .into_iter()
            .map(|r| {
                let origin = Origin::detached(label(&r));
                (Item::Resource(r), origin)
            })
            .chain(namespaces.into_iter().map(|n| {
                let origin = Origin::detached(format!("Namespace {}", n.name));
                (Item::Namespace(n), origin)
            }))
            .collect();
        build(items, &KnownNames::default(), opts).map_err(Diagnostics)
    }

    /// Adds or replaces the policies `put` (by tenant, namespace and name)
    /// and removes those named in `removed`, with the checks
    /// [`Intent::from_resources`] makes of policies: unique names, and a
    /// tenant and tier that exist. On an error nothing changes. For a
    /// change of policies only this gives what building the whole intent
    /// again would, without revisiting its endpoints.
    pub fn change_policies(
        &mut self,
        put: Vec<Policy>,
        removed: &[PolicyName],
    ) -> Result<(), Diagnostics> {
        let tenant_names: BTreeSet<&str> = self.tenants.keys().map(String::as_str).collect();
        let tier_names: BTreeSet<&str> = self.tiers.keys().map(String::as_str).collect();
        let mut diags = Vec::new();
        let mut seen = BTreeSet::new();
        for p in &put {
            let origin = Origin::detached(format!("Policy {}", p.full_ref()));
            if !seen.insert(PolicyName::of(p)) {
                diags.push(origin.diagnostic(
                    "metadata.name",
                    format!(
                        "duplicate Policy {}; policy names must be unique per tenant and namespace",
                        p.full_ref()
                    ),
                ));
            } else if let Some(diag) = check_policy_refs(p, &origin, &tenant_names, &tier_names) {
                diags.push(diag);
            }
        }
        if !diags.is_empty() {
            return Err(Diagnostics(diags));
        }
        let gone: BTreeSet<&PolicyName> = removed.iter().collect();
        self.policies
            .retain(|p| !gone.contains(&PolicyName::of(p)) && !seen.contains(&PolicyName::of(p)));
        self.policies.extend(put);
        self.policies.sort_by(|a, b| {
            (&a.tenant, &a.namespace, &a.name).cmp(&(&b.tenant, &b.namespace, &b.name))
        });
        Ok(())
    }

    /// The tier `name`.
    ///
    /// # Panics
    /// When there is no such tier; every policy's tier and `default` exist.
    pub fn tier(&self, name: &str) -> &Tier {
        self.tiers
            .get(name)
            .unwrap_or_else(|| panic!("no tier '{name}' in the intent"))
    }

    /// The tenant `name`.
    ///
    /// # Panics
    /// When there is no such tenant; every endpoint's and policy's tenant exists.
    pub fn tenant(&self, name: &str) -> &Tenant {
        self.tenants
            .get(name)
            .unwrap_or_else(|| panic!("no tenant '{name}' in the intent"))
    }

    /// The endpoints of tenant `t`, in `full_ref()` order.
    pub fn endpoints_of_tenant<'a>(
        &'a self,
        t: &'a str,
    ) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.endpoints.iter().filter(move |e| e.tenant == t)
    }
}

/// `Kind tenant/namespace/name` of a resource, for messages.
pub(crate) fn label(resource: &Resource) -> String {
    match resource {
        Resource::Tenant(t) => format!("Tenant {}", t.name),
        Resource::Tier(t) => format!("Tier {}", t.name),
        Resource::Endpoint(e) => format!("Endpoint {}/{}", e.tenant, e.qualified_name()),
        Resource::Policy(p) => format!("Policy {}/{}", p.tenant, p.qualified_name()),
    }
}

/// Replaces an endpoint's derived labels: `palisade.dev/namespace`, and its
/// namespace's labels (with `kubernetes.io/metadata.name`) under
/// `nslabel.palisade.dev/`. Idempotent.
pub(crate) fn derive_labels(endpoint: &mut Endpoint, namespace_labels: Option<&Labels>) {
    endpoint
        .labels
        .retain(|k, _| k != NAMESPACE_LABEL && !k.starts_with(NAMESPACE_LABELS_PREFIX));
    let Some(ns) = endpoint.namespace.clone() else {
        return;
    };
    for (k, v) in namespace_labels.into_iter().flatten() {
        endpoint
            .labels
            .insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
    }
    endpoint.labels.insert(
        format!("{NAMESPACE_LABELS_PREFIX}{NAMESPACE_NAME_LABEL}"),
        ns.clone(),
    );
    endpoint.labels.insert(NAMESPACE_LABEL.to_string(), ns);
}

/// FNV-1a, 32 bits: the hash behind default VNIs.
fn fnv1a_32(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// `start`, or the next VNI after it (wrapping to 1) that is not taken. A
/// tenant without a VNI starts at `1 + fnv1a(name) % 16_777_214`.
fn next_free_vni(start: u32, taken: &BTreeSet<u32>) -> u32 {
    let max = MAX_VNI as u32;
    let mut vni = start;
    while taken.contains(&vni) {
        vni = if vni == max { 1 } else { vni + 1 };
    }
    vni
}

/// `a, b, c` or `none`.
fn list(names: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let all: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// " (first defined at f.yaml:3:9)" when the first one's place is known.
fn first_at(origin: &Origin) -> String {
    origin
        .location("metadata.name")
        .map(|at| format!(" (first defined at {at})"))
        .unwrap_or_default()
}

/// Validates and completes decoded items (the last step of every load).
pub(crate) fn build(
    items: Vec<(Item, Origin)>,
    known: &KnownNames,
    opts: &LoadOptions,
) -> Result<Intent, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut namespaces: BTreeMap<String, (Labels, Origin)> = BTreeMap::new();
    let mut tenants: Vec<(Tenant, Origin)> = Vec::new();
    let mut tiers: Vec<(Tier, Origin)> = Vec::new();
    let mut endpoints: Vec<(Endpoint, Origin)> = Vec::new();
    let mut policies: Vec<(Policy, Origin)> = Vec::new();
    for (item, origin) in items {
        match item {
            Item::Namespace(ns) => {
                if let Some((_, first)) = namespaces.get(&ns.name) {
                    diags.push(origin.diagnostic(
                        "metadata.name",
                        format!(
                            "duplicate Namespace {}{}; remove one",
                            ns.name,
                            first_at(first)
                        ),
                    ));
                } else {
                    namespaces.insert(ns.name, (ns.labels, origin));
                }
            }
            Item::Resource(Resource::Tenant(t)) => tenants.push((t, origin)),
            Item::Resource(Resource::Tier(t)) => tiers.push((t, origin)),
            Item::Resource(Resource::Endpoint(e)) => endpoints.push((e, origin)),
            Item::Resource(Resource::Policy(p)) => policies.push((p, origin)),
        }
    }

    let uses_kubernetes_tenant = endpoints
        .iter()
        .map(|(e, _)| &e.tenant)
        .chain(policies.iter().map(|(p, _)| &p.tenant))
        .any(|t| *t == opts.kubernetes_tenant);
    let defines_kubernetes_tenant = tenants
        .iter()
        .any(|(t, _)| t.name == opts.kubernetes_tenant)
        || known.tenants.contains(&opts.kubernetes_tenant);
    if uses_kubernetes_tenant && !defines_kubernetes_tenant {
        let tenant = Tenant {
            name: opts.kubernetes_tenant.clone(),
            default_action: TenantDefault::Kubernetes,
            vni: None,
            cidrs: Vec::new(),
        };
        let origin = Origin::detached(format!("Tenant {}", tenant.name));
        tenants.push((tenant, origin));
    }

    let tenants = check_tenants(tenants, &mut diags);
    let tiers = check_tiers(tiers, &mut diags);
    let tenant_names: BTreeSet<&str> = tenants
        .keys()
        .map(String::as_str)
        .chain(known.tenants.iter().map(String::as_str))
        .collect();

    let mut seen: BTreeMap<(String, Option<String>, String), Origin> = BTreeMap::new();
    // (tenant, IP) -> the endpoint that has it, its origin and the IP's path there.
    let mut addresses: BTreeMap<(String, IpAddr), (String, Origin, String)> = BTreeMap::new();
    let mut valid_endpoints = Vec::new();
    for (mut e, origin) in endpoints {
        let key = (e.tenant.clone(), e.namespace.clone(), e.name.clone());
        if let Some(first) = seen.get(&key) {
            diags.push(origin.diagnostic(
                "metadata.name",
                format!(
                    "duplicate Endpoint {}{}; endpoint names must be unique per tenant and namespace",
                    e.full_ref(),
                    first_at(first)
                ),
            ));
            continue;
        }
        seen.insert(key, origin.clone());
        if !tenant_names.contains(e.tenant.as_str()) {
            diags.push(unknown_tenant(&origin, &e.tenant, &tenant_names));
            continue;
        }
        let ns_labels = e
            .namespace
            .as_ref()
            .and_then(|ns| namespaces.get(ns))
            .map(|(l, _)| l);
        derive_labels(&mut e, ns_labels);
        let cidrs = tenants
            .get(&e.tenant)
            .map(|t| t.cidrs.as_slice())
            .unwrap_or_default();
        for (i, ip) in e.ips.iter().enumerate() {
            let path = format!("spec.ips[{i}]");
            if !cidrs.is_empty() && !cidrs.iter().any(|c| c.contains(ip)) {
                diags.push(origin.diagnostic(
                    &path,
                    format!(
                        "IP {ip} is outside the cidrs of tenant {} ({}); use an address inside them \
                         or add a cidr to the tenant",
                        e.tenant,
                        list(cidrs.iter().map(ToString::to_string))
                    ),
                ));
            }
            let at = (e.tenant.clone(), *ip);
            if let Some((other, other_origin, other_path)) = addresses.get(&at) {
                let where_ = other_origin
                    .location(other_path)
                    .map(|l| format!(" (at {l})"))
                    .unwrap_or_default();
                diags.push(origin.diagnostic(
                    &path,
                    format!(
                        "IP {ip} is already used by endpoint {other}{where_}; endpoints of a tenant \
                         need distinct addresses"
                    ),
                ));
            } else {
                addresses.insert(at, (e.full_ref(), origin.clone(), path));
            }
        }
        valid_endpoints.push(e);
    }

    let tier_names: BTreeSet<&str> = tiers
        .keys()
        .map(String::as_str)
        .chain(known.tiers.iter().map(String::as_str))
        .collect();
    let mut seen: BTreeMap<(String, Option<String>, String), Origin> = BTreeMap::new();
    let mut valid_policies = Vec::new();
    for (p, origin) in policies {
        let key = (p.tenant.clone(), p.namespace.clone(), p.name.clone());
        if let Some(first) = seen.get(&key) {
            diags.push(origin.diagnostic(
                "metadata.name",
                format!(
                    "duplicate Policy {}{}; policy names must be unique per tenant and namespace",
                    p.full_ref(),
                    first_at(first)
                ),
            ));
            continue;
        }
        seen.insert(key, origin.clone());
        match check_policy_refs(&p, &origin, &tenant_names, &tier_names) {
            Some(diag) => diags.push(diag),
            None => valid_policies.push(p),
        }
    }

    if !diags.is_empty() {
        return Err(diags);
    }
    valid_endpoints.sort_by_cached_key(Endpoint::full_ref);
    valid_policies.sort_by(|a, b| {
        (&a.tenant, &a.namespace, &a.name).cmp(&(&b.tenant, &b.namespace, &b.name))
    });
    Ok(Intent {
        tenants,
        tiers,
        endpoints: valid_endpoints,
        policies: valid_policies,
    })
}

/// Why policy `p` cannot be in an intent with these tenants and tiers.
fn check_policy_refs(
    p: &Policy,
    origin: &Origin,
    tenant_names: &BTreeSet<&str>,
    tier_names: &BTreeSet<&str>,
) -> Option<Diagnostic> {
    if !tenant_names.contains(p.tenant.as_str()) {
        return Some(unknown_tenant(origin, &p.tenant, tenant_names));
    }
    if !tier_names.contains(p.tier.as_str()) {
        let names: Vec<&str> = tier_names.iter().copied().collect();
        let hint = did_you_mean(&p.tier, &names)
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        return Some(origin.diagnostic(
            "spec.tier",
            format!(
                "tier '{}' has no Tier resource{hint}; define it with kind: Tier, or leave \
                 'tier' out to use '{DEFAULT_TIER}'",
                p.tier
            ),
        ));
    }
    None
}

fn unknown_tenant(origin: &Origin, tenant: &str, known: &BTreeSet<&str>) -> Diagnostic {
    let names: Vec<&str> = known.iter().copied().collect();
    let hint = did_you_mean(tenant, &names)
        .map(|n| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default();
    origin.diagnostic(
        "metadata.tenant",
        format!(
            "tenant '{tenant}' has no Tenant resource{hint}; define it with kind: Tenant \
             (known tenants: {})",
            list(&names)
        ),
    )
}

/// Duplicates, VNI range and uniqueness, then VNIs for tenants without one.
fn check_tenants(
    tenants: Vec<(Tenant, Origin)>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Tenant> {
    let mut kept: Vec<(Tenant, Origin)> = Vec::new();
    for (t, origin) in tenants {
        if let Some((_, first)) = kept.iter().find(|(k, _)| k.name == t.name) {
            diags.push(origin.diagnostic(
                "metadata.name",
                format!("duplicate Tenant {}{}; remove one", t.name, first_at(first)),
            ));
        } else {
            kept.push((t, origin));
        }
    }
    // Explicit VNIs first, in input order: the later of two equal ones is the error.
    let mut taken: BTreeMap<u32, String> = BTreeMap::new();
    for (t, origin) in &kept {
        let Some(vni) = t.vni else { continue };
        if vni == 0 || i64::from(vni) > MAX_VNI {
            diags.push(origin.diagnostic(
                "spec.vni",
                format!("vni {vni} is out of range: VNIs are 1..={MAX_VNI}"),
            ));
        } else if let Some(other) = taken.get(&vni) {
            diags.push(origin.diagnostic(
                "spec.vni",
                format!(
                    "vni {vni} is already used by tenant {other}; give every tenant its own vni \
                     (or leave it out to have one allocated)"
                ),
            ));
        } else {
            taken.insert(vni, t.name.clone());
        }
    }
    // Then allocation, in name order so that the result does not depend on file order.
    let mut used: BTreeSet<u32> = taken.keys().copied().collect();
    let mut out: BTreeMap<String, Tenant> =
        kept.into_iter().map(|(t, _)| (t.name.clone(), t)).collect();
    for (name, t) in &mut out {
        if t.vni.is_none() {
            let vni = next_free_vni(1 + fnv1a_32(name) % (MAX_VNI as u32 - 1), &used);
            used.insert(vni);
            t.vni = Some(vni);
        }
    }
    out
}

/// Duplicates, and the `default` tier when no Tier resource defines it.
fn check_tiers(tiers: Vec<(Tier, Origin)>, diags: &mut Vec<Diagnostic>) -> BTreeMap<String, Tier> {
    let mut out: BTreeMap<String, Tier> = BTreeMap::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    for (t, origin) in tiers {
        if let Some(first) = origins.get(&t.name) {
            diags.push(origin.diagnostic(
                "metadata.name",
                format!("duplicate Tier {}{}; remove one", t.name, first_at(first)),
            ));
        } else {
            origins.insert(t.name.clone(), origin);
            out.insert(t.name.clone(), t);
        }
    }
    out.entry(DEFAULT_TIER.to_string()).or_insert(Tier {
        name: DEFAULT_TIER.to_string(),
        order: DEFAULT_TIER_ORDER,
        default_action: TierDefault::Deny,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a_32(""), 0x811c_9dc5);
        assert_eq!(fnv1a_32("a"), 0xe40c_292c);
        assert_eq!(fnv1a_32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn vni_probing_skips_taken_values_and_wraps() {
        assert_eq!(next_free_vni(7, &BTreeSet::new()), 7);
        assert_eq!(next_free_vni(7, &[7, 8].into()), 9);
        assert_eq!(next_free_vni(16_777_215, &[16_777_215, 1].into()), 2);
    }

    #[test]
    fn derived_labels_replace_stale_ones() {
        let mut e = Endpoint {
            tenant: "t".into(),
            namespace: Some("prod".into()),
            name: "web".into(),
            labels: [
                ("app".to_string(), "web".to_string()),
                (format!("{NAMESPACE_LABELS_PREFIX}team"), "old".to_string()),
            ]
            .into(),
            ips: vec![],
            mac: None,
            node: "n".into(),
            interface: None,
            serve: vec![],
        };
        let ns: Labels = [("env".to_string(), "prod".to_string())].into();
        derive_labels(&mut e, Some(&ns));
        let expected: Labels = [
            ("app", "web"),
            ("palisade.dev/namespace", "prod"),
            ("nslabel.palisade.dev/env", "prod"),
            ("nslabel.palisade.dev/kubernetes.io/metadata.name", "prod"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(e.labels, expected);
        let again = e.clone();
        derive_labels(&mut e, Some(&ns));
        assert_eq!(e, again);
    }
}
