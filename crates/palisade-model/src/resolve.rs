//! Resolution of the references users type on the command line
//! (`--from acme:prod/web-1`, `--to 10.0.0.5`): `[tenant:][namespace/]name`
//! in its shortest unambiguous form, an IP, or `tenant:IP`.

use std::net::IpAddr;

use crate::decode::did_you_mean;
use crate::intent::Intent;
use crate::resource::Endpoint;

/// How many names an "unknown endpoint" message lists before "...".
const LISTED: usize = 8;

/// What a reference names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target<'a> {
    /// An endpoint of the intent.
    Endpoint(&'a Endpoint),
    /// An address that is no endpoint's: a world address as seen from `tenant`.
    Address {
        /// The tenant whose network the address is seen from.
        tenant: &'a str,
        /// The address.
        ip: IpAddr,
    },
}

/// Why a reference does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The text is not of the form `[tenant:][namespace/]name`, `IP` or `tenant:IP`.
    #[error("'{reference}' is not a valid reference: {reason}; write [tenant:][namespace/]name, an IP, or tenant:IP")]
    Invalid {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tenant part names no tenant.
    #[error("no tenant '{tenant}'; known tenants: {known}")]
    UnknownTenant {
        /// The tenant as given.
        tenant: String,
        /// The tenants there are, comma separated.
        known: String,
    },
    /// No endpoint has that name.
    #[error("no endpoint '{reference}'{}; {known}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownEndpoint {
        /// The reference as given.
        reference: String,
        /// A close name, when there is one.
        suggestion: Option<String>,
        /// `known in acme: web-1, web-2, ...` or `known: acme:web-1, ...`.
        known: String,
    },
    /// Several endpoints (or tenants, for an IP) match.
    #[error("'{reference}' is ambiguous: {}; {hint}", candidates.join(", "))]
    Ambiguous {
        /// The reference as given.
        reference: String,
        /// What it could mean, as full references.
        candidates: Vec<String>,
        /// How to disambiguate.
        hint: String,
    },
}

/// A reference split into its parts.
enum Ref<'r> {
    Ip {
        tenant: Option<&'r str>,
        ip: IpAddr,
    },
    Name {
        tenant: Option<&'r str>,
        namespace: Option<&'r str>,
        name: &'r str,
    },
}

fn split(reference: &str) -> Result<Ref<'_>, RefError> {
    let invalid = |reason: &str| RefError::Invalid {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() {
        return Err(invalid("it is empty"));
    }
    // An IPv6 address has colons, so try the whole text as an address first.
    if let Ok(ip) = reference.parse::<IpAddr>() {
        return Ok(Ref::Ip { tenant: None, ip });
    }
    let (tenant, rest) = match reference.split_once(':') {
        Some(("", _)) => return Err(invalid("the tenant before ':' is empty")),
        Some((t, rest)) => (Some(t), rest),
        None => (None, reference),
    };
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok(Ref::Ip { tenant, ip });
    }
    if rest.contains(':') {
        return Err(invalid("it has more than one ':'"));
    }
    let (namespace, name) = match rest.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, rest),
    };
    if name.is_empty() || namespace.is_some_and(str::is_empty) || name.contains('/') {
        return Err(invalid(
            "the name or namespace is empty, or there is more than one '/'",
        ));
    }
    Ok(Ref::Name {
        tenant,
        namespace,
        name,
    })
}

