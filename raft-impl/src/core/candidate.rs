//! The candidate: counts votes, and becomes leader with a majority.

use std::collections::{BTreeMap, BTreeSet};

use raft_traits::{Command, NodeId, Payload};

use super::effects::{Effects, Persist, Timer};
use super::follower::{campaign, pre_campaign};
use super::leader::Leader;
use super::node::Node;
use super::pre_candidate::PreCandidate;
use super::progress::Progress;
use super::quorum::{Ballot, VoteResult};

/// The candidate role's own state.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub(super) ballot: Ballot,
}

impl Candidate {
    /// The servers that granted their vote in this term, this one included.
    pub fn votes(&self) -> &BTreeSet<NodeId> {
        self.ballot.granted()
    }

    /// The servers that refused their vote in this term.
    pub fn refusals(&self) -> &BTreeSet<NodeId> {
        self.ballot.refused()
    }
}

impl<C: Command> Node<Candidate, C> {
    /// Records a peer's answer to this term's RequestVote and returns where the election
    /// stands. Answers from servers that do not vote are ignored by the tally.
    pub fn record_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.role.ballot.record(&self.shared.quorum, from, granted)
    }

    /// Where the election stands: won once every voter set has a majority of grants.
    pub fn vote_result(&self) -> VoteResult {
        self.role.ballot.result(&self.shared.quorum)
    }

    /// Whether a majority of the cluster voted for this candidate.
    pub fn has_quorum(&self) -> bool {
        self.vote_result() == VoteResult::Won
    }

    /// The election failed to conclude: start another one in the next term.
    pub fn into_candidate(self, out: &mut Effects<C>) -> Node<Candidate, C> {
        campaign(self.shared, false, out)
    }

    /// The election failed to conclude and pre-vote is on: ask before raising the term
    /// again.
    pub fn into_pre_candidate(self, out: &mut Effects<C>) -> Node<PreCandidate, C> {
        pre_campaign(self.shared, out)
    }

    /// Takes office, if a majority voted for this candidate; otherwise hands the
    /// candidate back unchanged.
    ///
    /// The new leader starts every follower in probe mode at its own last index + 1,
    /// sends each an AppendEntries at once to assert its leadership (§5.2), and then
    /// repeats it every heartbeat interval. With [`Config::leader_noop`](crate::Config)
    /// it first appends a blank entry of its term, so that earlier entries commit.
    // The error hands the candidate back unchanged; boxing it would only add an allocation.
    #[allow(clippy::result_large_err)]
    pub fn into_leader(self, out: &mut Effects<C>) -> Result<Node<Leader, C>, Self> {
        if !self.has_quorum() {
            return Err(self);
        }
        let last_index = self.shared.log.last_index();
        let next_index = last_index.next();
        let progress: BTreeMap<NodeId, Progress> = self
            .shared
            .peers
            .iter()
            .map(|&peer| (peer, Progress::new(next_index)))
            .collect();
        out.stop_timer(Timer::Election);
        let now = self.shared.now;
        let mut leader = Node {
            shared: self.shared,
            // Everything in the log was written before the votes were counted.
            role: Leader::new(progress, last_index, now),
        };
        leader.shared.counters.elections_won =
            leader.shared.counters.elections_won.saturating_add(1);
        tracing::info!(node = %leader.shared.id, term = %leader.shared.term(), "won the election: leading");
        if leader.shared.config.leader_noop {
            leader.push(Payload::Blank);
        }
        leader.broadcast(out);
        if leader.shared.log.last_index() > last_index {
            let blank = leader.shared.log.entries_from(last_index.next(), 1);
            out.persist(Persist::Entries(blank));
        }
        out.set_timer(Timer::Heartbeat, leader.shared.config.heartbeat_interval);
        leader.maybe_commit(out);
        Ok(leader)
    }
}
