//! What a leader knows about one follower's log, and how it replicates to it.

use std::collections::BTreeMap;

use raft_traits::LogIndex;

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
    /// The follower needs entries the leader has compacted; an InstallSnapshot is on its
    /// way.
    Snapshot {
        /// The last index the snapshot covers.
        last_included: LogIndex,
        /// The leader's heartbeat count when it was sent, to resend after a timeout.
        sent_at_tick: u64,
        /// The request's sequence number, to tell its outcome from a stale one.
        seq: u64,
    },
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
    /// The commit index carried by the last AppendEntries sent to the follower.
    pub(super) commit_sent: LogIndex,
    /// The leader's last sequence number when it learned `match_index`: requests with a
    /// higher number were sent knowing the follower held it.
    pub(super) match_known_at: u64,
}

impl Progress {
    pub(super) fn new(next_index: LogIndex) -> Self {
        Progress {
            next_index,
            match_index: LogIndex::ZERO,
            mode: ReplicationMode::Probe,
            inflight: BTreeMap::new(),
            commit_sent: LogIndex::ZERO,
            match_known_at: 0,
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

    /// The follower refused request `seq`, sent after the leader learned `match_index`,
    /// saying its log ends before that: it lost entries it had confirmed (its storage
    /// was wiped or replaced). Raft assumes this never happens, but an operator can make
    /// it happen; start over rather than wait forever. (A request sent before the match
    /// was learned can be refused legitimately: it may have overtaken the one that
    /// established the match.)
    pub(super) fn regressed(&mut self, seq: u64, last_log_index: LogIndex) -> bool {
        if seq > self.match_known_at && last_log_index < self.match_index {
            self.match_index = LogIndex::ZERO;
            return true;
        }
        false
    }

    pub(super) fn enter(&mut self, mode: ReplicationMode) {
        self.mode = mode;
        self.inflight.clear();
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
