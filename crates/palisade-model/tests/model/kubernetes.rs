//! Kubernetes import: Pods, Namespaces and NetworkPolicies become native
//! resources with Kubernetes semantics.

use palisade_model::{
    load_paths, Endpoint, Intent, LoadOptions, Peer, Policy, PortMatch, Protocol, Rule, ServePort,
    TenantDefault,
};

use crate::common::{dedent, errors, load};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pods.yaml");

/// The fixture's pods plus the NetworkPolicy documents given.
fn with_pods(policies: &str) -> Intent {
    let pods = std::fs::read_to_string(FIXTURE).unwrap();
    load(&format!("{pods}---\n{}", dedent(policies)))
}

/// The one NetworkPolicy of `spec` (indented YAML) in namespace `shop`.
fn network_policy(spec: &str) -> Policy {
    let spec: String = dedent(spec).lines().map(|l| format!("  {l}\n")).collect();
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: shop}}\nspec:\n{spec}"
    );
    load(&text).policies.remove(0)
}

fn selector_text(peer: &Peer) -> &str {
    match peer {
        Peer::Selector(s) => &s.text,
        other => panic!("not a selector peer: {other:?}"),
    }
}

fn allow(peers: Option<Vec<Peer>>, ports: Option<Vec<PortMatch>>) -> Rule {
    Rule {
        action: palisade_model::Action::Allow,
        peers,
        ports,
    }
}

fn tcp(port: Option<u16>, end_port: Option<u16>) -> PortMatch {
    PortMatch::Ports {
        protocol: Protocol::Tcp,
        port,
        end_port,
    }
}

#[test]
fn pods_become_endpoints_of_the_kubernetes_tenant() {
    let intent = load_paths(&[FIXTURE], &LoadOptions::default()).unwrap();
    assert_eq!(
        intent.tenant("kubernetes").default_action,
        TenantDefault::Kubernetes
    );
    let refs: Vec<String> = intent.endpoints.iter().map(Endpoint::full_ref).collect();
    assert_eq!(refs, ["kubernetes:shop/db-0", "kubernetes:shop/web-7f9c"]);
    let web = &intent.endpoints[1];
    assert_eq!(web.node, "node-1");
    assert_eq!(
        web.ips,
        [
            "10.244.1.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00:244::5".parse().unwrap()
        ]
    );
    assert_eq!(
        web.serve,
        [
            ServePort {
                protocol: Protocol::Tcp,
                port: 80
            },
            ServePort {
                protocol: Protocol::Udp,
                port: 53
            }
        ]
    );
    let labels: Vec<(&str, &str)> = web
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("app", "web"),
            ("nslabel.palisade.dev/kubernetes.io/metadata.name", "shop"),
            ("nslabel.palisade.dev/team", "payments"),
            ("palisade.dev/namespace", "shop"),
            ("pod-template-hash", "7f9c"),
        ]
    );
    let db = &intent.endpoints[0];
    assert_eq!(db.ips, ["10.244.2.7".parse::<std::net::IpAddr>().unwrap()]);
    assert!(db.serve.is_empty());
}

#[test]
fn the_kubernetes_tenant_name_is_an_option() {
    let opts = LoadOptions {
        kubernetes_tenant: "cluster-a".into(),
    };
    let intent = load_paths(&[FIXTURE], &opts).unwrap();
    assert_eq!(intent.endpoints[0].full_ref(), "cluster-a:shop/db-0");
}

#[test]
fn pods_need_a_node_and_an_ip() {
    let pod = |spec: &str, status: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: shop}}\nspec: {spec}\nstatus: {status}\n"
        )
    };
    assert_eq!(
        errors(&pod("{containers: []}", "{podIP: 10.0.0.1}")),
        ["t.yaml:4:7: Pod kubernetes/shop/p: missing spec.nodeName: palisade needs the node a pod runs on; export pods after the scheduler has placed them (kubectl get pods -o yaml)"]
    );
    assert_eq!(
        errors(&pod("{nodeName: n1}", "{phase: Pending}")),
        ["t.yaml:5:9: Pod kubernetes/shop/p: pod 'p' has no IP (status.podIPs and status.podIP are empty); palisade needs the pod's address: export pods once they are running"]
    );
    assert_eq!(
        errors("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop, lables: {}}\nspec: {nodeName: n1}\nstatus: {podIP: 10.0.0.1}\n"),
        ["t.yaml:3:38: Pod kubernetes/shop/p: unknown field 'lables' (did you mean 'labels'?)"]
    );
    // Two pods with one IP collide like endpoints do.
    let two = format!(
        "{}---\n{}",
        pod("{nodeName: n1}", "{podIP: 10.0.0.1}"),
        pod("{nodeName: n1}", "{podIP: 10.0.0.1}").replace("name: p,", "name: q,")
    );
    assert_eq!(
        errors(&two),
        ["t.yaml:11:17: Pod kubernetes/shop/q: IP 10.0.0.1 is already used by endpoint kubernetes:shop/p (at t.yaml:5:17); endpoints of a tenant need distinct addresses"]
    );
}

