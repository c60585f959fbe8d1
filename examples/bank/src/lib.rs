//! Your first application on raft: a replicated bank.
//!
//! A small service with a state machine of its own, built only on the public crates
//! (`raft-traits`, `raft-impl`, `raft-mem`, `raft-net-smol`). Each file holds one thing
//! every embedder needs:
//!
//! | file | what it shows |
//! |---|---|
//! | `ledger.rs` | [`Ledger`]: the rules (deposit, withdraw with a typed insufficient-funds error, transfer), decided by the state machine so every replica agrees; its snapshot and restore |
//! | `replica.rs` | [`BankMachine`]: the ledger in client sessions ([`raft_impl::session`]), shared with the node for reads ([`BankView`]), compacting Raft's log with [`Raft::snapshot`](raft_impl::Raft::snapshot) |
//! | `node.rs` | [`BankNode`], [`Cluster`]: Raft nodes on TCP over loopback (`raft-net-smol`), in-memory storage (`raft-mem`); stop and restart |
//! | `client.rs` | [`BankClient`]: follows `NotLeader` hints, times out proposals ([`propose_with_timeout`], [`Attempt`]), retries in its session, reads linearizably |
//! | `main.rs` | the demo: `cargo run -p raft-bank` |
//!
//! # Example: one node
//!
//! ```
//! use raft_bank::{BankClient, ClientConfig, ClientError, BankError, Cluster, Settings};
//!
//! smol::block_on(async {
//!     let mut cluster = Cluster::start(1, Settings::default()).await.unwrap();
//!     let mut client = BankClient::connect(cluster.replicas(), ClientConfig::default())
//!         .await
//!         .unwrap();
//!     client.open("alice").await.unwrap();
//!     assert_eq!(client.deposit("alice", 100).await, Ok(100));
//!     assert!(matches!(
//!         client.withdraw("alice", 150).await,
//!         Err(ClientError::Bank(BankError::InsufficientFunds { balance: 100, .. }))
//!     ));
//!     assert_eq!(client.balance("alice").await, Ok(100));
//!     cluster.shutdown().await;
//! });
//! ```

mod client;
mod ledger;
mod node;
mod replica;

pub use client::{
    Attempt, BankClient, ClientConfig, ClientError, ClientStats, propose_with_timeout,
};
pub use ledger::{BankCommand, BankError, BankResult, Ledger};
pub use node::{BankNode, Cluster, NodeError, Replica, Settings};
pub use replica::{BankMachine, BankRaft, BankReply, BankRequest, BankSessions, BankView};
