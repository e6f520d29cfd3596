//! A complete, validated set of resources: what the policy engine compiles and
//! what the agent enforces. Built only through validation (`load`), so every
//! reference in it resolves.

use std::collections::BTreeMap;

use crate::resource::{Endpoint, Policy, Tenant, Tier};

/// Validated intent. Invariants (established by validation): every endpoint and
/// policy names a tenant in `tenants`; every policy's tier is in `tiers`; `tiers`
/// always holds `default`; every tenant has a `vni`; names are unique per kind
/// and tenant; endpoints are sorted by `full_ref()`, policies by (tenant, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intent {
    pub tenants: BTreeMap<String, Tenant>,
    pub tiers: BTreeMap<String, Tier>,
    pub endpoints: Vec<Endpoint>,
    pub policies: Vec<Policy>,
}
