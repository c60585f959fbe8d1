//! Stopping nodes and restarting them from their files, on the same ports.

use raft_traits::Term;

use crate::support::{Options, TestCluster, run};

fn durable() -> Options {
    Options {
        durable: true,
        // Small enough that the restarted nodes recover from a snapshot and a log.
        snapshot_entries: 40,
        ..Options::default()
    }
}

#[test]
fn a_stopped_follower_restarts_from_its_files_and_catches_up() {
    run(async {
        let mut cluster = TestCluster::start(durable()).await;
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("a", 0..30).await;
        let follower = cluster
            .nodes
            .keys()
            .copied()
            .find(|&id| id != leader.id)
            .unwrap();
        cluster.wait_caught_up(follower).await;

        cluster.stop(follower).await;
        // The majority goes on without it.
        cluster.put_range("b", 0..100).await;

        cluster.restart(follower).await;
        cluster.wait_caught_up(follower).await;
        cluster.check_local_range(follower, "a", 0..30).await;
        cluster.check_local_range(follower, "b", 0..100).await;

        // Its copy is real: with the first leader gone, it and the third node hold
        // everything.
        cluster.stop(leader.id).await;
        cluster.wait_for_leader(leader.term, &[]).await;
        cluster.check_range("a", 0..30).await;
        cluster.check_range("b", 0..100).await;
        cluster.put_range("c", 0..10).await;
        cluster.shutdown().await;
    });
}

#[test]
fn a_stopped_leader_is_replaced_and_catches_up_after_its_restart() {
    run(async {
        let mut cluster = TestCluster::start(durable()).await;
        let first = cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("a", 0..50).await;

        cluster.stop(first.id).await;
        let second = cluster.wait_for_leader(first.term, &[]).await;
        assert_ne!(second.id, first.id);
        cluster.put_range("b", 0..50).await;

        cluster.restart(first.id).await;
        let status = cluster.wait_caught_up(first.id).await;
        assert!(status.term >= second.term);
        cluster.check_local_range(first.id, "a", 0..50).await;
        cluster.check_local_range(first.id, "b", 0..50).await;
        cluster.check_range("a", 0..50).await;
        cluster.shutdown().await;
    });
}

#[test]
fn the_whole_cluster_restarts_from_its_files() {
    run(async {
        let mut cluster = TestCluster::start(durable()).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("a", 0..100).await;
        let ids: Vec<_> = cluster.nodes.keys().copied().collect();
        for &id in &ids {
            cluster.stop(id).await;
        }
        for &id in &ids {
            cluster.restart(id).await;
        }
        cluster.wait_for_leader(Term(0), &[]).await;
        cluster.check_range("a", 0..100).await;
        cluster.put_range("b", 0..10).await;
        cluster.shutdown().await;
    });
}
