//! `Node<R>`: the state every role shares, the sealed `Role`, and the rules that do not
//! depend on the role (terms, votes, commit and apply, stepping down).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use raft_traits::{
    Command, Entry, HardState, InstallSnapshot, LogId, LogIndex, Membership, NodeId, Payload,
    PendingSnapshot, RecoveredState, Request, RequestVote, Response, Snapshot, SnapshotChecksum,
    SnapshotDescriptor, SnapshotMeta, Term, VoteReply,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::candidate::Candidate;
use super::effects::{Apply, Effects, Persist, RequestId, SendTag, Timer};
use super::follower::Follower;
use super::leader::Leader;
use super::log::{LogError, RaftLog};
use super::membership::{Configs, MembershipVersion};
use super::pre_candidate::PreCandidate;
use super::quorum::Quorum;
use crate::config::{Config, ConfigError};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Follower {}
    impl Sealed for super::PreCandidate {}
    impl Sealed for super::Candidate {}
    impl Sealed for super::Leader {}
}

/// A Raft role: [`Follower`], [`PreCandidate`], [`Candidate`] or [`Leader`]. Sealed: no
/// other role exists.
pub trait Role: sealed::Sealed + fmt::Debug + Send + 'static {
    /// The role's name, for status reports.
    const KIND: RoleKind;
}

impl Role for Follower {
    const KIND: RoleKind = RoleKind::Follower;
}
impl Role for PreCandidate {
    const KIND: RoleKind = RoleKind::PreCandidate;
}
impl Role for Candidate {
    const KIND: RoleKind = RoleKind::Candidate;
}
impl Role for Leader {
    const KIND: RoleKind = RoleKind::Leader;
}

/// The name of a role, as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    /// Follows a leader and votes.
    Follower,
    /// Asks whether it would get votes, without raising its term (pre-vote).
    PreCandidate,
    /// Asks for votes.
    Candidate,
    /// Accepts commands and replicates them.
    Leader,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RoleKind::Follower => "follower",
            RoleKind::PreCandidate => "pre-candidate",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        };
        f.write_str(name)
    }
}

/// A Raft server in role `R`, replicating commands of type `C`.
///
/// The node is a pure state machine: it never awaits, never reads a clock and draws
/// randomness only from its own seeded generator. Every method that changes it writes
/// what must happen next (persist, send, apply, timers) into an [`Effects`] batch.
///
/// Operations that belong to one role exist only on `Node` of that role, and transitions
/// consume the node, so a stale handle to the old role cannot be used:
///
/// ```
/// use raft_impl::Config;
/// use raft_impl::core::{Effects, Follower, Node};
/// use raft_traits::{Membership, NodeId, RecoveredState};
///
/// let mut out = Effects::new();
/// let follower: Node<Follower, String> = Node::boot(
///     NodeId(1),
///     Membership::from_voters([NodeId(1)]),
///     Config::default(),
///     7,
///     RecoveredState::default(),
///     None,
///     &mut out,
/// )
/// .unwrap();
/// let candidate = follower.into_candidate(&mut out);
/// let mut leader = candidate.into_leader(&mut out).expect("a single node is a majority");
/// let id = leader.propose("hello".to_string(), &mut out);
/// assert_eq!(id.index.0, 2, "index 1 holds the new leader's blank entry");
/// ```
#[derive(Debug)]
pub struct Node<R: Role, C> {
    pub(super) shared: Box<Shared<C>>,
    pub(super) role: R,
}

