//! The leader: accepts commands, replicates them, and commits by majority.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use raft_traits::{
    AppendEntries, AppendOutcome, Bytes, Command, Entry, IndexReply, InstallOutcome,
    InstallSnapshot, LogId, LogIndex, Membership, NodeId, Payload, ReadIndexRefusal, Request,
    Response, TimeoutNow,
};

use super::dispatch::RpcKind;
use super::effects::{Effects, Persist, ReadId, ReadRefused, RequestId, SendTag, Timer};
use super::node::{Node, Shared};
use super::progress::{Progress, Refusal, ReplicationMode};

/// The leader role's own state.
#[derive(Clone, Debug)]
pub struct Leader {
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// When the current check-quorum window began: by the end of a window a majority
    /// must have answered something sent in it.
    pub(super) contact_window_start: Duration,
    /// Reads waiting for a round of heartbeats to confirm this node still leads.
    pub(super) reads: VecDeque<PendingRead>,
    /// The confirmation rounds in flight: the first request of each, oldest first.
    pub(super) read_rounds: VecDeque<u64>,
    /// A leadership transfer under way.
    pub(super) transfer: Option<Transfer>,
    /// Whether this leader told a follower to campaign at once (TimeoutNow) in this term.
    /// Voters grant a handover even within the election timeout, so from then on no
    /// lease can stand for this term.
    pub(super) handed_over: bool,
    /// Learners to promote to voters once they have caught up.
    pub(super) promotions: BTreeSet<NodeId>,
    /// Heartbeats sent in this term: the leader's only notion of elapsed time.
    pub(super) ticks: u64,
    /// The last index of the leader's own log known to be on stable storage. The leader
    /// sends new entries while it writes them (§10.2.1) and counts itself toward a
    /// majority only up to here.
    pub(super) durable: LogIndex,
    /// Whether the commit-notice timer is running. It is armed once and not pushed back,
    /// so a stream of commits delays a follower's notice by at most the configured delay.
    pub(super) commit_notice_armed: bool,
}

/// How many rounds of heartbeats confirming reads may be in flight at once: enough to
/// overlap the rounds of reads that keep arriving, few enough that a burst of reads
/// cannot flood the followers with heartbeats.
pub const MAX_READ_ROUNDS: usize = 4;

/// A read waiting for confirmation that this node still leads.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingRead {
    pub(super) reader: Reader,
    /// The commit index when the read arrived: the read may be served once applied.
    pub(super) index: LogIndex,
    /// Any request from this one on, answered by a majority, confirms the read.
    pub(super) needs_seq: u64,
}

/// Who asked for a read.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reader {
    /// The application, through this node's handle.
    Local(ReadId),
    /// A follower, whose ReadIndex request is answered with the index.
    Remote(RequestId),
}

/// A leadership transfer under way (thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The server that is to take over.
    pub to: NodeId,
    /// When the transfer began; it is abandoned after an election timeout.
    pub started_at: Duration,
}

/// A leader's read lease (thesis §6.4.1), as [`Node::read_lease`] gives it: a read
/// that starts before `until` (on the clock the core is given) may use `index` as its
/// read index without a round of heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLease {
    /// When the lease ends.
    pub until: Duration,
    /// The read index it gives: the commit index when the lease was read.
    pub index: LogIndex,
}

/// Why a membership change was not started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipRefused {
    /// This node is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// An earlier change has not finished (its entry is not committed, or the joint
    /// phase has not ended): one change at a time (thesis §4.1).
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The leader has not committed an entry of its term yet, so it may not know the
    /// latest committed configuration (thesis §4.1, the bug found after the paper).
    #[error("the leader has not yet committed an entry of its term")]
    NotReady,
    /// The target configuration is not valid (no voters, unlisted nodes, ...).
    #[error("invalid target configuration: {0}")]
    Invalid(#[from] raft_traits::MembershipError),
    /// The node named is not a member.
    #[error("{0} is not a member of the cluster")]
    UnknownNode(NodeId),
    /// A learner would become a voter before it has caught up with the leader's log.
    #[error("{id} has not caught up (it holds up to {matched}, the leader commits {needed})")]
    NotCaughtUp {
        /// The learner.
        id: NodeId,
        /// What it holds.
        matched: LogIndex,
        /// What it must hold at least.
        needed: LogIndex,
    },
}

