//! Linearizable reads waiting for the event loop, coalesced: every read queued before
//! the loop takes the queue shares one read index and one round of heartbeats.
//!
//! Why sharing is safe (thesis §6.4): a read index must be at least the commit index at
//! the moment the read began. The loop asks the core for an index only after it took
//! the queue, so every read in the batch began before the index was chosen. A read
//! queued after the take waits for the next batch; it never joins one whose index may
//! predate it.
//!
//! Why it pays: a read costs the loop one queue entry and one answer, not an event, a
//! read id and its bookkeeping in the core; at 64 concurrent readers the loop, which
//! runs on one thread, was the bottleneck.

use std::sync::Mutex;

use super::ReadWaiter;

/// The readers waiting for the loop.
#[derive(Default)]
pub(crate) struct ReadQueue {
    inner: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    waiters: Vec<ReadWaiter>,
    /// A notice is on its way to the loop, which will take everything queued.
    announced: bool,
    /// The loop is gone: nobody will take the queue again.
    closed: bool,
}

/// What the reader who queued must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queuing {
    /// Tell the loop: no notice is pending.
    Announce,
    /// Nothing: a pending notice covers this reader too.
    Covered,
    /// The node stopped; the waiter was dropped, which tells the reader so.
    Closed,
}

impl ReadQueue {
    /// Queues a reader.
    pub(crate) fn push(&self, waiter: ReadWaiter) -> Queuing {
        let mut queued = self.lock();
        if queued.closed {
            return Queuing::Closed;
        }
        queued.waiters.push(waiter);
        if queued.announced {
            Queuing::Covered
        } else {
            queued.announced = true;
            Queuing::Announce
        }
    }

    /// Takes every reader queued so far (the loop, on a notice); a reader queued later
    /// announces itself again.
    pub(crate) fn take(&self) -> Vec<ReadWaiter> {
        let mut queued = self.lock();
        queued.announced = false;
        std::mem::take(&mut queued.waiters)
    }

    /// The loop is gone: drops the readers waiting (they learn the node stopped) and
    /// refuses new ones.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut queued = self.lock();
            queued.closed = true;
            std::mem::take(&mut queued.waiters)
        };
        drop(dropped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        // A panic while holding this lock leaves the queue consistent (each step is a
        // single push, take or flag), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use futures::channel::oneshot;

    use super::*;

    #[test]
    fn one_notice_covers_every_reader_queued_before_the_take() {
        let queue = ReadQueue::default();
        let (first, mut first_rx) = oneshot::channel();
        let (second, _second_rx) = oneshot::channel();
        assert_eq!(queue.push(first), Queuing::Announce);
        assert_eq!(queue.push(second), Queuing::Covered);
        let taken = queue.take();
        assert_eq!(taken.len(), 2);
        // After the take, the next reader needs a notice of its own.
        let (third, _third_rx) = oneshot::channel();
        assert_eq!(queue.push(third), Queuing::Announce);
        // The taken waiters belong to the loop now: still waiting, neither answered
        // nor dropped by the queue.
        assert_eq!(first_rx.try_recv(), Ok(None));
        drop(taken);
        queue.close();
        let (fourth, mut fourth_rx) = oneshot::channel();
        assert_eq!(queue.push(fourth), Queuing::Closed);
        assert!(
            fourth_rx.try_recv().is_err(),
            "a closed queue's waiter is dropped"
        );
        assert!(queue.take().is_empty(), "close dropped the queued waiter");
    }
}
