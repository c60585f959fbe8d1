//! The tokio runtime passes the `Runtime` conformance suite of `raft-tests`.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use raft_tests::conformance::{self, runtime::RuntimeFactory};
use raft_tokio::TokioRuntime;

struct Tokio(TokioRuntime);

impl RuntimeFactory for Tokio {
    type Runtime = TokioRuntime;

    fn runtime(&self) -> TokioRuntime {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_runtime_passes_the_runtime_suite() {
    let report = conformance::runtime::run(&mut Tokio(TokioRuntime::current())).await;
    println!("{report}");
    report.assert_passed();
}
