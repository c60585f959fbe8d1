//! [`KvNode`]: one node of the KV service: a Raft node on TCP with a client port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::AbortHandle;
use raft_file_store::FileStorage;
use raft_impl::session::DEFAULT_CAPACITY;
use raft_impl::{Config, Parts, ProposeError, ReadError, StartError};
use raft_mem::MemStorage;
use raft_net_smol::{
    Protocol, ServerError, Service, SmolRuntime, TcpConfig, TcpConfigError, TcpServer,
    TcpTransport, TlsConfig,
};
use raft_traits::{
    Membership, NodeId, Payload, Postcard, RecoveredState, Request, Response, Runtime, Storage,
    StorageError, Transport, TransportError, async_trait,
};

use crate::changes::{Changes, not_leader};
use crate::members::MemberAddr;
use crate::metrics::{MetricsServer, render};
use crate::protocol::{ClientRequest, ClientResponse, NodeStatus, client_protocol};
use crate::read::{ReadMode, ReadStats};
use crate::state_machine::{KvRaft, KvSessionCommand, KvView, SnapshotStats, SnapshottingKv};

/// How many applied commands a node lets pass between two snapshots by default.
///
/// Every snapshot writes the whole state, so this bounds how much is written per
/// command: with 200 000 keys of 256-byte values (about 54 MB of state), a snapshot
/// every 10 000 commands wrote twenty times the log's own bytes and held 64 clients to
/// 25k puts/s (p99 26 ms); every 100 000, 35k (p99 4.6 ms). etcd's default
/// `--snapshot-count` is the same 100 000. The log held in memory between two snapshots
/// grows accordingly (some 30 MB at that value size).
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 100_000;

/// How much the log must have grown since the last snapshot, in percent of that
/// snapshot's size, before the next is taken ([`NodeConfig::snapshot_growth_percent`]):
/// as Redis's `auto-aof-rewrite-percentage`, by default 100.
pub const DEFAULT_SNAPSHOT_GROWTH_PERCENT: u64 = 100;

/// How many AppendEntries carrying entries a leader keeps in flight to each follower by
/// default ([`Config::max_inflight_appends`] in `raft`; the library's default is 1).
///
/// A durable node's follower spends most of a round trip in its fsync; with a second
/// AppendEntries in flight, what the leader gathered meanwhile reaches the follower while
/// it syncs and joins its next append, instead of waiting a whole round trip at the
/// leader. Measured with `scripts/kv-cpu.sh` (3 durable nodes and the benchmark on 2
/// cores, 2026-12-01, pairs of runs of 2 against 1 back to back): at 256 clients 7 pairs
/// of 9 higher (from -15% to +56%, median +16%); at 64 clients 5 of 6 (from -9% to
/// +38%); at 16 clients 4 of 6 (from -3% to +19%), leaving out at 16 and 64 a pair in
/// which the machine stalled during the run of 1 (it favoured 2). 4 in flight did worse
/// than 2 at 256 clients in 3 runs of 3. In one process (`raft-bench durable --clients
/// 64`, three nodes on one pool of 2 threads) 2 in flight cost 26% of the throughput:
/// there the extra, smaller messages cost CPU the nodes share, so the library's default
/// stays 1.
pub const DEFAULT_MAX_INFLIGHT_APPENDS: usize = 2;

/// How long a leader may wait for more proposals ([`Config::propose_linger`]) in the
/// service's default settings.
///
/// Closed-loop clients otherwise split into groups that take turns, each fsync carrying
/// one group. Measured with 3 durable nodes and the benchmark on 2 cores (2026-12-01,
/// 22:14-22:23 UTC, 4 pairs of runs of 200 µs and none back to back, two of them with
/// `scripts/kv-cpu.sh`; the entries per AppendEntries from the leader's metrics):
/// * 16 clients: 12.7-13.8 entries against 7.5-7.7; puts/s +36%, +29%, +19%, +6%;
/// * 64 clients: +1%, +17%, +27%, -4%;
/// * 256 clients (the `kv-cpu.sh` pairs): +20%, 0% (p99 34.6 against 20.5 ms in the
///   second);
/// * 1 client: p50 0.41-0.44 ms against 0.43-0.45 (a lone client is never held).
pub const DEFAULT_PROPOSE_LINGER: Duration = Duration::from_micros(200);

