//! [`Raft`]: the handle applications hold.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use raft_traits::{
    Command, HandlerError, HardState, LogId, LogIndex, Membership, NodeId, ReplyTo, Request,
    RequestRefused, Response, RpcHandler, Runtime, Snapshot, SnapshotMeta, StateMachine,
    StateMachineError, Storage, StorageError, Term, Transport, async_trait,
};

use crate::config::Config;
use crate::core::{AnyNode, Apply, Effect, Effects, Node, RoleKind};
use crate::driver::MembershipChange;
use crate::driver::{
    DirectReply, Driver, Event, Queuing, Replier, SnapshotPolicy, Waiter, reply_channel, run_apply,
};
use crate::error::{
    MembershipChangeError, ProposeError, ReadError, SnapshotError, StartError, TransferError,
};
use crate::latency::ProposalLatency;
use crate::status::{LeadershipWatch, Shared, Status, StatusWatch};

/// The pluggable parts of a node.
#[derive(Debug)]
pub struct Parts<Rt, S, M, T> {
    /// Runs the node's tasks and timers.
    pub runtime: Rt,
    /// Keeps the node's hard state, log and snapshot.
    pub storage: S,
    /// The replicated application.
    pub state_machine: M,
    /// Sends the node's requests to its peers.
    pub transport: T,
}

/// A running Raft node.
///
/// Cheap to clone; every clone drives the same node. The node runs on its runtime's
/// tasks until [`shutdown`](Raft::shutdown). Incoming RPCs reach it through its
/// [`RpcHandler`] implementation, which a transport's server calls.
///
/// `C` is the command type, `R` the state machine's response.
pub struct Raft<C, R> {
    shared: Arc<Shared>,
    events: crate::driver::Sender<Event<C, R>>,
    /// The state machine's [`StateMachine::check_snapshot`], run on a snapshot from the
    /// leader before the node sees it.
    check_snapshot: fn(&Snapshot) -> Result<(), StateMachineError>,
    /// The runtime's clock, for lease reads answered here.
    clock: Arc<dyn Fn() -> Duration + Send + Sync>,
}

impl<C, R> Clone for Raft<C, R> {
    fn clone(&self) -> Self {
        Raft {
            shared: Arc::clone(&self.shared),
            events: self.events.clone(),
            check_snapshot: self.check_snapshot,
            clock: Arc::clone(&self.clock),
        }
    }
}

