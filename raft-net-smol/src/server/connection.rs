//! Serving one accepted connection: the handshake, then read requests, answer each
//! concurrently, write the replies.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures_rustls::TlsAcceptor;
use raft_traits::{Codec, NodeId};
use serde::Serialize;
use smol::channel::Sender;
use smol::io::BufReader;
use smol::net::TcpStream;

use crate::config::TcpConfig;
use crate::error::{ConnectionError, FrameError, HandshakeError, LimitError};
use crate::executor::Executor;
use crate::frame::{FrameKind, read_frame};
use crate::handshake::{self, Hello};
use crate::outbox::{self, Outgoing, Wire, write_frames};
use crate::reactor::Reactor;
use crate::reassembly::{Budget, Reassembler};
use crate::service::{Respond, Service};
use crate::stream::{self, Reader, Writer};
use crate::tls::{self, TlsConfig};

/// The size of the read buffer that lets small frames arrive in one system call.
const READ_BUFFER: usize = 64 << 10;

/// What a connection needs from its server.
pub(super) struct Setup<K> {
    pub(super) config: TcpConfig,
    pub(super) codec: K,
    /// The server's side of the handshake, and its encoding.
    pub(super) hello: Hello,
    pub(super) hello_bytes: Vec<u8>,
    /// The bytes all of the server's connections may buffer together.
    pub(super) budget: Arc<Budget>,
    /// TLS settings, if connections must speak TLS.
    pub(super) tls: Option<TlsConfig>,
    /// Where the requests are handled and the timeouts timed.
    pub(super) executor: Executor,
}

/// Serves `stream` until the client closes it (`Ok`) or breaks the protocol, goes over a
/// limit, or the socket fails.
///
/// The connection starts with the [handshake](crate::handshake), within the configured
/// `handshake_timeout`; no request is read before it succeeded. Then each complete
/// request is answered concurrently with the others, so a slow request does not hold up
/// the others on the connection; its reply goes back through the connection's
/// interleaving writer with the request's id. A handler that is still running when the
/// connection ends completes, and its reply is dropped.
pub(super) async fn serve<S: Service, K: Codec>(
    stream: TcpStream,
    service: Arc<S>,
    setup: Setup<K>,
) -> Result<(), ConnectionError> {
    let Setup {
        config,
        codec,
        hello,
        hello_bytes,
        budget,
        tls,
        executor,
    } = setup;
    let opening = open(
        &stream,
        executor.reactor(),
        tls,
        &hello,
        &hello_bytes,
        config.max_frame_size,
    );
    let after = config.handshake_timeout;
    let timer = executor.sleep(after);
    let expired = async {
        timer.await;
        Err(LimitError::HandshakeTimeout { after }.into())
    };
    let Some((client, reader, writer)) = smol::future::or(opening, expired).await? else {
        // Closed before saying anything: a port probe, not worth a warning.
        return Ok(());
    };

    let activity = Arc::new(Activity::new());
    let (outbox, outgoing) = smol::channel::unbounded();
    // A request body that does not decode, or names another sender than the handshake,
    // is found by the task handling it, which reports it here to close the connection.
    let (fatal, fatal_errors) = smol::channel::bounded::<ConnectionError>(1);
    let wire = Arc::new(Wire::new(writer, config.chunk_size));
    let writing = write_frames(&wire, outgoing);
    let reassembler = Reassembler::new(
        config.max_message_len(),
        config.max_buffered_per_connection_len(),
        Some(budget),
    );
    let requests = Requests {
        service,
        codec,
        max_message_len: config.max_message_len(),
        announced: client.node,
        outbox,
        wire: Arc::clone(&wire),
        fatal,
        activity: Arc::clone(&activity),
        executor: executor.clone(),
    };
    let reading = read_requests(reader, reassembler, config.max_frame_size, requests);
    let idling = watch_idle(&activity, config.idle_timeout, &executor);
    let failing = async {
        match fatal_errors.recv().await {
            Ok(error) => Err(error),
            // The reader holds a sender as long as it runs; if all are gone, the reader
            // has finished and another branch ends the connection.
            Err(_) => std::future::pending().await,
        }
    };
    smol::future::or(
        failing,
        smol::future::or(idling, smol::future::or(reading, writing)),
    )
    .await
}

