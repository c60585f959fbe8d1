//! `raft-bench`: throughput, latency, failover, snapshot transfer and memory figures of a
//! three-node cluster, each verified before it is printed.
//!
//! Run: `cargo run --release -p raft-examples --bin raft-bench -- [SCENARIO...] [--json]`
//! where SCENARIO is `inprocess`, `tcp`, `tcp-tls`, `durable`, `election`, `snapshot`, `memory`,
//! `reads` or `all` (the default). See `--help`. `snapshot --size 256MiB,1GiB` sends snapshots
//! of those sizes between two node processes (see `stream`).
//!
//! `--plot FILE.svg` draws the scenarios measured at several client counts (throughput and
//! latency against clients), with `--anchor NAME=FILE` figures of another system beside
//! them; `--rows FILE` plots the rows of an earlier `--json` run instead of running.

#![allow(clippy::print_stdout)]

mod cluster;
mod measure;
mod plot;
mod reads;
mod scenarios;
mod stream;

use std::fmt::Write as _;

use clap::{Parser, ValueEnum};
use raft_net_smol::{SmolRuntime, TcpConfig};

use raft_examples::pki::LocalCa;

use crate::cluster::{Durability, Wiring};
use crate::measure::Latency;

/// Benchmarks of the raft library on this machine.
#[derive(Debug, Parser)]
#[command(name = "raft-bench")]
struct Args {
    /// Scenarios to run.
    #[arg(value_enum, default_values_t = [Scenario::All])]
    scenarios: Vec<Scenario>,
    /// Concurrent closed-loop clients, for the throughput scenarios.
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Operations per run (default: 200 000 with one client, 2 000 000 with more, in
    /// process; a tenth of that over TCP; 2 000 / 200 000 when durable; for `reads`,
    /// 50 000 / 500 000 in process, 20 000 / 200 000 over TCP, 2 000 / 20 000 durable).
    #[arg(long)]
    writes: Option<u64>,
    /// Runs every scenario at a tenth of its size: a quick check, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Prints the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Worker threads of the runtime shared by the nodes and the clients.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// AppendEntries in flight per follower (`Config::max_inflight_appends`).
    #[arg(long)]
    inflight: Option<usize>,
    /// The runtime the nodes, their connections and the clients of the `inprocess` and
    /// `tcp` scenarios run on.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Smol)]
    runtime: RuntimeChoice,
    /// Where the `reads` scenario runs (default: all three).
    #[arg(long, value_enum, value_delimiter = ',')]
    reads_on: Option<Vec<ReadsOn>>,
    /// Draws throughput and latency against clients, for the scenarios measured at two or
    /// more client counts, into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Another system's figures to draw beside ours (with --plot): NAME=FILE, FILE a JSON
    /// list of {"clients", "ops_per_sec", "p50_us", "p99_us"} (latencies optional).
    /// Repeatable.
    #[arg(long, value_name = "NAME=FILE", requires = "plot")]
    anchor: Vec<String>,
    /// Plots the rows an earlier `raft-bench --json` printed into FILE instead of running
    /// scenarios. Repeatable.
    #[arg(
        long,
        value_name = "FILE",
        requires = "plot",
        conflicts_with = "scenarios"
    )]
    rows: Vec<std::path::PathBuf>,
    /// Snapshot sizes for the `snapshot` scenario, like 256MiB or 1GiB (default both).
    #[arg(long, value_delimiter = ',', value_parser = stream::parse_size)]
    size: Option<Vec<u64>>,
    /// How many times the `snapshot` scenario runs each size.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The piece size of InstallSnapshot in the `snapshot` scenario
    /// (`Config::snapshot_chunk_size`; default 1MiB).
    #[arg(long, value_parser = stream::parse_size)]
    snapshot_chunk: Option<u64>,
    /// Pieces in flight in the `snapshot` scenario (`Config::snapshot_chunks_in_flight`;
    /// default 4).
    #[arg(long)]
    snapshot_window: Option<usize>,
    /// The largest size the whole-snapshot anchor of the `snapshot` scenario runs at
    /// (its three in-process nodes hold the data several times over: 6.4 GiB at its
    /// peak for 1 GiB); larger sizes are compared with it at this size. 0: no anchor.
    #[arg(long, value_parser = parse_size_or_zero, default_value = "1GiB")]
    anchor_max: u64,
    /// Test hook: the leader's snapshot gets this byte inverted, which only the
    /// follower's byte check can notice.
    #[arg(long, hide = true)]
    flip_byte: Option<u64>,
}

