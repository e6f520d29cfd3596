//! Real packets against the evaluator on random intents: a few intents from
//! the differential generators (seeded; the seed is printed), each written
//! as YAML, built as a lab with `palisade lab up`, enforced by real agents
//! started with `palisade lab agents up`, and a random sample of probes
//! (endpoint to endpoint, to and from the world; TCP, UDP, ICMP) must each
//! get the verdict `palisade_policy::evaluate` gives.
//!
//! `PALISADE_DIFF_SEED=<seed>` replays a run.

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use palisade_differential::flows::PROBE_PORTS;
use palisade_differential::intents::{Sampler, Shape, NODE};
use palisade_differential::yaml::to_yaml;
use palisade_lab::Lab;
use palisade_model::{Intent, Protocol};
use palisade_policy::{evaluate, Flow, FlowPeer, Verdict, WORLD_ADDRESS};

use crate::support::*;

/// Intents per run.
const INTENTS: usize = 5;
/// Probes per intent (at most).
const PROBES: usize = 40;

/// Takes lab `name` down on drop (with its agents), also when `lab up` failed half-way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Lab::down(&self.0);
    }
}

fn seed() -> u64 {
    match std::env::var("PALISADE_DIFF_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("PALISADE_DIFF_SEED={text} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// The (protocol, port) pairs probed between endpoints and to and from the world.
type Ports = Vec<(Protocol, u16)>;

/// Whether the evaluator allows some and denies some of the flows a lab of
/// `intent` would probe (the world at the lab's usual address): a lab where
/// everything is denied, or allowed, would prove little.
fn mixed(intent: &Intent, ports: &Ports, world_ports: &Ports) -> bool {
    let mut verdicts = BTreeSet::new();
    let flow = |src, dst, (proto, port): (Protocol, u16)| Flow {
        src,
        dst,
        protocol: proto.number(),
        port: if proto == Protocol::Icmp {
            8 << 8
        } else {
            port
        },
    };
    for a in &intent.endpoints {
        let world = FlowPeer::Address {
            tenant: &a.tenant,
            ip: WORLD_ADDRESS,
        };
        for b in intent
            .endpoints
            .iter()
            .filter(|b| b.tenant == a.tenant && b.name != a.name)
        {
            for &p in ports {
                let f = flow(FlowPeer::Endpoint(a), FlowPeer::Endpoint(b), p);
                verdicts.insert(evaluate(intent, &f).verdict);
            }
        }
        for &p in world_ports {
            verdicts.insert(evaluate(intent, &flow(world, FlowPeer::Endpoint(a), p)).verdict);
            verdicts.insert(evaluate(intent, &flow(FlowPeer::Endpoint(a), world, p)).verdict);
        }
    }
    verdicts.len() == 2
}

#[test]
fn real_probes_on_random_intents_get_the_evaluators_verdicts() {
    let seed = seed();
    eprintln!("differential e2e: seed {seed} (PALISADE_DIFF_SEED={seed} replays it)");
    let mut sampler = Sampler::new(seed);
    let shape = Shape {
        // One node: what crosses nodes is the overlay's test.
        remote_endpoints: false,
        node: NODE,
    };
    for round in 0..INTENTS {
        let p = sampler.choose(&PROBE_PORTS, 2);
        let w = sampler.choose(&PROBE_PORTS, 2);
        let ports = vec![
            (Protocol::Tcp, p[0]),
            (Protocol::Udp, p[1]),
            (Protocol::Icmp, 0),
        ];
        let world_ports = vec![
            (Protocol::Tcp, w[0]),
            (Protocol::Udp, w[1]),
            (Protocol::Icmp, 0),
        ];
        let mut intent = sampler.intent(shape);
        while !mixed(&intent, &ports, &world_ports) {
            intent = sampler.intent(shape);
        }
        let yaml = to_yaml(&intent);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("intent.yaml"), &yaml).unwrap();
        let source = dir.path().display().to_string();
        let name = unique("dif");
        let _down = Down(name.clone());
        let started = Instant::now();
        let (ok, out, err) = run_palisade(&["lab", "up", "--name", &name, "-f", &source]);
        assert!(ok, "palisade lab up: {out}{err}\nintent:\n{yaml}");
        let (ok, out, err) = run_palisade(&["lab", "agents", "up", "--name", &name, "-f", &source]);
        assert!(ok, "palisade lab agents up: {out}{err}\nintent:\n{yaml}");
        let lab = TestLab {
            lab: Lab::open(&name).unwrap(),
            intent: load(&[dir.path().to_path_buf()]),
        };

        // Half the sample from the flows the evaluator allows, half from
        // those it denies.
        let (allowed, denied): (Vec<Probe>, Vec<Probe>) = matrix(&lab, &ports, &world_ports)
            .into_iter()
            .partition(|p| expected(&lab, &lab.intent, p).0 == Verdict::Allow);
        let mut probes = sampler.choose(&allowed, PROBES / 2);
        probes.extend(sampler.choose(&denied, PROBES - probes.len()));
        let wrong = mismatches(&lab, &lab.intent, &probes);
        eprintln!(
            "intent {round}: {} endpoints, {} policies; {} probes ({} allowed); {:.1} s",
            intent.endpoints.len(),
            intent.policies.len(),
            probes.len(),
            allowed_count(&lab, &lab.intent, &probes),
            started.elapsed().as_secs_f64()
        );
        assert!(
            wrong.is_empty(),
            "seed {seed}, intent {round}: {} of {} probes differ from the evaluator:\n{}\n\
             replay: save the intent below as DIR/intent.yaml, then `palisade lab up -f DIR` \
             and `palisade lab agents up -f DIR` (or `palisade explain -f DIR ...`)\n{yaml}",
            wrong.len(),
            probes.len(),
            wrong.join("\n")
        );
    }
}
