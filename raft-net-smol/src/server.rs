//! [`TcpServer`]: the receiving side, which hands incoming requests to a [`Service`] (for
//! Raft: an [`RpcHandler`]) and sends back its replies.

mod connection;

use std::collections::HashMap;
use std::fmt;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::time::Duration;

use raft_traits::{Codec, Command, NodeId, Postcard, RpcHandler, Runtime};
use smol::io::AsyncReadExt;
use smol::net::{TcpListener, TcpStream};

use self::connection::Setup;
use crate::config::TcpConfig;
use crate::error::{ConnectionError, LimitError, ServerError};
use crate::executor::{Executor, Task};
use crate::handshake::{self, Hello, Refusal};
use crate::reassembly::Budget;
use crate::service::{RaftService, Service};
use crate::tls::TlsConfig;

/// How long the accept loop pauses after a failed `accept`. Failures such as running
/// out of file descriptors persist for a while; retrying at once would spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How many connections over `max_connections` are told so at once; more are closed
/// without a word, so that a flood of connections costs no more than one task each of
/// these.
const MAX_REFUSING: usize = 16;

/// A TCP server: accepts connections from [`TcpTransport`]s and answers their Raft RPCs
/// with an [`RpcHandler`] ([`serve`](TcpServer::serve)), or from [`TcpClient`]s and
/// answers their requests with any [`Service`] ([`serve_service`](TcpServer::serve_service)).
///
/// Starting takes two steps, so that the address is known before the handler exists:
/// [`bind`](TcpServer::bind) opens the listening socket (connections wait in its
/// backlog), then [`serve`](TcpServer::serve) or
/// [`serve_service`](TcpServer::serve_service) starts answering.
///
/// Each connection starts with a [handshake](crate::handshake): the client names the
/// protocol (Raft, or the service's), its cluster and, for Raft, its node. The server
/// refuses a mismatch before any request reaches the handler, and on a Raft connection
/// closes the connection if a request claims another sender than the handshake named.
/// Then the server reads frames, reassembles chunked requests and runs every request on
/// a task of its own, so a slow request never holds up the others on the connection. A reply goes back with its request's id, chunked if large. A
/// [`HandlerError`](raft_traits::HandlerError) (an `Err` of the service) goes back as an
/// error frame, which the client reports as
/// [`TransportError::Failed`](raft_traits::TransportError::Failed).
///
/// **Bad input** (bytes that are not this protocol, a failed handshake, a truncated
/// frame, a frame or message above the configured maximum, a body that does not decode,
/// a request from another sender than the handshake named) closes the connection it
/// arrived on and is logged with its [`ConnectionError`](crate::ConnectionError) at
/// `warn` level ("closing connection: bad input", with the client's address as `peer`);
/// every other connection is served as before.
///
/// **Limits** ([`TcpConfig`]: handshake and idle timeouts, connections, bytes buffered
/// for unfinished requests per connection and in total) close the connection that goes
/// over them, logged with its [`LimitError`](crate::LimitError) as "closing connection:
/// over a limit" (at `warn` level, except idleness, at `debug`). A connection over
/// `max_connections` is told so with a refusal before it is closed. A connection that
/// fails at the socket level is logged at `debug` level.
///
/// The server's tasks (its accept loop, one per connection and one per request being
/// handled, so also [`Service::call`]) and its timers run on the server's runtime:
/// smol's global executor unless [`set_runtime`](TcpServer::set_runtime) names another.
/// An application that runs its nodes on tokio gives the server its tokio runtime: one
/// executor then runs everything, and a service may use tokio's timers and I/O.
/// [`shutdown`](TcpServer::shutdown) closes the listening socket and every connection;
/// dropping the server does the same without waiting.
///
/// [`TcpTransport`]: crate::TcpTransport
/// [`TcpClient`]: crate::TcpClient
///
/// ```
/// use std::sync::Arc;
/// use raft_net_smol::{TcpConfig, TcpServer};
/// use raft_traits::{HandlerError, Request, Response, RpcHandler, VoteReply, async_trait};
///
/// struct Voter;
///
/// #[async_trait]
/// impl RpcHandler<u64> for Voter {
///     async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
///         Ok(Response::Vote(VoteReply { term: request.term(), granted: true }))
///     }
/// }
///
/// let server = TcpServer::bind(([127, 0, 0, 1], 0), TcpConfig::default()).unwrap();
/// let addr = server.local_addr();
/// assert_ne!(addr.port(), 0);
/// server.serve::<u64>(Arc::new(Voter)).unwrap();
/// assert!(server.serve::<u64>(Arc::new(Voter)).is_err());
/// smol::block_on(server.shutdown());
/// assert!(std::net::TcpStream::connect(addr).is_err());
/// ```
pub struct TcpServer<K = Postcard> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    local_addr: SocketAddr,
    config: TcpConfig,
    codec: K,
    state: Mutex<State>,
    /// The bytes all connections may hold for unfinished requests together.
    budget: Arc<Budget>,
    /// Connections over `max_connections` being told so.
    refusing: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    /// The listening socket until [`TcpServer::serve`] hands it to the accept loop.
    listener: Option<TcpListener>,
    /// The node this server names in its handshakes, if it was given one.
    node: Option<NodeId>,
    /// TLS settings, if connections must speak TLS.
    tls: Option<TlsConfig>,
    /// Where the server's tasks run and its timeouts are timed.
    executor: Executor,
    accept_loop: Option<Task>,
    connections: HashMap<u64, Served>,
    next_connection: u64,
    shut_down: bool,
}

