//! The configurations a node knows: the one in force at its snapshot (or at bootstrap),
//! then one per configuration entry in its log, in index order.
//!
//! The latest of them is in effect as soon as it is appended, committed or not, and an
//! entry that is truncated takes its configuration with it (Raft thesis §4.1). The
//! committed one is the latest at or below the commit index.

use raft_traits::{LogIndex, Membership};

/// A node's configurations, oldest first; never empty.
#[derive(Clone, Debug)]
pub(super) struct Configs {
    /// `(index, configuration)`. The first is the base: in force at the snapshot's last
    /// included index, or at index 0 for the bootstrap configuration.
    entries: Vec<(LogIndex, Membership)>,
    /// Changes with every change of `entries`, so that a reader that publishes the
    /// configurations (on every event) can tell that they have not changed without
    /// comparing them.
    generation: u64,
}

/// Identifies what a node's [`membership`](super::AnyNode::membership) and
/// [`committed_membership`](super::AnyNode::committed_membership) return: equal
/// versions, equal configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipVersion {
    /// Of the known configurations, hence of the effective one.
    generation: u64,
    /// The index of the committed configuration.
    committed_at: LogIndex,
}

impl Configs {
    pub(super) fn new(base_index: LogIndex, base: Membership) -> Configs {
        Configs {
            entries: vec![(base_index, base)],
            generation: 0,
        }
    }

    /// The version of the effective configuration and of the one committed at `commit`.
    pub(super) fn version(&self, commit: LogIndex) -> MembershipVersion {
        MembershipVersion {
            generation: self.generation,
            committed_at: self.committed_entry(commit).0,
        }
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// The configuration in effect: the latest known.
    pub(super) fn effective(&self) -> &Membership {
        &self.latest().1
    }

    /// Every configuration known, oldest first.
    pub(super) fn known(&self) -> impl Iterator<Item = &Membership> {
        self.entries.iter().map(|(_, membership)| membership)
    }

    /// The index of the entry that holds the effective configuration.
    pub(super) fn effective_index(&self) -> LogIndex {
        self.latest().0
    }

    fn latest(&self) -> &(LogIndex, Membership) {
        // Never empty: the base is kept through every truncation and compaction.
        self.entries.last().unwrap_or_else(|| unreachable!())
    }

    /// The latest configuration at or below `commit`.
    pub(super) fn committed(&self, commit: LogIndex) -> &Membership {
        &self.committed_entry(commit).1
    }

    fn committed_entry(&self, commit: LogIndex) -> &(LogIndex, Membership) {
        self.entries
            .iter()
            .rev()
            .find(|(index, _)| *index <= commit)
            .unwrap_or(&self.entries[0])
    }

    /// A configuration entry was appended at `index`.
    pub(super) fn appended(&mut self, index: LogIndex, membership: Membership) {
        self.entries.push((index, membership));
        self.changed();
    }

    /// Entries from `index` on were removed. Returns whether the effective
    /// configuration changed.
    pub(super) fn truncated_from(&mut self, index: LogIndex) -> bool {
        let before = self.entries.len();
        while self.entries.len() > 1 && self.latest().0 >= index {
            self.entries.pop();
        }
        self.changed();
        self.entries.len() != before
    }

    /// The configuration in force at `index`: that of the last configuration entry at
    /// or before it (the base, if none).
    pub(super) fn config_at(&self, index: LogIndex) -> &Membership {
        &self
            .entries
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .unwrap_or(&self.entries[0])
            .1
    }

    /// The log up to `index` was compacted into a snapshot: the configuration in force
    /// there becomes the base. Returns it, for the snapshot's metadata.
    pub(super) fn compacted_to(&mut self, index: LogIndex) -> Membership {
        let keep_from = self
            .entries
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        self.entries.drain(..keep_from);
        self.changed();
        self.entries[0].1.clone()
    }

    /// A snapshot from the leader replaced the log up to `index`, with `membership` in
    /// force there; configurations of entries after it survive only if the log kept
    /// those entries (`kept_suffix`).
    pub(super) fn installed(&mut self, index: LogIndex, membership: Membership, kept_suffix: bool) {
        let suffix: Vec<(LogIndex, Membership)> = if kept_suffix {
            self.entries
                .iter()
                .filter(|(at, _)| *at > index)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.entries = std::iter::once((index, membership)).chain(suffix).collect();
        self.changed();
    }
}

#[cfg(test)]
mod tests {
    use raft_traits::NodeId;

    use super::*;

    fn voters(ids: &[u64]) -> Membership {
        Membership::from_voters(ids.iter().map(|&i| NodeId(i)))
    }

    #[test]
    fn a_configuration_takes_effect_when_appended_and_reverts_when_truncated() {
        let mut configs = Configs::new(LogIndex(0), voters(&[1, 2, 3]));
        configs.appended(LogIndex(5), voters(&[1, 2, 3, 4]));
        assert_eq!(
            configs.effective(),
            &voters(&[1, 2, 3, 4]),
            "in effect uncommitted"
        );
        assert_eq!(configs.committed(LogIndex(4)), &voters(&[1, 2, 3]));
        assert_eq!(configs.committed(LogIndex(5)), &voters(&[1, 2, 3, 4]));
        assert!(
            !configs.truncated_from(LogIndex(6)),
            "a later truncation keeps it"
        );
        assert!(configs.truncated_from(LogIndex(5)));
        assert_eq!(configs.effective(), &voters(&[1, 2, 3]), "reverted");
        let version = configs.version(LogIndex(5));
        configs.appended(LogIndex(5), voters(&[1, 2, 3, 5]));
        assert_ne!(configs.version(LogIndex(5)), version, "another entry at 5");
        assert_ne!(
            configs.version(LogIndex(5)),
            configs.version(LogIndex(4)),
            "committed or not"
        );
        assert!(configs.truncated_from(LogIndex(5)));
        assert!(
            !configs.truncated_from(LogIndex(0)),
            "the base is never removed"
        );
    }

    #[test]
    fn compaction_makes_the_configuration_in_force_the_base() {
        let mut configs = Configs::new(LogIndex(0), voters(&[1]));
        configs.appended(LogIndex(3), voters(&[1, 2]));
        configs.appended(LogIndex(8), voters(&[1, 2, 3]));
        assert_eq!(configs.compacted_to(LogIndex(5)), voters(&[1, 2]));
        assert_eq!(configs.effective(), &voters(&[1, 2, 3]));
        assert_eq!(configs.committed(LogIndex(6)), &voters(&[1, 2]));
        configs.installed(LogIndex(9), voters(&[7]), false);
        assert_eq!(configs.effective(), &voters(&[7]));
    }
}
