//! [`Runtime`] on smol.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use raft_traits::{JoinHandle, Runtime};
use rand::RngExt;

use crate::reactor::Reactor;
use crate::timers::Sleep;
use crate::workers::Pool;

/// The smol runtime: real time, OS threads, the system's randomness.
///
/// Two flavours:
/// * [`SmolRuntime::global`] spawns onto smol's global executor (set its thread count with
///   the `SMOL_THREADS` environment variable); right for a binary that runs one node or a
///   whole cluster for its lifetime.
/// * [`SmolRuntime::with_threads`] owns a private executor on `n` threads, stopped by
///   [`SmolRuntime::stop`], with its own timers and (on Linux) its own socket reactor: the
///   connections that run on it wait in an edge-triggered epoll instance that an idle
///   thread of the pool watches, rather than in async-io's. The fastest flavour (over
///   loopback TCP with one client, `raft-bench tcp` writes at a third of the latency and
///   a bit over half the CPU it took on smol's reactor and timers: p50 21-22 against
///   64-81 us); right too for tests that build and tear down many clusters.
///
/// ```
/// use std::time::Duration;
/// use raft_net_smol::SmolRuntime;
/// use raft_traits::Runtime;
///
/// let rt = SmolRuntime::with_threads(1);
/// let answer = rt.block_on(async {
///     let task = rt.spawn(async { 40 + 2 });
///     rt.sleep(Duration::from_millis(1)).await;
///     task.await
/// });
/// assert_eq!(answer, Ok(42));
/// rt.stop();
/// ```
#[derive(Clone)]
pub struct SmolRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    epoch: Instant,
    executor: Flavour,
}

enum Flavour {
    Global,
    /// The worker threads own the pool; the handle only borrows it, so that stopping
    /// the threads drops the pool and every task still on it, even while tasks hold
    /// clones of the runtime.
    Owned(Weak<Pool>),
}

impl SmolRuntime {
    /// A runtime on smol's global executor.
    pub fn global() -> Self {
        SmolRuntime {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                executor: Flavour::Global,
            }),
        }
    }

    /// A runtime with its own executor running on `threads` new OS threads (at least one).
    pub fn with_threads(threads: usize) -> Self {
        SmolRuntime {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                executor: Flavour::Owned(Pool::start(threads)),
            }),
        }
    }

    /// Runs `future` to completion on the current thread. Tasks spawned meanwhile run on
    /// the runtime's threads.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        smol::block_on(future)
    }

    /// Stops the threads of a runtime made by [`with_threads`](Self::with_threads) and
    /// drops every task still on it. Later spawns end at once with
    /// [`JoinError`](raft_traits::JoinError). Does nothing on the global runtime.
    ///
    /// A connection whose task ran here ends with it. A client's waiting requests fail
    /// with an error that says the runtime stopped, as do later ones that need a new
    /// connection here; a server's connections close. A socket still waiting in the
    /// pool's reactor gets an error rather than waiting for ever.
    pub fn stop(&self) {
        if let Flavour::Owned(pool) = &self.shared.executor
            && let Some(pool) = pool.upgrade()
        {
            pool.stop();
        }
    }

    /// The socket reactor of a running pool that has one.
    pub(crate) fn reactor(&self) -> Option<Arc<Reactor>> {
        match &self.shared.executor {
            Flavour::Global => None,
            Flavour::Owned(pool) => pool.upgrade()?.reactor(),
        }
    }
}

impl Runtime for SmolRuntime {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, handle) = JoinHandle::pair(future);
        match &self.shared.executor {
            Flavour::Global => smol::spawn(task).detach(),
            Flavour::Owned(pool) => {
                if let Some(pool) = pool.upgrade() {
                    pool.spawn(task);
                }
            }
        }
        handle
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if let Flavour::Owned(pool) = &self.shared.executor
            && let Some(pool) = pool.upgrade()
        {
            return Sleep::new(&pool, duration).boxed();
        }
        let timer = smol::Timer::after(duration);
        async move {
            timer.await;
        }
        .boxed()
    }

    fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    fn random_seed(&self) -> u64 {
        rand::rng().random()
    }
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flavour = match self.shared.executor {
            Flavour::Global => "global",
            Flavour::Owned(_) => "owned",
        };
        f.debug_struct("SmolRuntime")
            .field("executor", &flavour)
            .finish_non_exhaustive()
    }
}
