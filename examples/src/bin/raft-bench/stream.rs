//! The `snapshot` scenario: a snapshot of SIZE bytes sent in pieces over loopback TCP from
//! a leader process to a follower process, both on the file store, with the peak memory
//! of each process measured against its own idle baseline; then the same transfer with
//! the follower killed half way and restarted, counting the bytes the leader sends again;
//! then a one-node cluster whose snapshot policy takes a snapshot of that size, its state
//! machine streaming it into the file store.
//!
//! raft-bench runs each node as a child process of its own (itself, with the hidden
//! [`NODE_COMMAND`]); they talk to the coordinating parent over stdin and stdout in
//! lines of `tag key=value ...`. The data never passes through the parent: it writes the
//! leader's store piece by piece before the leader starts, and the follower's state
//! machine checks every byte it restores against the generator, keeping only a seed, a
//! length and a position.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use raft_file_store::FileStorage;
use raft_impl::{Config, Parts, Raft};
use raft_net_smol::{SmolRuntime, TcpConfig, TcpServer, TcpTransport};
use raft_traits::{
    Bytes, HandlerError, HardState, LogId, LogIndex, Membership, NodeId, Request, Response,
    RpcHandler, Snapshot, SnapshotChecksum, SnapshotDescriptor, SnapshotMeta, SnapshotReader,
    SnapshotSource, SnapshotWriter, StateMachine, StateMachineError, Storage, Term, Transport,
    TransportError, async_trait,
};

use crate::BenchError;
use crate::cluster::ScratchDir;
use crate::measure::status_kib;

/// The hidden first argument that makes raft-bench run one node of this scenario.
pub(crate) const NODE_COMMAND: &str = "snapshot-node";

/// The leader and the follower.
const LEADER: NodeId = NodeId(1);
const FOLLOWER: NodeId = NodeId(2);

/// The log index and term the leader's snapshot covers.
const SNAPSHOT_AT: LogId = LogId {
    term: Term(1),
    index: LogIndex(1000),
};

/// The snapshot data starts with the generator's seed and the data length (little-endian
/// u64s); the generator's bytes fill the rest.
const HEADER: u64 = 16;

/// The piece size the state machine restores in, and the parent writes the leader's
/// store in.
const RESTORE_PIECE: usize = 1 << 20;
const BUILD_PIECE: usize = 4 << 20;

/// The taking phase: the snapshot policy takes a snapshot after this many entries.
const TAKE_AFTER: u64 = 8;

/// The targets of issue 14.
pub(crate) const TARGET_MBPS: f64 = 151.0;
pub(crate) const TARGET_RSS_MIB: f64 = 64.0;

fn members() -> [NodeId; 2] {
    [LEADER, FOLLOWER]
}

// ---------------------------------------------------------------------------------------
// The data: a deterministic pseudo-random byte stream.

/// One 64-bit word of the stream: SplitMix64 of the seed advanced `n` times, so any word
/// is computed directly from its position.
fn word(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The snapshot data of `size` bytes made from `seed`: the header, then the stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Data {
    pub(crate) seed: u64,
    pub(crate) size: u64,
}

impl Data {
    /// Fills `buf` with the data at `offset` (`offset + buf.len() <= size`).
    pub(crate) fn fill_at(&self, mut offset: u64, buf: &mut [u8]) {
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(&self.seed.to_le_bytes());
        header[8..].copy_from_slice(&self.size.to_le_bytes());
        let mut i = 0;
        while i < buf.len() && offset < HEADER {
            buf[i] = header[offset as usize];
            i += 1;
            offset += 1;
        }
        while i < buf.len() {
            let position = offset - HEADER;
            let bytes = word(self.seed, position / 8).to_le_bytes();
            let start = (position % 8) as usize;
            let n = (8 - start).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&bytes[start..start + n]);
            i += n;
            offset += n as u64;
        }
    }
}

/// Checks that `reader` serves exactly the data of `expected`, reading it in pieces;
/// returns the bytes read, or where and how it differs. With `compare` false it only
/// reads.
async fn verify(reader: &dyn SnapshotReader, expected: Data, compare: bool) -> Result<u64, String> {
    let len = reader.len();
    if len != expected.size {
        return Err(format!(
            "the snapshot holds {len} bytes, not {}",
            expected.size
        ));
    }
    let mut want = vec![0u8; RESTORE_PIECE];
    let mut offset = 0u64;
    while offset < len {
        let piece = reader
            .read_at(offset, RESTORE_PIECE)
            .await
            .map_err(|e| format!("reading at {offset}: {e}"))?;
        if piece.is_empty() || piece.len() > RESTORE_PIECE {
            return Err(format!(
                "the reader served {} bytes at {offset}",
                piece.len()
            ));
        }
        let want = &mut want[..piece.len()];
        if compare {
            expected.fill_at(offset, want);
        }
        if let Some(at) = compare
            .then(|| piece.iter().zip(want.iter()).position(|(a, b)| a != b))
            .flatten()
        {
            return Err(format!(
                "byte {} is {:#04x}, the generator's is {:#04x}",
                offset + at as u64,
                piece[at],
                want[at]
            ));
        }
        offset += piece.len() as u64;
    }
    Ok(offset)
}