/// Why a leadership transfer was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefused {
    /// The target does not vote (or is not a member).
    #[error("{to} is not a voter of this cluster")]
    NotAVoter {
        /// The requested target.
        to: NodeId,
    },
    /// Another transfer is under way.
    #[error("a transfer to {to} is already under way")]
    InProgress {
        /// Its target.
        to: NodeId,
    },
    /// This node is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
}

impl Leader {
    pub(super) fn new(
        progress: BTreeMap<NodeId, Progress>,
        durable: LogIndex,
        now: Duration,
    ) -> Leader {
        Leader {
            progress,
            contact_window_start: now,
            reads: VecDeque::new(),
            read_rounds: VecDeque::new(),
            transfer: None,
            handed_over: false,
            promotions: BTreeSet::new(),
            ticks: 0,
            durable,
            commit_notice_armed: false,
        }
    }

    /// What the leader knows about `peer`'s log.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        self.progress.get(&peer)
    }

    /// The leadership transfer under way, if any.
    pub fn transfer(&self) -> Option<Transfer> {
        self.transfer
    }
}

impl<C: Command> Node<Leader, C> {
    /// Appends a client command to the log and starts replicating it. Returns where it
    /// went: the index it will commit at, if it commits, and the current term.
    pub fn propose(&mut self, command: C, out: &mut Effects<C>) -> LogId {
        let ids = self.propose_batch(std::iter::once(command), out);
        ids.first().copied().unwrap_or_default()
    }

    /// Appends several client commands at once: one write to storage and one
    /// AppendEntries per follower for all of them. Returns their ids, in order.
    ///
    /// The AppendEntries leave while the leader writes the entries (§10.2.1): the write is
    /// emitted after the sends, and the leader counts its own copy toward a majority only
    /// once the driver reports it durable with [`Input::Persisted`](super::Input).
    pub fn propose_batch(
        &mut self,
        commands: impl IntoIterator<Item = C>,
        out: &mut Effects<C>,
    ) -> Vec<LogId> {
        let first = self.shared.log.last_index().next();
        let ids: Vec<LogId> = commands
            .into_iter()
            .map(|command| self.push(Payload::Command(command)))
            .collect();
        if let Some(last) = ids.last() {
            let count = ids.len() as u64;
            self.shared.counters.proposals = self.shared.counters.proposals.saturating_add(count);
            self.replicate(out);
            let written = self.shared.log.entries_between(first, last.index);
            out.persist(Persist::Entries(written));
        }
        ids
    }

    /// Sends every follower what it is missing, or a heartbeat if it is missing nothing.
    /// Called on every heartbeat tick, whatever is in flight: that is how lost requests
    /// are retried.
    pub fn heartbeat(&mut self, out: &mut Effects<C>) {
        self.role.ticks += 1;
        if let Some(transfer) = self.role.transfer
            && self.shared.now >= transfer.started_at + self.shared.config.election_timeout_max
        {
            tracing::warn!(node = %self.shared.id, to = %transfer.to, "leadership transfer timed out; taking proposals again");
            self.role.transfer = None;
        }
        // The heartbeat is a round for every read waiting for one.
        if self.reads_need_round() {
            self.role.read_rounds.push_back(self.shared.next_seq + 1);
        }
        self.broadcast(out);
        self.send_timeout_now_if_caught_up(out);
        out.set_timer(Timer::Heartbeat, self.shared.config.heartbeat_interval);
    }

    /// Check-quorum (thesis §6.2): whether a majority answered within the last window
    /// of `election_timeout_min`. Called at each heartbeat; once a window has passed it
    /// is judged and a new one begins. Always true without `check_quorum`.
    pub fn has_contact_quorum(&mut self) -> bool {
        let config = &self.shared.config;
        let now = self.shared.now;
        let start = self.role.contact_window_start;
        if !config.check_quorum || now < start + config.election_timeout_min {
            return true;
        }
        let me = self.shared.id;
        let progress = &self.role.progress;
        let heard = self
            .shared
            .quorum
            .is_met_by(|id| id == me || progress.get(&id).is_some_and(|p| p.heard_since(start)));
        self.role.contact_window_start = now;
        heard
    }

