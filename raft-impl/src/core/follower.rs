//! The follower: accepts entries and snapshots from the leader, votes, and starts an
//! election when the leader goes quiet.

use std::collections::BTreeSet;

use raft_traits::{
    AppendEntries, AppendOutcome, AppendReply, Command, ConflictHint, InstallOutcome,
    InstallSnapshot, InstallSnapshotReply, NodeId, Request, RequestVote, Response,
};

use super::candidate::Candidate;
use super::effects::{Apply, Effects, Persist, RequestId};
use super::node::{Node, Shared};

/// The follower role's own state.
#[derive(Clone, Debug)]
pub struct Follower {
    pub(super) leader: Option<NodeId>,
}

impl Follower {
    /// The leader of the current term, once heard from.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
}

impl<C: Command> Node<Follower, C> {
    /// Starts an election: a new term, a vote for itself, and RequestVote to every peer
    /// (§5.2). The term and vote are persisted before any request leaves.
    pub fn into_candidate(self, out: &mut Effects<C>) -> Node<Candidate, C> {
        campaign(self.shared, out)
    }

    /// Handles AppendEntries from the leader of the current term (Figure 2, receiver
    /// implementation). The caller has already adopted the request's term.
    pub(super) fn handle_append(
        &mut self,
        id: RequestId,
        request: AppendEntries<C>,
        out: &mut Effects<C>,
    ) {
        debug_assert_eq!(request.term, self.shared.term());
        self.role.leader = Some(request.leader);
        self.shared.reset_election_timer(out);
        let outcome = self.shared.accept_entries(request, out);
        let term = self.shared.term();
        out.reply(id, Response::Append(AppendReply { term, outcome }));
    }

    /// Handles InstallSnapshot from the leader of the current term (Figure 13).
    pub(super) fn handle_install_snapshot(
        &mut self,
        id: RequestId,
        request: InstallSnapshot,
        out: &mut Effects<C>,
    ) {
        debug_assert_eq!(request.term, self.shared.term());
        self.role.leader = Some(request.leader);
        self.shared.reset_election_timer(out);
        let outcome = self.shared.install_snapshot(request.snapshot, out);
        let term = self.shared.term();
        out.reply(
            id,
            Response::InstallSnapshot(InstallSnapshotReply { term, outcome }),
        );
    }
}

/// The step into candidacy, shared by a follower whose timer fired and a candidate whose
/// election failed.
pub(super) fn campaign<C: Command>(
    mut shared: Shared<C>,
    out: &mut Effects<C>,
) -> Node<Candidate, C> {
    let term = shared.term().next();
    let id = shared.id;
    shared.set_hard_state(term, Some(id), out);
    shared.reset_election_timer(out);
    let request = RequestVote {
        term,
        candidate: id,
        last_log: shared.log.last_log_id(),
    };
    for peer in shared.peers.clone() {
        shared.send(peer, Request::Vote(request.clone()), out);
    }
    Node {
        shared,
        role: Candidate {
            granted: BTreeSet::from([id]),
            refused: BTreeSet::new(),
        },
    }
}

impl<C: Command> Shared<C> {
    fn accept_entries(&mut self, request: AppendEntries<C>, out: &mut Effects<C>) -> AppendOutcome {
        let AppendEntries {
            term,
            prev_log,
            entries,
            leader_commit,
            ..
        } = request;
        let well_formed = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == prev_log.index.plus(i as u64 + 1) && e.term <= term)
            && entries.windows(2).all(|w| w[0].term <= w[1].term)
            && entries.first().is_none_or(|e| prev_log.term <= e.term);
        if !well_formed {
            tracing::warn!(node = %self.id, "malformed AppendEntries: entries do not follow prev_log");
            return AppendOutcome::Conflict {
                prev_log_index: prev_log.index,
                hint: ConflictHint {
                    conflict_term: None,
                    first_index: self.log.last_index().next(),
                    last_log_index: self.log.last_index(),
                },
            };
        }
        // What the request vouches for: the leader's log up to here matches ours once the
        // entries are in. Never our last index, which may hold stale entries past it.
        let match_index = prev_log.index.plus(entries.len() as u64);

        // Entries inside our snapshot are committed, so they already match the leader's:
        // skip them and check the snapshot boundary instead.
        let last_included = self.log.last_included();
        let (prev, entries) = if prev_log.index < last_included.index {
            let covered = last_included.index.0 - prev_log.index.0;
            let skip = usize::try_from(covered).unwrap_or(usize::MAX);
            (last_included, entries.into_iter().skip(skip).collect())
        } else {
            (prev_log, entries)
        };

        if !self.log.matches(prev) {
            let last_log_index = self.log.last_index();
            let hint = match self.log.term_at(prev.index) {
                None => ConflictHint {
                    conflict_term: None,
                    first_index: last_log_index.next(),
                    last_log_index,
                },
                Some(conflict_term) => ConflictHint {
                    conflict_term: Some(conflict_term),
                    first_index: self.log.first_index_of_term_at(prev.index),
                    last_log_index,
                },
            };
            return AppendOutcome::Conflict {
                prev_log_index: prev_log.index,
                hint,
            };
        }

        // Keep entries we already hold with the same term; only a real conflict (same
        // index, other term) removes an entry and all that follow it. A duplicated or
        // delayed request therefore never undoes what a later one appended.
        let mut fresh = Vec::new();
        for entry in entries {
            if fresh.is_empty() {
                match self.log.term_at(entry.index) {
                    Some(held) if held == entry.term => continue,
                    Some(_) => {
                        self.log.truncate_from(entry.index);
                        out.persist(Persist::TruncateFrom(entry.index));
                    }
                    None => {}
                }
            }
            self.log.push(entry.clone());
            fresh.push(entry);
        }
        if !fresh.is_empty() {
            out.persist(Persist::Entries(fresh));
        }

        self.commit_to(leader_commit.min(match_index), out);
        AppendOutcome::Success { match_index }
    }

    fn install_snapshot(
        &mut self,
        snapshot: raft_traits::Snapshot,
        out: &mut Effects<C>,
    ) -> InstallOutcome {
        let last_included = snapshot.meta.last_included;
        if last_included.index <= self.commit_index {
            // Everything it covers is already committed here, and committed entries match
            // the leader's. Installing it would move the state machine backwards.
            return InstallOutcome::Installed {
                match_index: self.commit_index,
            };
        }
        self.log.install_snapshot(last_included);
        self.snapshot = Some(snapshot.clone());
        out.persist(Persist::Snapshot(snapshot.clone()));
        // Every entry up to the old commit index was already handed to the state machine
        // ahead of this snapshot, so it applies them first and then moves forward to the
        // snapshot; nothing older than the snapshot is applied after it.
        self.commit_index = last_included.index;
        self.last_applied = last_included.index;
        out.apply(Apply::Snapshot(snapshot));
        InstallOutcome::Installed {
            match_index: last_included.index,
        }
    }
}