/// Opens a connection: the TLS handshake if `tls` is given, then the connection's own
/// [handshake](crate::handshake). Returns the client's hello and the connection's two
/// sides, or `None` if the client closed the connection before sending its hello. The
/// socket waits in `reactor` if given (see [`stream::Transport::on`]).
async fn open(
    stream: &TcpStream,
    reactor: Option<Arc<Reactor>>,
    tls: Option<TlsConfig>,
    hello: &Hello,
    hello_bytes: &[u8],
    max_frame_size: u32,
) -> Result<Option<(Hello, BufReader<Reader>, Writer)>, ConnectionError> {
    let (reader, mut writer, certificate) = match &tls {
        None => {
            let (reader, writer) = stream::plain(stream, reactor);
            (reader, writer, None)
        }
        Some(tls) => {
            let session = TlsAcceptor::from(tls.server())
                .accept(stream::Transport::on(stream, reactor))
                .await
                .map_err(|e| HandshakeError::Tls {
                    reason: e.to_string(),
                })?;
            let certificate = session
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .cloned();
            let (reader, writer) = stream::split(session);
            (reader, writer, certificate)
        }
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    // Under TLS, a hello may speak only for the node the client's certificate names.
    let vouch = |client: &Hello| match (&tls, client.node) {
        (Some(_), Some(node)) => tls::check_node(certificate.as_ref(), node),
        _ => Ok(()),
    };
    let client = handshake::accept(
        &mut reader,
        &mut writer,
        hello,
        hello_bytes,
        &vouch,
        max_frame_size,
    )
    .await?;
    Ok(client.map(|client| (client, reader, writer)))
}

/// When the connection last received a frame or finished a request, and how many of
/// its requests are being handled.
#[derive(Debug)]
struct Activity {
    last: Mutex<Instant>,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            last: Mutex::new(Instant::now()),
            handling: AtomicUsize::new(0),
        }
    }

    /// An instant is written whole: a poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, Instant> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.lock() = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.lock()
    }

    /// Counts a request as handled until the returned guard is dropped.
    fn handle(self: &Arc<Self>) -> Handling {
        self.handling.fetch_add(1, Ordering::SeqCst);
        Handling(Arc::clone(self))
    }
}

