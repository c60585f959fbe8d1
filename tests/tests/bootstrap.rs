//! Bootstrapping (issue 10, item 5): a cluster starts from its initial members exactly
//! once. The first start on a blank store makes the bootstrap configuration durable, so
//! a restart needs no argument, and a restart whose argument contradicts what storage
//! holds is a typed error rather than a silently different cluster.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::time::Duration;

use raft_impl::{BootError, Config, Parts, Raft, StartError};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{Membership, NodeId, Runtime, Storage, timeout};

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

#[test]
fn the_first_start_stores_the_bootstrap_configuration_and_a_restart_needs_no_argument() {
    let simulation = Simulation::new(1);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let storage = MemStorage::new();
        let alone = Membership::from_voters([NodeId(1)]);
        let raft = spawn(&runtime, storage.clone(), alone.clone())
            .await
            .unwrap();
        raft.shutdown().await;
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
        let storage = MemStorage::new();
        let alone = Membership::from_voters([NodeId(1)]);
        let raft = spawn(&runtime, storage.clone(), alone.clone())
            .await
            .unwrap();
        raft.shutdown().await;

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
