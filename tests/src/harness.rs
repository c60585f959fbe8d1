//! A cluster harness for testing a service built on [`raft_impl::Raft`] with the
//! service's own pieces: its state machine, its storage, and optionally its transport.
//!
//! Unlike the lab's [`Cluster`](crate::lab::Cluster), which is fixed to the lab's applier
//! and storage, a [`Harness`] is generic: the user hands the [`HarnessBuilder`] factories
//! that make each node's state machine and storage, called with the node's id and an
//! *instance* number (0 for the first start, one more on each
//! [`restart`](Harness::restart)), so a restarted node can be given the store that
//! survived its crash (see [`MemStores`] for the in-memory case). Nodes talk over a
//! [`MemNetwork`], so the network's faults are at hand: [`disconnect`](Harness::disconnect)
//! and [`connect`](Harness::connect), one-way cuts ([`cut_one_way`](Harness::cut_one_way)),
//! lost and delayed messages, duplicates, and per-`(from, to, kind)` RPC counters through
//! [`net`](Harness::net). A [`transport`](HarnessBuilder::transport) hook wraps (or
//! replaces) each node's [`MemTransport`]; fault injection and the counters then cover only
//! what goes through the `MemTransport`.
//!
//! The harness gives each node's handle ([`raft`](Harness::raft)) and
//! [`status`](Harness::status), waits for a leader with a deadline on the runtime's clock
//! ([`leader`](Harness::leader)), and proposes keeping the library's typed errors:
//! [`propose`](Harness::propose) returns [`ProposeError::NotLeader`] with its hint, and
//! [`propose_to_leader`](Harness::propose_to_leader) follows the hints, a bounded number of
//! times. Nodes are numbered `0..n`; node `i` has the id `NodeId(i + 1)`.
//!
//! Everything waits on the [`Runtime`] and draws chance from the harness's seed, so on
//! the deterministic simulator ([`crate::sim::Simulation`]) a seed replays a run exactly;
//! on [`SmolRuntime`](raft_net_smol::SmolRuntime) it runs in real time.
//!
//! Unlike the lab's harness, this one does not panic: a bad node number, a node that cannot
//! start or a wait that times out is a [`HarnessError`].
//!
//! # Example: a service's own state machine and storage
//!
//! ```
//! use raft_impl::{Config, ProposeError};
//! use raft_mem::MemStorage;
//! use raft_net_smol::SmolRuntime;
//! use raft_tests::harness::{HarnessBuilder, MemStores};
//! use std::sync::Arc;
//!
//! use raft_traits::{
//!     Bytes, Entry, HardState, LogId, LogIndex, PendingSnapshot, RecoveredState, Snapshot,
//!     SnapshotDescriptor, SnapshotReader, StateMachine, StateMachineError, Storage,
//!     StorageError, async_trait,
//! };
//!
//! /// The service's state machine: adds up what it is sent.
//! #[derive(Default)]
//! struct Sum(u64);
//!
//! impl StateMachine<u64> for Sum {
//!     type Response = u64;
//!     async fn apply(&mut self, _: LogId, add: u64) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
//!         Err(StateMachineError::InvalidSnapshot("not supported".into()))
//!     }
//!     async fn restore(&mut self, _: Snapshot) -> Result<(), StateMachineError> {
//!         Err(StateMachineError::InvalidSnapshot("not supported".into()))
//!     }
//! }
//!
//! /// The service's storage: here, one that traces its appends around a `MemStorage`.
//! struct Traced(MemStorage<u64>);
//!
//! #[async_trait]
//! impl Storage<u64> for Traced {
//!     async fn recover(&mut self) -> Result<RecoveredState<u64>, StorageError> {
//!         self.0.recover().await
//!     }
//!     async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
//!         self.0.save_hard_state(hard_state).await
//!     }
//!     async fn append(&mut self, entries: &[Entry<u64>]) -> Result<(), StorageError> {
//!         println!("appending {} entries", entries.len());
//!         self.0.append(entries).await
//!     }
//!     async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
//!         self.0.truncate_from(index).await
//!     }
//!     async fn entries(&mut self, from: LogIndex, to: LogIndex)
//!         -> Result<Vec<Entry<u64>>, StorageError> {
//!         self.0.entries(from, to).await
//!     }
//!     async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
//!         self.0.save_snapshot(snapshot).await
//!     }
//!     async fn begin_snapshot(
//!         &mut self,
//!         descriptor: SnapshotDescriptor,
//!     ) -> Result<(), StorageError> {
//!         self.0.begin_snapshot(descriptor).await
//!     }
//!     async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
//!         self.0.write_snapshot_chunk(offset, data).await
//!     }
//!     async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
//!         self.0.finish_snapshot().await
//!     }
//!     async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
//!         self.0.abort_snapshot().await
//!     }
//!     async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
//!         self.0.pending_snapshot().await
//!     }
//!     async fn open_snapshot(
//!         &mut self,
//!     ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
//!         self.0.open_snapshot().await
//!     }
//!     async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
//!         self.0.snapshot().await
//!     }
//!     async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
//!         self.0.purge_to(index).await
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let runtime = SmolRuntime::with_threads(2);
//! let stores = MemStores::new();
//! let outcome = runtime.block_on({
//!     let runtime = runtime.clone();
//!     async move {
//!         let harness = HarnessBuilder::new(runtime)
//!             .nodes(3)
//!             .seed(7)
//!             .config(Config::default())
//!             .state_machine(|_node, _instance| Sum::default())
//!             // After a crash, the restarted node gets what its predecessor persisted.
//!             .storage(move |node, instance| Traced(stores.open(node, instance)))
//!             .build()
//!             .await?;
//!         let leader = harness.leader().await?;
//!         let leader_id = harness.node_id(leader);
//!         let follower = (leader + 1) % harness.n();
//!         harness
//!             .wait_until("the follower knows the leader", || {
//!                 harness.status(follower).is_some_and(|s| s.leader == Some(leader_id))
//!             })
//!             .await?;
//!         // A follower refuses, naming the leader.
//!         let refused = harness.propose(follower, 1).await;
//!         assert_eq!(refused, Err(ProposeError::NotLeader { leader_hint: Some(leader_id) }));
//!         assert_eq!(harness.propose_to_leader(2).await?, 2);
//!
//!         // Requests and replies from the leader to the follower are lost from now on.
//!         harness.cut_one_way(leader, follower)?;
//!         println!("{:?}", harness.net().rpc_counts_by_link());
//!         harness.heal_one_way(leader, follower)?;
//!
//!         harness.crash(follower).await?;
//!         harness.restart(follower).await?;
//!         harness.shutdown().await;
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     }
//! });
//! runtime.stop();
//! outcome
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use raft_impl::Parts;
use raft_impl::{Config, ProposeError, Raft, RoleKind, StartError, Status};
use raft_mem::{MemNetwork, MemStorage, MemTransport};
use raft_traits::{Command, Membership, NodeId, Runtime, StateMachine, Storage, Term, Transport};

