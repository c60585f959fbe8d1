//! The classic Raft lab's scenario suite in real time: the 28 scenarios of parts 3A
//! (election), 3B (log), 3C (persistence) and 3D (snapshots), with the lab's numbers and
//! thresholds (`/work/shared/lab/LAB-SUITE.md` §4, stricter 2025/2026 variants), on smol
//! and the in-memory network. The scenarios themselves live in
//! `raft_tests::lab::scenarios`; `tests/sim.rs` runs the same ones in virtual time.
//!
//! ```text
//! cargo test --release -p raft-tests --test lab -- --nocapture        # everything
//! cargo test --release -p raft-tests --test lab -- 3a 3b --nocapture  # parts 3A and 3B
//! LAB_SEED=42 LAB_LOG=raft_impl=debug cargo test --release -p raft-tests --test lab -- figure8_3c
//! ```
//!
//! The scenarios run one at a time (the harness serialises them); each prints one
//! "Passed" line with its time, peers, RPCs, bytes, commits and seed. The test runner's
//! closing line ("finished in ...") is the suite's wall time.

macro_rules! real_time {
    ($part:ident, $name:ident) => {
        #[test]
        fn $name() {
            raft_tests::lab::scenarios::$part::$name::<raft_tests::lab::RealTime>();
        }
    };
}

raft_tests::lab_scenarios!(real_time);

/// Beyond the lab: pre-vote, check-quorum, leadership transfer, ReadIndex and proposals
/// that always end, in real time (`tests/sim.rs` runs them in virtual time).
mod robustness {
    type W = raft_tests::lab::RealTime;

    macro_rules! real_time {
        ($name:ident, $call:expr) => {
            #[test]
            fn $name() {
                $call;
            }
        };
    }

    raft_tests::robustness_scenarios!(real_time);
}

/// Membership changes (grow, shrink, replace, joint, cut-off leader, concurrent).
mod membership {
    type W = raft_tests::lab::RealTime;

    macro_rules! real_time {
        ($name:ident, $call:expr) => {
            #[test]
            fn $name() {
                $call;
            }
        };
    }

    raft_tests::membership_scenarios!(real_time);
}