    /// Proposes a new configuration (thesis ch. 4). A change of at most one voter is
    /// appended directly (a single-server change); any larger change goes through the
    /// joint configuration C_old,new, and the leader appends the final one by itself once
    /// the joint one commits. The new configuration takes effect as soon as it is
    /// appended. Refused while another change is unfinished, before this leader has
    /// committed an entry of its term, for an invalid target, and for a new voter that
    /// has not caught up (see [`is_caught_up`](Self::is_caught_up)).
    pub fn change_membership(
        &mut self,
        target: Membership,
        out: &mut Effects<C>,
    ) -> Result<LogId, MembershipRefused> {
        target.validate()?;
        if target.is_joint() {
            return Err(MembershipRefused::ChangeInProgress);
        }
        self.may_change_membership()?;
        let current = self.shared.configs.effective().clone();
        for &id in &target.voters {
            if id != self.shared.id && !current.is_voter(id) && !self.is_caught_up(id) {
                let matched = self
                    .role
                    .progress
                    .get(&id)
                    .map_or(LogIndex::ZERO, Progress::match_index);
                return Err(MembershipRefused::NotCaughtUp {
                    id,
                    matched,
                    needed: self.shared.commit_index,
                });
            }
        }
        let next = if current.voter_changes(&target) <= 1 {
            target
        } else {
            current.joint_to(&target)
        };
        tracing::info!(node = %self.shared.id, term = %self.shared.term(), voters = ?next.voters, learners = ?next.learners, joint = next.is_joint(), "membership change");
        let id = self.push(Payload::Membership(Box::new(next)));
        self.replicate(out);
        out.persist(Persist::Entries(
            self.shared.log.entries_between(id.index, id.index),
        ));
        Ok(id)
    }

    /// Adds `id` as a learner (if it is not a member yet) and promotes it to voter once
    /// it has caught up.
    pub fn add_voter(
        &mut self,
        id: NodeId,
        address: String,
        out: &mut Effects<C>,
    ) -> Result<(), MembershipRefused> {
        let current = self.shared.configs.effective().clone();
        if current.is_voter(id) {
            return Ok(());
        }
        // Refused now rather than left waiting: a promotion could not start either.
        self.may_change_membership()?;
        if !current.contains(id) {
            self.change_membership(current.with_learner(id, address), out)?;
        }
        self.role.promotions.insert(id);
        self.promote_caught_up(out);
        Ok(())
    }

    /// The rule for promoting a learner: it holds everything the leader had committed
    /// (its match index reaches the commit index), so that adding its vote cannot stall
    /// commits while it catches up (thesis §4.2.1).
    pub fn is_caught_up(&self, id: NodeId) -> bool {
        self.role
            .progress
            .get(&id)
            .is_some_and(|p| p.match_index() >= self.shared.commit_index)
    }

    fn may_change_membership(&self) -> Result<(), MembershipRefused> {
        let configs = &self.shared.configs;
        if configs.effective_index() > self.shared.commit_index || configs.effective().is_joint() {
            return Err(MembershipRefused::ChangeInProgress);
        }
        if self.shared.log.term_at(self.shared.commit_index) != Some(self.shared.term()) {
            return Err(MembershipRefused::NotReady);
        }
        Ok(())
    }

    /// After a commit: ends a committed joint phase with the final configuration, and
    /// promotes learners that have caught up.
    fn advance_membership(&mut self, out: &mut Effects<C>) {
        let configs = &self.shared.configs;
        if configs.effective().is_joint() && configs.effective_index() <= self.shared.commit_index {
            let last = configs.effective().finalized();
            tracing::info!(node = %self.shared.id, voters = ?last.voters, "joint configuration committed; appending the final one");
            let id = self.push(Payload::Membership(Box::new(last)));
            self.replicate(out);
            out.persist(Persist::Entries(
                self.shared.log.entries_between(id.index, id.index),
            ));
            return;
        }
        self.promote_caught_up(out);
    }

    fn promote_caught_up(&mut self, out: &mut Effects<C>) {
        if self.role.promotions.is_empty() || self.may_change_membership().is_err() {
            return;
        }
        let current = self.shared.configs.effective().clone();
        self.role
            .promotions
            .retain(|&id| current.contains(id) && !current.is_voter(id));
        let Some(&id) = self
            .role
            .promotions
            .iter()
            .find(|&&id| self.is_caught_up(id))
        else {
            return;
        };
        let mut target = current;
        target.learners.remove(&id);
        target.voters.insert(id);
        if self.change_membership(target, out).is_ok() {
            self.role.promotions.remove(&id);
        }
    }

