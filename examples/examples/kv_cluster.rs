//! The main demo: a three-node replicated key-value store on real TCP, in one process.
//!
//! Three `KvNode`s listen on 127.0.0.1 (ports chosen by the system) and keep their logs,
//! votes and snapshots in files under a temporary directory. Clients run a mixed
//! put/get workload through `KvClient` while the demo
//!
//! 1. waits for the first election,
//! 2. kills the leader (shuts it down) and times the election of the next one, while
//!    the workload keeps going,
//! 3. restarts the old leader from its files on the same ports and watches it catch up,
//! 4. replaces a node live: a fourth node starts to join, is added as a voter (a learner
//!    until it has caught up), then the leader is removed from the cluster and stopped,
//!    while the workload keeps going (its clients were told of nodes 1 to 3 only, and
//!    find the new node through the leaders' redirects when it leads),
//! 5. reads back every key through the leader and from each remaining node's state
//!    (the new one included), and checks that every acknowledged write is there with its
//!    last value,
//!
//! then scrapes the leader's metrics endpoint (as `curl http://ADDR/metrics` would) and
//! prints throughput and latency percentiles. It exits 0 if every check passed.
//!
//! Run: `cargo run --release -p raft-examples --example kv_cluster [-- --tls]`
//! (`--tls`: mutual TLS between the nodes, with certificates from a CA made for the run)
//! (`RUST_LOG=info` or `debug` shows the nodes' logs on stderr.)

