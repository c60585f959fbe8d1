//! [`MemStorage`]: the [`Storage`] trait kept in memory, shared between a node and the
//! harness that inspects, copies and restores it.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use raft_traits::{
    Bytes, BytesReader, Command, Entry, HardState, LogId, LogIndex, PendingSnapshot,
    RecoveredState, Snapshot, SnapshotChecksum, SnapshotDescriptor, SnapshotMeta, SnapshotReader,
    Storage, StorageError, async_trait,
};

/// An in-memory [`Storage`], the counterpart of the classic lab's persister.
///
/// Clones share one state: the node owns one clone, the test harness keeps another to
/// inspect it ([`raft_state_size`](Self::raft_state_size), [`hard_state`](Self::hard_state),
/// ...). [`copy`](Self::copy) makes an independent deep copy instead, which is what a
/// harness hands to a restarted server so that writes of the crashed instance cannot reach
/// it.
///
/// Every write takes effect atomically under one lock, so "durable" simply means "visible
/// to every clone". The lock is never held across an `.await`.
///
/// # Indices
///
/// The log holds the entries `first_index()..=last_index()`. `first_index()` is the
/// snapshot's last included index + 1 (1 without a snapshot), or lower while entries the
/// snapshot covers are kept as Raft's trailing window (until [`Storage::purge_to`]).
/// Index 0 stands for the position before the first entry and always counts as
/// compacted: [`Storage::entries`] answers [`StorageError::Compacted`] for any index
/// below `first_index()`, and [`Storage::truncate_from`] for any the snapshot covers.
///
/// ```
/// use raft_mem::MemStorage;
/// use raft_traits::{Entry, LogIndex, Payload, Storage, Term};
///
/// let node_side: MemStorage<u64> = MemStorage::new();
/// let harness_side = node_side.clone();
/// let mut store = node_side;
/// futures::executor::block_on(async {
///     let entry = Entry { term: Term(1), index: LogIndex(1), payload: Payload::Command(7) };
///     store.append(&[entry]).await.unwrap();
/// });
/// assert_eq!(harness_side.last_index(), LogIndex(1));
///
/// // A deep copy does not see later writes.
/// let copy = harness_side.copy();
/// futures::executor::block_on(store.truncate_from(LogIndex(1))).unwrap();
/// assert_eq!(harness_side.last_index(), LogIndex(0));
/// assert_eq!(copy.last_index(), LogIndex(1));
/// ```
pub struct MemStorage<C> {
    state: Arc<Mutex<Persisted<C>>>,
}

/// Everything one server has persisted.
struct Persisted<C> {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The stored snapshot's checksum (computed once, when it is stored).
    snapshot_checksum: u32,
    /// The snapshot being written in pieces, if any.
    pending: Option<Pending>,
    /// The kept entries, contiguous: `entries[i].index == first_index() + i`. They may
    /// start inside the snapshot (the trailing window); then they hold its last entry.
    entries: Vec<Entry<C>>,
}

