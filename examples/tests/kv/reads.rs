//! Reads in each mode (`log`, `read-index`, `lease`): a `get` returns the latest
//! acknowledged `put`, right after a leader change too; reads without the log write
//! nothing and are served by followers as well; a cut-off leader serves no stale read; a
//! leader not yet ready for reads makes the read wait, not fail.

use std::time::{Duration, Instant};

use raft_examples::protocol::client_protocol;
use raft_examples::{
    ClientRequest, ClientResponse, KvClient, KvNode, LinkMode, NodeConfig, NodeError, ReadMode,
    Role,
};
use raft_impl::{ConfigError, StartError};
use raft_net_smol::{TcpClient, TcpConfig};
use raft_traits::{NodeId, Term, TransportError};

use crate::support::{Options, PATIENCE, TestCluster, run, wait_until};

/// The client protocol without the client library's retries.
type RawClient = TcpClient<ClientRequest, ClientResponse>;

fn raw_client(cluster: &TestCluster) -> RawClient {
    let config = TcpConfig {
        request_timeout: Duration::from_secs(10),
        ..TcpConfig::default()
    };
    TcpClient::new(config, client_protocol(), cluster.client_addrs.clone()).unwrap()
}

fn read(key: &str) -> ClientRequest {
    ClientRequest::Read { key: key.into() }
}

async fn get(client: &KvClient, key: &str) -> Option<String> {
    client
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .map(|value| value.to_string())
}

async fn put(client: &KvClient, key: &str, value: &str) {
    client
        .put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}={value}: {e}"));
}

fn a_follower_of(cluster: &TestCluster, leader: NodeId) -> NodeId {
    cluster
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader)
        .unwrap()
}

fn served(cluster: &TestCluster, id: NodeId) -> u64 {
    cluster.node(id).read_stats().served
}

/// With no write under way, `key` holds `expected`: twenty gets through the client see
/// it, and every node asked directly answers as its mode says. In `log` mode each get
/// is a log entry; otherwise the log does not grow and every node, followers included,
/// serves the read itself.
async fn check_read_path(cluster: &TestCluster, mode: ReadMode, key: &str, expected: &str) {
    let reader = cluster.new_client();
    let raw = raw_client(cluster);
    let deadline = Instant::now() + PATIENCE;
    'measure: loop {
        assert!(Instant::now() < deadline, "the leader never held still");
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        let before = cluster.status(leader.id);
        let served_before: Vec<u64> = cluster
            .nodes
            .keys()
            .map(|&id| served(cluster, id))
            .collect();
        for _ in 0..20 {
            assert_eq!(get(&reader, key).await.as_deref(), Some(expected));
        }
        for &id in cluster.nodes.keys() {
            match (mode, raw.call(id, read(key)).await.unwrap()) {
                (ReadMode::Log, ClientResponse::ReadThroughLog) => {}
                (ReadMode::ReadIndex | ReadMode::Lease, ClientResponse::Value { value, .. }) => {
                    assert_eq!(value.as_deref(), Some(expected), "read at {id}");
                }
                // An election came in between: measure again.
                (_, ClientResponse::NotLeader { .. } | ClientResponse::NotApplied { .. }) => {
                    continue 'measure;
                }
                (_, other) => panic!("{mode} mode, {id} answered a read with {other:?}"),
            }
        }
        let after = cluster.status(leader.id);
        if after.role != Role::Leader || after.term != before.term {
            continue;
        }
        let served_after: Vec<u64> = cluster
            .nodes
            .keys()
            .map(|&id| served(cluster, id))
            .collect();
        match mode {
            ReadMode::Log => {
                assert!(
                    after.last_log.index.0 >= before.last_log.index.0 + 20,
                    "log reads wrote no entries: {before:?} -> {after:?}"
                );
                assert!(served_after.iter().all(|&n| n == 0), "{served_after:?}");
            }
            ReadMode::ReadIndex | ReadMode::Lease => {
                assert_eq!(after.last_log, before.last_log, "reads wrote to the log");
                // Each node served the direct read; the client's twenty went somewhere.
                let more: Vec<u64> = served_after
                    .iter()
                    .zip(&served_before)
                    .map(|(after, before)| after - before)
                    .collect();
                assert!(more.iter().all(|&n| n >= 1), "{more:?}");
                assert!(more.iter().sum::<u64>() >= 23, "{more:?}");
            }
        }
        break;
    }
    raw.shutdown();
    reader.shutdown();
}

