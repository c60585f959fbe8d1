//! The classic Raft lab's test harness (`/work/shared/lab/LAB-SUITE.md` is its
//! specification): clusters of [`raft_impl::Raft`] servers on the in-memory
//! [`MemNetwork`](raft_mem::MemNetwork), with the lab's topology model, crash and restart,
//! consistency-checking appliers, checkers and metrics.
//!
//! A scenario is an async body run by [`run`] against a fresh [`Cluster`], in a [`World`]:
//! [`RealTime`] on the smol runtime, or [`VirtualTime`](crate::sim::VirtualTime) under the
//! deterministic simulator.
//!
//! ```no_run
//! use raft_tests::lab::{self, ClusterSpec, RealTime};
//!
//! lab::run::<RealTime, _, _>(ClusterSpec { n: 3, reliable: true, snapshot: false, robust: true, members: None }, |t| async move {
//!     t.begin("Test (3B): basic agreement");
//!     let leader = t.check_one_leader().await;
//!     t.disconnect((leader + 1) % t.n());
//!     assert_eq!(t.one(101, 2, false).await, 1);
//!     t.end();
//! });
//! ```
//!
//! # Seeds
//!
//! Each run draws one seed, prints it, and takes it from the environment variable
//! `LAB_SEED` instead when that is set. The seed feeds the network's fault generator, the
//! nodes' election timeouts and the scenario's own random choices
//! ([`Cluster::rand_int`], ...). Real time and thread scheduling still vary between runs,
//! so a seed makes a failure likelier to recur, not certain.
//!
//! # Traces
//!
//! With `LAB_LOG` set to a `tracing` target filter (for example
//! `LAB_LOG=raft_impl=debug,raft_tests=debug`), the run records the library's traces into
//! the test's captured output, which the test runner shows when the test fails.

mod applier;
mod cluster;
pub mod scenarios;
mod value;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Mutex, Once};
use std::time::Duration;

use raft_net_smol::SmolRuntime;
use raft_traits::Runtime;
use rand::RngExt;

pub use applier::{AppliedRecord, LabApplier, LabRaft, SNAPSHOT_INTERVAL};
pub use cluster::Cluster;
pub use value::Value;

/// The lab's `RaftElectionTimeout`: the generous time the tester allows for an election,
/// used for its sleeps.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// The time limit of one test, counted from the making of its cluster on its runtime's
/// clock (real time, or virtual time in a simulation).
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The lab's `MAXLOGSIZE`: log-compaction scenarios fail once the largest persisted Raft
/// state (snapshot excluded) reaches this many bytes.
pub const MAX_LOG_SIZE: usize = 2000;

/// What cluster a scenario runs on (the lab's `makeTest(t, n, reliable, snapshot)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The number of servers.
    pub n: usize,
    /// Whether the network starts reliable; unreliable delays requests 0–26 ms and loses
    /// 10% of requests and 10% of replies.
    pub reliable: bool,
    /// Whether the servers run the snapshot applier (3D) instead of the plain one.
    pub snapshot: bool,
    /// Whether the servers run pre-vote and check-quorum (as [`Config::lab`] does);
    /// `false` runs the classic algorithm, for before/after comparisons.
    ///
    /// [`Config::lab`]: raft_impl::Config::lab
    pub robust: bool,
    /// How many of the `n` servers form the bootstrap configuration (`None`: all). The
    /// others start empty, to join a running cluster when a scenario adds them.
    pub members: Option<usize>,
}

/// Where a scenario runs: [`RealTime`] on smol threads, or virtual time in a
/// deterministic simulation (`raft_tests::sim::VirtualTime`).
pub trait World: Sized {
    /// The runtime everything in this world runs on.
    type Runtime: Runtime;

    /// Whether runs must not overlap: they measure real time and RPC rates, which several
    /// clusters sharing the machine's cores would distort.
    const EXCLUSIVE: bool;

    /// The environment variable that fixes the seed of a run.
    const SEED_VARIABLE: &'static str;

    /// A fresh world for one run, its randomness derived from `seed`.
    fn create(seed: u64) -> Self;

    /// The runtime handle of this world.
    fn runtime(&self) -> Self::Runtime;

