//! The inboxes of a node's two tasks (the event loop's events, the apply task's
//! messages): unbounded queues with many senders and one receiving task.
//!
//! Why not `async-channel`, which they were: it serves any number of receivers, each
//! waiting in an intrusive list under a lock, and a receive that waits allocates a
//! listener. Here only one task ever receives, so one [`AtomicWaker`] is all the waiting
//! there is. Counted by callgrind over `raft-bench inprocess --clients 1 --threads 1`,
//! the channel's sends and receives were about a fifth of the instructions of a write.
//!
//! Why a `VecDeque` under a lock rather than a lock-free queue, which it was: an
//! unbounded lock-free queue allocates (and zeroes) a block of slots every few dozen
//! messages and frees it once read, so a busy node allocated a block every 31 events. The
//! deque keeps its room, and the event loop takes a whole batch under one lock
//! ([`Receiver::take_into`]). The lock is held only to move a message in or out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The room a drained mailbox keeps; beyond it, a burst's room is given back.
const KEPT_ROOM: usize = 1024;

struct Inner<T> {
    queue: Mutex<Queue<T>>,
    /// The receiving task, while it waits.
    receiver: AtomicWaker,
    senders: AtomicUsize,
}

struct Queue<T> {
    messages: VecDeque<T>,
    closed: bool,
}

impl<T> Inner<T> {
    /// The queue. A thread that panicked while holding the lock only pushed or popped
    /// (neither leaves the deque torn), so a poisoned lock is used as it is.
    fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close(&self) {
        self.queue().closed = true;
        self.receiver.wake();
    }
}

/// A new mailbox: its sending and its receiving half.
pub(crate) fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(Queue {
            messages: VecDeque::new(),
            closed: false,
        }),
        receiver: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            inner: Arc::clone(&inner),
        },
        Receiver { inner },
    )
}

/// Puts messages in a mailbox. The mailbox closes once the last sender is dropped.
pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Sender<T> {
    /// Queues `message` and wakes the receiver; gives it back if the mailbox is closed
    /// (its receiver closed it or is gone).
    pub(crate) fn try_send(&self, message: T) -> Result<(), T> {
        let was_empty = {
            let mut queue = self.inner.queue();
            if queue.closed {
                return Err(message);
            }
            queue.messages.push_back(message);
            queue.messages.len() == 1
        };
        // The receiver waits only after it found the queue empty under the lock, so a
        // message put behind others finds it awake, or about to take them all.
        if was_empty {
            self.inner.receiver.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.inner.senders.fetch_add(1, Ordering::Relaxed);
        Sender {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // AcqRel: the sender that closes has seen every other sender's last push.
        if self.inner.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.close();
        }
    }
}

/// Takes messages out of a mailbox, from one task. Dropping it closes the mailbox and
/// drops what is queued, so that whoever waits on a queued message's reply learns that
/// nobody will answer.
pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing is queued now.
    ForNow,
    /// Nothing is queued, and nothing will be: the mailbox is closed.
    ForGood,
}

impl<T> Receiver<T> {
    /// The next message, if one is queued.
    pub(crate) fn try_recv(&self) -> Result<T, Empty> {
        let mut queue = self.inner.queue();
        match queue.messages.pop_front() {
            Some(message) => Ok(message),
            None if queue.closed => Err(Empty::ForGood),
            None => {
                Self::give_back_room(&mut queue);
                Err(Empty::ForNow)
            }
        }
    }

    /// Moves what is queued into `batch` until it holds `up_to` messages, under one lock
    /// for them all.
    pub(crate) fn take_into(&self, batch: &mut Vec<T>, up_to: usize) {
        let mut queue = self.inner.queue();
        let count = up_to.saturating_sub(batch.len()).min(queue.messages.len());
        batch.extend(queue.messages.drain(..count));
        if queue.messages.is_empty() {
            Self::give_back_room(&mut queue);
        }
    }

    /// After a burst, a drained queue keeps no more than [`KEPT_ROOM`].
    fn give_back_room(queue: &mut Queue<T>) {
        if queue.messages.capacity() > KEPT_ROOM {
            queue.messages.shrink_to(KEPT_ROOM);
        }
    }

