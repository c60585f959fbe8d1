//! Deterministic simulation, in virtual time:
//!
//! * the 28 lab scenarios, on the same definitions as the real-time suite (`tests/lab.rs`);
//! * the random fault explorer over 240 fresh seeds per run, with every safety check, a
//!   linearizability check of the clients' history (reads through the log and through
//!   `read_barrier`, ReadIndex and lease), no disruptive election on a quiet network, and
//!   membership changes in its nemesis (add, promote, remove, remove the leader, replace,
//!   joint), every commit checked against the quorum its configuration requires;
//! * replay: the same seed gives the same run (asserted by trace hash);
//! * planted bugs are caught within a bounded number of seeds, and replay (among them,
//!   clients that read a server's state without `read_barrier`, or without waiting for
//!   the read index to be applied);
//! * the explorer exercises reads without the log, transfers, live leaders and every kind
//!   of membership change, and the classic algorithm (no pre-vote, no check-quorum) shows
//!   the disruptive elections the default forbids.
//!
//! ```text
//! cargo test --release -p raft-tests --test sim
//! SIM_SEED=7 cargo test --release -p raft-tests --test sim -- figure8_3c --nocapture
//! SIM_SEED=7 cargo test --release -p raft-tests --test sim -- explorer_replay --nocapture
//! cargo run --release -p raft-tests --example sweep -- --seeds 10000   # a long sweep
//! ```
//!
//! Each run draws its seeds (printed on failure, with the command that replays them).
//! Everything in a simulated run derives from its seed, so a failing seed replays the
//! same run.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

mod lab_in_virtual_time {
    macro_rules! virtual_time {
        ($part:ident, $name:ident) => {
            #[test]
            fn $name() {
                raft_tests::lab::scenarios::$part::$name::<raft_tests::sim::VirtualTime>();
            }
        };
    }

    raft_tests::lab_scenarios!(virtual_time);
}

mod robustness_in_virtual_time {
    type W = raft_tests::sim::VirtualTime;

    macro_rules! virtual_time {
        ($name:ident, $call:expr) => {
            #[test]
            fn $name() {
                $call;
            }
        };
    }

    raft_tests::robustness_scenarios!(virtual_time);
}

/// Membership changes (grow, shrink, replace, joint, cut-off leader, concurrent).
mod membership {
    type W = raft_tests::sim::VirtualTime;

    macro_rules! virtual_time {
        ($name:ident, $call:expr) => {
            #[test]
            fn $name() {
                $call;
            }
        };
    }

    raft_tests::membership_scenarios!(virtual_time);
}

mod explorer {
    use raft_tests::sim::PlantedBug;
    use raft_tests::sim::explorer::{Options, Stats, explore};

    /// Seeds per explorer test; eight tests make 240 seeds per run.
    const SEEDS_PER_TEST: u64 = 30;

    fn seed_from_env(variable: &str) -> Option<u64> {
        std::env::var(variable).ok().map(|text| {
            text.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{variable}={text:?} is not a u64: {e}"))
        })
    }

    /// Explores `SEEDS_PER_TEST` fresh seeds from a random base (`SIM_EXPLORE_BASE` fixes
    /// it); a failure names its seed and the command that replays it.
    fn explore_batch(batch: u64) {
        let base = seed_from_env("SIM_EXPLORE_BASE").unwrap_or_else(rand::random);
        let first = base.wrapping_add(batch * SEEDS_PER_TEST);
        for seed in first..first + SEEDS_PER_TEST {
            if let Err(failure) = explore(seed, &Options::default()) {
                panic!("{failure}");
            }
        }
    }

