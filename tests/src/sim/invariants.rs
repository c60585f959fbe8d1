//! Raft's safety properties, checked against a running simulated cluster.
//!
//! * Election safety: at most one leader per term, ever.
//! * Log matching: two logs holding an entry with the same index and term hold the same
//!   entries up to it.
//! * Leader completeness: a leader's log holds every committed entry.
//! * State machine safety: no two servers apply different commands at one index, and an
//!   index once applied never changes.
//! * Progress bounds: `snapshot <= queued to apply <= committed <= last log index`, and
//!   what the state machine applied never exceeds what was queued for it.
//! * Monotonicity: a server's term never decreases, nor its commit index while it runs.
//! * Commit quorums (Raft thesis ch. 4): when an entry is first seen committed, the
//!   servers whose *storage* holds it form a majority of the configuration that governs
//!   it. A configuration takes effect when appended, so a configuration entry governs
//!   itself: the joint C_old,new needs majorities of both its voter sets, C_new one of
//!   its own. An ordinary entry needs a majority of the configuration in effect at its
//!   index, or of a later one the committing server had appended (a leader counts with
//!   the latest configuration in its log, committed or not).
//! * Committed entries of every kind (commands, blanks, configurations) are never lost
//!   and never change: they join the state machine safety and leader completeness checks
//!   as soon as they are seen committed.

use std::collections::{BTreeMap, BTreeSet};

use raft_impl::Status;
use raft_impl::core::RoleKind;
use raft_mem::{KvCommand, MemStorage};
use raft_traits::{Entry, HardState, LogIndex, Membership, NodeId, Payload, SnapshotMeta, Term};

/// What one server holds on stable storage, read from its storage (not from the server's
/// own reports).
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) id: NodeId,
    /// The log after the snapshot, in index order without gaps.
    pub(crate) entries: Vec<Entry<KvCommand>>,
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// Whether the server's own log went further than its storage when this was read:
    /// its appends run beside its event loop, so a leader may commit (through its
    /// followers) what its own storage does not hold yet, under a configuration it
    /// appended after it.
    pub(crate) appending: bool,
}

impl Durable {
    pub(crate) fn of(id: NodeId, storage: &MemStorage<KvCommand>) -> Durable {
        Durable {
            id,
            entries: storage.log(),
            snapshot: storage.snapshot_meta(),
            appending: false,
        }
    }

    /// The last index stored, in the log or covered by the snapshot.
    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or_else(|| self.covered(), |entry| entry.index)
    }

    /// The last index the snapshot covers.
    fn covered(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map(|meta| meta.last_included.index)
            .unwrap_or_default()
    }

    fn entry(&self, index: LogIndex) -> Option<&Entry<KvCommand>> {
        let first = self.entries.first()?.index;
        let offset = index.0.checked_sub(first.0)?;
        let entry = self.entries.get(usize::try_from(offset).ok()?)?;
        (entry.index == index).then_some(entry)
    }

    /// Whether this storage holds the entry of `term` at `index`, in its log or (once
    /// applied and compacted) in its snapshot.
    fn holds(&self, index: LogIndex, term: Term) -> bool {
        self.covered() >= index || self.entry(index).is_some_and(|e| e.term == term)
    }

    /// The configuration in effect just before `index`: the latest configuration entry
    /// below it, else the snapshot's, else the cluster's bootstrap configuration. (A
    /// server that joined holds an empty configuration where the cluster was still on
    /// its bootstrap one.)
    fn config_before<'a>(&'a self, index: LogIndex, bootstrap: &'a Membership) -> &'a Membership {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.index < index)
            .find_map(|e| match &e.payload {
                Payload::Membership(config) => Some(&**config),
                _ => None,
            })
            .or_else(|| {
                self.snapshot
                    .as_ref()
                    .map(|meta| &meta.membership)
                    .filter(|config| !config.voters.is_empty())
            })
            .unwrap_or(bootstrap)
    }

    /// The configurations this log appended after `index`.
    fn configs_after(&self, index: LogIndex) -> impl Iterator<Item = &Membership> {
        self.entries
            .iter()
            .filter(move |e| e.index > index)
            .filter_map(|e| match &e.payload {
                Payload::Membership(config) => Some(&**config),
                _ => None,
            })
    }
}

