//! [`Service`]: what a [`TcpServer`](crate::TcpServer) answers requests with, for any pair
//! of request and response types. Raft's RPCs are one instance ([`RaftService`]).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use raft_traits::{Command, NodeId, ReplyTo, Request, Response, RpcHandler, async_trait};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handshake::Protocol;

/// A request/response protocol served over TCP by a [`TcpServer`](crate::TcpServer) and
/// called with a [`TcpClient`](crate::TcpClient).
///
/// The server decodes each complete request with its codec, answers it with
/// [`call_then`](Service::call_then) if the service takes it that way, else runs
/// [`call`](Service::call) beside the connection's other requests (so a slow call never
/// holds up the others on the connection), and sends the response back with the
/// request's id. An `Err` travels back as an error frame carrying the string; the client
/// reports it as [`TransportError::Failed`](raft_traits::TransportError::Failed). A
/// request body that does not decode as [`Request`](Service::Request) is bad input: the
/// server closes the connection it came on.
///
/// Application-level refusals ("not the leader", "key not found") belong in the response
/// type; `Err` is for "this server cannot answer at all".
///
/// Every connection starts with a [handshake](crate::handshake) that names the
/// service's [`protocol`](Service::protocol); a client must name the same one (see
/// [`TcpClient::new`](crate::TcpClient::new)), so that a client of one service pointed at
/// the port of another is refused before any request reaches it.
///
/// ```
/// use std::sync::Arc;
/// use raft_net_smol::{Protocol, Service, TcpClient, TcpConfig, TcpServer};
/// use raft_traits::{NodeId, async_trait};
///
/// /// Doubles numbers, refuses negative ones.
/// struct Doubler;
///
/// #[async_trait]
/// impl Service for Doubler {
///     type Request = i64;
///     type Response = i64;
///
///     fn protocol(&self) -> Protocol {
///         Protocol::service("doubler")
///     }
///
///     async fn call(&self, request: i64) -> Result<i64, String> {
///         if request < 0 { Err("negative".to_owned()) } else { Ok(request * 2) }
///     }
/// }
///
/// let server = TcpServer::bind(([127, 0, 0, 1], 0), TcpConfig::default()).unwrap();
/// server.serve_service(Arc::new(Doubler)).unwrap();
/// let client: TcpClient<i64, i64> = TcpClient::new(
///     TcpConfig::default(),
///     Protocol::service("doubler"),
///     [(NodeId(1), server.local_addr())],
/// )
/// .unwrap();
/// smol::block_on(async {
///     assert_eq!(client.call(NodeId(1), 21).await, Ok(42));
///     assert!(client.call(NodeId(1), -1).await.is_err());
/// });
/// client.shutdown();
/// smol::block_on(server.shutdown());
/// ```
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// What clients send.
    type Request: DeserializeOwned + Send + 'static;
    /// What the service answers.
    type Response: Serialize + Send + 'static;

    /// The protocol this service speaks, which every connection's handshake must name.
    fn protocol(&self) -> Protocol;

    /// Answers one request, or says why it cannot.
    async fn call(&self, request: Self::Request) -> Result<Self::Response, String>;

    /// Answers one request by handing the answer to `respond`, from whichever task has
    /// it, instead of returning it: the server then sends it from there, without waking
    /// the connection's task for it.
    ///
    /// The default takes neither and gives both back; the server then awaits
    /// [`call`](Service::call).
    fn call_then(
        &self,
        request: Self::Request,
        respond: Respond<Self::Response>,
    ) -> Result<(), (Self::Request, Respond<Self::Response>)> {
        Err((request, respond))
    }

    /// The node a request says it comes from, if the protocol names senders in its
    /// requests (Raft does). The server checks it against the node the connection's
    /// handshake named, and closes the connection on a mismatch before the request
    /// reaches [`call`](Service::call).
    fn sender(_request: &Self::Request) -> Option<NodeId>
    where
        Self: Sized,
    {
        None
    }

    /// A short name of the request's kind, for logs.
    fn describe(_request: &Self::Request) -> &'static str
    where
        Self: Sized,
    {
        "request"
    }
}

/// Where [`Service::call_then`] hands its answer: [`send`](Respond::send) sends it to the
/// client. Dropped unsent, it sends an error, so that the client learns at once rather
/// than at its timeout.
pub struct Respond<R> {
    send: Option<SendAnswer<R>>,
}

/// What sends an answer: the server's, for the connection the request came on.
type SendAnswer<R> = Box<dyn FnOnce(Result<R, String>) + Send>;

impl<R> Respond<R> {
    pub(crate) fn new(send: impl FnOnce(Result<R, String>) + Send + 'static) -> Self {
        Respond {
            send: Some(Box::new(send)),
        }
    }

    /// Sends the answer, or why there is none (an error frame carrying the string).
    pub fn send(mut self, answer: Result<R, String>) {
        if let Some(send) = self.send.take() {
            send(answer);
        }
    }
}

impl<R> Drop for Respond<R> {
    fn drop(&mut self) {
        if let Some(send) = self.send.take() {
            send(Err("the service dropped the request unanswered".to_owned()));
        }
    }
}

impl<R> fmt::Debug for Respond<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Respond")
            .field("sent", &self.send.is_none())
            .finish()
    }
}

/// Raft's RPCs as a [`Service`]: hands each [`Request`] to an [`RpcHandler`] (the Raft
/// handle) and sends back its [`Response`].
///
/// [`TcpServer::serve`](crate::TcpServer::serve) wraps its handler in one; build one
/// yourself to serve Raft next to other services.
pub struct RaftService<C> {
    handler: Arc<dyn RpcHandler<C>>,
}

impl<C: Command> RaftService<C> {
    /// Serves `handler`.
    pub fn new(handler: Arc<dyn RpcHandler<C>>) -> Self {
        RaftService { handler }
    }
}

impl<C> fmt::Debug for RaftService<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: Command> Service for RaftService<C> {
    type Request = Request<C>;
    type Response = Response;

    fn protocol(&self) -> Protocol {
        Protocol::Raft
    }

    async fn call(&self, request: Request<C>) -> Result<Response, String> {
        self.handler
            .handle(request)
            .await
            .map_err(|e| e.to_string())
    }

    /// Through [`RpcHandler::handle_then`]: the node's event loop sends the reply.
    fn call_then(
        &self,
        request: Request<C>,
        respond: Respond<Response>,
    ) -> Result<(), (Request<C>, Respond<Response>)> {
        // `respond` is kept aside until the handler takes the request, so that it can be
        // given back whole if the handler does not.
        let slot = Arc::new(Mutex::new(Some(respond)));
        let taken = Arc::clone(&slot);
        let reply: ReplyTo = Box::new(move |result| {
            let respond = lock(&taken).take();
            if let Some(respond) = respond {
                respond.send(result.map_err(|e| e.to_string()));
            }
        });
        match self.handler.handle_then(request, reply) {
            Ok(()) => Ok(()),
            Err((request, reply)) => {
                drop(reply);
                match lock(&slot).take() {
                    Some(respond) => Err((request, respond)),
                    // The handler answered already, and gave the request back too.
                    None => Ok(()),
                }
            }
        }
    }

    fn describe(request: &Request<C>) -> &'static str {
        request.kind()
    }

    fn sender(request: &Request<C>) -> Option<NodeId> {
        Some(request.from())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