    /// Whether this leader is outside the committed configuration's voters: it led the
    /// change that removed it and must now step down (thesis §4.2.2).
    pub fn is_removed(&self) -> bool {
        let configs = &self.shared.configs;
        configs.effective_index() <= self.shared.commit_index
            && !configs.effective().is_voter(self.shared.id)
    }

    /// Follows the effective configuration: a progress for every new peer, probing from
    /// the entry just appended (the configuration that added it), none for those gone.
    fn sync_progress(&mut self) {
        let next = self.shared.log.last_index();
        let peers = &self.shared.peers;
        self.role.progress.retain(|id, _| peers.contains(id));
        for &peer in peers {
            self.role
                .progress
                .entry(peer)
                .or_insert_with(|| Progress::new(next));
        }
    }

    /// Starts handing leadership to `to` (thesis §3.10): no proposals are taken while
    /// it lasts; once `to` holds the whole log it is told to campaign at once; after an
    /// election timeout without a new leader the transfer is abandoned.
    pub fn transfer_leadership(
        &mut self,
        to: NodeId,
        out: &mut Effects<C>,
    ) -> Result<(), TransferRefused> {
        if let Some(transfer) = self.role.transfer {
            return Err(TransferRefused::InProgress { to: transfer.to });
        }
        if to == self.shared.id {
            return Ok(());
        }
        if !self.shared.quorum.contains(to) || !self.role.progress.contains_key(&to) {
            return Err(TransferRefused::NotAVoter { to });
        }
        self.role.transfer = Some(Transfer {
            to,
            started_at: self.shared.now,
        });
        tracing::info!(node = %self.shared.id, %to, term = %self.shared.term(), "transferring leadership");
        self.replicate_to(to, out);
        self.send_timeout_now_if_caught_up(out);
        Ok(())
    }

    fn send_timeout_now_if_caught_up(&mut self, out: &mut Effects<C>) {
        let Some(transfer) = self.role.transfer else {
            return;
        };
        let last_index = self.shared.log.last_index();
        let caught_up = self
            .role
            .progress
            .get(&transfer.to)
            .is_some_and(|p| p.match_index() >= last_index);
        if caught_up {
            let request = TimeoutNow {
                term: self.shared.term(),
                leader: self.shared.id,
            };
            self.shared
                .send(transfer.to, Request::TimeoutNow(request), out);
        }
    }

    /// Asks for a linearizable read (ReadIndex, thesis §6.4): the answer, an
    /// [`Effect::Read`](super::Effect::Read) with the index to wait for, comes once a
    /// majority has confirmed this node still leads, or at once under a valid lease.
    ///
    /// The round of heartbeats that confirms it starts at the next
    /// [`start_read_round`](Node::start_read_round) (or heartbeat), so that the reads
    /// that arrive together share one round.
    pub fn read_index(&mut self, id: ReadId, out: &mut Effects<C>) {
        self.read_for(Reader::Local(id), out);
    }

    pub(super) fn read_for(&mut self, reader: Reader, out: &mut Effects<C>) {
        let commit = self.shared.commit_index;
        // Until an entry of its own term commits, a new leader does not know the latest
        // commit index: earlier leaders may have committed more than it has seen.
        if self.shared.log.term_at(commit) != Some(self.shared.term()) {
            self.answer_read(reader, Err(ReadRefused::NotReady), out);
            return;
        }
        if self.has_lease() {
            self.answer_read(reader, Ok(commit), out);
            return;
        }
        self.role.reads.push_back(PendingRead {
            reader,
            index: commit,
            needs_seq: self.shared.next_seq + 1,
        });
        // A leader alone is a majority: confirmed at once.
        self.confirm_reads(out);
    }

    /// Starts a round of heartbeats for the reads that arrived since the last round
    /// began, unless [`MAX_READ_ROUNDS`] rounds are in flight already (the reads then wait
    /// for the oldest to end). Rounds overlap: a read that arrives while one is in flight
    /// need not wait for it to end before its own starts, which would make it wait for
    /// two round trips. The driver calls this once per batch of events.
    pub fn start_read_round(&mut self, out: &mut Effects<C>) {
        if self.reads_need_round() && self.role.read_rounds.len() < MAX_READ_ROUNDS {
            self.role.read_rounds.push_back(self.shared.next_seq + 1);
            self.broadcast(out);
        }
    }

