//! What a node lets an application observe for metrics (issue 13, item 2): running
//! counters in `Status`, and `watch_status`, which pushes the status on change.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::time::Duration;

use raft_impl::{Config, Parts, Raft, Status, StatusWatch};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{Membership, NodeId, StateMachine, timeout};

type KvRaft = Raft<KvCommand, KvResponse>;

/// Waits (boundedly, in virtual time) for a pushed status that satisfies `done`.
async fn until(
    runtime: &SimRuntime,
    watch: &mut StatusWatch,
    done: impl Fn(&Status) -> bool,
) -> Status {
    let wait = async {
        loop {
            let status = watch.changed().await.expect("the node is running");
            if done(&status) {
                return status;
            }
        }
    };
    timeout(runtime, Duration::from_secs(10), wait)
        .await
        .expect("the status never got there")
}

#[test]
fn counters_count_and_the_status_watch_pushes_changes_until_the_node_stops() {
    let simulation = Simulation::new(11);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let parts = Parts {
            runtime: runtime.clone(),
            storage: MemStorage::new(),
            state_machine: KvStateMachine::new(),
            transport: LocalNetwork::new().transport(),
        };
        let alone = Membership::from_voters([NodeId(1)]);
        let raft: KvRaft = Raft::spawn_in(NodeId(1), alone, Config::lab(), parts)
            .await
            .unwrap();
        let mut watch = raft.watch_status();

        let leading = until(&runtime, &mut watch, |s| s.leader == Some(NodeId(1))).await;
        assert_eq!(leading.counters.elections_started, 1);
        assert_eq!(leading.counters.elections_won, 1);
        assert_eq!(leading.counters.leader_changes, 1);

        for k in 0..3 {
            let put = KvCommand::Put {
                key: format!("k{k}").into(),
                value: "v".into(),
            };
            raft.propose(put).await.unwrap();
        }
        let proposed = until(&runtime, &mut watch, |s| s.counters.proposals >= 3).await;
        assert_eq!(proposed.counters.proposals, 3);

        let applied = raft.status().last_applied;
        let mut copy = KvStateMachine::new();
        let data = copy.snapshot().await.unwrap().data;
        raft.snapshot(applied, data).unwrap();
        let compacted = until(&runtime, &mut watch, |s| s.counters.snapshots_taken == 1).await;
        assert_eq!(compacted.snapshot.index, applied);

        raft.shutdown().await;
        assert!(
            watch.changed().await.is_none(),
            "the watch outlived the node"
        );
    });
}
