//! A leader that shuts down handing over (issue 11, item 3): `shutdown_handing_over`
//! transfers leadership to the most up-to-date voter before stopping, so the cluster has
//! a new leader well within an election timeout; a plain `shutdown` leaves the followers
//! to wait one out.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{KvRaft, Simulation, kv_cluster, leader_of};
use raft_traits::{NodeId, Runtime, timeout};

/// How long the cluster goes without a leader after its leader stops, handing over or
/// not.
fn leaderless_after_stop(hand_over: bool) -> Duration {
    let simulation = Simulation::new(5);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let nodes = kv_cluster(&runtime, 40).await;
        let old = leader_of(&runtime, &nodes).await;
        for k in 0..10 {
            let put = KvCommand::Put {
                key: format!("k{k}").into(),
                value: "v".into(),
            };
            nodes[old].propose(put).await.unwrap();
        }
        let stopped_at = runtime.now();
        if hand_over {
            nodes[old].shutdown_handing_over().await;
        } else {
            nodes[old].shutdown().await;
        }
        let new = leader_of(&runtime, &nodes).await;
        let leaderless = runtime.now() - stopped_at;
        assert_ne!(new, old);
        // The new leader has every write.
        let get = KvCommand::Get { key: "k9".into() };
        assert_eq!(
            nodes[new].propose(get).await.unwrap(),
            KvResponse::Value(Some("v".into()))
        );
        for node in &nodes {
            node.shutdown().await;
        }
        leaderless
    })
}

#[test]
fn a_leader_shutting_down_hands_over_within_an_election_timeout() {
    let election_timeout = Config::lab().election_timeout_min;
    let handing_over = leaderless_after_stop(true);
    let plain = leaderless_after_stop(false);
    println!("leaderless after the leader stops: {handing_over:?} handing over, {plain:?} not");
    assert!(
        handing_over < election_timeout / 2,
        "a handover left the cluster leaderless for {handing_over:?}"
    );
    assert!(
        plain >= election_timeout,
        "without a handover a leader came in {plain:?}: the comparison shows nothing"
    );
}

/// `shutdown` is idempotent, also when the second call comes as the first returns: the
/// loop is then finishing, and a shutdown queued behind it used to wait for good (seen as
/// a lab cleanup stuck on "shutdown did not finish"). Real threads, many rounds: the
/// window is a few instructions wide.
#[test]
fn a_second_shutdown_as_the_first_returns_ends() {
    let runtime = raft_net_smol::SmolRuntime::with_threads(2);
    let rounds = runtime.block_on(async {
        for round in 0..300u64 {
            let parts = Parts {
                runtime: runtime.clone(),
                storage: MemStorage::new(),
                state_machine: KvStateMachine::new(),
                transport: LocalNetwork::new().transport(),
            };
            let config = Config::lab().with_seed(Some(round));
            let raft: KvRaft = Raft::spawn(NodeId(1), [NodeId(1)], config, parts)
                .await
                .unwrap();
            raft.shutdown().await;
            if timeout(&runtime, Duration::from_secs(10), raft.shutdown())
                .await
                .is_err()
            {
                return Err(round);
            }
        }
        Ok(())
    });
    runtime.stop();
    assert_eq!(rounds, Ok(()), "the second shutdown never ended");
}
