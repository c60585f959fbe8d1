//! [`TcpConfig`]: the cluster id, limits and timeouts of the TCP transport and server.

use std::time::Duration;

use crate::error::TcpConfigError;
use crate::handshake::MAX_NAME_LEN;

/// The cluster id, limits and timeouts shared by [`TcpTransport`](crate::TcpTransport),
/// [`TcpClient`](crate::TcpClient) and [`TcpServer`](crate::TcpServer).
///
/// Both ends of a connection should use the same sizes: a sender splits messages into
/// chunks of at most its `chunk_size`, and a receiver closes a connection on which a
/// frame body exceeds its own `max_frame_size` or a reassembled message exceeds its own
/// `max_message_size`. They must use the same `cluster_id`, or the
/// [handshake](crate::handshake) fails.
///
/// The server's limits protect it from peers that misbehave: a connection that goes over
/// one is closed with a [`LimitError`](crate::LimitError) in the server's log, and every
/// other connection is served as before.
///
/// | limit | default |
/// |---|---|
/// | `handshake_timeout` | 5 s |
/// | `idle_timeout` | 60 s |
/// | `max_connections` | 1024 |
/// | `max_frame_size` | 1 MiB |
/// | `max_message_size` | 1 GiB |
/// | `max_buffered_per_connection` | 1 GiB |
/// | `max_buffered_total` | 2 GiB |
///
/// The buffer defaults let one message of the default maximum size through; a
/// deployment whose messages (snapshots, mostly) are smaller should lower all three
/// sizes together.
///
/// Build one by overriding the defaults, then let the constructors
/// [`validate`](TcpConfig::validate) it:
///
/// ```
/// use std::time::Duration;
/// use raft_net_smol::TcpConfig;
///
/// let config = TcpConfig {
///     request_timeout: Duration::from_secs(30),
///     ..TcpConfig::default()
/// };
/// assert!(config.validate().is_ok());
///
/// let broken = TcpConfig { chunk_size: 0, ..TcpConfig::default() };
/// assert!(broken.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// The cluster this end belongs to (default `"default"`, at most 255 bytes), sent in
    /// every handshake: a server refuses a connection from another cluster.
    pub cluster_id: String,
    /// The largest frame body this end accepts, in bytes (default 1 MiB). A frame header
    /// announcing more closes the connection before any of the body is read.
    pub max_frame_size: u32,
    /// Messages whose encoding is longer than this are sent as several frames of at most
    /// this many bytes each (default 256 KiB). At most `max_frame_size`. Frames of
    /// different messages are interleaved, so this is also about how long a small
    /// message may wait behind a large one.
    pub chunk_size: u32,
    /// The largest message, in encoded bytes, that this end sends or reassembles
    /// (default 1 GiB).
    pub max_message_size: u64,
    /// The most bytes that the unfinished (chunked) messages of one connection may hold
    /// together (default 1 GiB). At least `max_message_size`.
    pub max_buffered_per_connection: u64,
    /// The most bytes that the unfinished requests of all of a server's connections may
    /// hold together (default 2 GiB). At least `max_buffered_per_connection`. The
    /// connection whose chunk would go over it is closed.
    pub max_buffered_total: u64,
    /// The most connections a server serves at once (default 1024). One more is
    /// refused with a [`Refusal::Busy`](crate::handshake::Refusal::Busy) (without TLS)
    /// and closed.
    pub max_connections: usize,
    /// How long a server waits for a new connection's handshake (default 5 s).
    pub handshake_timeout: Duration,
    /// How long a server keeps a connection on which nothing arrives and no request is
    /// being handled (default 60 s). Clients reconnect when they next need to, so this
    /// only reclaims connections that are idle or half-open.
    pub idle_timeout: Duration,
    /// How long the transport waits for a TCP connection to a peer (default 1 s).
    pub connect_timeout: Duration,
    /// How long the transport waits for a reply once a request has been queued on a
    /// connection (default 5 s). It covers sending the request, so it must leave room for
    /// the largest snapshot at the link's speed. Each connection checks its requests'
    /// deadlines an eighth of this apart, so a request fails between this and an eighth
    /// more after it was queued.
    pub request_timeout: Duration,
    /// The wait after a first failed connection attempt before the next one (default
    /// 50 ms). It doubles after each further failure, up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest wait between connection attempts (default 1 s).
    pub backoff_max: Duration,
    /// Whether a client's small requests wait for the end of the turn of the task that
    /// makes them, to leave with the other requests that task makes to the same peer in
    /// that turn, in one system call (default `false`: each leaves at once). Only on a
    /// [`SmolRuntime::with_threads`](crate::SmolRuntime::with_threads) pool; elsewhere
    /// requests leave at once regardless.
    ///
    /// For load generators and proxies that run many requests in one task: with
    /// `raft-kv bench`'s 64 clients on 16 connections, its CPU per put fell by a third.
    /// Leave it off where a task may block its thread until a reply comes (`block_on`
    /// inside a task): its request would leave only when the wait ends, at the request
    /// timeout. A server's replies always leave at the end of the turn that gives them.
    pub gather_requests: bool,
}