/// The state every role has.
#[derive(Debug)]
pub(super) struct Shared<C> {
    pub(super) id: NodeId,
    /// Every other member of the effective configuration, voter or learner, sorted:
    /// whom a leader replicates to.
    pub(super) peers: Vec<NodeId>,
    /// The voters of the effective configuration, whose majorities decide elections and
    /// commits.
    pub(super) quorum: Quorum,
    /// The configurations this node knows, from its snapshot's on.
    pub(super) configs: Configs,
    pub(super) config: Config,
    pub(super) rng: Xoshiro256PlusPlus,
    pub(super) hard_state: HardState,
    pub(super) log: RaftLog<C>,
    /// The latest snapshot's descriptor (its data stays in storage), to send it to
    /// followers that need it.
    pub(super) snapshot: Option<SnapshotDescriptor>,
    /// The snapshot being received from a leader, piece by piece.
    pub(super) receiving: Option<Receiving>,
    pub(super) commit_index: LogIndex,
    /// The last index handed to the state machine (as an [`Apply`] effect).
    pub(super) last_applied: LogIndex,
    pub(super) next_seq: u64,
    /// Requests and replies refused or ignored because no correct member could have
    /// sent them (an unknown sender, a term or index out of range).
    pub(super) refused_messages: u64,
    /// Running totals, for metrics.
    pub(super) counters: Counters,
    /// The time as the driver last told it (monotonic, from an arbitrary origin). The
    /// core never reads a clock: time is an input like any message.
    pub(super) now: Duration,
    /// The first time the driver reported: when this node started, on its clock.
    pub(super) started_at: Option<Duration>,
    /// When requests were sent: `(first sequence number sent at that time, time)`,
    /// oldest first, kept for two election timeouts (lease reads need no more).
    pub(super) send_times: VecDeque<(u64, Duration)>,
}

/// A snapshot a follower is receiving in pieces: what storage holds of it.
#[derive(Clone, Debug)]
pub(super) struct Receiving {
    /// The snapshot.
    pub(super) descriptor: SnapshotDescriptor,
    /// How many bytes of its data are durably written.
    pub(super) received: u64,
    /// The checksum of those bytes.
    pub(super) checksum: SnapshotChecksum,
    /// Pieces that arrived ahead of `received` (overtaken on the way), by offset, kept
    /// until the pieces before them arrive: at most `snapshot_chunks_in_flight` of them,
    /// so at most a window of data.
    pub(super) early: std::collections::BTreeMap<u64, bytes::Bytes>,
}

/// Why a node could not boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The configuration or membership is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The recovered log is malformed.
    #[error("recovered log is malformed: {0}")]
    Log(#[from] LogError),
    /// The stored term is beyond [`Term::MAX_ACCEPTED`]: the node could not advance it.
    #[error("stored term {0} is beyond the highest accepted term")]
    TermOutOfRange(Term),
    /// The stored log runs beyond [`LogIndex::MAX_ACCEPTED`].
    #[error("stored log index {0} is beyond the highest accepted index")]
    IndexOutOfRange(LogIndex),
    /// The recovered snapshot data does not match the recovered snapshot metadata.
    #[error("stored snapshot covers {data} but the log's metadata says {meta}")]
    SnapshotMismatch {
        /// What the log's metadata says.
        meta: LogId,
        /// What the stored snapshot covers.
        data: LogId,
    },
    /// Storage already holds this cluster's configuration, and the bootstrap membership
    /// given at start matches none it knows: it names another cluster, or the cluster
    /// has changed since. Restart with an empty membership to use the stored one.
    #[error(
        "storage holds the configuration {stored:?}, which the bootstrap membership {given:?} contradicts; restart with an empty membership to use the stored one"
    )]
    MembershipConflict {
        /// The configuration storage holds (the latest one).
        stored: Box<Membership>,
        /// The bootstrap membership given at start.
        given: Box<Membership>,
    },
}

