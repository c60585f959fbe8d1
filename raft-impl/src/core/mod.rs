//! The I/O-free Raft state machine.
//!
//! A server is a [`Node<R, C>`](Node) in one of four roles, [`Follower`],
//! [`PreCandidate`], [`Candidate`] or [`Leader`]. Each role has its own operations and consuming transitions
//! (`into_candidate`, `into_leader`, `into_follower`), so an operation on the wrong role
//! does not compile. [`AnyNode`] erases the role for the driver: it takes an [`Input`]
//! (a message, a reply, a timer), returns the node in its next role, and writes the
//! [`Effects`] to carry out, in order.
//!
//! Nothing here awaits, reads a clock or draws global randomness; the same inputs always
//! give the same outputs.
//!
//! ```
//! use raft_impl::Config;
//! use raft_impl::core::{AnyNode, Effect, Effects, Input, Node};
//! use raft_traits::{Membership, NodeId, RecoveredState};
//!
//! let mut out = Effects::new();
//! let node: AnyNode<u64> = Node::boot(
//!     NodeId(1),
//!     Membership::from_voters([NodeId(1), NodeId(2), NodeId(3)]),
//!     Config::lab(),
//!     42,
//!     RecoveredState::default(),
//!     None,
//!     &mut out,
//! )
//! .unwrap()
//! .into();
//! out.take();
//! let node = node.step(Input::ElectionTimeout, &mut out);
//! assert!(node.is_pre_candidate(), "pre-vote first: the term is not raised yet");
//! let sends = out.as_slice().iter().filter(|e| matches!(e, Effect::Send { .. })).count();
//! assert_eq!(sends, 2, "a PreVote to each peer");
//! ```

mod candidate;
mod dispatch;
mod effects;
mod follower;
mod leader;
mod log;
mod membership;
mod node;
mod pre_candidate;
mod progress;
mod quorum;

#[cfg(test)]
mod tests;

pub use candidate::Candidate;
pub use dispatch::{AnyNode, Input, ProposeRefused, RpcKind};
pub use effects::{
    Apply, Effect, Effects, Persist, ReadId, ReadRefused, RequestId, SendTag, Timer,
};
pub use follower::Follower;
pub use leader::{
    Leader, MAX_READ_ROUNDS, MembershipRefused, ReadLease, Transfer, TransferRefused,
};
pub use log::{LogError, RaftLog};
pub use membership::MembershipVersion;
pub use node::{BootError, Counters, Node, Role, RoleKind, SnapshotRefused};
pub use pre_candidate::PreCandidate;
pub use progress::{Progress, ReplicationMode};
pub use quorum::{Ballot, Quorum, VoteResult};
