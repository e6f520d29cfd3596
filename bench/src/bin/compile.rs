//! Policy compile benchmark: generates a large, realistic micro-segmentation
//! intent (100,000 endpoints over 5,000 label sets, 10,000 policies in 4
//! tenants), then measures in one run the full compile (identities + tables),
//! the peak memory, the number of entries, and incremental recompiles after
//! changing one policy as a ratio of the full compile.
//!
//! Run: `cargo run --release -p palisade-bench --bin compile`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context;
use palisade_model::{
    Action, Endpoint, Entity, Expr, Intent, Labels, Mode, Peer, Policy, PortMatch, Protocol, Rule,
    Selector, Tenant, TenantDefault, Tier, TierDefault, DEFAULT_TIER, DEFAULT_TIER_ORDER,
};
use palisade_policy::{diff, Compiler, IdentityAllocator, IdentityKind, Limits};

const TENANTS: usize = 4;
const APPS_PER_TENANT: usize = 250;
/// (env, zone) of the label-set variants of each app.
const VARIANTS: [(&str, &str); 5] = [
    ("prod", "a"),
    ("prod", "b"),
    ("prod", "c"),
    ("staging", "a"),
    ("staging", "b"),
];
const ENDPOINTS_PER_LABEL_SET: usize = 20;
const ROLES: [&str; 5] = ["web", "api", "worker", "db", "cache"];
/// Load balancer subnets per tenant, shared by the apps (`-lb` policies).
const LB_SUBNETS: usize = 16;
/// Runs of each incremental change; the median is reported.
const RUNS: usize = 7;
/// Runs of the full compile; the median is reported.
const FULL_RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let intent = generate();
    let label_sets: usize = TENANTS * APPS_PER_TENANT * VARIANTS.len();
    println!(
        "policy compile: {} endpoints, {label_sets} label sets, {} policies, {TENANTS} tenants",
        intent.endpoints.len(),
        intent.policies.len()
    );

    // Full compile: identities, then tables; the median of a few runs, each
    // from scratch.
    let limits = Limits {
        max_entries_per_identity: 65_536,
        max_entries: 4 << 20,
    };
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..FULL_RUNS {
        drop(last.take());
        let start = Instant::now();
        let mut allocator = IdentityAllocator::new();
        let ids = allocator
            .allocate(&intent)
            .context("allocating identities")?;
        let allocated = start.elapsed();
        let mut compiler = Compiler::new(limits);
        let tables = compiler.update(&intent, &ids).context("compiling")?;
        runs.push((start.elapsed(), allocated));
        last = Some((allocator, compiler, ids, tables));
    }
    runs.sort();
    let (full, allocated) = runs[runs.len() / 2];
    let (mut allocator, mut compiler, ids, tables) = last.expect("at least one run");
    let cidrs = ids
        .iter()
        .filter(|(_, i)| matches!(i.kind, IdentityKind::Cidr(_)))
        .count();

    println!(
        "  identities:            {:>9.1} ms ({cidrs} CIDR identities)",
        ms(allocated)
    );
    println!("  tables:                {:>9.1} ms", ms(full - allocated));
    println!(
        "  full compile:          {:>9.1} ms (target <= 1000 ms; median of {FULL_RUNS})",
        ms(full)
    );
    println!(
        "  entries:               {:>9} ({:.0} per endpoint identity)",
        tables.len(),
        tables.len() as f64 / tables.tables().count() as f64
    );

    let peak_full = peak_rss_mib()?;

    // Incremental: one policy's port, then one policy's selector, each
    // changed and changed back, RUNS times; identities do not change.
    let port_changed = change(&intent, "t0", "app-17-in", |p| {
        if let Some(PortMatch::Ports { port, .. }) = p
            .ingress
            .as_mut()
            .and_then(|r| r[0].ports.as_mut())
            .and_then(|m| m.first_mut())
        {
            *port = Some(8081);
        }
    });
    let selector_changed = change(&intent, "t0", "app-17-in-prod", |p| {
        p.selector = Selector::new(Expr::And(vec![eq("app", "app-17"), eq("env", "staging")]));
    });
    let (port_time, port_diff) = incremental(&mut compiler, &ids, &intent, &port_changed)?;
    let (selector_time, _) = incremental(&mut compiler, &ids, &intent, &selector_changed)?;
    let ratio = |d: Duration| 100.0 * d.as_secs_f64() / full.as_secs_f64();
    println!(
        "  incremental, port:     {:>9.3} ms = {:.3}% of full (target <= 1%); diff {} upserts, {} deletes",
        ms(port_time),
        ratio(port_time),
        port_diff.0,
        port_diff.1
    );
    println!(
        "  incremental, selector: {:>9.3} ms = {:.3}% of full",
        ms(selector_time),
        ratio(selector_time)
    );
    let start = Instant::now();
    let again = allocator
        .allocate(&port_changed)
        .context("allocating identities again")?;
    let realloc = start.elapsed();
    assert_eq!(again.ipcache().len(), ids.ipcache().len());
    println!(
        "  identities again:      {:>9.1} ms = {:.1}% of full (only needed when endpoints or prefixes change)",
        ms(realloc),
        ratio(realloc)
    );
    println!(
        "  peak memory (max RSS): {peak_full:>9.0} MiB after the full compiles (target <= 1024 MiB), {:.0} MiB at the end",
        peak_rss_mib()?
    );
    Ok(())
}

