//! Every validation rule: the exact message and its file:line:col.

use crate::common::{dedent, error, errors, load, with_acme};

/// A policy of tenant `acme` whose spec lines follow (indented by two).
fn policy(spec: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: db, tenant: acme}}\nspec:\n{}",
        dedent(spec)
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    )
}

/// An endpoint `web` of tenant `acme` whose spec lines follow (indented by two).
fn endpoint(spec: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {{name: web, tenant: acme}}\nspec:\n{}",
        dedent(spec)
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    )
}

// ---- header: apiVersion and kind ----

#[test]
fn api_version_must_match_the_kind() {
    assert_eq!(
        error(
            "
            apiVersion: palisade.dev/v2
            kind: Tier
            metadata: {name: t}
            spec: {order: 1}
            "
        ),
        "t.yaml:1:13: Tier t: apiVersion 'palisade.dev/v2' is not valid for kind Tier; use 'palisade.dev/v1'"
    );
    assert_eq!(
        error(
            "
            apiVersion: palisade.dev/v1
            kind: Namespace
            metadata: {name: prod}
            "
        ),
        "t.yaml:1:13: Namespace prod: apiVersion 'palisade.dev/v1' is not valid for kind Namespace; use 'v1'"
    );
    assert_eq!(
        error(
            "
            apiVersion: v1
            kind: NetworkPolicy
            metadata: {name: np}
            "
        ),
        "t.yaml:1:13: NetworkPolicy kubernetes/default/np: apiVersion 'v1' is not valid for kind NetworkPolicy; use 'networking.k8s.io/v1'"
    );
    assert_eq!(
        error(
            "
            kind: Tier
            metadata: {name: t}
            spec: {order: 1}
            "
        ),
        "t.yaml:1:1: Tier t: missing required field 'apiVersion'; Tier uses 'palisade.dev/v1'"
    );
}

#[test]
fn unknown_kind_names_the_known_ones() {
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Polcy\n"),
        "t.yaml:2:7: unknown kind 'Polcy' (did you mean 'Policy'?)"
    );
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Gadget\n"),
        "t.yaml:2:7: unknown kind 'Gadget'; known kinds: Tenant, Tier, Endpoint, Policy, Namespace, Pod, NetworkPolicy, List"
    );
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nmetadata: {name: x}\n"),
        "t.yaml:1:1: missing required field 'kind'; one of: Tenant, Tier, Endpoint, Policy, Namespace, Pod, NetworkPolicy, List"
    );
}

#[test]
fn a_document_must_be_a_mapping() {
    assert_eq!(
        error("- a\n- b\n"),
        "t.yaml:1:1: a resource must be a mapping with apiVersion, kind, metadata and spec; found a list"
    );
}

// ---- metadata ----

#[test]
fn names_are_required_and_dns_like() {
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {}\nspec: {order: 1}\n"),
        "t.yaml:3:11: missing required field 'name'"
    );
    assert_eq!(
        error(
            "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: Web_1}\nspec: {order: 1}\n"
        ),
        "t.yaml:3:18: name 'Web_1' is not valid: use lowercase letters, digits, '-' and '.', \
         starting and ending with a letter or digit, at most 253 characters"
    );
    let long = "a".repeat(254);
    let e = error(&format!(
        "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {{name: {long}}}\nspec: {{order: 1}}\n"
    ));
    assert!(
        e.starts_with(&format!("t.yaml:3:18: name '{long}' is not valid")),
        "{e}"
    );
}

#[test]
fn tenant_is_required_for_endpoints_and_policies() {
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web}\nspec: {node: n1, ips: [10.0.0.1]}\n"),
        "t.yaml:3:11: Endpoint web: missing required field 'tenant': every Endpoint belongs to a tenant"
    );
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec: {selector: all()}\n"),
        "t.yaml:3:11: Policy p: missing required field 'tenant': every Policy belongs to a tenant"
    );
}

#[test]
fn tenant_is_forbidden_for_tenants_and_tiers() {
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: t, tenant: acme}\nspec: {order: 1}\n"),
        "t.yaml:3:21: Tier t: 'tenant' is not allowed in a Tier: tiers are shared by all tenants; remove it"
    );
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: globex, tenant: acme}\n"),
        "t.yaml:3:26: Tenant globex: 'tenant' is not allowed in a Tenant: a tenant does not belong to another tenant; remove it"
    );
}

