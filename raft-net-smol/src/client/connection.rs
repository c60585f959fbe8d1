//! One multiplexed client connection to a peer.
//!
//! Requests are numbered; each waits on its own one-shot channel for the reply with its
//! number. One task per connection runs a reader, which reassembles replies and hands
//! each to the request waiting for it, next to the [writer](crate::outbox), which sends
//! requests interleaved chunk by chunk, and a sweep, which fails the requests whose
//! reply is overdue. A request that fits in one frame is written to the socket by the
//! task that makes it, when the socket takes it at once (see [`Wire::send_now`]); or, with
//! [`TcpConfig::gather_requests`], at the end of the task's turn, with the other requests
//! made to the peer in that turn (see [`outbox::send_soon`]).
//!
//! The sweep times every request of the connection with one timer, ticking an eighth of
//! the request timeout apart, rather than one timer per request: arming an OS timer
//! wakes the thread waiting on the reactor (an `eventfd` write and a context switch), a
//! cost every request paid while the timer almost never fires. A request therefore
//! times out between its timeout and an eighth of it later.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use raft_traits::NodeId;
use smol::channel::{Sender, WeakSender};
use smol::io::BufReader;
use smol::net::TcpStream;

use crate::config::TcpConfig;
use crate::error::{ConnectionError, FrameError};
use crate::executor::{Executor, Task};
use crate::frame::{FrameKind, read_frame};
use crate::outbox::{self, Outgoing, Wire, write_frames};
use crate::reassembly::Reassembler;
use crate::stream::{Reader, Writer};

/// The size of the read buffer that lets small frames arrive in one system call.
const READ_BUFFER: usize = 64 << 10;

/// A complete reply: a response or an error message, still encoded.
#[derive(Debug)]
pub(crate) struct Reply {
    /// [`FrameKind::Response`] or [`FrameKind::Error`].
    pub(crate) kind: FrameKind,
    pub(crate) body: Vec<u8>,
}

/// Why a request ended without a reply.
#[derive(Debug)]
pub(crate) enum NoReply {
    /// The connection ended first, for this reason.
    Closed(String),
    /// The reply did not come within the request timeout.
    TimedOut,
}

/// What a waiting request receives: its reply, or why none came.
type ReplySender = oneshot::Sender<Result<Reply, NoReply>>;

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    reply: ReplySender,
    /// When the sweep fails it as timed out; `None` if so far ahead it never comes.
    deadline: Option<Instant>,
}

/// The requests waiting for a reply on a connection; `None` once the connection has
/// ended, so that no request can start waiting on a dead connection.
#[derive(Debug)]
struct Waiting {
    calls: Mutex<Option<HashMap<u64, Pending>>>,
    /// When the connection opened, and how long after that a request last started or
    /// a reply last arrived (µs; an atomic, to keep a lock off every request): the
    /// server closes a connection idle for its idle timeout, and the client must not
    /// race it.
    opened: Instant,
    last_used_micros: AtomicU64,
    /// Why the connection ended (the first reason given), once it has.
    ended: OnceLock<String>,
}

impl Waiting {
    fn new() -> Self {
        Waiting {
            calls: Mutex::new(Some(HashMap::new())),
            opened: Instant::now(),
            last_used_micros: AtomicU64::new(0),
            ended: OnceLock::new(),
        }
    }

    fn micros_open(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_used_micros
            .fetch_max(self.micros_open(), Ordering::Relaxed);
    }

    /// How long nothing has been going on, or `None` while a request waits.
    fn idle_for(&self) -> Option<Duration> {
        let waiting = self.lock().as_ref().is_some_and(|calls| !calls.is_empty());
        let idle = self
            .micros_open()
            .saturating_sub(self.last_used_micros.load(Ordering::Relaxed));
        (!waiting).then(|| Duration::from_micros(idle))
    }