/// Takes a served connection off the server's list when its task ends, and closes its
/// socket.
///
/// The task may also end without finishing: a runtime that stops drops the tasks still
/// on it, even before their first poll. The socket must close then too, or the client's
/// requests wait on it for their whole timeout while the server holds it open with
/// nobody serving it.
struct Deregistration<K> {
    server: Weak<Shared<K>>,
    id: u64,
    stream: TcpStream,
    /// Whether the task got to its end, where it deregistered.
    finished: bool,
}

impl<K> Deregistration<K> {
    /// The task's normal end.
    fn finish(&mut self) {
        self.finished = true;
        if let Some(server) = self.server.upgrade() {
            let served = server.lock().connections.remove(&self.id);
            Self::detach_task(served);
        }
    }

    /// Detaches the task of `served`, taken off the list by the task itself.
    fn detach_task(served: Option<Served>) {
        if let Some(mut served) = served {
            // This very task: let it finish rather than cancel it.
            if let Some(task) = served.task.take() {
                task.detach();
            }
        }
    }
}

impl<K> Drop for Deregistration<K> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        let Some(server) = self.server.upgrade() else {
            return;
        };
        // Without waiting: a runtime that refuses the task drops it inside `spawn`,
        // where `start_serving` holds the lock. The entry then stays, with its socket
        // closed, until `shutdown`.
        let served = match server.state.try_lock() {
            Ok(mut state) => state.connections.remove(&self.id),
            Err(TryLockError::Poisoned(state)) => state.into_inner().connections.remove(&self.id),
            Err(TryLockError::WouldBlock) => None,
        };
        Self::detach_task(served);
    }
}

/// A connection being served.
struct Served {
    stream: TcpStream,
    task: Option<Task>,
}

impl Drop for Served {
    /// Closing the socket ends the connection's task promptly even where the task is
    /// merely detached.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl TcpServer<Postcard> {
    /// Opens a listening socket on `addr` for a server whose messages are encoded with
    /// [`Postcard`]. Use port 0 for a port chosen by the system, and
    /// [`local_addr`](Self::local_addr) to learn it.
    pub fn bind(addr: impl Into<SocketAddr>, config: TcpConfig) -> Result<Self, ServerError> {
        Self::bind_with_codec(addr, config, Postcard)
    }
}

impl<K: Codec> TcpServer<K> {
    /// Like [`bind`](TcpServer::bind), for messages encoded with `codec`; the clients
    /// must use the same codec.
    pub fn bind_with_codec(
        addr: impl Into<SocketAddr>,
        config: TcpConfig,
        codec: K,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        let addr = addr.into();
        let bind_error = |source| ServerError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let listener = TcpListener::try_from(listener).map_err(bind_error)?;
        tracing::debug!(%local_addr, "listening");
        let budget = Arc::new(Budget::new(config.max_buffered_total_len()));
        Ok(TcpServer {
            shared: Arc::new(Shared {
                local_addr,
                config,
                codec,
                state: Mutex::new(State {
                    listener: Some(listener),
                    ..State::default()
                }),
                budget,
                refusing: Arc::new(AtomicUsize::new(0)),
            }),
        })
    }

    /// Names this server as node `node` in the handshakes of the connections it accepts
    /// from now on, so that clients can check they reached the node they meant to
    /// ([`HandshakeError::WrongNode`](crate::HandshakeError::WrongNode)).
    pub fn set_node_id(&self, node: NodeId) {
        self.shared.lock().node = Some(node);
    }