#[test]
fn labels_follow_kubernetes_syntax_and_avoid_reserved_prefixes() {
    let e = |labels: &str| {
        error(&format!(
            "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata:\n  name: web\n  tenant: acme\n  labels:\n    {labels}\nspec: {{node: n1, ips: [10.0.0.1]}}\n"
        ))
    };
    assert_eq!(
        e("Bad.Prefix/app: web"),
        "t.yaml:7:5: Endpoint acme/web: label key 'Bad.Prefix/app' is not valid: the prefix before '/' \
         must be a DNS name (lowercase letters, digits, '-' and '.', e.g. 'example.com')"
    );
    assert_eq!(
        e("-app: web"),
        "t.yaml:7:5: Endpoint acme/web: label key '-app' is not valid: the name must be 1 to 63 \
         characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    );
    assert_eq!(
        e("app: web server"),
        "t.yaml:7:10: Endpoint acme/web: label value 'web server' is not valid: at most 63 characters \
         of letters, digits, '-', '_' and '.', starting and ending with a letter or digit (or empty)"
    );
    let long = "v".repeat(64);
    assert!(e(&format!("app: {long}")).starts_with(&format!(
        "t.yaml:7:10: Endpoint acme/web: label value '{long}' is not valid"
    )));
    assert_eq!(
        e("palisade.dev/namespace: prod"),
        "t.yaml:7:5: Endpoint acme/web: label key 'palisade.dev/namespace' uses the reserved prefix \
         'palisade.dev/': palisade derives these labels itself; choose another key"
    );
    assert_eq!(
        e("nslabel.palisade.dev/team: a"),
        "t.yaml:7:5: Endpoint acme/web: label key 'nslabel.palisade.dev/team' uses the reserved prefix \
         'nslabel.palisade.dev/': palisade derives these labels itself; choose another key"
    );
    assert_eq!(
        e("version: 2"),
        "t.yaml:7:14: Endpoint acme/web: expected a string, found the integer 2; quote it to make it a string: \"2\""
    );
}

// ---- fields and types ----

#[test]
fn unknown_fields_suggest_or_list() {
    assert_eq!(
        error(&policy(
            "
            selector: app == 'db'
            ingress:
              - action: allow
                prots: [{port: 80}]
            "
        )),
        "t.yaml:8:7: Policy acme/db: unknown field 'prots' (did you mean 'ports'?)"
    );
    assert_eq!(
        error(&policy(
            "
            selector: app == 'db'
            ingress:
              - action: allow
                zzz: 1
            "
        )),
        "t.yaml:8:7: Policy acme/db: unknown field 'zzz'; valid fields: action, from, to, ports"
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - action: allow
                ports: [{port: '80'}]
            "
        )),
        "t.yaml:8:22: Policy acme/db: expected an integer, found the string '80'"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            order: high
            "
        )),
        "t.yaml:6:10: Policy acme/db: expected an integer, found the string 'high'"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress: {action: allow}
            "
        )),
        "t.yaml:6:12: Policy acme/db: expected a list, found a mapping"
    );
    assert_eq!(
        error(&endpoint(
            "
            node: 7
            ips: [10.0.0.1]
            "
        )),
        "t.yaml:5:9: Endpoint acme/web: expected a string, found the integer 7; quote it to make it a string: \"7\""
    );
}

#[test]
fn enum_values_suggest_the_close_one() {
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - action: alow
            "
        )),
        "t.yaml:7:15: Policy acme/db: unknown action 'alow' (did you mean 'allow'?)"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            mode: dryrun
            "
        )),
        "t.yaml:6:9: Policy acme/db: unknown mode 'dryrun'; use one of enforce, audit"
    );
}

#[test]
fn missing_required_spec_fields() {
    assert_eq!(
        error(&policy("tier: default\n")),
        "t.yaml:5:3: Policy acme/db: missing required field 'selector'"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - from: [{entity: world}]
            "
        )),
        "t.yaml:7:7: Policy acme/db: missing required field 'action'"
    );
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: t}\n"),
        "t.yaml:1:1: Tier t: missing required field 'spec'"
    );
    assert_eq!(
        error(&endpoint(
            "
            node:
            ips: [10.0.0.1]
            "
        )),
        "t.yaml:5:3: Endpoint acme/web: field 'node' has no value; it is required"
    );
}

