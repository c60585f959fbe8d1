//! `raft_tests::harness` with a user's own pieces plugged in (issue 11, item 8): a state
//! machine that records every index it applies, and a storage that counts its appends
//! around `MemStorage`. Each test states what it checks; every wait polls a condition
//! under a deadline on the runtime's clock.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: it panics to fail

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_impl::{Config, ProposeError, Status};
use raft_mem::MemStorage;
use raft_net_smol::SmolRuntime;
use raft_tests::harness::{Harness, HarnessBuilder, MemStores};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, Entry, HardState, LogId, LogIndex, NodeId, PendingSnapshot, RecoveredState, Runtime,
    Snapshot, SnapshotDescriptor, SnapshotReader, StateMachine, StateMachineError, Storage,
    StorageError, async_trait,
};

// ---- the user's pieces ------------------------------------------------------------

/// What one state machine applied: `(index, value)` in apply order.
type Applied = Vec<(u64, u64)>;

/// What each node's current instance applied.
#[derive(Clone, Default)]
struct AppliedLog(Arc<Mutex<BTreeMap<NodeId, Applied>>>);

impl AppliedLog {
    fn of(&self, node: NodeId) -> Applied {
        self.0
            .lock()
            .unwrap()
            .get(&node)
            .cloned()
            .unwrap_or_default()
    }

    fn values(&self, node: NodeId) -> Vec<u64> {
        self.of(node).into_iter().map(|(_, value)| value).collect()
    }
}

/// The user's state machine: adds up the values it applies, answers the running sum, and
/// records each `(index, value)`.
struct Recorder {
    node: NodeId,
    log: AppliedLog,
    sum: u64,
}

impl Recorder {
    /// A fresh instance: it will apply from the start, so its record starts empty.
    fn new(node: NodeId, log: &AppliedLog) -> Recorder {
        log.0.lock().unwrap().insert(node, Vec::new());
        Recorder {
            node,
            log: log.clone(),
            sum: 0,
        }
    }
}

impl StateMachine<u64> for Recorder {
    type Response = u64;

    async fn apply(&mut self, log_id: LogId, value: u64) -> u64 {
        self.log
            .0
            .lock()
            .unwrap()
            .entry(self.node)
            .or_default()
            .push((log_id.index.0, value));
        self.sum += value;
        self.sum
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        Err(StateMachineError::InvalidSnapshot("not supported".into()))
    }

    async fn restore(&mut self, _: Snapshot) -> Result<(), StateMachineError> {
        Err(StateMachineError::InvalidSnapshot("not supported".into()))
    }
}

/// The user's storage: `MemStorage` that counts the entries appended through it, whose
/// appends wait while a test holds its node's disk gate (a stalled disk), and whose next
/// append fails, writing nothing, once a test sets its node's fault.
struct Counted {
    inner: MemStorage<u64>,
    appended: Arc<AtomicU64>,
    gate: Arc<futures::lock::Mutex<()>>,
    fault: Arc<AtomicBool>,
}

#[async_trait]
impl Storage<u64> for Counted {
    async fn recover(&mut self) -> Result<RecoveredState<u64>, StorageError> {
        self.inner.recover().await
    }

    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.inner.save_hard_state(hard_state).await
    }

    async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError> {
        self.appended
            .fetch_add(entries.len() as u64, Ordering::SeqCst);
        let _open = self.gate.lock().await;
        if self.fault.swap(false, Ordering::SeqCst) {
            return Err(StorageError::Io(std::io::Error::other(
                "the disk failed (test fault)",
            )));
        }
        self.inner.append(entries).await
    }

    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.inner.truncate_from(index).await
    }

    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<u64>>, StorageError> {
        self.inner.entries(from, to).await
    }

    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        self.inner.begin_snapshot(descriptor).await
    }
    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        self.inner.write_snapshot_chunk(offset, data).await
    }
    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        self.inner.finish_snapshot().await
    }
    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.inner.abort_snapshot().await
    }
    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        self.inner.pending_snapshot().await
    }
    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
        self.inner.open_snapshot().await
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.snapshot().await
    }

    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.inner.purge_to(index).await
    }
}

