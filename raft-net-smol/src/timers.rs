//! The timers of a [`SmolRuntime::with_threads`](crate::SmolRuntime::with_threads) pool,
//! fired by the pool's own threads.
//!
//! Why not async-io's timers, which the pool used before: async-io wakes the thread in its
//! reactor for every timer set, so that it can wait less if the new timer comes first. Once
//! the pool's threads no longer wait in async-io's reactor, that thread is a third one
//! (async-io's own, or whichever thread sits in `block_on`), and a leader sets a timer for
//! its commit notice after most writes: in process, with one client, that woke the third
//! thread 0.6 times per write and cost a third of the throughput.
//!
//! Here setting a timer from a task on the pool wakes nobody: the thread running the task
//! is awake, and a thread looks at the timers before it sleeps and sleeps no longer than
//! until the first of them. Only a timer set from outside the pool may have to wake a
//! thread, when every thread sleeps past it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::workers::Pool;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The timers set and not yet fired, by deadline.
#[derive(Default)]
pub(crate) struct Timers {
    set: Mutex<BTreeMap<(Instant, u64), Waker>>,
    next_id: AtomicU64,
}

impl Timers {
    /// The first deadline, if any timer is set.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        lock(&self.set).keys().next().map(|(at, _)| *at)
    }

    /// Fires every timer due by now: wakes its task and forgets it.
    pub(crate) fn fire_due(&self) {
        let due = {
            let mut set = lock(&self.set);
            let Some(&(first, _)) = set.keys().next() else {
                return;
            };
            let now = Instant::now();
            if first > now {
                // The usual case, checked without moving the set.
                return;
            }
            let later = set.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *set, later)
        };
        for (_, waker) in due {
            waker.wake();
        }
    }

    /// Wakes the task of every timer, due or not, and forgets them all.
    pub(crate) fn wake_all(&self) {
        let set = std::mem::take(&mut *lock(&self.set));
        for (_, waker) in set {
            waker.wake();
        }
    }

    fn insert(&self, at: Instant, waker: &Waker) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.set).insert((at, id), waker.clone());
        id
    }

    /// Replaces the waker of a timer still set; `false` if it has fired.
    fn update(&self, at: Instant, id: u64, waker: &Waker) -> bool {
        match lock(&self.set).get_mut(&(at, id)) {
            Some(set) => {
                if !set.will_wake(waker) {
                    *set = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&self, at: Instant, id: u64) {
        lock(&self.set).remove(&(at, id));
    }
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("set", &lock(&self.set).len())
            .finish_non_exhaustive()
    }
}

/// A future that completes once `duration` has passed, on a pool's timers; on async-io's
/// if the pool stops first.
pub(crate) struct Sleep {
    pool: Weak<Pool>,
    /// The deadline; `None` if it lies past what the clock can count (never).
    at: Option<Instant>,
    /// The timer's id while it is set.
    id: Option<u64>,
    /// The pool stopped before the deadline.
    orphaned: Option<smol::Timer>,
}

impl Sleep {
    pub(crate) fn new(pool: &Arc<Pool>, duration: Duration) -> Sleep {
        Sleep {
            pool: Arc::downgrade(pool),
            at: Instant::now().checked_add(duration),
            id: None,
            orphaned: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(at) = this.at else {
            return Poll::Pending;
        };
        if let Some(timer) = &mut this.orphaned {
            return Pin::new(timer).poll(cx).map(|_| ());
        }
        let pool = this.pool.upgrade();
        // Still set: not due yet (a timer is taken off when it fires), so no need to read
        // the clock, which a node's loop would do on every turn.
        if let (Some(id), Some(pool)) = (this.id, &pool)
            && pool.timers().update(at, id, cx.waker())
        {
            return Poll::Pending;
        }
        if Instant::now() >= at {
            if let (Some(id), Some(pool)) = (this.id.take(), &pool) {
                pool.timers().remove(at, id);
            }
            return Poll::Ready(());
        }
        let Some(pool) = pool else {
            this.id = None;
            let timer = this.orphaned.insert(smol::Timer::at(at));
            return Pin::new(timer).poll(cx).map(|_| ());
        };
        // Not set yet (or fired while the clock read above says it is not due: then
        // it is set again, and fires again).
        this.id = Some(pool.timers().insert(at, cx.waker()));
        pool.timer_set(at);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(at), Some(id), Some(pool)) = (self.at, self.id, self.pool.upgrade()) {
            pool.timers().remove(at, id);
        }
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("at", &self.at)
            .field("set", &self.id.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;
    use crate::test_support::{self, eventually};

    /// `future`, or a panic after 30 s (on async-io's timer, not the pool's).
    fn within_30s<T>(future: impl Future<Output = T>) -> T {
        smol::block_on(test_support::within_30s(future))
    }

    #[test]
    fn a_sleep_on_the_pool_ends_once_its_time_has_passed() {
        let pool = Pool::start(2).upgrade().expect("running");
        let (done, slept) = smol::channel::bounded(1);
        let sleeping = Arc::clone(&pool);
        pool.spawn(async move {
            let start = Instant::now();
            Sleep::new(&sleeping, Duration::from_millis(30)).await;
            let _ = done.send(start.elapsed()).await;
        });
        let slept = within_30s(slept.recv()).expect("the task finished");
        pool.stop();
        assert!(slept >= Duration::from_millis(30), "woke after {slept:?}");
    }

    /// Every thread of the pool sleeps without a deadline (no timer is set) when a thread
    /// outside the pool sets one: a thread of the pool must wake to sleep less.
    #[test]
    fn a_timer_set_from_outside_the_pool_wakes_a_thread_that_sleeps_past_it() {
        let pool = Pool::start(2).upgrade().expect("running");
        assert!(
            eventually(|| pool.all_asleep()),
            "the idle pool never slept"
        );
        within_30s(Sleep::new(&pool, Duration::from_millis(20)));
        pool.stop();
    }

    /// Two tasks hand a token back and forth without end, so that a thread out of work
    /// mostly finds more while it spins and the threads seldom sleep: the timers must fire
    /// anyway (between budgets of tasks, and before each spin).
    #[test]
    fn timers_fire_while_the_threads_never_run_out_of_work() {
        let pool = Pool::start(2).upgrade().expect("running");
        let (ping, pings) = smol::channel::bounded::<()>(1);
        let (pong, pongs) = smol::channel::bounded::<()>(1);
        let serve = |inbox: smol::channel::Receiver<()>, outbox: smol::channel::Sender<()>| async move {
            while inbox.recv().await.is_ok() && outbox.send(()).await.is_ok() {}
        };
        pool.spawn(serve(pings, pong.clone()));
        pool.spawn(serve(pongs, ping.clone()));
        ping.send_blocking(()).expect("open");
        let (done, slept) = smol::channel::bounded(1);
        let sleeping = Arc::clone(&pool);
        pool.spawn(async move {
            Sleep::new(&sleeping, Duration::from_millis(20)).await;
            let _ = done.send(()).await;
        });
        let slept = within_30s(slept.recv());
        pool.stop();
        assert!(slept.is_ok(), "the sleeping task went away");
    }

    #[test]
    fn a_dropped_sleep_takes_its_timer_off() {
        let pool = Pool::start(1).upgrade().expect("running");
        let mut sleep = Box::pin(Sleep::new(&pool, Duration::from_secs(3600)));
        assert!(futures::FutureExt::now_or_never(&mut sleep).is_none());
        assert!(pool.timers().earliest().is_some(), "the timer was set");
        drop(sleep);
        assert_eq!(pool.timers().earliest(), None);
        pool.stop();
    }

    #[test]
    fn a_sleep_made_on_a_pool_that_stopped_still_ends() {
        let pool = Pool::start(1).upgrade().expect("running");
        let sleep = Sleep::new(&pool, Duration::from_millis(20));
        let gone = Arc::downgrade(&pool);
        pool.stop();
        drop(pool);
        assert!(eventually(|| gone.upgrade().is_none()), "the pool lived on");
        within_30s(sleep);
    }

    /// The pool stops while a thread outside it awaits a sleep set on its timers: no
    /// thread of the pool will fire it, so the sleep must go on on async-io's.
    #[test]
    fn a_sleep_set_on_a_pool_that_stops_while_it_waits_still_ends() {
        let pool = Pool::start(1).upgrade().expect("running");
        let sleep = Sleep::new(&pool, Duration::from_millis(100));
        let stopper = thread::spawn(move || {
            assert!(
                eventually(|| pool.timers().earliest().is_some()),
                "never set"
            );
            let gone = Arc::downgrade(&pool);
            pool.stop();
            drop(pool);
            assert!(eventually(|| gone.upgrade().is_none()), "the pool lived on");
        });
        within_30s(sleep);
        stopper.join().expect("the pool stopped");
    }
}
