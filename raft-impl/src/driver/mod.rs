//! The driver: one event loop per node that owns the core, feeds it inputs, and carries
//! out its effects through the storage, transport and apply task.
//!
//! The road of a proposal: the handle sends [`Event::Propose`]; the loop steps the leader
//! core, which appends the entry; the loop starts one AppendEntries per follower and
//! queues the entry on the [`LogWriter`], which appends it beside the loop; replies come
//! back as [`Event::Outcome`], and the leader's own append ends as [`Next::Written`]
//! (which the loop reports to the core as `Input::Persisted`); once a majority holds it,
//! the core commits and emits the entries to apply; the loop passes them to the apply
//! task, which calls the state machine and answers the proposer.

mod apply;
mod log_writer;
mod mailbox;
mod read_queue;
mod reply;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{BoxFuture, Either, FutureExt, select};
use futures::stream::{FuturesUnordered, StreamExt};
use raft_traits::{
    Command, HandlerError, InstallSnapshot, LogId, LogIndex, Membership, NodeId, ReplyTo, Request,
    RequestRefused, Response, Runtime, SnapshotDescriptor, SnapshotReader, SnapshotWriter,
    StagedSnapshot, StateMachine, Storage, StorageError, Transport, TransportError,
};

pub(crate) use apply::{ApplyMsg, ApplyQueue, SnapshotPolicy, Waiter, run_apply};
pub(crate) use log_writer::LogWriter;
pub(crate) use mailbox::{Receiver, Sender, mailbox};
pub(crate) use read_queue::{Queuing, ReadQueue};
pub(crate) use reply::{ReplySender, channel as reply_channel};

use crate::core::{
    AnyNode, Apply, Effect, Effects, Input, Persist, ReadId, RequestId, RpcKind, SendTag, Timer,
};
use crate::core::{MembershipRefused, MembershipVersion};
use crate::error::{MembershipChangeError, ProposeError, ReadError, TransferError};
use crate::status::Shared;

/// How many queued events the loop steps before it carries out their effects together.
/// Batching is what turns many proposals into one storage write and one AppendEntries.
const MAX_BATCH: usize = 256;

/// A client command, with where to report its log position and its result.
type Proposal<C, R> = (
    C,
    Option<oneshot::Sender<Result<LogId, ProposeError>>>,
    Option<Waiter<R>>,
);

/// Where a reader waits for its read index.
pub(crate) type ReadWaiter = oneshot::Sender<Result<LogIndex, ReadError>>;

/// A membership change asked for through the handle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Add a learner at an address.
    AddLearner(NodeId, String),
    /// Add a voter at an address (as a learner first, promoted once caught up).
    AddVoter(NodeId, String),
    /// Promote a learner once it has caught up.
    Promote(NodeId),
    /// Remove a member.
    Remove(NodeId),
    /// Move to this configuration.
    Set(Membership),
}

impl MembershipChange {
    /// Whether `committed` (a committed, non-joint configuration) completes the change.
    fn is_done(&self, committed: &Membership) -> bool {
        if committed.is_joint() {
            return false;
        }
        match self {
            MembershipChange::AddLearner(id, _) => committed.contains(*id),
            MembershipChange::AddVoter(id, _) | MembershipChange::Promote(id) => {
                committed.is_voter(*id)
            }
            MembershipChange::Remove(id) => !committed.contains(*id),
            MembershipChange::Set(target) => committed == target,
        }
    }
}

/// A membership change waiting to commit.
type PendingChange = (
    MembershipChange,
    oneshot::Sender<Result<(), MembershipChangeError>>,
);

/// Where the reply to a peer's request goes.
pub(crate) enum Replier {
    /// To the task awaiting [`RpcHandler::handle`](raft_traits::RpcHandler::handle).
    Awaited(ReplySender<Result<Response, RequestRefused>>),
    /// Straight to the transport, from the loop
    /// ([`RpcHandler::handle_then`](raft_traits::RpcHandler::handle_then)).
    Direct(DirectReply),
}

impl Replier {
    pub(crate) fn send(self, result: Result<Response, RequestRefused>) {
        match self {
            Replier::Awaited(reply) => reply.send(result),
            Replier::Direct(reply) => reply.send(result.map_err(HandlerError::Refused)),
        }
    }
}

/// A transport's [`ReplyTo`], called once: with the reply, or, if dropped unanswered (the
/// node stopped), with [`HandlerError::Stopped`], as a dropped channel tells a task that
/// awaits the reply.
pub(crate) struct DirectReply(Option<ReplyTo>);

impl DirectReply {
    pub(crate) fn new(reply: ReplyTo) -> Self {
        DirectReply(Some(reply))
    }

    fn send(mut self, result: Result<Response, HandlerError>) {
        if let Some(reply) = self.0.take() {
            reply(result);
        }
    }
}

impl Drop for DirectReply {
    fn drop(&mut self) {
        if let Some(reply) = self.0.take() {
            reply(Err(HandlerError::Stopped));
        }
    }
}

