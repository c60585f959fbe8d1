//! The random fault explorer: per seed, a cluster of 3–7 nodes under a client workload
//! and a nemesis, checked against Raft's safety properties after every step, then healed
//! and required to converge and serve, with the clients' history checked for
//! linearizability.
//!
//! Everything derives from the seed (the cluster's size and settings, the nemesis, the
//! clients, the network's faults, the scheduling), so a failing seed replays exactly:
//! run [`replay_command`]'s command.
//!
//! ```no_run
//! use raft_tests::sim::explorer::{Options, explore};
//!
//! let exploration = explore(7, &Options::default()).unwrap();
//! println!("{:?}", exploration.stats);
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use raft_impl::core::RoleKind;
use raft_impl::{Config, Parts, ProposeError, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage, MemTransport};
use raft_traits::{
    Entry, LogId, NodeId, Payload, Request, Response, Runtime, Snapshot, StateMachine,
    StateMachineError, Term, Transport, TransportError, async_trait, timeout,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::invariants::{Observations, check_log_matching};
use super::linearizability::{self, Event, History};
use super::planted::{Planted, PlantedBug};
use super::runtime::{SimRuntime, Simulation};

/// What an exploration does besides what its seed decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A known bug to plant in every node, to show the checks catch it.
    pub planted_bug: Option<PlantedBug>,
    /// How long (virtual time) the nemesis and the clients run.
    pub chaos: Duration,
    /// How long (virtual time) the healed cluster has to converge and serve.
    pub heal_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            planted_bug: None,
            chaos: Duration::from_secs(15),
            heal_limit: Duration::from_secs(30),
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
            (&mut self.elections, other.elections),
            (&mut self.snapshots_taken, other.snapshots_taken),
            (&mut self.snapshots_installed, other.snapshots_installed),
            (&mut self.boot_restores, other.boot_restores),
            (&mut self.ops_ok, other.ops_ok),
            (&mut self.ops_refused, other.ops_refused),
            (&mut self.ops_unknown, other.ops_unknown),
            (&mut self.applied_indices, other.applied_indices),
            (&mut self.checks, other.checks),
        ];
        for (total, value) in fields {
            *total += value;
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "faults: {} partitions, {} isolations, {} one-way cuts, {} flapping links, {} crashes / {} restarts, {} long outages, {} lossy / {} reordering / {} duplicating periods; \
             elections: {}; snapshots: {} taken, {} installed, {} restored at boot; \
             ops: {} ok, {} refused, {} unknown; {} indices applied; {} invariant checks",
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
            self.elections,
            self.snapshots_taken,
            self.snapshots_installed,
            self.boot_restores,
            self.ops_ok,
            self.ops_refused,
            self.ops_unknown,
            self.applied_indices,
            self.checks
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
        write!(f, "replay: {}", replay_command(self.seed))
    }
}

/// The command that replays the exploration of `seed`.
pub fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test --release -p raft-tests --test sim -- explorer_replay --nocapture"
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

/// The simulated cluster and everything recorded about it.
struct World {
    seed: u64,
    runtime: SimRuntime,
    net: MemNetwork<KvCommand, SimRuntime>,
    n: usize,
    config: Config,
    /// The bug planted in every node's storage, if any.
    planted_bug: Option<PlantedBug>,
    snapshot_every: u64,
    /// Set once the heal phase starts: flapping and outages stop meddling.
    healing: AtomicBool,
    state: Mutex<State>,
}

struct State {
    nodes: Vec<Slot>,
    /// The enabled links `(from, to)` by server number.
    links: BTreeSet<(usize, usize)>,
    observations: Observations,
    history: History,
    stats: Stats,
    events: VecDeque<String>,
    event_hash: u64,
    violation: Option<String>,
    rng: StdRng,
    /// The highest term published by an instance that has since crashed.
    crashed_terms: Term,
}

