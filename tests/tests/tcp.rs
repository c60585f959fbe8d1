//! The library over real sockets: three nodes in this process on 127.0.0.1 (ephemeral
//! ports), `TcpServer` and `TcpTransport` from `raft-net-smol`, in-memory storage. The
//! key-value service's own tests (`examples/tests/kv`) add process kills and bad input on
//! every port.
//!
//! ```text
//! cargo test --release -p raft-tests --test tcp
//! ```

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: it panics to fail

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use raft_examples::{FaultProxy, LinkMode};
use raft_impl::core::RoleKind;
use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemStorage};
use raft_net_smol::frame::FrameKind;
use raft_net_smol::handshake::{Hello, Protocol};
use raft_net_smol::{SmolRuntime, TcpConfig, TcpServer, TcpTransport};
use raft_tests::hostile::{self, Expect, Target};
use raft_traits::{LogId, LogIndex, NodeId, Runtime, Snapshot, StateMachine, StateMachineError};
use smol::net::TcpStream;

type KvRaft = Raft<KvCommand, KvResponse>;

/// A key-value machine that hands Raft a snapshot every `every` commands.
struct Compacting {
    kv: KvStateMachine,
    every: u64,
    since: u64,
    raft: Arc<OnceLock<KvRaft>>,
}

impl StateMachine<KvCommand> for Compacting {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let response = self.kv.apply(log_id, command).await;
        self.since += 1;
        if self.since >= self.every
            && let Ok(snapshot) = self.kv.snapshot().await
            && let Some(raft) = self.raft.get()
            // Refused only if a snapshot from the leader already covers the index.
            && raft
                .snapshot(snapshot.meta.last_included.index, snapshot.data)
                .is_ok()
        {
            self.since = 0;
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.kv.snapshot().await
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.kv.restore(snapshot).await
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        KvStateMachine::check_snapshot(snapshot)
    }
}

/// Three nodes on loopback. Node `i` reaches node `j` at `routes[i][j]`: the server
/// itself, or a fault proxy in front of it.
struct Cluster {
    runtime: SmolRuntime,
    tcp: TcpConfig,
    servers: Vec<SocketAddr>,
    routes: Vec<Vec<SocketAddr>>,
    nodes: Vec<Option<(KvRaft, TcpServer)>>,
    storages: Vec<MemStorage<KvCommand>>,
    snapshot_every: u64,
}

fn id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

impl Cluster {
    /// Binds three servers; `proxied` puts a fault proxy on every link.
    fn new(
        runtime: &SmolRuntime,
        tcp: TcpConfig,
        proxied: bool,
        snapshot_every: u64,
    ) -> (Cluster, Vec<Vec<Option<FaultProxy>>>) {
        let listeners: Vec<TcpServer> = (0..3)
            .map(|_| TcpServer::bind(([127, 0, 0, 1], 0), tcp.clone()).unwrap())
            .collect();
        let servers: Vec<SocketAddr> = listeners.iter().map(TcpServer::local_addr).collect();
        let mut proxies: Vec<Vec<Option<FaultProxy>>> =
            (0..3).map(|_| (0..3).map(|_| None).collect()).collect();
        let routes = (0..3)
            .map(|from| {
                (0..3)
                    .map(|to| {
                        if proxied && from != to {
                            let proxy = FaultProxy::start(servers[to]).unwrap();
                            let addr = proxy.local_addr();
                            proxies[from][to] = Some(proxy);
                            addr
                        } else {
                            servers[to]
                        }
                    })
                    .collect()
            })
            .collect();
        let mut cluster = Cluster {
            runtime: runtime.clone(),
            tcp,
            servers,
            routes,
            nodes: (0..3).map(|_| None).collect(),
            storages: (0..3).map(|_| MemStorage::new()).collect(),
            snapshot_every,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            cluster.nodes[i] = Some((runtime.block_on(cluster.spawn(i)), listener));
            let (raft, server) = cluster.nodes[i].as_ref().unwrap();
            server.serve(Arc::new(raft.clone())).unwrap();
        }
        (cluster, proxies)
    }

    async fn spawn(&self, i: usize) -> KvRaft {
        let peers: Vec<(NodeId, SocketAddr)> = (0..3)
            .filter(|&j| j != i)
            .map(|j| (id(j), self.routes[i][j]))
            .collect();
        let handle = Arc::new(OnceLock::new());
        let machine = Compacting {
            kv: KvStateMachine::new(),
            every: self.snapshot_every,
            since: 0,
            raft: Arc::clone(&handle),
        };
        let parts = Parts {
            runtime: self.runtime.clone(),
            storage: self.storages[i].clone(),
            state_machine: machine,
            transport: TcpTransport::new(self.tcp.clone(), id(i), peers).unwrap(),
        };
        let raft = Raft::spawn(id(i), (0..3).map(id), Config::default(), parts)
            .await
            .unwrap();
        let _ = handle.set(raft.clone());
        raft
    }

