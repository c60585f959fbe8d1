//! Test support for the raft workspace.
//!
//! * [`lab`]: the classic Raft lab's harness (clusters on the in-memory network, the lab's
//!   fault model, consistency-checking appliers, checkers and metrics), which the lab
//!   scenario suite in `tests/lab.rs` drives and which other test crates may drive too.
//! * [`harness`]: a generic cluster harness for testing a service with its own state
//!   machine, storage and transport: the network's faults, each node's handle and status,
//!   crashes and restarts through the user's factories, and proposals with typed errors.
//!
//! This is test code: a failed check panics, which fails the calling test.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod conformance;
pub mod harness;
pub mod hostile;
pub mod lab;
pub mod sim;
