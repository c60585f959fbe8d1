//! Snapshots sent in pieces in a running cluster (issue 14, items 2 and 6): a follower
//! that crashes mid-transfer resumes from the offset it holds; a transfer survives a
//! change of leader; pieces duplicated, reordered and lost by the network still install
//! exactly the leader's state.
//!
//! Every follower's requests pass through a recorder, so the tests count the snapshot
//! bytes each server incarnation was sent, and how many of them it already held.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, HandlerError, LogId, LogIndex, NodeId, Request, Response, RpcHandler, Runtime, Snapshot,
    SnapshotDescriptor, SnapshotMeta, SnapshotReader, SnapshotSource, StateMachine,
    StateMachineError, Storage, async_trait, timeout,
};

type KvRaft = Raft<KvCommand, KvResponse>;

/// The piece size the tests use, and how many pieces may be in flight.
const CHUNK: usize = 512;
const WINDOW: usize = 4;
/// Keys written, and the length of each value: a snapshot of about 40 KB, ~80 pieces.
const KEYS: u64 = 200;
const VALUE_LEN: usize = 180;

/// A snapshot piece a server was sent: its snapshot, offset and length.
#[derive(Clone, Debug)]
struct Piece {
    snapshot: SnapshotDescriptor,
    offset: u64,
    len: u64,
}

/// Passes requests on to a server's Raft handle, recording the snapshot pieces, each
/// of which it holds up for a simulated millisecond (as a slow disk would), so that a
/// transfer lasts long enough to be interrupted.
struct Recorder {
    inner: KvRaft,
    runtime: SimRuntime,
    pieces: Arc<Mutex<Vec<Piece>>>,
}

#[async_trait]
impl RpcHandler<KvCommand> for Recorder {
    async fn handle(&self, request: Request<KvCommand>) -> Result<Response, HandlerError> {
        if let Request::InstallSnapshot(install) = &request {
            self.pieces.lock().unwrap().push(Piece {
                snapshot: install.snapshot.clone(),
                offset: install.offset,
                len: install.data.len() as u64,
            });
            self.runtime.sleep(Duration::from_millis(1)).await;
        }
        self.inner.handle(request).await
    }
}

/// The key-value state machine, which writes its snapshots in pieces and is restored
/// from the snapshot's reader in small pieces (counting the restores that came this way).
struct Streaming {
    inner: KvStateMachine,
    streamed: Arc<AtomicU64>,
}

