//! Test support for the raft workspace.
//!
//! * [`lab`]: the classic Raft lab's harness (clusters on the in-memory network, the lab's
//!   fault model, consistency-checking appliers, checkers and metrics), which the lab
//!   scenario suite in `tests/lab.rs` drives and which other test crates may drive too.
//!
//! This is test code: a failed check panics, which fails the calling test.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod conformance;
pub mod hostile;
pub mod lab;
pub mod sim;