/// Median time of updating to `changed` and back to `base`, and the size of
/// the diff of one such update.
fn incremental(
    compiler: &mut Compiler,
    ids: &palisade_policy::Identities,
    base: &Intent,
    changed: &Intent,
) -> anyhow::Result<(Duration, (usize, usize))> {
    let mut times = Vec::new();
    let mut before = compiler.update(base, ids)?;
    let mut sizes = (0, 0);
    for i in 0..RUNS {
        let target = if i % 2 == 0 { changed } else { base };
        let start = Instant::now();
        let after = compiler.update(target, ids)?;
        times.push(start.elapsed());
        if i == 0 {
            let d = diff(&before, &after);
            sizes = (d.upserts.len(), d.deletes.len());
        }
        before = after;
    }
    compiler.update(base, ids)?;
    times.sort();
    Ok((times[times.len() / 2], sizes))
}

/// A copy of `intent` with one policy edited.
fn change(intent: &Intent, tenant: &str, name: &str, edit: impl FnOnce(&mut Policy)) -> Intent {
    let mut next = intent.clone();
    let p = next
        .policies
        .iter_mut()
        .find(|p| p.tenant == tenant && p.name == name)
        .expect("the policy exists");
    edit(p);
    next
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM without a value")?
        .parse()
        .context("VmHWM is not a number")?;
    Ok(kib / 1024.0)
}

