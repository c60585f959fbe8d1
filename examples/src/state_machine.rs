//! [`SnapshottingKv`]: the KV store, in client sessions, as a state machine that Raft's
//! snapshot policy snapshots cheaply.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raft_impl::Raft;
use raft_impl::session::{SessionCommand, SessionResult, Sessions};
use raft_mem::{KvCommand, KvResponse, KvStateMachine};
use raft_traits::{
    Bytes, LogId, Snapshot, SnapshotJob, SnapshotMeta, SnapshotReader, SnapshotSource,
    SnapshotWriter, StagedSnapshot, StateMachine, StateMachineError, StorageError, async_trait,
};
use smol::lock::RwLock;

use crate::read::ReadCounters;

/// What a KV node's log holds: a KV command in a client session, or a session's
/// registration.
pub type KvSessionCommand = SessionCommand<KvCommand>;

/// What applying a [`KvSessionCommand`] answers.
pub type KvSessionResult = SessionResult<KvResponse>;

/// The KV store wrapped in its table of client sessions.
pub type KvSessions = Sessions<KvStateMachine, KvResponse>;

/// The Raft handle type of a KV node.
pub type KvRaft = Raft<KvSessionCommand, KvSessionResult>;

/// Wraps [`KvStateMachine`] in client sessions ([`KvSessions`]: each client's command is
/// applied once, however often it is retried), and lets Raft's snapshot policy compact
/// the log cheaply.
///
/// It takes no snapshot by itself: the node sets
/// [`Config::snapshot_after_entries`](raft_impl::Config::snapshot_after_entries), and
/// Raft calls [`capture_snapshot`](StateMachine::capture_snapshot) between two applies.
/// The capture clones the root of the persistent key-value map and copies the
/// session table (at most `max_sessions` small records); the encoding runs on a thread
/// of the blocking pool while commands keep applying.
///
/// The state is kept behind a shared read-write lock so that the node can read it
/// ([`KvView`]): after a read barrier for linearizable reads without the log
/// ([`KvView::read`]), or directly for checks and debugging (local, not linearizable).
pub struct SnapshottingKv {
    state: Arc<RwLock<KvSessions>>,
    stats: Arc<SnapshotCounters>,
    reads: Arc<ReadCounters>,
}

/// Counts of a [`SnapshottingKv`]'s snapshots.
#[derive(Debug, Default)]
struct SnapshotCounters {
    taken: AtomicU64,
    restored: AtomicU64,
    last_taken_size: AtomicU64,
    last_restored_size: AtomicU64,
}

impl SnapshotCounters {
    fn note_taken(&self, snapshot: &Result<Snapshot, StateMachineError>) {
        match snapshot {
            Ok(snapshot) => {
                let size = u64::try_from(snapshot.data.len()).unwrap_or(u64::MAX);
                self.taken.fetch_add(1, Ordering::Relaxed);
                self.last_taken_size.store(size, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a snapshot; the log keeps growing");
            }
        }
    }
}

/// What a [`SnapshottingKv`] did with snapshots so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots it encoded for Raft. Raft's own count of the snapshots that compacted
    /// its log is `Status::counters.snapshots_taken` (the node's `status`).
    pub taken: u64,
    /// Snapshots it was restored from: at start-up from storage, or sent by the leader.
    pub restored: u64,
    /// The size in bytes of the last snapshot it encoded.
    pub last_taken_size: u64,
    /// The size in bytes of the last snapshot it was restored from.
    pub last_restored_size: u64,
}

/// A read-only view of a [`SnapshottingKv`]'s state, shared with the state machine.
#[derive(Clone)]
pub struct KvView {
    state: Arc<RwLock<KvSessions>>,
    stats: Arc<SnapshotCounters>,
    pub(crate) reads: Arc<ReadCounters>,
}

impl SnapshottingKv {
    /// An empty store that keeps at most `max_sessions` client sessions. How often it is
    /// snapshotted is Raft's [`Config::snapshot_after_entries`](raft_impl::Config).
    pub fn new(max_sessions: NonZeroUsize) -> Self {
        SnapshottingKv {
            state: Arc::new(RwLock::new(Sessions::with_capacity(
                KvStateMachine::new(),
                max_sessions,
            ))),
            stats: Arc::new(SnapshotCounters::default()),
            reads: Arc::new(ReadCounters::default()),
        }
    }

    /// A view of the state, for reading it from outside. Every view of one state machine
    /// shares its read counters ([`KvView::read_stats`]).
    pub fn view(&self) -> KvView {
        KvView {
            state: Arc::clone(&self.state),
            stats: Arc::clone(&self.stats),
            reads: Arc::clone(&self.reads),
        }
    }
}