fn parse_size_or_zero(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        Ok(0)
    } else {
        stream::parse_size(text)
    }
}

/// The networks the `reads` scenario can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReadsOn {
    /// In process, memory storage.
    Inprocess,
    /// Loopback TCP, memory storage.
    Tcp,
    /// Loopback TCP, the file store with fsync on.
    Durable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeChoice {
    /// `raft_net_smol::SmolRuntime` on its own executor (`--threads` threads).
    Smol,
    /// `raft_tokio::TokioRuntime` on a multi-threaded tokio runtime (`--threads`
    /// workers).
    Tokio,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 3 voters in one process, direct in-process calls, memory storage; a snapshot
    /// every 5000 entries keeps the log bounded, as openraft's defaults do in its anchor.
    Inprocess,
    /// 3 voters in one process talking over real loopback TCP.
    Tcp,
    /// The TCP scenario with mutual TLS between the nodes (certificates from a CA made
    /// for the run).
    TcpTls,
    /// The TCP scenario with the durable file store (fsync on).
    Durable,
    /// Kill the leader 50 times; time until a new leader serves writes.
    Election,
    /// A snapshot of each `--size` (default 256 MiB and 1 GiB) sent between two node
    /// processes over loopback TCP, on the file store: MB/s, the RSS growth of each, and
    /// the bytes resent after the follower is killed half way; beside the whole-snapshot
    /// anchor (a wiped follower brought back in process, memory storage); and the
    /// snapshot policy taking a snapshot of that size in a node process of its own.
    Snapshot,
    /// 1 000 000 key-value writes with snapshots; memory at the end.
    Memory,
    /// Reads per second and latency of log reads, ReadIndex and lease reads, with log
    /// writes for comparison, at 1 and 64 clients, in process and over loopback TCP
    /// (and log writes, log reads and ReadIndex with the file store, fsync on).
    Reads,
    /// Everything above.
    All,
}

/// A failed benchmark: it prints no figure.
#[derive(Debug)]
pub(crate) struct BenchError(pub String);

