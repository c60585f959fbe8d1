//! The application that Raft replicates.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::snapshot::{SnapshotReader, SnapshotWriter, read_all};
use crate::storage::{READ_PIECE, StorageError};
use crate::types::{Command, LogId, Snapshot, SnapshotMeta};

/// The work that serializes a captured state into a snapshot, returned by
/// [`StateMachine::capture_snapshot`]. Raft runs it on a task of its own, so it owns
/// everything it reads.
pub type SnapshotJob = BoxFuture<'static, Result<Snapshot, StateMachineError>>;

/// The replicated application: a deterministic state machine fed with committed commands.
///
/// Raft calls it from one dedicated task, strictly in log order, and never while holding
/// a lock of its own, so `apply` may call back into the Raft handle (for example to hand
/// Raft a snapshot with `Raft::snapshot`) without deadlocking.
///
/// # Implementing
///
/// * `apply` must be deterministic: the same commands in the same order give the same
///   state and responses on every server. Errors of the application (a missing key, a
///   failed precondition) belong in the response, not in a panic.
/// * `snapshot` captures everything applied so far; its `meta.last_included` is the id of
///   the last applied command. Raft calls it when its snapshot policy
///   (`Config::snapshot_after_entries` in `raft-impl`) says so, between two applies,
///   unless [`capture_snapshot`](StateMachine::capture_snapshot) offers a cheaper way.
/// * `restore` replaces the state with a snapshot's. A snapshot that is not newer than
///   the state already applied must be refused with [`StateMachineError::Stale`] or
///   ignored: a state machine never moves backwards.
///
/// The conformance suite in the `raft-tests` crate
/// (`raft_tests::conformance::state_machine`) checks these rules.
///
/// The methods are plain `async fn`s in an implementation (no macro): Raft awaits
/// `apply` once per committed command, and a future it can hold by value costs no
/// allocation, where a boxed one (as `#[async_trait]` makes) cost one per command. The
/// futures must be `Send`, since the apply task may move between threads.
///
/// ```
/// use raft_traits::{LogId, Snapshot, SnapshotMeta, StateMachine, StateMachineError};
///
/// /// Sums the numbers it is given.
/// #[derive(Default)]
/// struct Sum {
///     total: u64,
///     applied: Option<LogId>,
/// }
///
/// impl StateMachine<u64> for Sum {
///     type Response = u64;
///
///     async fn apply(&mut self, log_id: LogId, command: u64) -> u64 {
///         self.total = self.total.wrapping_add(command);
///         self.applied = Some(log_id);
///         self.total
///     }
///
///     async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
///         let last_included = self.applied.unwrap_or_default();
///         let data = self.total.to_le_bytes().to_vec().into();
///         // Raft fills in the membership.
///         let meta = SnapshotMeta { last_included, ..SnapshotMeta::default() };
///         Ok(Snapshot { meta, data })
///     }
///
///     async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
///         let bytes: [u8; 8] = snapshot.data[..].try_into().map_err(|_| {
///             StateMachineError::InvalidSnapshot("not 8 bytes".into())
///         })?;
///         self.total = u64::from_le_bytes(bytes);
///         self.applied = Some(snapshot.meta.last_included);
///         Ok(())
///     }
/// }
/// ```
pub trait StateMachine<C: Command>: Send + 'static {
    /// What applying a command returns to the client that proposed it.
    type Response: Send + 'static;

    /// Applies one committed command, the one at `log_id`.
    fn apply(&mut self, log_id: LogId, command: C) -> impl Future<Output = Self::Response> + Send;

    /// Serializes the current state.
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, StateMachineError>> + Send;

    /// Captures the current state for a snapshot without serializing it, and returns
    /// the job that serializes it (with `meta.last_included` the last applied id, as
    /// [`snapshot`](StateMachine::snapshot)'s).
    ///
    /// Raft's snapshot policy calls this between two applies and runs the job on a task
    /// of its own while `apply` goes on, so `apply` is held up only as long as this
    /// call takes: capture a cheap handle (an `Arc` of a persistent or copy-on-write
    /// structure), not a copy of the state. The job must not see later applies.
    ///
    /// The default returns `None`: Raft then awaits
    /// [`snapshot`](StateMachine::snapshot) on the apply task, and applying waits until
    /// the state is serialized.
    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        None
    }

    /// Captures the current state for a snapshot without serializing it, and returns
    /// the source that writes it, in pieces, into storage: the streaming form of
    /// [`capture_snapshot`](StateMachine::capture_snapshot), for a state too large to
    /// serialize whole in memory.
    ///
    /// Raft's snapshot policy prefers it to `capture_snapshot` and
    /// [`snapshot`](StateMachine::snapshot). It calls it between two applies (the
    /// snapshot covers the last applied command), then runs
    /// [`SnapshotSource::write_to`] on a task of its own, into a
    /// [`SnapshotWriter`] of the server's storage, while `apply` goes on; so capture a
    /// cheap handle (an `Arc` of a persistent or copy-on-write structure), and write
    /// pieces of bounded size (a few hundred KiB to a few MiB each).
    ///
    /// The default returns `None`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use raft_traits::{
    ///     Bytes, SnapshotSource, SnapshotWriter, StateMachineError, async_trait,
    /// };
    ///
    /// /// A captured list of records, written one record per piece.
    /// struct Records(Arc<Vec<Bytes>>);
    ///
    /// #[async_trait]
    /// impl SnapshotSource for Records {
    ///     async fn write_to(
    ///         self: Box<Self>,
    ///         out: &mut dyn SnapshotWriter,
    ///     ) -> Result<(), StateMachineError> {
    ///         for record in self.0.iter() {
    ///             out.write(record.clone()).await?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        None
    }

    /// Replaces the current state with the snapshot's.
    fn restore(
        &mut self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StateMachineError>> + Send;

    /// Replaces the current state with the snapshot `meta` describes, whose data
    /// `reader` serves in pieces. Raft restores through this method (on the apply task,
    /// and at start before `Raft::spawn` returns), so a state machine that overrides it
    /// can rebuild its state piece by piece without ever holding the serialized snapshot
    /// whole. Read the data with [`SnapshotReader::read_at`] in pieces of any size; the
    /// rules of [`restore`](StateMachine::restore) apply.
    ///
    /// The default reads the whole data into memory and calls
    /// [`restore`](StateMachine::restore).
    fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> impl Future<Output = Result<(), StateMachineError>> + Send {
        async move {
            let data = read_all(reader.as_ref(), READ_PIECE).await?;
            self.restore(Snapshot { meta, data }).await
        }
    }

    /// Checks that a snapshot received from the leader holds a state
    /// [`restore`](StateMachine::restore) would accept, before Raft installs it. Raft
    /// refuses one that fails ([`StateMachineError::InvalidSnapshot`]) to the leader
    /// and keeps its own state and log, so that bad bytes never stop a node; once
    /// installed, a snapshot that `restore` cannot read leaves the node no state to
    /// serve from, and it stops.
    ///
    /// The default accepts every snapshot. A state machine whose `restore` can fail on
    /// its input should decode it here (without keeping the result).
    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError>
    where
        Self: Sized,
    {
        let _ = snapshot;
        Ok(())
    }
}

