//! One test per rule of the verdict semantics, on hand-written intents. Every
//! flow is also looked up in the compiled tables (`Compiled::explain`), so
//! each rule is checked in the evaluator and in the compiler.

mod common;

use common::*;
use palisade_model::{Action, Direction, Entity, Intent, Protocol, TenantDefault, TierDefault};
use palisade_policy::{Attribution, FlowPeer, TierOutcome, Verdict};

/// acme (deny): web-1 [app=web], app-1 [app=app], db-1 [app=db]; plus
/// the policies given.
fn acme(policies: Vec<PolicyBuilder>) -> Intent {
    acme_with(TenantDefault::Deny, policies)
}

fn acme_with(default: TenantDefault, policies: Vec<PolicyBuilder>) -> Intent {
    let mut b = IntentBuilder::new()
        .tenant("acme", default)
        .tier("security", 10, TierDefault::Deny)
        .tier("platform", 20, TierDefault::Pass)
        .endpoint("acme", "web-1", &[("app", "web")], &["10.0.0.1"])
        .endpoint("acme", "app-1", &[("app", "app")], &["10.0.0.2"])
        .endpoint("acme", "db-1", &[("app", "db")], &["10.0.0.3"]);
    for p in policies {
        b = b.policy(p);
    }
    b.build()
}

fn rule_attr(
    tier: &str,
    policy: &str,
    direction: Direction,
    index: usize,
    action: Action,
) -> Attribution {
    Attribution::Rule {
        tier: tier.into(),
        tenant: "acme".into(),
        policy: policy.into(),
        direction,
        index,
        action,
    }
}

/// Egress of app-1 open to everything, so tests can focus on db-1's ingress.
fn app_egress_open() -> PolicyBuilder {
    policy("acme", "app-egress")
        .select(eq("app", "app"))
        .egress(vec![allow()])
}

#[test]
fn deny_tenant_denies_until_both_sides_allow() {
    let c = Compiled::new(acme(vec![]));
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "web-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
        TCP,
        5432,
    ));
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        e.to_string(),
        "DENY acme:web-1 -> acme:db-1 tcp/5432: default deny of tenant acme (no policy allows \
         ingress to db-1 [app=db]), default deny of tenant acme (no policy allows egress from \
         web-1 [app=web])"
    );

    let c = Compiled::new(acme(vec![
        policy("acme", "db-ingress")
            .tier("security")
            .select(eq("app", "db"))
            .ingress(vec![allow()
                .peers(vec![sel_peer(eq("app", "app"))])
                .ports(vec![tcp(5432)])]),
        policy("acme", "app-egress")
            .select(eq("app", "app"))
            .egress(vec![
                deny().ports(vec![tcp(22)]),
                allow().peers(vec![sel_peer(eq("app", "db"))]),
            ]),
    ]));
    let i = &c.intent;
    let (app, db, web) = (
        ep(i, "acme", "app-1"),
        ep(i, "acme", "db-1"),
        ep(i, "acme", "web-1"),
    );
    let e = c.explain(&flow(
        FlowPeer::Endpoint(app),
        FlowPeer::Endpoint(db),
        TCP,
        5432,
    ));
    assert_eq!(
        e.to_string(),
        "ALLOW acme:app-1 -> acme:db-1 tcp/5432: allowed by security/db-ingress ingress rule 0, \
         allowed by default/app-egress egress rule 1"
    );
    // web's egress is closed: one side denying is enough.
    let e = c.explain(&flow(
        FlowPeer::Endpoint(web),
        FlowPeer::Endpoint(db),
        TCP,
        5432,
    ));
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        e.to_string(),
        "DENY acme:web-1 -> acme:db-1 tcp/5432: default deny of tier security (no rule of the \
         tier decided ingress to db-1 [app=db]), default deny of tenant acme (no policy allows \
         egress from web-1 [app=web])"
    );
}

