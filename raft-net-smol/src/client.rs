//! [`TcpClient`]: the calling side of any [`Service`](crate::Service), one lazily
//! opened, multiplexed connection per server. [`TcpTransport`](crate::TcpTransport) is
//! the instance for Raft's RPCs.

mod connection;

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_rustls::TlsConnector;
use raft_traits::Runtime;
use raft_traits::{Codec, NodeId, Postcard, TransportError};
use rand::RngExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use smol::channel::{Receiver, Sender};
use smol::net::TcpStream;

use self::connection::{Call, Connection, NoReply, Reply};
use crate::config::TcpConfig;
use crate::error::{ConnectionError, FrameError, HandshakeError, TcpConfigError};
use crate::executor::Executor;
use crate::frame::FrameKind;
use crate::handshake::{self, Hello, Protocol};
use crate::stream::{self, Reader, Writer};
use crate::tls::{self, TlsConfig};

/// A client of a request/response [`Service`](crate::Service) over TCP: sends each
/// request to the server it names and waits for the response. Servers are named by
/// [`NodeId`] and known by address.
///
/// * **One connection per server**, opened by the first request to it and reused by
///   every later one. Each connection starts with a [handshake](crate::handshake) that
///   names the client's protocol and cluster; a server that refuses it (another
///   protocol, another cluster, too many connections) or that names another node than
///   the one the client meant makes the request fail as unreachable, and
///   [`handshake_error`](Self::handshake_error) tells why. Concurrent requests share it: each carries a request id and the
///   reply with the same id goes back to it, in whatever order replies come.
/// * **Large messages** (longer than [`TcpConfig::chunk_size`]) are sent in chunks, and
///   chunks of different requests interleave, so a small request is not held up by a
///   large one being sent on the same connection. A message may be larger than the
///   maximum frame size, up to [`TcpConfig::max_message_size`].
/// * **Failures**: a connection that breaks fails the requests waiting on it; the next
///   request opens a new one. After a failed connection attempt the client waits
///   (exponentially longer, between [`TcpConfig::backoff_min`] and
///   [`TcpConfig::backoff_max`]) before trying that server again, and fails requests
///   meanwhile at once.
///
/// | situation | error |
/// |---|---|
/// | `to` is not a known server | [`TransportError::UnknownPeer`] |
/// | no connection could be made: refused, no route, connect timeout, handshake refused, backing off | [`TransportError::Unreachable`] (the request was not sent) |
/// | no reply within [`TcpConfig::request_timeout`] | [`TransportError::Timeout`] |
/// | the connection broke or the server broke the protocol while the request was in flight, the service answered with an error, the message could not be encoded or is too large | [`TransportError::Failed`] |
/// | after [`shutdown`](Self::shutdown), including requests in flight at that moment | [`TransportError::Closed`] |
///
/// A request waits at most `connect_timeout` for a connection (its handshake included)
/// and then `request_timeout` for its reply (checked an eighth of it apart, so it may
/// wait up to an eighth longer).
///
/// The client is a handle: clones share the same servers and connections. Each
/// connection runs as a task, and the client's timeouts as timers, on the client's
/// runtime: smol's global executor unless [`set_runtime`](Self::set_runtime) names
/// another (an application that runs its nodes on tokio gives the client its tokio
/// runtime, so that one executor runs everything). A connection's task ends when the
/// client is shut down or its last handle is dropped.
///
/// `Req` is the request type, `Resp` the response type and `K` the codec, which the
/// server must share. See [`Service`](crate::Service) for an example.
pub struct TcpClient<Req, Resp, K = Postcard> {
    inner: Arc<Inner<K>>,
    _messages: PhantomData<fn(Req) -> Resp>,
}

/// The state shared by the handles of one transport.
struct Inner<K> {
    config: TcpConfig,
    codec: K,
    /// What the client says in its handshakes, and its encoding.
    hello: Hello,
    hello_bytes: Vec<u8>,
    /// TLS settings, if the client speaks TLS.
    tls: Option<TlsConfig>,
    peers: Mutex<HashMap<NodeId, Arc<PeerSlot>>>,
    /// Where connections run and timeouts are timed.
    executor: Mutex<Executor>,
    shut_down: AtomicBool,
    /// Closed by [`TcpClient::shutdown`]; never carries a message. Closing it wakes
    /// the requests waiting for a connection to be made (see
    /// [`Inner::unless_shut_down`]).
    shutdown_signal: Sender<()>,
    on_shutdown: Receiver<()>,
}