    /// The map is only ever changed by single insertions and removals, which cannot
    /// leave it half-updated: a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, Option<HashMap<u64, Pending>>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_waiting(&self, request_id: u64) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|calls| calls.contains_key(&request_id))
    }

    fn take(&self, request_id: u64) -> Option<ReplySender> {
        self.touch();
        self.lock()
            .as_mut()
            .and_then(|calls| calls.remove(&request_id))
            .map(|pending| pending.reply)
    }

    /// Removes the requests whose deadline has passed at `now`, and returns them.
    fn take_overdue(&self, now: Instant) -> Vec<(u64, ReplySender)> {
        let mut calls = self.lock();
        let Some(calls) = calls.as_mut() else {
            return Vec::new();
        };
        let overdue: Vec<u64> = calls
            .iter()
            .filter(|(_, pending)| pending.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        overdue
            .into_iter()
            .filter_map(|id| calls.remove(&id).map(|pending| (id, pending.reply)))
            .collect()
    }

    /// Ends the connection's bookkeeping: every waiting request fails with `reason`.
    fn fail_all(&self, reason: &str) {
        let calls = {
            let mut calls = self.lock();
            // Under the lock, so that a request refused for want of a map finds why.
            let _ = self.ended.set(reason.to_owned());
            calls.take()
        };
        for (_, pending) in calls.into_iter().flatten() {
            // The request may have stopped waiting; then nobody needs to know.
            let _ = pending.reply.send(Err(NoReply::Closed(reason.to_owned())));
        }
    }
}

/// An open connection to one peer, shared by every request to it.
///
/// Dropping the last reference closes the socket and cancels the connection's task.
#[derive(Debug)]
pub(crate) struct Connection {
    peer: NodeId,
    waiting: Arc<Waiting>,
    outbox: Sender<Outgoing>,
    /// The socket's writing side, which a small request is written to at once.
    wire: Arc<Wire<Writer>>,
    stream: TcpStream,
    next_request_id: AtomicU64,
    request_timeout: Duration,
    /// [`TcpConfig::gather_requests`].
    gather: bool,
    _task: Task,
}

