//! The worker threads behind [`SmolRuntime::with_threads`](crate::SmolRuntime::with_threads):
//! a task queue shared by the threads and one of each thread's own; a thread with nothing
//! to run waits in the pool's
//! [socket reactor](crate::reactor) if no other thread does, else it parks.
//!
//! Why not smol's `Executor`: every time one of its threads picks a task, it wakes another
//! sleeping thread "in case the task takes long". A Raft write is a chain of short tasks
//! (a socket read wakes the node's loop, which wakes a connection's writer, ...), so each
//! link woke the other thread, which mostly found nothing to do and went back to sleep:
//! a futex or eventfd write, a context switch and a reactor round, several times per write
//! (`raft-bench tcp --clients 1` spent 1.7 times the CPU per write on two threads as on one).
//! Here a thread is woken only when queued tasks outnumber the threads looking for work,
//! and a thread that wakes a task while it waits in the reactor (an I/O event came)
//! takes the task itself, which costs no system call.
//!
//! The sockets of the connections that run on the pool wait in the pool's own reactor
//! (whichever thread opened them), and its timers are its own (see `reactor.rs` and
//! `timers.rs` for why); listening sockets and connection attempts stay with async-io,
//! whose own thread wakes the pool's tasks when they are ready.
//!
//! A task woken by the task a thread runs is queued on that thread, which runs it next
//! (see `Pool::schedule`): a write's chain of tasks stays on one core. A thread out of work
//! takes half of another's queue after a short spin, and a thread asleep while another is
//! awake looks at the others' queues every few milliseconds, so that a task queued on a
//! thread that then blocks still runs.
//!
//! Tried and dropped: running a task woken by the running task next on the same thread
//! (tokio's LIFO slot), which no other thread could take. It cut the 1-client TCP p50 by
//! about 10 us more, but it kept the second thread asleep under load, so every fsync
//! completion and socket event had to wake it: `raft-bench durable --clients 64` fell from
//! 131k-150k to 83k-94k writes/s.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use async_task::Runnable;
use concurrent_queue::ConcurrentQueue;

use crate::reactor::Reactor;
use crate::timers::Timers;

/// Tasks a thread runs before it looks at the sockets and timers again.
const BUDGET: usize = 64;

/// How long a thread out of work looks for more before it sleeps, in rounds of a queue
/// check and a spin-loop hint (a few microseconds in all here).
const SPIN_ROUNDS: u32 = 100;

/// Rounds between two looks at the sockets (a system call each) while spinning, and
/// between two yields of the core while the pool is fed from outside. See [`Pool::spin`]
/// for what was measured.
const SPIN_ROUNDS_PER_LOOK: u32 = 10;

/// Rounds between two yields of the core while spinning, when no thread outside the pool
/// feeds it (see [`Pool::spin`]); a multiple of [`SPIN_ROUNDS_PER_LOOK`].
const SPIN_ROUNDS_PER_YIELD_UNFED: u32 = 50;

// The spin yields only on the rounds it looks at the sockets.
const _: () = assert!(SPIN_ROUNDS_PER_YIELD_UNFED.is_multiple_of(SPIN_ROUNDS_PER_LOOK));

/// How long the thread watching the sockets goes on looking for work, past the short
/// spin, while the pool is fed from outside (see [`Pool::spin`]).
const LONG_SPIN: Duration = Duration::from_micros(500);

/// How often a parked thread looks whether the sockets are still watched (see
/// [`Pool::park`]).
const PARKED_LOOKOUT: Duration = Duration::from_millis(2);

/// How long a thread out of work spins before it takes tasks queued on another thread
/// (rounds, as in [`SPIN_ROUNDS`]): long enough for that thread to take them itself
/// when it is between two tasks, so that a chain of tasks stays on one thread.
const STEAL_AFTER_ROUNDS: u32 = 20;

/// Tasks queued on a running thread beyond which it wakes a sleeping thread to share
/// them (see [`Pool::schedule`]).
const LOCAL_CROWD: usize = 16;

/// How long a thread sleeps at most while another one is awake: that one may queue tasks
/// on itself and then block (a task that waits on a reply with `block_on`), and those
/// tasks must not wait for it for good (see [`Pool::sleep`]). 1 ms lost a sixth of what
/// the own queues gain in process at 16 clients (the wakes), for a case that is a misuse.
const LOCAL_LOOKOUT: Duration = Duration::from_millis(10);

/// How recent a task woken from outside the pool must be for the long spin: a few
/// fsyncs' time, so that a pool waiting for the next one still counts as fed.
const FED_FROM_OUTSIDE_WITHIN: Duration = Duration::from_millis(1);

