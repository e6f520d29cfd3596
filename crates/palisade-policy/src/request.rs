//! A flow as a person or a client writes it (`{"from": "acme:web-1", "to":
//! "db-1", "proto": "tcp", "port": 5432}`), and its resolution against an
//! intent into a [`Flow`]. The CLI's `explain`, its batch form and the
//! server's explain API all take this one shape.

use std::net::{IpAddr, Ipv4Addr};

use palisade_model::{Intent, Protocol, RefError, Target};
use serde::{Deserialize, Serialize};

use crate::evaluate::{Flow, FlowPeer};

/// The address `world` stands for when a flow names the world without an
/// address: the lab's world address (TEST-NET-2), outside every example tenant.
pub const WORLD_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

/// A flow to explain, by reference.
///
/// `from`/`to`: `[tenant:][namespace/]name` (the shortest unambiguous form),
/// an IP or `tenant:IP`, or `world` / `host` (in the tenant of the other
/// end; `tenant:world`, `tenant:host` name it). `proto`: `tcp`, `udp`,
/// `sctp`, `icmp`, `icmpv6` or a protocol number. `port`: the destination
/// port (TCP, UDP, SCTP). ICMP: `icmp_type` and `icmp_code` (default echo
/// request: 8/0, or 128/0 for ICMPv6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    /// Source reference.
    pub from: String,
    /// Destination reference.
    pub to: String,
    /// Protocol name or number.
    pub proto: String,
    /// Destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// ICMP type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

/// Why a [`FlowRequest`] does not name a flow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `from` or `to` does not resolve.
    #[error("{side} {reference}: {source}")]
    Reference {
        /// `from` or `to`.
        side: &'static str,
        /// The reference as given.
        reference: String,
        /// Why.
        source: RefError,
    },
    /// Both ends are `world`/`host`, so no tenant is known.
    #[error("{side} '{reference}' needs a tenant: the other end is not an endpoint or address of a tenant; write tenant:{reference}")]
    NoTenant {
        /// `from` or `to`.
        side: &'static str,
        /// The reference as given.
        reference: String,
    },
    /// `proto` is not a protocol.
    #[error("unknown protocol '{0}': use tcp, udp, sctp, icmp, icmpv6 or a protocol number 0-255")]
    Protocol(String),
    /// A port protocol without a port, or a port where none applies.
    #[error("{0}")]
    Port(String),
}

/// One resolved end before the other end's tenant is known.
enum End<'a> {
    Peer(FlowPeer<'a>),
    World(Option<&'a str>),
    Host(Option<&'a str>),
}

fn end<'a>(intent: &'a Intent, side: &'static str, text: &'a str) -> Result<End<'a>, RequestError> {
    let (tenant, rest) = match text.split_once(':') {
        Some((t, rest)) if rest == "world" || rest == "host" => (Some(t), rest),
        _ => (None, text),
    };
    if let Some(t) = tenant {
        if !intent.tenants.contains_key(t) {
            let known = intent
                .tenants
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            let source = RefError::UnknownTenant {
                tenant: t.to_string(),
                known,
            };
            return Err(RequestError::Reference {
                side,
                reference: text.to_string(),
                source,
            });
        }
    }
    match rest {
        "world" => return Ok(End::World(tenant)),
        "host" => return Ok(End::Host(tenant)),
        _ => {}
    }
    match intent.resolve(text) {
        Ok(Target::Endpoint(e)) => Ok(End::Peer(FlowPeer::Endpoint(e))),
        Ok(Target::Address { tenant, ip }) => Ok(End::Peer(FlowPeer::Address { tenant, ip })),
        Err(source) => Err(RequestError::Reference {
            side,
            reference: text.to_string(),
            source,
        }),
    }
}

fn settle<'a>(
    side: &'static str,
    text: &str,
    end: End<'a>,
    other: Option<&'a str>,
) -> Result<FlowPeer<'a>, RequestError> {
    let no_tenant = || RequestError::NoTenant {
        side,
        reference: text.rsplit(':').next().unwrap_or(text).to_string(),
    };
    match end {
        End::Peer(p) => Ok(p),
        End::World(t) => {
            let tenant = t.or(other).ok_or_else(no_tenant)?;
            Ok(FlowPeer::Address {
                tenant,
                ip: WORLD_ADDRESS,
            })
        }
        End::Host(t) => Ok(FlowPeer::Host {
            tenant: t.or(other).ok_or_else(no_tenant)?,
        }),
    }
}

fn peer_tenant<'a>(end: &End<'a>) -> Option<&'a str> {
    match end {
        End::Peer(p) => Some(p.tenant()),
        End::World(t) | End::Host(t) => *t,
    }
}

