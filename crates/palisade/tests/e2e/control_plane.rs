//! Agents that follow a control plane, with real packets: policies applied
//! and deleted through the API change what gets through; a server that goes
//! away leaves enforcement exactly as it was ("fail static") and the agents
//! say so; changes made while they could not reach it are applied when they
//! are back; a server killed with SIGKILL in the middle of a stream of
//! applies restarts on its store and the agents end at the last
//! acknowledged state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use palisade_client::GetOptions;
use palisade_lab::{Lab, ProbeResult};
use palisade_model::{Kind, Protocol};

use crate::server_support::*;
use crate::support::*;

const TCP: Protocol = Protocol::Tcp;

/// The services of three-tier, and what the world reaches.
const PORTS: [(Protocol, u16); 3] = [(TCP, 8080), (TCP, 5432), (TCP, 443)];

#[test]
fn policies_applied_through_the_api_change_real_verdicts_and_deleting_them_changes_them_back() {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("cp-apply", &example);
    let full = lab.intent.clone();
    let server = ServerProcess::start(&node_names(&lab));
    let admin = server.client(ADMIN);
    // Tenants, tiers and endpoints first: no policy yet.
    let base = apply_files(
        &admin,
        &three_tier(&[
            "tenants.yaml",
            "endpoints-acme.yaml",
            "endpoints-globex.yaml",
        ]),
    );

    // The lab's agents, following the server (as a person starts them).
    let (ok, out, err) = run_palisade(&[
        "lab",
        "agents",
        "up",
        "--name",
        lab.name(),
        "--server",
        &server.url,
        "--token",
        ADMIN,
    ]);
    assert!(ok, "{out}{err}");
    for node in node_names(&lab) {
        assert!(out.contains(&format!("agent of {node} enforcing")), "{out}");
    }
    let state_dirs: Vec<_> = Lab::open(lab.name())
        .unwrap()
        .agents()
        .iter()
        .map(|a| a.state_dir.clone())
        .collect();
    assert_eq!(state_dirs.len(), lab.lab.nodes().len());
    // Every agent has `revision` in the kernel; their links as they say.
    let applied = |revision: u64| -> Vec<palisade_agent::ServerLinkStatus> {
        state_dirs
            .iter()
            .map(|dir| {
                poll(Duration::from_secs(30), || {
                    palisade_agent::read_status(dir)
                        .ok()
                        .flatten()
                        .and_then(|s| s.server)
                        .filter(|l| l.applied_revision >= revision)
                })
                .unwrap_or_else(|| panic!("an agent did not apply revision {revision} within 30 s"))
            })
            .collect()
    };
    applied(base.revision);

    let probes = matrix(&lab, &PORTS, &[(TCP, 443)]);
    let web_to_app = || {
        lab.forget_gateway("acme:web-1");
        lab.probe("acme:web-1", "acme:app-1", TCP, 8080)
    };
    // Zero trust: with no policy nothing flows, and the kernel agrees.
    let no_policy = load(&three_tier(&[
        "tenants.yaml",
        "endpoints-acme.yaml",
        "endpoints-globex.yaml",
    ]));
    assert_eq!(allowed_count(&lab, &no_policy, &probes), 0);
    let wrong = mismatches(&lab, &no_policy, &probes);
    assert!(wrong.is_empty(), "without policies:\n{}", wrong.join("\n"));

    // The policies, through the API: the verdicts follow the evaluator.
    let policies = three_tier(&["policies-acme.yaml", "policies-globex.yaml"]);
    let with_policies = apply_files(&admin, &policies);
    assert!(applied(with_policies.revision).iter().all(|l| l.connected));
    assert!(web_to_app().is_reachable());
    assert_matrix(&lab, &full, &probes, "policies applied through the API");

    // `palisade status` lists every agent as up to date and healthy, with
    // the endpoints attached on its node.
    let status = block_on(admin.status()).unwrap();
    let mut attached = 0;
    for node in node_names(&lab) {
        let agent = status
            .agents
            .iter()
            .find(|a| a.node == node)
            .unwrap_or_else(|| panic!("{node} is not in the status: {status:?}"));
        assert!(
            agent.applied_revision >= with_policies.revision,
            "{agent:?}"
        );
        assert_eq!(agent.lag, 0, "{agent:?}");
        assert_eq!(agent.health, "ok");
        attached += agent.endpoints.len();
    }
    assert_eq!(attached, lab.lab.endpoints().len(), "{status:?}");
    let (ok, out, err) = run_palisade(&["status", "--server", &server.url, "--token", ADMIN]);
    assert!(
        ok && out.contains("node-1") && out.contains(" ok "),
        "{out}{err}"
    );

    // Deleted through the CLI: back to nothing.
    let mut delete = vec!["delete", "--server", &server.url, "--token", ADMIN, "-f"];
    let policy_paths: Vec<String> = policies.iter().map(|p| p.display().to_string()).collect();
    delete.extend(policy_paths.iter().map(String::as_str));
    let (ok, out, err) = run_palisade(&delete);
    assert!(ok, "{out}{err}");
    let after = block_on(admin.status()).unwrap().intent_revision;
    applied(after);
    assert_eq!(web_to_app(), ProbeResult::Blocked);
    let wrong = mismatches(&lab, &no_policy, &probes);
    assert!(wrong.is_empty(), "after the delete:\n{}", wrong.join("\n"));

    // Without its server, `lab agents status` says the agents fail static.
    let mut server = server;
    server.stop();
    let said = eventually(Duration::from_secs(20), || {
        let (_, out, _) = run_palisade(&["lab", "agents", "status", "--name", lab.name()]);
        out.matches("server DISCONNECTED since").count() == state_dirs.len()
            && out.contains("(fail static)")
    });
    assert!(
        said,
        "{}",
        run_palisade(&["lab", "agents", "status", "--name", lab.name()]).1
    );
}

