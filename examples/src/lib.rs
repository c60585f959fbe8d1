//! Runnable programs built only on the public raft API, and the library behind them: a
//! replicated key-value service over TCP.
//!
//! * [`KvNode`]: one node of the service. A Raft node (`raft-impl`) on the TCP transport
//!   and the smol runtime (`raft-net-smol`), with durable files (`raft-file-store`) or
//!   memory for storage, and [`SnapshottingKv`] (the `raft-mem` KV store in a table of
//!   client sessions, snapshotting itself every N entries) as its state machine. It
//!   listens on two ports: Raft RPCs from its peers, and clients.
//! * [`KvClient`]: a client that finds the leader by itself (leader hints, failover,
//!   backoff through elections) and runs `put` and `delete` through the log, exactly
//!   once: in client sessions ([`raft_impl::session`]), so that a command retried after
//!   a lost answer is not applied again; `get` is a linearizable read, served as the
//!   node's [`ReadMode`] says.
//! * [`protocol`]: the messages between them.
//! * [`bench`](mod@bench): the load generator behind `raft-kv bench` ([`Bench`]), and
//!   [`progress`], the progress bar it and `raft-bench` show on a terminal.
//! * Test utilities for clusters on real sockets: [`FaultProxy`], a TCP proxy that
//!   passes, delays, drops or cuts a link; [`free_loopback_addrs`] and [`PortHolder`] to
//!   choose ports ahead of time and keep a stopped node's ports for its restart
//!   ([`KvNode::bind`] makes both unnecessary for nodes in one process).
//!
//! The `raft-kv` binary (`src/bin/raft-kv.rs`) runs a node (`raft-kv serve`, or
//! `serve --join` to join a running cluster) or a client command (`raft-kv
//! put/get/delete/status`, and `add-node/remove-node/members` to change and show the
//! cluster's members); the `kv_cluster` example runs a whole cluster in one process and
//! shows elections, failover, catch-up and a node replaced live.
//!
//! # Membership
//!
//! A node records every member's Raft and client addresses ([`MemberAddr`]) in Raft's
//! configuration, which the log replicates and storage keeps: a node that joins learns
//! where everyone is, a restart takes the members from storage ([`FirstStart`] says what
//! a first start does), and a node that is not the leader can send a client to the
//! leader's client address, even a leader the client was not told of.
//!
//! # Reads are linearizable
//!
//! A node serves `get` in one of three [`ReadMode`]s. In `log` mode a `get` is a command
//! in the log like a `put`: the leader appends it, commits it with a majority, applies it
//! in log order and answers with the value at that point of the log; a leader that has
//! been deposed without knowing it cannot commit, so it cannot answer a stale read. The
//! price is a log entry (a replication round and an fsync) per read. In `read-index`
//! mode (the default) nothing is written: the node passes a read barrier
//! ([`Raft::read_barrier`](raft_impl::Raft::read_barrier): the leader confirms with one
//! heartbeat round that it still leads, and the node waits until it has applied the
//! commit index of that moment), then reads its state ([`KvView::read`]). `lease` mode
//! skips the heartbeat round while the leader's lease holds, which is safe only while
//! clocks drift less than the configured margin.
//!
//! # Example: a one-node cluster
//!
//! ```
//! use raft_examples::{ClientConfig, KvClient, KvNode, NodeConfig};
//! use raft_traits::NodeId;
//!
//! smol::block_on(async {
//!     let any = "127.0.0.1:0".parse().unwrap();
//!     let node = KvNode::start(NodeConfig::new(NodeId(1), any, any, [])).await.unwrap();
//!     let client = KvClient::new([(NodeId(1), node.client_addr())], ClientConfig::default())
//!         .unwrap();
//!     assert_eq!(client.put("color", "blue").await.unwrap(), None);
//!     assert_eq!(client.get("color").await.unwrap().as_deref(), Some("blue"));
//!     client.shutdown();
//!     node.shutdown().await;
//! });
//! ```

pub mod bench;
mod changes;
mod client;
mod members;
pub mod metrics;
mod node;
pub mod pki;
mod ports;
pub mod progress;
pub mod protocol;
mod proxy;
mod read;
mod state_machine;

pub use bench::{Bench, BenchConfig, BenchError, BenchReport, Stop, Workload};
pub use client::{ClientConfig, ClientError, KvClient, describe_failure};
pub use members::{MemberAddr, MemberAddrError, MembersError, parse_members, resolve};
pub use node::{
    BoundNode, DEFAULT_CHANGE_WAIT, DEFAULT_MAX_INFLIGHT_APPENDS, DEFAULT_MAX_SESSIONS,
    DEFAULT_PROPOSE_LINGER, DEFAULT_READ_TIMEOUT, DEFAULT_SNAPSHOT_ENTRIES,
    DEFAULT_SNAPSHOT_GROWTH_PERCENT, FirstStart, KvNode, NodeConfig, NodeError,
};
pub use ports::{PortHolder, free_loopback_addrs};
pub use protocol::{
    ChangeRefused, ClientRequest, ClientResponse, ClusterMembers, NodeCounters, NodeStatus, Role,
};
pub use proxy::{FaultProxy, LinkMode};
pub use read::{LinearizableRead, ParseReadModeError, ReadMode, ReadStats};
pub use state_machine::{
    KvRaft, KvSessionCommand, KvSessionResult, KvSessions, KvView, SnapshotStats, SnapshottingKv,
};