struct Slot {
    raft: Option<KvRaft>,
    storage: MemStorage<KvCommand>,
    incarnation: u64,
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
        let n = rng.random_range(3..=7usize);
        let config = Config::default()
            .with_leader_noop(rng.random_bool(0.5))
            .with_max_inflight_appends(rng.random_range(1..=4))
            .with_max_append_entries(rng.random_range(1..=64))
            .with_install_snapshot_timeout(Duration::from_millis(rng.random_range(200..2000)));
        let snapshot_every = rng.random_range(5..40);
        let net = MemNetwork::new(runtime.clone(), mix(seed, 2));
        net.set_long_delays(false);
        let nodes = (0..n)
            .map(|_| Slot {
                raft: None,
                storage: MemStorage::new(),
                incarnation: 0,
            })
            .collect();
        let links = (0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
        World {
            seed,
            runtime,
            net,
            n,
            config,
            planted_bug: options.planted_bug,
            snapshot_every,
            healing: AtomicBool::new(false),
            state: Mutex::new(State {
                nodes,
                links,
                observations: Observations::default(),
                history: History::default(),
                stats: Stats {
                    nodes: n as u64,
                    ..Stats::default()
                },
                events: VecDeque::new(),
                event_hash: 0,
                violation: None,
                rng,
                crashed_terms: Term::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.runtime.now().as_micros()).unwrap_or(u64::MAX)
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

    fn dead(&self) -> Vec<usize> {
        let state = self.lock();
        (0..self.n)
            .filter(|&i| state.nodes[i].raft.is_none())
            .collect()
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
        self.lock().links = links;
        self.apply_links();
    }

    fn all_links(&self) -> BTreeSet<(usize, usize)> {
        (0..self.n)
            .flat_map(|a| (0..self.n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect()
    }

    async fn start(self: &Arc<Self>, i: usize) {
        let (storage, incarnation) = {
            let mut state = self.lock();
            let slot = &mut state.nodes[i];
            slot.incarnation += 1;
            slot.storage = slot.storage.copy();
            (slot.storage.clone(), slot.incarnation)
        };
        let transport = Watched {
            inner: self.net.transport(node_id(i)),
            world: Arc::clone(self),
        };
        let handle = Arc::new(OnceLock::new());
        let state_machine = CheckedKv {
            server: node_id(i),
            world: Arc::clone(self),
            kv: KvStateMachine::new(),
            raft: Arc::clone(&handle),
            since_snapshot: 0,
            applied_any: false,
        };
        let config = self
            .config
            .clone()
            .with_seed(Some(mix(self.seed, 1000 + (i as u64) * 1000 + incarnation)));
        let members = (0..self.n).map(node_id);
        let parts = Parts {
            runtime: self.runtime.clone(),
            storage: Planted::new(storage, self.planted_bug),
            state_machine,
            transport,
        };
        let raft = match Raft::spawn(node_id(i), members, config, parts).await {
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
        self.lock().nodes[i].raft = Some(raft);
        self.apply_links();
    }

    async fn crash(&self, i: usize) {
        let raft = {
            let mut state = self.lock();
            let slot = &mut state.nodes[i];
            // What survives is what was stored by now; later writes of the dying instance
            // go to a copy nobody reads.
            slot.storage = slot.storage.copy();
            let raft = slot.raft.take();
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
        for i in 0..self.n {
            let slot = &state.nodes[i];
            logs.push((node_id(i), slot.storage.log()));
            if let Some(raft) = &slot.raft {
                let status = raft.status();
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
    }

    fn record_apply(&self, server: NodeId, entry: &Entry<KvCommand>) {
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
/// declares it leader of that term, which the election-safety check records.
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
        if matches!(request, Request::Append(_) | Request::InstallSnapshot(_)) {
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
/// checks and snapshots itself every `snapshot_every` commands, from inside `apply`.
struct CheckedKv {
    server: NodeId,
    world: Arc<World>,
    kv: KvStateMachine,
    raft: Arc<OnceLock<KvRaft>>,
    since_snapshot: u64,
    applied_any: bool,
}

#[async_trait]
impl StateMachine<KvCommand> for CheckedKv {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let entry = Entry {
            term: log_id.term,
            index: log_id.index,
            payload: Payload::Command(command.clone()),
        };
        self.world.record_apply(self.server, &entry);
        let response = self.kv.apply(log_id, command).await;
        if matches!(response, KvResponse::AlreadyApplied { .. }) {
            self.world.violation(format!(
                "{} was handed {log_id} twice or out of order",
                self.server
            ));
        }
        self.applied_any = true;
        self.since_snapshot += 1;
        if self.since_snapshot >= self.world.snapshot_every
            && let Some(raft) = self.raft.get()
            && let Ok(snapshot) = self.kv.snapshot().await
        {
            let _ = raft.snapshot(snapshot.meta.last_included.index, snapshot.data);
            self.since_snapshot = 0;
            self.world.lock().stats.snapshots_taken += 1;
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.kv.snapshot().await
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
        self.kv.restore(snapshot).await
    }
}

async fn run(world: Arc<World>, options: Options) -> Result<(), String> {
    let runtime = world.runtime.clone();
    for i in 0..world.n {
        world.start(i).await;
    }
    world.event(format!(
        "{} nodes, noop {}, inflight {}, batch {}, snapshot every {}{}",
        world.n,
        world.config.leader_noop,
        world.config.max_inflight_appends,
        world.config.max_append_entries,
        world.snapshot_every,
        options
            .planted_bug
            .map(|bug| format!(", planted bug {bug:?}"))
            .unwrap_or_default()
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let world = Arc::clone(&world);
        let stop = Arc::clone(&stop);
        runtime.spawn(async move {
            while !stop.load(Ordering::Acquire) {
                world.check();
                world.runtime.sleep(Duration::from_millis(20)).await;
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
        nemesis_step(&world).await;
        world.check();
    }

    let outcome = match world.violated() {
        Some(violation) => Err(violation),
        None => heal_and_converge(&world, &options, &stop).await,
    };
    stop.store(true, Ordering::Release);
    for client in clients {
        let _ = client.await;
    }
    let _ = checker.await;
    world.check();
    outcome?;
    if let Some(violation) = world.violated() {
        return Err(violation);
    }
    let history = world.lock().history.clone();
    linearizability::check(&history)
        .map_err(|violation| format!("linearizability: {violation}"))?;
    let mut state = world.lock();
    state.stats.elections = state.observations.terms_with_leaders() as u64;
    state.stats.applied_indices = state.observations.applied_indices() as u64;
    Ok(())
}

/// One action of the nemesis.
async fn nemesis_step(world: &Arc<World>) {
    let n = world.n;
    let roll = world.random_range(0..100);
    world.lock().stats.nemesis_steps += 1;
    match roll {
        0..=11 => {
            world.set_links(world.all_links());
            world.event("heal all links".into());
        }
        12..=23 => {
            // Two sides, each possibly of several servers.
            let mut order: Vec<usize> = (0..n).collect();
            {
                let mut state = world.lock();
                for k in (1..n).rev() {
                    let j = state.rng.random_range(0..=k);
                    order.swap(k, j);
                }
            }
            let cut = world.random_range(1..n as u64) as usize;
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
            let victim = world.random_range(0..n as u64) as usize;
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
            let from = world.random_range(0..n as u64) as usize;
            let to = (from + 1 + world.random_range(0..n as u64 - 1) as usize) % n;
            let mut links = world.lock().links.clone();
            links.remove(&(from, to));
            world.set_links(links);
            world.lock().stats.one_way_cuts += 1;
            world.event(format!("cut {} -> {} one way", node_id(from), node_id(to)));
        }
        40..=44 => {
            let a = world.random_range(0..n as u64) as usize;
            let b = (a + 1 + world.random_range(0..n as u64 - 1) as usize) % n;
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
            let victim = world.random_range(0..n as u64) as usize;
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
                if crash && world.handle(victim).is_none() {
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
            world.net.set_reliable(reliable);
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
            world.net.set_long_reordering(reorder);
            if reorder {
                world.lock().stats.reordering_periods += 1;
            }
            world.event(format!("long reordering {reorder}"));
        }
        _ => {
            let duplicate = world.chance(0.5);
            world.net.set_duplication(if duplicate { 150 } else { 0 });
            if duplicate {
                world.lock().stats.duplication_periods += 1;
            }
            world.event(format!("duplication {duplicate}"));
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
    world.net.set_reliable(true);
    world.net.set_long_reordering(false);
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

    // Converge: every server applies everything committed. A leader commits entries of
    // earlier terms only through one of its own (§5.4.2), so without the blank entry of
    // `leader_noop` a client must keep writing, as real ones do.
    let mut barrier = 0u64;
    let mut last_barrier = runtime.now();
    loop {
        let statuses: Vec<_> = (0..world.n)
            .filter_map(|i| world.handle(i))
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
        if statuses.len() == world.n
            && statuses
                .iter()
                .all(|s| s.last_applied == commit && s.commit_index == commit && s.last_log == last)
        {
            world.event(format!("converged at {commit}"));
            return Ok(());
        }
        if runtime.now() > deadline {
            return Err(format!(
                "liveness: servers did not converge within {:?}: {statuses:?}",
                options.heal_limit
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
    }
}

fn leader_of(world: &World) -> Option<usize> {
    (0..world.n).find(|&i| {
        world
            .handle(i)
            .is_some_and(|raft| raft.status().role == RoleKind::Leader)
    })
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
    let ticket = {
        let at = world.now_micros();
        world.lock().history.invoke(client, key, event, at)
    };
    let outcome = timeout(&world.runtime, CLIENT_TIMEOUT, raft.propose(command)).await;
    let at = world.now_micros();
    let mut state = world.lock();
    match outcome {
        Ok(Ok(response)) => {
            let observed = match response {
                KvResponse::Value(v) | KvResponse::Replaced(v) | KvResponse::Removed(v) => {
                    v.map(|v| v.to_string())
                }
                KvResponse::AlreadyApplied { .. } => None,
            };
            state.history.complete(ticket, observed.clone(), at);
            state.stats.ops_ok += 1;
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

/// A client: random puts, gets and deletes on a few keys, at the leader it believes in.
async fn client(world: Arc<World>, id: u64, stop: Arc<AtomicBool>) {
    let mut leader: Option<usize> = None;
    let mut counter = 0u64;
    while !stop.load(Ordering::Acquire) {
        let key = format!("k{}", world.random_range(0..KEYS));
        let (command, event) = match world.random_range(0..100) {
            0..=49 => {
                counter += 1;
                let value = format!("c{id}-{counter}");
                (
                    KvCommand::Put {
                        key: key.as_str().into(),
                        value: value.as_str().into(),
                    },
                    Event::Put(value),
                )
            }
            50..=84 => (
                KvCommand::Get {
                    key: key.as_str().into(),
                },
                Event::Get,
            ),
            _ => (
                KvCommand::Delete {
                    key: key.as_str().into(),
                },
                Event::Delete,
            ),
        };
        let alive = world.alive();
        let target = match leader.filter(|l| alive.contains(l)) {
            Some(l) => Some(l),
            None if alive.is_empty() => None,
            None => Some(alive[world.random_range(0..alive.len() as u64) as usize]),
        };
        if let Some(target) = target {
            match record_op(&world, id, target, command, &key, event).await {
                Some(_) => leader = Some(target),
                None => {
                    leader = world
                        .handle(target)
                        .and_then(|raft| raft.status().leader)
                        .map(|l| (l.0 - 1) as usize)
                        .filter(|&l| l != target);
                }
            }
        }
        let pause = world.random_range(5..60);
        world.runtime.sleep(Duration::from_millis(pause)).await;
    }
}
