//! Part 3D: log compaction (LAB-SUITE.md §4.4). Every cluster has 3 servers running the
//! snapshot applier, which hands Raft a snapshot after each index `k` with
//! `(k + 1) % 10 == 0`.

use raft_traits::Runtime;

use crate::lab::{self, Cluster, MAX_LOG_SIZE, SNAPSHOT_INTERVAL, World};

use super::{RELIABLE, UNRELIABLE, snapshots};

/// What [`snapcommon`] does to its victim each iteration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// Nothing: the followers keep up and no InstallSnapshot is needed.
    Spared,
    /// Disconnect it, then connect it again.
    Disconnected,
    /// Crash it, then restart and connect it.
    Crashed,
}

/// The lab's `snapcommon`: 30 iterations of taking a victim away, submitting 5–14
/// commands (enough for a snapshot), catching up, checking that the log was really
/// trimmed, and bringing the victim back.
async fn snapcommon<Rt: Runtime>(t: Cluster<Rt>, name: &str, victim_fate: Victim) {
    let n = t.n();
    t.begin(name);

    t.one(t.rand_int(), n, true).await;
    let mut leader1 = t.check_one_leader().await;

    for i in 0..30 {
        let mut victim = (leader1 + 1) % n;
        let mut sender = leader1;
        if i % 3 == 1 {
            sender = (leader1 + 1) % n;
            victim = leader1;
        }

        match victim_fate {
            Victim::Disconnected => {
                t.disconnect(victim);
                t.one(t.rand_int(), n - 1, true).await;
            }
            Victim::Crashed => {
                t.crash(victim).await;
                t.one(t.rand_int(), n - 1, true).await;
            }
            Victim::Spared => {}
        }

        // Perhaps send enough to get a snapshot.
        let nn = SNAPSHOT_INTERVAL / 2 + t.rand_below(SNAPSHOT_INTERVAL);
        for _ in 0..nn {
            t.start(sender, t.rand_int()).await;
        }

        // Let the applier threads catch up with the Start()s.
        if victim_fate == Victim::Spared {
            // Make sure all followers have caught up, so that an InstallSnapshot RPC isn't
            // required for the basic scenario.
            t.one(t.rand_int(), n, true).await;
        } else {
            t.one(t.rand_int(), n - 1, true).await;
        }

        let log_size = t.log_size();
        assert!(
            log_size < MAX_LOG_SIZE,
            "Log size too large: {log_size} bytes (limit {MAX_LOG_SIZE})"
        );

        match victim_fate {
            Victim::Disconnected => {
                // Reconnect a follower, who may be behind and need to receive a snapshot
                // to catch up.
                t.connect(victim);
                t.one(t.rand_int(), n, true).await;
                leader1 = t.check_one_leader().await;
            }
            Victim::Crashed => {
                t.restart(victim).await;
                t.connect(victim);
                t.one(t.rand_int(), n, true).await;
                leader1 = t.check_one_leader().await;
            }
            Victim::Spared => {}
        }
    }

    t.end();
}

/// The lab scenario `snapshot_basic_3d`: see LAB-SUITE.md §4.
pub fn snapshot_basic_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, RELIABLE), |t| {
        snapcommon(t, "Test (3D): snapshots basic", Victim::Spared)
    });
}

/// The lab scenario `snapshot_install_3d`: see LAB-SUITE.md §4.
pub fn snapshot_install_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, RELIABLE), |t| {
        snapcommon(
            t,
            "Test (3D): install snapshots (disconnect)",
            Victim::Disconnected,
        )
    });
}

/// The lab scenario `snapshot_install_unreliable_3d`: see LAB-SUITE.md §4.
pub fn snapshot_install_unreliable_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, UNRELIABLE), |t| {
        snapcommon(
            t,
            "Test (3D): install snapshots (disconnect)",
            Victim::Disconnected,
        )
    });
}

/// The lab scenario `snapshot_install_crash_3d`: see LAB-SUITE.md §4.
pub fn snapshot_install_crash_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, RELIABLE), |t| {
        snapcommon(t, "Test (3D): install snapshots (crash)", Victim::Crashed)
    });
}

/// The lab scenario `snapshot_install_uncrash_3d`: see LAB-SUITE.md §4.
pub fn snapshot_install_uncrash_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, UNRELIABLE), |t| {
        snapcommon(t, "Test (3D): install snapshots (crash)", Victim::Crashed)
    });
}

/// Crash and restart all servers: the snapshot and the log tail must both survive.
/// Unreliable, as in 2025.
pub fn snapshot_all_crash_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, UNRELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3D): crash and restart all servers");

        t.one(t.rand_int(), n, true).await;

        for _ in 0..5 {
            // Perhaps enough to get a snapshot.
            let nn = SNAPSHOT_INTERVAL / 2 + t.rand_below(SNAPSHOT_INTERVAL);
            for _ in 0..nn {
                t.one(t.rand_int(), n, true).await;
            }

            let index1 = t.one(t.rand_int(), n, true).await;

            // Crash all.
            t.crash_all().await;
            t.restart_all().await;

            let index2 = t.one(t.rand_int(), n, true).await;
            assert!(index2 > index1, "index decreased from {index1} to {index2}");
        }

        t.end();
    });
}

/// A Raft that forgets to load its snapshot at startup and then persists its state
/// without it (or with a stale one) loses the snapshot. Unreliable, as in 2025.
pub fn snapshot_init_3d<W: World>() {
    lab::run::<W, _, _>(snapshots(3, UNRELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3D): snapshot initialization after crash");

        t.one(t.rand_int(), n, true).await;

        // Enough ops to make a snapshot.
        for _ in 0..SNAPSHOT_INTERVAL + 1 {
            t.one(t.rand_int(), n, true).await;
        }

        t.crash_all().await;
        t.restart_all().await;

        // A single op, to get something to be written back to persistent storage.
        t.one(t.rand_int(), n, true).await;

        t.crash_all().await;
        t.restart_all().await;

        // Do another op to trigger a potential bug.
        t.one(t.rand_int(), n, true).await;

        t.end();
    });
}
