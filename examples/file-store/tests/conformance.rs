//! The file store passes the `Storage` conformance suite of `raft-tests`, reopening its
//! directory for every restart.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use raft_file_store::FileStorage;
use raft_tests::conformance::storage::{Damage, StorageFactory};
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

    fn can_crash(&self) -> bool {
        true
    }

    /// A process crash: the store buffers nothing in user space (every write is written
    /// and fsynced before it returns), so dropping it is all a crash of the process does.
    /// This does not simulate power loss; `tests/crash.rs` kills a writer process.
    fn crash(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        self.reopen(store)
    }

    fn can_corrupt(&self) -> bool {
        true
    }

    /// Flips a bit in the middle of the `log` file's records (none the last; zeros
    /// follow the records) or three quarters into the `snapshot` file (in its data,
    /// which ends the file).
    fn corrupt(&mut self, store: Self::Store, damage: Damage) -> Result<Self::Store, StorageError> {
        let dir = store.dir();
        drop(store);
        let name = match damage {
            Damage::SnapshotData => "snapshot",
            Damage::LogEntry => "log",
            _ => return FileStorage::open(dir),
        };
        let path = dir.join(name);
        let mut bytes = std::fs::read(&path)?;
        let len = bytes.len();
        // The log file holds zeros after its records (room allocated ahead).
        let records = bytes
            .iter()
            .rposition(|&byte| byte != 0)
            .map_or(0, |at| at + 1);
        let at = if damage == Damage::LogEntry {
            records / 2
        } else {
            len - len / 4
        };
        bytes[at] ^= 0x10;
        std::fs::write(&path, bytes)?;
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
