//! The follower: accepts entries and snapshots from the leader, votes, and starts an
//! election when the leader goes quiet.

use std::collections::BTreeMap;
use std::time::Duration;

use raft_traits::{
    AppendEntries, AppendOutcome, AppendReply, Command, ConflictHint, InstallOutcome,
    InstallSnapshot, InstallSnapshotReply, LogIndex, NodeId, ReadIndexRefusal, ReadIndexRequest,
    Request, RequestRefused, RequestVote, Response, SnapshotChecksum, SnapshotDescriptor,
};

use super::candidate::Candidate;
use super::effects::{Apply, Effects, Persist, ReadId, ReadRefused, RequestId};
use super::node::{Node, Receiving, Shared};
use super::pre_candidate::PreCandidate;
use super::quorum::Ballot;

/// The follower role's own state.
#[derive(Clone, Debug)]
pub struct Follower {
    pub(super) leader: Option<NodeId>,
    /// When the leader of the current term was last heard from.
    pub(super) leader_seen_at: Option<Duration>,
    /// Reads asked of the leader on behalf of the application: the request's sequence
    /// number, and the read it answers.
    pub(super) reads: BTreeMap<u64, ReadId>,
}

impl Follower {
    pub(super) fn new(leader: Option<NodeId>) -> Follower {
        Follower {
            leader,
            leader_seen_at: None,
            reads: BTreeMap::new(),
        }
    }

    /// The leader of the current term, once heard from.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whether the leader was heard from within `window` of `now` (leader stickiness).
    pub(super) fn heard_leader_within(&self, now: Duration, window: Duration) -> bool {
        self.leader.is_some()
            && self
                .leader_seen_at
                .is_some_and(|seen| now.saturating_sub(seen) < window)
    }
}

impl<C: Command> Node<Follower, C> {
    /// Starts an election: a new term, a vote for itself, and RequestVote to every voter
    /// (§5.2). The term and vote are persisted before any request leaves.
    pub fn into_candidate(self, out: &mut Effects<C>) -> Node<Candidate, C> {
        campaign(self.shared, false, out)
    }

    /// Starts an election at once because the leader hands over (TimeoutNow, §3.10):
    /// the requests say so, and voters grant even though they heard from that leader.
    pub fn into_transfer_candidate(self, out: &mut Effects<C>) -> Node<Candidate, C> {
        campaign(self.shared, true, out)
    }

    /// Asks every voter whether it would vote for this node in the next term (pre-vote,
    /// thesis §9.6), without raising the term.
    pub fn into_pre_candidate(self, out: &mut Effects<C>) -> Node<PreCandidate, C> {
        pre_campaign(self.shared, out)
    }

    /// Asks the leader for a read index on behalf of read `id`; the answer comes back as
    /// [`Effect::Read`](super::Effect::Read).
    pub fn read_index(&mut self, id: ReadId, out: &mut Effects<C>) {
        let Some(leader) = self.role.leader else {
            out.read(id, Err(ReadRefused::NotLeader { leader_hint: None }));
            return;
        };
        let request = ReadIndexRequest {
            term: self.shared.term(),
            from: self.shared.id,
        };
        let tag = self.shared.send(leader, Request::ReadIndex(request), out);
        self.role.reads.insert(tag.seq, id);
    }

    /// The leader answered (or failed to answer) read request `seq`.
    pub(super) fn handle_read_reply(
        &mut self,
        seq: u64,
        index: Option<LogIndex>,
        refusal: Option<ReadIndexRefusal>,
        out: &mut Effects<C>,
    ) {
        if let Some(id) = self.role.reads.remove(&seq) {
            let result = index.ok_or(match refusal {
                // A new leader not yet able to serve reads: the caller retries, as a
                // read on the leader itself would.
                Some(ReadIndexRefusal::NotReady) => ReadRefused::NotReady,
                Some(ReadIndexRefusal::NotLeader) | None => ReadRefused::NotLeader {
                    leader_hint: self.role.leader,
                },
            });
            out.read(id, result);
        }
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
        self.heard_from_leader(request.leader, out);
        let outcome = self.shared.accept_entries(request, out);
        let term = self.shared.term();
        out.reply(id, Response::Append(AppendReply { term, outcome }));
    }