impl fmt::Debug for SnapshottingKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshottingKv")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl StateMachine<KvSessionCommand> for SnapshottingKv {
    type Response = KvSessionResult;

    async fn apply(&mut self, log_id: LogId, command: KvSessionCommand) -> KvSessionResult {
        self.state.write().await.apply(log_id, command).await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let snapshot = self.state.write().await.snapshot().await;
        self.stats.note_taken(&snapshot);
        snapshot
    }

    /// Clones the key-value map's `Arc` and copies the session table, under the state's
    /// lock (so never while a reader holds it); the job encodes both.
    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        // Raft calls this between two applies on the apply task, the only writer: the
        // lock is free unless a reader holds it, and a reader holds it only to copy a
        // value or an `Arc` (never across an await), so this waits microseconds at most.
        let job = loop {
            if let Some(mut state) = self.state.try_write() {
                break state.capture_snapshot()?;
            }
            std::thread::yield_now();
        };
        let stats = Arc::clone(&self.stats);
        Some(Box::pin(async move {
            // Encoding is CPU work of tens of milliseconds per million keys: on a thread
            // of the blocking pool, not on an executor thread, where it would hold up the
            // connections and the event loop sharing that thread (smol's global executor
            // runs on one thread by default).
            let snapshot = smol::unblock(move || smol::block_on(job)).await;
            stats.note_taken(&snapshot);
            snapshot
        }))
    }

    /// Streams the snapshot: the session table (a copy, bounded by `max_sessions`), then
    /// the key-value map entry by entry in pieces of about 64 KiB, written by Raft's
    /// snapshot task into storage as they are encoded, so no one holds the encoded
    /// snapshot whole. Captured under the state's lock, as `capture_snapshot` is.
    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        let source = loop {
            if let Some(mut state) = self.state.try_write() {
                break state.capture_snapshot_stream()?;
            }
            std::thread::yield_now();
        };
        Some(Box::new(Tallied {
            source,
            stats: Arc::clone(&self.stats),
        }))
    }

    /// Restores through the session wrapper's reader path: the table, then the map from
    /// a reader over the rest.
    async fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> Result<(), StateMachineError> {
        let size = reader.len();
        self.state.write().await.restore_from(meta, reader).await?;
        self.stats.restored.fetch_add(1, Ordering::Relaxed);
        self.stats.last_restored_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let size = u64::try_from(snapshot.data.len()).unwrap_or(u64::MAX);
        self.state.write().await.restore(snapshot).await?;
        self.stats.restored.fetch_add(1, Ordering::Relaxed);
        self.stats.last_restored_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvSessions::check_snapshot(snapshot)
    }
}

/// A streamed snapshot whose size the counters learn once it is written.
struct Tallied {
    source: Box<dyn SnapshotSource>,
    stats: Arc<SnapshotCounters>,
}

#[async_trait]
impl SnapshotSource for Tallied {
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError> {
        let mut counted = Counted { out, bytes: 0 };
        match self.source.write_to(&mut counted).await {
            Ok(()) => {
                self.stats.taken.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .last_taken_size
                    .store(counted.bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot write a snapshot; the log keeps growing");
                Err(error)
            }
        }
    }
}

/// The writer a [`Tallied`] source writes through: it counts each piece and hands it on.
struct Counted<'a> {
    out: &'a mut dyn SnapshotWriter,
    bytes: u64,
}

#[async_trait]
impl SnapshotWriter for Counted<'_> {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.bytes = self.bytes.saturating_add(data.len() as u64);
        self.out.write(data).await
    }

    async fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        // Sources only write; whoever opened the storage writer finishes it.
        Err(StorageError::Corrupt(
            "a snapshot source asked to finish the writer it was lent".to_owned(),
        ))
    }
}

impl KvView {
    /// The value of `key` in this node's applied state: local, not linearizable (see
    /// [`read`](Self::read) for that).
    pub async fn get(&self, key: &str) -> Option<String> {
        self.state.read().await.inner().get(key).map(str::to_owned)
    }

    /// The value of `key` in this node's applied state, shared.
    pub(crate) async fn get_shared(&self, key: &str) -> Option<Arc<str>> {
        self.state.read().await.inner().get(key).map(Arc::from)
    }

    /// A copy of this node's applied key-value state.
    pub async fn state(&self) -> KvStateMachine {
        self.state.read().await.inner().clone()
    }

    /// A copy of this node's applied state with its session table.
    pub async fn sessions(&self) -> KvSessions {
        self.state.read().await.clone()
    }

