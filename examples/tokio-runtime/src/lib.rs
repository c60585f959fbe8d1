//! [`Runtime`] on tokio: how a downstream crate swaps the runtime raft runs on.
//!
//! Nothing in raft names a runtime; the node's tasks, timers, clock and seeds all come
//! through the [`Runtime`] trait. This crate adapts tokio to it in a few lines, and its
//! tests run the `Runtime` conformance suite and a three-node cluster on it.
//!
//! Over TCP, give the same runtime to `raft_net_smol`'s transport and server
//! (`TcpTransport::set_runtime`, `TcpServer::set_runtime`): their connections and the
//! handling of each request then run on tokio too, one executor for the whole node, and
//! a `Service` may use tokio's timers (the cluster test does this).
//!
//! ```
//! use std::time::Duration;
//! use raft_tokio::TokioRuntime;
//! use raft_traits::Runtime;
//!
//! let tokio = tokio::runtime::Builder::new_multi_thread()
//!     .worker_threads(2)
//!     .enable_time()
//!     .build()
//!     .unwrap();
//! let rt = TokioRuntime::new(tokio.handle().clone());
//! let sum = tokio.block_on(async {
//!     let task = rt.spawn(async { 1 + 1 });
//!     rt.sleep(Duration::from_millis(1)).await;
//!     task.await
//! });
//! assert_eq!(sum, Ok(2));
//! ```

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use raft_traits::{JoinError, JoinHandle, Runtime};
use tokio::runtime::Handle;
use tokio::time::Instant;

/// Raft's [`Runtime`] on a tokio runtime (which must have its time driver enabled).
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: Handle,
    epoch: Instant,
}

impl TokioRuntime {
    /// Runs raft's tasks on the tokio runtime behind `handle`.
    pub fn new(handle: Handle) -> Self {
        TokioRuntime {
            handle,
            epoch: Instant::now(),
        }
    }

    /// Uses the tokio runtime the caller is running on.
    ///
    /// # Panics
    ///
    /// Outside of a tokio runtime, as [`Handle::current`] does.
    pub fn current() -> Self {
        Self::new(Handle::current())
    }
}

impl Runtime for TokioRuntime {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Dropping a tokio JoinHandle detaches its task, as the trait requires.
        let task = self.handle.spawn(future);
        JoinHandle::new(task.map(|result| result.map_err(|_| JoinError)))
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        // Created inside the runtime's context so the timer registers with its driver
        // even when called from a foreign thread.
        let _guard = self.handle.enter();
        tokio::time::sleep(duration).boxed()
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn random_seed(&self) -> u64 {
        // std's per-instance random hasher keys are an entropy source without another
        // dependency.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(self.epoch.elapsed().as_nanos() as u64);
        hasher.finish()
    }
}
