//! Three-node clusters in this process: on direct in-process calls or real loopback TCP,
//! with memory or durable file storage, and the closed-loop client driver.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_examples::pki::LocalCa;
use raft_file_store::FileStorage;
use raft_impl::{Config, Parts, Raft};
use raft_mem::{LocalNetwork, MemStorage};
use raft_net_smol::tls::TlsConfig;
use raft_net_smol::{TcpConfig, TcpServer, TcpTransport};
use raft_traits::{
    Bytes, Command, LogId, NodeId, Postcard, RpcHandler, Runtime, Snapshot, SnapshotMeta,
    StateMachine, StateMachineError, Storage, Transport,
};

use crate::BenchError;

/// The three members.
pub(crate) fn members() -> Vec<NodeId> {
    (1..=3).map(NodeId).collect()
}

/// How the nodes reach each other.
pub(crate) enum Wiring<C: Command> {
    /// Direct calls in this process.
    Local(LocalNetwork<C>),
    /// Real TCP over loopback; one listening server per node.
    Tcp {
        /// Boxed: far larger than the other variant.
        config: Box<TcpConfig>,
        /// With mutual TLS: each node's certificate and the CA, by node.
        tls: BTreeMap<NodeId, TlsConfig>,
        /// Each node's listening server; `None` while the node is stopped.
        servers: Mutex<Vec<Option<TcpServer>>>,
        addresses: Vec<(NodeId, SocketAddr)>,
    },
}

impl<C: Command> Wiring<C> {
    pub(crate) fn local() -> Self {
        Wiring::Local(LocalNetwork::new())
    }

    pub(crate) fn tcp(config: TcpConfig) -> Result<Self, BenchError> {
        Self::tcp_with(config, BTreeMap::new())
    }

    /// TCP with mutual TLS: every node presents a certificate of `ca`.
    pub(crate) fn tcp_tls(config: TcpConfig, ca: &LocalCa) -> Result<Self, BenchError> {
        let tls = members()
            .into_iter()
            .map(|id| Ok((id, ca.node(id).map_err(|e| BenchError(e.to_string()))?)))
            .collect::<Result<_, BenchError>>()?;
        Self::tcp_with(config, tls)
    }

    fn tcp_with(config: TcpConfig, tls: BTreeMap<NodeId, TlsConfig>) -> Result<Self, BenchError> {
        let mut servers = Vec::new();
        let mut addresses = Vec::new();
        for id in members() {
            let server = TcpServer::bind(([127, 0, 0, 1], 0), config.clone())
                .map_err(|e| BenchError(format!("cannot listen: {e}")))?;
            if let Some(tls) = tls.get(&id) {
                server.set_tls(tls.clone());
            }
            addresses.push((id, server.local_addr()));
            servers.push(Some(server));
        }
        Ok(Wiring::Tcp {
            config: Box::new(config),
            tls,
            servers: Mutex::new(servers),
            addresses,
        })
    }

    /// Node `id`'s transport, whose connections run on `runtime` (the node's).
    fn transport<Rt: Runtime>(
        &self,
        id: NodeId,
        runtime: &Rt,
    ) -> Result<Box<dyn Transport<C>>, BenchError> {
        Ok(match self {
            Wiring::Local(net) => Box::new(net.transport()),
            Wiring::Tcp {
                config,
                addresses,
                tls,
                ..
            } => {
                let config = TcpConfig::clone(config);
                let transport = match tls.get(&id) {
                    Some(tls) => TcpTransport::<C>::with_tls(
                        config,
                        Postcard,
                        id,
                        tls.clone(),
                        addresses.clone(),
                    ),
                    None => TcpTransport::<C>::new(config, id, addresses.clone()),
                }
                .map_err(|e| BenchError(format!("bad TCP config: {e}")))?;
                transport.set_runtime(runtime.clone());
                Box::new(transport)
            }
        })
    }

