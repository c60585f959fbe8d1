//! Cluster membership as data (Raft thesis ch. 4): who votes, who only learns, and where
//! each member can be reached. A configuration travels in the log as a
//! [`Payload::Membership`](crate::Payload::Membership) entry and in snapshot metadata, so
//! a restarted or snapshotted server knows it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// A cluster configuration.
///
/// `nodes` lists every member with its address (opaque to Raft; a transport resolves
/// it). `voters` decide elections and commits; `learners` receive the log but never vote
/// or campaign. While a change is in its joint phase (C_old,new), `outgoing` holds the
/// old voters, and decisions need a majority of both `voters` and `outgoing`; a member
/// only in `outgoing` leaves when the joint phase ends (or stays as a learner, if it is
/// in `learners`).
///
/// ```
/// use raft_traits::{Membership, NodeId};
///
/// let three = Membership::from_voters([NodeId(1), NodeId(2), NodeId(3)]);
/// assert!(three.is_voter(NodeId(2)) && !three.is_joint());
/// let with_learner = three.clone().with_learner(NodeId(4), "10.0.0.4:7000");
/// assert_eq!(with_learner.learners().collect::<Vec<_>>(), [NodeId(4)]);
/// assert!(with_learner.validate().is_ok());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Every member, voter or learner, with its address.
    pub nodes: BTreeMap<NodeId, String>,
    /// The voters (while joint: the incoming configuration's).
    pub voters: BTreeSet<NodeId>,
    /// The members that receive the log without voting.
    pub learners: BTreeSet<NodeId>,
    /// While joint: the outgoing configuration's voters.
    pub outgoing: Option<BTreeSet<NodeId>>,
}

/// Why a configuration is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// No voter: nobody could ever be elected.
    #[error("a configuration needs at least one voter")]
    NoVoters,
    /// A voter or learner without an entry in `nodes`.
    #[error("{0} is not listed among the nodes")]
    Unlisted(NodeId),
    /// A member listed as both voter and learner.
    #[error("{0} is both a voter and a learner")]
    VoterAndLearner(NodeId),
    /// A listed node that is neither voter nor learner.
    #[error("{0} is listed but neither votes nor learns")]
    NoRole(NodeId),
}

impl Membership {
    /// A configuration of voters without addresses (for transports that route by id).
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership::with_addresses(voters.into_iter().map(|id| (id, String::new())))
    }

    /// A configuration of voters with their addresses.
    pub fn with_addresses(voters: impl IntoIterator<Item = (NodeId, String)>) -> Membership {
        let nodes: BTreeMap<NodeId, String> = voters.into_iter().collect();
        Membership {
            voters: nodes.keys().copied().collect(),
            nodes,
            learners: BTreeSet::new(),
            outgoing: None,
        }
    }

    /// This configuration with `id` added as a learner at `address` (or kept as what it
    /// is, with the new address, if it is already a member).
    #[must_use]
    pub fn with_learner(mut self, id: NodeId, address: impl Into<String>) -> Membership {
        self.nodes.insert(id, address.into());
        if !self.is_voter(id) {
            self.learners.insert(id);
        }
        self
    }

    /// Whether the configuration is in its joint phase.
    pub fn is_joint(&self) -> bool {
        self.outgoing.is_some()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Whether `id` votes (in either configuration while joint).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// The learners.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.learners.iter().copied()
    }

    /// Whether `other` gives every member the same role (voter, learner, outgoing voter),
    /// whatever their addresses.
    pub fn same_roles(&self, other: &Membership) -> bool {
        self.voters == other.voters
            && self.learners == other.learners
            && self.outgoing == other.outgoing
            && self.nodes.keys().eq(other.nodes.keys())
    }

    /// The address of `id`, if it is a member.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id).map(String::as_str)
    }

    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        let all = self
            .voters
            .iter()
            .chain(self.learners.iter())
            .chain(self.outgoing.iter().flatten());
        for &id in all {
            if !self.nodes.contains_key(&id) {
                return Err(MembershipError::Unlisted(id));
            }
        }
        if let Some(&id) = self.voters.intersection(&self.learners).next() {
            return Err(MembershipError::VoterAndLearner(id));
        }
        for &id in self.nodes.keys() {
            if !self.is_voter(id) && !self.learners.contains(&id) {
                return Err(MembershipError::NoRole(id));
            }
        }
        Ok(())
    }

    /// The configuration that ends a joint phase: the incoming voters and the learners;
    /// members only the outgoing configuration had leave.
    #[must_use]
    pub fn finalized(&self) -> Membership {
        let mut nodes = self.nodes.clone();
        nodes.retain(|id, _| self.voters.contains(id) || self.learners.contains(id));
        Membership {
            nodes,
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            outgoing: None,
        }
    }

    /// The joint configuration (C_old,new) that moves from `self` to `target`.
    #[must_use]
    pub fn joint_to(&self, target: &Membership) -> Membership {
        let mut nodes = self.nodes.clone();
        nodes.extend(target.nodes.clone());
        nodes.retain(|id, _| {
            self.voters.contains(id) || target.voters.contains(id) || target.learners.contains(id)
        });
        Membership {
            nodes,
            voters: target.voters.clone(),
            learners: target.learners.clone(),
            outgoing: Some(self.voters.clone()),
        }
    }

    /// How many voters `target` adds or removes compared with `self`.
    pub fn voter_changes(&self, target: &Membership) -> usize {
        self.voters.symmetric_difference(&target.voters).count()
    }
}
