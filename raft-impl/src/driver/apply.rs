//! The apply task: hands committed entries and snapshots to the state machine, strictly
//! in log order, and answers the clients waiting for them.
//!
//! It runs apart from the event loop and holds no lock while it calls the state machine,
//! so `apply` may call back into the Raft handle (the lab's `Snapshot` from inside the
//! applier) without deadlock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{Receiver, ReplySender, Sender};
use futures::channel::oneshot;
use raft_traits::{
    Bytes, Codec, Command, Entry, LogId, LogIndex, Payload, Postcard, Runtime, SnapshotDescriptor,
    SnapshotJob, SnapshotReader, SnapshotSource, SnapshotWriter, StagedSnapshot, StateMachine,
    StateMachineError, StorageError, Term, async_trait,
};

use super::Event;
use crate::config::Config;
use crate::error::ProposeError;
use crate::status::Shared;

/// Where a proposer waits for its command's result, and when it proposed.
pub(crate) struct Waiter<R> {
    reply: ReplySender<Result<R, ProposeError>>,
    /// The runtime's clock when [`Raft::propose`](crate::Raft::propose) was called.
    proposed_at: Duration,
}

impl<R> Waiter<R> {
    /// A proposer waiting on `reply`, who proposed at `proposed_at` (the runtime's clock).
    pub(crate) fn new(reply: ReplySender<Result<R, ProposeError>>, proposed_at: Duration) -> Self {
        Waiter { reply, proposed_at }
    }

    /// Refuses the proposal before the leader appended it; not timed, since its time
    /// says nothing of replication.
    pub(crate) fn refuse(self, error: ProposeError) {
        self.reply.send(Err(error));
    }

    /// Answers a proposal the leader appended, and records how long it took into the
    /// node's proposal-latency histogram. Only the apply task answers these, so the
    /// histogram has one writer and the proposers' threads never contend on it.
    fn answer(self, result: Result<R, ProposeError>, now: Duration, shared: &Shared) {
        shared
            .proposal_latency
            .record(now.saturating_sub(self.proposed_at));
        self.reply.send(result);
    }
}

/// What the event loop sends to the apply task, in log order.
pub(crate) enum ApplyMsg<C, R> {
    /// Committed entries, consecutive.
    Entries(Vec<Entry<C>>),
    /// The stored snapshot, replacing the state, and a reader over its data.
    Snapshot(Box<SnapshotDescriptor>, Arc<dyn SnapshotReader>),
    /// Proposers wait for the results of the commands at these ids.
    Waiters(Vec<(LogId, Waiter<R>)>),
    /// This node stopped leading with everything after `after` uncommitted: those
    /// proposals may still commit under the next leader, or may not.
    Abandon { after: LogIndex },
    /// Stop after what came before.
    Shutdown,
}

/// The event loop's side of the apply channel.
///
/// A proposer's waiter is held here until the next message to the apply task, and sent
/// just before it: sent on its own when the command is proposed, it would wake the apply
/// task for nothing (the command cannot be applied before it commits, which a later
/// message says), one more task hand-off per write. Sent before every other message, it
/// is registered before its entry is applied, or abandoned, or answered at shutdown.
pub(crate) struct ApplyQueue<C, R> {
    tx: Sender<ApplyMsg<C, R>>,
    proposed: Vec<(LogId, Waiter<R>)>,
}

impl<C, R> ApplyQueue<C, R> {
    pub(crate) fn new(tx: Sender<ApplyMsg<C, R>>) -> Self {
        ApplyQueue {
            tx,
            proposed: Vec::new(),
        }
    }

    /// Registers `waiter` for the command at `id`, with the next message.
    pub(crate) fn wait_for(&mut self, id: LogId, waiter: Waiter<R>) {
        self.proposed.push((id, waiter));
    }