// ---------------------------------------------------------------------------------------
// The state machine.

/// What a node process hears: a command line from the parent, or the outcome of a
/// restore.
enum Event {
    Line(String),
    Eof,
    Restored { at: Instant, bytes: u64 },
    Failed(String),
}

/// A state machine whose state is the generator's data (seed, size): it holds no data,
/// and checks every byte of a snapshot it restores.
///
/// On the taking node (`taking` set), the first command applied makes the state the
/// expected data, and the snapshot policy's capture streams it into storage.
struct Generated {
    expected: Data,
    taking: Option<Arc<Taking>>,
    /// Whether restoring compares the bytes (always, but for the test hook's leader).
    compare: bool,
    /// The data of the current state; size 0 before any snapshot.
    state: Data,
    last: LogId,
    events: smol::channel::Sender<Event>,
}

impl StateMachine<()> for Generated {
    type Response = ();

    async fn apply(&mut self, log_id: LogId, _command: ()) {
        if self.taking.is_some() && self.state.size == 0 {
            self.state = self.expected;
        }
        self.last = log_id;
    }

    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        let taking = Arc::clone(self.taking.as_ref()?);
        Some(Box::new(Source {
            data: self.state,
            taking,
        }))
    }

    /// The whole data, made from the generator. The scenario never has Raft take a
    /// snapshot (no snapshot policy), so this runs only if something asks for one.
    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let len = usize::try_from(self.state.size)
            .map_err(|_| StateMachineError::InvalidSnapshot("too large".into()))?;
        let mut data = vec![0u8; len];
        self.state.fill_at(0, &mut data);
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last,
                membership: Membership::from_voters(members()),
            },
            data: Bytes::from(data),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let meta = snapshot.meta.clone();
        self.restore_from(meta, raft_traits::BytesReader::shared(snapshot.data))
            .await
    }

    async fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> Result<(), StateMachineError> {
        if self.last.index > LogIndex::ZERO && meta.last_included.index <= self.last.index {
            return Err(StateMachineError::Stale {
                applied: self.last,
                offered: meta.last_included,
            });
        }
        if reader.is_empty() {
            // The bootstrap record a fresh store keeps: no state yet.
            self.state = Data { seed: 0, size: 0 };
            self.last = meta.last_included;
            return Ok(());
        }
        match verify(reader.as_ref(), self.expected, self.compare).await {
            Ok(bytes) => {
                self.state = self.expected;
                self.last = meta.last_included;
                let _ = self.events.try_send(Event::Restored {
                    at: Instant::now(),
                    bytes,
                });
                Ok(())
            }
            Err(reason) => {
                let _ = self.events.try_send(Event::Failed(reason.clone()));
                Err(StateMachineError::InvalidSnapshot(reason))
            }
        }
    }
}

/// When the taking node's state machine streamed its snapshot, and how much.
#[derive(Debug, Default)]
struct Taking {
    started: OnceLock<Instant>,
    ended: OnceLock<Instant>,
    written: AtomicU64,
}

/// A captured state: the generator's data, written in pieces of [`RESTORE_PIECE`].
struct Source {
    data: Data,
    taking: Arc<Taking>,
}

