//! Exactly-once commands through client sessions: a put whose answer is lost, retried
//! by the client library across the death of the leader, is applied once and the retry
//! gets the response recorded when it was applied, with or without a snapshot (and
//! restarts from it) in between; an expired session is handled as documented.
//!
//! The client under test reaches every node through a [`FaultProxy`] that can drop the
//! nodes' answers while passing its requests, so a command is carried out and its
//! answer lost, as when a leader dies right after applying it.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_examples::{ClientError, FaultProxy, KvClient, LinkMode};
use raft_traits::{NodeId, Term};

use crate::support::{Options, PATIENCE, TestCluster, client_config, run, wait_until};

/// A client that reaches each node of `cluster` through a proxy of its own.
struct ProxiedClient {
    client: Arc<KvClient>,
    proxies: BTreeMap<NodeId, FaultProxy>,
}

impl ProxiedClient {
    fn start(cluster: &TestCluster) -> ProxiedClient {
        let proxies: BTreeMap<NodeId, FaultProxy> = cluster
            .nodes
            .iter()
            .map(|(&id, node)| (id, FaultProxy::start(node.client_addr()).unwrap()))
            .collect();
        let addrs = proxies.iter().map(|(&id, proxy)| (id, proxy.local_addr()));
        let client = Arc::new(KvClient::new(addrs, client_config()).unwrap());
        ProxiedClient { client, proxies }
    }

    fn set_mode(&self, mode: LinkMode) {
        for proxy in self.proxies.values() {
            proxy.set_mode(mode);
        }
    }

    fn replies_dropped(&self) -> u64 {
        self.proxies.values().map(FaultProxy::bytes_dropped).sum()
    }

    async fn shutdown(self) {
        self.client.shutdown();
        for proxy in self.proxies.values() {
            proxy.shutdown().await;
        }
    }
}

