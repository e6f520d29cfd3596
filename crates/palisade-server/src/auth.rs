//! Authentication and authorization: the `--tokens` file (SHA-256 of each
//! token, its subject and role), bearer-token lookup in constant time, and
//! what each role may do. Tokens themselves are never stored or logged.

use std::fmt;
use std::path::Path;

use axum::http::HeaderMap;
use palisade_client::api::ResourceRef;
use palisade_model::Kind;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ServerError};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read and write one tenant's resources.
    Tenant(String),
    /// Read one node's stream and report its status.
    Agent(String),
}

impl fmt::Display for Role {
    /// `admin`, `tenant:NAME`, `agent:NODE`: the tokens file's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Tenant(t) => write!(f, "tenant:{t}"),
            Role::Agent(n) => write!(f, "agent:{n}"),
        }
    }
}

impl Role {
    fn parse(text: &str) -> Result<Role, String> {
        match text.split_once(':') {
            None if text == "admin" => Ok(Role::Admin),
            Some(("tenant", name)) if !name.is_empty() => Ok(Role::Tenant(name.to_owned())),
            Some(("agent", node)) if !node.is_empty() => Ok(Role::Agent(node.to_owned())),
            _ => Err(format!(
                "role '{text}' is not one of admin, tenant:NAME, agent:NODE"
            )),
        }
    }
}

/// Who is calling: the token's subject and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject (audit records name it).
    pub subject: String,
    /// What it may do.
    pub role: Role,
}

impl Principal {
    /// The caller when the server runs without `--tokens`.
    pub fn anonymous() -> Principal {
        Principal {
            subject: "anonymous".to_owned(),
            role: Role::Admin,
        }
    }

    /// The tenant a tenant token is limited to; `None` for admins (and agents,
    /// which pass no tenant check because they are refused earlier).
    pub fn tenant(&self) -> Option<&str> {
        match &self.role {
            Role::Tenant(t) => Some(t),
            _ => None,
        }
    }

    /// Refuses agents: everything but the node stream and status reports.
    pub fn require_user(&self) -> Result<(), ApiError> {
        match &self.role {
            Role::Agent(node) => Err(ApiError::forbidden(format!(
                "{} has role agent:{node}, which may only read its node's stream and report its \
                 status; use an admin or tenant token",
                self.subject
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses everything but admins.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match &self.role {
            Role::Admin => Ok(()),
            role => Err(ApiError::forbidden(format!(
                "{what} needs role admin; {} has role {role}",
                self.subject
            ))),
        }
    }

    /// Whether the caller may see a resource (tenant tokens: their tenant's
    /// resources, their Tenant, and Tiers, which every policy refers to).
    pub fn can_read(&self, r: &ResourceRef) -> bool {
        match &self.role {
            Role::Admin => true,
            Role::Tenant(t) => r.owner_tenant().is_none_or(|owner| owner == t),
            Role::Agent(_) => false,
        }
    }

    /// Checks that the caller may write (apply or delete) a resource.
    pub fn check_write(&self, r: &ResourceRef) -> Result<(), ApiError> {
        self.require_user()?;
        match (&self.role, r.kind) {
            (Role::Admin, _) => Ok(()),
            (_, Kind::Tenant | Kind::Tier) => {
                self.require_admin(&format!("writing {r} (Tenants and Tiers)"))
            }
            (Role::Tenant(t), _) if r.tenant.as_deref() == Some(t) => Ok(()),
            (role, _) => Err(ApiError::forbidden(format!(
                "writing {r} needs role admin or tenant:{}; {} has role {role}",
                r.tenant.as_deref().unwrap_or("?"),
                self.subject
            ))),
        }
    }

    /// Checks that the caller may read a node's stream or report its status.
    pub fn check_node(&self, node: &str) -> Result<(), ApiError> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Agent(n) if n == node => Ok(()),
            role => Err(ApiError::forbidden(format!(
                "node {node}'s stream and status need role agent:{node} or admin; {} has role {role}",
                self.subject
            ))),
        }
    }
}

/// One entry of the tokens file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: String,
    subject: String,
    role: String,
}

/// The known tokens (by hash), or none when the server runs open.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
    enabled: bool,
}

impl Tokens {
    /// No authentication: every caller is an anonymous admin.
    pub fn disabled() -> Tokens {
        Tokens::default()
    }

