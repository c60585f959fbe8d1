//! A three-node cluster runs on tokio, with nothing but the runtime swapped: in memory,
//! and over TCP with the transport and servers on the same tokio runtime.

#![allow(clippy::unwrap_used)] // test code: a panic is how it fails

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage};
use raft_net_smol::{TcpConfig, TcpServer, TcpTransport};
use raft_tokio::TokioRuntime;
use raft_traits::{HandlerError, NodeId, Request, Response, RpcHandler, Runtime, async_trait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_tokio_elect_and_replicate() {
    let rt = TokioRuntime::current();
    let net: MemNetwork<KvCommand, TokioRuntime> = MemNetwork::new(rt.clone(), 7);
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes = Vec::new();
    for &id in &members {
        let parts = Parts {
            runtime: rt.clone(),
            storage: MemStorage::new(),
            state_machine: KvStateMachine::new(),
            transport: net.transport(id),
        };
        let raft: Raft<KvCommand, KvResponse> =
            Raft::spawn(id, members.clone(), Config::default(), parts)
                .await
                .unwrap();
        net.add_server(id, Arc::new(raft.clone()));
        nodes.push(raft);
    }
    for &a in &members {
        for &b in &members {
            net.set_link(a, b, true);
        }
    }

    // Every node applies everything: the leader's noop entry plus 21 commands.
    replicate(&rt, &nodes).await;
    for node in &nodes {
        node.shutdown().await;
    }
}

/// Puts 20 keys through the leader of `nodes` and checks that every node applies them.
async fn replicate(rt: &TokioRuntime, nodes: &[Raft<KvCommand, KvResponse>]) {
    let mut leader = None;
    for _ in 0..200 {
        leader = nodes.iter().find(|n| n.state().1).cloned();
        if leader.is_some() {
            break;
        }
        rt.sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.expect("a leader within 10 s");
    for i in 0..20 {
        let put = KvCommand::Put {
            key: format!("k{i}").into(),
            value: i.to_string().into(),
        };
        leader.propose(put).await.unwrap();
    }
    let read = leader
        .propose(KvCommand::Get { key: "k7".into() })
        .await
        .unwrap();
    assert_eq!(read, KvResponse::Value(Some("7".into())));
    let target = leader.status().last_applied;
    for node in nodes {
        for _ in 0..250 {
            if node.status().last_applied >= target {
                break;
            }
            rt.sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(node.status().last_applied, target, "{:?}", node.status());
    }
}

/// Hands RPCs to the node, counting those handled inside and outside a tokio runtime.
struct OnTokio {
    raft: Raft<KvCommand, KvResponse>,
    inside: Arc<AtomicUsize>,
    outside: Arc<AtomicUsize>,
}

#[async_trait]
impl RpcHandler<KvCommand> for OnTokio {
    async fn handle(&self, request: Request<KvCommand>) -> Result<Response, HandlerError> {
        let counter = match tokio::runtime::Handle::try_current() {
            Ok(_) => &self.inside,
            Err(_) => &self.outside,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.raft.handle(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_tokio_over_tcp_run_their_connections_on_tokio() {
    let rt = TokioRuntime::current();
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let servers: Vec<TcpServer> = members
        .iter()
        .map(|_| TcpServer::bind(([127, 0, 0, 1], 0), TcpConfig::default()).unwrap())
        .collect();
    let addresses: Vec<_> = members
        .iter()
        .zip(&servers)
        .map(|(&id, server)| (id, server.local_addr()))
        .collect();
    let mut nodes = Vec::new();
    let mut transports = Vec::new();
    let (inside, outside) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for (&id, server) in members.iter().zip(&servers) {
        let transport: TcpTransport<KvCommand> =
            TcpTransport::new(TcpConfig::default(), id, addresses.clone()).unwrap();
        // The node's runtime, so that tokio alone runs the node and its connections.
        transport.set_runtime(rt.clone());
        server.set_runtime(rt.clone());
        let parts = Parts {
            runtime: rt.clone(),
            storage: MemStorage::new(),
            state_machine: KvStateMachine::new(),
            transport: transport.clone(),
        };
        let raft: Raft<KvCommand, KvResponse> =
            Raft::spawn(id, members.clone(), Config::default(), parts)
                .await
                .unwrap();
        let handler = OnTokio {
            raft: raft.clone(),
            inside: Arc::clone(&inside),
            outside: Arc::clone(&outside),
        };
        server.serve::<KvCommand>(Arc::new(handler)).unwrap();
        nodes.push(raft);
        transports.push(transport);
    }
    replicate(&rt, &nodes).await;
    // Every RPC was handled on tokio, none on smol's executor.
    assert!(inside.load(Ordering::Relaxed) > 0);
    assert_eq!(outside.load(Ordering::Relaxed), 0);
    for node in &nodes {
        node.shutdown().await;
    }
    for transport in &transports {
        transport.shutdown();
    }
    for server in &servers {
        server.shutdown().await;
    }
}
