//! The one place the lab runs iproute2. Commands go in batches (`ip -batch -`,
//! one process per namespace) so that building a lab costs a few processes,
//! not hundreds; a failed batch becomes an error naming the command, the
//! failing line and what `ip` printed.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use crate::error::{LabError, Result};

/// `ip` commands (without the leading `ip`) to run in one namespace, or in the
/// caller's namespace when `netns` is `None`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    /// Where the commands run.
    pub netns: Option<String>,
    /// One `ip` command per line, e.g. `link set eth0 up`.
    pub lines: Vec<String>,
}

impl Batch {
    /// An empty batch for `netns`.
    pub fn new(netns: Option<&str>) -> Batch {
        Batch {
            netns: netns.map(str::to_string),
            lines: Vec::new(),
        }
    }

    /// Adds one command.
    pub fn push(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn command_text(&self) -> String {
        match &self.netns {
            Some(ns) => format!("ip -n {ns} -batch -"),
            None => "ip -batch -".to_string(),
        }
    }

    fn spawn(&self) -> Result<Child> {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.netns {
            cmd.args(["-n", ns]);
        }
        cmd.args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| LabError::Command {
            command: self.command_text(),
            detail: format!("could not start `ip` ({e}); is iproute2 installed?"),
        })?;
        let mut input = self.lines.join("\n");
        input.push('\n');
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A write error means ip exited early; its stderr says why, below.
        let _ = stdin.write_all(input.as_bytes());
        Ok(child)
    }

    fn finish(&self, child: Child) -> Result<()> {
        let output = child.wait_with_output().map_err(|e| LabError::Command {
            command: self.command_text(),
            detail: format!("could not wait for `ip`: {e}"),
        })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(LabError::Command {
            command: match self.failed_line(&stderr) {
                Some(line) => format!("{} (line: ip {line})", self.command_text()),
                None => self.command_text(),
            },
            detail: if stderr.is_empty() {
                format!("exited with {}", output.status)
            } else {
                stderr
            },
        })
    }

    /// `ip -batch` reports `Command failed -:N`; returns line N.
    fn failed_line(&self, stderr: &str) -> Option<&str> {
        let (_, rest) = stderr.rsplit_once("Command failed -:")?;
        let n: usize = rest.split_whitespace().next()?.parse().ok()?;
        self.lines.get(n.checked_sub(1)?).map(String::as_str)
    }
}

/// Runs batches side by side (one `ip` process each) and waits for all of
/// them; returns the first failure. Empty batches are skipped.
pub(crate) fn run_all(batches: &[Batch]) -> Result<()> {
    let mut running = Vec::new();
    let mut first_error = None;
    for batch in batches.iter().filter(|b| !b.lines.is_empty()) {
        tracing::debug!(netns = ?batch.netns, lines = ?batch.lines, "ip batch");
        match batch.spawn() {
            Ok(child) => running.push((batch, child)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for (batch, child) in running {
        if let Err(e) = batch.finish(child) {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Runs one batch.
pub(crate) fn run(batch: &Batch) -> Result<()> {
    run_all(std::slice::from_ref(batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_batch_names_the_failing_line_and_the_reason() {
        let mut batch = Batch::new(None);
        batch.push("link show lo");
        batch.push("link show pl-no-such-if0");
        let err = run(&batch).unwrap_err().to_string();
        assert!(err.contains("ip -batch -"), "{err}");
        assert!(err.contains("line: ip link show pl-no-such-if0"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn a_missing_namespace_is_reported_with_its_name() {
        let mut batch = Batch::new(Some("pl_nosuchlab_n_x"));
        batch.push("link show lo");
        let err = run(&batch).unwrap_err().to_string();
        assert!(err.contains("ip -n pl_nosuchlab_n_x"), "{err}");
    }
}
