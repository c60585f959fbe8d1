//! The errors of this crate.
//!
//! Callers of the transport only ever see [`TransportError`](raft_traits::TransportError);
//! the types here explain *why* — in logs, in the reasons those errors carry, and from
//! the constructors.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use raft_traits::CodecError;

use crate::frame::FrameKind;

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
    /// `max_message_size` does not fit in this platform's address space.
    #[error("max_message_size ({0}) does not fit in memory on this platform")]
    MessageSizeUnaddressable(u64),
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
    /// The header announces a protocol version this end does not speak.
    #[error("unsupported protocol version {found}")]
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
    /// The connection ended inside a frame.
    #[error("the connection ended inside a frame {part}")]
    Truncated {
        /// `"header"` or `"body"`.
        part: &'static str,
    },
    /// A frame of a kind that this end never receives (a request sent to a client, a
    /// reply sent to a server).
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
    /// Partially received messages on one connection hold more bytes than the maximum
    /// message size.
    #[error("partial messages hold {len} bytes, more than the maximum of {max}")]
    ReassemblyOverflow {
        /// The bytes they would hold.
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

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The other end broke the wire protocol.
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    /// Reading from or writing to the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
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
