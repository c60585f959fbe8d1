//! The role dispatcher: [`AnyNode`] holds a node in whichever role it is in, takes an
//! [`Input`] and routes it to the role that handles it, returning the node in its next
//! role. Rules that depend on the sender's term (step down first, then handle as a
//! follower) live here, once, instead of in every role.

use super::candidate::Candidate;
use super::effects::{Effects, RequestId, SendTag};
use super::follower::Follower;
use super::leader::Leader;
use super::log::RaftLog;
use super::node::{Node, RoleKind, SnapshotRefused};
use raft_traits::{
    AppendOutcome, AppendReply, Command, HardState, InstallOutcome, InstallSnapshotReply, LogId,
    LogIndex, NodeId, Request, RequestRefused, Response, Term,
};

/// Which kind of RPC a request was, for reporting its failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RpcKind {
    /// RequestVote.
    Vote,
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
            Request::Append(_) => RpcKind::Append,
            Request::InstallSnapshot(_) => RpcKind::InstallSnapshot,
        }
    }
}

/// Something that happened to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<C> {
    /// A peer's request; answer it with an [`Effect::Reply`] carrying `id`.
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
        /// The tag of the request, from its [`Effect::Send`].
        tag: SendTag,
        /// The reply.
        response: Response,
    },
    /// A request this node sent got no reply (lost, timed out, peer unreachable).
    SendFailed {
        /// The peer it was sent to.
        to: NodeId,
        /// The tag of the request, from its [`Effect::Send`].
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

/// A command was sent to a server that is not the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (leader hint: {leader_hint:?})")]
pub struct NotLeader {
    /// The leader this server last heard from in its current term, if any.
    pub leader_hint: Option<NodeId>,
}

/// A node in whichever role it is in: what the driver holds.
#[derive(Debug)]
pub enum AnyNode<C> {
    /// A follower.
    Follower(Node<Follower, C>),
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
            AnyNode::Candidate($node) => $body,
            AnyNode::Leader($node) => $body,
        }
    };
}

impl<C: Command> AnyNode<C> {
    /// Feeds one input to the node and returns it in its next role; what must happen
    /// next is appended to `out`.
    pub fn step(self, input: Input<C>, out: &mut Effects<C>) -> AnyNode<C> {
        match input {
            Input::Request { id, request } => self.handle_request(id, request, out),
            Input::Response {
                from,
                tag,
                response,
            } => self.handle_response(from, tag, response, out),
            Input::SendFailed { to, tag, rpc } => {
                let mut node = self;
                if let AnyNode::Leader(leader) = &mut node
                    && tag.term == leader.term()
                {
                    leader.handle_send_failure(to, tag, rpc);
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
            Input::ElectionTimeout if self.term().checked_next().is_none() => {
                // Only reachable by a term that entered before the limit existed: refuse
                // to wrap around, and keep following.
                tracing::error!(node = %self.id(), term = %self.term(), "the term cannot advance further; not campaigning");
                let mut node = self;
                with_node!(&mut node, n => n.shared.reset_election_timer(out));
                node
            }
            Input::ElectionTimeout => match self {
                AnyNode::Follower(node) => node.into_candidate(out).into_leader_if_elected(out),
                AnyNode::Candidate(node) => node.into_candidate(out).into_leader_if_elected(out),
                // A leader has no election timer; a late fire means nothing.
                leader @ AnyNode::Leader(_) => leader,
            },
            Input::HeartbeatTimeout => match self {
                AnyNode::Leader(mut node) => {
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

    /// Appends a client command, if this node is the leader.
    pub fn propose(&mut self, command: C, out: &mut Effects<C>) -> Result<LogId, NotLeader> {
        match self {
            AnyNode::Leader(node) => Ok(node.propose(command, out)),
            other => Err(NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
    }

    /// Appends several client commands, if this node is the leader; see
    /// [`Node::propose_batch`].
    pub fn propose_batch(
        &mut self,
        commands: impl IntoIterator<Item = C>,
        out: &mut Effects<C>,
    ) -> Result<Vec<LogId>, NotLeader> {
        match self {
            AnyNode::Leader(node) => Ok(node.propose_batch(commands, out)),
            other => Err(NotLeader {
                leader_hint: other.leader_hint(),
            }),
        }
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
        // Figure 2, all servers: a newer term makes us a follower of it first; the request
        // is then handled by that follower.
        let node = if request.term() > self.term() {
            self.step_down(request.term(), out)
        } else {
            self
        };
        let term = node.term();
        match request {
            Request::Vote(vote) => {
                let mut node = node;
                with_node!(&mut node, n => n.handle_vote_request(id, &vote, out));
                node
            }
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
                follower.handle_install_snapshot(id, install, out);
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
                node.handle_install_reply(from, reply.outcome, out);
                node.into()
            }
            // A reply meant for a role this node has left in the same term (a late vote
            // reaching the new leader): nothing to do.
            (node, _) => node,
        }
    }

    /// Checks what a request could only carry if its sender were faulty or hostile,
    /// before anything acts on it: a sender outside the configuration, or a term or
    /// index so large that the node could not move past it without overflowing.
    fn admit(&self, request: &Request<C>) -> Result<(), RequestRefused> {
        let from = request.from();
        if !self.is_peer(from) {
            return Err(RequestRefused::NotAMember { from });
        }
        let term = request.term();
        if !term.is_acceptable() {
            return Err(RequestRefused::TermOutOfRange { term });
        }
        let (last_log, count) = match request {
            Request::Vote(vote) => (vote.last_log, 0),
            Request::Append(append) => (append.prev_log, append.entries.len() as u64),
            Request::InstallSnapshot(install) => (install.snapshot.meta.last_included, 0),
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
        Ok(())
    }

    /// Whether `id` is another member of this node's cluster.
    fn is_peer(&self, id: NodeId) -> bool {
        with_node!(self, node => node.shared.peers.binary_search(&id).is_ok())
    }

    fn step_down(self, term: Term, out: &mut Effects<C>) -> AnyNode<C> {
        with_node!(self, node => node.into_follower(term, None, out).into())
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

    /// The leader as far as this node knows: itself if leader, the leader it follows in
    /// this term, or `None`.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            AnyNode::Follower(node) => node.role().leader(),
            AnyNode::Candidate(_) => None,
            AnyNode::Leader(node) => Some(node.id()),
        }
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        with_node!(self, node => node.commit_index())
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