/// One peer: its address and its connection.
struct PeerSlot {
    peer: NodeId,
    link: Mutex<Link>,
    /// Held while connecting, so that concurrent requests to a peer without a
    /// connection wait for one attempt instead of each making their own.
    connecting: smol::lock::Mutex<()>,
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    connection: Option<Arc<Connection>>,
    /// Failed connection attempts since the last success.
    failures: u32,
    /// No new attempt before this instant.
    retry_at: Option<Instant>,
    /// The handshake failure that ended the last connection attempt, if that is how it
    /// ended.
    handshake_error: Option<HandshakeError>,
}

impl<Req: Serialize, Resp: DeserializeOwned> TcpClient<Req, Resp, Postcard> {
    /// A client of `protocol` that encodes messages with [`Postcard`] and knows the
    /// servers in `peers`, a map (or any sequence) from node id to address.
    ///
    /// No connection is made until the first request to a server. Fails if `config` is
    /// invalid or the protocol's name is too long for the handshake.
    pub fn new(
        config: TcpConfig,
        protocol: Protocol,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        Self::with_codec(config, Postcard, protocol, peers)
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, K: Codec> TcpClient<Req, Resp, K> {
    /// A client like [`new`](TcpClient::new) that encodes messages with `codec`; the
    /// servers must use the same codec.
    pub fn with_codec(
        config: TcpConfig,
        codec: K,
        protocol: Protocol,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        Self::identified(config, codec, protocol, None, None, peers)
    }

    /// A client that names itself as node `node` in its handshakes, if given, and
    /// speaks TLS with `tls`, if given.
    pub(crate) fn identified(
        config: TcpConfig,
        codec: K,
        protocol: Protocol,
        node: Option<NodeId>,
        tls: Option<TlsConfig>,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        config.validate()?;
        let hello = Hello {
            protocol,
            cluster_id: config.cluster_id.clone(),
            node,
        };
        let hello_bytes = hello.encode()?;
        let peers = peers
            .into_iter()
            .map(|(peer, addr)| (peer, Arc::new(PeerSlot::new(peer, addr))))
            .collect();
        let (shutdown_signal, on_shutdown) = smol::channel::bounded(1);
        Ok(TcpClient {
            inner: Arc::new(Inner {
                config,
                codec,
                hello,
                hello_bytes,
                tls,
                peers: Mutex::new(peers),
                executor: Mutex::new(Executor::default()),
                shut_down: AtomicBool::new(false),
                shutdown_signal,
                on_shutdown,
            }),
            _messages: PhantomData,
        })
    }

    /// Runs the client's connections and timers on `runtime` instead of smol's global
    /// executor: choose the runtime the application runs everything else on. Applies to
    /// the connections opened from now on, so call it before the first request.
    ///
    /// The sockets wait in the reactor of `runtime` if it is a pool with one, whichever
    /// thread opens them, else in async-io's; see
    /// [`TcpServer::set_runtime`](crate::TcpServer::set_runtime) for the one pitfall.
    pub fn set_runtime<R: Runtime>(&self, runtime: R) {
        *self.inner.lock_executor() = Executor::new(runtime);
    }

    /// Completes after `duration` on the clock of the runtime the client runs on (see
    /// [`set_runtime`](Self::set_runtime)): for the deadlines and backoffs of a layer
    /// above the client, so that they cost what the client's own timers cost (a worker
    /// pool's timers wake nobody when set; async-io's notify its reactor each time).
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        self.inner.executor().sleep(duration)
    }

    /// Adds server `peer` at `addr`, or moves it there.
    ///
    /// Moving a peer closes its current connection (requests in flight on it fail) and
    /// forgets its backoff, so the next request connects to the new address at once.
    pub fn set_peer(&self, peer: NodeId, addr: SocketAddr) {
        let slot = {
            let mut peers = self.inner.lock_peers();
            match peers.get(&peer) {
                Some(slot) => Arc::clone(slot),
                None => {
                    peers.insert(peer, Arc::new(PeerSlot::new(peer, addr)));
                    return;
                }
            }
        };
        let old = {
            let mut link = slot.lock();
            if link.addr == addr {
                return;
            }
            link.addr = addr;
            link.failures = 0;
            link.retry_at = None;
            link.handshake_error = None;
            link.connection.take()
        };
        tracing::debug!(%peer, %addr, "peer moved");
        if let Some(connection) = old {
            connection.close("the peer's address changed");
        }
    }

    /// Forgets server `peer`, closing its connection; returns its address if it was
    /// known.
    pub fn remove_peer(&self, peer: NodeId) -> Option<SocketAddr> {
        let slot = self.inner.lock_peers().remove(&peer)?;
        let (addr, connection) = {
            let mut link = slot.lock();
            (link.addr, link.connection.take())
        };
        if let Some(connection) = connection {
            connection.close("the peer was removed");
        }
        Some(addr)
    }

    /// The address of server `peer`, if it is known.
    pub fn peer_addr(&self, peer: NodeId) -> Option<SocketAddr> {
        let slot = self.inner.lock_peers().get(&peer).map(Arc::clone)?;
        let addr = slot.lock().addr;
        Some(addr)
    }

    /// Every known server and its address, by node id.
    pub fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        let slots: Vec<Arc<PeerSlot>> = self.inner.lock_peers().values().cloned().collect();
        let mut peers: Vec<(NodeId, SocketAddr)> = slots
            .iter()
            .map(|slot| (slot.peer, slot.lock().addr))
            .collect();
        peers.sort();
        peers
    }

