//! [`Cluster`]: the lab's test object. It owns N servers on one in-memory network, changes
//! the topology, crashes and restarts servers, and checks what they agreed on.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{MemNetwork, MemStorage};
use raft_traits::{JoinHandle, Membership, NodeId, Runtime};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::applier::{AppliedRecord, LabApplier, LabRaft};
use super::value::Value;
use super::{ClusterSpec, ELECTION_TIMEOUT, TEST_TIME_LIMIT};

/// How long the harness waits for a node's `shutdown` before it declares the node stuck.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// Salts that derive independent seeds from the test's seed.
const NETWORK_SALT: u64 = 1;
const TEST_RNG_SALT: u64 = 2;
const NODE_SALT: u64 = 1 << 32;

/// One of the lab's clusters: the `config` (S24) or `Test` (S25) object of a scenario.
///
/// Servers are numbered `0..n`, as in the lab. The harness keeps, per server, its node
/// (absent while crashed), the storage the node persists into (after a crash: the copy the
/// next instance will start from), and whether it is connected. The checkers look only at
/// servers that are connected and alive, and never call into a crashed one.
///
/// Every checker panics on failure, which fails the test: there is no error to handle.
/// The clone is cheap and drives the same cluster, so scenario code can move clones into
/// concurrent tasks ([`spawn`](Self::spawn)).
///
/// Build one with [`run`](super::run), which also cleans it up.
pub struct Cluster<Rt: Runtime> {
    inner: Arc<Inner<Rt>>,
}

