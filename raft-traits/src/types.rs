//! Identifiers and the log's building blocks.

use std::fmt;
use std::fmt::Debug;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The identity of one server in the cluster.
///
/// Ids are chosen by the application; they only need to be unique within a cluster.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        NodeId(id)
    }
}

/// A Raft term: a logical clock that only moves forward.
///
/// Term 0 is the term every server starts in; the first election is for term 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl Term {
    /// The highest term a server accepts from a message or from storage. Terms above it
    /// are refused, so that at least 2^32 elections always remain before the counter
    /// could overflow, whatever a faulty or hostile peer sends.
    pub const MAX_ACCEPTED: Term = Term(u64::MAX - (1 << 32));

    /// The term after this one. Saturates rather than wrap; servers never go past
    /// [`Term::MAX_ACCEPTED`] (see [`Term::checked_next`]), so it never needs to.
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }

    /// The term after this one, or `None` past [`Term::MAX_ACCEPTED`].
    #[must_use]
    pub fn checked_next(self) -> Option<Term> {
        self.0
            .checked_add(1)
            .map(Term)
            .filter(|t| *t <= Term::MAX_ACCEPTED)
    }

    /// Whether a server may adopt this term.
    pub fn is_acceptable(self) -> bool {
        self <= Term::MAX_ACCEPTED
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A position in the replicated log.
///
/// The first entry has index 1; index 0 stands for "before the first entry" and is where
/// an empty log ends. Indices are *real* indices: they do not restart after a snapshot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index that precedes every entry.
    pub const ZERO: LogIndex = LogIndex(0);

    /// The highest index a server accepts from a message or from storage, leaving room
    /// for 2^32 more entries so that index arithmetic never overflows.
    pub const MAX_ACCEPTED: LogIndex = LogIndex(u64::MAX - (1 << 32));

    /// The index after this one. Saturates rather than wrap: indices above
    /// [`LogIndex::MAX_ACCEPTED`] are refused where they enter, so it never needs to.
    #[must_use]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.saturating_add(1))
    }

    /// This index moved forward by `n`, or `None` past [`LogIndex::MAX_ACCEPTED`].
    #[must_use]
    pub fn checked_plus(self, n: u64) -> Option<LogIndex> {
        self.0
            .checked_add(n)
            .map(LogIndex)
            .filter(|i| *i <= LogIndex::MAX_ACCEPTED)
    }

    /// The index before this one, saturating at zero.
    #[must_use]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// This index moved forward by `n` positions, saturating (see [`LogIndex::next`]).
    #[must_use]
    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0.saturating_add(n))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// The identity of a log position: its term and its index.
///
/// Ordering is Raft's "more up-to-date" order (§5.4.1): the later term wins, and within the
/// same term the longer log wins. Because of the Log Matching Property, two logs that hold
/// the same `LogId` are identical up to it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// The term in which the entry was created. Compared first.
    pub term: Term,
    /// The index of the entry.
    pub index: LogIndex,
}

impl LogId {
    /// Builds a log id.
    pub fn new(term: Term, index: LogIndex) -> LogId {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.term, self.index)
    }
}

/// What a replicated command must be able to do.
///
/// Implemented automatically for every type with these bounds. Commands are cloned when
/// they are sent to several peers, so a command that carries a large payload should hold
/// it in a cheaply cloned buffer such as [`Bytes`] or an `Arc`.
pub trait Command: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T> Command for T where T: Clone + Debug + Send + Sync + Serialize + DeserializeOwned + 'static {}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<C> {
    /// An entry with no command. A leader may append one when it takes office so that it
    /// can commit entries of earlier terms (§5.4.2); the state machine never sees it.
    Blank,
    /// A client command, handed to the state machine once committed.
    Command(C),
    /// A cluster configuration. It takes effect on every server as soon as it is in the
    /// server's log (appended, not committed), and is undone if the entry is truncated
    /// (Raft thesis §4.1). The state machine never sees it.
    ///
    /// Boxed because configurations are rare and large (four collections, 96 bytes): held
    /// inline they would make every entry of the log that size, however small its command.
    /// The box does not change the encoding.
    Membership(Box<crate::Membership>),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: Payload<C>,
}

impl<C> Entry<C> {
    /// The entry's log id.
    pub fn log_id(&self) -> LogId {
        LogId::new(self.term, self.index)
    }
}

/// The state Raft must keep on stable storage besides the log (Figure 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this server has seen.
    pub term: Term,
    /// The candidate that received this server's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// Describes a snapshot: the last log entry it replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The id of the last entry the snapshot covers. Entries up to and including it may
    /// be discarded from the log.
    pub last_included: LogId,
    /// The configuration in force at `last_included` (the latest one at or before it),
    /// so that a server restored from the snapshot knows its cluster.
    pub membership: crate::Membership,
}

/// A snapshot of the state machine, as produced by the application.
///
/// Raft treats the data as opaque bytes: it stores them, sends them to followers that
/// need them, and hands exactly the same bytes back to the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The application's serialized state.
    pub data: Bytes,
}

impl Snapshot {
    /// The CRC-32 (IEEE) of what the snapshot covers (its last included term and index)
    /// and of its data: sent with the snapshot to a follower, which checks it before
    /// installing anything.
    ///
    /// ```
    /// use raft_traits::{Bytes, Snapshot};
    ///
    /// let mut snapshot = Snapshot::default();
    /// snapshot.data = Bytes::from_static(b"state");
    /// let sum = snapshot.checksum();
    /// snapshot.data = Bytes::from_static(b"stale");
    /// assert_ne!(snapshot.checksum(), sum);
    /// ```
    pub fn checksum(&self) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.meta.last_included.term.0.to_le_bytes());
        hasher.update(&self.meta.last_included.index.0.to_le_bytes());
        hasher.update(&self.data);
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of a log is as large as its largest payload: a configuration held
    /// inline made a `u64` command's entry 112 bytes, and the in-process benchmark lost a
    /// fifth of its throughput to moving and paging them.
    #[test]
    fn a_configuration_does_not_set_the_size_of_every_entry() {
        assert!(
            size_of::<Payload<u64>>() <= 16,
            "{}",
            size_of::<Payload<u64>>()
        );
        assert!(size_of::<Entry<u64>>() <= 32, "{}", size_of::<Entry<u64>>());
    }

    /// The box does not reach the encoding: a configuration entry encodes as the
    /// configuration itself behind the variant's tag.
    #[test]
    fn a_boxed_configuration_encodes_as_the_configuration() {
        let membership = crate::Membership::with_addresses([(NodeId(1), "a".to_owned())])
            .with_learner(NodeId(2), "b");
        let boxed =
            postcard::to_allocvec(&Payload::<u64>::Membership(Box::new(membership.clone())))
                .expect("encodes");
        let mut inline = vec![2u8]; // the variant's index: Blank, Command, Membership
        inline.extend(postcard::to_allocvec(&membership).expect("encodes"));
        assert_eq!(boxed, inline);
    }
}
