//! Errors of the Raft handle.
//!
//! Two kinds, kept apart as in most Raft libraries: API-level outcomes a client acts on
//! (redirect to the leader, retry) are [`ProposeError`] variants; a node that stopped for
//! good reports [`ProposeError::Stopped`], with the cause in its [`Status`](crate::Status).

use raft_traits::{LogIndex, NodeId, StateMachineError, StorageError, Term};

use crate::config::ConfigError;
use crate::core::BootError;

/// Why a command was not (or may not have been) applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This server is not the leader; try `leader_hint` if it names one.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this server last heard from in its current term.
        leader_hint: Option<NodeId>,
    },
    /// The command was appended at `index` in `term`, but another leader's entry replaced
    /// it there: it was never committed. It is safe to propose it again.
    #[error("the entry at index {index} of term {term} was overwritten before it committed")]
    Lost {
        /// Where the command had been appended.
        index: LogIndex,
        /// The term it had been appended in.
        term: Term,
    },
    /// The leader is handing over to `to` and takes no proposals meanwhile; retry at
    /// the new leader.
    #[error("leadership is being transferred to {to}")]
    TransferInProgress {
        /// The server taking over.
        to: NodeId,
    },
    /// The command was appended at `index`, but this node stopped leading (or shut
    /// down, or a snapshot from the leader replaced its log) before it saw the command
    /// commit: it may or may not commit. Retrying may apply it twice unless the command
    /// is deduplicated (see `raft_impl::session`, where available).
    #[error("outcome unknown: the command at index {index} may or may not commit")]
    OutcomeUnknown {
        /// Where the command had been appended.
        index: LogIndex,
    },
    /// The node has shut down (or stopped after a fatal error) and accepts nothing.
    #[error("the node has stopped")]
    Stopped,
}

impl From<crate::core::ProposeRefused> for ProposeError {
    fn from(refused: crate::core::ProposeRefused) -> Self {
        match refused {
            crate::core::ProposeRefused::NotLeader { leader_hint } => {
                ProposeError::NotLeader { leader_hint }
            }
            crate::core::ProposeRefused::TransferInProgress { to } => {
                ProposeError::TransferInProgress { to }
            }
        }
    }
}

impl From<crate::core::ReadRefused> for ReadError {
    fn from(refused: crate::core::ReadRefused) -> Self {
        match refused {
            crate::core::ReadRefused::NotLeader { leader_hint } => {
                ReadError::NotLeader { leader_hint }
            }
            crate::core::ReadRefused::NotReady => ReadError::NotReady,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or membership is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Storage could not be read back.
    #[error("cannot recover from storage: {0}")]
    Storage(#[from] StorageError),
    /// What storage returned is not a valid Raft state.
    #[error("recovered state is invalid: {0}")]
    Boot(#[from] BootError),
    /// The state machine could not restore the stored snapshot.
    #[error("the state machine cannot restore the stored snapshot: {0}")]
    Restore(#[source] StateMachineError),
}

/// Why a linearizable read could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader and could not obtain a read index from one: retry
    /// at `leader_hint`.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The leader has not committed an entry of its term yet; retry shortly.
    #[error("the leader is not ready to serve reads yet")]
    NotReady,
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a leadership transfer could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The core refused it.
    #[error(transparent)]
    Refused(#[from] crate::core::TransferRefused),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a membership change did not (or may not) complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipChangeError {
    /// The leader refused it: not the leader (with a hint), a change already in
    /// progress, not ready, an invalid target, an unknown node.
    #[error(transparent)]
    Refused(#[from] crate::core::MembershipRefused),
    /// This node stopped leading before the change committed: it may still complete
    /// under the next leader, or not. Check the configuration in the new leader's status.
    #[error("leadership was lost before the change committed; its outcome is unknown")]
    OutcomeUnknown,
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a service snapshot was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The node already holds a snapshot that covers `index`: nothing to do.
    #[error("a snapshot at {current} already covers index {index}")]
    Stale {
        /// The index offered.
        index: LogIndex,
        /// The index the current snapshot covers.
        current: LogIndex,
    },
    /// The state machine has not been handed `index` yet, so the data cannot be its
    /// state there.
    #[error("index {index} is not applied yet (applied up to {applied})")]
    NotApplied {
        /// The index offered.
        index: LogIndex,
        /// The highest index handed to the state machine.
        applied: LogIndex,
    },
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