    /// Why the last attempt to connect to server `peer` failed its handshake, if that
    /// is how it failed (a request to it then failed with
    /// [`TransportError::Unreachable`]); `None` once a connection succeeds or the
    /// server's address changes.
    ///
    /// A client pointed at the wrong port learns here, in a typed form, that the port
    /// speaks another protocol ([`HandshakeError::WrongProtocol`]) or belongs to another
    /// cluster.
    pub fn handshake_error(&self, peer: NodeId) -> Option<HandshakeError> {
        let slot = self.inner.lock_peers().get(&peer).map(Arc::clone)?;
        slot.lock().handshake_error.clone()
    }

    /// The protocol, cluster and node this client names in its handshakes.
    pub fn hello(&self) -> &Hello {
        &self.inner.hello
    }

    /// The configuration the client runs with.
    pub fn config(&self) -> &TcpConfig {
        &self.inner.config
    }

    /// Shuts the client down, for every handle: requests in flight end at once with
    /// [`TransportError::Closed`], as does every later request, and every connection is
    /// closed. Calling it again does nothing.
    pub fn shutdown(&self) {
        if self.inner.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shutdown_signal.close();
        let slots: Vec<Arc<PeerSlot>> = self.inner.lock_peers().values().cloned().collect();
        for slot in slots {
            let connection = slot.lock().connection.take();
            if let Some(connection) = connection {
                connection.close("the transport was shut down");
            }
        }
        tracing::debug!("client shut down");
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.is_shut_down()
    }

    /// Sends `request` to server `to` and waits for its response.
    ///
    /// The request is encoded (and dropped) before anything is sent, so a large request
    /// is not held twice while the call waits. See the type's documentation for the
    /// errors.
    pub async fn call(&self, to: NodeId, request: Req) -> Result<Resp, TransportError> {
        let inner = &self.inner;
        if inner.is_shut_down() {
            return Err(TransportError::Closed);
        }
        // A request in flight at shutdown is failed by the closing of its connection,
        // whatever the error it then reports; the flag, set before any connection
        // closes, makes that error `Closed`.
        match inner.call(to, request).await {
            Err(_) if inner.is_shut_down() => Err(TransportError::Closed),
            result => result,
        }
    }
}