/// How many client sessions a node keeps by default (the session wrapper's default).
pub const DEFAULT_MAX_SESSIONS: NonZeroUsize = DEFAULT_CAPACITY;

/// How long a node works on one read without the log by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a node waits for a membership change before it answers that the change is
/// pending, by default: below the client's 3 s per attempt, so that the client hears
/// the answer rather than a timeout.
pub const DEFAULT_CHANGE_WAIT: Duration = Duration::from_secs(2);

/// How a node starts when its storage holds no cluster configuration (its first start).
/// Once storage holds one (every later start), the node takes it from there, and
/// [`NodeConfig::peers`] only tells the transport where the members were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FirstStart {
    /// Start a new cluster whose members are [`NodeConfig::peers`] and this node, all
    /// voters (`raft-kv serve --peers`).
    #[default]
    Bootstrap,
    /// Join a running cluster (`raft-kv serve --join`): start with an empty log, never
    /// campaign, and wait for the leader to add this node (`raft-kv add-node`) and send
    /// it the log.
    Join,
    /// Do not start: a restart was expected, and storage holds no configuration
    /// ([`NodeError::NoConfiguration`]). `raft-kv serve` without `--peers` or `--join`.
    Refuse,
}

/// Everything a [`KvNode`] needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Where this node listens for Raft RPCs from its peers.
    pub listen: SocketAddr,
    /// Where this node listens for clients.
    pub client_listen: SocketAddr,
    /// The Raft addresses of the cluster's members. On the cluster's first start (see
    /// [`first_start`](Self::first_start)) they are its members, with this node; later
    /// the configuration in storage says who the members are and where they listen, and
    /// these only seed the transport. The entry for `id` itself, if any, is its address
    /// in the first configuration (else [`listen`](Self::listen)), so every node may be
    /// given the same list.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// How the node starts if its storage holds no configuration yet
    /// ([`FirstStart::Bootstrap`] by default).
    pub first_start: FirstStart,
    /// Where the node keeps its log, hard state and snapshot; `None` keeps them in memory
    /// (lost when the process ends).
    pub data_dir: Option<PathBuf>,
    /// Snapshot every this many applied entries; 0 never. It sets
    /// [`Config::snapshot_after_entries`] in `raft` when the node starts: Raft's
    /// snapshot policy takes the snapshots, capturing the state between two applies
    /// (an `Arc` clone of the key-value map and a copy of the session table) and
    /// encoding it off the apply task.
    pub snapshot_entries: u64,
    /// A snapshot `snapshot_entries` calls for waits until the log since the last
    /// snapshot has grown to this percent of that snapshot's size; 0 no such wait. It
    /// sets [`Config::snapshot_log_growth_percent`]: each snapshot rewrites the whole
    /// state, and this keeps that work a fixed share of the writes as the state grows.
    pub snapshot_growth_percent: u64,
    /// How many client sessions the state machine keeps before the least recently used
    /// one expires ([`DEFAULT_MAX_SESSIONS`] by default). Part of the replicated state's
    /// definition: every node of a cluster must use the same number.
    pub max_sessions: NonZeroUsize,
    /// How the node serves `get` ([`ReadMode::ReadIndex`] by default). It sets
    /// [`Config::lease_reads`] in `raft` when the node starts: on for
    /// [`ReadMode::Lease`], off otherwise.
    pub read_mode: ReadMode,
    /// How long the node works on one read without the log (retrying while the leader is
    /// not ready for reads, then waiting for its state machine to apply the read index)
    /// before it answers [`ClientResponse::NotApplied`], so that the client tries again
    /// ([`DEFAULT_READ_TIMEOUT`] by default).
    pub read_timeout: Duration,
    /// How long the node waits for a membership change asked by a client before it
    /// answers [`ClientResponse::ChangePending`] ([`DEFAULT_CHANGE_WAIT`] by default). The
    /// change goes on; the client asks again.
    pub change_wait: Duration,
    /// Raft's timing and pipelining ([`default_raft`](Self::default_raft) by default).
    pub raft: Config,
    /// Limits and timeouts of the Raft transport and of both listeners
    /// ([`default_tcp`](Self::default_tcp) by default).
    pub tcp: TcpConfig,
    /// Mutual TLS between the nodes, on the Raft port and the transport (`None` by
    /// default: plain TCP). The client port stays plain TCP.
    pub tls: Option<TlsConfig>,
    /// Where to serve `GET /metrics` in the Prometheus text format (`None` by default:
    /// no metrics endpoint).
    pub metrics_listen: Option<SocketAddr>,
    /// What runs the node: its Raft tasks, its transport's connections and both servers'
    /// connections and requests ([`SmolRuntime::global`] by default).
    /// [`SmolRuntime::with_threads`] runs them on a pool with its own socket reactor and
    /// timers, what `raft-bench` runs on and what `raft-kv serve` chooses by default
    /// (with three durable nodes and the benchmark on 2 cores, 2 threads served more
    /// puts at 16 and 64 clients than the global executor; `scripts/kv-cpu.sh`).
    pub runtime: SmolRuntime,
}