// ---- ports ----

fn port_error(port: &str) -> String {
    error(&policy(&format!(
        "
        selector: all()
        ingress:
          - action: allow
            ports:
              - {port}
        "
    )))
}

#[test]
fn ports_are_1_to_65535() {
    assert_eq!(
        port_error("{port: 0}"),
        "t.yaml:9:18: Policy acme/db: port 0 is out of range: ports are 1..=65535"
    );
    assert_eq!(
        port_error("{port: 65536}"),
        "t.yaml:9:18: Policy acme/db: port 65536 is out of range: ports are 1..=65535"
    );
}

#[test]
fn end_port_needs_port_and_must_not_be_below_it() {
    assert_eq!(
        port_error("{port: 80, endPort: 79}"),
        "t.yaml:9:31: Policy acme/db: endPort 79 is below port 80: endPort must be >= port"
    );
    assert_eq!(
        port_error("{endPort: 90}"),
        "t.yaml:9:21: Policy acme/db: endPort requires port: set port to the first port of the range"
    );
}

#[test]
fn icmp_takes_type_and_code_not_ports() {
    assert_eq!(
        port_error("{protocol: ICMP, port: 8}"),
        "t.yaml:9:28: Policy acme/db: 'port' is not allowed for ICMP; match ICMP messages with 'type' and 'code'"
    );
    assert_eq!(
        port_error("{protocol: icmpv6, endPort: 8}"),
        "t.yaml:9:30: Policy acme/db: 'endPort' is not allowed for ICMPv6; match ICMP messages with 'type' and 'code'"
    );
    assert_eq!(
        port_error("{protocol: UDP, type: 8}"),
        "t.yaml:9:27: Policy acme/db: 'type' is only valid for ICMP and ICMPv6, not UDP; use 'port' and 'endPort'"
    );
    assert_eq!(
        port_error("{type: 8}"),
        "t.yaml:9:12: Policy acme/db: 'type' is only valid for ICMP and ICMPv6, not TCP; use 'port' and 'endPort'"
    );
    assert_eq!(
        port_error("{protocol: ICMP, type: 256}"),
        "t.yaml:9:34: Policy acme/db: type 256 is out of range: ICMP types are 0..=255"
    );
    assert_eq!(
        port_error("{protocol: ICMP, type: 3, code: -1}"),
        "t.yaml:9:43: Policy acme/db: code -1 is out of range: ICMP codes are 0..=255"
    );
    assert_eq!(
        port_error("{protocol: ICMP, code: 0}"),
        "t.yaml:9:28: Policy acme/db: 'code' requires 'type': name the ICMP type the code belongs to"
    );
    assert_eq!(
        port_error("{protocol: TPC, port: 1}"),
        "t.yaml:9:22: Policy acme/db: unknown protocol 'TPC' (did you mean 'TCP'?)"
    );
    assert_eq!(
        port_error("{protocol: GRE}"),
        "t.yaml:9:22: Policy acme/db: unknown protocol 'GRE'; use one of: TCP, UDP, SCTP, ICMP, ICMPv6"
    );
}

#[test]
fn protocols_are_case_insensitive_and_default_to_tcp() {
    use palisade_model::{PortMatch, Protocol};
    let intent = load(&with_acme(&policy(
        "
        selector: all()
        ingress:
          - action: allow
            ports:
              - {port: 80}
              - {protocol: udp, port: 53, endPort: 54}
              - {protocol: Sctp}
              - {protocol: icmp, type: 8, code: 0}
              - {protocol: ICMPV6}
        ",
    )));
    let ports = intent.policies[0].ingress.as_ref().unwrap()[0]
        .ports
        .clone()
        .unwrap();
    assert_eq!(
        ports,
        vec![
            PortMatch::Ports {
                protocol: Protocol::Tcp,
                port: Some(80),
                end_port: None
            },
            PortMatch::Ports {
                protocol: Protocol::Udp,
                port: Some(53),
                end_port: Some(54)
            },
            PortMatch::Ports {
                protocol: Protocol::Sctp,
                port: None,
                end_port: None
            },
            PortMatch::Icmp {
                protocol: Protocol::Icmp,
                icmp_type: Some(8),
                icmp_code: Some(0)
            },
            PortMatch::Icmp {
                protocol: Protocol::Icmpv6,
                icmp_type: None,
                icmp_code: None
            },
        ]
    );
}

