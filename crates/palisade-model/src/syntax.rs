//! Syntax of the small values users write: resource names, label keys and
//! values, IP addresses and CIDRs, MAC addresses, interface names, lab serve
//! ports. Each check returns the complete message for the user on failure.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::resource::{Protocol, ServePort, RESERVED_LABEL_PREFIXES};

/// Longest resource name (a DNS subdomain, as Kubernetes object names).
const MAX_NAME_LEN: usize = 253;
/// Longest label name part and label value.
const MAX_LABEL_LEN: usize = 63;
/// Linux's limit for an interface name (IFNAMSIZ minus the NUL).
const MAX_INTERFACE_LEN: usize = 15;

/// `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 253 characters.
fn is_dns_name(s: &str) -> bool {
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && edge(bytes[0])
        && edge(bytes[bytes.len() - 1])
        && bytes.iter().all(|&c| edge(c) || c == b'-' || c == b'.')
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters (empty allowed here).
fn is_label_token(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    bytes.len() <= MAX_LABEL_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Checks a resource name (`what` names the field in the message: "name", "tenant", ...).
pub(crate) fn check_name(what: &str, value: &str) -> Result<(), String> {
    if is_dns_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{what} '{value}' is not valid: use lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most {MAX_NAME_LEN} characters"
        ))
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and '/', then a name
/// of at most 63 characters.
pub(crate) fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_name(prefix) {
            return Err(format!(
                "label key '{key}' is not valid: the prefix before '/' must be a DNS name \
                 (lowercase letters, digits, '-' and '.', e.g. 'example.com')"
            ));
        }
    }
    if name.is_empty() || !is_label_token(name) {
        return Err(format!(
            "label key '{key}' is not valid: the name must be 1 to {MAX_LABEL_LEN} characters \
             of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks the key of a label a user sets: valid, and not under a reserved prefix.
pub(crate) fn check_user_label_key(key: &str) -> Result<(), String> {
    check_label_key(key)?;
    if let Some(prefix) = RESERVED_LABEL_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        return Err(format!(
            "label key '{key}' uses the reserved prefix '{prefix}': palisade derives these \
             labels itself; choose another key"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of the label charset.
pub(crate) fn check_label_value(value: &str) -> Result<(), String> {
    if is_label_token(value) {
        Ok(())
    } else {
        Err(format!(
            "label value '{value}' is not valid: at most {MAX_LABEL_LEN} characters of letters, \
             digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)"
        ))
    }
}

/// Parses an IP address.
pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(text)
        .map_err(|_| format!("'{text}' is not a valid IP address; write e.g. 10.0.0.5 or fd00::5"))
}

/// Parses a CIDR that must have a prefix length and no host bits set.
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, String> {
    if !text.contains('/') {
        return Err(match IpAddr::from_str(text) {
            Ok(ip) => {
                let len = if ip.is_ipv4() { 32 } else { 128 };
                format!("'{text}' has no prefix length; write {text}/{len} for this one address")
            }
            Err(_) => {
                format!("'{text}' is not a valid CIDR; write address/prefix, e.g. 10.0.0.0/8")
            }
        });
    }
    let net = IpNet::from_str(text).map_err(|_| {
        format!("'{text}' is not a valid CIDR; write address/prefix, e.g. 10.0.0.0/8")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{text}: host bits are set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Checks that an `except` range lies strictly inside its `cidr`.
pub(crate) fn check_except(cidr: &IpNet, except: &IpNet) -> Result<(), String> {
    let family = |n: &IpNet| if n.addr().is_ipv4() { "IPv4" } else { "IPv6" };
    if family(cidr) != family(except) {
        return Err(format!(
            "except {except} is {} but cidr {cidr} is {}; an except range must be of the cidr's family",
            family(except),
            family(cidr)
        ));
    }
    if except == cidr {
        return Err(format!(
            "except {except} is the whole cidr {cidr}, so the peer matches nothing; remove the peer instead"
        ));
    }
    if !cidr.contains(except) {
        return Err(format!(
            "except {except} is not inside cidr {cidr}; an except range must lie inside its cidr"
        ));
    }
    Ok(())
}

/// Parses a MAC address `02:00:0a:00:01:0a`: unicast and not all zero.
pub(crate) fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Option<Vec<u8>> = parts
        .iter()
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    let mac: [u8; 6] = match bytes {
        Some(b) if b.len() == 6 => [b[0], b[1], b[2], b[3], b[4], b[5]],
        _ => {
            return Err(format!(
                "mac '{text}' is not valid: write six two-digit hex bytes separated by ':', \
                 e.g. 02:00:0a:00:01:0a"
            ))
        }
    };
    if mac == [0; 6] {
        return Err(format!(
            "mac '{text}' is all zero; use a locally administered unicast address such as 02:00:0a:00:01:0a"
        ));
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "mac '{text}' is a multicast address (lowest bit of the first byte set); \
             use a unicast address such as 02:00:0a:00:01:0a"
        ));
    }
    Ok(mac)
}

/// Checks a host-side interface name against Linux's rules.
pub(crate) fn check_interface(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface is empty; omit it to let palisade derive a name".into());
    }
    if name.len() > MAX_INTERFACE_LEN {
        return Err(format!(
            "interface '{name}' is {} bytes long; Linux allows at most {MAX_INTERFACE_LEN}",
            name.len()
        ));
    }
    if name.contains('/') || name.chars().any(char::is_whitespace) || name == "." || name == ".." {
        return Err(format!(
            "interface '{name}' is not valid: it must not contain '/' or whitespace, nor be '.' or '..'"
        ));
    }
    Ok(())
}

/// Parses a lab serve port `tcp/80` or `udp/53`.
pub(crate) fn parse_serve(text: &str) -> Result<ServePort, String> {
    let bad = || {
        format!("'{text}' is not a valid serve port: write protocol/port, e.g. tcp/80 or udp/53 (port 1..=65535)")
    };
    let (proto, port) = text.split_once('/').ok_or_else(bad)?;
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(ServePort { protocol, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web-1", "db.prod", "0", "a-b.c-d"] {
            assert!(check_name("name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "web_1",
            "-a",
            "a-",
            "a.",
            "a/b",
            "a:b",
            &"a".repeat(254),
        ] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
        assert!(check_name("name", &"a".repeat(253)).is_ok());
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "App_1", "example.com/app", "a.b", "k8s.io/x-y"] {
            assert!(check_label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/app",
            "Ex.com/app",
            "a/",
            "-a",
            "a b",
            &"a".repeat(64),
            "a/b/c",
        ] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        assert!(check_label_key(&"a".repeat(63)).is_ok());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x-Y").is_ok());
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_value("-a").is_err());
        assert!(check_label_value("a b").is_err());
        assert_eq!(
            check_user_label_key("palisade.dev/namespace").unwrap_err(),
            "label key 'palisade.dev/namespace' uses the reserved prefix 'palisade.dev/': \
             palisade derives these labels itself; choose another key"
        );
        assert!(check_user_label_key("nslabel.palisade.dev/team").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_cidr("10.0.0.1/8").unwrap_err(),
            "10.0.0.1/8: host bits are set; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            parse_cidr("10.0.0.1").unwrap_err(),
            "'10.0.0.1' has no prefix length; write 10.0.0.1/32 for this one address"
        );
        assert_eq!(
            parse_cidr("fd00::1").unwrap_err(),
            "'fd00::1' has no prefix length; write fd00::1/128 for this one address"
        );
        assert!(parse_cidr("10.0.0/8")
            .unwrap_err()
            .contains("is not a valid CIDR"));
        assert!(parse_cidr("10.0.0.0/33")
            .unwrap_err()
            .contains("is not a valid CIDR"));
        let cidr = parse_cidr("10.0.0.0/8").unwrap();
        assert!(check_except(&cidr, &parse_cidr("10.1.0.0/16").unwrap()).is_ok());
        assert_eq!(
            check_except(&cidr, &parse_cidr("192.168.0.0/16").unwrap()).unwrap_err(),
            "except 192.168.0.0/16 is not inside cidr 10.0.0.0/8; an except range must lie inside its cidr"
        );
        assert!(check_except(&cidr, &parse_cidr("fd00::/8").unwrap())
            .unwrap_err()
            .contains("is IPv6 but cidr 10.0.0.0/8 is IPv4"));
        assert!(check_except(&cidr, &cidr)
            .unwrap_err()
            .contains("the whole cidr"));
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:00:01:0A").unwrap(),
            [2, 0, 10, 0, 1, 10]
        );
        assert!(parse_mac("02:00:0a:00:01")
            .unwrap_err()
            .contains("not valid"));
        assert!(parse_mac("02-00-0a-00-01-0a")
            .unwrap_err()
            .contains("not valid"));
        assert!(parse_mac("2:0:a:0:1:a").unwrap_err().contains("not valid"));
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00")
            .unwrap_err()
            .contains("all zero"));
    }

    #[test]
    fn interfaces() {
        assert!(check_interface("veth-web1").is_ok());
        assert!(check_interface("abcdefghijklmno").is_ok());
        assert_eq!(
            check_interface("abcdefghijklmnop").unwrap_err(),
            "interface 'abcdefghijklmnop' is 16 bytes long; Linux allows at most 15"
        );
        assert!(check_interface("a/b").unwrap_err().contains("'/'"));
        assert!(check_interface("a b").unwrap_err().contains("whitespace"));
    }

    #[test]
    fn serve_ports() {
        assert_eq!(
            parse_serve("tcp/80").unwrap(),
            ServePort {
                protocol: Protocol::Tcp,
                port: 80
            }
        );
        assert_eq!(parse_serve("UDP/53").unwrap().protocol, Protocol::Udp);
        for bad in ["tcp", "tcp/0", "tcp/65536", "icmp/1", "80/tcp", "tcp/x"] {
            assert!(parse_serve(bad).is_err(), "{bad}");
        }
    }
}
