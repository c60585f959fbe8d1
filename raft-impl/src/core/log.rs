//! The in-memory view of the log: a snapshot boundary and a run of entries, which may
//! start inside the snapshot (the trailing window kept for slightly lagging followers).
//!
//! Every index here is a real log index. The entry at index `i` lives at position
//! `i - first_index()` of `entries`; all offset arithmetic stays inside this module, so
//! the rest of the core never mixes positions and indices (the 3D pitfall).

use std::collections::VecDeque;

use raft_traits::{Entry, LogId, LogIndex, Term};

/// Why recovered log state is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// An entry's index does not follow its predecessor's.
    #[error("log entry at position {position} has index {found}, expected {expected}")]
    Gap {
        /// The position in the recovered entries.
        position: usize,
        /// The index it should have had.
        expected: LogIndex,
        /// The index it had.
        found: LogIndex,
    },
    /// An entry's term is lower than its predecessor's.
    #[error("log entry {index} has term {term}, lower than the term before it")]
    TermDecreases {
        /// The offending entry.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
    /// The entries start inside the snapshot but do not hold its last entry with its
    /// term, or start after it with a gap.
    #[error("log entries starting at {first} do not line up with the snapshot at {snapshot}")]
    SnapshotMismatch {
        /// The index of the first recovered entry.
        first: LogIndex,
        /// What the snapshot covers.
        snapshot: LogId,
    },
}

/// The log as the core sees it.
#[derive(Clone, Debug)]
pub struct RaftLog<C> {
    /// The last entry covered by the snapshot; `LogId::default()` when there is none.
    last_included: LogId,
    /// Entries from `first_index()` on, without gaps. When they start at or before
    /// `last_included.index` they hold that entry, with its term: the trailing window.
    entries: VecDeque<Entry<C>>,
}

impl<C: Clone> RaftLog<C> {
    /// Builds the log from what storage recovered, checking that it is well formed.
    pub(crate) fn recover(last_included: LogId, entries: Vec<Entry<C>>) -> Result<Self, LogError> {
        let Some(first) = entries.first().map(|e| e.index) else {
            return Ok(RaftLog {
                last_included,
                entries: VecDeque::new(),
            });
        };
        // Entries may start inside the snapshot (a trailing window), but never after it
        // with a gap, and index 0 never holds an entry.
        if first == LogIndex::ZERO || first > last_included.index.next() {
            return Err(LogError::SnapshotMismatch {
                first,
                snapshot: last_included,
            });
        }
        let mut expected = first;
        let mut term = if first > last_included.index {
            last_included.term
        } else {
            Term(0)
        };
        for (position, entry) in entries.iter().enumerate() {
            if entry.index != expected {
                return Err(LogError::Gap {
                    position,
                    expected,
                    found: entry.index,
                });
            }
            if entry.term < term {
                return Err(LogError::TermDecreases {
                    index: entry.index,
                    term: entry.term,
                });
            }
            term = entry.term;
            expected = expected.next();
        }
        let log = RaftLog {
            last_included,
            entries: entries.into(),
        };
        if first <= last_included.index && !log.holds(last_included) {
            return Err(LogError::SnapshotMismatch {
                first,
                snapshot: last_included,
            });
        }
        Ok(log)
    }

    /// Whether an entry with `id` is held (not just the snapshot boundary).
    fn holds(&self, id: LogId) -> bool {
        self.entry(id.index).is_some_and(|e| e.term == id.term)
    }

    /// The index of the first entry held, or the last index + 1 when none is.
    pub fn first_index(&self) -> LogIndex {
        self.entries
            .front()
            .map_or_else(|| self.last_included.index.next(), |e| e.index)
    }

    /// The last entry covered by the snapshot.
    pub fn last_included(&self) -> LogId {
        self.last_included
    }

    /// The id of the last entry, or of the snapshot boundary when the log is empty.
    pub fn last_log_id(&self) -> LogId {
        self.entries
            .back()
            .map_or(self.last_included, Entry::log_id)
    }

    /// The index of the last entry (the log's length).
    pub fn last_index(&self) -> LogIndex {
        self.last_log_id().index
    }

