//! The KV service over real sockets: 127.0.0.1 and ephemeral ports only.
//!
//! One test binary (see STYLE.md): the cases live in the modules beside this file.
//!
//! Timing: no test sleeps in place of a condition. Every wait polls for its condition
//! with a deadline of tens of seconds, far beyond what a loaded two-core machine needs
//! for an election (0.3–0.6 s) or a catch-up; the only timed pauses are the ones a
//! scenario is about (a link that stays cut while writes go on).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "test helpers fail the test by panicking, and show what they saw"
)]

mod logs;
mod support;

mod bad_input;
mod bench;
mod membership;
mod metrics;
mod partition;
mod process;
mod reads;
mod replication;
mod restart;
mod sessions;
mod snapshot;
mod tls;