/// How often [`Harness::wait_until`] checks its condition.
const POLL: Duration = Duration::from_millis(5);

/// Salts that derive independent seeds from the harness's seed.
const NETWORK_SALT: u64 = 1;
const NODE_SALT: u64 = 2;

/// splitmix64: well-spread, independent seeds from one seed and a salt.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed.wrapping_add(salt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Locks `mutex`; the harness never leaves its tables half-updated, so a lock poisoned by
/// a panicking user factory is still consistent.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A harness needs at least one node.
    #[error("a harness needs at least one node")]
    NoNodes,
    /// The number of voters is not in `1..=nodes`.
    #[error("{voters} voters asked of {nodes} nodes: need 1 to {nodes}")]
    Voters {
        /// The voters asked for.
        voters: usize,
        /// The nodes of the harness.
        nodes: usize,
    },
    /// There is no node with this number.
    #[error("there is no node {index}: the harness has {nodes}")]
    NoSuchNode {
        /// The number asked for.
        index: usize,
        /// The nodes of the harness.
        nodes: usize,
    },
    /// A node could not start (its storage, state machine or configuration refused).
    #[error("node {node} (instance {instance}) could not start: {source}")]
    Start {
        /// The node.
        node: NodeId,
        /// Its instance number.
        instance: u64,
        /// Why.
        #[source]
        source: StartError,
    },
    /// A node did not finish shutting down in time.
    #[error("node {node} did not shut down within {waited:?}")]
    ShutdownStuck {
        /// The node.
        node: NodeId,
        /// How long the harness waited.
        waited: Duration,
    },
    /// A condition did not come true in time.
    #[error("waited {waited:?} for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long, on the runtime's clock.
        waited: Duration,
    },
    /// Two connected nodes lead in the same term: Raft's election safety is broken.
    #[error("term {term} has two leaders: {first} and {second}")]
    TwoLeaders {
        /// The term.
        term: Term,
        /// One leader.
        first: NodeId,
        /// The other.
        second: NodeId,
    },
}

