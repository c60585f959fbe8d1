//! The driver: one event loop per node that owns the core, feeds it inputs, and carries
//! out its effects through the storage, transport and apply task.
//!
//! The road of a proposal: the handle sends [`Event::Propose`]; the loop steps the leader
//! core, which appends the entry; the loop persists it, then spawns one task per
//! AppendEntries; replies come back as [`Event::Outcome`]; once a majority matches, the
//! core commits and emits the entries to apply; the loop passes them to the apply task,
//! which calls the state machine and answers the proposer.

mod apply;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{BoxFuture, Either, select};
use raft_traits::{
    Command, Entry, LogId, LogIndex, NodeId, Request, Response, Runtime, StateMachine, Storage,
    StorageError, Transport, TransportError,
};

pub(crate) use apply::{ApplyMsg, Waiter, run_apply};

use crate::core::{
    AnyNode, Effect, Effects, Input, NotLeader, Persist, RequestId, RpcKind, SendTag, Timer,
};
use crate::error::ProposeError;
use crate::handle::Shared;

/// How many queued events the loop steps before it carries out their effects together.
/// Batching is what turns many proposals into one storage write and one AppendEntries.
const MAX_BATCH: usize = 256;

/// What reaches a node's event loop.
pub(crate) enum Event<C, R> {
    /// A peer's request, to be answered on `reply`.
    Request {
        request: Request<C>,
        reply: oneshot::Sender<Response>,
    },
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
        ack: Option<oneshot::Sender<Result<LogId, NotLeader>>>,
        waiter: Option<Waiter<R>>,
    },
    /// The service's snapshot of everything up to `index`.
    Snapshot { index: LogIndex, data: Bytes },
    /// The apply task failed for good.
    Fatal(String),
    /// Stop; signal `done` once stopped.
    Shutdown { done: oneshot::Sender<()> },
}

/// The parts a running node is made of.
pub(crate) struct Driver<C: Command, R, Rt, S, T> {
    pub(crate) node: Option<AnyNode<C>>,
    pub(crate) runtime: Rt,
    pub(crate) storage: S,
    pub(crate) transport: Arc<T>,
    pub(crate) events: Receiver<Event<C, R>>,
    pub(crate) events_tx: Sender<Event<C, R>>,
    pub(crate) apply_tx: Sender<ApplyMsg<C, R>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) effects: Effects<C>,
    pub(crate) pending_replies: BTreeMap<RequestId, oneshot::Sender<Response>>,
    pub(crate) next_request_id: u64,
    pub(crate) election_deadline: Option<Duration>,
    pub(crate) heartbeat_deadline: Option<Duration>,
    /// The sleep armed for the nearest deadline, and when it ends.
    pub(crate) alarm: Option<(Duration, BoxFuture<'static, ()>)>,
}