// ---- CIDRs ----

fn peer_error(peer: &str) -> String {
    error(&policy(&format!(
        "
        selector: all()
        egress:
          - action: allow
            to:
              - {peer}
        "
    )))
}

#[test]
fn cidrs_must_be_well_formed() {
    assert_eq!(
        peer_error("{cidr: 10.0.0.1/8}"),
        "t.yaml:9:18: Policy acme/db: 10.0.0.1/8: host bits are set; did you mean 10.0.0.0/8?"
    );
    assert_eq!(
        peer_error("{cidr: 10.0.0/8}"),
        "t.yaml:9:18: Policy acme/db: '10.0.0/8' is not a valid CIDR; write address/prefix, e.g. 10.0.0.0/8"
    );
    assert_eq!(
        peer_error("{cidr: 192.168.1.1}"),
        "t.yaml:9:18: Policy acme/db: '192.168.1.1' has no prefix length; write 192.168.1.1/32 for this one address"
    );
    assert_eq!(
        peer_error("{cidr: '2001:db8::1'}"),
        "t.yaml:9:18: Policy acme/db: '2001:db8::1' has no prefix length; write 2001:db8::1/128 for this one address"
    );
}

#[test]
fn except_must_lie_inside_the_cidr_and_share_its_family() {
    assert_eq!(
        peer_error("{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 192.168.0.0/16]}"),
        "t.yaml:9:52: Policy acme/db: except 192.168.0.0/16 is not inside cidr 10.0.0.0/8; an except range must lie inside its cidr"
    );
    assert_eq!(
        peer_error("{cidr: 10.0.0.0/8, except: ['fd00::/8']}"),
        "t.yaml:9:39: Policy acme/db: except fd00::/8 is IPv6 but cidr 10.0.0.0/8 is IPv4; an except range must be of the cidr's family"
    );
}

// ---- peers ----

#[test]
fn a_peer_has_exactly_one_of_selector_cidr_entity() {
    assert_eq!(
        peer_error("{selector: all(), entity: world}"),
        "t.yaml:9:11: Policy acme/db: a peer takes only one of 'selector', 'cidr' and 'entity', this one has selector and entity; write one peer for each"
    );
    assert_eq!(
        peer_error("{}"),
        "t.yaml:9:11: Policy acme/db: a peer needs one of 'selector', 'cidr', 'entity' or 'namespaceSelector'"
    );
    assert_eq!(
        peer_error("{entity: world, except: [10.0.0.0/8]}"),
        "t.yaml:9:27: Policy acme/db: 'except' is only valid together with 'cidr'"
    );
    assert_eq!(
        peer_error("{cidr: 10.0.0.0/8, namespaceSelector: all()}"),
        "t.yaml:9:30: Policy acme/db: 'namespaceSelector' combines only with 'selector', not with 'cidr'"
    );
    assert_eq!(
        peer_error("{entity: moon}"),
        "t.yaml:9:20: Policy acme/db: unknown entity 'moon'; use one of world, host, all"
    );
}

// ---- rules ----

#[test]
fn empty_peer_and_port_lists_are_errors_in_native_policies() {
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - action: allow
                from: []
            "
        )),
        "t.yaml:8:13: Policy acme/db: an empty 'from' matches no peer; omit 'from' to match any peer"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            egress:
              - action: allow
                to: []
            "
        )),
        "t.yaml:8:11: Policy acme/db: an empty 'to' matches no peer; omit 'to' to match any peer"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - action: allow
                ports: []
            "
        )),
        "t.yaml:8:14: Policy acme/db: an empty 'ports' matches no traffic; omit 'ports' to match any protocol and port"
    );
}

#[test]
fn from_only_in_ingress_and_to_only_in_egress() {
    assert_eq!(
        error(&policy(
            "
            selector: all()
            egress:
              - action: allow
                from: [{entity: world}]
            "
        )),
        "t.yaml:8:7: Policy acme/db: 'from' is only valid in ingress rules; egress rules name their peers with 'to'"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            ingress:
              - action: allow
                to: [{entity: world}]
            "
        )),
        "t.yaml:8:7: Policy acme/db: 'to' is only valid in egress rules; ingress rules name their peers with 'from'"
    );
}