/// Whether `holders` include a majority of `config`'s voters and, while it is joint, a
/// majority of its outgoing voters too.
pub(crate) fn is_quorum(config: &Membership, holders: &BTreeSet<NodeId>) -> bool {
    let majority =
        |voters: &BTreeSet<NodeId>| 2 * voters.intersection(holders).count() > voters.len();
    majority(&config.voters) && config.outgoing.as_ref().is_none_or(majority)
}

/// What one look at a commit checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CommitChecks {
    /// Configuration entries whose quorum was checked.
    pub(crate) configurations: u64,
    /// Of those, joint ones.
    pub(crate) joint: u64,
    /// Other entries whose quorum was checked.
    pub(crate) entries: u64,
}

fn describe(config: &Membership) -> String {
    match &config.outgoing {
        Some(outgoing) => format!(
            "the joint configuration (new voters {:?}, old voters {outgoing:?})",
            config.voters
        ),
        None => format!("the configuration of voters {:?}", config.voters),
    }
}

/// What has been observed so far, to check what is observed next against.
#[derive(Debug)]
struct Applied {
    term: Term,
    payload: Payload<KvCommand>,
    committed_by: Term,
}

#[derive(Debug)]
pub(crate) struct Observations {
    /// The leader seen in each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Every applied index, with the term and payload of its entry, and the highest term
    /// any server had reached when it was first seen applied: the entry was committed in
    /// that term or earlier, so every leader of a later term must hold it.
    applied: BTreeMap<LogIndex, Applied>,
    /// The highest term seen per server.
    terms: BTreeMap<NodeId, Term>,
    /// The highest commit index seen per running incarnation of a server.
    commits: BTreeMap<(NodeId, u64), LogIndex>,
    /// Who each server voted for, per term, as its replies announced.
    votes: BTreeMap<(Term, NodeId), NodeId>,
    /// The commit index each leader advertised first in its term: what it inherited.
    inherited_commit: BTreeMap<Term, LogIndex>,
    /// The configuration the cluster was bootstrapped with.
    bootstrap: Membership,
    /// Every index up to this one has been seen committed (and checked, if its entry
    /// could be read).
    committed_upto: LogIndex,
    /// The configuration entries seen committed, by index.
    committed_configs: BTreeMap<LogIndex, Membership>,
    /// Indices seen committed whose entry could no longer be read: the server that showed
    /// the commit had compacted it into its snapshot.
    unread: BTreeSet<LogIndex>,
}

impl Observations {
    pub(crate) fn new(bootstrap: Membership) -> Observations {
        Observations {
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            terms: BTreeMap::new(),
            commits: BTreeMap::new(),
            votes: BTreeMap::new(),
            inherited_commit: BTreeMap::new(),
            bootstrap,
            committed_upto: LogIndex::ZERO,
            committed_configs: BTreeMap::new(),
            unread: BTreeSet::new(),
        }
    }

    /// Every index up to this one has been seen committed.
    pub(crate) fn committed_upto(&self) -> LogIndex {
        self.committed_upto
    }

