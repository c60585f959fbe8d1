//! A progress bar for long runs (`raft-kv bench`, `raft-bench`, the simulation sweep),
//! drawn by `indicatif` on stderr, and hidden when stderr is not a terminal (or `TERM`
//! is `dumb`): piped or redirected output gets no bar and no control codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar reads the counter.
const TICK: Duration = Duration::from_millis(100);

/// What a [`Progress`] bar measures the run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// A number of operations: the bar fills as the counter reaches it.
    Count(u64),
    /// A length of time: the bar fills with the time elapsed; the counter is shown
    /// beside it.
    Time(Duration),
}

/// A bar on stderr that follows a counter, from a thread of its own, until dropped.
///
/// The caller only increments the counter; the bar reads it every 100 ms. The bar is
/// hidden when stderr is not a terminal (indicatif's stderr draw target), so nothing is
/// drawn in logs or pipes; [`Progress::is_hidden`] tells.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts a bar labelled `label` that shows `done` against `goal`.
    pub fn start(label: impl Into<String>, done: Arc<AtomicU64>, goal: Goal) -> Progress {
        Progress::with_target(label, done, goal, ProgressDrawTarget::stderr())
    }

    /// [`start`](Self::start), drawing to `target`.
    pub fn with_target(
        label: impl Into<String>,
        done: Arc<AtomicU64>,
        goal: Goal,
        target: ProgressDrawTarget,
    ) -> Progress {
        let (length, template) = match goal {
            Goal::Count(total) => (
                total,
                "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, {elapsed_precise}, ETA {eta}) {msg}",
            ),
            Goal::Time(length) => (
                u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                "{prefix} [{bar:30}] {elapsed_precise} {msg}",
            ),
        };
        let bar = ProgressBar::with_draw_target(Some(length), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.into());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if bar.is_hidden() {
            None
        } else {
            let bar = bar.clone();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("progress".to_owned())
                .spawn(move || {
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let count = done.load(Ordering::Relaxed);
                        match goal {
                            Goal::Count(_) => bar.set_position(count),
                            Goal::Time(_) => {
                                let elapsed = started.elapsed();
                                let rate = count as f64 / elapsed.as_secs_f64().max(1e-9);
                                bar.set_position(
                                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                                );
                                bar.set_message(format!("{count} ops ({rate:.0}/s)"));
                            }
                        }
                        std::thread::sleep(TICK);
                    }
                })
                .ok()
        };
        Progress { bar, stop, thread }
    }

    /// Shows `message` after the counts (with a [`Goal::Count`]; a [`Goal::Time`] bar
    /// shows the counter there).
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Whether the bar is hidden (stderr is not a terminal).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.bar.finish_and_clear();
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("hidden", &self.is_hidden())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_to_a_hidden_target_draws_nothing_and_stops() {
        let done = Arc::new(AtomicU64::new(0));
        let progress = Progress::with_target(
            "test",
            Arc::clone(&done),
            Goal::Count(10),
            ProgressDrawTarget::hidden(),
        );
        assert!(progress.is_hidden());
        assert!(progress.thread.is_none());
        done.store(10, Ordering::Relaxed);
        drop(progress);
    }
}