/// One line of the results table.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    /// What `writes` counts: `write`, `read`, `failover` or `snapshot`.
    pub(crate) operation: &'static str,
    pub(crate) clients: usize,
    pub(crate) writes: u64,
    pub(crate) writes_per_sec: f64,
    #[serde(flatten)]
    pub(crate) latency: Latency,
    pub(crate) cpu_us_per_write: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) note: String,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(stream::NODE_COMMAND) {
        std::process::exit(stream::node_main(std::env::args().skip(1)));
    }
    let args = Args::parse();
    if !args.rows.is_empty() {
        let mut measured = Vec::new();
        let mut failed = false;
        for path in &args.rows {
            match plot::rows(path) {
                Ok(rows) => measured.extend(rows),
                Err(e) => {
                    eprintln!("plot: {e}");
                    failed = true;
                }
            }
        }
        if failed || !draw(&args, &measured) {
            std::process::exit(1);
        }
        return;
    }
    // Started on first use: its threads would otherwise sit in async-io's `block_on`
    // during the tokio scenarios, and async-io's reactor thread then polls at intervals
    // instead of waiting on the sockets (see `run_on_tokio`).
    let mut smol_runtime: Option<SmolRuntime> = None;
    let mut scenarios = args.scenarios.clone();
    if scenarios.contains(&Scenario::All) {
        scenarios = vec![
            Scenario::Inprocess,
            Scenario::Tcp,
            Scenario::TcpTls,
            Scenario::Durable,
            Scenario::Election,
            Scenario::Snapshot,
            Scenario::Memory,
            Scenario::Reads,
        ];
    }
    let scale = if args.quick { 10 } else { 1 };
    let mut rows = Vec::new();
    let mut snapshots = Vec::new();
    let mut failed = false;
    for scenario in scenarios {
        let result = match (args.runtime, scenario) {
            (RuntimeChoice::Tokio, Scenario::Inprocess | Scenario::Tcp) => {
                run_on_tokio(scenario, &args, scale, &mut rows)
            }
            _ => {
                let runtime = smol_runtime
                    .get_or_insert_with(|| SmolRuntime::with_threads(args.threads.max(1)));
                runtime.block_on(run(
                    scenario,
                    &args,
                    scale,
                    runtime,
                    &mut rows,
                    &mut snapshots,
                ))
            }
        };
        if let Err(BenchError(reason)) = result {
            eprintln!("{scenario:?}: FAILED: {reason}");
            failed = true;
        }
    }
    if let Some(runtime) = smol_runtime {
        runtime.stop();
    }
    if args.json {
        println!("{}", json(&rows));
    } else {
        print!("{}", table(&rows));
        if !snapshots.is_empty() {
            print!("\n{}", stream::table(&snapshots));
        }
    }
    if args.plot.is_some() {
        let measured: Vec<plot::Measured> = rows
            .iter()
            .map(|row| plot::Measured {
                scenario: row.scenario.to_string(),
                clients: row.clients,
                ops_per_sec: row.writes_per_sec,
                p50_us: Some(row.latency.p50_us),
                p99_us: Some(row.latency.p99_us),
            })
            .collect();
        failed |= !draw(&args, &measured);
    }
    if failed {
        std::process::exit(1);
    }
}

/// The in-process scenario's log policy: a snapshot every 5000 applied entries, 1000
/// of them kept in the log. These are openraft's defaults, with which its anchor
/// (`../shared/bench/openraft`) runs, so both sides of that comparison hold a bounded log.
/// With the whole log kept, 2 million writes grew the process to 430 MiB, and faulting
/// in fresh pages took a tenth of the run's time (perf, 1024 clients).
fn bounded_log(config: raft_impl::Config) -> raft_impl::Config {
    config
        .with_snapshot_after_entries(Some(5000))
        .with_snapshot_trailing_entries(1000)
}

/// Runs the `inprocess` or `tcp` scenario on a multi-threaded tokio runtime of
/// `--threads` workers, which the nodes, their connections and the clients share.
///
/// Not inside the smol runtime's `block_on`: a thread blocked there on tokio would keep
/// async-io's own reactor thread polling at intervals instead of waiting on its sockets.
fn run_on_tokio(
    scenario: Scenario,
    args: &Args,
    scale: u64,
    rows: &mut Vec<Row>,
) -> Result<(), BenchError> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_time()
        .build()
        .map_err(|e| BenchError(format!("cannot start tokio: {e}")))?;
    let rt = raft_tokio::TokioRuntime::new(tokio.handle().clone());
    let mut config = raft_impl::Config::default();
    if let Some(inflight) = args.inflight {
        config.max_inflight_appends = inflight;
    }
    let (name, default_clients, one, many): (_, &[usize], _, _) = match scenario {
        Scenario::Tcp => ("tcp tokio", &[1, 16, 64, 256], 20_000, 200_000),
        _ => (
            "in-process tokio",
            &[1, 16, 64, 256, 1024],
            200_000,
            2_000_000,
        ),
    };
    if scenario == Scenario::Inprocess {
        config = bounded_log(config);
    }
    let result = tokio.block_on(async {
        for &c in args.clients.as_deref().unwrap_or(default_clients) {
            let writes = args.writes.unwrap_or(if c == 1 { one } else { many }) / scale;
            let wiring = match scenario {
                Scenario::Tcp => Wiring::tcp(TcpConfig::default())?,
                _ => Wiring::local(),
            };
            rows.push(
                scenarios::throughput(&config, name, &rt, wiring, Durability::Memory, c, writes)
                    .await?,
            );
        }
        Ok(())
    });
    tokio.shutdown_background();
    result
}