impl<C: Clone> Clone for Persisted<C> {
    fn clone(&self) -> Self {
        Persisted {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            snapshot_checksum: self.snapshot_checksum,
            pending: self.pending.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// A snapshot being written in pieces.
#[derive(Clone)]
struct Pending {
    descriptor: SnapshotDescriptor,
    data: Vec<u8>,
    checksum: SnapshotChecksum,
}

impl<C> Persisted<C> {
    /// Refuses a snapshot that is not newer than the stored one.
    fn check_newer(&self, offered: LogId) -> Result<(), StorageError> {
        let stored = self.snapshot_id();
        // The first snapshot may sit at index 0: the bootstrap record.
        if self.snapshot.is_some() && offered.index <= stored.index {
            return Err(StorageError::StaleSnapshot { stored, offered });
        }
        Ok(())
    }

    /// Stores `snapshot`, dropping the log if it conflicts with it (Figure 13, steps 6–7).
    fn install(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let offered = snapshot.meta.last_included;
        self.check_newer(offered)?;
        // Keep the log only if it holds the snapshot's last entry with the same term;
        // otherwise it conflicts with the snapshot and is discarded whole. What the
        // snapshot covers goes later, with `purge_to`.
        let matches = self
            .position(offered.index)
            .and_then(|position| self.entries.get(position))
            .is_some_and(|entry| entry.term == offered.term);
        if !matches {
            self.entries.clear();
        }
        self.snapshot_checksum = snapshot.checksum();
        self.snapshot = Some(snapshot);
        Ok(())
    }

    fn snapshot_id(&self) -> LogId {
        self.snapshot
            .as_ref()
            .map(|snapshot| snapshot.meta.last_included)
            .unwrap_or_default()
    }

    fn first_index(&self) -> LogIndex {
        self.entries
            .first()
            .map_or_else(|| self.snapshot_id().index.next(), |entry| entry.index)
    }

    fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map(|entry| entry.index)
            .unwrap_or_else(|| self.snapshot_id().index)
    }

    /// The position of `index` in `entries`, if the log holds it.
    fn position(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        let position = usize::try_from(offset).ok()?;
        (position < self.entries.len()).then_some(position)
    }
}

impl<C> MemStorage<C> {
    /// An empty store: default hard state, no snapshot, no entries.
    pub fn new() -> Self {
        MemStorage {
            state: Arc::new(Mutex::new(Persisted {
                hard_state: HardState::default(),
                snapshot: None,
                snapshot_checksum: 0,
                pending: None,
                entries: Vec::new(),
            })),
        }
    }

    /// Locks the shared state. A panic of another holder cannot leave it half-written
    /// (every write validates first and mutates after), so a poisoned lock is still safe
    /// to use.
    fn lock(&self) -> MutexGuard<'_, Persisted<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored term and vote.
    pub fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    /// What the stored snapshot covers, if there is one.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock()
            .snapshot
            .as_ref()
            .map(|snapshot| snapshot.meta.clone())
    }

    /// The stored snapshot, if any (its data is a cheap reference-counted clone).
    pub fn read_snapshot(&self) -> Option<Snapshot> {
        self.lock().snapshot.clone()
    }

    /// The index of the first entry the log holds (or would hold next): the snapshot's
    /// last included index + 1 (1 without a snapshot), or lower while a trailing window
    /// of entries the snapshot covers is kept.
    pub fn first_index(&self) -> LogIndex {
        self.lock().first_index()
    }

    /// The index of the last entry, or of the snapshot's last included entry when the log
    /// is empty, or 0.
    pub fn last_index(&self) -> LogIndex {
        self.lock().last_index()
    }

    /// The size in bytes of the stored snapshot's data (0 without a snapshot): the lab's
    /// `SnapshotSize`.
    pub fn snapshot_size(&self) -> usize {
        self.lock()
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.data.len())
    }
}

impl<C: Command> MemStorage<C> {
    /// An independent deep copy, like the lab's `persister.Copy()`: later writes to either
    /// store do not affect the other.
    pub fn copy(&self) -> MemStorage<C> {
        let copied = self.lock().clone();
        MemStorage {
            state: Arc::new(Mutex::new(copied)),
        }
    }

    /// The size in bytes of the persisted Raft state without the snapshot data: the
    /// postcard encoding of (hard state, snapshot metadata, log entries). This is the
    /// lab's `RaftStateSize`, the quantity bounded by the log-compaction tests.
    ///
    /// A command whose serialization fails cannot be measured; the size then counts the
    /// bytes written before the failure and the failure is logged.
    pub fn raft_state_size(&self) -> usize {
        let state = self.lock();
        let persisted = (
            &state.hard_state,
            state.snapshot.as_ref().map(|snapshot| &snapshot.meta),
            state.entries.as_slice(),
        );
        let mut counter = ByteCounter(0);
        if let Err(e) = postcard::to_io(&persisted, &mut counter) {
            tracing::error!("cannot measure the persisted raft state: {e}");
        }
        counter.0
    }

    /// Every entry kept (the trailing window, then those after the snapshot), in index
    /// order.
    pub fn log(&self) -> Vec<Entry<C>> {
        self.lock().entries.clone()
    }
}

impl<C> Default for MemStorage<C> {
    fn default() -> Self {
        MemStorage::new()
    }
}

impl<C> Clone for MemStorage<C> {
    /// Another handle on the same state (use [`MemStorage::copy`] for an independent one).
    fn clone(&self) -> Self {
        MemStorage {
            state: Arc::clone(&self.state),
        }
    }
}

impl<C> fmt::Debug for MemStorage<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemStorage")
            .field("hard_state", &state.hard_state)
            .field("snapshot", &state.snapshot.as_ref().map(|s| s.meta.clone()))
            .field("first_index", &state.first_index())
            .field("last_index", &state.last_index())
            .finish()
    }
}

