//! What every case needs: a cluster of in-process nodes on loopback TCP (optionally with
//! a fault proxy on every link), a client, and waits with deadlines.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_examples::{
    BoundNode, ClientConfig, DEFAULT_MAX_SESSIONS, FaultProxy, KvClient, KvNode, KvSessionCommand,
    LinkMode, NodeConfig, NodeStatus, PortHolder, ReadMode, Role,
};
use raft_impl::Config;
use raft_mem::MemStorage;
use raft_net_smol::TcpConfig;
use raft_traits::NodeId;
use tempfile::TempDir;

pub(crate) use crate::tls::TestCa;

/// How long any awaited condition may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// How long a whole test may take before it counts as a hang.
pub(crate) const HANG: Duration = Duration::from_secs(300);

/// Taken while a child process is spawned, and while a port is closed and bound again.
///
/// Between its `fork` and its `exec`, a child holds a copy of every descriptor of this
/// process, sockets included. A listening socket closed here in that moment lives on in
/// the child until it execs, and binding its address again fails. `Command::spawn`
/// returns only after the `exec`, so under this lock no child holds such a copy.
pub(crate) static FORK_LOCK: smol::lock::Mutex<()> = smol::lock::Mutex::new(());

/// How a test cluster is built.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) nodes: u64,
    /// Files in a temporary directory, or memory.
    pub(crate) durable: bool,
    /// A [`FaultProxy`] on every ordered pair of nodes.
    pub(crate) proxies: bool,
    pub(crate) snapshot_entries: u64,
    pub(crate) max_sessions: NonZeroUsize,
    pub(crate) tcp: TcpConfig,
    pub(crate) read_mode: ReadMode,
    /// Raft's settings (the node sets `lease_reads` from `read_mode`).
    pub(crate) raft: Config,
    /// Mutual TLS between the nodes, with certificates of a CA made for the cluster.
    pub(crate) tls: Option<Arc<TestCa>>,
    /// A metrics endpoint on every node (on a port of the system's choosing).
    pub(crate) metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            durable: false,
            proxies: false,
            snapshot_entries: 1000,
            max_sessions: DEFAULT_MAX_SESSIONS,
            tcp: NodeConfig::default_tcp(),
            read_mode: ReadMode::default(),
            raft: NodeConfig::default_raft(),
            tls: None,
            metrics: false,
        }
    }
}

/// A client that retries for as long as any wait of the tests.
pub(crate) fn client_config() -> ClientConfig {
    ClientConfig {
        deadline: PATIENCE,
        ..ClientConfig::default()
    }
}

/// Nodes of one cluster, in this process, on loopback TCP.
pub(crate) struct TestCluster {
    pub(crate) configs: BTreeMap<NodeId, NodeConfig>,
    pub(crate) nodes: BTreeMap<NodeId, KvNode>,
    /// The storage of each node when in memory, so that it can be restarted.
    memory: BTreeMap<NodeId, MemStorage<KvSessionCommand>>,
    /// The addresses of stopped nodes, kept for their restart.
    held: BTreeMap<NodeId, PortHolder>,
    /// `(from, to)`: the proxy that `from`'s Raft messages to `to` go through.
    pub(crate) proxies: BTreeMap<(NodeId, NodeId), FaultProxy>,
    pub(crate) client: KvClient,
    /// Every node's client address.
    pub(crate) client_addrs: BTreeMap<NodeId, SocketAddr>,
    _dir: Option<TempDir>,
}

