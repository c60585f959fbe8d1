//! The pre-candidate (Raft thesis §9.6): asks whether it would win an election before it
//! raises its term, so that a node cut off from the cluster cannot force a new term on a
//! healthy leader when it comes back.

use std::collections::BTreeSet;

use raft_traits::{Command, NodeId};

use super::candidate::Candidate;
use super::effects::Effects;
use super::follower::{Follower, campaign, pre_campaign};
use super::node::Node;
use super::quorum::{Ballot, VoteResult};

/// The pre-candidate role's own state: who would vote for it, and who would not.
#[derive(Clone, Debug)]
pub struct PreCandidate {
    pub(super) ballot: Ballot,
}

impl PreCandidate {
    /// The voters that would vote for this node, itself included.
    pub fn granted(&self) -> &BTreeSet<NodeId> {
        self.ballot.granted()
    }
}

impl<C: Command> Node<PreCandidate, C> {
    /// Records a voter's answer to this round's PreVote and returns where it stands.
    pub fn record_pre_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.role.ballot.record(&self.shared.quorum, from, granted)
    }

    /// Where the pre-vote stands.
    pub fn vote_result(&self) -> VoteResult {
        self.role.ballot.result(&self.shared.quorum)
    }

    /// A majority would vote for this node: start the real election.
    pub fn into_candidate(self, out: &mut Effects<C>) -> Node<Candidate, C> {
        campaign(self.shared, false, out)
    }

    /// The round got no majority in time: ask again.
    pub fn into_pre_candidate(self, out: &mut Effects<C>) -> Node<PreCandidate, C> {
        pre_campaign(self.shared, out)
    }

    /// A majority would not vote for this node: follow again, in the same term.
    pub fn into_follower_after_loss(self) -> Node<Follower, C> {
        Node {
            shared: self.shared,
            role: Follower::new(None),
        }
    }
}
