//! Read throughput and latency: reads through the log, ReadIndex and lease reads, beside
//! log writes from the same run, on the KV service's state machine (`SnapshottingKv` in
//! client sessions). Every operation checks what it read or replaced.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_examples::{
    DEFAULT_MAX_SESSIONS, DEFAULT_SNAPSHOT_ENTRIES, KvRaft, KvSessionCommand, KvView,
    SnapshottingKv,
};
use raft_file_store::FileStorage;
use raft_impl::Config;
use raft_impl::session::{ClientId, SessionCommand, SessionResponse};
use raft_mem::{KvCommand, KvResponse, MemStorage};
use raft_net_smol::{SmolRuntime, TcpConfig};
use raft_traits::Runtime;

use crate::cluster::{ScratchDir, Wiring, members, start_node, wait_for_leader};
use crate::measure::{Goal, Latency, Progress, cpu_time, peak_rss_mib};
use crate::{BenchError, Row};

/// How many keys the reads and writes go over.
const KEYS: u64 = 1000;

/// How long a read may wait for a new leader to become ready.
const READ_PATIENCE: Duration = Duration::from_secs(2);

/// How the nodes of a read run talk, and where they keep their log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Network {
    /// Direct calls in this process; memory storage.
    InProcess,
    /// Loopback TCP; memory storage.
    Tcp,
    /// Loopback TCP; the file store, every append fsynced.
    Durable,
}

/// What each client of a run does, over and over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A `Put` through the log, in the client's session.
    LogWrite,
    /// A `Get` through the log, in the client's session.
    LogRead,
    /// `KvView::read`: a read barrier, then the state (ReadIndex, or a lease when the
    /// cluster has lease reads on).
    BarrierRead,
}

fn scenario(network: Network, op: Op, lease: bool) -> &'static str {
    match (network, op, lease) {
        (Network::InProcess, Op::LogWrite, _) => "in-process log write",
        (Network::InProcess, Op::LogRead, _) => "in-process log read",
        (Network::InProcess, Op::BarrierRead, false) => "in-process read-index",
        (Network::InProcess, Op::BarrierRead, true) => "in-process lease read",
        (Network::Tcp, Op::LogWrite, _) => "tcp log write",
        (Network::Tcp, Op::LogRead, _) => "tcp log read",
        (Network::Tcp, Op::BarrierRead, false) => "tcp read-index",
        (Network::Tcp, Op::BarrierRead, true) => "tcp lease read",
        (Network::Durable, Op::LogWrite, _) => "durable log write",
        (Network::Durable, Op::LogRead, _) => "durable log read",
        (Network::Durable, Op::BarrierRead, false) => "durable read-index",
        (Network::Durable, Op::BarrierRead, true) => "durable lease read",
    }
}

fn key(n: u64) -> Arc<str> {
    format!("key-{:04}", n % KEYS).into()
}

/// The value every key holds: written once before the runs, and written again,
/// unchanged, by the write runs, so that every read knows what it must see.
fn value_of(key: &str) -> String {
    format!("value-of-{key}")
}

/// A three-node KV cluster on `network`, with one client session per client.
struct ReadCluster {
    runtime: SmolRuntime,
    wiring: Wiring<KvSessionCommand>,
    nodes: Vec<KvRaft>,
    views: Vec<KvView>,
    sessions: Vec<ClientId>,
    _dirs: Vec<ScratchDir>,
}