#![allow(clippy::print_stdout)] // an example prints what it shows

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_examples::pki::LocalCa;
use raft_examples::{
    ClientConfig, FirstStart, KvClient, KvNode, NodeConfig, NodeStatus, PortHolder, Role,
};
use raft_traits::{LogIndex, NodeId};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Concurrent clients. Each owns its keys, so it knows what each should hold.
const WORKERS: usize = 16;
/// Keys per client.
const KEYS_PER_WORKER: usize = 40;
/// One operation in this many is a get; the others are puts.
const GET_EVERY: u64 = 3;
/// Each node snapshots every this many applied commands.
const SNAPSHOT_ENTRIES: u64 = 2_000;
/// How long each phase of the workload runs.
const STEADY: Duration = Duration::from_secs(4);
const LEADER_DOWN: Duration = Duration::from_secs(3);
const AFTER_RESTART: Duration = Duration::from_secs(2);
const AFTER_REPLACEMENT: Duration = Duration::from_secs(2);
/// How long any awaited condition (an election, a catch-up) may take before the demo
/// declares it failed.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::ERROR));
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();

    match smol::block_on(demo()) {
        Ok(failed) if failed.is_empty() => {
            println!("\nall checks passed");
            ExitCode::SUCCESS
        }
        Ok(failed) => {
            println!("\nFAILED checks:");
            for check in failed {
                println!("  - {check}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            println!("\nFAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The nodes: their configurations, and the running instance of each.
struct Cluster {
    configs: BTreeMap<NodeId, NodeConfig>,
    nodes: BTreeMap<NodeId, KvNode>,
    /// With `--tls`: the CA that certifies every node for mutual TLS between them.
    ca: Option<LocalCa>,
}

/// Gives `config` a certificate of `ca` for its node, if the demo runs with `--tls`.
fn secure(config: &mut NodeConfig, ca: Option<&LocalCa>) -> Result<(), String> {
    if let Some(ca) = ca {
        let tls = ca
            .node(config.id)
            .map_err(|e| format!("{}: {e}", config.id))?;
        config.tls = Some(tls);
    }
    Ok(())
}

impl Cluster {
    fn status(&self, id: NodeId) -> Option<NodeStatus> {
        self.nodes.get(&id).map(KvNode::status)
    }

    /// The running node that leads with the highest term, if any.
    fn leader(&self) -> Option<NodeStatus> {
        self.nodes
            .values()
            .map(KvNode::status)
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
    }
}

/// What the workload shares with the demo's driver.
#[derive(Default)]
struct Progress {
    ops: AtomicU64,
    stop: AtomicBool,
}

/// What one client did.
#[derive(Default)]
struct WorkerReport {
    /// For each key: the last acknowledged value, and whether a later put of it failed
    /// (then the key may hold either value).
    expected: BTreeMap<String, (Option<String>, bool)>,
    put_latencies: Vec<Duration>,
    get_latencies: Vec<Duration>,
    failed_ops: u64,
    /// Gets that returned something other than the last acknowledged value.
    stale_reads: Vec<String>,
}

async fn demo() -> Result<Vec<String>, String> {
    let mut failed = Vec::new();
    let dir = tempfile::tempdir().map_err(|e| format!("cannot create a directory: {e}"))?;
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let ca = if std::env::args().any(|arg| arg == "--tls") {
        Some(LocalCa::new().map_err(|e| e.to_string())?)
    } else {
        None
    };
    println!(
        "== raft-kv demo: 3 nodes on 127.0.0.1, real TCP{}, files in {}",
        if ca.is_some() {
            " with mutual TLS between the nodes (a CA made for the run)"
        } else {
            ""
        },
        dir.path().display()
    );
    // Each node binds ports of the system's choosing, then learns the others' addresses.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut bound = Vec::new();
    for id in ids {
        let mut config = NodeConfig::new(id, any, any, []);
        config.data_dir = Some(dir.path().join(format!("node-{}", id.0)));
        config.snapshot_entries = SNAPSHOT_ENTRIES;
        config.metrics_listen = Some(any);
        secure(&mut config, ca.as_ref())?;
        bound.push(KvNode::bind(config).map_err(|e| format!("{id}: {e}"))?);
    }
    let raft_addrs: Vec<(NodeId, SocketAddr)> = bound
        .iter()
        .map(|node| (node.config().id, node.raft_addr()))
        .collect();
    let client_addrs: BTreeMap<NodeId, SocketAddr> = bound
        .iter()
        .map(|node| (node.config().id, node.client_addr()))
        .collect();
    let mut cluster = Cluster {
        configs: BTreeMap::new(),
        nodes: BTreeMap::new(),
        ca,
    };
    for mut node in bound {
        for &(peer, addr) in &raft_addrs {
            node.set_peer(peer, addr);
        }
        let config = node.config();
        let node = node
            .start()
            .await
            .map_err(|e| format!("{} did not start: {e}", config.id))?;
        println!(
            "   {}: raft {} clients {} metrics http://{}/metrics",
            config.id,
            node.raft_addr(),
            node.client_addr(),
            node.metrics_addr()
                .map_or_else(String::new, |a| a.to_string())
        );
        cluster.configs.insert(config.id, config);
        cluster.nodes.insert(node.id(), node);
    }

    // Shared by the scenario, which kills and restarts nodes, and the progress line; the
    // demo runs on one thread and never holds a borrow across an await.
    let cluster = RefCell::new(cluster);
    let started = Instant::now();
    let first = wait_for(|| cluster.borrow().leader())
        .await
        .ok_or("no leader was elected")?;
    println!(
        "\n== {} elected leader for term {} after {}",
        first.id,
        first.term.0,
        secs(started.elapsed())
    );

    let client = KvClient::new(client_addrs.clone(), ClientConfig::default())
        .map_err(|e| format!("client: {e}"))?;
    let progress = Progress::default();
    println!(
        "\n== workload: {WORKERS} clients, {} keys, 1 get per {} puts; progress every second",
        WORKERS * KEYS_PER_WORKER,
        GET_EVERY - 1
    );
    let workload_started = Instant::now();
    let workers = futures::future::join_all((0..WORKERS).map(|w| worker(w, &client, &progress)));
    let reporter = report_progress(&progress, &cluster, workload_started);
    let scenario = async {
        let result = scenario(&cluster, &progress, &mut failed).await;
        progress.stop.store(true, Ordering::Release);
        result
    };
    let (reports, (), scenario_result) = futures::join!(workers, reporter, scenario);
    let workload_time = workload_started.elapsed();
    scenario_result?;

    // Statistics.
    let total_ops = progress.ops.load(Ordering::Acquire);
    let mut expected: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut failed_ops = 0;
    let mut stale_reads = Vec::new();
    for report in reports {
        expected.extend(report.expected);
        puts.extend(report.put_latencies);
        gets.extend(report.get_latencies);
        failed_ops += report.failed_ops;
        stale_reads.extend(report.stale_reads);
    }

    // Everyone converges once the writes stop.
    let cluster = cluster.into_inner();
    let converged = wait_for(|| {
        let statuses: Vec<NodeStatus> = cluster.nodes.values().map(KvNode::status).collect();
        let first = statuses.first()?.last_applied;
        let leader = statuses.iter().find(|s| s.role == Role::Leader)?;
        (statuses.iter().all(|s| s.last_applied == first) && leader.commit_index == first)
            .then_some(first)
    })
    .await;
    let running: Vec<String> = cluster.nodes.keys().map(ToString::to_string).collect();
    match converged {
        Some(index) => println!(
            "\n== the nodes {} all applied index {}",
            running.join(", "),
            index.0
        ),
        None => failed.push("the nodes did not converge on one applied index".to_owned()),
    }

    // What an operator's scraper sees: the leader's metrics endpoint. Waited for, as the
    // leadership may be changing hands on a loaded machine; a scrape that finds the node
    // no longer leading asks the next leader.
    let mut last_error = None;
    let leader_metrics = wait_for(|| {
        let leader = cluster.leader()?;
        let addr = cluster.nodes.get(&leader.id)?.metrics_addr()?;
        match scrape(addr) {
            Ok(body) if body.contains("role=\"leader\"} 1") => Some(Ok(body)),
            Ok(_) => None,
            Err(error) => {
                last_error = Some(error);
                None
            }
        }
    })
    .await
    .or_else(|| last_error.map(Err));
    match leader_metrics {
        Some(Ok(body)) => {
            println!("== the leader's metrics (curl http://ADDR/metrics), a few of them:");
            for line in body.lines().filter(|line| {
                (line.starts_with("raft_role") && line.ends_with(" 1"))
                    || [
                        "raft_term{",
                        "raft_commit_index{",
                        "raft_leader_changes_total{",
                        "raft_proposals_total{",
                        "raft_follower_lag_entries{",
                        "kv_proposal_latency_seconds_count{",
                    ]
                    .iter()
                    .any(|name| line.starts_with(name))
            }) {
                println!("   {line}");
            }
            if !body.contains("role=\"leader\"} 1") {
                failed.push("the leader's metrics do not say it leads".to_owned());
            }
        }
        Some(Err(error)) => failed.push(format!("the leader's metrics endpoint failed: {error}")),
        None => failed.push("no leader with a metrics endpoint".to_owned()),
    }

    // The configuration: the running nodes are the voters, and no change is under way.
    match client.members().await {
        Ok(members) => {
            let voters: Vec<NodeId> = members.committed.voters.iter().copied().collect();
            let running: Vec<NodeId> = cluster.nodes.keys().copied().collect();
            println!(
                "== the configuration (from the leader {}): voters {}{}",
                members.node,
                list(&members.committed.voters),
                if members.is_settled() {
                    ", committed"
                } else {
                    ", NOT settled"
                }
            );
            if voters != running || !members.is_settled() || !members.committed.learners.is_empty()
            {
                failed.push(format!(
                    "the configuration is not the running nodes {running:?}: {members:?}"
                ));
            }
        }
        Err(e) => failed.push(format!("cannot read the configuration: {e}")),
    }

    // Verification: every acknowledged write, through the leader and on every node.
    let mut mismatches = Vec::new();
    let mut uncertain = 0;
    for (key, (value, maybe_newer)) in &expected {
        if *maybe_newer {
            uncertain += 1;
            continue;
        }
        match client.get(key.as_str()).await {
            Ok(read) if read.as_deref() == value.as_deref() => {}
            Ok(read) => mismatches.push(format!(
                "{key}: read {read:?} through the leader, expected {value:?}"
            )),
            Err(e) => mismatches.push(format!("{key}: read failed: {e}")),
        }
        for node in cluster.nodes.values() {
            let local = node.local().get(key).await;
            if local != *value {
                mismatches.push(format!(
                    "{key}: {} holds {local:?}, expected {value:?}",
                    node.id()
                ));
            }
        }
    }
    println!(
        "== verified {} keys through the leader and on each node's state{}: {}",
        expected.len() - uncertain,
        if uncertain > 0 {
            format!(" ({uncertain} with a failed last write skipped)")
        } else {
            String::new()
        },
        if mismatches.is_empty() {
            "every acknowledged write is there"
        } else {
            "MISMATCHES"
        }
    );
    for mismatch in mismatches.iter().take(10) {
        println!("   {mismatch}");
    }
    if !mismatches.is_empty() {
        failed.push(format!(
            "{} acknowledged writes not found as written",
            mismatches.len()
        ));
    }
    if !stale_reads.is_empty() {
        for stale in stale_reads.iter().take(10) {
            println!("   stale read: {stale}");
        }
        failed.push(format!(
            "{} reads did not return the last acknowledged write",
            stale_reads.len()
        ));
    }
    if failed_ops > 0 {
        failed.push(format!(
            "{failed_ops} operations failed (no leader within the client's deadline)"
        ));
    }

    println!("\n== throughput and latency");
    let rate = total_ops as f64 / workload_time.as_secs_f64();
    println!(
        "   {total_ops} operations in {} by {WORKERS} clients: {rate:.0} ops/s ({} puts, {} gets, {failed_ops} failed)",
        secs(workload_time),
        puts.len(),
        gets.len()
    );
    println!("   latency       p50       p90       p99       max");
    for (name, latencies) in [("put", &mut puts), ("get", &mut gets)] {
        latencies.sort();
        println!(
            "   {name:<7} {:>9} {:>9} {:>9} {:>9}",
            millis(percentile(latencies, 50.0)),
            millis(percentile(latencies, 90.0)),
            millis(percentile(latencies, 99.0)),
            millis(latencies.last().copied().unwrap_or_default())
        );
    }
    println!(
        "   (the maximum includes operations caught by the leader's shutdown: they wait for the next election)"
    );
    for node in cluster.nodes.values() {
        let stats = node.snapshot_stats();
        let status = node.status();
        println!(
            "   {}: {} snapshots taken, {} restored; log holds {} entries after snapshot {}",
            node.id(),
            status.counters.snapshots_taken,
            stats.restored,
            status.log_entries,
            status.snapshot.index.0
        );
    }

    client.shutdown();
    for node in cluster.nodes.values() {
        node.shutdown().await;
    }
    Ok(failed)
}

/// The phases: steady state, the leader killed, the leader restarted.
async fn scenario(
    cluster: &RefCell<Cluster>,
    progress: &Progress,
    failed: &mut Vec<String>,
) -> Result<(), String> {
    smol::Timer::after(STEADY).await;

    let old = cluster
        .borrow()
        .leader()
        .ok_or("no leader before the kill")?;
    let ops_before = progress.ops.load(Ordering::Acquire);
    println!(
        "\n== killing the leader {} (term {}, applied {})",
        old.id, old.term.0, old.last_applied.0
    );
    let victim = cluster
        .borrow_mut()
        .nodes
        .remove(&old.id)
        .ok_or("the leader is not running")?;
    victim.shutdown().await;
    let killed = Instant::now();
    // Nothing else may take its ports before it restarts on them.
    let held = PortHolder::hold(&[victim.raft_addr(), victim.client_addr()])
        .map_err(|e| format!("cannot hold the stopped leader's ports: {e}"))?;
    let next = wait_for(|| cluster.borrow().leader().filter(|s| s.term > old.term))
        .await
        .ok_or("no new leader after the kill")?;
    println!(
        "== {} elected leader for term {}, {} after {} stopped",
        next.id,
        next.term.0,
        secs(killed.elapsed()),
        old.id
    );
    smol::Timer::after(LEADER_DOWN.saturating_sub(killed.elapsed())).await;
    let ops_down = progress.ops.load(Ordering::Acquire) - ops_before;
    println!(
        "== service continued: {ops_down} operations completed in the {} with {} down",
        secs(killed.elapsed()),
        old.id
    );
    if ops_down == 0 {
        failed.push("no operation completed while the old leader was down".to_owned());
    }

    let config = cluster
        .borrow()
        .configs
        .get(&old.id)
        .cloned()
        .ok_or("no configuration")?;
    held.release().await;
    let node = KvNode::start(config)
        .await
        .map_err(|e| format!("{} did not restart: {e}", old.id))?;
    let restarted = Instant::now();
    let at_start = node.status();
    let restored_at_start = node.snapshot_stats().restored;
    cluster.borrow_mut().nodes.insert(old.id, node);
    let target = cluster
        .borrow()
        .leader()
        .map(|leader| leader.commit_index)
        .unwrap_or(LogIndex::ZERO);
    println!(
        "\n== restarted {} from its files on the same ports: snapshot at {}, log up to {}; \
         the leader has committed {}",
        old.id, at_start.snapshot.index.0, at_start.last_log.index.0, target.0
    );
    let caught_up = wait_for(|| {
        let cluster = cluster.borrow();
        let status = cluster.status(old.id)?;
        let installed = cluster.nodes.get(&old.id)?.snapshot_stats().restored > restored_at_start;
        (status.last_applied >= target).then_some((status, installed))
    })
    .await;
    match caught_up {
        Some((status, installed)) => println!(
            "== {} caught up: applied {} (>= {}) {} after its restart, as a {} of term {}{}",
            old.id,
            status.last_applied.0,
            target.0,
            secs(restarted.elapsed()),
            status.role,
            status.term.0,
            if installed {
                ",\n   from a snapshot the leader sent (its log no longer reached that far back)"
            } else {
                ", from the leader's log"
            }
        ),
        None => failed.push(format!("{} did not catch up", old.id)),
    }
    smol::Timer::after(AFTER_RESTART).await;
    replace_a_node(cluster, progress, failed).await?;
    println!("\n== stopping the workload");
    Ok(())
}

/// A fourth node joins, becomes a voter, and the leader leaves, with the workload on.
async fn replace_a_node(
    cluster: &RefCell<Cluster>,
    progress: &Progress,
    failed: &mut Vec<String>,
) -> Result<(), String> {
    let new = NodeId(4);
    let (client_addrs, data_dir) = {
        let cluster = cluster.borrow();
        let client_addrs: BTreeMap<NodeId, SocketAddr> = cluster
            .configs
            .iter()
            .map(|(&id, config)| (id, config.client_listen))
            .collect();
        let data_dir = cluster
            .configs
            .values()
            .next()
            .and_then(|config| config.data_dir.as_ref()?.parent())
            .map(|dir| dir.join(format!("node-{}", new.0)));
        (client_addrs, data_dir)
    };
    let ops_before = progress.ops.load(Ordering::Acquire);
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = NodeConfig::new(new, any, any, []);
    config.first_start = FirstStart::Join;
    config.data_dir = data_dir;
    config.snapshot_entries = SNAPSHOT_ENTRIES;
    // Like every node, it serves metrics: it may well be the leader at the end.
    config.metrics_listen = Some(any);
    secure(&mut config, cluster.borrow().ca.as_ref())?;
    let node = KvNode::start(config.clone())
        .await
        .map_err(|e| format!("{new} did not start: {e}"))?;
    let (raft_addr, client_addr) = (node.raft_addr(), node.client_addr());
    println!("\n== {new} starts to join: raft {raft_addr} clients {client_addr}, empty log");
    {
        let mut cluster = cluster.borrow_mut();
        cluster.configs.insert(new, node_config_of(&node, config));
        cluster.nodes.insert(new, node);
    }

    // The operator's client: told of the first three nodes only, like the workload's.
    let admin =
        KvClient::new(client_addrs, ClientConfig::default()).map_err(|e| format!("client: {e}"))?;
    let started = Instant::now();
    let members = admin
        .add_node(new, raft_addr, Some(client_addr), false)
        .await
        .map_err(|e| format!("adding {new}: {e}"))?;
    let status = cluster.borrow().status(new).ok_or("the new node is gone")?;
    println!(
        "== {new} added as a voter {} after asking (a learner until it caught up: it has applied {}{}); voters now {}",
        secs(started.elapsed()),
        status.last_applied.0,
        if cluster.borrow().nodes[&new].snapshot_stats().restored > 0 {
            ", from a snapshot the leader sent"
        } else {
            ""
        },
        list(&members.committed.voters)
    );
    if !members.committed.voters.contains(&new) {
        failed.push(format!("{new} is not a voter after add_node"));
    }

    let leader = cluster
        .borrow()
        .leader()
        .ok_or("no leader before the removal")?;
    let started = Instant::now();
    let members = admin
        .remove_node(leader.id)
        .await
        .map_err(|e| format!("removing {}: {e}", leader.id))?;
    println!(
        "== {} (the leader) removed from the cluster {} after asking; voters now {}",
        leader.id,
        secs(started.elapsed()),
        list(&members.committed.voters)
    );
    if members.committed.contains(leader.id) {
        failed.push(format!("{} is still a member after remove_node", leader.id));
    }
    let removed = cluster
        .borrow_mut()
        .nodes
        .remove(&leader.id)
        .ok_or("the removed leader is not running")?;
    removed.shutdown().await;
    cluster.borrow_mut().configs.remove(&leader.id);
    let next = wait_for(|| cluster.borrow().leader().filter(|s| s.term > leader.term))
        .await
        .ok_or("no leader after the removal")?;
    println!(
        "== {} leads in term {}; {} stopped",
        next.id, next.term.0, leader.id
    );
    admin.shutdown();

    let after_election = progress.ops.load(Ordering::Acquire);
    smol::Timer::after(AFTER_REPLACEMENT).await;
    let now = progress.ops.load(Ordering::Acquire);
    println!(
        "== service continued: {} operations completed while the node was replaced, {} in the {} since",
        after_election - ops_before,
        now - after_election,
        secs(AFTER_REPLACEMENT)
    );
    if now == after_election {
        failed.push("no operation completed after a node was replaced".to_owned());
    }
    Ok(())
}

/// The configuration a running node has, with the addresses it is bound to.
fn node_config_of(node: &KvNode, mut config: NodeConfig) -> NodeConfig {
    config.listen = node.raft_addr();
    config.client_listen = node.client_addr();
    config
}

fn list(ids: &std::collections::BTreeSet<NodeId>) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One client: puts and gets on its own keys until told to stop.
async fn worker(w: usize, client: &KvClient, progress: &Progress) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut n: u64 = 0;
    // A small LCG picks keys: deterministic per worker, no dependency needed.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64);
    while !progress.stop.load(Ordering::Acquire) {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let key = format!("w{w:02}-k{:02}", (seed >> 33) as usize % KEYS_PER_WORKER);
        n += 1;
        let started = Instant::now();
        if n.is_multiple_of(GET_EVERY) {
            match client.get(key.as_str()).await {
                Ok(value) => {
                    report.get_latencies.push(started.elapsed());
                    if let Some((expected, false)) = report.expected.get(&key)
                        && value.as_deref() != expected.as_deref()
                    {
                        report
                            .stale_reads
                            .push(format!("{key}: read {value:?}, expected {expected:?}"));
                    }
                }
                Err(_) => report.failed_ops += 1,
            }
        } else {
            let value = format!("v{w}-{n}");
            match client.put(key.as_str(), value.as_str()).await {
                Ok(_) => {
                    report.put_latencies.push(started.elapsed());
                    report.expected.insert(key, (Some(value), false));
                }
                Err(_) => {
                    report.failed_ops += 1;
                    report.expected.entry(key).or_insert((None, true)).1 = true;
                }
            }
        }
        progress.ops.fetch_add(1, Ordering::AcqRel);
    }
    report
}

/// Prints a progress line every second until the workload stops.
async fn report_progress(progress: &Progress, cluster: &RefCell<Cluster>, started: Instant) {
    let mut last_ops = 0;
    let mut last = Instant::now();
    let mut tick = 1;
    while !progress.stop.load(Ordering::Acquire) {
        let next = started + Duration::from_secs(tick);
        while Instant::now() < next && !progress.stop.load(Ordering::Acquire) {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        tick += 1;
        let ops = progress.ops.load(Ordering::Acquire);
        let rate = (ops - last_ops) as f64 / last.elapsed().as_secs_f64();
        last_ops = ops;
        last = Instant::now();
        let leader = match cluster.borrow().leader() {
            Some(leader) => format!("leader {} (term {})", leader.id, leader.term.0),
            None => "no leader".to_owned(),
        };
        println!(
            "   [{:>5.1}s] {ops:>7} ops done, {rate:>6.0} ops/s, {leader}",
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }
}

/// Polls `condition` every 10 ms until it yields a value, for at most [`PATIENCE`].
async fn wait_for<T>(mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// `GET /metrics` from `addr`, over plain HTTP/1.0; the body.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no HTTP answer".to_owned())?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.to_owned())
}