async fn run(
    scenario: Scenario,
    args: &Args,
    scale: u64,
    runtime: &SmolRuntime,
    rows: &mut Vec<Row>,
    snapshots: &mut Vec<stream::Measured>,
) -> Result<(), BenchError> {
    let mut config = raft_impl::Config::default();
    if let Some(inflight) = args.inflight {
        config.max_inflight_appends = inflight;
    }
    let writes_for = |clients: usize, one: u64, many: u64| {
        args.writes.unwrap_or(if clients == 1 { one } else { many }) / scale
    };
    match scenario {
        Scenario::Inprocess => {
            let config = bounded_log(config.clone());
            for &c in args.clients.as_deref().unwrap_or(&[1, 16, 64, 256, 1024]) {
                let writes = writes_for(c, 200_000, 2_000_000);
                rows.push(
                    scenarios::throughput(
                        &config,
                        "in-process",
                        runtime,
                        Wiring::local(),
                        Durability::Memory,
                        c,
                        writes,
                    )
                    .await?,
                );
            }
        }
        Scenario::Tcp => {
            for &c in args.clients.as_deref().unwrap_or(&[1, 16, 64, 256]) {
                let writes = writes_for(c, 20_000, 200_000);
                let wiring = Wiring::tcp(TcpConfig::default())?;
                rows.push(
                    scenarios::throughput(
                        &config,
                        "tcp",
                        runtime,
                        wiring,
                        Durability::Memory,
                        c,
                        writes,
                    )
                    .await?,
                );
            }
        }
        Scenario::TcpTls => {
            let ca = LocalCa::new().map_err(|e| BenchError(e.to_string()))?;
            for &c in args.clients.as_deref().unwrap_or(&[1, 64]) {
                let writes = writes_for(c, 20_000, 200_000);
                let wiring = Wiring::tcp_tls(TcpConfig::default(), &ca)?;
                rows.push(
                    scenarios::throughput(
                        &config,
                        "tcp+tls",
                        runtime,
                        wiring,
                        Durability::Memory,
                        c,
                        writes,
                    )
                    .await?,
                );
            }
        }
        Scenario::Durable => {
            // The floor first: what one durable write's fsync costs on this disk, alone
            // and with the three nodes' fsyncs at once.
            let probe = cluster::ScratchDir::new("fsync-probe")?;
            for (writers, in_place) in [(1, false), (3, false), (1, true), (3, true)] {
                let rounds = 500 / scale as usize;
                let latency = measure::disk_fsync(&probe.0, writers, rounds, 256, in_place)
                    .map_err(|e| {
                        BenchError(format!("fsync probe in {}: {e}", probe.0.display()))
                    })?;
                rows.push(Row {
                    scenario: match (writers, in_place) {
                        (1, false) => "disk fsync",
                        (_, false) => "disk fsync x3",
                        (1, true) => "disk fsync in place",
                        _ => "disk fsync in place x3",
                    },
                    operation: "fsync",
                    clients: writers,
                    writes: (writers * rounds) as u64,
                    // All writers in step: each round ends with the slowest fsync.
                    writes_per_sec: if latency.mean_us > 0.0 {
                        writers as f64 * 1e6 / latency.mean_us
                    } else {
                        0.0
                    },
                    latency,
                    cpu_us_per_write: 0.0,
                    peak_rss_mib: 0.0,
                    note: format!(
                        "{writers} thread(s) in step, each {} 256 B and fdatasync-ing a file of its own",
                        if in_place {
                            "overwriting zeros already allocated (as the file store's log) with"
                        } else {
                            "appending"
                        }
                    ),
                });
            }
            drop(probe);
            // The other part of the floor: each append of the file store runs on a
            // blocking thread, woken for it.
            let rounds = 500 / scale as usize;
            let (round_trip, to_job) = measure::blocking_handoff(runtime, rounds)
                .await
                .map_err(|e| BenchError(format!("the blocking hand-off probe: {e}")))?;
            rows.push(Row {
                scenario: "blocking hand-off",
                operation: "unblock",
                clients: 1,
                writes: rounds as u64,
                writes_per_sec: if round_trip.mean_us > 0.0 {
                    1e6 / round_trip.mean_us
                } else {
                    0.0
                },
                latency: round_trip,
                cpu_us_per_write: 0.0,
                peak_rss_mib: 0.0,
                note: format!(
                    "an empty job handed to a blocking thread and back, as the file store's \
                     appends are; p50 {:.1} us before it started",
                    to_job.p50_us
                ),
            });
            for &c in args.clients.as_deref().unwrap_or(&[1, 64]) {
                let writes = writes_for(c, 2_000, 200_000);
                let wiring = Wiring::tcp(TcpConfig::default())?;
                rows.push(
                    scenarios::throughput(
                        &config,
                        "durable",
                        runtime,
                        wiring,
                        Durability::Files,
                        c,
                        writes,
                    )
                    .await?,
                );
            }
        }
        Scenario::Election => {
            rows.push(scenarios::election(runtime, (50 / scale as usize).max(5)).await?)
        }
        Scenario::Snapshot => snapshot(args, scale, runtime, rows, snapshots).await?,
        Scenario::Memory => rows.push(scenarios::memory(runtime, 1_000_000 / scale).await?),
        Scenario::Reads => {
            let clients = args.clients.as_deref().unwrap_or(&[1, 64]);
            let networks = [
                (reads::Network::InProcess, 50_000, 500_000),
                (reads::Network::Tcp, 20_000, 200_000),
                (reads::Network::Durable, 2_000, 20_000),
            ];
            let on = args.reads_on.as_deref().unwrap_or(&[
                ReadsOn::Inprocess,
                ReadsOn::Tcp,
                ReadsOn::Durable,
            ]);
            for ((network, one, many), choice) in
                networks
                    .into_iter()
                    .zip([ReadsOn::Inprocess, ReadsOn::Tcp, ReadsOn::Durable])
            {
                if !on.contains(&choice) {
                    continue;
                }
                let total = |c: usize| writes_for(c, one, many).max(1);
                reads::reads(runtime, network, &config, clients, total, rows).await?;
            }
        }
        Scenario::All => {}
    }
    Ok(())
}

