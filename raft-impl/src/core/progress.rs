//! What a leader knows about one follower's log, and how it replicates to it.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_traits::LogIndex;

use super::dispatch::RpcKind;

/// How the leader currently replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationMode {
    /// The leader does not know where the follower's log matches its own. It sends one
    /// AppendEntries at a time from `next_index` and moves back on each rejection, a whole
    /// term per round trip (the conflict hint).
    Probe,
    /// The follower's log matched at `match_index`; the leader streams entries
    /// optimistically, advancing `next_index` as it sends, with up to
    /// `max_inflight_appends` requests in flight.
    Replicate,
    /// The follower needs entries the leader has compacted; the snapshot is on its way,
    /// in pieces, up to `snapshot_chunks_in_flight` at a time.
    Snapshot {
        /// The last index the snapshot covers.
        last_included: LogIndex,
        /// The leader's heartbeat count when a piece was last sent or answered, to ask
        /// again after a timeout.
        sent_at_tick: u64,
        /// The newest piece's sequence number.
        seq: u64,
        /// How many bytes of the snapshot's data the follower said it holds.
        acked: u64,
        /// Where the next piece starts.
        next: u64,
        /// Whether the leader is waiting to learn the follower's offset: it then sends a
        /// single piece, from the offset the follower last confirmed, and pipelines only
        /// once the follower answered (so a follower that holds more than the leader
        /// knows costs at most that one piece).
        probing: bool,
        /// Whether the piece that ends the data is in flight.
        final_sent: bool,
    },
}

/// A follower's refusal of an AppendEntries, with what the leader made of its hint.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refusal {
    /// The refused request.
    pub(super) seq: u64,
    /// The request's `prev_log.index`.
    pub(super) prev_log_index: LogIndex,
    /// The follower's last index, from its hint.
    pub(super) follower_last_index: LogIndex,
    /// Where the hint says to resume: past the leader's last entry of the follower's
    /// conflicting term, or the follower's log end.
    pub(super) hinted_next: LogIndex,
}

/// A snapshot piece in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    /// The offset it ends at.
    pub(super) end: u64,
    /// What the follower had confirmed holding when it was sent. The follower answers a
    /// piece only after it sent that confirmation, so an answer below it means the
    /// follower went back (it began another snapshot, offered late by the network), not
    /// that the answer is old news.
    pub(super) confirmed: u64,
}

/// The leader's view of one follower (Figure 2's `nextIndex` and `matchIndex`, plus the
/// flow-control state).
#[derive(Clone, Debug)]
pub struct Progress {
    pub(super) next_index: LogIndex,
    pub(super) match_index: LogIndex,
    pub(super) mode: ReplicationMode,
    /// AppendEntries with entries sent in the current mode and not yet answered: their
    /// sequence numbers, and the last index each carried.
    pub(super) inflight: BTreeMap<u64, LogIndex>,
    /// Snapshot pieces sent and not yet answered, by sequence number.
    pub(super) pieces: BTreeMap<u64, Piece>,
    /// The commit index carried by the last AppendEntries sent to the follower.
    pub(super) commit_sent: LogIndex,
    /// The leader's last sequence number when it learned `match_index`: requests with a
    /// higher number were sent knowing the follower held it.
    pub(super) match_known_at: u64,
    /// The newest request of the current term the follower answered (any answer shows
    /// it still takes this node as its leader): what confirms reads.
    pub(super) acked_seq: u64,
    /// When the follower last answered, for check-quorum.
    pub(super) heard_at: Option<Duration>,
}

impl Progress {
    pub(super) fn new(next_index: LogIndex) -> Self {
        Progress {
            next_index,
            match_index: LogIndex::ZERO,
            mode: ReplicationMode::Probe,
            inflight: BTreeMap::new(),
            pieces: BTreeMap::new(),
            commit_sent: LogIndex::ZERO,
            match_known_at: 0,
            acked_seq: 0,
            heard_at: None,
        }
    }

    /// The next index to send.
    pub fn next_index(&self) -> LogIndex {
        self.next_index
    }

    /// The highest index known to match the leader's log.
    pub fn match_index(&self) -> LogIndex {
        self.match_index
    }

    /// The replication mode.
    pub fn mode(&self) -> ReplicationMode {
        self.mode
    }

    /// How many AppendEntries with entries await an answer.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether the follower is idle (replicating, nothing in flight) and has not been sent
    /// the leader's commit index `commit`. A follower with a request in flight is not
    /// idle: the reply to that request makes the leader send it more, and what it sends
    /// then carries the index; a follower being probed learns it once a probe succeeds.
    pub(super) fn awaits_commit_notice(&self, commit: LogIndex) -> bool {
        self.inflight.is_empty()
            && self.mode == ReplicationMode::Replicate
            && self.commit_sent < commit
    }

    /// Whether the leader may send entries now, without waiting for a heartbeat.
    pub(super) fn can_send_entries(&self, last_index: LogIndex, max_inflight: usize) -> bool {
        self.next_index <= last_index
            && match self.mode {
                ReplicationMode::Probe => self.inflight.is_empty(),
                ReplicationMode::Replicate => self.inflight.len() < max_inflight,
                ReplicationMode::Snapshot { .. } => false,
            }
    }

