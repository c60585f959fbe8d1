//! The RPCs of Raft (Figure 2 and Figure 13 of the paper) and their replies.

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::snapshot::SnapshotDescriptor;
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};

/// RequestVote: a candidate asks for a vote (§5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// The candidate's term.
    pub term: Term,
    /// The candidate asking for the vote.
    pub candidate: NodeId,
    /// The id of the candidate's last log entry, for the up-to-date check (§5.4.1).
    pub last_log: LogId,
    /// The current leader asked the candidate to take over (§3.10): voters grant even if
    /// they heard from that leader within the election timeout.
    pub transfer: bool,
}

/// The reply to [`RequestVote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteReply {
    /// The voter's current term, for the candidate to update itself.
    pub term: Term,
    /// Whether the vote was granted.
    pub granted: bool,
}

/// TimeoutNow: a leader hands over leadership, telling `to` to start an election at once
/// (Raft thesis §3.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: Term,
    /// The leader handing over.
    pub leader: NodeId,
}

/// ReadIndex: a follower asks the leader for an index that makes a read linearizable
/// (Raft thesis §6.4): once the follower has applied up to it, it may serve the read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// The follower's term.
    pub term: Term,
    /// The follower asking.
    pub from: NodeId,
}

/// The reply to [`TimeoutNow`] and to [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexReply {
    /// The replying server's current term.
    pub term: Term,
    /// For a read: the index to wait for, once the leader confirmed it still leads;
    /// `None` if it could not (not the leader, nothing of its term committed yet, or it
    /// lost its quorum). For TimeoutNow: the candidate's last index, or `None` if it did
    /// not campaign.
    pub index: Option<LogIndex>,
    /// For a read answered without an index: why. `None` otherwise, and for TimeoutNow.
    pub refusal: Option<ReadIndexRefusal>,
}

/// Why a leader gave a follower's read no index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadIndexRefusal {
    /// The server asked does not lead in the read's term, or stopped leading before a
    /// majority confirmed it.
    NotLeader,
    /// The leader has not yet committed an entry of its own term, so it does not know
    /// the latest commit index (thesis §6.4): worth asking again shortly.
    NotReady,
}

/// AppendEntries: the leader replicates entries, or sends a heartbeat when `entries` is
/// empty (§5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries<C> {
    /// The leader's term.
    pub term: Term,
    /// The leader, so followers can redirect clients.
    pub leader: NodeId,
    /// The id of the entry just before `entries`; the follower accepts only if its log
    /// holds it.
    pub prev_log: LogId,
    /// Entries to store, in index order, starting at `prev_log.index + 1`.
    pub entries: Vec<Entry<C>>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
}

/// The reply to [`AppendEntries`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReply {
    /// The follower's current term, for the leader to update itself.
    pub term: Term,
    /// What the follower did with the request.
    pub outcome: AppendOutcome,
}

/// What a follower did with an [`AppendEntries`] request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The request's term is older than the follower's; nothing was done.
    StaleTerm,
    /// The follower's log now matches the leader's up to `match_index`, which is
    /// `prev_log.index + entries.len()` of the request. It is never the follower's last
    /// index when that holds entries the request did not vouch for.
    Success {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The follower's log does not hold `prev_log`; the hint lets the leader skip back a
    /// whole term per round trip instead of one entry.
    Conflict {
        /// The `prev_log.index` of the rejected request, so that the leader can tell a
        /// fresh rejection from a late one.
        prev_log_index: LogIndex,
        /// Where the follower's log diverges.
        hint: ConflictHint,
    },
}

/// Why a follower's log did not match, in the form of the classic lab's fast back-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at the requested `prev_log.index`, or `None` if
    /// the follower's log is shorter than that.
    pub conflict_term: Option<Term>,
    /// The first index the follower holds with `conflict_term` (meaningless when
    /// `conflict_term` is `None`).
    pub first_index: LogIndex,
    /// The length of the follower's log: the index of its last entry.
    pub last_log_index: LogIndex,
}

