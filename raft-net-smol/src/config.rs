//! [`TcpConfig`]: the limits and timeouts of the TCP transport and server.

use std::time::Duration;

use crate::error::TcpConfigError;

/// Limits and timeouts shared by [`TcpTransport`](crate::TcpTransport) and
/// [`TcpServer`](crate::TcpServer).
///
/// Both ends of a connection should use the same sizes: a sender splits messages into
/// chunks of at most its `chunk_size`, and a receiver closes a connection on which a
/// frame body exceeds its own `max_frame_size` or a reassembled message exceeds its own
/// `max_message_size`.
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
    /// The largest frame body this end accepts, in bytes (default 1 MiB). A frame header
    /// announcing more closes the connection before any of the body is read.
    pub max_frame_size: u32,
    /// Messages whose encoding is longer than this are sent as several frames of at most
    /// this many bytes each (default 256 KiB). At most `max_frame_size`. Frames of
    /// different messages are interleaved, so this is also about how long a small
    /// message may wait behind a large one.
    pub chunk_size: u32,
    /// The largest message, in encoded bytes, that this end sends or reassembles
    /// (default 1 GiB). It also bounds the bytes held for all partially received messages
    /// of one connection together.
    pub max_message_size: u64,
    /// How long the transport waits for a TCP connection to a peer (default 1 s).
    pub connect_timeout: Duration,
    /// How long the transport waits for a reply once a request has been queued on a
    /// connection (default 5 s). It covers sending the request, so it must leave room for
    /// the largest snapshot at the link's speed.
    pub request_timeout: Duration,
    /// The wait after a first failed connection attempt before the next one (default
    /// 50 ms). It doubles after each further failure, up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest wait between connection attempts (default 1 s).
    pub backoff_max: Duration,
}

impl TcpConfig {
    /// The default `max_frame_size`: 1 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 20;
    /// The default `chunk_size`: 256 KiB.
    pub const DEFAULT_CHUNK_SIZE: u32 = 256 << 10;
    /// The default `max_message_size`: 1 GiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1 << 30;

    /// Checks that the values are usable together.
    ///
    /// Every size and duration must be non-zero, `chunk_size` at most `max_frame_size`,
    /// `backoff_min` at most `backoff_max`, and `max_message_size` addressable on this
    /// platform.
    pub fn validate(&self) -> Result<(), TcpConfigError> {
        let zero = |field: &'static str| Err(TcpConfigError::Zero { field });
        if self.max_frame_size == 0 {
            return zero("max_frame_size");
        }
        if self.chunk_size == 0 {
            return zero("chunk_size");
        }
        if self.max_message_size == 0 {
            return zero("max_message_size");
        }
        if self.connect_timeout.is_zero() {
            return zero("connect_timeout");
        }
        if self.request_timeout.is_zero() {
            return zero("request_timeout");
        }
        if self.backoff_min.is_zero() {
            return zero("backoff_min");
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
        if usize::try_from(self.max_message_size).is_err() {
            return Err(TcpConfigError::MessageSizeUnaddressable(
                self.max_message_size,
            ));
        }
        Ok(())
    }

    /// `max_message_size` as a `usize`; [`validate`](Self::validate) guarantees it fits.
    pub(crate) fn max_message_len(&self) -> usize {
        usize::try_from(self.max_message_size).unwrap_or(usize::MAX)
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            chunk_size: Self::DEFAULT_CHUNK_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
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
