//! How a KV node serves `get`: through the log, or without writing (ReadIndex, lease).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_impl::ReadError;
use raft_traits::LogIndex;

use crate::state_machine::{KvRaft, KvView};

/// How a KV node serves `get`. Every mode is linearizable under its assumptions; they
/// differ in cost and in what they assume.
///
/// The mode is the node's: a client sends reads as [`ClientRequest::Read`], and a node in
/// [`Log`](ReadMode::Log) mode tells it to send them through the log instead.
///
/// [`ClientRequest::Read`]: crate::ClientRequest::Read
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// A `get` is a command in the log like a `put`: linearizable with no assumption, at
    /// the price of a log entry (a replication round and an fsync on a majority) per read.
    Log,
    /// ReadIndex (Raft thesis §6.4): the leader confirms it still leads with one round of
    /// heartbeats to a majority, then answers from its state once it has applied the
    /// commit index it had when the read arrived. Linearizable with no clock assumption;
    /// nothing is written. A follower asks the leader for the read index and answers from
    /// its own state once it has applied that far.
    #[default]
    ReadIndex,
    /// Lease reads (thesis §6.4.1): ReadIndex without the heartbeat round while the
    /// leader's lease holds ([`Config::lease_reads`](raft_impl::Config::lease_reads)).
    /// Linearizable only if no server's clock runs faster than another's by more than
    /// [`Config::clock_drift_margin`](raft_impl::Config::clock_drift_margin) over an
    /// election timeout.
    Lease,
}

impl ReadMode {
    /// Every mode, in the order of the `--read-mode` values.
    pub const ALL: [ReadMode; 3] = [ReadMode::Log, ReadMode::ReadIndex, ReadMode::Lease];

    /// The mode's name on the command line: `log`, `read-index` or `lease`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadMode::Log => "log",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Lease => "lease",
        }
    }
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A read mode name that is none of `log`, `read-index` and `lease`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown read mode {0:?} (expected log, read-index or lease)")]
pub struct ParseReadModeError(String);

impl FromStr for ReadMode {
    type Err = ParseReadModeError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ReadMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == name)
            .ok_or_else(|| ParseReadModeError(name.to_owned()))
    }
}

/// A value read without writing to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizableRead {
    /// The key's value, `None` if it is not set.
    pub value: Option<Arc<str>>,
    /// The read index: the state read had applied at least this far.
    pub read_index: LogIndex,
}

/// What a node's linearizable reads came to so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Reads answered from the state after a read barrier.
    pub served: u64,
    /// Times a read found the leader not ready (no entry of its term committed yet) and
    /// was tried again.
    pub not_ready_retries: u64,
}

/// The counters behind [`ReadStats`], shared by the clones of a [`KvView`].
#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    served: AtomicU64,
    not_ready_retries: AtomicU64,
}

impl ReadCounters {
    pub(crate) fn stats(&self) -> ReadStats {
        ReadStats {
            served: self.served.load(Ordering::Relaxed),
            not_ready_retries: self.not_ready_retries.load(Ordering::Relaxed),
        }
    }
}

/// The first pause after a [`ReadError::NotReady`]; it doubles up to [`NOT_READY_MAX`].
const NOT_READY_MIN: Duration = Duration::from_millis(1);

/// The longest pause between two attempts at a read the leader is not ready for.
const NOT_READY_MAX: Duration = Duration::from_millis(20);

impl KvView {
    /// Reads `key` linearizably without writing to the log: a read barrier on `raft`
    /// ([`Raft::read_barrier`](raft_impl::Raft::read_barrier): ReadIndex, or a lease if
    /// the node's configuration enables them; on a follower, the read index comes from
    /// the leader), then this view's state, which has applied at least that far.
    ///
    /// A leader that has not yet committed an entry of its term answers
    /// [`ReadError::NotReady`]; that is retried here, with short pauses, for up to
    /// `patience`. Every other error is returned at once.
    pub async fn read(
        &self,
        raft: &KvRaft,
        key: &str,
        patience: Duration,
    ) -> Result<LinearizableRead, ReadError> {
        let deadline = Instant::now() + patience;
        let mut pause = NOT_READY_MIN;
        let read_index = loop {
            match raft.read_barrier().await {
                Ok(index) => break index,
                Err(ReadError::NotReady) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return Err(ReadError::NotReady);
                    }
                    self.reads.not_ready_retries.fetch_add(1, Ordering::Relaxed);
                    smol::Timer::after(pause.min(remaining)).await;
                    pause = pause.saturating_mul(2).min(NOT_READY_MAX);
                }
                Err(error) => return Err(error),
            }
        };
        // The state has applied `read_index` or more: anything applied is committed, so
        // a later state only adds writes that committed while this read was under way.
        let value = self.get_shared(key).await;
        self.reads.served.fetch_add(1, Ordering::Relaxed);
        Ok(LinearizableRead { value, read_index })
    }

    /// What this view's linearizable reads came to so far.
    pub fn read_stats(&self) -> ReadStats {
        self.reads.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_names_and_nothing_else() {
        for mode in ReadMode::ALL {
            assert_eq!(mode.as_str().parse::<ReadMode>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(ReadMode::default(), ReadMode::ReadIndex);
        let error = "readindex".parse::<ReadMode>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown read mode \"readindex\" (expected log, read-index or lease)"
        );
        assert!("".parse::<ReadMode>().is_err());
        assert!("Log".parse::<ReadMode>().is_err());
    }
}