#[test]
fn a_network_policy_is_a_namespaced_policy_in_the_default_tier() {
    let p = network_policy("podSelector: {matchLabels: {app: db}}\n");
    assert_eq!(p.tenant, "kubernetes");
    assert_eq!(p.namespace.as_deref(), Some("shop"));
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, None);
    assert_eq!(
        p.selector.text,
        "palisade.dev/namespace == 'shop' && app == 'db'"
    );
    // An empty podSelector is every pod of the namespace.
    let p = network_policy("podSelector: {}\n");
    assert_eq!(p.selector.text, "palisade.dev/namespace == 'shop'");
}

#[test]
fn policy_types_default_as_in_kubernetes() {
    // No policyTypes: Ingress always.
    let p = network_policy("podSelector: {}\n");
    assert_eq!((p.ingress, p.egress), (Some(vec![]), None));
    // No policyTypes: Egress too when there are egress rules.
    let p = network_policy("podSelector: {}\negress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, Some(vec![allow(None, None)]));
    // ... but not for an empty egress list (Kubernetes looks at len(egress)).
    let p = network_policy("podSelector: {}\negress: []\n");
    assert_eq!(p.egress, None);
    // Explicit policyTypes: exactly those, a listed direction without rules is isolation.
    let p = network_policy("podSelector: {}\npolicyTypes: [Egress]\n");
    assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    let p = network_policy("podSelector: {}\npolicyTypes: [Ingress, Egress]\ningress: [{}]\n");
    assert_eq!(p.ingress, Some(vec![allow(None, None)]));
    assert_eq!(p.egress, Some(vec![]));
    // Rules of a direction policyTypes does not list do nothing.
    let p = network_policy("podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]\n");
    assert_eq!(p.ingress, None);
}

#[test]
fn empty_or_absent_from_and_ports_mean_any() {
    let p = network_policy(
        "
        podSelector: {}
        ingress:
          - {}
          - from: []
            ports: []
          - ports: [{port: 80}]
        ",
    );
    assert_eq!(
        p.ingress.unwrap(),
        [
            allow(None, None),
            allow(None, None),
            allow(None, Some(vec![tcp(Some(80), None)])),
        ]
    );
}

#[test]
fn peers_with_pod_and_namespace_selectors() {
    let p = network_policy(
        "
        podSelector: {}
        ingress:
          - from:
              - podSelector: {matchLabels: {app: web}}
              - namespaceSelector: {matchLabels: {team: payments}}
              - namespaceSelector: {matchLabels: {team: payments}}
                podSelector: {matchExpressions: [{key: app, operator: In, values: [web, api]}]}
              - namespaceSelector: {}
        ",
    );
    let rule = &p.ingress.unwrap()[0];
    let peers = rule.peers.as_ref().unwrap();
    let texts: Vec<&str> = peers.iter().map(selector_text).collect();
    assert_eq!(
        texts,
        [
            "palisade.dev/namespace == 'shop' && app == 'web'",
            "has(palisade.dev/namespace) && nslabel.palisade.dev/team == 'payments'",
            "has(palisade.dev/namespace) && nslabel.palisade.dev/team == 'payments' && app in {'api', 'web'}",
            "has(palisade.dev/namespace)",
        ]
    );
}

#[test]
fn peer_selectors_select_the_pods_kubernetes_would() {
    let intent = with_pods(
        "
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: db, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress:
            - from:
                - namespaceSelector: {matchLabels: {team: payments}}
                  podSelector: {matchLabels: {app: web}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-x, namespace: other, labels: {app: web}}
        spec: {nodeName: node-1}
        status: {podIP: 10.244.3.3}
        ",
    );
    let p = &intent.policies[0];
    let selected = |peer: &Peer| match peer {
        Peer::Selector(s) => intent
            .endpoints
            .iter()
            .filter(|e| s.matches(&e.labels))
            .map(Endpoint::full_ref)
            .collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    let subjects: Vec<String> = intent
        .endpoints
        .iter()
        .filter(|e| p.selector.matches(&e.labels))
        .map(Endpoint::full_ref)
        .collect();
    assert_eq!(subjects, ["kubernetes:shop/db-0"]);
    let peer = &p.ingress.as_ref().unwrap()[0].peers.as_ref().unwrap()[0];
    // web-x has app=web but its namespace lacks team=payments.
    assert_eq!(selected(peer), ["kubernetes:shop/web-7f9c"]);
}

#[test]
fn ip_blocks_with_except() {
    let p = network_policy(
        "
        podSelector: {}
        egress:
          - to:
              - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}
        ",
    );
    let rules = p.egress.unwrap();
    assert_eq!(
        rules[0].peers.as_ref().unwrap()[0],
        Peer::Cidr {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec![
                "10.1.0.0/16".parse().unwrap(),
                "10.2.0.0/16".parse().unwrap()
            ],
        }
    );
}

#[test]
fn ports_default_to_tcp_and_take_end_port() {
    let p = network_policy(
        "
        podSelector: {}
        ingress:
          - ports:
              - port: 5432
              - {protocol: UDP, port: 30000, endPort: 32767}
              - protocol: SCTP
        ",
    );
    assert_eq!(
        p.ingress.unwrap()[0].ports.clone().unwrap(),
        [
            tcp(Some(5432), None),
            PortMatch::Ports {
                protocol: Protocol::Udp,
                port: Some(30000),
                end_port: Some(32767)
            },
            PortMatch::Ports {
                protocol: Protocol::Sctp,
                port: None,
                end_port: None
            },
        ]
    );
}

/// Errors of a NetworkPolicy whose spec lines follow.
fn np_errors(spec: &str) -> Vec<String> {
    let spec: String = dedent(spec).lines().map(|l| format!("  {l}\n")).collect();
    errors(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: shop}}\nspec:\n{spec}"
    ))
}

