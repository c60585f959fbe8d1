//! The file store passes the `Storage` conformance suite of `raft-tests`, reopening its
//! directory for every restart.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use raft_file_store::FileStorage;
use raft_tests::conformance::storage::StorageFactory;
use raft_tests::conformance::{self, Cmd};
use raft_traits::StorageError;
use tempfile::TempDir;

struct Files {
    dirs: Vec<TempDir>,
}

impl StorageFactory for Files {
    type Store = FileStorage<Cmd>;

    fn create(&mut self) -> Result<Self::Store, StorageError> {
        let dir = tempfile::tempdir()?;
        let store = FileStorage::open(dir.path());
        self.dirs.push(dir);
        store
    }

    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        let dir = store.dir();
        drop(store);
        FileStorage::open(dir)
    }
}

#[test]
fn file_store_passes_the_storage_suite() {
    let mut files = Files { dirs: Vec::new() };
    let report = futures::executor::block_on(conformance::storage::run(&mut files));
    println!("{report}");
    report.assert_passed();
}
