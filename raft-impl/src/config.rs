//! Timing and batching knobs of a Raft node.

use std::time::Duration;

use crate::testing::PlantedBug;

/// How a node times its elections and heartbeats and how much it sends at once.
///
/// [`Config::default`] suits a cluster on a local network. [`Config::lab`] matches the
/// classic Raft lab's limits: at most ten heartbeats per second per follower, no entry
/// appended by a new leader, one batch in flight per follower.
///
/// ```
/// use std::time::Duration;
/// use raft_impl::Config;
///
/// let config = Config {
///     heartbeat_interval: Duration::from_millis(20),
///     ..Config::default()
/// };
/// assert!(config.validate().is_ok());
/// assert!(Config { max_append_entries: 0, ..config }.validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The shortest election timeout. Each timeout is drawn uniformly from
    /// `election_timeout_min..election_timeout_max`, so that split votes resolve (§5.2).
    pub election_timeout_min: Duration,
    /// The longest election timeout (exclusive).
    pub election_timeout_max: Duration,
    /// How often a leader sends AppendEntries to each follower when it has nothing else
    /// to send. Must be well below `election_timeout_min`.
    pub heartbeat_interval: Duration,
    /// The most entries one AppendEntries carries.
    pub max_append_entries: usize,
    /// How many AppendEntries carrying entries may be in flight to one follower before
    /// the leader waits for replies (pipelining). Heartbeats are not limited by it.
    pub max_inflight_appends: usize,
    /// How long a leader waits for an InstallSnapshot reply before it sends the snapshot
    /// again.
    pub install_snapshot_timeout: Duration,
    /// How long a leader may wait before it tells idle followers of a new commit index
    /// with an empty AppendEntries. Any AppendEntries sent meanwhile carries the index
    /// anyway, so under a stream of proposals the notice costs nothing; when commands
    /// trickle in, one notice covers every commit of the window instead of one RPC per
    /// follower per command. Zero sends the notice at once.
    pub commit_notice_delay: Duration,
    /// Whether a new leader appends a blank entry, so that entries of earlier terms
    /// commit without waiting for a client command (§5.4.2, §8). The classic lab forbids
    /// it: its first command must get index 1.
    pub leader_noop: bool,
    /// Seeds the node's random election timeouts. `None` takes a seed from the runtime.
    /// Either way the node id is mixed in, so one seed serves a whole cluster.
    pub seed: Option<u64>,
    /// Test-only: a known protocol bug to switch on, so that a test can show its checks
    /// catch it. Exists only with the `planted-bugs` feature.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<PlantedBug>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(50),
            max_append_entries: 1024,
            max_inflight_appends: 1,
            install_snapshot_timeout: Duration::from_secs(10),
            commit_notice_delay: Duration::from_millis(2),
            leader_noop: true,
            seed: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}

impl Config {
    /// The configuration the classic Raft lab's tests expect: ten heartbeats per second,
    /// elections in 350–700 ms, no leader blank entry, and commit notices batched over
    /// 10 ms (the lab counts RPCs per agreement, and polls for commits every 20 ms).
    pub fn lab() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(350),
            election_timeout_max: Duration::from_millis(700),
            heartbeat_interval: Duration::from_millis(100),
            max_append_entries: 512,
            max_inflight_appends: 1,
            install_snapshot_timeout: Duration::from_millis(400),
            commit_notice_delay: Duration::from_millis(10),
            leader_noop: false,
            seed: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }

    /// Checks that the settings can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval,
                election_min: self.election_timeout_min,
            });
        }
        if self.max_append_entries == 0 {
            return Err(ConfigError::Zero("max_append_entries"));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::Zero("max_inflight_appends"));
        }
        if self.install_snapshot_timeout.is_zero() {
            return Err(ConfigError::Zero("install_snapshot_timeout"));
        }
        Ok(())
    }

    /// Whether the test-only `bug` is switched on; always `false` without the
    /// `planted-bugs` feature.
    #[allow(unused_variables)]
    pub(crate) fn planted(&self, bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted_bug == Some(bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            false
        }
    }

    /// The snapshot timeout counted in heartbeats, at least one.
    pub(crate) fn install_snapshot_heartbeats(&self) -> u64 {
        let ratio =
            self.install_snapshot_timeout.as_nanos() / self.heartbeat_interval.as_nanos().max(1);
        u64::try_from(ratio).unwrap_or(u64::MAX).max(1)
    }
}

/// Why a [`Config`] or cluster membership was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The heartbeat interval is zero.
    #[error("heartbeat_interval must be greater than zero")]
    ZeroHeartbeat,
    /// The election timeout range is empty.
    #[error("election timeout range {min:?}..{max:?} is empty")]
    EmptyElectionRange {
        /// The configured minimum.
        min: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// Heartbeats would not arrive before followers time out.
    #[error(
        "heartbeat_interval {heartbeat:?} must be shorter than election_timeout_min {election_min:?}"
    )]
    HeartbeatTooSlow {
        /// The configured heartbeat interval.
        heartbeat: Duration,
        /// The configured shortest election timeout.
        election_min: Duration,
    },
    /// A count or duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The node's own id is not among the cluster's members.
    #[error("node {0} is not a member of the cluster")]
    NotAMember(raft_traits::NodeId),
}