/// The protocol number of a name or number.
pub fn protocol_number(text: &str) -> Result<u8, RequestError> {
    let lower = text.to_ascii_lowercase();
    if let Some(p) = Protocol::ALL
        .into_iter()
        .find(|p| p.as_str().to_ascii_lowercase() == lower)
    {
        return Ok(p.number());
    }
    lower
        .parse::<u8>()
        .map_err(|_| RequestError::Protocol(text.to_string()))
}

impl FlowRequest {
    /// Resolves the request against `intent` into a flow the evaluator decides.
    pub fn resolve<'a>(&'a self, intent: &'a Intent) -> Result<Flow<'a>, RequestError> {
        let protocol = protocol_number(&self.proto)?;
        let port = match Protocol::from_number(protocol) {
            Some(p) if p.has_ports() => {
                if self.icmp_type.is_some() || self.icmp_code.is_some() {
                    return Err(RequestError::Port(format!(
                        "{p} has ports, not ICMP type/code"
                    )));
                }
                self.port.ok_or_else(|| {
                    RequestError::Port(format!("{p} needs a destination port (--port)"))
                })?
            }
            Some(p @ (Protocol::Icmp | Protocol::Icmpv6)) => {
                if self.port.is_some() {
                    return Err(RequestError::Port(format!(
                        "{p} has no ports; give --icmp-type and --icmp-code"
                    )));
                }
                let echo = if p == Protocol::Icmp { 8 } else { 128 };
                u16::from(self.icmp_type.unwrap_or(echo)) << 8
                    | u16::from(self.icmp_code.unwrap_or(0))
            }
            _ => self.port.unwrap_or(0),
        };
        let src = end(intent, "from", &self.from)?;
        let dst = end(intent, "to", &self.to)?;
        let (src_tenant, dst_tenant) = (peer_tenant(&src), peer_tenant(&dst));
        let src = settle("from", &self.from, src, dst_tenant)?;
        let dst = settle("to", &self.to, dst, src_tenant)?;
        Ok(Flow {
            src,
            dst,
            protocol,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        palisade_model::load_str(
            "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {}\n---\n\
             apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web-1, tenant: acme, labels: {app: web}}\n\
             spec: {node: n1, ips: [10.0.0.1]}\n",
            "t.yaml",
            &Default::default(),
        )
        .unwrap()
    }

    fn req(from: &str, to: &str, proto: &str, port: Option<u16>) -> FlowRequest {
        FlowRequest {
            from: from.into(),
            to: to.into(),
            proto: proto.into(),
            port,
            icmp_type: None,
            icmp_code: None,
        }
    }

    #[test]
    fn world_and_host_take_the_tenant_of_the_other_end() {
        let intent = intent();
        let r = req("world", "web-1", "tcp", Some(443));
        let flow = r.resolve(&intent).unwrap();
        assert_eq!(
            flow.src,
            FlowPeer::Address {
                tenant: "acme",
                ip: WORLD_ADDRESS
            }
        );
        assert_eq!(flow.protocol, 6);
        let r = req("web-1", "host", "udp", Some(53));
        assert_eq!(
            r.resolve(&intent).unwrap().dst,
            FlowPeer::Host { tenant: "acme" }
        );
    }

    #[test]
    fn icmp_defaults_to_echo_request_and_refuses_ports() {
        let intent = intent();
        let r = req("world", "web-1", "icmp", None);
        let flow = r.resolve(&intent).unwrap();
        assert_eq!((flow.protocol, flow.port), (1, 8 << 8));
        let err = req("world", "web-1", "icmp", Some(80))
            .resolve(&intent)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ICMP has no ports; give --icmp-type and --icmp-code"
        );
    }

    #[test]
    fn errors_name_the_side_and_the_fix() {
        let intent = intent();
        let err = req("world", "host", "tcp", Some(1))
            .resolve(&intent)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "from 'world' needs a tenant: the other end is not an endpoint or address of a tenant; write tenant:world"
        );
        let err = req("web-1", "web-9", "tcp", Some(1))
            .resolve(&intent)
            .unwrap_err();
        assert!(
            err.to_string().starts_with("to web-9: no endpoint 'web-9'"),
            "{err}"
        );
        let err = req("web-1", "web-1", "tcp", None)
            .resolve(&intent)
            .unwrap_err();
        assert_eq!(err.to_string(), "TCP needs a destination port (--port)");
        let err = req("web-1", "web-1", "gopher", None)
            .resolve(&intent)
            .unwrap_err();
        assert!(err.to_string().starts_with("unknown protocol 'gopher'"));
        let err = req("nope:world", "web-1", "tcp", Some(1))
            .resolve(&intent)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "from nope:world: no tenant 'nope'; known tenants: acme"
        );
    }

    #[test]
    fn other_protocols_are_numbers() {
        let intent = intent();
        let r = req("web-1", "world", "47", None);
        let flow = r.resolve(&intent).unwrap();
        assert_eq!((flow.protocol, flow.port), (47, 0));
    }
}
