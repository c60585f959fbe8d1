//! The in-memory backends pass the conformance suites of `raft-tests`.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use std::sync::Arc;
use std::time::Duration;

use raft_mem::{KvCommand, KvStateMachine, MemNetwork, MemStorage, MemTransport};
use raft_net_smol::SmolRuntime;
use raft_tests::conformance::state_machine::StateMachineFactory;
use raft_tests::conformance::storage::StorageFactory;
use raft_tests::conformance::transport::TransportFactory;
use raft_tests::conformance::{self, Cmd};
use raft_traits::{NodeId, RpcHandler, StorageError, async_trait};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

struct Memory;

impl StorageFactory for Memory {
    type Store = MemStorage<Cmd>;

    fn create(&mut self) -> Result<Self::Store, StorageError> {
        Ok(MemStorage::new())
    }

    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        // A restart keeps exactly what was stored: an independent copy of it.
        Ok(store.copy())
    }

    fn can_crash(&self) -> bool {
        true
    }

    fn crash(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        // Every write is durable once it returns (it is in the shared state), so a crash
        // keeps what a clean restart keeps.
        Ok(store.copy())
    }
}

#[test]
fn mem_storage_passes_the_storage_suite() {
    let report = futures::executor::block_on(conformance::storage::run(&mut Memory));
    println!("{report}");
    report.assert_passed();
}

struct Kv;

impl StateMachineFactory for Kv {
    type Command = KvCommand;
    type Machine = KvStateMachine;

    fn create(&mut self) -> KvStateMachine {
        KvStateMachine::new()
    }

    fn commands(&mut self, seed: u64, count: usize) -> Vec<KvCommand> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|_| {
                let key: std::sync::Arc<str> = format!("key{}", rng.random_range(0..8)).into();
                match rng.random_range(0..10) {
                    0..=4 => KvCommand::Put {
                        key,
                        value: rng.random_range(0..1000).to_string().into(),
                    },
                    5 => KvCommand::Delete { key },
                    _ => KvCommand::Get { key },
                }
            })
            .collect()
    }
}

#[test]
fn kv_state_machine_passes_the_state_machine_suite() {
    futures::executor::block_on(conformance::state_machine::run(&mut Kv)).assert_passed();
}

struct Network {
    runtime: SmolRuntime,
    net: MemNetwork<Cmd, SmolRuntime>,
    servers: Vec<NodeId>,
}

#[async_trait]
impl TransportFactory for Network {
    type Transport = MemTransport<Cmd, SmolRuntime>;
    type Runtime = SmolRuntime;

    fn runtime(&self) -> SmolRuntime {
        self.runtime.clone()
    }

    async fn serve(&mut self, id: NodeId, handler: Arc<dyn RpcHandler<Cmd>>) {
        self.net.add_server(id, handler);
        self.servers.push(id);
    }

    async fn client(&mut self, from: NodeId) -> Self::Transport {
        let transport = self.net.transport(from);
        for &to in &self.servers {
            self.net.set_link(from, to, true);
        }
        self.net.set_link(from, self.unreachable_peer(), true);
        transport
    }

    async fn stop(&mut self, id: NodeId) {
        self.net.delete_server(id);
        self.servers.retain(|&s| s != id);
    }

    fn unreachable_peer(&self) -> NodeId {
        NodeId(99)
    }

    fn failure_deadline(&self) -> Duration {
        // Calls to a missing server fail within 0-99 ms without long delays.
        Duration::from_millis(100)
    }
}

#[test]
fn mem_network_passes_the_transport_suite() {
    let runtime = SmolRuntime::with_threads(2);
    let mut network = Network {
        runtime: runtime.clone(),
        net: MemNetwork::new(runtime.clone(), 3),
        servers: Vec::new(),
    };
    let report = runtime.block_on(conformance::transport::run(&mut network));
    runtime.stop();
    report.assert_passed();
}
