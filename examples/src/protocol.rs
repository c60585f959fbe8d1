//! The client protocol of the KV service: what a [`KvClient`](crate::KvClient) sends to a
//! node's client port and what the node answers.
//!
//! The messages travel in `raft-net-smol` frames (the same framing, chunking and
//! validation as Raft's RPCs), encoded with postcard. Each request gets exactly one
//! response with its request id; many requests may be in flight on one connection.
//!
//! The protocol is versioned by its name in the connection's
//! [handshake](raft_net_smol::handshake): [`CLIENT_PROTOCOL`] is `raft-kv/3`. Version 1
//! (named plain `raft-kv`) had no membership requests and no client address in
//! [`ClientResponse::NotLeader`]; version 2 had no read mode, counters or follower lag
//! in [`NodeStatus`]. A client and a node of different versions never
//! exchange a message they could misread: the node refuses the handshake, and the
//! client says which versions met ([`client_protocol_version`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use raft_impl::Status;
use raft_impl::core::RoleKind;
use raft_net_smol::Protocol;
use raft_traits::{LogId, LogIndex, Membership, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::members::MemberAddr;
use crate::read::ReadMode;
use crate::state_machine::{KvSessionCommand, KvSessionResult};

/// The name of the client protocol's family, which the version follows.
pub const CLIENT_PROTOCOL_NAME: &str = "raft-kv";

/// The version of the client protocol this build speaks.
pub const CLIENT_PROTOCOL_VERSION: u32 = 3;

/// The name of the client protocol, which every client connection names in its
/// [handshake](raft_net_smol::handshake): a client pointed at a node's Raft port, at
/// another service, or at a node of another protocol version is refused before its
/// request reaches anything.
pub const CLIENT_PROTOCOL: &str = "raft-kv/3";

/// The client protocol, as the handshake names it.
pub fn client_protocol() -> Protocol {
    Protocol::service(CLIENT_PROTOCOL)
}

/// The version of the KV client protocol that `protocol` names, if it names that
/// protocol at all: `raft-kv` is version 1, `raft-kv/N` version N.
///
/// ```
/// use raft_examples::protocol::{client_protocol, client_protocol_version};
/// use raft_net_smol::Protocol;
///
/// assert_eq!(client_protocol_version(&client_protocol()), Some(3));
/// assert_eq!(client_protocol_version(&Protocol::service("raft-kv")), Some(1));
/// assert_eq!(client_protocol_version(&Protocol::service("other")), None);
/// assert_eq!(client_protocol_version(&Protocol::Raft), None);
/// ```
pub fn client_protocol_version(protocol: &Protocol) -> Option<u32> {
    let Protocol::Service(name) = protocol else {
        return None;
    };
    match name.strip_prefix(CLIENT_PROTOCOL_NAME)? {
        "" => Some(1),
        version => version.strip_prefix('/')?.parse().ok(),
    }
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
    /// ([`ReadMode`]) answers [`ClientResponse::Value`] after a read
    /// barrier, leader and followers alike (a follower obtains the read index from the
    /// leader); one in `log` mode answers [`ClientResponse::ReadThroughLog`], and the
    /// client sends the read as a `Get` in a session with [`Execute`](Self::Execute).
    Read {
        /// The key to read.
        key: Arc<str>,
    },
    /// Report this node's view of the cluster. Any node answers.
    Status,
    /// Add node `id` to the cluster: as a voter (added as a learner, and promoted once it
    /// has caught up with the leader's log), or as a learner if `learner`. Only the
    /// leader accepts it. The node should already run, started to join
    /// (`raft-kv serve --join`). Answered with [`ClientResponse::Members`] once the
    /// configuration that completes it has committed; asking again for a change already
    /// made, or under way on this leader, is answered the same way.
    AddNode {
        /// The node's id.
        id: NodeId,
        /// Where it listens for Raft RPCs.
        raft_addr: SocketAddr,
        /// Where it listens for clients, recorded in the configuration so that clients
        /// can be sent there (see [`ClientResponse::NotLeader`]).
        client_addr: Option<SocketAddr>,
        /// Add it as a learner (receives the log, never votes) rather than a voter.
        learner: bool,
    },
    /// Remove node `id` (voter or learner) from the cluster; the leader may remove
    /// itself. Only the leader accepts it. Answered with [`ClientResponse::Members`] once
    /// the configuration without it has committed.
    RemoveNode {
        /// The node to remove.
        id: NodeId,
    },
    /// Report the cluster's configuration, as the leader knows it. Only the leader
    /// answers ([`ClientResponse::Members`]).
    Members,
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
        /// The leader's client address, if the configuration records it: how a client
        /// reaches a leader it was not told about (one added since the client started).
        leader_addr: Option<SocketAddr>,
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
    /// The cluster's configuration, from the leader: the answer to
    /// [`ClientRequest::Members`], and to a membership change once it has completed.
    Members(ClusterMembers),
    /// The leader refused the membership change; nothing changed.
    ChangeRefused(ChangeRefused),
    /// The membership change is under way but has not completed yet (a new voter still
    /// catching up, or a configuration not committed yet). Asking again waits for the
    /// same change; it is not started twice.
    ChangePending {
        /// What it waits for.
        reason: String,
    },
}

/// The cluster's configuration as a leader knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMembers {
    /// The node that answered.
    pub node: NodeId,
    /// Its term.
    pub term: Term,
    /// The leader as far as it knows (itself, unless it has just removed itself).
    pub leader: Option<NodeId>,
    /// The configuration in effect: the latest in its log, committed or not.
    pub latest: Membership,
    /// The latest committed configuration.
    pub committed: Membership,
}

