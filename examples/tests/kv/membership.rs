//! Membership changes of the KV service: `raft-kv serve --join`, `add-node`,
//! `remove-node` and `members` on `raft-kv` processes (the acceptance by hand,
//! automated), and in process: the typed refusals, asking twice, a voter that never
//! catches up, clients finding leaders they were not told of, and protocol versions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_examples::protocol::{CLIENT_PROTOCOL, CLIENT_PROTOCOL_NAME, client_protocol};
use raft_examples::{
    ChangeRefused, ClientConfig, ClientError, ClientRequest, ClientResponse, FirstStart, KvClient,
    KvNode, NodeConfig,
};
use raft_mem::MemStorage;
use raft_net_smol::{HandshakeError, Protocol, Service, TcpClient, TcpConfig, TcpServer};
use raft_traits::{NodeId, TransportError, async_trait};

use crate::process::{
    Server, check_range, cli, free_addrs, members, put_range, servers, stderr, stdout,
    wait_applied, wait_for_leader,
};
use crate::support::{Options, PATIENCE, TestCluster, client_config, run, wait_until};

/// The arguments of `raft-kv serve --join` for node `id`.
fn join_args(
    id: NodeId,
    raft: SocketAddr,
    client: SocketAddr,
    dir: &std::path::Path,
) -> Vec<String> {
    [
        "serve",
        "--id",
        &id.0.to_string(),
        "--listen",
        &raft.to_string(),
        "--client-listen",
        &client.to_string(),
        "--join",
        "--data-dir",
        &dir.join(format!("node-{}", id.0)).display().to_string(),
        "--snapshot-entries",
        "50",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The acceptance, as a new user would do it by hand: a three-node cluster of
/// processes with data directories, `add-node` a fourth and a fifth (started with
/// `serve --join`), `remove-node` the leader, SIGKILL one more: the cluster keeps
/// serving, and every acknowledged write is there. The client commands are given the
/// first three nodes' addresses throughout.
#[test]
fn a_process_cluster_grows_loses_its_leader_and_a_node_and_keeps_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(10);
    let ids: Vec<NodeId> = (1..=5).map(NodeId).collect();
    let raft: BTreeMap<NodeId, SocketAddr> = ids
        .iter()
        .copied()
        .zip(addrs[..5].iter().copied())
        .collect();
    let clients: BTreeMap<NodeId, SocketAddr> = ids
        .iter()
        .copied()
        .zip(addrs[5..].iter().copied())
        .collect();
    let first = |map: &BTreeMap<NodeId, SocketAddr>| -> BTreeMap<NodeId, SocketAddr> {
        map.iter()
            .filter(|(id, _)| id.0 <= 3)
            .map(|(&id, &addr)| (id, addr))
            .collect()
    };
    let mut servers = servers(dir.path(), &first(&raft), &first(&clients), &[]);
    for id in [NodeId(4), NodeId(5)] {
        let args = join_args(id, raft[&id], clients[&id], dir.path());
        let log = dir.path().join(format!("node-{}.log", id.0));
        servers.insert(id, Server::new(id, [raft[&id], clients[&id]], args, log));
    }
    let cluster = members(&first(&clients));
    let client = KvClient::new(first(&clients), client_config()).unwrap();
    let timeout = PATIENCE.as_secs().to_string();

    run(async {
        for id in 1..=3 {
            servers.get_mut(&NodeId(id)).unwrap().start().await;
        }
        wait_for_leader(&client, &[]).await;
        // More than --snapshot-entries: the newcomers get a snapshot, then the log.
        put_range(&client, "a", 0..60).await;

        // Two nodes join: started empty, added by the operator.
        for id in [NodeId(4), NodeId(5)] {
            servers.get_mut(&id).unwrap().start().await;
            let added = cli(&[
                "add-node",
                "--id",
                &id.0.to_string(),
                "--addr",
                &raft[&id].to_string(),
                "--client-addr",
                &clients[&id].to_string(),
                "--cluster",
                &cluster,
                "--timeout",
                &timeout,
            ]);
            assert!(added.status.success(), "{}", stderr(&added));
            assert_eq!(stdout(&added), format!("OK: {id} is a voter\n"));
        }
        put_range(&client, "b", 0..20).await;
        let table = cli(&["members", "--cluster", &cluster]);
        assert!(table.status.success(), "{}", stderr(&table));
        let table = stdout(&table);
        assert!(table.contains("configuration (committed):"), "{table}");
        for &id in &ids {
            let row = format!("{id}");
            assert!(
                table.lines().any(|line| {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    words.first() == Some(&row.as_str())
                        && words.get(1) == Some(&"voter")
                        && words.get(2) == Some(&raft[&id].to_string().as_str())
                }),
                "{table}"
            );
        }
        for id in [NodeId(4), NodeId(5)] {
            assert!(table.contains(&clients[&id].to_string()), "{table}");
        }

        // Refusals: one plain line, exit code 1; nothing changes.
        let unknown = cli(&["remove-node", "--id", "9", "--cluster", &cluster]);
        assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
        assert_eq!(
            stderr(&unknown),
            "error: n9 is not a member of the cluster\n"
        );
        let elsewhere = cli(&[
            "add-node",
            "--id",
            "2",
            "--addr",
            &addrs[9].to_string(),
            "--cluster",
            &cluster,
        ]);
        assert_eq!(elsewhere.status.code(), Some(1), "{}", stderr(&elsewhere));
        assert!(
            stderr(&elsewhere).starts_with("error: n2 is already a member (a voter at "),
            "{}",
            stderr(&elsewhere)
        );

        // The leader leaves.
        let before = client.members().await.unwrap();
        assert!(before.is_settled(), "{before:?}");
        assert_eq!(before.committed.voters.len(), 5, "{before:?}");
        let removed = before.leader.unwrap();
        let out = cli(&[
            "remove-node",
            "--id",
            &removed.0.to_string(),
            "--cluster",
            &cluster,
            "--timeout",
            &timeout,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("OK: {removed} removed\n"));
        let after = client.members().await.unwrap();
        assert!(!after.committed.contains(removed), "{after:?}");
        assert_eq!(after.committed.voters.len(), 4, "{after:?}");
        assert_ne!(after.leader, Some(removed));
        // Enough writes that every node's snapshot covers the changes: storage then
        // holds no trace of the first configuration, which the restart below names.
        put_range(&client, "e", 0..120).await;

        // SIGKILL one more: one of the first three still in the cluster (the leader if
        // one of them leads), so that its restart below uses its first command line.
        let originals: Vec<NodeId> = [1, 2, 3]
            .map(NodeId)
            .into_iter()
            .filter(|&id| id != removed)
            .collect();
        let victim = after
            .leader
            .filter(|leader| originals.contains(leader))
            .unwrap_or(originals[0]);
        servers.get_mut(&victim).unwrap().kill(true);

        // The cluster keeps serving the command-line client, told of the first three
        // nodes only (one removed, one dead): it finds the leader through redirects.
        for i in 0..10 {
            let put = cli(&[
                "put",
                &format!("c{i}"),
                &format!("value-{i}"),
                "--cluster",
                &cluster,
                "--timeout",
                &timeout,
            ]);
            assert!(put.status.success(), "put c{i}: {}", stderr(&put));
            assert_eq!(stdout(&put), "OK\n");
        }
        for (key, value) in [("a0", "value-0"), ("b19", "value-19"), ("c9", "value-9")] {
            let get = cli(&["get", key, "--cluster", &cluster, "--timeout", &timeout]);
            assert!(get.status.success(), "get {key}: {}", stderr(&get));
            assert_eq!(stdout(&get), format!("{value}\n"));
        }
        // Every acknowledged write is there.
        check_range(&client, "a", 0..60).await;
        check_range(&client, "b", 0..20).await;
        check_range(&client, "c", 0..10).await;
        check_range(&client, "e", 0..120).await;
        // A client told of the newcomers only finds the leader too, whichever it is.
        let newcomers: BTreeMap<NodeId, SocketAddr> =
            [NodeId(4), NodeId(5)].map(|id| (id, clients[&id])).into();
        let newcomer = KvClient::new(newcomers, client_config()).unwrap();
        assert_eq!(newcomer.put("d", "1").await.unwrap(), None);
        assert_eq!(
            newcomer.get("c5").await.unwrap().as_deref(),
            Some("value-5")
        );
        newcomer.shutdown();

        // The killed node restarts with its first command line (its --peers name the
        // first configuration): it takes the configuration from its data directory and
        // catches up, and the members stay as they are.
        servers.get_mut(&victim).unwrap().start().await;
        let leader = wait_until_members(&client, |m| m.is_settled()).await;
        let committed = client
            .status(leader.node)
            .await
            .map(|status| status.commit_index)
            .unwrap();
        wait_applied(&client, victim, committed).await;
        // (Addresses may differ: a leader records its client address.)
        let last = client.members().await.unwrap();
        assert_eq!(last.committed.voters, after.committed.voters);
        assert_eq!(last.committed.learners, after.committed.learners);
        assert!(last.is_settled(), "{last:?}");
    });
    client.shutdown();

    // A node with no configuration and neither --peers nor --join: bad arguments.
    let fresh = dir.path().join("fresh").display().to_string();
    let listen = free_addrs(1)[0].to_string();
    let refused = cli(&[
        "serve",
        "--id",
        "6",
        "--listen",
        &listen,
        "--data-dir",
        &fresh,
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("holds no cluster configuration")
            && message.contains("--peers")
            && message.contains("--join"),
        "{message}"
    );
}

/// Polls the leader's configuration until `condition` holds.
async fn wait_until_members(
    client: &KvClient,
    condition: impl Fn(&raft_examples::ClusterMembers) -> bool,
) -> raft_examples::ClusterMembers {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(members) = client.members().await
            && condition(&members)
        {
            return members;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the configuration did not settle"
        );
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

/// A node of `cluster`'s, started to join, in this process and in memory.
async fn joiner(cluster: &TestCluster, id: NodeId) -> KvNode {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = NodeConfig::new(id, any, any, []);
    config.first_start = FirstStart::Join;
    config.tcp = cluster.configs.values().next().unwrap().tcp.clone();
    KvNode::start_with_storage(config, MemStorage::new())
        .await
        .unwrap()
}

#[test]
fn membership_requests_are_refused_with_typed_errors_and_can_be_repeated() {
    run(async {
        let cluster = TestCluster::start(Options::default()).await;
        let client = &cluster.client;
        let leader = cluster.some_leader().await;
        let follower = cluster
            .nodes
            .keys()
            .copied()
            .find(|&id| id != leader.id)
            .unwrap();
        let raft_addr = |id: NodeId| cluster.configs[&id].peers[&id];

        assert_eq!(
            client.remove_node(NodeId(9)).await,
            Err(ClientError::ChangeRefused(ChangeRefused::UnknownNode(
                NodeId(9)
            )))
        );
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 9));
        match client.add_node(follower, elsewhere, None, false).await {
            Err(ClientError::ChangeRefused(ChangeRefused::AlreadyMember {
                id,
                voter: true,
                ..
            })) => assert_eq!(id, follower),
            other => panic!("{other:?}"),
        }
        match client
            .add_node(follower, raft_addr(follower), None, true)
            .await
        {
            Err(ClientError::ChangeRefused(ChangeRefused::AlreadyMember {
                voter: true, ..
            })) => {}
            other => panic!("{other:?}"),
        }
        // Asking for what is already so: done at once, nothing written.
        let before = cluster.status(leader.id).last_log;
        let members = client
            .add_node(follower, raft_addr(follower), None, false)
            .await
            .unwrap();
        assert!(members.committed.voters.contains(&follower));
        if cluster.status(leader.id).term == before.term {
            assert_eq!(cluster.status(leader.id).last_log, before);
        }

        // Only the leader answers, and a follower names it.
        let raw: TcpClient<ClientRequest, ClientResponse> = TcpClient::new(
            TcpConfig::default(),
            client_protocol(),
            cluster.client_addrs.clone(),
        )
        .unwrap();
        let current = cluster.wait_for_leader(raft_traits::Term(0), &[]).await;
        let answer = raw.call(follower, ClientRequest::Members).await.unwrap();
        if cluster.leader().map(|l| (l.id, l.term)) == Some((current.id, current.term))
            && follower != current.id
        {
            assert_eq!(
                answer,
                ClientResponse::NotLeader {
                    leader_hint: Some(current.id),
                    leader_addr: None,
                }
            );
        }
        raw.shutdown();

        // A learner added, then made a voter: asking again is safe.
        let learner = joiner(&cluster, NodeId(4)).await;
        let added = client
            .add_node(
                NodeId(4),
                learner.raft_addr(),
                Some(learner.client_addr()),
                true,
            )
            .await
            .unwrap();
        assert!(added.committed.learners.contains(&NodeId(4)), "{added:?}");
        let again = client
            .add_node(
                NodeId(4),
                learner.raft_addr(),
                Some(learner.client_addr()),
                true,
            )
            .await
            .unwrap();
        assert_eq!(again.committed, added.committed);
        let promoted = client
            .add_node(
                NodeId(4),
                learner.raft_addr(),
                Some(learner.client_addr()),
                false,
            )
            .await
            .unwrap();
        assert!(
            promoted.committed.voters.contains(&NodeId(4)),
            "{promoted:?}"
        );
        assert!(promoted.is_settled());
        let removed = client.remove_node(NodeId(4)).await.unwrap();
        assert!(!removed.committed.contains(NodeId(4)), "{removed:?}");
        learner.shutdown().await;

        // A voter that never catches up (nothing runs at its address): the change does
        // not complete; it stays a learner, and can be removed.
        let impatient = KvClient::new(
            cluster.client_addrs.clone(),
            ClientConfig {
                deadline: Duration::from_secs(3),
                ..ClientConfig::default()
            },
        )
        .unwrap();
        let nowhere = crate::process::free_addrs(1)[0];
        match impatient.add_node(NodeId(5), nowhere, None, false).await {
            Err(ClientError::ChangeNotDone { reason, .. }) => {
                assert!(reason.contains("n5 is a learner catching up"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        impatient.shutdown();
        let members = client.members().await.unwrap();
        assert!(members.latest.learners.contains(&NodeId(5)), "{members:?}");
        let members = client.remove_node(NodeId(5)).await.unwrap();
        assert!(!members.committed.contains(NodeId(5)), "{members:?}");
        assert_eq!(members.committed.voters.len(), 3);
        cluster.put_range("x", 0..5).await;
        cluster.shutdown().await;

        // The last voter cannot go.
        let single = TestCluster::start(Options {
            nodes: 1,
            ..Options::default()
        })
        .await;
        single.some_leader().await;
        assert_eq!(
            single.client.remove_node(NodeId(1)).await,
            Err(ClientError::ChangeRefused(ChangeRefused::NoVotersLeft(
                NodeId(1)
            )))
        );
        single.shutdown().await;
    });
}

#[test]
fn clients_find_leaders_they_were_not_told_of() {
    run(async {
        let mut cluster = TestCluster::start(Options::default()).await;
        let first = cluster.some_leader().await;
        let newcomer = joiner(&cluster, NodeId(4)).await;
        let (raft4, client4) = (newcomer.raft_addr(), newcomer.client_addr());
        cluster.nodes.insert(NodeId(4), newcomer);
        let members = cluster
            .client
            .add_node(NodeId(4), raft4, Some(client4), false)
            .await
            .unwrap();
        assert!(members.committed.voters.contains(&NodeId(4)));
        cluster.put_range("a", 0..10).await;

        // The newcomer leads: a client told of node 1 only is sent there.
        let leader = cluster.some_leader().await;
        if leader.id != NodeId(4) {
            cluster
                .node(leader.id)
                .raft()
                .transfer_leadership(NodeId(4))
                .await
                .unwrap();
        }
        let led = wait_until("n4 to lead", || {
            cluster
                .leader()
                .filter(|l| l.id == NodeId(4) && l.term > first.term)
        })
        .await;
        let told_of_one = KvClient::new(
            [(NodeId(1), cluster.client_addrs[&NodeId(1)])],
            client_config(),
        )
        .unwrap();
        assert_eq!(told_of_one.put("b", "1").await.unwrap(), None);
        assert_eq!(told_of_one.leader(), Some(NodeId(4)));
        assert!(told_of_one.nodes().contains(&NodeId(4)));
        told_of_one.shutdown();

        // A first member leads again: once it has recorded its client address in the
        // configuration (it does so by itself), a client told of the newcomer only is
        // sent to it.
        cluster
            .node(NodeId(4))
            .raft()
            .transfer_leadership(NodeId(2))
            .await
            .unwrap();
        wait_until("n2 to lead", || {
            cluster
                .leader()
                .filter(|l| l.id == NodeId(2) && l.term > led.term)
        })
        .await;
        let client2 = cluster.client_addrs[&NodeId(2)];
        wait_until("n2 to record its client address", || {
            let status = cluster.node(NodeId(2)).raft().status();
            let recorded = status.committed_membership.address(NodeId(2))?;
            let recorded: raft_examples::MemberAddr = recorded.parse().ok()?;
            (recorded.client == Some(client2)).then_some(())
        })
        .await;
        let told_of_four = KvClient::new([(NodeId(4), client4)], client_config()).unwrap();
        assert_eq!(told_of_four.put("c", "1").await.unwrap(), None);
        assert_eq!(told_of_four.leader(), Some(NodeId(2)));
        assert_eq!(
            told_of_four.get("a9").await.unwrap().as_deref(),
            Some("value-9")
        );
        told_of_four.shutdown();
        cluster.check_range("a", 0..10).await;
        cluster.shutdown().await;
    });
}

/// A service that speaks version 1 of the client protocol, as an older node does.
struct OldNode;

#[async_trait]
impl Service for OldNode {
    type Request = ClientRequest;
    type Response = ClientResponse;

    fn protocol(&self) -> Protocol {
        Protocol::service(CLIENT_PROTOCOL_NAME)
    }

    async fn call(&self, _request: ClientRequest) -> Result<ClientResponse, String> {
        Err("an old node".to_owned())
    }
}

#[test]
fn clients_and_nodes_of_different_protocol_versions_say_so() {
    run(async {
        // This client, and a node of version 1.
        let old =
            TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), TcpConfig::default()).unwrap();
        old.serve_service(Arc::new(OldNode)).unwrap();
        let addr = old.local_addr();
        let client = KvClient::new([(NodeId(1), addr)], client_config()).unwrap();
        match client.get("k").await {
            Err(
                error @ ClientError::VersionMismatch {
                    server: 1, ours: 3, ..
                },
            ) => {
                assert_eq!(
                    error.to_string(),
                    format!(
                        "{addr} (n1) speaks version 1 of the raft-kv client protocol, and this client version 3: run the same release of raft-kv on clients and nodes"
                    )
                );
            }
            other => panic!("{other:?}"),
        }
        client.shutdown();
        old.shutdown().await;

        // A client of version 1, and a node of this version: refused in the handshake,
        // which names both.
        let cluster = TestCluster::start(Options {
            nodes: 1,
            ..Options::default()
        })
        .await;
        let old_client: TcpClient<ClientRequest, ClientResponse> = TcpClient::new(
            TcpConfig::default(),
            Protocol::service(CLIENT_PROTOCOL_NAME),
            cluster.client_addrs.clone(),
        )
        .unwrap();
        let answer = old_client.call(NodeId(1), ClientRequest::Status).await;
        assert!(
            matches!(answer, Err(TransportError::Unreachable { .. })),
            "{answer:?}"
        );
        let refusal = old_client.handshake_error(NodeId(1)).unwrap();
        assert_eq!(
            refusal,
            HandshakeError::WrongProtocol {
                server: Protocol::service(CLIENT_PROTOCOL),
                client: Protocol::service(CLIENT_PROTOCOL_NAME),
            }
        );
        assert!(refusal.to_string().contains("\"raft-kv/3\""), "{refusal}");
        old_client.shutdown();
        cluster.some_leader().await;
        cluster.shutdown().await;
    });
}