    /// The newest request the follower answered.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// Records that the follower answered request `seq` at `now`.
    pub(super) fn heard(&mut self, seq: u64, now: Duration) {
        self.acked_seq = self.acked_seq.max(seq);
        self.heard_at = Some(now);
    }

    /// Whether the follower answered at or after `start`.
    pub(super) fn heard_since(&self, start: Duration) -> bool {
        self.heard_at.is_some_and(|at| at >= start)
    }

    /// Records that request `seq` was answered (whatever the answer), so it no longer
    /// counts against the window.
    pub(super) fn answered(&mut self, seq: u64) -> Option<LogIndex> {
        self.inflight.remove(&seq)
    }

    /// Records an AppendEntries sent as request `seq`: `count` entries after
    /// `prev_index`, carrying the commit index `commit`. In replicate mode the leader
    /// moves `next_index` past them at once (optimistic pipelining).
    pub(super) fn sent_append(
        &mut self,
        seq: u64,
        prev_index: LogIndex,
        count: u64,
        commit: LogIndex,
    ) {
        self.commit_sent = commit;
        if count == 0 {
            return;
        }
        let last = prev_index.plus(count);
        self.inflight.insert(seq, last);
        if self.mode == ReplicationMode::Replicate {
            self.next_index = last.next();
        }
    }

    /// Starts sending the snapshot covering up to `last_included`, unless it is already
    /// being sent. Begins with one piece from offset 0, whose answer says how much of the
    /// snapshot the follower holds.
    pub(super) fn start_snapshot(&mut self, last_included: LogIndex, tick: u64) {
        if matches!(self.mode, ReplicationMode::Snapshot { last_included: sending, .. } if sending == last_included)
        {
            return;
        }
        self.enter(ReplicationMode::Snapshot {
            last_included,
            sent_at_tick: tick,
            seq: 0,
            acked: 0,
            next: 0,
            probing: true,
            final_sent: false,
        });
    }

    /// The next piece of a snapshot of `size` bytes to send, as `(offset, len)`, if the
    /// window of `window` pieces has room (of one piece while probing): up to `chunk`
    /// bytes from where the last piece ended.
    pub(super) fn next_snapshot_piece(
        &self,
        size: u64,
        chunk: u64,
        window: usize,
    ) -> Option<(u64, u64)> {
        let ReplicationMode::Snapshot {
            next,
            probing,
            final_sent,
            ..
        } = self.mode
        else {
            return None;
        };
        let window = if probing { 1 } else { window };
        if final_sent || self.pieces.len() >= window || next > size {
            return None;
        }
        Some((next, chunk.min(size - next)))
    }

    /// Records a snapshot piece sent as request `seq`: `len` bytes at `offset` of a
    /// snapshot of `size` bytes, at heartbeat `tick`.
    pub(super) fn sent_snapshot_piece(
        &mut self,
        seq: u64,
        offset: u64,
        len: u64,
        size: u64,
        tick: u64,
    ) {
        let end = offset.saturating_add(len);
        if let ReplicationMode::Snapshot {
            sent_at_tick,
            seq: newest,
            next,
            acked,
            probing,
            final_sent,
            ..
        } = &mut self.mode
        {
            let confirmed = *acked;
            self.pieces.insert(seq, Piece { end, confirmed });
            *sent_at_tick = tick;
            *newest = seq;
            if !*probing {
                *next = end;
                *final_sent = end == size;
            }
        }
    }

    /// The follower answered snapshot piece `seq`, saying it holds `offset` bytes, at
    /// heartbeat `tick`.
    ///
    /// * The answer to the first piece (or the first after a stall) says where the
    ///   follower stands: the leader goes on from there.
    /// * An offset at or past the piece's end: it was written (with any before it).
    /// * An offset short of the piece: the follower lacks the data from `offset`. If a
    ///   piece starting there is still in flight, it was only overtaken (the follower
    ///   keeps early pieces for when the gap fills): wait for it. Otherwise that data was
    ///   lost: resend from `offset`, writing off the pieces in flight.
    ///
    /// An offset below one the follower already confirmed is outdated (answers overtake
    /// each other) and ignored, unless it is below what the follower had confirmed when
    /// the piece was sent: then the follower went back, and the leader starts again from
    /// its offset (answering the same piece again and again otherwise, at once each
    /// time). Once nothing is in flight and the follower holds less than was sent, the
    /// rest is resent from its offset.
    pub(super) fn snapshot_received(&mut self, seq: u64, offset: u64, tick: u64) {
        let Some(Piece { end, confirmed }) = self.pieces.remove(&seq) else {
            // An answer to a piece written off already.
            return;
        };
        let ReplicationMode::Snapshot {
            sent_at_tick,
            acked,
            next,
            probing,
            final_sent,
            ..
        } = &mut self.mode
        else {
            return;
        };
        *sent_at_tick = tick;
        // Answers overtake each other too: one below what the follower already confirmed
        // is older news and changes nothing. (Should the follower really have gone back,
        // the pieces it refuses time out, and the leader asks again.)
        let went_back = offset < confirmed;
        let outdated = !*probing && offset < *acked && !went_back;
        let gap_in_flight = self.pieces.values().any(|piece| piece.end > offset);
        let rewind = *probing
            || went_back
            || (offset < end && !gap_in_flight && !outdated)
            || offset > *next;
        *acked = (*acked).max(offset);
        if rewind {
            *probing = false;
            *acked = offset;
            *next = offset;
            *final_sent = false;
            self.pieces.clear();
        } else if self.pieces.is_empty() && *acked < *next {
            *next = *acked;
            *final_sent = false;
        }
    }