#[async_trait]
impl SnapshotSource for Source {
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError> {
        self.taking.started.get_or_init(Instant::now);
        let mut offset = 0;
        while offset < self.data.size {
            let len = (self.data.size - offset).min(RESTORE_PIECE as u64);
            let mut piece = vec![0u8; len as usize];
            self.data.fill_at(offset, &mut piece);
            out.write(Bytes::from(piece)).await?;
            offset += len;
            self.taking.written.store(offset, Ordering::Relaxed);
        }
        self.taking.ended.get_or_init(Instant::now);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Counting what moves.

/// Snapshot bytes a leader handed its transport, and those a reply came back for.
#[derive(Debug, Default)]
struct Sent {
    attempted: AtomicU64,
    delivered: AtomicU64,
}

/// The node's TCP transport, counting the data of the InstallSnapshot pieces it sends.
struct Counting {
    inner: Arc<TcpTransport<()>>,
    sent: Arc<Sent>,
}

#[async_trait]
impl Transport<()> for Counting {
    async fn send(&self, to: NodeId, request: Request<()>) -> Result<Response, TransportError> {
        let piece = match &request {
            Request::InstallSnapshot(install) => install.data.len() as u64,
            _ => 0,
        };
        self.sent.attempted.fetch_add(piece, Ordering::Relaxed);
        let result = self.inner.send(to, request).await;
        if result.is_ok() {
            self.sent.delivered.fetch_add(piece, Ordering::Relaxed);
        }
        result
    }
}

/// The node's RPC handler, noting when the first snapshot piece arrived and how many
/// snapshot bytes came.
struct Receiving {
    inner: Raft<(), ()>,
    first_piece: OnceLock<Instant>,
    received: AtomicU64,
}

#[async_trait]
impl RpcHandler<()> for Receiving {
    async fn handle(&self, request: Request<()>) -> Result<Response, HandlerError> {
        if let Request::InstallSnapshot(install) = &request {
            self.first_piece.get_or_init(Instant::now);
            self.received
                .fetch_add(install.data.len() as u64, Ordering::Relaxed);
        }
        self.inner.handle(request).await
    }
}

// ---------------------------------------------------------------------------------------
// Memory.

/// Resets the process's peak resident set (VmHWM) to its current size (Linux: "5" to
/// /proc/self/clear_refs). Returns whether it could.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------
// A node process.

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Leader,
    Follower,
    /// A one-node cluster whose snapshot policy takes the snapshot.
    Taker,
}

/// The arguments of one node process (raft-bench snapshot-node ...).
#[derive(Debug, Parser)]
#[command(name = "raft-bench snapshot-node")]
struct NodeArgs {
    #[arg(long, value_enum)]
    role: Role,
    /// The node's file store.
    #[arg(long)]
    dir: PathBuf,
    /// Where it listens.
    #[arg(long)]
    listen: SocketAddr,
    /// The other node's address, if known at start.
    #[arg(long)]
    peer: Option<SocketAddr>,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    size: u64,
    #[arg(long)]
    chunk: usize,
    #[arg(long)]
    window: usize,
    /// The state machine reads a snapshot it restores without comparing its bytes: for
    /// the leader of the `--flip-byte` test hook, whose store is wrong on purpose.
    #[arg(long)]
    unchecked: bool,
}

fn node_config(chunk: usize, window: usize) -> Config {
    let mut config = Config::default();
    config.snapshot_chunk_size = chunk;
    config.snapshot_chunks_in_flight = window;
    config
}

fn tcp_config() -> TcpConfig {
    TcpConfig {
        // A piece is written and fsynced before its answer: allow a slow disk.
        request_timeout: Duration::from_secs(30),
        ..TcpConfig::default()
    }
}

/// Runs one node process until the parent says `quit`; returns the exit code.
pub(crate) fn node_main(args: impl Iterator<Item = String>) -> i32 {
    let args = NodeArgs::parse_from(args);
    let runtime = SmolRuntime::with_threads(2);
    let code = runtime.block_on(async {
        match node(&runtime, args).await {
            Ok(code) => code,
            Err(BenchError(reason)) => {
                println!("failed reason={reason}");
                1
            }
        }
    });
    runtime.stop();
    code
}

async fn node(runtime: &SmolRuntime, args: NodeArgs) -> Result<i32, BenchError> {
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Display| BenchError(format!("{what}: {e}"))
    };
    let (id, other) = match args.role {
        Role::Leader | Role::Taker => (LEADER, FOLLOWER),
        Role::Follower => (FOLLOWER, LEADER),
    };
    let (voters, taking, config) = match args.role {
        Role::Taker => {
            let mut config = node_config(args.chunk, args.window);
            config.snapshot_after_entries = Some(TAKE_AFTER);
            (vec![LEADER], Some(Arc::new(Taking::default())), config)
        }
        _ => (
            members().to_vec(),
            None,
            node_config(args.chunk, args.window),
        ),
    };
    let mut storage: FileStorage<()> =
        FileStorage::open(&args.dir).map_err(|e| fail("open store")(&e))?;
    let pending = storage
        .pending_snapshot()
        .await
        .map_err(|e| fail("pending snapshot")(&e))?
        .map_or(0, |p| p.written);
    let server = TcpServer::bind(args.listen, tcp_config()).map_err(|e| fail("listen")(&e))?;
    let addr = server.local_addr();
    let mut peers = vec![(id, addr)];
    if let Some(peer) = args.peer {
        peers.push((other, peer));
    }
    let transport = Arc::new(
        TcpTransport::<()>::new(tcp_config(), id, peers).map_err(|e| fail("transport")(&e))?,
    );
    transport.set_runtime(runtime.clone());
    let sent = Arc::new(Sent::default());
    let (events, heard) = smol::channel::unbounded();
    let machine = Generated {
        expected: Data {
            seed: args.seed,
            size: args.size,
        },
        compare: !args.unchecked,
        taking: taking.clone(),
        state: Data { seed: 0, size: 0 },
        last: LogId::default(),
        events: events.clone(),
    };
    let parts = Parts {
        runtime: runtime.clone(),
        storage,
        state_machine: machine,
        transport: Counting {
            inner: Arc::clone(&transport),
            sent: Arc::clone(&sent),
        },
    };
    // The leader's state machine restores (and checks) its stored snapshot in here.
    let raft = Raft::spawn(id, voters, config, parts)
        .await
        .map_err(|e| fail("start")(&e))?;
    // Drop what the start-up restore reported: the follower's figures begin later.
    while heard.try_recv().is_ok() {}
    let handler = Arc::new(Receiving {
        inner: raft.clone(),
        first_piece: OnceLock::new(),
        received: AtomicU64::new(0),
    });