    /// Serves node `id`'s RPCs with `handler`, on `runtime` (the node's).
    fn attach<Rt: Runtime>(
        &self,
        id: NodeId,
        handler: Arc<dyn RpcHandler<C>>,
        runtime: &Rt,
    ) -> Result<(), BenchError> {
        match self {
            Wiring::Local(net) => {
                net.register(id, handler);
                Ok(())
            }
            Wiring::Tcp {
                config,
                servers,
                addresses,
                tls,
            } => {
                let slot = (id.0 - 1) as usize;
                let mut servers = servers.lock().unwrap_or_else(|e| e.into_inner());
                if servers[slot].is_none() {
                    // A restarted node listens again where its peers know it.
                    let server = TcpServer::bind(addresses[slot].1, TcpConfig::clone(config))
                        .map_err(|e| BenchError(format!("cannot listen again: {e}")))?;
                    if let Some(tls) = tls.get(&id) {
                        server.set_tls(tls.clone());
                    }
                    servers[slot] = Some(server);
                }
                servers[slot]
                    .as_ref()
                    .map_or(Ok(()), |server| {
                        server.set_runtime(runtime.clone());
                        server.serve(handler)
                    })
                    .map_err(|e| BenchError(format!("cannot serve: {e}")))
            }
        }
    }

    async fn detach(&self, id: NodeId) {
        match self {
            Wiring::Local(net) => net.unregister(id),
            Wiring::Tcp { servers, .. } => {
                let server =
                    servers.lock().unwrap_or_else(|e| e.into_inner())[(id.0 - 1) as usize].take();
                if let Some(server) = server {
                    server.shutdown().await;
                }
            }
        }
    }

    pub(crate) async fn shutdown(&self) {
        if let Wiring::Tcp { servers, .. } = self {
            let all: Vec<TcpServer> = servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter_mut()
                .filter_map(Option::take)
                .collect();
            for server in all {
                server.shutdown().await;
            }
        }
    }
}

/// Starts node `id` of the cluster and attaches it to the wiring.
pub(crate) async fn start_node<Rt, C, S, M>(
    runtime: &Rt,
    wiring: &Wiring<C>,
    id: NodeId,
    config: Config,
    storage: S,
    state_machine: M,
) -> Result<Raft<C, M::Response>, BenchError>
where
    Rt: Runtime,
    C: Command,
    S: Storage<C>,
    M: StateMachine<C>,
{
    let parts = Parts {
        runtime: runtime.clone(),
        storage,
        state_machine,
        transport: wiring.transport(id, runtime)?,
    };
    let raft = Raft::spawn(id, members(), config, parts)
        .await
        .map_err(|e| BenchError(format!("cannot start {id}: {e}")))?;
    wiring.attach(id, Arc::new(raft.clone()), runtime)?;
    Ok(raft)
}

/// Takes node `id` out of the cluster, as a crash would.
pub(crate) async fn stop_node<C: Command, R: Send + 'static>(
    wiring: &Wiring<C>,
    id: NodeId,
    raft: &Raft<C, R>,
) {
    wiring.detach(id).await;
    raft.shutdown().await;
}

/// Where nodes keep their state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    Memory,
    Files,
}

