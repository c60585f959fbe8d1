//! The vocabulary of the raft framework.
//!
//! This crate holds no algorithm and does no I/O. It defines what the other crates talk
//! about:
//!
//! * identifiers and the log: [`NodeId`], [`Term`], [`LogIndex`], [`LogId`], [`Entry`],
//!   [`HardState`], [`Snapshot`];
//! * the RPCs of Raft and their replies: [`Request`], [`Response`] and the messages inside
//!   them;
//! * the traits a deployment plugs in:
//!
//! | trait | what it provides | default implementation |
//! |---|---|---|
//! | [`Runtime`] | tasks, timers, a clock, seeds | `raft_net_smol::SmolRuntime` |
//! | [`Codec`] | bytes ⇄ values | [`Postcard`] |
//! | [`Storage`] | durable hard state, log, snapshot | `raft_mem::MemStorage` |
//! | [`StateMachine`] | the replicated application | `raft_mem::KvStateMachine` |
//! | [`Transport`] | request/reply RPC to peers | `raft_mem::MemNetwork`, `raft_net_smol` TCP |
//!
//! Each trait's documentation states the contract an implementation must keep. The
//! `raft-tests` crate ships a conformance suite per trait that checks an implementation
//! against that contract; run it from your backend's tests.
//!
//! # Example: the up-to-date rule as an ordering
//!
//! ```
//! use raft_traits::{LogId, LogIndex, Term};
//!
//! let longer_but_older = LogId::new(Term(2), LogIndex(10));
//! let shorter_but_newer = LogId::new(Term(3), LogIndex(4));
//! assert!(shorter_but_newer > longer_but_older);
//! ```

mod codec;
mod message;
mod runtime;
mod state_machine;
mod storage;
mod transport;
mod types;

pub use codec::{Codec, CodecError, Postcard};
pub use message::{
    AppendEntries, AppendOutcome, AppendReply, ConflictHint, InstallOutcome, InstallSnapshot,
    InstallSnapshotReply, Request, RequestVote, Response, VoteReply,
};
pub use runtime::{Elapsed, JoinError, JoinHandle, Runtime, timeout};
pub use state_machine::{StateMachine, StateMachineError};
pub use storage::{RecoveredState, Storage, StorageError};
pub use transport::{HandlerError, RpcHandler, Transport, TransportError};
pub use types::{
    Command, Entry, HardState, LogId, LogIndex, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

/// Re-exported so that implementations name the same `async_trait` and `Bytes` as the
/// traits.
pub use async_trait::async_trait;
pub use bytes::Bytes;