/// Gets by the writer and by another client see each put as soon as it is
/// acknowledged: in a steady cluster, right after a leadership transfer, and right after
/// the leader crashes.
async fn every_get_sees_the_latest_acknowledged_put(mode: ReadMode) {
    let options = Options {
        read_mode: mode,
        ..Options::default()
    };
    let mut cluster = TestCluster::start(options).await;
    cluster.wait_for_leader(Term(0), &[]).await;
    assert!(cluster.nodes.values().all(|node| node.read_mode() == mode));
    let reader = cluster.new_client();

    for i in 0..20 {
        let value = format!("v{i}");
        put(&cluster.client, "k", &value).await;
        assert_eq!(get(&cluster.client, "k").await, Some(value.clone()));
        assert_eq!(get(&reader, "k").await, Some(value));
    }
    assert_eq!(get(&reader, "missing").await, None);
    check_read_path(&cluster, mode, "k", "v19").await;

    // A leadership transfer. The reads right after it may reach the old leader while it
    // hands over, or the new one before it has committed an entry of its term.
    let leader = cluster.wait_for_leader(Term(0), &[]).await;
    put(&cluster.client, "k", "before-transfer").await;
    let target = a_follower_of(&cluster, leader.id);
    cluster
        .node(leader.id)
        .raft()
        .transfer_leadership(target)
        .await
        .unwrap();
    assert_eq!(get(&reader, "k").await.as_deref(), Some("before-transfer"));
    cluster.wait_for_leader(leader.term, &[]).await;
    put(&cluster.client, "k", "after-transfer").await;
    assert_eq!(get(&reader, "k").await.as_deref(), Some("after-transfer"));
    assert_eq!(
        get(&cluster.client, "k").await.as_deref(),
        Some("after-transfer")
    );

    // The leader crashes; the next get waits for a new leader and sees the last put.
    let leader = cluster.wait_for_leader(Term(0), &[]).await;
    put(&cluster.client, "k", "before-crash").await;
    cluster.stop(leader.id).await;
    assert_eq!(get(&reader, "k").await.as_deref(), Some("before-crash"));
    put(&cluster.client, "k", "after-crash").await;
    assert_eq!(get(&reader, "k").await.as_deref(), Some("after-crash"));
    assert_eq!(
        get(&cluster.client, "k").await.as_deref(),
        Some("after-crash")
    );

    reader.shutdown();
    cluster.shutdown().await;
}

#[test]
fn log_reads_see_the_latest_acknowledged_put() {
    run(every_get_sees_the_latest_acknowledged_put(ReadMode::Log));
}

#[test]
fn read_index_reads_see_the_latest_acknowledged_put() {
    run(every_get_sees_the_latest_acknowledged_put(
        ReadMode::ReadIndex,
    ));
}

#[test]
fn lease_reads_see_the_latest_acknowledged_put() {
    run(every_get_sees_the_latest_acknowledged_put(ReadMode::Lease));
}