/// What a test sees of the user's pieces.
#[derive(Clone, Default)]
struct Pieces {
    applied: AppliedLog,
    stores: MemStores<u64>,
    appended: Arc<Mutex<BTreeMap<NodeId, Arc<AtomicU64>>>>,
    /// Each node's disk gate: its appends wait while it is held.
    gates: Arc<Mutex<BTreeMap<NodeId, Arc<futures::lock::Mutex<()>>>>>,
    /// Each node's disk fault: its next append fails while it is set.
    faults: Arc<Mutex<BTreeMap<NodeId, Arc<AtomicBool>>>>,
    /// The `(node, instance)` of every storage the factory made.
    opened: Arc<Mutex<Vec<(NodeId, u64)>>>,
}

impl Pieces {
    fn appended(&self, node: NodeId) -> u64 {
        self.appended
            .lock()
            .unwrap()
            .get(&node)
            .map_or(0, |count| count.load(Ordering::SeqCst))
    }

    fn gate(&self, node: NodeId) -> Arc<futures::lock::Mutex<()>> {
        Arc::clone(self.gates.lock().unwrap().entry(node).or_default())
    }

    fn fault(&self, node: NodeId) -> Arc<AtomicBool> {
        Arc::clone(self.faults.lock().unwrap().entry(node).or_default())
    }
}

type TestHarness<Rt> = Harness<u64, u64, Rt>;

/// A 3-node harness on `runtime` with the user's pieces.
async fn harness<Rt: Runtime>(runtime: Rt, seed: u64, config: Config) -> (TestHarness<Rt>, Pieces) {
    let pieces = Pieces::default();
    let harness = HarnessBuilder::new(runtime)
        .nodes(3)
        .seed(seed)
        .config(config)
        .state_machine({
            let applied = pieces.applied.clone();
            move |node, _instance| Recorder::new(node, &applied)
        })
        .storage({
            let pieces = pieces.clone();
            move |node, instance| {
                pieces.opened.lock().unwrap().push((node, instance));
                let appended = Arc::clone(pieces.appended.lock().unwrap().entry(node).or_default());
                Counted {
                    inner: pieces.stores.open(node, instance),
                    appended,
                    gate: pieces.gate(node),
                    fault: pieces.fault(node),
                }
            }
        })
        .build()
        .await
        .unwrap();
    (harness, pieces)
}

/// Real-time tests run one at a time: they time elections, which clusters competing for
/// a loaded machine's two cores would distort.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `body` on a fresh 2-thread smol runtime, and stops it afterwards.
fn on_smol<F, Fut>(body: F)
where
    F: FnOnce(SmolRuntime) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = SmolRuntime::with_threads(2);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(body(runtime.clone()))
    }));
    runtime.stop();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn status<Rt: Runtime>(h: &TestHarness<Rt>, i: usize) -> Status {
    h.status(i).unwrap()
}

// ---- the tests --------------------------------------------------------------------

/// The user's state machine and storage are the ones the nodes run: proposals through
/// `propose_to_leader` answer the state machine's running sums, every node applies the
/// same values at the same indices in the same order, and every node's storage saw the
/// appends.
#[test]
fn a_users_state_machine_and_storage_apply_the_same_sequence_everywhere() {
    on_smol(|rt| async move {
        let (h, pieces) = harness(rt, 1, Config::default()).await;
        let values: Vec<u64> = (1..=20).collect();
        let mut sum = 0;
        for &value in &values {
            sum += value;
            assert_eq!(h.propose_to_leader(value).await, Ok(sum));
        }
        h.wait_until("every node applied the 20 values", || {
            (0..h.n()).all(|i| pieces.applied.values(h.node_id(i)).len() == values.len())
        })
        .await
        .unwrap();
        let first = pieces.applied.of(h.node_id(0));
        assert_eq!(pieces.applied.values(h.node_id(0)), values);
        assert!(
            first.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "indices increase: {first:?}"
        );
        for i in 1..h.n() {
            assert_eq!(pieces.applied.of(h.node_id(i)), first, "node {i}");
        }
        for i in 0..h.n() {
            // The 20 commands, plus the leader's blank entry of each term.
            let appended = pieces.appended(h.node_id(i));
            assert!(appended >= 20, "node {i}'s storage saw {appended} appends");
        }
        h.shutdown().await;
    });
}