/// A state captured for a snapshot
/// ([`StateMachine::capture_snapshot_stream`]) that writes itself into storage in
/// pieces.
#[async_trait]
pub trait SnapshotSource: Send + 'static {
    /// Writes the captured state's serialized form into `out`, in order, in pieces of
    /// any size. Raft finishes the writer afterwards; a failure (of the state machine or
    /// of `out`) abandons the snapshot and keeps the stored one.
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError>;
}

/// Why a state machine could not take or restore a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    /// The snapshot is not newer than the state already applied.
    #[error("snapshot at {offered} is not newer than the applied state at {applied}")]
    Stale {
        /// The last applied entry.
        applied: LogId,
        /// What the refused snapshot covers.
        offered: LogId,
    },
    /// The snapshot's bytes are not a valid state.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// Reading or writing the snapshot's data in storage failed.
    #[error("snapshot storage failed: {0}")]
    Storage(#[from] StorageError),
    /// Any other failure.
    #[error("state machine failed: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StateMachineError {
    /// The check every `restore` makes first: a snapshot covering `offered` is taken
    /// only if it is newer than the state, which has applied up to `applied`; otherwise
    /// [`Stale`](StateMachineError::Stale), since a state machine never moves backwards.
    ///
    /// ```
    /// use raft_traits::{LogId, LogIndex, StateMachineError, Term};
    ///
    /// let at = |index| LogId::new(Term(1), LogIndex(index));
    /// assert!(StateMachineError::unless_newer(at(5), at(6)).is_ok());
    /// assert!(matches!(
    ///     StateMachineError::unless_newer(at(5), at(5)),
    ///     Err(StateMachineError::Stale { .. })
    /// ));
    /// ```
    pub fn unless_newer(applied: LogId, offered: LogId) -> Result<(), StateMachineError> {
        if offered.index <= applied.index {
            return Err(StateMachineError::Stale { applied, offered });
        }
        Ok(())
    }
}