impl StateMachine<KvCommand> for Streaming {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        self.inner.apply(log_id, command).await
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.inner.snapshot().await
    }

    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        self.inner.capture_snapshot_stream()
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.inner.restore(snapshot).await
    }

    async fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> Result<(), StateMachineError> {
        let mut data = Vec::new();
        while (data.len() as u64) < reader.len() {
            let piece = reader
                .read_at(data.len() as u64, 300)
                .await
                .map_err(|e| StateMachineError::Other(Box::new(e)))?;
            assert!(!piece.is_empty() && piece.len() <= 300);
            data.extend_from_slice(&piece);
        }
        self.streamed.fetch_add(1, Ordering::SeqCst);
        let data = Bytes::from(data);
        self.inner.restore(Snapshot { meta, data }).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

struct Node {
    raft: KvRaft,
    /// How many snapshots this incarnation restored through `restore_from`.
    streamed: Arc<AtomicU64>,
    storage: MemStorage<KvCommand>,
    /// The pieces this incarnation was sent.
    pieces: Arc<Mutex<Vec<Piece>>>,
}

struct Cluster {
    runtime: SimRuntime,
    net: MemNetwork<KvCommand, SimRuntime>,
    ids: Vec<NodeId>,
    config: Config,
    seed: u64,
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start(runtime: &SimRuntime, seed: u64) -> Cluster {
        let mut config = Config::lab();
        config.snapshot_chunk_size = CHUNK;
        config.snapshot_chunks_in_flight = WINDOW;
        // Every server snapshots by itself, at the same indices.
        config.snapshot_after_entries = Some(KEYS);
        let net = MemNetwork::new(runtime.clone(), seed);
        let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut cluster = Cluster {
            runtime: runtime.clone(),
            net,
            ids,
            config,
            seed,
            nodes: Vec::new(),
        };
        for i in 0..3 {
            let node = cluster.spawn(i, MemStorage::new()).await;
            cluster.nodes.push(node);
        }
        for i in 0..3 {
            cluster.isolate(i, false);
        }
        cluster
    }

    async fn spawn(&self, i: usize, storage: MemStorage<KvCommand>) -> Node {
        let id = self.ids[i];
        let streamed = Arc::new(AtomicU64::new(0));
        let parts = Parts {
            runtime: self.runtime.clone(),
            storage: storage.clone(),
            state_machine: Streaming {
                inner: KvStateMachine::new(),
                streamed: Arc::clone(&streamed),
            },
            transport: self.net.transport(id),
        };
        let config = self.config.clone().with_seed(Some(self.seed + id.0));
        let raft: KvRaft = Raft::spawn(id, self.ids.clone(), config, parts)
            .await
            .unwrap();
        let pieces = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            inner: raft.clone(),
            runtime: self.runtime.clone(),
            pieces: Arc::clone(&pieces),
        };
        self.net.add_server(id, Arc::new(recorder));
        Node {
            raft,
            streamed,
            storage,
            pieces,
        }
    }

    /// Crashes server `i` and starts it again on what its storage holds.
    async fn restart(&mut self, i: usize) {
        self.net.delete_server(self.ids[i]);
        self.nodes[i].raft.shutdown().await;
        let storage = self.nodes[i].storage.clone();
        self.nodes[i] = self.spawn(i, storage).await;
        self.isolate(i, false);
    }

    /// Polls `condition` every simulated millisecond for up to sixty simulated seconds.
    async fn until(&self, what: &str, mut condition: impl FnMut(&Cluster) -> bool) {
        let wait = async {
            while !condition(self) {
                self.runtime.sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(&self.runtime, Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// Writes a few keys, cuts a follower off, and writes on until the leader has
    /// compacted its log past what the follower holds. Returns the leader and the
    /// follower, which stays cut off.
    async fn leave_a_follower_behind_a_snapshot(&self) -> (usize, usize) {
        let leader = self.leader().await;
        let follower = (leader + 1) % 3;
        self.write(1, 5).await;
        self.isolate(follower, true);
        self.write(6, KEYS + 5).await;
        self.until("the leader snapshots", |c| {
            c.nodes[leader].raft.status().snapshot.index >= LogIndex(KEYS)
        })
        .await;
        (leader, follower)
    }

    async fn leader(&self) -> usize {
        self.until("a leader", |c| c.nodes.iter().any(|n| n.raft.state().1))
            .await;
        self.nodes.iter().position(|n| n.raft.state().1).unwrap()
    }

    fn isolate(&self, i: usize, isolated: bool) {
        for j in 0..self.ids.len() {
            if j != i {
                self.net.set_link(self.ids[i], self.ids[j], !isolated);
                self.net.set_link(self.ids[j], self.ids[i], !isolated);
            }
        }
    }

    /// Writes keys `from..=to` through the current leader, retrying on a change of
    /// leader.
    async fn write(&self, from: u64, to: u64) {
        for k in from..=to {
            let put = KvCommand::Put {
                key: format!("k{k}").into(),
                value: value(k).into(),
            };
            loop {
                let leader = self.leader().await;
                if self.nodes[leader].raft.propose(put.clone()).await.is_ok() {
                    break;
                }
            }
        }
    }

    /// How many bytes of snapshot data follower `i` holds of the snapshot it is
    /// receiving (0 if none).
    async fn held(&self, i: usize) -> u64 {
        let mut storage = self.nodes[i].storage.clone();
        storage
            .pending_snapshot()
            .await
            .unwrap()
            .map_or(0, |pending| pending.written)
    }

    async fn stored(&self, i: usize) -> Option<SnapshotDescriptor> {
        let mut storage = self.nodes[i].storage.clone();
        storage.open_snapshot().await.unwrap().map(|(d, _)| d)
    }

    /// Waits until server `i` has applied everything written and serves it: checks
    /// every key through a read on the leader and the server's own state.
    async fn check_caught_up(&self, i: usize, last: u64) {
        self.until("the follower applies everything", |c| {
            c.nodes[i].raft.status().last_applied >= LogIndex(last)
        })
        .await;
        let leader = self.leader().await;
        for k in [1, last / 2, last] {
            let get = KvCommand::Get {
                key: format!("k{k}").into(),
            };
            assert_eq!(
                self.nodes[leader].raft.propose(get).await.unwrap(),
                KvResponse::Value(Some(value(k).into()))
            );
        }
        let status = self.nodes[i].raft.status();
        assert!(!status.stopped, "node stopped: {:?}", status.fatal);
    }

    async fn shutdown(&self) {
        for node in &self.nodes {
            node.raft.shutdown().await;
        }
    }
}

fn value(k: u64) -> String {
    let digit = char::from(b'a' + (k % 26) as u8);
    std::iter::repeat_n(digit, VALUE_LEN).collect()
}

/// Bytes of `pieces` below `offset` (of the snapshot `of`): what was sent again of
/// what the receiver already held.
fn bytes_below(pieces: &[Piece], of: &SnapshotDescriptor, offset: u64) -> u64 {
    pieces
        .iter()
        .filter(|p| p.snapshot == *of)
        .map(|p| offset.min(p.offset + p.len).saturating_sub(p.offset))
        .sum()
}

/// A follower cut off while the cluster writes and snapshots; it is reconnected and
/// the leader starts sending it the snapshot. Returns the cluster, the follower and
/// the snapshot being sent, once the follower holds at least `fraction` of it.
async fn transfer_under_way(
    runtime: &SimRuntime,
    seed: u64,
    fraction: f64,
) -> (Cluster, usize, SnapshotDescriptor) {
    let cluster = Cluster::start(runtime, seed).await;
    let (leader, follower) = cluster.leave_a_follower_behind_a_snapshot().await;
    let snapshot = cluster.stored(leader).await.unwrap();
    assert!(
        snapshot.size > (20 * CHUNK) as u64,
        "the snapshot ({} bytes) must span many pieces",
        snapshot.size
    );
    cluster.isolate(follower, false);
    let goal = (snapshot.size as f64 * fraction) as u64;
    let wait = async {
        while cluster.held(follower).await < goal {
            cluster.runtime.sleep(Duration::from_millis(1)).await;
        }
    };
    timeout(&cluster.runtime, Duration::from_secs(60), wait)
        .await
        .expect("the transfer reaches the goal");
    (cluster, follower, snapshot)
}

#[test]
fn a_follower_that_crashes_mid_transfer_resumes_from_its_offset() {
    let simulation = Simulation::new(11);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let (mut cluster, follower, snapshot) = transfer_under_way(&runtime, 11, 0.5).await;
        cluster.restart(follower).await;
        let held = cluster.held(follower).await;
        assert!(
            held >= snapshot.size / 2,
            "the restarted follower holds {held} of {} bytes",
            snapshot.size
        );
        cluster.check_caught_up(follower, KEYS + 5).await;
        assert_eq!(cluster.stored(follower).await.as_ref(), Some(&snapshot));
        assert_eq!(
            cluster.nodes[follower].streamed.load(Ordering::SeqCst),
            1,
            "the installed snapshot was restored from its reader"
        );
        let pieces = cluster.nodes[follower].pieces.lock().unwrap().clone();
        let resent = bytes_below(&pieces, &snapshot, held);
        let sent: u64 = pieces.iter().map(|p| p.len).sum();
        println!(
            "snapshot {} bytes; held {held} at the restart; sent to the new incarnation \
             {sent} bytes, {resent} of them already held",
            snapshot.size
        );
        assert!(
            resent < (CHUNK * WINDOW) as u64,
            "resent {resent} bytes the follower held: a window is {} bytes",
            CHUNK * WINDOW
        );
        assert!(
            sent < snapshot.size - held + (CHUNK * WINDOW) as u64,
            "the new incarnation was sent {sent} bytes: it started over"
        );
        cluster.shutdown().await;
    });
}

#[test]
fn a_transfer_survives_a_change_of_leader() {
    let simulation = Simulation::new(12);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let (cluster, follower, snapshot) = transfer_under_way(&runtime, 12, 0.3).await;
        let old_leader = cluster.leader().await;
        let held = cluster.held(follower).await;
        let before = cluster.nodes[follower].pieces.lock().unwrap().len();
        cluster.isolate(old_leader, true);
        cluster
            .until("another leader", |c| {
                c.nodes
                    .iter()
                    .enumerate()
                    .any(|(i, n)| i != old_leader && n.raft.state().1)
            })
            .await;
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, old_leader);
        cluster.check_caught_up(follower, KEYS + 5).await;
        // The servers snapshot the same state at the same index, so the new leader's
        // snapshot is the same one: the follower keeps what it holds.
        let new_snapshot = cluster.stored(new_leader).await.unwrap();
        let pieces = cluster.nodes[follower].pieces.lock().unwrap()[before..].to_vec();
        if new_snapshot == snapshot {
            let resent = bytes_below(&pieces, &snapshot, held);
            println!(
                "same snapshot on the new leader: {resent} bytes of the {held} held were sent again"
            );
            assert!(
                resent < (CHUNK * WINDOW) as u64,
                "the new leader resent {resent} of the {held} bytes held"
            );
        } else {
            println!("the new leader has another snapshot: the transfer started over");
        }
        cluster.isolate(old_leader, false);
        cluster.check_caught_up(old_leader, KEYS + 5).await;
        cluster.shutdown().await;
    });
}

#[test]
fn pieces_duplicated_reordered_and_lost_still_install_the_leaders_state() {
    for seed in [21, 22, 23] {
        let simulation = Simulation::new(seed);
        let runtime = simulation.runtime();
        simulation.block_on(async move {
            let cluster = Cluster::start(&runtime, seed).await;
            let (_, follower) = cluster.leave_a_follower_behind_a_snapshot().await;
            cluster.net.set_reliable(false);
            cluster.net.set_duplication(300);
            cluster.net.set_long_reordering(true);
            cluster.isolate(follower, false);
            cluster.check_caught_up(follower, KEYS + 5).await;
            let pieces = cluster.nodes[follower].pieces.lock().unwrap().clone();
            let installed = cluster.stored(follower).await.unwrap();
            let of_it = pieces.iter().filter(|p| p.snapshot == installed).count();
            println!(
                "seed {seed}: {} pieces delivered for a snapshot of {} bytes",
                of_it, installed.size
            );
            assert!(
                of_it as u64 > installed.size / CHUNK as u64,
                "the snapshot arrived in pieces"
            );
            cluster.net.set_reliable(true);
            cluster.net.set_duplication(0);
            cluster.net.set_long_reordering(false);
            cluster.shutdown().await;
        });
    }
}
