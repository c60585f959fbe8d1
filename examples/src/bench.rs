//! The engine of `raft-kv bench`: a load generator for a KV cluster, in the manner of
//! etcd's `benchmark` tool.
//!
//! [`Bench::run`] drives `clients` concurrent clients, each sending one operation at a
//! time, over `conns` connections: `conns` [`KvClient`]s, each with one connection per
//! node (a `KvClient` pipelines every request to a node over one connection), client `i`
//! using connection `i % conns`. It stops after a number of operations or a length of
//! time, and reports throughput, latency percentiles and errors by kind
//! ([`BenchReport`]).
//!
//! # Keys and values
//!
//! Operation `n` (numbered from 0 across all clients, in the order they are started)
//! works on key number `k`, written as `k` in decimal, zero-padded to `key_size` bytes
//! ([`bench_key`]); the value of a key is the key followed by `v`s up to `val_size`
//! bytes ([`bench_value`]), so a reader can check what it got. Keys are sequential, as
//! with etcd's `--sequential-keys`: `put` writes key `n` (wrapping at `key_space`, if
//! given, or at the largest number that fits in `key_size` digits), `get` reads key `n`
//! the same way. In `mixed`, a fraction `read_ratio` of the operations, evenly spread,
//! are gets; the puts write keys 0, 1, 2, … among themselves, and each get reads the
//! key of the put before it in the sequence.
//!
//! The first operation of each of a client's concurrent users registers a client
//! session (one log entry) before its command; that is part of its latency.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use raft_mem::{KvCommand, KvResponse};
use raft_net_smol::SmolRuntime;
use raft_traits::{NodeId, Runtime};
use serde::Serialize;

use crate::client::{ClientConfig, ClientError, KvClient};
use crate::read::ReadMode;

/// What a bench does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Only puts.
    Put,
    /// Only gets.
    Get,
    /// Puts and gets; the share of gets is [`BenchConfig::read_ratio`].
    Mixed,
}

impl Workload {
    /// Every workload, in the order of the command line's values.
    pub const ALL: [Workload; 3] = [Workload::Put, Workload::Get, Workload::Mixed];

    /// The workload's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A workload name that is none of `put`, `get` and `mixed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload {0:?} (expected put, get or mixed)")]
pub struct ParseWorkloadError(String);

impl FromStr for Workload {
    type Err = ParseWorkloadError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .into_iter()
            .find(|w| w.as_str() == name)
            .ok_or_else(|| ParseWorkloadError(name.to_owned()))
    }
}

/// When a bench stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many operations (successful or not).
    Total(u64),
    /// Once this much time has passed: no operation starts after it.
    After(Duration),
}

/// How a bench runs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// What it does.
    pub workload: Workload,
    /// In [`Workload::Mixed`], the share of operations that are gets, in `[0, 1]`.
    pub read_ratio: f64,
    /// Concurrent clients, each with one operation in flight at a time.
    pub clients: usize,
    /// Connections the clients share (at most `clients`).
    pub conns: usize,
    /// When it stops.
    pub stop: Stop,
    /// Bytes per key (keys are decimal numbers, zero-padded to this width).
    pub key_size: usize,
    /// Bytes per value.
    pub val_size: usize,
    /// Wrap key numbers at this many keys; `None`: at the largest number of `key_size`
    /// digits (sequential, distinct keys).
    pub key_space: Option<u64>,
    /// The read mode the gets must be served in: `Log` sends them through the log (in
    /// client sessions), whatever the nodes' mode; `ReadIndex` and `Lease` are the nodes'
    /// own modes (`raft-kv serve --read-mode`), which the bench checks before it starts.
    /// `None`: as the nodes serve them.
    pub read_mode: Option<ReadMode>,
    /// The clients' settings (deadline of one operation, connection settings).
    pub client: ClientConfig,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            workload: Workload::Put,
            read_ratio: 0.5,
            clients: 1,
            conns: 1,
            stop: Stop::Total(10_000),
            key_size: 8,
            val_size: 256,
            key_space: None,
            read_mode: None,
            client: ClientConfig::default(),
        }
    }
}

/// Why a bench could not run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// The settings make no sense.
    #[error("{0}")]
    Invalid(String),
    /// The gets were to be served in a mode the cluster does not serve them in.
    #[error(
        "the nodes serve reads in {served} mode, not {asked} (start them with raft-kv serve --read-mode {asked}, or bench with --read-mode log)"
    )]
    ReadMode {
        /// The mode asked for.
        asked: ReadMode,
        /// The nodes' mode.
        served: ReadMode,
    },
    /// No node answered the status request sent before the run.
    #[error("no node answered: {0}")]
    NoNode(String),
    /// A client could not be made.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The bench's clients ended without a report (their task panicked).
    #[error("the bench's clients ended without a report")]
    Ended,
}