    /// The next message, once one comes; `None` once the mailbox is closed and empty.
    /// The waker of the last poll is the one woken: poll from one task only.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // A message, or `None` for good: `ok()` maps both.
        match self.try_recv() {
            Err(Empty::ForNow) => {}
            done => return Poll::Ready(done.ok()),
        }
        self.inner.receiver.register(cx.waker());
        // Looked at again after registering: a sender that found the queue empty woke
        // the waker registered before, or its message is seen here.
        match self.try_recv() {
            Err(Empty::ForNow) => Poll::Pending,
            done => Poll::Ready(done.ok()),
        }
    }

    /// The next message, once one comes; `None` once the mailbox is closed and empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses further messages; those queued can still be received.
    pub(crate) fn close(&self) {
        self.inner.queue().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Dropped outside the lock: a message's drop may wake or send elsewhere.
        let queued = {
            let mut queue = self.inner.queue();
            queue.closed = true;
            std::mem::take(&mut queue.messages)
        };
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn messages_come_out_in_the_order_they_went_in() {
        let (tx, rx) = mailbox();
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        let got: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.try_recv(), Err(Empty::ForNow));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send() {
        let (tx, rx) = mailbox();
        let (waker, woken) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.try_send(7).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(7)));
    }

    #[test]
    fn the_last_sender_gone_closes_the_mailbox_after_what_is_queued() {
        let (tx, rx) = mailbox();
        let other = tx.clone();
        tx.try_send(1).unwrap();
        let (waker, woken) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(woken.load(Ordering::SeqCst), 0, "a sender is left");
        other.try_send(2).unwrap();
        drop(other);
        assert!(woken.load(Ordering::SeqCst) >= 1);
        assert_eq!(rx.recv().now_or_never(), Some(Some(2)));
        assert_eq!(rx.recv().now_or_never(), Some(None));
        assert_eq!(rx.try_recv(), Err(Empty::ForGood));
    }

    #[test]
    fn a_closed_or_dropped_receiver_refuses_sends_and_drops_what_was_queued() {
        let (tx, rx) = mailbox();
        tx.try_send(1).unwrap();
        rx.close();
        assert_eq!(tx.try_send(2), Err(2));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(Empty::ForGood));

        let (tx, rx) = mailbox();
        let (reply, answer) = futures::channel::oneshot::channel::<()>();
        tx.try_send(reply).unwrap();
        drop(rx);
        assert_eq!(
            answer.now_or_never(),
            Some(Err(futures::channel::oneshot::Canceled))
        );
        assert!(tx.try_send(futures::channel::oneshot::channel().0).is_err());
    }

    #[test]
    fn a_batch_takes_what_is_queued_up_to_its_size_and_a_burst_gives_its_room_back() {
        let (tx, rx) = mailbox();
        for i in 0..5000 {
            tx.try_send(i).unwrap();
        }
        let mut batch = vec![-1];
        rx.take_into(&mut batch, 3);
        assert_eq!(batch, [-1, 0, 1]);
        batch.clear();
        rx.take_into(&mut batch, 10_000);
        assert_eq!(batch, (2..5000).collect::<Vec<_>>());
        assert!(rx.inner.queue().messages.capacity() <= KEPT_ROOM);
        rx.take_into(&mut batch, 10_000);
        assert_eq!(batch.len(), 4998, "nothing was queued");
    }

    #[test]
    fn only_a_message_into_an_empty_mailbox_wakes_the_receiver() {
        let (tx, rx) = mailbox();
        let (waker, woken) = counting_waker();
        tx.try_send(1).unwrap();
        // A receiver that last waited, and has not yet taken what came since.
        rx.inner.receiver.register(&waker);
        tx.try_send(2).unwrap();
        assert_eq!(
            woken.load(Ordering::SeqCst),
            0,
            "the receiver has a message to take"
        );
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.try_send(3).unwrap();
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "the emptied mailbox wakes again"
        );
    }

    fn counting_waker() -> (std::task::Waker, Arc<AtomicUsize>) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        (
            std::task::Waker::from(Arc::new(Count(Arc::clone(&count)))),
            count,
        )
    }
}
