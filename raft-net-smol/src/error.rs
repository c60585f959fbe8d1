//! The errors of this crate.
//!
//! Callers of the transport only ever see [`TransportError`](raft_traits::TransportError);
//! the types here explain *why* — in logs, in the reasons those errors carry, and from
//! the constructors.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use raft_traits::{CodecError, NodeId};

use crate::frame::FrameKind;
use crate::handshake::Protocol;

/// Why a [`TcpConfig`](crate::TcpConfig) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcpConfigError {
    /// A size or a duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The field's name.
        field: &'static str,
    },
    /// Chunks would not fit in a frame.
    #[error("chunk_size ({chunk_size}) exceeds max_frame_size ({max_frame_size})")]
    ChunkAboveFrame {
        /// The configured chunk size.
        chunk_size: u32,
        /// The configured maximum frame size.
        max_frame_size: u32,
    },
    /// The backoff's lower bound is above its upper bound.
    #[error("backoff_min ({min:?}) exceeds backoff_max ({max:?})")]
    BackoffRange {
        /// The configured `backoff_min`.
        min: Duration,
        /// The configured `backoff_max`.
        max: Duration,
    },
    /// A byte count does not fit in this platform's address space.
    #[error("{field} ({value}) does not fit in memory on this platform")]
    Unaddressable {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The buffer limits are out of order: they must satisfy `max_message_size` ≤
    /// `max_buffered_per_connection` ≤ `max_buffered_total`, or a message of the largest
    /// size could never be reassembled.
    #[error(
        "buffer limits out of order: max_message_size ({message}) <= \
         max_buffered_per_connection ({per_connection}) <= max_buffered_total ({total}) is required"
    )]
    BufferOrder {
        /// `max_message_size`.
        message: u64,
        /// `max_buffered_per_connection`.
        per_connection: u64,
        /// `max_buffered_total`.
        total: u64,
    },
    /// A name sent in the [handshake](crate::handshake) is longer than
    /// [`MAX_NAME_LEN`](crate::handshake::MAX_NAME_LEN) bytes.
    #[error("{what} is {len} bytes long; the maximum is 255")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

/// A violation of the wire protocol by the other end of a connection.
///
/// Every one of them closes the connection it happened on; other connections are not
/// affected.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header does not start with [`MAGIC`](crate::frame::MAGIC): the peer does not
    /// speak this protocol.
    #[error("bad magic bytes {found:02x?}")]
    BadMagic {
        /// The first four bytes received.
        found: [u8; 4],
    },
    /// The header announces a protocol version this end does not speak (this end speaks
    /// [`VERSION`](crate::frame::VERSION)).
    #[error(
        "unsupported protocol version {found} (this end speaks version {})",
        crate::frame::VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        found: u8,
    },
    /// The header's kind byte names no [`FrameKind`].
    #[error("unknown frame kind {found}")]
    UnknownKind {
        /// The kind byte received.
        found: u8,
    },
    /// The header sets flag bits this version does not define.
    #[error("unknown flags {found:#06x}")]
    UnknownFlags {
        /// The flags received.
        found: u16,
    },
    /// A frame body is longer than the maximum frame size.
    #[error("frame body of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced (or attempted) body length.
        len: u64,
        /// The maximum frame size.
        max: u32,
    },
    /// A cancel frame carries a body or claims that more chunks follow.
    #[error("a cancel frame must have an empty body and no flags")]
    MalformedCancel,
    /// A handshake frame claims that more chunks follow.
    #[error("a handshake frame must be a single frame")]
    ChunkedHandshake,
    /// The connection ended inside a frame.
    #[error("the connection ended inside a frame {part}")]
    Truncated {
        /// `"header"` or `"body"`.
        part: &'static str,
    },
    /// A frame of a kind that this end never receives (a request sent to a client, a
    /// reply sent to a server, a handshake frame after the handshake).
    #[error("unexpected {kind:?} frame")]
    UnexpectedKind {
        /// The kind received.
        kind: FrameKind,
    },
    /// A chunk continues a message of another kind.
    #[error("request {request_id}: a {then:?} chunk continues a {first:?} message")]
    KindChanged {
        /// The message's request id.
        request_id: u64,
        /// The kind of the message's first chunk.
        first: FrameKind,
        /// The kind of the offending chunk.
        then: FrameKind,
    },
    /// A message is longer than the maximum message size.
    #[error("message of at least {len} bytes exceeds the maximum of {max}")]
    MessageTooLarge {
        /// The message's length so far (or its full length, on the sending side).
        len: u64,
        /// The maximum message size.
        max: u64,
    },
    /// Too many messages are being reassembled at once on one connection.
    #[error("more than {max} messages are partially received at once")]
    TooManyPartialMessages {
        /// The limit.
        max: usize,
    },
    /// A complete message body is not a valid encoding of what its kind carries.
    #[error("undecodable {kind:?} body: {source}")]
    UndecodableBody {
        /// The message's kind.
        kind: FrameKind,
        /// What the codec reported.
        #[source]
        source: CodecError,
    },
}