/// A factory the user supplies: called with a node's id and instance number.
type Factory<P> = Arc<Mutex<dyn FnMut(NodeId, u64) -> P + Send>>;

/// The transport hook: wraps or replaces a node's [`MemTransport`].
type TransportHook<C, Rt, T> = Arc<Mutex<dyn FnMut(NodeId, MemTransport<C, Rt>) -> T + Send>>;

/// Starts one instance of one node; the builder's factories, erased.
type Spawner<C, R, Rt> = Arc<
    dyn Fn(NodeId, u64, MemTransport<C, Rt>) -> BoxFuture<'static, Result<Raft<C, R>, HarnessError>>
        + Send
        + Sync,
>;

/// The state machine of a [`HarnessBuilder`] before
/// [`state_machine`](HarnessBuilder::state_machine) is called: the harness cannot be built
/// with it.
#[derive(Clone, Copy, Debug)]
pub struct NoStateMachine;

/// The storage of a [`HarnessBuilder`] before [`storage`](HarnessBuilder::storage) is
/// called: the harness cannot be built with it.
#[derive(Clone, Copy, Debug)]
pub struct NoStorage;

/// Builds a [`Harness`]: node count and voters, configuration, seed, deadline, and the
/// factories of each node's state machine, storage and (optionally) transport.
///
/// `C` is the command type, `M` the state machine, `S` the storage, `T` the transport. A
/// harness can only be built once both [`state_machine`](Self::state_machine) and
/// [`storage`](Self::storage) were given.
pub struct HarnessBuilder<C, Rt, M = NoStateMachine, S = NoStorage, T = MemTransport<C, Rt>> {
    settings: Settings<Rt>,
    state_machine: Factory<M>,
    storage: Factory<S>,
    transport: TransportHook<C, Rt, T>,
}

/// What a [`HarnessBuilder`] knows besides the factories, whose types its own change.
struct Settings<Rt> {
    runtime: Rt,
    nodes: usize,
    voters: Option<usize>,
    seed: u64,
    config: Arc<dyn Fn(NodeId) -> Config + Send + Sync>,
    deadline: Duration,
    propose_tries: usize,
}

impl<C: Command, Rt: Runtime> HarnessBuilder<C, Rt> {
    /// A builder for a harness on `runtime`: 3 nodes, all voters, [`Config::default`],
    /// seed 0, a 10 s deadline, up to 10 tries per
    /// [`propose_to_leader`](Harness::propose_to_leader), and each node's
    /// [`MemTransport`] as it is. State machine and storage factories are still to give.
    pub fn new(runtime: Rt) -> Self {
        HarnessBuilder {
            settings: Settings {
                runtime,
                nodes: 3,
                voters: None,
                seed: 0,
                config: Arc::new(|_| Config::default()),
                deadline: Duration::from_secs(10),
                propose_tries: 10,
            },
            state_machine: Arc::new(Mutex::new(|_, _| NoStateMachine)),
            storage: Arc::new(Mutex::new(|_, _| NoStorage)),
            transport: Arc::new(Mutex::new(|_, transport| transport)),
        }
    }
}

