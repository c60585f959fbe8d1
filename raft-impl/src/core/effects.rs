//! What the core asks its driver to do, in order.

use std::time::Duration;

use raft_traits::{
    Bytes, Entry, HardState, InstallSnapshot, LogIndex, NodeId, Request, RequestRefused, Response,
    Snapshot, SnapshotDescriptor, Term,
};

/// Identifies an incoming request whose reply the core will emit as [`Effect::Reply`].
///
/// Chosen by the driver; the core only hands it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies an outgoing request, so that its reply (or failure) can be matched to it.
///
/// The driver must hand the tag back unchanged with the request's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendTag {
    /// The sender's term when the request was sent. A reply to a request of an earlier
    /// term is dropped (Figure 2: "term changed since the request was sent").
    pub term: Term,
    /// Unique among the requests this node sent in `term`.
    pub seq: u64,
}

/// Identifies a read the driver asked the core to confirm; handed back in
/// [`Effect::Read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// Why a linearizable read could not be given an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadRefused {
    /// This node is not the leader (and, for a follower read, the leader it asked could
    /// not confirm): try `leader_hint`.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The leader has not yet committed an entry of its own term, so it does not know
    /// the latest commit index (thesis §6.4, step 1). Retry shortly.
    #[error("the leader has not yet committed an entry of its term")]
    NotReady,
}

/// The timers a node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Followers and candidates start an election when it fires.
    Election,
    /// Leaders send heartbeats when it fires.
    Heartbeat,
    /// Leaders tell idle followers of the commit index when it fires.
    CommitNotice,
}

/// A write to stable storage. The variants that carry a snapshot's description are
/// boxed, as are those of [`Apply`] and [`Effect`]: they are rare and several times the
/// size of the others, and every effect would otherwise be as large as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist<C> {
    /// Replace the hard state.
    HardState(HardState),
    /// Append entries right after the current last entry.
    Entries(Vec<Entry<C>>),
    /// Remove every entry at or after this index.
    TruncateFrom(LogIndex),
    /// Store the snapshot, atomically with dropping a log that conflicts with it
    /// ([`Storage::save_snapshot`](raft_traits::Storage::save_snapshot)).
    Snapshot(Box<Snapshot>),
    /// Store the snapshot of this server's own state that the driver staged with this
    /// descriptor, as `Snapshot` does
    /// ([`Storage::save_staged_snapshot`](raft_traits::Storage::save_staged_snapshot)).
    StagedSnapshot(Box<SnapshotDescriptor>),
    /// Discard the entries up to and including this index, which the stored snapshot
    /// covers (all but the trailing window).
    PurgeTo(LogIndex),
    /// Start receiving a snapshot in pieces, discarding any other one being received
    /// ([`Storage::begin_snapshot`](raft_traits::Storage::begin_snapshot)).
    BeginSnapshot(Box<SnapshotDescriptor>),
    /// Append a piece to the snapshot being received, at `offset`
    /// ([`Storage::write_snapshot_chunk`](raft_traits::Storage::write_snapshot_chunk)).
    SnapshotChunk {
        /// Where the piece starts in the snapshot's data.
        offset: u64,
        /// The piece.
        data: Bytes,
    },
    /// Make the snapshot received the stored one, atomically with dropping a log that
    /// conflicts with it
    /// ([`Storage::finish_snapshot`](raft_traits::Storage::finish_snapshot)). The core
    /// emits it only once the data's checksum matched.
    FinishSnapshot,
    /// Discard the snapshot being received
    /// ([`Storage::abort_snapshot`](raft_traits::Storage::abort_snapshot)).
    AbortSnapshot,
}

/// Something to hand to the state machine, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Apply<C> {
    /// Committed entries, consecutive, starting right after the last applied one.
    Entries(Vec<Entry<C>>),
    /// The stored snapshot, which replaces the state machine's state; the next entries
    /// start right after its last included index. The driver reads its data from
    /// storage.
    Snapshot(Box<SnapshotDescriptor>),
}

/// One thing the driver must do.
///
/// Effects are emitted in the order they must take effect, with one relaxation for log
/// appends:
///
/// * every [`Effect::Persist`] other than [`Persist::Entries`] must be durable before
///   any later effect takes effect (a vote or a term is on disk before the RequestVote
///   or the answer that relies on it leaves);
/// * a [`Persist::Entries`] must be durable before any later [`Effect::Reply`] leaves
///   (Figure 2: "respond to RPCs only after updating stable storage": a follower's
///   acknowledgement says its copy is durable), and before any later write starts;
/// * other effects may take effect while an earlier [`Persist::Entries`] is still being
///   written ([`Effect::waits_for_appends`]). That is what lets a leader send
///   AppendEntries, count its followers' acknowledgements, commit and apply while its
///   own append runs (thesis §10.2.1): the core counts the leader's own copy toward a
///   majority only once [`Input::Persisted`](super::Input) reports it, and an entry is
///   committed only when a majority holds it durably, so whatever the leader sends or
///   applies meanwhile is already safe without its own copy.
///
/// A driver may always be stricter, and carry effects out in exactly this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect<C> {
    /// Write to stable storage.
    Persist(Persist<C>),
    /// Send a request to a peer; report its reply or failure back with `tag`.
    Send {
        /// The peer.
        to: NodeId,
        /// Hand back with the outcome.
        tag: SendTag,
        /// The request.
        request: Request<C>,
    },
    /// Send a piece of the stored snapshot to a peer: `request` with its data (empty
    /// here) filled with the `len` bytes of the snapshot at `request.offset`, read from
    /// storage, and its checksum set to match. Report the reply or failure with `tag`.
    SendSnapshot {
        /// The peer.
        to: NodeId,
        /// Hand back with the outcome.
        tag: SendTag,
        /// The request, without its data.
        request: Box<InstallSnapshot>,
        /// How many bytes of data it carries.
        len: u64,
    },
    /// Answer the incoming request `id`.
    Reply {
        /// The request being answered.
        id: RequestId,
        /// The answer.
        response: Response,
    },
    /// Refuse the incoming request `id` without an answer of the protocol: it could not
    /// have come from a correct member, and the node changed nothing.
    Refuse {
        /// The request being refused.
        id: RequestId,
        /// Why.
        reason: RequestRefused,
    },
    /// A read asked for with `id` may be served once the state machine has applied up
    /// to the index (ReadIndex, thesis §6.4), or could not be confirmed.
    Read {
        /// The read.
        id: ReadId,
        /// The index to wait for, or why there is none.
        result: Result<LogIndex, ReadRefused>,
    },
    /// Hand committed entries or a snapshot to the state machine.
    Apply(Apply<C>),
    /// (Re)arm a timer to fire `after` from now, replacing any pending one.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// When it fires, from now.
        after: Duration,
    },
    /// Disarm a timer.
    StopTimer(Timer),
}

