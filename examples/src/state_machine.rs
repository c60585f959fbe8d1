//! [`SnapshottingKv`]: the KV store, in client sessions, as a state machine that compacts
//! Raft's log by itself.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use raft_impl::Raft;
use raft_impl::session::{SessionCommand, SessionResult, Sessions};
use raft_mem::{KvCommand, KvResponse, KvStateMachine};
use raft_traits::{LogId, Snapshot, StateMachine, StateMachineError, async_trait};
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
/// applied once, however often it is retried) and hands Raft a snapshot of both every
/// `snapshot_entries` applied commands, so that a long-running node's log (in memory and
/// in storage) stays bounded.
///
/// The snapshot is taken from inside [`apply`](StateMachine::apply), with
/// [`Raft::snapshot`], which returns at once; the Raft handle is only known once the node
/// has been spawned with this state machine, so it is handed over later through
/// [`raft_slot`](Self::raft_slot). Until then, no snapshot is taken.
///
/// The state is kept behind a shared read-write lock so that the node can read it
/// ([`KvView`]): after a read barrier for linearizable reads without the log
/// ([`KvView::read`]), or directly for checks and debugging (local, not linearizable).
pub struct SnapshottingKv {
    state: Arc<RwLock<KvSessions>>,
    raft: Arc<OnceLock<KvRaft>>,
    snapshot_entries: u64,
    applied_since_snapshot: u64,
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

/// What a [`SnapshottingKv`] did with snapshots so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots it made and handed to Raft.
    pub taken: u64,
    /// Snapshots it was restored from: at start-up from storage, or sent by the leader.
    pub restored: u64,
    /// The size in bytes of the last snapshot it made.
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
    /// An empty store that keeps at most `max_sessions` client sessions and snapshots
    /// every `snapshot_entries` applied commands (never if 0).
    pub fn new(snapshot_entries: u64, max_sessions: NonZeroUsize) -> Self {
        SnapshottingKv {
            state: Arc::new(RwLock::new(Sessions::with_capacity(
                KvStateMachine::new(),
                max_sessions,
            ))),
            raft: Arc::new(OnceLock::new()),
            snapshot_entries,
            applied_since_snapshot: 0,
            stats: Arc::new(SnapshotCounters::default()),
            reads: Arc::new(ReadCounters::default()),
        }
    }

    /// Where to put the Raft handle once the node is spawned; snapshots start then.
    pub fn raft_slot(&self) -> Arc<OnceLock<KvRaft>> {
        Arc::clone(&self.raft)
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

    /// Hands Raft `snapshot`, taken right after applying `log_id`.
    fn hand_over(&mut self, log_id: LogId, snapshot: Result<Snapshot, StateMachineError>) {
        let Some(raft) = self.raft.get() else {
            return;
        };
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::warn!(%error, "cannot take a snapshot; the log keeps growing");
                return;
            }
        };
        let size = u64::try_from(snapshot.data.len()).unwrap_or(u64::MAX);
        // Returns at once: Raft saves the snapshot and compacts its log on its own task.
        if raft.snapshot(log_id.index, snapshot.data).is_ok() {
            self.applied_since_snapshot = 0;
            self.stats.taken.fetch_add(1, Ordering::Relaxed);
            self.stats.last_taken_size.store(size, Ordering::Relaxed);
            tracing::debug!(%log_id, size, "snapshot handed to raft");
        }
    }
}

impl fmt::Debug for SnapshottingKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshottingKv")
            .field("snapshot_entries", &self.snapshot_entries)
            .field("applied_since_snapshot", &self.applied_since_snapshot)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl StateMachine<KvSessionCommand> for SnapshottingKv {
    type Response = KvSessionResult;

    async fn apply(&mut self, log_id: LogId, command: KvSessionCommand) -> KvSessionResult {
        let mut state = self.state.write().await;
        let response = state.apply(log_id, command).await;
        self.applied_since_snapshot += 1;
        if self.snapshot_entries > 0 && self.applied_since_snapshot >= self.snapshot_entries {
            let snapshot = state.snapshot().await;
            drop(state);
            self.hand_over(log_id, snapshot);
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.state.write().await.snapshot().await
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let size = u64::try_from(snapshot.data.len()).unwrap_or(u64::MAX);
        self.state.write().await.restore(snapshot).await?;
        self.applied_since_snapshot = 0;
        self.stats.restored.fetch_add(1, Ordering::Relaxed);
        self.stats.last_restored_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvSessions::check_snapshot(snapshot)
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