/// The shared state of a pool of worker threads.
pub(crate) struct Pool {
    queue: ConcurrentQueue<Runnable>,
    /// Per thread, the tasks its running tasks woke: it runs them next, while its caches
    /// hold what they share, unless a thread out of work takes them first.
    locals: Box<[ConcurrentQueue<Runnable>]>,
    /// Threads awake and not running a task: they will take what is queued.
    searching: AtomicUsize,
    /// How to wake each thread that sleeps, by thread number.
    sleeping: Mutex<Vec<Option<Sleeper>>>,
    /// How many entries `sleeping` holds: changed under its lock, read without it, so
    /// that queuing a task while no thread sleeps takes no lock.
    asleep: AtomicUsize,
    /// How many of those sleep without the [`LOCAL_LOOKOUT`] (as `asleep`).
    asleep_unwatchful: AtomicUsize,
    /// The sockets' reactor, if this system has one we drive (else async-io's serves).
    reactor: Option<Arc<Reactor>>,
    /// The timers of the pool's sleeps, fired by its threads.
    timers: Timers,
    /// Every task not yet finished, by id, so that stopping drops them all.
    tasks: Mutex<BTreeMap<u64, Waker>>,
    next_task: AtomicU64,
    stopped: AtomicBool,
    /// When the pool started: the origin of `woken_from_outside_at`.
    started: Instant,
    /// When a thread not of the pool last woke one of its tasks, in microseconds since
    /// `started` (zero: never).
    woken_from_outside_at: AtomicU64,
}

/// A sleeping thread: how to wake it, and until when it sleeps at most.
#[derive(Debug)]
struct Sleeper {
    how: Bed,
    /// Whether it wakes after [`LOCAL_LOOKOUT`] to look at the other threads' tasks.
    lookout: bool,
    /// The first timer's deadline when it went to sleep.
    until: Option<Instant>,
}

/// Where a thread sleeps.
#[derive(Debug)]
enum Bed {
    /// In the reactor: a notification ends the wait.
    Reactor,
    /// Parked: unparked.
    Parked(Thread),
}

/// Work deferred until the running task's turn is over (see [`defer`]).
type Deferred = Box<dyn FnOnce()>;

/// What a worker thread knows about itself.
struct Worker {
    /// The pool it belongs to (a thread only ever belongs to one).
    pool: *const Pool,
    id: usize,
    /// Whether it is running a task right now (else it looks for one, or sleeps).
    running: bool,
    /// Work the running task deferred, to run once its turn ends.
    deferred: Vec<Deferred>,
}

