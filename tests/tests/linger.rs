//! `Config::propose_linger`: a leader waits for more proposals only while its batch has
//! fewer than the one before it, so several clients writing in a closed loop gather
//! again into one batch, and a lone client is never held.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::time::Duration;

use futures::future::join;
use raft_impl::Config;
use raft_mem::KvCommand;
use raft_tests::sim::{KvRaft, SimRuntime, Simulation, kv_cluster_with, leader_of};
use raft_traits::Runtime;

fn put(key: u32) -> KvCommand {
    KvCommand::Put {
        key: format!("k{key}").into(),
        value: "v".into(),
    }
}

/// How long (in virtual time) `leader` takes to commit and apply `keys` proposed at once.
async fn propose_at_once(runtime: &SimRuntime, leader: &KvRaft, keys: &[u32]) -> Duration {
    let started = runtime.now();
    match keys {
        [key] => {
            leader.propose(put(*key)).await.unwrap();
        }
        [a, b] => {
            let (a, b) = join(leader.propose(put(*a)), leader.propose(put(*b))).await;
            a.unwrap();
            b.unwrap();
        }
        _ => unreachable!("one or two keys"),
    }
    runtime.now() - started
}

/// How long `leader` takes to commit and apply `a`, and `b` proposed `after` it.
async fn propose_staggered(
    runtime: &SimRuntime,
    leader: &KvRaft,
    (a, b): (u32, u32),
    after: Duration,
) -> Duration {
    let started = runtime.now();
    let later = async {
        runtime.sleep(after).await;
        leader.propose(put(b)).await
    };
    let (a, b) = join(leader.propose(put(a)), later).await;
    a.unwrap();
    b.unwrap();
    runtime.now() - started
}

#[test]
fn a_leader_lingers_only_for_a_batch_smaller_than_the_one_before() {
    let simulation = Simulation::new(31);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let linger = Duration::from_millis(40);
        let config = Config::lab().with_propose_linger(linger);
        let nodes = kv_cluster_with(&runtime, 31, config).await;
        let leader = nodes[leader_of(&runtime, &nodes).await].clone();

        let lone = propose_at_once(&runtime, &leader, &[0]).await;
        assert!(lone < linger, "a lone client waited {lone:?}");
        // Two at once after one: the batch is not smaller than the one before.
        let two = propose_at_once(&runtime, &leader, &[1, 2]).await;
        assert!(two < linger, "two proposals after one waited {two:?}");
        // Two after two: the batch is complete as it comes, so no wait either.
        let two_again = propose_at_once(&runtime, &leader, &[3, 4]).await;
        assert!(two_again < linger, "two after two waited {two_again:?}");
        // Two after two, the second 5 ms later: the leader waits for it, and no longer.
        let gap = Duration::from_millis(5);
        let staggered = propose_staggered(&runtime, &leader, (7, 8), gap).await;
        assert!(
            staggered >= gap && staggered < linger,
            "two after two, 5 ms apart, took {staggered:?}"
        );
        // One after two: the leader waits for a second, which never comes.
        let held = propose_at_once(&runtime, &leader, &[5]).await;
        assert!(held >= linger, "one after two was proposed after {held:?}");
        // One after one: no wait again.
        let alone_again = propose_at_once(&runtime, &leader, &[6]).await;
        assert!(alone_again < linger, "one after one waited {alone_again:?}");

        for node in &nodes {
            node.shutdown().await;
        }
    });
}