    /// Requires TLS, with `tls`, of every connection accepted from now on (call it before
    /// [`serve`](Self::serve)): clients must present a certificate signed by the
    /// cluster's CA, and one whose hello names a node must hold that node's name (see
    /// [`tls`](crate::tls)).
    pub fn set_tls(&self, tls: TlsConfig) {
        self.shared.lock().tls = Some(tls);
    }

    /// Runs the server's tasks and timers on `runtime` instead of smol's global
    /// executor: choose the runtime the application runs everything else on. Call it
    /// before [`serve`](Self::serve); the accept loop, every connection and every
    /// [`Service::call`] then run on it.
    ///
    /// On a [`SmolRuntime::with_threads`](crate::SmolRuntime::with_threads) pool, the
    /// sockets wait in the pool's own reactor. On any other runtime they are smol's
    /// (`async-io`), which work under any executor: async-io's own thread waits on them;
    /// keep no thread waiting in `smol::block_on` meanwhile, or that thread polls them at
    /// intervals (of up to 10 ms) instead of waiting.
    pub fn set_runtime<R: Runtime>(&self, runtime: R) {
        self.shared.lock().executor = Executor::new(runtime);
    }

    /// The bytes that unfinished requests hold, over all connections, right now.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.budget.held()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// How many connections the server is serving right now.
    pub fn connection_count(&self) -> usize {
        self.shared.lock().connections.len()
    }

    /// Starts accepting connections and answering their Raft RPCs with `handler`, in
    /// the background; returns at once.
    ///
    /// Fails with [`ServerError::AlreadyServing`] if called twice, and with
    /// [`ServerError::ShutDown`] after [`shutdown`](Self::shutdown).
    pub fn serve<C: Command>(&self, handler: Arc<dyn RpcHandler<C>>) -> Result<(), ServerError> {
        self.serve_service(Arc::new(RaftService::new(handler)))
    }

    /// Starts accepting connections and answering their requests with `service`, in the
    /// background; returns at once.
    ///
    /// Fails with [`ServerError::AlreadyServing`] if called twice (or after
    /// [`serve`](Self::serve)), with [`ServerError::ShutDown`] after
    /// [`shutdown`](Self::shutdown), and with [`ServerError::Config`] if the service's
    /// protocol name is too long for the handshake.
    pub fn serve_service<S: Service>(&self, service: Arc<S>) -> Result<(), ServerError> {
        Hello {
            protocol: service.protocol(),
            cluster_id: self.shared.config.cluster_id.clone(),
            node: None,
        }
        .encode()?;
        let mut state = self.shared.lock();
        if state.shut_down {
            return Err(ServerError::ShutDown);
        }
        let listener = state.listener.take().ok_or(ServerError::AlreadyServing)?;
        let executor = state.executor.clone();
        let accepting = accept_loop(
            Arc::downgrade(&self.shared),
            listener,
            service,
            executor.clone(),
        );
        state.accept_loop = Some(executor.spawn(accepting));
        Ok(())
    }

    /// Stops the server: closes the listening socket, so that no new connection is
    /// accepted, and every open connection. Requests being handled complete, but their
    /// replies are dropped. Returns once the accept loop and every connection task have
    /// ended.
    pub async fn shutdown(&self) {
        let (accept_loop, connections) = {
            let mut state = self.shared.lock();
            state.shut_down = true;
            state.listener = None;
            (
                state.accept_loop.take(),
                std::mem::take(&mut state.connections),
            )
        };
        if let Some(accept_loop) = accept_loop {
            // The listener lives in the loop's future: cancelling drops it.
            accept_loop.cancel().await;
        }
        for (_, mut served) in connections {
            let _ = served.stream.shutdown(Shutdown::Both);
            if let Some(task) = served.task.take() {
                task.cancel().await;
            }
        }
        tracing::debug!(addr = %self.shared.local_addr, "server shut down");
    }
}

