//! What a running node publishes about itself: the [`Status`] the handle reports, and the
//! shared cell the node's tasks write it into. The driver writes here and the handle
//! reads; neither reaches into the other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use raft_traits::{Command, LogId, LogIndex, Membership, NodeId, Term};

use crate::core::{AnyNode, Counters, MembershipVersion, ReadLease, ReplicationMode, RoleKind};
use crate::driver::ReadQueue;
use crate::latency::LatencyRecorder;

/// A snapshot of a node's state, for monitoring and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: RoleKind,
    /// Its current term.
    pub term: Term,
    /// The candidate it voted for in `term`.
    pub voted_for: Option<NodeId>,
    /// The leader as far as it knows.
    pub leader: Option<NodeId>,
    /// The id of its last log entry.
    pub last_log: LogId,
    /// The last entry its snapshot covers.
    pub snapshot: LogId,
    /// The highest index it knows to be committed.
    pub commit_index: LogIndex,
    /// The highest index handed to its state machine: applied, or queued to be.
    pub last_queued: LogIndex,
    /// The highest index its state machine has applied.
    pub last_applied: LogIndex,
    /// The number of entries in its in-memory log.
    pub log_entries: usize,
    /// The configuration in effect (the latest in its log, committed or not).
    pub membership: Membership,
    /// The latest committed configuration.
    pub committed_membership: Membership,
    /// If it is the leader: what it knows of each follower's log.
    pub followers: BTreeMap<NodeId, FollowerProgress>,
    /// Requests and replies it refused or ignored because no correct member could have
    /// sent them (an unknown sender, a term or index out of range).
    pub refused_messages: u64,
    /// What it has done since it started: elections, proposals, snapshots, leader
    /// changes.
    pub counters: Counters,
    /// Whether it has stopped.
    pub stopped: bool,
    /// Why it stopped, if it stopped on its own after a fatal error.
    pub fatal: Option<String>,
}

/// A leader's view of one follower, as reported in [`Status::followers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// The next index the leader will send.
    pub next_index: LogIndex,
    /// How the leader replicates to it.
    pub mode: ReplicationMode,
    /// AppendEntries with entries awaiting an answer.
    pub inflight: usize,
}

/// Who leads, as one node sees it: what [`LeadershipWatch`] reports on every change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The node's term.
    pub term: Term,
    /// The node's role.
    pub role: RoleKind,
    /// The leader it knows of in `term` (itself when leading).
    pub leader: Option<NodeId>,
}

/// A subscription to a node's changes of role, term and leader, from
/// [`Raft::watch_leadership`](crate::Raft::watch_leadership).
///
/// Changes are delivered in order; a slow reader misses none. It ends (`changed`
/// returns `None`) once the node stops.
#[derive(Debug)]
pub struct LeadershipWatch {
    current: Leadership,
    changes: async_channel::Receiver<Leadership>,
}

impl LeadershipWatch {
    /// The latest state this watch has reported.
    pub fn current(&self) -> Leadership {
        self.current
    }

    /// Waits for the next change; `None` once the node has stopped.
    pub async fn changed(&mut self) -> Option<Leadership> {
        let next = self.changes.recv().await.ok()?;
        self.current = next;
        Some(next)
    }
}

/// A subscription to a node's [`Status`], from
/// [`Raft::watch_status`](crate::Raft::watch_status): for exporting metrics, or anything
/// else that wants the figures as they change rather than by polling.
///
/// Each `changed` returns the latest status once something changed since the previous
/// call; a slow reader skips intermediate states rather than queueing them. It ends
/// (`changed` returns `None`) once the node stops.
pub struct StatusWatch {
    shared: std::sync::Arc<Shared>,
    changes: async_channel::Receiver<()>,
}

impl StatusWatch {
    /// Waits for a change and returns the status as it is then; `None` once the node
    /// has stopped.
    pub async fn changed(&mut self) -> Option<Status> {
        self.changes.recv().await.ok()?;
        // A signal left pending when the node stopped announces nothing.
        if self.shared.is_stopped() {
            return None;
        }
        Some(self.shared.snapshot_status())
    }
}