impl<C: Command> Node<Follower, C> {
    /// Boots a server as a follower from what storage recovered.
    ///
    /// `membership` is the configuration the cluster starts from: used only while storage
    /// holds none (the cluster's first start); later starts take it from the log or the
    /// snapshot. An empty membership starts a node that waits to be added to a running
    /// cluster: it never campaigns, and follows the first leader that contacts it. `snapshot` is the
    /// stored snapshot, if `recovered` says there is one; it is handed to the state
    /// machine once, as the first [`Apply`] effect, and the next entry applied will be the
    /// one right after it.
    pub fn boot(
        id: NodeId,
        membership: Membership,
        config: Config,
        seed: u64,
        recovered: RecoveredState<C>,
        snapshot: Option<SnapshotDescriptor>,
        out: &mut Effects<C>,
    ) -> Result<Self, BootError> {
        config.validate()?;
        if !recovered.hard_state.term.is_acceptable() {
            return Err(BootError::TermOutOfRange(recovered.hard_state.term));
        }
        let last_included = recovered
            .snapshot
            .as_ref()
            .map(|m| m.last_included)
            .unwrap_or_default();
        let data_covers = snapshot
            .as_ref()
            .map(|s| s.meta.last_included)
            .unwrap_or_default();
        if data_covers != last_included {
            return Err(BootError::SnapshotMismatch {
                meta: last_included,
                data: data_covers,
            });
        }
        // The configuration: the latest in the log, else the snapshot's, else the one
        // this cluster is bootstrapped with. Storage wins over the argument once it
        // holds one: the driver stores the bootstrap configuration on the first start
        // (as an empty snapshot at index 0), so only that start uses the argument.
        let stored_base = recovered
            .snapshot
            .as_ref()
            .map(|m| m.membership.clone())
            .filter(|m| m.validate().is_ok());
        let base_stored = stored_base.is_some();
        let mut configs = match stored_base {
            Some(base) => Configs::new(last_included.index, base),
            None => Configs::new(LogIndex::ZERO, membership.clone()),
        };
        // Entries of the trailing window are covered by the snapshot, whose
        // configuration already accounts for them.
        for entry in recovered
            .entries
            .iter()
            .filter(|e| e.index > last_included.index)
        {
            if let Payload::Membership(m) = &entry.payload {
                configs.appended(entry.index, Membership::clone(m));
            }
        }
        let stored_config =
            configs.effective_index() > LogIndex::ZERO || recovered.snapshot.is_some();
        // A bootstrap argument on a later start must be one storage has recorded: the
        // first (kept as the snapshot at index 0 until compaction) or one in the log.
        // Anything else is an operator mistake (another cluster's list, or the original
        // list after the cluster changed), which must not be silently ignored. (A store
        // whose base came from the argument predates the durable bootstrap and cannot
        // tell.)
        if base_stored
            && !membership.nodes.is_empty()
            && !configs.known().any(|m| m.same_roles(&membership))
        {
            return Err(BootError::MembershipConflict {
                stored: Box::new(configs.effective().clone()),
                given: Box::new(membership),
            });
        }
        if !stored_config && !membership.nodes.is_empty() && !membership.contains(id) {
            return Err(ConfigError::NotAMember(id).into());
        }
        if !stored_config && !membership.nodes.is_empty() {
            membership.validate().map_err(ConfigError::Membership)?;
        }
        let log = RaftLog::recover(last_included, recovered.entries)?;
        let last = log.last_log_id();
        if !last.term.is_acceptable() {
            return Err(BootError::TermOutOfRange(last.term));
        }
        if last.index > LogIndex::MAX_ACCEPTED {
            return Err(BootError::IndexOutOfRange(last.index));
        }

        // Mix the id in so that nodes sharing a configured seed still draw different
        // timeouts.
        let seed = seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut shared = Shared {
            id,
            peers: Vec::new(),
            quorum: Quorum::new([]),
            configs,
            config,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            hard_state: recovered.hard_state,
            log,
            snapshot: snapshot.filter(|s| s.meta.last_included.index > LogIndex::ZERO),
            receiving: None,
            // Everything in the snapshot is committed and will be applied by restoring it.
            commit_index: last_included.index,
            last_applied: last_included.index,
            next_seq: 0,
            refused_messages: 0,
            counters: Counters::default(),
            now: Duration::ZERO,
            started_at: None,
            send_times: VecDeque::new(),
        };
        shared.refresh_membership();
        if let Some(snapshot) = &shared.snapshot {
            out.apply(Apply::Snapshot(Box::new(snapshot.clone())));
        }
        shared.reset_election_timer(out);
        Ok(Node {
            shared: Box::new(shared),
            role: Follower::new(None),
        })
    }
}