/// A fresh, empty directory for durable storage, removed when dropped.
pub(crate) struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    pub(crate) fn new(name: &str) -> Result<Self, BenchError> {
        let dir = std::env::temp_dir().join(format!("raft-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| BenchError(format!("{}: {e}", dir.display())))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts applied commands; the benchmarks check the counts before they print a figure.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counter {
    pub(crate) applied: Arc<AtomicU64>,
    last: LogId,
}

impl<C: Command> StateMachine<C> for Counter {
    type Response = ();

    async fn apply(&mut self, log_id: LogId, _command: C) {
        self.last = log_id;
        self.applied.fetch_add(1, Ordering::Relaxed);
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let count = self.applied.load(Ordering::Relaxed);
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last,
                membership: Default::default(),
            },
            data: Bytes::copy_from_slice(&count.to_le_bytes()),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let bytes: [u8; 8] = snapshot.data[..]
            .try_into()
            .map_err(|_| StateMachineError::InvalidSnapshot("not a count".into()))?;
        self.applied
            .store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        self.last = snapshot.meta.last_included;
        Ok(())
    }
}

/// A started three-node cluster of counters.
pub(crate) struct CounterCluster<Rt> {
    pub(crate) runtime: Rt,
    pub(crate) wiring: Wiring<()>,
    pub(crate) nodes: Vec<Raft<(), ()>>,
    pub(crate) counters: Vec<Counter>,
    _dirs: Vec<ScratchDir>,
}

impl<Rt: Runtime> CounterCluster<Rt> {
    pub(crate) async fn start(
        runtime: &Rt,
        wiring: Wiring<()>,
        durability: Durability,
        config: &Config,
    ) -> Result<CounterCluster<Rt>, BenchError> {
        let mut nodes = Vec::new();
        let mut counters = Vec::new();
        let mut dirs = Vec::new();
        for id in members() {
            let counter = Counter::default();
            let raft = match durability {
                Durability::Memory => {
                    start_node(
                        runtime,
                        &wiring,
                        id,
                        config.clone(),
                        MemStorage::new(),
                        counter.clone(),
                    )
                    .await?
                }
                Durability::Files => {
                    let dir = ScratchDir::new(&format!("node{}", id.0))?;
                    let storage = FileStorage::open(&dir.0)
                        .map_err(|e| BenchError(format!("cannot open storage: {e}")))?;
                    dirs.push(dir);
                    start_node(
                        runtime,
                        &wiring,
                        id,
                        config.clone(),
                        storage,
                        counter.clone(),
                    )
                    .await?
                }
            };
            nodes.push(raft);
            counters.push(counter);
        }
        Ok(CounterCluster {
            runtime: runtime.clone(),
            wiring,
            nodes,
            counters,
            _dirs: dirs,
        })
    }

    pub(crate) async fn leader(&self) -> Result<Raft<(), ()>, BenchError> {
        wait_for_leader(&self.runtime, &self.nodes).await
    }

    /// Waits until every node applied exactly `expected` commands.
    pub(crate) async fn verify(&self, expected: u64) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts: Vec<u64> = self
                .counters
                .iter()
                .map(|c| c.applied.load(Ordering::Relaxed))
                .collect();
            if counts.iter().all(|&c| c == expected) {
                return Ok(());
            }
            if counts.iter().any(|&c| c > expected) || Instant::now() > deadline {
                return Err(BenchError(format!(
                    "verification failed: nodes applied {counts:?}, expected {expected} each"
                )));
            }
            self.runtime.sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
        self.wiring.shutdown().await;
    }
}

/// Waits (up to 10 s) until one of `nodes` is the leader.
pub(crate) async fn wait_for_leader<Rt: Runtime, C: Command, R: Send + 'static>(
    runtime: &Rt,
    nodes: &[Raft<C, R>],
) -> Result<Raft<C, R>, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(leader) = nodes.iter().find(|n| n.state().1) {
            return Ok(leader.clone());
        }
        if Instant::now() > deadline {
            return Err(BenchError("no leader elected within 10 s".into()));
        }
        runtime.sleep(Duration::from_millis(5)).await;
    }
}

/// The outcome of a closed-loop run: per-write latencies in nanoseconds, and how long it
/// took.
pub(crate) struct LoopRun {
    pub(crate) latencies: Vec<u64>,
    pub(crate) elapsed: Duration,
}

/// `clients` tasks each propose a command and wait for its result before the next, until
/// `writes` have been made in total.
pub(crate) async fn closed_loop<Rt, C, R>(
    runtime: &Rt,
    leader: &Raft<C, R>,
    clients: usize,
    writes: u64,
    command: impl Fn(u64) -> C + Send + Sync + 'static,
    done: Arc<AtomicU64>,
) -> Result<LoopRun, BenchError>
where
    Rt: Runtime,
    C: Command,
    R: Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let command = Arc::new(command);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (leader, next, done, command) = (
                leader.clone(),
                Arc::clone(&next),
                Arc::clone(&done),
                Arc::clone(&command),
            );
            runtime.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= writes {
                        return Ok(latencies);
                    }
                    let sent = Instant::now();
                    leader
                        .propose(command(n))
                        .await
                        .map_err(|e| BenchError(format!("a write failed: {e}")))?;
                    latencies.push(crate::measure::nanos(sent.elapsed()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(writes as usize);
    for task in tasks {
        let mine: Result<Vec<u64>, BenchError> = task
            .await
            .map_err(|_| BenchError("a client task died".into()))?;
        latencies.extend(mine?);
    }
    Ok(LoopRun {
        latencies,
        elapsed: started.elapsed(),
    })
}
