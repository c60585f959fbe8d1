//! The real network for raft: the smol [`Runtime`](raft_traits::Runtime) implementation
//! ([`SmolRuntime`]) and, on smol too, a TCP transport.
//!
//! * [`TcpTransport`] implements [`Transport`](raft_traits::Transport): the sending side,
//!   one lazily opened connection per peer, shared by concurrent requests.
//! * [`TcpServer`] is the receiving side: it hands each incoming request to an
//!   [`RpcHandler`](raft_traits::RpcHandler) (the Raft handle) and sends its reply back.
//! * [`TcpConfig`] holds the cluster id, limits and timeouts of both.
//! * Every connection starts with a [`handshake`]: the protocol, the cluster id and, for
//!   Raft, the sending node's id. A server refuses a stranger before any message reaches
//!   the node, and checks the sender of every Raft request against the handshake.
//! * [`tls`]: optional mutual TLS, each node's id bound to its certificate.
//! * The same machinery carries any other request/response protocol: implement
//!   [`Service`] for the server side and call it with a [`TcpClient`]. Raft's RPCs are one
//!   such protocol ([`RaftService`]); a key-value service's clients are another.
//! * [`frame`] documents and implements the wire format.
//! * [`SmolRuntime::with_threads`] runs tasks on a pool of our own (`workers.rs`), with
//!   its own timers (`timers.rs`) and, on Linux, its own edge-triggered socket reactor
//!   (`reactor.rs`) for the connections that run on it (a client, server or transport
//!   given the pool with `set_runtime`); elsewhere sockets and timers wait in async-io's.
//!
//! Messages are encoded with a [`Codec`](raft_traits::Codec) ([`Postcard`] by default)
//! and travel in frames of bounded size; a message larger than
//! [`TcpConfig::chunk_size`] is split into several frames, and frames of different
//! messages on one connection interleave, so that a heartbeat does not wait for a
//! snapshot transfer to end.
//!
//! # Example: one request over loopback
//!
//! ```
//! use std::sync::Arc;
//! use raft_net_smol::{TcpConfig, TcpServer, TcpTransport};
//! use raft_traits::{
//!     HandlerError, LogId, NodeId, Request, RequestVote, Response, RpcHandler, Term,
//!     Transport, VoteReply, async_trait,
//! };
//!
//! /// Grants every vote.
//! struct Voter;
//!
//! #[async_trait]
//! impl RpcHandler<u64> for Voter {
//!     async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
//!         Ok(Response::Vote(VoteReply { term: request.term(), granted: true }))
//!     }
//! }
//!
//! // Node 2 listens on a port of the system's choosing...
//! let server = TcpServer::bind(([127, 0, 0, 1], 0), TcpConfig::default()).unwrap();
//! server.serve::<u64>(Arc::new(Voter)).unwrap();
//!
//! // ...and node 1 knows it by that address.
//! let transport: TcpTransport<u64> =
//!     TcpTransport::new(TcpConfig::default(), NodeId(1), [(NodeId(2), server.local_addr())])
//!         .unwrap();
//! let vote = Request::Vote(RequestVote {
//!     term: Term(3),
//!     candidate: NodeId(1),
//!     last_log: LogId::default(),
//!     transfer: false,
//! });
//! let reply = smol::block_on(transport.send(NodeId(2), vote)).unwrap();
//! assert_eq!(reply, Response::Vote(VoteReply { term: Term(3), granted: true }));
//!
//! transport.shutdown();
//! smol::block_on(server.shutdown());
//! ```
//!
//! [`Postcard`]: raft_traits::Postcard

mod client;
mod config;
mod error;
mod executor;
pub mod frame;
pub mod handshake;
mod outbox;
#[cfg(target_os = "linux")]
mod reactor;
#[cfg(not(target_os = "linux"))]
#[path = "reactor_elsewhere.rs"]
mod reactor;
mod reassembly;
mod runtime;
mod server;
mod service;
mod stream;
#[cfg(test)]
mod test_support;
mod timers;
pub mod tls;
mod transport;
mod workers;

pub use client::TcpClient;
pub use config::TcpConfig;
pub use error::{
    ConnectionError, FrameError, HandshakeError, LimitError, ServerError, TcpConfigError,
};
pub use handshake::Protocol;
pub use runtime::SmolRuntime;
pub use server::TcpServer;
pub use service::{RaftService, Respond, Service};
pub use tls::{TlsConfig, TlsError};
pub use transport::TcpTransport;