    /// Sends `msg` to the apply task, after the waiters registered since the last.
    /// Unbounded: it fails only once the apply task has stopped, when nobody is left to
    /// apply or answer anything.
    pub(crate) fn send(&mut self, msg: ApplyMsg<C, R>) {
        if !self.proposed.is_empty() {
            // The next batch of waiters is likely as large as this one.
            let room = self.proposed.len();
            let proposed = std::mem::replace(&mut self.proposed, Vec::with_capacity(room));
            let _ = self.tx.try_send(ApplyMsg::Waiters(proposed));
        }
        let _ = self.tx.try_send(msg);
    }
}

/// The library's own snapshots (`Config::snapshot_after_entries`,
/// `Config::snapshot_after_bytes` and `Config::snapshot_log_growth_percent`): when to
/// take one, and whether one is being written.
pub(crate) struct SnapshotPolicy<Rt> {
    runtime: Rt,
    /// Take a snapshot once this many entries were applied since the last; `None`: not
    /// by count.
    after_entries: Option<u64>,
    /// Take a snapshot once the entries applied since the last encode to this many
    /// bytes; `None`: not by size.
    after_bytes: Option<u64>,
    /// Either trigger waits until the entries applied since the last snapshot encode to
    /// this percent of its size; `None`: no such wait.
    growth_percent: Option<u64>,
    /// The index of the last snapshot taken, restored or asked for.
    last: LogIndex,
    /// The size of the last snapshot this node wrote or restored (0: none), which the
    /// growth condition measures against. Set by the task that writes a snapshot.
    last_size: Arc<AtomicU64>,
    /// The encoded size of the entries applied since `last` (counted only with
    /// `after_bytes` or `growth_percent`).
    bytes: u64,
    /// Where entries are encoded to be measured, reused.
    scratch: Vec<u8>,
    /// Whether a captured snapshot is still being written; none is captured meanwhile.
    busy: Arc<AtomicBool>,
}