impl<C: Command, Rt: Runtime, M, S, T> HarnessBuilder<C, Rt, M, S, T> {
    /// The number of nodes, numbered `0..nodes` (ids `1..=nodes`).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.settings.nodes = nodes;
        self
    }

    /// How many nodes form the bootstrap configuration: nodes `0..voters`. The others
    /// start with an empty membership and wait for a leader to add them
    /// ([`Raft::add_voter`], [`Raft::add_learner`]; the address is not used by the
    /// in-memory network). All of them by default.
    pub fn voters(mut self, voters: usize) -> Self {
        self.settings.voters = Some(voters);
        self
    }

    /// The seed of the network's faults and, unless a node's configuration sets its own
    /// [`Config::seed`], of the nodes' election timeouts (mixed with the node id and
    /// instance). On the simulator, the simulation's seed and this one fix the run.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// The configuration of every node.
    pub fn config(mut self, config: Config) -> Self {
        self.settings.config = Arc::new(move |_| config.clone());
        self
    }

    /// A configuration per node.
    pub fn config_for(mut self, config: impl Fn(NodeId) -> Config + Send + Sync + 'static) -> Self {
        self.settings.config = Arc::new(config);
        self
    }

    /// How long, on the runtime's clock, [`Harness::leader`] waits for a leader,
    /// [`Harness::crash`] for a node to shut down, and [`Harness::wait_until`] for its
    /// condition. 10 s by default.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = deadline;
        self
    }

    /// How many nodes [`Harness::propose_to_leader`] tries before it gives up (at least
    /// one). 10 by default.
    pub fn propose_tries(mut self, tries: usize) -> Self {
        self.settings.propose_tries = tries.max(1);
        self
    }

    /// The factory of each node's state machine, called with the node's id and instance
    /// number (0 at the first start, one more at each restart).
    pub fn state_machine<M2>(
        self,
        factory: impl FnMut(NodeId, u64) -> M2 + Send + 'static,
    ) -> HarnessBuilder<C, Rt, M2, S, T> {
        HarnessBuilder {
            settings: self.settings,
            state_machine: Arc::new(Mutex::new(factory)),
            storage: self.storage,
            transport: self.transport,
        }
    }

    /// The factory of each node's storage, called with the node's id and instance
    /// number. To model a crash, return for a later instance a store holding what the
    /// previous instance persisted (a reopened file, a [`MemStorage::copy`]; see
    /// [`MemStores`]); a fresh store models a node that lost its disk.
    pub fn storage<S2>(
        self,
        factory: impl FnMut(NodeId, u64) -> S2 + Send + 'static,
    ) -> HarnessBuilder<C, Rt, M, S2, T> {
        HarnessBuilder {
            settings: self.settings,
            state_machine: self.state_machine,
            storage: Arc::new(Mutex::new(factory)),
            transport: self.transport,
        }
    }

    /// Wraps or replaces each instance's [`MemTransport`] (a fresh one per instance, whose
    /// links the harness manages). Fault injection and the network's counters cover only
    /// what is sent through the `MemTransport`: a wrapper that answers some requests
    /// itself, or sends them elsewhere, bypasses them. Requests *to* a node always arrive
    /// through the [`MemNetwork`].
    pub fn transport<T2>(
        self,
        hook: impl FnMut(NodeId, MemTransport<C, Rt>) -> T2 + Send + 'static,
    ) -> HarnessBuilder<C, Rt, M, S, T2> {
        HarnessBuilder {
            settings: self.settings,
            state_machine: self.state_machine,
            storage: self.storage,
            transport: Arc::new(Mutex::new(hook)),
        }
    }
}

impl<C, Rt, M, S, T> HarnessBuilder<C, Rt, M, S, T>
where
    C: Command,
    Rt: Runtime,
    M: StateMachine<C>,
    S: Storage<C>,
    T: Transport<C>,
{
    /// Starts every node (instance 0) and connects them all.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoNodes`], [`HarnessError::Voters`] for a bad count, and
    /// [`HarnessError::Start`] if a node cannot start; the nodes already started are shut
    /// down then.
    pub async fn build(self) -> Result<Harness<C, M::Response, Rt>, HarnessError> {
        let settings = self.settings;
        let nodes = settings.nodes;
        if nodes == 0 {
            return Err(HarnessError::NoNodes);
        }
        let voters = settings.voters.unwrap_or(nodes);
        if voters == 0 || voters > nodes {
            return Err(HarnessError::Voters { voters, nodes });
        }
        let ids: Vec<NodeId> = (1..=nodes)
            .map(|id| NodeId(u64::try_from(id).unwrap_or(u64::MAX)))
            .collect();
        let bootstrap = Membership::from_voters(ids[..voters].iter().copied());
        let net = MemNetwork::new(settings.runtime.clone(), mix(settings.seed, NETWORK_SALT));
        let spawner: Spawner<C, M::Response, Rt> = {
            let runtime = settings.runtime.clone();
            let seed = settings.seed;
            let config = settings.config;
            let state_machine = self.state_machine;
            let storage = self.storage;
            let transport = self.transport;
            Arc::new(move |id: NodeId, instance: u64, mem: MemTransport<C, Rt>| {
                let membership = if bootstrap.contains(id) {
                    bootstrap.clone()
                } else {
                    Membership::default()
                };
                let mut config = config(id);
                if config.seed.is_none() {
                    config.seed = Some(mix(mix(seed, NODE_SALT.wrapping_add(id.0)), instance));
                }
                let parts = Parts {
                    runtime: runtime.clone(),
                    storage: (*lock(&storage))(id, instance),
                    state_machine: (*lock(&state_machine))(id, instance),
                    transport: (*lock(&transport))(id, mem),
                };
                Box::pin(async move {
                    Raft::spawn_in(id, membership, config, parts)
                        .await
                        .map_err(|source| HarnessError::Start {
                            node: id,
                            instance,
                            source,
                        })
                })
            })
        };
        let harness = Harness {
            inner: Arc::new(Inner {
                runtime: settings.runtime,
                net,
                seed: settings.seed,
                ids,
                deadline: settings.deadline,
                propose_tries: settings.propose_tries,
                spawner,
                slots: Mutex::new(
                    (0..nodes)
                        .map(|_| Slot {
                            raft: None,
                            connected: true,
                            instances: 0,
                        })
                        .collect(),
                ),
                lifecycle: futures::lock::Mutex::new(()),
            }),
        };
        for i in 0..nodes {
            if let Err(error) = harness.restart(i).await {
                harness.shutdown().await;
                return Err(error);
            }
        }
        Ok(harness)
    }
}

