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

use std::collections::BTreeMap;

use raft_impl::Status;
use raft_impl::core::RoleKind;
use raft_mem::{KvCommand, MemStorage};
use raft_traits::{Entry, HardState, LogIndex, NodeId, Payload, Term};

/// What has been observed so far, to check what is observed next against.
#[derive(Debug)]
struct Applied {
    term: Term,
    payload: Payload<KvCommand>,
    committed_by: Term,
}

#[derive(Debug, Default)]
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
}

impl Observations {
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