#[test]
fn deny_beats_allow_in_one_step_and_ties_go_to_the_first_name() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "a-allow")
            .select(eq("app", "db"))
            .ingress(vec![allow()]),
        policy("acme", "b-deny")
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(22)])]),
        policy("acme", "c-deny")
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(22)])]),
        policy("acme", "d-pass")
            .select(eq("app", "db"))
            .ingress(vec![pass()]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(app, db, TCP, 22));
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        rule_attr("default", "b-deny", Direction::Ingress, 0, Action::Deny)
    );
    // Allow beats pass in the same step.
    let e = c.explain(&flow(app, db, TCP, 80));
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        rule_attr("default", "a-allow", Direction::Ingress, 0, Action::Allow)
    );
}

#[test]
fn an_earlier_order_decides_first_and_no_order_comes_last() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "z-first")
            .order(1)
            .select(eq("app", "db"))
            .ingress(vec![allow().ports(vec![tcp(80)])]),
        policy("acme", "a-second")
            .order(2)
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(80), tcp(81)])]),
        policy("acme", "last")
            .select(eq("app", "db"))
            .ingress(vec![allow()]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let at = |port| {
        c.explain(&flow(app, db, TCP, port))
            .ingress
            .unwrap()
            .attribution
    };
    assert_eq!(
        at(80),
        rule_attr("default", "z-first", Direction::Ingress, 0, Action::Allow)
    );
    assert_eq!(
        at(81),
        rule_attr("default", "a-second", Direction::Ingress, 0, Action::Deny)
    );
    assert_eq!(
        at(82),
        rule_attr("default", "last", Direction::Ingress, 0, Action::Allow)
    );
}

#[test]
fn pass_skips_the_rest_of_the_tier_and_its_default() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        // security (default deny): pass web traffic on, deny what follows.
        policy("acme", "sec-pass")
            .tier("security")
            .order(1)
            .select(eq("app", "db"))
            .ingress(vec![pass().ports(vec![tcp(443)])]),
        policy("acme", "sec-deny")
            .tier("security")
            .order(2)
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(443)])]),
        policy("acme", "db-allow")
            .select(eq("app", "db"))
            .ingress(vec![allow().ports(vec![tcp(443)])]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(app, db, TCP, 443));
    assert_eq!(e.verdict, Verdict::Allow, "{e:#}");
    let side = e.ingress.as_ref().unwrap();
    assert_eq!(
        side.attribution,
        rule_attr("default", "db-allow", Direction::Ingress, 0, Action::Allow)
    );
    assert_eq!(side.tiers[0].outcome, TierOutcome::Passed);
    assert_eq!(
        side.tiers[0].steps.len(),
        1,
        "the step after the pass is not consulted"
    );
    // Without the pass, the security tier's default decides.
    let e = c.explain(&flow(app, db, TCP, 80));
    assert_eq!(
        e.ingress.unwrap().attribution,
        Attribution::TierDefault {
            tier: "security".into(),
            tenant: "acme".into(),
            direction: Direction::Ingress
        }
    );
}

#[test]
fn tier_defaults_apply_only_to_endpoints_the_tier_selects() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "sec-db")
            .tier("security")
            .select(eq("app", "db"))
            .ingress(vec![allow().ports(vec![tcp(1)])]),
        // platform passes by default, so its policy changes nothing unmatched.
        policy("acme", "plat-web")
            .tier("platform")
            .select(eq("app", "web"))
            .ingress(vec![deny().ports(vec![tcp(2)])]),
        policy("acme", "all-in")
            .select(all())
            .ingress(vec![allow()]),
    ]));
    let i = &c.intent;
    let app = FlowPeer::Endpoint(ep(i, "acme", "app-1"));
    let db = FlowPeer::Endpoint(ep(i, "acme", "db-1"));
    let web = FlowPeer::Endpoint(ep(i, "acme", "web-1"));
    // db: selected in security, nothing decided → tier default deny.
    let e = c.explain(&flow(app, db, TCP, 80));
    assert_eq!(
        e.ingress.as_ref().unwrap().tiers[0].outcome,
        TierOutcome::DefaultDeny
    );
    assert_eq!(e.verdict, Verdict::Deny);
    // web: not selected in security; platform passes by default; default tier allows.
    let e = c.explain(&flow(app, web, TCP, 80));
    assert_eq!(e.verdict, Verdict::Allow);
    let side = e.ingress.as_ref().unwrap();
    assert_eq!(
        side.tiers
            .iter()
            .map(|t| (t.tier.as_str(), t.outcome))
            .collect::<Vec<_>>(),
        [
            ("platform", TierOutcome::DefaultPass),
            ("default", TierOutcome::Allowed)
        ]
    );
    assert_eq!(c.explain(&flow(app, web, TCP, 2)).verdict, Verdict::Deny);
}

