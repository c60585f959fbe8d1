//! [`LocalNetwork`]: servers in one process calling each other directly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use raft_traits::{
    Command, NodeId, Request, Response, RpcHandler, Transport, TransportError, async_trait,
};

/// Servers in one process that call each other's handlers directly: no encoding, no
/// copies, no faults. For benchmarks and for embedding several nodes in one program; use
/// [`MemNetwork`](crate::MemNetwork) to test under the lab's fault model.
///
/// ```
/// use std::sync::Arc;
/// use raft_mem::LocalNetwork;
/// use raft_traits::{
///     HandlerError, LogId, NodeId, Request, RequestVote, Response, RpcHandler, Term,
///     Transport, VoteReply, async_trait,
/// };
///
/// struct Voter;
///
/// #[async_trait]
/// impl RpcHandler<u64> for Voter {
///     async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
///         Ok(Response::Vote(VoteReply { term: request.term(), granted: true }))
///     }
/// }
///
/// let net = LocalNetwork::new();
/// net.register(NodeId(2), Arc::new(Voter));
/// let vote = Request::Vote(RequestVote { term: Term(1), candidate: NodeId(1), last_log: LogId::default(), transfer: false });
/// let reply = futures::executor::block_on(net.transport().send(NodeId(2), vote)).unwrap();
/// assert_eq!(reply, Response::Vote(VoteReply { term: Term(1), granted: true }));
/// ```
pub struct LocalNetwork<C> {
    handlers: Arc<RwLock<Handlers<C>>>,
}

/// The servers of a [`LocalNetwork`], by id.
type Handlers<C> = BTreeMap<NodeId, Arc<dyn RpcHandler<C>>>;

impl<C: Command> LocalNetwork<C> {
    /// A network with no servers.
    pub fn new() -> Self {
        LocalNetwork {
            handlers: Arc::new(RwLock::new(BTreeMap::new())),
        }
    }

    /// Makes `handler` answer the requests sent to `id`, replacing any earlier one.
    pub fn register(&self, id: NodeId, handler: Arc<dyn RpcHandler<C>>) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, handler);
    }

    /// Removes server `id`: requests to it fail as unreachable.
    pub fn unregister(&self, id: NodeId) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// A client of this network.
    pub fn transport(&self) -> LocalTransport<C> {
        LocalTransport {
            network: self.clone(),
        }
    }
}

impl<C: Command> Default for LocalNetwork<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> Clone for LocalNetwork<C> {
    fn clone(&self) -> Self {
        LocalNetwork {
            handlers: Arc::clone(&self.handlers),
        }
    }
}

impl<C> fmt::Debug for LocalNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<NodeId> = self
            .handlers
            .read()
            .map(|handlers| handlers.keys().copied().collect())
            .unwrap_or_default();
        f.debug_struct("LocalNetwork")
            .field("servers", &servers)
            .finish()
    }
}

/// A client of a [`LocalNetwork`].
#[derive(Clone, Debug)]
pub struct LocalTransport<C> {
    network: LocalNetwork<C>,
}

#[async_trait]
impl<C: Command> Transport<C> for LocalTransport<C> {
    async fn send(&self, to: NodeId, request: Request<C>) -> Result<Response, TransportError> {
        let handler = self
            .network
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
            .cloned();
        let Some(handler) = handler else {
            return Err(TransportError::Unreachable {
                peer: to,
                reason: "no such server in this process".to_owned(),
            });
        };
        handler
            .handle(request)
            .await
            .map_err(|e| TransportError::Failed {
                peer: to,
                reason: e.to_string(),
            })
    }
}
