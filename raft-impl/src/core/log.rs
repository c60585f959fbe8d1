//! The in-memory view of the log: a snapshot boundary followed by entries.
//!
//! Every index here is a real log index. The entry at index `i` lives at position
//! `i - last_included.index - 1` of `entries`; all offset arithmetic stays inside this
//! module, so the rest of the core never mixes positions and indices (the 3D pitfall).

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
}

/// The log as the core sees it.
#[derive(Clone, Debug)]
pub struct RaftLog<C> {
    /// The last entry covered by the snapshot; `LogId::default()` when there is none.
    last_included: LogId,
    /// Entries `last_included.index + 1 ..`, without gaps.
    entries: VecDeque<Entry<C>>,
}

impl<C: Clone> RaftLog<C> {
    /// Builds the log from what storage recovered, checking that it is well formed.
    pub(crate) fn recover(last_included: LogId, entries: Vec<Entry<C>>) -> Result<Self, LogError> {
        let mut expected = last_included.index.next();
        let mut term = last_included.term;
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
        Ok(RaftLog {
            last_included,
            entries: entries.into(),
        })
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

    /// The number of entries held in memory (after the snapshot).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held in memory.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.last_included.index.0 + 1)?;
        let position = usize::try_from(offset).ok()?;
        (position < self.entries.len()).then_some(position)
    }

    /// The entry at `index`, if it is held (not compacted, not past the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        self.position(index).map(|p| &self.entries[p])
    }

    /// The term of the entry at `index`: known for held entries and for the snapshot
    /// boundary itself (index 0 has term 0), unknown inside the compacted prefix and past
    /// the end.
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

    /// Removes every entry at or after `index` (never the snapshot).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        let keep = index.0.saturating_sub(self.last_included.index.0 + 1);
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Discards the entries up to and including `last_included`, which the log holds;
    /// the service has captured them in a snapshot.
    pub(crate) fn compact_to(&mut self, last_included: LogId) {
        debug_assert!(self.matches(last_included));
        while self
            .entries
            .front()
            .is_some_and(|e| e.index <= last_included.index)
        {
            self.entries.pop_front();
        }
        self.last_included = last_included;
    }

    /// Replaces the prefix up to `last_included` with a snapshot received from the
    /// leader. A suffix that follows a matching entry is kept; anything else conflicts
    /// with the snapshot and is dropped (Figure 13, steps 6–7).
    pub(crate) fn install_snapshot(&mut self, last_included: LogId) {
        if self.matches(last_included) {
            self.compact_to(last_included);
        } else {
            self.entries.clear();
            self.last_included = last_included;
        }
    }

    /// The first index of the run of entries with `term` that contains `index`: where a
    /// follower tells the leader to resume when their terms at `index` disagree.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first > self.last_included.index.next() && self.term_at(first.prev()) == Some(term) {
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
        let before_snapshot = RaftLog::recover(LogId::new(Term(1), LogIndex(5)), vec![entry(5, 1)]);
        assert!(before_snapshot.is_err());
    }

    #[test]
    fn truncate_and_compact_keep_indices_consistent() {
        let mut log = log_with((0, 0), &[1, 1, 2, 2, 3]);
        log.truncate_from(LogIndex(4));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), LogIndex(3)));
        log.compact_to(LogId::new(Term(1), LogIndex(2)));
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
