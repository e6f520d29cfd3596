//! `Intent::resolve`: every reference form and its errors.

use palisade_model::{Intent, RefError, Target};

use crate::common::{dedent, load};

/// Tenants acme (10.0.0.0/16) and globex (10.0.0.0/16, same addresses) and
/// beta (no cidrs); endpoints with clashing names across tenants and
/// namespaces.
fn intent() -> Intent {
    let tenant = |name: &str, cidrs: &str| {
        format!("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{cidrs: [{cidrs}]}}\n---\n")
    };
    let ep = |tenant: &str, ns: Option<&str>, name: &str, ip: &str| {
        let ns = ns.map(|n| format!(", namespace: {n}")).unwrap_or_default();
        format!(
            "apiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {{name: {name}, tenant: {tenant}{ns}}}\nspec: {{node: n1, ips: ['{ip}']}}\n---\n"
        )
    };
    let mut text =
        tenant("acme", "10.0.0.0/16, 'fd00::/64'") + &tenant("globex", "10.0.0.0/16, 10.9.0.0/16");
    text += &tenant("beta", "");
    text += &ep("acme", None, "web-1", "10.0.0.1");
    text += &ep("acme", None, "web-2", "10.0.0.2");
    text += &ep("acme", Some("prod"), "api", "10.0.0.3");
    text += &ep("acme", Some("dev"), "api", "10.0.0.4");
    text += &ep("acme", None, "cache", "fd00::7");
    text += &ep("acme", Some("prod"), "cache", "10.0.0.8");
    text += &ep("globex", None, "web-1", "10.0.0.1");
    text += &ep("globex", Some("prod"), "solo", "10.0.0.5");
    load(&dedent(&text))
}

fn endpoint_ref(t: Result<Target<'_>, RefError>) -> String {
    match t {
        Ok(Target::Endpoint(e)) => e.full_ref(),
        other => panic!("expected an endpoint, got {other:?}"),
    }
}

fn err(intent: &Intent, r: &str) -> String {
    match intent.resolve(r) {
        Err(e) => e.to_string(),
        Ok(t) => panic!("expected '{r}' not to resolve, got {t:?}"),
    }
}

#[test]
fn names_in_every_form() {
    let i = intent();
    // Full form.
    assert_eq!(endpoint_ref(i.resolve("acme:prod/api")), "acme:prod/api");
    // Tenant and name: unique in the tenant.
    assert_eq!(endpoint_ref(i.resolve("acme:web-2")), "acme:web-2");
    // Tenant and name where a namespaced twin exists: the one without namespace.
    assert_eq!(endpoint_ref(i.resolve("acme:cache")), "acme:cache");
    // Namespace and name: unique across tenants.
    assert_eq!(endpoint_ref(i.resolve("dev/api")), "acme:dev/api");
    // Name only: unique everywhere.
    assert_eq!(endpoint_ref(i.resolve("solo")), "globex:prod/solo");
    assert_eq!(endpoint_ref(i.resolve("web-2")), "acme:web-2");
    assert_eq!(endpoint_ref(i.resolve("  web-2 ")), "acme:web-2");
}

#[test]
fn ambiguous_names_say_how_to_disambiguate() {
    let i = intent();
    assert_eq!(
        err(&i, "web-1"),
        "'web-1' is ambiguous: acme:web-1, globex:web-1; prefix the tenant"
    );
    assert_eq!(
        err(&i, "acme:api"),
        "'acme:api' is ambiguous: acme:dev/api, acme:prod/api; prefix the namespace"
    );
    // A namespace makes a name unique again.
    assert_eq!(endpoint_ref(i.resolve("prod/cache")), "acme:prod/cache");
}

#[test]
fn unknown_names_list_what_is_known() {
    let i = intent();
    assert_eq!(
        err(&i, "acme:web-9"),
        "no endpoint 'acme:web-9' (did you mean 'web-1'?); known in acme: cache, dev/api, prod/api, prod/cache, web-1, web-2"
    );
    assert_eq!(
        err(&i, "zzz"),
        "no endpoint 'zzz'; known: acme:cache, acme:dev/api, acme:prod/api, acme:prod/cache, acme:web-1, acme:web-2, globex:prod/solo, globex:web-1"
    );
    assert_eq!(
        err(&i, "nope:web-1"),
        "no tenant 'nope'; known tenants: acme, beta, globex"
    );
    // The list is cut after eight names.
    let mut text =
        String::from("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\n");
    for n in 0..10 {
        text += &format!(
            "---\napiVersion: palisade.dev/v1\nkind: Endpoint\nmetadata: {{name: web-{n}, tenant: acme}}\nspec: {{node: n1, ips: [10.0.0.{}]}}\n",
            n + 1
        );
    }
    assert_eq!(
        err(&load(&text), "db"),
        "no endpoint 'db'; known in acme: web-0, web-1, web-2, web-3, web-4, web-5, web-6, web-7, ..."
    );
}

#[test]
fn addresses() {
    let i = intent();
    // The one endpoint with the address.
    assert_eq!(endpoint_ref(i.resolve("10.0.0.3")), "acme:prod/api");
    assert_eq!(endpoint_ref(i.resolve("fd00::7")), "acme:cache");
    // Tenant and address.
    assert_eq!(endpoint_ref(i.resolve("globex:10.0.0.1")), "globex:web-1");
    assert_eq!(endpoint_ref(i.resolve("acme:fd00::7")), "acme:cache");
    assert_eq!(
        i.resolve("acme:8.8.8.8").unwrap(),
        Target::Address {
            tenant: "acme",
            ip: "8.8.8.8".parse().unwrap()
        }
    );
    // No endpoint: the one tenant whose cidrs hold it.
    assert_eq!(
        i.resolve("10.9.1.1").unwrap(),
        Target::Address {
            tenant: "globex",
            ip: "10.9.1.1".parse().unwrap()
        }
    );
    assert_eq!(
        err(&i, "10.0.0.1"),
        "'10.0.0.1' is ambiguous: acme:web-1, globex:web-1; prefix the tenant, e.g. acme:10.0.0.1"
    );
    assert_eq!(
        err(&i, "8.8.8.8"),
        "'8.8.8.8' is ambiguous: acme:8.8.8.8, beta:8.8.8.8, globex:8.8.8.8; no endpoint has this address; prefix the tenant it is seen from"
    );
    assert_eq!(
        err(&i, "nope:10.0.0.1"),
        "no tenant 'nope'; known tenants: acme, beta, globex"
    );
    // With one tenant, any address is that tenant's.
    let one = load("apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: solo}\n");
    assert_eq!(
        one.resolve("1.2.3.4").unwrap(),
        Target::Address {
            tenant: "solo",
            ip: "1.2.3.4".parse().unwrap()
        }
    );
}

#[test]
fn malformed_references() {
    let i = intent();
    for (r, why) in [
        ("", "it is empty"),
        (":web", "the tenant before ':' is empty"),
        ("a:b:c", "it has more than one ':'"),
        (
            "acme:/web",
            "the name or namespace is empty, or there is more than one '/'",
        ),
        (
            "a/b/c",
            "the name or namespace is empty, or there is more than one '/'",
        ),
        (
            "acme:prod/",
            "the name or namespace is empty, or there is more than one '/'",
        ),
    ] {
        assert_eq!(
            err(&i, r),
            format!("'{r}' is not a valid reference: {why}; write [tenant:][namespace/]name, an IP, or tenant:IP")
        );
    }
}