impl<Rt: Runtime> SnapshotPolicy<Rt> {
    /// The policy `config` sets, the last snapshot at `last` and `last_size` bytes long.
    pub(crate) fn new(runtime: Rt, config: &Config, last: LogIndex, last_size: u64) -> Self {
        SnapshotPolicy {
            runtime,
            after_entries: config.snapshot_after_entries,
            after_bytes: config.snapshot_after_bytes,
            growth_percent: config.snapshot_log_growth_percent,
            last,
            last_size: Arc::new(AtomicU64::new(last_size)),
            bytes: 0,
            scratch: Vec::new(),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts `entry`, about to be applied, toward the size trigger and the growth
    /// condition.
    fn count<C: Command>(&mut self, entry: &Entry<C>) {
        if self.after_bytes.is_none() && self.growth_percent.is_none() {
            return;
        }
        self.scratch.clear();
        // An entry that does not encode is counted as nothing: it is in the log, so it
        // encoded once; this is only an estimate of the log's size.
        if Postcard.encode_into(entry, &mut self.scratch).is_ok() {
            self.bytes = self.bytes.saturating_add(self.scratch.len() as u64);
        }
    }

    /// The last snapshot now covers `index`: the triggers count from there.
    fn restart_at(&mut self, index: LogIndex) {
        self.last = index;
        self.bytes = 0;
    }

    fn due(&self, applied: LogIndex) -> bool {
        let by_count = self
            .after_entries
            .is_some_and(|after| applied.0.saturating_sub(self.last.0) >= after);
        let by_size = self.after_bytes.is_some_and(|after| self.bytes >= after);
        // Saturating: a product past u64::MAX asks for more log than can be counted,
        // which never comes, as the growth it stands for never would.
        let grown = self.growth_percent.is_none_or(|percent| {
            self.bytes.saturating_mul(100)
                >= self
                    .last_size
                    .load(Ordering::Acquire)
                    .saturating_mul(percent)
        });
        (by_count || by_size) && grown && !self.busy.load(Ordering::Acquire)
    }

    /// Takes a snapshot of the state machine, which has applied up to `applied`, and
    /// writes it into storage. Applying waits only for the capture: the state is written
    /// on a task of its own, in pieces, unless the state machine can only serialize
    /// itself whole ([`StateMachine::snapshot`]), which the apply task awaits.
    async fn take<C, M>(
        &mut self,
        state_machine: &mut M,
        applied: LogIndex,
        events: &Sender<Event<C, M::Response>>,
        node: raft_traits::NodeId,
    ) where
        C: Command,
        M: StateMachine<C>,
    {
        self.restart_at(applied);
        // The state captured covers exactly the entries applied so far, whatever the
        // state machine's own idea of its last index (blank and configuration entries
        // never reach it): the snapshot is taken at `applied`.
        let source: Box<dyn SnapshotSource> = if let Some(source) =
            state_machine.capture_snapshot_stream()
        {
            source
        } else if let Some(job) = state_machine.capture_snapshot() {
            Box::new(Serialized::Job(job))
        } else {
            match state_machine.snapshot().await {
                Ok(snapshot) => Box::new(Serialized::Done(snapshot.data)),
                Err(error) => {
                    tracing::warn!(%node, %error, "snapshot policy: the state machine cannot take a snapshot; the log keeps growing");
                    return;
                }
            }
        };
        self.busy.store(true, Ordering::Release);
        let busy = Arc::clone(&self.busy);
        let last_size = Arc::clone(&self.last_size);
        let events = events.clone();
        let _detached = self.runtime.spawn(async move {
            match write_snapshot(source, applied, &events).await {
                Ok(Some(size)) => {
                    last_size.store(size, Ordering::Release);
                    tracing::debug!(%node, index = %applied, size, "snapshot policy: snapshot written");
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%node, index = %applied, %error, "snapshot policy: the snapshot could not be written; the log keeps growing");
                }
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// The writer a snapshot source is lent: it hands each piece on, then lets the other
/// tasks waiting for the thread run before the source encodes the next one.
///
/// A writer whose writes are ready at once (memory storage's) would otherwise let a
/// source encode the whole state in one poll, holding its thread of the runtime for as
/// long as that takes, while the connections and the event loop queued on that thread
/// wait. With 3 in-memory `raft-kv` nodes of one thread each taking two million puts
/// (`scripts/kv-big-state.sh --threads 1`), the slowest put took 1.8-2.1 s without the
/// turns and 91-98 ms with them.
struct TakingTurns<'a> {
    out: &'a mut dyn SnapshotWriter,
}

#[async_trait]
impl SnapshotWriter for TakingTurns<'_> {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.out.write(data).await?;
        yield_now().await;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        // Sources only write; `write_snapshot` finishes the storage's writer itself.
        Err(StorageError::Corrupt(
            "a snapshot source asked to finish the writer it was lent".to_owned(),
        ))
    }
}

/// Pending once (after asking to be polled again), then ready: the task goes to the
/// back of its executor's queue.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A state serialized whole, or being serialized, written into storage as one piece.
enum Serialized {
    Job(SnapshotJob),
    Done(Bytes),
}

#[async_trait]
impl SnapshotSource for Serialized {
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError> {
        let data = match *self {
            Serialized::Job(job) => job.await?.data,
            Serialized::Done(data) => data,
        };
        out.write(data).await?;
        Ok(())
    }
}

/// Writes the state `source` captured at `index` into a writer the event loop opens on
/// its storage, and hands the staged snapshot back to the loop, which installs it and
/// compacts the log. Returns the snapshot's size; `Ok(None)`: the loop declined (a
/// snapshot as recent is stored).
async fn write_snapshot<C, R>(
    source: Box<dyn SnapshotSource>,
    index: LogIndex,
    events: &Sender<Event<C, R>>,
) -> Result<Option<u64>, StateMachineError> {
    let (reply, writer) = oneshot::channel();
    if events
        .try_send(Event::CreateSnapshot { index, reply })
        .is_err()
    {
        return Ok(None);
    }
    let Ok(Some(mut writer)) = writer.await else {
        return Ok(None);
    };
    source
        .write_to(&mut TakingTurns {
            out: writer.as_mut(),
        })
        .await?;
    let staged = writer.finish().await?;
    let size = staged.descriptor.size;
    let _ = events.try_send(Event::SnapshotStaged(Box::new(staged)));
    Ok(Some(size))
}

pub(crate) async fn run_apply<C, M, Rt>(
    mut state_machine: M,
    inbox: Receiver<ApplyMsg<C, M::Response>>,
    events: Sender<Event<C, M::Response>>,
    shared: Arc<Shared>,
    mut policy: SnapshotPolicy<Rt>,
) -> M
where
    C: Command,
    M: StateMachine<C>,
    Rt: Runtime,
{
    let mut waiters = Waiters::default();
    while let Some(msg) = inbox.recv().await {
        match msg {
            ApplyMsg::Entries(entries) => {
                for entry in entries {
                    let id = entry.log_id();
                    policy.count(&entry);
                    // Before `apply`, which may hand Raft a snapshot of this very index.
                    shared.note_applying(id.index);
                    let response = match entry.payload {
                        Payload::Command(command) => Some(state_machine.apply(id, command).await),
                        Payload::Blank | Payload::Membership(_) => None,
                    };
                    shared.store_applied(id.index);
                    if let Some((term, waiter)) = waiters.take(id.index) {
                        let result = match response {
                            Some(response) if term == id.term => Ok(response),
                            _ => Err(ProposeError::Lost {
                                index: id.index,
                                term,
                            }),
                        };
                        waiter.answer(result, policy.runtime.now(), &shared);
                    }
                    if policy.due(id.index) {
                        policy
                            .take(&mut state_machine, id.index, &events, shared.id)
                            .await;
                    }
                }
            }
            ApplyMsg::Snapshot(descriptor, reader) => {
                let covered = descriptor.meta.last_included.index;
                let size = descriptor.size;
                let restored = state_machine.restore_from(descriptor.meta, reader).await;
                match restored {
                    Ok(()) => {}
                    Err(StateMachineError::Stale { applied, offered }) => {
                        tracing::debug!(node = %shared.id, %applied, %offered, "state machine kept its newer state");
                    }
                    Err(error) => {
                        let reason =
                            format!("the state machine cannot restore a snapshot: {error}");
                        let _ = events.try_send(Event::Fatal(reason));
                        break;
                    }
                }
                shared.store_applied(covered);
                if covered > policy.last {
                    policy.restart_at(covered);
                    policy.last_size.store(size, Ordering::Release);
                }
                let now = policy.runtime.now();
                for (index, _, waiter) in waiters.take_up_to(covered) {
                    waiter.answer(Err(ProposeError::OutcomeUnknown { index }), now, &shared);
                }
            }
            ApplyMsg::Waiters(proposed) => {
                for (id, waiter) in proposed {
                    if let Some((term, replaced)) = waiters.insert(id, waiter) {
                        // A newer proposal took the index, so the older one was
                        // overwritten.
                        let lost = ProposeError::Lost {
                            index: id.index,
                            term,
                        };
                        replaced.answer(Err(lost), policy.runtime.now(), &shared);
                    }
                }
            }
            ApplyMsg::Abandon { after } => {
                let now = policy.runtime.now();
                for (index, _, waiter) in waiters.take_after(after) {
                    waiter.answer(Err(ProposeError::OutcomeUnknown { index }), now, &shared);
                }
            }
            ApplyMsg::Shutdown => {
                let now = policy.runtime.now();
                for (index, _, waiter) in waiters.take_after(LogIndex::ZERO) {
                    waiter.answer(Err(ProposeError::OutcomeUnknown { index }), now, &shared);
                }
                break;
            }
        }
    }
    state_machine
}

/// Proposers waiting for their commands, in index order. Proposals arrive in index
/// order almost always, so this is a queue: pushed at the back, taken from the front.
struct Waiters<R> {
    queue: VecDeque<(LogIndex, Term, Waiter<R>)>,
}

impl<R> Default for Waiters<R> {
    fn default() -> Self {
        Waiters {
            queue: VecDeque::new(),
        }
    }
}

impl<R> Waiters<R> {
    /// Adds a waiter; returns the one it displaces at the same index, if any.
    fn insert(&mut self, id: LogId, waiter: Waiter<R>) -> Option<(Term, Waiter<R>)> {
        if self
            .queue
            .back()
            .is_none_or(|(index, _, _)| *index < id.index)
        {
            self.queue.push_back((id.index, id.term, waiter));
            return None;
        }
        // A new leader reused indices of entries that were never committed.
        match self
            .queue
            .binary_search_by_key(&id.index, |(index, _, _)| *index)
        {
            Ok(at) => {
                let (_, term, old) =
                    std::mem::replace(&mut self.queue[at], (id.index, id.term, waiter));
                Some((term, old))
            }
            Err(at) => {
                self.queue.insert(at, (id.index, id.term, waiter));
                None
            }
        }
    }

    /// Takes the waiter for `index`. Waiters for earlier indices cannot be answered any
    /// more (their entries went by without them) and are dropped, which tells them the
    /// node lost track.
    fn take(&mut self, index: LogIndex) -> Option<(Term, Waiter<R>)> {
        while self.queue.front().is_some_and(|(at, _, _)| *at < index) {
            self.queue.pop_front();
        }
        if self.queue.front().is_some_and(|(at, _, _)| *at == index) {
            return self
                .queue
                .pop_front()
                .map(|(_, term, waiter)| (term, waiter));
        }
        None
    }

    /// Takes every waiter after `index`.
    fn take_after(&mut self, index: LogIndex) -> Vec<(LogIndex, Term, Waiter<R>)> {
        let split = self.queue.partition_point(|(at, _, _)| *at <= index);
        self.queue.drain(split..).collect()
    }

    /// Takes every waiter up to and including `index`.
    fn take_up_to(&mut self, index: LogIndex) -> Vec<(LogIndex, Term, Waiter<R>)> {
        let split = self.queue.partition_point(|(at, _, _)| *at <= index);
        self.queue.drain(..split).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::executor::block_on;

    use super::*;

    /// A writer whose writes are all ready at once, as memory storage's are.
    struct Ready;

    #[async_trait]
    impl SnapshotWriter for Ready {
        async fn write(&mut self, _: Bytes) -> Result<(), StorageError> {
            Ok(())
        }

        async fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
            unreachable!("the test finishes no writer")
        }
    }

    /// A source of many pieces that notes, at each, how often another task ran.
    struct Pieces {
        other_ran: Arc<AtomicUsize>,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    #[async_trait]
    impl SnapshotSource for Pieces {
        async fn write_to(
            self: Box<Self>,
            out: &mut dyn SnapshotWriter,
        ) -> Result<(), StateMachineError> {
            for _ in 0..10 {
                out.write(Bytes::from_static(b"piece")).await?;
                let ran = self.other_ran.load(Ordering::SeqCst);
                self.seen.lock().unwrap().push(ran);
            }
            Ok(())
        }
    }

    #[test]
    fn a_source_writing_into_a_ready_writer_lets_other_tasks_run_between_pieces() {
        let other_ran = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let source = Box::new(Pieces {
            other_ran: Arc::clone(&other_ran),
            seen: Arc::clone(&seen),
        });
        let writing = async {
            let mut out = Ready;
            source
                .write_to(&mut TakingTurns { out: &mut out })
                .await
                .unwrap();
        };
        // Another task on the same thread, which runs each time it gets the thread.
        let other = async {
            while seen.lock().unwrap().len() < 10 {
                other_ran.fetch_add(1, Ordering::SeqCst);
                yield_now().await;
            }
        };
        block_on(futures::future::join(writing, other));
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.windows(2).all(|pair| pair[0] < pair[1]),
            "the other task ran {seen:?} times by each piece"
        );
    }
}