/// What reaches a node's event loop.
pub(crate) enum Event<C, R> {
    /// A peer's request, to be answered through `reply`.
    Request { request: Request<C>, reply: Replier },
    /// The outcome of a request this node sent.
    Outcome {
        to: NodeId,
        tag: SendTag,
        rpc: RpcKind,
        result: Result<Response, TransportError>,
    },
    /// A client command. `ack` learns where it went; `waiter`, if any, its result.
    Propose {
        command: C,
        ack: Option<oneshot::Sender<Result<LogId, ProposeError>>>,
        waiter: Option<Waiter<R>>,
    },
    /// Linearizable reads are queued in [`Shared::reads`]: take them, and find their
    /// read index together.
    ReadIndex,
    /// Change the configuration.
    ChangeMembership {
        change: MembershipChange,
        reply: oneshot::Sender<Result<(), MembershipChangeError>>,
    },
    /// Hand leadership to `to`.
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
    /// The service's snapshot of everything up to `index`.
    Snapshot { index: LogIndex, data: Bytes },
    /// The snapshot policy captured the state up to `index`: open a writer for it on
    /// storage, or answer `None` if no snapshot of that index is wanted.
    CreateSnapshot {
        index: LogIndex,
        reply: oneshot::Sender<Option<Box<dyn SnapshotWriter>>>,
    },
    /// The snapshot policy's snapshot is written: install it. (Boxed: rare, and three
    /// times the size of the other events.)
    SnapshotStaged(Box<StagedSnapshot>),
    /// The apply task failed for good.
    Fatal(String),
    /// Stop; signal `done` once stopped. With `hand_over`, a leader first hands
    /// leadership to its most up-to-date voter and stops once it has left office (or
    /// the transfer gave up).
    Shutdown {
        done: oneshot::Sender<()>,
        hand_over: bool,
    },
}

/// The parts a running node is made of.
pub(crate) struct Driver<C: Command, R, Rt, S, T> {
    pub(crate) node: Option<AnyNode<C>>,
    pub(crate) runtime: Rt,
    /// The storage, and the log appends running beside the loop.
    pub(crate) log: LogWriter<C, S>,
    pub(crate) transport: Arc<T>,
    pub(crate) events: Receiver<Event<C, R>>,
    /// Keeps the event channel open: a node runs until it is shut down, even when no
    /// handle to it is left.
    pub(crate) _events_open: Sender<Event<C, R>>,
    pub(crate) apply: ApplyQueue<C, R>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) effects: Effects<C>,
    /// The effects being carried out (see [`execute`](Self::execute)).
    pub(crate) effect_buffer: Vec<Effect<C>>,
    pub(crate) pending_replies: BTreeMap<RequestId, Replier>,
    pub(crate) next_request_id: u64,
    /// Batches of reads waiting for their index, by the id the core hands back.
    pub(crate) pending_reads: BTreeMap<ReadId, Vec<ReadWaiter>>,
    pub(crate) next_read_id: u64,
    /// Membership changes waiting for their configuration to commit.
    pub(crate) pending_changes: Vec<PendingChange>,
    /// The configuration last handed to the transport, and the version of the node's
    /// configurations when it was last looked at (comparing versions is cheap).
    pub(crate) announced_membership: Option<(Membership, MembershipVersion)>,
    pub(crate) election_deadline: Option<Duration>,
    pub(crate) heartbeat_deadline: Option<Duration>,
    pub(crate) commit_notice_deadline: Option<Duration>,
    /// [`Config::propose_linger`](crate::Config::propose_linger).
    pub(crate) propose_linger: Duration,
    /// How many proposals the last batch proposed carried: what a linger waits for.
    pub(crate) last_proposals: usize,
    /// The sleep armed for the nearest deadline, and when it ends.
    pub(crate) alarm: Option<(Duration, BoxFuture<'static, ()>)>,
    /// The runtime's clock as read this turn, until the loop next waits (see
    /// [`now`](Driver::now)).
    pub(crate) turn_clock: Option<Duration>,
    /// A shutdown waiting for this leader's handover to end.
    pub(crate) stop_after_handover: Option<oneshot::Sender<()>>,
    /// The requests this node sent that await their replies: polled by the loop itself
    /// (in [`next`](Driver::next), and while it waits for storage), not spawned as tasks
    /// of their own, which would cost a task hand-off and often a thread wake-up each.
    pub(crate) in_flight: InFlight<C, R>,
    /// The stored snapshot and a reader over its data, opened once per snapshot: pieces
    /// sent to followers and the state machine's restore read from it.
    pub(crate) snapshot_reader: Option<OpenSnapshot>,
    /// The snapshot policy's snapshot, written and staged, while the core decides on it
    /// ([`Persist::StagedSnapshot`] installs it).
    pub(crate) staged: Option<StagedSnapshot>,
}

/// Requests in flight, each resolving to its [`Event::Outcome`], and the outcomes that
/// arrived while the loop was waiting for storage.
pub(crate) struct InFlight<C, R> {
    requests: FuturesUnordered<BoxFuture<'static, Event<C, R>>>,
    arrived: VecDeque<Event<C, R>>,
}

impl<C, R> Default for InFlight<C, R> {
    fn default() -> Self {
        InFlight {
            requests: FuturesUnordered::new(),
            arrived: VecDeque::new(),
        }
    }
}

