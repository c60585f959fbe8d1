//! What every case needs: a handler that answers predictably, servers, transports,
//! and a guard against hangs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use raft_net_smol::frame::{Frame, FrameKind, read_frame, write_frame};
use raft_net_smol::handshake::{Hello, Protocol};
use raft_net_smol::{TcpConfig, TcpServer, TcpTransport};
use raft_traits::{
    AppendOutcome, AppendReply, Bytes, HandlerError, IndexReply, InstallOutcome, InstallSnapshot,
    InstallSnapshotReply, LogId, LogIndex, NodeId, Request, RequestVote, Response, RpcHandler,
    Snapshot, SnapshotMeta, Term, Transport, TransportError, VoteReply, async_trait,
};
use smol::channel::{Receiver, Sender};
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;

/// The node every test transport sends to.
pub(crate) const PEER: NodeId = NodeId(2);

/// The node every test transport sends for: the sender of [`vote`], [`heartbeat`] and
/// [`snapshot`].
pub(crate) const ME: NodeId = NodeId(1);

/// Requests of this term wait in the handler until the gate opens.
pub(crate) const SLOW: Term = Term(1000);

/// Requests of this term are refused by the handler.
pub(crate) const REFUSE: Term = Term(666);

/// Requests of this term make the handler panic.
pub(crate) const PANIC: Term = Term(777);

/// How long any single step of a test may take before it counts as a hang.
pub(crate) const HANG: Duration = Duration::from_secs(120);

/// Timeouts far beyond what loopback needs, so that only the tests about timeouts see
/// any; a fast backoff, so that reconnecting is quick.
pub(crate) fn config() -> TcpConfig {
    TcpConfig {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(60),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..TcpConfig::default()
    }
}

/// Answers every request: votes are granted, entries accepted, and a snapshot's
/// `match_index` is the checksum of its data, so that the sender can check the bytes
/// arrived intact. Terms are echoed.
pub(crate) fn reply_to(request: &Request<u64>) -> Response {
    let term = request.term();
    match request {
        Request::Vote(_) => Response::Vote(VoteReply {
            term,
            granted: true,
        }),
        Request::PreVote(_) => Response::PreVote(VoteReply {
            term,
            granted: true,
        }),
        Request::TimeoutNow(_) | Request::ReadIndex(_) => Response::Index(IndexReply {
            term,
            index: None,
            refusal: None,
        }),
        Request::Append(append) => Response::Append(AppendReply {
            term,
            outcome: AppendOutcome::Success {
                match_index: append.prev_log.index.plus(append.entries.len() as u64),
            },
        }),
        Request::InstallSnapshot(install) => Response::InstallSnapshot(InstallSnapshotReply {
            term,
            outcome: InstallOutcome::Installed {
                match_index: LogIndex(checksum(&install.data)),
            },
        }),
    }
}

/// FNV-1a.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The handler of the test servers: [`reply_to`], except for [`SLOW`], [`REFUSE`] and
/// [`PANIC`].
#[derive(Debug)]
pub(crate) struct TestHandler {
    /// How many requests reached the handler.
    handled: AtomicUsize,
    open: Sender<()>,
    gate: Receiver<()>,
    started: Sender<Term>,
    started_events: Receiver<Term>,
    /// A slow request passed the gate and is answered.
    finished: Sender<()>,
    finished_events: Receiver<()>,
}

impl TestHandler {
    pub(crate) fn new() -> Arc<Self> {
        let (open, gate) = smol::channel::bounded(1);
        let (started, started_events) = smol::channel::unbounded();
        let (finished, finished_events) = smol::channel::unbounded();
        Arc::new(TestHandler {
            handled: AtomicUsize::new(0),
            open,
            gate,
            started,
            started_events,
            finished,
            finished_events,
        })
    }

    /// How many requests reached the handler so far.
    pub(crate) fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }

    /// Lets every slow request, waiting or future, through.
    pub(crate) fn open_gate(&self) {
        self.open.close();
    }

    /// Waits until a slow request has entered the handler.
    pub(crate) async fn slow_request_started(&self) {
        within("a slow request to start", self.started_events.recv())
            .await
            .unwrap();
    }

    /// Waits until a slow request has passed the gate and its handling ended.
    pub(crate) async fn slow_request_finished(&self) {
        within("a slow request to finish", self.finished_events.recv())
            .await
            .unwrap();
    }
}

#[async_trait]
impl RpcHandler<u64> for TestHandler {
    async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        match request.term() {
            REFUSE => return Err(HandlerError::Stopped),
            PANIC => panic!("the test handler panics on request (this is expected)"),
            SLOW => {
                let _ = self.started.try_send(SLOW);
                // Nothing is ever sent on the gate: this returns once it is closed.
                let _ = self.gate.recv().await;
                let _ = self.finished.try_send(());
            }
            _ => {}
        }
        Ok(reply_to(&request))
    }
}

