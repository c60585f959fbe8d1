//! Stable storage for Raft's hard state, log and snapshot.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::CodecError;
use crate::snapshot::{
    BufferWriter, PendingSnapshot, SnapshotDescriptor, SnapshotReader, SnapshotWriter,
    StagedSnapshot, read_all,
};
use crate::types::{Command, Entry, HardState, LogId, LogIndex, Snapshot, SnapshotMeta};

/// The piece size [`Storage::snapshot`]'s default reads a snapshot's data in.
pub const READ_PIECE: usize = 1 << 20;

/// Everything a server needs to come back after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState<C> {
    /// The last saved term and vote.
    pub hard_state: HardState,
    /// What the stored snapshot covers, if there is one. Its data is read separately,
    /// in pieces, through [`Storage::open_snapshot`].
    pub snapshot: Option<SnapshotMeta>,
    /// The log entries the store keeps, in index order and without gaps. They start at
    /// the first entry not yet purged ([`Storage::purge_to`]), which may lie inside the
    /// snapshot (the trailing window Raft keeps so that a follower lagging a little
    /// behind the snapshot still gets entries); every entry after the snapshot is
    /// included. When they start at or before the snapshot's last included index, the
    /// entry at that index has the snapshot's term.
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
/// The store holds an optional snapshot, whose `last_included` id covers a prefix of
/// the log, and a contiguous run of entries. The entries start at "the first index"
/// and may overlap the snapshot (Raft keeps a trailing window of entries the snapshot
/// covers, so that a follower a little behind still gets entries rather than the whole
/// snapshot); they never leave a gap after it. "The last index" below is the index of
/// the last entry, or of the snapshot's last included entry when there are no entries,
/// or 0. "The first index" is the index of the first entry held, or the last index + 1
/// when none is held. Index 0 never holds an entry.
///
/// * [`append`](Storage::append) adds entries that start exactly at the last index + 1;
///   anything else is [`StorageError::NotContiguous`].
/// * [`truncate_from`](Storage::truncate_from) removes the suffix starting at an index
///   after the snapshot.
/// * [`save_snapshot`](Storage::save_snapshot) stores a snapshot, atomically with
///   dropping a log that conflicts with it; a log that matches it is kept whole.
/// * [`begin_snapshot`](Storage::begin_snapshot),
///   [`write_snapshot_chunk`](Storage::write_snapshot_chunk) and
///   [`finish_snapshot`](Storage::finish_snapshot) store a snapshot received in pieces
///   (a *pending* snapshot, reported after a restart by
///   [`pending_snapshot`](Storage::pending_snapshot)); finishing is `save_snapshot`'s
///   atomic step. [`open_snapshot`](Storage::open_snapshot) reads the stored snapshot
///   back in pieces.
/// * [`create_snapshot`](Storage::create_snapshot) opens a writer for a snapshot the
///   server takes of its own state, written apart from the store while Raft goes on;
///   [`save_staged_snapshot`](Storage::save_staged_snapshot) installs what it staged, as
///   `save_snapshot` would.
/// * [`purge_to`](Storage::purge_to) then discards entries the snapshot covers, up to
///   where Raft's trailing window starts.
/// * [`entries`](Storage::entries) reads a range; reading below the first index is
///   [`StorageError::Compacted`], past the end is [`StorageError::Unavailable`].
///
/// # Blocking
///
/// Raft awaits each call on the node's own task, which shares its executor with timers,
/// the network and perhaps other nodes. A call may take as long as the write needs (Raft
/// waits for it), but must not block the executor's thread while it does: run blocking
/// work (a synchronous `fsync`, a file read, a lock another thread may hold for long) on
/// a blocking pool, as the file store in `examples/file-store` does with
/// `blocking::unblock`. An in-memory store that only takes a short lock may run inline.
///
/// The exact semantics are pinned by the conformance suite in the `raft-tests` crate
/// (`raft_tests::conformance::storage`): run it against your backend, with a factory that
/// can simulate a crash if your backend can.
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
    /// past the end) is a no-op; an index the snapshot covers (`index <=
    /// last_included.index`, including index 0) is [`StorageError::Compacted`] carrying
    /// `index`, and changes nothing: entries a snapshot covers are committed.
    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError>;

    /// Reads the entries with indices in `from..to`.
    ///
    /// * `from` below the first index (see the log model; index 0 always is) is
    ///   [`StorageError::Compacted`] carrying `from`;
    /// * otherwise an empty range (`from >= to`) is `Ok` and empty;
    /// * otherwise `to - 1` past the last index is [`StorageError::Unavailable`] carrying
    ///   the first requested index the store does not hold: `max(from, last index + 1)`.
    ///
    /// Entries inside the snapshot but not yet purged (the trailing window) are read
    /// like any other.
    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError>;

    /// Durably stores `snapshot`, whole: the convenience form of
    /// [`begin_snapshot`](Storage::begin_snapshot),
    /// [`write_snapshot_chunk`](Storage::write_snapshot_chunk) and
    /// [`finish_snapshot`](Storage::finish_snapshot), with their rules. If the log does
    /// not hold the snapshot's last included entry with the same term, the whole log is
    /// removed in the same atomic step, because it conflicts with the snapshot (Figure 13,
    /// steps 6–7); a log that holds it is kept whole, and Raft discards the covered
    /// prefix it no longer needs with [`purge_to`](Storage::purge_to).
    ///
    /// A snapshot that is not newer than the stored one is
    /// [`StorageError::StaleSnapshot`] and changes nothing. "Newer" compares the last
    /// included index alone: a snapshot at the stored index is stale whatever its term
    /// (both cover the same committed entries, which cannot differ). With no snapshot stored,
    /// any is accepted, including one at index 0: that is how Raft records the
    /// configuration a cluster was bootstrapped with (empty data, nothing compacted).
    ///
    /// It discards a pending snapshot (one begun and not finished), as
    /// `begin_snapshot` does.
    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let descriptor = snapshot.descriptor();
        self.begin_snapshot(descriptor).await?;
        if !snapshot.data.is_empty() {
            self.write_snapshot_chunk(0, snapshot.data).await?;
        }
        self.finish_snapshot().await.map(drop)
    }

    /// Starts writing a snapshot in pieces: the *pending* snapshot, described by
    /// `descriptor` (its size and checksum are what
    /// [`finish_snapshot`](Storage::finish_snapshot) checks the written data against).
    ///
    /// * A descriptor that is not newer than the stored snapshot (the rule of
    ///   [`save_snapshot`](Storage::save_snapshot)) is [`StorageError::StaleSnapshot`]
    ///   and changes nothing.
    /// * Otherwise any pending snapshot is discarded (there is at most one) and an empty
    ///   one begins, durably: [`pending_snapshot`](Storage::pending_snapshot) reports it
    ///   with nothing written, also after a crash.
    ///
    /// The stored snapshot and the log are untouched until `finish_snapshot`.
    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError>;

    /// Durably appends `data` to the pending snapshot's data at `offset`.
    ///
    /// * Without a pending snapshot: [`StorageError::NoPendingSnapshot`].
    /// * `offset` other than the number of bytes written so far:
    ///   [`StorageError::SnapshotOffset`] carrying both, and nothing is written (pieces
    ///   come in order, without gaps or overlaps).
    /// * Data that would run past the descriptor's size: [`StorageError::SnapshotRange`],
    ///   and nothing is written.
    ///
    /// When it returns `Ok` the bytes survive a crash (a backend on disk has synced them),
    /// so that a restarted server resumes from [`pending_snapshot`](Storage::pending_snapshot).
    /// Writing nothing is a no-op (after the same checks).
    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError>;

    /// Makes the pending snapshot the stored one, atomically with the log handling of
    /// [`save_snapshot`](Storage::save_snapshot), and returns its descriptor.
    ///
    /// * Without a pending snapshot: [`StorageError::NoPendingSnapshot`].
    /// * If the bytes written are not the descriptor's size, or their
    ///   [`SnapshotChecksum`](crate::SnapshotChecksum) is not the descriptor's checksum:
    ///   [`StorageError::SnapshotMismatch`]; the pending snapshot is discarded and
    ///   nothing else changes.
    /// * If it is no longer newer than the stored snapshot:
    ///   [`StorageError::StaleSnapshot`]; the pending snapshot is discarded and nothing
    ///   else changes.
    ///
    /// A crash before it returns leaves either the old snapshot and log (perhaps with the
    /// pending snapshot still reported) or the new ones, never a mix.
    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError>;

    /// Discards the pending snapshot, if any, durably. Without one it is a no-op.
    async fn abort_snapshot(&mut self) -> Result<(), StorageError>;

    /// The pending snapshot and how much of its data is written, if one was begun and
    /// neither finished nor discarded. After a crash `written` counts at least every byte
    /// of a [`write_snapshot_chunk`](Storage::write_snapshot_chunk) that returned `Ok`
    /// (it may count part of a write the crash cut short; `finish_snapshot`'s checksum
    /// catches any such bytes that are wrong).
    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError>;

    /// The stored snapshot's descriptor and a reader over its data, if a snapshot is
    /// stored. The reader does not borrow the store: it keeps serving this snapshot's
    /// data after the store has moved on to a newer one.
    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError>;

    /// Opens a writer for a snapshot this server takes of its own state, described by
    /// `meta`: the state machine writes the data into it on a task of its own while Raft
    /// goes on calling the store, and
    /// [`save_staged_snapshot`](Storage::save_staged_snapshot) installs what it staged.
    /// The writer must not borrow the store, and nothing it writes touches the stored
    /// snapshot, the log or the pending snapshot of
    /// [`begin_snapshot`](Storage::begin_snapshot).
    ///
    /// Raft calls it on its event loop, so it must return at once: it only sets the
    /// writer up, and the writer does its I/O (creating a file, say) in its own methods.
    ///
    /// The default returns a [`BufferWriter`], which collects the data in memory; a
    /// backend on disk writes it to a file of its own instead, so that a snapshot of any
    /// size is taken in bounded memory.
    fn create_snapshot(&mut self, meta: SnapshotMeta) -> Box<dyn SnapshotWriter> {
        Box::new(BufferWriter::new(meta))
    }

    /// Makes a snapshot staged by a writer of [`create_snapshot`](Storage::create_snapshot)
    /// the stored one, with the rules of [`save_snapshot`](Storage::save_snapshot): atomic
    /// with dropping a log that conflicts with it, [`StorageError::StaleSnapshot`] (and
    /// nothing changes) if it is not newer than the stored one, and it discards a pending
    /// snapshot. Returns its descriptor.
    ///
    /// A staged snapshot this store did not create is
    /// [`StorageError::ForeignStagedSnapshot`]. The default installs a
    /// [`BufferWriter`]'s data with `save_snapshot`. A backend overrides both methods or
    /// neither, and a wrapper around another store forwards both to it.
    async fn save_staged_snapshot(
        &mut self,
        staged: StagedSnapshot,
    ) -> Result<SnapshotDescriptor, StorageError> {
        let descriptor = staged.descriptor.clone();
        let snapshot = staged
            .into_buffered()
            .ok_or(StorageError::ForeignStagedSnapshot)?;
        self.save_snapshot(snapshot).await?;
        Ok(descriptor)
    }

    /// Durably discards every entry with an index `<= index`; the first index becomes
    /// `index + 1` unless it already was past it (purging what is already gone is a
    /// no-op). Only entries the stored snapshot covers may go: an `index` past the
    /// snapshot's last included index (or any index without a snapshot) is
    /// [`StorageError::NotCovered`] and changes nothing.
    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError>;

    /// Reads the stored snapshot whole into memory, if any. The default reads it through
    /// [`open_snapshot`](Storage::open_snapshot); Raft itself never holds a snapshot's data
    /// whole, and only tools and tests use this.
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some((descriptor, reader)) = self.open_snapshot().await? else {
            return Ok(None);
        };
        let data = read_all(reader.as_ref(), READ_PIECE).await?;
        Ok(Some(Snapshot {
            meta: descriptor.meta,
            data,
        }))
    }
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
        /// The requested index (`from` for [`Storage::entries`], `index` for
        /// [`Storage::truncate_from`]).
        index: LogIndex,
    },
    /// The index lies past the last entry.
    #[error("index {index} is past the end of the log")]
    Unavailable {
        /// The first requested index the store does not hold.
        index: LogIndex,
    },
    /// A purge reached past what the stored snapshot covers.
    #[error("cannot purge up to {index}: the snapshot covers only up to {covered}")]
    NotCovered {
        /// The requested purge index.
        index: LogIndex,
        /// The stored snapshot's last included index (0 without a snapshot).
        covered: LogIndex,
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
    /// A snapshot piece was written without a pending snapshot
    /// ([`Storage::begin_snapshot`]), or a pending snapshot finished without one.
    #[error("no snapshot is being written")]
    NoPendingSnapshot,
    /// A piece of a pending snapshot did not start where the data written so far ends.
    #[error("snapshot piece at offset {found}, but {expected} bytes are written")]
    SnapshotOffset {
        /// The number of bytes written so far: where the next piece must start.
        expected: u64,
        /// Where the refused piece started.
        found: u64,
    },
    /// A read or write of snapshot data outside the data: a read starting past its end,
    /// or a write running past the size the snapshot was begun with.
    #[error("snapshot position {offset} lies outside its {len} bytes")]
    SnapshotRange {
        /// The offending position (for a write: where it would end).
        offset: u64,
        /// The length of the data.
        len: u64,
    },
    /// A pending snapshot whose written data does not match its descriptor, so it was
    /// discarded and not installed.
    #[error(
        "snapshot data does not match its descriptor: {written} bytes of {size}, checksum \
         {computed:#010x} instead of {declared:#010x}"
    )]
    SnapshotMismatch {
        /// The size the snapshot was begun with.
        size: u64,
        /// The bytes written.
        written: u64,
        /// The checksum the snapshot was begun with.
        declared: u32,
        /// The checksum of the bytes written.
        computed: u32,
    },
    /// A staged snapshot ([`Storage::save_staged_snapshot`]) that another store, or
    /// another kind of writer, staged.
    #[error("the staged snapshot was not created by this store")]
    ForeignStagedSnapshot,
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
