//! Deterministic simulation: a single-threaded runtime with a virtual clock
//! ([`Simulation`]), the lab scenarios in virtual time ([`VirtualTime`]), and a
//! linearizability checker for client histories ([`linearizability`]).
//!
//! Everything that happens in a simulation derives from its seed: task scheduling,
//! election timeouts, network faults, the scenario's own choices. The same seed replays
//! the same run.

pub mod explorer;
mod invariants;
pub mod linearizability;
mod planted;
mod runtime;
mod slow_disk;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_traits::{NodeId, Runtime, timeout};

pub use planted::PlantedBug;
pub use runtime::{SimRuntime, Simulation};

use crate::lab::World;

/// The lab scenarios in virtual time: each run is a fresh [`Simulation`] seeded from the
/// run's seed (`SIM_SEED` fixes it), so a failing run replays exactly.
#[derive(Debug)]
pub struct VirtualTime {
    simulation: Simulation,
}

impl World for VirtualTime {
    type Runtime = SimRuntime;
    const EXCLUSIVE: bool = false;
    const SEED_VARIABLE: &'static str = "SIM_SEED";

    fn create(seed: u64) -> Self {
        VirtualTime {
            simulation: Simulation::new(seed),
        }
    }

    fn runtime(&self) -> SimRuntime {
        self.simulation.runtime()
    }

    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.simulation.block_on(future)
    }

    fn finish(self) {}
}

/// A KV node of [`kv_cluster`].
pub type KvRaft = Raft<KvCommand, KvResponse>;

/// Nodes 1, 2 and 3 on `runtime`, with memory storage and the KV state machine, wired
/// through one [`LocalNetwork`]; each node's config is [`Config::lab`] seeded with `seed`
/// plus its id.
pub async fn kv_cluster(runtime: &SimRuntime, seed: u64) -> Vec<KvRaft> {
    kv_cluster_with(runtime, seed, Config::lab()).await
}

/// [`kv_cluster`] with the nodes' configuration given (each node's seed is set from
/// `seed`, as there).
pub async fn kv_cluster_with(runtime: &SimRuntime, seed: u64, config: Config) -> Vec<KvRaft> {
    let net = LocalNetwork::new();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut nodes = Vec::new();
    for id in ids {
        let parts = Parts {
            runtime: runtime.clone(),
            storage: MemStorage::new(),
            state_machine: KvStateMachine::new(),
            transport: net.transport(),
        };
        let config = config.clone().with_seed(Some(seed + id.0));
        let raft: KvRaft = Raft::spawn(id, ids, config, parts)
            .await
            .expect("a lab config and fresh storage start");
        net.register(id, Arc::new(raft.clone()));
        nodes.push(raft);
    }
    nodes
}

/// The position in `nodes` of a running node that leads, waiting for one for at most
/// 10 s of the runtime's time (a failed test, past that).
pub async fn leader_of(runtime: &SimRuntime, nodes: &[KvRaft]) -> usize {
    let wait = async {
        loop {
            if let Some(i) = nodes.iter().position(|n| !n.is_stopped() && n.state().1) {
                return i;
            }
            runtime.sleep(Duration::from_millis(1)).await;
        }
    };
    timeout(runtime, Duration::from_secs(10), wait)
        .await
        .expect("no leader within 10 s")
}
