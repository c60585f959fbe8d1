//! [`BankNode`] and [`Cluster`]: bank replicas on real TCP, on loopback.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use raft_impl::session::DEFAULT_CAPACITY;
use raft_impl::{Config, Parts, RoleKind, StartError};
use raft_mem::MemStorage;
use raft_net_smol::{ServerError, SmolRuntime, TcpConfig, TcpConfigError, TcpServer, TcpTransport};
use raft_traits::NodeId;

use crate::replica::{BankMachine, BankRaft, BankRequest, BankView};

/// How a cluster's nodes are set up: start from [`Settings::default`] and change what
/// you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// Raft's timing (elections, heartbeats).
    pub raft: Config,
    /// Each node snapshots every this many applied commands (0: never).
    pub snapshot_every: u64,
    /// How many client sessions each node keeps; the same on every node.
    pub max_sessions: NonZeroUsize,
    /// The TCP transport's limits and timeouts.
    pub tcp: TcpConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            raft: Config::default(),
            snapshot_every: 1_000,
            max_sessions: DEFAULT_CAPACITY,
            tcp: TcpConfig {
                // A leader reconnects to a restarted peer within this, well inside an
                // election timeout, so the peer does not start an election for want of
                // heartbeats.
                backoff_max: Duration::from_millis(250),
                ..TcpConfig::default()
            },
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The TCP settings are invalid.
    #[error("invalid TCP settings: {0}")]
    Tcp(#[from] TcpConfigError),
    /// The Raft port could not be opened or served.
    #[error("{0}")]
    Listen(#[from] ServerError),
    /// Raft refused to start.
    #[error("cannot start raft: {0}")]
    Start(#[from] StartError),
    /// No node of that id in the cluster.
    #[error("no node {0} in the cluster")]
    UnknownNode(NodeId),
}

/// What a client needs of one node: its Raft handle, to propose and to pass read
/// barriers, and the view of its state, to read after a barrier.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The node's Raft handle.
    pub raft: BankRaft,
    /// The node's applied state.
    pub view: BankView,
}

/// One running bank replica: a Raft node with a [`BankMachine`], in-memory storage, and
/// a TCP server for its peers' RPCs.
pub struct BankNode {
    id: NodeId,
    replica: Replica,
    server: TcpServer,
    transport: TcpTransport<BankRequest>,
}

impl BankNode {
    /// Starts node `id` on `server` (bound, not yet serving), with `storage` (a fresh one
    /// for the cluster's first start; the same data for a restart), reaching its peers at
    /// `peers`.
    pub async fn start(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        server: TcpServer,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        storage: MemStorage<BankRequest>,
        settings: &Settings,
    ) -> Result<BankNode, NodeError> {
        let transport = TcpTransport::new(settings.tcp.clone(), id, peers)?;
        let state_machine = BankMachine::new(settings.max_sessions);
        // `spawn` takes the state machine by value; the view is how we read it later.
        let view = state_machine.view();
        // Compaction: Raft snapshots the state machine by itself every `snapshot_every`
        // applied commands (its snapshot policy), so the state machine needs no handle.
        let mut config = settings.raft.clone();
        config.snapshot_after_entries =
            (settings.snapshot_every > 0).then_some(settings.snapshot_every);
        let parts = Parts {
            runtime: SmolRuntime::global(),
            storage,
            state_machine,
            transport: transport.clone(),
        };
        let raft = match BankRaft::spawn(id, members, config, parts).await {
            Ok(raft) => raft,
            Err(error) => {
                transport.shutdown();
                return Err(error.into());
            }
        };
        // Peers' RPCs reach the node through its handle.
        server.set_node_id(id);
        if let Err(error) = server.serve::<BankRequest>(Arc::new(raft.clone())) {
            raft.shutdown().await;
            transport.shutdown();
            return Err(error.into());
        }
        Ok(BankNode {
            id,
            replica: Replica { raft, view },
            server,
            transport,
        })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &BankRaft {
        &self.replica.raft
    }

    /// The node's applied state (local: see [`BankView`] for linearizable reads).
    pub fn view(&self) -> &BankView {
        &self.replica.view
    }

    /// The node's handle and view, for a client.
    pub fn replica(&self) -> Replica {
        self.replica.clone()
    }

    /// Where the node listens for its peers.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the node: Raft first (nothing is sent or applied afterwards), then its
    /// server and connections.
    pub async fn shutdown(&self) {
        self.replica.raft.shutdown().await;
        self.server.shutdown().await;
        self.transport.shutdown();
    }
}

impl fmt::Debug for BankNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BankNode")
            .field("id", &self.id)
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

/// A bank cluster in one process: nodes 1 to n on 127.0.0.1, talking real TCP, each on
/// in-memory storage that outlives it, so that a stopped node can be restarted with what
/// it had written.
pub struct Cluster {
    settings: Settings,
    addrs: BTreeMap<NodeId, SocketAddr>,
    storage: BTreeMap<NodeId, MemStorage<BankRequest>>,
    running: BTreeMap<NodeId, BankNode>,
}

impl Cluster {
    /// Starts nodes 1 to `size` on ports the system picks, all voters.
    pub async fn start(size: u64, settings: Settings) -> Result<Cluster, NodeError> {
        // Bind every port first: each node's transport needs its peers' addresses.
        let mut servers = BTreeMap::new();
        for id in (1..=size).map(NodeId) {
            let server = TcpServer::bind(([127, 0, 0, 1], 0), settings.tcp.clone())?;
            servers.insert(id, server);
        }
        let mut cluster = Cluster {
            settings,
            addrs: servers
                .iter()
                .map(|(&id, server)| (id, server.local_addr()))
                .collect(),
            storage: servers.keys().map(|&id| (id, MemStorage::new())).collect(),
            running: BTreeMap::new(),
        };
        for (id, server) in servers {
            if let Err(error) = cluster.start_node(id, server).await {
                cluster.shutdown().await;
                return Err(error);
            }
        }
        Ok(cluster)
    }

    async fn start_node(&mut self, id: NodeId, server: TcpServer) -> Result<(), NodeError> {
        let storage = self
            .storage
            .get(&id)
            .ok_or(NodeError::UnknownNode(id))?
            .clone();
        let peers = self.addrs.iter().filter(|(peer, _)| **peer != id);
        let node = BankNode::start(
            id,
            self.addrs.keys().copied(),
            server,
            peers.map(|(&peer, &addr)| (peer, addr)),
            storage,
            &self.settings,
        )
        .await?;
        self.running.insert(id, node);
        Ok(())
    }

    /// Every node's id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.addrs.keys().copied().collect()
    }

    /// Node `id`, if it is running.
    pub fn node(&self, id: NodeId) -> Option<&BankNode> {
        self.running.get(&id)
    }

    /// The running nodes.
    pub fn running(&self) -> impl Iterator<Item = &BankNode> {
        self.running.values()
    }

    /// The handles a client uses to reach the running nodes.
    pub fn replicas(&self) -> Vec<(NodeId, Replica)> {
        self.running
            .iter()
            .map(|(&id, node)| (id, node.replica()))
            .collect()
    }

    /// A running node that believes it leads, if any (during an election, none; for a
    /// moment, a deposed leader may still believe it).
    pub fn leader(&self) -> Option<NodeId> {
        self.running
            .values()
            .find(|node| node.raft().status().role == RoleKind::Leader)
            .map(BankNode::id)
    }

    /// Stops node `id`, as a crash would minus lost writes: its storage keeps everything
    /// it wrote. Returns whether it was running.
    pub async fn stop(&mut self, id: NodeId) -> bool {
        match self.running.remove(&id) {
            Some(node) => {
                node.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Restarts the stopped node `id` on its address and storage: it restores its last
    /// snapshot, replays its log, and catches up from the leader (with a snapshot, if the
    /// leader has compacted past what it lacks).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        if self.running.contains_key(&id) {
            return Ok(());
        }
        let addr = *self.addrs.get(&id).ok_or(NodeError::UnknownNode(id))?;
        let server = TcpServer::bind(addr, self.settings.tcp.clone())?;
        self.start_node(id, server).await
    }

    /// Stops every node.
    pub async fn shutdown(&mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("addrs", &self.addrs)
            .field("running", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