    // Up and idle: the baseline.
    let baseline = status_kib("VmRSS:");
    let reset = reset_peak();
    println!("ready addr={addr} rss_kib={baseline} hwm_reset={reset} pending={pending}");
    server.set_runtime(runtime.clone());
    server
        .serve(Arc::clone(&handler) as Arc<dyn RpcHandler<()>>)
        .map_err(|e| fail("serve")(&e))?;

    // Lines from the parent, as events.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if events.send_blocking(Event::Line(line)).is_err() {
                return;
            }
        }
        let _ = events.send_blocking(Event::Eof);
    });

    let mut code = 0;
    while let Ok(event) = heard.recv().await {
        match event {
            Event::Restored { at, bytes } => {
                let took = handler
                    .first_piece
                    .get()
                    .map(|first| at.saturating_duration_since(*first));
                println!(
                    "restored secs={} bytes={bytes} received={} hwm_kib={} rss_kib={}",
                    took.map_or(-1.0, |t| t.as_secs_f64()),
                    handler.received.load(Ordering::Relaxed),
                    status_kib("VmHWM:"),
                    status_kib("VmRSS:")
                );
            }
            Event::Failed(reason) => {
                println!("failed reason=the restored snapshot is wrong: {reason}");
                code = 2;
            }
            Event::Line(line) => match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["peer", addr] => match addr.parse() {
                    Ok(addr) => transport.set_peer(other, addr),
                    Err(e) => println!("failed reason=bad address {addr}: {e}"),
                },
                ["mark"] => println!(
                    "marked attempted={} delivered={}",
                    sent.attempted.load(Ordering::Relaxed),
                    sent.delivered.load(Ordering::Relaxed)
                ),
                ["report"] => println!(
                    "report attempted={} delivered={} hwm_kib={} rss_kib={}",
                    sent.attempted.load(Ordering::Relaxed),
                    sent.delivered.load(Ordering::Relaxed),
                    status_kib("VmHWM:"),
                    status_kib("VmRSS:")
                ),
                ["take"] => match take(runtime, &raft, taking.as_deref(), args.size).await {
                    Ok(line) => println!("{line}"),
                    Err(BenchError(reason)) => println!("failed reason={reason}"),
                },
                ["quit"] => break,
                _ => println!("failed reason=unknown command {line:?}"),
            },
            Event::Eof => break,
        }
        let _ = std::io::stdout().flush();
    }
    raft.shutdown().await;
    server.shutdown().await;
    transport.shutdown();
    Ok(code)
}