impl std::fmt::Debug for StatusWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWatch")
            .field("node", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// What the handle and the node's tasks share.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    stopped: AtomicBool,
    last_applied: AtomicU64,
    /// The index the state machine is applying (or last applied): what a snapshot
    /// handed to Raft from inside `apply` may cover.
    applying: AtomicU64,
    status: Mutex<Status>,
    /// The version of the configurations in `status`, so that publishing compares two
    /// numbers rather than two configurations on every event.
    membership_version: Mutex<Option<MembershipVersion>>,
    watchers: Mutex<Vec<async_channel::Sender<Leadership>>>,
    /// Status watchers, each signalled (at most one pending signal) on a change.
    status_watchers: Mutex<Vec<async_channel::Sender<()>>>,
    /// Whether a status watcher ever subscribed: until one does, publishing leaves their
    /// lock alone (it publishes after every batch of events).
    has_status_watchers: AtomicBool,
    /// Callers waiting until the state machine has applied an index.
    applied_waiters: Mutex<Vec<(LogIndex, futures::channel::oneshot::Sender<()>)>>,
    has_applied_waiters: AtomicBool,
    /// Requests the handle refused before they reached the core (a snapshot the state
    /// machine could not restore); the core counts its own refusals.
    refused_at_the_door: AtomicU64,
    /// How long the proposals made through the handle and appended took to end.
    pub(crate) proposal_latency: LatencyRecorder,
    /// The leader's read lease, so that the handle answers lease reads without a trip
    /// through the event loop: when it ends (nanoseconds on the runtime's clock; 0 for
    /// none), and the read index it gives. The driver stores the index before the end
    /// and clears the end first, so a reader that sees a live end sees an index at least
    /// as new as the one published with it.
    lease_until_nanos: AtomicU64,
    lease_index: AtomicU64,
    /// Linearizable reads waiting for the event loop.
    pub(crate) reads: ReadQueue,
}