    fn raft(&self, i: usize) -> Option<KvRaft> {
        self.nodes[i].as_ref().map(|(raft, _)| raft.clone())
    }

    /// Waits for a leader among `among`; returns its number.
    async fn leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(&i) = among
                .iter()
                .find(|&&i| self.raft(i).is_some_and(|r| r.state().1))
            {
                return i;
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}");
            self.runtime.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts `key = value` through whichever of `among` leads, retrying through elections.
    async fn put(&self, among: &[usize], key: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let leader = self.leader(among).await;
            let put = KvCommand::Put {
                key: key.into(),
                value: value.into(),
            };
            let attempt = raft_traits::timeout(
                &self.runtime,
                Duration::from_secs(2),
                self.raft(leader).unwrap().propose(put),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                return;
            }
            assert!(Instant::now() < deadline, "put {key} did not succeed");
        }
    }

    /// Waits until node `i` has applied `index`.
    async fn applied(&self, i: usize, index: LogIndex) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.raft(i).unwrap().status().last_applied < index {
            assert!(
                Instant::now() < deadline,
                "node {i} did not apply {index}: {:?}",
                self.raft(i).unwrap().status()
            );
            self.runtime.sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some((raft, server)) = self.nodes[i].take() {
            server.shutdown().await;
            raft.shutdown().await;
            self.storages[i] = self.storages[i].copy();
        }
    }

    async fn restart(&mut self, i: usize) {
        let raft = self.spawn(i).await;
        // Listens again where its peers know it.
        let server = TcpServer::bind(self.servers[i], self.tcp.clone()).unwrap();
        server.serve(Arc::new(raft.clone())).unwrap();
        self.nodes[i] = Some((raft, server));
    }

    async fn shutdown(&mut self) {
        for i in 0..3 {
            self.stop(i).await;
        }
    }
}

fn run(test: impl AsyncFnOnce(&SmolRuntime)) {
    let runtime = SmolRuntime::with_threads(2);
    runtime.block_on(test(&runtime));
    runtime.stop();
}

#[test]
fn elect_and_replicate_over_tcp() {
    run(async |rt| {
        let (mut cluster, _) = Cluster::new(rt, TcpConfig::default(), false, 1000);
        for k in 0..50 {
            cluster
                .put(&[0, 1, 2], &format!("k{k}"), &format!("v{k}"))
                .await;
        }
        let leader = cluster.leader(&[0, 1, 2]).await;
        let commit = cluster.raft(leader).unwrap().status().commit_index;
        for i in 0..3 {
            cluster.applied(i, commit).await;
        }
        cluster.shutdown().await;
    });
}

#[test]
fn a_stopped_node_restarts_on_its_port_and_catches_up() {
    run(async |rt| {
        let (mut cluster, _) = Cluster::new(rt, TcpConfig::default(), false, 1000);
        cluster.put(&[0, 1, 2], "before", "1").await;
        let leader = cluster.leader(&[0, 1, 2]).await;
        let victim = (leader + 1) % 3;
        cluster.stop(victim).await;
        let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        for k in 0..30 {
            cluster.put(&others, &format!("k{k}"), "x").await;
        }
        cluster.restart(victim).await;
        cluster.put(&[0, 1, 2], "after", "2").await;
        let leader = cluster.leader(&[0, 1, 2]).await;
        let commit = cluster.raft(leader).unwrap().status().commit_index;
        cluster.applied(victim, commit).await;
        cluster.shutdown().await;
    });
}

#[test]
fn install_snapshot_larger_than_the_maximum_frame_over_tcp() {
    run(async |rt| {
        // 4 KiB frames, 1 KiB chunks; the snapshot will be tens of KiB.
        let tcp = TcpConfig {
            max_frame_size: 4096,
            chunk_size: 1024,
            ..TcpConfig::default()
        };
        let (mut cluster, _) = Cluster::new(rt, tcp, false, 20);
        cluster.put(&[0, 1, 2], "seed", "0").await;
        let leader = cluster.leader(&[0, 1, 2]).await;
        let victim = (leader + 1) % 3;
        cluster.stop(victim).await;
        let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        let big = "x".repeat(2000);
        for k in 0..60 {
            cluster.put(&others, &format!("k{k}"), &big).await;
        }
        let leader = cluster.leader(&others).await;
        let compacted = cluster.raft(leader).unwrap().status().snapshot.index;
        assert!(
            compacted > LogIndex(2),
            "the leader compacted past what the victim has"
        );
        cluster.restart(victim).await;
        cluster.applied(victim, compacted).await;
        let status = cluster.raft(victim).unwrap().status();
        assert!(
            status.snapshot.index >= compacted,
            "it caught up through InstallSnapshot: {status:?}"
        );
        cluster.shutdown().await;
    });
}