#[async_trait]
impl<C: Command> Storage<C> for MemStorage<C> {
    async fn recover(&mut self) -> Result<RecoveredState<C>, StorageError> {
        let state = self.lock();
        Ok(RecoveredState {
            hard_state: state.hard_state,
            snapshot: state
                .snapshot
                .as_ref()
                .map(|snapshot| snapshot.meta.clone()),
            entries: state.entries.clone(),
        })
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.lock().hard_state = hard_state;
        Ok(())
    }

    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError> {
        let mut state = self.lock();
        // Validate the whole batch before storing any of it, so a rejected append leaves
        // the log untouched.
        let mut expected = state.last_index().next();
        for entry in entries {
            if entry.index != expected {
                return Err(StorageError::NotContiguous {
                    expected,
                    found: entry.index,
                });
            }
            expected = expected.next();
        }
        state.entries.extend_from_slice(entries);
        Ok(())
    }

    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        let mut state = self.lock();
        if index <= state.snapshot_id().index {
            return Err(StorageError::Compacted { index });
        }
        if let Some(position) = state.position(index) {
            state.entries.truncate(position);
        }
        Ok(())
    }

    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let state = self.lock();
        if from < state.first_index() {
            return Err(StorageError::Compacted { index: from });
        }
        if to <= from {
            return Ok(Vec::new());
        }
        let last = state.last_index();
        if to.prev() > last {
            // Report the first requested index the log does not hold.
            return Err(StorageError::Unavailable {
                index: from.max(last.next()),
            });
        }
        // Both ends lie in first_index()..=last_index() + 1, so the positions exist.
        let start = state.position(from).unwrap_or(state.entries.len());
        let end = state.position(to).unwrap_or(state.entries.len());
        Ok(state.entries.get(start..end).unwrap_or_default().to_vec())
    }

    /// Stores the snapshot's bytes as they are (no copy), discarding a pending snapshot.
    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.install(snapshot)?;
        state.pending = None;
        Ok(())
    }

    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.check_newer(descriptor.meta.last_included)?;
        state.pending = Some(Pending {
            checksum: SnapshotChecksum::new(descriptor.meta.last_included),
            descriptor,
            data: Vec::new(),
        });
        Ok(())
    }

    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        let mut state = self.lock();
        let pending = state
            .pending
            .as_mut()
            .ok_or(StorageError::NoPendingSnapshot)?;
        let written = pending.data.len() as u64;
        if offset != written {
            return Err(StorageError::SnapshotOffset {
                expected: written,
                found: offset,
            });
        }
        let end = written.saturating_add(data.len() as u64);
        if end > pending.descriptor.size {
            return Err(StorageError::SnapshotRange {
                offset: end,
                len: pending.descriptor.size,
            });
        }
        pending.checksum.update(&data);
        pending.data.extend_from_slice(&data);
        Ok(())
    }

    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        let mut state = self.lock();
        let pending = state
            .pending
            .take()
            .ok_or(StorageError::NoPendingSnapshot)?;
        let written = pending.data.len() as u64;
        let computed = pending.checksum.value();
        let descriptor = pending.descriptor;
        if written != descriptor.size || computed != descriptor.checksum {
            return Err(StorageError::SnapshotMismatch {
                size: descriptor.size,
                written,
                declared: descriptor.checksum,
                computed,
            });
        }
        state.install(Snapshot {
            meta: descriptor.meta.clone(),
            data: Bytes::from(pending.data),
        })?;
        Ok(descriptor)
    }

    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.lock().pending = None;
        Ok(())
    }

    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        Ok(self.lock().pending.as_ref().map(|pending| PendingSnapshot {
            descriptor: pending.descriptor.clone(),
            written: pending.data.len() as u64,
            checksum: pending.checksum.value(),
        }))
    }

    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, std::sync::Arc<dyn SnapshotReader>)>, StorageError>
    {
        let state = self.lock();
        Ok(state.snapshot.as_ref().map(|snapshot| {
            let descriptor = SnapshotDescriptor {
                meta: snapshot.meta.clone(),
                size: snapshot.data.len() as u64,
                checksum: state.snapshot_checksum,
            };
            (descriptor, BytesReader::shared(snapshot.data.clone()))
        }))
    }

    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        let mut state = self.lock();
        let covered = state.snapshot_id().index;
        if state.snapshot.is_none() || index > covered {
            return Err(StorageError::NotCovered { index, covered });
        }
        let purged = state
            .entries
            .iter()
            .take_while(|entry| entry.index <= index)
            .count();
        state.entries.drain(..purged);
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.lock().snapshot.clone())
    }
}