impl<C, R> fmt::Debug for Raft<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl<C: Command, R: Send + 'static> Raft<C, R> {
    /// Recovers a node from `parts.storage` and starts it as a follower.
    ///
    /// `members` lists every server of the cluster, `id` included, for the cluster's
    /// first start, which stores it; later starts take the configuration from storage
    /// and may pass no members at all. A later start whose `members` storage has never
    /// held fails with [`BootError::MembershipConflict`](crate::BootError), rather than
    /// silently starting another cluster. If storage holds a snapshot, the state machine
    /// restores it before it applies anything else. Use
    /// [`spawn_in`](Raft::spawn_in) to give members' addresses, or to start a node that
    /// joins a running cluster.
    pub async fn spawn<Rt, S, M, T>(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        config: Config,
        parts: Parts<Rt, S, M, T>,
    ) -> Result<Self, StartError>
    where
        Rt: Runtime,
        S: Storage<C>,
        M: StateMachine<C, Response = R>,
        T: Transport<C>,
    {
        Self::spawn_in(id, Membership::from_voters(members), config, parts).await
    }

    /// Like [`spawn`](Raft::spawn), with the bootstrap configuration given in full
    /// (voters, learners, addresses). An empty `membership` starts a node that joins a
    /// running cluster: it has an empty log, never campaigns, and waits for a leader that
    /// has added it ([`add_learner`](Raft::add_learner), [`add_voter`](Raft::add_voter))
    /// to contact it.
    pub async fn spawn_in<Rt, S, M, T>(
        id: NodeId,
        membership: Membership,
        config: Config,
        parts: Parts<Rt, S, M, T>,
    ) -> Result<Self, StartError>
    where
        Rt: Runtime,
        S: Storage<C>,
        M: StateMachine<C, Response = R>,
        T: Transport<C>,
    {
        config.validate()?;
        let Parts {
            runtime,
            mut storage,
            state_machine,
            transport,
        } = parts;
        let recovered = storage.recover().await?;
        let opened = match recovered.snapshot {
            Some(_) => storage.open_snapshot().await?,
            None => None,
        };
        let pending = storage.pending_snapshot().await?;
        let seed = config.seed.unwrap_or_else(|| runtime.random_seed());
        // The snapshot policy's settings, and the size its growth condition starts from.
        let policy_config = config.clone();
        let snapshot_size = opened.as_ref().map_or(0, |(descriptor, _)| descriptor.size);
        // The cluster's first start on this store: the bootstrap configuration is made
        // durable (as an empty snapshot at index 0, which compaction later replaces), so
        // every later start knows it without the argument, and can tell a contradicting
        // one.
        let first_start = recovered.hard_state == HardState::default()
            && recovered.snapshot.is_none()
            && recovered.entries.is_empty();
        let bootstrap = (first_start && !membership.nodes.is_empty()).then(|| Snapshot {
            meta: SnapshotMeta {
                last_included: LogId::default(),
                membership: membership.clone(),
            },
            data: Bytes::new(),
        });
        let mut effects = Effects::new();
        let mut node = Node::boot(
            id,
            membership,
            config,
            seed,
            recovered,
            opened.as_ref().map(|(descriptor, _)| descriptor.clone()),
            &mut effects,
        )?;
        if let Some(pending) = pending {
            node.resume_receiving(pending, &mut effects);
        }
        if let Some(bootstrap) = bootstrap {
            storage.save_snapshot(bootstrap).await?;
        }
        // The stored snapshot is restored before `spawn` returns, so that the state
        // machine never lags what `Status::last_applied` says, and a snapshot it cannot
        // read is a start error rather than a node that stops later.
        let mut state_machine = state_machine;
        for effect in effects.take() {
            match effect {
                Effect::Apply(Apply::Snapshot(descriptor)) => {
                    let Some((_, reader)) = &opened else {
                        return Err(StartError::Storage(StorageError::Corrupt(format!(
                            "the snapshot at {} is not stored",
                            descriptor.meta.last_included
                        ))));
                    };
                    match state_machine
                        .restore_from(descriptor.meta, Arc::clone(reader))
                        .await
                    {
                        // A persistent state machine may already be further along.
                        Ok(()) | Err(StateMachineError::Stale { .. }) => {}
                        Err(error) => return Err(StartError::Restore(error)),
                    }
                }
                other => effects.push(other),
            }
        }
        let node = AnyNode::from(node);

        let shared = Arc::new(Shared::new(id, node.last_applied()));
        shared.publish(&node);

        let (events_tx, events) = crate::driver::mailbox();
        let (apply_tx, apply_rx) = crate::driver::mailbox();
        let apply_task = runtime.spawn(run_apply(
            state_machine,
            apply_rx,
            events_tx.clone(),
            Arc::clone(&shared),
            SnapshotPolicy::new(
                runtime.clone(),
                &policy_config,
                node.last_applied(),
                snapshot_size,
            ),
        ));
        let driver = Driver {
            node: Some(node),
            runtime: runtime.clone(),
            log: crate::driver::LogWriter::new(storage),
            transport: Arc::new(transport),
            events,
            _events_open: events_tx.clone(),
            apply: crate::driver::ApplyQueue::new(apply_tx),
            shared: Arc::clone(&shared),
            effects,
            effect_buffer: Vec::new(),
            pending_replies: BTreeMap::new(),
            next_request_id: 0,
            pending_reads: BTreeMap::new(),
            next_read_id: 0,
            pending_changes: Vec::new(),
            announced_membership: None,
            election_deadline: None,
            heartbeat_deadline: None,
            commit_notice_deadline: None,
            propose_linger: policy_config.propose_linger,
            last_proposals: 0,
            alarm: None,
            turn_clock: None,
            stop_after_handover: None,
            in_flight: Default::default(),
            snapshot_reader: opened,
            staged: None,
        };
        let clock = {
            let runtime = runtime.clone();
            Arc::new(move || runtime.now())
        };
        let _detached = runtime.spawn(driver.run(apply_task));
        tracing::debug!(node = %id, "started");
        Ok(Raft {
            shared,
            events: events_tx,
            check_snapshot: M::check_snapshot,
            clock,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Appends `command` to the log if this node is the leader, and returns at once with
    /// the index it will have if it commits and the current term; it does not wait for
    /// replication. There is no guarantee that the command will ever be committed.
    ///
    /// This is the classic lab's `Start`. Use [`propose`](Raft::propose) to wait for the
    /// command's result instead.
    pub async fn start(&self, command: C) -> Result<(LogIndex, Term), ProposeError> {
        let (ack, acked) = oneshot::channel();
        self.send(Event::Propose {
            command,
            ack: Some(ack),
            waiter: None,
        })?;
        match acked.await {
            Ok(Ok(id)) => Ok((id.index, id.term)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ProposeError::Stopped),
        }
    }

    /// Replicates `command` and resolves with the state machine's response once this
    /// node has applied it.
    ///
    /// It always ends: with the response; with [`ProposeError::NotLeader`] (or
    /// [`TransferInProgress`](ProposeError::TransferInProgress)) if the command was not
    /// appended; or with [`ProposeError::OutcomeUnknown`] if it was appended but this
    /// node stopped leading or shut down before seeing it commit, in which case it may
    /// still commit.
    ///
    /// Must not be awaited from inside the state machine's `apply`: it would wait for
    /// itself.
    pub async fn propose(&self, command: C) -> Result<R, ProposeError> {
        let (reply, result) = reply_channel();
        self.send(Event::Propose {
            command,
            ack: None,
            // The apply task records the proposal's latency when it answers.
            waiter: Some(Waiter::new(reply, (self.clock)())),
        })?;
        result.await.unwrap_or(Err(ProposeError::Stopped))
    }

    /// How long the proposals made through [`propose`](Raft::propose) on this node (on
    /// any of its handles) that the leader appended took to end: a histogram over
    /// [`LATENCY_BUCKETS`](crate::LATENCY_BUCKETS), measured on the runtime's clock.
    pub fn proposal_latency(&self) -> ProposalLatency {
        self.shared.proposal_latency.read()
    }

    /// Obtains a read index (ReadIndex, Raft thesis §6.4): once this node's state
    /// machine has applied up to it, a read of that state is linearizable.
    ///
    /// A leader confirms it still leads with one round of heartbeats to a majority (or
    /// not at all under a valid lease, with [`Config::lease_reads`]); a follower asks its
    /// leader. Nothing is written to the log. Fails with [`ReadError::NotReady`] until
    /// the leader has committed an entry of its term, and with [`ReadError::NotLeader`]
    /// when no leader could confirm. See [`read_barrier`](Raft::read_barrier) for the
    /// wait that follows.
    pub async fn read_index(&self) -> Result<LogIndex, ReadError> {
        // Under a lease the event loop would answer at once with its commit index; the
        // loop publishes both, so the answer comes from here without the round trip.
        if let Some(index) = self.shared.lease_read((self.clock)()) {
            return Ok(index);
        }
        let (waiter, result) = oneshot::channel();
        match self.shared.reads.push(waiter) {
            Queuing::Announce => {
                if self.send(Event::ReadIndex).is_err() {
                    self.shared.reads.close();
                }
            }
            Queuing::Covered | Queuing::Closed => {}
        }
        result.await.unwrap_or(Err(ReadError::Stopped))
    }

    /// Waits until this node's state machine has applied `index`.
    pub async fn wait_applied(&self, index: LogIndex) -> Result<(), ReadError> {
        if self.shared.has_applied(index) {
            return Ok(());
        }
        let reached = self
            .shared
            .applied_reaches(index)
            .ok_or(ReadError::Stopped)?;
        reached.await.map_err(|_| ReadError::Stopped)
    }

    /// A linearizable read barrier: obtains a read index and waits until the state
    /// machine has applied it. A read of the state machine made after this returns
    /// reflects every write that completed before it was called.
    ///
    /// ```no_run
    /// # async fn example(raft: raft_impl::Raft<String, String>) -> Result<(), raft_impl::ReadError> {
    /// raft.read_barrier().await?;
    /// // Now read the state machine's state directly.
    /// # Ok(()) }
    /// ```
    pub async fn read_barrier(&self) -> Result<LogIndex, ReadError> {
        let index = self.read_index().await?;
        self.wait_applied(index).await?;
        Ok(index)
    }

    /// Hands leadership to `to` (Raft thesis §3.10): the leader brings `to` up to date,
    /// stops taking proposals meanwhile, and tells it to campaign at once. Returns when
    /// the transfer has started; watch [`watch_leadership`](Raft::watch_leadership) or
    /// [`status`](Raft::status) for the outcome. The leader gives up after an election
    /// timeout and takes proposals again.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        let (reply, result) = oneshot::channel();
        self.send(Event::Transfer { to, reply })
            .map_err(|_| TransferError::Stopped)?;
        result.await.unwrap_or(Err(TransferError::Stopped))
    }

    /// Adds `id` (reachable at `address`) as a learner: it receives the log and
    /// snapshots but does not vote. Resolves once the configuration that adds it has
    /// committed.
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<(), MembershipChangeError> {
        self.change(MembershipChange::AddLearner(id, address.into()))
            .await
    }

    /// Adds `id` as a voter: first as a learner, promoted once it holds everything the
    /// leader had committed, so that its vote never stalls commits while it catches up.
    /// Resolves once the configuration that makes it a voter has committed. A learner
    /// that never catches up (it is down) keeps this waiting while the leader leads:
    /// wrap it in a timeout.
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<(), MembershipChangeError> {
        self.change(MembershipChange::AddVoter(id, address.into()))
            .await
    }

    /// Promotes the learner `id` to voter once it has caught up.
    pub async fn promote_learner(&self, id: NodeId) -> Result<(), MembershipChangeError> {
        self.change(MembershipChange::Promote(id)).await
    }

    /// Removes `id` from the cluster, voter or learner; the leader may remove itself (it
    /// leads until the change commits, then steps down). Resolves once the
    /// configuration without it has committed.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipChangeError> {
        self.change(MembershipChange::Remove(id)).await
    }

    /// Moves the cluster to `target` (any voters and learners, with addresses): through
    /// the joint configuration when more than one voter changes. Resolves once `target`
    /// itself has committed.
    pub async fn change_membership(&self, target: Membership) -> Result<(), MembershipChangeError> {
        self.change(MembershipChange::Set(target)).await
    }

    async fn change(&self, change: MembershipChange) -> Result<(), MembershipChangeError> {
        let (reply, result) = oneshot::channel();
        self.send(Event::ChangeMembership { change, reply })
            .map_err(|_| MembershipChangeError::Stopped)?;
        result.await.unwrap_or(Err(MembershipChangeError::Stopped))
    }

    /// Subscribes to changes of this node's role, term and leader.
    pub fn watch_leadership(&self) -> LeadershipWatch {
        self.shared.watch_leadership()
    }

    /// The current term and whether this node believes it is the leader (the lab's
    /// `GetState`).
    pub fn state(&self) -> (Term, bool) {
        let status = self.shared.status();
        (status.term, status.role == RoleKind::Leader)
    }

    /// A subscription to this node's [`Status`]: `changed()` returns the latest one
    /// each time something changed (role, term, leader, indices, progress, counters),
    /// skipping intermediate states for a slow reader, and `None` once the node stops.
    /// For exporting metrics without polling.
    pub fn watch_status(&self) -> StatusWatch {
        self.shared.watch_status()
    }

    /// A snapshot of the node's state.
    pub fn status(&self) -> Status {
        self.shared.snapshot_status()
    }

    /// Hands Raft the service's snapshot of its state up to and including `index`; Raft
    /// saves it together with its own state, atomically, and discards the log it covers
    /// (the lab's `Snapshot`).
    ///
    /// Returns at once, without waiting for the write, so it may be called from inside
    /// the state machine's `apply` (for the entry being applied, too). A snapshot that
    /// is not newer than the current one is [`SnapshotError::Stale`], one of an index
    /// not yet handed to the state machine [`SnapshotError::NotApplied`]; neither
    /// changes anything. (A snapshot from the leader installed in the meantime can
    /// still make the node ignore an accepted one, as stale; it says so at debug level.)
    pub fn snapshot(&self, index: LogIndex, data: Bytes) -> Result<(), SnapshotError> {
        let status = self.shared.snapshot_status();
        if status.stopped {
            return Err(SnapshotError::Stopped);
        }
        if index <= status.snapshot.index {
            return Err(SnapshotError::Stale {
                index,
                current: status.snapshot.index,
            });
        }
        let handed = self.shared.applying();
        if index > handed {
            return Err(SnapshotError::NotApplied {
                index,
                applied: handed,
            });
        }
        self.send(Event::Snapshot { index, data })
            .map_err(|_| SnapshotError::Stopped)
    }

    /// Stops the node: it sends nothing afterwards, answers no request, and its state
    /// machine is not called again once this returns. Idempotent.
    pub async fn shutdown(&self) {
        self.stop(false).await;
    }

    /// Like [`shutdown`](Raft::shutdown), but a leader first hands leadership to the
    /// voter with the most of its log (as [`transfer_leadership`](Raft::transfer_leadership)
    /// does) and stops once it has left office, so the cluster does not sit out an
    /// election timeout without a leader. It waits at most an election timeout for
    /// that; a node that does not lead, or has no voter to hand to, just stops.
    pub async fn shutdown_handing_over(&self) {
        self.stop(true).await;
    }

    async fn stop(&self, hand_over: bool) {
        let (done, stopped) = oneshot::channel();
        if self
            .events
            .try_send(Event::Shutdown { done, hand_over })
            .is_ok()
        {
            let _ = stopped.await;
        }
        self.shared.stop();
    }

    /// Whether the node has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    fn send(&self, event: Event<C, R>) -> Result<(), ProposeError> {
        if self.shared.is_stopped() {
            return Err(ProposeError::Stopped);
        }
        self.events
            .try_send(event)
            .map_err(|_| ProposeError::Stopped)
    }
}