    /// Whether a read is waiting for a round that has not started: one that arrived
    /// after the latest round's requests were sent.
    fn reads_need_round(&self) -> bool {
        self.role.reads.back().is_some_and(|read| {
            self.role
                .read_rounds
                .back()
                .is_none_or(|&round| read.needs_seq > round)
        })
    }

    fn answer_read(
        &mut self,
        reader: Reader,
        result: Result<LogIndex, ReadRefused>,
        out: &mut Effects<C>,
    ) {
        match reader {
            Reader::Local(id) => out.read(id, result),
            Reader::Remote(request) => {
                let reply = IndexReply {
                    term: self.shared.term(),
                    index: result.ok(),
                    refusal: result.err().map(|refused| match refused {
                        ReadRefused::NotReady => ReadIndexRefusal::NotReady,
                        ReadRefused::NotLeader { .. } => ReadIndexRefusal::NotLeader,
                    }),
                };
                out.reply(request, Response::Index(reply));
            }
        }
    }

    /// Answers every read that a majority has confirmed since it arrived.
    fn confirm_reads(&mut self, out: &mut Effects<C>) {
        if self.role.reads.is_empty() {
            return;
        }
        let me = self.shared.id;
        let progress = &self.role.progress;
        let confirmed = self
            .shared
            .quorum
            .agreed_value(|id| {
                if id == me {
                    u64::MAX
                } else {
                    progress.get(&id).map_or(0, Progress::acked_seq)
                }
            })
            .unwrap_or(0);
        while let Some(read) = self.role.reads.front().copied() {
            if read.needs_seq > confirmed {
                break;
            }
            self.role.reads.pop_front();
            self.answer_read(read.reader, Ok(read.index), out);
        }
        // A round is over once a majority answered it, or anything sent after it (its
        // own requests may have been lost).
        let in_flight = self.role.read_rounds.len();
        while self
            .role
            .read_rounds
            .front()
            .is_some_and(|&round| round <= confirmed)
        {
            self.role.read_rounds.pop_front();
        }
        // Reads held back by the limit on rounds in flight go now.
        if self.role.read_rounds.len() < in_flight {
            self.start_read_round(out);
        }
    }

    /// Whether a lease read may skip the round (thesis §6.4.1): a majority acknowledged
    /// a request sent less than `election_timeout_min - clock_drift_margin` ago, so no
    /// other leader can have been elected since.
    fn has_lease(&self) -> bool {
        self.lease_until()
            .is_some_and(|until| self.shared.now < until)
    }

    /// Until when this leader holds a read lease, if lease reads are on: the time a
    /// request that a majority has acknowledged was sent, plus `election_timeout_min -
    /// clock_drift_margin`. Followers refuse votes for that long after hearing from
    /// this leader (stickiness), so no other leader can be elected before then.
    fn lease_until(&self) -> Option<Duration> {
        let config = &self.shared.config;
        if !(config.lease_reads && config.check_quorum) {
            return None;
        }
        // A handover lets the target be elected within the lease (its votes bypass
        // stickiness), so a transfer ends the lease: reads take the ReadIndex round.
        if self.role.transfer.is_some() || self.role.handed_over {
            return None;
        }
        let me = self.shared.id;
        let progress = &self.role.progress;
        let seq = self.shared.quorum.agreed_value(|id| {
            if id == me {
                u64::MAX
            } else {
                progress.get(&id).map_or(0, Progress::acked_seq)
            }
        })?;
        let sent_at = self.shared.sent_at(seq)?;
        let lease = config
            .election_timeout_min
            .saturating_sub(config.clock_drift_margin);
        sent_at.checked_add(lease)
    }

    /// The read lease the handle may answer reads from without asking this core: until
    /// when it holds, and the read index it gives (the commit index). `None` without a
    /// lease, and before this leader has committed an entry of its term (it does not
    /// know the latest commit index until then).
    pub fn read_lease(&self) -> Option<ReadLease> {
        let commit = self.shared.commit_index;
        if self.shared.log.term_at(commit) != Some(self.shared.term()) {
            return None;
        }
        Some(ReadLease {
            until: self.lease_until()?,
            index: commit,
        })
    }