/// Lets web reach app on TCP 9000 (both sides), where the test runs an
/// echo server (the lab's responder owns 8080 and answers once).
const ECHO_POLICY: &str = "\
apiVersion: palisade.dev/v1
kind: Policy
metadata: {name: echo, tenant: acme}
spec:
  selector: app == 'app'
  ingress:
    - action: allow
      from: [{selector: app == 'web'}]
      ports: [{protocol: TCP, port: 9000}]
---
apiVersion: palisade.dev/v1
kind: Policy
metadata: {name: echo-out, tenant: acme}
spec:
  selector: app == 'web'
  egress:
    - action: allow
      to: [{selector: app == 'app'}]
      ports: [{protocol: TCP, port: 9000}]
";

#[test]
fn a_server_that_goes_away_leaves_enforcement_as_it_was_and_what_changed_meanwhile_is_applied() {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("cp-static", &example);
    let mut server = ServerProcess::start(&node_names(&lab));
    let admin = server.client(ADMIN);
    apply_files(&admin, &example);
    let revision = apply_yaml(&admin, ECHO_POLICY).revision;
    let agents = ServerAgents::start(&lab, &server.url, &[]);
    agents.wait_applied(revision);
    let mut intent = lab.intent.clone();
    intent.policies.extend(acme_policies(ECHO_POLICY));
    let probes = matrix(&lab, &PORTS, &[(TCP, 443)]);
    assert_matrix(&lab, &intent, &probes, "with the server");

    // A long-lived allowed connection, open across the outage.
    let echo_addr = SocketAddr::from((lab.ip("acme:app-1"), 9000));
    let _echo = EchoServer::start(&lab.netns("acme:app-1"), echo_addr);
    let mut conn = connect(&lab.netns("acme:web-1"), echo_addr).expect("the echo policy allows it");
    round_trip(&mut conn, 1).unwrap();

    // The server goes away: every agent says so.
    server.stop();
    for agent in agents.all() {
        let down = agent.wait_status("disconnected", Duration::from_secs(20), |s| {
            s.server.as_ref().is_some_and(|l| !l.connected)
        });
        let link = down.server.unwrap();
        assert!(link.reason.is_some(), "{link:?}");
        assert!(link.applied_revision >= revision, "{link:?}");
        let text = agent.wait_metrics("the lost server", |t| {
            metric(t, "palisade_agent_server_connected") == Some(0.0)
                && metric(t, "palisade_agent_server_last_contact_age_seconds")
                    .is_some_and(|a| a > 0.0)
        });
        assert!(must_metric(&text, "palisade_agent_server_disconnects_total") >= 1.0);
        assert!(
            agent.log().contains("failing static"),
            "the log says so:\n{}",
            agent.log()
        );
    }

    // Enforcement is exactly as before: allowed still allowed, denied
    // still denied, the open connection keeps working.
    assert_matrix(&lab, &intent, &probes, "while the server is away");
    for n in 2..10 {
        round_trip(&mut conn, n).expect("an established connection survives the outage");
    }

    // A change while the agents cannot reach the server: made through a
    // server on the same store but another port, which they do not know.
    let elsewhere = server.start_elsewhere();
    let other = ServerProcess::client_of(&elsewhere, ADMIN);
    let changed = block_on(other.delete(
        Kind::Policy,
        "quarantine",
        &GetOptions {
            tenant: Some("acme".into()),
            namespace: None,
        },
        None,
    ))
    .unwrap();
    server.stop();
    thread::sleep(Duration::from_millis(300));
    for agent in agents.all() {
        let still = agent.status().unwrap().server.unwrap();
        assert!(
            !still.connected && still.applied_revision < changed.revision,
            "{still:?}"
        );
    }
    lab.forget_gateway("acme:web-2");
    assert_eq!(
        lab.probe("acme:web-2", "acme:app-1", TCP, 8080),
        ProbeResult::Blocked,
        "the quarantine still holds while the agent cannot know it is gone"
    );

    // The server is back where the agent looks: the change is applied.
    server.restart();
    agents.wait_status(
        "reconnected with the change",
        Duration::from_secs(30),
        |s| {
            s.last_error.is_none()
                && s.server
                    .as_ref()
                    .is_some_and(|l| l.connected && l.applied_revision >= changed.revision)
        },
    );
    intent
        .policies
        .retain(|p| p.name != "quarantine" || p.tenant != "acme");
    lab.forget_gateway("acme:web-2");
    assert!(lab
        .probe("acme:web-2", "acme:app-1", TCP, 8080)
        .is_reachable());
    assert_matrix(&lab, &intent, &probes, "after the server came back");
    agents.all()[0].wait_metrics("the connection", |t| {
        metric(t, "palisade_agent_server_connected") == Some(1.0)
    });
    round_trip(&mut conn, 100).expect("and the connection still works");
}

