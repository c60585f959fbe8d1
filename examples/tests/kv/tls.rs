//! A KV cluster with mutual TLS between its nodes: it replicates, survives a restart, and a
//! process without a certificate of the cluster's CA reaches no node.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft_examples::pki::LocalCa;
use raft_mem::KvCommand;
use raft_net_smol::TcpTransport;
use raft_net_smol::tls::TlsConfig;
use raft_traits::{LogId, NodeId, Postcard, Request, RequestVote, Term, Transport};

use crate::support::{Options, TestCluster, run};

/// A certificate authority made for one test (test code: failures panic).
#[derive(Debug)]
pub(crate) struct TestCa(LocalCa);

impl TestCa {
    pub(crate) fn new() -> Self {
        TestCa(LocalCa::new().unwrap())
    }

    /// The CA's certificate, in PEM.
    pub(crate) fn pem(&self) -> String {
        self.0.pem()
    }

    /// A certificate naming node `node`, signed by this CA, and its key, in PEM.
    pub(crate) fn issue(&self, node: NodeId) -> (String, String) {
        self.0.issue(node).unwrap()
    }

    /// Node `node`'s settings: a certificate of this CA naming it, trusting `ca`.
    pub(crate) fn node_trusting(&self, node: NodeId, ca: &TestCa) -> TlsConfig {
        self.0.node_trusting(node, &ca.0).unwrap()
    }

    /// Node `node`'s settings with this CA.
    pub(crate) fn node(&self, node: NodeId) -> TlsConfig {
        self.node_trusting(node, self)
    }
}

fn terms(cluster: &TestCluster) -> BTreeMap<NodeId, Term> {
    cluster
        .nodes
        .keys()
        .map(|&id| (id, cluster.status(id).term))
        .collect()
}

#[test]
fn a_tls_cluster_replicates_and_a_process_without_a_certificate_reaches_no_node() {
    run(async {
        let ca = Arc::new(TestCa::new());
        let options = Options {
            tls: Some(Arc::clone(&ca)),
            ..Options::default()
        };
        let mut cluster = TestCluster::start(options).await;
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("key", 0..20).await;

        // A follower restarts and catches up over TLS.
        let follower = *cluster.nodes.keys().find(|&&id| id != leader.id).unwrap();
        cluster.stop(follower).await;
        cluster.put_range("more", 0..10).await;
        cluster.restart(follower).await;
        cluster.wait_caught_up(follower).await;
        cluster.check_local_range(follower, "more", 0..10).await;

        // Votes of a huge term, which would depose any leader that heard them, from
        // processes without a certificate of this cluster's CA, posing as node 1.
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        let before = terms(&cluster);
        let rogue_ca = TestCa::new();
        let raft_ports: Vec<(NodeId, std::net::SocketAddr)> = cluster
            .nodes
            .values()
            .map(|n| (n.id(), n.raft_addr()))
            .collect();
        let impostor = NodeId(1);
        let plain: TcpTransport<KvCommand> = TcpTransport::new(
            cluster.configs[&impostor].tcp.clone(),
            impostor,
            raft_ports.clone(),
        )
        .unwrap();
        let rogue: TcpTransport<KvCommand> = TcpTransport::with_tls(
            cluster.configs[&impostor].tcp.clone(),
            Postcard,
            impostor,
            rogue_ca.node_trusting(impostor, &ca),
            raft_ports.clone(),
        )
        .unwrap();
        let vote = Request::Vote(RequestVote {
            term: Term(1_000),
            candidate: impostor,
            last_log: LogId {
                term: Term(1_000),
                index: raft_traits::LogIndex(1_000_000),
            },
            transfer: false,
        });
        for &(id, _) in &raft_ports {
            for transport in [&plain, &rogue] {
                let reply = transport.send(id, vote.clone()).await;
                assert!(reply.is_err(), "{id} answered: {reply:?}");
            }
        }
        plain.shutdown();
        rogue.shutdown();

        assert_eq!(terms(&cluster), before);
        let now = cluster.wait_for_leader(Term(0), &[]).await;
        assert_eq!((now.id, now.term), (leader.id, leader.term));
        cluster.check_range("key", 0..20).await;
        cluster.shutdown().await;
    });
}