impl<C: Send + 'static, R: Send + 'static> InFlight<C, R> {
    /// The next outcome; pending while nothing is in flight (the loop polls again after
    /// it starts a request).
    fn poll_outcome(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Event<C, R>> {
        if let Some(event) = self.arrived.pop_front() {
            return Poll::Ready(event);
        }
        match self.requests.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(event),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Awaits `write` while the requests in flight keep moving (a write the loop must
    /// wait for: one that is not a log append, or the appends before it). Outcomes that
    /// arrive meanwhile wait in `arrived` for the loop.
    async fn overlap<F: Future>(&mut self, write: F) -> F::Output {
        let mut write = std::pin::pin!(write);
        while !self.requests.is_empty() {
            match select(write.as_mut(), self.requests.next()).await {
                Either::Left((output, _)) => return output,
                Either::Right((Some(event), _)) => self.arrived.push_back(event),
                Either::Right((None, _)) => break,
            }
        }
        write.await
    }
}

impl<C: Command, R, Rt, S, T> Drop for Driver<C, R, Rt, S, T> {
    fn drop(&mut self) {
        // Also when the runtime drops the loop without letting it finish: queued
        // readers must learn that nobody will answer them.
        self.shared.reads.close();
    }
}

/// How many proposals `batch` holds.
fn proposals_in<C, R>(batch: &[Event<C, R>]) -> usize {
    batch
        .iter()
        .filter(|event| matches!(event, Event::Propose { .. }))
        .count()
}

/// A stored snapshot's descriptor and a reader over its data.
pub(crate) type OpenSnapshot = (SnapshotDescriptor, Arc<dyn SnapshotReader>);

// An event moves through `Next` once per loop turn; boxing it would add an allocation
// per event to save a few bytes of stack.
#[allow(clippy::large_enum_variant)]
enum Next<C, R> {
    Event(Event<C, R>),
    Timer(Timer),
    /// A log append running beside the loop ended.
    Written(log_writer::Ended),
    Closed,
}

impl<C, R, Rt, S, T> Driver<C, R, Rt, S, T>
where
    C: Command,
    R: Send + 'static,
    Rt: Runtime,
    S: Storage<C>,
    T: Transport<C>,
{
    /// Runs the node until it is shut down or hits a fatal error.
    pub(crate) async fn run<M>(mut self, apply_task: raft_traits::JoinHandle<M>)
    where
        M: StateMachine<C, Response = R>,
    {
        let mut shutdown_done = None;
        // The effects of booting (the first election timer, a recovered snapshot to
        // restore) are carried out before anything else.
        self.settle().await;
        self.note_role_change(false);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while !self.shared.is_stopped() {
            let next = self.next().await;
            self.turn_clock = None;
            match next {
                Next::Event(event) => batch.push(event),
                Next::Timer(timer) => {
                    let was_leader = self.node.as_ref().is_some_and(AnyNode::is_leader);
                    self.fire(timer);
                    self.settle().await;
                    self.note_role_change(was_leader);
                }
                Next::Written(ended) => {
                    let was_leader = self.node.as_ref().is_some_and(AnyNode::is_leader);
                    match self.append_ended(ended) {
                        Ok(up_to) => self.step(Input::Persisted { up_to }),
                        Err(e) => self.fail(&e.to_string()),
                    }
                    self.settle().await;
                    self.note_role_change(was_leader);
                }
                Next::Closed => break,
            }
            // Whatever else is already queued is handled with it, so that its effects
            // are carried out together: one storage write, one AppendEntries per peer.
            self.take_queued(&mut batch);
            // Closed-loop clients gather again (see `lingers_over`).
            if let Some(proposals) = self.lingers_over(&batch) {
                self.linger(&mut batch, proposals).await;
            }
            // The batch's events came in after any reading taken so far (see `now`).
            if !batch.is_empty() {
                self.turn_clock = None;
            }
            // Opening a snapshot's writer takes the storage from the appends.
            if batch
                .iter()
                .any(|event| matches!(event, Event::CreateSnapshot { .. }))
            {
                self.finish_appends_and_report().await;
            }
            let was_leader = self.node.as_ref().is_some_and(AnyNode::is_leader);
            shutdown_done = self.handle_batch(&mut batch);
            self.settle().await;
            self.note_role_change(was_leader);
            self.publish();
            if shutdown_done.is_none() && self.handover_over() {
                shutdown_done = self.stop_after_handover.take();
            }
            if shutdown_done.is_some() {
                break;
            }
        }
        self.shared.stop();
        // What was queued for the log is written (replies it held go out), so that a
        // node restarted on the same storage finds what this one acknowledged.
        if let Err(e) = self.finish_appends().await {
            tracing::warn!(node = %self.shared.id, "a log append failed while stopping: {e}");
        }
        self.publish();
        // Unanswered requests and proposals learn that the node stopped when their
        // senders drop; the apply task finishes what it is doing and exits, so that once
        // shutdown returns the state machine is no longer called.
        self.pending_replies.clear();
        self.apply.send(ApplyMsg::Shutdown);
        let _ = apply_task.await;
        // A shutdown asked for while the loop was finishing is in the queue, where its
        // asker would wait for good (the handles keep the channel's senders): closed now,
        // the queue takes no more, and what it holds is answered, the state machine being
        // done.
        self.events.close();
        while let Ok(event) = self.events.try_recv() {
            if let Event::Shutdown { done, .. } = event {
                let _ = done.send(());
            }
        }
        if let Some(done) = shutdown_done {
            let _ = done.send(());
        }
        tracing::debug!(node = %self.shared.id, "stopped");
    }

    async fn next(&mut self) -> Next<C, R> {
        // The last turn's reading, if it took one, tells whether a timer is due (one
        // goes off a turn late at most); after a wait the clock is read again.
        let mut now = self.turn_clock;
        loop {
            let deadline = [
                self.election_deadline.map(|d| (d, Timer::Election)),
                self.heartbeat_deadline.map(|d| (d, Timer::Heartbeat)),
                self.commit_notice_deadline
                    .map(|d| (d, Timer::CommitNotice)),
            ]
            .into_iter()
            .flatten()
            .min();
            match deadline {
                None => self.alarm = None,
                Some((at, timer)) => {
                    let now = *now.get_or_insert_with(|| self.runtime.now());
                    if at <= now {
                        return Next::Timer(timer);
                    }
                    // Arming an OS timer costs syscalls, and a follower pushes its
                    // election deadline back on every AppendEntries: keep the armed
                    // sleep unless the deadline moved earlier; if it went off early, the
                    // loop sleeps the rest.
                    if self.alarm.as_ref().is_none_or(|(armed, _)| at < *armed) {
                        self.alarm = Some((at, self.runtime.sleep(at - now)));
                    }
                }
            }
            // An ended append first (it releases replies and may commit), then the
            // answers of peers, then new events.
            let events = &self.events;
            let log = &mut self.log;
            let in_flight = &mut self.in_flight;
            let alarm = &mut self.alarm;
            let woke = std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = log.poll_ended(cx) {
                    return Poll::Ready(Some(Next::Written(ended)));
                }
                if let Poll::Ready(event) = in_flight.poll_outcome(cx) {
                    return Poll::Ready(Some(Next::Event(event)));
                }
                if let Poll::Ready(event) = events.poll_recv(cx) {
                    return Poll::Ready(Some(event.map_or(Next::Closed, Next::Event)));
                }
                match alarm {
                    Some((_, sleep)) => sleep.as_mut().poll(cx).map(|()| None),
                    None => Poll::Pending,
                }
            })
            .await;
            match woke {
                Some(next) => return next,
                None => {
                    self.alarm = None;
                    now = None;
                }
            }
        }
    }

    /// Moves the events already queued into `batch`, up to [`MAX_BATCH`].
    fn take_queued(&mut self, batch: &mut Vec<Event<C, R>>) {
        self.events.take_into(batch, MAX_BATCH);
    }

    /// Adds to `batch`, which holds `proposals` proposals, what comes until it holds as
    /// many as the last batch proposed, or the linger is over; then what is queued.
    async fn linger(&mut self, batch: &mut Vec<Event<C, R>>, mut proposals: usize) {
        let mut over = self.runtime.sleep(self.propose_linger);
        while batch.len() < MAX_BATCH && proposals < self.last_proposals {
            let received = std::pin::pin!(self.events.recv());
            match select(over.as_mut(), received).await {
                Either::Right((Some(event), _)) => {
                    if matches!(event, Event::Propose { .. }) {
                        proposals += 1;
                    }
                    batch.push(event);
                }
                Either::Left(_) | Either::Right((None, _)) => break,
            }
        }
        self.take_queued(batch);
    }

    /// Whether to wait up to [`Config::propose_linger`](crate::Config::propose_linger)
    /// for more proposals before handling `batch`: this leader's batch holds proposals,
    /// fewer than the last batch it proposed. Several clients are writing, and the
    /// others' next proposals are on their way (a lone client, one proposal a batch,
    /// never waits). If so, returns how many proposals it holds.
    fn lingers_over(&self, batch: &[Event<C, R>]) -> Option<usize> {
        // The batch is counted only when a linger is set: with none (the library's
        // default) a turn of the loop costs nothing more.
        if self.propose_linger.is_zero() || self.last_proposals < 2 {
            return None;
        }
        let proposals = proposals_in(batch);
        (proposals > 0
            && proposals < self.last_proposals
            && self.node.as_ref().is_some_and(AnyNode::is_leader))
        .then_some(proposals)
    }

    /// The runtime's clock, read once a turn: every step and timer of the turn uses the
    /// first reading, until the loop next waits (for events or storage), which forgets
    /// it. A reading is a system clock call, and a turn steps the core and sets timers
    /// several times within microseconds, which a reading each would not tell apart.
    ///
    /// The reading is taken after the turn's events came in, which is what the rules
    /// that compare times need: a follower never records hearing from its leader before
    /// it did (stickiness, which leases rely on), and a read checked against a lease is
    /// checked at an instant after it was asked, where answering it is linearizable.
    /// Reads gathered from the handle during the turn are checked against a reading of
    /// their own (`Event::ReadIndex`). Otherwise a reading lags by the turn's work at
    /// most, and delays a timer by as much.
    fn now(&mut self) -> Duration {
        *self.turn_clock.get_or_insert_with(|| self.runtime.now())
    }

    fn step(&mut self, input: Input<C>) {
        if let Some(mut node) = self.node.take() {
            node.advance_clock(self.now());
            self.node = Some(node.step(input, &mut self.effects));
        }
    }

    /// After the leader stepped down, proposals it appended but never saw commit may
    /// still commit under the next leader, or may not: their proposers learn so now
    /// rather than wait for an index that may never be applied here. Reads waiting on
    /// this node's leadership were already answered by the core.
    fn note_role_change(&mut self, was_leader: bool) {
        let Some(node) = &self.node else {
            return;
        };
        if was_leader && !node.is_leader() {
            let after = node.commit_index();
            self.apply.send(ApplyMsg::Abandon { after });
        }
        // Membership changes: done once their configuration committed; of unknown
        // outcome once this node no longer leads.
        if !self.pending_changes.is_empty() {
            let committed = node.committed_membership();
            let leading = node.is_leader();
            let mut still = Vec::new();
            for (change, reply) in self.pending_changes.drain(..) {
                if change.is_done(committed) {
                    let _ = reply.send(Ok(()));
                } else if !leading {
                    let _ = reply.send(Err(MembershipChangeError::OutcomeUnknown));
                } else {
                    still.push((change, reply));
                }
            }
            self.pending_changes = still;
        }
        // A transport that routes by address learns members added at run time.
        let version = node.membership_version();
        match &mut self.announced_membership {
            Some((_, seen)) if *seen == version => {}
            Some((announced, seen)) if announced == node.membership() => *seen = version,
            announced => {
                let membership = node.membership();
                self.transport.update_membership(membership);
                *announced = Some((membership.clone(), version));
            }
        }
    }

    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::Election => {
                self.election_deadline = None;
                self.step(Input::ElectionTimeout);
            }
            Timer::Heartbeat => {
                self.heartbeat_deadline = None;
                self.step(Input::HeartbeatTimeout);
            }
            Timer::CommitNotice => {
                self.commit_notice_deadline = None;
                self.step(Input::CommitNoticeDue);
            }
        }
    }

    /// Handles a batch of events in order; consecutive proposals become one batch for the
    /// core. Returns the shutdown signal if the batch asked to stop (what follows it is
    /// dropped).
    fn handle_batch(&mut self, batch: &mut Vec<Event<C, R>>) -> Option<oneshot::Sender<()>> {
        let mut proposals = Vec::with_capacity(proposals_in(batch));
        for event in batch.drain(..) {
            match event {
                Event::Propose {
                    command,
                    ack,
                    waiter,
                } => proposals.push((command, ack, waiter)),
                Event::Shutdown { done, hand_over } => {
                    self.propose(std::mem::take(&mut proposals));
                    if hand_over && self.stop_after_handover.is_none() && self.start_handover() {
                        self.stop_after_handover = Some(done);
                        continue;
                    }
                    return Some(done);
                }
                other => {
                    self.propose(std::mem::take(&mut proposals));
                    self.handle(other);
                }
            }
        }
        self.propose(proposals);
        None
    }

    /// Starts handing leadership to the voter with the most of this leader's log, before
    /// a shutdown (thesis §3.10), so that the cluster need not wait out an election
    /// timeout without a leader. Returns whether a transfer started.
    fn start_handover(&mut self) -> bool {
        let Some(AnyNode::Leader(leader)) = self.node.as_ref() else {
            return false;
        };
        let voters = &leader.membership().voters;
        let target = leader
            .peers()
            .iter()
            .filter(|peer| voters.contains(peer))
            .filter_map(|&peer| Some((leader.role().progress(peer)?.match_index(), peer)))
            .max()
            .map(|(_, peer)| peer);
        let Some(target) = target else {
            return false;
        };
        let Some(node) = self.node.as_mut() else {
            return false;
        };
        node.advance_clock(self.runtime.now());
        match node.transfer_leadership(target, &mut self.effects) {
            Ok(()) => {
                tracing::info!(node = %self.shared.id, to = %target, "handing over before shutting down");
                true
            }
            Err(refused) => {
                tracing::info!(node = %self.shared.id, %refused, "shutting down without a handover");
                false
            }
        }
    }

    /// Whether a shutdown waiting for a handover may go ahead: this node no longer
    /// leads, or its transfer ended without success.
    fn handover_over(&self) -> bool {
        self.stop_after_handover.is_some()
            && match self.node.as_ref() {
                Some(AnyNode::Leader(leader)) => leader.role().transfer().is_none(),
                _ => true,
            }
    }

    /// Carries out the pending effects, then reports what was written to the core, which
    /// may produce more effects (a leader commits once its own copy is durable), until
    /// nothing is left.
    async fn settle(&mut self) {
        loop {
            // The lease is published before the effects go out, so that a leader that
            // starts a transfer has stopped answering lease reads before its TimeoutNow
            // leaves, and a commit is visible to lease reads before its entries are
            // applied (a write is answered only after that).
            if let Some(node) = self.node.as_mut() {
                // The reads of the batch share one round.
                node.start_read_round(&mut self.effects);
                self.shared.set_read_lease(node.read_lease());
            }
            match self.execute().await {
                Ok(Some(up_to)) => self.step(Input::Persisted { up_to }),
                Ok(None) => return,
                Err(e) => {
                    self.fail(&e.to_string());
                    return;
                }
            }
        }
    }

    fn handle(&mut self, event: Event<C, R>) {
        match event {
            Event::Request { request, reply } => {
                self.next_request_id += 1;
                let id = RequestId(self.next_request_id);
                self.pending_replies.insert(id, reply);
                self.step(Input::Request { id, request });
            }
            Event::Outcome {
                to,
                tag,
                rpc,
                result,
            } => match result {
                Ok(response) => self.step(Input::Response {
                    from: to,
                    tag,
                    response,
                }),
                Err(error) => {
                    tracing::trace!(node = %self.shared.id, peer = %to, %error, "{rpc:?} failed");
                    self.step(Input::SendFailed { to, tag, rpc });
                }
            },
            Event::Propose {
                command,
                ack,
                waiter,
            } => self.propose(vec![(command, ack, waiter)]),
            Event::Snapshot { index, data } => {
                if let Some(node) = self.node.as_mut() {
                    match node.snapshot(index, data, &mut self.effects) {
                        Ok(id) => {
                            tracing::info!(node = %self.shared.id, snapshot = %id, "snapshot taken: log compacted")
                        }
                        Err(refused) => {
                            tracing::debug!(node = %self.shared.id, %refused, "snapshot refused")
                        }
                    }
                }
            }
            Event::CreateSnapshot { index, reply } => {
                let Some(node) = self.node.as_ref() else {
                    return;
                };
                let meta = match node.snapshot_meta(index) {
                    Ok(meta) => meta,
                    Err(refused) => {
                        tracing::debug!(node = %self.shared.id, %refused, "snapshot not taken");
                        let _ = reply.send(None);
                        return;
                    }
                };
                // The loop ended the appends before this batch.
                match self.log.storage() {
                    Some(storage) => {
                        let _ = reply.send(Some(storage.create_snapshot(meta)));
                    }
                    None => {
                        debug_assert!(false, "a snapshot's writer asked for during an append");
                        let _ = reply.send(None);
                    }
                }
            }
            Event::SnapshotStaged(staged) => {
                let Some(node) = self.node.as_mut() else {
                    return;
                };
                let descriptor = staged.descriptor.clone();
                match node.snapshot_staged(descriptor, &mut self.effects) {
                    Ok(id) => {
                        tracing::info!(node = %self.shared.id, snapshot = %id, size = staged.descriptor.size, "snapshot taken: log compacted");
                        self.staged = Some(*staged);
                    }
                    Err(refused) => {
                        tracing::debug!(node = %self.shared.id, %refused, "snapshot refused")
                    }
                }
            }
            Event::ReadIndex => {
                let waiters = self.shared.reads.take();
                if waiters.is_empty() {
                    return;
                }
                self.next_read_id += 1;
                let id = ReadId(self.next_read_id);
                self.pending_reads.insert(id, waiters);
                if let Some(node) = self.node.as_mut() {
                    // Read afresh, not the turn's reading: a lease is checked against it.
                    node.advance_clock(self.runtime.now());
                    node.read_index(id, &mut self.effects);
                }
            }
            Event::ChangeMembership { change, reply } => {
                let Some(node) = self.node.as_mut() else {
                    return;
                };
                node.advance_clock(self.runtime.now());
                let current = node.membership().clone();
                let started = match &change {
                    MembershipChange::AddLearner(id, address) => {
                        let target = current.with_learner(*id, address.clone());
                        node.change_membership(target, &mut self.effects)
                            .map(|_| ())
                    }
                    MembershipChange::AddVoter(id, address) => {
                        node.add_voter(*id, address.clone(), &mut self.effects)
                    }
                    MembershipChange::Promote(id) => match current.address(*id) {
                        Some(address) => node.add_voter(*id, address.to_owned(), &mut self.effects),
                        None => Err(MembershipRefused::UnknownNode(*id)),
                    },
                    MembershipChange::Remove(id) if !current.contains(*id) => {
                        Err(MembershipRefused::UnknownNode(*id))
                    }
                    MembershipChange::Remove(id) => {
                        let mut target = current;
                        target.nodes.remove(id);
                        target.voters.remove(id);
                        target.learners.remove(id);
                        node.change_membership(target, &mut self.effects)
                            .map(|_| ())
                    }
                    MembershipChange::Set(target) => node
                        .change_membership(target.clone(), &mut self.effects)
                        .map(|_| ()),
                };
                match started {
                    Ok(()) => self.pending_changes.push((change, reply)),
                    Err(refused) => {
                        let _ = reply.send(Err(refused.into()));
                    }
                }
            }
            Event::Transfer { to, reply } => {
                if let Some(node) = self.node.as_mut() {
                    node.advance_clock(self.runtime.now());
                    let result = node.transfer_leadership(to, &mut self.effects);
                    let _ = reply.send(result.map_err(TransferError::from));
                }
            }
            Event::Fatal(reason) => self.fail(&reason),
            Event::Shutdown { .. } => unreachable_shutdown(),
        }
    }

    fn propose(&mut self, proposals: Vec<Proposal<C, R>>) {
        if proposals.is_empty() {
            return;
        }
        let Some(node) = self.node.as_mut() else {
            return;
        };
        self.last_proposals = proposals.len();
        let (commands, replies): (Vec<C>, Vec<_>) = proposals
            .into_iter()
            .map(|(command, ack, waiter)| (command, (ack, waiter)))
            .unzip();
        let result = node.propose_batch(commands, &mut self.effects);
        for (at, (ack, waiter)) in replies.into_iter().enumerate() {
            let outcome = match &result {
                Ok(ids) => Ok(ids[at]),
                Err(refused) => Err(ProposeError::from(*refused)),
            };
            match (&outcome, waiter) {
                // Registered before the entry can possibly be applied: the apply channel
                // is ordered and the entry's Apply effect is sent later.
                (Ok(id), Some(waiter)) => self.apply.wait_for(*id, waiter),
                (Err(error), Some(waiter)) => waiter.refuse(error.clone()),
                (_, None) => {}
            }
            if let Some(ack) = ack {
                let _ = ack.send(outcome);
            }
        }
    }

    /// Carries out the accumulated effects, in the order of [`Effect`]'s contract. Returns
    /// the last entry a write awaited here made durable, if any.
    ///
    /// Entries to append are queued on the [`LogWriter`], which writes them beside the
    /// loop, all that were queued while an append ran going into the next one (group
    /// commit: a follower handling ten AppendEntries in one batch fsyncs once, not ten
    /// times). What must not pass an append is held until it ends; a write of another
    /// kind first waits for the appends before it, and is awaited here.
    async fn execute(&mut self) -> Result<Option<LogId>, StorageError> {
        let mut written = None;
        // Carried out of a vector kept from turn to turn (an error drops it: one more
        // allocation then), while the core's own refills in place.
        let mut effects = std::mem::take(&mut self.effect_buffer);
        self.effects.take_into(&mut effects);
        for effect in effects.drain(..) {
            match effect {
                Effect::Persist(Persist::Entries(entries)) => self.log.queue(entries),
                Effect::Persist(write) => {
                    written = self.finish_appends().await?.or(written);
                    self.persist(write).await?;
                    self.turn_clock = None;
                }
                effect if effect.waits_for_appends() => {
                    if let Some(effect) = self.log.hold_if_needed(effect) {
                        self.carry_out(effect);
                    }
                }
                effect => self.carry_out(effect),
            }
        }
        self.effect_buffer = effects;
        self.log.start();
        // A store that finishes at once (in memory) is reported at once, without a turn
        // of the loop; one that does not is polled again by the loop, which registers
        // its waker then.
        let mut at_once = std::task::Context::from_waker(futures::task::noop_waker_ref());
        if let Poll::Ready(ended) = self.log.poll_ended(&mut at_once) {
            written = Some(self.append_ended(ended)?);
        }
        Ok(written)
    }

    /// Waits until every queued append is durable, while the requests in flight keep
    /// moving. Returns the last entry written, if any.
    async fn finish_appends(&mut self) -> Result<Option<LogId>, StorageError> {
        let mut written = None;
        loop {
            self.log.start();
            if !self.log.is_busy() {
                return Ok(written);
            }
            let ended = self.in_flight.overlap(self.log.ended()).await;
            self.turn_clock = None;
            written = Some(self.append_ended(ended)?);
        }
    }

    /// [`finish_appends`](Self::finish_appends), then tells the core what was written.
    async fn finish_appends_and_report(&mut self) {
        match self.finish_appends().await {
            Ok(Some(up_to)) => self.step(Input::Persisted { up_to }),
            Ok(None) => {}
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// An append ended: carries out what it held. Returns the last entry it wrote.
    fn append_ended(&mut self, ended: log_writer::Ended) -> Result<LogId, StorageError> {
        ended.result?;
        while let Some(effect) = self.log.next_released() {
            self.carry_out(effect);
        }
        Ok(ended.up_to)
    }

    /// Carries out an effect that is not a write.
    fn carry_out(&mut self, effect: Effect<C>) {
        match effect {
            Effect::Persist(_) => debug_assert!(false, "writes are awaited by `execute`"),
            Effect::Send { to, tag, request } => self.send(to, tag, request),
            Effect::SendSnapshot {
                to,
                tag,
                request,
                len,
            } => self.send_snapshot_piece(to, tag, *request, len),
            Effect::Reply { id, response } => {
                if let Some(reply) = self.pending_replies.remove(&id) {
                    reply.send(Ok(response));
                }
            }
            Effect::Read { id, result } => {
                if let Some(waiters) = self.pending_reads.remove(&id) {
                    let result = result.map_err(ReadError::from);
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            }
            Effect::Refuse { id, reason } => {
                if let Some(reply) = self.pending_replies.remove(&id) {
                    reply.send(Err(reason));
                }
            }
            Effect::Apply(Apply::Entries(entries)) => {
                // Published first, so that `Status::last_applied` (which the apply task
                // publishes itself) never runs ahead of the status, even while the loop
                // still waits for storage before its own publish.
                self.publish();
                self.apply.send(ApplyMsg::Entries(entries));
            }
            Effect::Apply(Apply::Snapshot(descriptor)) => match &self.snapshot_reader {
                // The snapshot was stored (and its reader opened) before this effect.
                Some((stored, reader)) if *stored == *descriptor => {
                    let reader = Arc::clone(reader);
                    self.publish();
                    self.apply.send(ApplyMsg::Snapshot(descriptor, reader));
                }
                _ => self.fail(&format!(
                    "the snapshot at {} to restore is not the stored one",
                    descriptor.meta.last_included
                )),
            },
            Effect::SetTimer { timer, after } => {
                let at = Some(self.now() + after);
                match timer {
                    Timer::Election => self.election_deadline = at,
                    Timer::Heartbeat => self.heartbeat_deadline = at,
                    Timer::CommitNotice => self.commit_notice_deadline = at,
                }
            }
            Effect::StopTimer(Timer::Election) => self.election_deadline = None,
            Effect::StopTimer(Timer::Heartbeat) => self.heartbeat_deadline = None,
            Effect::StopTimer(Timer::CommitNotice) => self.commit_notice_deadline = None,
        }
    }

    /// Carries out a write that is not an append, the appends before it being durable.
    async fn persist(&mut self, write: Persist<C>) -> Result<(), StorageError> {
        // A write that replaces the stored snapshot is followed by opening a reader over
        // the new one, for the pieces sent to followers and the state machine's restore.
        let replaces_snapshot = matches!(
            write,
            Persist::Snapshot(_) | Persist::StagedSnapshot(_) | Persist::FinishSnapshot
        );
        if let Persist::Entries(entries) = write {
            // `execute` queues appends itself; one that came here joins them.
            self.log.queue(entries);
            return Ok(());
        }
        // `execute` ends the appends before any other write.
        let Some(storage) = self.log.storage() else {
            debug_assert!(false, "a write started while a log append runs");
            return Err(StorageError::Other(
                "a write started while a log append runs".into(),
            ));
        };
        let in_flight = &mut self.in_flight;
        match write {
            Persist::HardState(hard_state) => {
                in_flight
                    .overlap(storage.save_hard_state(hard_state))
                    .await?
            }
            // Handled above: appends go to the log writer.
            Persist::Entries(_) => {}
            Persist::TruncateFrom(index) => in_flight.overlap(storage.truncate_from(index)).await?,
            Persist::Snapshot(snapshot) => {
                in_flight.overlap(storage.save_snapshot(*snapshot)).await?
            }
            Persist::StagedSnapshot(descriptor) => {
                let staged = match self.staged.take() {
                    Some(staged) if staged.descriptor == *descriptor => staged,
                    _ => {
                        return Err(StorageError::Corrupt(format!(
                            "the staged snapshot at {} is gone",
                            descriptor.meta.last_included
                        )));
                    }
                };
                in_flight
                    .overlap(storage.save_staged_snapshot(staged))
                    .await
                    .map(drop)?
            }
            Persist::PurgeTo(index) => in_flight.overlap(storage.purge_to(index)).await?,
            Persist::BeginSnapshot(descriptor) => {
                in_flight
                    .overlap(storage.begin_snapshot(*descriptor))
                    .await?
            }
            Persist::SnapshotChunk { offset, data } => {
                in_flight
                    .overlap(storage.write_snapshot_chunk(offset, data))
                    .await?
            }
            Persist::FinishSnapshot => in_flight
                .overlap(storage.finish_snapshot())
                .await
                .map(drop)?,
            Persist::AbortSnapshot => in_flight.overlap(storage.abort_snapshot()).await?,
        }
        if replaces_snapshot {
            self.snapshot_reader = in_flight.overlap(storage.open_snapshot()).await?;
        }
        Ok(())
    }

    /// Starts sending a piece of the stored snapshot: the request, polled with the others
    /// in flight, first reads the piece's bytes from the snapshot's reader, so the loop
    /// never waits for the read and holds no more of the snapshot than the pieces in
    /// flight.
    fn send_snapshot_piece(
        &mut self,
        to: NodeId,
        tag: SendTag,
        request: InstallSnapshot,
        len: u64,
    ) {
        let transport = Arc::clone(&self.transport);
        let reader = match &self.snapshot_reader {
            Some((stored, reader)) if *stored == request.snapshot => Some(Arc::clone(reader)),
            _ => None,
        };
        self.in_flight.requests.push(
            async move {
                let result = match reader {
                    Some(reader) => match read_piece(reader.as_ref(), request, len).await {
                        Ok(request) => {
                            transport
                                .send(to, Request::InstallSnapshot(Box::new(request)))
                                .await
                        }
                        Err(error) => Err(TransportError::Failed {
                            peer: to,
                            reason: format!("cannot read the snapshot to send: {error}"),
                        }),
                    },
                    None => Err(TransportError::Failed {
                        peer: to,
                        reason: "the snapshot to send is no longer the stored one".to_owned(),
                    }),
                };
                Event::Outcome {
                    to,
                    tag,
                    rpc: RpcKind::InstallSnapshot,
                    result,
                }
            }
            .boxed(),
        );
    }

    /// Starts a request; the loop polls it with the others in flight, so a slow or dead
    /// peer never holds up the loop or the other peers (the transport bounds how long a
    /// request waits). Requests still in flight when the node stops are dropped.
    fn send(&mut self, to: NodeId, tag: SendTag, request: Request<C>) {
        let transport = Arc::clone(&self.transport);
        let rpc = RpcKind::of(&request);
        self.in_flight.requests.push(
            async move {
                let result = transport.send(to, request).await;
                Event::Outcome {
                    to,
                    tag,
                    rpc,
                    result,
                }
            }
            .boxed(),
        );
    }

    fn fail(&mut self, reason: &str) {
        tracing::error!(node = %self.shared.id, "stopping after a fatal error: {reason}");
        self.shared.set_fatal(reason);
        self.shared.stop();
    }

    fn publish(&self) {
        if let Some(node) = &self.node {
            self.shared.publish(node);
        }
    }
}

/// Fills a snapshot piece with its `len` bytes from `reader`, and its checksum.
async fn read_piece(
    reader: &dyn SnapshotReader,
    mut request: InstallSnapshot,
    len: u64,
) -> Result<InstallSnapshot, StorageError> {
    let wanted = usize::try_from(len).map_err(|_| StorageError::SnapshotRange {
        offset: request.offset.saturating_add(len),
        len: reader.len(),
    })?;
    let data = if wanted == 0 {
        Bytes::new()
    } else {
        reader.read_at(request.offset, wanted).await?
    };
    if data.len() != wanted {
        return Err(StorageError::SnapshotRange {
            offset: request.offset.saturating_add(len),
            len: reader.len(),
        });
    }
    request.data = data;
    request.checksum = request.computed_checksum();
    Ok(request)
}

fn unreachable_shutdown() {
    // Shutdown events are taken out by `run` before `handle` sees them.
    debug_assert!(false, "shutdown reached the event handler");
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use std::mem::size_of;

    use raft_traits::Request;

    use super::Event;
    use super::apply::ApplyMsg;
    use crate::core::{Effect, Input};

    /// Every request, event and effect is moved several times on its way through the
    /// loop (into and out of channels and vectors), so each costs what its largest
    /// variant does: the rare snapshot variants are boxed to keep the common ones cheap.
    /// With them unboxed, the sizes were 200, 208, 232, 208 and 152 bytes.
    #[test]
    fn what_the_loop_moves_stays_small() {
        assert!(
            size_of::<Request<u64>>() <= 64,
            "{}",
            size_of::<Request<u64>>()
        );
        assert!(size_of::<Input<u64>>() <= 80, "{}", size_of::<Input<u64>>());
        assert!(
            size_of::<Effect<u64>>() <= 96,
            "{}",
            size_of::<Effect<u64>>()
        );
        assert!(
            size_of::<Event<u64, u64>>() <= 112,
            "{}",
            size_of::<Event<u64, u64>>()
        );
        assert!(
            size_of::<ApplyMsg<u64, u64>>() <= 48,
            "{}",
            size_of::<ApplyMsg<u64, u64>>()
        );
    }
}