#[test]
fn types_must_list_every_direction_with_rules() {
    assert_eq!(
        error(&policy(
            "
            selector: all()
            types: [egress]
            ingress: []
            "
        )),
        "t.yaml:7:3: Policy acme/db: the policy has 'ingress' rules but 'types' does not list ingress; add ingress to 'types' or remove the 'ingress' rules"
    );
    assert_eq!(
        error(&policy(
            "
            selector: all()
            types: [ingres]
            "
        )),
        "t.yaml:6:11: Policy acme/db: unknown type 'ingres' (did you mean 'ingress'?)"
    );
}

// ---- selectors ----

#[test]
fn selector_errors_point_inside_the_document() {
    // Plain scalar: the column of the selector plus the offset in it.
    assert_eq!(
        error(&policy("selector: app == 'db' && role == web\n")),
        "t.yaml:5:36: Policy acme/db: selector column 24: expected a quoted value after '==', found 'web'"
    );
    // Quoted scalar: one more for the quote.
    assert_eq!(
        error(&policy("selector: \"app == 'db' && role == web\"\n")),
        "t.yaml:5:37: Policy acme/db: selector column 24: expected a quoted value after '==', found 'web'"
    );
    // Block scalar: the position of its text, the offset in the message.
    assert_eq!(
        error(&policy("selector: >-\n  app == 'db' &&\n  role == web\n")),
        "t.yaml:6:5: Policy acme/db: selector column 24: expected a quoted value after '==', found 'web'"
    );
    // In a peer (the flow mapping's '}' ends the plain scalar `has(app`).
    assert_eq!(
        peer_error("{selector: has(app}"),
        "t.yaml:9:29: Policy acme/db: selector column 8: expected ')' after the key in 'has(', found the end of the selector"
    );
}

#[test]
fn label_selector_objects_are_checked() {
    assert_eq!(
        error(&policy(
            "
            selector:
              matchExpressions:
                - {key: tier, operator: In}
            "
        )),
        "t.yaml:7:21: Policy acme/db: operator In needs 'values' with at least one value"
    );
    assert_eq!(
        error(&policy(
            "
            selector:
              matchExpressions:
                - {key: tier, operator: NotIn, values: []}
            "
        )),
        "t.yaml:7:46: Policy acme/db: operator NotIn needs at least one value in 'values'"
    );
    assert_eq!(
        error(&policy(
            "
            selector:
              matchExpressions:
                - {key: tier, operator: Exists, values: [a]}
            "
        )),
        "t.yaml:7:39: Policy acme/db: operators Exists and DoesNotExist take no 'values'; remove them"
    );
    assert_eq!(
        error(&policy(
            "
            selector:
              matchExpressions:
                - {key: tier, operator: in, values: [a]}
            "
        )),
        "t.yaml:7:31: Policy acme/db: unknown operator 'in' (did you mean 'In'?)"
    );
    assert_eq!(
        error(&policy(
            "
            selector:
              matchLabel: {app: web}
            "
        )),
        "t.yaml:6:5: Policy acme/db: unknown field 'matchLabel' (did you mean 'matchLabels'?)"
    );
    assert_eq!(
        error(&policy("selector: 42\n")),
        "t.yaml:5:13: Policy acme/db: expected a selector: a string such as \"app == 'web'\", or a mapping with matchLabels and matchExpressions; found the integer 42"
    );
}

// ---- endpoints ----

