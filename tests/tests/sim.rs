//! Deterministic simulation: the 28 lab scenarios in virtual time, on the same
//! definitions as the real-time suite (`tests/lab.rs`).
//!
//! ```text
//! cargo test --release -p raft-tests --test sim
//! SIM_SEED=7 cargo test --release -p raft-tests --test sim -- figure8_3c --nocapture
//! ```
//!
//! Each run draws a seed (printed on failure; `SIM_SEED` fixes it). Everything in a
//! simulated run derives from its seed, so a failing seed replays the same run.

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
