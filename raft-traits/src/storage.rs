//! Stable storage for Raft's hard state, log and snapshot.

use async_trait::async_trait;

use crate::codec::CodecError;
use crate::types::{Command, Entry, HardState, LogId, LogIndex, Snapshot, SnapshotMeta};

/// Everything a server needs to come back after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState<C> {
    /// The last saved term and vote.
    pub hard_state: HardState,
    /// What the stored snapshot covers, if there is one. Its data is read separately
    /// with [`Storage::snapshot`].
    pub snapshot: Option<SnapshotMeta>,
    /// The log entries after the snapshot, in index order and without gaps.
    pub entries: Vec<Entry<C>>,
}

/// Durable storage for one Raft server.
///
/// Raft calls these methods from a single task, one at a time, and waits for each to
/// return before it sends any message that depends on the write: when a method returns
/// `Ok`, the write must survive a crash (for a disk backend: it has been fsynced).
///
/// # The log model
///
/// The store holds an optional snapshot, whose `last_included` id marks the end of the
/// compacted prefix, followed by a contiguous run of entries. "The last index" below is
/// the index of the last entry, or of the snapshot's last included entry when there are
/// no entries, or 0.
///
/// * [`append`](Storage::append) adds entries that start exactly at the last index + 1;
///   anything else is [`StorageError::NotContiguous`].
/// * [`truncate_from`](Storage::truncate_from) removes the suffix starting at an index.
/// * [`save_snapshot`](Storage::save_snapshot) stores a snapshot and compacts the log,
///   atomically: a crash leaves either the old snapshot and log or the new ones.
/// * [`entries`](Storage::entries) reads a range; reading inside the compacted prefix is
///   [`StorageError::Compacted`], past the end is [`StorageError::Unavailable`].
///
/// The exact semantics are pinned by the conformance suite in the `raft-tests` crate
/// (`raft_tests::conformance::storage`): run it against your backend.
#[async_trait]
pub trait Storage<C: Command>: Send + 'static {
    /// Reads back the hard state, snapshot metadata and log after a (re)start. A store
    /// that was never written returns the default state.
    ///
    /// Corrupt data is an error ([`StorageError::Corrupt`]), never silently dropped.
    async fn recover(&mut self) -> Result<RecoveredState<C>, StorageError>;

    /// Durably replaces the hard state.
    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;

    /// Durably appends `entries`, which must be consecutive and start at the last index +
    /// 1. Appending nothing is a no-op.
    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError>;

    /// Durably removes every entry with an index `>= index`. Removing nothing (an index
    /// past the end) is a no-op; an index inside the compacted prefix is
    /// [`StorageError::Compacted`].
    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError>;

    /// Reads the entries with indices in `from..to`.
    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError>;

    /// Durably stores `snapshot` and, in the same atomic step, removes the entries it
    /// covers: every entry up to `snapshot.meta.last_included.index`. If the log does not
    /// hold the snapshot's last included entry with the same term, the whole log is
    /// removed, because it conflicts with the snapshot (Figure 13, steps 6–7).
    ///
    /// A snapshot that is not newer than the stored one is
    /// [`StorageError::StaleSnapshot`] and changes nothing. With no snapshot stored,
    /// any is accepted, including one at index 0: that is how Raft records the
    /// configuration a cluster was bootstrapped with (empty data, nothing compacted).
    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError>;

    /// Reads the stored snapshot, if any.
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError>;
}

/// Why a storage operation failed.
///
/// The first variants describe requests the store cannot serve because of where the log
/// is; [`Corrupt`](StorageError::Corrupt), [`Io`](StorageError::Io) and
/// [`Other`](StorageError::Other) are failures of the store itself, after which Raft stops
/// the server rather than risk acting on state it could not persist.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The index lies in the compacted prefix, covered by the snapshot.
    #[error("index {index} is compacted into the snapshot")]
    Compacted {
        /// The requested index.
        index: LogIndex,
    },
    /// The index lies past the last entry.
    #[error("index {index} is past the end of the log")]
    Unavailable {
        /// The requested index.
        index: LogIndex,
    },
    /// An append did not start right after the last entry, or had a gap.
    #[error("entries are not contiguous: expected index {expected}, got {found}")]
    NotContiguous {
        /// The index the next entry had to have.
        expected: LogIndex,
        /// The index it had.
        found: LogIndex,
    },
    /// A snapshot that is not newer than the stored one.
    #[error("snapshot at {offered} is not newer than the stored one at {stored}")]
    StaleSnapshot {
        /// What the stored snapshot covers.
        stored: LogId,
        /// What the rejected snapshot covers.
        offered: LogId,
    },
    /// The store was written in a format this build does not read (an older version,
    /// or another program's files).
    #[error("unsupported storage format: found {found}, this build reads {supported}")]
    UnsupportedFormat {
        /// What the store says it is (or what it looks like).
        found: String,
        /// The format this build reads.
        supported: String,
    },
    /// Stored data failed validation (checksum, format, ordering).
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// Stored data could not be decoded.
    #[error("cannot decode stored data: {0}")]
    Codec(#[from] CodecError),
    /// The underlying I/O failed.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// Any other failure of a backend.
    #[error("storage failed: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}
