//! A three-node cluster runs on tokio, with nothing but the runtime swapped.

#![allow(clippy::unwrap_used)] // test code: a panic is how it fails

use std::sync::Arc;
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage};
use raft_tokio::TokioRuntime;
use raft_traits::{NodeId, Runtime};

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

    let mut leader = None;
    for _ in 0..100 {
        rt.sleep(Duration::from_millis(50)).await;
        leader = nodes.iter().find(|n| n.state().1).cloned();
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("a leader within 5 s");
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

    // Every node applies everything: the leader's noop entry plus 21 commands.
    let target = leader.status().last_applied;
    for node in &nodes {
        for _ in 0..100 {
            if node.status().last_applied >= target {
                break;
            }
            rt.sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(node.status().last_applied, target, "{:?}", node.status());
    }
    for node in &nodes {
        node.shutdown().await;
    }
}
