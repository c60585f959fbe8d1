//! Recovery from damaged files: a torn tail is cut off, anything else is refused with a
//! clear error, and a snapshot's compaction holds even if the log file was never cut.

#![allow(clippy::unwrap_used)] // test code: a panic is how it fails

use std::fs::OpenOptions;
use std::io::Write;

use futures::executor::block_on;
use raft_file_store::FileStorage;
use raft_traits::{
    Bytes, Entry, LogId, LogIndex, Payload, Snapshot, SnapshotMeta, Storage, StorageError, Term,
};

fn entry(index: u64, term: u64) -> Entry<String> {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: Payload::Command(format!("command {index}")),
    }
}

fn store_with(dir: &std::path::Path, count: u64) {
    let mut store: FileStorage<String> = FileStorage::open(dir).unwrap();
    let entries: Vec<_> = (1..=count).map(|i| entry(i, 1)).collect();
    block_on(store.append(&entries)).unwrap();
}

fn indices(dir: &std::path::Path) -> Vec<u64> {
    let mut store: FileStorage<String> = FileStorage::open(dir).unwrap();
    let state = block_on(store.recover()).unwrap();
    state.entries.iter().map(|e| e.index.0).collect()
}

/// Where the records of a log file end: the zeros after them are room allocated ahead.
/// (The test entries' encodings end in a nonzero byte.)
fn records_end(log: &[u8]) -> usize {
    log.iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |at| at + 1)
}

#[test]
fn the_log_file_is_extended_with_zeros_ahead_of_its_records() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 5);
    let bytes = std::fs::read(dir.path().join("log")).unwrap();
    let end = records_end(&bytes);
    assert!(
        bytes.len() >= end + (1 << 19),
        "{} bytes of records in a file of {}",
        end,
        bytes.len()
    );
    // Reopening keeps the room and the records; appending goes on after them.
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    block_on(store.append(&[entry(6, 1)])).unwrap();
    drop(store);
    let after = std::fs::read(dir.path().join("log")).unwrap();
    assert_eq!(
        after.len(),
        bytes.len(),
        "the append stayed inside the file"
    );
    assert_eq!(after[..end], bytes[..end]);
    assert_eq!(indices(dir.path()), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 5);
    let log = dir.path().join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    // The last record's write cut short: its last bytes never landed.
    let end = records_end(&bytes);
    bytes[end - 3..end].fill(0);
    std::fs::write(&log, &bytes).unwrap();
    assert_eq!(indices(dir.path()), [1, 2, 3, 4]);
    // The cut is durable: appending continues where the intact log ends.
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    block_on(store.append(&[entry(5, 2)])).unwrap();
    assert_eq!(indices(dir.path()), [1, 2, 3, 4, 5]);
}

#[test]
fn zeroes_after_the_last_record_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 3);
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.path().join("log"))
        .unwrap();
    file.write_all(&[0; 64]).unwrap();
    assert_eq!(indices(dir.path()), [1, 2, 3]);
}

#[test]
fn a_corrupt_record_in_the_middle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 5);
    let log = dir.path().join("log");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = records_end(&bytes) / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let error = FileStorage::<String>::open(dir.path()).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("checksum"), "{error}");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        bytes,
        "a refused log is left untouched"
    );
}

#[test]
fn a_corrupt_hard_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    block_on(store.save_hard_state(raft_traits::HardState {
        term: Term(3),
        voted_for: None,
    }))
    .unwrap();
    drop(store);
    let path = dir.path().join("hard_state");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let error = FileStorage::<String>::open(dir.path()).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt(_)), "{error}");
}

#[test]
fn snapshot_compaction_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 10);
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::new(Term(1), LogIndex(6)),
            membership: Default::default(),
        },
        data: Bytes::from_static(b"state up to 6"),
    };
    block_on(store.save_snapshot(snapshot.clone())).unwrap();
    // Keep a trailing window of two entries the snapshot covers.
    block_on(store.purge_to(LogIndex(4))).unwrap();
    drop(store);
    let mut reopened: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    let state = block_on(reopened.recover()).unwrap();
    assert_eq!(state.snapshot, Some(snapshot.meta.clone()));
    assert_eq!(
        state.entries.iter().map(|e| e.index.0).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10]
    );
    assert_eq!(
        block_on(reopened.snapshot()).unwrap(),
        Some(snapshot.clone())
    );
    assert!(matches!(
        block_on(reopened.entries(LogIndex(4), LogIndex(8))),
        Err(StorageError::Compacted { index: LogIndex(4) })
    ));
    drop(reopened);
    // A store written before purging existed has no `purged` file: everything its
    // snapshot covers counts as purged, as it did then.
    std::fs::remove_file(dir.path().join("purged")).unwrap();
    let mut old: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    let state = block_on(old.recover()).unwrap();
    assert_eq!(
        state.entries.iter().map(|e| e.index.0).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
}