impl NodeConfig {
    /// A node `id` listening on `listen` (Raft) and `client_listen` (clients), with
    /// `peers`, in-memory storage and the default settings.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        client_listen: SocketAddr,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Self {
        NodeConfig {
            id,
            listen,
            client_listen,
            peers: peers.into_iter().collect(),
            first_start: FirstStart::default(),
            data_dir: None,
            snapshot_entries: DEFAULT_SNAPSHOT_ENTRIES,
            snapshot_growth_percent: DEFAULT_SNAPSHOT_GROWTH_PERCENT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            read_mode: ReadMode::default(),
            read_timeout: DEFAULT_READ_TIMEOUT,
            change_wait: DEFAULT_CHANGE_WAIT,
            raft: Self::default_raft(),
            tcp: Self::default_tcp(),
            tls: None,
            metrics_listen: None,
            runtime: SmolRuntime::global(),
        }
    }

    /// The Raft settings of [`new`](Self::new): [`Config::default`] with
    /// [`DEFAULT_MAX_INFLIGHT_APPENDS`] AppendEntries in flight per follower and a
    /// [`DEFAULT_PROPOSE_LINGER`].
    pub fn default_raft() -> Config {
        Config::default()
            .with_max_inflight_appends(DEFAULT_MAX_INFLIGHT_APPENDS)
            .with_propose_linger(DEFAULT_PROPOSE_LINGER)
    }

    /// The TCP settings of [`new`](Self::new): [`TcpConfig::default`] with a
    /// `backoff_max` of 250 ms, below the shortest election timeout. A leader then
    /// reconnects to a restarted follower before that follower gives up on hearing from
    /// it and starts an election that would depose the leader.
    pub fn default_tcp() -> TcpConfig {
        TcpConfig {
            backoff_max: Duration::from_millis(250),
            ..TcpConfig::default()
        }
    }

    /// Every member of the cluster's first configuration, this node included.
    pub fn members(&self) -> Vec<NodeId> {
        let mut members: Vec<NodeId> = self.peers.keys().copied().collect();
        if !members.contains(&self.id) {
            members.push(self.id);
        }
        members.sort();
        members
    }

    /// The cluster's first configuration, as [`FirstStart::Bootstrap`] starts it: every
    /// member a voter, with its Raft address (this node's from `peers` if listed there,
    /// else [`listen`](Self::listen)).
    pub fn bootstrap_membership(&self) -> Membership {
        let own = self.peers.get(&self.id).copied().unwrap_or(self.listen);
        Membership::with_addresses(self.members().into_iter().map(|id| {
            let raft = if id == self.id { own } else { self.peers[&id] };
            (id, MemberAddr::raft_only(raft).to_string())
        }))
    }
}