impl Shared {
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.reads.close();
        self.lease_until_nanos.store(0, Ordering::Release);
        self.status().stopped = true;
        lock(&self.watchers).clear();
        lock(&self.status_watchers).clear();
        lock(&self.applied_waiters).clear();
    }

    /// A new subscription to leadership changes, starting from the current state.
    pub(crate) fn watch_leadership(&self) -> LeadershipWatch {
        let (tx, changes) = async_channel::unbounded();
        let current = leadership_of(&self.status());
        if !self.is_stopped() {
            lock(&self.watchers).push(tx);
        }
        LeadershipWatch { current, changes }
    }

    /// A subscription to status changes.
    pub(crate) fn watch_status(self: &std::sync::Arc<Self>) -> StatusWatch {
        let (tx, changes) = async_channel::bounded(1);
        if !self.is_stopped() {
            lock(&self.status_watchers).push(tx);
            self.has_status_watchers.store(true, Ordering::SeqCst);
        }
        StatusWatch {
            shared: std::sync::Arc::clone(self),
            changes,
        }
    }

    /// Resolves once the state machine has applied `index`; fails if the node stops
    /// first.
    pub(crate) fn applied_reaches(
        &self,
        index: LogIndex,
    ) -> Option<futures::channel::oneshot::Receiver<()>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let mut waiters = lock(&self.applied_waiters);
        // Raise the flag before looking at the applied index (both SeqCst, as in
        // `store_applied`): either the applier sees the flag and wakes us under the
        // lock, or we see its index here.
        self.has_applied_waiters.store(true, Ordering::SeqCst);
        if LogIndex(self.last_applied.load(Ordering::SeqCst)) >= index {
            let _ = tx.send(());
        } else if self.is_stopped() {
            return None;
        } else {
            waiters.push((index, tx));
        }
        Some(rx)
    }

    /// Publishes the core's read lease (or its absence). Called before the effects of
    /// the step that changed it are carried out: a leader that starts a transfer drops
    /// its lease here before its TimeoutNow leaves.
    pub(crate) fn set_read_lease(&self, lease: Option<ReadLease>) {
        let until = lease.map_or(0, |lease| {
            u64::try_from(lease.until.as_nanos()).unwrap_or(u64::MAX)
        });
        if until == self.lease_until_nanos.load(Ordering::Relaxed)
            && lease.is_none_or(|l| l.index.0 == self.lease_index.load(Ordering::Relaxed))
        {
            return;
        }
        self.lease_until_nanos.store(0, Ordering::Release);
        if let Some(lease) = lease {
            self.lease_index.store(lease.index.0, Ordering::Release);
            self.lease_until_nanos.store(until, Ordering::Release);
        }
    }

    /// The read index a lease gives a read that starts at `now`, if the lease holds.
    pub(crate) fn lease_read(&self, now: Duration) -> Option<LogIndex> {
        let until = self.lease_until_nanos.load(Ordering::Acquire);
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        (now < until).then(|| LogIndex(self.lease_index.load(Ordering::Acquire)))
    }

    /// Whether the state machine has applied `index` already.
    pub(crate) fn has_applied(&self, index: LogIndex) -> bool {
        LogIndex(self.last_applied.load(Ordering::Acquire)) >= index
    }

    pub(crate) fn set_fatal(&self, reason: &str) {
        self.status().fatal = Some(reason.to_string());
    }

    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        // The lock only guards plain data; a panic elsewhere cannot leave it torn.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn publish<C: Command>(&self, node: &AnyNode<C>) {
        let hard_state = node.hard_state();
        let mut status = self.status();
        let before = leadership_of(&status);
        status.role = node.role_kind();
        status.term = hard_state.term;
        status.voted_for = hard_state.voted_for;
        status.leader = node.leader_hint();
        status.last_log = node.log().last_log_id();
        status.snapshot = node.log().last_included();
        status.commit_index = node.commit_index();
        status.last_queued = node.last_applied();
        status.log_entries = node.log().len();
        status.refused_messages = node.refused_messages();
        let leader_changes = status.counters.leader_changes;
        status.counters = node.counters();
        status.counters.leader_changes = leader_changes;
        let version = node.membership_version();
        let mut published = lock(&self.membership_version);
        if *published != Some(version) {
            if &status.membership != node.membership() {
                status.membership = node.membership().clone();
            }
            if &status.committed_membership != node.committed_membership() {
                status.committed_membership = node.committed_membership().clone();
            }
            *published = Some(version);
        }
        drop(published);
        // Updated in place: a leader publishes after every batch, and collecting a new
        // map each time showed in profiles.
        match node {
            AnyNode::Leader(leader) => {
                let mut tracked = 0;
                for &peer in leader.peers() {
                    match leader.role().progress(peer) {
                        Some(progress) => {
                            tracked += 1;
                            let now = FollowerProgress {
                                match_index: progress.match_index(),
                                next_index: progress.next_index(),
                                mode: progress.mode(),
                                inflight: progress.inflight(),
                            };
                            // In place once the peer has its entry (every publish but
                            // the first of a term): no search for the insertion point.
                            match status.followers.get_mut(&peer) {
                                Some(shown) => *shown = now,
                                None => {
                                    status.followers.insert(peer, now);
                                }
                            }
                        }
                        None => {
                            status.followers.remove(&peer);
                        }
                    }
                }
                // More entries than tracked peers: some are of peers no longer in the
                // configuration.
                if status.followers.len() > tracked {
                    let peers = leader.peers();
                    status.followers.retain(|peer, _| peers.contains(peer));
                }
            }
            _ => status.followers.clear(),
        }
        let after = leadership_of(&status);
        if after.leader != before.leader && after.leader.is_some() {
            status.counters.leader_changes = status.counters.leader_changes.saturating_add(1);
        }
        drop(status);
        if after != before {
            if after.leader != before.leader || after.role != before.role {
                tracing::info!(node = %self.id, term = %after.term, role = ?after.role, leader = ?after.leader, "leadership changed");
            }
            lock(&self.watchers).retain(|watcher| watcher.try_send(after).is_ok());
        }
        // A status watcher is told that something changed; it reads the latest itself,
        // so a slow one skips intermediate states instead of queueing them.
        if self.has_status_watchers.load(Ordering::SeqCst) {
            lock(&self.status_watchers)
                .retain(|watcher| !watcher.try_send(()).is_err_and(|e| e.is_closed()));
        }
    }
}