/// A leader cut off from the others, still reachable by clients, answers no read with
/// the value it holds once the majority has acknowledged a newer one.
async fn a_cut_off_leader_serves_no_stale_read(mode: ReadMode) {
    let options = Options {
        proxies: true,
        read_mode: mode,
        ..Options::default()
    };
    let cluster = TestCluster::start(options).await;
    let old = cluster.wait_for_leader(Term(0), &[]).await;
    put(&cluster.client, "k", "old").await;
    let raw = raw_client(&cluster);

    cluster.set_links_of(old.id, LinkMode::Cut);
    // The client tries the old leader first, then finds the new one.
    put(&cluster.client, "k", "new").await;
    let mut refused = 0;
    for _ in 0..5 {
        match raw.call(old.id, read("k")).await {
            Ok(ClientResponse::Value { value, read_index }) => {
                assert_eq!(
                    value.as_deref(),
                    Some("new"),
                    "stale read at index {read_index} from the cut-off old leader {}",
                    old.id
                );
            }
            Ok(ClientResponse::NotLeader { .. } | ClientResponse::NotApplied { .. })
            | Err(TransportError::Timeout { .. }) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    // It cannot know the new value while cut off, so it refused every time.
    assert_eq!(refused, 5);

    // Healed, it follows and serves the new value.
    cluster.set_all_links(LinkMode::Pass);
    wait_until("the old leader to follow and catch up", || {
        let leader = cluster.leader()?;
        let status = cluster.status(old.id);
        (status.role == Role::Follower && status.last_applied >= leader.commit_index).then_some(())
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match raw.call(old.id, read("k")).await.unwrap() {
            ClientResponse::Value { value, .. } => {
                assert_eq!(value.as_deref(), Some("new"));
                break;
            }
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    raw.shutdown();
    cluster.shutdown().await;
}

#[test]
fn a_cut_off_leader_serves_no_stale_read_index_read() {
    run(a_cut_off_leader_serves_no_stale_read(ReadMode::ReadIndex));
}

#[test]
fn a_cut_off_leader_serves_no_stale_lease_read() {
    run(a_cut_off_leader_serves_no_stale_read(ReadMode::Lease));
}

/// Without a blank entry at the start of a term, a new leader cannot serve reads until
/// a client's write commits in its term: the read waits (the node retries NotReady, the
/// client retries the node) and then sees that write.
#[test]
fn a_read_waits_until_the_new_leader_has_committed_in_its_term() {
    run(async {
        let mut options = Options::default();
        options.raft.leader_noop = false;
        let mut cluster = TestCluster::start(options).await;
        let old = cluster.wait_for_leader(Term(0), &[]).await;
        let writer = cluster.new_client();
        // Its session is registered now, so its next put is its only entry.
        put(&writer, "other", "x").await;
        put(&cluster.client, "k", "v1").await;

        cluster.stop(old.id).await;
        let new = cluster.wait_for_leader(old.term, &[old.id]).await;
        let reader = cluster.new_client();
        let pending = smol::spawn(async move {
            let value = get(&reader, "k").await;
            reader.shutdown();
            value
        });
        // The new leader refuses, and the read is tried again.
        wait_until("a read to find the new leader not ready", || {
            let retries: u64 = cluster
                .nodes
                .values()
                .map(|node| node.read_stats().not_ready_retries)
                .sum();
            (retries > 0).then_some(())
        })
        .await;
        assert!(
            !pending.is_finished(),
            "the read was served before any write"
        );
        put(&writer, "k", "v2").await;
        // No read index can come before the first commit of the new term, which is that
        // of "v2" or later.
        assert_eq!(
            pending.await.as_deref(),
            Some("v2"),
            "leader was {}",
            new.id
        );
        writer.shutdown();
        cluster.shutdown().await;
    });
}

/// `lease` mode turns on `Config::lease_reads`, which needs check-quorum: without it the
/// node refuses to start, while the other modes leave lease reads off and start.
#[test]
fn lease_mode_turns_lease_reads_on() {
    run(async {
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        for mode in ReadMode::ALL {
            let mut config = NodeConfig::new(NodeId(1), any, any, []);
            config.read_mode = mode;
            config.raft.check_quorum = false;
            match (mode, KvNode::start(config).await) {
                (ReadMode::Lease, Err(NodeError::Start(StartError::Config(error)))) => {
                    assert_eq!(error, ConfigError::LeaseNeedsCheckQuorum);
                }
                (ReadMode::Log | ReadMode::ReadIndex, Ok(node)) => {
                    assert_eq!(node.read_mode(), mode);
                    node.shutdown().await;
                }
                (_, Ok(_)) => panic!("{mode} mode started with lease reads and no check-quorum"),
                (_, Err(error)) => panic!("{mode} mode: {error}"),
            }
        }
    });
}