impl TestCluster {
    pub(crate) async fn start(options: Options) -> TestCluster {
        let ids: Vec<NodeId> = (1..=options.nodes).map(NodeId).collect();
        let dir = options.durable.then(|| tempfile::tempdir().unwrap());
        let any = SocketAddr::from(([127, 0, 0, 1], 0));

        // Every node binds ports of the system's choosing first; then each learns the
        // others' addresses, and only then do they start.
        let mut bound: BTreeMap<NodeId, BoundNode> = BTreeMap::new();
        for &id in &ids {
            let mut config = NodeConfig::new(id, any, any, []);
            config.snapshot_entries = options.snapshot_entries;
            config.max_sessions = options.max_sessions;
            config.tcp = options.tcp.clone();
            config.read_mode = options.read_mode;
            config.raft = options.raft.clone();
            config.tls = options.tls.as_ref().map(|ca| ca.node(id));
            config.metrics_listen = options
                .metrics
                .then(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            config.data_dir = dir
                .as_ref()
                .map(|dir| dir.path().join(format!("node-{}", id.0)));
            bound.insert(id, KvNode::bind(config).unwrap());
        }
        let raft_addrs: BTreeMap<NodeId, SocketAddr> = bound
            .iter()
            .map(|(&id, node)| (id, node.raft_addr()))
            .collect();
        let client_addrs: BTreeMap<NodeId, SocketAddr> = bound
            .iter()
            .map(|(&id, node)| (id, node.client_addr()))
            .collect();

        let mut proxies = BTreeMap::new();
        if options.proxies {
            for &from in &ids {
                for &to in ids.iter().filter(|&&to| to != from) {
                    let proxy = FaultProxy::start(raft_addrs[&to]).unwrap();
                    proxies.insert((from, to), proxy);
                }
            }
        }

        let mut cluster = TestCluster {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            memory: BTreeMap::new(),
            held: BTreeMap::new(),
            proxies,
            client: KvClient::new(client_addrs.clone(), client_config()).unwrap(),
            client_addrs,
            _dir: None,
        };
        for (id, mut node) in bound {
            for &peer in &ids {
                let addr = match cluster.proxies.get(&(id, peer)) {
                    Some(proxy) => proxy.local_addr(),
                    None => raft_addrs[&peer],
                };
                node.set_peer(peer, addr);
            }
            cluster.configs.insert(id, node.config());
            let node = if options.durable {
                node.start().await
            } else {
                let storage = MemStorage::new();
                cluster.memory.insert(id, storage.clone());
                node.start_with_storage(storage).await
            };
            cluster.nodes.insert(id, node.unwrap());
        }
        cluster._dir = dir;
        cluster
    }

    /// Starts node `id` again from its storage, on its addresses.
    pub(crate) async fn restart(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "{id} is running");
        let _no_fork = FORK_LOCK.lock().await;
        if let Some(held) = self.held.remove(&id) {
            held.release().await;
        }
        let config = self.configs[&id].clone();
        let node = match self.memory.get_mut(&id) {
            // A deep copy, as after a crash: the stopped instance cannot write to it.
            Some(storage) => {
                *storage = storage.copy();
                KvNode::start_with_storage(config, storage.clone()).await
            }
            None => KvNode::start(config).await,
        };
        self.nodes.insert(id, node.unwrap());
    }

    /// Stops node `id`, holding its addresses for its restart.
    pub(crate) async fn stop(&mut self, id: NodeId) {
        let _no_fork = FORK_LOCK.lock().await;
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await;
        let held = PortHolder::hold(&[node.raft_addr(), node.client_addr()]).unwrap();
        self.held.insert(id, held);
    }

    /// Another client of the cluster, with no session and no idea of the leader.
    pub(crate) fn new_client(&self) -> KvClient {
        KvClient::new(self.client_addrs.clone(), client_config()).unwrap()
    }

    pub(crate) fn node(&self, id: NodeId) -> &KvNode {
        &self.nodes[&id]
    }

    pub(crate) fn status(&self, id: NodeId) -> NodeStatus {
        self.node(id).status()
    }

    /// The running node that leads with the highest term.
    pub(crate) fn leader(&self) -> Option<NodeStatus> {
        self.nodes
            .values()
            .map(KvNode::status)
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
    }