    /// Reads a tokens file: a YAML list of `{sha256, subject, role}`.
    pub fn load(path: &Path) -> Result<Tokens, ServerError> {
        let fail = |reason: String| ServerError::Tokens {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        Tokens::parse(&text).map_err(fail)
    }

    /// Parses the text of a tokens file.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let entries: Vec<TokenEntry> = serde_yaml::from_str(text).map_err(|e| {
            format!(
                "{e}; write a YAML list of {{sha256: <hex of the token's SHA-256>, subject: NAME, \
                 role: admin | tenant:NAME | agent:NODE}}"
            )
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let hash = parse_hex32(&e.sha256).ok_or_else(|| {
                format!(
                    "entry {}: sha256 must be 64 hex digits (e.g. from `printf %s TOKEN | sha256sum`)",
                    i + 1
                )
            })?;
            let role = Role::parse(&e.role).map_err(|r| format!("entry {}: {r}", i + 1))?;
            if e.subject.is_empty() {
                return Err(format!("entry {}: subject is empty", i + 1));
            }
            if out.iter().any(|(h, _)| *h == hash) {
                return Err(format!(
                    "entry {}: the same token is listed twice; give every token one entry",
                    i + 1
                ));
            }
            out.push((
                hash,
                Principal {
                    subject: e.subject,
                    role,
                },
            ));
        }
        if out.is_empty() {
            return Err("it lists no token; add one or leave --tokens out".to_owned());
        }
        Ok(Tokens {
            entries: out,
            enabled: true,
        })
    }

    /// Whether tokens are checked.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller of a request, from its `Authorization: Bearer` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if !self.enabled {
            return Ok(Principal::anonymous());
        }
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "no token: send Authorization: Bearer <token> (palisade --token or PALISADE_TOKEN)",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        self.lookup(token).cloned().ok_or_else(|| {
            ApiError::unauthorized(
                "unknown token: check --token / PALISADE_TOKEN against the server's tokens file",
            )
        })
    }

    /// The principal of a token. Every entry is compared, in constant time,
    /// so the answer's timing says nothing about which bytes matched.
    fn lookup(&self, token: &str) -> Option<&Principal> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (known, principal) in &self.entries {
            if constant_time_eq(known, &hash) {
                found = Some(principal);
            }
        }
        found
    }
}

/// Compares two hashes without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The hex SHA-256 of a token, as the tokens file holds it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn tokens_resolve_to_their_subject_and_role() {
        let file = format!(
            "- {{sha256: {}, subject: alice, role: admin}}\n- {{sha256: {}, subject: bob, role: 'tenant:acme'}}\n",
            token_hash("s3cret-a"),
            token_hash("s3cret-b")
        );
        let tokens = Tokens::parse(&file).unwrap();
        let alice = tokens.authenticate(&headers("s3cret-a")).unwrap();
        assert_eq!((alice.subject.as_str(), alice.role), ("alice", Role::Admin));
        let bob = tokens.authenticate(&headers("s3cret-b")).unwrap();
        assert_eq!(bob.role, Role::Tenant("acme".into()));
        assert!(tokens.authenticate(&headers("s3cret-c")).is_err());
        assert!(tokens.authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry_number() {
        let err = Tokens::parse("- {sha256: abc, subject: a, role: admin}\n").unwrap_err();
        assert!(err.contains("entry 1: sha256"), "{err}");
        let err = Tokens::parse(&format!(
            "- {{sha256: {}, subject: a, role: root}}\n",
            token_hash("x")
        ))
        .unwrap_err();
        assert!(err.contains("role 'root'"), "{err}");
    }

    #[test]
    fn tenant_tokens_write_only_their_tenant_and_no_tiers() {
        let p = Principal {
            subject: "bob".into(),
            role: Role::Tenant("acme".into()),
        };
        let ep = |t: &str| ResourceRef {
            kind: Kind::Endpoint,
            tenant: Some(t.into()),
            namespace: None,
            name: "e".into(),
        };
        assert!(p.check_write(&ep("acme")).is_ok());
        assert_eq!(p.check_write(&ep("other")).unwrap_err().status, 403);
        let tier = ResourceRef {
            kind: Kind::Tier,
            tenant: None,
            namespace: None,
            name: "t".into(),
        };
        assert_eq!(p.check_write(&tier).unwrap_err().status, 403);
        assert!(p.can_read(&tier));
        assert!(!p.can_read(&ep("other")));
    }
}