impl<C: Command> Node<Follower, C> {
    /// Takes up a snapshot storage was receiving when the server stopped
    /// ([`Storage::pending_snapshot`](raft_traits::Storage::pending_snapshot)), so that
    /// the transfer resumes from the bytes already written. One that no longer matters
    /// (everything it covers is committed here) is discarded.
    pub fn resume_receiving(&mut self, pending: PendingSnapshot, out: &mut Effects<C>) {
        let covers = pending.descriptor.meta.last_included;
        if covers.index <= self.shared.commit_index || pending.written > pending.descriptor.size {
            out.persist(Persist::AbortSnapshot);
            return;
        }
        tracing::info!(node = %self.shared.id, %covers, received = pending.written, "resuming a snapshot transfer");
        self.shared.receiving = Some(Receiving {
            descriptor: pending.descriptor,
            received: pending.written,
            checksum: SnapshotChecksum::resume(pending.checksum),
            early: std::collections::BTreeMap::new(),
        });
    }
}

/// Read access shared by every role.
impl<R: Role, C: Command> Node<R, C> {
    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The other members of the cluster.
    pub fn peers(&self) -> &[NodeId] {
        &self.shared.peers
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.shared.hard_state.term
    }

    /// The time the driver last reported.
    pub fn now(&self) -> Duration {
        self.shared.now
    }

    /// Tells the node what time it is (monotonic; an earlier time is ignored).
    pub fn advance_clock(&mut self, now: Duration) {
        self.shared.now = self.shared.now.max(now);
        self.shared.started_at.get_or_insert(now);
    }

