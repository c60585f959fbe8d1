//! [`TcpTransport`]: Raft's [`Transport`] over TCP, a [`TcpClient`] of Raft's RPCs.

use std::fmt;
use std::net::SocketAddr;

use raft_traits::{
    Codec, Command, Membership, NodeId, Postcard, Request, Response, Runtime, Transport,
    TransportError, async_trait,
};

use crate::client::TcpClient;
use crate::config::TcpConfig;
use crate::error::{HandshakeError, TcpConfigError};
use crate::handshake::Protocol;
use crate::tls::TlsConfig;

/// A [`Transport`] over TCP: sends each request to its peer over a connection of its own
/// and waits for the reply.
///
/// It is a [`TcpClient`] of [`Request`]s and [`Response`]s, talking to the peers'
/// [`TcpServer`](crate::TcpServer)s, and behaves exactly like one:
///
/// * **One connection per peer**, opened by the first request to it and reused by every
///   later one. Its [handshake](crate::handshake) names this node, its cluster
///   ([`TcpConfig::cluster_id`]) and the Raft protocol; the peer's server refuses a
///   stranger, and the transport refuses a server that names another node than the
///   peer it meant to reach. Every request sent on it must come from this node
///   ([`Request::from`]), or the server closes the connection. Concurrent requests share it: each carries a request id and the reply
///   with the same id goes back to it, in whatever order replies come.
/// * **Large messages** (longer than [`TcpConfig::chunk_size`]) are sent in chunks, and
///   chunks of different requests interleave, so a heartbeat is not held up by a
///   snapshot being sent on the same connection. A message may be larger than the
///   maximum frame size, up to [`TcpConfig::max_message_size`].
/// * **Failures**: a connection that breaks fails the requests waiting on it; the next
///   request opens a new one. After a failed connection attempt the transport waits
///   (exponentially longer, between [`TcpConfig::backoff_min`] and
///   [`TcpConfig::backoff_max`]) before trying that peer again, and fails requests
///   meanwhile at once.
///
/// | situation | error |
/// |---|---|
/// | `to` is not a known peer | [`TransportError::UnknownPeer`] |
/// | no connection could be made: refused, no route, connect timeout, handshake refused, backing off | [`TransportError::Unreachable`] (the request was not sent) |
/// | no reply within [`TcpConfig::request_timeout`] | [`TransportError::Timeout`] |
/// | the connection broke or the peer broke the protocol while the request was in flight, the peer answered with an error, the message could not be encoded or is too large | [`TransportError::Failed`] |
/// | after [`shutdown`](Self::shutdown), including requests in flight at that moment | [`TransportError::Closed`] |
///
/// A request waits at most `connect_timeout` for a connection (its handshake included)
/// and then `request_timeout` for its reply (checked an eighth of it apart, so it may
/// wait up to an eighth longer).
///
/// Peers can be added, moved and removed while the transport runs
/// ([`set_peer`](Self::set_peer), [`remove_peer`](Self::remove_peer)), so that a node
/// added to the cluster later is reached without restarting the others.
///
/// The transport is a handle: clones share the same peers and connections. Its
/// connections run as tasks, and its timeouts as timers, on the transport's runtime:
/// smol's global executor (whose thread count the `SMOL_THREADS` environment variable
/// sets) unless [`set_runtime`](Self::set_runtime) names another. Give it the runtime
/// the node runs on (the one in its `Parts`), and the same to the node's
/// [`TcpServer`](crate::TcpServer), so that one executor runs the whole node rather
/// than two handing every message across threads. A connection's task ends when the
/// transport is shut down or its last handle is dropped.
///
/// ```
/// use std::net::SocketAddr;
/// use raft_net_smol::{TcpConfig, TcpTransport};
/// use raft_traits::{LogId, NodeId, Request, RequestVote, Term, Transport, TransportError};
///
/// let addr: SocketAddr = "127.0.0.1:7002".parse().unwrap();
/// // Node 1's transport, which knows node 2.
/// let transport: TcpTransport<u64> =
///     TcpTransport::new(TcpConfig::default(), NodeId(1), [(NodeId(2), addr)]).unwrap();
/// assert_eq!(transport.peer_addr(NodeId(2)), Some(addr));
///
/// let vote = Request::Vote(RequestVote {
///     term: Term(1),
///     candidate: NodeId(1),
///     last_log: LogId::default(),
///     transfer: false,
/// });
/// let reply = smol::block_on(transport.send(NodeId(3), vote.clone()));
/// assert_eq!(reply, Err(TransportError::UnknownPeer(NodeId(3))));
///
/// transport.shutdown();
/// assert_eq!(smol::block_on(transport.send(NodeId(2), vote)), Err(TransportError::Closed));
/// ```
pub struct TcpTransport<C, K = Postcard> {
    client: TcpClient<Request<C>, Response, K>,
}

