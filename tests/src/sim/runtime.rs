//! A deterministic [`Runtime`]: one thread, a virtual clock, seeded randomness.
//!
//! Tasks run one at a time on the thread that calls [`Simulation::block_on`]. When no
//! task can make progress, the clock jumps to the earliest pending timer, so a run that
//! spans minutes of virtual time takes as long as its computation. Which ready task runs
//! next, and every seed handed out, come from one generator seeded by the simulation's
//! seed: the same seed replays the same run, event for event.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::task::{ArcWake, waker_ref};
use raft_traits::{JoinError, JoinHandle, Runtime};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// Owns a simulated world: its tasks, its clock and its randomness.
///
/// ```
/// use std::time::Duration;
/// use raft_tests::sim::Simulation;
/// use raft_traits::Runtime;
///
/// let sim = Simulation::new(42);
/// let rt = sim.runtime();
/// let (elapsed, answer) = sim.block_on(async move {
///     let task = rt.spawn({
///         let rt = rt.clone();
///         async move {
///             rt.sleep(Duration::from_secs(3600)).await;
///             42
///         }
///     });
///     let answer = task.await.unwrap();
///     (rt.now(), answer)
/// });
/// assert_eq!(answer, 42);
/// assert!(elapsed >= Duration::from_secs(3600), "an hour passed, virtually");
/// ```
pub struct Simulation {
    shared: Arc<Shared>,
}

/// The [`Runtime`] handle of a [`Simulation`], cloned into everything that runs in it.
#[derive(Clone)]
pub struct SimRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    now: Duration,
    ready: VecDeque<Arc<Task>>,
    /// Every task not yet finished, so that shutting down can drop them all.
    live: BTreeMap<u64, Arc<Task>>,
    timers: BTreeMap<(Duration, u64), Waker>,
    next_id: u64,
    rng: Xoshiro256PlusPlus,
    /// Whether the next ready task is picked at random (exploring interleavings) or in
    /// wake order.
    shuffle: bool,
    /// A running digest of what ran when: equal digests mean equal schedules.
    trace: u64,
    polls: u64,
}

struct Task {
    id: u64,
    future: Mutex<Option<BoxFuture<'static, ()>>>,
    queued: AtomicBool,
    sim: Weak<Shared>,
}