impl ReadCluster {
    async fn start(
        runtime: &SmolRuntime,
        network: Network,
        config: &Config,
        clients: usize,
    ) -> Result<ReadCluster, BenchError> {
        let wiring = match network {
            Network::InProcess => Wiring::local(),
            Network::Tcp | Network::Durable => Wiring::tcp(TcpConfig::default())?,
        };
        let mut nodes = Vec::new();
        let mut views = Vec::new();
        let mut dirs = Vec::new();
        // The KV service's snapshot setting, taken by Raft's snapshot policy.
        let mut config = config.clone();
        config.snapshot_after_entries = Some(DEFAULT_SNAPSHOT_ENTRIES);
        for id in members() {
            let machine = SnapshottingKv::new(DEFAULT_MAX_SESSIONS);
            views.push(machine.view());
            let raft = if network == Network::Durable {
                let dir = ScratchDir::new(&format!("reads-node{}", id.0))?;
                let storage = FileStorage::open(&dir.0)
                    .map_err(|e| BenchError(format!("cannot open storage: {e}")))?;
                dirs.push(dir);
                start_node(runtime, &wiring, id, config.clone(), storage, machine).await?
            } else {
                let storage = MemStorage::new();
                start_node(runtime, &wiring, id, config.clone(), storage, machine).await?
            };
            nodes.push(raft);
        }
        let mut cluster = ReadCluster {
            runtime: runtime.clone(),
            wiring,
            nodes,
            views,
            sessions: Vec::new(),
            _dirs: dirs,
        };
        let leader = cluster.leader().await?;
        for _ in 0..clients {
            match leader.propose(SessionCommand::Register).await {
                Ok(Ok(SessionResponse::Registered(client))) => cluster.sessions.push(client),
                other => return Err(BenchError(format!("cannot register: {other:?}"))),
            }
        }
        // Every key, once, from the first session.
        let first = cluster.sessions[0];
        for (sequence, n) in (1..).zip(0..KEYS) {
            let key = key(n);
            let put = KvCommand::Put {
                value: value_of(&key).into(),
                key,
            };
            let request = SessionCommand::Request {
                client: first,
                sequence,
                command: put,
            };
            match leader.propose(request).await {
                Ok(Ok(SessionResponse::Applied(KvResponse::Replaced(None)))) => {}
                other => return Err(BenchError(format!("cannot fill: {other:?}"))),
            }
        }
        Ok(cluster)
    }

    async fn leader(&self) -> Result<KvRaft, BenchError> {
        wait_for_leader(&self.runtime, &self.nodes).await
    }

    async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
        self.wiring.shutdown().await;
    }
}

/// One client of a run: its session and the number its next command gets.
struct Client {
    raft: KvRaft,
    view: KvView,
    session: ClientId,
    sequence: u64,
}

impl Client {
    /// Runs `op` on key `n` and checks what it returned.
    async fn run(&mut self, op: Op, n: u64) -> Result<(), BenchError> {
        let key = key(n);
        let expected = value_of(&key);
        let command = match op {
            Op::BarrierRead => {
                let read = self
                    .view
                    .read(&self.raft, &key, READ_PATIENCE)
                    .await
                    .map_err(|e| BenchError(format!("a read of {key} failed: {e}")))?;
                return match read.value {
                    Some(value) if *value == *expected => Ok(()),
                    other => Err(BenchError(format!(
                        "a read of {key} at {} returned {other:?}, not {expected:?}",
                        read.read_index
                    ))),
                };
            }
            Op::LogWrite => KvCommand::Put {
                key: Arc::clone(&key),
                value: expected.as_str().into(),
            },
            Op::LogRead => KvCommand::Get {
                key: Arc::clone(&key),
            },
        };
        self.sequence += 1;
        let request = SessionCommand::Request {
            client: self.session,
            sequence: self.sequence,
            command,
        };
        let response = self
            .raft
            .propose(request)
            .await
            .map_err(|e| BenchError(format!("a command on {key} failed: {e}")))?;
        match response {
            // A write replaced the value it wrote itself; a read saw it.
            Ok(SessionResponse::Applied(
                KvResponse::Replaced(Some(value)) | KvResponse::Value(Some(value)),
            )) if *value == *expected => Ok(()),
            other => Err(BenchError(format!(
                "{op:?} of {key} answered {other:?}, expected {expected:?}"
            ))),
        }
    }
}

