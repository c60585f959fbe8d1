//! Moving RPCs between servers.

use std::time::Duration;

use async_trait::async_trait;

use crate::message::{Request, Response};
use crate::types::{Command, NodeId};

/// The sending side of a network: delivers a request to a peer and returns its reply.
///
/// Raft sends every RPC from its own task, so a call may take as long as the network
/// needs; it must, however, always end: with the reply, or with an error once the
/// implementation's timeout has passed. Requests to different peers, and concurrent
/// requests to the same peer, must not wait for one another.
///
/// The receiving side is not part of this trait: a transport's server hands incoming
/// requests to an [`RpcHandler`] (the Raft handle implements it) and sends back what it
/// returns.
///
/// The conformance suite in the `raft-tests` crate (`raft_tests::conformance::transport`)
/// checks these rules.
#[async_trait]
pub trait Transport<C: Command>: Send + Sync + 'static {
    /// Sends `request` to `to` and waits for the reply.
    async fn send(&self, to: NodeId, request: Request<C>) -> Result<Response, TransportError>;

    /// The node's configuration changed: a transport that resolves members by address
    /// learns the addresses of members added at run time (and may forget those gone).
    /// Called by the node whenever the configuration in effect changes, and once at
    /// start. The default does nothing, for transports that route by id.
    fn update_membership(&self, membership: &crate::Membership) {
        let _ = membership;
    }
}

/// A boxed transport is a transport, so that the transport can be picked at run time
/// (`Box<dyn Transport<C>>`). Written out rather than with `#[async_trait]`, which would
/// box every call's future once more: the boxed transport's own future is handed on.
impl<C: Command, T: Transport<C> + ?Sized> Transport<C> for Box<T> {
    fn send<'life0, 'async_trait>(
        &'life0 self,
        to: NodeId,
        request: Request<C>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Response, TransportError>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (**self).send(to, request)
    }

    fn update_membership(&self, membership: &crate::Membership) {
        (**self).update_membership(membership);
    }
}

/// The receiving side of Raft: something that answers RPCs.
#[async_trait]
pub trait RpcHandler<C: Command>: Send + Sync + 'static {
    /// Handles one request and returns the reply to send back.
    async fn handle(&self, request: Request<C>) -> Result<Response, HandlerError>;

    /// Handles one request and hands its reply to `reply`, from whichever task has the
    /// reply when it is ready (for the Raft handle: the node's event loop), instead of
    /// returning it to a task that waits for it. A server that can send from any task
    /// uses this to send the reply at once, without waking a task of its own to do so.
    ///
    /// `reply` is called once. An implementation that takes it must call it even when
    /// it cannot answer (with [`HandlerError::Stopped`], say), or the requester waits
    /// for its timeout.
    ///
    /// The default takes neither: it gives both back, and the caller awaits
    /// [`handle`](RpcHandler::handle) instead.
    fn handle_then(
        &self,
        request: Request<C>,
        reply: ReplyTo,
    ) -> Result<(), (Request<C>, ReplyTo)> {
        Err((request, reply))
    }
}

/// Where [`RpcHandler::handle_then`] hands a request's reply.
pub type ReplyTo = Box<dyn FnOnce(Result<Response, HandlerError>) + Send>;

/// Why a request could not be answered by the receiving server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The server has shut down and answers nothing.
    #[error("the server has stopped")]
    Stopped,
    /// The server refused the request without acting on it.
    #[error("request refused: {0}")]
    Refused(#[from] RequestRefused),
}

