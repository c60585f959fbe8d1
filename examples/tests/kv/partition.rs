//! Faults between nodes, through a [`FaultProxy`](raft_examples::FaultProxy) on every
//! link.

use std::time::Duration;

use raft_examples::{LinkMode, Role};
use raft_traits::Term;

use crate::support::{Options, TestCluster, run, wait_until};

fn with_proxies() -> Options {
    Options {
        proxies: true,
        snapshot_entries: 50,
        ..Options::default()
    }
}

#[test]
fn an_isolated_leader_is_replaced_and_catches_up_after_the_partition_heals() {
    run(async {
        let cluster = TestCluster::start(with_proxies()).await;
        let old = cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("before", 0..20).await;

        // Cut every link to and from the leader. Clients still reach it directly, but it
        // can commit nothing.
        cluster.set_links_of(old.id, LinkMode::Cut);
        let new = cluster.wait_for_leader(old.term, &[old.id]).await;
        assert_ne!(new.id, old.id);

        // Writes go on on the majority side; the client finds the new leader by itself.
        cluster.put_range("during", 0..40).await;
        assert_ne!(cluster.client.leader(), Some(old.id));
        let isolated = cluster.node(old.id).local().state().await;
        assert_eq!(
            isolated.get("during0"),
            None,
            "the isolated leader applied a write"
        );

        // Heal: the old leader learns of the new term, steps down and catches up.
        cluster.set_all_links(LinkMode::Pass);
        let status = wait_until("the old leader to follow and catch up", || {
            let leader = cluster.leader()?;
            let status = cluster.status(old.id);
            (status.role == Role::Follower
                && status.leader == Some(leader.id)
                && status.last_applied >= leader.commit_index)
                .then_some(status)
        })
        .await;
        assert!(status.term >= new.term);
        cluster.check_local_range(old.id, "before", 0..20).await;
        cluster.check_local_range(old.id, "during", 0..40).await;
        cluster.put_range("after", 0..10).await;
        cluster.check_range("during", 0..40).await;
        cluster.shutdown().await;
    });
}

#[test]
fn writes_commit_through_slow_links_and_a_follower_recovers_from_a_lossy_one() {
    run(async {
        let cluster = TestCluster::start(with_proxies()).await;
        let leader = cluster.wait_for_leader(Term(0), &[]).await;

        // Every byte between nodes is 20 ms late: slower, still correct.
        cluster.set_all_links(LinkMode::Delay(Duration::from_millis(20)));
        cluster.put_range("slow", 0..20).await;
        cluster.set_all_links(LinkMode::Pass);

        // One follower's links lose everything for a while; the other two go on.
        let follower = cluster
            .nodes
            .keys()
            .copied()
            .find(|&id| id != leader.id)
            .unwrap();
        cluster.set_links_of(follower, LinkMode::Drop);
        cluster.put_range("lossy", 0..30).await;
        let dropped: u64 = cluster.proxies.values().map(|p| p.bytes_dropped()).sum();
        assert!(dropped > 0, "nothing went through the lossy links");
        assert_eq!(cluster.node(follower).local().get("lossy29").await, None);

        // Back to normal: the streams lost bytes mid-frame, so the nodes see garbage,
        // close those connections and open new ones; the follower catches up.
        cluster.set_all_links(LinkMode::Pass);
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        wait_until("the follower to catch up", || {
            let status = cluster.status(follower);
            (status.last_applied >= leader.commit_index).then_some(())
        })
        .await;
        cluster.check_local_range(follower, "slow", 0..20).await;
        cluster.check_local_range(follower, "lossy", 0..30).await;
        cluster.put_range("after", 0..10).await;
        cluster.shutdown().await;
    });
}