#[test]
fn network_policy_errors() {
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - ports: [{port: http}]\n"),
        ["t.yaml:7:22: NetworkPolicy kubernetes/shop/np: named ports are not supported; use the port number instead of 'http'"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - ports: [{port: 80, endPort: 70}]\n"),
        ["t.yaml:7:35: NetworkPolicy kubernetes/shop/np: endPort 70 is below port 80: endPort must be >= port"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - ports: [{endPort: 70}]\n"),
        ["t.yaml:7:25: NetworkPolicy kubernetes/shop/np: endPort requires port: set port to the first port of the range"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - ports: [{protocol: ICMP}]\n"),
        ["t.yaml:7:26: NetworkPolicy kubernetes/shop/np: protocol ICMP is not supported in a NetworkPolicy; Kubernetes allows TCP, UDP and SCTP"]
    );
    assert_eq!(
        np_errors("podSelctor: {}\n"),
        ["t.yaml:5:3: NetworkPolicy kubernetes/shop/np: unknown field 'podSelctor' (did you mean 'podSelector'?)"]
    );
    assert_eq!(
        np_errors("podSelector: {}\negress:\n  - from: []\n"),
        ["t.yaml:7:7: NetworkPolicy kubernetes/shop/np: unknown field 'from'; valid fields: to, ports"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n"),
        ["t.yaml:7:15: NetworkPolicy kubernetes/shop/np: 'ipBlock' cannot be combined with 'podSelector' or 'namespaceSelector' in one peer; write a separate peer"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - from: [{}]\n"),
        ["t.yaml:7:14: NetworkPolicy kubernetes/shop/np: a peer needs 'podSelector', 'namespaceSelector' or 'ipBlock'"]
    );
    assert_eq!(
        np_errors("podSelector: {}\ningress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]\n"),
        ["t.yaml:7:52: NetworkPolicy kubernetes/shop/np: except 11.0.0.0/8 is not inside cidr 10.0.0.0/8; an except range must lie inside its cidr"]
    );
    assert_eq!(
        np_errors("podSelector: {}\npolicyTypes: [ingress]\n"),
        ["t.yaml:6:17: NetworkPolicy kubernetes/shop/np: unknown policy type 'ingress' (did you mean 'Ingress'?)"]
    );
    // The expression form is palisade's, not Kubernetes'.
    assert_eq!(
        np_errors("podSelector: app == 'db'\n"),
        ["t.yaml:5:16: NetworkPolicy kubernetes/shop/np: expected a mapping, found the string 'app == 'db''"]
    );
}
