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
use raft_net_smol::{SmolRuntime, TcpConfig, TcpServer, TcpTransport};
use raft_traits::{
    LogId, LogIndex, NodeId, Runtime, Snapshot, StateMachine, StateMachineError, async_trait,
};

type KvRaft = Raft<KvCommand, KvResponse>;

/// A key-value machine that hands Raft a snapshot every `every` commands.
struct Compacting {
    kv: KvStateMachine,
    every: u64,
    since: u64,
    raft: Arc<OnceLock<KvRaft>>,
}

#[async_trait]
impl StateMachine<KvCommand> for Compacting {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let response = self.kv.apply(log_id, command).await;
        self.since += 1;
        if self.since >= self.every
            && let Ok(snapshot) = self.kv.snapshot().await
            && let Some(raft) = self.raft.get()
        {
            raft.snapshot(snapshot.meta.last_included.index, snapshot.data)
                .unwrap();
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