/// The policies of YAML documents about tenant acme (read with three-tier's
/// tenants and tiers, which they refer to).
fn acme_policies(yaml: &str) -> Vec<palisade_model::Policy> {
    let tenants = std::fs::read_to_string(repo("examples/three-tier/tenants.yaml")).unwrap();
    palisade_model::load_str(
        &format!("{tenants}\n---\n{yaml}"),
        "policies.yaml",
        &Default::default(),
    )
    .unwrap_or_else(|d| panic!("{d}"))
    .policies
}

/// The policy of step `n`: web reaches app on 8080 when `n` is even, on
/// 8081 (nothing listens there) when it is odd.
fn toggle(n: u64) -> String {
    let port = if n.is_multiple_of(2) { 8080 } else { 8081 };
    format!(
        "apiVersion: palisade.dev/v1\nkind: Policy\nmetadata: {{name: app, tenant: acme}}\nspec:\n  \
         selector: app == 'app'\n  ingress:\n    - action: allow\n      from: [{{selector: app == 'web'}}]\n      \
         ports: [{{protocol: TCP, port: {port}}}]\n  egress:\n    - action: allow\n      \
         to: [{{selector: app == 'db'}}]\n      ports: [{{protocol: TCP, port: 5432}}]\n"
    )
}

#[test]
fn a_server_killed_during_a_stream_of_applies_leaves_the_agent_at_the_last_acknowledged_state() {
    let example = [repo("examples/three-tier")];
    let lab = TestLab::up("cp-kill9", &example);
    let mut server = ServerProcess::start(&node_names(&lab));
    let admin = server.client(ADMIN);
    let first = apply_files(&admin, &example);
    let agents = ServerAgents::start(&lab, &server.url, &[]);
    agents.wait_applied(first.revision);

    // Apply the toggle again and again; remember the last acknowledged step.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let applier = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), server.url.clone());
        thread::spawn(move || {
            let client = ServerProcess::client_of(&url, ADMIN);
            let mut n = 1;
            while !stop.load(Ordering::SeqCst) {
                let docs = vec![serde_yaml::from_str::<serde_json::Value>(&toggle(n)).unwrap()];
                match block_on(client.apply(docs)) {
                    Ok(_) => {
                        acked.store(n, Ordering::SeqCst);
                        n += 1;
                    }
                    // The server is gone: the last step may or may not be in.
                    Err(_) => return n,
                }
            }
            n
        })
    };
    // Let the agent follow a good number of them, then pull the plug.
    assert!(
        eventually(Duration::from_secs(30), || acked.load(Ordering::SeqCst)
            >= 20),
        "the applies are too slow: {} acknowledged",
        acked.load(Ordering::SeqCst)
    );
    server.kill9();
    stop.store(true, Ordering::SeqCst);
    let attempted = applier.join().unwrap();
    let last_acked = acked.load(Ordering::SeqCst);
    assert!(last_acked >= 20);
    agents.wait_status("disconnected", Duration::from_secs(20), |s| {
        s.server.as_ref().is_some_and(|l| !l.connected)
    });

    // Back on the same store: every acknowledged step is there (the one in
    // flight at the kill may be too).
    server.restart();
    let stored = block_on(admin.get(
        Kind::Policy,
        "app",
        &GetOptions {
            tenant: Some("acme".into()),
            namespace: None,
        },
    ))
    .unwrap();
    let port = stored["spec"]["ingress"][0]["ports"][0]["port"]
        .as_u64()
        .unwrap();
    let status = block_on(admin.status()).unwrap();
    let step = if (port == 8080) == last_acked.is_multiple_of(2) {
        last_acked
    } else {
        assert_eq!(
            attempted,
            last_acked + 1,
            "the store holds neither the last acknowledged step nor the one in flight"
        );
        attempted
    };

    // The agents reconnect and end at exactly that state.
    agents.wait_status("the server's last state", Duration::from_secs(30), |s| {
        s.server
            .as_ref()
            .is_some_and(|l| l.connected && l.applied_revision >= status.intent_revision)
    });
    lab.forget_gateway("acme:web-1");
    let reached = lab
        .probe("acme:web-1", "acme:app-1", TCP, 8080)
        .is_reachable();
    assert_eq!(
        reached,
        step.is_multiple_of(2),
        "step {step} (last acknowledged {last_acked}) allows 8080: {}",
        step.is_multiple_of(2)
    );
    let mut intent = lab.intent.clone();
    intent
        .policies
        .retain(|p| !(p.name == "app" && p.tenant == "acme"));
    intent.policies.extend(acme_policies(&toggle(step)));
    let probes = matrix(&lab, &PORTS, &[(TCP, 443)]);
    assert_matrix(&lab, &intent, &probes, "after the kill and the restart");
}