/// A request being handled; see [`Activity::handle`].
struct Handling(Arc<Activity>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.handling.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Ends (with [`LimitError::Idle`]) once nothing has arrived and no request has been
/// handled for `idle`.
async fn watch_idle(
    activity: &Activity,
    idle: Duration,
    executor: &Executor,
) -> Result<(), ConnectionError> {
    loop {
        match activity.last().checked_add(idle) {
            Some(deadline) => {
                executor.sleep_until(deadline).await;
            }
            // So far in the future that it never comes.
            None => return std::future::pending().await,
        }
        if activity.handling.load(Ordering::SeqCst) > 0 {
            // A request that takes long is not idleness: wait a whole period after it.
            activity.touch();
            continue;
        }
        if activity.last().elapsed() >= idle {
            return Err(LimitError::Idle { after: idle }.into());
        }
    }
}

/// What every request of a connection is answered with.
struct Requests<S, K> {
    service: Arc<S>,
    codec: K,
    max_message_len: usize,
    /// The node the handshake named.
    announced: Option<NodeId>,
    outbox: Sender<Outgoing>,
    /// The socket's writing side, which a small reply is written to at once.
    wire: Arc<Wire<Writer>>,
    fatal: Sender<ConnectionError>,
    activity: Arc<Activity>,
    /// Runs each request's handling.
    executor: Executor,
}

/// The requests of a connection being answered. They are polled by the connection's
/// own task, beside its reader and writer, rather than spawned each on a task of their
/// own: a reply is then written to the socket as soon as the turn of the task that has it
/// ends (through [`outbox::send_soon`], with the other replies of that turn; or the
/// writer's queue if it is large or the socket full), and a request costs no spawn.
/// Those still running when the connection ends are handed to a task of their own, which
/// lets them complete.
struct Answering {
    running: FuturesUnordered<BoxFuture<'static, ()>>,
    executor: Executor,
}

impl Answering {
    /// Polls the answers until none is ready; pending also when none is running (the
    /// reader polls again after it adds one).
    fn poll_answers(&mut self, cx: &mut std::task::Context<'_>) {
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.running.is_empty() {
            let running = std::mem::take(&mut self.running);
            self.executor
                .spawn_detached(running.for_each(|()| std::future::ready(())));
        }
    }
}

async fn read_requests<S: Service, K: Codec>(
    mut reader: BufReader<Reader>,
    mut reassembler: Reassembler,
    max_frame_size: u32,
    requests: Requests<S, K>,
) -> Result<(), ConnectionError> {
    let mut answering = Answering {
        running: FuturesUnordered::new(),
        executor: requests.executor.clone(),
    };
    loop {
        let frame = {
            let mut reading = std::pin::pin!(read_frame(&mut reader, max_frame_size));
            std::future::poll_fn(|cx| {
                answering.poll_answers(cx);
                reading.as_mut().poll(cx)
            })
            .await?
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        requests.activity.touch();
        let header = frame.header;
        match header.kind {
            FrameKind::Request => {
                if let Some(message) = reassembler.push(&header, frame.body)? {
                    let handling = requests.activity.handle();
                    let answer =
                        requests
                            .clone()
                            .answer(message.request_id, message.body, handling);
                    answering.running.push(answer.boxed());
                }
            }
            FrameKind::Cancel => {
                // The client gave up on a request it had only partly sent.
                reassembler.discard(header.request_id);
                let _ = requests
                    .outbox
                    .try_send(Outgoing::Abandon(header.request_id));
            }
            FrameKind::Response
            | FrameKind::Error
            | FrameKind::Hello
            | FrameKind::Welcome
            | FrameKind::Refusal => {
                return Err(FrameError::UnexpectedKind { kind: header.kind }.into());
            }
        }
    }
}

impl<S, K: Clone> Clone for Requests<S, K> {
    fn clone(&self) -> Self {
        Requests {
            service: Arc::clone(&self.service),
            codec: self.codec.clone(),
            max_message_len: self.max_message_len,
            announced: self.announced,
            outbox: self.outbox.clone(),
            wire: Arc::clone(&self.wire),
            fatal: self.fatal.clone(),
            activity: Arc::clone(&self.activity),
            executor: self.executor.clone(),
        }
    }
}

impl<S: Service, K: Codec> Requests<S, K> {
    /// Decodes one request, checks its sender, runs the service and queues the reply.
    async fn answer(self, request_id: u64, body: Vec<u8>, handling: Handling) {
        let Requests {
            service,
            codec,
            max_message_len,
            announced,
            outbox,
            wire,
            fatal,
            activity: _,
            executor: _,
        } = self;
        let request: S::Request = match codec.decode(&body) {
            Ok(request) => request,
            Err(source) => {
                let error = FrameError::UndecodableBody {
                    kind: FrameKind::Request,
                    source,
                };
                let _ = fatal.try_send(error.into());
                return;
            }
        };
        drop(body);
        if let Some(claimed) = S::sender(&request)
            && announced != Some(claimed)
        {
            let _ = fatal.try_send(ConnectionError::WrongSender { announced, claimed });
            return;
        }
        let kind = S::describe(&request);
        // Sends the answer from whichever task has it (this one, or the service's own
        // through `call_then`); the request counts as handled until then.
        let respond = Respond::new(move |answer: Result<S::Response, String>| {
            let (frame, body) = match answer {
                Ok(response) => encode_response(&codec, &response, max_message_len),
                Err(e) => {
                    tracing::debug!(request_id, request = kind, error = %e, "handler refused a request");
                    (FrameKind::Error, encode_reason(&codec, &e))
                }
            };
            // The connection may have ended meanwhile; then the reply has nowhere to go.
            let _ = outbox::send_soon(&wire, &outbox, frame, request_id, body);
            drop(handling);
        });
        // A panicking service is a bug in the application, but the client should learn of
        // it now rather than at its timeout.
        let log_panic = || tracing::error!(request_id, request = kind, "the handler panicked");
        let (request, respond) = match std::panic::catch_unwind(AssertUnwindSafe(|| {
            service.call_then(request, respond)
        })) {
            Ok(Ok(())) => return,
            Ok(Err(back)) => back,
            // `respond`, dropped in the unwinding, sent the client an error.
            Err(_) => {
                log_panic();
                return;
            }
        };
        let answer = match AssertUnwindSafe(service.call(request)).catch_unwind().await {
            Ok(answer) => answer,
            Err(_) => {
                log_panic();
                Err("the handler panicked".to_owned())
            }
        };
        respond.send(answer);
    }
}

/// The frame kind and body that carry `response`, or an error if it cannot be sent.
fn encode_response<K: Codec, R: Serialize>(
    codec: &K,
    response: &R,
    max_message_len: usize,
) -> (FrameKind, Vec<u8>) {
    match codec.encode(response) {
        Ok(body) if body.len() <= max_message_len => (FrameKind::Response, body),
        Ok(body) => {
            let error = FrameError::MessageTooLarge {
                len: u64::try_from(body.len()).unwrap_or(u64::MAX),
                max: u64::try_from(max_message_len).unwrap_or(u64::MAX),
            };
            tracing::warn!(%error, "cannot send a response");
            (
                FrameKind::Error,
                encode_reason(codec, &format!("the response is too large: {error}")),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a response");
            (
                FrameKind::Error,
                encode_reason(codec, &format!("cannot encode the response: {e}")),
            )
        }
    }
}

/// The body of an error frame. Encoding a string does not fail with any sane codec; if
/// it does, the client receives an undecodable error and fails the request all the same.
fn encode_reason<K: Codec>(codec: &K, reason: &str) -> Vec<u8> {
    codec.encode(reason).unwrap_or_default()
}