impl<C: Command> TcpTransport<C, Postcard> {
    /// The transport of node `me`, which encodes messages with [`Postcard`] and knows
    /// the peers in `peers`, a map (or any sequence) from node id to address.
    ///
    /// No connection is made until the first request to a peer.
    pub fn new(
        config: TcpConfig,
        me: NodeId,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        Self::with_codec(config, Postcard, me, peers)
    }
}

impl<C: Command, K: Codec> TcpTransport<C, K> {
    /// A transport like [`new`](TcpTransport::new) that encodes messages with `codec`;
    /// the peers' servers must use the same codec.
    pub fn with_codec(
        config: TcpConfig,
        codec: K,
        me: NodeId,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        Ok(TcpTransport {
            client: TcpClient::identified(config, codec, Protocol::Raft, Some(me), None, peers)?,
        })
    }

    /// A transport like [`with_codec`](Self::with_codec) that speaks TLS to its peers
    /// with `tls`: it presents `me`'s certificate, and requires each peer's server to
    /// present a certificate of the cluster's CA that names that peer (see
    /// [`tls`](crate::tls)).
    pub fn with_tls(
        config: TcpConfig,
        codec: K,
        me: NodeId,
        tls: TlsConfig,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Result<Self, TcpConfigError> {
        Ok(TcpTransport {
            client: TcpClient::identified(
                config,
                codec,
                Protocol::Raft,
                Some(me),
                Some(tls),
                peers,
            )?,
        })
    }

    /// Runs the transport's connections and timers on `runtime` (the node's) instead of
    /// smol's global executor. Applies to the connections opened from now on, so call it
    /// before the node starts. See [`TcpClient::set_runtime`].
    pub fn set_runtime<R: Runtime>(&self, runtime: R) {
        self.client.set_runtime(runtime);
    }

    /// The node this transport sends for.
    pub fn node_id(&self) -> Option<NodeId> {
        self.client.hello().node
    }

    /// Adds peer `peer` at `addr`, or moves it there.
    ///
    /// Moving a peer closes its current connection (requests in flight on it fail) and
    /// forgets its backoff, so the next request connects to the new address at once.
    pub fn set_peer(&self, peer: NodeId, addr: SocketAddr) {
        self.client.set_peer(peer, addr);
    }

    /// Forgets peer `peer`, closing its connection; returns its address if it was known.
    pub fn remove_peer(&self, peer: NodeId) -> Option<SocketAddr> {
        self.client.remove_peer(peer)
    }

    /// The address of peer `peer`, if it is known.
    pub fn peer_addr(&self, peer: NodeId) -> Option<SocketAddr> {
        self.client.peer_addr(peer)
    }

    /// Every known peer and its address, by node id.
    pub fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.client.peers()
    }

    /// Why the last attempt to connect to `peer` failed its handshake, if that is how it
    /// failed; see [`TcpClient::handshake_error`].
    pub fn handshake_error(&self, peer: NodeId) -> Option<HandshakeError> {
        self.client.handshake_error(peer)
    }

    /// The configuration the transport runs with.
    pub fn config(&self) -> &TcpConfig {
        self.client.config()
    }

    /// Shuts the transport down, for every handle: requests in flight end at once with
    /// [`TransportError::Closed`], as does every later request, and every connection is
    /// closed. Calling it again does nothing.
    pub fn shutdown(&self) {
        self.client.shutdown();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.client.is_shut_down()
    }
}

#[async_trait]
impl<C: Command, K: Codec> Transport<C> for TcpTransport<C, K> {
    async fn send(&self, to: NodeId, request: Request<C>) -> Result<Response, TransportError> {
        self.client.call(to, request).await
    }

    /// Learns the address of every other member whose address (`membership.nodes`) is a
    /// socket address, with [`set_peer`](Self::set_peer): a member added at run time
    /// becomes reachable, and a member whose address changed is reached at the new one.
    /// A member with an empty or unparsable address is left as it is (logged at debug
    /// level). No peer is removed: a member taken out of the configuration may still
    /// need to hear from this node that it was removed.
    fn update_membership(&self, membership: &Membership) {
        let me = self.node_id();
        for (&id, addr) in &membership.nodes {
            if Some(id) == me {
                continue;
            }
            match addr.parse::<SocketAddr>() {
                Ok(addr) => self.set_peer(id, addr),
                Err(error) => {
                    tracing::debug!(
                        peer = %id, %addr, %error,
                        "member address is not a socket address; peer left as it is"
                    );
                }
            }
        }
    }
}

impl<C, K> Clone for TcpTransport<C, K> {
    /// Another handle on the same transport.
    fn clone(&self) -> Self {
        TcpTransport {
            client: self.client.clone(),
        }
    }
}

impl<C, K> fmt::Debug for TcpTransport<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpTransport")
            .field("client", &self.client)
            .finish()
    }
}
