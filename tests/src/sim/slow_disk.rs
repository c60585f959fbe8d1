//! A disk that takes time: each write waits a drawn latency on the simulator's clock
//! before it reaches the store, so that writes run while the node's event loop goes on
//! (and a node can stop with writes still queued). With an in-memory store alone every
//! write ends at once and that path is never taken.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_traits::{
    Bytes, Command, Entry, HardState, LogIndex, PendingSnapshot, RecoveredState, Runtime, Snapshot,
    SnapshotDescriptor, SnapshotReader, Storage, StorageError, async_trait,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Wraps a store; each write first sleeps a latency drawn from `seed`.
pub(crate) struct SlowDisk<S, Rt> {
    inner: S,
    runtime: Rt,
    rng: Arc<Mutex<StdRng>>,
    /// The longest latency, in microseconds; 0 makes the disk instant.
    max_micros: u64,
}

impl<S, Rt: Runtime> SlowDisk<S, Rt> {
    pub(crate) fn new(inner: S, runtime: Rt, seed: u64, max_micros: u64) -> Self {
        SlowDisk {
            inner,
            runtime,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            max_micros,
        }
    }

    /// The wait before the next write.
    fn pause(&self) -> futures::future::BoxFuture<'static, ()> {
        if self.max_micros == 0 {
            return Box::pin(std::future::ready(()));
        }
        let micros = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            // Half the writes are quick (a page-cache hit, a write merged with another),
            // the others take up to the maximum.
            if rng.random_bool(0.5) {
                rng.random_range(0..=self.max_micros / 10)
            } else {
                rng.random_range(0..=self.max_micros)
            }
        };
        self.runtime.sleep(Duration::from_micros(micros))
    }
}

#[async_trait]
impl<S: Storage<C>, Rt: Runtime, C: Command> Storage<C> for SlowDisk<S, Rt> {
    async fn recover(&mut self) -> Result<RecoveredState<C>, StorageError> {
        self.inner.recover().await
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.save_hard_state(hard_state).await
    }

    async fn append(&mut self, entries: &[Entry<C>]) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.append(entries).await
    }

    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.truncate_from(index).await
    }

    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        self.inner.entries(from, to).await
    }

    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.save_snapshot(snapshot).await
    }

    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.purge_to(index).await
    }

    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.begin_snapshot(descriptor).await
    }

    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.write_snapshot_chunk(offset, data).await
    }

    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        self.pause().await;
        self.inner.finish_snapshot().await
    }

    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.pause().await;
        self.inner.abort_snapshot().await
    }

    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        self.inner.pending_snapshot().await
    }

    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
        self.inner.open_snapshot().await
    }

    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.snapshot().await
    }
}