/// A follower's `propose` keeps the library's typed error: `NotLeader` naming the leader.
#[test]
fn a_follower_refuses_a_proposal_naming_the_leader() {
    on_smol(|rt| async move {
        let (h, pieces) = harness(rt, 2, Config::default()).await;
        let leader = h.leader().await.unwrap();
        let leader_id = h.node_id(leader);
        let follower = (leader + 1) % h.n();
        h.wait_until("the follower knows the leader", || {
            status(&h, follower).leader == Some(leader_id)
        })
        .await
        .unwrap();
        assert_eq!(
            h.propose(follower, 7).await,
            Err(ProposeError::NotLeader {
                leader_hint: Some(leader_id)
            })
        );
        // Nothing was appended for it: the next proposal is the first value applied.
        assert_eq!(h.propose(leader, 5).await, Ok(5));
        assert_eq!(pieces.applied.values(leader_id), [5]);
        h.shutdown().await;
    });
}

/// A leader's appends run beside its event loop (thesis §10.2.1): while its own disk is
/// stalled, its AppendEntries still leave, its followers' acknowledgements still count,
/// and a proposal commits and is answered through the two followers alone. Once the
/// disk moves, the leader's storage holds the entry.
#[test]
fn a_leader_commits_through_its_followers_while_its_own_append_stalls() {
    on_smol(|rt| async move {
        let (h, pieces) = harness(rt.clone(), 5, Config::default()).await;
        assert_eq!(h.propose_to_leader(1).await, Ok(1));
        let leader = h.leader().await.unwrap();
        let leader_id = h.node_id(leader);
        let stored = || pieces.stores.get(leader_id).unwrap().log().len();
        let before = stored();

        let gate = pieces.gate(leader_id);
        let stalled = gate.lock().await;
        let answer = raft_traits::timeout(&rt, Duration::from_secs(10), h.propose(leader, 2)).await;
        assert_eq!(
            answer,
            Ok(Ok(3)),
            "committed and answered while the leader's disk stalls"
        );
        assert_eq!(stored(), before, "the leader's own copy is not written yet");
        let committed = status(&h, leader).commit_index;

        drop(stalled);
        h.wait_until("the leader's storage holds what it committed", || {
            pieces
                .stores
                .get(leader_id)
                .unwrap()
                .log()
                .last()
                .map(|entry| entry.index)
                >= Some(committed)
        })
        .await
        .unwrap();
        h.shutdown().await;
    });
}

/// A failed log append stops the node, and nothing queued behind it is written after
/// it, not even while stopping: entries stored after lost ones would leave a hole in the
/// log that a restart would read.
#[test]
fn after_a_failed_append_the_node_stops_and_writes_nothing_after_it() {
    on_smol(|rt| async move {
        let (h, pieces) = harness(rt.clone(), 5, Config::default()).await;
        assert_eq!(h.propose_to_leader(1).await, Ok(1));
        let leader = h.leader().await.unwrap();
        let leader_id = h.node_id(leader);

        // The leader's append of 2 waits at the gate and will fail; 3 queues behind it.
        // Both commit through the followers.
        let gate = pieces.gate(leader_id);
        let stalled = gate.lock().await;
        pieces.fault(leader_id).store(true, Ordering::SeqCst);
        assert_eq!(h.propose(leader, 2).await, Ok(3));
        assert_eq!(h.propose(leader, 3).await, Ok(6));
        let appended = pieces.appended(leader_id);

        drop(stalled);
        h.wait_until("the leader stops on the failed append", || {
            status(&h, leader).fatal.is_some()
        })
        .await
        .unwrap();
        h.shutdown().await;
        assert_eq!(
            pieces.appended(leader_id),
            appended,
            "an append was started after the failed one"
        );
    });
}