    /// What the state machine did with snapshots so far.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        SnapshotStats {
            taken: self.stats.taken.load(Ordering::Relaxed),
            restored: self.stats.restored.load(Ordering::Relaxed),
            last_taken_size: self.stats.last_taken_size.load(Ordering::Relaxed),
            last_restored_size: self.stats.last_restored_size.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for KvView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvView")
            .field("snapshots", &self.snapshot_stats())
            .field("reads", &self.read_stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use raft_impl::session::{ClientId, SessionResponse};
    use raft_mem::KvCommand;
    use raft_traits::{LogIndex, Term};

    use super::*;
    use crate::DEFAULT_MAX_SESSIONS;

    fn at(index: u64) -> LogId {
        LogId::new(Term(1), LogIndex(index))
    }

    fn put(client: ClientId, sequence: u64, key: &str, value: &str) -> KvSessionCommand {
        SessionCommand::Request {
            client,
            sequence,
            command: KvCommand::Put {
                key: key.into(),
                value: value.into(),
            },
        }
    }

    /// A store whose first entry registered a session, and that session.
    async fn with_a_session() -> (SnapshottingKv, ClientId) {
        let mut kv = SnapshottingKv::new(DEFAULT_MAX_SESSIONS);
        match kv.apply(at(1), SessionCommand::Register).await {
            Ok(SessionResponse::Registered(client)) => (kv, client),
            other => panic!("{other:?}"),
        }
    }

    /// The snapshot policy's capture: the job encodes the state as it was at the
    /// capture, the same bytes as `snapshot` then, whatever is applied meanwhile.
    #[test]
    fn a_captured_snapshot_is_the_state_at_the_capture() {
        smol::block_on(async {
            let (mut kv, client) = with_a_session().await;
            kv.apply(at(2), put(client, 1, "a", "1")).await.unwrap();
            let expected = kv.snapshot().await.unwrap();
            let job = kv
                .capture_snapshot()
                .expect("the KV store captures cheaply");
            // Applied after the capture: the job must not see it.
            kv.apply(at(3), put(client, 2, "a", "2")).await.unwrap();
            let captured = job.await.unwrap();
            assert_eq!(captured.meta.last_included, at(2));
            assert_eq!(captured.data, expected.data);
            assert_eq!(kv.view().snapshot_stats().taken, 2);

            // Restored elsewhere, it holds the captured value and the session.
            let mut other = SnapshottingKv::new(DEFAULT_MAX_SESSIONS);
            other.restore(captured).await.unwrap();
            let view = other.view();
            assert_eq!(view.get("a").await.as_deref(), Some("1"));
            assert_eq!(view.sessions().await.last_sequence(client), Some(1));
        });
    }

    /// What the snapshot policy takes: the streamed capture writes the same bytes as
    /// `snapshot`, in pieces (the session table, then the map about 64 KiB at a time),
    /// counts itself, and restores from a reader into the same state.
    #[test]
    fn a_streamed_snapshot_is_the_state_at_the_capture_in_pieces() {
        smol::block_on(async {
            let (mut kv, client) = with_a_session().await;
            let value = "v".repeat(256);
            for sequence in 1..=1_000u64 {
                let key = format!("key{sequence:04}");
                kv.apply(at(1 + sequence), put(client, sequence, &key, &value))
                    .await
                    .unwrap();
            }
            let expected = kv.snapshot().await.unwrap();
            let source = kv.capture_snapshot_stream().expect("the KV store streams");
            // Applied after the capture: the stream must not see it.
            kv.apply(at(1_002), put(client, 1_001, "key0001", "changed"))
                .await
                .unwrap();
            let mut collected = raft_traits::BufferWriter::new(SnapshotMeta::default());
            source.write_to(&mut collected).await.unwrap();
            assert!(
                collected.data() == expected.data,
                "the streamed bytes differ"
            );
            assert!(collected.pieces() >= 4, "{} pieces", collected.pieces());
            let stats = kv.view().snapshot_stats();
            assert_eq!(stats.taken, 2);
            assert_eq!(stats.last_taken_size, expected.data.len() as u64);

            let mut other = SnapshottingKv::new(DEFAULT_MAX_SESSIONS);
            let reader = raft_traits::BytesReader::shared(expected.data.clone());
            other.restore_from(expected.meta, reader).await.unwrap();
            let view = other.view();
            assert_eq!(view.get("key0001").await.as_deref(), Some(value.as_str()));
            assert_eq!(view.sessions().await.last_sequence(client), Some(1_000));
            assert_eq!(view.snapshot_stats().restored, 1);
        });
    }
}