impl<K> Shared<K> {
    /// Every update of the state is a few assignments that cannot panic halfway: a
    /// poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts connections until cancelled or until the server is dropped. It holds the
/// server only weakly, so that dropping the server drops its tasks.
async fn accept_loop<S: Service, K: Codec>(
    shared: Weak<Shared<K>>,
    listener: TcpListener,
    service: Arc<S>,
    executor: Executor,
) {
    loop {
        let accepted = listener.accept().await;
        let Some(server) = shared.upgrade() else {
            return;
        };
        match accepted {
            Ok((stream, peer)) => server.start_serving(&shared, stream, peer, &service),
            Err(e) => {
                tracing::warn!(addr = %server.local_addr, error = %e, "accept failed");
                drop(server);
                executor.sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

impl<K: Codec> Shared<K> {
    fn start_serving<S: Service>(
        &self,
        weak: &Weak<Shared<K>>,
        stream: TcpStream,
        peer: SocketAddr,
        service: &Arc<S>,
    ) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot disable Nagle's algorithm");
        }
        let mut state = self.lock();
        if state.shut_down {
            return;
        }
        let hello = Hello {
            protocol: service.protocol(),
            cluster_id: self.config.cluster_id.clone(),
            node: state.node,
        };
        let hello_bytes = match hello.encode() {
            Ok(bytes) => bytes,
            Err(error) => {
                // `serve_service` and the configuration's validation checked the names.
                tracing::error!(%peer, %error, "cannot encode the server's handshake");
                return;
            }
        };
        if state.connections.len() >= self.config.max_connections {
            let tls = state.tls.is_some();
            let executor = state.executor.clone();
            drop(state);
            self.refuse_busy(stream, peer, hello_bytes, tls, &executor);
            return;
        }
        let id = state.next_connection;
        state.next_connection += 1;
        let setup = Setup {
            config: self.config.clone(),
            codec: self.codec.clone(),
            hello,
            hello_bytes,
            budget: Arc::clone(&self.budget),
            tls: state.tls.clone(),
            executor: state.executor.clone(),
        };
        let serving = connection::serve(stream.clone(), Arc::clone(service), setup);
        // Made before the task, not in it, so that it runs however the task ends (see
        // `Deregistration`). Registered before the task can finish: it deregisters under
        // the same lock.
        let deregistration = Deregistration {
            server: Weak::clone(weak),
            id,
            stream: stream.clone(),
            finished: false,
        };
        let task = state.executor.spawn(async move {
            let mut deregistration = deregistration;
            match serving.await {
                Ok(()) => tracing::debug!(%peer, "connection closed by the client"),
                Err(ConnectionError::Io(error)) => {
                    tracing::debug!(%peer, %error, "connection failed");
                }
                Err(ConnectionError::Limit(error @ LimitError::Idle { .. })) => {
                    tracing::debug!(%peer, %error, "closing connection: over a limit");
                }
                Err(ConnectionError::Limit(error)) => {
                    tracing::warn!(%peer, %error, "closing connection: over a limit");
                }
                Err(
                    error @ (ConnectionError::Frame(_)
                    | ConnectionError::Handshake(_)
                    | ConnectionError::WrongSender { .. }),
                ) => {
                    tracing::warn!(%peer, %error, "closing connection: bad input");
                }
            }
            deregistration.finish();
        });
        tracing::debug!(%peer, "connection accepted");
        state.connections.insert(
            id,
            Served {
                stream,
                task: Some(task),
            },
        );
    }

    /// Refuses a connection over `max_connections`: tells the client why, if not too
    /// many others are being told already, and closes it. A TLS client is not told: it
    /// expects a TLS handshake, and spending one on a connection being refused would
    /// make the cap cheap to exhaust.
    fn refuse_busy(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        hello_bytes: Vec<u8>,
        tls: bool,
        executor: &Executor,
    ) {
        let error = LimitError::TooManyConnections {
            max: self.config.max_connections,
        };
        tracing::warn!(%peer, %error, "closing connection: over a limit");
        if tls {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if self.refusing.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        let refusing = Arc::clone(&self.refusing);
        let linger = self.config.handshake_timeout;
        let expired = executor.sleep(linger);
        executor.spawn_detached(async move {
            let telling = async {
                let mut writer = stream.clone();
                handshake::refuse(&mut writer, Refusal::Busy, &hello_bytes).await;
                let _ = stream.shutdown(Shutdown::Write);
                // Reads what the client sent (its hello) until it closes: closing a
                // socket with unread bytes would reset the connection, and the client
                // might lose the refusal.
                let mut reader = stream.clone();
                let mut scratch = [0u8; 1024];
                while let Ok(1..) = reader.read(&mut scratch).await {}
            };
            smol::future::or(telling, expired).await;
            let _ = stream.shutdown(Shutdown::Both);
            refusing.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

impl<K> fmt::Debug for TcpServer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("TcpServer")
            .field("local_addr", &self.shared.local_addr)
            .field("serving", &state.accept_loop.is_some())
            .field("connections", &state.connections.len())
            .field("shut_down", &state.shut_down)
            .finish_non_exhaustive()
    }
}
