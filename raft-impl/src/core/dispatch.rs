//! The role dispatcher: [`AnyNode`] holds a node in whichever role it is in, takes an
//! [`Input`] and routes it to the role that handles it, returning the node in its next
//! role. Rules that depend on the sender's term (step down first, then handle as a
//! follower) live here, once, instead of in every role.

use std::time::Duration;

use raft_traits::{
    AppendOutcome, AppendReply, Command, HardState, IndexReply, InstallOutcome,
    InstallSnapshotReply, LogId, LogIndex, Membership, NodeId, ReadIndexRefusal, Request,
    RequestRefused, Response, SnapshotDescriptor, SnapshotMeta, Term, VoteReply,
};

use super::candidate::Candidate;
use super::effects::{Effects, ReadId, ReadRefused, RequestId, SendTag};
use super::follower::Follower;
use super::leader::{Leader, MembershipRefused, Reader, TransferRefused};
use super::log::RaftLog;
use super::membership::MembershipVersion;
use super::node::{Counters, Node, RoleKind, SnapshotRefused};
use super::pre_candidate::PreCandidate;
use super::quorum::VoteResult;

/// Which kind of RPC a request was, for reporting its failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// RequestVote.
    Vote,
    /// PreVote.
    PreVote,
    /// TimeoutNow.
    TimeoutNow,
    /// ReadIndex.
    ReadIndex,
    /// AppendEntries.
    Append,
    /// InstallSnapshot.
    InstallSnapshot,
}

impl RpcKind {
    /// The kind of `request`.
    pub fn of<C>(request: &Request<C>) -> RpcKind {
        match request {
            Request::Vote(_) => RpcKind::Vote,
            Request::PreVote(_) => RpcKind::PreVote,
            Request::TimeoutNow(_) => RpcKind::TimeoutNow,
            Request::ReadIndex(_) => RpcKind::ReadIndex,
            Request::Append(_) => RpcKind::Append,
            Request::InstallSnapshot(_) => RpcKind::InstallSnapshot,
        }
    }
}

/// Something that happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<C> {
    /// A peer's request; answer it with an [`Effect::Reply`](super::Effect::Reply) carrying `id`.
    Request {
        /// Handed back in the reply effect.
        id: RequestId,
        /// The request.
        request: Request<C>,
    },
    /// The reply to a request this node sent.
    Response {
        /// The peer that replied.
        from: NodeId,
        /// The tag of the request, from its [`Effect::Send`](super::Effect::Send).
        tag: SendTag,
        /// The reply.
        response: Response,
    },
    /// A request this node sent got no reply (lost, timed out, peer unreachable).
    SendFailed {
        /// The peer it was sent to.
        to: NodeId,
        /// The tag of the request, from its [`Effect::Send`](super::Effect::Send).
        tag: SendTag,
        /// What kind of request it was.
        rpc: RpcKind,
    },
    /// The driver wrote entries to stable storage, up to and including `up_to`. A leader
    /// counts its own copy toward a majority only once it is durable.
    Persisted {
        /// The last entry written.
        up_to: LogId,
    },
    /// The election timer fired.
    ElectionTimeout,
    /// The heartbeat timer fired.
    HeartbeatTimeout,
    /// The commit-notice timer fired.
    CommitNoticeDue,
}

/// Why a command was not appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeRefused {
    /// This server is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this server last heard from in its current term, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing over to `to` and takes no proposals meanwhile.
    #[error("leadership is being transferred to {to}")]
    TransferInProgress {
        /// The server taking over.
        to: NodeId,
    },
}

/// A node in whichever role it is in: what the driver holds.
#[derive(Debug)]
pub enum AnyNode<C> {
    /// A follower.
    Follower(Node<Follower, C>),
    /// A pre-candidate.
    PreCandidate(Node<PreCandidate, C>),
    /// A candidate.
    Candidate(Node<Candidate, C>),
    /// A leader.
    Leader(Node<Leader, C>),
}

impl<C> From<Node<Follower, C>> for AnyNode<C> {
    fn from(node: Node<Follower, C>) -> Self {
        AnyNode::Follower(node)
    }
}

impl<C> From<Node<PreCandidate, C>> for AnyNode<C> {
    fn from(node: Node<PreCandidate, C>) -> Self {
        AnyNode::PreCandidate(node)
    }
}