#[test]
fn kubernetes_tenants_isolate_per_direction_only_once_selected() {
    let c = Compiled::new(acme_with(TenantDefault::Kubernetes, vec![]));
    let i = &c.intent;
    let (web, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "web-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(web, db, TCP, 5432));
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        Attribution::NotIsolated {
            tenant: "acme".into(),
            direction: Direction::Ingress
        }
    );

    let c = Compiled::new(acme_with(
        TenantDefault::Kubernetes,
        vec![policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![allow()
                .peers(vec![sel_peer(eq("app", "app"))])
                .ports(vec![tcp(5432)])])],
    ));
    let i = &c.intent;
    let (web, app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "web-1")),
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    // Selected in tier default, whose default action is deny.
    let e = c.explain(&flow(web, db, TCP, 5432));
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        Attribution::TierDefault {
            tier: "default".into(),
            tenant: "acme".into(),
            direction: Direction::Ingress
        }
    );
    assert_eq!(c.explain(&flow(app, db, TCP, 5432)).verdict, Verdict::Allow);
    // db's egress is not selected by any policy: still open.
    let e = c.explain(&flow(db, web, TCP, 80));
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.egress.unwrap().attribution,
        Attribution::NotIsolated {
            tenant: "acme".into(),
            direction: Direction::Egress
        }
    );
    // An empty ingress list isolates too; with tiers that pass, the tenant's
    // isolation is what denies.
    let mut intent = acme_with(
        TenantDefault::Kubernetes,
        vec![policy("acme", "iso")
            .tier("platform")
            .select(all())
            .ingress(vec![])],
    );
    intent.tiers.get_mut("default").unwrap().default_action = TierDefault::Pass;
    let c = Compiled::new(intent);
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "web-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
        UDP,
        53,
    ));
    assert_eq!(e.verdict, Verdict::Deny);
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        Attribution::TenantDefault {
            tenant: "acme".into(),
            direction: Direction::Ingress
        }
    );
    assert!(
        e.to_string()
            .contains("default deny of tenant acme (no policy allows ingress to db-1 [app=db])"),
        "{e}"
    );
}

#[test]
fn audit_policies_report_but_never_change_the_verdict() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![allow()]),
        policy("acme", "audit-db")
            .tier("security")
            .select(eq("app", "db"))
            .audit()
            .ingress(vec![deny().ports(vec![tcp(5432)]), allow()]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(app, db, TCP, 5432));
    assert_eq!(e.verdict, Verdict::Allow);
    let audit = &e.ingress.as_ref().unwrap().audit;
    assert!(audit.would_deny);
    assert_eq!(
        audit.attribution,
        rule_attr("security", "audit-db", Direction::Ingress, 0, Action::Deny)
    );
    assert_eq!(
        e.to_string(),
        "ALLOW acme:app-1 -> acme:db-1 tcp/5432: allowed by default/db-in ingress rule 0, allowed \
         by default/app-egress egress rule 0\n  audit: would deny by security/audit-db ingress rule 0"
    );
    // The audit policy allows 80 before the enforced policies see it: no report.
    let e = c.explain(&flow(app, db, TCP, 80));
    assert!(!e.ingress.as_ref().unwrap().audit.would_deny);
    assert_eq!(
        e.ingress.unwrap().attribution,
        rule_attr("default", "db-in", Direction::Ingress, 0, Action::Allow)
    );

    // An audit allow never opens what is denied.
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "audit-open")
            .select(all())
            .audit()
            .ingress(vec![allow()]),
    ]));
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
        TCP,
        1,
    ));
    assert_eq!(e.verdict, Verdict::Deny);
    assert!(!e.ingress.as_ref().unwrap().audit.would_deny);
    assert_eq!(e.ingress.unwrap().audit.verdict, Verdict::Allow);

    // In a kubernetes tenant an audit policy that selects would isolate.
    let c = Compiled::new(acme_with(
        TenantDefault::Kubernetes,
        vec![policy("acme", "audit-iso")
            .select(eq("app", "db"))
            .audit()
            .ingress(vec![])],
    ));
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
        TCP,
        1,
    ));
    assert_eq!(e.verdict, Verdict::Allow);
    let audit = &e.ingress.as_ref().unwrap().audit;
    assert!(audit.would_deny);
    assert_eq!(
        audit.attribution,
        Attribution::TierDefault {
            tier: "default".into(),
            tenant: "acme".into(),
            direction: Direction::Ingress
        }
    );
    assert!(e.to_string().ends_with("\n  audit: would deny (default deny of tier default (no rule of the tier decided ingress to db-1 [app=db]))"), "{e}");
}