/// Runs `work` on this thread as soon as the running task's turn (its poll) ends. Gives
/// `work` back if this thread is not a pool thread running a task: the caller then does
/// it now.
///
/// What it is for: the sends of a batch. A leader that answers 30 clients in one apply
/// made one system call per answer, several of them to the same connection; deferred to
/// the end of the apply's turn, the answers to one connection leave in one (see the
/// `outbox` module for what it measured).
pub(crate) fn defer(work: Deferred) -> Result<(), Deferred> {
    let mut work = Some(work);
    let _ = WORKER.try_with(|worker| {
        if let Ok(Some(worker)) = worker.try_borrow_mut().as_deref_mut()
            && worker.running
            && let Some(work) = work.take()
        {
            worker.deferred.push(work);
        }
    });
    work.map_or(Ok(()), Err)
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// Starts `threads` worker threads (at least one). The threads hold the pool; the
    /// returned handle does not keep it alive.
    pub(crate) fn start(threads: usize) -> Weak<Pool> {
        let threads = threads.max(1);
        let reactor = match Reactor::new() {
            Ok(reactor) => Some(Arc::new(reactor)),
            Err(e) => {
                tracing::warn!("no socket reactor of the pool's own ({e}); async-io's serves");
                None
            }
        };
        let pool = Arc::new(Pool {
            queue: ConcurrentQueue::unbounded(),
            locals: (0..threads).map(|_| ConcurrentQueue::unbounded()).collect(),
            searching: AtomicUsize::new(threads),
            sleeping: Mutex::new((0..threads).map(|_| None).collect()),
            asleep: AtomicUsize::new(0),
            asleep_unwatchful: AtomicUsize::new(0),
            reactor,
            timers: Timers::default(),
            tasks: Mutex::new(BTreeMap::new()),
            next_task: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            started: Instant::now(),
            woken_from_outside_at: AtomicU64::new(0),
        });
        for id in 0..threads {
            let worker = Arc::clone(&pool);
            let started = thread::Builder::new()
                .name(format!("raft-smol-{id}"))
                .spawn(move || worker.work(id));
            if let Err(e) = started {
                tracing::error!("cannot start a runtime thread: {e}");
                // It will never look for work.
                pool.searching.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Arc::downgrade(&pool)
    }

    /// Runs `future` on the pool until it completes; dropped unfinished if the pool stops.
    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let forget = Forget {
            pool: Arc::downgrade(self),
            id,
        };
        let task = async move {
            let _forget = forget;
            future.await;
        };
        let pool = Arc::downgrade(self);
        let (runnable, task) = async_task::spawn(task, move |runnable| match pool.upgrade() {
            Some(pool) => pool.schedule(runnable),
            // Stopped: dropping the runnable drops the task's future.
            None => drop(runnable),
        });
        lock(&self.tasks).insert(id, runnable.waker());
        task.detach();
        runnable.schedule();
    }

    /// Stops the threads; the tasks are dropped once the last thread has left.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(reactor) = &self.reactor {
            reactor.close();
        }
        let sleepers: Vec<Sleeper> = {
            let mut sleeping = lock(&self.sleeping);
            self.asleep.store(0, Ordering::SeqCst);
            self.asleep_unwatchful.store(0, Ordering::SeqCst);
            sleeping.iter_mut().flat_map(Option::take).collect()
        };
        for sleeper in sleepers {
            self.wake(sleeper);
        }
    }

    /// Queues a woken task. One woken by the task a pool thread is running goes on that
    /// thread's own queue: the thread runs it next, and a chain of short tasks (a write's
    /// proposal, its AppendEntries, their answers) stays on one core instead of moving
    /// its data between two at every link. A thread out of work takes such tasks only
    /// after [`STEAL_AFTER_ROUNDS`] of spinning, and no thread is woken for them unless
    /// they crowd ([`LOCAL_CROWD`]) or a thread sleeps without a lookout.
    ///
    /// Measured with `raft-bench` against the shared queue alone (runs side by side, 2
    /// threads): in process, 1 client 115k -> 193k writes/s (p50 8.6 -> 4.8 us) and 16
    /// clients 592k-601k -> 841k-849k, at 1.3 instead of 3.2 us of CPU per write;
    /// `durable --clients 64` 182k-188k -> 214k-216k; `tcp --clients 1` p50 41 -> 23 us;
    /// `tcp --clients 64` 4% fewer (802k against 834k), where the second thread's share
    /// of the system calls counts for more than the caches. Waking a sleeping thread for
    /// every such task instead lost all of it in process (the wakes cost more than the
    /// work), and a lookout of 1 ms instead of 10 lost a sixth of the gain at 16 clients.
    fn schedule(&self, runnable: Runnable) {
        let worker = self.current_worker();
        let runnable = match worker {
            Some((id, true)) => match self.locals[id].push(runnable) {
                Ok(()) => {
                    self.after_local_push(id);
                    return;
                }
                Err(refused) => refused.into_inner(),
            },
            _ => runnable,
        };
        if let Err(refused) = self.queue.push(runnable) {
            // The queue is never closed; a refused task is dropped, as on a stopped pool.
            drop(refused.into_inner());
            return;
        }
        // Pairs with the fence of a thread going to sleep: either it sees this task, or
        // this sees it asleep.
        fence(Ordering::SeqCst);
        if worker.is_none() {
            self.woken_from_outside_at
                .store(self.micros_since_start(Instant::now()), Ordering::Relaxed);
        }
        self.wake_if_needed(worker);
    }

    /// A task was queued on thread `id`'s own queue: wakes a thread that sleeps without a
    /// lookout (it could sleep through this thread blocking), or one to share a crowd.
    fn after_local_push(&self, id: usize) {
        // After the push: pairs with the fence of a thread going to sleep, as in
        // `schedule`.
        fence(Ordering::SeqCst);
        if self.asleep_unwatchful.load(Ordering::SeqCst) > 0 {
            self.wake_one(|sleeping| {
                sleeping
                    .iter()
                    .rposition(|sleeper| sleeper.as_ref().is_some_and(|s| !s.lookout))
            });
        } else if self.locals[id].len() > LOCAL_CROWD
            && self.searching.load(Ordering::SeqCst) == 0
            && self.asleep.load(Ordering::SeqCst) > 0
        {
            self.wake_one(|sleeping| sleeping.iter().rposition(Option::is_some));
        }
    }

    fn micros_since_start(&self, at: Instant) -> u64 {
        // Saturates after half a million years; `max(1)` keeps zero for "never".
        let micros = at.saturating_duration_since(self.started).as_micros();
        u64::try_from(micros).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a thread not of the pool woke one of its tasks lately: a blocking thread
    /// that finished an fsync, say, which will likely finish another soon.
    fn fed_from_outside(&self, now: Instant) -> bool {
        let at = self.woken_from_outside_at.load(Ordering::Relaxed);
        let within = u64::try_from(FED_FROM_OUTSIDE_WITHIN.as_micros()).unwrap_or(u64::MAX);
        at != 0 && self.micros_since_start(now).saturating_sub(at) <= within
    }

    /// Wakes a sleeping thread if the queued tasks outnumber the threads looking for work.
    /// A thread that waits in the reactor and schedules a task (an I/O event woke it)
    /// counts itself awake first, which costs no system call: it is awake already.
    /// `worker`: this thread's number and whether it runs a task, if it is the pool's.
    fn wake_if_needed(&self, worker: Option<(usize, bool)>) {
        if let Some((id, false)) = worker {
            self.unsleep(id);
        }
        // After the fence in `schedule`: a thread that went to sleep unseen here sees the
        // task when it looks once more (see `sleep`).
        if self.queue.len() <= self.searching.load(Ordering::SeqCst)
            || self.asleep.load(Ordering::SeqCst) == 0
        {
            return;
        }
        self.wake_one(|sleeping| {
            // A parked thread first: the one in the reactor stays there, watching the
            // sockets while the other runs the task.
            let parked = sleeping.iter().rposition(|sleeper| {
                matches!(
                    sleeper,
                    Some(Sleeper {
                        how: Bed::Parked(_),
                        ..
                    })
                )
            });
            parked.or_else(|| sleeping.iter().rposition(Option::is_some))
        });
    }

    /// The pool's socket reactor, if it has one.
    pub(crate) fn reactor(&self) -> Option<Arc<Reactor>> {
        self.reactor.clone()
    }

    /// The pool's timers.
    pub(crate) fn timers(&self) -> &Timers {
        &self.timers
    }

    /// A timer was set for `at`. Set by a task on the pool, it needs nothing: the thread
    /// running the task looks at the timers before it sleeps. Set from elsewhere, it
    /// wakes a thread if every thread sleeps past it, so that one sleeps less.
    pub(crate) fn timer_set(&self, at: Instant) {
        if self.current_worker().is_some() {
            return;
        }
        self.wake_one(|sleeping| {
            // A thread awake sleeps no longer than the first timer when it next sleeps.
            let all_asleep = sleeping.iter().all(Option::is_some);
            let covered = sleeping
                .iter()
                .flatten()
                .any(|sleeper| sleeper.until.is_some_and(|until| until <= at));
            if !all_asleep || covered {
                return None;
            }
            sleeping.iter().rposition(Option::is_some)
        });
    }

    /// Wakes the sleeping thread that `pick` chooses, if it chooses one.
    fn wake_one(&self, pick: impl FnOnce(&[Option<Sleeper>]) -> Option<usize>) {
        let sleeper = {
            let mut sleeping = lock(&self.sleeping);
            let Some(sleeper) = pick(&sleeping).and_then(|id| sleeping.get_mut(id)?.take()) else {
                return;
            };
            self.count_awake(&sleeper);
            sleeper
        };
        self.wake(sleeper);
    }

    fn wake(&self, sleeper: Sleeper) {
        match sleeper.how {
            Bed::Parked(thread) => thread.unpark(),
            Bed::Reactor => {
                if let Some(reactor) = &self.reactor {
                    reactor.notify();
                }
            }
        }
    }

    /// This thread's number and whether it is running a task, if it is one of this pool's threads.
    fn current_worker(&self) -> Option<(usize, bool)> {
        let me: *const Pool = self;
        WORKER
            .try_with(|worker| match worker.try_borrow().as_deref() {
                Ok(Some(worker)) if worker.pool == me => Some((worker.id, worker.running)),
                _ => None,
            })
            .ok()
            .flatten()
    }

    /// A worker thread's life: run tasks; with none left, wait in the reactor (or park,
    /// if another thread waits there) until woken.
    fn work(self: Arc<Self>, id: usize) {
        let me: *const Pool = &*self;
        WORKER.with(|worker| {
            *worker.borrow_mut() = Some(Worker {
                pool: me,
                id,
                running: false,
                deferred: Vec::new(),
            })
        });
        let mut ran = 0;
        while !self.stopped.load(Ordering::SeqCst) {
            if ran == BUDGET {
                // A thread that keeps finding work would otherwise leave the sockets
                // and timers unwatched for as long as the other threads are busy too.
                ran = 0;
                self.timers.fire_due();
                self.poll_sockets();
            }
            // Its own tasks first, but the shared queue's now and then, so that a thread
            // that keeps waking its own never starves the others'.
            let own = &self.locals[id];
            let next = if ran % 8 == 7 {
                self.queue.pop().or_else(|_| own.pop())
            } else {
                own.pop().or_else(|_| self.queue.pop())
            };
            if let Ok(runnable) = next {
                self.searching.fetch_sub(1, Ordering::SeqCst);
                begin_turn();
                runnable.run();
                let mut deferred = end_turn();
                for work in deferred.drain(..) {
                    work();
                }
                give_back_room(deferred);
                self.searching.fetch_add(1, Ordering::SeqCst);
                ran += 1;
                continue;
            }
            ran = 0;
            if self.spin(id) {
                continue;
            }
            self.sleep(id);
        }
        WORKER.with(|worker| worker.borrow_mut().take());
    }

    /// Looks for a task a little longer before sleeping (a few microseconds); `true` if
    /// one came. Every few rounds it looks at the sockets (if no other thread waits in the
    /// reactor) and yields its core.
    ///
    /// A Raft write hands work back and forth between the threads: a thread that sleeps
    /// the moment it runs out must be woken (a system call and a context switch) for the
    /// next step, which mostly comes within microseconds. While a thread looks on, it
    /// counts as looking for work, so queuing a task wakes nobody. The yields matter when
    /// the pool shares the cores: the threads of the `blocking` pool that write and fsync
    /// the log must not wait for the spin to end. Measured with `raft-bench` (interleaved
    /// runs, against no spin):
    /// * `inprocess --clients 1`: 131k -> 180k-200k writes/s, 13.6 -> 10-11 us of CPU per
    ///   write;
    /// * `tcp --clients 1`: p50 26 -> 22 us, 53 -> 44-46 us of CPU per write;
    /// * `durable --clients 64`: without the yields, the spin lost 5-10% (95k-116k writes/s
    ///   against 107k-120k before); with a yield every 10 rounds, 130k-165k.
    ///
    /// A pool that no thread outside feeds (no blocking thread works for its tasks) yields
    /// only every [`SPIN_ROUNDS_PER_YIELD_UNFED`] rounds: a yield is a system call, and
    /// there it gave way to nothing of ours. Against a yield every 10 rounds (interleaved
    /// pairs): `tcp --clients 1` p50 -9%, `inprocess --clients 1` +8% writes/s and -8%
    /// CPU per write (6 pairs each); `durable --clients 64`, which yields every 10 rounds
    /// still, and `raft-kv` at 16 and 64 clients, no change beyond the noise. Yielding
    /// every 50 rounds in the durable scenario too had cost it 7% and 17% on the p99.
    ///
    /// The long spin: while threads outside the pool wake its tasks (the blocking threads
    /// finishing fsyncs), the thread watching the sockets looks on for up to
    /// [`LONG_SPIN`], firing the timers that come due meanwhile; the other threads park
    /// as before. A durable write waits for fsyncs of a few hundred microseconds; a pool
    /// asleep by then must be woken by the blocking thread, and waking an idle core costs
    /// tens of microseconds on a virtual machine. Measured against the short spin alone
    /// (interleaved pairs): `durable --clients 1`, p50 -14%, p99 -16%, CPU per write +9%
    /// (6 pairs); `durable --clients 64`, +5% writes/s (4 pairs); `raft-kv` at 1, 16 and
    /// 64 clients, no change beyond the noise. Only one thread spins long, and only when
    /// fed from outside: a pool whose work all comes through its sockets, such as
    /// `raft-kv bench`'s clients, spins as short as before.
    fn spin(&self, id: usize) -> bool {
        // A thread that keeps finding work while it spins never reaches `sleep`, and may
        // not run a budget's worth of tasks in a row either: the timers are its to fire.
        self.timers.fire_due();
        let reactor = self.reactor.as_ref().filter(|reactor| reactor.try_enter());
        let now = Instant::now();
        let fed = self.fed_from_outside(now);
        let long_until = (fed && reactor.is_some()).then(|| now + LONG_SPIN);
        let rounds_per_yield = if fed {
            SPIN_ROUNDS_PER_LOOK
        } else {
            SPIN_ROUNDS_PER_YIELD_UNFED
        };
        let mut found = false;
        for round in 1.. {
            if !self.queue.is_empty() {
                found = true;
                break;
            }
            if round >= STEAL_AFTER_ROUNDS && self.steal(id) {
                found = true;
                break;
            }
            if round % SPIN_ROUNDS_PER_LOOK == 0 {
                if let Some(reactor) = reactor {
                    reactor.wait(Some(Duration::ZERO));
                }
                if round % rounds_per_yield == 0 {
                    thread::yield_now();
                }
                if round >= SPIN_ROUNDS {
                    match long_until {
                        Some(until) if Instant::now() < until => self.timers.fire_due(),
                        _ => break,
                    }
                }
            } else {
                std::hint::spin_loop();
            }
        }
        if let Some(reactor) = reactor {
            reactor.leave();
        }
        found || !self.queue.is_empty()
    }

    /// Moves half the tasks queued on another thread (at least one) to this thread's own
    /// queue; `true` if there were any. Taking one at a time left the thief spinning
    /// again after each: `tcp --clients 64` gained 5% from halves.
    fn steal(&self, id: usize) -> bool {
        for (other, queue) in self.locals.iter().enumerate() {
            if other != id && !queue.is_empty() {
                let half = queue.len().div_ceil(2);
                let mut took = false;
                for _ in 0..half {
                    let Ok(runnable) = queue.pop() else { break };
                    took = true;
                    if let Err(refused) = self.locals[id].push(runnable) {
                        drop(refused.into_inner());
                    }
                }
                if took {
                    return true;
                }
            }
        }
        false
    }

    /// Takes the socket events already there, if no other thread waits for them.
    fn poll_sockets(&self) {
        if let Some(reactor) = &self.reactor
            && reactor.try_enter()
        {
            reactor.wait(Some(Duration::ZERO));
            reactor.leave();
        }
    }

    /// Sleeps until woken, or until the first timer is due (or not at all, if work came
    /// meanwhile): in the reactor if no other thread waits there, else parked.
    fn sleep(&self, id: usize) {
        self.timers.fire_due();
        let reactor = self.reactor.as_ref().filter(|reactor| reactor.try_enter());
        let (until, lookout) = {
            let mut sleeping = lock(&self.sleeping);
            // Read under the lock, so that a timer set from outside the pool either is
            // seen here or sees this thread asleep (see `timer_set`).
            let until = self.timers.earliest();
            let how = match reactor {
                Some(_) => Bed::Reactor,
                None => Bed::Parked(thread::current()),
            };
            // Another thread awake may queue tasks on itself and then block: look at
            // them now and then. With every other thread asleep, whichever wakes first
            // and queues a task on itself wakes this one (see `after_local_push`).
            // `asleep` counts the others: this thread's entry was taken when it last
            // woke (`unsleep`), and the count changes only under this lock.
            debug_assert!(sleeping[id].is_none(), "a thread asleep twice");
            let lookout = self.asleep.load(Ordering::SeqCst) + 1 < sleeping.len();
            sleeping[id] = Some(Sleeper {
                how,
                lookout,
                until,
            });
            self.asleep.fetch_add(1, Ordering::SeqCst);
            if !lookout {
                self.asleep_unwatchful.fetch_add(1, Ordering::SeqCst);
            }
            self.searching.fetch_sub(1, Ordering::SeqCst);
            (until, lookout)
        };
        // Then look once more, since a task queued after the look that found none saw
        // this thread still searching and woke nobody; and at the tasks queued on other
        // threads, which a thread queuing them after this look wakes this one for.
        fence(Ordering::SeqCst);
        let queued_elsewhere = self.locals.iter().any(|queue| !queue.is_empty());
        if self.queue.is_empty() && !queued_elsewhere && !self.stopped.load(Ordering::SeqCst) {
            let timeout = until.map(|until| until.saturating_duration_since(Instant::now()));
            let timeout = match (timeout, lookout) {
                (Some(timeout), true) => Some(timeout.min(LOCAL_LOOKOUT)),
                (None, true) => Some(LOCAL_LOOKOUT),
                (timeout, false) => timeout,
            };
            match (reactor, timeout) {
                // Until a socket event, a notification or the timeout; the events' tasks
                // are queued.
                (Some(reactor), timeout) => reactor.wait(timeout),
                (None, timeout) => self.park(id, timeout),
            }
        }
        if let Some(reactor) = reactor {
            reactor.leave();
        }
        // Awake again, by its own hand or by whoever took its entry.
        self.unsleep(id);
    }

    /// Parks this thread (asleep as `id`) until woken, for at most `timeout`.
    ///
    /// A thread parks because another one waits in the reactor. But that one takes the
    /// task an event woke itself, and no longer watches the sockets while it runs it: a
    /// long task (one that blocks its thread on a request, say) would leave every
    /// socket unwatched until the next timer, however idle this thread. So it looks every
    /// [`PARKED_LOOKOUT`], and returns to take the reactor if nobody holds it.
    /// `raft-net-smol`'s `a_pool_task_blocking_on_its_reply_gets_it` waited 7.5 s for its
    /// reply (until the connection's sweep ticked) in half of its runs without this.
    fn park(&self, id: usize, timeout: Option<Duration>) {
        // Without a reactor of the pool's own, async-io's thread watches the sockets.
        let Some(reactor) = &self.reactor else {
            // A spurious return only sends the thread round its loop once more.
            match timeout {
                Some(timeout) => thread::park_timeout(timeout),
                None => thread::park(),
            }
            return;
        };
        let until = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        loop {
            let left = until.map(|until| until.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return;
            }
            // A spurious return only sends the thread round its loop once more.
            thread::park_timeout(left.map_or(PARKED_LOOKOUT, |left| left.min(PARKED_LOOKOUT)));
            let woken = lock(&self.sleeping)[id].is_none();
            let unwatched = !reactor.is_entered();
            if woken || unwatched || !self.queue.is_empty() || self.stopped.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Whether every thread sleeps.
    #[cfg(test)]
    pub(crate) fn all_asleep(&self) -> bool {
        lock(&self.sleeping).iter().all(Option::is_some)
    }

    /// Takes this thread off the sleepers if it is still on them.
    fn unsleep(&self, id: usize) {
        // None asleep: this thread's entry is gone too (its own count came before).
        if self.asleep.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut sleeping = lock(&self.sleeping);
        if let Some(sleeper) = sleeping[id].take() {
            self.count_awake(&sleeper);
        }
    }

    /// Counts a thread whose entry was just taken from `sleeping` (under its lock) as
    /// awake and looking for work.
    fn count_awake(&self, sleeper: &Sleeper) {
        self.asleep.fetch_sub(1, Ordering::SeqCst);
        if !sleeper.lookout {
            self.asleep_unwatchful.fetch_sub(1, Ordering::SeqCst);
        }
        self.searching.fetch_add(1, Ordering::SeqCst);
    }
}

/// Marks this thread as running a task.
fn begin_turn() {
    WORKER.with(|worker| {
        if let Some(worker) = worker.borrow_mut().as_mut() {
            worker.running = true;
        }
    });
}

/// Hands the emptied vector of deferred work back to this thread, so that the next
/// turn's deferrals do not grow a new one (one allocation or more per turn that
/// deferred, otherwise).
fn give_back_room(emptied: Vec<Deferred>) {
    WORKER.with(|worker| {
        if let Some(worker) = worker.borrow_mut().as_mut()
            && worker.deferred.capacity() < emptied.capacity()
            && worker.deferred.is_empty()
        {
            worker.deferred = emptied;
        }
    });
}

/// Marks this thread as running no task; returns the work the task deferred.
fn end_turn() -> Vec<Deferred> {
    WORKER.with(|worker| match worker.borrow_mut().as_mut() {
        Some(worker) => {
            worker.running = false;
            std::mem::take(&mut worker.deferred)
        }
        None => Vec::new(),
    })
}

impl Drop for Pool {
    fn drop(&mut self) {
        // A sleep set on the pool's timers and awaited outside it goes on on async-io's.
        self.timers.wake_all();
        // Waking a task of a dropped pool drops its future (its schedule finds no pool).
        let wakers = std::mem::take(&mut *lock(&self.tasks));
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

/// Takes a finished (or dropped) task off the pool's list.
struct Forget {
    pool: Weak<Pool>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            lock(&pool.tasks).remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::test_support::eventually;

    /// Tasks that hand a token around a ring, each woken by the one before it (on either
    /// thread, or from outside): every hand-off must wake someone, or the ring stalls.
    #[test]
    fn a_ring_of_tasks_never_stalls() {
        let handle = Pool::start(2);
        let pool = handle.upgrade().expect("running");
        const TASKS: usize = 8;
        const ROUNDS: u64 = 20_000;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..TASKS)
            .map(|_| smol::channel::unbounded::<u64>())
            .unzip();
        let finished = Arc::new(AtomicU64::new(0));
        for (at, inbox) in receivers.into_iter().enumerate() {
            let next = senders[(at + 1) % TASKS].clone();
            let finished = Arc::clone(&finished);
            pool.spawn(async move {
                while let Ok(token) = inbox.recv().await {
                    if token == ROUNDS {
                        finished.fetch_add(1, Ordering::SeqCst);
                        // Pass the end on so that every task finishes.
                        let _ = next.send(token).await;
                        return;
                    }
                    let _ = next.send(token + 1).await;
                }
            });
        }
        // The token enters from a thread that is not the pool's.
        senders[0].send_blocking(0).expect("open");
        let all = eventually(|| finished.load(Ordering::SeqCst) == TASKS as u64);
        pool.stop();
        assert!(
            all,
            "only {} tasks finished",
            finished.load(Ordering::SeqCst)
        );
    }

    /// A task that wakes another and then blocks its thread until that one answers (as a
    /// task blocking on a request does): the woken task is queued on the blocked thread,
    /// so the other thread must take it, whether it sleeps with a lookout or without.
    #[test]
    fn a_task_queued_on_a_thread_that_then_blocks_runs_elsewhere() {
        let handle = Pool::start(2);
        let pool = handle.upgrade().expect("running");
        let (ask, asked) = smol::channel::unbounded::<u64>();
        let (answer, answers) = std::sync::mpsc::channel::<u64>();
        let answers = Arc::new(Mutex::new(answers));
        pool.spawn(async move {
            while let Ok(n) = asked.recv().await {
                let _ = answer.send(n);
            }
        });
        let (done, finished) = std::sync::mpsc::channel::<Option<u64>>();
        for round in 0..50u64 {
            let (ask, answers, done) = (ask.clone(), Arc::clone(&answers), done.clone());
            pool.spawn(async move {
                // Wakes the answering task from this running task, then blocks.
                let _ = ask.try_send(round);
                let got = lock(&answers).recv_timeout(Duration::from_secs(20)).ok();
                let _ = done.send(got);
            });
            let got = finished.recv_timeout(Duration::from_secs(30));
            assert_eq!(got, Ok(Some(round)), "round {round}");
            // Apart, so that the other thread is found asleep in some rounds.
            if round % 2 == 0 {
                assert!(eventually(|| pool.all_asleep()));
            }
        }
        pool.stop();
    }

    /// A task answering a thread outside the pool: each request arrives while the pool's
    /// threads are going to sleep after the last answer, the moment a wake can be lost.
    #[test]
    fn a_task_woken_from_outside_as_the_pool_goes_to_sleep_runs() {
        let handle = Pool::start(2);
        let pool = handle.upgrade().expect("running");
        let (requests, inbox) = smol::channel::bounded::<u64>(1);
        let (outbox, answers) = smol::channel::bounded::<u64>(1);
        pool.spawn(async move {
            while let Ok(n) = inbox.recv().await {
                let _ = outbox.send(n).await;
            }
        });
        // The outside thread spins rather than sleeps, so that its next request lands
        // within a few instructions of the answer, while the pool's thread parks.
        // A lost wake leaves a request unanswered for good; a machine busy with other
        // work (each answer then waits for the scheduler, milliseconds) only makes the
        // round trips slow, so the test runs for at most 20 s, as many as it can.
        let stop_at = Instant::now() + Duration::from_secs(20);
        let mut answered = Ok(());
        'requests: for n in 0..50_000 {
            if Instant::now() > stop_at {
                break;
            }
            if requests.try_send(n).is_err() {
                answered = Err(n);
                break;
            }
            let lost_after = Instant::now() + Duration::from_secs(10);
            loop {
                match answers.try_recv() {
                    Ok(answer) if answer == n => break,
                    Ok(_) => {
                        answered = Err(n);
                        break 'requests;
                    }
                    Err(_) if Instant::now() > lost_after => {
                        answered = Err(n);
                        break 'requests;
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        }
        pool.stop();
        assert_eq!(answered, Ok(()), "a wake was lost");
    }

    /// The long spin's signal: only a wake from a thread not of the pool marks the pool
    /// as fed from outside; its tasks waking each other do not.
    #[test]
    fn only_wakes_from_outside_the_pool_mark_it_fed_from_outside() {
        let handle = Pool::start(2);
        let pool = handle.upgrade().expect("running");
        assert!(
            !pool.fed_from_outside(Instant::now()),
            "fed before any task"
        );
        const HOPS: u64 = 2_000;
        let (to_first, first) = smol::channel::unbounded::<u64>();
        let (to_second, second) = smol::channel::unbounded::<u64>();
        let (to_outside, outside) = smol::channel::unbounded::<u64>();
        // Two tasks pass a token back and forth, counting it down; the first starts once
        // a timer of the pool fires (a wake from within, as every hop is).
        let timer_pool = Arc::clone(&pool);
        pool.spawn(async move {
            crate::timers::Sleep::new(&timer_pool, Duration::from_millis(50)).await;
            let mut token = HOPS;
            while token > 0 {
                if to_second.send(token).await.is_err() {
                    return;
                }
                match first.recv().await {
                    Ok(next) => token = next,
                    Err(_) => return,
                }
            }
            let _ = to_outside.send(token).await;
        });
        pool.spawn(async move {
            while let Ok(token) = second.recv().await {
                let _ = to_first.send(token - 1).await;
            }
        });
        // Spawning from here marked the pool (read as a mark, not as `fed_from_outside`,
        // whose 1 ms window a descheduled test thread could outlast); from now on only
        // the pool's own threads wake its tasks.
        assert_ne!(
            pool.woken_from_outside_at.load(Ordering::Relaxed),
            0,
            "spawning from outside left no mark"
        );
        pool.woken_from_outside_at.store(0, Ordering::Relaxed);
        assert_eq!(outside.recv_blocking(), Ok(0));
        assert_eq!(
            pool.woken_from_outside_at.load(Ordering::Relaxed),
            0,
            "tasks woken by the pool's own threads marked it fed from outside"
        );
        pool.stop();
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn stopping_drops_the_tasks_that_are_waiting() {
        let handle = Pool::start(2);
        let pool = handle.upgrade().expect("running");
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&dropped));
        let (_keep, never) = smol::channel::bounded::<()>(1);
        let (started_tx, started) = smol::channel::bounded::<()>(1);
        pool.spawn(async move {
            let _flag = flag;
            let _ = started_tx.send(()).await;
            let _ = never.recv().await;
        });
        started.recv_blocking().expect("the task ran");
        pool.stop();
        drop(pool);
        assert!(
            eventually(|| dropped.load(Ordering::SeqCst)),
            "the waiting task was kept"
        );
        assert!(
            eventually(|| handle.upgrade().is_none()),
            "the threads kept the pool"
        );
    }
}