impl<C> From<Node<Candidate, C>> for AnyNode<C> {
    fn from(node: Node<Candidate, C>) -> Self {
        AnyNode::Candidate(node)
    }
}

impl<C> From<Node<Leader, C>> for AnyNode<C> {
    fn from(node: Node<Leader, C>) -> Self {
        AnyNode::Leader(node)
    }
}

/// Calls `$body` with `$node` bound to the typed node, whatever its role.
macro_rules! with_node {
    ($any:expr, $node:ident => $body:expr) => {
        match $any {
            AnyNode::Follower($node) => $body,
            AnyNode::PreCandidate($node) => $body,
            AnyNode::Candidate($node) => $body,
            AnyNode::Leader($node) => $body,
        }
    };
}

impl<C: Command> AnyNode<C> {
    /// Feeds one input to the node and returns it in its next role; what must happen
    /// next is appended to `out`.
    pub fn step(self, input: Input<C>, out: &mut Effects<C>) -> AnyNode<C> {
        let node = self.step_role(input, out);
        match node {
            // A leader whose removal committed steps down (thesis §4.2.2): it led the
            // change without counting itself, and now it is not a voter.
            AnyNode::Leader(mut leader) if leader.is_removed() => {
                tracing::info!(node = %leader.id(), term = %leader.term(), "stepping down: removed from the cluster");
                leader.abandon_reads(out);
                let term = leader.term();
                leader.into_follower(term, None, out).into()
            }
            other => other,
        }
    }

    fn step_role(self, input: Input<C>, out: &mut Effects<C>) -> AnyNode<C> {
        match input {
            Input::Request { id, request } => self.handle_request(id, request, out),
            Input::Response {
                from,
                tag,
                response,
            } => self.handle_response(from, tag, response, out),
            Input::SendFailed { to, tag, rpc } => {
                let mut node = self;
                if tag.term == node.term() {
                    match &mut node {
                        AnyNode::Leader(leader) => leader.handle_send_failure(to, tag, rpc),
                        AnyNode::Follower(follower) if rpc == RpcKind::ReadIndex => {
                            let refusal = Some(ReadIndexRefusal::NotLeader);
                            follower.handle_read_reply(tag.seq, None, refusal, out);
                        }
                        _ => {}
                    }
                }
                node
            }
            Input::Persisted { up_to } => match self {
                AnyNode::Leader(mut node) => {
                    node.handle_persisted(up_to, out);
                    node.into()
                }
                other => other,
            },
            Input::ElectionTimeout => self.election_timeout(out),
            Input::HeartbeatTimeout => match self {
                AnyNode::Leader(mut node) => {
                    if !node.has_contact_quorum() {
                        // Check-quorum: a leader that cannot reach a majority may have
                        // been replaced; stop taking proposals and reads it cannot
                        // commit or confirm.
                        tracing::info!(node = %node.id(), term = %node.term(), "stepping down: no contact with a quorum within an election timeout");
                        node.abandon_reads(out);
                        let term = node.term();
                        return node.into_follower(term, None, out).into();
                    }
                    node.heartbeat(out);
                    node.into()
                }
                other => other,
            },
            Input::CommitNoticeDue => match self {
                AnyNode::Leader(mut node) => {
                    node.notify_commit(out);
                    node.into()
                }
                // The timer is stopped on stepping down; a late fire means nothing.
                other => other,
            },
        }
    }

    fn election_timeout(self, out: &mut Effects<C>) -> AnyNode<C> {
        let stuck = self.term().checked_next().is_none();
        let voter = with_node!(&self, node => node.is_voter());
        if stuck || !voter {
            if stuck {
                // Only reachable by a term that entered before the limit existed:
                // refuse to wrap around, and keep following.
                tracing::error!(node = %self.id(), term = %self.term(), "the term cannot advance further; not campaigning");
            }
            // A node outside the voters never starts an election; it waits to hear
            // from a leader (or to become a voter).
            let mut node = self;
            with_node!(&mut node, n => n.shared.reset_election_timer(out));
            return node;
        }
        let pre_vote = with_node!(&self, node => node.config().pre_vote);
        match self {
            AnyNode::Follower(node) if pre_vote => node.into_pre_candidate(out).conclude(out),
            AnyNode::Follower(node) => node.into_candidate(out).into_leader_if_elected(out),
            AnyNode::PreCandidate(node) => node.into_pre_candidate(out).conclude(out),
            AnyNode::Candidate(node) if pre_vote => node.into_pre_candidate(out).conclude(out),
            AnyNode::Candidate(node) => node.into_candidate(out).into_leader_if_elected(out),
            // A leader has no election timer; a late fire means nothing.
            leader @ AnyNode::Leader(_) => leader,
        }
    }

