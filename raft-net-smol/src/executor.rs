//! The executor the TCP machinery's tasks and timers run on: the application's
//! [`Runtime`], chosen once, or smol's global executor by default.
//!
//! [`Runtime::spawn`] detaches a task whose handle is dropped, but a connection's task
//! must end with the connection (and a server's with the server), as `smol::Task` does on
//! drop. [`Task`] adds that: the future runs [abortable](futures::future::abortable), and
//! dropping the `Task` aborts it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::{AbortHandle, BoxFuture, abortable};
use futures::{FutureExt, future};
use raft_traits::{JoinHandle, Runtime};

use crate::reactor::Reactor;
use crate::runtime::SmolRuntime;

/// [`Runtime`] with its generic `spawn` erased, so that a client or server can hold any
/// runtime without naming its type.
trait Erased: Send + Sync + 'static {
    fn spawn(&self, future: BoxFuture<'static, ()>) -> JoinHandle<()>;
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

impl<R: Runtime> Erased for R {
    fn spawn(&self, future: BoxFuture<'static, ()>) -> JoinHandle<()> {
        Runtime::spawn(self, future)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Runtime::sleep(self, duration)
    }
}

/// A handle on the runtime the tasks of a client or server run on. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Executor {
    runtime: Arc<dyn Erased>,
    /// The socket reactor of the runtime's pool, if it is a [`SmolRuntime`] pool with one:
    /// the sockets of the connections it runs wait there. Weak, so that a stopped pool's
    /// reactor is not kept for sockets nobody would serve.
    reactor: Option<Weak<Reactor>>,
    /// For `Debug`: the runtime's type.
    name: &'static str,
}

impl Executor {
    /// Runs tasks and timers on `runtime`.
    pub(crate) fn new<R: Runtime>(runtime: R) -> Self {
        let reactor = (&runtime as &dyn Any)
            .downcast_ref::<SmolRuntime>()
            .and_then(SmolRuntime::reactor)
            .map(|reactor| Arc::downgrade(&reactor));
        Executor {
            runtime: Arc::new(runtime),
            reactor,
            name: std::any::type_name::<R>(),
        }
    }

    /// The reactor the sockets of this runtime's connections wait in, if it has one of
    /// its own (and is still running); else they wait in async-io's.
    pub(crate) fn reactor(&self) -> Option<Arc<Reactor>> {
        self.reactor.as_ref()?.upgrade()
    }

    /// Runs `future` in the background until it completes; nothing cancels it.
    pub(crate) fn spawn_detached<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let _detached = self.runtime.spawn(future.boxed());
    }

    /// Runs `future` in the background until it completes or the returned [`Task`] is
    /// dropped or cancelled.
    pub(crate) fn spawn<F>(&self, future: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (future, abort) = abortable(future);
        let done = self.runtime.spawn(future.map(|_aborted| ()).boxed());
        Task {
            abort: Some(abort),
            done: Mutex::new(Some(done)),
        }
    }

    /// Completes after `duration`, on the runtime's clock.
    pub(crate) fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.runtime.sleep(duration)
    }

    /// Completes at `deadline` (at once if it has passed).
    pub(crate) fn sleep_until(&self, deadline: std::time::Instant) -> BoxFuture<'static, ()> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return future::ready(()).boxed();
        }
        self.sleep(left)
    }
}

impl Default for Executor {
    /// smol's global executor ([`SmolRuntime::global`]).
    fn default() -> Self {
        Executor::new(SmolRuntime::global())
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Executor").field(&self.name).finish()
    }
}

/// A task started by [`Executor::spawn`]: dropping it cancels the task (the future is
/// dropped the next time the runtime would poll it), unless it was
/// [detached](Task::detach).
#[must_use = "dropping a Task cancels it"]
pub(crate) struct Task {
    abort: Option<AbortHandle>,
    /// In a mutex only to make the `Task` `Sync` (a connection holding it is shared);
    /// it is only ever reached through `&mut self`, without locking.
    done: Mutex<Option<JoinHandle<()>>>,
}

impl Task {
    /// Lets the task run to completion on its own.
    pub(crate) fn detach(mut self) {
        self.abort = None;
    }

    /// Cancels the task and waits until its future has been dropped (or its runtime is
    /// gone).
    pub(crate) async fn cancel(mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
        let done = self
            .done
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            // An error only says that the runtime dropped the task: it has ended too.
            let _ = done.await;
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(abort) = self.abort.take() {
            abort.abort();
        }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("cancellable", &self.abort.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn cancelling_a_task_drops_its_future() {
        let executor = Executor::new(SmolRuntime::with_threads(1));
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&dropped));
        let task = executor.spawn(async move {
            let _flag = flag;
            future::pending::<()>().await;
        });
        let cancelled = smol::block_on(smol::future::or(
            async {
                task.cancel().await;
                true
            },
            async {
                smol::Timer::after(Duration::from_secs(30)).await;
                false
            },
        ));
        assert!(cancelled, "cancel did not return");
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn dropping_a_task_cancels_it_and_detaching_does_not() {
        let executor = Executor::new(SmolRuntime::with_threads(1));
        let (tx, rx) = smol::channel::bounded::<()>(1);
        let (done_tx, done_rx) = smol::channel::bounded::<&str>(2);
        for (name, detach) in [("dropped", false), ("detached", true)] {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            let task = executor.spawn(async move {
                // Ends on the first message or when the channel closes.
                let _ = rx.recv().await;
                let _ = done_tx.send(name).await;
            });
            if detach {
                task.detach();
            } else {
                drop(task);
            }
        }
        drop(done_tx);
        tx.close();
        let finished: Vec<&str> = smol::block_on(async {
            let mut all = Vec::new();
            while let Ok(name) = done_rx.recv().await {
                all.push(name);
            }
            all
        });
        assert_eq!(finished, ["detached"]);
    }
}