    /// Handles a piece of a snapshot from the leader of the current term (Figure 13).
    ///
    /// The piece is written only if it starts exactly where the data held of the same
    /// snapshot ends; any other piece (a duplicate, one overtaken by a later one, one
    /// after a gap, one of another snapshot not at offset 0) writes nothing and is
    /// answered with the offset held, from which the leader sends on. The last piece
    /// installs the snapshot once the checksum of all its data matches; otherwise the
    /// received data is discarded and the request refused.
    pub(super) fn handle_install_snapshot(
        &mut self,
        id: RequestId,
        request: InstallSnapshot,
        out: &mut Effects<C>,
    ) {
        debug_assert_eq!(request.term, self.shared.term());
        self.heard_from_leader(request.leader, out);
        match self.shared.receive_snapshot_piece(request, out) {
            Ok(outcome) => {
                let term = self.shared.term();
                out.reply(
                    id,
                    Response::InstallSnapshot(InstallSnapshotReply { term, outcome }),
                );
            }
            Err(refused) => out.refuse(id, refused),
        }
    }
}

impl<C: Command> Node<Follower, C> {
    fn heard_from_leader(&mut self, leader: NodeId, out: &mut Effects<C>) {
        self.role.leader = Some(leader);
        self.role.leader_seen_at = Some(self.shared.now);
        self.shared.reset_election_timer(out);
    }
}

/// The step into candidacy, shared by a follower or pre-candidate that may campaign and
/// a candidate whose election failed.
pub(super) fn campaign<C: Command>(
    mut shared: Box<Shared<C>>,
    transfer: bool,
    out: &mut Effects<C>,
) -> Node<Candidate, C> {
    let term = shared.term().next();
    let id = shared.id;
    shared.counters.elections_started = shared.counters.elections_started.saturating_add(1);
    tracing::info!(node = %id, %term, transfer, "starting an election");
    shared.set_hard_state(term, Some(id), out);
    shared.reset_election_timer(out);
    let request = RequestVote {
        term,
        candidate: id,
        last_log: shared.log.last_log_id(),
        transfer,
    };
    for peer in shared.voter_peers() {
        shared.send(peer, Request::Vote(request.clone()), out);
    }
    tracing::debug!(node = %id, %term, "campaigning");
    Node {
        shared,
        role: Candidate {
            ballot: Ballot::opened_by(id),
        },
    }
}

