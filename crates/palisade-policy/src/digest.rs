//! An exact byte encoding of what a policy means to the compiler, kept next
//! to each compiled policy so that an update can tell whether a policy
//! changed by comparing one contiguous buffer, instead of chasing the dozens
//! of small allocations a `Policy` is made of. With thousands of policies
//! that comparison is most of the cost of a small update.
//!
//! The encoding is injective (every field is tagged or length-prefixed), so
//! equal bytes mean equal fields. It starts with the policy's key (namespace,
//! name) and leaves out the selectors' display texts, which do not change
//! what is compiled.

use ipnet::IpNet;
use palisade_model::{Entity, Expr, Peer, Policy, PortMatch, Rule};

/// Appends the encoding of `p` to `out`.
pub(crate) fn encode(p: &Policy, out: &mut Vec<u8>) {
    match &p.namespace {
        None => out.push(0),
        Some(ns) => {
            out.push(1);
            put_str(out, ns);
        }
    }
    put_str(out, &p.name);
    put_str(out, &p.tier);
    match p.order {
        None => out.push(0),
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.to_le_bytes());
        }
    }
    out.push(p.mode as u8);
    put_expr(out, &p.selector.expr);
    put_rules(out, p.ingress.as_deref());
    put_rules(out, p.egress.as_deref());
}

/// The key (namespace, name) at the start of an encoding, as bytes (their
/// order is the order of the strings).
pub(crate) fn key(digest: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let (namespace, rest) = match digest[0] {
        0 => (None, &digest[1..]),
        _ => {
            let (ns, rest) = take_str(&digest[1..]);
            (Some(ns), rest)
        }
    };
    (namespace, take_str(rest).0)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Lengths of strings and lists in an intent fit in 32 bits.
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn take_str(b: &[u8]) -> (&[u8], &[u8]) {
    let n = u32::from_le_bytes(b[..4].try_into().expect("four bytes")) as usize;
    (&b[4..4 + n], &b[4 + n..])
}

fn put_expr(out: &mut Vec<u8>, e: &Expr) {
    match e {
        Expr::All => out.push(0),
        Expr::Has(k) => {
            out.push(1);
            put_str(out, k);
        }
        Expr::Eq(k, v) | Expr::Ne(k, v) => {
            out.push(if matches!(e, Expr::Eq(..)) { 2 } else { 3 });
            put_str(out, k);
            put_str(out, v);
        }
        Expr::In(k, vs) | Expr::NotIn(k, vs) => {
            out.push(if matches!(e, Expr::In(..)) { 4 } else { 5 });
            put_str(out, k);
            put_len(out, vs.len());
            for v in vs {
                put_str(out, v);
            }
        }
        Expr::Not(inner) => {
            out.push(6);
            put_expr(out, inner);
        }
        Expr::And(es) | Expr::Or(es) => {
            out.push(if matches!(e, Expr::And(..)) { 7 } else { 8 });
            put_len(out, es.len());
            for e in es {
                put_expr(out, e);
            }
        }
    }
}

fn put_rules(out: &mut Vec<u8>, rules: Option<&[Rule]>) {
    let Some(rules) = rules else {
        out.push(0);
        return;
    };
    out.push(1);
    put_len(out, rules.len());
    for r in rules {
        out.push(r.action as u8);
        match &r.peers {
            None => out.push(0),
            Some(peers) => {
                out.push(1);
                put_len(out, peers.len());
                for p in peers {
                    put_peer(out, p);
                }
            }
        }
        match &r.ports {
            None => out.push(0),
            Some(ports) => {
                out.push(1);
                put_len(out, ports.len());
                for m in ports {
                    put_port(out, m);
                }
            }
        }
    }
}

fn put_peer(out: &mut Vec<u8>, p: &Peer) {
    match p {
        Peer::Selector(s) => {
            out.push(0);
            put_expr(out, &s.expr);
        }
        Peer::Cidr { cidr, except } => {
            out.push(1);
            put_net(out, cidr);
            put_len(out, except.len());
            for x in except {
                put_net(out, x);
            }
        }
        Peer::Entity(e) => out.push(match e {
            Entity::World => 2,
            Entity::Host => 3,
            Entity::All => 4,
        }),
    }
}

fn put_net(out: &mut Vec<u8>, n: &IpNet) {
    match n {
        IpNet::V4(n) => {
            out.push(4);
            out.extend_from_slice(&n.addr().octets());
        }
        IpNet::V6(n) => {
            out.push(6);
            out.extend_from_slice(&n.addr().octets());
        }
    }
    out.push(n.prefix_len());
}

fn put_opt_u16(out: &mut Vec<u8>, v: Option<u16>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn put_port(out: &mut Vec<u8>, m: &PortMatch) {
    match *m {
        PortMatch::Ports {
            protocol,
            port,
            end_port,
        } => {
            out.push(0);
            out.push(protocol.number());
            put_opt_u16(out, port);
            put_opt_u16(out, end_port);
        }
        PortMatch::Icmp {
            protocol,
            icmp_type,
            icmp_code,
        } => {
            out.push(1);
            out.push(protocol.number());
            put_opt_u16(out, icmp_type.map(u16::from));
            put_opt_u16(out, icmp_code.map(u16::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_model::{Action, Mode, Protocol, Selector};

    fn base() -> Policy {
        Policy {
            tenant: "acme".into(),
            namespace: Some("ns".into()),
            name: "p".into(),
            tier: "default".into(),
            order: Some(3),
            selector: Selector::new(Expr::Eq("app".into(), "web".into())),
            mode: Mode::Enforce,
            ingress: Some(vec![Rule {
                action: Action::Allow,
                peers: Some(vec![Peer::Cidr {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    except: vec![],
                }]),
                ports: Some(vec![PortMatch::Ports {
                    protocol: Protocol::Tcp,
                    port: Some(80),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }
    }

    fn digest(p: &Policy) -> Vec<u8> {
        let mut out = Vec::new();
        encode(p, &mut out);
        out
    }

    #[test]
    fn every_field_that_compiles_differently_changes_the_digest() {
        let d = digest(&base());
        assert_eq!(key(&d), (Some(&b"ns"[..]), &b"p"[..]));
        let edits: Vec<fn(&mut Policy)> = vec![
            |p| p.namespace = None,
            |p| p.name = "q".into(),
            |p| p.tier = "security".into(),
            |p| p.order = None,
            |p| p.mode = Mode::Audit,
            |p| p.selector = Selector::new(Expr::Eq("app".into(), "db".into())),
            |p| p.egress = Some(vec![]),
            |p| p.ingress.as_mut().unwrap()[0].action = Action::Deny,
            |p| p.ingress.as_mut().unwrap()[0].peers = None,
            |p| p.ingress.as_mut().unwrap()[0].peers = Some(vec![Peer::Entity(Entity::World)]),
            |p| {
                p.ingress.as_mut().unwrap()[0].ports = Some(vec![PortMatch::Ports {
                    protocol: Protocol::Tcp,
                    port: Some(80),
                    end_port: Some(81),
                }])
            },
            |p| {
                p.ingress.as_mut().unwrap()[0].peers = Some(vec![Peer::Cidr {
                    cidr: "10.0.0.0/9".parse().unwrap(),
                    except: vec![],
                }])
            },
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let mut p = base();
            edit(&mut p);
            assert_ne!(digest(&p), d, "edit {i}");
        }
        // The display text does not matter; the tenant is the list's key.
        let mut p = base();
        p.selector.text = "anything".into();
        p.tenant = "other".into();
        assert_eq!(digest(&p), d);
    }
}