impl Connection {
    /// Starts serving a fresh connection to `peer`: `stream` is its socket, `reader` and
    /// `writer` its two sides (the socket's, or a TLS session's on it).
    pub(crate) fn open(
        peer: NodeId,
        stream: TcpStream,
        reader: Reader,
        writer: Writer,
        config: &TcpConfig,
        executor: &Executor,
    ) -> Arc<Connection> {
        let waiting = Arc::new(Waiting::new());
        let (outbox, outgoing) = smol::channel::unbounded();
        let wire = Arc::new(Wire::new(writer, config.chunk_size));
        let task = {
            let wire = Arc::clone(&wire);
            let waiting = Arc::clone(&waiting);
            let stream = stream.clone();
            let config = config.clone();
            // Weak, so that the writer still ends once the connection's handle is gone.
            let abandon = outbox.downgrade();
            let timers = executor.clone();
            // Made before the task, not in it: a runtime that has stopped drops the
            // task before its first poll, and the connection must end then too.
            let ending = Ending {
                waiting,
                stream,
                reason: "the connection's task was dropped (its runtime stopped)".to_owned(),
            };
            executor.spawn(async move {
                let mut ending = ending;
                let waiting = &ending.waiting;
                let reading = read_replies(reader, waiting, &config);
                let writing = write_frames(&wire, outgoing);
                let sweeping = sweep(waiting, &abandon, &timers, config.request_timeout);
                ending.reason =
                    match smol::future::or(sweeping, smol::future::or(reading, writing)).await {
                        Ok(()) => "the peer closed the connection".to_owned(),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "connection failed");
                            format!("the connection failed: {e}")
                        }
                    };
            })
        };
        Arc::new(Connection {
            peer,
            waiting,
            outbox,
            wire,
            stream,
            next_request_id: AtomicU64::new(1),
            request_timeout: config.request_timeout,
            gather: config.gather_requests,
            _task: task,
        })
    }

    /// Whether the connection can still carry requests.
    pub(crate) fn is_open(&self) -> bool {
        self.waiting.lock().is_some()
    }

    /// Why the connection ended, if it has.
    pub(crate) fn ended_because(&self) -> Option<&str> {
        self.waiting.ended.get().map(String::as_str)
    }

    /// Whether no request has used the connection for so long (three quarters of the
    /// server's idle timeout, which both ends configure alike) that the server may be
    /// closing it as idle right now: a request sent then could be lost in the race, so
    /// the client retires the connection first and opens a fresh one.
    pub(crate) fn is_stale(&self, idle_timeout: Duration) -> bool {
        self.waiting
            .idle_for()
            .is_some_and(|idle| idle >= idle_timeout / 4 * 3)
    }

    /// Queues a request with the encoded body `body`. Gives the body back if the
    /// connection has already ended, in which case nothing was sent.
    pub(crate) fn start(self: &Arc<Self>, body: Vec<u8>) -> Result<Call, Vec<u8>> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (reply_sender, reply) = oneshot::channel();
        let deadline = Instant::now().checked_add(self.request_timeout);
        {
            let mut calls = self.waiting.lock();
            let Some(calls) = calls.as_mut() else {
                return Err(body);
            };
            let pending = Pending {
                reply: reply_sender,
                deadline,
            };
            calls.insert(request_id, pending);
            self.waiting.touch();
        }
        let (wire, outbox, kind) = (&self.wire, &self.outbox, FrameKind::Request);
        let sent = if self.gather {
            outbox::send_soon(wire, outbox, kind, request_id, body)
        } else {
            outbox::send(wire, outbox, kind, request_id, body)
        };
        match sent {
            Ok(()) => {}
            // The writer is gone, so the connection is ending; nothing was sent, so the
            // body goes back to be tried on another connection.
            Err(Outgoing::Message { body, .. }) => {
                self.waiting.take(request_id);
                return Err(body);
            }
            // Part of it may have reached the peer: this request fails, and is not tried
            // again as an unsent one would be.
            Err(Outgoing::Flush | Outgoing::Abandon(_)) => {
                if let Some(reply) = self.waiting.take(request_id) {
                    let reason = "the connection ended while the request was sent".to_owned();
                    let _ = reply.send(Err(NoReply::Closed(reason)));
                }
            }
        }
        Ok(Call {
            connection: Arc::clone(self),
            request_id,
            reply: Some(reply),
        })
    }

    /// Ends the connection: every waiting request fails with `reason` and the socket is
    /// shut down, which stops the connection's task.
    pub(crate) fn close(&self, reason: &str) {
        tracing::debug!(peer = %self.peer, reason, "closing connection");
        self.waiting.fail_all(reason);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.waiting.fail_all("the connection was dropped");
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Ends a connection when its task ends, however it ends: every waiting request fails
/// with `reason`, later ones are refused, and the socket is shut down (which also wakes
/// anything still blocked on it). Dropped with the task's future too, unfinished, when
/// its runtime stops: without it, the requests would wait for a reader and a timeout
/// sweep that are gone, for ever.
struct Ending {
    waiting: Arc<Waiting>,
    stream: TcpStream,
    reason: String,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.waiting.fail_all(&self.reason);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// One request in flight. Dropping it before its reply arrived (a timeout, or the
/// caller giving up) abandons the request: its reply will be ignored, and if its body is
/// still being sent the rest is not.
#[derive(Debug)]
pub(crate) struct Call {
    connection: Arc<Connection>,
    request_id: u64,
    reply: Option<oneshot::Receiver<Result<Reply, NoReply>>>,
}

impl Call {
    /// Waits for the reply, for the request timeout, or for the reason the connection
    /// ended first.
    pub(crate) async fn reply(&mut self) -> Result<Reply, NoReply> {
        let Some(reply) = self.reply.as_mut() else {
            return Err(NoReply::Closed("the reply was already taken".to_owned()));
        };
        let result = match reply.await {
            Ok(result) => result,
            Err(oneshot::Canceled) => Err(NoReply::Closed("the connection closed".to_owned())),
        };
        self.reply = None;
        result
    }

    /// The connection the request travels on.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.reply.is_some() && self.connection.waiting.take(self.request_id).is_some() {
            let _ = self
                .connection
                .outbox
                .try_send(Outgoing::Abandon(self.request_id));
        }
    }
}