    /// Records that server `seen_at` knows everything up to `commit` committed (it
    /// advertised or applied it). Each index seen committed for the first time is read
    /// from `seen_at`'s storage and checked against the storages of all servers
    /// (`durable`): the servers holding it must form a quorum of the configuration that
    /// governs it (see the [module](self) notes). The entry then counts as committed for
    /// state machine safety and leader completeness. `max_term` is the highest term any
    /// server has published: the entry was committed in it or earlier.
    pub(crate) fn record_commit(
        &mut self,
        seen_at: NodeId,
        commit: LogIndex,
        durable: &[Durable],
        max_term: Term,
    ) -> Result<CommitChecks, String> {
        let mut checks = CommitChecks::default();
        if commit <= self.committed_upto {
            return Ok(checks);
        }
        let Some(reference) = durable.iter().find(|d| d.id == seen_at) else {
            return Ok(checks);
        };
        while self.committed_upto < commit {
            let index = self.committed_upto.next();
            let Some(entry) = reference.entry(index) else {
                if reference.covered() >= index {
                    self.unread.insert(index);
                    self.committed_upto = index;
                    continue;
                }
                // Not (yet) on `seen_at`'s storage: a later sighting reads it.
                break;
            };
            let holders: BTreeSet<NodeId> = durable
                .iter()
                .filter(|d| d.holds(index, entry.term))
                .map(|d| d.id)
                .collect();
            if let Payload::Membership(config) = &entry.payload {
                if !is_quorum(config, &holders) {
                    if reference.appending {
                        // A configuration the server appended after this one may be
                        // the one it committed under: decided once it is stored.
                        break;
                    }
                    return Err(format!(
                        "configuration quorum: {} at {index} (term {}) was committed (seen at {seen_at}) while only {holders:?} held it durably, not a majority of {}",
                        if config.is_joint() {
                            "the joint entry"
                        } else {
                            "the configuration entry"
                        },
                        entry.term,
                        describe(config)
                    ));
                }
                checks.configurations += 1;
                checks.joint += u64::from(config.is_joint());
                self.committed_configs
                    .insert(index, Membership::clone(config));
            } else {
                let governing = reference.config_before(index, &self.bootstrap);
                if !is_quorum(governing, &holders)
                    && !reference
                        .configs_after(index)
                        .any(|later| is_quorum(later, &holders))
                {
                    if reference.appending {
                        break;
                    }
                    return Err(format!(
                        "commit quorum: the entry at {index} (term {}) was committed (seen at {seen_at}) while only {holders:?} held it durably, not a majority of {} in effect there, nor of a later configuration in {seen_at}'s log",
                        entry.term,
                        describe(governing)
                    ));
                }
                checks.entries += 1;
            }
            self.record_apply(seen_at, entry, max_term)?;
            self.committed_upto = index;
        }
        Ok(checks)
    }

    /// Whether a configuration that `done` accepts was seen committed: the one in effect
    /// at `since` or a later one. `None` if none was, but an index where one may have been
    /// could not be read.
    pub(crate) fn committed_config_since(
        &self,
        since: LogIndex,
        done: impl Fn(&Membership) -> bool,
    ) -> Option<bool> {
        let (base_index, base) = self
            .committed_configs
            .range(..=since)
            .next_back()
            .map_or((LogIndex::ZERO, &self.bootstrap), |(&index, config)| {
                (index, config)
            });
        if done(base)
            || self
                .committed_configs
                .range(since.next()..)
                .any(|(_, config)| done(config))
        {
            return Some(true);
        }
        if self.unread.range(base_index.next()..).next().is_some() {
            return None;
        }
        Some(false)
    }

    /// Records that `server` acted as leader of `term` (it sent AppendEntries or
    /// InstallSnapshot in that term): election safety, checked on every such message.
    pub(crate) fn claim_leadership(&mut self, server: NodeId, term: Term) -> Result<(), String> {
        match self.leaders.get(&term) {
            Some(&other) if other != server => Err(format!(
                "election safety: {other} and {server} both acted as leader of term {term}"
            )),
            _ => {
                self.leaders.insert(term, server);
                Ok(())
            }
        }
    }

    /// Records a granted vote, as the candidate received it. A server votes for at most
    /// one candidate per term (§5.2), and its vote is on stable storage before the reply
    /// leaves (Figure 2): `stored` is the voter's hard state now.
    pub(crate) fn record_vote(
        &mut self,
        voter: NodeId,
        candidate: NodeId,
        term: Term,
        stored: HardState,
    ) -> Result<(), String> {
        if let Some(&earlier) = self.votes.get(&(term, voter))
            && earlier != candidate
        {
            return Err(format!(
                "vote safety: {voter} granted its vote in term {term} to {earlier} and then to {candidate}"
            ));
        }
        self.votes.insert((term, voter), candidate);
        let durable =
            stored.term > term || (stored.term == term && stored.voted_for == Some(candidate));
        if !durable {
            return Err(format!(
                "persistence: {voter} granted its vote to {candidate} in term {term} but has stored {stored:?}"
            ));
        }
        Ok(())
    }