impl<K: Codec> Inner<K> {
    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Runs `work` until it ends, or until the client shuts down (then `Closed`).
    ///
    /// Only a wait for a connection needs it: closing the connections at shutdown ends
    /// the requests on them, but not an attempt to connect, which would go on until its
    /// timeout. Listening costs a registration with the shutdown channel (an allocation
    /// and a lock): on every call, as it was, that came to 3% of the instructions of a
    /// write over loopback TCP.
    async fn unless_shut_down<T>(
        &self,
        work: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let on_shutdown = self.on_shutdown.clone();
        let shut_down = async move {
            // Nothing is ever sent: this returns when the channel is closed.
            let _ = on_shutdown.recv().await;
            Err(TransportError::Closed)
        };
        // The shutdown first: an attempt it woke too ends `Closed`.
        smol::future::or(shut_down, work).await
    }

    /// Replacing the executor is a single assignment: a poisoned lock is still
    /// consistent.
    fn lock_executor(&self) -> MutexGuard<'_, Executor> {
        self.executor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn executor(&self) -> Executor {
        self.lock_executor().clone()
    }

    /// Every update of the map is a single insertion or removal: a poisoned lock is
    /// still consistent.
    fn lock_peers(&self) -> MutexGuard<'_, HashMap<NodeId, Arc<PeerSlot>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        request: Req,
    ) -> Result<Resp, TransportError> {
        let slot = self
            .lock_peers()
            .get(&to)
            .map(Arc::clone)
            .ok_or(TransportError::UnknownPeer(to))?;
        let mut body = self
            .codec
            .encode(&request)
            .map_err(|e| failed(to, format!("cannot encode the request: {e}")))?;
        drop(request);
        if body.len() > self.config.max_message_len() {
            let too_large = FrameError::MessageTooLarge {
                len: u64::try_from(body.len()).unwrap_or(u64::MAX),
                max: self.config.max_message_size,
            };
            return Err(failed(to, format!("cannot send the request: {too_large}")));
        }
        // A connection may end between being handed out and taking the request; the
        // request was not sent then, so it is safe to try once more on a new one.
        let mut ended_because = None;
        for _ in 0..2 {
            let connection = slot.connection(self).await?;
            match connection.start(body) {
                Ok(call) => return self.finish(to, call).await,
                Err(returned) => {
                    body = returned;
                    ended_because = connection.ended_because().map(str::to_owned);
                }
            }
        }
        let unsent = "the connection closed before the request could be sent";
        Err(failed(
            to,
            match ended_because {
                Some(reason) => format!("{unsent}: {reason}"),
                None => unsent.to_owned(),
            },
        ))
    }

    /// Waits for the reply to `call` and decodes it.
    async fn finish<Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        mut call: Call,
    ) -> Result<Resp, TransportError> {
        // The connection's sweep times the request out (see `connection`).
        let reply = match call.reply().await {
            Err(NoReply::TimedOut) => {
                let after = self.config.request_timeout;
                tracing::debug!(peer = %to, ?after, "request timed out");
                return Err(TransportError::Timeout { peer: to, after });
            }
            Err(NoReply::Closed(reason)) => return Err(failed(to, reason)),
            Ok(reply) => reply,
        };
        let Reply { kind, body } = reply;
        if kind == FrameKind::Response {
            return self.codec.decode::<Resp>(&body).map_err(|source| {
                let e = FrameError::UndecodableBody { kind, source };
                call.connection().close(&e.to_string());
                failed(to, e.to_string())
            });
        }
        match self.codec.decode::<String>(&body) {
            Ok(reason) => Err(failed(
                to,
                format!("the peer refused the request: {reason}"),
            )),
            Err(source) => {
                let e = FrameError::UndecodableBody { kind, source };
                call.connection().close(&e.to_string());
                Err(failed(to, e.to_string()))
            }
        }
    }
}

fn failed(peer: NodeId, reason: String) -> TransportError {
    TransportError::Failed { peer, reason }
}

impl PeerSlot {
    fn new(peer: NodeId, addr: SocketAddr) -> Self {
        PeerSlot {
            peer,
            link: Mutex::new(Link {
                addr,
                connection: None,
                failures: 0,
                retry_at: None,
                handshake_error: None,
            }),
            connecting: smol::lock::Mutex::new(()),
        }
    }