    /// Fails every waiting read: this node is about to stop leading.
    pub(super) fn abandon_reads(&mut self, out: &mut Effects<C>) {
        while let Some(read) = self.role.reads.pop_front() {
            let refused = ReadRefused::NotLeader { leader_hint: None };
            self.answer_read(read.reader, Err(refused), out);
        }
        self.role.read_rounds.clear();
    }

    /// Appends an entry of the current term to the in-memory log.
    pub(super) fn push(&mut self, payload: Payload<C>) -> LogId {
        let entry = Entry {
            term: self.shared.term(),
            index: self.shared.log.last_index().next(),
            payload,
        };
        let id = entry.log_id();
        let reconfigures = matches!(entry.payload, Payload::Membership(_));
        self.shared.append_entry(entry);
        if reconfigures {
            self.sync_progress();
        }
        id
    }

    /// The driver made the leader's own log durable up to `up_to`.
    pub(super) fn handle_persisted(&mut self, up_to: LogId, out: &mut Effects<C>) {
        if up_to.term == self.shared.term()
            && self.shared.log.matches(up_to)
            && up_to.index > self.role.durable
        {
            self.role.durable = up_to.index;
            self.maybe_commit(out);
        }
    }

    /// One AppendEntries (or InstallSnapshot) to every follower.
    pub(super) fn broadcast(&mut self, out: &mut Effects<C>) {
        let resend_after = self.shared.config.install_snapshot_heartbeats();
        let ticks = self.role.ticks;
        let last_index = self.shared.log.last_index();
        for (&peer, progress) in &mut self.role.progress {
            match progress.mode {
                // Pieces in flight, answered recently enough: the transfer is moving.
                ReplicationMode::Snapshot { sent_at_tick, .. }
                    if !progress.pieces.is_empty()
                        && ticks.saturating_sub(sent_at_tick) < resend_after =>
                {
                    send_heartbeat(&mut self.shared, peer, progress, out);
                }
                // Nothing in flight (a failure wrote it off), or no answer for too long:
                // ask the follower where it stands, and go on from there.
                ReplicationMode::Snapshot { .. } => {
                    progress.snapshot_stalled();
                    send_snapshot(&mut self.shared, peer, progress, ticks, out);
                }
                ReplicationMode::Replicate if progress.next_index > last_index => {
                    send_heartbeat(&mut self.shared, peer, progress, out);
                }
                _ => send_entries(&mut self.shared, peer, progress, ticks, out),
            }
        }
    }

    /// Brings every follower up to date as far as flow control allows.
    fn replicate(&mut self, out: &mut Effects<C>) {
        let peers: Vec<NodeId> = self.role.progress.keys().copied().collect();
        for peer in peers {
            self.replicate_to(peer, out);
        }
    }

    /// Sends `peer` the entries it can take now; then, if it is idle but has not heard of
    /// the current commit index, a heartbeat carrying it (at once, or when the
    /// commit-notice timer fires), so that followers apply soon after the leader does
    /// rather than a heartbeat interval later.
    fn replicate_to(&mut self, peer: NodeId, out: &mut Effects<C>) {
        let max_inflight = self.shared.config.max_inflight_appends;
        let notice_delay = self.shared.config.commit_notice_delay;
        let ticks = self.role.ticks;
        let commit = self.shared.commit_index;
        let Some(progress) = self.role.progress.get_mut(&peer) else {
            return;
        };
        // Each send in replicate mode advances next_index, so this ends when the window
        // is full or the follower has been sent everything.
        while progress.can_send_entries(self.shared.log.last_index(), max_inflight) {
            let before = progress.next_index;
            send_entries(&mut self.shared, peer, progress, ticks, out);
            if progress.next_index == before {
                break;
            }
        }
        if !progress.awaits_commit_notice(commit) {
            return;
        }
        if notice_delay.is_zero() {
            send_heartbeat(&mut self.shared, peer, progress, out);
        } else if !self.role.commit_notice_armed {
            self.role.commit_notice_armed = true;
            out.set_timer(Timer::CommitNotice, notice_delay);
        }
    }

    /// The commit-notice timer fired: a heartbeat carrying the commit index to every
    /// follower that is idle and has not been sent it. Followers sent entries since the
    /// timer was armed got the index with them and are skipped.
    pub fn notify_commit(&mut self, out: &mut Effects<C>) {
        self.role.commit_notice_armed = false;
        let commit = self.shared.commit_index;
        for (&peer, progress) in self.role.progress.iter_mut() {
            if progress.awaits_commit_notice(commit) {
                send_heartbeat(&mut self.shared, peer, progress, out);
            }
        }
    }

