//! The TCP transport and server over loopback, with ephemeral ports only.
//!
//! One test binary (see STYLE.md): the cases live in the modules beside this file.
//!
//! Timing: no test waits for a fixed time in place of a condition. Slow requests wait
//! on a gate the test opens; hang guards and timeouts are tens of seconds, far beyond
//! what a loaded two-core machine needs.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking, like the tests themselves"
)]

mod logs;
mod support;

mod bad_input;
mod chunking;
mod failures;
mod handshake;
mod limits;
mod peers;
mod request_reply;
mod runtime;
mod service;
mod tls;