    /// Tells the node what time it is. The driver calls it before each step; the core
    /// uses it for leader stickiness, check-quorum and leases, never reading a clock.
    pub fn advance_clock(&mut self, now: Duration) {
        with_node!(self, node => node.advance_clock(now));
    }

    /// Appends a client command, if this node is the leader.
    pub fn propose(&mut self, command: C, out: &mut Effects<C>) -> Result<LogId, ProposeRefused> {
        let ids = self.propose_batch(std::iter::once(command), out)?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// Appends several client commands, if this node is the leader and is not handing
    /// over; see [`Node::propose_batch`].
    pub fn propose_batch(
        &mut self,
        commands: impl IntoIterator<Item = C>,
        out: &mut Effects<C>,
    ) -> Result<Vec<LogId>, ProposeRefused> {
        match self {
            AnyNode::Leader(node) => match node.role().transfer() {
                Some(transfer) => Err(ProposeRefused::TransferInProgress { to: transfer.to }),
                None => Ok(node.propose_batch(commands, out)),
            },
            other => Err(ProposeRefused::NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
    }

    /// Asks for a linearizable read: a leader confirms it still leads (ReadIndex), a
    /// follower asks its leader. The answer comes as [`Effect::Read`](super::Effect::Read)
    /// with `id`.
    pub fn read_index(&mut self, id: ReadId, out: &mut Effects<C>) {
        match self {
            AnyNode::Leader(node) => node.read_index(id, out),
            AnyNode::Follower(node) => node.read_index(id, out),
            other => {
                let leader_hint = other.leader_hint();
                out.read(id, Err(ReadRefused::NotLeader { leader_hint }));
            }
        }
    }

    /// Starts the round of heartbeats that confirms the reads waiting for one, if this
    /// node leads; see [`Node::start_read_round`].
    pub fn start_read_round(&mut self, out: &mut Effects<C>) {
        if let AnyNode::Leader(node) = self {
            node.start_read_round(out);
        }
    }

    /// Starts handing leadership to `to`, if this node is the leader; see
    /// [`Node::transfer_leadership`].
    pub fn transfer_leadership(
        &mut self,
        to: NodeId,
        out: &mut Effects<C>,
    ) -> Result<(), TransferRefused> {
        match self {
            AnyNode::Leader(node) => node.transfer_leadership(to, out),
            other => Err(TransferRefused::NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
    }

    /// Proposes a new configuration, if this node is the leader; see
    /// [`Node::change_membership`].
    pub fn change_membership(
        &mut self,
        target: Membership,
        out: &mut Effects<C>,
    ) -> Result<LogId, MembershipRefused> {
        match self {
            AnyNode::Leader(node) => node.change_membership(target, out),
            other => Err(MembershipRefused::NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
    }

    /// Adds `id` as a learner and promotes it once caught up, if this node is the leader;
    /// see [`Node::add_voter`].
    pub fn add_voter(
        &mut self,
        id: NodeId,
        address: String,
        out: &mut Effects<C>,
    ) -> Result<(), MembershipRefused> {
        match self {
            AnyNode::Leader(node) => node.add_voter(id, address, out),
            other => Err(MembershipRefused::NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
    }

    /// The configuration in effect.
    pub fn membership(&self) -> &Membership {
        with_node!(self, node => node.membership())
    }

    /// The latest committed configuration.
    pub fn committed_membership(&self) -> &Membership {
        with_node!(self, node => node.committed_membership())
    }

    /// Tells cheaply whether either configuration may have changed.
    pub fn membership_version(&self) -> MembershipVersion {
        with_node!(self, node => node.membership_version())
    }

    /// Compacts the log up to `index` with the service's snapshot of it.
    pub fn snapshot(
        &mut self,
        index: LogIndex,
        data: bytes::Bytes,
        out: &mut Effects<C>,
    ) -> Result<LogId, SnapshotRefused> {
        with_node!(self, node => node.snapshot(index, data, out))
    }

    /// What a snapshot of this server's state up to `index` covers
    /// ([`Node::snapshot_meta`]).
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, SnapshotRefused> {
        with_node!(self, node => node.snapshot_meta(index))
    }

    /// Installs the snapshot of this server's state that storage staged
    /// ([`Node::snapshot_staged`]).
    pub fn snapshot_staged(
        &mut self,
        descriptor: SnapshotDescriptor,
        out: &mut Effects<C>,
    ) -> Result<LogId, SnapshotRefused> {
        with_node!(self, node => node.snapshot_staged(descriptor, out))
    }

    /// Whether this node heard from a live leader within the minimum election timeout
    /// (a leader counts itself): with check-quorum it then refuses votes and pre-votes,
    /// so a server that lost contact cannot disrupt a leader the others still follow.
    ///
    /// A server that has just started counts as having heard from one: it cannot know
    /// whether a leader's read lease still counts an acknowledgement it gave before it
    /// restarted, and a vote granted within that lease could elect a second leader while
    /// the first still serves lease reads.
    fn heard_leader_recently(&self) -> bool {
        let config = with_node!(self, node => node.config());
        if !config.check_quorum {
            return false;
        }
        match self {
            AnyNode::Leader(_) => true,
            AnyNode::Follower(node) => {
                let window = config.election_timeout_min;
                let now = node.now();
                let just_started = node
                    .shared
                    .started_at
                    .is_some_and(|started| now.saturating_sub(started) < window);
                just_started || node.role().heard_leader_within(now, window)
            }
            AnyNode::PreCandidate(_) | AnyNode::Candidate(_) => false,
        }
    }

    fn handle_request(
        mut self,
        id: RequestId,
        request: Request<C>,
        out: &mut Effects<C>,
    ) -> AnyNode<C> {
        if let Err(reason) = self.admit(&request) {
            tracing::warn!(node = %self.id(), from = %request.from(), %reason, "refused a {}", request.kind());
            with_node!(&mut self, node => node.shared.refused_messages += 1);
            out.refuse(id, reason);
            return self;
        }
        let sticky = self.heard_leader_recently();
        match &request {
            // A pre-vote changes nothing here, whatever its term (thesis §9.6).
            Request::PreVote(vote) => {
                let reply = with_node!(&self, node => node.pre_vote_reply(vote, sticky));
                out.reply(id, Response::PreVote(reply));
                return self;
            }
            // Leader stickiness (thesis §4.2.3): within the minimum election timeout of
            // hearing from a leader, neither adopt the candidate's term nor vote.
            Request::Vote(vote) if sticky && !vote.transfer && vote.term > self.term() => {
                let term = self.term();
                out.reply(
                    id,
                    Response::Vote(VoteReply {
                        term,
                        granted: false,
                    }),
                );
                return self;
            }
            _ => {}
        }
        // Figure 2, all servers: a newer term makes us a follower of it first; the request
        // is then handled by that follower.
        let node = if request.term() > self.term() {
            self.step_down(request.term(), out)
        } else {
            self
        };
        let term = node.term();
        match request {
            Request::PreVote(_) => node,
            Request::Vote(vote) => {
                let mut node = node;
                with_node!(&mut node, n => n.handle_vote_request(id, &vote, out));
                node
            }
            Request::TimeoutNow(timeout) => {
                let follows_sender = match &node {
                    AnyNode::Follower(f) => f.role().leader().is_none_or(|l| l == timeout.leader),
                    _ => false,
                };
                let voter = with_node!(&node, n => n.is_voter());
                if timeout.term < term || !follows_sender || !voter || term.checked_next().is_none()
                {
                    let reply = IndexReply {
                        term,
                        index: None,
                        refusal: None,
                    };
                    out.reply(id, Response::Index(reply));
                    return node;
                }
                let AnyNode::Follower(follower) = node else {
                    return node;
                };
                tracing::info!(node = %follower.id(), from = %timeout.leader, %term, "leader hands over: campaigning now");
                let candidate = follower.into_transfer_candidate(out);
                let reply = IndexReply {
                    term: candidate.term(),
                    index: Some(candidate.log().last_index()),
                    refusal: None,
                };
                out.reply(id, Response::Index(reply));
                candidate.into_leader_if_elected(out)
            }
            Request::ReadIndex(read) => match node {
                AnyNode::Leader(mut leader) if read.term == term => {
                    leader.read_for(Reader::Remote(id), out);
                    leader.into()
                }
                other => {
                    let reply = IndexReply {
                        term,
                        index: None,
                        refusal: Some(ReadIndexRefusal::NotLeader),
                    };
                    out.reply(id, Response::Index(reply));
                    other
                }
            },
            Request::Append(append) if append.term < term => {
                let outcome = AppendOutcome::StaleTerm;
                out.reply(id, Response::Append(AppendReply { term, outcome }));
                node
            }
            Request::Append(append) => {
                let mut follower = match node.into_follower_of(append.leader, out) {
                    Ok(follower) => follower,
                    Err(leader) => {
                        let outcome = AppendOutcome::StaleTerm;
                        out.reply(id, Response::Append(AppendReply { term, outcome }));
                        return leader;
                    }
                };
                follower.handle_append(id, append, out);
                follower.into()
            }
            Request::InstallSnapshot(install) if install.term < term => {
                let outcome = InstallOutcome::StaleTerm;
                let reply = InstallSnapshotReply { term, outcome };
                out.reply(id, Response::InstallSnapshot(reply));
                node
            }
            Request::InstallSnapshot(install) => {
                let mut follower = match node.into_follower_of(install.leader, out) {
                    Ok(follower) => follower,
                    Err(leader) => {
                        let outcome = InstallOutcome::StaleTerm;
                        let reply = InstallSnapshotReply { term, outcome };
                        out.reply(id, Response::InstallSnapshot(reply));
                        return leader;
                    }
                };
                follower.handle_install_snapshot(id, *install, out);
                follower.into()
            }
        }
    }

    fn handle_response(
        mut self,
        from: NodeId,
        tag: SendTag,
        response: Response,
        out: &mut Effects<C>,
    ) -> AnyNode<C> {
        if !self.is_peer(from) || !response.term().is_acceptable() {
            tracing::warn!(node = %self.id(), %from, term = %response.term(), "ignored a reply no member could have sent");
            with_node!(&mut self, node => node.shared.refused_messages += 1);
            return self;
        }
        // A granted pre-vote carries the term asked about, which is not adopted; only a
        // refusal's newer term is.
        if let (AnyNode::PreCandidate(node), Response::PreVote(vote)) = (&mut self, &response) {
            if vote.granted {
                if tag.term == node.term() {
                    node.record_pre_vote(from, true);
                }
                return self.conclude_pre_vote(out);
            }
            if vote.term <= node.term() {
                if tag.term == node.term() {
                    node.record_pre_vote(from, false);
                }
                return self.conclude_pre_vote(out);
            }
        }
        // A granted pre-vote that arrives after its round ended carries the term it was
        // asked about, not the voter's: it is no newer term to adopt (adopting it would
        // raise the term with every lost round, and the others would then refuse the
        // next pre-vote as stale: terms climb and no election is ever won).
        if let Response::PreVote(vote) = &response
            && vote.granted
        {
            return self;
        }
        // The order of the lab's reply rule: a newer term wins and ends the matter; a
        // reply to a request of another term is dropped; only then act on it.
        if response.term() > self.term() {
            return self.step_down(response.term(), out);
        }
        if tag.term != self.term() {
            return self;
        }
        match (self, response) {
            (AnyNode::Candidate(mut node), Response::Vote(vote)) => {
                node.record_vote(from, vote.granted);
                node.into_leader_if_elected(out)
            }
            (AnyNode::Leader(mut node), Response::Append(reply)) => {
                node.handle_append_reply(from, tag, reply.outcome, out);
                node.into()
            }
            (AnyNode::Leader(mut node), Response::InstallSnapshot(reply)) => {
                node.handle_install_reply(from, tag, reply.outcome, out);
                node.into()
            }
            (AnyNode::Follower(mut node), Response::Index(reply)) => {
                node.handle_read_reply(tag.seq, reply.index, reply.refusal, out);
                node.into()
            }
            // A reply meant for a role this node has left in the same term (a late vote
            // reaching the new leader): nothing to do.
            (node, _) => node,
        }
    }

    fn conclude_pre_vote(self, out: &mut Effects<C>) -> AnyNode<C> {
        match self {
            AnyNode::PreCandidate(node) => node.conclude(out),
            other => other,
        }
    }

    /// Checks what a request could only carry if its sender were faulty or hostile,
    /// before anything acts on it: a sender outside the configuration, or a term or
    /// index so large that the node could not move past it without overflowing.
    fn admit(&self, request: &Request<C>) -> Result<(), RequestRefused> {
        let from = request.from();
        if !self.is_peer(from) && !self.admits_unknown_leader(request) {
            return Err(RequestRefused::NotAMember { from });
        }
        let term = request.term();
        if !term.is_acceptable() {
            return Err(RequestRefused::TermOutOfRange { term });
        }
        let (last_log, count) = match request {
            Request::Vote(vote) | Request::PreVote(vote) => (vote.last_log, 0),
            Request::Append(append) => (append.prev_log, append.entries.len() as u64),
            Request::InstallSnapshot(install) => (install.snapshot.meta.last_included, 0),
            Request::TimeoutNow(_) | Request::ReadIndex(_) => (LogId::default(), 0),
        };
        if last_log.term > term {
            return Err(RequestRefused::TermOutOfRange {
                term: last_log.term,
            });
        }
        if last_log.index.checked_plus(count).is_none() {
            return Err(RequestRefused::IndexOutOfRange {
                index: last_log.index,
            });
        }
        // Bytes damaged anywhere between the leader's snapshot and here (or a random
        // frame that happens to decode as InstallSnapshot) must never reach this node's
        // storage: each piece carries its own checksum, and the whole data is checked
        // against the snapshot's before it is installed. A piece must also fit the
        // snapshot it claims to belong to.
        if let Request::InstallSnapshot(install) = request {
            let computed = install.computed_checksum();
            if computed != install.checksum {
                return Err(RequestRefused::SnapshotChecksum {
                    carried: install.checksum,
                    computed,
                });
            }
            let len = install.data.len() as u64;
            let end = install.offset.checked_add(len);
            let fits = end.is_some_and(|end| end <= install.snapshot.size);
            let done_right = end.is_some_and(|end| install.done == (end == install.snapshot.size));
            if !fits || !done_right {
                return Err(RequestRefused::SnapshotChunk {
                    offset: install.offset,
                    len,
                    size: install.snapshot.size,
                    done: install.done,
                });
            }
        }
        Ok(())
    }

    /// Whether a leader's request from outside this node's configuration is admitted.
    ///
    /// Servers process requests without consulting their configurations (thesis §4.1):
    /// a server that missed the configuration adding the current leader (it was down,
    /// or cut off) learns that configuration only from this leader's log, so it must
    /// listen to a leader it does not know, or stay behind for good. A node that leads,
    /// or follows another leader heard from within the minimum election timeout, has no
    /// such need and refuses, so that a stranger cannot take over the servers of a
    /// healthy cluster; a node whose leader went silent, or that has none, admits it,
    /// and the term decides as for any leader. Votes, pre-votes and reads always come
    /// from members only, so that a server removed without knowing it cannot raise the
    /// members' terms.
    fn admits_unknown_leader(&self, request: &Request<C>) -> bool {
        if !matches!(
            request,
            Request::Append(_) | Request::InstallSnapshot(_) | Request::TimeoutNow(_)
        ) {
            return false;
        }
        match self {
            AnyNode::Leader(_) => false,
            AnyNode::Follower(node) => {
                let window = node.config().election_timeout_min;
                node.role().leader() == Some(request.from())
                    || !node.role().heard_leader_within(node.now(), window)
            }
            AnyNode::PreCandidate(_) | AnyNode::Candidate(_) => true,
        }
    }

    /// Whether `id` is another member of this node's cluster. A node with no
    /// configuration at all was started to join a running cluster and has not heard from
    /// it yet: it takes the first leader that contacts it (whose log then tells it the
    /// configuration). Who may reach it at all is for the transport to decide
    /// (handshake, mutual TLS).
    fn is_peer(&self, id: NodeId) -> bool {
        with_node!(self, node => {
            let membership = node.shared.configs.effective();
            (membership.nodes.is_empty() && id != node.shared.id)
                || node.shared.peers.binary_search(&id).is_ok()
        })
    }

    fn step_down(self, term: Term, out: &mut Effects<C>) -> AnyNode<C> {
        match self {
            AnyNode::Leader(mut node) => {
                tracing::info!(node = %node.id(), old = %node.term(), new = %term, "stepping down: a newer term");
                node.abandon_reads(out);
                node.into_follower(term, None, out).into()
            }
            other => with_node!(other, node => node.into_follower(term, None, out).into()),
        }
    }

    /// A request from the leader of the current term: candidates yield to it (§5.2);
    /// a leader hearing from another leader of its own term is returned unchanged, since
    /// that can only come from a faulty peer.
    // The error hands the node back unchanged; boxing it would only add an allocation.
    #[allow(clippy::result_large_err)]
    fn into_follower_of(
        self,
        leader: NodeId,
        out: &mut Effects<C>,
    ) -> Result<Node<Follower, C>, AnyNode<C>> {
        match self {
            AnyNode::Follower(node) => Ok(node),
            AnyNode::PreCandidate(node) => {
                let term = node.term();
                Ok(node.into_follower(term, Some(leader), out))
            }
            AnyNode::Candidate(node) => {
                let term = node.term();
                Ok(node.into_follower(term, Some(leader), out))
            }
            AnyNode::Leader(node) => {
                tracing::error!(node = %node.id(), other = %leader, term = %node.term(), "another leader claims this term");
                Err(node.into())
            }
        }
    }

    /// The current term.
    pub fn term(&self) -> Term {
        with_node!(self, node => node.term())
    }

    /// The persisted term and vote.
    pub fn hard_state(&self) -> HardState {
        with_node!(self, node => node.hard_state())
    }

    /// This server's id.
    pub fn id(&self) -> NodeId {
        with_node!(self, node => node.id())
    }

    /// The current role.
    pub fn role_kind(&self) -> RoleKind {
        with_node!(self, node => node.role_kind())
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        matches!(self, AnyNode::Leader(_))
    }

    /// Whether this node is a pre-candidate.
    pub fn is_pre_candidate(&self) -> bool {
        matches!(self, AnyNode::PreCandidate(_))
    }

    /// Whether this node is a candidate.
    pub fn is_candidate(&self) -> bool {
        matches!(self, AnyNode::Candidate(_))
    }

    /// Whether this node is a follower.
    pub fn is_follower(&self) -> bool {
        matches!(self, AnyNode::Follower(_))
    }

    /// How many requests and replies this node refused or ignored because no correct
    /// member could have sent them.
    pub fn refused_messages(&self) -> u64 {
        with_node!(self, node => node.refused_messages())
    }

    /// What this node has done since it started.
    pub fn counters(&self) -> Counters {
        with_node!(self, node => node.counters())
    }

    /// The leader as far as this node knows: itself if leader, the leader it follows in
    /// this term, or `None`.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            AnyNode::Follower(node) => node.role().leader(),
            AnyNode::PreCandidate(_) | AnyNode::Candidate(_) => None,
            AnyNode::Leader(node) => Some(node.id()),
        }
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        with_node!(self, node => node.commit_index())
    }

    /// The leader's read lease, if this node leads and holds one.
    pub fn read_lease(&self) -> Option<super::ReadLease> {
        match self {
            AnyNode::Leader(leader) => leader.read_lease(),
            _ => None,
        }
    }

    /// The highest index handed to the state machine.
    pub fn last_applied(&self) -> LogIndex {
        with_node!(self, node => node.last_applied())
    }

    /// The log.
    pub fn log(&self) -> &RaftLog<C> {
        with_node!(self, node => node.log())
    }
}

impl<C: Command> Node<Candidate, C> {
    fn into_leader_if_elected(self, out: &mut Effects<C>) -> AnyNode<C> {
        match self.into_leader(out) {
            Ok(leader) => leader.into(),
            Err(candidate) => candidate.into(),
        }
    }
}

impl<C: Command> Node<PreCandidate, C> {
    /// Campaigns once a majority would vote for this node; follows again once a
    /// majority would not; otherwise keeps waiting for answers.
    fn conclude(self, out: &mut Effects<C>) -> AnyNode<C> {
        match self.vote_result() {
            VoteResult::Won => self.into_candidate(out).into_leader_if_elected(out),
            VoteResult::Lost => self.into_follower_after_loss().into(),
            VoteResult::Pending => self.into(),
        }
    }
}