/// The `snapshot` scenario: per run and size, a transfer, an interrupted one, and the
/// whole-snapshot anchor (once per run and anchor size).
async fn snapshot(
    args: &Args,
    scale: u64,
    runtime: &SmolRuntime,
    rows: &mut Vec<Row>,
    snapshots: &mut Vec<stream::Measured>,
) -> Result<(), BenchError> {
    let defaults = raft_impl::Config::default();
    let chunk = match args.snapshot_chunk {
        Some(chunk) => usize::try_from(chunk)
            .map_err(|_| BenchError(format!("--snapshot-chunk {chunk} is too large")))?,
        None => defaults.snapshot_chunk_size,
    };
    let window = args
        .snapshot_window
        .unwrap_or(defaults.snapshot_chunks_in_flight);
    let sizes: Vec<u64> = args
        .size
        .clone()
        .unwrap_or_else(|| vec![256 << 20, 1 << 30])
        .into_iter()
        .map(|size| (size / scale).max(1))
        .collect();
    for run in 1..=args.runs {
        let options = stream::Options {
            chunk,
            window,
            seed: 14 + run as u64,
            flip_byte: args.flip_byte,
        };
        let mut anchors: Vec<(u64, f64)> = Vec::new();
        for &size in &sizes {
            let name = stream::show_size(size);
            eprintln!("snapshot {name}, run {run}: send + install");
            let send = stream::transfer(&options, size, false).await?;
            eprintln!(
                "snapshot {name}, run {run}: {:.0} MB/s; now interrupted at 50% and resumed",
                send.size as f64 / 1e6 / send.secs
            );
            let resume = stream::transfer(&options, size, true).await?;
            eprintln!("snapshot {name}, run {run}: taken by the snapshot policy");
            let take = stream::take_snapshot(&options, size).await?;
            let anchor_mib = size.min(args.anchor_max).div_ceil(1 << 20);
            let anchor = if anchor_mib == 0 {
                None
            } else if let Some(&(_, mbps)) = anchors.iter().find(|(at, _)| *at == anchor_mib) {
                Some((mbps, anchor_mib << 20))
            } else {
                eprintln!(
                    "snapshot {name}, run {run}: the whole-snapshot anchor at {anchor_mib} MiB"
                );
                let row = scenarios::snapshot_install(runtime, anchor_mib as usize).await?;
                let secs = row.latency.mean_us / 1e6;
                let mbps = (anchor_mib << 20) as f64 / 1e6 / secs;
                rows.push(row);
                anchors.push((anchor_mib, mbps));
                Some((mbps, anchor_mib << 20))
            };
            let measured = stream::Measured {
                run,
                send,
                resume,
                window: (chunk * window) as u64,
                anchor,
                take,
            };
            rows.push(Row {
                scenario: "snapshot stream",
                operation: "snapshot",
                clients: 0,
                writes: 1,
                writes_per_sec: 0.0,
                latency: Latency::of(vec![(measured.send.secs * 1e9) as u64]),
                cpu_us_per_write: 0.0,
                peak_rss_mib: 0.0,
                note: format!(
                    "{name} run {run}: {:.0} MB/s; RSS growth sender {:.1} MiB, receiver {:.1} MiB; resent {} bytes (window {} bytes)",
                    measured.mbps(),
                    measured.send.sender_growth_kib as f64 / 1024.0,
                    measured.send.receiver_growth_kib as f64 / 1024.0,
                    measured.resume.resume.as_ref().map_or(-1, |r| r.resent),
                    measured.window
                ),
            });
            snapshots.push(measured);
        }
    }
    Ok(())
}