/// Reads replies and hands each complete one to the request waiting for it, until the
/// peer closes the connection (`Ok`) or breaks the protocol.
async fn read_replies(
    reader: Reader,
    waiting: &Waiting,
    config: &TcpConfig,
) -> Result<(), ConnectionError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut reassembler = Reassembler::new(
        config.max_message_len(),
        config.max_buffered_per_connection_len(),
        None,
    );
    loop {
        let Some(frame) = read_frame(&mut reader, config.max_frame_size).await? else {
            return Ok(());
        };
        let header = frame.header;
        match header.kind {
            FrameKind::Response | FrameKind::Error => {
                if !waiting.is_waiting(header.request_id) {
                    // The request timed out or was abandoned: its reply is of no use.
                    reassembler.discard(header.request_id);
                    continue;
                }
                if let Some(message) = reassembler.push(&header, frame.body)?
                    && let Some(reply) = waiting.take(message.request_id)
                {
                    let _ = reply.send(Ok(Reply {
                        kind: message.kind,
                        body: message.body,
                    }));
                }
            }
            FrameKind::Cancel => {
                reassembler.discard(header.request_id);
                if let Some(reply) = waiting.take(header.request_id) {
                    let reason = "the peer abandoned its reply".to_owned();
                    let _ = reply.send(Err(NoReply::Closed(reason)));
                }
            }
            FrameKind::Request | FrameKind::Hello | FrameKind::Welcome | FrameKind::Refusal => {
                return Err(FrameError::UnexpectedKind { kind: header.kind }.into());
            }
        }
    }
}

/// Fails the requests whose reply is overdue, an eighth of `request_timeout` apart (at
/// least a millisecond), and stops sending what is left of their bodies. Never ends.
async fn sweep(
    waiting: &Waiting,
    outbox: &WeakSender<Outgoing>,
    executor: &Executor,
    request_timeout: Duration,
) -> Result<(), ConnectionError> {
    let tick = (request_timeout / 8).max(Duration::from_millis(1));
    loop {
        executor.sleep(tick).await;
        let overdue = waiting.take_overdue(Instant::now());
        if overdue.is_empty() {
            continue;
        }
        let outbox = outbox.upgrade();
        for (request_id, reply) in overdue {
            // The request may have stopped waiting; then nobody needs to know.
            let _ = reply.send(Err(NoReply::TimedOut));
            if let Some(outbox) = &outbox {
                let _ = outbox.try_send(Outgoing::Abandon(request_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use smol::net::TcpListener;

    use super::*;
    use crate::SmolRuntime;
    use crate::test_support::{Valve, eventually};

    /// A request written at once into a socket that is full stays in the wire; the
    /// connection's writer must be told, or nobody would send it when the socket drains.
    #[test]
    fn a_request_a_full_socket_did_not_take_is_sent_once_it_drains() {
        smol::block_on(async {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            // The peer never writes: the reader waits throughout.
            let (_peer, _) = listener.accept().await.unwrap();
            let valve = Valve::new(false, usize::MAX);
            // Far beyond the wait below: a request that times out is abandoned, which
            // would also wake the writer.
            let config = TcpConfig {
                request_timeout: Duration::from_secs(600),
                ..TcpConfig::default()
            };
            let connection = Connection::open(
                NodeId(2),
                stream.clone(),
                Box::new(stream),
                Box::new(valve.clone()),
                &config,
                &Executor::new(SmolRuntime::global()),
            );
            // The writer's task has sent what there was (nothing) and waits for commands.
            assert!(eventually(|| valve.flushes() > 0), "the writer never ran");
            let _call = connection.start(b"request".to_vec()).expect("open");
            assert!(valve.sent().is_empty(), "the socket is full");
            valve.open();
            assert!(
                eventually(|| !valve.sent().is_empty()),
                "the request was left in the wire"
            );
        });
    }
}
