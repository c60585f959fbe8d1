//! The random fault explorer: per seed, a cluster of 3–7 nodes under a client workload
//! and a nemesis that also changes its membership, checked against Raft's safety
//! properties after every step, then healed and required to converge and serve, with the
//! clients' history checked for linearizability.
//!
//! Everything derives from the seed (the cluster's size and settings, the nemesis, the
//! clients, the network's faults, the scheduling), so a failing seed replays exactly:
//! run [`replay_command`]'s command.
//!
//! # Reads
//!
//! Clients read three ways, all recorded in the same history: through the log (a `Get`
//! command); and without it, by `read_barrier` on a server (the leader, or half the time
//! any running server) followed by a direct read of that server's own key-value state,
//! recorded as invoked before the barrier and completed after the local read. A third
//! of the seeds turn on `Config::lease_reads`. After healing, every server must serve a
//! read of every key this way.
//!
//! The history's time stamps strictly increase in the order things happen, also within
//! one virtual instant: the network and storage take no virtual time, so an operation
//! often ends and the next one begins at the same instant, and must still count as
//! after it.
//!
//! [`Options::transfer_probe`] aims at lease reads across leadership transfers.
//!
//! # Membership changes
//!
//! Besides its 3–7 bootstrap members, a world holds 2–4 spare servers that exist but
//! start outside the configuration. A share of the nemesis' actions changes the
//! membership (see the `membership` module): add a learner, promote one, add a voter,
//! remove a member or the leader itself, replace a voter by a spare that joins from blank
//! storage, or move to an arbitrary target through joint consensus, under every fault
//! below. A server starts with the bootstrap members only the first time; restarts and
//! joining spares start with an empty configuration. The heal phase requires the members
//! of the leader's settled configuration to converge and serve; a removed server left
//! running is not one of them.
//!
//! Every commit is checked against the storages: the first time an index is seen
//! committed, the servers whose storage holds it must form a quorum of the configuration
//! that governs it (the joint C_old,new a majority of both voter sets), and a change the
//! handle reports done must have a committed configuration that carries it. Committed
//! configuration and blank entries join the state machine safety and leader completeness
//! checks like commands.
//!
//! # Disruptive elections
//!
//! An *election* starts when a candidate sends its first RequestVote of a term; the
//! explorer sees it in the candidate's transport before any other server can. It is
//! *disruptive* if, at that moment, some server `L`
//!
//! * is the leader of a lower term and has acted as leader of it (sent AppendEntries or
//!   InstallSnapshot) for at least `W` = the longest election timeout plus two heartbeat
//!   intervals (700 ms), and
//! * has, for all of the last `W`, been linked both ways (both directed links up without
//!   a break) to enough servers that ran without a restart for all of `W` that, with `L`,
//!   they form a quorum of `L`'s configuration (a majority of its voters, and of the
//!   outgoing ones too while it is joint),
//!
//! and the election was not started on `L`'s TimeoutNow (a leadership transfer: its
//! RequestVotes say so). The network is *quiet* once it has been neither lossy nor
//! reordering for the longest time it holds a message back (26 ms of request delay when
//! lossy, 2.2 s of reply delay when reordering) plus `W`.
//!
//! With pre-vote and check-quorum on, a disruptive election on a quiet network is a
//! violation. Why it cannot happen: to raise its term, the candidate needs pre-vote
//! grants from a majority, so from at least one of `L`'s linked followers `F` (`L`
//! itself refuses). On a quiet network a reply arrives at once, so that grant was given
//! during the candidate's current round, which began less than the longest election
//! timeout ago, hence more than two heartbeat intervals into `W`. By then `F` had been
//! getting `L`'s heartbeats for a heartbeat interval or more, one every interval, so it
//! had heard from `L` within the minimum election timeout and refused (leader
//! stickiness). Where it is not asserted, and why:
//!
//! * a lossy network can drop six heartbeats in a row, after which a follower of a
//!   healthy leader grants pre-votes;
//! * a reordering network can deliver a pre-vote granted before the leader's link came
//!   up seconds later, and the pre-candidate, still in the same term, counts it;
//! * a restarted server has heard from no leader, and grants pre-votes at once, which is
//!   why it only counts toward `L`'s majority after `W`.
//!
//! Disruptive elections are counted everywhere (`Stats::disruptive_elections`), and the
//! time during which one would have been a violation is measured
//! (`Stats::guarded_millis`). The last [`Options::quiet_tail`] of the nemesis keeps the
//! network quiet while links and servers still fail, so that the assertion meets
//! partitions, one-way cuts, isolations and restarts.
//!
//! ```no_run
//! use raft_tests::sim::explorer::{Options, explore};
//!
//! let exploration = explore(7, &Options::default()).unwrap();
//! println!("{:?}", exploration.stats);
//! ```

mod membership;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use raft_impl::core::RoleKind;
use raft_impl::{Config, Parts, ProposeError, Raft, ReadError};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage, MemTransport};
use raft_traits::{
    Entry, LogId, LogIndex, Membership, NodeId, Payload, Request, Response, Runtime, Snapshot,
    SnapshotSource, StateMachine, StateMachineError, Term, Transport, TransportError, async_trait,
    timeout,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::invariants::{Durable, Observations, check_log_matching, is_quorum};
use super::linearizability::{self, Event, History};
use super::planted::{Planted, PlantedBug};
use super::runtime::{SimRuntime, Simulation};
use super::slow_disk::SlowDisk;

/// What an exploration does besides what its seed decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A known bug to plant in every node, to show the checks catch it.
    pub planted_bug: Option<PlantedBug>,
    /// How long (virtual time) the nemesis and the clients run.
    pub chaos: Duration,
    /// How long (virtual time) they go on after that on a quiet network (neither lossy
    /// nor reordering), with links and servers still failing: where pre-vote and
    /// check-quorum leave no room for a disruptive election.
    pub quiet_tail: Duration,
    /// How long (virtual time) the healed cluster has to converge and serve.
    pub heal_limit: Duration,
    /// Runs the classic algorithm: pre-vote, check-quorum and lease reads off. Disruptive
    /// elections are then counted but not forbidden (nothing prevents them).
    pub classic_elections: bool,
    /// Probes lease reads across leadership transfers: every server serves lease reads,
    /// a third of the nemesis' actions are transfers, each started behind a one-way cut
    /// from the target to the leader on a reordering network, and once the target leads,
    /// a client writes there and then reads (without the log) at the old leader.
    pub transfer_probe: bool,
    /// Changes the membership in the nemesis (see the [module](self) notes); off, the
    /// cluster keeps its bootstrap members and no spare server ever starts.
    pub membership_changes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            planted_bug: None,
            chaos: Duration::from_secs(15),
            quiet_tail: Duration::from_secs(5),
            heal_limit: Duration::from_secs(30),
            classic_elections: false,
            transfer_probe: false,
            membership_changes: true,
        }
    }
}

/// What an exploration exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Servers in the cluster.
    pub nodes: u64,
    /// Nemesis actions taken.
    pub nemesis_steps: u64,
    /// Splits into two sides.
    pub partitions: u64,
    /// Single servers cut off.
    pub isolations: u64,
    /// Links cut in one direction only.
    pub one_way_cuts: u64,
    /// Links made to flap.
    pub flapping_links: u64,
    /// Servers crashed.
    pub crashes: u64,
    /// Servers restarted from their storage.
    pub restarts: u64,
    /// Long outages (long enough to need InstallSnapshot on return).
    pub long_outages: u64,
    /// Times the network turned lossy and slow.
    pub unreliable_periods: u64,
    /// Times long reordering of replies was switched on.
    pub reordering_periods: u64,
    /// Times request duplication was switched on.
    pub duplication_periods: u64,
    /// Times the clients paused, leaving the cluster idle (so that a server cut off does
    /// not fall behind, and only leader stickiness keeps it from winning a pre-vote).
    pub idle_periods: u64,
    /// Terms in which a leader was seen.
    pub elections: u64,
    /// Snapshots the state machines took.
    pub snapshots_taken: u64,
    /// Snapshots installed into running state machines (sent by a leader).
    pub snapshots_installed: u64,
    /// Snapshots restored at boot.
    pub boot_restores: u64,
    /// Client operations that completed.
    pub ops_ok: u64,
    /// Client operations refused without effect (not the leader, overwritten).
    pub ops_refused: u64,
    /// Client operations whose outcome stayed unknown (timeouts, lost leaders).
    pub ops_unknown: u64,
    /// Distinct log indices applied.
    pub applied_indices: u64,
    /// Invariant checks run.
    pub checks: u64,
    /// Explorations whose servers serve lease reads (`Config::lease_reads`).
    pub lease_runs: u64,
    /// Reads that completed through the log (a `Get` command).
    pub reads_log: u64,
    /// Reads that completed through `read_barrier` and a read of the server's own state,
    /// with ReadIndex (no lease).
    pub reads_index: u64,
    /// Reads that completed like `reads_index`, on servers with lease reads on.
    pub reads_lease: u64,
    /// Of `reads_index` and `reads_lease`, those served by a server that was not the
    /// leader when the read began.
    pub reads_on_followers: u64,
    /// Leadership transfers the nemesis started (the leader accepted them).
    pub transfers: u64,
    /// Of those, transfers after which the target led a newer term within two election
    /// timeouts.
    pub transfers_completed: u64,
    /// Leadership transfers the leader refused (one in progress, a lost leadership).
    pub transfers_refused: u64,
    /// Elections started: a candidate's first RequestVote of a term.
    pub campaigns: u64,
    /// Of those, elections started on a leader's TimeoutNow (a leadership transfer).
    pub transfer_campaigns: u64,
    /// Disruptive elections: elections started while a leader had a live quorum, other
    /// than by a leadership transfer (see the [module](self) notes).
    pub disruptive_elections: u64,
    /// Of those, elections started on a network that had been quiet long enough: a
    /// violation, when pre-vote and check-quorum are on (see [`Options::classic_elections`]).
    pub disruptive_on_quiet_network: u64,
    /// Virtual time, in milliseconds, during which a disruptive election would have been a
    /// violation: a leader with a live quorum on a quiet network (sampled every 20 ms).
    pub guarded_millis: u64,
    /// Servers beyond the bootstrap configuration, started when the nemesis adds them.
    pub spare_nodes: u64,
    /// Membership changes adding a learner.
    pub add_learner: ChangeCounts,
    /// Membership changes promoting a learner to voter.
    pub promote: ChangeCounts,
    /// Membership changes adding a voter (a learner first, promoted once caught up).
    pub add_voter: ChangeCounts,
    /// Membership changes removing a member other than the leader.
    pub remove: ChangeCounts,
    /// Membership changes in which the leader removes itself.
    pub remove_leader: ChangeCounts,
    /// Replacements: a new server (blank storage) joins as a voter and an old one leaves,
    /// in two single-server changes or one joint change; one request each.
    pub replace: ChangeCounts,
    /// Changes to an arbitrary target through `change_membership` (joint consensus when
    /// more than one voter changes).
    pub joint: ChangeCounts,
    /// Servers started for the first time to join the cluster (empty configuration).
    pub joins: u64,
    /// Removed servers left running.
    pub removed_kept_running: u64,
    /// Removed servers shut down.
    pub removed_shut_down: u64,
    /// Configuration entries whose commit quorum was checked against the storages.
    pub config_commits_checked: u64,
    /// Of those, joint configurations (C_old,new).
    pub joint_commits_checked: u64,
    /// Other entries whose commit quorum was checked against the storages.
    pub entry_commits_checked: u64,
}