    /// The pieces in flight got no answer (a failure, or a timeout): the next piece sent
    /// asks the follower where it stands again.
    pub(super) fn snapshot_stalled(&mut self) {
        if let ReplicationMode::Snapshot {
            acked,
            next,
            probing,
            final_sent,
            ..
        } = &mut self.mode
        {
            *probing = true;
            *next = *acked;
            *final_sent = false;
            self.pieces.clear();
        }
    }

    /// Starts over from `next_index` in probe mode.
    pub(super) fn rewind_to(&mut self, next_index: LogIndex) {
        self.next_index = next_index;
        self.enter(ReplicationMode::Probe);
    }

    /// The follower refused an AppendEntries. Returns whether the leader should send
    /// again at once (from the new `next_index`); otherwise it waits for a heartbeat or
    /// for replies still in flight. `last_index` is the leader's.
    pub(super) fn refused(&mut self, refusal: Refusal, last_index: LogIndex) -> bool {
        let carried_up_to = self.answered(refusal.seq);
        // A request sent after the leader learned `match_index`, refused by a follower
        // whose log now ends before it: the follower lost entries it had confirmed (its
        // storage was wiped or replaced). Raft assumes this never happens, but an
        // operator can make it happen; start over rather than wait forever. (A request
        // sent before the match was learned can be refused legitimately: it may have
        // overtaken the one that established the match.)
        if refusal.seq > self.match_known_at && refusal.follower_last_index < self.match_index {
            tracing::warn!("follower lost entries it had confirmed; replicating from scratch");
            self.match_index = LogIndex::ZERO;
            self.enter(ReplicationMode::Probe);
        }
        // Late rejections describe a log the follower has since fixed.
        let fresh = match self.mode {
            ReplicationMode::Replicate => refusal.prev_log_index > self.match_index,
            ReplicationMode::Probe => refusal.prev_log_index.next() == self.next_index,
            ReplicationMode::Snapshot { .. } => false,
        };
        if !fresh {
            // Stale as a hint, but not as news: when requests overtake each other on the
            // network, a pipelined request can be refused (its predecessor had not
            // arrived yet) and still be answered after that predecessor's success. Its
            // entries are missing all the same; resend from the confirmed point, or the
            // follower stalls behind an optimistic next_index.
            let missing = carried_up_to.is_some_and(|last| last > self.match_index);
            if missing && self.mode == ReplicationMode::Replicate {
                self.rewind_to(self.match_index.next());
                return true;
            }
            return false;
        }
        let next_index = refusal
            .hinted_next
            .min(refusal.prev_log_index)
            .min(last_index.next())
            .max(self.match_index.next());
        let moved = next_index < self.next_index;
        self.rewind_to(next_index);
        moved
    }

    /// Request `seq` of kind `rpc` got no answer.
    pub(super) fn send_failed(&mut self, seq: u64, rpc: RpcKind) {
        let tracked = self.answered(seq).is_some();
        match (rpc, self.mode) {
            // Entries may be missing on the follower now; fall back to probing from what
            // it confirmed, at the next heartbeat (an unreachable peer must not make the
            // leader spin).
            (RpcKind::Append, ReplicationMode::Replicate) if tracked => {
                self.rewind_to(self.match_index.next());
            }
            (RpcKind::InstallSnapshot, ReplicationMode::Snapshot { .. })
                if self.pieces.contains_key(&seq) =>
            {
                self.snapshot_stalled();
            }
            _ => {}
        }
    }

    fn enter(&mut self, mode: ReplicationMode) {
        self.mode = mode;
        self.inflight.clear();
        self.pieces.clear();
    }

    /// Records that the follower's log matches up to `index`; `now` is the leader's last
    /// sequence number.
    pub(super) fn matched(&mut self, index: LogIndex, now: u64) {
        if index > self.match_index {
            self.match_known_at = now;
        }
        self.match_index = self.match_index.max(index);
        self.next_index = self.next_index.max(self.match_index.next());
        let caught_up = match self.mode {
            ReplicationMode::Probe => true,
            ReplicationMode::Replicate => false,
            ReplicationMode::Snapshot { last_included, .. } => self.match_index >= last_included,
        };
        if caught_up {
            self.enter(ReplicationMode::Replicate);
        }
    }
}