impl<C, Rt, M, S, T> fmt::Debug for HarnessBuilder<C, Rt, M, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HarnessBuilder")
            .field("nodes", &self.settings.nodes)
            .field("voters", &self.settings.voters)
            .field("seed", &self.settings.seed)
            .field("deadline", &self.settings.deadline)
            .field("propose_tries", &self.settings.propose_tries)
            .finish_non_exhaustive()
    }
}

/// A running cluster of the user's nodes on one [`MemNetwork`]; see the
/// [module docs](self).
///
/// `C` is the command type, `R` the state machine's response. Cheap to clone: clones
/// drive the same cluster, so a test can move one into a task of its own.
pub struct Harness<C, R, Rt> {
    inner: Arc<Inner<C, R, Rt>>,
}

impl<C, R, Rt> Clone for Harness<C, R, Rt> {
    fn clone(&self) -> Self {
        Harness {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C, R, Rt> {
    runtime: Rt,
    net: MemNetwork<C, Rt>,
    seed: u64,
    ids: Vec<NodeId>,
    deadline: Duration,
    propose_tries: usize,
    spawner: Spawner<C, R, Rt>,
    slots: Mutex<Vec<Slot<C, R>>>,
    /// Serialises crashes and restarts, which await between their steps.
    lifecycle: futures::lock::Mutex<()>,
}

/// The harness's view of one node.
struct Slot<C, R> {
    /// The running instance; `None` while crashed.
    raft: Option<Raft<C, R>>,
    /// Whether the node is connected to the other connected nodes; kept across crashes,
    /// so a restarted node comes back as connected as it was.
    connected: bool,
    /// How many instances were started.
    instances: u64,
}

impl<C: Command, R: Send + 'static, Rt: Runtime> Harness<C, R, Rt> {
    fn slots(&self) -> MutexGuard<'_, Vec<Slot<C, R>>> {
        lock(&self.inner.slots)
    }

    fn check(&self, i: usize) -> Result<NodeId, HarnessError> {
        self.inner
            .ids
            .get(i)
            .copied()
            .ok_or(HarnessError::NoSuchNode {
                index: i,
                nodes: self.inner.ids.len(),
            })
    }

    /// The number of nodes.
    pub fn n(&self) -> usize {
        self.inner.ids.len()
    }

    /// The harness's seed.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The runtime the nodes run on.
    pub fn runtime(&self) -> &Rt {
        &self.inner.runtime
    }

    /// The network: links, one-way cuts, loss and delays
    /// ([`set_reliable`](MemNetwork::set_reliable),
    /// [`set_long_reordering`](MemNetwork::set_long_reordering)), duplicates
    /// ([`set_duplication`](MemNetwork::set_duplication)), and counters of dispatched
    /// requests by `(from, to, kind)` ([`rpc_count_of`](MemNetwork::rpc_count_of)). Address
    /// nodes by [`node_id`](Self::node_id).
    pub fn net(&self) -> &MemNetwork<C, Rt> {
        &self.inner.net
    }

    /// The id of node `i`: `NodeId(i + 1)`. Out of range, `NodeId(0)`, which no node has.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.inner.ids.get(i).copied().unwrap_or(NodeId(0))
    }

