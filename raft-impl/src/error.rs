//! Errors of the Raft handle.
//!
//! Two kinds, kept apart as in most Raft libraries: API-level outcomes a client acts on
//! (redirect to the leader, retry) are [`ProposeError`] variants; a node that stopped for
//! good reports [`ProposeError::Stopped`], with the cause in its [`Status`](crate::Status).

use raft_traits::{LogIndex, NodeId, StorageError, Term};

use crate::config::ConfigError;
use crate::core::BootError;

/// Why a command was not (or may not have been) applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    /// A snapshot from the leader replaced the log here before the command was applied
    /// locally: it may or may not have committed.
    #[error("outcome unknown: a snapshot covering index {index} was installed first")]
    OutcomeUnknown {
        /// Where the command had been appended.
        index: LogIndex,
    },
    /// The node has shut down (or stopped after a fatal error) and accepts nothing.
    #[error("the node has stopped")]
    Stopped,
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
}

/// Why a service snapshot was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}
