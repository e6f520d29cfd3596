//! Processes the lab deals with by pid: identifying one safely (pid plus start
//! time, so a reused pid is never mistaken for a responder), finding those
//! inside given network namespaces, and killing and reaping them.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::netns;

/// How long `kill_all` waits for killed processes to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`, clock ticks since
/// boot), or `None` when there is no such process.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3, so field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `start_time`.
pub(crate) fn is_same_process(pid: i32, start_time: u64) -> bool {
    self::start_time(pid) == Some(start_time)
}

/// Processes whose network namespace (as their main thread sees it) is one of
/// `namespaces` (identities from [`netns::identity`]). The calling process
/// is never listed.
pub(crate) fn pids_in_namespaces(namespaces: &HashSet<(u64, u64)>) -> Vec<i32> {
    if namespaces.is_empty() {
        return vec![];
    }
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let ns = format!("/proc/{pid}/ns/net");
            netns::identity_of_link(Path::new(&ns)).is_some_and(|id| namespaces.contains(&id))
        })
        .collect()
}

/// Kills every process in `pids` with SIGKILL and waits (up to a few seconds)
/// until each is gone, reaping those that are our children so that no zombie
/// stays behind. Returns how many were killed.
pub(crate) fn kill_all(pids: &[i32]) -> usize {
    let mut killed = Vec::new();
    for &pid in pids {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => killed.push(pid),
            Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid, error = %e, "could not kill lab process"),
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    for &pid in &killed {
        while !is_gone(pid) {
            if Instant::now() > deadline {
                tracing::warn!(pid, "lab process still there after SIGKILL");
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
    killed.len()
}

/// Asks every process in `pids` to stop with SIGTERM, waits up to `grace`
/// for each to exit, then kills what is left with SIGKILL (see
/// [`kill_all`]). Returns how many were running.
pub(crate) fn terminate_all(pids: &[i32], grace: Duration) -> usize {
    let mut running = Vec::new();
    for &pid in pids {
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            Ok(()) => running.push(pid),
            Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid, error = %e, "could not signal lab process"),
        }
    }
    let deadline = Instant::now() + grace;
    let mut left: Vec<i32> = running.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| !is_gone(pid));
        thread::sleep(Duration::from_millis(5));
    }
    left.retain(|&pid| !is_gone(pid));
    if !left.is_empty() {
        tracing::warn!(pids = ?left, "still running after SIGTERM; killing");
        kill_all(&left);
    }
    running.len()
}

/// Whether `pid` has exited: reaped now (if it is our child), gone, or a zombie
/// that its own parent will reap.
fn is_gone(pid: i32) -> bool {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // Not our child: look at its state instead.
        Err(_) => match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
            Err(_) => true,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn start_time_tells_a_process_from_a_later_one_with_the_same_pid() {
        let me = std::process::id() as i32;
        let t = start_time(me).expect("own start time");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        assert_eq!(start_time(i32::MAX), None);
    }

    #[test]
    fn kill_all_kills_and_reaps_a_child() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        assert_eq!(kill_all(&[pid]), 1);
        // Reaped: no /proc entry left, not even a zombie, and nothing left to wait for.
        assert!(start_time(pid).is_none());
        assert!(child.wait().is_err());
        assert_eq!(kill_all(&[pid]), 0);
    }
}
