//! The Raft algorithm, as a library.
//!
//! Three layers, each in its own module:
//!
//! * [`core`]: the I/O-free, deterministic type-state machine. `Node<Follower>`,
//!   `Node<Candidate>` and `Node<Leader>` hold the protocol; stepping one with an input
//!   yields the next role and an ordered batch of effects.
//! * `driver`: the async event loop that owns a core, feeds it messages, replies and
//!   timer fires, and carries out its effects through the [`raft_traits`] implementations
//!   (storage, transport, state machine, runtime).
//! * [`Raft`]: the handle applications hold: [`start`](Raft::start) and
//!   [`propose`](Raft::propose) commands, [`state`](Raft::state) and
//!   [`status`](Raft::status), [`snapshot`](Raft::snapshot), [`shutdown`](Raft::shutdown).
//!
//! Beside them, [`session`] wraps any state machine in client sessions, so that a
//! command retried after a lost answer is applied exactly once.
//!
//! A node is assembled from [`Parts`] and started with [`Raft::spawn`]:
//!
//! ```no_run
//! # use raft_impl::{Config, Parts, Raft};
//! # use raft_traits::*;
//! # async fn example<Rt: Runtime, S: Storage<String>, M: StateMachine<String>, T: Transport<String>>(
//! #     runtime: Rt, storage: S, state_machine: M, transport: T) -> Result<(), Box<dyn std::error::Error>> {
//! let members = [NodeId(1), NodeId(2), NodeId(3)];
//! let raft = Raft::spawn(NodeId(1), members, Config::default(), Parts {
//!     runtime, storage, state_machine, transport,
//! }).await?;
//! // Once elected, the node takes commands:
//! let response = raft.propose("set x = 1".to_string()).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod core;
mod driver;
mod error;
mod handle;
mod latency;
pub mod session;
mod status;

pub use config::{Config, ConfigError};
pub use core::{BootError, Counters, ReplicationMode, RoleKind};
pub use driver::MembershipChange;
pub use error::{
    MembershipChangeError, ProposeError, ReadError, SnapshotError, StartError, TransferError,
};
pub use handle::{Parts, Raft};
pub use latency::{LATENCY_BUCKETS, ProposalLatency};
pub use status::{FollowerProgress, Leadership, LeadershipWatch, Status, StatusWatch};