    /// The number of the node with id `id`, if there is one.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.inner.ids.iter().position(|known| *known == id)
    }

    /// How many instances of node `i` were started (its next instance number); 0 for a
    /// node that does not exist.
    pub fn instances(&self, i: usize) -> u64 {
        self.slots().get(i).map_or(0, |slot| slot.instances)
    }

    /// The handle of node `i`, if it runs: the whole [`Raft`] API.
    pub fn raft(&self, i: usize) -> Option<Raft<C, R>> {
        self.slots().get(i).and_then(|slot| slot.raft.clone())
    }

    /// The status of node `i`, if it runs.
    pub fn status(&self, i: usize) -> Option<Status> {
        self.raft(i).map(|raft| raft.status())
    }

    /// Whether node `i` runs (is not crashed).
    pub fn is_alive(&self, i: usize) -> bool {
        self.slots().get(i).is_some_and(|slot| slot.raft.is_some())
    }

    /// Whether node `i` is connected.
    pub fn is_connected(&self, i: usize) -> bool {
        self.slots().get(i).is_some_and(|slot| slot.connected)
    }

    /// The time on the runtime's clock.
    pub fn now(&self) -> Duration {
        self.inner.runtime.now()
    }

    // ---- faults -------------------------------------------------------------------

    /// Connects node `i`: enables the links between it and every connected node, both
    /// ways. One-way cuts stay in force.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn connect(&self, i: usize) -> Result<(), HarnessError> {
        let id = self.check(i)?;
        let mut slots = self.slots();
        slots[i].connected = true;
        for (j, slot) in slots.iter().enumerate() {
            if slot.connected {
                self.inner.net.set_link(id, self.inner.ids[j], true);
                self.inner.net.set_link(self.inner.ids[j], id, true);
            }
        }
        tracing::debug!(node = %id, "harness: connect");
        Ok(())
    }

    /// Disconnects node `i`: disables every link from and to it.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn disconnect(&self, i: usize) -> Result<(), HarnessError> {
        let id = self.check(i)?;
        let mut slots = self.slots();
        slots[i].connected = false;
        for other in &self.inner.ids {
            self.inner.net.set_link(id, *other, false);
            self.inner.net.set_link(*other, id, false);
        }
        tracing::debug!(node = %id, "harness: disconnect");
        Ok(())
    }

    /// Cuts everything that travels from node `from` to node `to`: `from`'s requests to
    /// `to` and `from`'s replies to `to`'s requests, while `to`'s traffic to `from` still
    /// arrives. Lasts until [`heal_one_way`](Self::heal_one_way), across restarts.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn cut_one_way(&self, from: usize, to: usize) -> Result<(), HarnessError> {
        let (from, to) = (self.check(from)?, self.check(to)?);
        self.inner.net.set_one_way_cut(from, to, true);
        tracing::debug!(%from, %to, "harness: one-way cut");
        Ok(())
    }

    /// Lifts the one-way cut from node `from` to node `to`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`].
    pub fn heal_one_way(&self, from: usize, to: usize) -> Result<(), HarnessError> {
        let (from, to) = (self.check(from)?, self.check(to)?);
        self.inner.net.set_one_way_cut(from, to, false);
        tracing::debug!(%from, %to, "harness: one-way cut healed");
        Ok(())
    }

    /// Crashes node `i`: removes it from the network, so that requests in flight to it
    /// fail, and shuts it down. Its storage is whatever the storage factory keeps; the
    /// harness drops its handles on the instance. Crashing a crashed node does nothing.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`], or [`HarnessError::ShutdownStuck`] if the node does
    /// not stop within the deadline.
    pub async fn crash(&self, i: usize) -> Result<(), HarnessError> {
        self.check(i)?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.crash_locked(i).await
    }

    async fn crash_locked(&self, i: usize) -> Result<(), HarnessError> {
        let id = self.inner.ids[i];
        let raft = {
            let mut slots = self.slots();
            self.inner.net.delete_server(id);
            slots[i].raft.take()
        };
        let Some(raft) = raft else {
            return Ok(());
        };
        tracing::debug!(node = %id, "harness: crash");
        let deadline = self.inner.deadline;
        raft_traits::timeout(&self.inner.runtime, deadline, raft.shutdown())
            .await
            .map_err(|_| HarnessError::ShutdownStuck {
                node: id,
                waited: deadline,
            })
    }

    /// Restarts node `i`, crashing it first if it runs: calls the factories with its next
    /// instance number, starts the node on a fresh [`MemTransport`], and restores its
    /// links if it is connected.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NoSuchNode`], [`HarnessError::ShutdownStuck`], or
    /// [`HarnessError::Start`] if the new instance cannot start (the node stays crashed).
    pub async fn restart(&self, i: usize) -> Result<(), HarnessError> {
        let id = self.check(i)?;
        let _lifecycle = self.inner.lifecycle.lock().await;
        self.crash_locked(i).await?;
        let instance = {
            let mut slots = self.slots();
            let instance = slots[i].instances;
            slots[i].instances = instance.saturating_add(1);
            instance
        };
        // A fresh set of ends: those of the previous instance stay disabled forever.
        let transport = self.inner.net.transport(id);
        let raft = (self.inner.spawner)(id, instance, transport).await?;
        self.inner.net.add_server(id, Arc::new(raft.clone()));
        let connected = {
            let mut slots = self.slots();
            slots[i].raft = Some(raft);
            slots[i].connected
        };
        tracing::debug!(node = %id, instance, "harness: started");
        if connected {
            self.connect(i)?;
        }
        Ok(())
    }

    /// Shuts every running node down (as [`crash`](Self::crash) does), ignoring nodes
    /// that do not stop in time.
    pub async fn shutdown(&self) {
        let _lifecycle = self.inner.lifecycle.lock().await;
        for i in 0..self.n() {
            if let Err(error) = self.crash_locked(i).await {
                tracing::warn!(%error, "harness: shutdown");
            }
        }
    }

    // ---- waiting ------------------------------------------------------------------

    /// Polls `condition` every 5 ms on the runtime's clock until it holds, for at most
    /// the harness's deadline.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`], naming `what`.
    pub async fn wait_until(
        &self,
        what: &str,
        condition: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        self.wait_within(self.inner.deadline, what, condition).await
    }

    /// Like [`wait_until`](Self::wait_until), with a deadline of its own.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`], naming `what`.
    pub async fn wait_within(
        &self,
        deadline: Duration,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        let started = self.now();
        loop {
            if condition() {
                return Ok(());
            }
            let waited = self.now().saturating_sub(started);
            if waited >= deadline {
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    waited,
                });
            }
            self.inner.runtime.sleep(POLL).await;
        }
    }

    /// The leader among the connected running nodes, right now: the one that leads in
    /// the highest term, if any.
    ///
    /// # Errors
    ///
    /// [`HarnessError::TwoLeaders`] if two of them lead in one term.
    pub fn current_leader(&self) -> Result<Option<usize>, HarnessError> {
        let mut leaders: BTreeMap<Term, usize> = BTreeMap::new();
        let running: Vec<(usize, Raft<C, R>)> = self
            .slots()
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.connected)
            .filter_map(|(i, slot)| slot.raft.clone().map(|raft| (i, raft)))
            .collect();
        for (i, raft) in running {
            let status = raft.status();
            if status.role != RoleKind::Leader || status.stopped {
                continue;
            }
            if let Some(other) = leaders.insert(status.term, i) {
                return Err(HarnessError::TwoLeaders {
                    term: status.term,
                    first: self.inner.ids[other],
                    second: self.inner.ids[i],
                });
            }
        }
        Ok(leaders.last_key_value().map(|(_, i)| *i))
    }

    /// Waits, at most the deadline on the runtime's clock, until a connected running node
    /// leads, and returns it (the one of the highest term).
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`] if none does in time, [`HarnessError::TwoLeaders`] if two
    /// lead in one term.
    pub async fn leader(&self) -> Result<usize, HarnessError> {
        let mut found = Ok(None);
        self.wait_until("a leader among the connected nodes", || {
            found = self.current_leader();
            !matches!(found, Ok(None))
        })
        .await?;
        found.and_then(|leader| {
            leader.ok_or_else(|| HarnessError::Timeout {
                what: "a leader among the connected nodes".to_owned(),
                waited: self.inner.deadline,
            })
        })
    }

    // ---- proposals ----------------------------------------------------------------

    /// Proposes `command` at node `i` and waits for its response, with the library's
    /// typed errors: a follower answers [`ProposeError::NotLeader`] with the leader it
    /// knows as hint. A crashed node, or one that does not exist, answers
    /// [`ProposeError::Stopped`].
    pub async fn propose(&self, i: usize, command: C) -> Result<R, ProposeError> {
        let Some(raft) = self.raft(i) else {
            return Err(ProposeError::Stopped);
        };
        raft.propose(command).await
    }

    /// Proposes `command` to the leader: starts at the current leader (or the first
    /// running node), follows [`NotLeader`](ProposeError::NotLeader) and
    /// [`TransferInProgress`](ProposeError::TransferInProgress) hints, and when there is
    /// none (or the node is down, or the entry was [`Lost`](ProposeError::Lost), which is
    /// safe to retry) waits for a [`leader`](Self::leader) and tries it; at most as many
    /// tries as the builder's [`propose_tries`](HarnessBuilder::propose_tries).
    ///
    /// # Errors
    ///
    /// [`ProposeError::OutcomeUnknown`] at once (retrying could apply the command twice);
    /// otherwise the last try's error once the tries are spent.
    pub async fn propose_to_leader(&self, command: C) -> Result<R, ProposeError> {
        let mut target = match self.current_leader() {
            Ok(Some(leader)) => leader,
            _ => (0..self.n()).find(|&i| self.is_alive(i)).unwrap_or(0),
        };
        let mut last = ProposeError::NotLeader { leader_hint: None };
        for attempt in 0..self.inner.propose_tries {
            tracing::trace!(node = %self.node_id(target), attempt, "harness: propose");
            let hint = match self.propose(target, command.clone()).await {
                Ok(response) => return Ok(response),
                Err(error) => {
                    let hint = match &error {
                        ProposeError::NotLeader { leader_hint } => *leader_hint,
                        ProposeError::TransferInProgress { to } => Some(*to),
                        ProposeError::Lost { .. } | ProposeError::Stopped => None,
                        _ => return Err(error),
                    };
                    last = error;
                    hint
                }
            };
            let next = hint
                .and_then(|id| self.index_of(id))
                .filter(|&j| j != target && self.is_alive(j));
            target = match next {
                Some(j) => j,
                None => match self.leader().await {
                    Ok(leader) => leader,
                    Err(_) => return Err(last),
                },
            };
        }
        Err(last)
    }
}

impl<C, R, Rt> fmt::Debug for Harness<C, R, Rt> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = lock(&self.inner.slots);
        let alive: Vec<bool> = slots.iter().map(|slot| slot.raft.is_some()).collect();
        let connected: Vec<bool> = slots.iter().map(|slot| slot.connected).collect();
        f.debug_struct("Harness")
            .field("nodes", &self.inner.ids.len())
            .field("seed", &self.inner.seed)
            .field("alive", &alive)
            .field("connected", &connected)
            .finish_non_exhaustive()
    }
}

/// One [`MemStorage`] per node that survives the node's crashes, for a
/// [`storage`](HarnessBuilder::storage) factory: [`open`](Self::open) gives instance 0 a
/// fresh store and each later instance a deep copy of what the previous one persisted,
/// so that the harness's crash is a real crash (the lab's persister does the same).
///
/// Clones share the stores.
pub struct MemStores<C> {
    stores: Arc<Mutex<BTreeMap<NodeId, MemStorage<C>>>>,
}

impl<C> Clone for MemStores<C> {
    fn clone(&self) -> Self {
        MemStores {
            stores: Arc::clone(&self.stores),
        }
    }
}

impl<C: Command> Default for MemStores<C> {
    fn default() -> Self {
        MemStores::new()
    }
}

impl<C: Command> MemStores<C> {
    /// No stores yet.
    pub fn new() -> Self {
        MemStores {
            stores: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The store of `node`'s instance `instance`: a fresh one for instance 0 (or a node
    /// never opened), else a copy of the store the previous instance used.
    pub fn open(&self, node: NodeId, instance: u64) -> MemStorage<C> {
        let mut stores = lock(&self.stores);
        let store = match stores.get(&node) {
            Some(previous) if instance > 0 => previous.copy(),
            _ => MemStorage::new(),
        };
        stores.insert(node, store.clone());
        store
    }

    /// A handle on the store `node`'s latest instance uses, if it was opened.
    pub fn get(&self, node: NodeId) -> Option<MemStorage<C>> {
        lock(&self.stores).get(&node).cloned()
    }
}

impl<C> fmt::Debug for MemStores<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<NodeId> = lock(&self.stores).keys().copied().collect();
        f.debug_struct("MemStores").field("nodes", &nodes).finish()
    }
}
