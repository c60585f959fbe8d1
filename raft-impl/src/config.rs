//! Timing and batching knobs of a Raft node.

use std::time::Duration;

/// Chainable setters, one per field: `with_x(self, value) -> Self`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

/// How a node times its elections and heartbeats and how much it sends at once.
///
/// [`Config::default`] suits a cluster on a local network. [`Config::lab`] matches the
/// classic Raft lab's limits: at most ten heartbeats per second per follower, no entry
/// appended by a new leader, one batch in flight per follower.
///
/// The struct is `#[non_exhaustive]`, so that adding a knob breaks nobody: start from
/// [`Config::default`] or [`Config::lab`] and change what you need, with the chainable
/// `with_*` setters or by assigning the public fields.
///
/// ```
/// use std::time::Duration;
/// use raft_impl::Config;
///
/// let config = Config::default().with_heartbeat_interval(Duration::from_millis(20));
/// assert!(config.validate().is_ok());
/// assert!(config.clone().with_max_append_entries(0).validate().is_err());
/// assert!(config.clone().with_snapshot_after_entries(Some(0)).validate().is_err());
///
/// let mut lab = Config::lab();
/// lab.seed = Some(42);
/// assert!(lab.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// How long a leader waits for a reply to an InstallSnapshot piece before it asks the
    /// follower where it stands and resumes from there.
    pub install_snapshot_timeout: Duration,
    /// How long a leader may wait before it tells idle followers of a new commit index
    /// with an empty AppendEntries. Any AppendEntries sent meanwhile carries the index
    /// anyway, so under a stream of proposals the notice costs nothing; when commands
    /// trickle in, one notice covers every commit of the window instead of one RPC per
    /// follower per command. Zero sends the notice at once.
    pub commit_notice_delay: Duration,
    /// How long a leader may wait for more proposals before it appends a batch of them,
    /// so that one AppendEntries and one log write carry them all: it waits while the
    /// batch has fewer proposals than the one before it (so never for a lone client),
    /// until it has as many or this long has passed. Closed-loop clients otherwise
    /// settle into groups that take turns, each round carrying one group (16 `raft-kv`
    /// clients: 7.5-8 entries per AppendEntries; 12.7-13.8 with 200 µs). Zero (the
    /// default) never waits. The loop handles nothing else while it waits: keep it well
    /// under the heartbeat interval.
    pub propose_linger: Duration,
    /// Whether a new leader appends a blank entry, so that entries of earlier terms
    /// commit without waiting for a client command (§5.4.2, §8). The classic lab forbids
    /// it: its first command must get index 1.
    pub leader_noop: bool,
    /// Seeds the node's random election timeouts. `None` takes a seed from the runtime.
    /// Either way the node id is mixed in, so one seed serves a whole cluster.
    pub seed: Option<u64>,
    /// Pre-vote (Raft thesis §9.6): before raising its term, a node whose election timer
    /// fired asks "would you vote for me?" and campaigns only if a majority would. A node
    /// that rejoins after a partition then cannot depose a healthy leader.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2, §4.2.3): a leader that has not heard from a majority
    /// within `election_timeout_min` steps down, and a node that heard from a leader
    /// within `election_timeout_min` refuses votes and pre-votes (except for a
    /// leadership transfer), so removed servers and one-way links cannot disrupt a
    /// healthy leader.
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1): a leader serves reads without a round of heartbeats
    /// while a majority acknowledged it within `election_timeout_min - clock_drift_margin`.
    /// Safe only if clocks advance at nearly the same rate everywhere; needs
    /// `check_quorum`. Off by default: ReadIndex is safe without clock assumptions.
    pub lease_reads: bool,
    /// How much of the lease is given up to cover clock drift between servers.
    pub clock_drift_margin: Duration,
    /// How many entries a snapshot covers that the log keeps anyway (the trailing
    /// window): after a snapshot at index `S`, entries `S - n + 1 ..= S` stay, so a
    /// follower whose next index is inside the window is sent entries instead of the
    /// whole snapshot. Zero discards everything the snapshot covers.
    pub snapshot_trailing_entries: u64,
    /// The snapshot policy: once this many entries have been applied since the last
    /// snapshot, the node takes one itself. It captures the state machine's state
    /// between two applies with
    /// [`StateMachine::capture_snapshot_stream`](raft_traits::StateMachine::capture_snapshot_stream)
    /// (or [`capture_snapshot`](raft_traits::StateMachine::capture_snapshot)) and writes
    /// it on a task of its own, in pieces, into a writer of the storage
    /// ([`Storage::create_snapshot`](raft_traits::Storage::create_snapshot)); for a state
    /// machine that cannot capture cheaply it awaits
    /// [`StateMachine::snapshot`](raft_traits::StateMachine::snapshot) there. `None`
    /// leaves snapshots to the service, through `Raft::snapshot`, which works either way.
    pub snapshot_after_entries: Option<u64>,
    /// The snapshot policy's other trigger: once the entries applied since the last
    /// snapshot amount to this many bytes (their postcard encoding, what the log holds
    /// of them), the node takes one, as for
    /// [`snapshot_after_entries`](Config::snapshot_after_entries); whichever is reached
    /// first. Counting costs an encoding of each applied entry, so it is done only when
    /// this is set. `None`: entries alone decide.
    pub snapshot_after_bytes: Option<u64>,
    /// A condition on the two triggers above: a snapshot they call for waits until the
    /// entries applied since the last snapshot encode to at least this percent of that
    /// snapshot's size. For a state machine whose snapshot writes its whole state, this
    /// keeps the snapshot work a fixed share of the log's volume however large the
    /// state grows (at 100, the bytes snapshots write are at most the bytes the log
    /// took), at the price of a log (in storage, and replayed on restart) up to that
    /// share of the state's size. The policy of Redis's `auto-aof-rewrite-percentage`.
    /// Counting costs an encoding of each applied entry, as for `snapshot_after_bytes`.
    /// `None`: the triggers alone decide.
    pub snapshot_log_growth_percent: Option<u64>,
    /// The most snapshot data one InstallSnapshot carries. A snapshot is sent in pieces
    /// of this size, read from storage as they go, so neither end holds it whole.
    pub snapshot_chunk_size: usize,
    /// How many InstallSnapshot pieces may be in flight to one follower before the
    /// leader waits for replies. The leader reads at most this many pieces into memory
    /// per follower at once.
    pub snapshot_chunks_in_flight: usize,
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
            propose_linger: Duration::ZERO,
            leader_noop: true,
            seed: None,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            clock_drift_margin: Duration::from_millis(50),
            snapshot_trailing_entries: 4096,
            snapshot_after_entries: None,
            snapshot_after_bytes: None,
            snapshot_log_growth_percent: None,
            snapshot_chunk_size: 1 << 20,
            snapshot_chunks_in_flight: 4,
        }
    }
}