impl<Rt: Runtime> Clone for Cluster<Rt> {
    fn clone(&self) -> Self {
        Cluster {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<Rt: Runtime> {
    n: usize,
    seed: u64,
    snapshots: bool,
    /// Whether the servers run pre-vote and check-quorum.
    robust: bool,
    /// Servers `0..members` form the bootstrap configuration; the others join later.
    members: usize,
    /// Whether the cluster was made with a reliable network.
    reliable: bool,
    runtime: Rt,
    net: MemNetwork<Value, Rt>,
    record: AppliedRecord,
    servers: Mutex<Vec<Server>>,
    /// Serialises crashes and restarts, which await between their steps.
    lifecycle: futures::lock::Mutex<()>,
    rng: Mutex<StdRng>,
    /// When the cluster was made, on its runtime's clock.
    created: Duration,
    begun: Mutex<Option<Begun>>,
    finished: AtomicBool,
    next_instance: AtomicU64,
}

/// The harness's view of one server.
struct Server {
    /// The running instance; `None` while crashed.
    raft: Option<LabRaft>,
    /// The running instance's storage (a shared handle), or while crashed the copy the
    /// next instance starts from.
    storage: MemStorage<Value>,
    connected: bool,
}

/// What [`Cluster::begin`] recorded.
struct Begun {
    description: String,
    at: Duration,
    rpcs: u64,
    bytes: u64,
    max_index: u64,
}

/// The id of server `i` (the lab's servers are numbered from 0, ids from 1).
fn node_id(i: usize) -> NodeId {
    NodeId(u64::try_from(i).expect("server number fits in u64") + 1)
}

/// splitmix64: derives well-spread, independent seeds from one seed and a salt.
pub(crate) fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed.wrapping_add(salt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<Rt: Runtime> Cluster<Rt> {
    /// Builds the cluster of `spec` on `runtime`: the network (long delays on, reliable as
    /// the spec says), then every server started and connected, as the lab's setup does.
    pub(crate) async fn build(spec: ClusterSpec, seed: u64, runtime: Rt) -> Cluster<Rt> {
        let created = runtime.now();
        let net = MemNetwork::new(runtime.clone(), mix(seed, NETWORK_SALT));
        net.set_reliable(spec.reliable);
        net.set_long_delays(true);
        let servers = (0..spec.n)
            .map(|_| Server {
                raft: None,
                storage: MemStorage::new(),
                connected: false,
            })
            .collect();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                n: spec.n,
                seed,
                snapshots: spec.snapshot,
                robust: spec.robust,
                members: spec.members.unwrap_or(spec.n).min(spec.n),
                reliable: spec.reliable,
                runtime,
                net,
                record: if spec.members.is_some() {
                    AppliedRecord::with_configuration_gaps(spec.n)
                } else {
                    AppliedRecord::new(spec.n)
                },
                servers: Mutex::new(servers),
                lifecycle: futures::lock::Mutex::new(()),
                rng: Mutex::new(StdRng::seed_from_u64(mix(seed, TEST_RNG_SALT))),
                created,
                begun: Mutex::new(None),
                finished: AtomicBool::new(false),
                next_instance: AtomicU64::new(1),
            }),
        };
        for i in 0..spec.n {
            cluster.restart(i).await;
        }
        for i in 0..spec.n {
            cluster.connect(i);
        }
        cluster
    }

    fn servers(&self) -> MutexGuard<'_, Vec<Server>> {
        // Updates of the server table never panic halfway; a checker that panicked while
        // holding it left it consistent.
        self.inner.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of servers.
    pub fn n(&self) -> usize {
        self.inner.n
    }

    /// The test's seed (printed, and overridable with `LAB_SEED`).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The runtime the cluster runs on.
    pub fn runtime(&self) -> &Rt {
        &self.inner.runtime
    }

    /// The applied-log record the servers' appliers write.
    pub fn record(&self) -> &AppliedRecord {
        &self.inner.record
    }

    // ---- test lifecycle -------------------------------------------------------------

    /// Starts the measured part of a test: prints the description (with the network the
    /// cluster was made with, as the 2025 lab), the test's name and the seed, and records
    /// the time,
    /// the RPC and byte totals and the highest applied index, for [`end`](Self::end).
    pub fn begin(&self, description: &str) {
        let network = if self.inner.reliable {
            "reliable network"
        } else {
            "unreliable network"
        };
        // The test runner names the test's thread after the test.
        let test = std::thread::current()
            .name()
            .filter(|name| *name != "main")
            .map(|name| format!(" [{name}]"))
            .unwrap_or_default();
        println!(
            "{description} ({network})...{test} seed {} (LAB_SEED overrides)",
            self.inner.seed
        );
        let name = description
            .split_once(": ")
            .map_or(description, |(_, name)| name);
        *self.inner.begun.lock().unwrap_or_else(|e| e.into_inner()) = Some(Begun {
            description: name.to_owned(),
            at: self.now(),
            rpcs: self.rpc_total(),
            bytes: self.bytes_total(),
            max_index: self.inner.record.max_index(),
        });
    }

    /// Ends a test that passed: checks the 120 s limit and that no apply error was
    /// recorded, then prints the one "Passed" line: name, seconds, peers, RPCs sent, bytes,
    /// and commits (the highest applied index reached since `begin`).
    ///
    /// # Panics
    ///
    /// If the test took longer than 120 s since the cluster was made, or an apply error
    /// was recorded.
    pub fn end(&self) {
        self.check_timeout();
        self.inner.record.panic_on_errors();
        let begun = self.inner.begun.lock().unwrap_or_else(|e| e.into_inner());
        let Some(begun) = begun.as_ref() else {
            panic!("end() without begin()");
        };
        let seconds = (self.now() - begun.at).as_secs_f64();
        let rpcs = self.rpc_total() - begun.rpcs;
        let bytes = self.bytes_total() - begun.bytes;
        let commits = self.inner.record.max_index() - begun.max_index;
        println!(
            "  ... Passed --  {}  {seconds:.1}s  {} peers  {rpcs} RPCs  {bytes} bytes  {commits} commits  (seed {})",
            begun.description, self.inner.n, self.inner.seed
        );
    }

    /// Whether the test is over (cleanup has begun); [`one`](Self::one) then gives up
    /// quietly, as the lab's `checkFinished`.
    pub fn is_finished(&self) -> bool {
        self.inner.finished.load(Ordering::Acquire)
    }

    /// # Panics
    ///
    /// If more than 120 s passed since the cluster was made.
    pub fn check_timeout(&self) {
        let elapsed = self.now() - self.inner.created;
        assert!(
            elapsed <= TEST_TIME_LIMIT,
            "test took longer than 120 seconds ({:.1}s)",
            elapsed.as_secs_f64()
        );
    }

    /// Shuts every live node down. Called by [`run`](super::run) whatever the outcome.
    pub(crate) async fn cleanup(&self) {
        self.inner.finished.store(true, Ordering::Release);
        let _lifecycle = self.inner.lifecycle.lock().await;
        for i in 0..self.inner.n {
            self.crash_locked(i).await;
        }
    }

    /// The checks of a test that ended without panicking, after its cleanup.
    pub(crate) fn final_checks(&self) {
        self.inner.record.panic_on_errors();
        self.check_timeout();
    }

    // ---- time, randomness, tasks ----------------------------------------------------

    /// The time on the cluster's runtime: real time, or virtual time in a simulation.
    pub fn now(&self) -> Duration {
        self.inner.runtime.now()
    }

    /// Sleeps for `duration` on the cluster's runtime.
    pub async fn sleep(&self, duration: Duration) {
        self.inner.runtime.sleep(duration).await;
    }

    /// Sleeps for `ms` milliseconds.
    pub async fn sleep_ms(&self, ms: u64) {
        self.sleep(Duration::from_millis(ms)).await;
    }

    /// Runs `future` as a task of its own on the cluster's runtime (the lab's goroutine).
    /// A panic in it makes the returned handle yield an error.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.spawn(future)
    }