    macro_rules! batches {
        ($($name:ident = $batch:expr),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    explore_batch($batch);
                }
            )*
        };
    }

    batches!(
        explorer_seeds_0 = 0,
        explorer_seeds_1 = 1,
        explorer_seeds_2 = 2,
        explorer_seeds_3 = 3,
        explorer_seeds_4 = 4,
        explorer_seeds_5 = 5,
        explorer_seeds_6 = 6,
        explorer_seeds_7 = 7,
    );

    /// Replays one seed (`SIM_SEED`, default 1; of the classic algorithm if `SIM_CLASSIC`
    /// is set, with the transfer probe if `SIM_TRANSFER_PROBE` is, without membership
    /// changes if `SIM_NO_MEMBERSHIP` is) and prints what it exercised.
    #[test]
    fn explorer_replay() {
        let seed = seed_from_env("SIM_SEED").unwrap_or(1);
        let options = Options {
            classic_elections: std::env::var_os("SIM_CLASSIC").is_some(),
            transfer_probe: std::env::var_os("SIM_TRANSFER_PROBE").is_some(),
            membership_changes: std::env::var_os("SIM_NO_MEMBERSHIP").is_none(),
            ..Options::default()
        };
        match explore(seed, &options) {
            Ok(run) => println!(
                "seed {seed}: passed, {:?} virtual, trace {:#x}\n{}",
                run.virtual_time, run.trace_hash, run.stats
            ),
            Err(failure) => panic!("{failure}"),
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_run() {
        for seed in [3, 1267, 424_242] {
            let first = explore(seed, &Options::default()).expect("a clean seed");
            let second = explore(seed, &Options::default()).expect("a clean seed");
            assert_eq!(first, second, "seed {seed} replayed differently");
        }
        let a = explore(3, &Options::default()).expect("a clean seed");
        let b = explore(4, &Options::default()).expect("a clean seed");
        assert_ne!(
            a.trace_hash, b.trace_hash,
            "different seeds, different runs"
        );
    }

    /// How many seeds a planted bug may take to be caught.
    const CATCH_WITHIN: u64 = 40;

    fn planted_bug_is_caught(bug: PlantedBug) {
        let options = Options {
            planted_bug: Some(bug),
            ..Options::default()
        };
        let failure = (0..CATCH_WITHIN)
            .find_map(|seed| explore(seed, &options).err())
            .unwrap_or_else(|| panic!("{bug:?} went unnoticed for {CATCH_WITHIN} seeds"));
        println!(
            "{bug:?} caught at seed {}: {}",
            failure.seed, failure.reason
        );
        let replayed = explore(failure.seed, &options).expect_err("the failing seed fails again");
        assert_eq!(
            replayed, failure,
            "the failing seed replays to the same failure"
        );
    }

    #[test]
    fn acknowledging_an_append_before_it_is_durable_is_caught() {
        planted_bug_is_caught(PlantedBug::AckAppendBeforeWrite);
    }

    #[test]
    fn forgetting_the_vote_on_restart_is_caught() {
        planted_bug_is_caught(PlantedBug::ForgetVoteOnRestart);
    }

    #[test]
    fn reading_without_the_barrier_is_caught() {
        planted_bug_is_caught(PlantedBug::ReadWithoutBarrier);
    }

    #[test]
    fn reading_before_the_read_index_is_applied_is_caught() {
        planted_bug_is_caught(PlantedBug::ReadWithoutWaitingForApply);
    }

    /// Lease reads across leadership transfers (`Options::transfer_probe`): a transfer
    /// behind a one-way cut from the target to the leader, on a reordering network, then
    /// a write at the new leader and a read at the old one. The target's RequestVotes
    /// bypass leader stickiness, so it can win within the old leader's lease; before the
    /// library ended the lease at a handover, the old leader served a stale value here
    /// (15 of the first 300 seeds, the first at seed 25).
    #[test]
    fn lease_reads_stay_linearizable_across_transfers() {
        let options = Options {
            transfer_probe: true,
            ..Options::default()
        };
        for seed in 0..CATCH_WITHIN {
            if let Err(failure) = explore(seed, &options) {
                panic!("{failure}");
            }
        }
    }

    /// Seeds of the classic-algorithm test below.
    const FEW_SEEDS: u64 = 12;

    /// The coverage tests explore seeds from 0 until every path they look for has been
    /// taken, and fail if that needs more than this many. Some paths are rare (about one
    /// exploration in four asks for a promotion; removing the leader is rarer still), and
    /// any change to the protocol's timing moves them to other seeds: a fixed sample would
    /// be retuned by hand at every such change.
    const COVERAGE_SEEDS: u64 = 64;

    /// Whether `stats` has taken every path the coverage tests look for.
    fn covers_everything(stats: &Stats) -> bool {
        stats
            .changes_by_kind()
            .into_iter()
            .all(|(_, counts)| counts.succeeded > 0)
            && stats.changes().refused > 0
            && stats.joins > 0
            && stats.removed_kept_running > 0
            && stats.removed_shut_down > 0
            && stats.joint_commits_checked > 0
            && stats.reads_log > 0
            && stats.reads_index > 0
            && stats.lease_runs > 0
            && stats.reads_lease > 0
            && stats.reads_on_followers > 0
            && stats.transfers_completed > 0
            && stats.transfer_campaigns > 0
            && stats.guarded_millis > 0
    }

    /// What seeds from 0 exercise with the default options, up to the first seed by which
    /// everything is covered (at most `COVERAGE_SEEDS`), explored once for the coverage
    /// tests that share them. Every exploration must pass.
    fn default_coverage() -> &'static Stats {
        static STATS: std::sync::OnceLock<Stats> = std::sync::OnceLock::new();
        STATS.get_or_init(|| {
            let mut total = Stats::default();
            for seed in 0..COVERAGE_SEEDS {
                match explore(seed, &Options::default()) {
                    Ok(run) => total.add(&run.stats),
                    Err(failure) => panic!("{failure}"),
                }
                if covers_everything(&total) {
                    println!("covered by seed {seed}");
                    break;
                }
            }
            total
        })
    }

    fn explore_few(options: &Options) -> Stats {
        let mut total = Stats::default();
        for seed in 0..FEW_SEEDS {
            match explore(seed, options) {
                Ok(run) => total.add(&run.stats),
                Err(failure) => panic!("{failure}"),
            }
        }
        total
    }

    /// The new paths are exercised, so the explorations above check them: reads without
    /// the log in both modes and at followers, transfers that hand over, time during
    /// which a disruptive election is forbidden.
    #[test]
    fn reads_without_the_log_transfers_and_live_leaders_are_exercised() {
        let stats = default_coverage();
        println!("{stats}");
        assert!(stats.reads_log > 0, "reads through the log");
        assert!(stats.reads_index > 0, "ReadIndex reads");
        assert!(stats.lease_runs > 0 && stats.reads_lease > 0, "lease reads");
        assert!(stats.reads_on_followers > 0, "reads at followers");
        assert!(stats.transfers_completed > 0, "completed transfers");
        assert!(stats.transfer_campaigns > 0, "elections by transfer");
        assert!(stats.guarded_millis > 0, "time guarded against disruption");
        assert_eq!(
            stats.disruptive_on_quiet_network, 0,
            "a violation, which fails the exploration"
        );
    }

    /// Every kind of membership change is made and succeeds, removed servers are both left
    /// running and shut down, spares join, and the commit quorum of configurations (joint
    /// ones among them) is checked on the storages.
    #[test]
    fn membership_changes_of_every_kind_are_exercised() {
        let stats = default_coverage();
        for (kind, counts) in stats.changes_by_kind() {
            assert!(counts.succeeded > 0, "no {kind} succeeded: {counts:?}");
        }
        assert!(stats.changes().refused > 0, "refusals");
        assert!(stats.joins > 0, "spares that joined");
        assert!(
            stats.removed_kept_running > 0,
            "removed servers left running"
        );
        assert!(stats.removed_shut_down > 0, "removed servers shut down");
        assert!(
            stats.joint_commits_checked > 0,
            "joint configurations whose commit quorum was checked"
        );
        assert!(stats.config_commits_checked > stats.joint_commits_checked);
    }

    /// Without pre-vote and check-quorum, the same explorations see elections that depose
    /// a leader with a live quorum on a quiet network: what the default forbids is
    /// there to be seen.
    #[test]
    fn without_pre_vote_and_check_quorum_elections_disrupt_live_leaders() {
        let classic = explore_few(&Options {
            classic_elections: true,
            ..Options::default()
        });
        println!("classic: {classic}");
        assert!(
            classic.disruptive_on_quiet_network > 0,
            "no disruptive election on a quiet network in {FEW_SEEDS} seeds of the classic algorithm"
        );
    }
}