/// Why a server refused a request without acting on it: the request could not have come
/// from a correct member of its cluster. Nothing changed on the server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    /// The sender is not a member of the server's configuration. (A leader's requests
    /// from outside it are admitted by a server that hears from no leader it knows: one
    /// that lags may not know the current leader yet.)
    #[error("{from} is not a member of this cluster")]
    NotAMember {
        /// The claimed sender.
        from: NodeId,
    },
    /// A term beyond [`Term::MAX_ACCEPTED`](crate::Term::MAX_ACCEPTED).
    #[error("term {term} is beyond the highest accepted term")]
    TermOutOfRange {
        /// The term carried.
        term: crate::Term,
    },
    /// A log index beyond [`LogIndex::MAX_ACCEPTED`](crate::LogIndex::MAX_ACCEPTED), or
    /// entries that would run past it.
    #[error("log index {index} is beyond the highest accepted index")]
    IndexOutOfRange {
        /// The index carried.
        index: crate::LogIndex,
    },
    /// A snapshot whose bytes do not match the checksum the leader sent with them.
    #[error("the snapshot's checksum {carried:#010x} does not match its bytes ({computed:#010x})")]
    SnapshotChecksum {
        /// The checksum the request carried.
        carried: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
    /// A piece of a snapshot that does not fit it: running past its size, or marked
    /// last (`done`) where it does not end the data, or the reverse.
    #[error(
        "snapshot piece at {offset} of {len} bytes does not fit a snapshot of {size} bytes (done: {done})"
    )]
    SnapshotChunk {
        /// Where the piece starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The snapshot's size.
        size: u64,
        /// Whether it was marked last.
        done: bool,
    },
    /// A snapshot the state machine refused as not a valid state
    /// ([`StateMachine::check_snapshot`](crate::StateMachine::check_snapshot)).
    #[error("invalid snapshot: {reason}")]
    InvalidSnapshot {
        /// The state machine's reason.
        reason: String,
    },
}

/// Why an RPC did not return a reply.
///
/// Raft treats every error the same way (the request may or may not have been handled;
/// it retries later), but the variants tell operators what happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached at all: no route, connection refused, or the link is
    /// down. The request was not handled.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// No reply arrived in time. The request may have been handled.
    #[error("no reply from {peer} within {after:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// How long the transport waited.
        after: Duration,
    },
    /// The peer was reached but the call failed: the connection broke, the reply was lost
    /// or malformed, or the remote server refused the request. The request may have been
    /// handled.
    #[error("call to {peer} failed: {reason}")]
    Failed {
        /// The peer.
        peer: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// The peer is not known to this transport.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// This transport has been shut down.
    #[error("the transport is closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::message::{IndexReply, TimeoutNow};
    use crate::{Membership, Term};

    /// What an [`Echo`] was asked to do.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        sent_to: Vec<NodeId>,
        memberships: usize,
    }

    /// Answers TimeoutNow with the term it was sent in, and records what it was told.
    struct Echo(Arc<Mutex<Seen>>);

    #[async_trait]
    impl Transport<u64> for Echo {
        async fn send(
            &self,
            to: NodeId,
            request: Request<u64>,
        ) -> Result<Response, TransportError> {
            self.0.lock().unwrap().sent_to.push(to);
            match request {
                Request::TimeoutNow(TimeoutNow { term, .. }) => Ok(Response::Index(IndexReply {
                    term,
                    index: None,
                    refusal: None,
                })),
                _ => Err(TransportError::Closed),
            }
        }

        fn update_membership(&self, _: &Membership) {
            self.0.lock().unwrap().memberships += 1;
        }
    }

    #[test]
    fn a_boxed_transport_sends_and_learns_memberships_through_the_box() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let boxed: Box<dyn Transport<u64>> = Box::new(Echo(Arc::clone(&seen)));
        let request = Request::TimeoutNow(TimeoutNow {
            term: Term(7),
            leader: NodeId(1),
        });
        let reply = futures::executor::block_on(boxed.send(NodeId(2), request));
        match reply {
            Ok(Response::Index(IndexReply { term, .. })) => assert_eq!(term, Term(7)),
            other => panic!("{other:?}"),
        }
        boxed.update_membership(&Membership::default());
        assert_eq!(
            *seen.lock().unwrap(),
            Seen {
                sent_to: vec![NodeId(2)],
                memberships: 1
            }
        );
    }
}
