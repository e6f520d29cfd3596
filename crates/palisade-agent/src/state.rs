//! The agent's state directory (`--state-dir`): what must survive a restart.
//!
//! - `identities.json`: the identity allocator, so that a restarted agent
//!   gives every label set the identity the pinned tables already use;
//! - `cookies.json`: the last cookie → rule table, so that events about
//!   connections admitted before a restart are still attributed;
//! - `status.json`: what the agent is doing (pid, last reconcile), for
//!   people and for `palisade lab agents` (readiness, status).
//!
//! Every file is written atomically (temporary file, then rename).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use palisade_policy::{Attribution, IdentityAllocator};
use serde::{Deserialize, Serialize};

use crate::error::{AgentError, Result};
use crate::reconcile::ChangeCounts;

/// Name of the status file in the state directory.
pub const STATUS_FILE: &str = "status.json";
const IDENTITIES_FILE: &str = "identities.json";
const COOKIES_FILE: &str = "cookies.json";

/// What the agent reports about itself in `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The node enforced.
    pub node: String,
    /// The agent's process id.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its pin directory.
    pub bpffs_dir: PathBuf,
    /// Whether it adopted pinned maps of an earlier agent.
    pub adopted: bool,
    /// Whether its datapath is the SIMULATION for benchmarks (recording
    /// maps in memory): then it enforces nothing.
    #[serde(default)]
    pub simulated: bool,
    /// Reconciles applied since it started.
    pub reconciles: u64,
    /// The last one, if any.
    pub last_reconcile: Option<ReconcileStatus>,
    /// The last problem (rejected input, compile error, failed apply), cleared by a good reconcile.
    pub last_error: Option<String>,
    /// The control plane, when the agent follows one.
    #[serde(default)]
    pub server: Option<ServerLinkStatus>,
    /// Where the metrics are served (`http://ADDR/metrics`).
    #[serde(default)]
    pub metrics: Option<String>,
}

/// The agent's link to its control plane, as the status file reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLinkStatus {
    /// The configured servers, tried in turn.
    pub servers: Vec<String>,
    /// Whether the node stream is connected now. While it is not, the agent
    /// keeps enforcing the last state it applied ("fail static").
    pub connected: bool,
    /// The server it is connected to.
    pub server: Option<String>,
    /// Since when it is connected or disconnected (RFC 3339).
    pub since: String,
    /// Why it is disconnected.
    pub reason: Option<String>,
    /// The last message from the server (heartbeats included), RFC 3339.
    pub last_contact: Option<String>,
    /// The server revision the node stream has brought the agent up to.
    pub seen_revision: u64,
    /// The server revision the agent has in the kernel.
    pub applied_revision: u64,
    /// The server revision the latest reconcile wrote into the kernel
    /// (`applied_revision` also moves with heartbeats, which write nothing).
    #[serde(default)]
    pub reconciled_revision: Option<u64>,
    /// When that reconcile's writes ended, the revision enforced from then
    /// on (RFC 3339, microseconds).
    #[serde(default)]
    pub reconciled_at: Option<String>,
}

/// One reconcile, as the status file reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    /// When it finished (RFC 3339).
    pub at: String,
    /// How long it took, milliseconds.
    pub duration_ms: f64,
    /// What it changed.
    pub changes: ChangeCounts,
    /// The datapath's policy revision afterwards.
    pub policy_revision: u32,
    /// The snapshot it enforced (see `Snapshot::revision`).
    pub source: String,
    /// From the server committing the revision to this reconcile's end,
    /// milliseconds (server sources; needs both clocks in sync).
    #[serde(default)]
    pub propagation_ms: Option<f64>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: &Path) -> Result<StateDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| AgentError::StateIo {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The persisted allocator, or a new one when there is none.
    pub fn load_allocator(&self) -> Result<IdentityAllocator> {
        Ok(read_json(&self.dir.join(IDENTITIES_FILE))?.unwrap_or_default())
    }

    /// Persists the allocator.
    pub fn save_allocator(&self, allocator: &IdentityAllocator) -> Result<()> {
        write_json(&self.dir.join(IDENTITIES_FILE), allocator, Durable::Yes)
    }

    /// The cookie table of the previous run. A damaged file only costs
    /// attribution of old connections, so it is reported and ignored.
    pub fn load_cookies(&self) -> BTreeMap<u32, Attribution> {
        let path = self.dir.join(COOKIES_FILE);
        let cookies: Result<Option<Vec<(u32, Attribution)>>> = read_json(&path);
        match cookies {
            Ok(cookies) => cookies.unwrap_or_default().into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the cookie table of the previous run");
                BTreeMap::new()
            }
        }
    }

    /// Persists the cookie table.
    pub fn save_cookies(&self, cookies: &BTreeMap<u32, Attribution>) -> Result<()> {
        let list: Vec<(&u32, &Attribution)> = cookies.iter().collect();
        write_json(&self.dir.join(COOKIES_FILE), &list, Durable::Yes)
    }

    /// Writes `status.json`. Not synced to disk: it describes the running
    /// process, is rewritten at every change and heartbeat, and a crash
    /// makes it stale anyway (readers check its pid).
    pub fn write_status(&self, status: &AgentStatus) -> Result<()> {
        write_json(&self.dir.join(STATUS_FILE), status, Durable::No)
    }

    /// Removes `status.json` (the agent stopped).
    pub fn remove_status(&self) {
        let _ = fs::remove_file(self.dir.join(STATUS_FILE));
    }
}

/// Reads the status file of the agent whose state directory is `dir`;
/// `None` when there is none (never started, or stopped cleanly).
pub fn read_status(dir: &Path) -> Result<Option<AgentStatus>> {
    read_json(&dir.join(STATUS_FILE))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AgentError::StateIo {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| AgentError::CorruptState {
            path: path.to_path_buf(),
            source,
        })
}

/// Whether a state file must be on disk before `write_json` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    /// Synced before the rename: it must survive a power loss.
    Yes,
    /// Left to the page cache; still replaced atomically.
    No,
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, durable: Durable) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("state values serialize");
    let tmp = path.with_extension("json.tmp");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::StateIo {
            action,
            path,
            source,
        }
    };
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(&text)
        .and_then(|()| match durable {
            Durable::Yes => file.sync_all(),
            Durable::No => Ok(()),
        })
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_survives_a_restart_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("agent")).unwrap();
        let fresh = state.load_allocator().unwrap();
        assert_eq!(fresh.round(), 0);

        let intent = palisade_model::load_str(
            "apiVersion: palisade.dev/v1\nkind: Tenant\nmetadata: {name: acme}\nspec: {defaultAction: deny}\n",
            "t.yaml",
            &Default::default(),
        )
        .unwrap();
        let mut allocator = fresh;
        allocator.allocate(&intent).unwrap();
        state.save_allocator(&allocator).unwrap();
        assert_eq!(state.load_allocator().unwrap(), allocator);

        fs::write(state.path().join(IDENTITIES_FILE), "{not json").unwrap();
        let err = state.load_allocator().unwrap_err().to_string();
        assert!(
            err.contains("identities.json") && err.contains("remove the file"),
            "{err}"
        );
    }

    #[test]
    fn cookies_round_trip_and_a_damaged_table_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let cookies = BTreeMap::from([(7, Attribution::CrossTenant)]);
        state.save_cookies(&cookies).unwrap();
        assert_eq!(state.load_cookies(), cookies);
        fs::write(dir.path().join(COOKIES_FILE), "[[1,").unwrap();
        assert!(state.load_cookies().is_empty());
    }
}