    /// Handles a follower's answer to AppendEntries of this term.
    pub(super) fn handle_append_reply(
        &mut self,
        from: NodeId,
        tag: SendTag,
        outcome: AppendOutcome,
        out: &mut Effects<C>,
    ) {
        let last_index = self.shared.log.last_index();
        let ticks = self.role.ticks;
        let now = self.shared.now;
        let Some(progress) = self.role.progress.get_mut(&from) else {
            return;
        };
        progress.heard(tag.seq, now);
        match outcome {
            AppendOutcome::StaleTerm => {
                progress.answered(tag.seq);
            }
            AppendOutcome::Success { match_index } => {
                progress.answered(tag.seq);
                self.acknowledged(from, match_index, out);
            }
            AppendOutcome::Conflict {
                prev_log_index,
                hint,
            } => {
                // Fast back-off (the lab's XTerm/XIndex/XLen): skip the follower's whole
                // conflicting term, or jump to the end of its shorter log.
                let hinted = match hint.conflict_term {
                    Some(term) => self
                        .shared
                        .log
                        .last_index_of_term(term)
                        .map_or(hint.first_index, LogIndex::next),
                    None => hint.last_log_index.next(),
                };
                let refusal = Refusal {
                    seq: tag.seq,
                    prev_log_index,
                    follower_last_index: hint.last_log_index,
                    hinted_next: hinted,
                };
                if progress.refused(refusal, last_index) {
                    send_entries(&mut self.shared, from, progress, ticks, out);
                }
            }
        }
        self.confirm_reads(out);
    }

    /// Handles a follower's answer to InstallSnapshot of this term.
    pub(super) fn handle_install_reply(
        &mut self,
        from: NodeId,
        tag: SendTag,
        outcome: InstallOutcome,
        out: &mut Effects<C>,
    ) {
        let now = self.shared.now;
        if let Some(progress) = self.role.progress.get_mut(&from) {
            progress.heard(tag.seq, now);
        }
        self.confirm_reads(out);
        match outcome {
            InstallOutcome::StaleTerm => {}
            InstallOutcome::Installed { match_index } => self.acknowledged(from, match_index, out),
            InstallOutcome::Received { offset } => {
                let ticks = self.role.ticks;
                if let Some(progress) = self.role.progress.get_mut(&from) {
                    progress.snapshot_received(tag.seq, offset, ticks);
                    send_snapshot(&mut self.shared, from, progress, ticks, out);
                }
            }
        }
    }

    /// A follower confirmed that its log matches the leader's up to `match_index`.
    fn acknowledged(&mut self, from: NodeId, match_index: LogIndex, out: &mut Effects<C>) {
        if match_index > self.shared.log.last_index() {
            tracing::warn!(peer = %from, %match_index, "follower claims entries the leader never sent");
            return;
        }
        let Some(progress) = self.role.progress.get_mut(&from) else {
            return;
        };
        progress.matched(match_index, self.shared.next_seq);
        self.maybe_commit(out);
        self.replicate_to(from, out);
        if self.role.promotions.contains(&from) {
            self.promote_caught_up(out);
        }
        if self.role.transfer.is_some_and(|t| t.to == from) {
            self.send_timeout_now_if_caught_up(out);
        }
    }

    /// Handles a request of this term that got no reply.
    pub(super) fn handle_send_failure(&mut self, to: NodeId, tag: SendTag, rpc: RpcKind) {
        let Some(progress) = self.role.progress.get_mut(&to) else {
            return;
        };
        progress.send_failed(tag.seq, rpc);
    }

    /// Commits the highest index stored on a majority, if it is of the current term.
    ///
    /// Entries of earlier terms are never committed by counting replicas (Figure 8): they
    /// commit indirectly, when an entry of the current term after them does.
    pub(super) fn maybe_commit(&mut self, out: &mut Effects<C>) {
        let me = self.shared.id;
        let durable = self.role.durable;
        let progress = &self.role.progress;
        let Some(majority_index) = self.shared.quorum.agreed_value(|id| {
            if id == me {
                durable
            } else {
                progress
                    .get(&id)
                    .map_or(LogIndex::ZERO, Progress::match_index)
            }
        }) else {
            return;
        };
        let of_this_term = self.shared.log.term_at(majority_index) == Some(self.shared.term());
        if majority_index > self.shared.commit_index && of_this_term {
            self.shared.commit_to(majority_index, out);
            self.advance_membership(out);
            self.replicate(out);
        }
    }
}