/// The intent: per tenant 250 apps in 5 roles, each app in 5 (env, zone)
/// variants of 20 endpoints, and 10 policies per app:
/// - `-in`: ingress from two upstream apps on tcp/8080 and from monitoring on tcp/9100;
/// - `-in-prod` (prod only): deny the staging variants of the upstreams, log tcp/5432-5439;
/// - `-out`: egress to two downstream apps on tcp/8080, DNS on udp+tcp/53;
/// - `-world`: web apps reach 0.0.0.0/0 except 10.0.0.0/8 on tcp/443, others
///   log and deny world on tcp/25;
/// - `-lb`: ingress from one of 16 load balancer subnets 192.168.i.0/24 on tcp/443;
/// - `-ssh` (tier security): pass ssh from bastion to later tiers, deny other ssh;
/// - `-icmp` (tier platform): echo requests in and out;
/// - `-audit` (audit mode, prod only): would deny a third upstream on tcp/8080-8090;
/// - `-host` (tier platform): the host on tcp/10250;
/// - `-ports` (zone a only): the first upstream on tcp/30000-32767.
fn generate() -> Intent {
    let mut intent = Intent::default();
    for (name, order, default_action) in [
        (DEFAULT_TIER, DEFAULT_TIER_ORDER, TierDefault::Deny),
        ("security", 100, TierDefault::Pass),
        ("platform", 200, TierDefault::Pass),
    ] {
        intent.tiers.insert(
            name.into(),
            Tier {
                name: name.into(),
                order,
                default_action,
            },
        );
    }
    for t in 0..TENANTS {
        let tenant = format!("t{t}");
        intent.tenants.insert(
            tenant.clone(),
            Tenant {
                name: tenant.clone(),
                default_action: if t.is_multiple_of(2) {
                    TenantDefault::Deny
                } else {
                    TenantDefault::Kubernetes
                },
                vni: Some(100 + t as u32),
                cidrs: vec![],
            },
        );
        let mut n: u32 = 0;
        for app in 0..APPS_PER_TENANT {
            for (env, zone) in VARIANTS {
                let labels: Labels = [
                    ("app", app_name(app)),
                    ("role", ROLES[app % ROLES.len()].to_string()),
                    ("team", format!("team-{}", app / 10)),
                    ("env", env.to_string()),
                    ("zone", zone.to_string()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                for _ in 0..ENDPOINTS_PER_LABEL_SET {
                    n += 1;
                    intent.endpoints.push(Endpoint {
                        tenant: tenant.clone(),
                        namespace: None,
                        name: format!("{}-{env}-{zone}-{n}", app_name(app)),
                        labels: labels.clone(),
                        ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))],
                        mac: None,
                        node: format!("node-{}", n % 500),
                        interface: None,
                        serve: vec![],
                    });
                }
            }
            intent.policies.extend(app_policies(&tenant, app));
        }
    }
    intent.endpoints.sort_by_key(|e| e.full_ref());
    intent
        .policies
        .sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    intent
}

fn app_name(app: usize) -> String {
    match app {
        0 => "dns".into(),
        1 => "monitoring".into(),
        2 => "bastion".into(),
        _ => format!("app-{app}"),
    }
}

fn eq(k: &str, v: &str) -> Expr {
    Expr::Eq(k.into(), v.into())
}

fn apps_in(apps: &[usize]) -> Expr {
    Expr::In(
        "app".into(),
        apps.iter().map(|&a| app_name(a)).collect::<BTreeSet<_>>(),
    )
}

fn tcp(port: u16, end_port: Option<u16>) -> PortMatch {
    PortMatch::Ports {
        protocol: Protocol::Tcp,
        port: Some(port),
        end_port,
    }
}

fn rule(action: Action, peers: Option<Vec<Peer>>, ports: Option<Vec<PortMatch>>) -> Rule {
    Rule {
        action,
        peers,
        ports,
    }
}

fn sel(e: Expr) -> Peer {
    Peer::Selector(Selector::new(e))
}