    /// Every update of the link is a few assignments that cannot panic halfway: a
    /// poisoned lock is still consistent.
    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open connection, if there is one; forgets one that has ended.
    fn live(&self, idle_timeout: Duration) -> Option<Arc<Connection>> {
        let mut link = self.lock();
        match &link.connection {
            Some(connection) if connection.is_open() && !connection.is_stale(idle_timeout) => {
                Some(Arc::clone(connection))
            }
            Some(connection) => {
                connection.close("idle: retired before the server's idle timeout");
                link.connection = None;
                None
            }
            None => None,
        }
    }

    /// The open connection to the peer, made now if needed.
    async fn connection<K: Codec>(
        &self,
        inner: &Inner<K>,
    ) -> Result<Arc<Connection>, TransportError> {
        if let Some(connection) = self.live(inner.config.idle_timeout) {
            return Ok(connection);
        }
        // Boxed: a connection attempt's future (connect, TLS handshake, timers) is large,
        // and inline it made every call's future carry it (1992 bytes, copied into the
        // box of each `Transport::send`; 528 without it).
        Box::pin(inner.unless_shut_down(self.connect(inner))).await
    }

    /// The slow part of [`connection`](Self::connection): waits for the attempt under
    /// way, or makes one.
    async fn connect<K: Codec>(&self, inner: &Inner<K>) -> Result<Arc<Connection>, TransportError> {
        // Waits at most for the attempt under way, which is bounded by the connect
        // timeout (or abandoned, which releases the lock).
        let _turn = self.connecting.lock().await;
        if let Some(connection) = self.live(inner.config.idle_timeout) {
            return Ok(connection);
        }
        let addr = {
            let link = self.lock();
            if let Some(retry_at) = link.retry_at {
                let now = Instant::now();
                if now < retry_at {
                    return Err(TransportError::Unreachable {
                        peer: self.peer,
                        reason: format!(
                            "backing off after {} failed connection attempts; next in {:?}",
                            link.failures,
                            retry_at - now
                        ),
                    });
                }
            }
            link.addr
        };

        let timeout = inner.config.connect_timeout;
        let executor = inner.executor();
        let timer = executor.sleep(timeout);
        let expired = async {
            timer.await;
            None
        };
        let attempt = smol::future::or(async { Some(self.open(inner, addr).await) }, expired);
        let stream = match attempt.await {
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                if let ConnectionError::Handshake(error) = &e {
                    self.lock().handshake_error = Some(error.clone());
                }
                return Err(self.failed_attempt(&inner.config, addr, &e.to_string()));
            }
            None => {
                let reason = format!("no connection within {timeout:?}");
                return Err(self.failed_attempt(&inner.config, addr, &reason));
            }
        };
        let (stream, reader, writer) = stream;
        let connection =
            Connection::open(self.peer, stream, reader, writer, &inner.config, &executor);