/// How the membership changes of one kind ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    /// Asked of a leader.
    pub requested: u64,
    /// Reported done: the configuration committed.
    pub succeeded: u64,
    /// Refused by the leader (not the leader, a change in progress, not ready, a learner
    /// not caught up, ...).
    pub refused: u64,
    /// Of unknown outcome: leadership lost, the node stopped, or no answer in time.
    pub unknown: u64,
}

impl ChangeCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &ChangeCounts) {
        self.requested += other.requested;
        self.succeeded += other.succeeded;
        self.refused += other.refused;
        self.unknown += other.unknown;
    }
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Stats) {
        let fields = [
            (&mut self.nodes, other.nodes),
            (&mut self.nemesis_steps, other.nemesis_steps),
            (&mut self.partitions, other.partitions),
            (&mut self.isolations, other.isolations),
            (&mut self.one_way_cuts, other.one_way_cuts),
            (&mut self.flapping_links, other.flapping_links),
            (&mut self.crashes, other.crashes),
            (&mut self.restarts, other.restarts),
            (&mut self.long_outages, other.long_outages),
            (&mut self.unreliable_periods, other.unreliable_periods),
            (&mut self.reordering_periods, other.reordering_periods),
            (&mut self.duplication_periods, other.duplication_periods),
            (&mut self.idle_periods, other.idle_periods),
            (&mut self.elections, other.elections),
            (&mut self.snapshots_taken, other.snapshots_taken),
            (&mut self.snapshots_installed, other.snapshots_installed),
            (&mut self.boot_restores, other.boot_restores),
            (&mut self.ops_ok, other.ops_ok),
            (&mut self.ops_refused, other.ops_refused),
            (&mut self.ops_unknown, other.ops_unknown),
            (&mut self.applied_indices, other.applied_indices),
            (&mut self.checks, other.checks),
            (&mut self.lease_runs, other.lease_runs),
            (&mut self.reads_log, other.reads_log),
            (&mut self.reads_index, other.reads_index),
            (&mut self.reads_lease, other.reads_lease),
            (&mut self.reads_on_followers, other.reads_on_followers),
            (&mut self.transfers, other.transfers),
            (&mut self.transfers_completed, other.transfers_completed),
            (&mut self.transfers_refused, other.transfers_refused),
            (&mut self.campaigns, other.campaigns),
            (&mut self.transfer_campaigns, other.transfer_campaigns),
            (&mut self.disruptive_elections, other.disruptive_elections),
            (
                &mut self.disruptive_on_quiet_network,
                other.disruptive_on_quiet_network,
            ),
            (&mut self.guarded_millis, other.guarded_millis),
        ];
        for (total, value) in fields {
            *total += value;
        }
        let counts = [
            (&mut self.add_learner, &other.add_learner),
            (&mut self.promote, &other.promote),
            (&mut self.add_voter, &other.add_voter),
            (&mut self.remove, &other.remove),
            (&mut self.remove_leader, &other.remove_leader),
            (&mut self.replace, &other.replace),
            (&mut self.joint, &other.joint),
        ];
        for (total, value) in counts {
            total.add(value);
        }
        let fields = [
            (&mut self.spare_nodes, other.spare_nodes),
            (&mut self.joins, other.joins),
            (&mut self.removed_kept_running, other.removed_kept_running),
            (&mut self.removed_shut_down, other.removed_shut_down),
            (
                &mut self.config_commits_checked,
                other.config_commits_checked,
            ),
            (&mut self.joint_commits_checked, other.joint_commits_checked),
            (&mut self.entry_commits_checked, other.entry_commits_checked),
        ];
        for (total, value) in fields {
            *total += value;
        }
    }

    /// The membership changes of every kind together.
    pub fn changes(&self) -> ChangeCounts {
        let mut total = ChangeCounts::default();
        for kind in self.changes_by_kind() {
            total.add(kind.1);
        }
        total
    }

    /// The membership changes by kind, named.
    pub fn changes_by_kind(&self) -> [(&'static str, &ChangeCounts); 7] {
        [
            ("add learner", &self.add_learner),
            ("promote", &self.promote),
            ("add voter", &self.add_voter),
            ("remove", &self.remove),
            ("remove the leader", &self.remove_leader),
            ("replace", &self.replace),
            ("joint", &self.joint),
        ]
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "faults: {} partitions, {} isolations, {} one-way cuts, {} flapping links, {} crashes / {} restarts, {} long outages, {} lossy / {} reordering / {} duplicating / {} idle periods; \
             elections: {}; snapshots: {} taken, {} installed, {} restored at boot; \
             ops: {} ok, {} refused, {} unknown; {} indices applied; {} invariant checks; \
             reads: {} through the log, {} read-index, {} lease ({} at followers; {} runs with lease reads); \
             transfers: {} started, {} completed, {} refused; \
             campaigns: {} ({} by transfer), {} disruptive ({} on a quiet network); {:.1} min guarded against disruption",
            self.partitions,
            self.isolations,
            self.one_way_cuts,
            self.flapping_links,
            self.crashes,
            self.restarts,
            self.long_outages,
            self.unreliable_periods,
            self.reordering_periods,
            self.duplication_periods,
            self.idle_periods,
            self.elections,
            self.snapshots_taken,
            self.snapshots_installed,
            self.boot_restores,
            self.ops_ok,
            self.ops_refused,
            self.ops_unknown,
            self.applied_indices,
            self.checks,
            self.reads_log,
            self.reads_index,
            self.reads_lease,
            self.reads_on_followers,
            self.lease_runs,
            self.transfers,
            self.transfers_completed,
            self.transfers_refused,
            self.campaigns,
            self.transfer_campaigns,
            self.disruptive_elections,
            self.disruptive_on_quiet_network,
            self.guarded_millis as f64 / 60_000.0
        )?;
        let changes = self.changes();
        write!(
            f,
            "; membership changes: {} requested, {} succeeded, {} refused, {} unknown (",
            changes.requested, changes.succeeded, changes.refused, changes.unknown
        )?;
        for (at, (kind, counts)) in self.changes_by_kind().into_iter().enumerate() {
            let separator = if at == 0 { "" } else { ", " };
            write!(
                f,
                "{separator}{kind} {}/{}",
                counts.succeeded, counts.requested
            )?;
        }
        write!(
            f,
            " succeeded/requested); {} joins, removed servers {} left running / {} shut down; \
             commit quorums checked on storage: {} configurations ({} joint), {} other entries",
            self.joins,
            self.removed_kept_running,
            self.removed_shut_down,
            self.config_commits_checked,
            self.joint_commits_checked,
            self.entry_commits_checked
        )
    }
}

/// A passed exploration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exploration {
    /// Its seed.
    pub seed: u64,
    /// A digest of everything that happened: equal for equal seeds.
    pub trace_hash: u64,
    /// How much virtual time it covered.
    pub virtual_time: Duration,
    /// What it exercised.
    pub stats: Stats,
}

/// A failed exploration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its seed.
    pub seed: u64,
    /// The planted bug, if any.
    pub planted_bug: Option<PlantedBug>,
    /// Whether it ran the classic algorithm ([`Options::classic_elections`]).
    pub classic_elections: bool,
    /// Whether it probed transfers ([`Options::transfer_probe`]).
    pub transfer_probe: bool,
    /// Whether it changed the membership ([`Options::membership_changes`]).
    pub membership_changes: bool,
    /// What went wrong.
    pub reason: String,
    /// The last events before it went wrong.
    pub recent_events: Vec<String>,
    /// A digest of everything that happened: equal for equal seeds.
    pub trace_hash: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "exploration of seed {} failed: {}",
            self.seed, self.reason
        )?;
        if let Some(bug) = self.planted_bug {
            writeln!(f, "(with the planted bug {bug:?})")?;
        }
        writeln!(f, "last events:")?;
        for event in &self.recent_events {
            writeln!(f, "  {event}")?;
        }
        write!(f, "replay: {}", replay_command(self.seed, &self.options()))
    }
}

