//! The metrics endpoint (`serve --metrics-listen`): Raft's figures and the proposal
//! latency histogram, in the Prometheus text format, on every node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use raft_traits::Term;

use crate::support::{Options, TestCluster, run};

/// `GET path` over a plain HTTP/1.0 connection: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` in `body`.
fn sample(body: &str, name_and_labels: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{body}"))
}

#[test]
fn every_node_serves_its_figures_and_the_leader_its_proposals() {
    run(async {
        let options = Options {
            metrics: true,
            ..Options::default()
        };
        let cluster = TestCluster::start(options).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("key", 0..20).await;
        // Whoever leads now (an election on a loaded machine may have moved it).
        let leader = cluster.wait_for_leader(Term(0), &[]).await;

        let node = &cluster.nodes[&leader.id];
        let (status, body) = get(node.metrics_addr().unwrap(), "/metrics");
        assert!(status.contains("200"), "{status}");
        let id = leader.id.0;
        let at = |name: &str| sample(&body, &format!("{name}{{node=\"{id}\"}}"));
        assert_eq!(
            sample(
                &body,
                &format!("raft_role{{node=\"{id}\",role=\"leader\"}}")
            ),
            1.0
        );
        assert_eq!(at("raft_leader"), id as f64);
        assert!(at("raft_elections_won_total") >= 1.0);
        assert!(at("raft_commit_index") >= 20.0);
        assert!(at("raft_proposals_total") >= 1.0, "{body}");
        // The leader replicated at least its own first entry, each request carrying one
        // entry or more.
        assert!(at("raft_append_requests_total") >= 1.0, "{body}");
        assert!(at("raft_entries_sent_total") >= at("raft_append_requests_total"));
        assert!(at("kv_proposal_latency_seconds_sum") > 0.0);
        // Every put was proposed and timed by whichever node led when it arrived.
        let mut proposed = 0.0;
        for (&other, member) in &cluster.nodes {
            let (_, body) = get(member.metrics_addr().unwrap(), "/metrics");
            let of = |name: &str| sample(&body, &format!("{name}{{node=\"{}\"}}", other.0));
            proposed += of("raft_proposals_total");
            assert_eq!(
                of("kv_proposal_latency_seconds_count"),
                of("raft_proposals_total")
            );
        }
        assert!(proposed >= 20.0, "{proposed} proposals for 20 puts");
        let followers = body
            .lines()
            .filter(|line| line.starts_with("raft_follower_lag_entries{"))
            .count();
        assert_eq!(followers, 2, "{body}");

        // A follower reports its role, its leader, and what it applied.
        let (&other, follower) = cluster
            .nodes
            .iter()
            .find(|(id, _)| **id != leader.id)
            .unwrap();
        let (_, body) = get(follower.metrics_addr().unwrap(), "/metrics");
        let of = |name: &str| sample(&body, &format!("{name}{{node=\"{}\"}}", other.0));
        assert_eq!(
            sample(
                &body,
                &format!("raft_role{{node=\"{}\",role=\"follower\"}}", other.0)
            ),
            1.0
        );
        assert_eq!(of("raft_leader"), id as f64);
        // Commands redirected to the leader are not timed here: what it timed is what it
        // proposed as leader (none, unless it led earlier).
        assert_eq!(
            of("kv_proposal_latency_seconds_count"),
            of("raft_proposals_total")
        );
        assert!(of("raft_leader_changes_total") >= 1.0);

        let (status, _) = get(node.metrics_addr().unwrap(), "/elsewhere");
        assert!(status.contains("404"), "{status}");
        cluster.shutdown().await;
    });
}
