//! The embedded store: the shared suite on a temporary redb file, and what
//! only a file can do (survive a restart, refuse a second opener).

use std::path::Path;
use std::sync::Arc;

use palisade_store::{EmbeddedStore, Expect, Revision, Store, StoreError, StoreSpec, Txn};
use tempfile::TempDir;

use crate::suite::{assert_delete, assert_put, next_event};

/// A store in a fresh file; the directory goes when the guard drops.
async fn fixture() -> (TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = EmbeddedStore::open(dir.path().join("store.redb")).expect("open the store");
    (dir, Arc::new(store))
}

crate::suite_tests!(fixture);

fn open(path: &Path) -> EmbeddedStore {
    crate::init_logging();
    EmbeddedStore::open(path).expect("open the store")
}

#[tokio::test]
async fn values_revisions_and_history_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = open(&path);
    let r1 = store
        .put("/r/a", b"1".to_vec(), Expect::Absent)
        .await
        .unwrap();
    let r2 = store
        .put("/r/a", b"2".to_vec(), Expect::ModRevision(r1))
        .await
        .unwrap();
    let r3 = store
        .txn(Txn::new().put("/r/b", b"3".to_vec()).delete("/r/a"))
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = open(&path);
    assert_eq!(store.revision().await.unwrap(), r3);
    let b = store.get("/r/b").await.unwrap().unwrap();
    assert_eq!((b.value.as_slice(), b.mod_revision), (&b"3"[..], r3));
    assert_eq!(store.get("/r/a").await.unwrap(), None);

    // A client resumes from any revision it applied before the restart.
    let mut watch = store.watch("/r/", r1).await.unwrap();
    assert_put(&next_event(&mut watch).await, "/r/a", b"2", r2);
    assert_put(&next_event(&mut watch).await, "/r/b", b"3", r3);
    assert_delete(&next_event(&mut watch).await, "/r/a", r3);
    let r4 = store
        .put("/r/c", b"4".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(r4, Revision(r3.0 + 1));
    assert_put(&next_event(&mut watch).await, "/r/c", b"4", r4);

    // A compaction is remembered too.
    store.compact(r2).await.unwrap();
    drop(watch);
    drop(store);
    let store = open(&path);
    assert!(matches!(
        store.watch("/r/", r1).await,
        Err(StoreError::Compacted { compacted_revision }) if compacted_revision == r2
    ));
    let mut watch = store.watch("/r/", r2).await.unwrap();
    assert_put(&next_event(&mut watch).await, "/r/b", b"3", r3);
}

#[tokio::test]
async fn a_second_opener_of_the_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let first = open(&path);
    match EmbeddedStore::open(&path) {
        Err(error @ StoreError::Locked { .. }) => {
            assert!(error.to_string().contains("store.redb"), "{error}");
        }
        other => panic!("a second open of a held file: {other:?}"),
    }
    first
        .put("/k", b"v".to_vec(), Expect::Absent)
        .await
        .unwrap();
    // A watcher still running must not keep the file open after close.
    let _watch = first.watch("/", Revision::ZERO).await.unwrap();
    first.close().await.unwrap();
    let second = open(&path);
    assert_eq!(second.get("/k").await.unwrap().unwrap().value, b"v");
    drop(second);
    // Dropping releases the file as well.
    open(&path);
}

#[tokio::test]
async fn a_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-store");
    std::fs::write(&path, b"this is a text file, not a redb database").unwrap();
    match EmbeddedStore::open(&path) {
        Err(error @ StoreError::Embedded { .. }) => {
            assert!(error.to_string().contains("not-a-store"), "{error}");
        }
        other => panic!("opening a text file: {other:?}"),
    }
}

#[tokio::test]
async fn a_file_path_spec_opens_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.redb");
    let spec: StoreSpec = path.to_str().unwrap().parse().unwrap();
    let store = spec.open().await.unwrap();
    assert!(
        store.describe().contains("spec.redb"),
        "{}",
        store.describe()
    );
    let revision = store
        .put("/k", b"v".to_vec(), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(
        store.get("/k").await.unwrap().unwrap().mod_revision,
        revision
    );
    assert!(path.exists());
}