#[test]
fn a_partitioned_leader_is_replaced_and_catches_up_through_fault_proxies() {
    run(async |rt| {
        let (mut cluster, proxies) = Cluster::new(rt, TcpConfig::default(), true, 1000);
        cluster.put(&[0, 1, 2], "before", "1").await;
        let old = cluster.leader(&[0, 1, 2]).await;
        let cut = |mode| {
            for other in (0..3).filter(|&o| o != old) {
                for (from, to) in [(old, other), (other, old)] {
                    proxies[from][to].as_ref().unwrap().set_mode(mode);
                }
            }
        };
        cut(LinkMode::Cut);
        let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
        for k in 0..20 {
            cluster.put(&majority, &format!("k{k}"), "during").await;
        }
        let new = cluster.leader(&majority).await;
        assert_ne!(new, old);
        let new_status = cluster.raft(new).unwrap().status();
        cut(LinkMode::Pass);
        cluster.applied(old, new_status.commit_index).await;
        // Back in touch, the old leader has learned the new term and follows.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = cluster.raft(old).unwrap().status();
            if status.role == RoleKind::Follower && status.term >= new_status.term {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the old leader did not step down: {status:?}"
            );
            rt.sleep(Duration::from_millis(10)).await;
        }
        cluster.shutdown().await;
        for row in &proxies {
            for proxy in row.iter().flatten() {
                proxy.shutdown().await;
            }
        }
    });
}

// ---- Hostile input against a live cluster (issue 12, item 7) ------------------------

/// Limits small enough for the hostile run to reach: 64 KiB frames, 1 MiB per
/// connection of unfinished requests, 8 MiB per server.
fn guarded() -> TcpConfig {
    TcpConfig {
        max_frame_size: 64 * 1024,
        chunk_size: 16 * 1024,
        max_message_size: 1024 * 1024,
        max_buffered_per_connection: 1024 * 1024,
        max_buffered_total: 8 * 1024 * 1024,
        max_connections: 256,
        handshake_timeout: Duration::from_secs(2),
        ..TcpConfig::default()
    }
}

/// Holds `count` connections to `addr`, each with an unfinished chunked request just
/// under the per-connection cap: together they go over the server's total cap.
async fn hold_unfinished(addr: SocketAddr, target: &Target, count: usize) -> Vec<TcpStream> {
    use smol::io::AsyncWriteExt;
    let chunk = vec![0x5a; 60 * 1024];
    let mut held = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let mut bytes = hostile::frame(
            FrameKind::Hello,
            0,
            false,
            &Hello {
                protocol: Protocol::Raft,
                cluster_id: target.cluster_id.clone(),
                node: Some(hostile::STRANGER),
            }
            .encode()
            .unwrap(),
        );
        for _ in 0..16 {
            bytes.extend(hostile::frame(FrameKind::Request, 7, true, &chunk));
        }
        // A server over its total cap closes the connection mid-write.
        let _ = stream.write_all(&bytes).await;
        held.push(stream);
    }
    held
}