/// Why a [`KvNode`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The TCP settings are invalid.
    #[error("invalid TCP settings: {0}")]
    Tcp(#[from] TcpConfigError),
    /// A listener could not be opened or started.
    #[error("{0}")]
    Listen(#[from] ServerError),
    /// The storage directory could not be opened or is corrupt.
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    /// Raft refused to start.
    #[error("cannot start raft: {0}")]
    Start(#[from] StartError),
    /// [`FirstStart::Refuse`], and storage holds no configuration: this is not a
    /// restart.
    #[error(
        "storage holds no cluster configuration (a first start): give the members to start a new cluster, or join a running one"
    )]
    NoConfiguration,
    /// The metrics endpoint could not listen.
    #[error("cannot serve metrics on {addr}: {error}")]
    Metrics {
        /// Where it was to listen.
        addr: SocketAddr,
        /// Why it could not.
        error: std::io::Error,
    },
}

/// One running node of the KV service.
///
/// It listens on two ports: one for Raft RPCs from its peers, one for clients (the
/// [`protocol`](crate::protocol) served to a [`KvClient`](crate::KvClient)). Clients'
/// commands go through [`Raft::propose`](raft_impl::Raft::propose) on the leader, ordered
/// by the log. Reads are linearizable in every [`ReadMode`]: through the log, or after a
/// read barrier ([`KvView::read`]) on the leader or on a follower.
///
/// Everything runs on one runtime, [`NodeConfig::runtime`]: the node's Raft tasks, and
/// its transport's and servers' connections and requests (their `set_runtime`).
pub struct KvNode {
    id: NodeId,
    raft: KvRaft,
    raft_server: TcpServer,
    client_server: TcpServer,
    transport: TcpTransport<KvSessionCommand>,
    view: KvView,
    read_mode: ReadMode,
    /// Records this node's client address in the configuration while it leads, on the
    /// node's runtime; ends with the node (and is cancelled when it is dropped).
    _publisher: AbortOnDrop,
    /// The metrics endpoint, if configured; stops with the node.
    metrics: Option<MetricsServer>,
}

impl KvNode {
    /// Opens both listening sockets of a node, without starting it; see [`BoundNode`].
    pub fn bind(config: NodeConfig) -> Result<BoundNode, NodeError> {
        config.tcp.validate()?;
        let raft_server = TcpServer::bind(config.listen, config.tcp.clone())?;
        let client_server = TcpServer::bind(config.client_listen, config.tcp.clone())?;
        // Both ports name the node in their handshakes, so that a peer or a client with
        // a stale address learns it reached another node.
        raft_server.set_node_id(config.id);
        client_server.set_node_id(config.id);
        if let Some(tls) = &config.tls {
            raft_server.set_tls(tls.clone());
        }
        Ok(BoundNode {
            config,
            raft_server,
            client_server,
        })
    }

    /// Starts a node with the storage `config` asks for: files in `data_dir`, or memory.
    pub async fn start(config: NodeConfig) -> Result<KvNode, NodeError> {
        Self::bind(config)?.start().await
    }

    /// Starts a node on `storage`, ignoring `config.data_dir`. Handing a node the storage
    /// of an earlier one restarts that node.
    pub async fn start_with_storage<S: Storage<KvSessionCommand>>(
        config: NodeConfig,
        storage: S,
    ) -> Result<KvNode, NodeError> {
        Self::bind(config)?.start_with_storage(storage).await
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle.
    pub fn raft(&self) -> &KvRaft {
        &self.raft
    }

    /// Where the node listens for Raft RPCs.
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_server.local_addr()
    }

    /// Where the node listens for clients.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_server.local_addr()
    }

    /// Where the node serves `GET /metrics`, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// The node's view of itself and the cluster.
    pub fn status(&self) -> NodeStatus {
        NodeStatus::of(&self.raft.status(), self.read_mode)
    }

    /// Reads this node's applied state directly: fast, but not linearizable (a follower
    /// may lag). For checks and debugging; clients' reads pass a read barrier first, or
    /// go through the log.
    pub fn local(&self) -> &KvView {
        &self.view
    }

    /// How this node serves `get`.
    pub fn read_mode(&self) -> ReadMode {
        self.read_mode
    }

    /// What this node's reads without the log came to so far.
    pub fn read_stats(&self) -> ReadStats {
        self.view.read_stats()
    }

    /// What the node's state machine did with snapshots so far.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.view.snapshot_stats()
    }

    /// Stops the node as a crash would, minus the lost writes (every write acknowledged
    /// by storage stays): stops Raft, closes both listeners and every connection.
    /// Another node may then be started on the same storage and addresses.
    pub async fn shutdown(&self) {
        self.raft.shutdown().await;
        self.client_server.shutdown().await;
        self.raft_server.shutdown().await;
        self.transport.shutdown();
        tracing::info!(node = %self.id, "node stopped");
    }
}