/// What a one-way cut from the leader to a follower did over a window.
#[derive(Debug)]
struct CutOutcome {
    /// Term increases, summed over the nodes.
    term_increases: u64,
    /// Leader changes, summed over the nodes' counters.
    leader_changes: u64,
    /// AppendEntries the leader got through to the follower during the cut.
    appends_through: u64,
    /// Pre-votes and votes the follower asked for during the cut.
    pre_votes: u64,
    votes: u64,
    /// Whether the node that led before the cut still leads.
    same_leader: bool,
}

/// Cuts the leader's link to one follower (requests and replies) for `window` of the
/// runtime's clock, proposing through the leader meanwhile, and reports what happened.
async fn one_way_cut<Rt: Runtime>(
    rt: Rt,
    seed: u64,
    config: Config,
    window: Duration,
) -> CutOutcome {
    let (h, _) = harness(rt.clone(), seed, config).await;
    let leader = h.leader().await.unwrap();
    let follower = (leader + 1) % h.n();
    let (leader_id, follower_id) = (h.node_id(leader), h.node_id(follower));
    h.propose(leader, 1).await.unwrap();
    h.wait_until("the follower knows the leader", || {
        status(&h, follower).leader == Some(leader_id)
    })
    .await
    .unwrap();
    let before: Vec<Status> = (0..h.n()).map(|i| status(&h, i)).collect();
    let count = |from: NodeId, kind: &str| -> u64 {
        (0..h.n())
            .map(|j| h.net().rpc_count_of(from, h.node_id(j), kind))
            .sum()
    };
    let appends = h
        .net()
        .rpc_count_of(leader_id, follower_id, "AppendEntries");
    let (pre_votes, votes) = (
        count(follower_id, "PreVote"),
        count(follower_id, "RequestVote"),
    );

    h.cut_one_way(leader, follower).unwrap();
    let started = h.now();
    while h.now() - started < window {
        // The cluster keeps serving meanwhile (wherever the leader is).
        let _ = h.propose_to_leader(2).await;
        rt.sleep(Duration::from_millis(50)).await;
    }
    let after: Vec<Status> = (0..h.n()).map(|i| status(&h, i)).collect();
    let outcome = CutOutcome {
        term_increases: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.term.0 - b.term.0)
            .sum(),
        leader_changes: before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.counters.leader_changes - b.counters.leader_changes)
            .sum(),
        appends_through: h
            .net()
            .rpc_count_of(leader_id, follower_id, "AppendEntries")
            - appends,
        pre_votes: count(follower_id, "PreVote") - pre_votes,
        votes: count(follower_id, "RequestVote") - votes,
        same_leader: h.current_leader().unwrap() == Some(leader),
    };
    h.shutdown().await;
    outcome
}

/// The configuration of the one-way cut in real time: the default, with elections slow
/// enough (10 to 20 heartbeats) that a loaded machine's stalls do not time them out.
fn patient() -> Config {
    Config::default()
        .with_election_timeout_min(Duration::from_millis(500))
        .with_election_timeout_max(Duration::from_millis(1000))
}

/// Three longest election timeouts of [`patient`].
const CUT_WINDOW: Duration = Duration::from_millis(3000);

/// Checks the outcome of a one-way cut with pre-vote and check-quorum on.
fn assert_undisturbed(outcome: &CutOutcome) {
    assert_eq!(outcome.appends_through, 0, "the cut let appends through");
    assert!(outcome.pre_votes > 0, "the cut follower never timed out");
    assert_eq!(outcome.votes, 0);
    assert_eq!(outcome.term_increases, 0);
    assert_eq!(outcome.leader_changes, 0);
    assert!(outcome.same_leader);
}

/// Checks the outcome of a one-way cut with pre-vote and check-quorum off.
fn assert_disrupted(outcome: &CutOutcome) {
    assert_eq!(outcome.appends_through, 0, "the cut let appends through");
    assert!(outcome.votes > 0, "the cut follower never campaigned");
    assert!(outcome.term_increases > 0);
}