#[test]
fn endpoint_fields() {
    assert_eq!(
        error(&endpoint("node: n1\nips: []\n")),
        "t.yaml:6:8: Endpoint acme/web: 'ips' is empty; an endpoint needs at least one address"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.300]\n")),
        "t.yaml:6:9: Endpoint acme/web: '10.0.0.300' is not a valid IP address; write e.g. 10.0.0.5 or fd00::5"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1, 10.0.0.1]\n")),
        "t.yaml:6:19: Endpoint acme/web: IP 10.0.0.1 is listed twice; remove one"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\nmac: 02:00:0a:00:01\n")),
        "t.yaml:7:8: Endpoint acme/web: mac '02:00:0a:00:01' is not valid: write six two-digit hex bytes separated by ':', e.g. 02:00:0a:00:01:0a"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\nmac: 01:00:5e:00:00:01\n")),
        "t.yaml:7:8: Endpoint acme/web: mac '01:00:5e:00:00:01' is a multicast address (lowest bit of the first byte set); use a unicast address such as 02:00:0a:00:01:0a"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\nmac: '00:00:00:00:00:00'\n")),
        "t.yaml:7:8: Endpoint acme/web: mac '00:00:00:00:00:00' is all zero; use a locally administered unicast address such as 02:00:0a:00:01:0a"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\ninterface: veth-much-too-long\n")),
        "t.yaml:7:14: Endpoint acme/web: interface 'veth-much-too-long' is 18 bytes long; Linux allows at most 15"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\ninterface: a/b\n")),
        "t.yaml:7:14: Endpoint acme/web: interface 'a/b' is not valid: it must not contain '/' or whitespace, nor be '.' or '..'"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\ninterface: 'a b'\n")),
        "t.yaml:7:14: Endpoint acme/web: interface 'a b' is not valid: it must not contain '/' or whitespace, nor be '.' or '..'"
    );
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1]\nlab: {serve: [tcp/80, http/80]}\n")),
        "t.yaml:7:25: Endpoint acme/web: 'http/80' is not a valid serve port: write protocol/port, e.g. tcp/80 or udp/53 (port 1..=65535)"
    );
}

// ---- tenants ----

#[test]
fn vni_range_and_uniqueness() {
    assert_eq!(
        errors("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a}\nspec: {vni: 0}\n"),
        ["t.yaml:4:13: Tenant a: vni 0 is out of range: VNIs are 1..=16777215"]
    );
    assert_eq!(
        errors("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a}\nspec: {vni: 16777216}\n"),
        ["t.yaml:4:13: Tenant a: vni 16777216 is out of range: VNIs are 1..=16777215"]
    );
    assert_eq!(
        errors(&dedent(
            "
            apiVersion: palisade.dev/v1
            kind: Tenant
            metadata: {name: b}
            spec: {vni: 100}
            ---
            apiVersion: palisade.dev/v1
            kind: Tenant
            metadata: {name: a}
            spec: {vni: 100}
            "
        )),
        ["t.yaml:9:13: Tenant a: vni 100 is already used by tenant b; give every tenant its own vni (or leave it out to have one allocated)"]
    );
    assert_eq!(
        errors("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a}\nspec: {defaultAction: allow}\n"),
        ["t.yaml:4:23: Tenant a: unknown defaultAction 'allow'; use one of deny, kubernetes"]
    );
}

// ---- across resources ----

#[test]
fn duplicate_names_per_kind_tenant_and_namespace() {
    let web = |ns: &str, ip: &str| {
        format!(
            "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {{name: web, tenant: acme{ns}}}\nspec: {{node: n1, ips: [{ip}]}}\n---\n"
        )
    };
    let text = format!(
        "{}{}{ACME}",
        web("", "10.0.0.1"),
        web("", "10.0.0.2"),
        ACME = crate::common::ACME
    );
    assert_eq!(
        errors(&text),
        ["t.yaml:8:18: Endpoint acme/web: duplicate Endpoint acme:web (first defined at t.yaml:3:18); endpoint names must be unique per tenant and namespace"]
    );
    // Same name in another namespace is another endpoint.
    let text = format!(
        "{}{}{}",
        web("", "10.0.0.1"),
        web(", namespace: prod", "10.0.0.2"),
        crate::common::ACME
    );
    assert_eq!(load(&text).endpoints.len(), 2);
    // Policies likewise.
    let p = "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: p, tenant: acme}\nspec: {selector: all()}\n---\n";
    assert_eq!(
        errors(&format!("{p}{p}{}", crate::common::ACME)),
        ["t.yaml:8:18: Policy acme/p: duplicate Policy acme:p (first defined at t.yaml:3:18); policy names must be unique per tenant and namespace"]
    );
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n";
    assert_eq!(
        errors(&format!("{ns}{ns}{}", crate::common::ACME)),
        ["t.yaml:7:18: Namespace prod: duplicate Namespace prod (first defined at t.yaml:3:18); remove one"]
    );
    let t = "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1}\n---\n";
    assert_eq!(
        errors(&format!("{t}{t}{}", crate::common::ACME)),
        ["t.yaml:8:18: Tier t: duplicate Tier t (first defined at t.yaml:3:18); remove one"]
    );
}