/// Draws `measured` and the anchors into the `--plot` file; says what went wrong and
/// returns false when it cannot.
fn draw(args: &Args, measured: &[plot::Measured]) -> bool {
    let Some(path) = &args.plot else {
        return true;
    };
    let result = plot::sweeps(measured).and_then(|ours| {
        let anchors = args
            .anchor
            .iter()
            .map(|spec| plot::anchor(spec))
            .collect::<Result<Vec<_>, _>>()?;
        plot::write(path, &ours, &anchors)?;
        Ok((ours.len(), anchors.len()))
    });
    match result {
        Ok((ours, anchors)) => {
            eprintln!(
                "plot: {} ({ours} series of ours, {anchors} anchors)",
                path.display()
            );
            true
        }
        Err(e) => {
            eprintln!("plot: {e}");
            false
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>7} {:>9} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "scenario",
        "clients",
        "ops",
        "ops/s",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "max µs",
        "CPU µs/op",
        "peak MiB"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>9} {:>11.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.2} {:>9.1}",
            row.scenario,
            row.clients,
            row.writes,
            row.writes_per_sec,
            row.latency.mean_us,
            row.latency.p50_us,
            row.latency.p99_us,
            row.latency.max_us,
            row.cpu_us_per_write,
            row.peak_rss_mib
        );
        if !row.note.is_empty() {
            let _ = writeln!(out, "{:<22} {}", "", row.note);
        }
    }
    out
}

/// The rows as JSON. `writes`, `writes_per_sec` and `cpu_us_per_write` count the row's
/// `operation` (reads in read rows); the names stay for the scripts that read them.
fn json(rows: &[Row]) -> String {
    // Plain numbers and strings only: serializing cannot fail.
    serde_json::to_string(rows).unwrap_or_default()
}
