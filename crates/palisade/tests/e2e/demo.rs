//! `palisade demo` as a person runs it: the probe matrix with the rule
//! behind each verdict and the kernel agreeing with the evaluator, pointers
//! to the flows, the UI and the metrics; and everything it made gone
//! afterwards, after `--once` and after Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_lab::{agents_bpffs_root, Lab};

use crate::support::*;

/// Takes lab `name` down on drop (when the demo did not).
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Lab::down(&self.0);
    }
}

/// Nothing of demo process `pid` with lab `name` is left.
fn assert_gone(name: &str, pid: u32) {
    assert!(Lab::open(name).is_err(), "the lab {name} is still there");
    let namespaces = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("pl_{name}_")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(namespaces.is_empty(), "namespaces left: {namespaces:?}");
    assert!(!agents_bpffs_root(name).exists(), "pins left");
    let work = std::env::temp_dir().join(format!("palisade-demo-{pid}"));
    assert!(!work.exists(), "{} (store, tokens) left", work.display());
}

/// `a  b   c` → `a b c`, so that lines are compared without the columns' padding.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_demo_prints_the_matrix_with_the_rules_and_removes_everything_after() {
    let name = unique("demo");
    let _down = Down(name.clone());
    let child = Command::new(palisade())
        .args(["demo", "--once", "--name", &name, "--listen", "127.0.0.1:0"])
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text = squeeze(&stdout);
    for line in [
        "48 probes: 8 allowed, 40 denied; the kernel agrees with the evaluator on every one",
        "acme:web-1 acme:app-1 tcp/8080 ALLOW default/app ingress rule 0 (allow), default/web egress rule 0 (allow)",
        "acme:web-2 acme:app-1 tcp/8080 DENY security/quarantine ingress rule 0 (deny)",
        "world:acme@node-1 acme:web-1 tcp/443 ALLOW default/web ingress rule 0 (allow), audit: would deny by default/web-lockdown ingress rule 0 (deny)",
        "acme:web-1 acme:db-1 tcp/5432 DENY default deny of tier default (ingress), default deny of tier default (egress)",
        "palisade flows --follow",
        "/ui/",
        "tenant acme token:",
        "agent of node-1: http://127.0.0.1:",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("DISAGREES"), "{stdout}");
    assert!(stderr.contains("cleaning up"), "{stderr}");
    assert_gone(&name, pid);
}

#[test]
fn ctrl_c_stops_the_demo_and_removes_everything_it_made() {
    let name = unique("demo-int");
    let _down = Down(name.clone());
    let mut child = Command::new(palisade())
        .args(["demo", "--name", &name, "--listen", "127.0.0.1:0"])
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let up = loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.contains("runs until Ctrl-C");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !up {
        let _ = child.kill();
    }
    assert!(up, "the demo did not come up:\n{}", seen.join("\n"));
    // The lab and its agent are up while the demo runs.
    let lab = Lab::open(&name).unwrap();
    assert!(lab.agents().iter().all(|a| a.is_running()));

    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let exit = poll(Duration::from_secs(60), || child.try_wait().unwrap());
    let Some(exit) = exit else {
        let _ = child.kill();
        panic!("the demo did not stop on Ctrl-C");
    };
    assert!(exit.success(), "{exit}");
    assert_gone(&name, pid);
}