impl Intent {
    /// Resolves a reference: `[tenant:][namespace/]name` (the shortest
    /// unambiguous form is accepted; with a tenant, `tenant:name` prefers the
    /// endpoint without namespace), an IP (the endpoint that has it, else a
    /// world address of the one tenant it can belong to), or `tenant:IP`.
    pub fn resolve(&self, r: &str) -> Result<Target<'_>, RefError> {
        let r = r.trim();
        match split(r)? {
            Ref::Ip { tenant, ip } => self.resolve_ip(r, tenant, ip),
            Ref::Name {
                tenant,
                namespace,
                name,
            } => self.resolve_name(r, tenant, namespace, name),
        }
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), RefError> {
        if self.tenants.contains_key(tenant) {
            return Ok(());
        }
        let known: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
        Err(RefError::UnknownTenant {
            tenant: tenant.to_string(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        })
    }

    fn resolve_name(
        &self,
        reference: &str,
        tenant: Option<&str>,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Target<'_>, RefError> {
        if let Some(t) = tenant {
            self.check_tenant(t)?;
        }
        let mut found: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| {
                e.name == name
                    && tenant.is_none_or(|t| e.tenant == t)
                    && namespace.is_none_or(|ns| e.namespace.as_deref() == Some(ns))
            })
            .collect();
        if found.len() > 1 && tenant.is_some() && namespace.is_none() {
            // `tenant:name` must be able to name the endpoint without namespace.
            let exact: Vec<&Endpoint> = found
                .iter()
                .copied()
                .filter(|e| e.namespace.is_none())
                .collect();
            if exact.len() == 1 {
                found = exact;
            }
        }
        match found.len() {
            1 => Ok(Target::Endpoint(found[0])),
            0 => Err(self.unknown_endpoint(reference, tenant, namespace, name)),
            _ => {
                let one_tenant = found.iter().all(|e| e.tenant == found[0].tenant);
                Err(RefError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: found.iter().map(|e| e.full_ref()).collect(),
                    hint: if one_tenant {
                        "prefix the namespace".into()
                    } else {
                        "prefix the tenant".into()
                    },
                })
            }
        }
    }

    fn unknown_endpoint(
        &self,
        reference: &str,
        tenant: Option<&str>,
        namespace: Option<&str>,
        name: &str,
    ) -> RefError {
        // List the tenant's names when the scope is one tenant, else full references.
        let scope = tenant.or_else(|| {
            (self.tenants.len() == 1).then(|| self.tenants.keys().next().map(String::as_str))?
        });
        let names: Vec<String> = match scope {
            Some(t) => self
                .endpoints_of_tenant(t)
                .map(Endpoint::qualified_name)
                .collect(),
            None => self.endpoints.iter().map(Endpoint::full_ref).collect(),
        };
        let wanted = match (scope, namespace) {
            (Some(_), Some(ns)) => format!("{ns}/{name}"),
            (Some(_), None) => name.to_string(),
            (None, _) => reference.to_string(),
        };
        let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
        let suggestion = did_you_mean(&wanted, &candidates).map(str::to_string);
        let mut listed = names
            .iter()
            .take(LISTED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if names.is_empty() {
            listed = "none".into();
        } else if names.len() > LISTED {
            listed.push_str(", ...");
        }
        RefError::UnknownEndpoint {
            reference: reference.to_string(),
            suggestion,
            known: match scope {
                Some(t) => format!("known in {t}: {listed}"),
                None => format!("known: {listed}"),
            },
        }
    }

    fn resolve_ip(
        &self,
        reference: &str,
        tenant: Option<&str>,
        ip: IpAddr,
    ) -> Result<Target<'_>, RefError> {
        if let Some(t) = tenant {
            self.check_tenant(t)?;
            let tenant = self
                .tenants
                .get_key_value(t)
                .map(|(k, _)| k.as_str())
                .expect("checked above");
            return Ok(
                match self
                    .endpoints_of_tenant(tenant)
                    .find(|e| e.ips.contains(&ip))
                {
                    Some(e) => Target::Endpoint(e),
                    None => Target::Address { tenant, ip },
                },
            );
        }
        let owners: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.ips.contains(&ip))
            .collect();
        match owners.len() {
            1 => return Ok(Target::Endpoint(owners[0])),
            0 => {}
            _ => {
                return Err(RefError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: owners.iter().map(|e| e.full_ref()).collect(),
                    hint: format!("prefix the tenant, e.g. {}:{ip}", owners[0].tenant),
                })
            }
        }
        // No endpoint has it: a world address of the one tenant it can belong to.
        let containing: Vec<&str> = self
            .tenants
            .values()
            .filter(|t| t.cidrs.iter().any(|c| c.contains(&ip)))
            .map(|t| t.name.as_str())
            .collect();
        let all: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
        let candidates = if containing.is_empty() {
            all
        } else {
            containing
        };
        match candidates.len() {
            1 => Ok(Target::Address {
                tenant: candidates[0],
                ip,
            }),
            0 => Err(RefError::UnknownTenant {
                tenant: String::new(),
                known: "none (the intent has no tenant to place the address in)".into(),
            }),
            _ => Err(RefError::Ambiguous {
                reference: reference.to_string(),
                candidates: candidates.iter().map(|t| format!("{t}:{ip}")).collect(),
                hint: "no endpoint has this address; prefix the tenant it is seen from".into(),
            }),
        }
    }
}