/// Waits until some running node has applied `key` = `value`, and returns that node.
async fn applied_somewhere(cluster: &TestCluster, key: &str, value: &str) -> NodeId {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for (&id, node) in &cluster.nodes {
            if node.local().get(key).await.as_deref() == Some(value) {
                return id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no node applied {key} = {value} within {PATIENCE:?}"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// The scenario of the issue: a put applied, its answer lost, another client's write
/// of the same key, optionally snapshots covering all of it and both followers
/// restarted from them, the leader killed, and the client's retry.
async fn a_put_retried_across_a_leader_kill(snapshot_between: bool) {
    let options = Options {
        snapshot_entries: if snapshot_between { 20 } else { 1000 },
        ..Options::default()
    };
    let mut cluster = TestCluster::start(options).await;
    cluster.wait_for_leader(Term(0), &[]).await;
    let writer = ProxiedClient::start(&cluster);
    // Opens the writer's session (its first command).
    assert_eq!(writer.client.put("warm-up", "1").await.unwrap(), None);

    // Every answer to the writer is lost from now on; its put is carried out.
    writer.set_mode(LinkMode::DropReplies);
    let put = smol::spawn({
        let client = Arc::clone(&writer.client);
        async move { client.put("x", "first").await }
    });
    applied_somewhere(&cluster, "x", "first").await;
    // Another client writes the key after it: a second application of the writer's put
    // would overwrite this, and would answer with it.
    let replaced = cluster.client.put("x", "other").await.unwrap();
    assert_eq!(replaced.as_deref(), Some("first"));

    if snapshot_between {
        // Enough writes for every node to snapshot past both puts, then each follower
        // restarted, so that its session table comes from its snapshot.
        let covered = cluster.some_leader().await.commit_index;
        cluster.put_range("filler", 0..60).await;
        for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
            let status = cluster.wait_caught_up(id).await;
            assert!(
                status.snapshot.index >= covered,
                "{id}'s snapshot at {} does not cover {covered}",
                status.snapshot.index
            );
        }
        // Every node but the leader, whichever it is by then, is restarted: the nodes
        // that outlive it all start from their snapshots.
        let mut restarted = BTreeSet::new();
        loop {
            let leader = cluster.wait_for_leader(Term(0), &[]).await.id;
            let pending: Vec<NodeId> = cluster
                .nodes
                .keys()
                .copied()
                .filter(|&id| id != leader && !restarted.contains(&id))
                .collect();
            if pending.is_empty() {
                break;
            }
            for id in pending {
                cluster.stop(id).await;
                cluster.restart(id).await;
                // The apply task restores it right after the start.
                wait_until(&format!("{id} to restore its snapshot"), || {
                    (cluster.node(id).snapshot_stats().restored > 0).then_some(())
                })
                .await;
                restarted.insert(id);
            }
        }
    }

    // The leader dies; the writer's answers pass again, and its retry reaches the next
    // leader.
    let leader = cluster.wait_for_leader(Term(0), &[]).await;
    cluster.stop(leader.id).await;
    writer.set_mode(LinkMode::Pass);
    let answer = put.await;
    assert!(writer.replies_dropped() > 0, "no answer was lost");

    // The retry got the answer of the first application (the key was new), and was not
    // applied again: the other client's write stands.
    assert_eq!(answer, Ok(None), "the retry's answer");
    let new_leader = cluster.wait_for_leader(leader.term, &[leader.id]).await;
    assert_ne!(new_leader.id, leader.id);
    assert_eq!(
        cluster.client.get("x").await.unwrap().as_deref(),
        Some("other")
    );
    for id in cluster.nodes.keys().copied() {
        cluster.wait_caught_up(id).await;
        assert_eq!(
            cluster.node(id).local().get("x").await.as_deref(),
            Some("other")
        );
    }
    writer.shutdown().await;
    cluster.shutdown().await;
}

#[test]
fn a_put_retried_across_a_leader_kill_is_applied_once() {
    run(a_put_retried_across_a_leader_kill(false));
}

#[test]
fn a_put_retried_across_a_leader_kill_and_a_snapshot_is_applied_once() {
    run(a_put_retried_across_a_leader_kill(true));
}

#[test]
fn expired_sessions_are_replaced_or_reported() {
    run(async {
        let options = Options {
            max_sessions: NonZeroUsize::new(2).unwrap(),
            ..Options::default()
        };
        let cluster = TestCluster::start(options).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        let writer = ProxiedClient::start(&cluster);
        assert_eq!(writer.client.put("a", "1").await.unwrap(), None);

        // Two other clients open sessions: the writer's, least recently used, expires.
        // Its next command never reached the state machine under it, so the client opens
        // a new session and sends it there.
        for other in ["b", "c"] {
            let client = KvClient::new(
                cluster
                    .nodes
                    .iter()
                    .map(|(&id, node)| (id, node.client_addr())),
                client_config(),
            )
            .unwrap();
            client.put(other, "1").await.unwrap();
            client.shutdown();
        }
        assert_eq!(
            writer.client.put("a", "2").await.unwrap().as_deref(),
            Some("1")
        );

        // Now a put is applied and its answer lost; while the client retries, its
        // session expires. The retry cannot tell whether the put was applied: a typed
        // error says so, and the put is not applied a second time.
        writer.set_mode(LinkMode::DropReplies);
        let put = smol::spawn({
            let client = Arc::clone(&writer.client);
            async move { client.put("a", "3").await }
        });
        let node = applied_somewhere(&cluster, "a", "3").await;
        // The writer's session is the one at its second command.
        let table = cluster.node(node).local().sessions().await;
        let (session, _) = table
            .sessions()
            .find(|&(_, sequence)| sequence == 2)
            .unwrap();
        let evict = || async {
            let client = KvClient::new(
                cluster
                    .nodes
                    .iter()
                    .map(|(&id, node)| (id, node.client_addr())),
                client_config(),
            )
            .unwrap();
            // A write: reads need no session (in the default read mode).
            client.put("evict", "x").await.unwrap();
            client.shutdown();
        };
        // New sessions until the writer's expires. Each of its retries uses it, so one
        // may outlive a registration or two.
        let deadline = Instant::now() + PATIENCE;
        loop {
            evict().await;
            let leader = cluster.some_leader().await;
            let table = cluster.node(leader.id).local().sessions().await;
            if table.last_sequence(session).is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "{session} never expired");
        }
        // The other clients wrote other keys; overwrite this one so that a second
        // application would show.
        cluster.client.put("a", "4").await.unwrap();
        writer.set_mode(LinkMode::Pass);
        let answer = put.await;
        assert_eq!(answer, Err(ClientError::SessionExpired { client: session }));
        assert_eq!(cluster.client.get("a").await.unwrap().as_deref(), Some("4"));
        let leader = cluster.some_leader().await;
        let sessions = cluster.node(leader.id).local().sessions().await;
        assert!(sessions.len() <= 2);
        writer.shutdown().await;
        cluster.shutdown().await;
    });
}