/// Latency percentiles of the successful operations, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyMicros {
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
    /// The slowest.
    pub max: f64,
}

impl LatencyMicros {
    /// The percentiles of `nanos` (sorted here), nearest-rank.
    pub fn of(nanos: &mut [u64]) -> LatencyMicros {
        if nanos.is_empty() {
            return LatencyMicros::default();
        }
        nanos.sort_unstable();
        let len = nanos.len();
        let at = |q: f64| {
            // Nearest rank: the smallest value with at least q of the values at or below.
            let rank = ((q * len as f64).ceil() as usize).clamp(1, len);
            nanos[rank - 1] as f64 / 1000.0
        };
        let sum: u128 = nanos.iter().map(|&n| u128::from(n)).sum();
        LatencyMicros {
            mean: sum as f64 / len as f64 / 1000.0,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: nanos[len - 1] as f64 / 1000.0,
        }
    }
}

/// What a bench measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections.
    pub conns: usize,
    /// Bytes per key.
    pub key_size: usize,
    /// Bytes per value.
    pub val_size: usize,
    /// How the gets were served: through the log, or in the nodes' mode.
    pub read_mode: ReadMode,
    /// Operations finished, successful or not.
    pub ops: u64,
    /// Successful puts.
    pub puts: u64,
    /// Successful gets.
    pub gets: u64,
    /// Gets of a key that was not set (successful, counted in `gets` too).
    pub gets_not_found: u64,
    /// Failed operations by kind of error.
    pub errors: BTreeMap<String, u64>,
    /// From the first operation's start to the last one's end, in seconds.
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency of the successful operations.
    pub latency_us: LatencyMicros,
}

impl BenchReport {
    /// How many operations failed.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The key of key number `n`: `n` in decimal, zero-padded to `key_size` bytes.
pub fn bench_key(n: u64, key_size: usize) -> String {
    format!("{n:0key_size$}")
}

/// The value a bench writes to `key`: the key, then `v`s up to `val_size` bytes (cut to
/// `val_size` if the key is longer).
pub fn bench_value(key: &str, val_size: usize) -> String {
    let mut value: String = key.chars().take(val_size).collect();
    let pad = val_size.saturating_sub(value.len());
    value.extend(std::iter::repeat_n('v', pad));
    value
}

/// The largest number of keys `key_size` decimal digits can name.
fn keys_of_width(key_size: usize) -> u64 {
    u32::try_from(key_size)
        .ok()
        .and_then(|digits| 10u64.checked_pow(digits))
        .unwrap_or(u64::MAX)
}

/// What operation `n` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put(u64),
    Get(u64),
}

/// A validated plan: which operation number is what.
#[derive(Clone, Copy, Debug)]
struct Plan {
    workload: Workload,
    read_ratio: f64,
    space: u64,
}

impl Plan {
    /// How many of operations `0..n` are gets in a mixed workload: spread evenly.
    fn gets_before(&self, n: u64) -> u64 {
        (n as f64 * self.read_ratio).floor() as u64
    }

    fn op(&self, n: u64) -> Op {
        match self.workload {
            Workload::Put => Op::Put(n % self.space),
            Workload::Get => Op::Get(n % self.space),
            Workload::Mixed => {
                let gets = self.gets_before(n);
                let puts = n - gets.min(n);
                if self.gets_before(n + 1) > gets {
                    // The key of the last put before it.
                    Op::Get(puts.saturating_sub(1) % self.space)
                } else {
                    Op::Put(puts % self.space)
                }
            }
        }
    }
}

/// A load generator for a KV cluster; see the [module](self).
#[derive(Clone, Debug)]
pub struct Bench {
    config: BenchConfig,
    plan: Plan,
    done: Arc<AtomicU64>,
}

/// What one client measured.
#[derive(Debug, Default)]
struct Tally {
    nanos: Vec<u64>,
    puts: u64,
    gets: u64,
    not_found: u64,
    errors: BTreeMap<String, u64>,
}