    /// The configuration in effect (the latest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.shared.configs.effective()
    }

    /// The latest committed configuration.
    pub fn committed_membership(&self) -> &Membership {
        self.shared.configs.committed(self.shared.commit_index)
    }

    /// Tells cheaply whether [`membership`](Self::membership) or
    /// [`committed_membership`](Self::committed_membership) may have changed.
    pub fn membership_version(&self) -> MembershipVersion {
        self.shared.configs.version(self.shared.commit_index)
    }

    /// Whether this node votes: it is in the quorum of its configuration.
    pub fn is_voter(&self) -> bool {
        self.shared.quorum.contains(self.shared.id)
    }

    /// The current term and vote, as persisted.
    pub fn hard_state(&self) -> HardState {
        self.shared.hard_state
    }

    /// The highest index known to be committed.
    pub fn commit_index(&self) -> LogIndex {
        self.shared.commit_index
    }

    /// The highest index handed to the state machine.
    pub fn last_applied(&self) -> LogIndex {
        self.shared.last_applied
    }

    /// The log.
    pub fn log(&self) -> &RaftLog<C> {
        &self.shared.log
    }

    /// How many requests and replies this node refused or ignored because no correct
    /// member could have sent them.
    pub fn refused_messages(&self) -> u64 {
        self.shared.refused_messages
    }

    /// What this node has done since it started.
    pub fn counters(&self) -> Counters {
        self.shared.counters
    }

    /// The role's own state.
    pub fn role(&self) -> &R {
        &self.role
    }

    /// The role's name.
    pub fn role_kind(&self) -> RoleKind {
        R::KIND
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Steps down to follower in `term` (or stays in the current term if `term` is not
    /// newer), remembering `leader` if known.
    ///
    /// Adopting a newer term clears the vote and is persisted. A leader that steps down
    /// stops its heartbeats and starts an election timer; a candidate keeps the timer it
    /// has, and so does a follower: the timer is reset only by the events of Figure 2, so
    /// merely hearing of a newer term does not postpone an election.
    pub fn into_follower(
        mut self,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Effects<C>,
    ) -> Node<Follower, C> {
        if term > self.shared.hard_state.term {
            self.shared.set_hard_state(term, None, out);
        }
        if R::KIND == RoleKind::Leader {
            out.stop_timer(Timer::Heartbeat);
            out.stop_timer(Timer::CommitNotice);
            self.shared.reset_election_timer(out);
        }
        let mut role = Follower::new(leader);
        if leader.is_some() {
            role.leader_seen_at = Some(self.shared.now);
        }
        Node {
            shared: self.shared,
            role,
        }
    }

    /// Answers a PreVote (thesis §9.6) without changing anything: no term, no vote, no
    /// timer. Granted only for a term newer than ours, to a log at least as up to date,
    /// and when `heard_leader_recently` is false (with check-quorum, a node that hears
    /// from a leader keeps it). A grant carries the asked term; a refusal our own, so a
    /// pre-candidate behind us adopts it.
    pub(super) fn pre_vote_reply(
        &self,
        request: &RequestVote,
        heard_leader_recently: bool,
    ) -> VoteReply {
        let shared = &self.shared;
        let granted = request.term > shared.term()
            && request.last_log >= shared.log.last_log_id()
            && !heard_leader_recently;
        VoteReply {
            term: if granted { request.term } else { shared.term() },
            granted,
        }
    }

    /// Answers a RequestVote (§5.2, §5.4.1). The caller has already stepped down if the
    /// candidate's term is newer.
    pub(super) fn handle_vote_request(
        &mut self,
        id: RequestId,
        request: &RequestVote,
        out: &mut Effects<C>,
    ) {
        let shared = &mut self.shared;
        let term = shared.hard_state.term;
        let granted = request.term == term
            && shared
                .hard_state
                .voted_for
                .is_none_or(|v| v == request.candidate)
            && request.last_log >= shared.log.last_log_id();
        if granted {
            shared.set_hard_state(term, Some(request.candidate), out);
        }
        if granted {
            // Only a granted vote resets the timer: a server that keeps postponing its own
            // election for every candidate it turns down can keep the most up-to-date
            // server from ever winning.
            shared.reset_election_timer(out);
        }
        out.reply(id, Response::Vote(VoteReply { term, granted }));
    }

    /// Takes a snapshot the service made of everything up to `index`, and discards the
    /// log it covers (the lab's `Snapshot(index, data)`).
    pub fn snapshot(
        &mut self,
        index: LogIndex,
        data: bytes::Bytes,
        out: &mut Effects<C>,
    ) -> Result<LogId, SnapshotRefused> {
        let meta = self.meta_at(index)?;
        let snapshot = Snapshot { meta, data };
        self.took_snapshot(
            snapshot.descriptor(),
            Persist::Snapshot(Box::new(snapshot)),
            out,
        )
    }

    /// What a snapshot of the state up to `index` covers, for a snapshot this server is
    /// about to take of its own state machine
    /// ([`Storage::create_snapshot`](raft_traits::Storage::create_snapshot)): the entry's
    /// id and the configuration in force there. Refused unless `index` is applied and
    /// newer than the current snapshot, and while a snapshot from the leader is being
    /// received: installing this one would discard what was received, and the leader's
    /// is the newer state.
    pub fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, SnapshotRefused> {
        if let Some(receiving) = &self.shared.receiving {
            return Err(SnapshotRefused::Receiving {
                covers: receiving.descriptor.meta.last_included,
            });
        }
        self.meta_at(index)
    }

    /// The meta of a snapshot at `index`, if `index` is applied and newer than the
    /// current snapshot.
    fn meta_at(&self, index: LogIndex) -> Result<SnapshotMeta, SnapshotRefused> {
        let shared = &self.shared;
        let current = shared.log.last_included();
        if index <= current.index {
            return Err(SnapshotRefused::NotNewer { current });
        }
        let not_applied = SnapshotRefused::NotApplied {
            index,
            last_applied: shared.last_applied,
        };
        if index > shared.last_applied {
            return Err(not_applied);
        }
        let term = shared.log.term_at(index).ok_or(not_applied)?;
        Ok(SnapshotMeta {
            last_included: LogId::new(term, index),
            membership: shared.configs.config_at(index).clone(),
        })
    }

    /// A snapshot this server took of its own state machine is written and staged in
    /// storage ([`Storage::save_staged_snapshot`](raft_traits::Storage::save_staged_snapshot)):
    /// install it and discard the log it covers. Its meta must still be
    /// [`snapshot_meta`](Self::snapshot_meta)'s: a snapshot installed meanwhile makes it
    /// stale.
    pub fn snapshot_staged(
        &mut self,
        descriptor: SnapshotDescriptor,
        out: &mut Effects<C>,
    ) -> Result<LogId, SnapshotRefused> {
        let meta = self.snapshot_meta(descriptor.meta.last_included.index)?;
        if meta != descriptor.meta {
            return Err(SnapshotRefused::Changed {
                staged: descriptor.meta.last_included,
            });
        }
        let persist = Persist::StagedSnapshot(Box::new(descriptor.clone()));
        self.took_snapshot(descriptor, persist, out)
    }

    /// Compacts the log into a snapshot of this server's own state, which `persist`
    /// stores.
    fn took_snapshot(
        &mut self,
        descriptor: SnapshotDescriptor,
        persist: Persist<C>,
        out: &mut Effects<C>,
    ) -> Result<LogId, SnapshotRefused> {
        let shared = &mut self.shared;
        let last_included = descriptor.meta.last_included;
        let membership = shared.configs.compacted_to(last_included.index);
        debug_assert_eq!(membership, descriptor.meta.membership);
        shared.log.compact_to(last_included);
        shared.snapshot = Some(descriptor);
        // Storage discards a snapshot being received when it saves this one.
        shared.receiving = None;
        shared.counters.snapshots_taken = shared.counters.snapshots_taken.saturating_add(1);
        out.persist(persist);
        shared.purge_behind_snapshot(out);
        Ok(last_included)
    }
}

impl<C: Command> Shared<C> {
    /// Discards the entries the snapshot covers, except the last
    /// `snapshot_trailing_entries` of them, which stay so that a follower a little
    /// behind still gets entries instead of the whole snapshot.
    pub(super) fn purge_behind_snapshot(&mut self, out: &mut Effects<C>) {
        let purge_index = self
            .log
            .window_purge_index(self.config.snapshot_trailing_entries);
        if purge_index > LogIndex::ZERO && self.log.purge_to(purge_index) {
            out.persist(Persist::PurgeTo(purge_index));
        }
    }
}

/// Running totals of what a node has done since it started (not persisted), for
/// metrics: [`Status::counters`](crate::Status::counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Elections it started (RequestVote rounds; pre-vote rounds are not counted).
    pub elections_started: u64,
    /// Elections it won.
    pub elections_won: u64,
    /// Commands it appended as leader.
    pub proposals: u64,
    /// Snapshots the service handed it that it kept (compacting its log).
    pub snapshots_taken: u64,
    /// Snapshots from a leader it installed.
    pub snapshots_installed: u64,
    /// Times the leader it knows of changed to another (counted by the driver).
    pub leader_changes: u64,
    /// AppendEntries requests carrying entries that it sent as leader (heartbeats are
    /// not counted).
    pub append_requests: u64,
    /// Entries those requests carried, to all peers together (learners included):
    /// divided by `append_requests`, how well the leader batches.
    pub entries_sent: u64,
}

