//! A proposer's answer: one value, sent once by the apply task, awaited by one task.
//!
//! Why not `futures::channel::oneshot`, which it was: that channel guards its value, the
//! receiver's waker and the sender's waker with a lock each, plus a completion flag, and
//! both ends take and release them when they send, poll and drop: about eighteen locked
//! instructions per answer. `perf` over `raft-bench inprocess --clients 256 --threads 1`
//! put 15% of the run in that channel, most of it in those instructions. A proposer's
//! answer needs neither a sender's waker (nobody waits for the receiver to go) nor a lock
//! per field: one mutex over the slot makes a send one lock and unlock, a poll one more.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// What the slot holds.
enum Slot<T> {
    /// Nothing sent yet; the receiving task, once it polled.
    Waiting(Option<Waker>),
    Sent(T),
    /// The sender went without sending.
    Dropped,
    /// The receiver took what was there.
    Taken,
}

/// Creates a slot and its two ends.
pub(crate) fn channel<T>() -> (ReplySender<T>, ReplyReceiver<T>) {
    let slot = Arc::new(Mutex::new(Slot::Waiting(None)));
    (
        ReplySender {
            slot: Some(Arc::clone(&slot)),
        },
        ReplyReceiver { slot },
    )
}

fn lock<T>(slot: &Mutex<Slot<T>>) -> MutexGuard<'_, Slot<T>> {
    // Nothing panics while the lock is held (values and wakers are only moved), so a
    // poisoned lock still holds a consistent slot.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The apply task's end: sends once, or, dropped unsent, tells the receiver so.
pub(crate) struct ReplySender<T> {
    /// `None` once sent.
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

impl<T> ReplySender<T> {
    /// Hands `value` to the receiver, waking it if it waits. A receiver that is gone
    /// never sees it; the value is dropped with the slot.
    pub(crate) fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            settle(&slot, Slot::Sent(value));
        }
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            settle(&slot, Slot::Dropped);
        }
    }
}

/// Puts the sender's last word in the slot and wakes the receiver, outside the lock.
fn settle<T>(slot: &Mutex<Slot<T>>, last: Slot<T>) {
    let waiting = match std::mem::replace(&mut *lock(slot), last) {
        Slot::Waiting(waker) => waker,
        // The sender speaks once: it was waiting.
        Slot::Sent(_) | Slot::Dropped | Slot::Taken => None,
    };
    if let Some(waker) = waiting {
        waker.wake();
    }
}

/// The proposer's end: resolves to the value sent, or to `Err(Dropped)` if the sender
/// went without sending.
///
/// Dropped while it waits (a proposer that gave up), it leaves its waker in the slot,
/// and the send wakes that task once for nothing: cheaper than a lock in every drop.
pub(crate) struct ReplyReceiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

/// The sender went without sending: the node stopped before it answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Dropped;

impl<T> Future for ReplyReceiver<T> {
    type Output = Result<T, Dropped>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Sent(value) => Poll::Ready(Ok(value)),
            // Polled again after it resolved (an `async fn` never does): there is
            // nothing more to come.
            Slot::Dropped | Slot::Taken => Poll::Ready(Err(Dropped)),
            Slot::Waiting(waker) => {
                let waker = match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => waker,
                    _ => cx.waker().clone(),
                };
                *slot = Slot::Waiting(Some(waker));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use futures::executor::block_on;

    use super::*;

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once<T>(
        receiver: &mut ReplyReceiver<T>,
        wakes: &Arc<CountWakes>,
    ) -> Poll<Result<T, Dropped>> {
        let waker = Waker::from(Arc::clone(wakes));
        std::pin::Pin::new(receiver).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_value_sent_before_the_receiver_polls_is_there() {
        let (sender, receiver) = channel();
        sender.send(7);
        assert_eq!(block_on(receiver), Ok(7));
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_by_the_send() {
        let (sender, mut receiver) = channel();
        let wakes = Arc::new(CountWakes::default());
        assert!(poll_once(&mut receiver, &wakes).is_pending());
        assert!(poll_once(&mut receiver, &wakes).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        sender.send("answer");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut receiver, &wakes), Poll::Ready(Ok("answer")));
    }

    #[test]
    fn a_sender_dropped_unsent_wakes_the_receiver_with_an_error() {
        let (sender, mut receiver) = channel::<u8>();
        let wakes = Arc::new(CountWakes::default());
        assert!(poll_once(&mut receiver, &wakes).is_pending());
        drop(sender);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut receiver, &wakes), Poll::Ready(Err(Dropped)));
    }

    #[test]
    fn a_value_sent_to_a_receiver_gone_is_dropped_with_the_slot() {
        let value = Arc::new(());
        let (sender, receiver) = channel();
        drop(receiver);
        sender.send(Arc::clone(&value));
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn a_receiver_waiting_on_one_thread_is_woken_by_a_send_from_another() {
        // The send is over (the thread joined) before the checks: a missing wake fails
        // the count rather than leaving the test waiting for good.
        let (sender, mut receiver) = channel();
        let wakes = Arc::new(CountWakes::default());
        assert!(poll_once(&mut receiver, &wakes).is_pending());
        std::thread::spawn(move || sender.send(String::from("done")))
            .join()
            .expect("the sending thread ends");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll_once(&mut receiver, &wakes),
            Poll::Ready(Ok(String::from("done")))
        );
    }
}
