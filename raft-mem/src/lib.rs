//! In-memory backends for raft, built for tests and for the classic lab's scenario suite.
//!
//! | type | implements | what it is |
//! |---|---|---|
//! | [`MemStorage`] | [`Storage`](raft_traits::Storage) | a shared in-memory store, the lab's persister |
//! | [`MemNetwork`], [`MemTransport`] | [`Transport`](raft_traits::Transport) | a network with the lab's fault model: disabled links, lost and delayed messages, restarts |
//! | [`LocalNetwork`], [`LocalTransport`] | [`Transport`](raft_traits::Transport) | direct calls between nodes of one process: no encoding, no faults |
//! | [`KvStateMachine`] | [`StateMachine`](raft_traits::StateMachine) | a string key-value store |
//!
//! Nothing here touches a disk, a socket, the wall clock or the system's randomness: time
//! comes from the [`Runtime`](raft_traits::Runtime) and chance from a seed.
//!
//! # Example: what a harness does with a crashed server's storage
//!
//! The node and the harness hold clones of one [`MemStorage`]. On a crash the harness keeps
//! a deep [`copy`](MemStorage::copy) for the next instance, so late writes of the dead one
//! are lost, as on a real crash.
//!
//! ```
//! use futures::executor::block_on;
//! use raft_mem::MemStorage;
//! use raft_traits::{HardState, NodeId, Storage, Term};
//!
//! let mut dying_node: MemStorage<u64> = MemStorage::new();
//! let harness = dying_node.clone();
//! let term_1 = HardState { term: Term(1), voted_for: Some(NodeId(1)) };
//! block_on(dying_node.save_hard_state(term_1)).unwrap();
//!
//! // Crash: the next instance gets a copy of what was persisted so far.
//! let mut restarted = harness.copy();
//! block_on(dying_node.save_hard_state(HardState { term: Term(2), voted_for: None })).unwrap();
//!
//! assert_eq!(block_on(restarted.recover()).unwrap().hard_state, term_1);
//! println!("the persisted Raft state takes {} bytes", restarted.raft_state_size());
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod kv;
mod local;
mod network;
mod storage;

pub use kv::{KvCommand, KvResponse, KvStateMachine};
pub use local::{LocalNetwork, LocalTransport};
pub use network::{MemNetwork, MemTransport};
pub use storage::MemStorage;