async fn survive_hostile_input(rt: &SmolRuntime, random_frames: u64, seed: u64) {
    let tcp = guarded();
    let (mut cluster, _) = Cluster::new(rt, tcp.clone(), false, 1000);
    cluster.put(&[0, 1, 2], "before", "1").await;
    let target = Target {
        cluster_id: tcp.cluster_id.clone(),
        members: (0..3).map(id).collect(),
        max_frame_size: tcp.max_frame_size,
    };
    let rss_before = hostile::resident_set_bytes().unwrap_or(0);
    let mut rss_peak = rss_before;

    // The corpus, at every server, each with what the server must do about it.
    let corpus = hostile::corpus(&target);
    for attack in &corpus {
        for &addr in &cluster.servers {
            // Long enough for a closing or an answer; input that leaves the server
            // waiting for more (a cut frame) is dropped sooner.
            let linger = match attack.expect {
                Expect::Anything => Duration::from_millis(300),
                _ => Duration::from_secs(3),
            };
            let observed = hostile::deliver(addr, attack, linger).await.unwrap();
            assert!(
                observed.meets(attack.expect),
                "{} at {addr}: expected {:?}, observed {observed:?}",
                attack.name,
                attack.expect
            );
        }
    }
    cluster.put(&[0, 1, 2], "after-corpus", "1").await;

    // Unfinished requests over every server's buffer cap, held through the random run.
    let mut held = Vec::new();
    for &addr in &cluster.servers {
        held.extend(hold_unfinished(addr, &target, 12).await);
    }
    rss_peak = rss_peak.max(hostile::resident_set_bytes().unwrap_or(0));

    // Random frames, 16 connections at a time, with a write through the cluster after
    // every batch: it must keep committing while under attack.
    let started = Instant::now();
    let mut sent = 0u64;
    let (mut closed, mut refused) = (0u64, 0u64);
    let mut batch_number = 0u64;
    while sent < random_frames {
        let batch = (random_frames - sent).min(2_000);
        let mut outcomes = Vec::new();
        for lane in 0..16u64 {
            let servers = cluster.servers.clone();
            let target = target.clone();
            outcomes.push(rt.spawn(async move {
                let mut counts = (0u64, 0u64);
                let mut n = lane;
                while n < batch {
                    let frame_seed = seed ^ (sent + n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let attack = hostile::random_attack(&mut hostile::rng(frame_seed), &target);
                    let addr = servers[((sent + n) % 3) as usize];
                    if let Ok(observed) =
                        hostile::deliver(addr, &attack, Duration::from_millis(20)).await
                    {
                        counts.0 += u64::from(observed.closed);
                        counts.1 += u64::from(observed.error_reply);
                    }
                    n += 16;
                }
                counts
            }));
        }
        for outcome in outcomes {
            let (c, r) = outcome.await.expect("an attacking lane panicked");
            closed += c;
            refused += r;
        }
        sent += batch;
        batch_number += 1;
        rss_peak = rss_peak.max(hostile::resident_set_bytes().unwrap_or(0));
        cluster
            .put(&[0, 1, 2], &format!("during-{batch_number}"), "1")
            .await;
    }
    drop(held);

    // Still one cluster: it commits, every node applies it, none stopped, each refused
    // what it was sent, and the stranger's command is nowhere.
    cluster.put(&[0, 1, 2], "after", "1").await;
    let leader = cluster.leader(&[0, 1, 2]).await;
    let leader_raft = cluster.raft(leader).unwrap();
    let commit = leader_raft.status().commit_index;
    for i in 0..3 {
        cluster.applied(i, commit).await;
        let status = cluster.raft(i).unwrap().status();
        assert!(!status.stopped, "node {i} stopped: {:?}", status.fatal);
        assert!(status.refused_messages > 0, "node {i} refused nothing");
    }
    let injected = leader_raft
        .propose(KvCommand::Get {
            key: "injected".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        injected,
        KvResponse::Value(None),
        "a stranger's entry was applied"
    );
    let rss_after = hostile::resident_set_bytes().unwrap_or(0);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "hostile input: {} corpus attacks x 3 servers, {sent} random frames in {:.1?} \
         ({closed} connections closed by the server, {refused} requests refused); \
         {} puts committed under attack; refused per node: {:?}; RSS {:.1} MiB before, \
         {:.1} MiB peak, {:.1} MiB after (buffer caps: {:.0} MiB per server, {:.0} MiB \
         per connection)",
        corpus.len(),
        started.elapsed(),
        batch_number,
        (0..3)
            .map(|i| cluster.raft(i).unwrap().status().refused_messages)
            .collect::<Vec<_>>(),
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
        mib(tcp.max_buffered_total),
        mib(tcp.max_buffered_per_connection),
    );
    // Three servers, each holding at most its total cap of unfinished requests, plus
    // room for the cluster's own log and the allocator's slack.
    let allowed = 3 * tcp.max_buffered_total + 64 * 1024 * 1024;
    assert!(
        rss_peak.saturating_sub(rss_before) <= allowed,
        "RSS grew by {:.1} MiB, over the {:.1} MiB the caps allow",
        mib(rss_peak.saturating_sub(rss_before)),
        mib(allowed)
    );
    cluster.shutdown().await;
}

#[test]
fn a_live_cluster_survives_the_hostile_corpus_and_random_frames() {
    run(async |rt| survive_hostile_input(rt, 3_000, 1).await);
}

/// The long run (README): `HOSTILE_FRAMES=100000 cargo test --release -p raft-tests
/// --test tcp -- --ignored --nocapture hostile_long_run`.
#[test]
#[ignore = "long: 100,000 random frames; run by hand (README)"]
fn hostile_long_run() {
    let frames = std::env::var("HOSTILE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    run(async |rt| survive_hostile_input(rt, frames, seed).await);
}
