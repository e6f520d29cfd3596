//! Loading: files, directories, JSON, multi-document texts, `List`s, the REST
//! entry points, and what validation fills in (VNIs, tiers, coverage of
//! directions, namespaces).

use std::fs;
use std::path::Path;

use palisade_model::{
    load_paths, load_str, resource_from_json, Direction, Endpoint, Intent, LoadOptions, Namespace,
    Peer, Policy, Resource, Rule, Selector, Tenant, TenantDefault, Tier, TierDefault,
};
use serde_json::json;

use crate::common::{dedent, errors, load, with_acme, ACME};

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn endpoint_doc(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {{name: {name}, tenant: acme, labels: {{app: {name}}}}}\nspec: {{node: n1, ips: ['{ip}']}}\n"
    )
}

#[test]
fn all_errors_of_all_files_are_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", ACME);
    write(
        dir.path(),
        "b.yaml",
        "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web, tenant: acme}\nspec: {node: n1, ips: [10.0.0.1], mac: zz}\n",
    );
    write(
        dir.path(),
        "c.yaml",
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: p, tenant: acme}\nspec:\n  selector: all()\n  ingress:\n    - action: allow\n      prots: []\n",
    );
    let b = dir.path().join("b.yaml");
    let c = dir.path().join("c.yaml");
    let err = load_paths(
        &[dir.path().join("a.yaml"), b.clone(), c.clone()],
        &LoadOptions::default(),
    )
    .unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:4:40: Endpoint acme/web: mac 'zz' is not valid: write six two-digit hex bytes separated by ':', e.g. 02:00:0a:00:01:0a",
                b.display()
            ),
            format!(
                "{}:8:7: Policy acme/p: unknown field 'prots' (did you mean 'ports'?)",
                c.display()
            ),
        ]
    );
    // Display of the whole set: one problem per line.
    assert_eq!(err.to_string(), lines.join("\n"));
}

#[test]
fn errors_are_collected_within_a_document_too() {
    let text = with_acme(
        "
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: Web, tenant: acme}
        spec: {node: N1, ips: [10.0.0.x], interfce: eth1}
        ",
    );
    assert_eq!(errors(&text).len(), 4, "{:#?}", errors(&text));
}

#[test]
fn a_directory_loads_every_yaml_yml_json_file_recursively_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tenants.yaml", ACME);
    write(dir.path(), "eps/b.yml", &endpoint_doc("b", "10.0.0.2"));
    write(dir.path(), "eps/a/a.yaml", &endpoint_doc("a", "10.0.0.1"));
    write(
        dir.path(),
        "eps/c.json",
        r#"{"apiVersion": "palisade.dev/v1", "kind": "Endpoint",
            "metadata": {"name": "c", "tenant": "acme"},
            "spec": {"node": "n1", "ips": ["10.0.0.3"]}}"#,
    );
    // Not read: other extensions and hidden entries.
    write(dir.path(), "eps/notes.txt", "not yaml: [");
    write(dir.path(), ".hidden/x.yaml", "not: [valid");
    write(dir.path(), "eps/.swap.yaml", "not: [valid");
    let intent = load_paths(&[dir.path()], &LoadOptions::default()).unwrap();
    let names: Vec<&str> = intent.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    // Errors name files by the path they were found under, in path order.
    write(dir.path(), "eps/b.yml", "kind: Nope\n");
    write(dir.path(), "eps/a/a.yaml", "kind: Nope\n");
    let err = load_paths(&[dir.path()], &LoadOptions::default()).unwrap_err();
    let files: Vec<String> = err.iter().map(|d| d.file.clone().unwrap()).collect();
    let a = dir.path().join("eps/a/a.yaml").display().to_string();
    let b = dir.path().join("eps/b.yml").display().to_string();
    assert_eq!(files, [a, b]);
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let err = load_paths(
        &["/nonexistent/palisade-model-test"],
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.len(), 1);
    let line = err.to_string();
    assert!(
        line.starts_with("/nonexistent/palisade-model-test: cannot read: "),
        "{line}"
    );
}

#[test]
fn json_input_is_read_with_positions() {
    let text = r#"{
  "apiVersion": "palisade.dev/v1",
  "kind": "Tenant",
  "metadata": {"name": "acme"},
  "spec": {"vni": "7"}
}"#;
    assert_eq!(
        errors(text),
        ["t.yaml:5:19: Tenant acme: expected an integer, found the string '7'"]
    );
    let intent = load(&text.replace("\"7\"", "7"));
    assert_eq!(intent.tenants["acme"].vni, Some(7));
}

