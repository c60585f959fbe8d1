//! The async runtime Raft runs on: tasks, timers, a monotonic clock and a seed source.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, Either, FutureExt};

/// What Raft needs from an async runtime.
///
/// Raft's core never reads a clock or draws randomness by itself; everything time- or
/// chance-dependent goes through this trait, so a deterministic simulator can stand in
/// for a real runtime.
///
/// # Implementing
///
/// * [`spawn`](Runtime::spawn) runs the future to completion in the background. Dropping
///   the returned [`JoinHandle`] must **not** cancel the task.
/// * [`sleep`](Runtime::sleep) completes once `duration` has passed on this runtime's
///   clock; sleeps that end at the same instant complete in the order they were created.
/// * [`now`](Runtime::now) is monotonic: it never goes backwards.
/// * [`random_seed`](Runtime::random_seed) returns a fresh seed on every call; a simulator
///   derives it from its own seed so that runs are reproducible.
///
/// The conformance suite in the `raft-tests` crate (`raft_tests::conformance::runtime`)
/// checks these rules against any implementation.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs `future` in the background and returns a handle to await its output.
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;

    /// Monotonic time elapsed since an arbitrary, fixed epoch of this runtime.
    fn now(&self) -> Duration;

    /// A seed for a random number generator.
    fn random_seed(&self) -> u64;
}

/// Awaits `future` for at most `duration` of `runtime`'s time.
///
/// Returns [`Elapsed`] if the time ran out first; the future is then dropped.
pub async fn timeout<R, F>(runtime: &R, duration: Duration, future: F) -> Result<F::Output, Elapsed>
where
    R: Runtime,
    F: Future,
{
    let future = std::pin::pin!(future);
    match futures::future::select(future, runtime.sleep(duration)).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(((), _)) => Err(Elapsed(duration)),
    }
}

/// The error of [`timeout`]: the time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// The task behind a [`JoinHandle`] ended without an output: it panicked or its runtime
/// was shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the task ended without producing its output")]
pub struct JoinError;

/// A handle to a task started by [`Runtime::spawn`]; awaiting it yields the task's output.
///
/// Dropping the handle detaches the task, which keeps running.
#[must_use = "a dropped JoinHandle detaches its task; bind it to `_` to say so"]
pub struct JoinHandle<T> {
    output: BoxFuture<'static, Result<T, JoinError>>,
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Wraps a future that resolves with the task's output, or with [`JoinError`] if the
    /// task ended without one. Runtime implementations build their handles with this.
    pub fn new<F>(output: F) -> Self
    where
        F: Future<Output = Result<T, JoinError>> + Send + 'static,
    {
        JoinHandle {
            output: output.boxed(),
        }
    }

    /// Splits `future` into the task to run, which hands the output over when it ends,
    /// and the handle that awaits it: the handle of a runtime whose executor has none of
    /// its own. Dropping the task unfinished makes the handle resolve with [`JoinError`].
    ///
    /// ```
    /// use raft_traits::{JoinError, JoinHandle};
    ///
    /// let (task, handle) = JoinHandle::pair(async { 40 + 2 });
    /// futures::executor::block_on(task);
    /// assert_eq!(futures::executor::block_on(handle), Ok(42));
    ///
    /// let (task, handle) = JoinHandle::pair(async { 7 });
    /// drop(task);
    /// assert_eq!(futures::executor::block_on(handle), Err(JoinError));
    /// ```
    pub fn pair<F>(future: F) -> (impl Future<Output = ()> + Send + 'static, JoinHandle<T>)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (done, output) = futures::channel::oneshot::channel();
        let task = async move {
            // The handle may be gone: dropping it detaches the task.
            let _ = done.send(future.await);
        };
        let handle = JoinHandle::new(output.map(|result| result.map_err(|_| JoinError)));
        (task, handle)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.output.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}