/// Why a [handshake](crate::handshake) failed: as the server logs it, and as the client
/// reports it (in [`TransportError::Unreachable`](raft_traits::TransportError::Unreachable),
/// and from [`TcpClient::handshake_error`](crate::TcpClient::handshake_error)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The client asked for another protocol than the one the server speaks: e.g. a
    /// service's client pointed at a Raft port.
    #[error("the server speaks {server}, but the client asked for {client}")]
    WrongProtocol {
        /// The server's protocol.
        server: Protocol,
        /// The client's.
        client: Protocol,
    },
    /// Client and server belong to different clusters.
    #[error("the server belongs to cluster {server:?}, the client to cluster {client:?}")]
    WrongCluster {
        /// The server's cluster id.
        server: String,
        /// The client's.
        client: String,
    },
    /// A Raft connection did not name the node it comes from.
    #[error("a Raft connection must name the node it comes from")]
    MissingNodeId,
    /// The server is not the node the client meant to reach (a stale address).
    #[error("expected node {expected}, but the server is node {found}")]
    WrongNode {
        /// The node the client meant to reach.
        expected: NodeId,
        /// The node the server says it is.
        found: NodeId,
    },
    /// The connection's first frame was not a hello: the client does not speak this
    /// version of the protocol, or not this protocol at all.
    #[error("the connection did not start with a handshake: its first frame is a {kind:?} frame")]
    NotAHello {
        /// The first frame's kind.
        kind: FrameKind,
    },
    /// A handshake frame's body is not a valid [`Hello`](crate::handshake::Hello) or
    /// refusal.
    #[error("malformed handshake: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server does not speak the client's protocol version.
    #[error("the server does not speak protocol version {ours}")]
    VersionRefused {
        /// The client's version.
        ours: u8,
    },
    /// The server serves as many connections as it may.
    #[error("the server has too many connections")]
    ServerBusy,
    /// The server refused the handshake for a reason this client cannot name more
    /// precisely.
    #[error("the server refused the handshake (reason {code})")]
    Refused {
        /// The refusal's reason byte.
        code: u8,
    },
    /// The server answered the hello with something else than a welcome or a refusal.
    #[error("the server answered the handshake with a {kind:?} frame")]
    UnexpectedReply {
        /// The answer's kind.
        kind: FrameKind,
    },
    /// The connection closed before the server answered the hello.
    #[error("the connection closed during the handshake")]
    Closed,
    /// The TLS handshake failed: no certificate, or one the cluster's CA did not sign,
    /// or a peer that does not speak TLS.
    #[error("TLS handshake failed: {reason}")]
    Tls {
        /// What rustls reported.
        reason: String,
    },
    /// The peer's certificate does not name the node its handshake speaks for (see
    /// [`tls`](crate::tls)).
    #[error("the certificate presented is not node {node}'s")]
    CertificateMismatch {
        /// The node the hello named.
        node: NodeId,
    },
}

/// A limit of the server's [`TcpConfig`](crate::TcpConfig) that a connection went over.
/// The server closes that connection and logs why; the others go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The client did not complete its handshake within `handshake_timeout`.
    #[error("no handshake within {after:?}")]
    HandshakeTimeout {
        /// The configured `handshake_timeout`.
        after: Duration,
    },
    /// Nothing arrived and no request was being handled for `idle_timeout`.
    #[error("idle for {after:?}")]
    Idle {
        /// The configured `idle_timeout`.
        after: Duration,
    },
    /// The server already serves `max_connections` connections.
    #[error("already serving the maximum of {max} connections")]
    TooManyConnections {
        /// The configured `max_connections`.
        max: usize,
    },
    /// The unfinished (chunked) requests of one connection would hold more than
    /// `max_buffered_per_connection` bytes.
    #[error(
        "unfinished requests on this connection would hold {len} bytes, more than the maximum of {max}"
    )]
    ConnectionBuffer {
        /// The bytes they would hold.
        len: u64,
        /// The configured `max_buffered_per_connection`.
        max: u64,
    },
    /// The unfinished requests of all the server's connections would hold more than
    /// `max_buffered_total` bytes.
    #[error(
        "unfinished requests on all connections would hold {len} bytes, more than the maximum of {max}"
    )]
    ServerBuffer {
        /// The bytes they would hold.
        len: u64,
        /// The configured `max_buffered_total`.
        max: u64,
    },
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The other end broke the wire protocol.
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// A request claims to come from another node than the one the handshake named.
    #[error("{}", wrong_sender(*announced, *claimed))]
    WrongSender {
        /// The node the handshake named, if it named one.
        announced: Option<NodeId>,
        /// The sender the request names.
        claimed: NodeId,
    },
    /// The connection went over a limit of the server.
    #[error("over a limit: {0}")]
    Limit(#[from] LimitError),
    /// Reading from or writing to the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

fn wrong_sender(announced: Option<NodeId>, claimed: NodeId) -> String {
    match announced {
        Some(announced) => format!(
            "the handshake named node {announced}, but a request claims to come from {claimed}"
        ),
        None => format!("a request claims to come from {claimed}, but the handshake named no node"),
    }
}

/// Why a [`TcpServer`](crate::TcpServer) could not be created or started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] TcpConfigError),
    /// The listening socket could not be created.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system reported.
        #[source]
        source: io::Error,
    },
    /// [`serve`](crate::TcpServer::serve) was already called.
    #[error("the server is already serving")]
    AlreadyServing,
    /// The server has been shut down.
    #[error("the server has been shut down")]
    ShutDown,
}