/// InstallSnapshot: the leader sends a piece of its snapshot to a follower that needs
/// entries the leader has already discarded (§7, Figure 13: offset, data, done).
///
/// A snapshot travels in pieces of at most `Config::snapshot_chunk_size` bytes, several
/// in flight. The follower writes a piece only if it starts exactly where the data it
/// holds of this snapshot ends, and answers with the offset it then holds
/// ([`InstallOutcome::Received`]), so a leader that lost track (a lost reply, a new
/// connection, a restarted follower) resumes from the follower's offset. A piece with no
/// data asks for that offset without sending anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// The leader's term.
    pub term: Term,
    /// The leader, so followers can redirect clients.
    pub leader: NodeId,
    /// The snapshot the piece belongs to: what it covers, its size and the checksum of
    /// all its data, which the follower checks before installing it
    /// ([`RequestRefused::SnapshotChecksum`]).
    ///
    /// [`RequestRefused::SnapshotChecksum`]: crate::RequestRefused::SnapshotChecksum
    pub snapshot: SnapshotDescriptor,
    /// Where in the snapshot's data the piece starts.
    pub offset: u64,
    /// The piece.
    pub data: Bytes,
    /// Whether the piece is the last: `offset + data.len() == snapshot.size`.
    pub done: bool,
    /// [`InstallSnapshot::chunk_checksum`] of the piece as the leader computed it: the
    /// follower refuses a piece whose bytes do not match it
    /// ([`RequestRefused::SnapshotChecksum`]) and writes nothing.
    ///
    /// [`RequestRefused::SnapshotChecksum`]: crate::RequestRefused::SnapshotChecksum
    pub checksum: u32,
}

impl InstallSnapshot {
    /// The whole of `snapshot` as a single piece (offset 0, done), with its checksums:
    /// what a leader sends for a snapshot no larger than one piece.
    ///
    /// ```
    /// use raft_traits::{Bytes, InstallSnapshot, NodeId, Snapshot, Term};
    ///
    /// let mut snapshot = Snapshot::default();
    /// snapshot.data = Bytes::from_static(b"state");
    /// let piece = InstallSnapshot::whole(Term(1), NodeId(1), snapshot.clone());
    /// assert!(piece.done);
    /// assert_eq!(piece.snapshot, snapshot.descriptor());
    /// assert_eq!(piece.checksum, piece.computed_checksum());
    /// ```
    pub fn whole(term: Term, leader: NodeId, snapshot: crate::Snapshot) -> InstallSnapshot {
        let mut request = InstallSnapshot {
            term,
            leader,
            snapshot: snapshot.descriptor(),
            offset: 0,
            data: snapshot.data,
            done: true,
            checksum: 0,
        };
        request.checksum = request.computed_checksum();
        request
    }

    /// Whether this piece is the whole snapshot (offset 0, done), as
    /// [`whole`](Self::whole) makes it.
    ///
    /// ```
    /// use raft_traits::{InstallSnapshot, NodeId, Snapshot, Term};
    ///
    /// let mut piece = InstallSnapshot::whole(Term(1), NodeId(1), Snapshot::default());
    /// assert!(piece.is_whole());
    /// piece.done = false;
    /// assert!(!piece.is_whole());
    /// ```
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.done
    }

    /// The CRC-32 of a piece: over the whole snapshot's checksum, the piece's offset
    /// and `done` flag, and its data, so that a piece cannot be taken for a piece of
    /// another snapshot or another place.
    pub fn chunk_checksum(
        snapshot: &SnapshotDescriptor,
        offset: u64,
        done: bool,
        data: &[u8],
    ) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&snapshot.checksum.to_le_bytes());
        hasher.update(&snapshot.size.to_le_bytes());
        hasher.update(&offset.to_le_bytes());
        hasher.update(&[u8::from(done)]);
        hasher.update(data);
        hasher.finalize()
    }

    /// This request's [`chunk_checksum`](InstallSnapshot::chunk_checksum), computed
    /// from its fields.
    pub fn computed_checksum(&self) -> u32 {
        Self::chunk_checksum(&self.snapshot, self.offset, self.done, &self.data)
    }
}