impl ClusterMembers {
    /// The report of a node whose status is `status`.
    pub fn of(status: &Status) -> ClusterMembers {
        ClusterMembers {
            node: status.id,
            term: status.term,
            leader: status.leader,
            latest: status.membership.clone(),
            committed: status.committed_membership.clone(),
        }
    }

    /// Whether the latest configuration is the committed one: no change under way.
    pub fn is_settled(&self) -> bool {
        self.latest == self.committed && !self.latest.is_joint()
    }

    /// The recorded address of member `id` (in the latest configuration, else the
    /// committed one), if it is one and can be read.
    pub fn addr(&self, id: NodeId) -> Option<MemberAddr> {
        self.latest
            .address(id)
            .or_else(|| self.committed.address(id))?
            .parse()
            .ok()
    }

    /// Every member's client address that the configuration records.
    pub fn client_addrs(&self) -> Vec<(NodeId, SocketAddr)> {
        self.latest
            .nodes
            .keys()
            .chain(self.committed.nodes.keys())
            .filter_map(|&id| Some((id, self.addr(id)?.client?)))
            .collect()
    }
}

/// Why a leader refused a membership change. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeRefused {
    /// Another membership change has not completed (Raft makes one at a time) and did
    /// not complete while the leader waited for it.
    #[error(
        "another membership change is in progress; try again once it has completed (raft-kv members shows it)"
    )]
    ChangeInProgress,
    /// The node named is not a member.
    #[error("{0} is not a member of the cluster")]
    UnknownNode(NodeId),
    /// Removing the node would leave the cluster without a voter.
    #[error("{0} is the last voter: removing it would leave the cluster without voters")]
    NoVotersLeft(NodeId),
    /// The node is already a member, at another address, or as a voter when asked to
    /// add it as a learner.
    #[error(
        "{id} is already a member ({} at {address}); remove it first to add it again differently",
        if *voter { "a voter" } else { "a learner" }
    )]
    AlreadyMember {
        /// The node.
        id: NodeId,
        /// Its recorded address.
        address: String,
        /// Whether it votes.
        voter: bool,
    },
    /// Any other reason the leader gave.
    #[error("the change was refused: {reason}")]
    Other {
        /// The leader's reason.
        reason: String,
    },
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
    /// How it serves reads (`raft-kv serve --read-mode`).
    pub read_mode: ReadMode,
    /// What it has done since it started.
    pub counters: NodeCounters,
    /// If it leads: how many entries each follower is known to lack (the leader's last
    /// log index minus the follower's match index). Empty on the others.
    pub follower_lag: BTreeMap<NodeId, u64>,
}

/// What a node has done since it started, as the library counts it
/// ([`raft_impl::Counters`], [`Status::refused_messages`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Elections it started (pre-vote rounds not counted).
    pub elections_started: u64,
    /// Elections it won.
    pub elections_won: u64,
    /// Times the leader it knows of changed.
    pub leader_changes: u64,
    /// Commands it appended as leader.
    pub proposals: u64,
    /// Snapshots it took (log compactions).
    pub snapshots_taken: u64,
    /// Snapshots from a leader it installed.
    pub snapshots_installed: u64,
    /// Messages it refused because no correct member could have sent them.
    pub refused_messages: u64,
}

impl NodeStatus {
    /// The report of a node whose Raft status is `status` and which serves reads in
    /// `read_mode`.
    pub fn of(status: &Status, read_mode: ReadMode) -> NodeStatus {
        let counters = status.counters;
        let follower_lag = status
            .followers
            .iter()
            .map(|(&peer, progress)| {
                let behind = status
                    .last_log
                    .index
                    .0
                    .saturating_sub(progress.match_index.0);
                (peer, behind)
            })
            .collect();
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
            read_mode,
            counters: NodeCounters {
                elections_started: counters.elections_started,
                elections_won: counters.elections_won,
                leader_changes: counters.leader_changes,
                proposals: counters.proposals,
                snapshots_taken: counters.snapshots_taken,
                snapshots_installed: counters.snapshots_installed,
                refused_messages: status.refused_messages,
            },
            follower_lag,
        }
    }
}