impl Bench {
    /// A bench with `config`, checked.
    pub fn new(config: BenchConfig) -> Result<Bench, BenchError> {
        let invalid = |why: String| Err(BenchError::Invalid(why));
        if config.clients == 0 {
            return invalid("--clients must be at least 1".to_owned());
        }
        if config.conns == 0 || config.conns > config.clients {
            return invalid(format!(
                "--conns {} must be between 1 and --clients ({})",
                config.conns, config.clients
            ));
        }
        if !(0.0..=1.0).contains(&config.read_ratio) {
            return invalid(format!(
                "--read-ratio {} is not between 0 and 1",
                config.read_ratio
            ));
        }
        if config.key_size == 0 {
            return invalid("--key-size must be at least 1".to_owned());
        }
        match config.stop {
            Stop::Total(0) => return invalid("--total must be at least 1".to_owned()),
            Stop::After(length) if length.is_zero() => {
                return invalid("--duration must be positive".to_owned());
            }
            _ => {}
        }
        let width = keys_of_width(config.key_size);
        let space = match config.key_space {
            Some(0) => return invalid("--key-space must be at least 1".to_owned()),
            Some(space) if space > width => {
                return invalid(format!(
                    "--key-space {space} needs keys of more than --key-size {} digits",
                    config.key_size
                ));
            }
            Some(space) => space,
            None => width,
        };
        let plan = Plan {
            workload: config.workload,
            read_ratio: match config.workload {
                Workload::Put => 0.0,
                Workload::Get => 1.0,
                Workload::Mixed => config.read_ratio,
            },
            space,
        };
        Ok(Bench {
            config,
            plan,
            done: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The number of operations finished so far (successful or not), for a progress
    /// display.
    pub fn progress(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.done)
    }

    /// Its settings.
    pub fn config(&self) -> &BenchConfig {
        &self.config
    }

    /// Runs the bench against the cluster whose nodes listen for clients at `cluster`.
    ///
    /// Before it starts, it asks the nodes for their status, to learn their read mode
    /// (and fails if none answers, or the mode is not the one asked for). Failed
    /// operations are counted by kind; they do not stop the bench.
    ///
    /// The clients and their connections run on a runtime of the bench's own, a
    /// [`SmolRuntime::with_threads`] pool of one thread with its own socket reactor,
    /// stopped when the bench ends; this future only waits for the report.
    pub async fn run(
        &self,
        cluster: BTreeMap<NodeId, SocketAddr>,
    ) -> Result<BenchReport, BenchError> {
        let runtime = SmolRuntime::with_threads(1);
        let result = self.run_on(&runtime, &cluster).await;
        runtime.stop();
        result
    }

    /// Runs the clients on `runtime`'s pool, where their connections open too.
    ///
    /// Why a pool of one thread: an answer then wakes the client waiting for it on the
    /// same thread, not a connection task on another one, and the client's next request
    /// is written from there too; and the pool's edge-triggered reactor arms nothing per
    /// read, where async-io's (under an executor driven by the caller's thread, as
    /// before) re-armed each socket and its timer at every wait. Measured against that,
    /// with 3 durable `raft-kv serve` nodes on the same 2 cores (interleaved runs, the
    /// bench's CPU from its rusage): its CPU per put fell from 20-22 to 15-16 us at 16
    /// clients.
    async fn run_on(
        &self,
        runtime: &SmolRuntime,
        cluster: &BTreeMap<NodeId, SocketAddr>,
    ) -> Result<BenchReport, BenchError> {
        let clients = Arc::new(self.clients(cluster, runtime)?);
        let bench = self.clone();
        let on_pool = Arc::clone(&clients);
        let report = runtime
            .spawn(async move { bench.run_with(&on_pool).await })
            .await;
        for client in clients.iter() {
            client.shutdown();
        }
        report.unwrap_or(Err(BenchError::Ended))
    }

    /// The bench's clients, whose connections run on `runtime`.
    fn clients(
        &self,
        cluster: &BTreeMap<NodeId, SocketAddr>,
        runtime: &SmolRuntime,
    ) -> Result<Vec<KvClient>, BenchError> {
        let mut config = self.config.client.clone();
        // The clients run in one task (see `run_with`): the requests they make on the
        // answers of one read leave each connection in one system call, which cut the
        // bench's CPU per put by a third at 64 clients on 16 connections.
        config.tcp.gather_requests = true;
        (0..self.config.conns)
            .map(|_| {
                let client = KvClient::new(cluster.clone(), config.clone())?;
                client.set_runtime(runtime.clone());
                Ok(client)
            })
            .collect()
    }

    async fn run_with(&self, clients: &[KvClient]) -> Result<BenchReport, BenchError> {
        let config = &self.config;
        let served = self.served_read_mode(&clients[0]).await?;
        let through_log = served == ReadMode::Log || config.read_mode == Some(ReadMode::Log);
        if let Some(asked) = config.read_mode
            && asked != ReadMode::Log
            && asked != served
        {
            return Err(BenchError::ReadMode { asked, served });
        }
        let next = AtomicU64::new(0);
        let started = Instant::now();
        // Polled as they are woken: `join_all` polls every client on each wake when there
        // are at most 30 of them.
        let tallies: Vec<Tally> = (0..config.clients)
            .map(|i| {
                let client = &clients[i % clients.len()];
                self.client(client, &next, started, through_log)
            })
            .collect::<futures::stream::FuturesUnordered<_>>()
            .collect()
            .await;
        let elapsed = started.elapsed();
        let mut total = Tally::default();
        for tally in tallies {
            total.nanos.extend(tally.nanos);
            total.puts += tally.puts;
            total.gets += tally.gets;
            total.not_found += tally.not_found;
            for (kind, count) in tally.errors {
                *total.errors.entry(kind).or_default() += count;
            }
        }
        let successes = total.puts + total.gets;
        let errors: u64 = total.errors.values().sum();
        Ok(BenchReport {
            workload: config.workload,
            clients: config.clients,
            conns: config.conns,
            key_size: config.key_size,
            val_size: config.val_size,
            read_mode: if through_log { ReadMode::Log } else { served },
            ops: successes + errors,
            puts: total.puts,
            gets: total.gets,
            gets_not_found: total.not_found,
            errors: total.errors,
            elapsed_secs: elapsed.as_secs_f64(),
            ops_per_sec: successes as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_us: LatencyMicros::of(&mut total.nanos),
        })
    }

    /// The read mode of the first node that answers a status request.
    async fn served_read_mode(&self, client: &KvClient) -> Result<ReadMode, BenchError> {
        let mut failures = Vec::new();
        for (node, status) in client.statuses().await {
            match status {
                Ok(status) => return Ok(status.read_mode),
                Err(error) => failures.push(format!(
                    "{node}: {}",
                    crate::client::describe_failure(&error)
                )),
            }
        }
        Err(BenchError::NoNode(failures.join("; ")))
    }

    /// One client: takes operation numbers until the bench stops.
    async fn client(
        &self,
        client: &KvClient,
        next: &AtomicU64,
        started: Instant,
        through_log: bool,
    ) -> Tally {
        let config = &self.config;
        let mut tally = Tally::default();
        loop {
            let n = next.fetch_add(1, Ordering::Relaxed);
            match config.stop {
                Stop::Total(total) if n >= total => break,
                Stop::After(length) if started.elapsed() >= length => break,
                _ => {}
            }
            let op = self.plan.op(n);
            let began = Instant::now();
            let outcome = match op {
                Op::Put(k) => {
                    let key = bench_key(k, config.key_size);
                    let value = bench_value(&key, config.val_size);
                    client.put(key, value).await.map(|_| None)
                }
                Op::Get(k) => {
                    let key = bench_key(k, config.key_size);
                    if through_log {
                        match client.execute(KvCommand::Get { key: key.into() }).await {
                            Ok((_, KvResponse::Value(value))) => Ok(Some(value.is_some())),
                            Ok((node, other)) => Err(ClientError::Unexpected {
                                node,
                                answer: format!("{other:?}"),
                            }),
                            Err(error) => Err(error),
                        }
                    } else {
                        client.get(key).await.map(|value| Some(value.is_some()))
                    }
                }
            };
            let took = began.elapsed();
            match outcome {
                Ok(found) => {
                    tally
                        .nanos
                        .push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                    match found {
                        None => tally.puts += 1,
                        Some(found) => {
                            tally.gets += 1;
                            tally.not_found += u64::from(!found);
                        }
                    }
                }
                Err(error) => {
                    *tally
                        .errors
                        .entry(error_kind(&error).to_owned())
                        .or_default() += 1;
                }
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        tally
    }
}

/// A short name for the kind of a client error, as the report counts them.
pub fn error_kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::NoNodes => "no-nodes",
        ClientError::Config(_) => "config",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::WrongPort { .. } => "wrong-port",
        ClientError::VersionMismatch { .. } => "version-mismatch",
        ClientError::ChangeRefused(_) => "change-refused",
        ClientError::ChangeNotDone { .. } => "change-not-done",
        ClientError::Unexpected { .. } => "unexpected-answer",
        ClientError::SessionExpired { .. } => "session-expired",
        ClientError::Rejected(_) => "rejected",
        ClientError::Closed => "closed",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// The bench's connections are served by its own runtime: they work while it runs,
    /// and stop with it.
    #[test]
    fn the_bench_connections_run_on_its_own_runtime() {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let node = smol::block_on(crate::KvNode::start(crate::NodeConfig::new(
            NodeId(1),
            loopback(0),
            loopback(0),
            [],
        )))
        .unwrap();
        let cluster = BTreeMap::from([(NodeId(1), node.client_addr())]);
        let bench = Bench::new(BenchConfig::default()).unwrap();
        let runtime = SmolRuntime::with_threads(1);
        let clients = Arc::new(bench.clients(&cluster, &runtime).unwrap());
        let on_pool = Arc::clone(&clients);
        let statuses =
            smol::block_on(runtime.spawn(async move { on_pool[0].statuses().await })).unwrap();
        assert!(statuses[0].1.is_ok(), "{statuses:?}");
        runtime.stop();
        // The connection opened above was the runtime's: it went with it, and the
        // client can open no other there. The request fails, at once, instead of waiting
        // for ever for a reader and a timeout sweep that went with the runtime.
        let statuses = smol::block_on(smol::future::or(
            async { Some(clients[0].statuses().await) },
            async {
                smol::Timer::after(Duration::from_secs(30)).await;
                None
            },
        ))
        .expect("a request on a stopped runtime's connection hung");
        // A client not given the runtime would have run its connection on smol's global
        // executor, and this request would have succeeded.
        assert!(
            matches!(
                &statuses[0].1,
                Err(raft_traits::TransportError::Failed { reason, .. }) if reason.contains("runtime stopped")
            ),
            "{statuses:?}"
        );
        smol::block_on(node.shutdown());
    }

    fn plan(workload: Workload, read_ratio: f64, space: u64) -> Plan {
        Plan {
            workload,
            read_ratio,
            space,
        }
    }

    #[test]
    fn keys_and_values_have_their_sizes() {
        assert_eq!(bench_key(42, 8), "00000042");
        assert_eq!(bench_value("00000042", 12), "00000042vvvv");
        assert_eq!(bench_value("00000042", 4), "0000");
        assert_eq!(keys_of_width(3), 1000);
        assert_eq!(keys_of_width(40), u64::MAX);
    }

    #[test]
    fn mixed_spreads_its_gets_and_reads_the_last_put() {
        let mixed = plan(Workload::Mixed, 0.25, 1000);
        let ops: Vec<Op> = (0..8).map(|n| mixed.op(n)).collect();
        assert_eq!(
            ops,
            [
                Op::Put(0),
                Op::Put(1),
                Op::Put(2),
                Op::Get(2),
                Op::Put(3),
                Op::Put(4),
                Op::Put(5),
                Op::Get(5)
            ]
        );
        let gets = (0..1000)
            .filter(|&n| matches!(mixed.op(n), Op::Get(_)))
            .count();
        assert_eq!(gets, 250);
        assert_eq!(plan(Workload::Put, 0.0, 10).op(12), Op::Put(2));
        assert_eq!(plan(Workload::Get, 1.0, 10).op(7), Op::Get(7));
    }

    #[test]
    fn percentiles_are_nearest_rank_and_ordered() {
        let mut nanos: Vec<u64> = (1..=1000).rev().map(|n| n * 1000).collect();
        let latency = LatencyMicros::of(&mut nanos);
        assert_eq!(
            (
                latency.p50,
                latency.p90,
                latency.p99,
                latency.p999,
                latency.max
            ),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(latency.mean, 500.5);
        assert_eq!(LatencyMicros::of(&mut []), LatencyMicros::default());
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let bad = |config: BenchConfig| matches!(Bench::new(config), Err(BenchError::Invalid(_)));
        let ok = BenchConfig::default();
        assert!(Bench::new(ok.clone()).is_ok());
        assert!(bad(BenchConfig {
            clients: 0,
            ..ok.clone()
        }));
        assert!(bad(BenchConfig {
            conns: 2,
            ..ok.clone()
        }));
        assert!(bad(BenchConfig {
            read_ratio: 1.5,
            ..ok.clone()
        }));
        assert!(bad(BenchConfig {
            stop: Stop::Total(0),
            ..ok.clone()
        }));
        assert!(bad(BenchConfig {
            key_space: Some(1000),
            key_size: 2,
            ..ok.clone()
        }));
        assert!(bad(BenchConfig {
            stop: Stop::After(Duration::ZERO),
            ..ok
        }));
    }
}
