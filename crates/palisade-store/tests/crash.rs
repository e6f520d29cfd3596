//! Durability of the embedded store under `kill -9`.
//!
//! This binary re-executes itself as a writer (selected by an environment
//! variable) that loops doing transactions and prints each acknowledged
//! revision. The test kills it with SIGKILL at random moments, over several
//! rounds, reopens the file and checks that every acknowledged write is
//! there, whole, and that revisions only ever grew. It has its own `main`
//! (no libtest harness) so that the writer needs no dummy test.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_store::{EmbeddedStore, Expect, Revision, Store, Txn};

/// Set in the child: the path of the store to write to.
const CHILD_PATH: &str = "PALISADE_STORE_CRASH_PATH";
/// Set in the child: the first write index to use.
const CHILD_START: &str = "PALISADE_STORE_CRASH_START";
/// Rounds of write-then-kill.
const ROUNDS: usize = 8;

fn main() {
    if let Ok(path) = std::env::var(CHILD_PATH) {
        let start = std::env::var(CHILD_START)
            .expect("the parent sets the start index")
            .parse()
            .expect("a number");
        writer(Path::new(&path), start);
        return;
    }
    acknowledged_writes_survive_sigkill();
    println!("test acknowledged_writes_survive_sigkill ... ok");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

fn key(index: u64) -> String {
    format!("/crash/data/{index:08}")
}

fn value(index: u64) -> Vec<u8> {
    format!("value of write {index}").into_bytes()
}

/// The child: writes until killed, printing `index revision` after each
/// acknowledged transaction.
fn writer(path: &Path, start: u64) {
    runtime().block_on(async {
        let store = EmbeddedStore::open(path).expect("the writer opens the store");
        let mut stdout = std::io::stdout();
        for index in start.. {
            // Two keys in one transaction, so that the check also sees
            // whether a cut-off transaction was applied only in part.
            let txn = Txn::new()
                .when(key(index), Expect::Absent)
                .put(key(index), value(index))
                .put("/crash/last", index.to_string().into_bytes());
            let revision = store.txn(txn).await.expect("the writer's transaction");
            writeln!(stdout, "{index} {revision}").expect("print the acknowledgement");
            stdout.flush().expect("flush the acknowledgement");
        }
    });
}

/// A small xorshift generator seeded from the clock: each run kills at
/// different moments; the seed is printed to replay a failure.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn acknowledged_writes_survive_sigkill() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut random = Random(seed);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().expect("the test binary's path");
    let runtime = runtime();

    // Every acknowledged (index, revision), over all rounds.
    let mut acknowledged: Vec<(u64, Revision)> = Vec::new();
    let mut next_index = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_PATH, &path)
            .env(CHILD_START, next_index.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().expect("the writer's stdout");
        let (lines_tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            // Only whole lines are acknowledgements: a line cut by the kill
            // has no newline.
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.ends_with('\n') {
                    let _ = lines_tx.send(line.trim_end().to_owned());
                }
                line.clear();
            }
        });
        // Let the writer get going, then kill it at a random moment.
        let first = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer acknowledged nothing within 60 s");
        std::thread::sleep(Duration::from_millis(random.next(300)));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        reader.join().expect("the reader thread");

        let round_acks: Vec<(u64, Revision)> = std::iter::once(first)
            .chain(lines.try_iter())
            .map(|line| {
                let (index, revision) = line.split_once(' ').expect("index revision");
                (index.parse().unwrap(), Revision(revision.parse().unwrap()))
            })
            .collect();
        println!(
            "round {round}: {} acknowledged writes before SIGKILL",
            round_acks.len()
        );
        acknowledged.extend(round_acks);

        next_index = runtime.block_on(check(&path, &acknowledged));
    }
    assert!(
        acknowledged.windows(2).all(|w| w[0].1 < w[1].1),
        "acknowledged revisions are not strictly increasing across crashes"
    );
}

/// Reopens the store after a crash and checks every acknowledged write;
/// returns the next free write index.
async fn check(path: &Path, acknowledged: &[(u64, Revision)]) -> u64 {
    let store = EmbeddedStore::open(path).expect("reopen the store after SIGKILL");
    let (last_index, last_revision) = *acknowledged.last().expect("some acknowledgements");
    let current = store.revision().await.unwrap();
    assert!(
        current >= last_revision,
        "store revision {current} is behind the acknowledged {last_revision}"
    );
    for &(index, revision) in acknowledged {
        let stored = store
            .get(&key(index))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {index} at {revision} is lost"));
        assert_eq!(stored.value, value(index), "write {index}");
        assert_eq!(stored.mod_revision, revision, "write {index}");
    }

    // A write cut off in flight is either whole or absent: the newest data
    // key and the `last` marker of the same transaction agree.
    let listing = store.list("/crash/data/").await.unwrap();
    let newest: u64 = listing
        .items
        .last()
        .unwrap()
        .key
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(newest >= last_index);
    let marker = store.get("/crash/last").await.unwrap().unwrap();
    assert_eq!(
        marker.value,
        newest.to_string().into_bytes(),
        "a torn transaction"
    );
    assert_eq!(marker.mod_revision, current);

    // The history a watcher would replay is complete and ordered.
    let mut watch = store.watch("/crash/data/", Revision::ZERO).await.unwrap();
    let mut previous = Revision::ZERO;
    for _ in 0..listing.items.len() {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("history replays promptly")
            .expect("the watch runs")
            .expect("history is readable");
        assert!(event.revision > previous, "history out of order");
        previous = event.revision;
    }
    drop(watch);
    store.close().await.unwrap();
    newest + 1
}