impl Config {
    /// The configuration the classic Raft lab's tests expect: ten heartbeats per second,
    /// elections in 350–700 ms, no leader blank entry, commit notices batched over
    /// 10 ms (the lab counts RPCs per agreement, and polls for commits every 20 ms), and
    /// no trailing window: the lab snapshots every 10 entries and bounds the persisted
    /// log at 2000 bytes, so the log must really be cut at each snapshot.
    pub fn lab() -> Self {
        Config {
            election_timeout_min: Duration::from_millis(350),
            election_timeout_max: Duration::from_millis(700),
            heartbeat_interval: Duration::from_millis(100),
            max_append_entries: 512,
            max_inflight_appends: 1,
            install_snapshot_timeout: Duration::from_millis(400),
            commit_notice_delay: Duration::from_millis(10),
            propose_linger: Duration::ZERO,
            leader_noop: false,
            seed: None,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            clock_drift_margin: Duration::from_millis(50),
            snapshot_trailing_entries: 0,
            snapshot_after_entries: None,
            snapshot_after_bytes: None,
            snapshot_log_growth_percent: None,
            snapshot_chunk_size: 1 << 20,
            snapshot_chunks_in_flight: 4,
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
        if self.lease_reads && !self.check_quorum {
            return Err(ConfigError::LeaseNeedsCheckQuorum);
        }
        if self.lease_reads && self.clock_drift_margin >= self.election_timeout_min {
            return Err(ConfigError::DriftMarginTooLarge {
                margin: self.clock_drift_margin,
                election_min: self.election_timeout_min,
            });
        }
        if self.snapshot_after_entries == Some(0) {
            return Err(ConfigError::Zero("snapshot_after_entries"));
        }
        if self.snapshot_after_bytes == Some(0) {
            return Err(ConfigError::Zero("snapshot_after_bytes"));
        }
        if self.snapshot_log_growth_percent == Some(0) {
            return Err(ConfigError::Zero("snapshot_log_growth_percent"));
        }
        if self.snapshot_chunk_size == 0 {
            return Err(ConfigError::Zero("snapshot_chunk_size"));
        }
        if self.snapshot_chunks_in_flight == 0 {
            return Err(ConfigError::Zero("snapshot_chunks_in_flight"));
        }
        if self.install_snapshot_timeout.is_zero() {
            return Err(ConfigError::Zero("install_snapshot_timeout"));
        }
        Ok(())
    }

    setters! {
        /// Sets [`election_timeout_min`](Config::election_timeout_min).
        with_election_timeout_min: election_timeout_min: Duration;
        /// Sets [`election_timeout_max`](Config::election_timeout_max).
        with_election_timeout_max: election_timeout_max: Duration;
        /// Sets [`heartbeat_interval`](Config::heartbeat_interval).
        with_heartbeat_interval: heartbeat_interval: Duration;
        /// Sets [`max_append_entries`](Config::max_append_entries).
        with_max_append_entries: max_append_entries: usize;
        /// Sets [`max_inflight_appends`](Config::max_inflight_appends).
        with_max_inflight_appends: max_inflight_appends: usize;
        /// Sets [`install_snapshot_timeout`](Config::install_snapshot_timeout).
        with_install_snapshot_timeout: install_snapshot_timeout: Duration;
        /// Sets [`commit_notice_delay`](Config::commit_notice_delay).
        with_commit_notice_delay: commit_notice_delay: Duration;
        /// Sets [`propose_linger`](Config::propose_linger).
        with_propose_linger: propose_linger: Duration;
        /// Sets [`leader_noop`](Config::leader_noop).
        with_leader_noop: leader_noop: bool;
        /// Sets [`seed`](Config::seed).
        with_seed: seed: Option<u64>;
        /// Sets [`pre_vote`](Config::pre_vote).
        with_pre_vote: pre_vote: bool;
        /// Sets [`check_quorum`](Config::check_quorum).
        with_check_quorum: check_quorum: bool;
        /// Sets [`lease_reads`](Config::lease_reads).
        with_lease_reads: lease_reads: bool;
        /// Sets [`clock_drift_margin`](Config::clock_drift_margin).
        with_clock_drift_margin: clock_drift_margin: Duration;
        /// Sets [`snapshot_trailing_entries`](Config::snapshot_trailing_entries).
        with_snapshot_trailing_entries: snapshot_trailing_entries: u64;
        /// Sets [`snapshot_after_entries`](Config::snapshot_after_entries).
        with_snapshot_after_entries: snapshot_after_entries: Option<u64>;
        /// Sets [`snapshot_after_bytes`](Config::snapshot_after_bytes).
        with_snapshot_after_bytes: snapshot_after_bytes: Option<u64>;
        /// Sets [`snapshot_log_growth_percent`](Config::snapshot_log_growth_percent).
        with_snapshot_log_growth_percent: snapshot_log_growth_percent: Option<u64>;
        /// Sets [`snapshot_chunk_size`](Config::snapshot_chunk_size).
        with_snapshot_chunk_size: snapshot_chunk_size: usize;
        /// Sets [`snapshot_chunks_in_flight`](Config::snapshot_chunks_in_flight).
        with_snapshot_chunks_in_flight: snapshot_chunks_in_flight: usize;
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
    /// Lease reads are only safe when leaders step down without a quorum.
    #[error("lease_reads needs check_quorum")]
    LeaseNeedsCheckQuorum,
    /// The drift margin leaves no lease.
    #[error(
        "clock_drift_margin {margin:?} must be shorter than election_timeout_min {election_min:?}"
    )]
    DriftMarginTooLarge {
        /// The configured margin.
        margin: Duration,
        /// The configured shortest election timeout.
        election_min: Duration,
    },
    /// A count or duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The node's own id is not among the cluster's members.
    #[error("node {0} is not a member of the cluster")]
    NotAMember(raft_traits::NodeId),
    /// The bootstrap configuration is not valid.
    #[error("invalid cluster configuration: {0}")]
    Membership(#[from] raft_traits::MembershipError),
}