#[test]
fn self_traffic_is_allowed_and_tenants_are_isolated() {
    let intent = IntentBuilder::new()
        .tenant("acme", TenantDefault::Deny)
        .tenant("beta", TenantDefault::Kubernetes)
        .endpoint("acme", "web-1", &[("app", "web")], &["10.0.0.1"])
        .endpoint("acme", "web-2", &[("app", "web")], &["10.0.0.2"])
        .endpoint("beta", "web-1", &[("app", "web")], &["10.0.0.1"])
        .policy(
            policy("acme", "open")
                .select(all())
                .ingress(vec![allow()])
                .egress(vec![allow()]),
        )
        .build();
    let c = Compiled::new(intent);
    let i = &c.intent;
    let (a1, a2, b1) = (
        FlowPeer::Endpoint(ep(i, "acme", "web-1")),
        FlowPeer::Endpoint(ep(i, "acme", "web-2")),
        FlowPeer::Endpoint(ep(i, "beta", "web-1")),
    );
    let e = c.explain(&flow(a1, a1, TCP, 80));
    assert_eq!(
        (e.verdict, e.special.clone()),
        (Verdict::Allow, Some(Attribution::SelfTraffic))
    );
    assert!(e.ingress.is_none() && e.egress.is_none());
    // Same labels, another endpoint: decided by policy.
    assert!(c.explain(&flow(a1, a2, TCP, 80)).special.is_none());
    let e = c.explain(&flow(a1, b1, TCP, 80));
    assert_eq!(
        (e.verdict, e.special.clone()),
        (Verdict::Deny, Some(Attribution::CrossTenant))
    );
    assert_eq!(
        e.to_string(),
        "DENY acme:web-1 -> beta:web-1 tcp/80: tenants are isolated (acme and beta)"
    );
    // An address of another tenant's space is another tenant too.
    let e = c.explain(&flow(
        a1,
        FlowPeer::Address {
            tenant: "beta",
            ip: ip("8.8.8.8"),
        },
        TCP,
        80,
    ));
    assert_eq!(e.special, Some(Attribution::CrossTenant));
}