/// The reply to [`InstallSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotReply {
    /// The follower's current term, for the leader to update itself.
    pub term: Term,
    /// What the follower did with the snapshot.
    pub outcome: InstallOutcome,
}

/// What a follower did with an [`InstallSnapshot`] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstallOutcome {
    /// The request's term is older than the follower's; nothing was done.
    StaleTerm,
    /// The follower's log now matches the leader's up to `match_index`: the snapshot was
    /// installed, or the follower already held everything it covers.
    Installed {
        /// The last index known to match the leader's log.
        match_index: LogIndex,
    },
    /// The follower durably holds the first `offset` bytes of the snapshot the request
    /// named (after writing the piece, if it started there; otherwise it wrote nothing):
    /// the leader sends on from `offset`.
    Received {
        /// How many bytes of the snapshot's data the follower holds.
        offset: u64,
    },
}

/// Any request one Raft server sends to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<C> {
    /// A vote request.
    Vote(RequestVote),
    /// A pre-vote request (Raft thesis §9.6): "would you vote for me in `term`?". It
    /// changes nothing on the receiver: no term, no vote.
    PreVote(RequestVote),
    /// Start an election now: the leader hands over.
    TimeoutNow(TimeoutNow),
    /// A follower asks the leader for a read index.
    ReadIndex(ReadIndexRequest),
    /// Entries or a heartbeat.
    Append(AppendEntries<C>),
    /// A snapshot, or a piece of one. Boxed: it is three times the size of the other
    /// requests, and every request, event and effect the driver moves around (through
    /// channels, in and out of vectors) would otherwise be as large as it is. A box
    /// encodes as its contents, so the wire format is the same.
    InstallSnapshot(Box<InstallSnapshot>),
}

impl<C> Request<C> {
    /// The term of the sender.
    pub fn term(&self) -> Term {
        match self {
            Request::Vote(r) | Request::PreVote(r) => r.term,
            Request::TimeoutNow(r) => r.term,
            Request::ReadIndex(r) => r.term,
            Request::Append(r) => r.term,
            Request::InstallSnapshot(r) => r.term,
        }
    }

    /// The server that sent the request.
    pub fn from(&self) -> NodeId {
        match self {
            Request::Vote(r) | Request::PreVote(r) => r.candidate,
            Request::TimeoutNow(r) => r.leader,
            Request::ReadIndex(r) => r.from,
            Request::Append(r) => r.leader,
            Request::InstallSnapshot(r) => r.leader,
        }
    }

    /// A short name of the request kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Vote(_) => "RequestVote",
            Request::PreVote(_) => "PreVote",
            Request::TimeoutNow(_) => "TimeoutNow",
            Request::ReadIndex(_) => "ReadIndex",
            Request::Append(_) => "AppendEntries",
            Request::InstallSnapshot(_) => "InstallSnapshot",
        }
    }
}

/// Any reply to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The reply to a vote request.
    Vote(VoteReply),
    /// The reply to a pre-vote request. A grant carries the term the pre-vote asked
    /// about; a refusal carries the voter's own term.
    PreVote(VoteReply),
    /// The reply to TimeoutNow or ReadIndex.
    Index(IndexReply),
    /// The reply to AppendEntries.
    Append(AppendReply),
    /// The reply to InstallSnapshot.
    InstallSnapshot(InstallSnapshotReply),
}

impl Response {
    /// The term of the replying server.
    pub fn term(&self) -> Term {
        match self {
            Response::Vote(r) | Response::PreVote(r) => r.term,
            Response::Index(r) => r.term,
            Response::Append(r) => r.term,
            Response::InstallSnapshot(r) => r.term,
        }
    }
}
