//! The benchmark scenarios. Each verifies its result before it reports a figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_impl::{Config, Counters, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemStorage};
use raft_net_smol::{SmolRuntime, TcpConfig};
use raft_traits::{
    Bytes, LogId, LogIndex, Runtime, Snapshot, SnapshotMeta, StateMachine, StateMachineError,
};

use crate::cluster::{
    CounterCluster, Durability, Wiring, closed_loop, members, start_node, stop_node,
    wait_for_leader,
};
use crate::measure::{Goal, Latency, Progress, cpu_time, peak_rss_mib, rss_mib};
use crate::{BenchError, Row};

/// A closed-loop throughput run on a fresh cluster: `writes` measured after a warm-up.
pub(crate) async fn throughput<Rt: Runtime>(
    config: &Config,
    scenario: &'static str,
    runtime: &Rt,
    wiring: Wiring<()>,
    durability: Durability,
    clients: usize,
    writes: u64,
) -> Result<Row, BenchError> {
    let cluster = CounterCluster::start(runtime, wiring, durability, config).await?;
    let leader = cluster.leader().await?;
    let warmup = (writes / 10).clamp(1000, 100_000);
    closed_loop(
        runtime,
        &leader,
        clients,
        warmup,
        |_| (),
        Arc::new(AtomicU64::new(0)),
    )
    .await?;

    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("{scenario} c={clients}"),
        Arc::clone(&done),
        Goal::Count(writes),
    );
    let sent_before = leader.status().counters;
    let cpu_before = cpu_time();
    let run = closed_loop(runtime, &leader, clients, writes, |_| (), done).await?;
    let cpu = cpu_time() - cpu_before;
    let sent = leader.status().counters;
    drop(progress);

    cluster.verify(warmup + writes).await?;
    let row = Row {
        scenario,
        operation: "write",
        clients,
        writes,
        writes_per_sec: writes as f64 / run.elapsed.as_secs_f64(),
        latency: Latency::of(run.latencies),
        cpu_us_per_write: cpu.as_secs_f64() * 1e6 / writes as f64,
        peak_rss_mib: peak_rss_mib(),
        note: batching_note(sent_before, sent),
    };
    cluster.shutdown().await;
    Ok(row)
}

/// How well the leader batched during a run: the entries per AppendEntries it sent,
/// from its counters before and after.
fn batching_note(before: Counters, after: Counters) -> String {
    let requests = after.append_requests.saturating_sub(before.append_requests);
    let entries = after.entries_sent.saturating_sub(before.entries_sent);
    if requests == 0 {
        return String::new();
    }
    format!(
        "{:.1} entries per AppendEntries ({requests} sent by the leader)",
        entries as f64 / requests as f64
    )
}

/// Kills the leader `rounds` times; each time measures until a new leader has committed
/// a write, then restarts the old one from its storage.
pub(crate) async fn election(runtime: &SmolRuntime, rounds: usize) -> Result<Row, BenchError> {
    let config = Config::default();
    let wiring = Wiring::local();
    let mut storages: Vec<MemStorage<()>> = members().iter().map(|_| MemStorage::new()).collect();
    let mut nodes = Vec::new();
    for (i, id) in members().into_iter().enumerate() {
        nodes.push(
            start_node(
                runtime,
                &wiring,
                id,
                config.clone(),
                storages[i].clone(),
                crate::cluster::Counter::default(),
            )
            .await?,
        );
    }
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("election", Arc::clone(&done), Goal::Count(rounds as u64));
    let mut failovers = Vec::new();
    for _ in 0..rounds {
        let leader = wait_for_leader(runtime, &nodes).await?;
        // Let it settle as leader before it is killed.
        leader
            .propose(())
            .await
            .map_err(|e| BenchError(format!("write failed: {e}")))?;
        let victim = (leader.id().0 - 1) as usize;
        let killed = Instant::now();
        stop_node(&wiring, leader.id(), &leader).await;
        let survivors: Vec<Raft<(), ()>> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n.clone())
            .collect();
        'serving: loop {
            for node in &survivors {
                let attempt =
                    raft_traits::timeout(runtime, Duration::from_millis(50), node.propose(()))
                        .await;
                if let Ok(Ok(())) = attempt {
                    break 'serving;
                }
            }
            runtime.sleep(Duration::from_millis(1)).await;
            if killed.elapsed() > Duration::from_secs(10) {
                return Err(BenchError(
                    "no new leader served a write within 10 s".into(),
                ));
            }
        }
        failovers.push(crate::measure::nanos(killed.elapsed()));
        // Back as a follower, from what it had stored.
        storages[victim] = storages[victim].copy();
        nodes[victim] = start_node(
            runtime,
            &wiring,
            members()[victim],
            config.clone(),
            storages[victim].clone(),
            crate::cluster::Counter::default(),
        )
        .await?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    drop(progress);
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(Row {
        scenario: "election",
        operation: "failover",
        clients: 0,
        writes: rounds as u64,
        writes_per_sec: 0.0,
        latency: Latency::of(failovers),
        cpu_us_per_write: 0.0,
        peak_rss_mib: peak_rss_mib(),
        note: format!(
            "failover to a serving leader; election timeout {:?}..{:?}, heartbeat {:?}",
            config.election_timeout_min, config.election_timeout_max, config.heartbeat_interval
        ),
    })
}