/// A server on an ephemeral loopback port, answering with a fresh [`TestHandler`].
pub(crate) fn server(config: TcpConfig) -> (TcpServer, Arc<TestHandler>) {
    server_at(SocketAddr::from(([127, 0, 0, 1], 0)), config)
}

/// A server at `addr`, answering with a fresh [`TestHandler`].
pub(crate) fn server_at(addr: SocketAddr, config: TcpConfig) -> (TcpServer, Arc<TestHandler>) {
    let server = TcpServer::bind(addr, config).unwrap();
    let handler = TestHandler::new();
    server.serve::<u64>(handler.clone()).unwrap();
    (server, handler)
}

/// Sends `request` to [`PEER`] on a task of its own, so that it makes progress (connects,
/// waits) while the test does other things.
pub(crate) fn spawn_send(
    transport: &TcpTransport<u64>,
    request: Request<u64>,
) -> smol::Task<Result<Response, TransportError>> {
    let transport = transport.clone();
    smol::spawn(async move { transport.send(PEER, request).await })
}

/// [`ME`]'s transport, which knows [`PEER`] at `addr`.
pub(crate) fn transport(addr: SocketAddr, config: TcpConfig) -> TcpTransport<u64> {
    TcpTransport::new(config, ME, [(PEER, addr)]).unwrap()
}

pub(crate) fn vote(term: Term) -> Request<u64> {
    vote_from(ME, term)
}

pub(crate) fn vote_from(candidate: NodeId, term: Term) -> Request<u64> {
    Request::Vote(RequestVote {
        term,
        candidate,
        last_log: LogId::default(),
        transfer: false,
    })
}

/// What [`ME`]'s transport says in its handshake, with the default cluster id.
pub(crate) fn raft_hello() -> Hello {
    Hello {
        protocol: Protocol::Raft,
        cluster_id: TcpConfig::DEFAULT_CLUSTER_ID.to_owned(),
        node: Some(ME),
    }
}

/// Sends `hello` on `stream` as its first frame and returns the server's answer (a
/// welcome or a refusal), or `None` if the server closed the connection instead.
pub(crate) async fn say_hello(stream: &mut TcpStream, hello: &Hello) -> Option<Frame> {
    let mut bytes = Vec::new();
    write_frame(
        &mut bytes,
        FrameKind::Hello,
        0,
        false,
        &hello.encode().unwrap(),
    )
    .await
    .unwrap();
    stream.write_all(&bytes).await.unwrap();
    within("the server's answer to a hello", read_frame(stream, 4096))
        .await
        .unwrap()
}

/// Opens a connection to `addr` and makes [`ME`]'s handshake on it, by hand.
pub(crate) async fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = say_hello(&mut stream, &raft_hello()).await.unwrap();
    assert_eq!(answer.header.kind, FrameKind::Welcome, "{answer:?}");
    stream
}

pub(crate) fn vote_reply(term: Term) -> Response {
    Response::Vote(VoteReply {
        term,
        granted: true,
    })
}

/// An empty AppendEntries: a heartbeat.
pub(crate) fn heartbeat(term: Term) -> Request<u64> {
    Request::Append(raft_traits::AppendEntries {
        term,
        leader: ME,
        prev_log: LogId::default(),
        entries: Vec::new(),
        leader_commit: LogIndex::ZERO,
    })
}

/// A snapshot of `len` bytes that are not all alike.
pub(crate) fn snapshot(term: Term, len: usize) -> (Request<u64>, u64) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let sum = checksum(&data);
    let snapshot = Snapshot {
        meta: SnapshotMeta::default(),
        data: Bytes::from(data),
    };
    let request = Request::InstallSnapshot(Box::new(InstallSnapshot::whole(term, ME, snapshot)));
    (request, sum)
}

/// The reply a snapshot from [`snapshot`] gets.
pub(crate) fn snapshot_reply(term: Term, sum: u64) -> Response {
    Response::InstallSnapshot(InstallSnapshotReply {
        term,
        outcome: InstallOutcome::Installed {
            match_index: LogIndex(sum),
        },
    })
}

/// Awaits `future`, failing the test if it takes longer than [`HANG`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let expired = async {
        smol::Timer::after(HANG).await;
        None
    };
    match smol::future::or(async { Some(future.await) }, expired).await {
        Some(output) => output,
        None => panic!("{what} did not finish within {HANG:?}"),
    }
}