#[async_trait]
impl<C: Command, R: Send + 'static> RpcHandler<C> for Raft<C, R> {
    async fn handle(&self, request: Request<C>) -> Result<Response, HandlerError> {
        // A snapshot the state machine could not restore is refused here, before the
        // core installs it and compacts its log: once installed, the node would have no
        // state left to serve from. Its checksum is the core's to check, with the other
        // admission rules (computing it here too would read a large snapshot twice);
        // damaged bytes that no longer decode are refused here as invalid.
        //
        // The check needs the whole data, so it runs on a snapshot that arrives in one
        // piece (at most `Config::snapshot_chunk_size` bytes). A snapshot sent in several
        // pieces is never held whole on this side: its bytes are checked against the
        // leader's checksum of them, so they are what the leader's own state machine
        // produced, and a state machine that cannot restore them stops this node.
        if let Request::InstallSnapshot(install) = &request
            && install.is_whole()
            && let Err(error) = (self.check_snapshot)(&Snapshot {
                meta: install.snapshot.meta.clone(),
                data: install.data.clone(),
            })
        {
            self.shared.note_refused();
            tracing::warn!(
                node = %self.shared.id,
                leader = %install.leader,
                covers = %install.snapshot.meta.last_included,
                %error,
                "refused a snapshot the state machine cannot restore"
            );
            return Err(HandlerError::Refused(RequestRefused::InvalidSnapshot {
                reason: error.to_string(),
            }));
        }
        let (reply, replied) = reply_channel();
        let reply = Replier::Awaited(reply);
        self.send(Event::Request { request, reply })
            .map_err(|_| HandlerError::Stopped)?;
        match replied.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(refused)) => Err(HandlerError::Refused(refused)),
            Err(_) => Err(HandlerError::Stopped),
        }
    }

    /// The reply goes to `reply` from the node's event loop, the moment the loop has it:
    /// a transport's server then sends it without a task of its own waking for it. A
    /// snapshot in one piece is given back, to be checked by [`handle`](Self::handle)
    /// first.
    fn handle_then(
        &self,
        request: Request<C>,
        reply: ReplyTo,
    ) -> Result<(), (Request<C>, ReplyTo)> {
        if matches!(&request, Request::InstallSnapshot(install) if install.is_whole()) {
            return Err((request, reply));
        }
        let reply = Replier::Direct(DirectReply::new(reply));
        // Refused only once the node stopped; the event, dropped, answers so.
        let _ = self.send(Event::Request { request, reply });
        Ok(())
    }
}
