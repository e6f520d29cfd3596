//! Where the agent's desired state comes from: a [`Source`] delivers complete
//! [`Snapshot`]s of the intent (or says why its input was rejected) through
//! [`Updates`]. The agent reconciles the kernel with the latest good
//! snapshot; it never sees how the source got it.
//!
//! [`DirectorySource`] reads resource files and directories and watches them
//! (inotify, with a short debounce): a valid edit becomes a new snapshot, an
//! invalid one a [`SourceUpdate::Rejected`] with every diagnostic. The
//! control plane source (`crate::server::ServerSource`) keeps its own copy of
//! the intent from the server's snapshot and ordered deltas and sends a
//! snapshot (with the server's identities and revision) after each message,
//! plus the state of its connection; nothing downstream changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use palisade_model::{Diagnostics, Intent, LoadOptions};
use palisade_policy::Identities;

use crate::config::Timing;
use crate::error::{AgentError, Result};

/// How often a source with nothing to do checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// One complete desired state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The whole validated intent (every tenant: the agent picks its node's).
    pub intent: Intent,
    /// Identities allocated by the source (the control plane allocates them
    /// for every agent); `None`: the agent allocates and persists its own.
    pub identities: Option<Identities>,
    /// What this snapshot is, for logs (`3 files`, a server revision, ...).
    pub revision: String,
    /// The control plane revision it is at, for sources that have one.
    pub server: Option<ServerRevision>,
}

/// A control plane revision and when the server committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRevision {
    /// The store revision.
    pub revision: u64,
    /// When the server saw it committed (its clock), when it says.
    pub committed_at: Option<SystemTime>,
}

/// A change of a source's connection to its control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Connected (again); messages follow.
    Connected {
        /// The server's URL.
        server: String,
    },
    /// Lost: the agent keeps enforcing what it applied ("fail static").
    Disconnected {
        /// Why.
        reason: String,
        /// Since when.
        since: SystemTime,
    },
}

/// What a source reports.
#[derive(Debug, Clone)]
pub enum SourceUpdate {
    /// A new desired state to enforce.
    Snapshot(Box<Snapshot>),
    /// The input changed but is invalid: the agent logs every problem and
    /// keeps enforcing the last good snapshot.
    Rejected {
        /// Every problem, with file:line:col where there is a file.
        diagnostics: Diagnostics,
    },
    /// The connection to the control plane changed.
    Link(LinkEvent),
    /// The control plane's table of node underlay addresses (every node,
    /// replacing the last one): where the endpoints of other nodes are
    /// reached over the overlay.
    Nodes(std::collections::BTreeMap<String, std::net::Ipv4Addr>),
    /// The control plane says the node has every change up to `revision`
    /// (a heartbeat: nothing new for it).
    UpTo {
        /// The server's revision.
        revision: u64,
    },
}

/// The agent's end of a source: where updates go.
#[derive(Clone)]
pub struct Updates {
    send: Arc<dyn Fn(SourceUpdate) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

impl Updates {
    /// Updates handed to `send`, which returns `false` once nobody listens.
    pub fn new(send: impl Fn(SourceUpdate) -> bool + Send + Sync + 'static) -> Updates {
        Updates {
            send: Arc::new(send),
        }
    }

    /// Hands an update to the agent; `false` when the agent is gone (stop).
    pub fn send(&self, update: SourceUpdate) -> bool {
        (self.send)(update)
    }
}

/// Tells a source to stop.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag not raised yet.
    pub fn new() -> StopFlag {
        StopFlag::default()
    }

    /// Raises the flag.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A provider of desired states. The agent runs it on a thread of its own.
pub trait Source: Send {
    /// Sends a first snapshot (or rejection) as soon as it can, then one
    /// update per change, until `stop` is raised or `updates` refuses one.
    fn run(self: Box<Self>, updates: Updates, stop: StopFlag) -> Result<()>;
}

/// Resource files and directories, watched for changes.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    paths: Vec<PathBuf>,
    options: LoadOptions,
    timing: Timing,
}

