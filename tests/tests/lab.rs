//! The classic Raft lab's scenario suite: the 28 scenarios of parts 3A (election), 3B (log),
//! 3C (persistence) and 3D (snapshots), with the lab's numbers and thresholds
//! (`/work/shared/lab/LAB-SUITE.md` §4, stricter 2025/2026 variants), driven through the
//! [`raft_tests::lab`] harness. All parts compile into this one test binary.
//!
//! ```text
//! cargo test --release -p raft-tests --test lab -- --nocapture        # everything
//! cargo test --release -p raft-tests --test lab -- 3a 3b --nocapture  # parts 3A and 3B
//! LAB_SEED=42 LAB_LOG=raft_impl=debug cargo test --release -p raft-tests --test lab -- figure8_3c
//! ```
//!
//! The scenarios run one at a time (the harness serialises them); each prints one
//! "Passed" line with its time, peers, RPCs, bytes, commits and seed.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

// The crate root of a test target looks for modules beside it; the parts live in `lab/`.
#[path = "lab/part_3a.rs"]
mod part_3a;
#[path = "lab/part_3b.rs"]
mod part_3b;
#[path = "lab/part_3c.rs"]
mod part_3c;
#[path = "lab/part_3d.rs"]
mod part_3d;

use raft_tests::lab::ClusterSpec;

/// A cluster of `n` servers with the plain applier.
fn plain(n: usize, reliable: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable,
        snapshot: false,
    }
}

/// A cluster of `n` servers with the snapshot applier.
fn snapshots(n: usize, reliable: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable,
        snapshot: true,
    }
}

/// Reliable, as the catalogue's default.
const RELIABLE: bool = true;
/// Unreliable: delays and losses.
const UNRELIABLE: bool = false;