/// With pre-vote and check-quorum on (the default), a follower that no longer hears the
/// leader asks for pre-votes but is refused, so no term rises and the leader stays.
#[test]
fn a_one_way_cut_from_the_leader_changes_no_leader_with_pre_vote() {
    on_smol(|rt| async move {
        let outcome = one_way_cut(rt, 3, patient(), CUT_WINDOW).await;
        println!("one-way cut, pre-vote and check-quorum on: {outcome:?}");
        assert_undisturbed(&outcome);
    });
}

/// The contrast: without pre-vote and check-quorum the same cut deposes the leader, so
/// the harness's cut and counters do show a disruption when there is one.
#[test]
fn a_one_way_cut_from_the_leader_disrupts_without_pre_vote() {
    on_smol(|rt| async move {
        let config = patient().with_pre_vote(false).with_check_quorum(false);
        let outcome = one_way_cut(rt, 3, config, CUT_WINDOW).await;
        println!("one-way cut, pre-vote and check-quorum off: {outcome:?}");
        assert_disrupted(&outcome);
    });
}

/// Both, on the simulator with the default configuration, for ten longest election
/// timeouts of virtual time, over several seeds.
#[test]
fn a_one_way_cut_in_virtual_time() {
    let window = Config::default().election_timeout_max * 10;
    for seed in 0..4 {
        for robust in [true, false] {
            let simulation = Simulation::new(seed);
            let rt = simulation.runtime();
            let config = Config::default()
                .with_pre_vote(robust)
                .with_check_quorum(robust);
            let outcome = simulation.block_on(one_way_cut(rt, seed, config, window));
            if robust {
                assert_undisturbed(&outcome);
            } else {
                assert_disrupted(&outcome);
            }
        }
    }
}

/// A crashed follower restarted on the storage that survived it recovers its log from
/// that storage (before it hears from anyone), then catches up with what the others
/// committed meanwhile; its new state machine instance re-applies the whole sequence.
#[test]
fn a_restarted_node_recovers_its_storage_and_catches_up() {
    on_smol(|rt| async move {
        let (h, pieces) = harness(rt, 4, Config::default()).await;
        for value in 1..=5 {
            h.propose_to_leader(value).await.unwrap();
        }
        let leader = h.leader().await.unwrap();
        let follower = (leader + 1) % h.n();
        let follower_id = h.node_id(follower);
        h.wait_until("the follower applied 5 values", || {
            pieces.applied.values(follower_id).len() == 5
        })
        .await
        .unwrap();
        let persisted = status(&h, follower).last_log;

        h.crash(follower).await.unwrap();
        assert!(h.status(follower).is_none());
        for value in 6..=10 {
            h.propose_to_leader(value).await.unwrap();
        }
        // Restarted alone, it can only know what its storage kept.
        h.disconnect(follower).unwrap();
        h.restart(follower).await.unwrap();
        assert_eq!(h.instances(follower), 2);
        assert!(
            pieces.opened.lock().unwrap().contains(&(follower_id, 1)),
            "the storage factory was not asked for instance 1"
        );
        let recovered = status(&h, follower).last_log;
        assert_eq!(recovered, persisted, "the restarted node lost its log");

        h.connect(follower).unwrap();
        let values: Vec<u64> = (1..=10).collect();
        h.wait_until("the restarted node applied all 10 values", || {
            pieces.applied.values(follower_id) == values
        })
        .await
        .unwrap();
        let leader = h.leader().await.unwrap();
        assert_eq!(
            pieces.applied.of(follower_id),
            pieces.applied.of(h.node_id(leader))
        );
        h.shutdown().await;
    });
}