#[test]
fn cidr_except_world_host_and_all_match_their_peers_only() {
    let c = Compiled::new(acme(vec![policy("acme", "web-out")
        .select(eq("app", "web"))
        .egress(vec![
            allow()
                .peers(vec![cidr("10.0.0.0/8", &["10.1.0.0/16"])])
                .ports(vec![tcp(1)]),
            allow()
                .peers(vec![entity(Entity::World)])
                .ports(vec![tcp(2)]),
            allow()
                .peers(vec![entity(Entity::Host)])
                .ports(vec![tcp(3)]),
            allow().peers(vec![entity(Entity::All)]).ports(vec![tcp(4)]),
            allow()
                .peers(vec![cidr("0.0.0.0/0", &[])])
                .ports(vec![tcp(5)]),
        ])]));
    let i = &c.intent;
    let web = FlowPeer::Endpoint(ep(i, "acme", "web-1"));
    let db = FlowPeer::Endpoint(ep(i, "acme", "db-1"));
    let addr = |a: &'static str| FlowPeer::Address {
        tenant: "acme",
        ip: ip(a),
    };
    let host = FlowPeer::Host { tenant: "acme" };
    let egress = |dst, port| {
        c.explain(&flow(web, dst, TCP, port))
            .egress
            .unwrap()
            .verdict
    };
    use Verdict::{Allow, Deny};
    // cidr: world addresses inside, outside the except; never endpoints or the host.
    assert_eq!(egress(addr("10.2.3.4"), 1), Allow);
    assert_eq!(egress(addr("10.1.2.3"), 1), Deny);
    assert_eq!(egress(addr("11.0.0.1"), 1), Deny);
    assert_eq!(
        egress(db, 1),
        Deny,
        "db-1's 10.0.0.3 is an endpoint, not a cidr peer"
    );
    assert_eq!(egress(host, 1), Deny);
    // world: any non-endpoint address, not the host, not endpoints.
    assert_eq!(egress(addr("8.8.8.8"), 2), Allow);
    assert_eq!(egress(addr("2001:db8::1"), 2), Allow);
    assert_eq!(egress(host, 2), Deny);
    assert_eq!(egress(db, 2), Deny);
    // host: only the host.
    assert_eq!(egress(host, 3), Allow);
    assert_eq!(egress(addr("8.8.8.8"), 3), Deny);
    // all: anything.
    for peer in [db, host, addr("8.8.8.8")] {
        assert_eq!(egress(peer, 4), Allow);
    }
    // 0.0.0.0/0 holds IPv4 world addresses only.
    assert_eq!(egress(addr("8.8.8.8"), 5), Allow);
    assert_eq!(egress(addr("2001:db8::1"), 5), Deny);
    // FlowPeer::address tells endpoints from world addresses.
    assert_eq!(FlowPeer::address(i, "acme", ip("10.0.0.3")), db);
    assert_eq!(
        egress(FlowPeer::address(i, "acme", ip("10.0.0.3")), 1),
        Deny
    );
}

#[test]
fn port_ranges_include_both_ends_and_only_their_protocol() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![
                allow().ports(vec![ports(Protocol::Tcp, Some(8000), Some(8080))]),
                allow().ports(vec![ports(Protocol::Udp, None, None)]),
                allow().ports(vec![ports(Protocol::Sctp, Some(9), None)]),
            ]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let v = |proto, port| c.explain(&flow(app, db, proto, port)).verdict;
    use Verdict::{Allow, Deny};
    assert_eq!(
        [
            v(TCP, 7999),
            v(TCP, 8000),
            v(TCP, 8042),
            v(TCP, 8080),
            v(TCP, 8081)
        ],
        [Deny, Allow, Allow, Allow, Deny]
    );
    assert_eq!(
        [v(UDP, 0), v(UDP, 8000), v(UDP, 65535)],
        [Allow, Allow, Allow]
    );
    assert_eq!([v(132, 8), v(132, 9), v(132, 10)], [Deny, Allow, Deny]);
}

#[test]
fn icmp_matches_type_and_code() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![
                allow().ports(vec![icmp(Some(8), None)]),
                allow().ports(vec![icmp(Some(3), Some(4))]),
            ]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let v = |proto, t: u16, code: u16| c.explain(&flow(app, db, proto, t << 8 | code)).verdict;
    use Verdict::{Allow, Deny};
    assert_eq!(
        [v(ICMP, 8, 0), v(ICMP, 8, 1), v(ICMP, 0, 0)],
        [Allow, Allow, Deny]
    );
    assert_eq!([v(ICMP, 3, 4), v(ICMP, 3, 3)], [Allow, Deny]);
    assert_eq!(v(58, 8, 0), Deny, "an ICMP rule does not match ICMPv6");
    let e = c.explain(&flow(app, db, ICMP, 8 << 8));
    assert!(
        e.to_string()
            .starts_with("ALLOW acme:app-1 -> acme:db-1 icmp type 8 code 0: "),
        "{e}"
    );
}

