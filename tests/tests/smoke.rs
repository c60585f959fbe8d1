use std::sync::Arc;
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage};
use raft_net_smol::SmolRuntime;
use raft_traits::{NodeId, Runtime};

#[test]
fn three_nodes_elect_and_replicate() {
    let rt = SmolRuntime::with_threads(2);
    rt.block_on(async {
        let net: MemNetwork<KvCommand, SmolRuntime> = MemNetwork::new(rt.clone(), 1);
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut nodes = Vec::new();
        for &id in &members {
            let raft: Raft<KvCommand, KvResponse> = Raft::spawn(
                id,
                members.clone(),
                Config::lab(),
                Parts {
                    runtime: rt.clone(),
                    storage: MemStorage::new(),
                    state_machine: KvStateMachine::new(),
                    transport: net.transport(id),
                },
            )
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
        let leader = loop {
            rt.sleep(Duration::from_millis(100)).await;
            if let Some(l) = nodes.iter().find(|n| n.state().1) {
                break l.clone();
            }
        };
        for i in 0..10 {
            let r = leader
                .propose(KvCommand::Put { key: format!("k{i}"), value: format!("v{i}") })
                .await
                .unwrap();
            println!("{r:?}");
        }
        let r = leader.propose(KvCommand::Get { key: "k3".into() }).await.unwrap();
        assert_eq!(r, KvResponse::Value(Some("v3".into())));
        rt.sleep(Duration::from_millis(300)).await;
        for n in &nodes {
            println!("{:?}", n.status());
            assert_eq!(n.status().last_applied.0, 11);
        }
        for n in &nodes {
            n.shutdown().await;
        }
    });
    rt.stop();
}