impl<C> Effect<C> {
    /// Whether this effect must wait until every [`Persist::Entries`] emitted before it
    /// is durable (see [`Effect`] for the whole order contract). Writes of other kinds
    /// wait for everything before them in any case.
    pub fn waits_for_appends(&self) -> bool {
        matches!(self, Effect::Persist(_) | Effect::Reply { .. })
    }
}

/// The ordered batch of effects produced by stepping the core.
#[derive(Debug)]
pub struct Effects<C> {
    items: Vec<Effect<C>>,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Effects { items: Vec::new() }
    }
}

impl<C> Effects<C> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an effect.
    pub fn push(&mut self, effect: Effect<C>) {
        self.items.push(effect);
    }

    /// The effects emitted so far.
    pub fn as_slice(&self) -> &[Effect<C>] {
        &self.items
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes every effect out, leaving the batch empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Effect<C>> {
        self.items.drain(..)
    }

    /// Takes every effect out as a vector.
    pub fn take(&mut self) -> Vec<Effect<C>> {
        std::mem::take(&mut self.items)
    }

    /// Moves every effect to the end of `buffer`, leaving the batch empty. Into an
    /// empty buffer the two swap, so a driver that steps on every event and hands the
    /// buffer back each time reuses two vectors rather than allocating one per step.
    pub fn take_into(&mut self, buffer: &mut Vec<Effect<C>>) {
        if buffer.is_empty() {
            std::mem::swap(&mut self.items, buffer);
        } else {
            buffer.append(&mut self.items);
        }
    }

    pub(crate) fn persist(&mut self, write: Persist<C>) {
        // A hard state written right after another replaces it: adopting a term and then
        // voting in it is one write, not two.
        if let Persist::HardState(next) = &write
            && let Some(Effect::Persist(Persist::HardState(last))) = self.items.last_mut()
        {
            *last = *next;
            return;
        }
        self.push(Effect::Persist(write));
    }

    pub(crate) fn send(&mut self, to: NodeId, tag: SendTag, request: Request<C>) {
        self.push(Effect::Send { to, tag, request });
    }

    pub(crate) fn send_snapshot(
        &mut self,
        to: NodeId,
        tag: SendTag,
        request: InstallSnapshot,
        len: u64,
    ) {
        self.push(Effect::SendSnapshot {
            to,
            tag,
            request: Box::new(request),
            len,
        });
    }

    pub(crate) fn reply(&mut self, id: RequestId, response: Response) {
        self.push(Effect::Reply { id, response });
    }

    pub(crate) fn refuse(&mut self, id: RequestId, reason: RequestRefused) {
        self.push(Effect::Refuse { id, reason });
    }

    pub(crate) fn read(&mut self, id: ReadId, result: Result<LogIndex, ReadRefused>) {
        self.push(Effect::Read { id, result });
    }

    pub(crate) fn apply(&mut self, apply: Apply<C>) {
        self.push(Effect::Apply(apply));
    }

    pub(crate) fn set_timer(&mut self, timer: Timer, after: Duration) {
        self.push(Effect::SetTimer { timer, after });
    }

    pub(crate) fn stop_timer(&mut self, timer: Timer) {
        self.push(Effect::StopTimer(timer));
    }
}

impl<C> IntoIterator for Effects<C> {
    type Item = Effect<C>;
    type IntoIter = std::vec::IntoIter<Effect<C>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Timer;

    #[test]
    fn taking_into_a_buffer_keeps_the_order_and_empties_the_batch() {
        let mut out = Effects::<u64>::new();
        out.push(Effect::StopTimer(Timer::Election));
        out.push(Effect::StopTimer(Timer::Heartbeat));
        let mut buffer = Vec::new();
        out.take_into(&mut buffer);
        assert!(out.is_empty());
        out.push(Effect::StopTimer(Timer::CommitNotice));
        out.take_into(&mut buffer);
        assert!(out.is_empty());
        let timers: Vec<_> = buffer
            .iter()
            .map(|effect| match effect {
                Effect::StopTimer(timer) => *timer,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            timers,
            [Timer::Election, Timer::Heartbeat, Timer::CommitNotice],
            "a non-empty buffer is appended to"
        );
    }
}
