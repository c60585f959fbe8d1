//! The [`Runtime`] suite: tasks run and can be joined or detached, timers fire in order
//! and never early, the clock is monotonic, and seeds behave.
//!
//! Run it from inside the runtime under test (for example inside its `block_on`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{join_all, pending};
use raft_traits::{Runtime, timeout};

use super::{CaseError, CaseResult, Report, ensure, ensure_eq};

/// Provides the runtime under test.
pub trait RuntimeFactory {
    /// The runtime under test.
    type Runtime: Runtime;

    /// The runtime the suite runs on.
    fn runtime(&self) -> Self::Runtime;

    /// A runtime whose seeds are reproducible from `seed`, if the implementation has such
    /// a mode (a simulator does; a real runtime draws from the system and returns `None`).
    fn seeded(&mut self, seed: u64) -> Option<Self::Runtime> {
        let _ = seed;
        None
    }
}

/// Runs every case.
pub async fn run<F: RuntimeFactory>(factory: &mut F) -> Report {
    let rt = factory.runtime();
    let mut report = Report::new("Runtime");
    report
        .case("spawned_task_can_be_joined", spawn_and_join(&rt))
        .await;
    report
        .case("dropping_the_handle_detaches_the_task", detach(&rt))
        .await;
    report
        .case("sleeps_end_in_deadline_order", sleep_order(&rt))
        .await;
    report
        .case("sleep_never_ends_early", sleep_lower_bound(&rt))
        .await;
    report.case("now_is_monotonic", monotonic(&rt)).await;
    report
        .case("timeout_fires_and_passes_through", timeouts(&rt))
        .await;
    report.case("many_timers_all_fire", many_timers(&rt)).await;
    report.case("seeds_vary", seeds_vary(&rt)).await;
    report
        .case("seeded_runtimes_are_reproducible", seeded(factory))
        .await;
    report
}

/// Generous bound for anything that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

async fn spawn_and_join<R: Runtime>(rt: &R) -> CaseResult {
    let ready = rt.spawn(async { 7 });
    ensure_eq!(ready.await, Ok(7), "output of a task that finishes at once");
    let sleeper = {
        let rt2 = rt.clone();
        rt.spawn(async move {
            rt2.sleep(Duration::from_millis(5)).await;
            "woke"
        })
    };
    let joined = timeout(rt, PATIENCE, sleeper).await;
    ensure_eq!(joined, Ok(Ok("woke")), "output of a task that sleeps first");
    Ok(())
}

async fn detach<R: Runtime>(rt: &R) -> CaseResult {
    let (done, finished) = oneshot::channel();
    let rt2 = rt.clone();
    drop(rt.spawn(async move {
        rt2.sleep(Duration::from_millis(5)).await;
        let _ = done.send(());
    }));
    let result = timeout(rt, PATIENCE, finished).await;
    ensure!(
        matches!(result, Ok(Ok(()))),
        "a task whose handle was dropped did not run to completion"
    );
    Ok(())
}

async fn sleep_order<R: Runtime>(rt: &R) -> CaseResult {
    let woke = Arc::new(Mutex::new(Vec::new()));
    let delays = [125u64, 25, 100, 50, 75];
    let tasks = delays.map(|ms| {
        let rt2 = rt.clone();
        let woke = Arc::clone(&woke);
        rt.spawn(async move {
            rt2.sleep(Duration::from_millis(ms)).await;
            woke.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
        })
    });
    let all = timeout(rt, PATIENCE, join_all(tasks)).await;
    ensure!(all.is_ok(), "sleeps did not all end within {PATIENCE:?}");
    let order = woke.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ensure_eq!(
        order,
        vec![25, 50, 75, 100, 125],
        "order in which the sleeps ended"
    );
    Ok(())
}

async fn sleep_lower_bound<R: Runtime>(rt: &R) -> CaseResult {
    for ms in [1u64, 10, 30] {
        let before = rt.now();
        rt.sleep(Duration::from_millis(ms)).await;
        let slept = rt.now() - before;
        ensure!(
            slept >= Duration::from_millis(ms),
            "sleep({ms} ms) ended after {slept:?}"
        );
    }
    Ok(())
}

async fn monotonic<R: Runtime>(rt: &R) -> CaseResult {
    let mut last = rt.now();
    for round in 0..2000 {
        if round % 100 == 0 {
            rt.sleep(Duration::from_micros(50)).await;
        }
        let now = rt.now();
        ensure!(now >= last, "now() went back from {last:?} to {now:?}");
        last = now;
    }
    Ok(())
}

async fn timeouts<R: Runtime>(rt: &R) -> CaseResult {
    let before = rt.now();
    let expired = timeout(rt, Duration::from_millis(20), pending::<()>()).await;
    ensure!(
        expired.is_err(),
        "a timeout around a future that never ends did not fire"
    );
    ensure!(
        rt.now() - before >= Duration::from_millis(20),
        "the timeout fired early"
    );
    let passed = timeout(rt, PATIENCE, async { 5 }).await;
    ensure_eq!(passed.ok(), Some(5), "a timeout around a ready future");
    Ok(())
}

async fn many_timers<R: Runtime>(rt: &R) -> CaseResult {
    let sleeps = (0..1000u64).map(|i| rt.sleep(Duration::from_millis(1 + i % 50)));
    let all = timeout(rt, PATIENCE, join_all(sleeps)).await;
    ensure!(
        all.is_ok(),
        "1000 concurrent sleeps of at most 50 ms did not all end in {PATIENCE:?}"
    );
    Ok(())
}

async fn seeds_vary<R: Runtime>(rt: &R) -> CaseResult {
    let seeds: Vec<u64> = (0..8).map(|_| rt.random_seed()).collect();
    ensure!(
        seeds.windows(2).any(|w| w[0] != w[1]),
        "random_seed returned the same value 8 times: {seeds:?}"
    );
    Ok(())
}

async fn seeded<F: RuntimeFactory>(factory: &mut F) -> CaseResult {
    let draw = |rt: F::Runtime| (0..8).map(|_| rt.random_seed()).collect::<Vec<u64>>();
    let (Some(a), Some(b), Some(c)) = (factory.seeded(1), factory.seeded(1), factory.seeded(2))
    else {
        return Err(CaseError::Skipped(
            "the runtime has no seeded mode; node RNGs are seeded through Config::seed".into(),
        ));
    };
    let (a, b, c) = (draw(a), draw(b), draw(c));
    ensure_eq!(
        b,
        a.clone(),
        "seeds of two runtimes made with the same seed"
    );
    ensure!(
        a != c,
        "runtimes made with different seeds drew the same seeds: {a:?}"
    );
    Ok(())
}
