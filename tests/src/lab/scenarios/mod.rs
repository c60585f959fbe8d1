//! The 28 scenarios of the classic Raft lab (LAB-SUITE.md §4), each a function generic
//! over the [`World`](super::World) it runs in, so that one definition serves the
//! real-time suite (`tests/lab.rs`) and the virtual-time suite (`tests/sim.rs`).
//!
//! [`lab_scenarios!`](crate::lab_scenarios) lists them all, for test targets to expand
//! into one test each.

pub mod membership;
pub mod part_3a;
pub mod part_3b;
pub mod part_3c;
pub mod part_3d;
pub mod robustness;

use super::ClusterSpec;

/// A cluster of `n` servers with the plain applier.
const fn plain(n: usize, reliable: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable,
        snapshot: false,
        robust: true,
        members: None,
    }
}

/// A cluster of `n` servers with the snapshot applier.
const fn snapshots(n: usize, reliable: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable,
        snapshot: true,
        robust: true,
        members: None,
    }
}

/// Reliable, as the catalogue's default.
const RELIABLE: bool = true;
/// Unreliable: delays and losses.
const UNRELIABLE: bool = false;

/// Expands `$make!(part, scenario)` once for each of the 28 scenarios, in the
/// catalogue's order; the scenario is `raft_tests::lab::scenarios::$part::$scenario`.
///
/// ```ignore
/// macro_rules! real_time {
///     ($part:ident, $name:ident) => {
///         #[test]
///         fn $name() {
///             raft_tests::lab::scenarios::$part::$name::<raft_tests::lab::RealTime>();
///         }
///     };
/// }
/// raft_tests::lab_scenarios!(real_time);
/// ```
#[macro_export]
macro_rules! lab_scenarios {
    ($make:ident) => {
        $make!(part_3a, initial_election_3a);
        $make!(part_3a, re_election_3a);
        $make!(part_3a, many_elections_3a);
        $make!(part_3b, basic_agree_3b);
        $make!(part_3b, rpc_bytes_3b);
        $make!(part_3b, follower_failure_3b);
        $make!(part_3b, leader_failure_3b);
        $make!(part_3b, fail_agree_3b);
        $make!(part_3b, fail_no_agree_3b);
        $make!(part_3b, concurrent_starts_3b);
        $make!(part_3b, rejoin_3b);
        $make!(part_3b, backup_3b);
        $make!(part_3b, count_3b);
        $make!(part_3c, persist1_3c);
        $make!(part_3c, persist2_3c);
        $make!(part_3c, persist3_3c);
        $make!(part_3c, figure8_3c);
        $make!(part_3c, unreliable_agree_3c);
        $make!(part_3c, figure8_unreliable_3c);
        $make!(part_3c, reliable_churn_3c);
        $make!(part_3c, unreliable_churn_3c);
        $make!(part_3d, snapshot_basic_3d);
        $make!(part_3d, snapshot_install_3d);
        $make!(part_3d, snapshot_install_unreliable_3d);
        $make!(part_3d, snapshot_install_crash_3d);
        $make!(part_3d, snapshot_install_uncrash_3d);
        $make!(part_3d, snapshot_all_crash_3d);
        $make!(part_3d, snapshot_init_3d);
    };
}
