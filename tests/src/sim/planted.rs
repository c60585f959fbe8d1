//! Known bugs, planted from outside the library so that a test can show its checks catch
//! them. Each is a fault of a part the library trusts (storage that lies about
//! durability) or of the application using it (a client that reads without the
//! barrier), never a switch inside the protocol's own code.

use std::sync::Arc;

use raft_traits::{
    Bytes, Command, Entry, HardState, LogIndex, PendingSnapshot, RecoveredState, Snapshot,
    SnapshotDescriptor, SnapshotReader, Storage, StorageError, async_trait,
};

/// A known way to break a Raft deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// Storage keeps the term but drops the vote, so after a restart a server can vote
    /// again in the same term and two leaders can be elected in one term.
    ForgetVoteOnRestart,
    /// Storage acknowledges an append before it is durable (it writes each batch only
    /// when the next operation comes), so a crash loses entries the server reported as
    /// stored and the leader may already have counted toward a commit.
    AckAppendBeforeWrite,
    /// The explorer's clients read a server's key-value state directly without calling
    /// `read_barrier` first, so a follower that lags, or a leader that was deposed,
    /// serves stale values. (The storage is not affected.)
    ReadWithoutBarrier,
    /// The explorer's clients obtain a read index but read the server's state without
    /// waiting until it has applied that index. (The storage is not affected.)
    ReadWithoutWaitingForApply,
}

/// A storage backend with `bug` planted in it, or none.
#[derive(Debug)]
pub(crate) struct Planted<S, C> {
    inner: S,
    bug: Option<PlantedBug>,
    /// Entries acknowledged but not yet written (with [`PlantedBug::AckAppendBeforeWrite`]).
    unwritten: Vec<Entry<C>>,
}

impl<S: Storage<C>, C: Command> Planted<S, C> {
    pub(crate) fn new(inner: S, bug: Option<PlantedBug>) -> Self {
        Planted {
            inner,
            bug,
            unwritten: Vec::new(),
        }
    }

    async fn write_behind(&mut self) -> Result<(), StorageError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.unwritten);
        self.inner.append(&entries).await
    }
}

#[async_trait]
impl<S: Storage<C>, C: Command> Storage<C> for Planted<S, C> {
    async fn recover(&mut self) -> Result<RecoveredState<C>, StorageError> {
        self.inner.recover().await
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.write_behind().await?;
        let stored = match self.bug {
            Some(PlantedBug::ForgetVoteOnRestart) => HardState {
                voted_for: None,
                ..hard_state
            },
            _ => hard_state,
        };
        self.inner.save_hard_state(stored).await
    }

    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError> {
        self.write_behind().await?;
        match self.bug {
            Some(PlantedBug::AckAppendBeforeWrite) => {
                self.unwritten = entries.to_vec();
                Ok(())
            }
            _ => self.inner.append(entries).await,
        }
    }

    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.truncate_from(index).await
    }

    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.write_behind().await?;
        self.inner.entries(from, to).await
    }

    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.save_snapshot(snapshot).await
    }

    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.purge_to(index).await
    }

    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.begin_snapshot(descriptor).await
    }
    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.write_snapshot_chunk(offset, data).await
    }
    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        self.write_behind().await?;
        self.inner.finish_snapshot().await
    }
    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.write_behind().await?;
        self.inner.abort_snapshot().await
    }
    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        self.write_behind().await?;
        self.inner.pending_snapshot().await
    }
    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
        self.write_behind().await?;
        self.inner.open_snapshot().await
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.write_behind().await?;
        self.inner.snapshot().await
    }
}
