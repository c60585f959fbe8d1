//! Snapshots in a running cluster (issue 14): after a snapshot the log keeps a trailing
//! window of the entries it covers, so a follower lagging by less than the window is
//! caught up with entries and only one lagging further is sent the snapshot.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, Codec, Entry, LogId, LogIndex, NodeId, Payload, Postcard, Runtime, Snapshot,
    SnapshotJob, StateMachine, StateMachineError, Term, timeout,
};

type KvRaft = Raft<KvCommand, KvResponse>;

/// The key-value state machine, which also keeps its serialized state as of every
/// `every`-th entry, so the test can hand Raft a snapshot of a chosen index.
struct Capturing {
    inner: KvStateMachine,
    every: u64,
    captured: Arc<Mutex<BTreeMap<LogIndex, Bytes>>>,
}

impl StateMachine<KvCommand> for Capturing {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let response = self.inner.apply(log_id, command).await;
        if log_id.index.0.is_multiple_of(self.every) {
            let snapshot = self.inner.snapshot().await.unwrap();
            self.captured
                .lock()
                .unwrap()
                .insert(log_id.index, snapshot.data);
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.inner.snapshot().await
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.inner.restore(snapshot).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

struct Cluster {
    runtime: SimRuntime,
    net: MemNetwork<KvCommand, SimRuntime>,
    ids: Vec<NodeId>,
    nodes: Vec<KvRaft>,
    captured: Vec<Arc<Mutex<BTreeMap<LogIndex, Bytes>>>>,
}

impl Cluster {
    async fn start(runtime: &SimRuntime, seed: u64, config: Config) -> Cluster {
        let net = MemNetwork::new(runtime.clone(), seed);
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut nodes = Vec::new();
        let mut captured = Vec::new();
        for &id in &ids {
            let states = Arc::new(Mutex::new(BTreeMap::new()));
            let parts = Parts {
                runtime: runtime.clone(),
                storage: MemStorage::new(),
                state_machine: Capturing {
                    inner: KvStateMachine::new(),
                    every: 5,
                    captured: Arc::clone(&states),
                },
                transport: net.transport(id),
            };
            let config = config.clone().with_seed(Some(seed + id.0));
            let raft: KvRaft = Raft::spawn(id, ids.clone(), config, parts).await.unwrap();
            net.add_server(id, Arc::new(raft.clone()));
            nodes.push(raft);
            captured.push(states);
        }
        let cluster = Cluster {
            runtime: runtime.clone(),
            net,
            ids,
            nodes,
            captured,
        };
        // A new transport's ends start disabled.
        for i in 0..cluster.ids.len() {
            cluster.isolate(i, false);
        }
        cluster
    }

    /// Polls `condition` every simulated millisecond for up to ten simulated seconds.
    async fn until(&self, what: &str, mut condition: impl FnMut(&Cluster) -> bool) {
        let wait = async {
            while !condition(self) {
                self.runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&self.runtime, Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    async fn leader(&self) -> usize {
        self.until("a leader", |c| c.nodes.iter().any(|n| n.state().1))
            .await;
        self.nodes.iter().position(|n| n.state().1).unwrap()
    }

    fn isolate(&self, i: usize, isolated: bool) {
        for j in 0..self.ids.len() {
            if j != i {
                self.net.set_link(self.ids[i], self.ids[j], !isolated);
                self.net.set_link(self.ids[j], self.ids[i], !isolated);
            }
        }
    }

    async fn put(&self, leader: usize, k: u64) {
        let put = KvCommand::Put {
            key: format!("k{k}").into(),
            value: format!("v{k}").into(),
        };
        self.nodes[leader].propose(put).await.unwrap();
    }

    fn install_snapshots_to(&self, to: usize) -> u64 {
        self.ids
            .iter()
            .map(|&from| self.net.rpc_count_of(from, self.ids[to], "InstallSnapshot"))
            .sum()
    }
}

/// Ten commands reach everyone; then a follower is cut off while `missed` more commit,
/// the leader snapshots at the last of them with a window of `window` entries, and the
/// follower comes back. Returns how many InstallSnapshot RPCs it was sent, after
/// checking that it caught up and holds the latest value.
fn install_snapshots_after_missing(missed: u64, window: u64, seed: u64) -> u64 {
    let simulation = Simulation::new(seed);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let mut config = Config::lab();
        config.snapshot_trailing_entries = window;
        let cluster = Cluster::start(&runtime, seed, config).await;
        let leader = cluster.leader().await;
        for k in 1..=10 {
            cluster.put(leader, k).await;
        }
        let follower = (leader + 1) % 3;
        cluster
            .until("the follower applies the first ten", |c| {
                c.nodes[follower].status().last_applied >= LogIndex(10)
            })
            .await;
        cluster.isolate(follower, true);
        let last = 10 + missed;
        for k in 11..=last {
            cluster.put(leader, k).await;
        }
        let at = LogIndex(last);
        cluster
            .until("the leader captures its state", |c| {
                c.captured[leader].lock().unwrap().contains_key(&at)
            })
            .await;
        let data = cluster.captured[leader].lock().unwrap()[&at].clone();
        cluster.nodes[leader].snapshot(at, data).unwrap();
        cluster
            .until("the leader snapshots", |c| {
                c.nodes[leader].status().snapshot.index == at
            })
            .await;
        let status = cluster.nodes[leader].status();
        assert_eq!(
            status.log_entries as u64,
            window.min(last),
            "the leader keeps exactly the trailing window: {status:?}"
        );
        assert_eq!(cluster.install_snapshots_to(follower), 0);

        cluster.isolate(follower, false);
        cluster
            .until("the follower catches up", |c| {
                c.nodes[follower].status().last_applied >= at
            })
            .await;
        let get = KvCommand::Get {
            key: format!("k{last}").into(),
        };
        let leader = cluster.leader().await;
        assert_eq!(
            cluster.nodes[leader].propose(get).await.unwrap(),
            KvResponse::Value(Some(format!("v{last}").into()))
        );
        let sent = cluster.install_snapshots_to(follower);
        for node in &cluster.nodes {
            node.shutdown().await;
        }
        sent
    })
}

#[test]
fn a_follower_lagging_inside_the_trailing_window_gets_entries_not_the_snapshot() {
    // Snapshot at 25 with a window of 20: entries 6..=25 stay, the follower needs 11..
    assert_eq!(install_snapshots_after_missing(15, 20, 3), 0);
}

#[test]
fn a_follower_lagging_beyond_the_trailing_window_gets_one_snapshot() {
    // Snapshot at 50 with a window of 20: entries 31..=50 stay, the follower needs 11..
    assert_eq!(install_snapshots_after_missing(40, 20, 4), 1);
}

/// The key-value store without its cheap capture: the policy falls back to awaiting
/// `snapshot` on the apply task.
struct SerializesInline(KvStateMachine);

impl StateMachine<KvCommand> for SerializesInline {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        self.0.apply(log_id, command).await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.0.snapshot().await
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.0.restore(snapshot).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

/// The key-value state machine, capturing its state for a job that serializes it whole
/// ([`StateMachine::capture_snapshot`]) rather than streaming it.
struct CapturesWhole(KvStateMachine);

impl StateMachine<KvCommand> for CapturesWhole {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        self.0.apply(log_id, command).await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.0.snapshot().await
    }

    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        self.0.capture_snapshot()
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.0.restore(snapshot).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

const AFTER: u64 = 20;
const WINDOW: u64 = 10;

/// Three nodes with the snapshot policy on (a snapshot every `AFTER` entries, a window of
/// `WINDOW`) take 200 commands; no one calls `Raft::snapshot`. Every node must compact
/// by itself: its snapshot index advances, and its log never holds much more than the
/// window plus the entries since the last snapshot.
fn policy_compacts_by_itself<M, F>(seed: u64, state_machine: F)
where
    M: StateMachine<KvCommand, Response = KvResponse>,
    F: Fn() -> M + Send + Sync + 'static,
{
    policy_compacts_with(seed, state_machine, |config| {
        config.with_snapshot_after_entries(Some(AFTER))
    });
}

/// Three nodes on the simulator with the snapshot policy `policy` sets on the lab
/// configuration (and a window of `WINDOW`), all linked; returns them and which leads.
async fn policy_cluster<M, F>(
    runtime: &SimRuntime,
    seed: u64,
    state_machine: &F,
    policy: &(dyn Fn(Config) -> Config + Sync),
) -> (Vec<KvRaft>, usize)
where
    M: StateMachine<KvCommand, Response = KvResponse>,
    F: Fn() -> M + Sync,
{
    let net: MemNetwork<KvCommand, SimRuntime> = MemNetwork::new(runtime.clone(), seed);
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes: Vec<KvRaft> = Vec::new();
    for &id in &ids {
        let parts = Parts {
            runtime: runtime.clone(),
            storage: MemStorage::new(),
            state_machine: state_machine(),
            transport: net.transport(id),
        };
        let config = policy(Config::lab())
            .with_seed(Some(seed + id.0))
            .with_snapshot_trailing_entries(WINDOW);
        let raft = Raft::spawn(id, ids.clone(), config, parts).await.unwrap();
        net.add_server(id, Arc::new(raft.clone()));
        nodes.push(raft);
    }
    for &from in &ids {
        for &to in &ids {
            net.set_link(from, to, true);
        }
    }
    let wait_leader = async {
        loop {
            if let Some(i) = nodes.iter().position(|n| n.state().1) {
                return i;
            }
            runtime.sleep(Duration::from_millis(1)).await;
        }
    };
    let leader = timeout(runtime, Duration::from_secs(10), wait_leader)
        .await
        .expect("a leader");
    (nodes, leader)
}

/// With the growth condition at 100%, a snapshot every 5 entries waits until the log
/// since the last snapshot is as large as that snapshot. The state grows with every
/// put (each key is new), so each snapshot waits for more entries than the one before:
/// a handful of snapshots over 200 puts instead of 40.
#[test]
fn the_growth_condition_spaces_snapshots_out_as_the_state_grows() {
    let simulation = Simulation::new(11);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let policy = |config: Config| {
            config
                .with_snapshot_after_entries(Some(5))
                .with_snapshot_log_growth_percent(Some(100))
        };
        let (nodes, leader) = policy_cluster(&runtime, 11, &KvStateMachine::new, &policy).await;
        for k in 1..=200u64 {
            let put = KvCommand::Put {
                key: format!("key{k:04}").into(),
                value: format!("value{k:04}").into(),
            };
            nodes[leader].propose(put).await.unwrap();
        }
        let all_applied = async {
            while nodes
                .iter()
                .any(|n| n.status().last_applied < LogIndex(200))
            {
                runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&runtime, Duration::from_secs(10), all_applied)
            .await
            .expect("every node applies all 200");
        for node in &nodes {
            let status = node.status();
            // The first snapshot comes at 5 entries (none before it to measure against),
            // then each when the log has doubled: at 5, 10, 20, 40, 80 and 160. Fewer than
            // four would mean the condition held snapshots back for good.
            assert!(
                (4..=6).contains(&status.counters.snapshots_taken),
                "node {} took {} snapshots",
                status.id,
                status.counters.snapshots_taken
            );
        }
        for node in &nodes {
            node.shutdown().await;
        }
    });
}

/// [`policy_compacts_by_itself`] with the policy `policy` sets on the lab configuration.
fn policy_compacts_with<M, F>(
    seed: u64,
    state_machine: F,
    policy: impl Fn(Config) -> Config + Send + Sync + 'static,
) where
    M: StateMachine<KvCommand, Response = KvResponse>,
    F: Fn() -> M + Send + Sync + 'static,
{
    let simulation = Simulation::new(seed);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let (nodes, leader) = policy_cluster(&runtime, seed, &state_machine, &policy).await;
        let mut longest = 0;
        for k in 1..=200u64 {
            let put = KvCommand::Put {
                key: format!("k{}", k % 7).into(),
                value: format!("v{k}").into(),
            };
            nodes[leader].propose(put).await.unwrap();
            for node in &nodes {
                longest = longest.max(node.status().log_entries as u64);
            }
        }
        let all_applied = async {
            while nodes
                .iter()
                .any(|n| n.status().last_applied < LogIndex(200))
            {
                runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&runtime, Duration::from_secs(10), all_applied)
            .await
            .expect("every node applies all 200");
        // The policy's snapshots land on the event loop shortly after they are taken.
        let compacted = async {
            while nodes
                .iter()
                .any(|n| n.status().snapshot.index < LogIndex(200 - AFTER))
            {
                runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&runtime, Duration::from_secs(10), compacted)
            .await
            .unwrap_or_else(|_| {
                let snapshots: Vec<_> = nodes.iter().map(|n| n.status().snapshot).collect();
                panic!("not every node compacted by itself: {snapshots:?}")
            });
        for node in &nodes {
            let status = node.status();
            // About one per AFTER entries: neither much fewer nor much more.
            assert!(
                (200 / AFTER - 1..=2 * 200 / AFTER).contains(&status.counters.snapshots_taken),
                "node {} took {} snapshots",
                status.id,
                status.counters.snapshots_taken
            );
        }
        assert!(
            longest <= WINDOW + 2 * AFTER,
            "a log grew to {longest} entries with a snapshot every {AFTER} and a window of {WINDOW}"
        );
        let get = KvCommand::Get { key: "k4".into() };
        assert_eq!(
            nodes[leader].propose(get).await.unwrap(),
            KvResponse::Value(Some("v200".into()))
        );
        for node in &nodes {
            node.shutdown().await;
        }
    });
}

#[test]
fn the_snapshot_policy_compacts_every_node_by_itself_with_streamed_snapshots() {
    policy_compacts_by_itself(7, KvStateMachine::new);
}

#[test]
fn the_snapshot_policy_compacts_by_the_size_of_the_entries_applied() {
    // The largest of the test's entries, encoded as the policy counts them: a size
    // trigger of `AFTER` of them fires within about `AFTER` entries.
    let largest = Entry {
        term: Term(9),
        index: LogIndex(999),
        payload: Payload::Command(KvCommand::Put {
            key: "k6".into(),
            value: "v200".into(),
        }),
    };
    let size = Postcard.encode(&largest).unwrap().len() as u64;
    policy_compacts_with(10, KvStateMachine::new, move |config| {
        config.with_snapshot_after_bytes(Some(AFTER * size))
    });
}

#[test]
fn the_snapshot_policy_runs_a_job_that_serializes_the_captured_state_whole() {
    policy_compacts_by_itself(9, || CapturesWhole(KvStateMachine::new()));
}

#[test]
fn the_snapshot_policy_serializes_on_the_apply_task_without_a_cheap_capture() {
    policy_compacts_by_itself(8, || SerializesInline(KvStateMachine::new()));
}
