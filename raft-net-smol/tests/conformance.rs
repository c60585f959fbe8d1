//! The TCP transport and the smol runtime pass the conformance suites of `raft-tests`.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_net_smol::{SmolRuntime, TcpConfig, TcpServer, TcpTransport};
use raft_tests::conformance::runtime::RuntimeFactory;
use raft_tests::conformance::transport::TransportFactory;
use raft_tests::conformance::{self, Cmd};
use raft_traits::{NodeId, RpcHandler, async_trait};

struct Tcp {
    config: TcpConfig,
    servers: BTreeMap<NodeId, TcpServer>,
    /// A loopback address where nothing listens.
    nowhere: SocketAddr,
}

impl Tcp {
    fn new() -> Self {
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Tcp {
            config: TcpConfig::default(),
            servers: BTreeMap::new(),
            nowhere,
        }
    }
}

#[async_trait]
impl TransportFactory for Tcp {
    type Transport = TcpTransport<Cmd>;
    type Runtime = SmolRuntime;

    fn runtime(&self) -> SmolRuntime {
        SmolRuntime::global()
    }

    async fn serve(&mut self, id: NodeId, handler: Arc<dyn RpcHandler<Cmd>>) {
        let server = TcpServer::bind(([127, 0, 0, 1], 0), self.config.clone()).unwrap();
        server.serve(handler).unwrap();
        self.servers.insert(id, server);
    }

    async fn client(&mut self, from: NodeId) -> TcpTransport<Cmd> {
        let mut peers: Vec<(NodeId, SocketAddr)> = self
            .servers
            .iter()
            .map(|(&id, server)| (id, server.local_addr()))
            .collect();
        peers.push((self.unreachable_peer(), self.nowhere));
        TcpTransport::new(self.config.clone(), from, peers).unwrap()
    }

    async fn stop(&mut self, id: NodeId) {
        if let Some(server) = self.servers.remove(&id) {
            server.shutdown().await;
        }
    }

    fn unreachable_peer(&self) -> NodeId {
        NodeId(99)
    }

    fn failure_deadline(&self) -> Duration {
        self.config.connect_timeout + self.config.request_timeout
    }
}

#[test]
fn tcp_transport_passes_the_transport_suite() {
    let report = smol::block_on(conformance::transport::run(&mut Tcp::new()));
    println!("{report}");
    report.assert_passed();
}

struct Smol(SmolRuntime);

impl RuntimeFactory for Smol {
    type Runtime = SmolRuntime;

    fn runtime(&self) -> SmolRuntime {
        self.0.clone()
    }
}

#[test]
fn smol_runtime_passes_the_runtime_suite() {
    let runtime = SmolRuntime::with_threads(2);
    let report = runtime.block_on(conformance::runtime::run(&mut Smol(runtime.clone())));
    runtime.stop();
    println!("{report}");
    report.assert_passed();
    let global = SmolRuntime::global();
    let report = smol::block_on(conformance::runtime::run(&mut Smol(global)));
    println!("{report}");
    report.assert_passed();
}