/// A scenario on the simulator: proposals, a crash, a restart, a one-way cut and a
/// leadership transfer to the restarted node. Returns
/// the simulation's trace digest and what node 0 applied.
fn simulated(seed: u64) -> (u64, Applied) {
    let simulation = Simulation::new(seed);
    let rt: SimRuntime = simulation.runtime();
    let applied = simulation.block_on(async move {
        let (h, pieces) = harness(rt, seed, Config::default()).await;
        for value in 1..=5 {
            h.propose_to_leader(value).await.unwrap();
        }
        let leader = h.leader().await.unwrap();
        let follower = (leader + 1) % h.n();
        h.crash(follower).await.unwrap();
        h.propose_to_leader(6).await.unwrap();
        h.restart(follower).await.unwrap();
        // The other follower's replies no longer reach the leader; the restarted one
        // makes the quorum.
        h.cut_one_way((leader + 2) % h.n(), leader).unwrap();
        h.propose_to_leader(7).await.unwrap();
        h.wait_until("every node applied 7 values", || {
            (0..h.n()).all(|i| pieces.applied.of(h.node_id(i)).len() == 7)
        })
        .await
        .unwrap();
        // The restarted node's own requests get through too: it can win an election.
        let restarted = h.node_id(follower);
        let old_leader = h.raft(leader).unwrap();
        old_leader.transfer_leadership(restarted).await.unwrap();
        h.wait_until("the restarted node leads", || {
            h.current_leader().ok().flatten() == Some(follower)
        })
        .await
        .unwrap();
        h.shutdown().await;
        pieces.applied.of(h.node_id(0))
    });
    (simulation.trace_hash(), applied)
}