    fn rng(&self) -> MutexGuard<'_, StdRng> {
        self.inner.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A random non-negative 63-bit integer, like Go's `rand.Int()`.
    pub fn rand_int(&self) -> u64 {
        self.rng().random_range(0..1u64 << 63)
    }

    /// A random integer in `0..bound`, like Go's `rand.Int() % bound`.
    pub fn rand_below(&self, bound: u64) -> u64 {
        self.rng().random_range(0..bound)
    }

    /// A random server number in `0..n`.
    pub fn rand_server(&self) -> usize {
        self.rng().random_range(0..self.inner.n)
    }

    /// A random string of `len` base64url characters (the lab's `randstring`).
    pub fn random_text(&self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut rng = self.rng();
        (0..len)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    // ---- topology -------------------------------------------------------------------

    /// The lab's `connect(i)`: marks `i` connected and enables `i → j` and `j → i` for
    /// every connected `j` (itself included).
    pub fn connect(&self, i: usize) {
        let mut servers = self.servers();
        servers[i].connected = true;
        for (j, server) in servers.iter().enumerate() {
            if server.connected {
                self.inner.net.set_link(node_id(i), node_id(j), true);
                self.inner.net.set_link(node_id(j), node_id(i), true);
            }
        }
        tracing::debug!(server = i, node = %node_id(i), "lab: connect");
    }

    /// The lab's `disconnect(i)`: disables every link from and to `i` and marks it not
    /// connected.
    pub fn disconnect(&self, i: usize) {
        let mut servers = self.servers();
        self.disconnect_locked(&mut servers, i);
        tracing::debug!(server = i, node = %node_id(i), "lab: disconnect");
    }

    fn disconnect_locked(&self, servers: &mut [Server], i: usize) {
        servers[i].connected = false;
        for j in 0..servers.len() {
            self.inner.net.set_link(node_id(i), node_id(j), false);
            self.inner.net.set_link(node_id(j), node_id(i), false);
        }
    }

    /// Cuts (or restores) everything that travels from `from` to `to`: requests and
    /// replies alike, while traffic from `to` to `from` still arrives.
    pub fn cut_one_way(&self, from: usize, to: usize, cut: bool) {
        self.inner
            .net
            .set_one_way_cut(node_id(from), node_id(to), cut);
        tracing::debug!(from, to, cut, "lab: one-way cut");
    }

    /// The handle of server `i`, if it runs: its full API (`propose` with typed errors,
    /// `status`, `read_index`, `transfer_leadership`, `watch_leadership`, ...).
    pub fn raft(&self, i: usize) -> Option<LabRaft> {
        self.alive(i)
    }

    /// The node id of server `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        node_id(i)
    }

    /// Whether server `i` is connected.
    pub fn is_connected(&self, i: usize) -> bool {
        self.servers()[i].connected
    }

    /// Whether server `i` is running (not crashed).
    pub fn is_alive(&self, i: usize) -> bool {
        self.servers()[i].raft.is_some()
    }

    /// Makes the network unreliable (`false`): requests delayed 0–26 ms, 10% of requests
    /// and 10% of replies lost.
    pub fn set_reliable(&self, reliable: bool) {
        self.inner.net.set_reliable(reliable);
    }