        let refusal = {
            let mut link = self.lock();
            // Checked under the link's lock, which `shutdown` and `set_peer` also take:
            // either they see the new connection, or it sees their change.
            if inner.is_shut_down() {
                Some(TransportError::Closed)
            } else if link.addr != addr {
                Some(TransportError::Unreachable {
                    peer: self.peer,
                    reason: "the peer's address changed while connecting".to_owned(),
                })
            } else {
                link.failures = 0;
                link.retry_at = None;
                link.handshake_error = None;
                link.connection = Some(Arc::clone(&connection));
                None
            }
        };
        if let Some(error) = refusal {
            connection.close(&error.to_string());
            return Err(error);
        }
        tracing::debug!(peer = %self.peer, %addr, "connected");
        Ok(connection)
    }

    /// Connects to `addr`, starts TLS if the client speaks it, and makes the handshake.
    /// Returns the socket and the connection's two sides.
    async fn open<K: Codec>(
        &self,
        inner: &Inner<K>,
        addr: SocketAddr,
    ) -> Result<(TcpStream, Reader, Writer), ConnectionError> {
        let stream = TcpStream::connect(addr).await?;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(peer = %self.peer, error = %e, "cannot disable Nagle's algorithm");
        }
        let (mut reader, mut writer) = match &inner.tls {
            None => stream::plain(&stream, inner.executor().reactor()),
            Some(tls) => {
                // The server must hold the certificate of the node the client dials.
                let name = tls::server_name(self.peer)?;
                let session = TlsConnector::from(tls.client())
                    .connect(
                        name,
                        stream::Transport::on(&stream, inner.executor().reactor()),
                    )
                    .await
                    .map_err(|e| HandshakeError::Tls {
                        reason: e.to_string(),
                    })?;
                stream::split(session)
            }
        };
        // Unbuffered: the handshake's reads take exactly the server's answer, and leave
        // whatever follows to the connection's reader.
        handshake::initiate(
            &mut reader,
            &mut writer,
            &inner.hello,
            &inner.hello_bytes,
            self.peer,
            inner.config.max_frame_size,
        )
        .await
        .map_err(|e| match e {
            // In TLS 1.3 the server checks the client's certificate after the client's
            // side of the TLS handshake is done: its refusal arrives as the first read.
            ConnectionError::Io(e) if inner.tls.is_some() => HandshakeError::Tls {
                reason: e.to_string(),
            }
            .into(),
            e => e,
        })?;
        Ok((stream, reader, writer))
    }

    /// Records a failed connection attempt and schedules the next one.
    fn failed_attempt(&self, config: &TcpConfig, addr: SocketAddr, reason: &str) -> TransportError {
        let delay = {
            let mut link = self.lock();
            link.failures = link.failures.saturating_add(1);
            let delay = backoff(config, link.failures);
            let now = Instant::now();
            link.retry_at = Some(now.checked_add(delay).unwrap_or(now));
            delay
        };
        tracing::debug!(peer = %self.peer, %addr, reason, ?delay, "connection attempt failed");
        TransportError::Unreachable {
            peer: self.peer,
            reason: format!("cannot connect to {addr}: {reason}; next attempt in {delay:?}"),
        }
    }
}

/// The wait after the `failures`-th failed attempt in a row: `backoff_min` doubled for
/// each earlier failure, capped at `backoff_max`, then drawn from its upper half so that
/// clients that lost a server together do not come back in lockstep.
fn backoff(config: &TcpConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let ceiling = config
        .backoff_min
        .saturating_mul(1u32 << doublings)
        .min(config.backoff_max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
}

impl<Req, Resp, K> Clone for TcpClient<Req, Resp, K> {
    /// Another handle on the same client.
    fn clone(&self) -> Self {
        TcpClient {
            inner: Arc::clone(&self.inner),
            _messages: PhantomData,
        }
    }
}

impl<Req, Resp, K> fmt::Debug for TcpClient<Req, Resp, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<(NodeId, SocketAddr)> = {
            let slots = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .iter()
                .map(|(&peer, slot)| {
                    let link = slot.link.lock().unwrap_or_else(|e| e.into_inner());
                    (peer, link.addr)
                })
                .collect()
        };
        peers.sort();
        f.debug_struct("TcpClient")
            .field("peers", &peers)
            .field("shut_down", &self.inner.shut_down.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = TcpConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..TcpConfig::default()
        };
        for (failures, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let delay = backoff(&config, failures);
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{failures}: {delay:?}"
            );
        }
    }

    #[test]
    fn an_invalid_config_is_refused() {
        let config = TcpConfig {
            chunk_size: 0,
            ..TcpConfig::default()
        };
        let client = TcpClient::<u64, u64>::new(config, Protocol::service("test"), []);
        assert!(matches!(client, Err(TcpConfigError::Zero { .. })));
        let long_name = Protocol::service("x".repeat(256));
        let client = TcpClient::<u64, u64>::new(TcpConfig::default(), long_name, []);
        assert!(matches!(client, Err(TcpConfigError::NameTooLong { .. })));
    }

    #[test]
    fn a_calls_future_leaves_the_connection_attempt_out() {
        // Every RPC's future is boxed by `Transport::send`: past about 1 KiB, the
        // allocator's per-thread cache no longer serves it, and the copy grows with it.
        let client =
            TcpClient::<u64, u64>::new(TcpConfig::default(), Protocol::service("test"), [])
                .expect("a valid config");
        let call = client.call(NodeId(1), 7);
        let size = std::mem::size_of_val(&call);
        assert!(size <= 1024, "a call's future takes {size} bytes");
    }
}