/// An [`io::Write`] that only counts the bytes written to it.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buffer.len());
        Ok(buffer.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use raft_traits::{Bytes, NodeId, Payload, Term};

    use super::*;

    fn entry(term: u64, index: u64) -> Entry<u64> {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: Payload::Command(index * 100),
        }
    }

    fn entries(terms_from_one: &[u64]) -> Vec<Entry<u64>> {
        (1..)
            .zip(terms_from_one)
            .map(|(i, &t)| entry(t, i))
            .collect()
    }

    fn snapshot(term: u64, index: u64, data: &'static [u8]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_included: LogId::new(Term(term), LogIndex(index)),
                membership: Default::default(),
            },
            data: Bytes::from_static(data),
        }
    }

    fn indices(entries: &[Entry<u64>]) -> Vec<u64> {
        entries.iter().map(|e| e.index.0).collect()
    }

    /// A store holding entries 1..=5, all of term 1.
    fn five() -> MemStorage<u64> {
        let mut store = MemStorage::new();
        block_on(store.append(&entries(&[1, 1, 1, 1, 1]))).unwrap();
        store
    }

    #[test]
    fn a_fresh_store_recovers_the_default_state() {
        let mut store: MemStorage<u64> = MemStorage::new();
        let recovered = block_on(store.recover()).unwrap();
        assert_eq!(recovered, RecoveredState::default());
        assert_eq!(block_on(store.snapshot()).unwrap(), None);
        assert_eq!(store.first_index(), LogIndex(1));
        assert_eq!(store.last_index(), LogIndex(0));
    }

    #[test]
    fn hard_state_is_replaced() {
        let mut store: MemStorage<u64> = MemStorage::new();
        let hard_state = HardState {
            term: Term(3),
            voted_for: Some(NodeId(2)),
        };
        block_on(store.save_hard_state(hard_state)).unwrap();
        assert_eq!(store.hard_state(), hard_state);
        assert_eq!(block_on(store.recover()).unwrap().hard_state, hard_state);
    }

    #[test]
    fn append_must_continue_the_log() {
        let mut store = five();
        let err = block_on(store.append(&[entry(1, 7)])).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                expected: LogIndex(6),
                found: LogIndex(7)
            }
        ));
        let err = block_on(store.append(&[entry(1, 5)])).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                found: LogIndex(5),
                ..
            }
        ));
        block_on(store.append(&[entry(2, 6)])).unwrap();
        assert_eq!(store.last_index(), LogIndex(6));
    }

    #[test]
    fn append_with_a_gap_inside_the_batch_stores_nothing() {
        let mut store = five();
        let err = block_on(store.append(&[entry(1, 6), entry(1, 8)])).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                expected: LogIndex(7),
                found: LogIndex(8)
            }
        ));
        assert_eq!(store.last_index(), LogIndex(5));
    }

    #[test]
    fn appending_nothing_is_a_no_op() {
        let mut store = five();
        block_on(store.append(&[])).unwrap();
        assert_eq!(store.last_index(), LogIndex(5));
    }

    #[test]
    fn append_after_a_snapshot_starts_after_its_last_included_index() {
        let mut store: MemStorage<u64> = MemStorage::new();
        block_on(store.save_snapshot(snapshot(2, 10, b"s"))).unwrap();
        let err = block_on(store.append(&[entry(2, 1)])).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotContiguous {
                expected: LogIndex(11),
                ..
            }
        ));
        block_on(store.append(&[entry(2, 11)])).unwrap();
        assert_eq!(store.last_index(), LogIndex(11));
    }

    #[test]
    fn truncate_removes_the_suffix() {
        let mut store = five();
        block_on(store.truncate_from(LogIndex(3))).unwrap();
        assert_eq!(store.last_index(), LogIndex(2));
        assert_eq!(indices(&block_on(store.recover()).unwrap().entries), [1, 2]);
        block_on(store.truncate_from(LogIndex(1))).unwrap();
        assert_eq!(store.last_index(), LogIndex(0));
    }

    #[test]
    fn truncate_past_the_end_is_a_no_op() {
        let mut store = five();
        block_on(store.truncate_from(LogIndex(6))).unwrap();
        block_on(store.truncate_from(LogIndex(100))).unwrap();
        assert_eq!(store.last_index(), LogIndex(5));
    }

    #[test]
    fn truncate_inside_the_compacted_prefix_fails() {
        let mut store = five();
        block_on(store.save_snapshot(snapshot(1, 3, b"s"))).unwrap();
        for index in [0, 1, 3] {
            let err = block_on(store.truncate_from(LogIndex(index))).unwrap_err();
            assert!(matches!(err, StorageError::Compacted { index: i } if i == LogIndex(index)));
        }
        assert_eq!(store.last_index(), LogIndex(5));
        block_on(store.truncate_from(LogIndex(4))).unwrap();
        assert_eq!(store.last_index(), LogIndex(3));
    }

    #[test]
    fn entries_reads_a_half_open_range() {
        let mut store = five();
        assert_eq!(
            indices(&block_on(store.entries(LogIndex(2), LogIndex(5))).unwrap()),
            [2, 3, 4]
        );
        assert_eq!(
            indices(&block_on(store.entries(LogIndex(1), LogIndex(6))).unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert!(
            block_on(store.entries(LogIndex(3), LogIndex(3)))
                .unwrap()
                .is_empty()
        );
        assert!(
            block_on(store.entries(LogIndex(6), LogIndex(6)))
                .unwrap()
                .is_empty()
        );
        assert!(
            block_on(store.entries(LogIndex(4), LogIndex(2)))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn entries_past_the_end_are_unavailable() {
        let mut store = five();
        let err = block_on(store.entries(LogIndex(4), LogIndex(7))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Unavailable { index: LogIndex(6) }
        ));
        let err = block_on(store.entries(LogIndex(8), LogIndex(9))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Unavailable { index: LogIndex(8) }
        ));
    }

    #[test]
    fn entries_in_the_compacted_prefix_are_compacted() {
        let mut store = five();
        let err = block_on(store.entries(LogIndex(0), LogIndex(2))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Compacted { index: LogIndex(0) }
        ));
        block_on(store.save_snapshot(snapshot(1, 3, b"s"))).unwrap();
        block_on(store.purge_to(LogIndex(3))).unwrap();
        let err = block_on(store.entries(LogIndex(3), LogIndex(5))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Compacted { index: LogIndex(3) }
        ));
        assert_eq!(
            indices(&block_on(store.entries(LogIndex(4), LogIndex(6))).unwrap()),
            [4, 5]
        );
    }

    #[test]
    fn snapshot_keeps_the_suffix_of_a_matching_log() {
        let mut store = five();
        let snap = snapshot(1, 3, b"state");
        block_on(store.save_snapshot(snap.clone())).unwrap();
        assert_eq!(indices(&store.log()), [1, 2, 3, 4, 5], "kept until purged");
        block_on(store.purge_to(LogIndex(3))).unwrap();
        assert_eq!(block_on(store.snapshot()).unwrap(), Some(snap.clone()));
        let recovered = block_on(store.recover()).unwrap();
        assert_eq!(recovered.snapshot, Some(snap.meta));
        assert_eq!(indices(&recovered.entries), [4, 5]);
        assert_eq!(store.first_index(), LogIndex(4));
        assert_eq!(store.last_index(), LogIndex(5));
    }

    #[test]
    fn a_trailing_window_stays_readable_until_purged() {
        let mut store = five();
        let err = block_on(store.purge_to(LogIndex(1))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotCovered {
                index: LogIndex(1),
                covered: LogIndex(0)
            }
        ));
        block_on(store.save_snapshot(snapshot(1, 4, b"s"))).unwrap();
        block_on(store.purge_to(LogIndex(2))).unwrap();
        assert_eq!(store.first_index(), LogIndex(3));
        assert_eq!(
            indices(&block_on(store.recover()).unwrap().entries),
            [3, 4, 5]
        );
        assert_eq!(
            indices(&block_on(store.entries(LogIndex(3), LogIndex(5))).unwrap()),
            [3, 4]
        );
        let err = block_on(store.entries(LogIndex(2), LogIndex(5))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Compacted { index: LogIndex(2) }
        ));
        let err = block_on(store.truncate_from(LogIndex(4))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::Compacted { index: LogIndex(4) }
        ));
        let err = block_on(store.purge_to(LogIndex(5))).unwrap_err();
        assert!(matches!(
            err,
            StorageError::NotCovered {
                index: LogIndex(5),
                covered: LogIndex(4)
            }
        ));
        block_on(store.purge_to(LogIndex(1))).unwrap();
        assert_eq!(
            store.first_index(),
            LogIndex(3),
            "purging what is gone changes nothing"
        );
        block_on(store.append(&[entry(2, 6)])).unwrap();
        assert_eq!(store.last_index(), LogIndex(6));
    }

    #[test]
    fn snapshot_of_the_last_entry_empties_the_log() {
        let mut store = five();
        block_on(store.save_snapshot(snapshot(1, 5, b"s"))).unwrap();
        block_on(store.purge_to(LogIndex(5))).unwrap();
        assert!(store.log().is_empty());
        assert_eq!(store.last_index(), LogIndex(5));
    }

    #[test]
    fn snapshot_drops_a_log_with_a_different_term_at_its_last_index() {
        let mut store = five();
        block_on(store.save_snapshot(snapshot(2, 3, b"s"))).unwrap();
        assert!(store.log().is_empty());
        assert_eq!(store.last_index(), LogIndex(3));
    }

    #[test]
    fn snapshot_past_the_end_drops_the_log() {
        let mut store = five();
        block_on(store.save_snapshot(snapshot(1, 9, b"s"))).unwrap();
        assert!(store.log().is_empty());
        assert_eq!(store.first_index(), LogIndex(10));
        assert_eq!(store.last_index(), LogIndex(9));
    }

    #[test]
    fn stale_snapshot_changes_nothing() {
        let mut store = five();
        block_on(store.save_snapshot(snapshot(1, 3, b"new"))).unwrap();
        block_on(store.purge_to(LogIndex(3))).unwrap();
        for stale in [snapshot(1, 3, b"same"), snapshot(5, 2, b"older")] {
            let err = block_on(store.save_snapshot(stale)).unwrap_err();
            assert!(matches!(
                err,
                StorageError::StaleSnapshot { stored, .. } if stored == LogId::new(Term(1), LogIndex(3))
            ));
        }
        assert_eq!(
            store.read_snapshot().unwrap().data,
            Bytes::from_static(b"new")
        );
        assert_eq!(indices(&store.log()), [4, 5]);
    }

    #[test]
    fn a_first_snapshot_at_index_zero_is_kept_and_a_second_is_stale() {
        let mut store: MemStorage<u64> = MemStorage::new();
        block_on(store.save_snapshot(snapshot(0, 0, b""))).unwrap();
        assert_eq!(
            store.snapshot_meta().map(|m| m.last_included),
            Some(LogId::default())
        );
        let err = block_on(store.save_snapshot(snapshot(0, 0, b"again"))).unwrap_err();
        assert!(matches!(err, StorageError::StaleSnapshot { .. }));
        assert_eq!(store.read_snapshot().unwrap().data, Bytes::new());
    }

    #[test]
    fn clones_share_state_and_copies_do_not() {
        let mut node = five();
        let harness = node.clone();
        let copy = harness.copy();
        block_on(node.truncate_from(LogIndex(2))).unwrap();
        block_on(node.save_hard_state(HardState {
            term: Term(4),
            voted_for: None,
        }))
        .unwrap();
        assert_eq!(harness.last_index(), LogIndex(1));
        assert_eq!(harness.hard_state().term, Term(4));
        assert_eq!(copy.last_index(), LogIndex(5));
        assert_eq!(copy.hard_state(), HardState::default());

        let mut copy = copy;
        block_on(copy.append(&[entry(1, 6)])).unwrap();
        assert_eq!(harness.last_index(), LogIndex(1));
    }

    #[test]
    fn raft_state_size_is_the_postcard_size_without_snapshot_data() {
        let mut store = five();
        let expected = postcard::to_stdvec(&(
            HardState::default(),
            None::<SnapshotMeta>,
            entries(&[1, 1, 1, 1, 1]),
        ))
        .unwrap()
        .len();
        assert_eq!(store.raft_state_size(), expected);

        block_on(store.save_snapshot(snapshot(1, 5, &[0; 1000]))).unwrap();
        block_on(store.purge_to(LogIndex(5))).unwrap();
        let meta = store.snapshot_meta();
        let expected = postcard::to_stdvec(&(HardState::default(), meta, Vec::<Entry<u64>>::new()))
            .unwrap()
            .len();
        assert_eq!(store.raft_state_size(), expected);
        assert!(store.raft_state_size() < 20);
        assert_eq!(store.snapshot_size(), 1000);
    }
}
