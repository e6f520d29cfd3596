//! Real etcd servers for tests (feature `testing`): members on free loopback
//! ports with temporary data directories, killed and reaped by a guard even
//! when the test panics. Used by this crate's tests and the server's.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use tempfile::TempDir;

/// The etcd binary of Debian's etcd-server package (`make deps`).
const ETCD: &str = "/usr/bin/etcd";

/// One member of a test cluster.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    dir: TempDir,
    child: Option<Child>,
}

impl Member {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&mut self, initial_cluster: &str, token: &str) {
        let log = File::create(self.log_path()).expect("create the etcd log file");
        let mut command = Command::new(ETCD);
        command
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-token", token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections keep the failover tests short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
        // only the child; it makes the kernel kill etcd if this test's
        // thread dies without running the guard (e.g. the test binary is
        // killed), so no etcd outlives its test.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD} (run `make deps`): {e}"));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process exited on its own (e.g. its port was taken).
    fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => false,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of etcd members on loopback; dropping it kills them all.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

/// Free loopback ports, reserved together so that they are distinct.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until it serves
    /// requests.
    pub async fn start(size: usize) -> EtcdCluster {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut last_failure = String::new();
        // Another process may grab a port between our probe and etcd's
        // bind; try again with fresh ports.
        for _attempt in 0..3 {
            let id = format!(
                "palisade-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let ports = free_ports(2 * size);
            let mut members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("{id}-m{i}"),
                    client_url: format!("http://127.0.0.1:{}", ports[2 * i]),
                    peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                    dir: tempfile::Builder::new()
                        .prefix("palisade-etcd-")
                        .tempdir()
                        .expect("create a data directory"),
                    child: None,
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url))
                .collect::<Vec<_>>()
                .join(",");
            for member in &mut members {
                member.spawn(&initial_cluster, &id);
            }
            let mut cluster = EtcdCluster {
                members,
                initial_cluster,
                token: id,
            };
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd cluster did not start: {last_failure}");
    }

    /// Waits until every running member answers a linearizable read.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for index in 0..self.members.len() {
            if self.members[index].child.is_none() {
                continue;
            }
            let url = self.members[index].client_url.clone();
            loop {
                if self.members[index].exited() {
                    return Err(format!(
                        "member {} exited:\n{}",
                        self.members[index].name,
                        self.members[index].log_tail()
                    ));
                }
                if answers(&url).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "member {} not ready after 30 s:\n{}",
                        self.members[index].name,
                        self.members[index].log_tail()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The client URL of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URL of one member.
    pub fn endpoint(&self, index: usize) -> String {
        self.members[index].client_url.clone()
    }

    /// Kills one member with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Starts a killed member again on its data directory and waits until
    /// it serves.
    pub async fn restart(&mut self, index: usize) {
        let (initial_cluster, token) = (self.initial_cluster.clone(), self.token.clone());
        self.members[index].spawn(&initial_cluster, &token);
        if let Err(failure) = self.wait_ready().await {
            panic!("etcd member did not restart: {failure}");
        }
    }

    /// The index of the current leader: the running member whose status
    /// names itself as leader.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (index, member) in self.members.iter().enumerate() {
                if member.child.is_none() {
                    continue;
                }
                let Ok(mut client) = Client::connect([&member.client_url], None).await else {
                    continue;
                };
                let Ok(status) = client.status().await else {
                    continue;
                };
                if status.header().map(|h| h.member_id()) == Some(status.leader()) {
                    return index;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no etcd member is leader after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether the member at `url` answers a linearizable read (so it is part
/// of a cluster with a leader).
async fn answers(url: &str) -> bool {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    let Ok(mut client) = Client::connect([url], Some(options)).await else {
        return false;
    };
    client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .is_ok()
}