/// Why the node took no snapshot ([`Node::snapshot`], [`Node::snapshot_meta`],
/// [`Node::snapshot_staged`]). None is fatal: the log is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRefused {
    /// The node already has a snapshot at least this recent.
    #[error("a snapshot covering {current} already exists")]
    NotNewer {
        /// What the existing snapshot covers.
        current: LogId,
    },
    /// The index has not been applied yet, so the service cannot have captured it.
    #[error("index {index} has not been applied (last applied: {last_applied})")]
    NotApplied {
        /// The requested index.
        index: LogIndex,
        /// The last index handed to the state machine.
        last_applied: LogIndex,
    },
    /// A snapshot from the leader is being received; the server takes none of its own
    /// meanwhile.
    #[error("a snapshot covering {covers} is being received from the leader")]
    Receiving {
        /// What the snapshot being received covers.
        covers: LogId,
    },
    /// A staged snapshot no longer describes the state at its index.
    #[error("the staged snapshot at {staged} no longer matches the log")]
    Changed {
        /// What the staged snapshot covers.
        staged: LogId,
    },
}

impl<C: Command> Shared<C> {
    pub(super) fn term(&self) -> Term {
        self.hard_state.term
    }

    /// Appends one entry to the in-memory log; a configuration takes effect at once.
    pub(super) fn append_entry(&mut self, entry: Entry<C>) {
        if let Payload::Membership(membership) = &entry.payload {
            self.configs
                .appended(entry.index, Membership::clone(membership));
            self.log.push(entry);
            self.refresh_membership();
        } else {
            self.log.push(entry);
        }
    }

