//! Election and replication over TCP, in-process nodes.
//!
//! On a loaded machine a heartbeat can come late enough to start another election at any
//! moment, so no check here assumes that the first leader stays the leader.

use raft_examples::protocol::client_protocol;
use raft_examples::{ClientRequest, ClientResponse, Role};
use raft_impl::session::{ClientId, SessionCommand};
use raft_mem::KvCommand;
use raft_net_smol::{TcpClient, TcpConfig};
use raft_traits::Term;

use crate::support::{Options, PATIENCE, TestCluster, run};

#[test]
fn a_leader_is_elected_and_writes_replicate_to_every_node() {
    run(async {
        let cluster = TestCluster::start(Options::default()).await;
        // One leader, followed by both others in its term.
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        assert_eq!(leader.role, Role::Leader);

        cluster.put_range("key", 0..50).await;
        assert!(cluster.client.leader().is_some());
        cluster.check_range("key", 0..50).await;
        assert_eq!(
            cluster.client.put("key7", "new").await.unwrap().as_deref(),
            Some("value-7")
        );
        assert_eq!(
            cluster.client.delete("key0").await.unwrap().as_deref(),
            Some("value-0")
        );
        assert_eq!(cluster.client.get("key0").await.unwrap(), None);
        assert_eq!(cluster.client.delete("key0").await.unwrap(), None);

        // Every node applies the same commands.
        for id in cluster.nodes.keys().copied() {
            cluster.wait_caught_up(id).await;
            cluster.check_local_range(id, "key", 1..7).await;
            cluster.check_local_range(id, "key", 8..50).await;
            let state = cluster.node(id).local().state().await;
            assert_eq!(state.get("key7"), Some("new"));
            assert_eq!(state.get("key0"), None);
            assert_eq!(state.len(), 49);
        }
        cluster.shutdown().await;
    });
}

#[test]
fn a_follower_refuses_commands_and_names_the_leader() {
    run(async {
        let cluster = TestCluster::start(Options::default()).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        let addrs = cluster
            .nodes
            .values()
            .map(|node| (node.id(), node.client_addr()));
        // The raw client protocol, without the client library's retries.
        let raw: TcpClient<ClientRequest, ClientResponse> =
            TcpClient::new(TcpConfig::default(), client_protocol(), addrs).unwrap();

        let mut checked = false;
        while !checked {
            let leader = cluster.wait_for_leader(Term(0), &[]).await;
            let follower = cluster
                .nodes
                .keys()
                .copied()
                .find(|&id| id != leader.id)
                .unwrap();
            let get = ClientRequest::Execute(SessionCommand::Request {
                client: ClientId(1),
                sequence: 1,
                command: KvCommand::Get { key: "x".into() },
            });
            let answer = raw.call(follower, get).await.unwrap();
            let status = match raw.call(follower, ClientRequest::Status).await.unwrap() {
                ClientResponse::Status(status) => status,
                other => panic!("{other:?}"),
            };
            // Unless an election came in between, the follower named the leader.
            if cluster.leader().map(|l| (l.id, l.term)) == Some((leader.id, leader.term)) {
                assert_eq!(
                    answer,
                    ClientResponse::NotLeader {
                        leader_hint: Some(leader.id),
                        // The first configuration records no client addresses: every
                        // client was given them.
                        leader_addr: None,
                    }
                );
                assert_eq!(status.id, follower);
                assert_eq!(status.role, Role::Follower);
                assert_eq!(status.leader, Some(leader.id));
                checked = true;
            }
        }

        // The library follows hints wherever it starts.
        assert_eq!(cluster.client.put("x", "1").await.unwrap(), None);
        assert!(cluster.client.leader().is_some());
        assert_eq!(cluster.client.get("x").await.unwrap().as_deref(), Some("1"));

        // Statuses of every node, in one round: one leader, once the cluster is stable.
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let statuses = cluster.client.statuses().await;
            assert_eq!(statuses.len(), 3);
            let leaders = statuses
                .iter()
                .filter(|(_, s)| s.as_ref().is_ok_and(|s| s.role == Role::Leader))
                .count();
            if leaders == 1 && statuses.iter().all(|(_, s)| s.is_ok()) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{statuses:?}");
            smol::Timer::after(std::time::Duration::from_millis(20)).await;
        }
        raw.shutdown();
        cluster.shutdown().await;
    });
}