    /// Switches long reordering of replies (two thirds delayed 200–2199 ms).
    pub fn set_long_reordering(&self, long_reordering: bool) {
        self.inner.net.set_long_reordering(long_reordering);
    }

    // ---- crash and restart ----------------------------------------------------------

    /// Crashes server `i` (the 2025 lab's `ShutdownServer`): disconnects it, deletes it
    /// from the network so that in-flight and future RPCs to it fail, keeps a copy of its
    /// storage so that later writes of the dying instance cannot reach the next one, and
    /// shuts the node down. Crashing a crashed server only repeats the first two steps.
    ///
    /// # Panics
    ///
    /// If the node does not finish shutting down within 10 s.
    pub async fn crash(&self, i: usize) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.crash_locked(i).await;
    }

    async fn crash_locked(&self, i: usize) {
        let raft = {
            let mut servers = self.servers();
            self.disconnect_locked(&mut servers, i);
            self.inner.net.delete_server(node_id(i));
            let server = &mut servers[i];
            server.storage = server.storage.copy();
            // Marked dead before it is shut down, so that nobody asks a dying node.
            server.raft.take()
        };
        let Some(raft) = raft else {
            return;
        };
        tracing::debug!(server = i, node = %node_id(i), "lab: crash");
        let shutdown = raft_traits::timeout(&self.inner.runtime, SHUTDOWN_LIMIT, raft.shutdown());
        if shutdown.await.is_err() {
            panic!("server {i}: shutdown did not finish within {SHUTDOWN_LIMIT:?}");
        }
        self.inner.record.retire(i);
    }

    /// Restarts server `i`, crashing it first if it runs: a new node on a copy of its
    /// saved storage, with a fresh applied record (it must re-apply from index 1, or from
    /// the snapshot Raft restores at boot) and a fresh transport whose ends start
    /// disabled. The server is **not** connected: call [`connect`](Self::connect).
    ///
    /// # Panics
    ///
    /// If the node cannot be spawned.
    pub async fn restart(&self, i: usize) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        if self.is_alive(i) {
            self.crash_locked(i).await;
        }
        let instance = self.inner.next_instance.fetch_add(1, Ordering::Relaxed);
        let storage = {
            let mut servers = self.servers();
            self.disconnect_locked(&mut servers, i);
            let storage = servers[i].storage.copy();
            servers[i].storage = storage.clone();
            storage
        };
        self.inner.record.reset(i, instance);
        let transport = self.inner.net.transport(node_id(i));
        let handle = Arc::new(OnceLock::new());
        let state_machine = LabApplier::new(
            i,
            instance,
            self.inner.snapshots,
            self.inner.record.clone(),
            Arc::clone(&handle),
        );
        let config = Config::lab()
            .with_seed(Some(mix(self.inner.seed, NODE_SALT + instance)))
            .with_pre_vote(self.inner.robust)
            .with_check_quorum(self.inner.robust);
        let members = if i < self.inner.members {
            Membership::from_voters((0..self.inner.members).map(node_id))
        } else {
            // Started to join: it waits for a leader that has added it.
            Membership::default()
        };
        let parts = Parts {
            runtime: self.inner.runtime.clone(),
            storage,
            state_machine,
            transport,
        };
        let raft: LabRaft = match Raft::spawn_in(node_id(i), members, config, parts).await {
            Ok(raft) => raft,
            Err(e) => panic!("server {i}: cannot start: {e}"),
        };
        let _ = handle.set(raft.clone());
        self.inner
            .net
            .add_server(node_id(i), Arc::new(raft.clone()));
        self.servers()[i].raft = Some(raft);
        tracing::debug!(server = i, node = %node_id(i), instance, "lab: restart");
    }

    /// Crashes every server.
    pub async fn crash_all(&self) {
        for i in 0..self.inner.n {
            self.crash(i).await;
        }
    }

    /// Restarts every server, then connects each of them.
    pub async fn restart_all(&self) {
        for i in 0..self.inner.n {
            self.restart(i).await;
        }
        for i in 0..self.inner.n {
            self.connect(i);
        }
    }

    // ---- talking to servers ---------------------------------------------------------

    /// Server `i`'s node, if it runs.
    fn alive(&self, i: usize) -> Option<LabRaft> {
        self.servers()[i].raft.clone()
    }

    /// Server `i`'s node, if it runs and is connected.
    fn connected_alive(&self, i: usize) -> Option<LabRaft> {
        let servers = self.servers();
        let server = &servers[i];
        if server.connected {
            server.raft.clone()
        } else {
            None
        }
    }

    /// The lab's `Start(cmd)` on server `i`: `Some((index, term))` if it runs and accepted
    /// the command as leader, `None` otherwise. Returns without waiting for agreement.
    pub async fn start(&self, i: usize, command: impl Into<Value>) -> Option<(u64, u64)> {
        let raft = self.alive(i)?;
        let (index, term) = raft.start(command.into()).await.ok()?;
        Some((index.0, term.0))
    }

    /// The lab's `GetState()` on server `i`: `Some((term, is_leader))` if it runs.
    pub fn state(&self, i: usize) -> Option<(u64, bool)> {
        let (term, is_leader) = self.alive(i)?.state();
        Some((term.0, is_leader))
    }

    // ---- checkers -------------------------------------------------------------------

    /// The lab's `checkOneLeader`: up to 10 rounds, each after a random 450–549 ms sleep,
    /// of asking every connected server whether it leads. Returns the leader of the
    /// highest term that has one.
    ///
    /// # Panics
    ///
    /// If a term has more than one leader, or no round finds a leader.
    pub async fn check_one_leader(&self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.rand_below(100);
            self.sleep_ms(ms).await;
            self.inner.record.panic_on_errors();
            let mut leaders: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
            for i in 0..self.inner.n {
                if let Some(raft) = self.connected_alive(i) {
                    let (term, is_leader) = raft.state();
                    if is_leader {
                        leaders.entry(term.0).or_default().push(i);
                    }
                }
            }
            for (term, in_term) in &leaders {
                assert!(
                    in_term.len() <= 1,
                    "term {term} has {} (>1) leaders: {in_term:?}",
                    in_term.len()
                );
            }
            if let Some((_, in_term)) = leaders.last_key_value() {
                return in_term[0];
            }
        }
        panic!(
            "expected one leader, got none; the connected servers: {}",
            self.describe_connected()
        );
    }

    /// Each connected server's role, term, log and leader, for a failure message.
    fn describe_connected(&self) -> String {
        (0..self.inner.n)
            .filter_map(|i| {
                let status = self.connected_alive(i)?.status();
                Some(format!(
                    "{i}: {:?} term {} last log {} commit {} leader {:?}",
                    status.role,
                    status.term.0,
                    status.last_log,
                    status.commit_index.0,
                    status.leader
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The lab's `checkTerms`: every connected server reports the same term, which is
    /// returned.
    ///
    /// # Panics
    ///
    /// If two connected servers disagree.
    pub fn check_terms(&self) -> u64 {
        self.inner.record.panic_on_errors();
        let mut term = None;
        for i in 0..self.inner.n {
            if let Some(raft) = self.connected_alive(i) {
                let (server_term, _) = raft.state();
                match term {
                    None => term = Some(server_term.0),
                    Some(t) => assert_eq!(t, server_term.0, "servers disagree on term"),
                }
            }
        }
        term.unwrap_or(0)
    }

    /// The lab's `checkNoLeader`: no connected server believes it leads.
    ///
    /// # Panics
    ///
    /// If one does.
    pub fn check_no_leader(&self) {
        self.inner.record.panic_on_errors();
        for i in 0..self.inner.n {
            if let Some(raft) = self.connected_alive(i) {
                let (_, is_leader) = raft.state();
                assert!(
                    !is_leader,
                    "expected no leader among connected servers, but {i} claims to be leader"
                );
            }
        }
    }

    /// The lab's `checkNoAgreement(index)`: no server applied `index`.
    ///
    /// # Panics
    ///
    /// If any did.
    pub fn check_no_agreement(&self, index: u64) {
        let (n, _) = self.n_committed(index);
        assert!(n == 0, "{n} committed but no majority");
    }

    /// The lab's `nCommitted(index)`: how many servers (connected or not) applied `index`,
    /// and the value there.
    ///
    /// # Panics
    ///
    /// If two servers applied different values there, or any apply error was recorded.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Value>) {
        self.inner.record.n_committed(index)
    }

    /// The lab's `one(cmd, expectedServers, retry)`: submits `command` to a leader and
    /// returns the index at which at least `expected` servers applied it.
    ///
    /// For up to 10 s, walks the connected live servers round-robin (starting after the
    /// last one tried) until one accepts; then polls every 20 ms for up to 2 s. Without
    /// `retry`, a first attempt that does not reach agreement fails the test; with it, the
    /// command may be submitted again, so it may end up at several indices. Returns 0 if
    /// the test finished meanwhile.
    ///
    /// # Panics
    ///
    /// If no agreement is reached in time.
    pub async fn one(&self, command: impl Into<Value>, expected: usize, retry: bool) -> u64 {
        let command = command.into();
        let started = self.now();
        let mut starts = 0;
        while self.now() - started < Duration::from_secs(10) && !self.is_finished() {
            let mut index = None;
            for _ in 0..self.inner.n {
                starts = (starts + 1) % self.inner.n;
                let Some(raft) = self.connected_alive(starts) else {
                    continue;
                };
                if let Ok((at, _)) = raft.start(command.clone()).await {
                    index = Some(at.0);
                    break;
                }
            }
            if let Some(index) = index {
                let submitted = self.now();
                while self.now() - submitted < Duration::from_secs(2) {
                    let (count, committed) = self.n_committed(index);
                    if count > 0 && count >= expected && committed.as_ref() == Some(&command) {
                        return index;
                    }
                    self.sleep_ms(20).await;
                }
                assert!(retry, "one({command}) failed to reach agreement");
            } else {
                self.sleep_ms(50).await;
            }
        }
        assert!(
            self.is_finished(),
            "one({command}) failed to reach agreement"
        );
        0
    }

    /// The lab's `wait(index, n, startTerm)`: waits until at least `n` servers applied
    /// `index` and returns the value there; or returns `None` as soon as some live server's
    /// term exceeds `start_term`, if one is given ("the term moved on").
    ///
    /// Polls up to 30 times, sleeping 10 ms, doubling up to 1280 ms.
    ///
    /// # Panics
    ///
    /// If fewer than `n` servers applied `index` in the end.
    pub async fn wait(&self, index: u64, n: usize, start_term: Option<u64>) -> Option<Value> {
        let mut pause = Duration::from_millis(10);
        for _ in 0..30 {
            let (count, _) = self.n_committed(index);
            if count >= n {
                break;
            }
            self.sleep(pause).await;
            if pause < ELECTION_TIMEOUT {
                pause *= 2;
            }
            if let Some(start_term) = start_term {
                for i in 0..self.inner.n {
                    if let Some((term, _)) = self.state(i)
                        && term > start_term
                    {
                        return None;
                    }
                }
            }
        }
        let (count, value) = self.n_committed(index);
        assert!(
            count >= n,
            "only {count} decided for index {index}; wanted {n}"
        );
        value
    }

    // ---- metrics --------------------------------------------------------------------

    /// How many requests were dispatched to server `i`'s handlers (the lab's `rpcCount`).
    pub fn rpc_count(&self, i: usize) -> u64 {
        self.inner.net.rpc_count(node_id(i))
    }

    /// How many requests entered the network (the lab's `rpcTotal`).
    pub fn rpc_total(&self) -> u64 {
        self.inner.net.total_rpcs()
    }

    /// Request bytes sent plus reply bytes delivered (the lab's `bytesTotal`).
    pub fn bytes_total(&self) -> u64 {
        self.inner.net.total_bytes()
    }

    /// The largest persisted Raft state (without snapshot) over all servers' storage
    /// (the lab's `LogSize`).
    pub fn log_size(&self) -> usize {
        self.servers()
            .iter()
            .map(|server| server.storage.raft_state_size())
            .max()
            .unwrap_or(0)
    }
}

impl<Rt: Runtime> fmt::Debug for Cluster<Rt> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers = self.servers();
        let alive: Vec<bool> = servers.iter().map(|s| s.raft.is_some()).collect();
        let connected: Vec<bool> = servers.iter().map(|s| s.connected).collect();
        f.debug_struct("Cluster")
            .field("n", &self.inner.n)
            .field("seed", &self.inner.seed)
            .field("snapshots", &self.inner.snapshots)
            .field("alive", &alive)
            .field("connected", &connected)
            .finish_non_exhaustive()
    }
}