/// A task on a node's runtime that stops when this is dropped (a runtime's
/// [`JoinHandle`](raft_traits::JoinHandle) detaches instead).
struct AbortOnDrop(AbortHandle);

impl AbortOnDrop {
    fn spawn(runtime: &SmolRuntime, task: impl Future<Output = ()> + Send + 'static) -> Self {
        let (task, handle) = futures::future::abortable(task);
        drop(runtime.spawn(task));
        AbortOnDrop(handle)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for KvNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvNode")
            .field("id", &self.id)
            .field("raft_addr", &self.raft_addr())
            .field("client_addr", &self.client_addr())
            .finish_non_exhaustive()
    }
}

/// A node whose listening sockets are open but which does not run yet.
///
/// Binding first lets a cluster in one process take ports chosen by the system (port 0
/// in [`NodeConfig::listen`] and [`NodeConfig::client_listen`]): bind every node, learn
/// their addresses, give each node its peers' addresses with
/// [`set_peer`](Self::set_peer), then start them. Connections that arrive meanwhile wait
/// in the sockets' backlogs.
pub struct BoundNode {
    config: NodeConfig,
    raft_server: TcpServer,
    client_server: TcpServer,
}

impl BoundNode {
    /// Where the node will listen for Raft RPCs.
    pub fn raft_addr(&self) -> SocketAddr {
        self.raft_server.local_addr()
    }