    /// Checks the commit index a leader advertises (Figure 8): beyond what it inherited
    /// when elected, a leader only ever commits up to an entry of its own term.
    pub(crate) fn check_leader_commit(
        &mut self,
        leader: NodeId,
        term: Term,
        leader_commit: LogIndex,
        storage: &MemStorage<KvCommand>,
    ) -> Result<(), String> {
        let inherited = *self.inherited_commit.entry(term).or_insert(leader_commit);
        if leader_commit <= inherited {
            return Ok(());
        }
        let committed_term = storage
            .log()
            .iter()
            .find(|e| e.index == leader_commit)
            .map(|e| e.term);
        match committed_term {
            Some(entry_term) if entry_term != term => Err(format!(
                "commit rule: {leader}, leader of term {term}, committed up to {leader_commit}, an entry of term {entry_term} (Figure 8)"
            )),
            _ => Ok(()),
        }
    }

    /// The number of terms in which a leader was seen.
    pub(crate) fn terms_with_leaders(&self) -> usize {
        self.leaders.len()
    }

    /// The number of distinct indices applied anywhere.
    pub(crate) fn applied_indices(&self) -> usize {
        self.applied.len()
    }

    /// Records that some server applied `entry` (state machine safety), when the highest
    /// term any server has published is `max_term`.
    pub(crate) fn record_apply(
        &mut self,
        server: NodeId,
        entry: &Entry<KvCommand>,
        max_term: Term,
    ) -> Result<(), String> {
        match self.applied.get(&entry.index) {
            Some(seen) if seen.term != entry.term || seen.payload != entry.payload => Err(format!(
                "state machine safety: {server} applied {:?} at {} in term {}, but {:?} of term {} was applied there before",
                entry.payload, entry.index, entry.term, seen.payload, seen.term
            )),
            Some(_) => Ok(()),
            None => {
                let applied = Applied {
                    term: entry.term,
                    payload: entry.payload.clone(),
                    committed_by: max_term.max(entry.term),
                };
                self.applied.insert(entry.index, applied);
                Ok(())
            }
        }
    }

    /// Checks one running server's status; `incarnation` tells restarts apart.
    pub(crate) fn check_status(
        &mut self,
        status: &Status,
        incarnation: u64,
        storage: &MemStorage<KvCommand>,
    ) -> Result<(), String> {
        let id = status.id;
        let bounds = [
            ("snapshot", status.snapshot.index),
            ("queued", status.last_queued),
            ("committed", status.commit_index),
            ("last log", status.last_log.index),
        ];
        for pair in bounds.windows(2) {
            let ((low_name, low), (high_name, high)) = (pair[0], pair[1]);
            if low > high {
                return Err(format!(
                    "{id}: {low_name} index {low} > {high_name} index {high}: {status:?}"
                ));
            }
        }
        if status.last_applied > status.last_queued {
            return Err(format!(
                "{id}: applied {} more than was queued: {status:?}",
                status.last_applied
            ));
        }
        let term = self.terms.entry(id).or_default();
        if status.term < *term {
            return Err(format!(
                "{id}: term went back from {term} to {}",
                status.term
            ));
        }
        *term = status.term;
        let commit = self.commits.entry((id, incarnation)).or_default();
        if status.commit_index < *commit {
            return Err(format!(
                "{id}: commit index went back from {commit} to {}",
                status.commit_index
            ));
        }
        *commit = status.commit_index;

        if status.role == RoleKind::Leader {
            match self.leaders.get(&status.term) {
                Some(&other) if other != id => {
                    return Err(format!(
                        "election safety: {other} and {id} were both leaders in term {}",
                        status.term
                    ));
                }
                _ => {
                    self.leaders.insert(status.term, id);
                }
            }
            self.check_leader_completeness(id, status.term, storage)?;
        }
        Ok(())
    }