/// `clients` closed-loop clients on the leader run `op` until `total` operations are
/// done; returns per-operation latencies in nanoseconds and how long it took.
async fn closed_loop(
    cluster: &ReadCluster,
    op: Op,
    clients: usize,
    total: u64,
    sequences: &mut [u64],
    done: Arc<AtomicU64>,
) -> Result<(Vec<u64>, Duration), BenchError> {
    let leader = cluster.leader().await?;
    let at = cluster
        .nodes
        .iter()
        .position(|n| n.id() == leader.id())
        .unwrap_or(0);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let mut client = Client {
                raft: leader.clone(),
                view: cluster.views[at].clone(),
                session: cluster.sessions[i],
                sequence: sequences[i],
            };
            let (next, done) = (Arc::clone(&next), Arc::clone(&done));
            cluster.runtime.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return Ok((latencies, client.sequence));
                    }
                    let sent = Instant::now();
                    client.run(op, n).await?;
                    latencies.push(crate::measure::nanos(sent.elapsed()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total as usize);
    for (i, task) in tasks.into_iter().enumerate() {
        let result: Result<(Vec<u64>, u64), BenchError> = task
            .await
            .map_err(|_| BenchError("a client task died".into()))?;
        let (mine, sequence) = result?;
        latencies.extend(mine);
        sequences[i] = sequence;
    }
    Ok((latencies, started.elapsed()))
}

/// Runs `op` with `clients` clients: a warm-up, then `total` measured operations; checks
/// that the leader's log grew by one entry per log operation and not at all for reads
/// through a barrier.
async fn measure(
    cluster: &ReadCluster,
    network: Network,
    op: Op,
    lease: bool,
    clients: usize,
    total: u64,
    sequences: &mut [u64],
) -> Result<Row, BenchError> {
    let name = scenario(network, op, lease);
    let warmup = (total / 10).clamp(100, 20_000);
    closed_loop(
        cluster,
        op,
        clients,
        warmup,
        sequences,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;

    let leader = cluster.leader().await?;
    let before = leader.status();
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        format!("{name} c={clients}"),
        Arc::clone(&done),
        Goal::Count(total),
    );
    let cpu_before = cpu_time();
    let (latencies, elapsed) = closed_loop(cluster, op, clients, total, sequences, done).await?;
    let cpu = cpu_time() - cpu_before;
    drop(progress);
    let after = leader.status();
    if after.term != before.term {
        return Err(BenchError(format!(
            "{name}: the leader changed during the run ({} -> {})",
            before.term, after.term
        )));
    }
    let grew = after.last_log.index.0 - before.last_log.index.0;
    let (expected, operation) = match op {
        Op::LogWrite => (total, "write"),
        Op::LogRead => (total, "read"),
        Op::BarrierRead => (0, "read"),
    };
    if grew != expected {
        return Err(BenchError(format!(
            "{name}: the log grew by {grew} entries during {total} operations; expected {expected}"
        )));
    }
    Ok(Row {
        scenario: name,
        operation,
        clients,
        writes: total,
        writes_per_sec: total as f64 / elapsed.as_secs_f64(),
        latency: Latency::of(latencies),
        cpu_us_per_write: cpu.as_secs_f64() * 1e6 / total as f64,
        peak_rss_mib: peak_rss_mib(),
        note: String::new(),
    })
}

/// Log writes, log reads and ReadIndex reads on one cluster, then lease reads on a
/// cluster with lease reads on, at each client count. With durable storage the lease
/// run is left out: a read without the log touches no storage, so it would repeat the
/// TCP figures.
pub(crate) async fn reads(
    runtime: &SmolRuntime,
    network: Network,
    base: &Config,
    clients: &[usize],
    total_for: impl Fn(usize) -> u64,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let most = clients.iter().copied().max().unwrap_or(1).max(1);
    let leases: &[bool] = if network == Network::Durable {
        &[false]
    } else {
        &[false, true]
    };
    for &lease in leases {
        let mut config = base.clone();
        config.lease_reads = lease;
        let cluster = ReadCluster::start(runtime, network, &config, most).await?;
        // The first session's numbers went to filling the keys.
        let mut sequences = vec![0; most];
        sequences[0] = KEYS;
        // The first row at a client count came out slower now and then on a loaded
        // machine; log reads take that place, so that the write row the reads are
        // compared with is not the one put at a disadvantage.
        let ops: &[Op] = if lease {
            &[Op::BarrierRead]
        } else {
            &[Op::LogRead, Op::LogWrite, Op::BarrierRead]
        };
        for &c in clients {
            for &op in ops {
                let row = measure(
                    &cluster,
                    network,
                    op,
                    lease,
                    c,
                    total_for(c),
                    &mut sequences,
                )
                .await?;
                rows.push(row);
            }
        }
        cluster.shutdown().await;
    }
    Ok(())
}