    /// Waits for a leader of a term above `after` that the other running nodes, save
    /// `except`, follow.
    pub(crate) async fn wait_for_leader(
        &self,
        after: raft_traits::Term,
        except: &[NodeId],
    ) -> NodeStatus {
        wait_until("a leader followed by the others", || {
            let leader = self.leader().filter(|leader| leader.term > after)?;
            let followed = self
                .nodes
                .values()
                .filter(|node| node.id() != leader.id && !except.contains(&node.id()))
                .all(|node| {
                    let status = node.status();
                    status.term == leader.term && status.leader == Some(leader.id)
                });
            followed.then_some(leader)
        })
        .await
    }

    /// Waits until there is a leader, and returns it.
    pub(crate) async fn some_leader(&self) -> NodeStatus {
        wait_until("a leader", || self.leader()).await
    }

    /// Waits until node `id` has applied everything the leader has committed now.
    pub(crate) async fn wait_caught_up(&self, id: NodeId) -> NodeStatus {
        let leader = self.some_leader().await;
        wait_until(&format!("{id} to apply {}", leader.commit_index), || {
            let status = self.status(id);
            (status.last_applied >= leader.commit_index).then_some(status)
        })
        .await
    }

    /// Puts `key{i}` = `value-{i}` for `i` in `range`, each acknowledged before the next.
    pub(crate) async fn put_range(&self, prefix: &str, range: std::ops::Range<u64>) {
        for i in range {
            self.client
                .put(format!("{prefix}{i}"), format!("value-{i}"))
                .await
                .unwrap_or_else(|e| panic!("put {prefix}{i}: {e}"));
        }
    }

    /// Checks, through the leader, that `key{i}` = `value-{i}` for `i` in `range`.
    pub(crate) async fn check_range(&self, prefix: &str, range: std::ops::Range<u64>) {
        for i in range {
            let value = self
                .client
                .get(format!("{prefix}{i}"))
                .await
                .unwrap_or_else(|e| panic!("get {prefix}{i}: {e}"));
            assert_eq!(
                value.as_deref(),
                Some(format!("value-{i}").as_str()),
                "{prefix}{i}"
            );
        }
    }

    /// Checks that node `id`'s own state holds `key{i}` = `value-{i}` for `i` in `range`.
    pub(crate) async fn check_local_range(
        &self,
        id: NodeId,
        prefix: &str,
        range: std::ops::Range<u64>,
    ) {
        let state = self.node(id).local().state().await;
        for i in range {
            assert_eq!(
                state.get(&format!("{prefix}{i}")),
                Some(format!("value-{i}").as_str()),
                "{prefix}{i} on {id}"
            );
        }
    }

    /// Sets the mode of every proxy on a link to or from `id`.
    pub(crate) fn set_links_of(&self, id: NodeId, mode: LinkMode) {
        for ((from, to), proxy) in &self.proxies {
            if *from == id || *to == id {
                proxy.set_mode(mode);
            }
        }
    }

    /// Sets the mode of every proxy.
    pub(crate) fn set_all_links(&self, mode: LinkMode) {
        for proxy in self.proxies.values() {
            proxy.set_mode(mode);
        }
    }

    pub(crate) async fn shutdown(mut self) {
        self.client.shutdown();
        for node in std::mem::take(&mut self.nodes).into_values() {
            node.shutdown().await;
        }
        for proxy in self.proxies.values() {
            proxy.shutdown().await;
        }
        for held in std::mem::take(&mut self.held).into_values() {
            held.release().await;
        }
    }
}

/// Polls `condition` every 20 ms until it yields a value; fails the test after
/// [`PATIENCE`].
pub(crate) async fn wait_until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// Runs a test's body, failing it if it takes longer than [`HANG`].
pub(crate) fn run<T>(test: impl Future<Output = T>) -> T {
    smol::block_on(async {
        let expired = async {
            smol::Timer::after(HANG).await;
            None
        };
        match smol::future::or(async { Some(test.await) }, expired).await {
            Some(output) => output,
            None => panic!("the test did not finish within {HANG:?}"),
        }
    })
}
