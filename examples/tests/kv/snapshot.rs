//! InstallSnapshot over TCP, with a snapshot several times the maximum frame size.

use raft_examples::NodeConfig;
use raft_net_smol::TcpConfig;
use raft_traits::Term;

use crate::support::{Options, TestCluster, run, wait_until};

/// Frames of at most 4 KiB.
const MAX_FRAME: u32 = 4096;

#[test]
fn a_lagging_follower_receives_a_snapshot_larger_than_a_frame() {
    run(async {
        let options = Options {
            snapshot_entries: 20,
            tcp: TcpConfig {
                max_frame_size: MAX_FRAME,
                chunk_size: MAX_FRAME,
                ..NodeConfig::default_tcp()
            },
            // A trailing window of 10 entries, far shorter than the follower's lag.
            raft: NodeConfig::default_raft().with_snapshot_trailing_entries(10),
            ..Options::default()
        };
        let mut cluster = TestCluster::start(options).await;
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        let lagging = cluster
            .nodes
            .keys()
            .copied()
            .find(|&id| id != leader.id)
            .unwrap();
        cluster.stop(lagging).await;

        // 200 values of 200 bytes: a state of about 40 KiB, ten frames' worth. The
        // leader snapshots every 20 commands and drops the log before them but the
        // last 10 entries.
        let value = "x".repeat(200);
        for i in 0..200 {
            cluster
                .client
                .put(format!("key{i:03}"), format!("{i}:{value}"))
                .await
                .unwrap();
        }
        let leader_status = cluster.status(leader.id);
        assert!(
            leader_status.snapshot.index.0 > 1,
            "the leader compacted its log: {leader_status:?}"
        );

        cluster.restart(lagging).await;
        let restored_at_start = cluster.node(lagging).snapshot_stats().restored;
        let at_start = cluster.status(lagging);
        // It lacks entries that the leader no longer has: only a snapshot can help.
        assert!(
            at_start.last_log.index < leader_status.snapshot.index,
            "{at_start:?}"
        );

        cluster.wait_caught_up(lagging).await;
        let stats = wait_until("the snapshot to be installed", || {
            let stats = cluster.node(lagging).snapshot_stats();
            (stats.restored > restored_at_start).then_some(stats)
        })
        .await;
        assert!(
            stats.last_restored_size > u64::from(MAX_FRAME) * 5,
            "the installed snapshot has {} bytes",
            stats.last_restored_size
        );
        let state = cluster.node(lagging).local().state().await;
        for i in 0..200 {
            assert_eq!(
                state.get(&format!("key{i:03}")),
                Some(format!("{i}:{value}").as_str())
            );
        }
        cluster.shutdown().await;
    });
}

/// `snapshot_entries` (raft-kv's `--snapshot-entries`) is Raft's snapshot policy: every
/// node compacts its log by itself, and its log stays bounded by the setting plus the
/// trailing window.
#[test]
fn every_node_snapshots_by_itself_every_snapshot_entries() {
    const EVERY: u64 = 100;
    const WINDOW: u64 = 10;
    run(async {
        let options = Options {
            snapshot_entries: EVERY,
            raft: NodeConfig::default_raft().with_snapshot_trailing_entries(WINDOW),
            ..Options::default()
        };
        let cluster = TestCluster::start(options).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        for i in 0..350 {
            cluster
                .client
                .put(format!("key{i:03}"), format!("value {i}"))
                .await
                .unwrap();
        }
        for &id in cluster.nodes.keys() {
            let status = wait_until(&format!("{id} to compact its log"), || {
                let status = cluster.status(id);
                (status.snapshot.index.0 >= 2 * EVERY
                    && status.counters.snapshots_taken >= 2
                    && status.log_entries <= EVERY + WINDOW)
                    .then_some(status)
            })
            .await;
            // Applied commands past the snapshot are still in the log.
            assert!(status.last_applied >= status.snapshot.index, "{status:?}");
            let stats = cluster.node(id).snapshot_stats();
            assert!(stats.taken >= 2, "{id} encoded {stats:?}");
            assert!(stats.last_taken_size > 0, "{id}: {stats:?}");
        }
        cluster.shutdown().await;
    });
}
