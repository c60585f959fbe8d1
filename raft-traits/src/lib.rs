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
//! # Implementing the traits
//!
//! * **[`Storage`]**: keep the hard state, a contiguous log after an optional snapshot,
//!   and the snapshot. Make every write durable before returning `Ok` (Raft sends
//!   nothing that depends on a write before it returns). Appends must continue the log
//!   exactly; `save_snapshot` stores the snapshot and compacts the log in one atomic
//!   step; reads outside the log are typed errors; `recover` returns what was written,
//!   and refuses corrupt data with [`StorageError::Corrupt`] rather than dropping it.
//!   Check it with `raft_tests::conformance::storage::run`, giving it a factory that
//!   makes a fresh store and can reopen one as after a restart.
//! * **[`StateMachine`]**: apply commands deterministically (application errors go in
//!   the response), take a snapshot of everything applied, restore one, and never move
//!   backwards (refuse a snapshot older than what is applied). `apply` may call back
//!   into the Raft handle. Check it with `raft_tests::conformance::state_machine::run`.
//! * **[`Transport`]**: deliver a request and return the reply, never hang (time out
//!   with [`TransportError::Timeout`]), report an unreachable peer as
//!   [`TransportError::Unreachable`], and let concurrent requests proceed independently.
//!   On the receiving side, hand requests to an [`RpcHandler`] (the Raft handle). Check
//!   it with `raft_tests::conformance::transport::run`.
//! * **[`Runtime`]**: spawn tasks (dropping the handle detaches), sleep, a monotonic
//!   clock, seeds. Check it with `raft_tests::conformance::runtime::run`, from inside the
//!   runtime.
//! * **[`Codec`]**: encode and decode every message; decoding untrusted bytes returns
//!   [`CodecError`], never panics. [`Postcard`] is the default.
//!
//! `raft_file_store` (in `examples/file-store`) and `raft_tokio` (in
//! `examples/tokio-runtime`) are complete downstream implementations built on this crate
//! alone, with their conformance tests.
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
mod membership;
mod message;
mod runtime;
mod snapshot;
mod state_machine;
mod storage;
mod transport;
mod types;

pub use codec::{Codec, CodecError, Postcard};
pub use membership::{Membership, MembershipError};
pub use message::{
    AppendEntries, AppendOutcome, AppendReply, ConflictHint, IndexReply, InstallOutcome,
    InstallSnapshot, InstallSnapshotReply, ReadIndexRefusal, ReadIndexRequest, Request,
    RequestVote, Response, TimeoutNow, VoteReply,
};
pub use runtime::{Elapsed, JoinError, JoinHandle, Runtime, timeout};
pub use snapshot::{
    BufferWriter, BytesReader, PendingSnapshot, SnapshotChecksum, SnapshotDescriptor,
    SnapshotReader, SnapshotWriter, StagedSnapshot, read_all,
};
pub use state_machine::{SnapshotJob, SnapshotSource, StateMachine, StateMachineError};
pub use storage::{READ_PIECE, RecoveredState, Storage, StorageError};
pub use transport::{HandlerError, ReplyTo, RequestRefused, RpcHandler, Transport, TransportError};
pub use types::{
    Command, Entry, HardState, LogId, LogIndex, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};

/// Re-exported so that implementations name the same `async_trait` and `Bytes` as the
/// traits.
pub use async_trait::async_trait;
pub use bytes::Bytes;