impl DirectorySource {
    /// A source reading `paths` (directories recursively, as
    /// `palisade_model::load_paths` does). Every path must exist now.
    pub fn new(paths: Vec<PathBuf>, options: LoadOptions, timing: Timing) -> Result<Self> {
        if paths.is_empty() {
            return Err(AgentError::PolicyPath {
                path: PathBuf::new(),
                reason: "no policy path given (--policy-dir)".into(),
            });
        }
        for path in &paths {
            if let Err(e) = std::fs::metadata(path) {
                return Err(AgentError::PolicyPath {
                    path: path.clone(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(DirectorySource {
            paths,
            options,
            timing,
        })
    }

    /// Reads every path now.
    pub fn load(&self) -> SourceUpdate {
        match palisade_model::load_paths(&self.paths, &self.options) {
            Ok(intent) => SourceUpdate::Snapshot(Box::new(Snapshot {
                revision: format!(
                    "{} endpoints, {} policies",
                    intent.endpoints.len(),
                    intent.policies.len()
                ),
                intent,
                identities: None,
                server: None,
            })),
            Err(diagnostics) => SourceUpdate::Rejected { diagnostics },
        }
    }

    /// Starts inotify watches: directories recursively, a file through its
    /// parent directory (so that editors that replace the file are seen).
    fn watch(&self, events: mpsc::Sender<notify::Result<notify::Event>>) -> Result<WatchSet> {
        let mut watcher =
            notify::recommended_watcher(events).map_err(|e| AgentError::PolicyPath {
                path: self.paths[0].clone(),
                reason: format!("cannot start watching: {e}"),
            })?;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for path in &self.paths {
            let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
            let (target, mode) = if is_dir {
                dirs.push(absolute(path));
                (path.clone(), RecursiveMode::Recursive)
            } else {
                files.push(absolute(path));
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                (parent.to_path_buf(), RecursiveMode::NonRecursive)
            };
            watcher
                .watch(&target, mode)
                .map_err(|e| AgentError::PolicyPath {
                    path: target.clone(),
                    reason: format!("cannot watch: {e}"),
                })?;
        }
        Ok(WatchSet {
            _watcher: watcher,
            files,
            dirs,
        })
    }
}

/// Live watches and what they are for.
struct WatchSet {
    _watcher: notify::RecommendedWatcher,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl WatchSet {
    /// Whether an event can change what `load_paths` reads: a change (not a
    /// mere open or read) of a watched file, or of a non-hidden entry below
    /// a watched directory.
    fn matters(&self, event: &notify::Event) -> bool {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        event.paths.iter().any(|path| {
            let path = absolute(path);
            if self.files.contains(&path) {
                return true;
            }
            self.dirs.iter().any(|dir| {
                path.strip_prefix(dir).is_ok_and(|rest| {
                    // load_paths skips names starting with '.' (editor swap
                    // files, atomic-write temporaries): so do we.
                    !rest
                        .components()
                        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
                })
            })
        })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Source for DirectorySource {
    fn run(self: Box<Self>, updates: Updates, stop: StopFlag) -> Result<()> {
        let (events_tx, events) = mpsc::channel();
        // Watch before the first read, so that no edit falls in between.
        let watches = self.watch(events_tx)?;
        let mut last = self.load();
        let mut last_intent = match &last {
            SourceUpdate::Snapshot(s) => Some(s.intent.clone()),
            _ => None,
        };
        if !updates.send(last.clone()) {
            return Ok(());
        }
        while !stop.is_raised() {
            let first = match events.recv_timeout(STOP_CHECK) {
                Ok(Ok(event)) if watches.matters(&event) => Instant::now(),
                Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "policy watch reported an error; reading the files again");
                    Instant::now()
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(AgentError::PolicyPath {
                        path: self.paths[0].clone(),
                        reason: "the file watcher stopped".into(),
                    })
                }
            };
            // Debounce: read once the files have been quiet for a moment.
            let hard_deadline = first + self.timing.debounce_max;
            let mut quiet_deadline = first + self.timing.debounce;
            loop {
                let deadline = quiet_deadline.min(hard_deadline);
                let wait = deadline.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    break;
                }
                match events.recv_timeout(wait) {
                    Ok(Ok(event)) if watches.matters(&event) => {
                        quiet_deadline = Instant::now() + self.timing.debounce;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let update = self.load();
            let unchanged = match (&update, &last) {
                (SourceUpdate::Snapshot(s), _) => last_intent.as_ref() == Some(&s.intent),
                (
                    SourceUpdate::Rejected { diagnostics },
                    SourceUpdate::Rejected {
                        diagnostics: before,
                    },
                ) => diagnostics == before,
                _ => false,
            };
            if unchanged {
                tracing::debug!(
                    elapsed_ms = first.elapsed().as_millis() as u64,
                    "policy files changed but the intent did not"
                );
                continue;
            }
            if let SourceUpdate::Snapshot(s) = &update {
                last_intent = Some(s.intent.clone());
            }
            last = update.clone();
            tracing::debug!(
                since_change_ms = first.elapsed().as_millis() as u64,
                "policy files read"
            );
            if !updates.send(update) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultAction: deny}\n";

    fn collect() -> (Updates, mpsc::Receiver<SourceUpdate>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        (
            Updates::new(move |u| tx.lock().unwrap().send(u).is_ok()),
            rx,
        )
    }

    fn write_atomically(path: &Path, text: &str) {
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn edits_become_snapshots_and_invalid_input_is_rejected_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenant.yaml");
        std::fs::write(&file, TENANT).unwrap();
        let source = DirectorySource::new(
            vec![dir.path().to_path_buf()],
            LoadOptions::default(),
            Timing::default(),
        )
        .unwrap();
        let (updates, rx) = collect();
        let stop = StopFlag::new();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || Box::new(source).run(updates, stop))
        };
        let next = || rx.recv_timeout(Duration::from_secs(5)).expect("an update");

        match next() {
            SourceUpdate::Snapshot(s) => assert_eq!(s.intent.tenants.len(), 1),
            other => panic!("{other:?}"),
        }
        // A new file in a new subdirectory is read.
        std::fs::create_dir(dir.path().join("more")).unwrap();
        write_atomically(
            &dir.path().join("more/globex.yaml"),
            &TENANT.replace("acme", "globex"),
        );
        match next() {
            SourceUpdate::Snapshot(s) => assert_eq!(s.intent.tenants.len(), 2),
            other => panic!("{other:?}"),
        }
        write_atomically(&file, "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultActio: deny}\n");
        match next() {
            SourceUpdate::Rejected { diagnostics } => {
                let text = diagnostics.to_string();
                assert!(text.contains("tenant.yaml:4:"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        stop.raise();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_single_file_is_watched_through_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tenant.yaml");
        std::fs::write(&file, TENANT).unwrap();
        // A file beside it is not part of the source.
        std::fs::write(dir.path().join("other.yaml"), "not: [valid").unwrap();
        let source = DirectorySource::new(
            vec![file.clone()],
            LoadOptions::default(),
            Timing::default(),
        )
        .unwrap();
        let (updates, rx) = collect();
        let stop = StopFlag::new();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || Box::new(source).run(updates, stop))
        };
        let next = || rx.recv_timeout(Duration::from_secs(5)).expect("an update");
        assert!(matches!(next(), SourceUpdate::Snapshot(_)));

        std::fs::write(dir.path().join("other.yaml"), "still: [not valid").unwrap();
        write_atomically(&file, &TENANT.replace("acme", "globex"));
        match next() {
            SourceUpdate::Snapshot(s) => assert!(s.intent.tenants.contains_key("globex")),
            other => panic!("{other:?}"),
        }
        stop.raise();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_missing_path_is_refused_up_front() {
        let err = DirectorySource::new(
            vec![PathBuf::from("/nonexistent/palisade-policies")],
            LoadOptions::default(),
            Timing::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/palisade-policies"));
    }
}