impl TcpConfig {
    /// The default `max_frame_size`: 1 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 20;
    /// The default `chunk_size`: 256 KiB.
    pub const DEFAULT_CHUNK_SIZE: u32 = 256 << 10;
    /// The default `max_message_size`: 1 GiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 30;
    /// The default `cluster_id`.
    pub const DEFAULT_CLUSTER_ID: &'static str = "default";

    /// Checks that the values are usable together.
    ///
    /// Every size, count and duration must be non-zero, `chunk_size` at most
    /// `max_frame_size`, `backoff_min` at most `backoff_max`, `max_message_size` ≤
    /// `max_buffered_per_connection` ≤ `max_buffered_total`, each of them addressable on
    /// this platform, and `cluster_id` at most 255 bytes long.
    pub fn validate(&self) -> Result<(), TcpConfigError> {
        let zero = |field: &'static str| Err(TcpConfigError::Zero { field });
        let sizes = [
            ("max_frame_size", u64::from(self.max_frame_size)),
            ("chunk_size", u64::from(self.chunk_size)),
            ("max_message_size", self.max_message_size),
            (
                "max_buffered_per_connection",
                self.max_buffered_per_connection,
            ),
            ("max_buffered_total", self.max_buffered_total),
            (
                "max_connections",
                u64::try_from(self.max_connections).unwrap_or(u64::MAX),
            ),
        ];
        for (field, value) in sizes {
            if value == 0 {
                return zero(field);
            }
        }
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("backoff_min", self.backoff_min),
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return zero(field);
            }
        }
        if self.chunk_size > self.max_frame_size {
            return Err(TcpConfigError::ChunkAboveFrame {
                chunk_size: self.chunk_size,
                max_frame_size: self.max_frame_size,
            });
        }
        if self.backoff_min > self.backoff_max {
            return Err(TcpConfigError::BackoffRange {
                min: self.backoff_min,
                max: self.backoff_max,
            });
        }
        if !(self.max_message_size <= self.max_buffered_per_connection
            && self.max_buffered_per_connection <= self.max_buffered_total)
        {
            return Err(TcpConfigError::BufferOrder {
                message: self.max_message_size,
                per_connection: self.max_buffered_per_connection,
                total: self.max_buffered_total,
            });
        }
        // The total is the largest of the three.
        if usize::try_from(self.max_buffered_total).is_err() {
            return Err(TcpConfigError::Unaddressable {
                field: "max_buffered_total",
                value: self.max_buffered_total,
            });
        }
        if self.cluster_id.len() > MAX_NAME_LEN {
            return Err(TcpConfigError::NameTooLong {
                what: "cluster_id",
                len: self.cluster_id.len(),
            });
        }
        Ok(())
    }

    /// `max_message_size` as a `usize`; [`validate`](Self::validate) guarantees it fits.
    pub(crate) fn max_message_len(&self) -> usize {
        to_usize(self.max_message_size)
    }

    /// `max_buffered_per_connection` as a `usize`.
    pub(crate) fn max_buffered_per_connection_len(&self) -> usize {
        to_usize(self.max_buffered_per_connection)
    }

    /// `max_buffered_total` as a `usize`.
    pub(crate) fn max_buffered_total_len(&self) -> usize {
        to_usize(self.max_buffered_total)
    }
}

fn to_usize(len: u64) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            cluster_id: Self::DEFAULT_CLUSTER_ID.to_owned(),
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            chunk_size: Self::DEFAULT_CHUNK_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_buffered_per_connection: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_buffered_total: 2 * Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            gather_requests: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(TcpConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_checked() {
        let base = TcpConfig::default();
        let cases = [
            TcpConfig {
                max_frame_size: 0,
                ..base.clone()
            },
            TcpConfig {
                chunk_size: 0,
                ..base.clone()
            },
            TcpConfig {
                max_message_size: 0,
                ..base.clone()
            },
            TcpConfig {
                connect_timeout: Duration::ZERO,
                ..base.clone()
            },
            TcpConfig {
                request_timeout: Duration::ZERO,
                ..base.clone()
            },
            TcpConfig {
                backoff_min: Duration::ZERO,
                ..base.clone()
            },
            TcpConfig {
                chunk_size: base.max_frame_size + 1,
                ..base.clone()
            },
            TcpConfig {
                backoff_min: Duration::from_secs(2),
                backoff_max: Duration::from_secs(1),
                ..base.clone()
            },
            TcpConfig {
                max_buffered_per_connection: 0,
                ..base.clone()
            },
            TcpConfig {
                max_buffered_total: 0,
                ..base.clone()
            },
            TcpConfig {
                max_connections: 0,
                ..base.clone()
            },
            TcpConfig {
                handshake_timeout: Duration::ZERO,
                ..base.clone()
            },
            TcpConfig {
                idle_timeout: Duration::ZERO,
                ..base.clone()
            },
            TcpConfig {
                max_buffered_per_connection: base.max_message_size - 1,
                ..base.clone()
            },
            TcpConfig {
                max_buffered_total: base.max_buffered_per_connection - 1,
                ..base.clone()
            },
            TcpConfig {
                cluster_id: "x".repeat(256),
                ..base.clone()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?} passed validation");
        }
    }

    #[test]
    fn chunk_may_equal_frame() {
        let config = TcpConfig {
            max_frame_size: 1024,
            chunk_size: 1024,
            ..TcpConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
