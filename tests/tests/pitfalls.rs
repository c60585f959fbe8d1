//! Regression tests for the pitfalls recorded while building the lab's part 3D
//! (`shared/seeds/README.md`, "Pitfalls recorded in 3D"), through the real driver on the
//! deterministic runtime. The pitfalls that live entirely in the core have unit tests
//! there, named here:
//!
//! 1. commit only what the request vouched for:
//!    `raft_impl` core test `follower_commits_only_what_the_request_vouched_for`;
//! 3. a snapshot never moves the state machine back:
//!    `an_older_snapshot_never_moves_the_state_machine_back` (and the explorer's check
//!    that no command is ever handed to a state machine twice or out of order);
//! 8. the next command after a snapshot is its last included index + 1:
//!    `restart_from_a_snapshot_delivers_it_once_and_resumes_after_it`, and below.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: it panics to fail

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{LocalNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, LogId, LogIndex, NodeId, Runtime, Snapshot, SnapshotMeta, StateMachine,
    StateMachineError, Storage, timeout,
};

/// What a [`Recorder`] saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    applied: Vec<u64>,
    restored: Vec<Snapshot>,
    /// The bytes handed to Raft with each snapshot, by index.
    handed: Vec<(LogIndex, Bytes)>,
}

/// Applies `u64` commands and hands Raft a snapshot of everything every `every` entries,
/// synchronously from inside `apply` (as the lab's snapshot applier does).
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    every: u64,
    last: LogId,
    raft: Arc<OnceLock<Raft<u64, ()>>>,
}

impl Recorder {
    fn state(&self) -> Bytes {
        let seen = self.seen.lock().unwrap();
        let mut data = Vec::new();
        for value in &seen.applied {
            data.extend_from_slice(&value.to_le_bytes());
        }
        Bytes::from(data)
    }
}

impl StateMachine<u64> for Recorder {
    type Response = ();

    async fn apply(&mut self, log_id: LogId, command: u64) {
        self.seen.lock().unwrap().applied.push(command);
        self.last = log_id;
        if log_id.index.0.is_multiple_of(self.every)
            && let Some(raft) = self.raft.get()
        {
            let data = self.state();
            self.seen
                .lock()
                .unwrap()
                .handed
                .push((log_id.index, data.clone()));
            raft.snapshot(log_id.index, data).unwrap();
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last,
                membership: Default::default(),
            },
            data: self.state(),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let mut seen = self.seen.lock().unwrap();
        seen.applied = snapshot
            .data
            .chunks(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap()))
            .collect();
        seen.restored.push(snapshot.clone());
        self.last = snapshot.meta.last_included;
        Ok(())
    }
}

/// A single-node cluster on `runtime` over `storage`, with a fresh recorder.
async fn start(
    runtime: &SimRuntime,
    storage: MemStorage<u64>,
) -> (Raft<u64, ()>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let handle = Arc::new(OnceLock::new());
    let machine = Recorder {
        seen: Arc::clone(&seen),
        every: 10,
        last: LogId::default(),
        raft: Arc::clone(&handle),
    };
    let parts = Parts {
        runtime: runtime.clone(),
        storage,
        state_machine: machine,
        transport: LocalNetwork::new().transport(),
    };
    let config = Config::lab().with_seed(Some(7));
    let raft = Raft::spawn(NodeId(1), [NodeId(1)], config, parts)
        .await
        .unwrap();
    let _ = handle.set(raft.clone());
    // A lone node elects itself once its election timer fires.
    while !raft.state().1 {
        runtime.sleep(Duration::from_millis(10)).await;
    }
    (raft, seen)
}

/// Proposes `values` one after the other, each within a generous virtual deadline.
async fn propose_all(
    runtime: &SimRuntime,
    raft: &Raft<u64, ()>,
    values: impl IntoIterator<Item = u64>,
) {
    for value in values {
        timeout(runtime, Duration::from_secs(5), raft.propose(value))
            .await
            .expect("no deadlock: every proposal completes")
            .unwrap();
    }
}

#[test]
fn pitfall_2_snapshot_from_inside_apply_does_not_deadlock() {
    // The state machine calls `Raft::snapshot` from inside `apply` on every tenth entry;
    // were Raft to hold a lock across apply, or wait for the event loop from there, this
    // would hang.
    let simulation = Simulation::new(2);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let storage = MemStorage::new();
        let (raft, _) = start(&runtime, storage.clone()).await;
        propose_all(&runtime, &raft, 1..=45).await;
        let status = raft.status();
        assert_eq!(status.last_applied, LogIndex(45));
        assert_eq!(
            status.snapshot.index,
            LogIndex(40),
            "the log was compacted from apply"
        );
        raft.shutdown().await;
    });
}

#[test]
fn pitfall_4_and_7_state_and_snapshot_are_saved_together_with_the_last_included_term() {
    let simulation = Simulation::new(4);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let storage = MemStorage::new();
        let (raft, seen) = start(&runtime, storage.clone()).await;
        propose_all(&runtime, &raft, 1..=25).await;
        raft.shutdown().await;
        // What a restart would read: the snapshot, its last included id with the term of
        // that entry, and only the log after it.
        let mut copy = storage.copy();
        let recovered = copy.recover().await.unwrap();
        let meta = recovered
            .snapshot
            .expect("the snapshot is part of the saved state");
        assert_eq!(meta.last_included, LogId::new(raft.state().0, LogIndex(20)));
        let indices: Vec<u64> = recovered.entries.iter().map(|e| e.index.0).collect();
        assert_eq!(indices, (21..=25).collect::<Vec<_>>());
        let stored = copy.snapshot().await.unwrap().unwrap();
        let handed = seen.lock().unwrap().handed.clone();
        assert_eq!(
            Some(&(LogIndex(20), stored.data.clone())),
            handed.last(),
            "pitfall 5: the same bytes"
        );
        assert!(
            storage.raft_state_size() < 2000,
            "the log really was trimmed"
        );
    });
}

#[test]
fn pitfall_5_6_8_a_restart_delivers_the_saved_snapshot_once_and_resumes_after_it() {
    let simulation = Simulation::new(6);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let storage = MemStorage::new();
        let (raft, _) = start(&runtime, storage.clone()).await;
        propose_all(&runtime, &raft, 1..=25).await;
        raft.shutdown().await;

        let (restarted, seen) = start(&runtime, storage.copy()).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(
                seen.restored.len(),
                1,
                "the saved snapshot reaches the service once"
            );
            assert_eq!(seen.restored[0].meta.last_included.index, LogIndex(20));
            assert_eq!(
                seen.applied,
                (1..=20).collect::<Vec<_>>(),
                "pitfall 5: the service's own bytes"
            );
        }
        // A lone node commits its log again once it leads; the next command the service
        // sees is the one right after the snapshot.
        propose_all(&runtime, &restarted, [26]).await;
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.restored.len(), 1, "and never again");
            assert_eq!(
                seen.applied,
                (1..=26).collect::<Vec<_>>(),
                "21..=25 re-applied in order after 20"
            );
        }
        restarted.shutdown().await;
    });
}