/// Sends AppendEntries from the follower's `next_index`, or the snapshot if those
/// entries are compacted.
fn send_entries<C: Command>(
    shared: &mut Shared<C>,
    peer: NodeId,
    progress: &mut Progress,
    ticks: u64,
    out: &mut Effects<C>,
) {
    // The entry before next_index anchors the request; when neither the log (the
    // trailing window included) nor the snapshot boundary knows its term, only the
    // snapshot can bring the follower up.
    let last_included = shared.log.last_included();
    if progress.next_index <= last_included.index && progress.next_index <= shared.log.first_index()
    {
        send_snapshot(shared, peer, progress, ticks, out);
        return;
    }
    let prev_index = progress.next_index.prev();
    let Some(prev_term) = shared.log.term_at(prev_index) else {
        // next_index never passes the end of the log; reset it if it somehow did.
        tracing::error!(peer = %peer, next = %progress.next_index, "next_index past the end of the log");
        progress.rewind_to(shared.log.last_index().next());
        return;
    };
    let entries = shared
        .log
        .entries_from(progress.next_index, shared.config.max_append_entries);
    let count = entries.len() as u64;
    if count > 0 {
        let counters = &mut shared.counters;
        counters.append_requests = counters.append_requests.saturating_add(1);
        counters.entries_sent = counters.entries_sent.saturating_add(count);
    }
    let request = AppendEntries {
        term: shared.term(),
        leader: shared.id,
        prev_log: LogId::new(prev_term, prev_index),
        entries,
        leader_commit: shared.commit_index,
    };
    let commit = shared.commit_index;
    let tag = shared.send(peer, Request::Append(request), out);
    progress.sent_append(tag.seq, prev_index, count, commit);
}

/// An AppendEntries without entries, anchored where the follower is known to match, so it
/// keeps the follower's timer from firing and carries the commit index without causing a
/// rejection.
fn send_heartbeat<C: Command>(
    shared: &mut Shared<C>,
    peer: NodeId,
    progress: &mut Progress,
    out: &mut Effects<C>,
) {
    // The match index itself when the log still knows its term (it may lie in the
    // trailing window), else the snapshot boundary.
    let anchor = match shared.log.term_at(progress.match_index) {
        Some(_) => progress.match_index,
        None => progress.match_index.max(shared.log.last_included().index),
    };
    let prev_term = shared.log.term_at(anchor).unwrap_or_default();
    let request = AppendEntries {
        term: shared.term(),
        leader: shared.id,
        prev_log: LogId::new(prev_term, anchor),
        entries: Vec::new(),
        leader_commit: shared.commit_index,
    };
    let commit = shared.commit_index;
    let tag = shared.send(peer, Request::Append(request), out);
    progress.sent_append(tag.seq, anchor, 0, commit);
}

/// Sends `peer` the pieces of the snapshot the window has room for (starting the
/// transfer if it is not under way). The core names each piece; the driver reads its
/// bytes from storage.
fn send_snapshot<C: Command>(
    shared: &mut Shared<C>,
    peer: NodeId,
    progress: &mut Progress,
    ticks: u64,
    out: &mut Effects<C>,
) {
    let Some(snapshot) = shared.snapshot.clone() else {
        tracing::error!(peer = %peer, "the log is compacted but no snapshot is held");
        return;
    };
    progress.start_snapshot(snapshot.meta.last_included.index, ticks);
    let chunk = shared.config.snapshot_chunk_size as u64;
    let window = shared.config.snapshot_chunks_in_flight;
    while let Some((offset, len)) = progress.next_snapshot_piece(snapshot.size, chunk, window) {
        let done = offset.saturating_add(len) == snapshot.size;
        let request = InstallSnapshot {
            term: shared.term(),
            leader: shared.id,
            snapshot: snapshot.clone(),
            offset,
            data: Bytes::new(),
            done,
            checksum: 0,
        };
        let tag = shared.send_snapshot_piece(peer, request, len, out);
        progress.sent_snapshot_piece(tag.seq, offset, len, snapshot.size, ticks);
    }
}
