//! The real network for raft: the smol [`Runtime`](raft_traits::Runtime) implementation
//! ([`SmolRuntime`]) and, built on it, a TCP transport.

mod runtime;

pub use runtime::SmolRuntime;