    /// Where the node will listen for clients.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_server.local_addr()
    }

    /// The node's configuration, with the addresses it is bound to.
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            listen: self.raft_addr(),
            client_listen: self.client_addr(),
            ..self.config.clone()
        }
    }

    /// Sets the Raft address of member `id` (a peer, or this node itself).
    pub fn set_peer(&mut self, id: NodeId, addr: SocketAddr) {
        self.config.peers.insert(id, addr);
    }

    /// Starts the node with the storage its configuration asks for: files in `data_dir`,
    /// or memory.
    pub async fn start(self) -> Result<KvNode, NodeError> {
        match &self.config.data_dir {
            Some(dir) => {
                let storage: FileStorage<KvSessionCommand> = FileStorage::open(dir)?;
                self.start_with_storage(storage).await
            }
            None => self.start_with_storage(MemStorage::new()).await,
        }
    }

    /// Starts the node on `storage`, ignoring `data_dir`.
    pub async fn start_with_storage<S: Storage<KvSessionCommand>>(
        self,
        storage: S,
    ) -> Result<KvNode, NodeError> {
        let BoundNode {
            mut config,
            raft_server,
            client_server,
        } = self;
        config.raft.lease_reads = config.read_mode == ReadMode::Lease;
        config.raft.snapshot_after_entries =
            (config.snapshot_entries > 0).then_some(config.snapshot_entries);
        config.raft.snapshot_log_growth_percent =
            (config.snapshot_growth_percent > 0).then_some(config.snapshot_growth_percent);
        config.listen = raft_server.local_addr();
        config.client_listen = client_server.local_addr();
        // A restart takes the configuration from storage: an argument there would have
        // to match what storage holds, and the cluster may have changed since its first
        // start. So only a first start passes one.
        let mut storage = storage;
        let recovered = storage.recover().await?;
        let membership = if holds_configuration(&recovered) {
            tracing::info!(node = %config.id, "storage holds the cluster's configuration");
            Membership::default()
        } else {
            match config.first_start {
                FirstStart::Bootstrap => config.bootstrap_membership(),
                FirstStart::Join => Membership::default(),
                FirstStart::Refuse => return Err(NodeError::NoConfiguration),
            }
        };
        drop(recovered);
        let peers: Vec<(NodeId, SocketAddr)> = config
            .peers
            .iter()
            .filter(|(id, _)| **id != config.id)
            .map(|(id, addr)| (*id, *addr))
            .collect();
        let transport = match &config.tls {
            Some(tls) => {
                TcpTransport::with_tls(config.tcp.clone(), Postcard, config.id, tls.clone(), peers)?
            }
            None => TcpTransport::new(config.tcp.clone(), config.id, peers)?,
        };

        let state_machine = SnapshottingKv::new(config.max_sessions);
        let view = state_machine.view();
        // One executor for the whole node: the Raft tasks, the transport's connections
        // and both servers' connections and requests.
        let runtime = config.runtime.clone();
        transport.set_runtime(runtime.clone());
        raft_server.set_runtime(runtime.clone());
        client_server.set_runtime(runtime.clone());
        let parts = Parts {
            runtime,
            storage,
            state_machine,
            transport: MemberTransport(transport.clone()),
        };
        let joining = membership.nodes.is_empty();
        let raft: KvRaft =
            match KvRaft::spawn_in(config.id, membership, config.raft.clone(), parts).await {
                Ok(raft) => raft,
                Err(error) => {
                    transport.shutdown();
                    return Err(error.into());
                }
            };

        let changes = Changes::new(
            raft.clone(),
            config.change_wait,
            client_server.local_addr(),
            config.runtime.clone(),
        );
        let metrics = match config.metrics_listen {
            Some(addr) => {
                let watched = raft.clone();
                let scrape = move || render(&watched.status(), &watched.proposal_latency());
                match MetricsServer::start(addr, scrape) {
                    Ok(server) => Some(server),
                    Err(error) => {
                        transport.shutdown();
                        raft.shutdown().await;
                        return Err(NodeError::Metrics { addr, error });
                    }
                }
            }
            None => None,
        };
        let node = KvNode {
            id: config.id,
            raft: raft.clone(),
            raft_server,
            client_server,
            transport,
            view: view.clone(),
            read_mode: config.read_mode,
            _publisher: AbortOnDrop::spawn(
                &config.runtime,
                Arc::clone(&changes).publish_client_addr(),
            ),
            metrics,
        };
        let started = node
            .raft_server
            .serve::<KvSessionCommand>(Arc::new(raft.clone()))
            .and_then(|()| {
                node.client_server.serve_service(Arc::new(ClientService {
                    raft,
                    view,
                    read_mode: config.read_mode,
                    read_timeout: config.read_timeout,
                    changes,
                    runtime: config.runtime.clone(),
                }))
            });
        if let Err(error) = started {
            node.shutdown().await;
            return Err(error.into());
        }
        tracing::info!(
            node = %node.id,
            raft = %node.raft_addr(),
            clients = %node.client_addr(),
            read_mode = %config.read_mode,
            joining,
            "node started"
        );
        Ok(node)
    }
}

impl fmt::Debug for BoundNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundNode")
            .field("id", &self.config.id)
            .field("raft_addr", &self.raft_addr())
            .field("client_addr", &self.client_addr())
            .finish_non_exhaustive()
    }
}

/// The client port's [`Service`]: commands go to Raft, reads to a read barrier and the
/// state (or back to the client, in log mode), status comes from Raft.
struct ClientService {
    raft: KvRaft,
    view: KvView,
    read_mode: ReadMode,
    read_timeout: Duration,
    changes: Arc<Changes>,
    /// The node's runtime, for the reads' deadlines: a pool's timers wake nobody when
    /// set (async-io's notify its reactor thread, once per read).
    runtime: SmolRuntime,
}

impl ClientService {
    async fn execute(&self, command: KvSessionCommand) -> Result<ClientResponse, String> {
        // Raft times the proposals it appends (`Raft::proposal_latency`): the metrics.
        match self.raft.propose(command).await {
            Ok(response) => Ok(ClientResponse::Applied(response)),
            Err(ProposeError::NotLeader { leader_hint }) => Ok(self.not_leader(leader_hint)),
            Err(ProposeError::TransferInProgress { to }) => Ok(self.not_leader(Some(to))),
            Err(error @ ProposeError::Lost { .. }) => Ok(ClientResponse::NotApplied {
                reason: error.to_string(),
            }),
            Err(error @ ProposeError::OutcomeUnknown { .. }) => {
                Ok(ClientResponse::OutcomeUnknown {
                    reason: error.to_string(),
                })
            }
            Err(error) => Err(error.to_string()),
        }
    }