/// A state machine holding large blobs; it snapshots itself once it holds `snapshot_at`
/// of them.
#[derive(Default)]
struct Blobs {
    blobs: Vec<Bytes>,
    last: LogId,
    snapshot_at: usize,
    raft: Arc<std::sync::OnceLock<Raft<Bytes, ()>>>,
}

impl StateMachine<Bytes> for Blobs {
    type Response = ();

    async fn apply(&mut self, log_id: LogId, blob: Bytes) {
        self.blobs.push(blob);
        self.last = log_id;
        if self.blobs.len() == self.snapshot_at
            && let Ok(snapshot) = self.snapshot().await
            && let Some(raft) = self.raft.get()
        {
            let _ = raft.snapshot(snapshot.meta.last_included.index, snapshot.data);
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let mut data = Vec::with_capacity(self.blobs.iter().map(Bytes::len).sum());
        for blob in &self.blobs {
            data.extend_from_slice(blob);
        }
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last,
                membership: Default::default(),
            },
            data: Bytes::from(data),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.blobs = vec![snapshot.data];
        self.last = snapshot.meta.last_included;
        Ok(())
    }
}

/// Brings a wiped follower back with a snapshot of `megabytes` MiB over loopback TCP.
pub(crate) async fn snapshot_install(
    runtime: &SmolRuntime,
    megabytes: usize,
) -> Result<Row, BenchError> {
    let config = Config::default();
    let tcp = TcpConfig {
        request_timeout: Duration::from_secs(120),
        ..TcpConfig::default()
    };
    let wiring: Wiring<Bytes> = Wiring::tcp(tcp)?;
    let blob = Bytes::from(vec![0x5a; 1 << 20]);
    let mut nodes = Vec::new();
    let mut handles = Vec::new();
    for id in members() {
        let handle = Arc::new(std::sync::OnceLock::new());
        let machine = Blobs {
            snapshot_at: megabytes,
            raft: Arc::clone(&handle),
            ..Blobs::default()
        };
        let raft = start_node(
            runtime,
            &wiring,
            id,
            config.clone(),
            MemStorage::new(),
            machine,
        )
        .await?;
        let _ = handle.set(raft.clone());
        nodes.push(raft);
        handles.push(handle);
    }
    let leader = wait_for_leader(runtime, &nodes).await?;
    let done = Arc::new(AtomicU64::new(0));
    {
        let _progress = Progress::start(
            "snapshot: filling",
            Arc::clone(&done),
            Goal::Count(megabytes as u64),
        );
        for _ in 0..megabytes {
            leader
                .propose(blob.clone())
                .await
                .map_err(|e| BenchError(format!("write failed: {e}")))?;
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Wait until the leader has compacted its log into the snapshot.
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader.status().snapshot.index == LogIndex::ZERO {
        if Instant::now() > deadline {
            return Err(BenchError("the leader never took its snapshot".into()));
        }
        runtime.sleep(Duration::from_millis(10)).await;
    }
    let target = leader.status().snapshot.index;

    // Wipe a follower: stop it and bring it back with empty storage.
    let victim = nodes
        .iter()
        .position(|n| n.id() != leader.id())
        .unwrap_or(0);
    stop_node(&wiring, nodes[victim].id(), &nodes[victim]).await;
    let handle = Arc::new(std::sync::OnceLock::new());
    let machine = Blobs {
        snapshot_at: usize::MAX,
        raft: Arc::clone(&handle),
        ..Blobs::default()
    };
    let started = Instant::now();
    let wiped = start_node(
        runtime,
        &wiring,
        members()[victim],
        config.clone(),
        MemStorage::new(),
        machine,
    )
    .await?;
    let _ = handle.set(wiped.clone());
    while wiped.status().last_applied < target {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(BenchError(format!(
                "the wiped follower did not catch up: {:?}; the leader: {:?}",
                wiped.status(),
                leader.status()
            )));
        }
        runtime.sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let row = Row {
        scenario: "snapshot install",
        operation: "snapshot",
        clients: 0,
        writes: megabytes as u64,
        writes_per_sec: 0.0,
        latency: Latency::of(vec![crate::measure::nanos(took)]),
        cpu_us_per_write: 0.0,
        peak_rss_mib: peak_rss_mib(),
        note: format!(
            "{megabytes} MiB snapshot to a wiped follower over loopback TCP: {:.2} s, {:.0} MB/s",
            took.as_secs_f64(),
            megabytes as f64 * 1.048_576 / took.as_secs_f64()
        ),
    };
    for (i, node) in nodes.iter().enumerate() {
        if i != victim {
            node.shutdown().await;
        }
    }
    wiped.shutdown().await;
    wiring.shutdown().await;
    Ok(row)
}

/// A key-value machine that snapshots itself every `every` commands, and counts the
/// commands its state reflects (the count travels in its snapshots).
struct CompactingKv {
    kv: KvStateMachine,
    every: u64,
    since: u64,
    applied: Arc<AtomicU64>,
    raft: Arc<std::sync::OnceLock<Raft<KvCommand, KvResponse>>>,
}

impl StateMachine<KvCommand> for CompactingKv {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        let response = self.kv.apply(log_id, command).await;
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.since += 1;
        if self.since >= self.every
            && let Ok(snapshot) = self.snapshot().await
            && let Some(raft) = self.raft.get()
        {
            let _ = raft.snapshot(snapshot.meta.last_included.index, snapshot.data);
            self.since = 0;
        }
        response
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let mut snapshot = self.kv.snapshot().await?;
        let mut data = self.applied.load(Ordering::Relaxed).to_le_bytes().to_vec();
        data.extend_from_slice(&snapshot.data);
        snapshot.data = Bytes::from(data);
        Ok(snapshot)
    }

    async fn restore(&mut self, mut snapshot: Snapshot) -> Result<(), StateMachineError> {
        let count: [u8; 8] = snapshot
            .data
            .get(..8)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| StateMachineError::InvalidSnapshot("no command count".into()))?;
        snapshot.data = snapshot.data.slice(8..);
        self.kv.restore(snapshot).await?;
        self.applied
            .store(u64::from_le_bytes(count), Ordering::Relaxed);
        Ok(())
    }
}