#[test]
fn multi_document_text_with_empty_documents_and_lists() {
    let text = dedent(
        "
        # intent for acme
        ---
        apiVersion: palisade.dev/v1
        kind: Tenant
        metadata: {name: acme}
        ---
        # nothing here
        ---
        apiVersion: v1
        kind: List
        items:
          - apiVersion: palisade.dev/v1
            kind: Endpoint
            metadata: {name: web, tenant: acme}
            spec: {node: n1, ips: [10.0.0.1]}
          - apiVersion: palisade.dev/v1
            kind: Endpoint
            metadata: {name: db, tenant: acme}
            spec: {node: n1, ips: [10.0.0.1]}
        ...
        ",
    );
    assert_eq!(
        errors(&text),
        ["t.yaml:19:28: Endpoint acme/db: IP 10.0.0.1 is already used by endpoint acme:web (at t.yaml:15:28); endpoints of a tenant need distinct addresses"]
    );
    let intent = load(&text.replace("ips: [10.0.0.1]}\n...", "ips: [10.0.0.2]}\n..."));
    assert_eq!(intent.endpoints.len(), 2);
    assert_eq!(intent.endpoints[0].full_ref(), "acme:db");
}

#[test]
fn coverage_of_directions() {
    let policy = |spec: &str| {
        let text = format!(
            "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: p, tenant: acme}}\nspec: {spec}\n---\n{ACME}"
        );
        load(&text).policies.remove(0)
    };
    let p = policy("{selector: all()}");
    assert_eq!((p.ingress, p.egress), (None, None));
    let p = policy("{selector: all(), ingress: []}");
    assert_eq!((p.ingress, p.egress), (Some(vec![]), None));
    let p = policy("{selector: all(), types: [egress]}");
    assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    let p = policy("{selector: all(), types: [ingress, egress], egress: [{action: deny}]}");
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(
        p.rules(Direction::Egress).unwrap(),
        [Rule {
            action: palisade_model::Action::Deny,
            peers: None,
            ports: None
        }]
    );
    // `ingress:` with no value is absent, as in Kubernetes.
    let p = policy("{selector: all(), ingress: ~}");
    assert_eq!(p.ingress, None);
}

#[test]
fn defaults_tiers_and_vnis() {
    let intent = load(&dedent(
        "
        apiVersion: palisade.dev/v1
        kind: Tenant
        metadata: {name: acme}
        spec: {vni: 42}
        ---
        apiVersion: palisade.dev/v1
        kind: Tenant
        metadata: {name: globex}
        ---
        apiVersion: palisade.dev/v1
        kind: Tier
        metadata: {name: security}
        spec: {order: 10, defaultAction: pass}
        ",
    ));
    assert_eq!(intent.tenant("acme").vni, Some(42));
    assert_eq!(intent.tenant("acme").default_action, TenantDefault::Deny);
    let globex_vni = intent.tenant("globex").vni.unwrap();
    assert!((1..=16_777_215).contains(&globex_vni));
    assert_eq!(
        intent.tier("security"),
        &Tier {
            name: "security".into(),
            order: 10,
            default_action: TierDefault::Pass
        }
    );
    assert_eq!(
        intent.tier("default"),
        &Tier {
            name: "default".into(),
            order: 1_000_000,
            default_action: TierDefault::Deny
        }
    );

    // Allocation is deterministic and does not move when another tenant appears.
    let tenant = |name: &str| {
        Resource::Tenant(Tenant {
            name: name.into(),
            default_action: TenantDefault::Deny,
            vni: None,
            cidrs: vec![],
        })
    };
    let opts = LoadOptions::default();
    let one = Intent::from_resources(vec![tenant("globex")], vec![], &opts).unwrap();
    let two =
        Intent::from_resources(vec![tenant("zeta"), tenant("globex")], vec![], &opts).unwrap();
    assert_eq!(one.tenant("globex").vni, Some(globex_vni));
    assert_eq!(two.tenant("globex").vni, Some(globex_vni));
    assert_ne!(two.tenant("zeta").vni, two.tenant("globex").vni);

    // A Tier named `default` overrides the built-in one.
    let intent = load(
        "apiVersion: palisade.dev/v1\nkind: Tier\nmetadata: {name: default}\nspec: {order: 5}\n",
    );
    assert_eq!(intent.tier("default").order, 5);
}

fn acme_endpoint(
    name: &str,
    namespace: Option<&str>,
    labels: &[(&str, &str)],
    ip: &str,
) -> Endpoint {
    Endpoint {
        tenant: "acme".into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![ip.parse().unwrap()],
        mac: None,
        node: "n1".into(),
        interface: None,
        serve: vec![],
    }
}