#[test]
fn references_to_tenants_and_tiers_must_resolve() {
    assert_eq!(
        error("apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web, tenant: acne}\nspec: {node: n1, ips: [10.0.0.1]}\n"),
        "t.yaml:3:31: Endpoint acne/web: tenant 'acne' has no Tenant resource (did you mean 'acme'?); define it with kind: Tenant (known tenants: acme)"
    );
    assert_eq!(
        error(&policy("selector: all()\ntier: securty\n")),
        "t.yaml:6:9: Policy acme/db: tier 'securty' has no Tier resource; define it with kind: Tier, or leave 'tier' out to use 'default'"
    );
    // `default` needs no Tier resource.
    let intent = load(&with_acme(&policy("selector: all()\ntier: default\n")));
    assert_eq!(intent.policies[0].tier, "default");
}

#[test]
fn endpoint_addresses_inside_cidrs_and_unique_per_tenant() {
    assert_eq!(
        error(&endpoint("node: n1\nips: [10.0.0.1, 10.9.0.1]\n")),
        "t.yaml:6:19: Endpoint acme/web: IP 10.9.0.1 is outside the cidrs of tenant acme (10.0.0.0/16, fd00::/64); use an address inside them or add a cidr to the tenant"
    );
    let text = dedent(
        "
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme}
        spec: {node: n1, ips: [10.0.0.1]}
        ---
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: db, tenant: acme}
        spec: {node: n1, ips: ['fd00::1', 10.0.0.1]}
        ",
    );
    assert_eq!(
        errors(&format!("{text}---\n{}", crate::common::ACME)),
        ["t.yaml:9:35: Endpoint acme/db: IP 10.0.0.1 is already used by endpoint acme:web (at t.yaml:4:24); endpoints of a tenant need distinct addresses"]
    );
}

#[test]
fn yaml_problems_have_positions() {
    assert_eq!(
        errors("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a}\nkind: Tier\n"),
        ["t.yaml:4:1: duplicate key 'kind' (first at line 2); remove one of them"]
    );
    let e = errors("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: a\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.yaml:4:1: YAML syntax error: "), "{e:?}");
}

#[test]
fn changing_policies_in_place_equals_building_again_and_refuses_what_loading_refuses() {
    let base = with_acme(
        "
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme, labels: {app: web}}
        spec: {node: n1, ips: [10.0.0.1]}
        ---
        apiVersion: palisade.dev/v1
        kind: Policy
        metadata: {name: a, tenant: acme}
        spec: {selector: app == 'web', ingress: [{action: allow}]}
        ---
        apiVersion: palisade.dev/v1
        kind: Policy
        metadata: {name: b, tenant: acme}
        spec: {selector: all(), egress: [{action: deny}]}
        ",
    );
    let mut intent = load(&base);
    // "b" removed, "c" new, "a" edited: what loading that text gives.
    let expected = load(&with_acme(
        "
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme, labels: {app: web}}
        spec: {node: n1, ips: [10.0.0.1]}
        ---
        apiVersion: palisade.dev/v1
        kind: Policy
        metadata: {name: a, tenant: acme}
        spec: {selector: app == 'web', ingress: [{action: deny}]}
        ---
        apiVersion: palisade.dev/v1
        kind: Policy
        metadata: {name: c, tenant: acme}
        spec: {selector: all()}
        ",
    ));
    let policy = |intent: &palisade_model::Intent, name: &str| {
        intent
            .policies
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .clone()
    };
    let gone = palisade_model::PolicyName::of(&policy(&intent, "b"));
    let put = vec![policy(&expected, "c"), policy(&expected, "a")];
    intent.change_policies(put, &[gone]).unwrap();
    assert_eq!(intent, expected);

    // A policy naming a tier that does not exist: the error loading gives,
    // and nothing changes.
    let before = intent.clone();
    let mut bad = policy(&expected, "c");
    bad.tier = "securty".into();
    let diags = intent.change_policies(vec![bad], &[]).unwrap_err();
    assert!(
        diags
            .to_string()
            .contains("tier 'securty' has no Tier resource"),
        "{diags}"
    );
    assert_eq!(intent, before);
    let mut stranger = policy(&expected, "c");
    stranger.tenant = "globex".into();
    let diags = intent.change_policies(vec![stranger], &[]).unwrap_err();
    assert!(diags.to_string().contains("globex"), "{diags}");
    assert_eq!(intent, before);
}