    async fn read(&self, key: &str) -> Result<ClientResponse, String> {
        if self.read_mode == ReadMode::Log {
            return Ok(ClientResponse::ReadThroughLog);
        }
        // Bounded as a whole: a follower cut off after obtaining its read index would
        // otherwise wait for its state machine for as long as the cut lasts.
        let read = async { Some(self.view.read(&self.raft, key, self.read_timeout).await) };
        let expired = async {
            self.runtime.sleep(self.read_timeout).await;
            None
        };
        match smol::future::or(read, expired).await {
            Some(Ok(read)) => Ok(ClientResponse::Value {
                value: read.value,
                read_index: read.read_index,
            }),
            Some(Err(ReadError::NotLeader { leader_hint })) => Ok(self.not_leader(leader_hint)),
            Some(Err(ReadError::NotReady)) => Ok(ClientResponse::NotApplied {
                reason: format!(
                    "the leader committed no entry of its term within {:?}, so it cannot serve reads yet",
                    self.read_timeout
                ),
            }),
            None => Ok(ClientResponse::NotApplied {
                reason: format!("the read was not served within {:?}", self.read_timeout),
            }),
            Some(Err(error)) => Err(error.to_string()),
        }
    }
}

impl ClientService {
    /// "Not the leader", with the leader's client address if the configuration records
    /// it.
    fn not_leader(&self, leader_hint: Option<NodeId>) -> ClientResponse {
        not_leader(&self.raft.status(), leader_hint)
    }
}

#[async_trait]
impl Service for ClientService {
    type Request = ClientRequest;
    type Response = ClientResponse;

    fn protocol(&self) -> Protocol {
        client_protocol()
    }

    async fn call(&self, request: ClientRequest) -> Result<ClientResponse, String> {
        match request {
            ClientRequest::Status => Ok(ClientResponse::Status(NodeStatus::of(
                &self.raft.status(),
                self.read_mode,
            ))),
            ClientRequest::Execute(command) => self.execute(command).await,
            ClientRequest::Read { key } => self.read(&key).await,
            ClientRequest::AddNode {
                id,
                raft_addr,
                client_addr,
                learner,
            } => {
                let address = MemberAddr {
                    raft: raft_addr,
                    client: client_addr,
                };
                Ok(self.changes.add_node(id, address, learner).await)
            }
            ClientRequest::RemoveNode { id } => Ok(self.changes.remove_node(id).await),
            ClientRequest::Members => Ok(self.changes.members()),
        }
    }

    fn describe(request: &ClientRequest) -> &'static str {
        match request {
            ClientRequest::Execute(_) => "Execute",
            ClientRequest::Read { .. } => "Read",
            ClientRequest::Status => "Status",
            ClientRequest::AddNode { .. } => "AddNode",
            ClientRequest::RemoveNode { .. } => "RemoveNode",
            ClientRequest::Members => "Members",
        }
    }
}

/// Whether what storage recovered holds a cluster configuration: in its snapshot's
/// metadata (where the first start records the bootstrap configuration) or in a log
/// entry.
fn holds_configuration<C>(recovered: &RecoveredState<C>) -> bool {
    recovered.snapshot.is_some()
        || recovered
            .entries
            .iter()
            .any(|entry| matches!(entry.payload, Payload::Membership(_)))
}

/// The TCP transport, told the members' Raft addresses out of the addresses a KV node
/// records in the configuration ([`MemberAddr`], which also carry client addresses).
struct MemberTransport(TcpTransport<KvSessionCommand>);

#[async_trait]
impl Transport<KvSessionCommand> for MemberTransport {
    async fn send(
        &self,
        to: NodeId,
        request: Request<KvSessionCommand>,
    ) -> Result<Response, TransportError> {
        self.0.send(to, request).await
    }

    fn update_membership(&self, membership: &Membership) {
        let mut raft_addrs = membership.clone();
        for address in raft_addrs.nodes.values_mut() {
            // An address that is not a member address is left for the transport to
            // judge (it ignores what it cannot parse).
            if let Ok(member) = address.parse::<MemberAddr>() {
                *address = member.raft.to_string();
            }
        }
        self.0.update_membership(&raft_addrs);
    }
}