    /// Runs `future` (and everything it spawns) until it completes.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Ends the world: stops its threads and drops its remaining tasks.
    fn finish(self);
}

/// Real time: a private smol executor on two threads per run.
#[derive(Debug)]
pub struct RealTime {
    runtime: SmolRuntime,
}

/// The runtime's worker threads per real-time cluster.
const RUNTIME_THREADS: usize = 2;

impl World for RealTime {
    type Runtime = SmolRuntime;
    const EXCLUSIVE: bool = true;
    const SEED_VARIABLE: &'static str = "LAB_SEED";

    fn create(_seed: u64) -> Self {
        RealTime {
            runtime: SmolRuntime::with_threads(RUNTIME_THREADS),
        }
    }

    fn runtime(&self) -> SmolRuntime {
        self.runtime.clone()
    }

    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.block_on(future)
    }

    fn finish(self) {
        self.runtime.stop();
    }
}

/// Real-time scenarios run one at a time, as the lab's `go test` runs them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the scenario `body` against a fresh cluster made to `spec`, in a fresh world of
/// kind `W`, and always cleans up afterwards: every node is shut down and the world
/// ended, whether the body returns or panics. A panic of the body (a failed check) is
/// then resumed, which fails the calling test; the seed is printed to replay it.
///
/// # Panics
///
/// If the body panics, or after it returns: if an apply error was recorded or the test
/// took longer than [`TEST_TIME_LIMIT`].
pub fn run<W, F, Fut>(spec: ClusterSpec, body: F)
where
    W: World,
    F: FnOnce(Cluster<W::Runtime>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _one_at_a_time =
        W::EXCLUSIVE.then(|| ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()));
    init_tracing();
    let seed = choose_seed(W::SEED_VARIABLE);
    let world = W::create(seed);
    let runtime = world.runtime();

    let cluster = world.block_on(Cluster::build(spec, seed, runtime));
    let outcome = catch_unwind(AssertUnwindSafe(|| world.block_on(body(cluster.clone()))));
    let cleanup = {
        let cluster = cluster.clone();
        catch_unwind(AssertUnwindSafe(|| {
            world.block_on(async move { cluster.cleanup().await })
        }))
    };
    world.finish();
    let outcome = outcome
        .and(cleanup)
        .and_then(|()| catch_unwind(AssertUnwindSafe(|| cluster.final_checks())));
    if let Err(panic) = outcome {
        eprintln!(
            "lab: FAILED with seed {seed}; rerun with {}={seed}",
            W::SEED_VARIABLE
        );
        resume_unwind(panic);
    }
}

/// The seed of this run: from the environment variable if set, else a fresh random one.
fn choose_seed(variable: &str) -> u64 {
    match std::env::var(variable) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{variable}={text:?} is not a u64: {e}")),
        Err(_) => rand::rng().random(),
    }
}

/// Installs a trace subscriber once per process if `LAB_LOG` holds a target filter.
fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::{Layer, filter::Targets, fmt};

        let Ok(spec) = std::env::var("LAB_LOG") else {
            return;
        };
        match spec.parse::<Targets>() {
            Ok(targets) => {
                let layer = fmt::layer().with_test_writer().with_filter(targets);
                if let Err(e) = tracing_subscriber::registry().with(layer).try_init() {
                    eprintln!("lab: cannot install the trace subscriber: {e}");
                }
            }
            Err(e) => eprintln!("lab: LAB_LOG={spec:?} is not a target filter: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use super::*;

    const THREE: ClusterSpec = ClusterSpec {
        robust: true,
        members: None,
        n: 3,
        reliable: true,
        snapshot: false,
    };

    #[test]
    fn a_failed_check_fails_the_run_and_the_next_run_still_works() {
        let failed = catch_unwind(|| {
            run::<RealTime, _, _>(THREE, |t| async move {
                t.check_one_leader().await;
                // There is a leader: this check must fail.
                t.check_no_leader();
            });
        });
        assert!(failed.is_err());

        run::<RealTime, _, _>(THREE, |t| async move {
            t.begin("Test (harness): agreement after a failed run");
            assert_eq!(t.one(7, 3, false).await, 1);
            t.end();
        });
    }
}