    /// Removes the entries from `index` on; their configurations are undone.
    pub(super) fn truncate_log_from(&mut self, index: LogIndex) {
        self.log.truncate_from(index);
        if self.configs.truncated_from(index) {
            self.refresh_membership();
        }
    }

    /// Derives the quorum and the replication targets from the effective configuration.
    pub(super) fn refresh_membership(&mut self) {
        let membership = self.configs.effective();
        self.quorum = match &membership.outgoing {
            Some(outgoing) => {
                Quorum::joint(membership.voters.iter().copied(), outgoing.iter().copied())
            }
            None => Quorum::new(membership.voters.iter().copied()),
        };
        let me = self.id;
        self.peers = membership
            .nodes
            .keys()
            .copied()
            .filter(|&id| id != me)
            .collect();
        tracing::debug!(node = %me, voters = ?membership.voters, learners = ?membership.learners, joint = membership.is_joint(), "configuration in effect");
    }

    /// The other voters: whom elections ask.
    pub(super) fn voter_peers(&self) -> Vec<NodeId> {
        let quorum = &self.quorum;
        let me = self.id;
        self.peers
            .iter()
            .copied()
            .filter(|&p| p != me && quorum.contains(p))
            .collect()
    }

    /// Changes term and vote, persisting them if they changed.
    pub(super) fn set_hard_state(
        &mut self,
        term: Term,
        voted_for: Option<NodeId>,
        out: &mut Effects<C>,
    ) {
        let next = HardState { term, voted_for };
        if next != self.hard_state {
            self.hard_state = next;
            out.persist(Persist::HardState(next));
        }
    }

    pub(super) fn reset_election_timer(&mut self, out: &mut Effects<C>) {
        let min = self.config.election_timeout_min;
        let max = self.config.election_timeout_max;
        let spread = u64::try_from((max - min).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let after = min + Duration::from_micros(self.rng.random_range(0..spread));
        out.set_timer(Timer::Election, after);
    }

    pub(super) fn next_tag(&mut self) -> SendTag {
        self.next_seq += 1;
        if self.send_times.back().is_none_or(|&(_, at)| at != self.now) {
            self.send_times.push_back((self.next_seq, self.now));
            let keep = self.config.election_timeout_max * 2;
            while self
                .send_times
                .front()
                .is_some_and(|&(_, at)| at + keep < self.now)
            {
                self.send_times.pop_front();
            }
        }
        SendTag {
            term: self.hard_state.term,
            seq: self.next_seq,
        }
    }

    /// When request `seq` was sent, if that is still remembered.
    pub(super) fn sent_at(&self, seq: u64) -> Option<Duration> {
        let position = self.send_times.partition_point(|&(first, _)| first <= seq);
        let (first, at) = *self.send_times.get(position.checked_sub(1)?)?;
        (first <= seq && seq <= self.next_seq).then_some(at)
    }

    pub(super) fn send(
        &mut self,
        to: NodeId,
        request: Request<C>,
        out: &mut Effects<C>,
    ) -> SendTag {
        let tag = self.next_tag();
        out.send(to, tag, request);
        tag
    }

    /// Sends a piece of the stored snapshot, whose data the driver reads.
    pub(super) fn send_snapshot_piece(
        &mut self,
        to: NodeId,
        request: InstallSnapshot,
        len: u64,
        out: &mut Effects<C>,
    ) -> SendTag {
        let tag = self.next_tag();
        out.send_snapshot(to, tag, request, len);
        tag
    }

    /// Raises the commit index (never lowers it) and hands newly committed entries to the
    /// state machine, in order.
    pub(super) fn commit_to(&mut self, index: LogIndex, out: &mut Effects<C>) {
        if index <= self.commit_index {
            return;
        }
        debug_assert!(index <= self.log.last_index());
        self.commit_index = index.min(self.log.last_index());
        if self.commit_index > self.last_applied {
            let entries = self
                .log
                .entries_between(self.last_applied.next(), self.commit_index);
            self.last_applied = self.commit_index;
            out.apply(Apply::Entries(entries));
        }
    }
}