#[test]
fn namespaced_policies_select_and_peer_within_their_namespace() {
    let intent = load(&with_acme(
        "
        apiVersion: v1
        kind: Namespace
        metadata:
          name: prod
          labels: {team: blue}
          uid: 1234
        ---
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme, namespace: prod, labels: {app: web}}
        spec: {node: n1, ips: [10.0.0.1]}
        ---
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme, namespace: dev, labels: {app: web}}
        spec: {node: n1, ips: [10.0.0.2]}
        ---
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: db, tenant: acme, namespace: prod, labels: {app: db}}
        spec: {node: n1, ips: [10.0.0.3]}
        ---
        apiVersion: palisade.dev/v1
        kind: Endpoint
        metadata: {name: web, tenant: acme, labels: {app: web}}
        spec: {node: n1, ips: [10.0.0.4]}
        ---
        apiVersion: palisade.dev/v1
        kind: Policy
        metadata: {name: db, tenant: acme, namespace: prod}
        spec:
          selector: app == 'db'
          ingress:
            - action: allow
              from:
                - selector: app == 'web'
                - namespaceSelector: {matchLabels: {team: blue}}
                - namespaceSelector: team != 'blue'
                  selector: app == 'web'
        ",
    ));
    let by_ref = |r: &str| intent.endpoints.iter().find(|e| e.full_ref() == r).unwrap();
    // Derived labels.
    let prod_web = by_ref("acme:prod/web");
    assert_eq!(prod_web.labels["palisade.dev/namespace"], "prod");
    assert_eq!(prod_web.labels["nslabel.palisade.dev/team"], "blue");
    assert_eq!(
        prod_web.labels["nslabel.palisade.dev/kubernetes.io/metadata.name"],
        "prod"
    );
    let dev_web = by_ref("acme:dev/web");
    assert!(!dev_web.labels.contains_key("nslabel.palisade.dev/team"));
    let plain_web = by_ref("acme:web");
    assert_eq!(plain_web.labels.len(), 1, "no namespace, no derived labels");

    let p = &intent.policies[0];
    assert_eq!(p.namespace.as_deref(), Some("prod"));
    assert_eq!(p.full_ref(), "acme:prod/db");
    assert_eq!(
        p.selector.text,
        "palisade.dev/namespace == 'prod' && app == 'db'"
    );
    let peers = p.ingress.as_ref().unwrap()[0].peers.clone().unwrap();
    let texts: Vec<String> = peers
        .iter()
        .map(|peer| match peer {
            Peer::Selector(s) => s.text.clone(),
            other => panic!("unexpected peer {other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "palisade.dev/namespace == 'prod' && app == 'web'",
            "has(palisade.dev/namespace) && nslabel.palisade.dev/team == 'blue'",
            "has(palisade.dev/namespace) && nslabel.palisade.dev/team != 'blue' && app == 'web'",
        ]
    );
    // What each selects.
    let selected = |s: &Selector| {
        intent
            .endpoints
            .iter()
            .filter(|e| s.matches(&e.labels))
            .map(Endpoint::full_ref)
            .collect::<Vec<_>>()
    };
    assert_eq!(selected(&p.selector), ["acme:prod/db"]);
    let sel = |i: usize| match &peers[i] {
        Peer::Selector(s) => s.clone(),
        _ => unreachable!(),
    };
    assert_eq!(selected(&sel(0)), ["acme:prod/web"]);
    assert_eq!(selected(&sel(1)), ["acme:prod/db", "acme:prod/web"]);
    assert_eq!(selected(&sel(2)), ["acme:dev/web"]);
    // Canonical text parses back to the same selector.
    for s in [&p.selector, &sel(0), &sel(1), &sel(2)] {
        assert_eq!(&Selector::parse(&s.text).unwrap(), s);
    }
}

#[test]
fn resource_from_json_reports_paths_without_a_file() {
    let opts = LoadOptions::default();
    let value = json!({
        "apiVersion": "palisade.dev/v1",
        "kind": "Policy",
        "metadata": {"name": "db-ingress", "tenant": "acme"},
        "spec": {"selector": "app == 'db'", "ingress": [{"action": "allow", "prots": []}]}
    });
    let err = resource_from_json(&value, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Policy acme/db-ingress: spec.ingress[0].prots: unknown field 'prots' (did you mean 'ports'?)"
    );
    assert_eq!(err.0[0].file, None);
    assert_eq!(err.0[0].path, "spec.ingress[0].prots");

    let value = json!({
        "apiVersion": "palisade.dev/v1",
        "kind": "Endpoint",
        "metadata": {"name": "web", "tenant": "acme", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {"node": "n1", "ips": ["10.0.0.1"], "mac": "02:00:0a:00:01:0a"}
    });
    let Resource::Endpoint(e) = resource_from_json(&value, &opts).unwrap() else {
        panic!("not an endpoint")
    };
    assert_eq!(e.full_ref(), "acme:prod/web");
    assert_eq!(e.mac, Some([2, 0, 10, 0, 1, 10]));
    assert_eq!(e.labels["palisade.dev/namespace"], "prod");

    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}});
    assert_eq!(
        resource_from_json(&ns, &opts).unwrap_err().to_string(),
        "kind: a Namespace is not a resource of its own here; load it from files with the endpoints it labels (palisade apply -f)"
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": []});
    assert!(resource_from_json(&list, &opts).is_err());
}