    /// Every entry applied anywhere was committed by some term; a leader of a later term
    /// must hold it (§5.4). (A leader of an earlier term, cut off, may legitimately not.)
    fn check_leader_completeness(
        &self,
        leader: NodeId,
        term: Term,
        storage: &MemStorage<KvCommand>,
    ) -> Result<(), String> {
        let covered = storage
            .snapshot_meta()
            .map(|m| m.last_included.index)
            .unwrap_or_default();
        let log: BTreeMap<LogIndex, Term> =
            storage.log().iter().map(|e| (e.index, e.term)).collect();
        for (&index, applied) in self.applied.range(covered.next()..) {
            if applied.committed_by < term && log.get(&index) != Some(&applied.term) {
                return Err(format!(
                    "leader completeness: {leader}, leader in {term}, lacks entry {index} of term {} committed by term {} at the latest (holds {:?})",
                    applied.term,
                    applied.committed_by,
                    log.get(&index)
                ));
            }
        }
        Ok(())
    }
}

/// Log matching over every pair of stored logs (running or crashed servers).
pub(crate) fn check_log_matching(logs: &[(NodeId, Vec<Entry<KvCommand>>)]) -> Result<(), String> {
    for (a, (id_a, log_a)) in logs.iter().enumerate() {
        for (id_b, log_b) in &logs[a + 1..] {
            let b_by_index: BTreeMap<LogIndex, &Entry<KvCommand>> =
                log_b.iter().map(|e| (e.index, e)).collect();
            // Walk down from the newest index both hold; once the terms agree, every
            // index below that both hold must hold the same entry.
            let mut matched = false;
            for entry in log_a.iter().rev() {
                let Some(other) = b_by_index.get(&entry.index) else {
                    continue;
                };
                if matched && entry != *other {
                    return Err(format!(
                        "log matching: {id_a} and {id_b} agree on a later entry but differ at {}: {entry:?} vs {other:?}",
                        entry.index
                    ));
                }
                if entry.term == other.term {
                    matched = true;
                    if entry != *other {
                        return Err(format!(
                            "log matching: {id_a} and {id_b} hold different entries with the same index and term: {entry:?} vs {other:?}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft_mem::KvCommand;
    use raft_traits::{Entry, LogIndex, Membership, NodeId, Payload, Term};

    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| NodeId(i)).collect()
    }

    fn voters(list: &[u64]) -> Membership {
        Membership::from_voters(list.iter().map(|&i| NodeId(i)))
    }

    fn joint(old: &[u64], new: &[u64]) -> Membership {
        voters(old).joint_to(&voters(new))
    }

    fn command(index: u64) -> Entry<KvCommand> {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: Payload::Command(KvCommand::Get { key: "k".into() }),
        }
    }

    fn config(index: u64, membership: Membership) -> Entry<KvCommand> {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: Payload::Membership(Box::new(membership)),
        }
    }

    /// Server `id` holding `entries` (from index 1, no snapshot).
    fn holding(id: u64, entries: &[Entry<KvCommand>]) -> Durable {
        Durable {
            id: NodeId(id),
            entries: entries.to_vec(),
            snapshot: None,
            appending: false,
        }
    }

    #[test]
    fn a_joint_configuration_needs_a_majority_of_both_voter_sets() {
        let config = joint(&[1, 2, 3], &[3, 4, 5]);
        assert!(is_quorum(&config, &ids(&[1, 2, 3, 4])));
        assert!(
            !is_quorum(&config, &ids(&[3, 4, 5])),
            "all of the new, one of the old"
        );
        assert!(
            !is_quorum(&config, &ids(&[1, 2, 3])),
            "all of the old, one of the new"
        );
        assert!(is_quorum(&voters(&[1, 2, 3, 4]), &ids(&[1, 2, 4])));
        assert!(!is_quorum(&voters(&[1, 2, 3, 4]), &ids(&[1, 2])));
        assert!(!is_quorum(&Membership::default(), &ids(&[1])));
    }

    #[test]
    fn a_configuration_entry_held_by_too_few_storages_is_a_violation() {
        let to_new = joint(&[1, 2, 3], &[1, 4, 5]);
        let log = [command(1), config(2, to_new)];
        // The new voters hold it, but of the old ones only server 1.
        let durable = [
            holding(1, &log),
            holding(2, &log[..1]),
            holding(3, &log[..1]),
            holding(4, &log),
            holding(5, &log),
        ];
        let mut seen = Observations::new(voters(&[1, 2, 3]));
        let violation = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect_err("the joint entry lacks a majority of the old voters");
        assert!(
            violation.starts_with("configuration quorum: the joint entry at i2"),
            "{violation}"
        );
        assert_eq!(seen.committed_upto(), LogIndex(1), "entry 1 was fine");

        // With server 2 holding it too, both majorities do.
        let durable = [
            holding(1, &log),
            holding(2, &log),
            holding(3, &log[..1]),
            holding(4, &log),
            holding(5, &log),
        ];
        let checks = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect("both majorities hold it");
        assert_eq!((checks.configurations, checks.joint), (1, 1));
        assert_eq!(
            seen.committed_config_since(LogIndex(1), |c| c.is_joint()),
            Some(true)
        );
        assert_eq!(
            seen.committed_config_since(LogIndex(1), |c| c.voters == ids(&[1, 4, 5])
                && !c.is_joint()),
            Some(false),
            "the final configuration was never seen committed"
        );
    }

    #[test]
    fn an_entry_counts_under_its_configuration_or_a_later_one_its_leader_appended() {
        // {1, 2, 3, 4} removes 4: entry 2, before the change, commits once a majority of
        // {1, 2, 3} holds it, which is no majority of {1, 2, 3, 4}.
        let log = [command(1), command(2), config(3, voters(&[1, 2, 3]))];
        let durable = [
            holding(1, &log),
            holding(2, &log[..2]),
            holding(3, &log[..1]),
            holding(4, &log[..1]),
        ];
        let mut seen = Observations::new(voters(&[1, 2, 3, 4]));
        seen.record_commit(NodeId(1), LogIndex(1), &durable, Term(1))
            .expect("entry 1 is everywhere");
        let checks = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect("a majority of the leader's latest configuration");
        assert_eq!(checks.entries, 1);

        // Without that later configuration, two of four is no quorum.
        let log = [command(1), command(2)];
        let durable = [
            holding(1, &log),
            holding(2, &log),
            holding(3, &log[..1]),
            holding(4, &log[..1]),
        ];
        let mut seen = Observations::new(voters(&[1, 2, 3, 4]));
        let violation = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect_err("two of four");
        assert!(
            violation.starts_with("commit quorum: the entry at i2"),
            "{violation}"
        );
    }

    #[test]
    fn a_commit_seen_at_a_server_still_appending_waits_for_its_storage() {
        // The leader, 1, committed entry 2 under {1, 2, 3}, appended at 3, which its
        // storage does not hold yet: undecided while it appends (with `appending` off
        // this is a violation), a quorum once stored.
        let log = [command(1), command(2), config(3, voters(&[1, 2, 3]))];
        let mut leader = holding(1, &log[..2]);
        leader.appending = true;
        let mut durable = [
            leader,
            holding(2, &log[..2]),
            holding(3, &log[..1]),
            holding(4, &log[..1]),
        ];
        let mut seen = Observations::new(voters(&[1, 2, 3, 4]));
        let checks = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect("undecided, not a violation");
        assert_eq!((checks.entries, seen.committed_upto()), (1, LogIndex(1)));

        durable[0] = holding(1, &log);
        let checks = seen
            .record_commit(NodeId(1), LogIndex(2), &durable, Term(1))
            .expect("a majority of the configuration now stored");
        assert_eq!((checks.entries, seen.committed_upto()), (1, LogIndex(2)));
        // (Done appending without it, two of four is a violation: the test above.)
    }

    #[test]
    fn a_committed_configuration_entry_that_changes_is_a_violation() {
        let mut seen = Observations::new(voters(&[1, 2, 3]));
        let log = [config(1, voters(&[1, 2, 3, 4]))];
        let durable: Vec<Durable> = (1..=4).map(|id| holding(id, &log)).collect();
        seen.record_commit(NodeId(1), LogIndex(1), &durable, Term(1))
            .expect("held by all");
        let other = Entry {
            term: Term(2),
            ..command(1)
        };
        let violation = seen
            .record_apply(NodeId(2), &other, Term(2))
            .expect_err("index 1 committed something else");
        assert!(violation.starts_with("state machine safety"), "{violation}");
    }
}
