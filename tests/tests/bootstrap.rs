//! Starting a node.
//!
//! * Bootstrapping (issue 10, item 5): a cluster starts from its initial members exactly
//!   once. The first start on a blank store makes the bootstrap configuration durable, so
//!   a restart needs no argument, and a restart whose argument contradicts what storage
//!   holds is a typed error rather than a silently different cluster.
//! * Observable startup (issue 14, item 5): `spawn` returns once the stored snapshot is
//!   restored, so the state machine never lags `Status::last_applied`; and
//!   `Raft::snapshot` says when it ignores an index.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use raft_impl::{BootError, Config, Parts, Raft, SnapshotError, StartError};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    LogId, LogIndex, Membership, NodeId, Runtime, Snapshot, StateMachine, StateMachineError,
    Storage, timeout,
};

type KvRaft = Raft<KvCommand, KvResponse>;

async fn spawn(
    runtime: &SimRuntime,
    storage: MemStorage<KvCommand>,
    membership: Membership,
) -> Result<KvRaft, StartError> {
    let parts = Parts {
        runtime: runtime.clone(),
        storage,
        state_machine: KvStateMachine::new(),
        transport: LocalNetwork::new().transport(),
    };
    Raft::spawn_in(
        NodeId(1),
        membership,
        Config::lab().with_seed(Some(3)),
        parts,
    )
    .await
}

/// Waits (in virtual time, boundedly) for a lone node to elect itself.
async fn elects_itself(runtime: &SimRuntime, raft: &KvRaft) -> bool {
    let lead = async {
        while !raft.state().1 {
            runtime.sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(runtime, Duration::from_secs(10), lead)
        .await
        .is_ok()
}

/// A lone node's store after its first start and a shutdown, and its configuration.
async fn first_started_alone(runtime: &SimRuntime) -> (MemStorage<KvCommand>, Membership) {
    let storage = MemStorage::new();
    let alone = Membership::from_voters([NodeId(1)]);
    let raft = spawn(runtime, storage.clone(), alone.clone())
        .await
        .unwrap();
    raft.shutdown().await;
    (storage, alone)
}

#[test]
fn the_first_start_stores_the_bootstrap_configuration_and_a_restart_needs_no_argument() {
    let simulation = Simulation::new(1);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let (storage, alone) = first_started_alone(&runtime).await;
        let recovered = storage.copy().recover().await.unwrap();
        let record = recovered
            .snapshot
            .expect("the bootstrap configuration is stored");
        assert_eq!(record.membership, alone);
        assert_eq!(record.last_included.index.0, 0, "no log index is taken");

        // Restarted with no argument, it knows it is the only voter and elects itself.
        let raft = spawn(&runtime, storage.copy(), Membership::default())
            .await
            .unwrap();
        assert!(
            elects_itself(&runtime, &raft).await,
            "no configuration after restart"
        );
        assert_eq!(raft.status().membership, alone);
        raft.shutdown().await;
    });
}

#[test]
fn a_restart_with_another_clusters_members_is_a_typed_error() {
    let simulation = Simulation::new(2);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let (storage, alone) = first_started_alone(&runtime).await;

        let other = Membership::from_voters([NodeId(1), NodeId(7), NodeId(8)]);
        match spawn(&runtime, storage.copy(), other.clone()).await {
            Err(StartError::Boot(BootError::MembershipConflict { stored, given })) => {
                assert_eq!(*stored, alone);
                assert_eq!(*given, other);
            }
            Err(e) => panic!("expected a membership conflict, got {e}"),
            Ok(_) => panic!("expected a membership conflict, the node started"),
        }
        // The same bootstrap list again is what storage holds: accepted.
        let raft = spawn(&runtime, storage.copy(), alone).await.unwrap();
        assert!(elects_itself(&runtime, &raft).await);
        raft.shutdown().await;
    });
}

/// A key-value machine whose restore takes a while, and which records what it restored.
struct SlowRestore {
    kv: KvStateMachine,
    runtime: SimRuntime,
    restored: Arc<AtomicU64>,
}

impl StateMachine<KvCommand> for SlowRestore {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        self.kv.apply(log_id, command).await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.kv.snapshot().await
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.runtime.sleep(Duration::from_millis(200)).await;
        let index = snapshot.meta.last_included.index.0;
        self.kv.restore(snapshot).await?;
        self.restored.store(index, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn spawn_returns_once_the_stored_snapshot_is_restored_and_snapshot_says_what_it_ignored() {
    let simulation = Simulation::new(3);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let storage = MemStorage::new();
        let alone = Membership::from_voters([NodeId(1)]);
        let raft = spawn(&runtime, storage.clone(), alone).await.unwrap();
        assert!(elects_itself(&runtime, &raft).await);
        for k in 0..5 {
            let put = KvCommand::Put {
                key: format!("k{k}").into(),
                value: "v".into(),
            };
            raft.propose(put).await.unwrap();
        }
        let applied = raft.status().last_applied;
        // The state at `applied`, as a KV machine that applied the same commands has it.
        let mut copy = KvStateMachine::new();
        for k in 0..5u64 {
            let put = KvCommand::Put {
                key: format!("k{k}").into(),
                value: "v".into(),
            };
            // (The data does not depend on the indices.)
            copy.apply(LogId::new(raft.state().0, LogIndex(k + 2)), put)
                .await;
        }
        let data = copy.snapshot().await.unwrap().data;
        assert_eq!(
            raft.snapshot(applied.next(), data.clone()),
            Err(SnapshotError::NotApplied {
                index: applied.next(),
                applied,
            })
        );
        raft.snapshot(applied, data.clone()).unwrap();
        let compacted = async {
            while raft.status().snapshot.index < applied {
                runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&runtime, Duration::from_secs(5), compacted)
            .await
            .expect("the snapshot was taken");
        assert_eq!(
            raft.snapshot(applied, data),
            Err(SnapshotError::Stale {
                index: applied,
                current: applied,
            })
        );
        raft.shutdown().await;

        let restored = Arc::new(AtomicU64::new(0));
        let parts = Parts {
            runtime: runtime.clone(),
            storage: storage.copy(),
            state_machine: SlowRestore {
                kv: KvStateMachine::new(),
                runtime: runtime.clone(),
                restored: Arc::clone(&restored),
            },
            transport: LocalNetwork::new().transport(),
        };
        let raft = Raft::spawn_in(NodeId(1), Membership::default(), Config::lab(), parts)
            .await
            .unwrap();
        // No waiting: the restore happened before spawn returned.
        assert_eq!(restored.load(Ordering::SeqCst), applied.0);
        assert_eq!(raft.status().last_applied, applied);
        raft.shutdown().await;
    });
}