/// The step into pre-candidacy: PreVote to every voter for the next term, which is not
/// adopted. The election timer is restarted so that a round that gets no answer is
/// retried.
pub(super) fn pre_campaign<C: Command>(
    mut shared: Box<Shared<C>>,
    out: &mut Effects<C>,
) -> Node<PreCandidate, C> {
    let id = shared.id;
    shared.reset_election_timer(out);
    let request = RequestVote {
        term: shared.term().next(),
        candidate: id,
        last_log: shared.log.last_log_id(),
        transfer: false,
    };
    for peer in shared.voter_peers() {
        shared.send(peer, Request::PreVote(request.clone()), out);
    }
    Node {
        shared,
        role: PreCandidate {
            ballot: Ballot::opened_by(id),
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
        // The request's own vector, past the entries held already, is what is written.
        let held = entries
            .iter()
            .take_while(|entry| self.log.term_at(entry.index) == Some(entry.term))
            .count();
        let mut fresh = entries;
        fresh.drain(..held);
        if let Some(first) = fresh.first() {
            if self.log.term_at(first.index).is_some() {
                self.truncate_log_from(first.index);
                out.persist(Persist::TruncateFrom(first.index));
            }
            for entry in &fresh {
                self.append_entry(entry.clone());
            }
            out.persist(Persist::Entries(fresh));
        }

        self.commit_to(leader_commit.min(match_index), out);
        AppendOutcome::Success { match_index }
    }

    /// Takes a piece of a snapshot (see [`Node::handle_install_snapshot`]).
    fn receive_snapshot_piece(
        &mut self,
        request: InstallSnapshot,
        out: &mut Effects<C>,
    ) -> Result<InstallOutcome, RequestRefused> {
        let descriptor = request.snapshot;
        if descriptor.meta.last_included.index <= self.commit_index {
            // Everything it covers is already committed here, and committed entries match
            // the leader's. Installing it would move the state machine backwards.
            if self
                .receiving
                .take_if(|r| r.descriptor.meta.last_included.index <= self.commit_index)
                .is_some()
            {
                out.persist(Persist::AbortSnapshot);
            }
            return Ok(InstallOutcome::Installed {
                match_index: self.commit_index,
            });
        }
        let same = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.descriptor == descriptor);
        if !same {
            if request.offset != 0 {
                // A piece of a snapshot this node holds nothing of: start from the top.
                return Ok(InstallOutcome::Received { offset: 0 });
            }
            tracing::info!(node = %self.id, covers = %descriptor.meta.last_included, size = descriptor.size, "receiving a snapshot from the leader");
            out.persist(Persist::BeginSnapshot(Box::new(descriptor.clone())));
            self.receiving = Some(Receiving {
                checksum: SnapshotChecksum::new(descriptor.meta.last_included),
                descriptor: descriptor.clone(),
                received: 0,
                early: BTreeMap::new(),
            });
        }
        let Some(receiving) = self.receiving.as_mut() else {
            return Ok(InstallOutcome::Received { offset: 0 });
        };
        if request.offset != receiving.received {
            // Ahead of what is held (overtaken by a later piece on the way): kept, within
            // the window, for when the pieces before it arrive. Behind (a duplicate, or
            // one resent after a lost reply): nothing to do.
            let room = receiving.early.len() < self.config.snapshot_chunks_in_flight;
            if request.offset > receiving.received && room && !request.data.is_empty() {
                receiving.early.insert(request.offset, request.data);
            }
            return Ok(InstallOutcome::Received {
                offset: receiving.received,
            });
        }
        // The admission check saw that the piece fits the snapshot; the sum cannot
        // overflow. Write it, then the early pieces it makes contiguous.
        let mut next = Some((request.offset, request.data));
        while let Some((offset, data)) = next {
            if !data.is_empty() {
                receiving.checksum.update(&data);
                receiving.received = offset.saturating_add(data.len() as u64);
                out.persist(Persist::SnapshotChunk { offset, data });
            }
            receiving.early.retain(|&at, _| at >= receiving.received);
            next = receiving.early.remove_entry(&receiving.received);
        }
        if receiving.received < descriptor.size {
            return Ok(InstallOutcome::Received {
                offset: receiving.received,
            });
        }
        let computed = receiving.checksum.value();
        if computed != descriptor.checksum {
            tracing::warn!(node = %self.id, covers = %descriptor.meta.last_included, "discarding a received snapshot whose data fails its checksum");
            self.receiving = None;
            out.persist(Persist::AbortSnapshot);
            return Err(RequestRefused::SnapshotChecksum {
                carried: descriptor.checksum,
                computed,
            });
        }
        self.receiving = None;
        out.persist(Persist::FinishSnapshot);
        Ok(self.install_snapshot(descriptor, out))
    }

    /// Installs a snapshot whose data storage now holds (Figure 13, steps 6–8).
    fn install_snapshot(
        &mut self,
        snapshot: SnapshotDescriptor,
        out: &mut Effects<C>,
    ) -> InstallOutcome {
        let last_included = snapshot.meta.last_included;
        let kept_suffix = self.log.matches(last_included);
        self.log.install_snapshot(last_included);
        let membership = if snapshot.meta.membership.validate().is_ok() {
            snapshot.meta.membership.clone()
        } else {
            // A snapshot without a configuration (from a leader that predates them):
            // the one in force stays.
            self.configs.committed(last_included.index).clone()
        };
        self.configs
            .installed(last_included.index, membership, kept_suffix);
        self.refresh_membership();
        self.snapshot = Some(snapshot.clone());
        self.counters.snapshots_installed = self.counters.snapshots_installed.saturating_add(1);
        tracing::info!(node = %self.id, covers = %last_included, "installing a snapshot from the leader");
        self.purge_behind_snapshot(out);
        // Every entry up to the old commit index was already handed to the state machine
        // ahead of this snapshot, so it applies them first and then moves forward to the
        // snapshot; nothing older than the snapshot is applied after it.
        self.commit_index = last_included.index;
        self.last_applied = last_included.index;
        out.apply(Apply::Snapshot(Box::new(snapshot)));
        InstallOutcome::Installed {
            match_index: last_included.index,
        }
    }
}