/// `writes` key-value writes over 1000 keys with snapshots every 10 000 entries: memory
/// stays bounded.
pub(crate) async fn memory(runtime: &SmolRuntime, writes: u64) -> Result<Row, BenchError> {
    let config = Config::default();
    let wiring: Wiring<KvCommand> = Wiring::local();
    let mut nodes = Vec::new();
    let mut counts = Vec::new();
    for id in members() {
        let handle = Arc::new(std::sync::OnceLock::new());
        let applied = Arc::new(AtomicU64::new(0));
        counts.push(Arc::clone(&applied));
        let machine = CompactingKv {
            kv: KvStateMachine::new(),
            every: 10_000,
            since: 0,
            applied,
            raft: Arc::clone(&handle),
        };
        let raft = start_node(
            runtime,
            &wiring,
            id,
            config.clone(),
            MemStorage::new(),
            machine,
        )
        .await?;
        let _ = handle.set(raft.clone());
        nodes.push(raft);
    }
    let leader = wait_for_leader(runtime, &nodes).await?;
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("memory", Arc::clone(&done), Goal::Count(writes));
    let run = closed_loop(
        runtime,
        &leader,
        64,
        writes,
        |n| KvCommand::Put {
            key: format!("key-{:04}", n % 1000).into(),
            value: format!("value-{n:012}").into(),
        },
        done,
    )
    .await?;
    drop(progress);
    // Verify: every node applied every write exactly once, and a read sees one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let applied: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        if applied.iter().all(|&a| a == writes) {
            break;
        }
        if applied.iter().any(|&a| a > writes) || Instant::now() > deadline {
            return Err(BenchError(format!(
                "nodes applied {applied:?} writes, expected {writes}"
            )));
        }
        runtime.sleep(Duration::from_millis(10)).await;
    }
    let probe = leader
        .propose(KvCommand::Get {
            key: "key-0999".into(),
        })
        .await
        .map_err(|e| BenchError(format!("read failed: {e}")))?;
    let KvResponse::Value(Some(value)) = &probe else {
        return Err(BenchError(format!("key-0999 holds {probe:?}")));
    };
    let written: u64 = value
        .trim_start_matches("value-")
        .parse()
        .unwrap_or(u64::MAX);
    if written >= writes || written % 1000 != 999 {
        return Err(BenchError(format!(
            "key-0999 holds {value}, which no write put there"
        )));
    }
    let log_entries = nodes
        .iter()
        .map(|n| n.status().log_entries)
        .max()
        .unwrap_or(0);
    let rss = rss_mib();
    let row = Row {
        scenario: "memory",
        operation: "write",
        clients: 64,
        writes,
        writes_per_sec: writes as f64 / run.elapsed.as_secs_f64(),
        latency: Latency::of(run.latencies),
        cpu_us_per_write: 0.0,
        peak_rss_mib: peak_rss_mib(),
        note: format!("RSS at the end {rss:.1} MiB; longest in-memory log {log_entries} entries"),
    };
    for node in &nodes {
        node.shutdown().await;
    }
    Ok(row)
}