enum Next<C, R> {
    Event(Event<C, R>),
    Timer(Timer),
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
        if let Err(e) = self.execute().await {
            self.fail(&e.to_string());
        }
        while !self.shared.is_stopped() {
            match self.next().await {
                Next::Event(Event::Shutdown { done }) => {
                    shutdown_done = Some(done);
                    break;
                }
                Next::Event(event) => self.handle(event),
                Next::Timer(timer) => self.fire(timer),
                Next::Closed => break,
            }
            for _ in 1..MAX_BATCH {
                match self.events.try_recv() {
                    Ok(Event::Shutdown { done }) => {
                        shutdown_done = Some(done);
                        break;
                    }
                    Ok(event) => self.handle(event),
                    _ => break,
                }
            }
            if let Err(e) = self.execute().await {
                self.fail(&e.to_string());
            }
            self.publish();
            if shutdown_done.is_some() {
                break;
            }
        }
        self.shared.stop();
        self.publish();
        // Unanswered requests and proposals learn that the node stopped when their
        // senders drop; the apply task finishes what it is doing and exits, so that once
        // shutdown returns the state machine is no longer called.
        self.pending_replies.clear();
        let _ = self.apply_tx.try_send(ApplyMsg::Shutdown);
        let _ = apply_task.await;
        if let Some(done) = shutdown_done {
            let _ = done.send(());
        }
        tracing::debug!(node = %self.shared.id, "stopped");
    }

    async fn next(&mut self) -> Next<C, R> {
        loop {
            let deadline = [
                self.election_deadline.map(|d| (d, Timer::Election)),
                self.heartbeat_deadline.map(|d| (d, Timer::Heartbeat)),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some((at, timer)) = deadline else {
                self.alarm = None;
                return self.events.recv().await.map_or(Next::Closed, Next::Event);
            };
            let now = self.runtime.now();
            if at <= now {
                return Next::Timer(timer);
            }
            // Arming an OS timer costs syscalls, and a follower pushes its election
            // deadline back on every AppendEntries: keep the armed sleep unless the
            // deadline moved earlier; if it went off early, the loop sleeps the rest.
            if self.alarm.as_ref().is_none_or(|(armed, _)| at < *armed) {
                self.alarm = Some((at, self.runtime.sleep(at - now)));
            }
            let Some((_, sleep)) = self.alarm.as_mut() else {
                continue;
            };
            let received = std::pin::pin!(self.events.recv());
            match select(received, sleep).await {
                Either::Left((event, _)) => return event.map_or(Next::Closed, Next::Event),
                Either::Right(((), _)) => self.alarm = None,
            }
        }
    }

    fn step(&mut self, input: Input<C>) {
        if let Some(node) = self.node.take() {
            self.node = Some(node.step(input, &mut self.effects));
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
            } => self.propose(command, ack, waiter),
            Event::Snapshot { index, data } => {
                if let Some(node) = self.node.as_mut() {
                    match node.snapshot(index, data, &mut self.effects) {
                        Ok(id) => {
                            tracing::debug!(node = %self.shared.id, snapshot = %id, "log compacted")
                        }
                        Err(refused) => {
                            tracing::debug!(node = %self.shared.id, %refused, "snapshot refused")
                        }
                    }
                }
            }
            Event::Fatal(reason) => self.fail(&reason),
            Event::Shutdown { .. } => unreachable_shutdown(),
        }
    }

    fn propose(
        &mut self,
        command: C,
        ack: Option<oneshot::Sender<Result<LogId, NotLeader>>>,
        waiter: Option<Waiter<R>>,
    ) {
        let Some(node) = self.node.as_mut() else {
            return;
        };
        let result = node.propose(command, &mut self.effects);
        match (&result, waiter) {
            // Registered before the entry can possibly be applied: the apply channel is
            // ordered and the entry's Apply effect is sent later.
            (Ok(id), Some(waiter)) => {
                let _ = self.apply_tx.try_send(ApplyMsg::Waiter { id: *id, waiter });
            }
            (Err(not_leader), Some(waiter)) => {
                let _ = waiter.send(Err(ProposeError::NotLeader {
                    leader_hint: not_leader.leader_hint,
                }));
            }
            (_, None) => {}
        }
        if let Some(ack) = ack {
            let _ = ack.send(result);
        }
    }

    /// Carries out the accumulated effects, in order. Writes are awaited before the
    /// next effect, so nothing that depends on them leaves the node earlier; consecutive
    /// entry writes are merged into one append.
    async fn execute(&mut self) -> Result<(), StorageError> {
        let mut pending_entries: Vec<Entry<C>> = Vec::new();
        let effects = self.effects.take();
        for effect in effects {
            if let Effect::Persist(Persist::Entries(entries)) = effect {
                pending_entries.extend(entries);
                continue;
            }
            if !pending_entries.is_empty() {
                self.storage.append(&pending_entries).await?;
                pending_entries.clear();
            }
            match effect {
                Effect::Persist(write) => self.persist(write).await?,
                Effect::Send { to, tag, request } => self.send(to, tag, request),
                Effect::Reply { id, response } => {
                    if let Some(reply) = self.pending_replies.remove(&id) {
                        let _ = reply.send(response);
                    }
                }
                Effect::Apply(apply) => {
                    let _ = self.apply_tx.try_send(ApplyMsg::from(apply));
                }
                Effect::SetTimer { timer, after } => {
                    let at = Some(self.runtime.now() + after);
                    match timer {
                        Timer::Election => self.election_deadline = at,
                        Timer::Heartbeat => self.heartbeat_deadline = at,
                    }
                }
                Effect::StopTimer(Timer::Election) => self.election_deadline = None,
                Effect::StopTimer(Timer::Heartbeat) => self.heartbeat_deadline = None,
            }
        }
        if !pending_entries.is_empty() {
            self.storage.append(&pending_entries).await?;
        }
        Ok(())
    }

    async fn persist(&mut self, write: Persist<C>) -> Result<(), StorageError> {
        match write {
            Persist::HardState(hard_state) => self.storage.save_hard_state(hard_state).await,
            Persist::Entries(entries) => self.storage.append(&entries).await,
            Persist::TruncateFrom(index) => self.storage.truncate_from(index).await,
            Persist::Snapshot(snapshot) => self.storage.save_snapshot(snapshot).await,
        }
    }

    /// Each request goes out on its own task, so a slow or dead peer never holds up the
    /// loop or the other peers.
    fn send(&self, to: NodeId, tag: SendTag, request: Request<C>) {
        let transport = Arc::clone(&self.transport);
        let events = self.events_tx.clone();
        let shared = Arc::clone(&self.shared);
        let rpc = RpcKind::of(&request);
        let _detached = self.runtime.spawn(async move {
            // A stopped node sends nothing, even what it decided to send before stopping.
            if shared.is_stopped() {
                return;
            }
            let result = transport.send(to, request).await;
            let _ = events.try_send(Event::Outcome {
                to,
                tag,
                rpc,
                result,
            });
        });
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

fn unreachable_shutdown() {
    // Shutdown events are taken out by `run` before `handle` sees them.
    debug_assert!(false, "shutdown reached the event handler");
}

/// Records the applied index for status reports.
pub(crate) fn store_applied(shared: &Shared, index: LogIndex) {
    shared.last_applied.store(index.0, Ordering::Release);
}