#[test]
fn other_protocols_match_only_rules_without_ports() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![
                deny().ports(vec![ports(Protocol::Tcp, None, None)]),
                allow().peers(vec![sel_peer(eq("app", "app"))]),
            ]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(app, db, GRE, 0));
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.as_ref().unwrap().attribution,
        rule_attr("default", "db-in", Direction::Ingress, 1, Action::Allow)
    );
    assert!(
        e.to_string().starts_with(
            "ALLOW acme:app-1 -> acme:db-1 proto 47: allowed by default/db-in ingress rule 1"
        ),
        "{e}"
    );
    assert_eq!(c.explain(&flow(app, db, TCP, 5)).verdict, Verdict::Deny);
}

#[test]
fn log_rules_are_recorded_and_skipped() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .select(eq("app", "db"))
            .ingress(vec![log().ports(vec![tcp(22)]), allow(), log()]),
    ]));
    let i = &c.intent;
    let (app, db) = (
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
    );
    let e = c.explain(&flow(app, db, TCP, 22));
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(
        e.ingress.as_ref().unwrap().logs,
        [rule_attr(
            "default",
            "db-in",
            Direction::Ingress,
            0,
            Action::Log
        )]
    );
    assert!(
        e.to_string()
            .ends_with("\n  log: default/db-in ingress rule 0"),
        "{e}"
    );
    // The log rule after the decision is not consulted.
    assert!(c
        .explain(&flow(app, db, TCP, 23))
        .ingress
        .unwrap()
        .logs
        .is_empty());
}

#[test]
fn the_alternate_form_shows_the_steps() {
    let c = Compiled::new(acme(vec![
        app_egress_open(),
        policy("acme", "db-in")
            .tier("security")
            .order(1)
            .select(eq("app", "db"))
            .ingress(vec![deny().ports(vec![tcp(22)]), allow()]),
    ]));
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Endpoint(ep(i, "acme", "db-1")),
        TCP,
        80,
    ));
    let text = format!("{e:#}");
    assert!(text.contains("\n  ingress of acme:db-1 [app=db]: ALLOW\n    tier security: allowed\n      order 1:\n        db-in: rule 0 deny no match; rule 1 allow matched;"), "{text}");
    assert!(
        text.contains("\n    decided by security/db-in ingress rule 1 (allow)"),
        "{text}"
    );
}

#[test]
fn explanations_serialize_with_stable_field_names() {
    let c = Compiled::new(acme(vec![app_egress_open()]));
    let i = &c.intent;
    let e = c.explain(&flow(
        FlowPeer::Endpoint(ep(i, "acme", "app-1")),
        FlowPeer::Address {
            tenant: "acme",
            ip: ip("192.0.2.1"),
        },
        TCP,
        443,
    ));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["verdict"], "allow");
    assert_eq!(
        json["src"],
        serde_json::json!({"kind": "endpoint", "tenant": "acme", "name": "app-1", "labels": {"app": "app"}})
    );
    assert_eq!(
        json["dst"],
        serde_json::json!({"kind": "address", "tenant": "acme", "ip": "192.0.2.1"})
    );
    assert_eq!(
        (json["protocol"].as_u64(), json["port"].as_u64()),
        (Some(6), Some(443))
    );
    assert!(json["ingress"].is_null() && json["special"].is_null());
    let egress = &json["egress"];
    assert_eq!(egress["direction"], "egress");
    assert_eq!(egress["endpoint"], "acme:app-1");
    assert_eq!(
        egress["attribution"],
        serde_json::json!({"kind": "rule", "tier": "default", "tenant": "acme", "policy": "app-egress", "direction": "egress", "index": 0, "action": "allow"})
    );
    assert_eq!(egress["audit"]["would_deny"], false);
    assert_eq!(egress["tiers"][0]["outcome"], "allowed");
    assert_eq!(
        egress["tiers"][0]["steps"][0]["policies"][0]["rules"][0]["matched"],
        true
    );
    let back: palisade_policy::Explanation = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}