/// The ten policies of one app (see [`generate`]).
fn app_policies(tenant: &str, app: usize) -> Vec<Policy> {
    let n = APPS_PER_TENANT;
    let me = app_name(app);
    let up = [(app + 1) % n, (app + 2) % n, (app + 3) % n];
    let down = [(app + n - 1) % n, (app + n - 2) % n];
    let this = eq("app", &me);
    let this_and = |k: &str, v: &str| Selector::new(Expr::And(vec![eq("app", &me), eq(k, v)]));
    let base = |suffix: &str, tier: &str, order: i64, selector: Selector| Policy {
        tenant: tenant.into(),
        namespace: None,
        name: format!("{me}-{suffix}"),
        tier: tier.into(),
        order: Some(order),
        selector,
        mode: Mode::Enforce,
        ingress: None,
        egress: None,
    };
    let icmp_echo = PortMatch::Icmp {
        protocol: Protocol::Icmp,
        icmp_type: Some(8),
        icmp_code: None,
    };

    let mut inbound = base("in", DEFAULT_TIER, 10, Selector::new(this.clone()));
    inbound.ingress = Some(vec![
        rule(
            Action::Allow,
            Some(vec![sel(apps_in(&up[..2]))]),
            Some(vec![tcp(8080, None)]),
        ),
        rule(
            Action::Allow,
            Some(vec![sel(eq("app", "monitoring"))]),
            Some(vec![tcp(9100, None)]),
        ),
    ]);

    let mut prod = base("in-prod", DEFAULT_TIER, 20, this_and("env", "prod"));
    prod.ingress = Some(vec![
        rule(
            Action::Deny,
            Some(vec![sel(Expr::And(vec![
                apps_in(&up[..2]),
                eq("env", "staging"),
            ]))]),
            None,
        ),
        rule(Action::Log, None, Some(vec![tcp(5432, Some(5439))])),
    ]);

    let mut outbound = base("out", DEFAULT_TIER, 10, Selector::new(this.clone()));
    outbound.egress = Some(vec![
        rule(
            Action::Allow,
            Some(vec![sel(apps_in(&down))]),
            Some(vec![tcp(8080, None)]),
        ),
        rule(
            Action::Allow,
            Some(vec![sel(eq("app", "dns"))]),
            Some(vec![
                PortMatch::Ports {
                    protocol: Protocol::Udp,
                    port: Some(53),
                    end_port: None,
                },
                tcp(53, None),
            ]),
        ),
    ]);

    let mut world = base("world", DEFAULT_TIER, 30, Selector::new(this.clone()));
    world.egress = Some(if app.is_multiple_of(ROLES.len()) {
        vec![rule(
            Action::Allow,
            Some(vec![Peer::Cidr {
                cidr: "0.0.0.0/0".parse().expect("valid"),
                except: vec!["10.0.0.0/8".parse().expect("valid")],
            }]),
            Some(vec![tcp(443, None)]),
        )]
    } else {
        vec![
            rule(
                Action::Log,
                Some(vec![Peer::Entity(Entity::World)]),
                Some(vec![tcp(25, None)]),
            ),
            rule(
                Action::Deny,
                Some(vec![Peer::Entity(Entity::World)]),
                Some(vec![tcp(25, None)]),
            ),
        ]
    });

    let mut lb = base("lb", DEFAULT_TIER, 10, Selector::new(this.clone()));
    lb.ingress = Some(vec![rule(
        Action::Allow,
        Some(vec![Peer::Cidr {
            cidr: format!("192.168.{}.0/24", app % LB_SUBNETS)
                .parse()
                .expect("valid"),
            except: vec![],
        }]),
        Some(vec![tcp(443, None)]),
    )]);

    let mut ssh = base("ssh", "security", 1, Selector::new(this.clone()));
    ssh.ingress = Some(vec![
        rule(
            Action::Pass,
            Some(vec![sel(eq("app", "bastion"))]),
            Some(vec![tcp(22, None)]),
        ),
        rule(Action::Deny, None, Some(vec![tcp(22, None)])),
    ]);

    let mut icmp = base("icmp", "platform", 1, Selector::new(this.clone()));
    icmp.ingress = Some(vec![rule(Action::Allow, None, Some(vec![icmp_echo]))]);
    icmp.egress = Some(vec![rule(Action::Allow, None, Some(vec![icmp_echo]))]);

    let mut audit = base("audit", DEFAULT_TIER, 5, this_and("env", "prod"));
    audit.mode = Mode::Audit;
    audit.ingress = Some(vec![rule(
        Action::Deny,
        Some(vec![sel(eq("app", &app_name(up[2])))]),
        Some(vec![tcp(8080, Some(8090))]),
    )]);

    let mut host = base("host", "platform", 2, Selector::new(this.clone()));
    host.ingress = Some(vec![rule(
        Action::Allow,
        Some(vec![Peer::Entity(Entity::Host)]),
        Some(vec![tcp(10250, None)]),
    )]);

    let mut node_ports = base("ports", DEFAULT_TIER, 40, this_and("zone", "a"));
    node_ports.ingress = Some(vec![rule(
        Action::Allow,
        Some(vec![sel(eq("app", &app_name(up[0])))]),
        Some(vec![tcp(30000, Some(32767))]),
    )]);

    vec![
        inbound, prod, outbound, world, lb, ssh, icmp, audit, host, node_ports,
    ]
}