/// The taking node: once it leads, proposes [`TAKE_AFTER`] commands (the first makes its
/// state the data) and waits until the policy's snapshot is stored; returns the `taken`
/// line.
async fn take(
    runtime: &SmolRuntime,
    raft: &Raft<(), ()>,
    taking: Option<&Taking>,
    size: u64,
) -> Result<String, BenchError> {
    use raft_traits::Runtime as _;
    let taking = taking.ok_or_else(|| BenchError("this node takes no snapshots".into()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !raft.state().1 {
        if Instant::now() > deadline {
            return Err(BenchError("the taker did not become leader in 10 s".into()));
        }
        runtime.sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..TAKE_AFTER {
        raft.propose(())
            .await
            .map_err(|e| BenchError(format!("a write failed: {e}")))?;
    }
    let deadline = Instant::now() + bound(size, 300);
    let stored = loop {
        let status = raft.status();
        if status.snapshot.index > LogIndex::ZERO {
            break Instant::now();
        }
        if status.stopped || Instant::now() > deadline {
            return Err(BenchError(format!(
                "no snapshot was stored (written {} bytes): {status:?}",
                taking.written.load(Ordering::Relaxed)
            )));
        }
        runtime.sleep(Duration::from_millis(1)).await;
    };
    let started = taking
        .started
        .get()
        .ok_or_else(|| BenchError("a snapshot was stored, not streamed".into()))?;
    let ended = taking.ended.get().copied().unwrap_or(stored);
    Ok(format!(
        "taken secs={} write_secs={} written={} index={} hwm_kib={} rss_kib={}",
        stored.saturating_duration_since(*started).as_secs_f64(),
        ended.saturating_duration_since(*started).as_secs_f64(),
        taking.written.load(Ordering::Relaxed),
        raft.status().snapshot.index.0,
        status_kib("VmHWM:"),
        status_kib("VmRSS:")
    ))
}

// ---------------------------------------------------------------------------------------
// The parent's side.

/// What the scenario is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) chunk: usize,
    pub(crate) window: usize,
    pub(crate) seed: u64,
    /// Test hook: the leader's store gets this byte inverted (the checksums made over
    /// the inverted data) and the leader does not check what it restores at start, so
    /// that only the follower's byte check can notice.
    pub(crate) flip_byte: Option<u64>,
}

/// A child node process and the lines it prints.
struct NodeProcess {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: smol::channel::Receiver<String>,
}

type Fields = BTreeMap<String, String>;

impl NodeProcess {
    fn start(name: &'static str, args: Vec<String>) -> Result<Self, BenchError> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError(format!("cannot find raft-bench itself: {e}")))?;
        let mut child = std::process::Command::new(exe)
            .arg(NODE_COMMAND)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError(format!("cannot start the {name}: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError(format!("no stdout from the {name}")))?;
        let (tx, lines) = smol::channel::unbounded();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send_blocking(line).is_err() {
                    break;
                }
            }
        });
        Ok(NodeProcess {
            name,
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, line: &str) -> Result<(), BenchError> {
        let name = self.name;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| BenchError(format!("the {name}'s input is closed")))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| BenchError(format!("cannot talk to the {name}: {e}")))
    }

    /// Waits up to `within` for a line tagged `tag`; a `failed` line, or the process
    /// ending, is an error.
    async fn expect(&mut self, tag: &str, within: Duration) -> Result<Fields, BenchError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = smol::future::or(async { self.lines.recv().await.ok() }, async {
                smol::Timer::after(left).await;
                None
            })
            .await;
            let Some(line) = line else {
                let status = self.child.try_wait().ok().flatten();
                return Err(BenchError(match status {
                    Some(status) => format!("the {} ended ({status}) before `{tag}`", self.name),
                    None => format!("no `{tag}` from the {} within {within:?}", self.name),
                }));
            };
            let fields = parse_line(&line);
            match fields.get("").map(String::as_str) {
                Some(t) if t == tag => return Ok(fields),
                Some("failed") => {
                    return Err(BenchError(format!(
                        "the {}: {}",
                        self.name,
                        fields.get("reason").map_or("", String::as_str)
                    )));
                }
                _ => {}
            }
        }
    }

    /// A line already printed, if any, without waiting.
    fn printed(&self) -> Option<Fields> {
        self.lines.try_recv().ok().map(|line| parse_line(&line))
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) -> Result<(), BenchError> {
        self.child
            .kill()
            .and_then(|()| self.child.wait())
            .map(drop)
            .map_err(|e| BenchError(format!("cannot kill the {}: {e}", self.name)))
    }

    /// Asks it to stop and waits (up to 20 s) for it to exit; kills it if it does not.
    async fn quit(mut self) -> Result<(), BenchError> {
        let _ = self.send("quit");
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(BenchError(format!(
                        "the {} exited with {status}",
                        self.name
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
                _ => {
                    self.kill()?;
                    return Err(BenchError(format!("the {} did not stop", self.name)));
                }
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // A process left behind by a failed run: gone with the run.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tag k=v k=v ...` (the tag under the key ""); `reason=` takes the rest of the line.
fn parse_line(line: &str) -> Fields {
    let mut fields = Fields::new();
    let (head, reason) = match line.split_once(" reason=") {
        Some((head, reason)) => (head, Some(reason)),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    if let Some(tag) = words.next() {
        fields.insert(String::new(), tag.to_string());
    }
    for word in words {
        if let Some((key, value)) = word.split_once('=') {
            fields.insert(key.to_string(), value.to_string());
        }
    }
    if let Some(reason) = reason {
        fields.insert("reason".into(), reason.to_string());
    }
    fields
}

fn number<T: std::str::FromStr>(fields: &Fields, key: &str) -> Result<T, BenchError> {
    fields
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError(format!("no number `{key}` in {fields:?}")))
}

/// Writes the leader's store in `dir`: term 1, and the snapshot of `data` covering
/// [`SNAPSHOT_AT`] with the two members, written piece by piece (its checksum computed
/// in a first pass).
async fn build_leader_store(dir: &Path, data: Data, flip: Option<u64>) -> Result<(), BenchError> {
    let fail =
        |e: raft_traits::StorageError| BenchError(format!("building the leader's store: {e}"));
    let piece = |offset: u64, buf: &mut Vec<u8>| {
        let len = (data.size - offset).min(BUILD_PIECE as u64) as usize;
        buf.resize(len, 0);
        data.fill_at(offset, buf);
        if let Some(flip) = flip
            && (offset..offset + len as u64).contains(&flip)
        {
            buf[(flip - offset) as usize] ^= 0xff;
        }
    };
    let mut buf = Vec::with_capacity(BUILD_PIECE);
    let mut checksum = SnapshotChecksum::new(SNAPSHOT_AT);
    let mut offset = 0;
    while offset < data.size {
        piece(offset, &mut buf);
        checksum.update(&buf);
        offset += buf.len() as u64;
    }
    let descriptor = SnapshotDescriptor {
        meta: SnapshotMeta {
            last_included: SNAPSHOT_AT,
            membership: Membership::from_voters(members()),
        },
        size: data.size,
        checksum: checksum.value(),
    };
    let mut store: FileStorage<()> = FileStorage::open(dir).map_err(fail)?;
    store
        .save_hard_state(HardState {
            term: SNAPSHOT_AT.term,
            voted_for: None,
        })
        .await
        .map_err(fail)?;
    store.begin_snapshot(descriptor).await.map_err(fail)?;
    let mut offset = 0;
    while offset < data.size {
        piece(offset, &mut buf);
        let len = buf.len() as u64;
        store
            .write_snapshot_chunk(offset, Bytes::copy_from_slice(&buf))
            .await
            .map_err(fail)?;
        offset += len;
    }
    store.finish_snapshot().await.map_err(fail)?;
    Ok(())
}

/// What taking a snapshot cost the taking node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Taken {
    pub(crate) size: u64,
    /// From the state machine's first write to the snapshot stored.
    pub(crate) secs: f64,
    pub(crate) growth_kib: u64,
    pub(crate) baseline_kib: u64,
}

/// The taking phase: a one-node cluster on the file store whose snapshot policy takes a
/// `size`-byte snapshot of its state machine, which streams it into storage; then the
/// stored snapshot is read back and every byte checked.
pub(crate) async fn take_snapshot(options: &Options, size: u64) -> Result<Taken, BenchError> {
    let data = Data {
        seed: options.seed,
        size: size.max(HEADER),
    };
    let size = data.size;
    let scratch = ScratchDir::new(&format!("stream-{size}-take"))?;
    let dir = scratch.0.join("taker");
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut taker = NodeProcess::start(
        "taker",
        node_args("taker", &dir, loopback, None, data, options),
    )?;
    let ready = taker.expect("ready", Duration::from_secs(30)).await?;
    check_reset(&ready)?;
    let baseline: u64 = number(&ready, "rss_kib")?;
    taker.send("take")?;
    let taken = taker.expect("taken", bound(size, 300)).await?;
    taker.quit().await?;
    let written: u64 = number(&taken, "written")?;
    if written != size {
        return Err(BenchError(format!(
            "the state machine wrote {written} bytes of {size}"
        )));
    }

    // Read back what was stored.
    let fail = |e: raft_traits::StorageError| BenchError(format!("the taken snapshot: {e}"));
    let mut store: FileStorage<()> = FileStorage::open(&dir).map_err(fail)?;
    store.recover().await.map_err(fail)?;
    let (descriptor, reader) = store
        .open_snapshot()
        .await
        .map_err(fail)?
        .ok_or_else(|| BenchError("the taker stored no snapshot".into()))?;
    if descriptor.size != size || descriptor.meta.last_included.index == LogIndex::ZERO {
        return Err(BenchError(format!(
            "the taker stored {descriptor:?}, not {size} bytes"
        )));
    }
    verify(reader.as_ref(), data, true)
        .await
        .map_err(|reason| BenchError(format!("the taken snapshot is wrong: {reason}")))?;
    Ok(Taken {
        size,
        secs: number(&taken, "secs")?,
        growth_kib: number::<u64>(&taken, "hwm_kib")?.saturating_sub(baseline),
        baseline_kib: baseline,
    })
}

/// One transfer's figures.
#[derive(Clone, Debug, Default)]
pub(crate) struct Transfer {
    pub(crate) size: u64,
    /// From the follower's first piece to its state machine restored (and checked).
    pub(crate) secs: f64,
    pub(crate) sender_growth_kib: u64,
    pub(crate) receiver_growth_kib: u64,
    /// The baselines the growths are measured from.
    pub(crate) sender_baseline_kib: u64,
    pub(crate) receiver_baseline_kib: u64,
    /// For a resumed transfer.
    pub(crate) resume: Option<Resumed>,
}

/// What a transfer interrupted by a SIGKILL of the follower cost.
#[derive(Clone, Debug, Default)]
pub(crate) struct Resumed {
    /// The bytes the restarted follower's store held of the pending snapshot.
    pub(crate) durable: u64,
    /// The bytes delivered to the restarted follower beyond the `size - durable` it
    /// lacked: data it already held, sent again.
    pub(crate) resent: i64,
    /// All snapshot bytes the leader handed its transport over the whole transfer, less
    /// the size: pieces lost with the killed process and attempts while it was down
    /// included.
    pub(crate) attempted_extra: i64,
}

fn node_args(
    role: &str,
    dir: &Path,
    listen: SocketAddr,
    peer: Option<SocketAddr>,
    data: Data,
    options: &Options,
) -> Vec<String> {
    let mut args = vec![
        "--role".into(),
        role.into(),
        "--dir".into(),
        dir.display().to_string(),
        "--listen".into(),
        listen.to_string(),
        "--seed".into(),
        data.seed.to_string(),
        "--size".into(),
        data.size.to_string(),
        "--chunk".into(),
        options.chunk.to_string(),
        "--window".into(),
        options.window.to_string(),
    ];
    if let Some(peer) = peer {
        args.extend(["--peer".into(), peer.to_string()]);
    }
    if role == "leader" && options.flip_byte.is_some() {
        // Its store is wrong on purpose: the leader would refuse to start from it.
        args.push("--unchecked".into());
    }
    args
}

/// Generous bounds for a step: the machine is shared and slow at times.
fn bound(size: u64, per_gib: u64) -> Duration {
    Duration::from_secs(30 + per_gib * size.div_ceil(1 << 30))
}

/// One transfer of a `size`-byte snapshot; with `interrupt`, the follower is killed once
/// its pending snapshot holds half the data, and restarted on its directory.
pub(crate) async fn transfer(
    options: &Options,
    size: u64,
    interrupt: bool,
) -> Result<Transfer, BenchError> {
    let data = Data {
        seed: options.seed,
        size: size.max(HEADER),
    };
    let size = data.size;
    let scratch = ScratchDir::new(&format!(
        "stream-{size}-{}",
        if interrupt { "resume" } else { "send" }
    ))?;
    let (leader_dir, follower_dir) = (scratch.0.join("leader"), scratch.0.join("follower"));
    build_leader_store(&leader_dir, data, options.flip_byte).await?;

    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut leader = NodeProcess::start(
        "leader",
        node_args("leader", &leader_dir, loopback, None, data, options),
    )?;
    let ready = leader.expect("ready", bound(size, 120)).await?;
    check_reset(&ready)?;
    let leader_addr: SocketAddr = number(&ready, "addr")?;
    let leader_baseline: u64 = number(&ready, "rss_kib")?;
    let follower_args = |listen| {
        node_args(
            "follower",
            &follower_dir,
            listen,
            Some(leader_addr),
            data,
            options,
        )
    };
    let mut follower = NodeProcess::start("follower", follower_args(loopback))?;
    let mut follower_ready = follower.expect("ready", Duration::from_secs(30)).await?;
    check_reset(&follower_ready)?;
    let follower_addr: SocketAddr = number(&follower_ready, "addr")?;
    leader.send(&format!("peer {follower_addr}"))?;

    let mut resume = None;
    if interrupt {
        let pending = follower_dir.join("snapshot.pending");
        let deadline = Instant::now() + bound(size, 300);
        loop {
            let written = std::fs::metadata(&pending).map_or(0, |m| m.len());
            if written >= size / 2 {
                break;
            }
            if let Some(fields) = follower.printed() {
                return Err(BenchError(format!(
                    "the follower said {fields:?} before it was interrupted"
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError(format!(
                    "the follower's pending snapshot never reached half of {size} bytes"
                )));
            }
            smol::Timer::after(Duration::from_millis(1)).await;
        }
        follower.kill()?;
        leader.send("mark")?;
        let marked = leader.expect("marked", Duration::from_secs(10)).await?;
        follower = NodeProcess::start("restarted follower", follower_args(follower_addr))?;
        follower_ready = follower.expect("ready", Duration::from_secs(30)).await?;
        check_reset(&follower_ready)?;
        let durable: u64 = number(&follower_ready, "pending")?;
        resume = Some((durable, number::<u64>(&marked, "delivered")?));
    }

    let restored = follower.expect("restored", bound(size, 600)).await?;
    let checked: u64 = number(&restored, "bytes")?;
    if checked != size {
        return Err(BenchError(format!(
            "the follower checked {checked} bytes of {size}"
        )));
    }
    leader.send("report")?;
    let report = leader.expect("report", Duration::from_secs(10)).await?;
    follower.quit().await?;
    leader.quit().await?;

    let secs: f64 = number(&restored, "secs")?;
    if secs <= 0.0 {
        return Err(BenchError(format!(
            "the follower saw no snapshot piece before it restored: {restored:?}"
        )));
    }
    let growth = |peak: u64, baseline: u64| peak.saturating_sub(baseline);
    let follower_baseline: u64 = number(&follower_ready, "rss_kib")?;
    let delivered: u64 = number(&report, "delivered")?;
    let attempted: u64 = number(&report, "attempted")?;
    Ok(Transfer {
        size,
        secs,
        sender_growth_kib: growth(number(&report, "hwm_kib")?, leader_baseline),
        receiver_growth_kib: growth(number(&restored, "hwm_kib")?, follower_baseline),
        sender_baseline_kib: leader_baseline,
        receiver_baseline_kib: follower_baseline,
        resume: resume.map(|(durable, delivered_before)| {
            let after = delivered.saturating_sub(delivered_before);
            Resumed {
                durable,
                resent: after as i64 - (size - durable.min(size)) as i64,
                attempted_extra: attempted as i64 - size as i64,
            }
        }),
    })
}

fn check_reset(ready: &Fields) -> Result<(), BenchError> {
    match ready.get("hwm_reset").map(String::as_str) {
        Some("true") => Ok(()),
        _ => Err(BenchError(
            "cannot reset the peak RSS (/proc/self/clear_refs): no RSS figures on this system"
                .into(),
        )),
    }
}

/// `256MiB`, `1GiB`, `64KiB`, `4096`: a size in bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 256MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("unknown unit in {text:?} (KiB, MiB, GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// A size for people: MiB or GiB when whole, else KiB or bytes.
pub(crate) fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    }
    format!("{bytes} B")
}

/// One size's figures in one run, with the whole-snapshot anchor of the same run.
#[derive(Clone, Debug)]
pub(crate) struct Measured {
    pub(crate) run: usize,
    pub(crate) send: Transfer,
    pub(crate) resume: Transfer,
    pub(crate) window: u64,
    /// The anchor's MB/s and the size it ran at.
    pub(crate) anchor: Option<(f64, u64)>,
    /// The snapshot policy taking a snapshot of the size.
    pub(crate) take: Taken,
}

impl Measured {
    pub(crate) fn mbps(&self) -> f64 {
        self.send.size as f64 / 1e6 / self.send.secs
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(met: bool) -> &'static str {
    if met { "target met" } else { "missed" }
}

/// The table of the `snapshot` scenario, with a verdict per column.
pub(crate) fn table(measured: &[Measured]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "snapshot send + install (separate leader and follower processes, file store, loopback TCP)"
    );
    let _ = writeln!(
        out,
        "{:<10} {:>3} | {:>22} | {:>22} | {:>22} | {:>26} | {:>8} | {:>18} | {:>9} | {:>22}",
        "size",
        "run",
        "MB/s (>= 151)",
        "sender RSS + (< 64 MiB)",
        "receiver RSS + (< 64)",
        "resent bytes (< window)",
        "window",
        "anchor MB/s",
        "take MB/s",
        "taker RSS + (< 64 MiB)"
    );
    for m in measured {
        let mbps = m.mbps();
        let sender = mib(m.send.sender_growth_kib);
        let receiver = mib(m.send.receiver_growth_kib);
        let resent = m.resume.resume.as_ref().map_or(i64::MAX, |r| r.resent);
        let anchor = match m.anchor {
            Some((mbps, size)) if size == m.send.size => format!("{mbps:.0}"),
            Some((mbps, size)) => format!("{mbps:.0} (at {})", show_size(size)),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<10} {:>3} | {:>6.0} {:>15} | {:>5.1} MiB {:>12} | {:>5.1} MiB {:>12} | {:>11} {:>14} | {:>8} | {:>18} | {:>9.0} | {:>5.1} MiB {:>12}",
            show_size(m.send.size),
            m.run,
            mbps,
            verdict(mbps >= TARGET_MBPS),
            sender,
            verdict(sender < TARGET_RSS_MIB),
            receiver,
            verdict(receiver < TARGET_RSS_MIB),
            resent,
            verdict(resent >= 0 && (resent as u64) < m.window),
            show_size(m.window),
            anchor,
            m.take.size as f64 / 1e6 / m.take.secs,
            mib(m.take.growth_kib),
            verdict(mib(m.take.growth_kib) < TARGET_RSS_MIB)
        );
    }
    let _ = writeln!(
        out,
        "MB/s: size (10^6 bytes) over the time from the follower's first piece to its state \
         machine restored and every byte checked.\n\
         RSS +: the peak (VmHWM, reset through /proc/self/clear_refs at the baseline) less the \
         baseline (VmRSS once the node is up and idle, before the transfer), per process.\n\
         resent: bytes delivered to the restarted follower (killed by SIGKILL at 50%) beyond \
         the bytes it lacked.\n\
         take: a one-node cluster's snapshot policy (Config::snapshot_after_entries) takes \
         the snapshot, its state machine streaming it into the file store: MB/s from the \
         first piece written to the snapshot stored; taker RSS + as above; every stored byte \
         checked afterwards."
    );
    for m in measured {
        let _ = writeln!(
            out,
            "  {} run {}: {:.2} s; baselines: sender {:.1} MiB, receiver {:.1} MiB; taking \
             {:.2} s from a baseline of {:.1} MiB",
            show_size(m.send.size),
            m.run,
            m.send.secs,
            mib(m.send.sender_baseline_kib),
            mib(m.send.receiver_baseline_kib),
            m.take.secs,
            mib(m.take.baseline_kib),
        );
        if let Some(r) = &m.resume.resume {
            let _ = writeln!(
                out,
                "  {} run {}: the follower held {} of {} bytes durably at restart; resent {} \
                 bytes; the leader handed its transport {} bytes beyond the size in all \
                 (pieces lost with the killed process and attempts while it was down \
                 included); the resumed transfer's RSS +: sender {:.1} MiB, receiver \
                 (restarted) {:.1} MiB",
                show_size(m.send.size),
                m.run,
                r.durable,
                m.resume.size,
                r.resent,
                r.attempted_extra,
                mib(m.resume.sender_growth_kib),
                mib(m.resume.receiver_growth_kib),
            );
        }
    }
    out
}
