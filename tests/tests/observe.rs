//! What a node lets an application observe for metrics (issue 13, item 2): running
//! counters in `Status`, and `watch_status`, which pushes the status on change.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::time::Duration;

use raft_impl::{Config, Parts, Raft, Status, StatusWatch};
use raft_mem::{KvCommand, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{KvRaft, SimRuntime, Simulation, kv_cluster, leader_of};
use raft_traits::{Membership, NodeId, StateMachine, timeout};

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

/// A leader's status lists each follower's progress, and only its current followers: one
/// removed from the configuration leaves the list.
#[test]
fn a_leaders_status_lists_its_current_followers() {
    let simulation = Simulation::new(12);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let nodes = kv_cluster(&runtime, 0).await;
        let leader = nodes[leader_of(&runtime, &nodes).await].clone();
        let me = leader.status().id;
        let put = KvCommand::Put {
            key: "k".into(),
            value: "v".into(),
        };
        leader.propose(put).await.unwrap();
        let mut watch = leader.watch_status();
        let last = leader.status().last_log.index;
        let all = until(&runtime, &mut watch, |s| {
            s.followers.len() == 2 && s.followers.values().all(|f| f.match_index == last)
        })
        .await;
        let others: Vec<NodeId> = [NodeId(1), NodeId(2), NodeId(3)]
            .into_iter()
            .filter(|&id| id != me)
            .collect();
        assert_eq!(all.followers.keys().copied().collect::<Vec<_>>(), others);

        leader.remove_node(others[0]).await.unwrap();
        let one = until(&runtime, &mut watch, |s| s.followers.len() == 1).await;
        assert_eq!(
            one.followers.keys().copied().collect::<Vec<_>>(),
            [others[1]]
        );
        for node in &nodes {
            node.shutdown().await;
        }
    });
}