#[test]
fn a_store_of_another_format_version_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 3);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("format")).unwrap(),
        "raft-file-store 3\n"
    );
    // Version 2 kept the snapshot's data without its size and checksum.
    std::fs::write(dir.path().join("format"), "raft-file-store 2\n").unwrap();
    let v2 = FileStorage::<String>::open(dir.path());
    assert!(
        matches!(v2, Err(StorageError::UnsupportedFormat { ref found, ref supported }) if found == "raft-file-store 2" && supported == "raft-file-store 3"),
        "{v2:?}"
    );
    // A store of version 1 had no format file.
    std::fs::remove_file(dir.path().join("format")).unwrap();
    let old = FileStorage::<String>::open(dir.path());
    assert!(
        matches!(old, Err(StorageError::UnsupportedFormat { ref found, .. }) if found.contains("raft-file-store 1")),
        "{old:?}"
    );
    std::fs::write(dir.path().join("format"), "raft-file-store 7\n").unwrap();
    let newer = FileStorage::<String>::open(dir.path());
    assert!(
        matches!(newer, Err(StorageError::UnsupportedFormat { ref found, .. }) if found == "raft-file-store 7"),
        "{newer:?}"
    );
    std::fs::write(dir.path().join("format"), "raft-file-store 3\n").unwrap();
    assert_eq!(indices(dir.path()), [1, 2, 3], "nothing was lost meanwhile");
}

/// The names of the staged snapshot files in `dir`.
fn staged_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("snapshot.staged"))
        .collect();
    names.sort();
    names
}

#[test]
fn staged_snapshot_files_never_outlive_their_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    store_with(dir.path(), 6);
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    let meta = |index| SnapshotMeta {
        last_included: LogId::new(Term(1), LogIndex(index)),
        membership: Default::default(),
    };
    // A writer dropped unfinished removes its file; so does a staged snapshot never saved.
    let mut writer = store.create_snapshot(meta(3));
    block_on(writer.write(Bytes::from_static(b"state up to 3"))).unwrap();
    assert_eq!(staged_files(dir.path()), ["snapshot.staged-3"]);
    drop(writer);
    assert!(staged_files(dir.path()).is_empty());
    let mut writer = store.create_snapshot(meta(4));
    block_on(writer.write(Bytes::from_static(b"state up to 4"))).unwrap();
    let staged = block_on(writer.finish()).unwrap();
    drop(staged);
    assert!(staged_files(dir.path()).is_empty());
    // A crash runs no destructor: what it leaves is removed when the store opens again.
    let mut writer = store.create_snapshot(meta(5));
    block_on(writer.write(Bytes::from_static(b"state up to 5"))).unwrap();
    std::mem::forget(writer);
    drop(store);
    assert_eq!(staged_files(dir.path()), ["snapshot.staged-5"]);
    let mut store: FileStorage<String> = FileStorage::open(dir.path()).unwrap();
    assert!(staged_files(dir.path()).is_empty());
    assert_eq!(block_on(store.recover()).unwrap().snapshot, None);
    // A saved one is the stored snapshot, and its file is gone.
    let mut writer = store.create_snapshot(meta(5));
    block_on(writer.write(Bytes::from_static(b"state "))).unwrap();
    block_on(writer.write(Bytes::from_static(b"up to 5"))).unwrap();
    let staged = block_on(writer.finish()).unwrap();
    block_on(store.save_staged_snapshot(staged)).unwrap();
    assert!(staged_files(dir.path()).is_empty());
    let stored = block_on(store.snapshot()).unwrap().unwrap();
    assert_eq!(&stored.data[..], b"state up to 5");
}

#[test]
fn a_staged_snapshot_of_another_store_is_refused() {
    let (one, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut store: FileStorage<String> = FileStorage::open(one.path()).unwrap();
    let mut stranger: FileStorage<String> = FileStorage::open(other.path()).unwrap();
    let meta = SnapshotMeta::default();
    let mut writer = stranger.create_snapshot(meta.clone());
    block_on(writer.write(Bytes::from_static(b"theirs"))).unwrap();
    let theirs = block_on(writer.finish()).unwrap();
    let refused = block_on(store.save_staged_snapshot(theirs));
    assert!(
        matches!(refused, Err(StorageError::ForeignStagedSnapshot)),
        "{refused:?}"
    );
    let buffered = block_on(
        (Box::new(raft_traits::BufferWriter::new(meta)) as Box<dyn raft_traits::SnapshotWriter>)
            .finish(),
    )
    .unwrap();
    let refused = block_on(store.save_staged_snapshot(buffered));
    assert!(
        matches!(refused, Err(StorageError::ForeignStagedSnapshot)),
        "{refused:?}"
    );
    assert_eq!(block_on(store.recover()).unwrap().snapshot, None);
}
