//! The log's appends, run beside the event loop rather than awaited by it.
//!
//! One append runs at a time and holds the storage while it does. Entries the core emits
//! meanwhile join the next append, which starts as soon as the running one ends: under
//! load, each fsync carries everything proposed during the one before (group commit),
//! and the loop keeps stepping acknowledgements and proposals while the disk works. A
//! leader's AppendEntries therefore leave, and its followers' acknowledgements count,
//! while its own append is still running (thesis §10.2.1); the core counts the leader's
//! own copy only once the driver reports it with `Input::Persisted`.
//!
//! What may not pass an append (see [`Effect::waits_for_appends`]) is held here, and
//! handed back once every append emitted before it is durable.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use raft_traits::{Command, Entry, LogId, Storage, StorageError};

use crate::core::Effect;

/// An append running in the background: it owns the storage until it ends.
type Running<S> = BoxFuture<'static, (S, Result<(), StorageError>)>;

/// The storage and the appends queued for it.
pub(crate) struct LogWriter<C, S> {
    /// The storage, while no append holds it.
    idle: Option<S>,
    /// The append running, and the last entry it writes.
    running: Option<(LogId, Running<S>)>,
    /// Entries for the next append.
    queued: Vec<Entry<C>>,
    /// Effects held until an append ends, with the number of that append.
    held: VecDeque<(u64, Effect<C>)>,
    /// How many appends were started, and how many ended.
    started: u64,
    ended: u64,
    /// Whether an append failed. No other starts then: entries written after lost ones
    /// would leave a hole in the stored log, and the node stops anyway.
    failed: bool,
}

/// An append that ended.
pub(crate) struct Ended {
    /// The last entry it wrote.
    pub(crate) up_to: LogId,
    /// Whether it succeeded; a failed write is fatal to the node.
    pub(crate) result: Result<(), StorageError>,
}

impl<C: Command, S: Storage<C>> LogWriter<C, S> {
    pub(crate) fn new(storage: S) -> Self {
        LogWriter {
            idle: Some(storage),
            running: None,
            queued: Vec::new(),
            held: VecDeque::new(),
            started: 0,
            ended: 0,
            failed: false,
        }
    }

    /// Queues entries to append after everything queued before them.
    pub(crate) fn queue(&mut self, entries: Vec<Entry<C>>) {
        if self.queued.is_empty() {
            self.queued = entries;
        } else {
            self.queued.extend(entries);
        }
    }

    /// Carries `effect` out later if an append emitted before it is not yet durable;
    /// otherwise hands it back to be carried out now.
    pub(crate) fn hold_if_needed(&mut self, effect: Effect<C>) -> Option<Effect<C>> {
        let after = if !self.queued.is_empty() {
            self.started + 1
        } else if self.running.is_some() {
            self.started
        } else {
            return Some(effect);
        };
        self.held.push_back((after, effect));
        None
    }

    /// Starts appending the queued entries, unless an append is running already or one
    /// failed.
    pub(crate) fn start(&mut self) {
        if self.running.is_some() || self.failed {
            return;
        }
        let Some(up_to) = self.queued.last().map(Entry::log_id) else {
            return;
        };
        let Some(mut storage) = self.idle.take() else {
            return;
        };
        let entries = std::mem::take(&mut self.queued);
        let append = async move {
            let result = storage.append(&entries).await;
            (storage, result)
        };
        self.running = Some((up_to, append.boxed()));
        self.started += 1;
    }

    /// Whether an append is running, or queued to start once it can.
    pub(crate) fn is_busy(&self) -> bool {
        self.running.is_some() || (!self.queued.is_empty() && !self.failed)
    }

    /// Polls the running append; pending while none runs. Once it ended, the effects it
    /// held come out of [`next_released`](Self::next_released).
    pub(crate) fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        let Some((up_to, append)) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let up_to = *up_to;
        let (storage, result) = std::task::ready!(append.poll_unpin(cx));
        self.running = None;
        self.idle = Some(storage);
        self.ended += 1;
        self.failed |= result.is_err();
        Poll::Ready(Ended { up_to, result })
    }

    /// The running append's end; never resolves while none runs.
    pub(crate) async fn ended(&mut self) -> Ended {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }

    /// Takes the next effect whose appends have all ended, in the order they were held.
    pub(crate) fn next_released(&mut self) -> Option<Effect<C>> {
        match self.held.front() {
            Some((after, _)) if *after <= self.ended => self.held.pop_front().map(|(_, e)| e),
            _ => None,
        }
    }

    /// The storage, for a write of another kind or a read: `None` while an append runs
    /// or is queued (end them first).
    pub(crate) fn storage(&mut self) -> Option<&mut S> {
        if self.is_busy() {
            return None;
        }
        self.idle.as_mut()
    }
}