fn leadership_of(status: &Status) -> Leadership {
    Leadership {
        term: status.term,
        role: status.role,
        leader: status.leader,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The locks only guard plain data; a panic elsewhere cannot leave it torn.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// A fresh cell for node `id`, before it has published anything.
    pub(crate) fn new(id: NodeId, last_applied: LogIndex) -> Shared {
        Shared {
            id,
            stopped: AtomicBool::new(false),
            last_applied: AtomicU64::new(last_applied.0),
            applying: AtomicU64::new(last_applied.0),
            watchers: Mutex::new(Vec::new()),
            status_watchers: Mutex::new(Vec::new()),
            has_status_watchers: AtomicBool::new(false),
            applied_waiters: Mutex::new(Vec::new()),
            has_applied_waiters: AtomicBool::new(false),
            refused_at_the_door: AtomicU64::new(0),
            proposal_latency: LatencyRecorder::default(),
            lease_until_nanos: AtomicU64::new(0),
            lease_index: AtomicU64::new(0),
            reads: ReadQueue::default(),
            membership_version: Mutex::new(None),
            status: Mutex::new(Status {
                id,
                role: RoleKind::Follower,
                term: Term::default(),
                voted_for: None,
                leader: None,
                last_log: LogId::default(),
                snapshot: LogId::default(),
                commit_index: LogIndex::ZERO,
                last_queued: LogIndex::ZERO,
                last_applied: LogIndex::ZERO,
                log_entries: 0,
                membership: Membership::default(),
                committed_membership: Membership::default(),
                followers: BTreeMap::new(),
                refused_messages: 0,
                counters: Counters::default(),
                stopped: false,
                fatal: None,
            }),
        }
    }

    /// Records the index the state machine has applied, and wakes whoever waited for it.
    pub(crate) fn store_applied(&self, index: LogIndex) {
        self.last_applied.store(index.0, Ordering::SeqCst);
        if self.has_applied_waiters.load(Ordering::SeqCst) {
            let mut waiters = lock(&self.applied_waiters);
            let mut ready = Vec::new();
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].0 <= index {
                    ready.push(waiters.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            self.has_applied_waiters
                .store(!waiters.is_empty(), Ordering::SeqCst);
            drop(waiters);
            for (_, tx) in ready {
                let _ = tx.send(());
            }
        }
    }

    /// The index the state machine has applied.
    pub(crate) fn applied(&self) -> LogIndex {
        LogIndex(self.last_applied.load(Ordering::Acquire))
    }

    /// The state machine is about to apply `index`.
    pub(crate) fn note_applying(&self, index: LogIndex) {
        self.applying.fetch_max(index.0, Ordering::AcqRel);
    }

    /// The highest index handed to the state machine so far: applied, or being applied.
    pub(crate) fn applying(&self) -> LogIndex {
        LogIndex(
            self.applying
                .load(Ordering::Acquire)
                .max(self.last_applied.load(Ordering::Acquire)),
        )
    }

    /// The current status, with the applied index as of now.
    pub(crate) fn snapshot_status(&self) -> Status {
        let mut status = self.status().clone();
        status.last_applied = self.applied();
        status.refused_messages = status
            .refused_messages
            .saturating_add(self.refused_at_the_door.load(Ordering::Relaxed));
        status
    }

    /// The handle refused a request before it reached the core.
    pub(crate) fn note_refused(&self) {
        self.refused_at_the_door.fetch_add(1, Ordering::Relaxed);
    }
}