#[test]
fn from_resources_checks_across_resources_with_paths() {
    let opts = LoadOptions::default();
    let acme = Resource::Tenant(Tenant {
        name: "acme".into(),
        default_action: TenantDefault::Deny,
        vni: Some(0),
        cidrs: vec![],
    });
    let web = acme_endpoint("web", None, &[], "10.0.0.1");
    let web2 = acme_endpoint("web2", None, &[], "10.0.0.1");
    let policy = Policy {
        tenant: "globex".into(),
        namespace: None,
        name: "p".into(),
        tier: "nope".into(),
        order: None,
        selector: Selector::all(),
        mode: Default::default(),
        ingress: None,
        egress: None,
    };
    let err = Intent::from_resources(
        vec![
            acme,
            Resource::Endpoint(web),
            Resource::Endpoint(web2),
            Resource::Policy(policy.clone()),
        ],
        vec![],
        &opts,
    )
    .unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "Tenant acme: spec.vni: vni 0 is out of range: VNIs are 1..=16777215",
            "Endpoint acme/web2: spec.ips[0]: IP 10.0.0.1 is already used by endpoint acme:web; endpoints of a tenant need distinct addresses",
            "Policy globex/p: metadata.tenant: tenant 'globex' has no Tenant resource; define it with kind: Tenant (known tenants: acme)",
        ]
    );

    // Namespaces passed along label the endpoints of their namespace.
    let ok = Intent::from_resources(
        vec![
            Resource::Tenant(Tenant {
                name: "acme".into(),
                default_action: TenantDefault::Deny,
                vni: None,
                cidrs: vec![],
            }),
            Resource::Endpoint(acme_endpoint(
                "web",
                Some("prod"),
                &[("app", "web")],
                "10.0.0.1",
            )),
        ],
        vec![Namespace {
            name: "prod".into(),
            labels: [("team".to_string(), "blue".to_string())].into(),
        }],
        &opts,
    )
    .unwrap();
    assert_eq!(ok.endpoints[0].labels["nslabel.palisade.dev/team"], "blue");
}

#[test]
fn kubernetes_tenant_is_created_when_used() {
    let opts = LoadOptions {
        kubernetes_tenant: "k8s".into(),
    };
    let ep = Endpoint {
        tenant: "k8s".into(),
        ..acme_endpoint("web", Some("default"), &[], "10.0.0.1")
    };
    let intent = Intent::from_resources(vec![Resource::Endpoint(ep)], vec![], &opts).unwrap();
    assert_eq!(
        intent.tenant("k8s").default_action,
        TenantDefault::Kubernetes
    );

    // A native Tenant of that name wins.
    let text = "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: k8s}\n---\n\
                apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {name: web, tenant: k8s}\nspec: {node: n1, ips: [10.0.0.1]}\n";
    let intent = load_str(text, "t.yaml", &opts).unwrap();
    assert_eq!(intent.tenant("k8s").default_action, TenantDefault::Deny);

    // An invalid option is reported.
    let bad = LoadOptions {
        kubernetes_tenant: "K8S".into(),
    };
    let err = load_str("", "t.yaml", &bad).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("load options: kubernetes tenant 'K8S' is not valid"));
}

#[test]
fn endpoints_and_policies_are_sorted() {
    let intent = load(&with_acme(&format!(
        "{}---\n{}---\n{}",
        endpoint_doc("zz", "10.0.0.1"),
        endpoint_doc("aa", "10.0.0.2"),
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: b, tenant: acme}\nspec: {selector: all()}\n---\n\
         apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {name: a, tenant: acme}\nspec: {selector: all()}\n"
    )));
    let eps: Vec<String> = intent.endpoints.iter().map(Endpoint::full_ref).collect();
    assert_eq!(eps, ["acme:aa", "acme:zz"]);
    let ps: Vec<&str> = intent.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(ps, ["a", "b"]);
    assert_eq!(intent.endpoints_of_tenant("acme").count(), 2);
    assert_eq!(intent.endpoints_of_tenant("other").count(), 0);
}
