//! `raft-kv`: run a node of the replicated key-value service, or talk to a cluster.
//!
//! ```text
//! raft-kv serve --id 1 --listen 127.0.0.1:7001 \
//!     --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /tmp/kv1
//! raft-kv put color blue --cluster 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003
//! raft-kv get color      --cluster 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003
//! raft-kv status         --cluster 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003
//!
//! raft-kv serve --id 4 --listen 127.0.0.1:7004 --join --data-dir /tmp/kv4
//! raft-kv add-node --id 4 --addr 127.0.0.1:7004 --cluster 1=127.0.0.1:8001,...
//! raft-kv remove-node --id 1 --cluster 1=127.0.0.1:8001,...
//! raft-kv members --cluster 1=127.0.0.1:8001,...
//! ```
//!
//! Membership: a node started with `serve --join` waits until the leader adds it
//! (`add-node`, as a voter, or with `--learner` as a learner); `remove-node` takes a
//! node (the leader too) out of the cluster; `members` prints the configuration. A node
//! keeps the configuration in its `--data-dir`, so a restart takes it from there and
//! `--peers` is needed only on a cluster's first start. The configuration records each
//! member's client address, so a node that is not the leader tells a client where the
//! leader is, even a leader added after the client's `--cluster` list was written.
//!
//! A node listens on two ports: `--listen` for Raft RPCs from its peers (the addresses
//! in `--peers`), and `--client-listen` for clients (the addresses in `--cluster`),
//! which defaults to the Raft port + 1000 on the same IP. Each port refuses, in the
//! handshake that opens every connection, what is meant for the other: a client pointed
//! at a Raft port fails at once and says which port to use. `--cluster-id` (on `serve`
//! and on the client commands) keeps different clusters apart; `--tls-cert`,
//! `--tls-key` and `--tls-ca` on `serve` put mutual TLS between the nodes (each node's
//! certificate must name `node-ID`).
//!
//! Client commands run in a client session (`raft_impl::session`): a command retried
//! after a lost answer (a leader killed mid-request) is applied once.
//!
//! Exit codes: 0 success; 1 failure (a one-line reason on stderr); 2 bad arguments (a
//! one-line reason, or clap's usage message); 3 `get` of a key that is not set. Logs go
//! to stderr, filtered by `RUST_LOG`
//! (`warn` by default, `info` for `serve`; e.g. `RUST_LOG=debug` or
//! `RUST_LOG=raft_impl=debug,info`).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool prints

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raft_examples::progress::{Goal, Progress};
use raft_examples::{
    Bench, BenchConfig, BenchError, BenchReport, ClientConfig, ClientError, ClusterMembers,
    DEFAULT_SNAPSHOT_ENTRIES, DEFAULT_SNAPSHOT_GROWTH_PERCENT, FirstStart, KvClient, KvNode,
    NodeConfig, NodeError, NodeStatus, ReadMode, Stop, Workload, describe_failure, parse_members,
    resolve,
};
use raft_net_smol::{HandshakeError, Protocol, SmolRuntime, TcpConfig, TlsConfig};
use raft_traits::{Membership, NodeId};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A replicated key-value store on Raft.
#[derive(Debug, Parser)]
#[command(name = "raft-kv", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of the cluster until the process is killed.
    Serve {
        /// This node's id (a member of --peers).
        #[arg(long)]
        id: u64,
        /// Where to listen for Raft RPCs from the other nodes.
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Every node's Raft address, as ID=ADDR,ID=ADDR,... (this node's own entry is
        /// optional): the members of a new cluster, on its first start. Once the
        /// --data-dir holds the cluster's configuration, the node takes the members from
        /// there, and these only tell it where to find them.
        #[arg(long, value_name = "ID=ADDR,...")]
        peers: Option<String>,
        /// Join a running cluster: start with an empty log, never campaign, and wait
        /// for the leader to add this node (raft-kv add-node). --peers is not needed.
        #[arg(long)]
        join: bool,
        /// Where to listen for clients [default: the --listen IP, port + 1000].
        #[arg(long, value_name = "ADDR")]
        client_listen: Option<String>,
        /// Keep the log, vote and snapshots in this directory (created if missing);
        /// without it, the node keeps them in memory and forgets them when it exits.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Snapshot the state (and discard the log it covers) every N applied commands;
        /// 0 never.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_SNAPSHOT_ENTRIES)]
        snapshot_entries: u64,
        /// ...and only once the log since the last snapshot has grown to this percent of
        /// that snapshot's size, so that rewriting a large state stays a fixed share of
        /// the writes; 0 no such wait.
        #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_SNAPSHOT_GROWTH_PERCENT)]
        snapshot_growth: u64,
        /// How to serve `get`, linearizably in every mode: `log` (a log entry per read),
        /// `read-index` (one heartbeat round to a majority, nothing written) or `lease`
        /// (no round while the leader's lease holds; assumes bounded clock drift).
        #[arg(long, value_name = "MODE", default_value_t = ReadMode::ReadIndex)]
        read_mode: ReadMode,
        /// The cluster's name: nodes and clients of another cluster are refused.
        #[arg(long, value_name = "NAME", default_value = TcpConfig::DEFAULT_CLUSTER_ID)]
        cluster_id: String,
        /// Serve the node's metrics at http://ADDR/metrics in the Prometheus text format
        /// (role, term, indices, elections, leader changes, proposals, snapshots,
        /// followers' lag, proposal latency).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// Run the node on a pool of N threads with its own socket reactor and timers,
        /// as `raft-bench` does; 0 runs it on smol's global executor instead. With three
        /// durable nodes and the benchmark sharing 2 cores, 2 threads served more puts
        /// at 16 and 64 clients than the global executor and than 1 thread, in every
        /// interleaved pair (`scripts/kv-cpu.sh`).
        #[arg(long, value_name = "N", default_value_t = 2)]
        threads: usize,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the value of KEY (linearizable, as the nodes' --read-mode says).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove KEY.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print every node's role, term, leader, commit and applied indices, the index its
    /// snapshot covers and the entries its log holds, and its counters (elections, leader changes, proposals, snapshots, refused messages) and,
    /// on the leader, each follower's lag.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Add a node (started with `serve --join`) to the cluster: as a voter, once it has
    /// caught up with the leader's log, or as a learner.
    AddNode {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Its Raft address (its `serve --listen`).
        #[arg(long, value_name = "RAFT_ADDR")]
        addr: String,
        /// Its client address [default: the Raft IP, port + 1000, as `serve` takes].
        #[arg(long, value_name = "ADDR")]
        client_addr: Option<String>,
        /// Add it as a learner: it receives the log but does not vote.
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a node (voter or learner, the leader too) from the cluster.
    RemoveNode {
        /// The node's id.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the cluster's configuration, as the leader knows it: voters, learners,
    /// addresses, and whether a change is under way.
    Members {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Load the cluster with puts, gets or both from concurrent clients, and print
    /// throughput and latency percentiles (a progress bar shows on a terminal).
    Bench {
        /// What to send: put, get, or mixed (--read-ratio of gets).
        #[arg(value_name = "WORKLOAD", default_value_t = Workload::Put)]
        workload: Workload,
        /// In mixed: the share of gets, from 0 to 1.
        #[arg(long, value_name = "RATIO", default_value_t = 0.5)]
        read_ratio: f64,
        /// Concurrent clients, each with one operation in flight.
        #[arg(long, value_name = "N", default_value_t = 1)]
        clients: usize,
        /// Connections the clients share (client i uses connection i mod N).
        #[arg(long, value_name = "N", default_value_t = 1)]
        conns: usize,
        /// Stop after N operations [default: 10000, unless --duration].
        #[arg(long, value_name = "N", conflicts_with = "duration")]
        total: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Bytes per key (keys are zero-padded decimal numbers).
        #[arg(long, value_name = "BYTES", default_value_t = 8)]
        key_size: usize,
        /// Bytes per value.
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        val_size: usize,
        /// Cycle over this many keys [default: sequential, distinct keys].
        #[arg(long, value_name = "N")]
        key_space: Option<u64>,
        /// How gets must be served: log (through the log, whatever the nodes' mode), or
        /// read-index or lease (the nodes' own --read-mode, checked first) [default: as
        /// the nodes serve them].
        #[arg(long, value_name = "MODE")]
        read_mode: Option<ReadMode>,
        /// Print one JSON object instead of the text summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Mutual TLS between the nodes: all three files, or none.
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// This node's certificate chain (PEM); the certificate must name `node-ID` (its
    /// --id) as a DNS subject alternative name.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM), which signs every node's certificate.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Every node's client address, as ID=ADDR,ID=ADDR,...
    #[arg(long, value_name = "ID=ADDR,...")]
    cluster: String,
    /// Give up after this many seconds of retrying.
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    timeout: f64,
    /// The cluster's name, as given to its nodes.
    #[arg(long, value_name = "NAME", default_value = TcpConfig::DEFAULT_CLUSTER_ID)]
    cluster_id: String,
}

/// Exit code of a bad argument, as clap uses for its own usage errors.
const EXIT_USAGE: u8 = 2;

/// Exit code of a `get` of a key that is not set.
const EXIT_NOT_FOUND: u8 = 3;

/// A failure: the one line printed on stderr, and the exit code.
struct Failure {
    reason: String,
    code: u8,
}

impl Failure {
    /// An argument that clap accepted but that makes no sense: exit code 2.
    fn usage(reason: String) -> Self {
        Failure {
            reason,
            code: EXIT_USAGE,
        }
    }
}

/// Anything else that fails (no leader, a port in use, bad storage): exit code 1.
impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure {
            reason: error.to_string(),
            code: 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    init_logging(default_level);
    match run(cli.command) {
        Ok(code) => code,
        Err(Failure { reason, code }) => {
            // One line, whatever the reason's source put in it.
            let reason = reason.lines().collect::<Vec<_>>().join(" ");
            eprintln!("error: {reason}");
            ExitCode::from(code)
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .or_else(|| default_level.parse::<Targets>().ok())
        .unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(true),
        )
        .with(filter)
        .try_init();
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Serve {
            id,
            listen,
            peers,
            join,
            client_listen,
            data_dir,
            snapshot_entries,
            snapshot_growth,
            read_mode,
            cluster_id,
            metrics_listen,
            threads,
            tls,
        } => {
            let mut config = node_config(
                NodeId(id),
                &listen,
                peers.as_deref(),
                client_listen.as_deref(),
            )?;
            config.first_start = match (join, &peers) {
                (true, _) => FirstStart::Join,
                (false, Some(_)) => FirstStart::Bootstrap,
                (false, None) => FirstStart::Refuse,
            };
            config.data_dir = data_dir;
            config.snapshot_entries = snapshot_entries;
            config.snapshot_growth_percent = snapshot_growth;
            config.runtime = match threads {
                0 => SmolRuntime::global(),
                threads => SmolRuntime::with_threads(threads),
            };
            config.read_mode = read_mode;
            config.tcp.cluster_id = cluster_id;
            config.metrics_listen = metrics_listen
                .map(|addr| resolve(&addr))
                .transpose()
                .map_err(|e| Failure::usage(format!("--metrics-listen: {e}")))?;
            if let TlsArgs {
                tls_cert: Some(cert),
                tls_key: Some(key),
                tls_ca: Some(ca),
            } = tls
            {
                let tls = TlsConfig::from_pem_files(&cert, &key, &ca)
                    .map_err(|e| Failure::from(format!("--tls-cert/--tls-key/--tls-ca: {e}")))?;
                config.tls = Some(tls);
            }
            serve(config)
        }
        Command::Put {
            key,
            value,
            cluster,
        } => {
            let client = client(&cluster)?;
            let previous = smol::block_on(client.put(key, value)).map_err(client_failure)?;
            match previous {
                Some(previous) => println!("OK (replaced {previous:?})"),
                None => println!("OK"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { key, cluster } => {
            let client = client(&cluster)?;
            match smol::block_on(client.get(key.as_str())).map_err(client_failure)? {
                Some(value) => {
                    println!("{value}");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("not found: {key:?} is not set");
                    Ok(ExitCode::from(EXIT_NOT_FOUND))
                }
            }
        }
        Command::Delete { key, cluster } => {
            let client = client(&cluster)?;
            match smol::block_on(client.delete(key.as_str())).map_err(client_failure)? {
                Some(previous) => println!("deleted (was {previous:?})"),
                None => println!("not found: nothing to delete"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { cluster } => status(&cluster),
        Command::AddNode {
            id,
            addr,
            client_addr,
            learner,
            cluster,
        } => {
            let raft_addr = resolve(&addr).map_err(|e| Failure::usage(format!("--addr: {e}")))?;
            let client_addr = match client_addr {
                Some(addr) => {
                    resolve(&addr).map_err(|e| Failure::usage(format!("--client-addr: {e}")))?
                }
                None => default_client_addr(raft_addr).map_err(|_| {
                    Failure::usage(format!(
                        "--addr port {} leaves no room for the default client port (+1000); give --client-addr",
                        raft_addr.port()
                    ))
                })?,
            };
            let client = client(&cluster)?;
            let id = NodeId(id);
            smol::block_on(client.add_node(id, raft_addr, Some(client_addr), learner))
                .map_err(client_failure)?;
            let role = if learner { "learner" } else { "voter" };
            println!("OK: {id} is a {role}");
            Ok(ExitCode::SUCCESS)
        }
        Command::RemoveNode { id, cluster } => {
            let client = client(&cluster)?;
            let id = NodeId(id);
            smol::block_on(client.remove_node(id)).map_err(client_failure)?;
            println!("OK: {id} removed");
            Ok(ExitCode::SUCCESS)
        }
        Command::Members { cluster } => {
            let client = client(&cluster)?;
            let members = smol::block_on(client.members()).map_err(client_failure)?;
            print_members(&members);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            workload,
            read_ratio,
            clients,
            conns,
            total,
            duration,
            key_size,
            val_size,
            key_space,
            read_mode,
            json,
            cluster,
        } => {
            let stop = match (total, duration) {
                (_, Some(seconds)) => Stop::After(
                    Duration::try_from_secs_f64(seconds)
                        .ok()
                        .filter(|length| !length.is_zero())
                        .ok_or_else(|| {
                            Failure::usage(format!(
                                "--duration {seconds} is not a positive number of seconds"
                            ))
                        })?,
                ),
                (Some(total), None) => Stop::Total(total),
                (None, None) => Stop::Total(10_000),
            };
            let config = BenchConfig {
                workload,
                read_ratio,
                clients,
                conns,
                stop,
                key_size,
                val_size,
                key_space,
                read_mode,
                client: client_config(&cluster)?,
            };
            bench(config, &cluster, json)
        }
    }
}

/// `raft-kv bench`: runs the load, then prints the summary (or the JSON object). Exit
/// code 0 if every operation succeeded, 1 if some failed (the summary counts them) or
/// the bench could not start, 2 for bad settings.
fn bench(config: BenchConfig, args: &ClusterArgs, json: bool) -> Result<ExitCode, Failure> {
    let cluster = cluster(args)?;
    let bench = Bench::new(config).map_err(|error| match error {
        BenchError::Invalid(why) => Failure::usage(why),
        other => Failure::from(other),
    })?;
    let goal = match bench.config().stop {
        Stop::Total(total) => Goal::Count(total),
        Stop::After(length) => Goal::Time(length),
    };
    let progress = Progress::start(
        format!("bench {}", bench.config().workload),
        bench.progress(),
        goal,
    );
    let report = smol::block_on(bench.run(cluster));
    drop(progress);
    let report = report?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_bench(&report);
    }
    if report.error_count() > 0 {
        return Err(Failure::from(format!(
            "{} of {} operations failed",
            report.error_count(),
            report.ops
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_bench(report: &BenchReport) {
    let reads = if report.gets > 0 {
        format!(", reads: {}", report.read_mode)
    } else {
        String::new()
    };
    println!(
        "bench {}: {} clients, {} conns, {}-byte keys, {}-byte values{reads}",
        report.workload, report.clients, report.conns, report.key_size, report.val_size
    );
    println!(
        "ops      {} ({} puts, {} gets, {} of them not found)",
        report.ops, report.puts, report.gets, report.gets_not_found
    );
    let errors = if report.errors.is_empty() {
        "0".to_owned()
    } else {
        let kinds: Vec<String> = report
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        format!("{} ({})", report.error_count(), kinds.join(", "))
    };
    println!("errors   {errors}");
    println!("elapsed  {:.3} s", report.elapsed_secs);
    println!("ops/s    {:.0}", report.ops_per_sec);
    let ms = |micros: f64| micros / 1000.0;
    let latency = &report.latency_us;
    println!(
        "latency  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        ms(latency.p50),
        ms(latency.p90),
        ms(latency.p99),
        ms(latency.p999),
        ms(latency.max)
    );
}

/// `raft-kv members`: the configuration, and the committed one if a change is under way.
fn print_members(members: &ClusterMembers) {
    let leader = members
        .leader
        .map_or_else(|| "none".to_owned(), |leader| leader.to_string());
    println!(
        "leader {leader}, term {} (as {} sees it)",
        members.term.0, members.node
    );
    if members.is_settled() {
        println!("configuration (committed):");
        print_configuration(members, &members.latest);
    } else {
        println!("latest configuration (in effect, not committed yet):");
        print_configuration(members, &members.latest);
        println!("committed configuration:");
        print_configuration(members, &members.committed);
    }
}

fn print_configuration(members: &ClusterMembers, configuration: &Membership) {
    println!(
        "  {:<6} {:<18} {:<22} client address",
        "node", "role", "raft address"
    );
    for (&id, address) in &configuration.nodes {
        let incoming = configuration.voters.contains(&id);
        let outgoing = configuration
            .outgoing
            .as_ref()
            .is_some_and(|outgoing| outgoing.contains(&id));
        let role = match (configuration.outgoing.is_some(), incoming, outgoing) {
            (false, true, _) | (true, true, true) => "voter",
            (true, true, false) => "voter (incoming)",
            (true, false, true) if configuration.learners.contains(&id) => "voter -> learner",
            (true, false, true) => "voter (outgoing)",
            _ if configuration.learners.contains(&id) => "learner",
            _ => "-",
        };
        let (raft, client) = match members.addr(id) {
            Some(addr) => (
                addr.raft.to_string(),
                addr.client
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            ),
            None => (address.clone(), "-".to_owned()),
        };
        println!("  {:<6} {role:<18} {raft:<22} {client}", id.to_string());
    }
    if let Some(outgoing) = &configuration.outgoing {
        let list = |ids: &std::collections::BTreeSet<NodeId>| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "  joint consensus: voters {} -> {} (decisions need a majority of both)",
            list(outgoing),
            list(&configuration.voters)
        );
    }
}

/// A node's configuration from the command line's addresses.
fn node_config(
    id: NodeId,
    listen: &str,
    peers: Option<&str>,
    client_listen: Option<&str>,
) -> Result<NodeConfig, Failure> {
    let listen = resolve(listen).map_err(|e| Failure::usage(format!("--listen: {e}")))?;
    let peers = match peers {
        Some(peers) => parse_members(peers).map_err(|e| Failure::usage(format!("--peers: {e}")))?,
        None => BTreeMap::new(),
    };
    let client_listen = match client_listen {
        Some(addr) => resolve(addr).map_err(|e| Failure::usage(format!("--client-listen: {e}")))?,
        None => default_client_addr(listen)?,
    };
    // A listen address may differ from the one peers use (0.0.0.0 against a host's
    // address), but a different port is almost surely a wrong --id.
    if let Some(own) = peers.get(&id)
        && own.port() != listen.port()
    {
        return Err(Failure::usage(format!(
            "--peers gives node {} the address {own}, but --listen is {listen}",
            id.0
        )));
    }
    Ok(NodeConfig::new(id, listen, client_listen, peers))
}

fn serve(config: NodeConfig) -> Result<ExitCode, Failure> {
    let id = config.id;
    let read_mode = config.read_mode;
    let storage = match &config.data_dir {
        Some(dir) => format!("files in {}", dir.display()),
        None => "memory (lost on exit)".to_owned(),
    };
    let tls = if config.tls.is_some() {
        ", mutual TLS between nodes"
    } else {
        ""
    };
    let data_dir = config.data_dir.clone();
    smol::block_on(async {
        let node = KvNode::start(config).await.map_err(|error| match error {
            NodeError::NoConfiguration => Failure::usage(format!(
                "{} holds no cluster configuration: give --peers to start a new cluster, or --join to join a running one",
                data_dir.as_ref().map_or_else(
                    || "memory storage".to_owned(),
                    |dir| format!("--data-dir {}", dir.display())
                )
            )),
            error => Failure::from(error),
        })?;
        let joining = if node.raft().status().membership.nodes.is_empty() {
            "; not a member yet: waiting for the leader to add it (raft-kv add-node)"
        } else {
            ""
        };
        let metrics = node
            .metrics_addr()
            .map(|addr| format!(", metrics http://{addr}/metrics"))
            .unwrap_or_default();
        println!(
            "raft-kv node {} serving: raft {}, clients {}{metrics}, storage {storage}, reads {read_mode}{tls}{joining}",
            id.0,
            node.raft_addr(),
            node.client_addr()
        );
        // Runs until the process is killed. Every write is on disk before it is
        // acknowledged, so killing it (even with SIGKILL) loses nothing acknowledged.
        std::future::pending::<()>().await;
        Ok::<(), Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The client address a node takes when none is given: the Raft IP, port + 1000 (or an
/// ephemeral port if the Raft port is).
fn default_client_addr(listen: SocketAddr) -> Result<SocketAddr, Failure> {
    let port = match listen.port() {
        0 => 0,
        port => port.checked_add(1000).ok_or_else(|| {
            Failure::usage(format!(
                "--listen port {port} leaves no room for the default client port (+1000); give --client-listen"
            ))
        })?,
    };
    Ok(SocketAddr::new(listen.ip(), port))
}

/// The `--cluster` list.
fn cluster(args: &ClusterArgs) -> Result<BTreeMap<NodeId, SocketAddr>, Failure> {
    parse_members(&args.cluster).map_err(|e| Failure::usage(format!("--cluster: {e}")))
}

fn client(args: &ClusterArgs) -> Result<KvClient, Failure> {
    let cluster = cluster(args)?;
    Ok(KvClient::new(cluster, client_config(args)?)?)
}

/// The client settings of `--timeout` and `--cluster-id`.
fn client_config(args: &ClusterArgs) -> Result<ClientConfig, Failure> {
    let deadline = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|deadline| !deadline.is_zero())
        .ok_or_else(|| {
            Failure::usage(format!(
                "--timeout {} is not a positive number of seconds",
                args.timeout
            ))
        })?;
    let mut config = ClientConfig {
        deadline,
        ..ClientConfig::default()
    };
    config.tcp.cluster_id = args.cluster_id.clone();
    Ok(config)
}

fn status(args: &ClusterArgs) -> Result<ExitCode, Failure> {
    let cluster = cluster(args)?;
    let client = client(args)?;
    let statuses = smol::block_on(client.statuses());
    println!(
        "{:<6} {:<22} {:<10} {:>6} {:<7} {:>8} {:>8} {:>8} {:>7}",
        "node", "address", "role", "term", "leader", "commit", "applied", "snapshot", "log"
    );
    let mut answered: Vec<NodeStatus> = Vec::new();
    for (node, status) in statuses {
        let addr = cluster
            .get(&node)
            .map(ToString::to_string)
            .unwrap_or_default();
        match status {
            Ok(status) => {
                let leader = status
                    .leader
                    .map(|leader| leader.to_string())
                    .unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:<6} {:<22} {:<10} {:>6} {:<7} {:>8} {:>8} {:>8} {:>7}",
                    node.to_string(),
                    addr,
                    status.role,
                    status.term.0,
                    leader,
                    status.commit_index.0,
                    status.last_applied.0,
                    status.snapshot.index.0,
                    status.log_entries
                );
                answered.push(status);
            }
            Err(error) => {
                let why = match client.wrong_port(node) {
                    Some(ClientError::WrongPort { node, addr, error }) => {
                        wrong_port(node, addr, &error)
                    }
                    Some(other) => other.to_string(),
                    None => describe_failure(&error),
                };
                println!("{:<6} {:<22} {}", node.to_string(), addr, why);
            }
        }
    }
    client.shutdown();
    if answered.is_empty() {
        return Err(Failure::from("no node answered"));
    }
    print_counters(&answered);
    Ok(ExitCode::SUCCESS)
}

/// The second part of `raft-kv status`: what each node that answered has done since
/// it started, its read mode, and the followers' lag as each leader sees it.
fn print_counters(statuses: &[NodeStatus]) {
    println!();
    println!(
        "{:<6} {:>9} {:>5} {:>14} {:>9} {:>9} {:>9} {:>7}  reads",
        "node",
        "elections",
        "won",
        "leader-changes",
        "proposals",
        "snapshots",
        "installed",
        "refused"
    );
    for status in statuses {
        let c = &status.counters;
        println!(
            "{:<6} {:>9} {:>5} {:>14} {:>9} {:>9} {:>9} {:>7}  {}",
            status.id.to_string(),
            c.elections_started,
            c.elections_won,
            c.leader_changes,
            c.proposals,
            c.snapshots_taken,
            c.snapshots_installed,
            c.refused_messages,
            status.read_mode
        );
    }
    for status in statuses.iter().filter(|s| !s.follower_lag.is_empty()) {
        let lags: Vec<String> = status
            .follower_lag
            .iter()
            .map(|(peer, lag)| format!("{peer} {lag}"))
            .collect();
        println!(
            "follower lag on {} (entries): {}",
            status.id,
            lags.join(", ")
        );
    }
}

/// The failure of a client command: exit code 1, with the wrong-port advice when the
/// `--cluster` list names a port that is not a client port.
fn client_failure(error: ClientError) -> Failure {
    match error {
        ClientError::WrongPort { node, addr, error } => {
            Failure::from(wrong_port(node, addr, &error))
        }
        other => Failure::from(other),
    }
}

/// What to tell a user whose `--cluster` names, for `node`, an address that is not its
/// client port.
fn wrong_port(node: NodeId, addr: SocketAddr, error: &HandshakeError) -> String {
    match error {
        HandshakeError::WrongProtocol {
            server: Protocol::Raft,
            ..
        } => {
            let hint = match addr.port().checked_add(1000) {
                Some(port) => format!(
                    "; by default it is the Raft port + 1000, here {}",
                    SocketAddr::new(addr.ip(), port)
                ),
                None => String::new(),
            };
            format!(
                "{addr} is node {}'s Raft port, where the nodes talk to each other; \
                 --cluster takes the nodes' client ports (raft-kv serve --client-listen{hint})",
                node.0
            )
        }
        other => format!(
            "{addr} is not node {}'s client port in this cluster ({other}); check --cluster",
            node.0
        ),
    }
}