impl Failure {
    /// The options it ran with, as far as a replay needs them (not the planted bug).
    fn options(&self) -> Options {
        Options {
            classic_elections: self.classic_elections,
            transfer_probe: self.transfer_probe,
            membership_changes: self.membership_changes,
            ..Options::default()
        }
    }
}

/// The command that replays the exploration of `seed` with `options`' algorithm and
/// probe (the planted-bug tests replay their own failures).
pub fn replay_command(seed: u64, options: &Options) -> String {
    let classic = if options.classic_elections {
        "SIM_CLASSIC=1 "
    } else {
        ""
    };
    let probe = if options.transfer_probe {
        "SIM_TRANSFER_PROBE=1 "
    } else {
        ""
    };
    let fixed = if options.membership_changes {
        ""
    } else {
        "SIM_NO_MEMBERSHIP=1 "
    };
    format!(
        "SIM_SEED={seed} {classic}{probe}{fixed}cargo test --release -p raft-tests --test sim -- explorer_replay --nocapture"
    )
}

/// Explores one seed.
pub fn explore(seed: u64, options: &Options) -> Result<Exploration, Failure> {
    let simulation = Simulation::new(seed);
    let world = Arc::new(World::new(seed, simulation.runtime(), options));
    let run = {
        let world = Arc::clone(&world);
        let options = options.clone();
        catch_unwind(AssertUnwindSafe(|| {
            simulation.block_on(async move { run(world, options).await })
        }))
    };
    let outcome = match run {
        Ok(outcome) => outcome,
        Err(panic) => Err(format!("panicked: {}", panic_text(&*panic))),
    };
    let virtual_time = simulation.now();
    let trace_hash = {
        let state = world.lock();
        let mut hasher = DefaultHasher::new();
        (
            simulation.trace_hash(),
            state.event_hash,
            format!("{:?}", state.stats),
        )
            .hash(&mut hasher);
        hasher.finish()
    };
    drop(simulation);
    let state = world.lock();
    match outcome {
        Ok(()) => Ok(Exploration {
            seed,
            trace_hash,
            virtual_time,
            stats: state.stats.clone(),
        }),
        Err(reason) => Err(Failure {
            seed,
            planted_bug: options.planted_bug,
            classic_elections: options.classic_elections,
            transfer_probe: options.transfer_probe,
            membership_changes: options.membership_changes,
            reason,
            recent_events: state.events.iter().cloned().collect(),
            trace_hash,
        }),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_string())
}

type KvRaft = Raft<KvCommand, KvResponse>;

/// How many recent events a failure report shows.
const RECENT_EVENTS: usize = 60;
/// Keys the clients work on.
const KEYS: u64 = 6;
/// Clients.
const CLIENTS: u64 = 3;
/// How long a client waits for a proposal before it counts it as unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the checker task runs the cluster-wide checks.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// The longest a lossy [`MemNetwork`] holds a request back (it holds no reply).
const LOSSY_HOLD: Duration = Duration::from_millis(27);
/// The longest a [`MemNetwork`] with long reordering holds a reply back.
const REORDERING_HOLD: Duration = Duration::from_millis(2200);

/// A server's key-value state, shared between its state machine (which applies) and the
/// clients (which read it directly after `read_barrier`).
type SharedKv = Arc<futures::lock::Mutex<KvStateMachine>>;

/// The simulated cluster and everything recorded about it.
struct World {
    seed: u64,
    runtime: SimRuntime,
    net: MemNetwork<KvCommand, SimRuntime>,
    /// Every server of the world: the bootstrap members, then the spares.
    n: usize,
    /// The bootstrap members: servers `0..initial`.
    initial: usize,
    /// Their configuration, with which each of them starts the first time.
    bootstrap: Membership,
    /// See [`Options::membership_changes`].
    membership_changes: bool,
    config: Config,
    /// The bug planted in every node's storage, if any.
    planted_bug: Option<PlantedBug>,
    /// The longest write latency of the nodes' disks, in microseconds (0: instant).
    disk_latency_micros: u64,
    snapshot_every: u64,
    /// Whether Raft's snapshot policy takes the snapshots (streamed into storage by the
    /// state machine) rather than the state machine handing them to `Raft::snapshot`.
    policy_snapshots: bool,
    /// Set once the heal phase starts: flapping and outages stop meddling.
    healing: AtomicBool,
    /// Whether a disruptive election on a quiet network is a violation (pre-vote and
    /// check-quorum are on).
    disruption_forbidden: bool,
    /// See [`Options::transfer_probe`].
    transfer_probe: bool,
    state: Mutex<State>,
}

struct State {
    nodes: Vec<Slot>,
    /// The enabled links `(from, to)` by server number.
    links: BTreeSet<(usize, usize)>,
    observations: Observations,
    /// Membership changes reported done, checked once what they wait for was seen
    /// committed.
    change_checks: Vec<membership::ChangeCheck>,
    history: History,
    stats: Stats,
    events: VecDeque<String>,
    event_hash: u64,
    violation: Option<String>,
    rng: StdRng,
    /// The highest term published by an instance that has since crashed.
    crashed_terms: Term,
    /// Since when each enabled link `(from, to)` has been enabled without a break.
    link_up_since: BTreeMap<(usize, usize), Duration>,
    /// Since when the network has been reliable (not lossy), if it is.
    lossless_since: Option<Duration>,
    /// Since when the network has not been reordering at length, if it is not.
    in_order_since: Option<Duration>,
    /// The elections seen started, by candidate and term.
    campaigns: BTreeSet<(NodeId, Term)>,
    /// The leader of each term and when it first acted as leader.
    leader_since: BTreeMap<Term, (NodeId, Duration)>,
    /// Until when the clients pause.
    clients_idle_until: Duration,
    /// The last time stamp given to the history.
    last_stamp: u64,
}

impl State {
    /// Runs the membership checks whose commits were all seen.
    fn run_change_checks(&mut self) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.change_checks)
            .into_iter()
            .partition(|check| check.is_due(&self.observations));
        self.change_checks = waiting;
        for check in due {
            if let Some(violation) = check.violation(&self.observations)
                && self.violation.is_none()
            {
                self.violation = Some(violation);
            }
        }
    }
}

struct Slot {
    raft: Option<KvRaft>,
    /// The running instance's key-value state.
    kv: Option<SharedKv>,
    /// When the running instance started.
    up_since: Duration,
    storage: MemStorage<KvCommand>,
    incarnation: u64,
    /// Set when the running instance crashes. A crashed instance may still be finishing a
    /// write (to a storage nobody reads any more) and act on it; after a real crash it
    /// would do nothing, so what it applies or answers from then on is not observed.
    crashed: Arc<AtomicBool>,
    /// Shut down for good after the cluster removed it (until the nemesis adds it back):
    /// neither the nemesis nor the heal restarts it.
    retired: bool,
}

fn node_id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

fn index_of(id: NodeId) -> usize {
    (id.0 - 1) as usize
}

fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl World {
    fn new(seed: u64, runtime: SimRuntime, options: &Options) -> World {
        let mut rng = StdRng::seed_from_u64(mix(seed, 1));
        let initial = rng.random_range(3..=7usize);
        // Spares, drawn apart so that the draws above and below stay those of an
        // exploration without membership changes.
        let spares = if options.membership_changes {
            StdRng::seed_from_u64(mix(seed, 3)).random_range(2..=4usize)
        } else {
            0
        };
        let n = initial + spares;
        let mut config = Config::default()
            .with_leader_noop(rng.random_bool(0.5))
            .with_max_inflight_appends(rng.random_range(1..=4))
            .with_max_append_entries(rng.random_range(1..=64))
            .with_install_snapshot_timeout(Duration::from_millis(rng.random_range(200..2000)));
        // A third of the explorations serve lease reads.
        config.lease_reads = rng.random_bool(1.0 / 3.0) || options.transfer_probe;
        if options.classic_elections {
            config.pre_vote = false;
            config.check_quorum = false;
            config.lease_reads = false;
        }
        let snapshot_every = rng.random_range(5..40);
        // The trailing window, drawn apart like the spares: a third of the explorations
        // keep none, the others a window short enough that lagging followers are still
        // sent snapshots, and followers inside it entries.
        let mut window_rng = StdRng::seed_from_u64(mix(seed, 4));
        config.snapshot_trailing_entries = if window_rng.random_bool(1.0 / 3.0) {
            0
        } else {
            window_rng.random_range(1..=50)
        };
        // Half the explorations give the nodes a disk whose writes take time (drawn
        // apart, like the window), so that writes run while the event loop goes on.
        let disk_latency_micros = if StdRng::seed_from_u64(mix(seed, 5)).random_bool(0.5) {
            StdRng::seed_from_u64(mix(seed, 6)).random_range(100..=5_000)
        } else {
            0
        };
        // Snapshots travel in tiny pieces, drawn apart too, so that every exploration
        // that sends a snapshot sends it in several pieces, several in flight.
        let mut chunk_rng = StdRng::seed_from_u64(mix(seed, 7));
        config.snapshot_chunk_size = chunk_rng.random_range(8..=128);
        config.snapshot_chunks_in_flight = chunk_rng.random_range(1..=4);
        // Half the explorations leave snapshots to Raft's policy, drawn apart too.
        let policy_snapshots = StdRng::seed_from_u64(mix(seed, 8)).random_bool(0.5);
        if policy_snapshots {
            config.snapshot_after_entries = Some(snapshot_every);
            // Half of those also wait for the log to grow to a share of the last
            // snapshot (drawn apart), so snapshots come late and the log runs long.
            let mut growth_rng = StdRng::seed_from_u64(mix(seed, 9));
            if growth_rng.random_bool(0.5) {
                config.snapshot_log_growth_percent = Some(growth_rng.random_range(10..=200));
            }
        }
        let net = MemNetwork::new(runtime.clone(), mix(seed, 2));
        net.set_long_delays(false);
        let now = runtime.now();
        let nodes = (0..n)
            .map(|_| Slot {
                raft: None,
                kv: None,
                up_since: now,
                storage: MemStorage::new(),
                incarnation: 0,
                crashed: Arc::new(AtomicBool::new(false)),
                retired: false,
            })
            .collect();
        let bootstrap = Membership::from_voters((0..initial).map(node_id));
        let links: BTreeSet<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
        let link_up_since = links.iter().map(|&link| (link, now)).collect();
        World {
            seed,
            runtime,
            net,
            n,
            initial,
            membership_changes: options.membership_changes,
            planted_bug: options.planted_bug,
            disk_latency_micros,
            snapshot_every,
            policy_snapshots,
            healing: AtomicBool::new(false),
            disruption_forbidden: config.pre_vote && config.check_quorum,
            transfer_probe: options.transfer_probe,
            state: Mutex::new(State {
                nodes,
                links,
                observations: Observations::new(bootstrap.clone()),
                change_checks: Vec::new(),
                history: History::default(),
                stats: Stats {
                    nodes: initial as u64,
                    spare_nodes: spares as u64,
                    lease_runs: u64::from(config.lease_reads),
                    ..Stats::default()
                },
                events: VecDeque::new(),
                event_hash: 0,
                violation: None,
                rng,
                crashed_terms: Term::default(),
                link_up_since,
                lossless_since: Some(now),
                in_order_since: Some(now),
                campaigns: BTreeSet::new(),
                leader_since: BTreeMap::new(),
                clients_idle_until: now,
                last_stamp: 0,
            }),
            bootstrap,
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A time stamp for the history: the virtual time in nanoseconds, raised past the
    /// previous stamp. The simulation runs one task at a time, so the order of the stamps
    /// is the real order of the events, also of those at the same virtual instant (where
    /// an operation can end and the next begin, the network and storage taking no time).
    fn stamp(&self, state: &mut State) -> u64 {
        let now = u64::try_from(self.runtime.now().as_nanos()).unwrap_or(u64::MAX);
        let at = now.max(state.last_stamp.saturating_add(1));
        state.last_stamp = at;
        at
    }

    fn event(&self, what: String) {
        let line = format!("{:>9.3}s {what}", self.runtime.now().as_secs_f64());
        let mut state = self.lock();
        let mut hasher = DefaultHasher::new();
        (state.event_hash, &line).hash(&mut hasher);
        state.event_hash = hasher.finish();
        state.events.push_back(line);
        if state.events.len() > RECENT_EVENTS {
            state.events.pop_front();
        }
    }

    fn violation(&self, what: String) {
        let mut state = self.lock();
        if state.violation.is_none() {
            state.violation = Some(what);
        }
    }

    fn violated(&self) -> Option<String> {
        self.lock().violation.clone()
    }

    fn random_range(&self, range: std::ops::Range<u64>) -> u64 {
        self.lock().rng.random_range(range)
    }

    fn chance(&self, p: f64) -> bool {
        self.lock().rng.random_bool(p)
    }

    fn handle(&self, i: usize) -> Option<KvRaft> {
        self.lock().nodes[i].raft.clone()
    }

    fn alive(&self) -> Vec<usize> {
        let state = self.lock();
        (0..self.n)
            .filter(|&i| state.nodes[i].raft.is_some())
            .collect()
    }

    /// The servers down that should run: started before, and not retired.
    fn dead(&self) -> Vec<usize> {
        let state = self.lock();
        (0..self.n)
            .filter(|&i| {
                let slot = &state.nodes[i];
                slot.raft.is_none() && slot.incarnation > 0 && !slot.retired
            })
            .collect()
    }

    /// The servers that take part, running or not: started before, and not retired. (A
    /// spare not yet started, or a removed server shut down, is not worth a fault.)
    fn in_play(&self) -> Vec<usize> {
        let state = self.lock();
        (0..self.n)
            .filter(|&i| state.nodes[i].incarnation > 0 && !state.nodes[i].retired)
            .collect()
    }

    /// One of `among`, at random.
    fn pick(&self, among: &[usize]) -> Option<usize> {
        if among.is_empty() {
            return None;
        }
        Some(among[self.random_range(0..among.len() as u64) as usize])
    }

    /// The highest term any server has published so far: an entry applied now was
    /// committed in this term or earlier.
    fn max_term(&self) -> Term {
        let state = self.lock();
        state
            .nodes
            .iter()
            .filter_map(|slot| slot.raft.as_ref().map(|raft| raft.status().term))
            .fold(state.crashed_terms, Term::max)
    }

    fn apply_links(&self) {
        let links = self.lock().links.clone();
        for a in 0..self.n {
            for b in 0..self.n {
                if a != b {
                    self.net
                        .set_link(node_id(a), node_id(b), links.contains(&(a, b)));
                }
            }
        }
    }

    fn set_links(&self, links: BTreeSet<(usize, usize)>) {
        let now = self.runtime.now();
        let mut state = self.lock();
        state.link_up_since.retain(|link, _| links.contains(link));
        for &link in &links {
            state.link_up_since.entry(link).or_insert(now);
        }
        state.links = links;
        drop(state);
        self.apply_links();
    }

    /// Makes the network lossy or not, and reordering at length or not.
    fn set_network(&self, lossy: bool, reordering: bool) {
        self.net.set_reliable(!lossy);
        self.net.set_long_reordering(reordering);
        let now = self.runtime.now();
        let mut state = self.lock();
        let since = |was: Option<Duration>, bad: bool| if bad { None } else { was.or(Some(now)) };
        state.lossless_since = since(state.lossless_since, lossy);
        state.in_order_since = since(state.in_order_since, reordering);
    }

    /// How long a leader must have led, with a majority linked both ways, before an
    /// election is disruptive: the longest election timeout (a pre-vote round lasts no
    /// longer), plus two heartbeats for its followers to have heard from it by then.
    fn live_quorum_window(&self) -> Duration {
        self.config.election_timeout_max + 2 * self.config.heartbeat_interval
    }

    /// Whether the network is quiet (neither lossy nor reordering) and has been for long
    /// enough that no message held back from before can still decide an election: the
    /// longest hold, then a whole live-quorum window.
    fn quiet_long_enough(&self, state: &State, now: Duration) -> bool {
        let window = self.live_quorum_window();
        let held_back_since =
            |since: Option<Duration>, hold| since.is_some_and(|since| now >= since + hold + window);
        held_back_since(state.lossless_since, LOSSY_HOLD)
            && held_back_since(state.in_order_since, REORDERING_HOLD)
    }

    /// The leader with a live quorum, if any, that an election in term `term` would
    /// depose: a running server that has led a term below `term` for the whole
    /// [`live_quorum_window`](World::live_quorum_window), linked both ways all that time
    /// to servers that ran all that time and that, with it, form a quorum of the
    /// configuration it has in effect (a majority of its voters, and while joint of the
    /// outgoing voters too; a leader removing itself does not count itself). An election
    /// started while there is one is disruptive (see the [module](self) notes).
    fn live_quorum_leader(&self, state: &State, now: Duration, term: Term) -> Option<NodeId> {
        let since = now.checked_sub(self.live_quorum_window())?;
        (0..self.n).map(node_id).find(|&leader| {
            let i = index_of(leader);
            let Some(status) = state.nodes[i].raft.as_ref().map(KvRaft::status) else {
                return false;
            };
            let led_long_enough = status.role == RoleKind::Leader
                && status.term < term
                && state
                    .leader_since
                    .get(&status.term)
                    .is_some_and(|&(who, at)| who == leader && at <= since);
            let linked = |a, b| {
                state
                    .link_up_since
                    .get(&(a, b))
                    .is_some_and(|&at| at <= since)
            };
            if !led_long_enough {
                return false;
            }
            let live: BTreeSet<NodeId> = (0..self.n)
                .filter(|&x| {
                    x == i
                        || (state.nodes[x].raft.is_some()
                            && state.nodes[x].up_since <= since
                            && linked(i, x)
                            && linked(x, i))
                })
                .map(node_id)
                .collect();
            is_quorum(&status.membership, &live)
        })
    }

    /// Records that `candidate` sent a RequestVote in `term`: the first one is an election
    /// started, and checked for disruption.
    fn record_campaign(&self, candidate: NodeId, term: Term, transfer: bool) {
        let now = self.runtime.now();
        let mut state = self.lock();
        if !state.campaigns.insert((candidate, term)) {
            return;
        }
        state.stats.campaigns += 1;
        if transfer {
            state.stats.transfer_campaigns += 1;
            return;
        }
        let Some(leader) = self.live_quorum_leader(&state, now, term) else {
            return;
        };
        state.stats.disruptive_elections += 1;
        let quiet = self.quiet_long_enough(&state, now);
        state.stats.disruptive_on_quiet_network += u64::from(quiet);
        let lossy = state.lossless_since.is_none();
        let reordering = state.in_order_since.is_none();
        drop(state);
        let what = format!(
            "disruptive election: {candidate} campaigns in term {term} while {leader} leads with a live quorum (network {})",
            if quiet {
                "quiet".to_string()
            } else {
                format!("lossy {lossy}, reordering {reordering}, or recently so")
            }
        );
        self.event(what.clone());
        if quiet && self.disruption_forbidden {
            self.violation(format!("{what}, despite pre-vote and check-quorum"));
        }
    }

    /// Records that `leader` acted as leader of `term`.
    fn record_leading(&self, leader: NodeId, term: Term) {
        let now = self.runtime.now();
        self.lock()
            .leader_since
            .entry(term)
            .or_insert((leader, now));
    }

    /// Counts `elapsed` towards the time guarded against disruptive elections, if a
    /// disruptive election would now be a violation.
    fn sample_guard(&self, elapsed: Duration) {
        let now = self.runtime.now();
        let mut state = self.lock();
        if self.disruption_forbidden
            && self.quiet_long_enough(&state, now)
            && self
                .live_quorum_leader(&state, now, Term(u64::MAX))
                .is_some()
        {
            state.stats.guarded_millis += u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        }
    }

    fn all_links(&self) -> BTreeSet<(usize, usize)> {
        (0..self.n)
            .flat_map(|a| (0..self.n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect()
    }

    /// The configuration to start server `i` with in its `incarnation`: the bootstrap
    /// members on a bootstrap member's first start (which stores them), and none
    /// otherwise: a spare joins (it waits for a leader that has added it), and a restart
    /// takes its configuration from storage.
    fn boot_membership(&self, i: usize, incarnation: u64) -> Membership {
        if i < self.initial && incarnation == 1 {
            self.bootstrap.clone()
        } else {
            Membership::default()
        }
    }

    async fn start(self: &Arc<Self>, i: usize) {
        let (storage, incarnation, crashed) = {
            let mut state = self.lock();
            let slot = &mut state.nodes[i];
            slot.incarnation += 1;
            slot.crashed = Arc::new(AtomicBool::new(false));
            slot.retired = false;
            slot.storage = slot.storage.copy();
            let first = (
                slot.storage.clone(),
                slot.incarnation,
                Arc::clone(&slot.crashed),
            );
            if i >= self.initial && first.1 == 1 {
                state.stats.joins += 1;
            }
            first
        };
        let transport = Watched {
            inner: self.net.transport(node_id(i)),
            world: Arc::clone(self),
        };
        let handle = Arc::new(OnceLock::new());
        let kv: SharedKv = Arc::new(futures::lock::Mutex::new(KvStateMachine::new()));
        let state_machine = CheckedKv {
            server: node_id(i),
            crashed,
            world: Arc::clone(self),
            kv: Arc::clone(&kv),
            raft: Arc::clone(&handle),
            since_snapshot: 0,
            applied_any: false,
        };
        let config = self
            .config
            .clone()
            .with_seed(Some(mix(self.seed, 1000 + (i as u64) * 1000 + incarnation)));
        let members = self.boot_membership(i, incarnation);
        let parts = Parts {
            runtime: self.runtime.clone(),
            storage: SlowDisk::new(
                Planted::new(storage, self.planted_bug),
                self.runtime.clone(),
                mix(self.seed, 2000 + (i as u64) * 1000 + incarnation),
                self.disk_latency_micros,
            ),
            state_machine,
            transport,
        };
        let raft = match Raft::spawn_in(node_id(i), members, config, parts).await {
            Ok(raft) => raft,
            Err(e) => {
                self.violation(format!(
                    "{} cannot restart from its storage: {e}",
                    node_id(i)
                ));
                return;
            }
        };
        let _ = handle.set(raft.clone());
        self.net.add_server(node_id(i), Arc::new(raft.clone()));
        let now = self.runtime.now();
        let mut state = self.lock();
        let slot = &mut state.nodes[i];
        slot.raft = Some(raft);
        slot.kv = Some(kv);
        slot.up_since = now;
        drop(state);
        self.apply_links();
    }

    async fn crash(&self, i: usize) {
        let raft = {
            let mut state = self.lock();
            let slot = &mut state.nodes[i];
            // What survives is what was stored by now; later writes of the dying instance
            // go to a copy nobody reads, and nothing it sends from now on reaches anyone
            // (it may still be finishing a write to that copy, and a message sent on the
            // strength of such a write would claim what no surviving storage holds).
            slot.storage = slot.storage.copy();
            slot.crashed.store(true, Ordering::SeqCst);
            self.net.retire_ends(node_id(i));
            let raft = slot.raft.take();
            slot.kv = None;
            if let Some(raft) = &raft {
                state.crashed_terms = state.crashed_terms.max(raft.status().term);
            }
            raft
        };
        self.net.delete_server(node_id(i));
        if let Some(raft) = raft {
            raft.shutdown().await;
        }
    }

    /// Runs every check that looks at the whole cluster.
    fn check(&self) {
        let mut state = self.lock();
        state.stats.checks += 1;
        let mut logs = Vec::with_capacity(self.n);
        let mut problem = None;
        let mut leader_commits = Vec::new();
        for i in 0..self.n {
            let slot = &state.nodes[i];
            logs.push((node_id(i), slot.storage.log()));
            if let Some(raft) = &slot.raft {
                let status = raft.status();
                if status.role == RoleKind::Leader {
                    leader_commits.push((status.id, status.commit_index));
                }
                let (incarnation, storage) = (slot.incarnation, slot.storage.clone());
                if let Err(e) = state
                    .observations
                    .check_status(&status, incarnation, &storage)
                {
                    problem = Some(e);
                    break;
                }
            }
        }
        let problem = problem.or_else(|| check_log_matching(&logs).err());
        if let Some(problem) = problem
            && state.violation.is_none()
        {
            state.violation = Some(problem);
        }
        drop(state);
        for (leader, commit) in leader_commits {
            self.observe_commit(leader, commit);
        }
    }

    /// `seen_at` shows everything up to `commit` committed (a leader advertised it, or a
    /// server applied it): the first time an index is seen so, the storages holding it
    /// must form the quorum its configuration requires.
    fn observe_commit(&self, seen_at: NodeId, commit: LogIndex) {
        if commit <= self.lock().observations.committed_upto() {
            return;
        }
        let max_term = self.max_term();
        let mut state = self.lock();
        let durable: Vec<Durable> = state
            .nodes
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let mut durable = Durable::of(node_id(i), &slot.storage);
                durable.appending = slot
                    .raft
                    .as_ref()
                    .is_some_and(|raft| raft.status().last_log.index > durable.last_index());
                durable
            })
            .collect();
        match state
            .observations
            .record_commit(seen_at, commit, &durable, max_term)
        {
            Ok(checks) => {
                state.stats.config_commits_checked += checks.configurations;
                state.stats.joint_commits_checked += checks.joint;
                state.stats.entry_commits_checked += checks.entries;
                state.run_change_checks();
            }
            Err(violation) => {
                if state.violation.is_none() {
                    state.violation = Some(violation);
                }
            }
        }
    }

    fn record_apply(&self, server: NodeId, entry: &Entry<KvCommand>) {
        self.observe_commit(server, entry.index);
        let max_term = self.max_term();
        let mut state = self.lock();
        if let Err(e) = state.observations.record_apply(server, entry, max_term)
            && state.violation.is_none()
        {
            state.violation = Some(e);
        }
    }
}

/// An explored server's transport: every AppendEntries or InstallSnapshot it sends
/// declares it leader of that term, which the election-safety check records; its first
/// RequestVote of a term starts an election, which is checked for disruption. Both are
/// seen here before any other server can learn of them.
struct Watched {
    inner: MemTransport<KvCommand, SimRuntime>,
    world: Arc<World>,
}

#[async_trait]
impl Transport<KvCommand> for Watched {
    async fn send(
        &self,
        to: NodeId,
        request: Request<KvCommand>,
    ) -> Result<Response, TransportError> {
        let (from, term) = (request.from(), request.term());
        if let Request::Vote(vote) = &request {
            self.world.record_campaign(from, term, vote.transfer);
        }
        if matches!(request, Request::Append(_) | Request::InstallSnapshot(_)) {
            self.world.record_leading(from, term);
            let mut state = self.world.lock();
            let mut verdict = state.observations.claim_leadership(from, term);
            if let Request::Append(append) = &request {
                let storage = state.nodes[index_of(from)].storage.clone();
                verdict = verdict.and_then(|()| {
                    state.observations.check_leader_commit(
                        from,
                        term,
                        append.leader_commit,
                        &storage,
                    )
                });
            }
            drop(state);
            if let Err(violation) = verdict {
                self.world.violation(violation);
            }
            if let Request::Append(append) = &request {
                self.world.observe_commit(from, append.leader_commit);
            }
        }
        let is_vote = matches!(request, Request::Vote(_));
        let reply = self.inner.send(to, request).await;
        if let (true, Ok(Response::Vote(vote))) = (is_vote, &reply)
            && vote.granted
        {
            let mut state = self.world.lock();
            let stored = state.nodes[index_of(to)].storage.hard_state();
            let verdict = state.observations.record_vote(to, from, term, stored);
            drop(state);
            if let Err(violation) = verdict {
                self.world.violation(violation);
            }
        }
        reply
    }
}

/// The key-value machine of an explored server: it records every apply for the safety
/// checks and snapshots itself every `snapshot_every` commands, from inside `apply`, or
/// leaves that to Raft's policy, streaming its state when asked. Its state is shared
/// with the clients, which read it directly after a read barrier.
struct CheckedKv {
    server: NodeId,
    /// This instance's [`Slot::crashed`].
    crashed: Arc<AtomicBool>,
    world: Arc<World>,
    kv: SharedKv,
    raft: Arc<OnceLock<KvRaft>>,
    since_snapshot: u64,
    applied_any: bool,
}

impl StateMachine<KvCommand> for CheckedKv {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let entry = Entry {
            term: log_id.term,
            index: log_id.index,
            payload: Payload::Command(command.clone()),
        };
        if !self.crashed.load(Ordering::SeqCst) {
            self.world.record_apply(self.server, &entry);
        }
        let response = self.kv.lock().await.apply(log_id, command).await;
        if matches!(response, KvResponse::AlreadyApplied { .. }) {
            self.world.violation(format!(
                "{} was handed {log_id} twice or out of order",
                self.server
            ));
        }
        self.applied_any = true;
        self.since_snapshot += 1;
        if !self.world.policy_snapshots
            && self.since_snapshot >= self.world.snapshot_every
            && let Some(raft) = self.raft.get()
            && let Ok(snapshot) = self.kv.lock().await.snapshot().await
        {
            let _ = raft.snapshot(snapshot.meta.last_included.index, snapshot.data);
            self.since_snapshot = 0;
            self.world.lock().stats.snapshots_taken += 1;
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.world.lock().stats.snapshots_taken += 1;
        self.kv.lock().await.snapshot().await
    }

    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        // A client reading the state holds the lock for a moment; Raft then awaits
        // `snapshot` instead.
        let source = self.kv.try_lock()?.capture_snapshot_stream()?;
        self.world.lock().stats.snapshots_taken += 1;
        Some(source)
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        {
            let mut state = self.world.lock();
            if self.applied_any {
                state.stats.snapshots_installed += 1;
            } else {
                state.stats.boot_restores += 1;
            }
        }
        self.applied_any = true;
        self.kv.lock().await.restore(snapshot).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

async fn run(world: Arc<World>, options: Options) -> Result<(), String> {
    let runtime = world.runtime.clone();
    for i in 0..world.n {
        world.start(i).await;
    }
    world.event(format!(
        "{} nodes, noop {}, inflight {}, batch {}, snapshot every {}{}, pieces of {} bytes ({} in flight){}",
        world.n,
        world.config.leader_noop,
        world.config.max_inflight_appends,
        world.config.max_append_entries,
        world.snapshot_every,
        if world.policy_snapshots {
            " by the policy"
        } else {
            ""
        },
        world.config.snapshot_chunk_size,
        world.config.snapshot_chunks_in_flight,
        options
            .planted_bug
            .map(|bug| format!(", planted bug {bug:?}"))
            .unwrap_or_default()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    // The checker keeps running through the heal phase, until the end.
    let finished = Arc::new(AtomicBool::new(false));
    let checker = {
        let world = Arc::clone(&world);
        let finished = Arc::clone(&finished);
        runtime.spawn(async move {
            while !finished.load(Ordering::Acquire) {
                world.check();
                world.sample_guard(CHECK_EVERY);
                world.runtime.sleep(CHECK_EVERY).await;
            }
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| runtime.spawn(client(Arc::clone(&world), c, Arc::clone(&stop))))
        .collect();

    let chaos_end = runtime.now() + options.chaos;
    while runtime.now() < chaos_end && world.violated().is_none() {
        let pause = world.random_range(50..600);
        runtime.sleep(Duration::from_millis(pause)).await;
        nemesis_step(&world, false).await;
        world.check();
    }
    if world.violated().is_none() && !options.quiet_tail.is_zero() {
        world.set_network(false, false);
        world.event("quiet network; links and servers still fail".into());
        let tail_end = runtime.now() + options.quiet_tail;
        while runtime.now() < tail_end && world.violated().is_none() {
            // Slower than the chaos, so that leaders keep their majority for a while
            // amid faults that leave it alone.
            let pause = world.random_range(200..1500);
            runtime.sleep(Duration::from_millis(pause)).await;
            nemesis_step(&world, true).await;
            world.check();
        }
    }

    let outcome = match world.violated() {
        Some(violation) => Err(violation),
        None => heal_and_converge(&world, &options, &stop).await,
    };
    stop.store(true, Ordering::Release);
    for client in clients {
        let _ = client.await;
    }
    finished.store(true, Ordering::Release);
    let _ = checker.await;
    world.check();
    outcome?;
    if let Some(violation) = world.violated() {
        return Err(violation);
    }
    let state = world.lock();
    if let Some(check) = state.change_checks.first() {
        return Err(check.never_due());
    }
    // Commits seen while their server's storage lagged its log are decided later; by
    // now every one must have been.
    let applied = state
        .nodes
        .iter()
        .filter_map(|slot| slot.raft.as_ref().map(|raft| raft.status().last_applied))
        .max()
        .unwrap_or_default();
    if state.observations.committed_upto() < applied {
        return Err(format!(
            "commit checks: applied up to {applied}, but only up to {} checked",
            state.observations.committed_upto()
        ));
    }
    drop(state);
    let history = world.lock().history.clone();
    linearizability::check(&history)
        .map_err(|violation| format!("linearizability: {violation}"))?;
    let mut state = world.lock();
    state.stats.elections = state.observations.terms_with_leaders() as u64;
    state.stats.applied_indices = state.observations.applied_indices() as u64;
    Ok(())
}

/// One action of the nemesis; with `quiet_network`, none that makes the network lossy or
/// reorder.
async fn nemesis_step(world: &Arc<World>, quiet_network: bool) {
    if world.membership_changes && world.chance(MEMBERSHIP_SHARE) {
        world.lock().stats.nemesis_steps += 1;
        membership::step(world).await;
        return;
    }
    // Faults fall on the servers that take part: not on a spare never started, nor on a
    // removed server shut down.
    let in_play = world.in_play();
    let other_than = |world: &World, x: usize| {
        let others: Vec<usize> = in_play.iter().copied().filter(|&o| o != x).collect();
        world.pick(&others)
    };
    let mut roll = world.random_range(0..112);
    while quiet_network && (76..=92).contains(&roll) {
        roll = world.random_range(0..112);
    }
    if world.transfer_probe && world.chance(1.0 / 3.0) {
        roll = TRANSFER;
    }
    world.lock().stats.nemesis_steps += 1;
    match roll {
        0..=11 => {
            world.set_links(world.all_links());
            world.event("heal all links".into());
        }
        12..=23 if in_play.len() > 1 => {
            // Two sides, each possibly of several servers.
            let mut order = in_play.clone();
            {
                let mut state = world.lock();
                for k in (1..order.len()).rev() {
                    let j = state.rng.random_range(0..=k);
                    order.swap(k, j);
                }
            }
            let cut = world.random_range(1..order.len() as u64) as usize;
            let side: BTreeSet<usize> = order[..cut].iter().copied().collect();
            let links = world
                .all_links()
                .into_iter()
                .filter(|(a, b)| side.contains(a) == side.contains(b))
                .collect();
            world.set_links(links);
            world.lock().stats.partitions += 1;
            world.event(format!("partition {side:?} | rest"));
        }
        24..=31 => {
            let Some(victim) = world.pick(&in_play) else {
                return;
            };
            let links = world.lock().links.clone();
            world.set_links(
                links
                    .into_iter()
                    .filter(|(a, b)| *a != victim && *b != victim)
                    .collect(),
            );
            world.lock().stats.isolations += 1;
            world.event(format!("isolate {}", node_id(victim)));
        }
        32..=39 => {
            let Some(from) = world.pick(&in_play) else {
                return;
            };
            let Some(to) = other_than(world, from) else {
                return;
            };
            let mut links = world.lock().links.clone();
            links.remove(&(from, to));
            world.set_links(links);
            world.lock().stats.one_way_cuts += 1;
            world.event(format!("cut {} -> {} one way", node_id(from), node_id(to)));
        }
        40..=44 => {
            let Some(a) = world.pick(&in_play) else {
                return;
            };
            let Some(b) = other_than(world, a) else {
                return;
            };
            let period = Duration::from_millis(world.random_range(30..300));
            let flips = world.random_range(4..30);
            world.lock().stats.flapping_links += 1;
            world.event(format!(
                "flap {} <-> {} every {period:?}",
                node_id(a),
                node_id(b)
            ));
            let world = Arc::clone(world);
            let _flapping = world.runtime.clone().spawn(async move {
                for flip in 0..flips {
                    world.runtime.sleep(period).await;
                    if world.healing.load(Ordering::Acquire) {
                        return;
                    }
                    let mut links = world.lock().links.clone();
                    for pair in [(a, b), (b, a)] {
                        if flip % 2 == 0 {
                            links.remove(&pair);
                        } else {
                            links.insert(pair);
                        }
                    }
                    world.set_links(links);
                }
            });
        }
        45..=50 => {
            let alive = world.alive();
            if alive.len() > 1 {
                let victim = alive[world.random_range(0..alive.len() as u64) as usize];
                world.crash(victim).await;
                world.lock().stats.crashes += 1;
                world.event(format!("crash {}", node_id(victim)));
            }
        }
        51..=56 => {
            // The leader, right now: what Figure 8 is made of.
            if let Some(leader) = leader_of(world) {
                world.crash(leader).await;
                world.lock().stats.crashes += 1;
                world.event(format!("crash the leader {}", node_id(leader)));
            }
        }
        57..=62 => {
            // Down and straight back up: whatever it had not persisted is gone.
            let alive = world.alive();
            if !alive.is_empty() {
                let victim = alive[world.random_range(0..alive.len() as u64) as usize];
                world.crash(victim).await;
                world.start(victim).await;
                let mut state = world.lock();
                state.stats.crashes += 1;
                state.stats.restarts += 1;
                drop(state);
                world.event(format!("bounce {}", node_id(victim)));
            }
        }
        63..=70 => {
            let dead = world.dead();
            if !dead.is_empty() {
                let back = dead[world.random_range(0..dead.len() as u64) as usize];
                world.start(back).await;
                world.lock().stats.restarts += 1;
                world.event(format!("restart {}", node_id(back)));
            }
        }
        71..=75 => {
            // Long enough that the others move past it and compact their logs.
            let Some(victim) = world.pick(&in_play) else {
                return;
            };
            let outage = Duration::from_millis(world.random_range(2000..6000));
            let crash = world.chance(0.5);
            world.lock().stats.long_outages += 1;
            world.event(format!(
                "long outage of {} for {outage:?} ({})",
                node_id(victim),
                if crash { "down" } else { "cut off" }
            ));
            if crash {
                world.crash(victim).await;
            } else {
                let links = world.lock().links.clone();
                world.set_links(
                    links
                        .into_iter()
                        .filter(|(a, b)| *a != victim && *b != victim)
                        .collect(),
                );
            }
            let world = Arc::clone(world);
            let _outage = world.runtime.clone().spawn(async move {
                world.runtime.sleep(outage).await;
                if world.healing.load(Ordering::Acquire) {
                    return;
                }
                if crash && world.dead().contains(&victim) {
                    world.start(victim).await;
                } else if !crash {
                    let mut links = world.lock().links.clone();
                    for other in (0..world.n).filter(|&o| o != victim) {
                        links.insert((victim, other));
                        links.insert((other, victim));
                    }
                    world.set_links(links);
                }
                world.event(format!("end of the outage of {}", node_id(victim)));
            });
        }
        76..=85 => {
            let reliable = world.chance(0.5);
            let reordering = world.lock().in_order_since.is_none();
            world.set_network(!reliable, reordering);
            if !reliable {
                world.lock().stats.unreliable_periods += 1;
            }
            world.event(format!(
                "network {}",
                if reliable { "reliable" } else { "lossy" }
            ));
        }
        86..=92 => {
            let reorder = world.chance(0.4);
            let lossy = world.lock().lossless_since.is_none();
            world.set_network(lossy, reorder);
            if reorder {
                world.lock().stats.reordering_periods += 1;
            }
            world.event(format!("long reordering {reorder}"));
        }
        93..=99 => {
            let duplicate = world.chance(0.5);
            world.net.set_duplication(if duplicate { 150 } else { 0 });
            if duplicate {
                world.lock().stats.duplication_periods += 1;
            }
            world.event(format!("duplication {duplicate}"));
        }
        TRANSFER..=105 => {
            // Hand leadership to another server, at random: perhaps one that is behind,
            // cut off or down.
            if let Some(leader) = leader_of(world)
                && let Some(raft) = world.handle(leader)
            {
                let Some(to) = other_than(world, leader) else {
                    return;
                };
                if world.transfer_probe {
                    let mut links = world.lock().links.clone();
                    links.remove(&(to, leader));
                    world.set_links(links);
                    world.set_network(false, true);
                    world.event(format!(
                        "cut {} -> {} one way, long reordering true",
                        node_id(to),
                        node_id(leader)
                    ));
                }
                transfer(world, &raft, to).await;
            }
        }
        _ => {
            let pause = Duration::from_millis(world.random_range(500..3000));
            let until = world.runtime.now() + pause;
            let mut state = world.lock();
            state.clients_idle_until = state.clients_idle_until.max(until);
            state.stats.idle_periods += 1;
            drop(state);
            world.event(format!("clients pause for {pause:?}"));
        }
    }
}

/// The nemesis' first roll that starts a leadership transfer.
const TRANSFER: u64 = 100;
/// The share of the nemesis' actions that change the membership.
const MEMBERSHIP_SHARE: f64 = 0.15;

/// Asks `leader` to hand leadership to server `to`, and follows whether `to` leads a
/// newer term within two election timeouts.
async fn transfer(world: &Arc<World>, leader: &KvRaft, to: usize) {
    let term = leader.status().term;
    // Subscribed before the transfer starts, so that no change is missed.
    let watch = world.handle(to).map(|target| target.watch_leadership());
    let outcome = timeout(
        &world.runtime,
        CLIENT_TIMEOUT,
        leader.transfer_leadership(node_id(to)),
    )
    .await;
    let what = format!("transfer leadership {} -> {}", leader.id(), node_id(to));
    match outcome {
        Ok(Ok(())) => {
            world.lock().stats.transfers += 1;
            world.event(what);
            let Some(mut watch) = watch else {
                return;
            };
            let world = Arc::clone(world);
            let old_leader = leader.id();
            let _follow = world.runtime.clone().spawn(async move {
                let limit = 2 * world.config.election_timeout_max;
                let led = timeout(&world.runtime, limit, async move {
                    let mut now = watch.current();
                    loop {
                        if now.role == RoleKind::Leader && now.term > term {
                            return true;
                        }
                        match watch.changed().await {
                            Some(next) => now = next,
                            None => return false,
                        }
                    }
                })
                .await;
                if led == Ok(true) {
                    world.lock().stats.transfers_completed += 1;
                    world.event(format!("{} leads after the transfer", node_id(to)));
                    if world.transfer_probe {
                        let value = format!("probe-{}", world.runtime.now().as_micros());
                        let put = KvCommand::Put {
                            key: "k0".into(),
                            value: value.as_str().into(),
                        };
                        record_op(&world, 98, to, put, "k0", Event::Put(value)).await;
                        record_read(&world, 98, index_of(old_leader), "k0").await;
                    }
                }
            });
        }
        Ok(Err(refused)) => {
            world.lock().stats.transfers_refused += 1;
            world.event(format!("{what} refused: {refused}"));
        }
        Err(elapsed) => {
            world.lock().stats.transfers_refused += 1;
            world.event(format!("{what} unanswered: {elapsed}"));
        }
    }
}

/// Heals everything, then requires the cluster to elect a leader, serve, and converge.
async fn heal_and_converge(
    world: &Arc<World>,
    options: &Options,
    stop: &AtomicBool,
) -> Result<(), String> {
    let runtime = world.runtime.clone();
    world.healing.store(true, Ordering::Release);
    stop.store(true, Ordering::Release);
    world.set_network(false, false);
    world.net.set_duplication(0);
    world.set_links(world.all_links());
    for i in world.dead() {
        world.start(i).await;
    }
    world.event("heal: all up, all links, reliable".into());
    let deadline = runtime.now() + options.heal_limit;

    // Serve: one write must succeed, and then every key is read through the log.
    let probe = format!("final-{}", world.seed);
    let written = loop {
        if runtime.now() > deadline {
            return Err(format!(
                "liveness: no write succeeded within {:?} of healing",
                options.heal_limit
            ));
        }
        if let Some(leader) = leader_of(world) {
            let put = KvCommand::Put {
                key: "k0".into(),
                value: probe.as_str().into(),
            };
            if let Some(observed) =
                record_op(world, 99, leader, put, "k0", Event::Put(probe.clone())).await
            {
                break observed;
            }
        }
        runtime.sleep(Duration::from_millis(50)).await;
    };
    let _ = written;
    for k in 0..KEYS {
        let key = format!("k{k}");
        loop {
            if runtime.now() > deadline {
                return Err(format!(
                    "liveness: reads did not succeed within {:?} of healing",
                    options.heal_limit
                ));
            }
            if let Some(leader) = leader_of(world)
                && record_op(
                    world,
                    99,
                    leader,
                    KvCommand::Get {
                        key: key.as_str().into(),
                    },
                    &key,
                    Event::Get,
                )
                .await
                .is_some()
            {
                break;
            }
            runtime.sleep(Duration::from_millis(50)).await;
        }
    }

    // Converge: every member of the leader's configuration, once it is committed and no
    // change is under way, runs and applies everything committed (servers removed and
    // left running are not members: they may be stale for ever). A leader commits
    // entries of earlier terms only through one of its own (§5.4.2), so without the
    // blank entry of `leader_noop` a client must keep writing, as real ones do.
    let mut barrier = 0u64;
    let mut last_barrier = runtime.now();
    let members = loop {
        let members = settled_members(world);
        for &i in members.iter().flatten() {
            if world.handle(i).is_none() {
                world.event(format!("heal: start the member {}", node_id(i)));
                world.start(i).await;
            }
        }
        let statuses: Vec<_> = members
            .iter()
            .flatten()
            .filter_map(|&i| world.handle(i))
            .map(|raft| raft.status())
            .collect();
        let commit = statuses
            .iter()
            .map(|s| s.commit_index)
            .max()
            .unwrap_or_default();
        let last = statuses
            .iter()
            .map(|s| s.last_log)
            .max()
            .unwrap_or_default();
        if let Some(members) = &members
            && statuses.len() == members.len()
            && statuses
                .iter()
                .all(|s| s.last_applied == commit && s.commit_index == commit && s.last_log == last)
        {
            world.event(format!("converged at {commit}: members {members:?}"));
            break members.clone();
        }
        if runtime.now() > deadline {
            let leader = leader_of(world).and_then(|l| world.handle(l));
            return Err(format!(
                "liveness: servers did not converge within {:?} (members {members:?}, leader {:?}): {statuses:?}",
                options.heal_limit,
                leader.map(|raft| raft.status())
            ));
        }
        if runtime.now() - last_barrier > Duration::from_millis(300)
            && let Some(leader) = leader_of(world)
        {
            barrier += 1;
            last_barrier = runtime.now();
            let value = format!("barrier-{barrier}");
            let put = KvCommand::Put {
                key: "k0".into(),
                value: value.as_str().into(),
            };
            record_op(world, 99, leader, put, "k0", Event::Put(value)).await;
        }
        runtime.sleep(Duration::from_millis(20)).await;
    };

    // Every member serves reads without the log: each key, at each member.
    for target in members {
        for k in 0..KEYS {
            let key = format!("k{k}");
            loop {
                if runtime.now() > deadline {
                    let leader = leader_of(world).and_then(|l| world.handle(l));
                    return Err(format!(
                        "liveness: {} did not serve a read of {key} through read_barrier within {:?} of healing (its status {:?}; the leader's {:?})",
                        node_id(target),
                        options.heal_limit,
                        world.handle(target).map(|raft| raft.status()),
                        leader.map(|raft| raft.status())
                    ));
                }
                // A change asked just before the heal may have committed since the
                // members settled: a server it removed need not serve.
                if settled_members(world).is_some_and(|now| !now.contains(&target)) {
                    world.event(format!("{} is no longer a member", node_id(target)));
                    break;
                }
                match record_read(world, 99, target, &key).await {
                    Some(ReadOutcome::Read(_)) => break,
                    // A leader serves reads once an entry of its term commits; without
                    // `leader_noop` that takes a client's write. (A follower whose leader
                    // is not ready yet is refused as if it had no leader.)
                    Some(ReadOutcome::Refused(refused)) => {
                        world.event(format!("read at {} refused: {refused}", node_id(target)));
                        if let Some(leader) = leader_of(world) {
                            barrier += 1;
                            let value = format!("barrier-{barrier}");
                            let put = KvCommand::Put {
                                key: "k0".into(),
                                value: value.as_str().into(),
                            };
                            record_op(world, 99, leader, put, "k0", Event::Put(value)).await;
                        }
                    }
                    _ => {}
                }
                runtime.sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(())
}

/// The members of the leader's configuration, if it is committed and not joint (no
/// change under way).
fn settled_members(world: &World) -> Option<BTreeSet<usize>> {
    let status = world.handle(leader_of(world)?)?.status();
    (status.membership == status.committed_membership && !status.membership.is_joint()).then(|| {
        status
            .membership
            .nodes
            .keys()
            .map(|&id| index_of(id))
            .collect()
    })
}

/// The running server that leads the highest term, if any (a leader cut off, or one
/// that was removed, may still think it leads an older one).
fn leader_of(world: &World) -> Option<usize> {
    (0..world.n)
        .filter_map(|i| {
            let status = world.handle(i)?.status();
            (status.role == RoleKind::Leader).then_some((status.term, i))
        })
        .max()
        .map(|(_, i)| i)
}

/// Proposes `command` on server `target` and records it in the history. Returns what it
/// observed if it completed.
async fn record_op(
    world: &Arc<World>,
    client: u64,
    target: usize,
    command: KvCommand,
    key: &str,
    event: Event,
) -> Option<Option<String>> {
    let raft = world.handle(target)?;
    let crashed = Arc::clone(&world.lock().nodes[target].crashed);
    let is_read = event == Event::Get;
    let ticket = {
        let mut state = world.lock();
        let at = world.stamp(&mut state);
        state.history.invoke(client, key, event, at)
    };
    let outcome = timeout(&world.runtime, CLIENT_TIMEOUT, raft.propose(command)).await;
    let mut state = world.lock();
    let at = world.stamp(&mut state);
    match outcome {
        // The server crashed before it answered: after a real crash the client would
        // never hear back, so the operation stays open (it may or may not have been
        // applied).
        Ok(Ok(_)) if crashed.load(Ordering::SeqCst) => {
            state.stats.ops_unknown += 1;
            None
        }
        Ok(Ok(response)) => {
            let observed = match response {
                KvResponse::Value(v) | KvResponse::Replaced(v) | KvResponse::Removed(v) => {
                    v.map(|v| v.to_string())
                }
                KvResponse::AlreadyApplied { .. } => None,
            };
            state.history.complete(ticket, observed.clone(), at);
            state.stats.ops_ok += 1;
            state.stats.reads_log += u64::from(is_read);
            Some(observed)
        }
        Ok(Err(
            ProposeError::NotLeader { .. }
            | ProposeError::Lost { .. }
            | ProposeError::TransferInProgress { .. },
        )) => {
            state.history.discard(ticket);
            state.stats.ops_refused += 1;
            None
        }
        // Anything else (outcome unknown, stopped, a kind of error added later) may have
        // been applied: the history keeps the operation open.
        Ok(Err(_)) | Err(_) => {
            state.stats.ops_unknown += 1;
            None
        }
    }
}

/// How a read without the log ended.
enum ReadOutcome {
    /// It read this value.
    Read(Option<String>),
    /// The server refused it.
    Refused(ReadError),
    /// No answer came in time.
    Unanswered,
}

/// Reads `key` on server `target` without the log: `read_barrier`, then a direct read of
/// that server's own key-value state. The history records it like any read: invoked
/// before the barrier, completed after the local read. `None` if `target` is down.
async fn record_read(
    world: &Arc<World>,
    client: u64,
    target: usize,
    key: &str,
) -> Option<ReadOutcome> {
    let (raft, kv) = {
        let state = world.lock();
        let slot = &state.nodes[target];
        (slot.raft.clone()?, slot.kv.clone()?)
    };
    let at_leader = raft.status().role == RoleKind::Leader;
    let ticket = {
        let mut state = world.lock();
        let at = world.stamp(&mut state);
        state.history.invoke(client, key, Event::Get, at)
    };
    let barrier = async {
        match world.planted_bug {
            Some(PlantedBug::ReadWithoutBarrier) => Ok(LogIndex::ZERO),
            Some(PlantedBug::ReadWithoutWaitingForApply) => raft.read_index().await,
            _ => raft.read_barrier().await,
        }
    };
    let outcome = match timeout(&world.runtime, CLIENT_TIMEOUT, barrier).await {
        Ok(Ok(_)) => ReadOutcome::Read(kv.lock().await.get(key).map(str::to_string)),
        Ok(Err(refused)) => ReadOutcome::Refused(refused),
        Err(_) => ReadOutcome::Unanswered,
    };
    let mut state = world.lock();
    let at = world.stamp(&mut state);
    match &outcome {
        ReadOutcome::Read(value) => {
            state.history.complete(ticket, value.clone(), at);
            state.stats.ops_ok += 1;
            if world.config.lease_reads {
                state.stats.reads_lease += 1;
            } else {
                state.stats.reads_index += 1;
            }
            state.stats.reads_on_followers += u64::from(!at_leader);
        }
        // A read that returned nothing had no effect either way.
        ReadOutcome::Refused(_) => {
            state.history.discard(ticket);
            state.stats.ops_refused += 1;
        }
        ReadOutcome::Unanswered => {
            state.history.discard(ticket);
            state.stats.ops_unknown += 1;
        }
    }
    Some(outcome)
}

/// The leader to try after an operation on `target` failed: the one `target` knows of,
/// if it is another server.
fn leader_after_failure(world: &World, target: usize) -> Option<usize> {
    world
        .handle(target)
        .and_then(|raft| raft.status().leader)
        .map(index_of)
        .filter(|&l| l != target)
}

/// A client: random puts, deletes and reads on a few keys. Writes and reads through the
/// log go to the leader it believes in; reads without the log go there or, half the
/// time, to any running server.
async fn client(world: Arc<World>, id: u64, stop: Arc<AtomicBool>) {
    let mut leader: Option<usize> = None;
    let mut counter = 0u64;
    while !stop.load(Ordering::Acquire) {
        let idle_until = world.lock().clients_idle_until;
        let now = world.runtime.now();
        if now < idle_until {
            // Paused by the nemesis; back within 50 ms of the end, or of the heal.
            world
                .runtime
                .sleep((idle_until - now).min(Duration::from_millis(50)))
                .await;
            continue;
        }
        let key = format!("k{}", world.random_range(0..KEYS));
        let roll = world.random_range(0..100);
        let alive = world.alive();
        let any_alive = |world: &World| alive[world.random_range(0..alive.len() as u64) as usize];
        let target = match leader.filter(|l| alive.contains(l)) {
            Some(l) => Some(l),
            None if alive.is_empty() => None,
            None => Some(any_alive(&world)),
        };
        if let Some(target) = target {
            let operation = match roll {
                0..=44 => {
                    counter += 1;
                    let value = format!("c{id}-{counter}");
                    Some((
                        KvCommand::Put {
                            key: key.as_str().into(),
                            value: value.as_str().into(),
                        },
                        Event::Put(value),
                    ))
                }
                45..=59 => Some((
                    KvCommand::Get {
                        key: key.as_str().into(),
                    },
                    Event::Get,
                )),
                60..=84 => None,
                _ => Some((
                    KvCommand::Delete {
                        key: key.as_str().into(),
                    },
                    Event::Delete,
                )),
            };
            match operation {
                Some((command, event)) => {
                    match record_op(&world, id, target, command, &key, event).await {
                        Some(_) => leader = Some(target),
                        None => leader = leader_after_failure(&world, target),
                    }
                }
                None if world.chance(0.5) => {
                    record_read(&world, id, any_alive(&world), &key).await;
                }
                // A server that is not the leader serves reads too: only a failure says
                // something about who leads.
                None => match record_read(&world, id, target, &key).await {
                    Some(ReadOutcome::Read(_)) => {}
                    Some(ReadOutcome::Refused(ReadError::NotLeader {
                        leader_hint: Some(hint),
                    })) if index_of(hint) != target => leader = Some(index_of(hint)),
                    _ => leader = leader_after_failure(&world, target),
                },
            }
        }
        let pause = world.random_range(5..60);
        world.runtime.sleep(Duration::from_millis(pause)).await;
    }
}