    /// The number of entries held in memory (the trailing window included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held in memory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.first_index().0)?;
        let position = usize::try_from(offset).ok()?;
        (position < self.entries.len()).then_some(position)
    }

    /// The entry at `index`, if it is held (not compacted, not past the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        self.position(index).map(|p| &self.entries[p])
    }

    /// The term of the entry at `index`: known for held entries (the trailing window
    /// included) and for the snapshot boundary itself (index 0 has term 0), unknown in
    /// the purged prefix and past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.last_included.index {
            return Some(self.last_included.term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Whether the log holds `id`: the entry at its index has its term.
    pub fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// Clones up to `max` entries starting at `from`; fewer when the log ends first.
    pub fn entries_from(&self, from: LogIndex, max: usize) -> Vec<Entry<C>> {
        match self.position(from) {
            Some(start) => self.entries.range(start..).take(max).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Clones the entries with indices in `from..=to`.
    pub fn entries_between(&self, from: LogIndex, to: LogIndex) -> Vec<Entry<C>> {
        if to < from {
            return Vec::new();
        }
        let count = usize::try_from(to.0 - from.0 + 1).unwrap_or(usize::MAX);
        self.entries_from(from, count)
    }

    /// Appends one entry; the caller guarantees it follows the last one.
    pub(crate) fn push(&mut self, entry: Entry<C>) {
        debug_assert_eq!(entry.index, self.last_index().next());
        self.entries.push_back(entry);
    }

    /// Removes every entry at or after `index`, never one the snapshot covers: those are
    /// committed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        let index = index.max(self.last_included.index.next());
        let keep = index.0.saturating_sub(self.first_index().0);
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Moves the snapshot boundary to `last_included`, which the log holds: the service
    /// has captured the entries up to it in a snapshot. The entries stay until
    /// [`purge_to`](Self::purge_to).
    pub(crate) fn compact_to(&mut self, last_included: LogId) {
        debug_assert!(self.matches(last_included));
        self.last_included = last_included;
    }

    /// Discards the entries up to and including `index`, which the snapshot covers;
    /// returns whether any was held.
    pub(crate) fn purge_to(&mut self, index: LogIndex) -> bool {
        debug_assert!(index <= self.last_included.index);
        let index = index.min(self.last_included.index);
        let mut purged = false;
        while self.entries.front().is_some_and(|e| e.index <= index) {
            self.entries.pop_front();
            purged = true;
        }
        purged
    }

    /// Where a trailing window of `window` entries before the snapshot boundary starts:
    /// the index up to which entries may be purged.
    pub(crate) fn window_purge_index(&self, window: u64) -> LogIndex {
        LogIndex(self.last_included.index.0.saturating_sub(window))
    }

    /// Replaces the prefix up to `last_included` with a snapshot received from the
    /// leader. A log that holds a matching entry is kept (the part the snapshot covers
    /// until [`purge_to`](Self::purge_to)); anything else conflicts with the snapshot and
    /// is dropped (Figure 13, steps 6–7).
    pub(crate) fn install_snapshot(&mut self, last_included: LogId) {
        if !self.matches(last_included) {
            self.entries.clear();
        }
        self.last_included = last_included;
    }

    /// The first index of the run of entries with `term` that contains `index`: where a
    /// follower tells the leader to resume when their terms at `index` disagree.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index holding an entry of `term`, if any is held.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        // Terms never decrease along the log, so scan from the end and stop early.
        for entry in self.entries.iter().rev() {
            if entry.term == term {
                return Some(entry.index);
            }
            if entry.term < term {
                return None;
            }
        }
        (self.last_included.term == term && self.last_included.index > LogIndex::ZERO)
            .then_some(self.last_included.index)
    }
}

#[cfg(test)]
mod tests {
    use raft_traits::Payload;

    use super::*;

    fn entry(index: u64, term: u64) -> Entry<u64> {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: Payload::Command(index),
        }
    }

    fn log_with(snapshot: (u64, u64), terms: &[u64]) -> RaftLog<u64> {
        let last_included = LogId::new(Term(snapshot.1), LogIndex(snapshot.0));
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(snapshot.0 + 1 + i as u64, t))
            .collect();
        RaftLog::recover(last_included, entries).unwrap()
    }

    #[test]
    fn indices_are_real_across_the_snapshot_offset() {
        let log = log_with((10, 2), &[2, 3, 3]);
        assert_eq!(log.last_index(), LogIndex(13));
        assert_eq!(log.term_at(LogIndex(10)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(12)), Some(Term(3)));
        assert_eq!(log.term_at(LogIndex(9)), None, "compacted");
        assert_eq!(log.term_at(LogIndex(14)), None, "past the end");
        assert_eq!(log.entry(LogIndex(11)).map(|e| e.index), Some(LogIndex(11)));
        let sent: Vec<_> = log
            .entries_from(LogIndex(12), 10)
            .iter()
            .map(|e| e.index.0)
            .collect();
        assert_eq!(sent, [12, 13]);
        assert!(log.entries_from(LogIndex(5), 10).is_empty());
    }

    #[test]
    fn empty_log_ends_at_index_zero_with_term_zero() {
        let log = log_with((0, 0), &[]);
        assert_eq!(log.last_log_id(), LogId::default());
        assert_eq!(log.term_at(LogIndex::ZERO), Some(Term(0)));
    }

    #[test]
    fn recovery_rejects_gaps_and_decreasing_terms() {
        let gap = RaftLog::recover(LogId::default(), vec![entry(1, 1), entry(3, 1)]);
        assert!(matches!(gap, Err(LogError::Gap { .. })));
        let back = RaftLog::recover(LogId::default(), vec![entry(1, 2), entry(2, 1)]);
        assert!(matches!(back, Err(LogError::TermDecreases { .. })));
        let snapshot = LogId::new(Term(1), LogIndex(5));
        let other_term = RaftLog::recover(snapshot, vec![entry(4, 1), entry(5, 2)]);
        assert!(matches!(other_term, Err(LogError::SnapshotMismatch { .. })));
        let short_window = RaftLog::recover(snapshot, vec![entry(3, 1), entry(4, 1)]);
        assert!(matches!(
            short_window,
            Err(LogError::SnapshotMismatch { .. })
        ));
        let gap_after = RaftLog::recover(snapshot, vec![entry(7, 1)]);
        assert!(matches!(gap_after, Err(LogError::SnapshotMismatch { .. })));
        let window = RaftLog::recover(snapshot, vec![entry(4, 1), entry(5, 1), entry(6, 1)]);
        assert_eq!(window.map(|log| log.first_index()), Ok(LogIndex(4)));
    }

    #[test]
    fn a_trailing_window_keeps_covered_entries_readable() {
        let mut log = log_with((0, 0), &[1, 1, 1, 2, 2, 2, 2, 2]);
        log.compact_to(LogId::new(Term(2), LogIndex(7)));
        assert_eq!(log.window_purge_index(3), LogIndex(4));
        assert!(log.purge_to(log.window_purge_index(3)));
        assert_eq!(log.first_index(), LogIndex(5));
        assert_eq!(log.last_included(), LogId::new(Term(2), LogIndex(7)));
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(2)), "in the window");
        assert_eq!(log.term_at(LogIndex(4)), None, "purged");
        let sent: Vec<_> = log
            .entries_from(LogIndex(6), 10)
            .iter()
            .map(|e| e.index.0)
            .collect();
        assert_eq!(sent, [6, 7, 8]);
        assert_eq!(log.first_index_of_term_at(LogIndex(8)), LogIndex(5));
        // Nothing the snapshot covers is ever truncated.
        log.truncate_from(LogIndex(6));
        assert_eq!(log.last_index(), LogIndex(7));
        assert_eq!(log.first_index(), LogIndex(5));
        assert!(!log.purge_to(LogIndex(4)), "already purged");
        // A matching snapshot from the leader keeps the window; a conflicting one drops it.
        let mut kept = log.clone();
        kept.install_snapshot(LogId::new(Term(2), LogIndex(7)));
        assert_eq!(kept.first_index(), LogIndex(5));
        log.install_snapshot(LogId::new(Term(3), LogIndex(9)));
        assert!(log.is_empty());
        assert_eq!(log.first_index(), LogIndex(10));
    }

    #[test]
    fn truncate_and_compact_keep_indices_consistent() {
        let mut log = log_with((0, 0), &[1, 1, 2, 2, 3]);
        log.truncate_from(LogIndex(4));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), LogIndex(3)));
        log.compact_to(LogId::new(Term(1), LogIndex(2)));
        assert_eq!(
            log.len(),
            3,
            "compaction keeps the entries until they are purged"
        );
        assert!(log.purge_to(LogIndex(2)));
        assert_eq!(log.len(), 1);
        assert_eq!(log.last_included(), LogId::new(Term(1), LogIndex(2)));
        assert_eq!(log.last_index(), LogIndex(3));
        log.truncate_from(LogIndex(3));
        assert_eq!(log.last_log_id(), LogId::new(Term(1), LogIndex(2)));
    }

    #[test]
    fn installing_a_snapshot_keeps_only_a_matching_suffix() {
        let mut log = log_with((0, 0), &[1, 1, 2, 2]);
        log.install_snapshot(LogId::new(Term(1), LogIndex(2)));
        assert_eq!(
            log.last_index(),
            LogIndex(4),
            "suffix after a matching entry is kept"
        );

        let mut log = log_with((0, 0), &[1, 1, 2, 2]);
        log.install_snapshot(LogId::new(Term(3), LogIndex(3)));
        assert_eq!(
            log.last_log_id(),
            LogId::new(Term(3), LogIndex(3)),
            "conflict drops all"
        );
        assert!(log.is_empty());

        let mut log = log_with((0, 0), &[1]);
        log.install_snapshot(LogId::new(Term(2), LogIndex(9)));
        assert_eq!(log.last_index(), LogIndex(9), "a shorter log is replaced");
    }

    #[test]
    fn term_runs_for_the_conflict_hint() {
        let log = log_with((2, 1), &[1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(LogIndex(6)), LogIndex(4));
        assert_eq!(
            log.first_index_of_term_at(LogIndex(3)),
            LogIndex(3),
            "stops at the snapshot"
        );
        assert_eq!(log.last_index_of_term(Term(2)), Some(LogIndex(6)));
        assert_eq!(log.last_index_of_term(Term(3)), None);
        assert_eq!(log.last_index_of_term(Term(1)), Some(LogIndex(3)));
    }
}
