//! The node's metrics in the Prometheus text format (`raft-kv serve --metrics-listen`):
//! Raft's [`Status`] and counters, and the latency of the proposals this node made for
//! its clients, all as the library reports them.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use raft_impl::{LATENCY_BUCKETS, ProposalLatency, RoleKind, Status};

/// Renders `status` and `latency` as a Prometheus text exposition.
pub fn render(status: &Status, latency: &ProposalLatency) -> String {
    let mut out = String::new();
    let node = status.id.0;
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{node=\"{node}\"{labels}}} {value}");
        }
    };
    let one = |value: u64| vec![(String::new(), value as f64)];
    let roles = [
        (RoleKind::Follower, "follower"),
        (RoleKind::PreCandidate, "pre_candidate"),
        (RoleKind::Candidate, "candidate"),
        (RoleKind::Leader, "leader"),
    ];
    let role: Vec<(String, f64)> = roles
        .iter()
        .map(|(kind, name)| {
            (
                format!(",role=\"{name}\""),
                f64::from(u8::from(status.role == *kind)),
            )
        })
        .collect();
    metric(
        "raft_role",
        "gauge",
        "1 for the node's current role.",
        &role,
    );
    metric(
        "raft_term",
        "gauge",
        "The current term.",
        &one(status.term.0),
    );
    metric(
        "raft_leader",
        "gauge",
        "The leader this node knows of (0: none).",
        &one(status.leader.map_or(0, |id| id.0)),
    );
    metric(
        "raft_last_log_index",
        "gauge",
        "The index of the last log entry.",
        &one(status.last_log.index.0),
    );
    metric(
        "raft_commit_index",
        "gauge",
        "The highest index known committed.",
        &one(status.commit_index.0),
    );
    metric(
        "raft_applied_index",
        "gauge",
        "The highest index the state machine applied.",
        &one(status.last_applied.0),
    );
    metric(
        "raft_snapshot_index",
        "gauge",
        "The last index the snapshot covers.",
        &one(status.snapshot.index.0),
    );
    let counters = status.counters;
    for (name, help, value) in [
        (
            "raft_leader_changes_total",
            "Times the known leader changed.",
            counters.leader_changes,
        ),
        (
            "raft_elections_started_total",
            "Elections this node started.",
            counters.elections_started,
        ),
        (
            "raft_elections_won_total",
            "Elections this node won.",
            counters.elections_won,
        ),
        (
            "raft_proposals_total",
            "Commands this node appended as leader.",
            counters.proposals,
        ),
        (
            "raft_append_requests_total",
            "AppendEntries requests carrying entries sent as leader.",
            counters.append_requests,
        ),
        (
            "raft_entries_sent_total",
            "Entries those requests carried (per request: the leader's batching).",
            counters.entries_sent,
        ),
        (
            "raft_snapshots_taken_total",
            "Snapshots taken (log compactions).",
            counters.snapshots_taken,
        ),
        (
            "raft_snapshots_installed_total",
            "Snapshots installed from a leader.",
            counters.snapshots_installed,
        ),
        (
            "raft_refused_messages_total",
            "Messages refused as from no correct member.",
            status.refused_messages,
        ),
    ] {
        metric(name, "counter", help, &one(value));
    }
    let lag: Vec<(String, f64)> = status
        .followers
        .iter()
        .map(|(peer, progress)| {
            let behind = status
                .last_log
                .index
                .0
                .saturating_sub(progress.match_index.0);
            (format!(",peer=\"{}\"", peer.0), behind as f64)
        })
        .collect();
    metric(
        "raft_follower_lag_entries",
        "gauge",
        "On the leader: entries each follower is known to lack.",
        &lag,
    );
    let mut histogram: Vec<(String, f64)> = LATENCY_BUCKETS
        .iter()
        .zip(&latency.at_most)
        .map(|(bound, &count)| (format!(",le=\"{}\"", bound.as_secs_f64()), count as f64))
        .collect();
    histogram.push((",le=\"+Inf\"".to_owned(), latency.count as f64));
    let name = "kv_proposal_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a client's command to its outcome on this node."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, value) in histogram {
        let _ = writeln!(out, "{name}_bucket{{node=\"{node}\"{labels}}} {value}");
    }
    let sum = latency.sum.as_secs_f64();
    let _ = writeln!(out, "{name}_sum{{node=\"{node}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{node=\"{node}\"}} {}", latency.count);
    out
}

/// An HTTP endpoint serving `GET /metrics` from a thread of its own; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `addr` and answers each `GET /metrics` with `render()`.
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> io::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr).map_err(io::Error::other)?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the metrics server has no IP address"))?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".to_owned())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.method() == &tiny_http::Method::Get
                        && request.url() == "/metrics"
                    {
                        let content_type = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4"[..],
                        );
                        let mut response = tiny_http::Response::from_string(render());
                        if let Ok(header) = content_type {
                            response.add_header(header);
                        }
                        response
                    } else {
                        tiny_http::Response::from_string("only GET /metrics is served\n")
                            .with_status_code(404)
                    };
                    if let Err(error) = request.respond(response) {
                        tracing::debug!(%error, "metrics request not answered");
                    }
                }
            })?;
        Ok(MetricsServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
