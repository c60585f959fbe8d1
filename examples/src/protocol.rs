//! The client protocol of the KV service: what a [`KvClient`](crate::KvClient) sends to a
//! node's client port and what the node answers.
//!
//! The messages travel in `raft-net-smol` frames (the same framing, chunking and
//! validation as Raft's RPCs), encoded with postcard. Each request gets exactly one
//! response with its request id; many requests may be in flight on one connection.

use std::fmt;
use std::sync::Arc;

use raft_impl::Status;
use raft_impl::core::RoleKind;
use raft_net_smol::Protocol;
use raft_traits::{LogId, LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::state_machine::{KvSessionCommand, KvSessionResult};

/// The name of the client protocol, which every client connection names in its
/// [handshake](raft_net_smol::handshake): a client pointed at a node's Raft port, or at
/// another service, is refused before its request reaches anything.
pub const CLIENT_PROTOCOL: &str = "raft-kv";

/// The client protocol, as the handshake names it.
pub fn client_protocol() -> Protocol {
    Protocol::service(CLIENT_PROTOCOL)
}

/// What a client asks a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Replicate `command` through the log and answer with its result. Only the leader
    /// accepts it; the others answer [`ClientResponse::NotLeader`]. A KV command travels
    /// in a client session ([`SessionCommand::Request`](raft_impl::session::SessionCommand)),
    /// opened first with [`SessionCommand::Register`](raft_impl::session::SessionCommand),
    /// so that a retry is never applied twice.
    Execute(KvSessionCommand),
    /// Read `key` linearizably, without a session. A node in `read-index` or `lease` mode
    /// ([`ReadMode`](crate::ReadMode)) answers [`ClientResponse::Value`] after a read
    /// barrier, leader and followers alike (a follower obtains the read index from the
    /// leader); one in `log` mode answers [`ClientResponse::ReadThroughLog`], and the
    /// client sends the read as a `Get` in a session with [`Execute`](Self::Execute).
    Read {
        /// The key to read.
        key: Arc<str>,
    },
    /// Report this node's view of the cluster. Any node answers.
    Status,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The command was committed and reached the state machine; this is its result: the
    /// KV store's response (applied now, or recorded when a retried command was first
    /// applied), a new session, or the session table's refusal.
    Applied(KvSessionResult),
    /// The answer to [`ClientRequest::Read`]: the key's value in a state that has applied
    /// at least `read_index`, obtained after a read barrier, so linearizable.
    Value {
        /// The key's value, `None` if it is not set.
        value: Option<Arc<str>>,
        /// The read index the read waited for.
        read_index: LogIndex,
    },
    /// This node serves reads through the log (`log` mode): send the read as a `Get` in
    /// a session with [`ClientRequest::Execute`].
    ReadThroughLog,
    /// This node is not the leader (for a read: it could not obtain a read index, as a
    /// leader or from one). `leader_hint` names the leader it last heard from in its
    /// current term, if any; the client should ask that node.
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The command was not applied (another leader's entry replaced it before it
    /// committed), or the read was not served (the leader was not ready for reads in
    /// time). It is safe to send it again.
    NotApplied {
        /// Why.
        reason: String,
    },
    /// The command may or may not have been applied: this node installed a snapshot
    /// covering its log position before it could see the result.
    OutcomeUnknown {
        /// Why.
        reason: String,
    },
    /// The answer to [`ClientRequest::Status`].
    Status(NodeStatus),
}

/// The role of a node, as reported to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader.
    Follower,
    /// Campaigns for leadership.
    Candidate,
    /// Leads the cluster and accepts commands.
    Leader,
    /// Asks whether it would win an election (pre-vote), before campaigning.
    PreCandidate,
}

impl From<RoleKind> for Role {
    fn from(role: RoleKind) -> Self {
        match role {
            RoleKind::Follower => Role::Follower,
            RoleKind::PreCandidate => Role::PreCandidate,
            RoleKind::Candidate => Role::Candidate,
            RoleKind::Leader => Role::Leader,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// One node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader as far as it knows.
    pub leader: Option<NodeId>,
    /// The highest log index it knows to be committed.
    pub commit_index: LogIndex,
    /// The highest log index its state machine has applied.
    pub last_applied: LogIndex,
    /// Its last log entry.
    pub last_log: LogId,
    /// The last entry its snapshot covers (index 0: no snapshot).
    pub snapshot: LogId,
    /// How many entries its log holds in memory (after the snapshot).
    pub log_entries: u64,
}

impl From<&Status> for NodeStatus {
    fn from(status: &Status) -> Self {
        NodeStatus {
            id: status.id,
            role: status.role.into(),
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            last_applied: status.last_applied,
            last_log: status.last_log,
            snapshot: status.snapshot,
            log_entries: u64::try_from(status.log_entries).unwrap_or(u64::MAX),
        }
    }
}