impl ArcWake for Task {
    fn wake_by_ref(task: &Arc<Self>) {
        if task.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(sim) = task.sim.upgrade() {
            sim.lock().ready.push_back(Arc::clone(task));
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only this module touches the state, never across a panic that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Simulation {
    /// A new world whose every random choice derives from `seed`.
    pub fn new(seed: u64) -> Self {
        Simulation {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: Duration::ZERO,
                    ready: VecDeque::new(),
                    live: BTreeMap::new(),
                    timers: BTreeMap::new(),
                    next_id: 0,
                    rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                    shuffle: true,
                    trace: seed,
                    polls: 0,
                }),
            }),
        }
    }

    /// Runs ready tasks in the order they were woken instead of a seeded random order.
    pub fn in_wake_order(self) -> Self {
        self.shared.lock().shuffle = false;
        self
    }

    /// The runtime handle to give to everything that runs in this world.
    pub fn runtime(&self) -> SimRuntime {
        SimRuntime {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `future` and every task it spawns until `future` completes, advancing the
    /// virtual clock whenever nothing is ready.
    ///
    /// # Panics
    ///
    /// If nothing is ready, no timer is pending and `future` has not completed: the
    /// world is deadlocked.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut output = self.runtime().spawn(future);
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        loop {
            while let Some(task) = self.next_ready() {
                task.queued.store(false, Ordering::Release);
                let waker = waker_ref(&task);
                let mut slot = task.future.lock().unwrap_or_else(|e| e.into_inner());
                let polled = slot.as_mut().map(|future| {
                    catch_unwind(AssertUnwindSafe(|| {
                        future.as_mut().poll(&mut Context::from_waker(&waker))
                    }))
                });
                match polled {
                    Some(Ok(Poll::Pending)) | None => {}
                    Some(Ok(Poll::Ready(()))) => {
                        *slot = None;
                        self.shared.lock().live.remove(&task.id);
                    }
                    Some(Err(panic)) => {
                        // The task is gone for good; the world can go on (to clean up)
                        // after the panic has reached the caller.
                        *slot = None;
                        drop(slot);
                        self.shared.lock().live.remove(&task.id);
                        resume_unwind(panic);
                    }
                }
            }
            if let Poll::Ready(result) = Pin::new(&mut output).poll(&mut cx) {
                match result {
                    Ok(value) => return value,
                    Err(JoinError) => panic!("the simulated main task ended without output"),
                }
            }
            self.advance_clock();
        }
    }

    fn next_ready(&self) -> Option<Arc<Task>> {
        let mut state = self.shared.lock();
        let len = state.ready.len();
        if len == 0 {
            return None;
        }
        let pick = if state.shuffle {
            state.rng.random_range(0..len)
        } else {
            0
        };
        let task = state.ready.swap_remove_back(pick)?;
        state.polls += 1;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (state.trace, state.now, task.id).hash(&mut hasher);
        state.trace = hasher.finish();
        Some(task)
    }

    /// Jumps to the earliest timer and wakes every timer due then.
    fn advance_clock(&self) {
        let due: Vec<Waker> = {
            let mut state = self.shared.lock();
            let Some((&(deadline, _), _)) = state.timers.iter().next() else {
                panic!(
                    "simulation deadlocked at {:?}: nothing to run and no timer pending",
                    state.now
                );
            };
            state.now = state.now.max(deadline);
            let now = state.now;
            let later = state.timers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut state.timers, later)
                .into_values()
                .collect()
        };
        for waker in due {
            waker.wake();
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Duration {
        self.shared.lock().now
    }

    /// A digest of the schedule so far: which task ran at which virtual time.
    pub fn trace_hash(&self) -> u64 {
        self.shared.lock().trace
    }

    /// How many times a task was polled.
    pub fn polls(&self) -> u64 {
        self.shared.lock().polls
    }
}

impl Drop for Simulation {
    fn drop(&mut self) {
        // Tasks and the world refer to each other; drop every unfinished future so that
        // nothing outlives the simulation.
        let (live, timers, ready) = {
            let mut state = self.shared.lock();
            (
                std::mem::take(&mut state.live),
                std::mem::take(&mut state.timers),
                std::mem::take(&mut state.ready),
            )
        };
        for task in live.values() {
            let future = task.future.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(future);
        }
        drop((live, timers, ready));
    }
}

impl Runtime for SimRuntime {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (task, handle) = JoinHandle::pair(future);
        let wrapped = task.boxed();
        let mut state = self.shared.lock();
        state.next_id += 1;
        let task = Arc::new(Task {
            id: state.next_id,
            future: Mutex::new(Some(wrapped)),
            queued: AtomicBool::new(true),
            sim: Arc::downgrade(&self.shared),
        });
        state.live.insert(task.id, Arc::clone(&task));
        state.ready.push_back(task);
        drop(state);
        handle
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let deadline = self.shared.lock().now + duration;
        Sleep {
            shared: Arc::clone(&self.shared),
            deadline,
            key: None,
        }
        .boxed()
    }

    fn now(&self) -> Duration {
        self.shared.lock().now
    }

    fn random_seed(&self) -> u64 {
        self.shared.lock().rng.random()
    }
}

struct Sleep {
    shared: Arc<Shared>,
    deadline: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        if state.now >= self.deadline {
            if let Some(key) = self.key.take() {
                state.timers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                state.next_id += 1;
                let key = (self.deadline, state.next_id);
                self.key = Some(key);
                key
            }
        };
        state.timers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.lock().timers.remove(&key);
        }
    }
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Simulation")
            .field("now", &state.now)
            .field("ready", &state.ready.len())
            .field("live", &state.live.len())
            .field("timers", &state.timers.len())
            .finish()
    }
}

impl fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRuntime")
            .field("now", &self.shared.lock().now)
            .finish_non_exhaustive()
    }
}