/// On the simulator the harness is deterministic: a seed replays the same run.
#[test]
fn the_harness_replays_a_seed_on_the_simulator() {
    let (first, applied) = simulated(11);
    let (again, applied_again) = simulated(11);
    let (other, _) = simulated(12);
    assert_eq!(
        applied.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(applied, applied_again);
    assert_eq!(first, again, "the same seed gave two schedules");
    assert_ne!(first, other, "two seeds gave one schedule");
}

/// Bad input is a typed error, not a panic.
#[test]
fn bad_node_numbers_and_counts_are_typed_errors() {
    use raft_tests::harness::HarnessError;
    on_smol(|rt| async move {
        let refused = HarnessBuilder::new(rt.clone())
            .nodes(2)
            .voters(3)
            .state_machine(|node, _| Recorder::new(node, &AppliedLog::default()))
            .storage(|_, _| MemStorage::<u64>::new())
            .build()
            .await;
        assert!(matches!(
            refused,
            Err(HarnessError::Voters {
                voters: 3,
                nodes: 2
            })
        ));
        let (h, _) = harness(rt, 5, Config::default()).await;
        assert!(matches!(
            h.disconnect(3),
            Err(HarnessError::NoSuchNode { index: 3, nodes: 3 })
        ));
        assert!(matches!(
            h.restart(9).await,
            Err(HarnessError::NoSuchNode { index: 9, .. })
        ));
        assert_eq!(h.propose(9, 1).await, Err(ProposeError::Stopped));
        assert!(h.raft(9).is_none());
        h.shutdown().await;
    });
}

/// The user's transport: wraps each node's `MemTransport`, counts what it forwards by
/// `(from, to, kind)`, and refuses requests on the links it was told to block without
/// passing them on.
#[derive(Clone, Default)]
struct Tap {
    forwarded: Arc<Mutex<BTreeMap<LinkKind, u64>>>,
    refused: Arc<Mutex<BTreeMap<(NodeId, NodeId), u64>>>,
    blocked: Arc<Mutex<std::collections::BTreeSet<(NodeId, NodeId)>>>,
}

impl Tap {
    fn forwarded(&self, from: NodeId, to: NodeId, kind: &'static str) -> u64 {
        let forwarded = self.forwarded.lock().unwrap();
        forwarded.get(&(from, to, kind)).copied().unwrap_or(0)
    }

    fn refused(&self, from: NodeId, to: NodeId) -> u64 {
        self.refused
            .lock()
            .unwrap()
            .get(&(from, to))
            .copied()
            .unwrap_or(0)
    }

    fn block(&self, from: NodeId, to: NodeId, blocked: bool) {
        let mut links = self.blocked.lock().unwrap();
        if blocked {
            links.insert((from, to));
        } else {
            links.remove(&(from, to));
        }
    }
}

/// A directed link and a request kind.
type LinkKind = (NodeId, NodeId, &'static str);

/// One node's end of a [`Tap`].
struct Tapped<Rt: Runtime> {
    me: NodeId,
    inner: raft_mem::MemTransport<u64, Rt>,
    tap: Tap,
}

#[async_trait]
impl<Rt: Runtime> raft_traits::Transport<u64> for Tapped<Rt> {
    async fn send(
        &self,
        to: NodeId,
        request: raft_traits::Request<u64>,
    ) -> Result<raft_traits::Response, raft_traits::TransportError> {
        let link = (self.me, to);
        if self.tap.blocked.lock().unwrap().contains(&link) {
            *self.tap.refused.lock().unwrap().entry(link).or_default() += 1;
            return Err(raft_traits::TransportError::Unreachable {
                peer: to,
                reason: "blocked by the test's transport".into(),
            });
        }
        *self
            .tap
            .forwarded
            .lock()
            .unwrap()
            .entry((self.me, to, request.kind()))
            .or_default() += 1;
        self.inner.send(to, request).await
    }
}

/// The transport hook puts the user's transport in every node's path: requests it
/// forwards reach the network (never more than it forwarded), and requests it refuses
/// never do: a follower behind a blocked link falls behind while the others commit, and
/// catches up once the link is unblocked.
#[test]
fn a_users_transport_carries_every_request() {
    let simulation = Simulation::new(21);
    let rt: SimRuntime = simulation.runtime();
    simulation.block_on(async move {
        let tap = Tap::default();
        let applied = AppliedLog::default();
        let h = HarnessBuilder::new(rt)
            .nodes(3)
            .seed(21)
            .state_machine({
                let applied = applied.clone();
                move |node, _| Recorder::new(node, &applied)
            })
            .storage(|_, _| MemStorage::<u64>::new())
            .transport({
                let tap = tap.clone();
                move |me, inner| Tapped {
                    me,
                    inner,
                    tap: tap.clone(),
                }
            })
            .build()
            .await
            .unwrap();
        for value in 1..=3 {
            h.propose_to_leader(value).await.unwrap();
        }
        let leader = h.leader().await.unwrap();
        let (leader_id, follower_id, other_id) = (
            h.node_id(leader),
            h.node_id((leader + 1) % h.n()),
            h.node_id((leader + 2) % h.n()),
        );
        h.wait_until("the follower applied 3 values", || {
            applied.values(follower_id).len() == 3
        })
        .await
        .unwrap();
        // Every request the network delivered went through the tap (some the tap passed
        // on may still be on their way).
        for (from, to, kind) in [
            (leader_id, follower_id, "AppendEntries"),
            (leader_id, other_id, "AppendEntries"),
        ] {
            let through_tap = tap.forwarded(from, to, kind);
            let delivered = h.net().rpc_count_of(from, to, kind);
            assert!(delivered > 0, "no {kind} from {from} to {to} was delivered");
            assert!(
                delivered <= through_tap,
                "{delivered} {kind} from {from} to {to} delivered, {through_tap} through the tap"
            );
        }

        tap.block(leader_id, follower_id, true);
        let delivered = h
            .net()
            .rpc_count_of(leader_id, follower_id, "AppendEntries");
        for value in 4..=8 {
            h.propose_to_leader(value).await.unwrap();
        }
        h.wait_until("the other follower applied 8 values", || {
            applied.values(other_id).len() == 8
        })
        .await
        .unwrap();
        assert!(
            tap.refused(leader_id, follower_id) > 0,
            "the tap refused nothing"
        );
        assert_eq!(
            h.net()
                .rpc_count_of(leader_id, follower_id, "AppendEntries"),
            delivered,
            "a request the tap refused reached the network"
        );
        assert_eq!(applied.values(follower_id), [1, 2, 3]);

        tap.block(leader_id, follower_id, false);
        h.wait_until("the follower caught up", || {
            applied.values(follower_id) == (1..=8).collect::<Vec<_>>()
        })
        .await
        .unwrap();
        h.shutdown().await;
    });
}
