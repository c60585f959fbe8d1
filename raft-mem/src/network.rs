//! [`MemNetwork`]: an in-memory network with the classic lab's fault model (its `labrpc`),
//! and [`MemTransport`], one server's client of it.
//!
//! The model, as the lab's tests expect it:
//!
//! * every server has one *end* (a one-way link) towards every peer; a harness enables and
//!   disables them with [`MemNetwork::set_link`] to connect and isolate servers;
//! * a restarted server gets a fresh set of ends ([`MemNetwork::transport`]), so that the
//!   ends of its previous incarnation stay disabled forever;
//! * a request over a disabled end, or to a server that does not exist, fails after a
//!   random delay (up to 7 s in long-delays mode, which the lab's Raft tests always use);
//! * an unreliable network delays each request 0–26 ms and loses 10% of the requests and
//!   10% of the replies (the latter after the handler has run);
//! * long reordering delays two thirds of the replies by 200–2199 ms.
//!
//! All waiting goes through the [`Runtime`], and all chance through one seeded generator,
//! so a run is reproducible given the seed and the order of the calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{Either, select};
use raft_traits::{
    Codec, Command, NodeId, Postcard, Request, Response, RpcHandler, Runtime, Transport,
    TransportError, async_trait,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How often a pending call checks whether its end was disabled or its server deleted
/// (labrpc's server-death poll).
const DEATH_POLL: Duration = Duration::from_millis(100);
/// Requests on an unreliable network are delayed `0..SHORT_DELAY_MS` ms.
const SHORT_DELAY_MS: u64 = 27;
/// Calls over a dead end fail after `0..LONG_DELAY_MS` ms in long-delays mode...
const LONG_DELAY_MS: u64 = 7000;
/// ...and after `0..DEAD_END_DELAY_MS` ms otherwise.
const DEAD_END_DELAY_MS: u64 = 100;
/// An unreliable network drops requests and replies with probability
/// `DROP_PER_MILLE / 1000`.
const DROP_PER_MILLE: u32 = 100;

/// An in-memory network between Raft servers, with the classic lab's fault model.
///
/// The network is a handle: clones share the same servers, links, counters and random
/// generator. Servers register an [`RpcHandler`] with [`add_server`](Self::add_server);
/// each server sends through its own [`MemTransport`] from
/// [`transport`](Self::transport), whose ends start disabled until
/// [`set_link`](Self::set_link) enables them.
///
/// Requests and replies travel encoded with the codec `K` (postcard by default), so the
/// byte counters measure what a real network would carry, and a message that does not
/// survive encoding fails here as it would on a wire.
///
/// ```
/// use std::sync::Arc;
/// use raft_mem::MemNetwork;
/// use raft_net_smol::SmolRuntime;
/// use raft_traits::{
///     HandlerError, LogId, NodeId, Request, RequestVote, Response, RpcHandler, Term,
///     Transport, TransportError, VoteReply, async_trait,
/// };
///
/// /// Grants every vote.
/// struct Voter;
///
/// #[async_trait]
/// impl RpcHandler<u64> for Voter {
///     async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
///         Ok(Response::Vote(VoteReply { term: request.term(), granted: true }))
///     }
/// }
///
/// let rt = SmolRuntime::with_threads(1);
/// let net: MemNetwork<u64, SmolRuntime> = MemNetwork::new(rt.clone(), 42);
/// net.add_server(NodeId(2), Arc::new(Voter));
/// let from_1 = net.transport(NodeId(1));
/// let vote = Request::Vote(RequestVote {
///     term: Term(1),
///     candidate: NodeId(1),
///     last_log: LogId::default(),
///     transfer: false,
/// });
/// rt.block_on(async {
///     // Fresh ends are disabled.
///     let refused = from_1.send(NodeId(2), vote.clone()).await;
///     assert!(matches!(refused, Err(TransportError::Unreachable { .. })));
///
///     net.set_link(NodeId(1), NodeId(2), true);
///     let reply = from_1.send(NodeId(2), vote).await.unwrap();
///     assert_eq!(reply, Response::Vote(VoteReply { term: Term(1), granted: true }));
/// });
/// assert_eq!(net.total_rpcs(), 2);
/// assert_eq!(net.rpc_count(NodeId(2)), 1);
/// rt.stop();
/// ```
pub struct MemNetwork<C, Rt, K = Postcard> {
    runtime: Rt,
    codec: K,
    state: Arc<Mutex<NetState<C>>>,
}

/// The shared state of a [`MemNetwork`].
struct NetState<C> {
    rng: StdRng,
    reliable: bool,
    long_reordering: bool,
    long_delays: bool,
    /// Chance, per thousand, that a delivered request is handled twice.
    duplicate_per_mille: u32,
    /// Source of generation numbers for servers and for sets of ends, never reused.
    next_generation: u64,
    servers: BTreeMap<NodeId, Server<C>>,
    /// The current generation of each node's outgoing ends; older ones are disabled.
    ends: BTreeMap<NodeId, u64>,
    /// The enabled ends `(from, to)` of the current generations.
    links: BTreeSet<(NodeId, NodeId)>,
    /// Directed cuts `(from, to)`: nothing travels from `from` to `to`, neither requests
    /// nor replies to `to`'s requests, whatever the links say.
    one_way_cuts: BTreeSet<(NodeId, NodeId)>,
    rpc_counts: BTreeMap<NodeId, u64>,
    /// Dispatched requests by sender, receiver and kind.
    rpc_counts_by_link: BTreeMap<(NodeId, NodeId, &'static str), u64>,
    total_rpcs: u64,
    total_bytes: u64,
}

/// A registered server: its handler and the generation of its registration.
struct Server<C> {
    handler: Arc<dyn RpcHandler<C>>,
    generation: u64,
}

impl<C> NetState<C> {
    /// A request over `end` reached its server's handler.
    fn count_dispatch(&mut self, end: End, kind: &'static str) {
        *self.rpc_counts.entry(end.to).or_insert(0) += 1;
        *self
            .rpc_counts_by_link
            .entry((end.from, end.to, kind))
            .or_insert(0) += 1;
    }

    fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Whether the end `from → to` of generation `generation` carries requests.
    fn end_enabled(&self, from: NodeId, generation: u64, to: NodeId) -> bool {
        self.ends.get(&from) == Some(&generation) && self.links.contains(&(from, to))
    }

    /// Whether server `to` is still the registration of generation `generation`.
    fn server_alive(&self, to: NodeId, generation: u64) -> bool {
        self.servers
            .get(&to)
            .is_some_and(|server| server.generation == generation)
    }

    /// Draws `true` with the lab's drop probability.
    fn draw_drop(&mut self) -> bool {
        self.rng.random_range(0..1000) < DROP_PER_MILLE
    }
}

/// What the network decided to do with a request as it entered.
enum Route<C> {
    /// Deliver it to this server.
    Deliver {
        handler: Arc<dyn RpcHandler<C>>,
        server_generation: u64,
        reliable: bool,
        long_reordering: bool,
    },
    /// The end is disabled or the server is missing: fail after this delay.
    Dead { delay: Duration },
}

/// Which end a request travels on.
#[derive(Clone, Copy, Debug)]
struct End {
    from: NodeId,
    generation: u64,
    to: NodeId,
}

impl<C: Command, Rt: Runtime> MemNetwork<C, Rt, Postcard> {
    /// A network that encodes messages with [`Postcard`] and draws its faults from a
    /// generator seeded with `seed`. It starts reliable, without long reordering and
    /// without long delays, with no servers and no links.
    pub fn new(runtime: Rt, seed: u64) -> Self {
        MemNetwork::with_codec(runtime, Postcard, seed)
    }
}

impl<C: Command, Rt: Runtime, K: Codec> MemNetwork<C, Rt, K> {
    /// A network like [`new`](MemNetwork::new) that encodes messages with `codec`.
    pub fn with_codec(runtime: Rt, codec: K, seed: u64) -> Self {
        MemNetwork {
            runtime,
            codec,
            state: Arc::new(Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                reliable: true,
                long_reordering: false,
                long_delays: false,
                duplicate_per_mille: 0,
                next_generation: 0,
                servers: BTreeMap::new(),
                ends: BTreeMap::new(),
                links: BTreeSet::new(),
                one_way_cuts: BTreeSet::new(),
                rpc_counts: BTreeMap::new(),
                rpc_counts_by_link: BTreeMap::new(),
                total_rpcs: 0,
                total_bytes: 0,
            })),
        }
    }

    /// Locks the shared state. Every update is a few assignments that cannot panic
    /// halfway, so a poisoned lock is still consistent and safe to use.
    fn lock(&self) -> MutexGuard<'_, NetState<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An unreliable network (`false`) delays every request 0–26 ms and drops 10% of
    /// requests and 10% of replies. The default is reliable. Calls already in flight keep
    /// the setting they started with.
    pub fn set_reliable(&self, reliable: bool) {
        self.lock().reliable = reliable;
    }

    /// With long reordering on, two thirds of the delivered replies are held back
    /// 200–2199 ms (skewed towards short delays). Off by default.
    pub fn set_long_reordering(&self, long_reordering: bool) {
        self.lock().long_reordering = long_reordering;
    }

    /// With long delays on, a call over a disabled end or to a missing server fails after
    /// 0–6999 ms instead of 0–99 ms. Off by default; the lab's Raft tests turn it on.
    pub fn set_long_delays(&self, long_delays: bool) {
        self.lock().long_delays = long_delays;
    }

    /// Delivers each request a second time with probability `per_mille / 1000`, up to
    /// `SHORT_DELAY_MS` later than the first (so the copy may arrive after newer
    /// requests; its reply is discarded), as a network that retransmits might. Not part
    /// of the lab's model; off by default. Raft's handlers must be idempotent.
    pub fn set_duplication(&self, per_mille: u32) {
        self.lock().duplicate_per_mille = per_mille.min(1000);
    }

    /// Registers `handler` as server `id`, replacing any previous registration: calls in
    /// flight to the previous one fail, as if that server had died.
    pub fn add_server(&self, id: NodeId, handler: Arc<dyn RpcHandler<C>>) {
        let mut state = self.lock();
        let generation = state.new_generation();
        state.servers.insert(
            id,
            Server {
                handler,
                generation,
            },
        );
        tracing::debug!(server = %id, generation, "server added");
    }

    /// Removes server `id`: calls in flight to it fail (at the next 100 ms poll, or when
    /// its handler returns), and later calls fail like calls over a disabled end.
    pub fn delete_server(&self, id: NodeId) {
        if self.lock().servers.remove(&id).is_some() {
            tracing::debug!(server = %id, "server deleted");
        }
    }

    /// Disables every outgoing end of `from`'s current transports for good, as a crash
    /// does: whatever the dying instance still tries to send (it may be finishing a write
    /// that no longer counts) reaches nobody. The next [`transport`](Self::transport) for
    /// `from` starts a new generation of ends, as on a restart.
    pub fn retire_ends(&self, from: NodeId) {
        let mut state = self.lock();
        state.ends.remove(&from);
        state.links.retain(|&(source, _)| source != from);
    }

    /// A fresh client for node `from`, like the lab's fresh end names on a restart: a new
    /// generation of `from`'s outgoing ends, which start **disabled**. Every end of the
    /// older generations of `from` is disabled forever, so the transports of a crashed
    /// instance can no longer reach anyone.
    pub fn transport(&self, from: NodeId) -> MemTransport<C, Rt, K> {
        let generation = {
            let mut state = self.lock();
            let generation = state.new_generation();
            state.ends.insert(from, generation);
            state.links.retain(|&(source, _)| source != from);
            generation
        };
        tracing::debug!(node = %from, generation, "new transport");
        MemTransport {
            network: self.clone(),
            from,
            generation,
        }
    }

    /// Enables or disables the current generation's end `from → to`.
    ///
    /// The harness builds the lab's connect and disconnect from this: connecting `i`
    /// enables `i → j` and `j → i` for every connected `j`; disconnecting `i` disables
    /// every end from and to `i`.
    pub fn set_link(&self, from: NodeId, to: NodeId, enabled: bool) {
        let mut state = self.lock();
        if enabled {
            state.links.insert((from, to));
        } else {
            state.links.remove(&(from, to));
        }
    }

    /// Cuts (or restores) everything that travels from `from` to `to`: `from`'s requests
    /// to `to`, and `from`'s replies to `to`'s requests. Traffic from `to` to `from`
    /// still arrives. (The lab's links carry a request and its reply on one end, so
    /// disabling the end `from → to` alone is not a one-way cut.)
    pub fn set_one_way_cut(&self, from: NodeId, to: NodeId, cut: bool) {
        let mut state = self.lock();
        if cut {
            state.one_way_cuts.insert((from, to));
        } else {
            state.one_way_cuts.remove(&(from, to));
        }
    }

    /// How many requests were dispatched to server `id`'s handlers (over all its
    /// registrations). Requests lost before delivery or sent over disabled ends are not
    /// counted; requests whose replies were lost are.
    pub fn rpc_count(&self, id: NodeId) -> u64 {
        self.lock().rpc_counts.get(&id).copied().unwrap_or(0)
    }

    /// How many requests of `kind` ([`Request::kind`]: `"AppendEntries"`,
    /// `"RequestVote"`, `"PreVote"`, ...) `from` dispatched to `to`, counted as
    /// [`rpc_count`](Self::rpc_count) counts (duplicates included).
    pub fn rpc_count_of(&self, from: NodeId, to: NodeId, kind: &str) -> u64 {
        self.lock()
            .rpc_counts_by_link
            .iter()
            .filter(|((f, t, k), _)| *f == from && *t == to && *k == kind)
            .map(|(_, count)| count)
            .sum()
    }

    /// Every dispatched-request count, by `(from, to, kind)`, in order.
    pub fn rpc_counts_by_link(&self) -> BTreeMap<(NodeId, NodeId, &'static str), u64> {
        self.lock().rpc_counts_by_link.clone()
    }

    /// How many requests entered the network, including those later lost or refused.
    pub fn total_rpcs(&self) -> u64 {
        self.lock().total_rpcs
    }

    /// The encoded size of every request that entered the network, plus that of every
    /// reply that was delivered.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes
    }

    /// labrpc's `processReq`: carries `request` over `end` and returns the reply.
    async fn call(&self, end: End, request: Request<C>) -> Result<Response, TransportError> {
        let failed = |reason: &str| TransportError::Failed {
            peer: end.to,
            reason: reason.to_owned(),
        };
        let kind = request.kind();
        let request_bytes = self
            .codec
            .encode(&request)
            .map_err(|e| failed(&format!("cannot encode the request: {e}")))?;
        // From here on the request exists only as bytes, as on a wire: the server
        // decodes its own copy.
        drop(request);

        let route = self.enter(end, len_u64(&request_bytes));
        let (handler, server_generation, reliable, long_reordering) = match route {
            Route::Deliver {
                handler,
                server_generation,
                reliable,
                long_reordering,
            } => (handler, server_generation, reliable, long_reordering),
            Route::Dead { delay } => {
                self.runtime.sleep(delay).await;
                tracing::trace!(?end, "end disabled or server missing");
                return Err(TransportError::Unreachable {
                    peer: end.to,
                    reason: "the link is down or the server is gone".to_owned(),
                });
            }
        };

        if !reliable {
            let (delay, lost) = {
                let mut state = self.lock();
                let delay = state.rng.random_range(0..SHORT_DELAY_MS);
                (Duration::from_millis(delay), state.draw_drop())
            };
            self.runtime.sleep(delay).await;
            if lost {
                tracing::trace!(?end, "request dropped");
                return Err(failed("the request was lost"));
            }
        }

        let duplicate = {
            let mut state = self.lock();
            state.count_dispatch(end, kind);
            let per_mille = state.duplicate_per_mille;
            (per_mille > 0 && state.rng.random_range(0..1000) < per_mille)
                .then(|| Duration::from_millis(state.rng.random_range(0..SHORT_DELAY_MS)))
        };
        let request: Request<C> = self
            .codec
            .decode(&request_bytes)
            .map_err(|e| failed(&format!("the server cannot decode the request: {e}")))?;
        if let Some(later) = duplicate {
            self.lock().count_dispatch(end, kind);
            let copy = request.clone();
            let handler = Arc::clone(&handler);
            let runtime = self.runtime.clone();
            let _detached = self.runtime.spawn(async move {
                runtime.sleep(later).await;
                let _ = handler.handle(copy).await;
            });
        }

        // The handler runs as a task of its own, like labrpc's goroutine: once dispatched
        // it completes even if the caller stops waiting for it.
        let handling = self
            .runtime
            .spawn(async move { handler.handle(request).await });
        let watch = std::pin::pin!(self.watch_for_death(end, server_generation));
        let handled = match select(handling, watch).await {
            Either::Left((handled, _)) => handled,
            Either::Right(((), _)) => {
                tracing::trace!(?end, "server died while handling");
                return Err(failed("the server died or was cut off while handling"));
            }
        };
        if self.is_dead(end, server_generation) {
            return Err(failed("the server died or was cut off while handling"));
        }
        let reply = match handled {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(failed(&format!("the server refused: {e}"))),
            Err(e) => return Err(failed(&format!("the handler task ended: {e}"))),
        };
        let reply_bytes = self
            .codec
            .encode(&reply)
            .map_err(|e| failed(&format!("cannot encode the reply: {e}")))?;

        let reorder_delay = {
            let mut state = self.lock();
            if state.one_way_cuts.contains(&(end.to, end.from)) {
                tracing::trace!(?end, "reply cut one way");
                return Err(failed("the reply was cut on its way back"));
            }
            if !reliable && state.draw_drop() {
                None
            } else if long_reordering && state.rng.random_range(0..900) < 600 {
                let spread = state.rng.random_range(0..2000);
                Some(Duration::from_millis(
                    200 + state.rng.random_range(0..=spread),
                ))
            } else {
                Some(Duration::ZERO)
            }
        };
        let Some(reorder_delay) = reorder_delay else {
            tracing::trace!(?end, "reply dropped");
            return Err(failed("the reply was lost"));
        };
        if !reorder_delay.is_zero() {
            self.runtime.sleep(reorder_delay).await;
        }

        {
            let mut state = self.lock();
            state.total_bytes = state.total_bytes.saturating_add(len_u64(&reply_bytes));
        }
        self.codec
            .decode(&reply_bytes)
            .map_err(|e| failed(&format!("cannot decode the reply: {e}")))
    }

    /// Counts a request entering the network and decides, at that moment, where it goes.
    fn enter(&self, end: End, request_len: u64) -> Route<C> {
        let mut state = self.lock();
        state.total_rpcs += 1;
        state.total_bytes = state.total_bytes.saturating_add(request_len);
        let server = state
            .servers
            .get(&end.to)
            .filter(|_| state.end_enabled(end.from, end.generation, end.to))
            .filter(|_| !state.one_way_cuts.contains(&(end.from, end.to)))
            .map(|server| (Arc::clone(&server.handler), server.generation));
        match server {
            Some((handler, server_generation)) => Route::Deliver {
                handler,
                server_generation,
                reliable: state.reliable,
                long_reordering: state.long_reordering,
            },
            None => {
                let bound = if state.long_delays {
                    LONG_DELAY_MS
                } else {
                    DEAD_END_DELAY_MS
                };
                Route::Dead {
                    delay: Duration::from_millis(state.rng.random_range(0..bound)),
                }
            }
        }
    }

    /// Whether `end` was disabled or its server deleted or replaced since dispatch.
    fn is_dead(&self, end: End, server_generation: u64) -> bool {
        let state = self.lock();
        !state.end_enabled(end.from, end.generation, end.to)
            || !state.server_alive(end.to, server_generation)
    }

    /// Completes once [`is_dead`](Self::is_dead), checking every [`DEATH_POLL`].
    async fn watch_for_death(&self, end: End, server_generation: u64) {
        loop {
            self.runtime.sleep(DEATH_POLL).await;
            if self.is_dead(end, server_generation) {
                return;
            }
        }
    }
}

/// The length of an encoded message, for the byte counter.
fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

impl<C, Rt: Clone, K: Clone> Clone for MemNetwork<C, Rt, K> {
    /// Another handle on the same network.
    fn clone(&self) -> Self {
        MemNetwork {
            runtime: self.runtime.clone(),
            codec: self.codec.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<C, Rt, K> fmt::Debug for MemNetwork<C, Rt, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut servers: Vec<_> = state.servers.keys().copied().collect();
        servers.sort();
        f.debug_struct("MemNetwork")
            .field("reliable", &state.reliable)
            .field("long_reordering", &state.long_reordering)
            .field("long_delays", &state.long_delays)
            .field("servers", &servers)
            .field("total_rpcs", &state.total_rpcs)
            .field("total_bytes", &state.total_bytes)
            .finish_non_exhaustive()
    }
}

/// One node's client of a [`MemNetwork`]: its set of outgoing ends, of one generation.
///
/// Made by [`MemNetwork::transport`]. When the node restarts, the harness asks for a new
/// transport, and this one's ends are disabled for good: its calls fail as if the node
/// were cut off. Clones send over the same ends.
pub struct MemTransport<C, Rt, K = Postcard> {
    network: MemNetwork<C, Rt, K>,
    from: NodeId,
    generation: u64,
}

impl<C, Rt, K> MemTransport<C, Rt, K> {
    /// The node this transport sends from.
    pub fn node(&self) -> NodeId {
        self.from
    }
}

impl<C, Rt: Clone, K: Clone> Clone for MemTransport<C, Rt, K> {
    /// Another handle on the same ends.
    fn clone(&self) -> Self {
        MemTransport {
            network: self.network.clone(),
            from: self.from,
            generation: self.generation,
        }
    }
}

impl<C, Rt, K> fmt::Debug for MemTransport<C, Rt, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport")
            .field("from", &self.from)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<C: Command, Rt: Runtime, K: Codec> Transport<C> for MemTransport<C, Rt, K> {
    /// Carries `request` to `to` under the network's fault model. A request that is lost,
    /// refused or cut off is [`TransportError::Failed`] (it may have been handled); one
    /// over a disabled end or to a missing server is [`TransportError::Unreachable`].
    async fn send(&self, to: NodeId, request: Request<C>) -> Result<Response, TransportError> {
        let end = End {
            from: self.from,
            generation: self.generation,
            to,
        };
        self.network.call(end, request).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::future::join_all;
    use raft_net_smol::SmolRuntime;
    use raft_traits::{CodecError, HandlerError, LogId, RequestVote, Term, VoteReply, timeout};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;

    type Net = MemNetwork<u64, SmolRuntime>;

    const N1: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);

    /// Answers a vote request with the request's term, after an optional delay; counts
    /// the requests it has finished handling.
    struct Echo {
        runtime: SmolRuntime,
        delay: Duration,
        handled: AtomicU64,
        refuse: bool,
    }

    impl Echo {
        fn new(runtime: &SmolRuntime) -> Arc<Echo> {
            Echo::slow(runtime, Duration::ZERO)
        }

        fn slow(runtime: &SmolRuntime, delay: Duration) -> Arc<Echo> {
            Arc::new(Echo {
                runtime: runtime.clone(),
                delay,
                handled: AtomicU64::new(0),
                refuse: false,
            })
        }

        fn handled(&self) -> u64 {
            self.handled.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl RpcHandler<u64> for Echo {
        async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
            if !self.delay.is_zero() {
                self.runtime.sleep(self.delay).await;
            }
            self.handled.fetch_add(1, Ordering::SeqCst);
            if self.refuse {
                return Err(HandlerError::Stopped);
            }
            Ok(Response::Vote(VoteReply {
                term: request.term(),
                granted: true,
            }))
        }
    }

    fn vote(term: u64) -> Request<u64> {
        Request::Vote(RequestVote {
            term: Term(term),
            candidate: N1,
            last_log: LogId::default(),
            transfer: false,
        })
    }

    fn reply(term: u64) -> Response {
        Response::Vote(VoteReply {
            term: Term(term),
            granted: true,
        })
    }

    fn size<T: Serialize>(value: &T) -> u64 {
        Postcard.encode(value).unwrap().len() as u64
    }

    /// A network with server 2 and a connected transport from node 1.
    fn connected(rt: &SmolRuntime, seed: u64) -> (Net, Arc<Echo>, MemTransport<u64, SmolRuntime>) {
        let net = Net::new(rt.clone(), seed);
        let echo = Echo::new(rt);
        net.add_server(N2, echo.clone());
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        (net, echo, transport)
    }

    #[test]
    fn request_and_reply_travel_over_an_enabled_end() {
        let rt = SmolRuntime::with_threads(2);
        let (net, echo, transport) = connected(&rt, 1);
        let result = rt.block_on(transport.send(N2, vote(7)));
        assert_eq!(result, Ok(reply(7)));
        assert_eq!(echo.handled(), 1);
        assert_eq!(net.rpc_count(N2), 1);
        assert_eq!(net.rpc_count(N1), 0);
        assert_eq!(net.total_rpcs(), 1);
        assert_eq!(net.total_bytes(), size(&vote(7)) + size(&reply(7)));
        rt.stop();
    }

    #[test]
    fn a_one_way_cut_stops_requests_and_replies_in_one_direction_only() {
        let rt = SmolRuntime::with_threads(2);
        let (net, to_two, one) = connected(&rt, 4);
        let to_one = Echo::new(&rt);
        net.add_server(N1, to_one.clone());
        let two = net.transport(N2);
        net.set_link(N2, N1, true);
        net.set_one_way_cut(N1, N2, true);
        rt.block_on(async {
            assert!(one.send(N2, vote(1)).await.is_err(), "request 1 -> 2 cut");
            assert_eq!(to_two.handled(), 0);
            assert!(
                two.send(N1, vote(1)).await.is_err(),
                "the request 2 -> 1 arrives but the reply 1 -> 2 is cut"
            );
            assert_eq!(to_one.handled(), 1, "node 1 did handle node 2's request");
            net.set_one_way_cut(N1, N2, false);
            assert_eq!(one.send(N2, vote(1)).await, Ok(reply(1)));
            assert_eq!(two.send(N1, vote(1)).await, Ok(reply(1)));
        });
        rt.stop();
    }

    #[test]
    fn links_are_one_way() {
        let rt = SmolRuntime::with_threads(2);
        let (net, _echo, _transport) = connected(&rt, 2);
        net.add_server(N1, Echo::new(&rt));
        let from_2 = net.transport(N2);
        let result = rt.block_on(from_2.send(N1, vote(1)));
        assert!(matches!(
            result,
            Err(TransportError::Unreachable { peer: N1, .. })
        ));
        net.set_link(N2, N1, true);
        assert_eq!(rt.block_on(from_2.send(N1, vote(1))), Ok(reply(1)));
        rt.stop();
    }

    #[test]
    fn disabled_ends_and_missing_servers_are_unreachable_quickly() {
        let rt = SmolRuntime::with_threads(2);
        let (net, echo, transport) = connected(&rt, 3);
        net.set_link(N1, N2, false);
        let to_missing_server = NodeId(9);
        net.set_link(N1, to_missing_server, true);
        rt.block_on(async {
            for to in [N2, N2, to_missing_server, to_missing_server] {
                let started = rt.now();
                let result = transport.send(to, vote(1)).await;
                assert!(
                    matches!(result, Err(TransportError::Unreachable { peer, .. }) if peer == to)
                );
                // 0–99 ms of delay, plus a generous allowance for a loaded machine.
                assert!(rt.now() - started < Duration::from_millis(1000));
            }
        });
        assert_eq!(echo.handled(), 0);
        assert_eq!(net.rpc_count(N2), 0);
        assert_eq!(net.total_rpcs(), 4);
        assert_eq!(net.total_bytes(), 4 * size(&vote(1)));
        rt.stop();
    }

    #[test]
    fn long_delays_still_end_within_seven_seconds() {
        let rt = SmolRuntime::with_threads(2);
        // The call's delay is the network generator's first draw, so the seed fixes it;
        // this seed keeps the test short. The test must pass with any seed.
        let seed = 11;
        let drawn = StdRng::seed_from_u64(seed).random_range(0..LONG_DELAY_MS);
        let net = Net::new(rt.clone(), seed);
        net.set_long_delays(true);
        let transport = net.transport(N1);
        let started = rt.now();
        let result = rt.block_on(timeout(
            &rt,
            Duration::from_millis(7200),
            transport.send(N2, vote(1)),
        ));
        let waited = rt.now() - started;
        assert!(matches!(
            result,
            Ok(Err(TransportError::Unreachable { .. }))
        ));
        assert!(
            waited >= Duration::from_millis(drawn),
            "waited {waited:?}, drew {drawn} ms"
        );
        assert!(waited < Duration::from_millis(7200));
        rt.stop();
    }

    #[test]
    fn deleting_the_server_fails_a_pending_call_at_the_next_poll() {
        let rt = SmolRuntime::with_threads(2);
        let net = Net::new(rt.clone(), 4);
        let slow = Echo::slow(&rt, Duration::from_secs(3));
        net.add_server(N2, slow.clone());
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        rt.block_on(async {
            let call = rt.spawn(async move { transport.send(N2, vote(1)).await });
            rt.sleep(Duration::from_millis(50)).await;
            let deleted = rt.now();
            net.delete_server(N2);
            let result = call.await.unwrap();
            let waited = rt.now() - deleted;
            assert!(matches!(
                result,
                Err(TransportError::Failed { peer: N2, .. })
            ));
            // The poll runs every 100 ms; allow plenty for scheduling.
            assert!(waited < Duration::from_millis(1000), "waited {waited:?}");
        });
        assert_eq!(net.rpc_count(N2), 1);
        assert_eq!(net.total_bytes(), size(&vote(1)));
        rt.stop();
    }

    #[test]
    fn replacing_the_server_fails_a_pending_call() {
        let rt = SmolRuntime::with_threads(2);
        let net = Net::new(rt.clone(), 5);
        net.add_server(N2, Echo::slow(&rt, Duration::from_secs(3)));
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        rt.block_on(async {
            let pending = transport.clone();
            let call = rt.spawn(async move { pending.send(N2, vote(1)).await });
            rt.sleep(Duration::from_millis(50)).await;
            let fresh = Echo::new(&rt);
            net.add_server(N2, fresh.clone());
            let result = timeout(&rt, Duration::from_secs(1), call).await;
            assert!(matches!(result, Ok(Ok(Err(TransportError::Failed { .. })))));
            // The new registration answers.
            assert_eq!(transport.send(N2, vote(2)).await, Ok(reply(2)));
            assert_eq!(fresh.handled(), 1);
        });
        rt.stop();
    }

    #[test]
    fn a_new_transport_disables_the_old_ones() {
        let rt = SmolRuntime::with_threads(2);
        let net = Net::new(rt.clone(), 6);
        net.add_server(N2, Echo::slow(&rt, Duration::from_millis(400)));
        let old = net.transport(N1);
        net.set_link(N1, N2, true);
        rt.block_on(async {
            let pending = old.clone();
            let in_flight = rt.spawn(async move { pending.send(N2, vote(1)).await });
            rt.sleep(Duration::from_millis(50)).await;

            let new = net.transport(N1);
            // The in-flight call of the old instance is cut off...
            let result = timeout(&rt, Duration::from_secs(1), in_flight).await;
            assert!(matches!(result, Ok(Ok(Err(TransportError::Failed { .. })))));
            // ...new calls of the old instance find a disabled end, and the new ends start
            // disabled too.
            let result = old.send(N2, vote(2)).await;
            assert!(matches!(result, Err(TransportError::Unreachable { .. })));
            let result = new.send(N2, vote(3)).await;
            assert!(matches!(result, Err(TransportError::Unreachable { .. })));

            net.set_link(N1, N2, true);
            assert_eq!(new.send(N2, vote(4)).await, Ok(reply(4)));
            let result = old.send(N2, vote(5)).await;
            assert!(matches!(result, Err(TransportError::Unreachable { .. })));
        });
        rt.stop();
    }

    #[test]
    fn a_refusing_handler_fails_the_call() {
        let rt = SmolRuntime::with_threads(2);
        let net = Net::new(rt.clone(), 7);
        net.add_server(
            N2,
            Arc::new(Echo {
                runtime: rt.clone(),
                delay: Duration::ZERO,
                handled: AtomicU64::new(0),
                refuse: true,
            }),
        );
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        let result = rt.block_on(transport.send(N2, vote(1)));
        assert!(matches!(result, Err(TransportError::Failed { .. })));
        assert_eq!(net.rpc_count(N2), 1);
        assert_eq!(net.total_bytes(), size(&vote(1)));
        rt.stop();
    }

    /// Runs `calls` concurrent vote requests and returns how many got a reply.
    fn send_many(rt: &SmolRuntime, transport: &MemTransport<u64, SmolRuntime>, calls: u64) -> u64 {
        rt.block_on(async {
            let results = join_all((0..calls).map(|term| transport.send(N2, vote(term % 100))));
            results.await.iter().filter(|result| result.is_ok()).count() as u64
        })
    }

    #[test]
    fn an_unreliable_network_loses_about_one_call_in_five() {
        let rt = SmolRuntime::with_threads(2);
        let (net, echo, transport) = connected(&rt, 8);
        net.set_reliable(false);
        let calls = 2000;
        let delivered = send_many(&rt, &transport, calls);

        // 10% of requests and then 10% of replies are lost: 1 - 0.9 * 0.9 = 19%.
        let lost = calls - delivered;
        assert!((240..=540).contains(&lost), "lost {lost} of {calls}");
        // Requests that reached the server were counted, even when their reply was lost.
        let dispatched = net.rpc_count(N2);
        assert_eq!(dispatched, echo.handled());
        assert!(dispatched > delivered && dispatched < calls);
        // Every request's bytes, but only the delivered replies'.
        assert_eq!(net.total_rpcs(), calls);
        let request_bytes: u64 = (0..calls).map(|term| size(&vote(term % 100))).sum();
        let reply_bytes = net.total_bytes() - request_bytes;
        assert_eq!(reply_bytes, delivered * size(&reply(1)));
        rt.stop();
    }

    /// The outcomes of 40 sequential calls over an unreliable network seeded with `seed`.
    async fn outcomes(rt: &SmolRuntime, seed: u64) -> Vec<bool> {
        let (net, _echo, transport) = connected(rt, seed);
        net.set_reliable(false);
        let mut outcomes = Vec::new();
        for term in 0..40 {
            outcomes.push(transport.send(N2, vote(term)).await.is_ok());
        }
        outcomes
    }

    #[test]
    fn the_seed_fixes_the_faults_of_a_sequence_of_calls() {
        let rt = SmolRuntime::with_threads(2);
        let (first, second, other) = rt.block_on(async {
            futures::join!(outcomes(&rt, 9), outcomes(&rt, 9), outcomes(&rt, 10))
        });
        assert_eq!(first, second);
        assert_ne!(first, other);
        rt.stop();
    }

    #[test]
    fn long_reordering_holds_back_some_replies() {
        let rt = SmolRuntime::with_threads(2);
        let (net, _echo, transport) = connected(&rt, 12);
        net.set_long_reordering(true);
        let started = rt.now();
        let (durations, delivered) = rt.block_on(async {
            let calls = (0..30).map(|term| {
                let transport = &transport;
                let rt = &rt;
                async move {
                    let begin = rt.now();
                    let result = transport.send(N2, vote(term)).await;
                    (rt.now() - begin, result.is_ok())
                }
            });
            let outcomes = join_all(calls).await;
            let durations: Vec<Duration> = outcomes.iter().map(|(d, _)| *d).collect();
            let delivered = outcomes.iter().filter(|(_, ok)| *ok).count();
            (durations, delivered)
        });
        // Reordering delays replies but never loses them.
        assert_eq!(delivered, 30);
        let held_back = durations
            .iter()
            .filter(|d| **d >= Duration::from_millis(200))
            .count();
        // About 20 of 30 are held back; the bounds are loose.
        assert!((8..=29).contains(&held_back), "held back {held_back}");
        assert!(rt.now() - started < Duration::from_millis(3500));
        rt.stop();
    }

    /// A codec that cannot encode anything.
    #[derive(Clone, Debug)]
    struct Broken;

    impl Codec for Broken {
        fn encode<T: Serialize + ?Sized>(&self, _: &T) -> Result<Vec<u8>, CodecError> {
            Err(CodecError::Encode("broken".to_owned()))
        }

        fn decode<T: DeserializeOwned>(&self, _: &[u8]) -> Result<T, CodecError> {
            Err(CodecError::Decode("broken".to_owned()))
        }
    }

    #[test]
    fn a_request_that_cannot_be_encoded_fails_before_entering_the_network() {
        let rt = SmolRuntime::with_threads(2);
        let net: MemNetwork<u64, SmolRuntime, Broken> =
            MemNetwork::with_codec(rt.clone(), Broken, 13);
        net.add_server(N2, Echo::new(&rt));
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        let result = rt.block_on(transport.send(N2, vote(1)));
        assert!(matches!(result, Err(TransportError::Failed { .. })));
        assert_eq!(net.total_rpcs(), 0);
        rt.stop();
    }

    #[test]
    fn dispatched_requests_are_counted_by_sender_receiver_and_kind() {
        let rt = SmolRuntime::with_threads(2);
        let (net, _, transport) = connected(&rt, 3);
        let read = Request::ReadIndex(raft_traits::ReadIndexRequest {
            term: Term(1),
            from: N1,
        });
        rt.block_on(async {
            for term in 0..3 {
                transport.send(N2, vote(term)).await.unwrap();
            }
            transport.send(N2, read).await.unwrap();
        });
        assert_eq!(net.rpc_count_of(N1, N2, "RequestVote"), 3);
        assert_eq!(net.rpc_count_of(N1, N2, "ReadIndex"), 1);
        assert_eq!(net.rpc_count_of(N2, N1, "RequestVote"), 0);
        assert_eq!(net.rpc_count_of(N1, N2, "AppendEntries"), 0);
        let all: Vec<_> = net.rpc_counts_by_link().into_iter().collect();
        assert_eq!(
            all,
            [((N1, N2, "ReadIndex"), 1), ((N1, N2, "RequestVote"), 3)]
        );
        rt.stop();
    }

    /// Records when it handled each request, by term.
    struct Clock {
        runtime: SmolRuntime,
        seen: Mutex<Vec<(u64, Duration)>>,
    }

    #[async_trait]
    impl RpcHandler<u64> for Clock {
        async fn handle(&self, request: Request<u64>) -> Result<Response, HandlerError> {
            let now = self.runtime.now();
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((request.term().0, now));
            Ok(reply(request.term().0))
        }
    }

    #[test]
    fn duplicates_arrive_at_their_own_later_times() {
        let rt = SmolRuntime::with_threads(2);
        let net = Net::new(rt.clone(), 9);
        let clock = Arc::new(Clock {
            runtime: rt.clone(),
            seen: Mutex::new(Vec::new()),
        });
        net.add_server(N2, clock.clone());
        let transport = net.transport(N1);
        net.set_link(N1, N2, true);
        net.set_duplication(1000);
        rt.block_on(async {
            for term in 0..20 {
                transport.send(N2, vote(term)).await.unwrap();
            }
            // Every copy is handled within the duplication delay.
            rt.sleep(Duration::from_millis(SHORT_DELAY_MS * 3)).await;
        });
        let seen = clock.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen.len(), 40, "every request twice");
        assert_eq!(net.rpc_count_of(N1, N2, "RequestVote"), 40);
        // A copy handled after a newer original: it arrived out of order.
        let overtaken = (0..20u64).any(|term| {
            let copy = seen
                .iter()
                .filter(|(t, _)| *t == term)
                .map(|(_, at)| *at)
                .max();
            let newer = seen.iter().find(|(t, _)| *t == term + 1).map(|(_, at)| *at);
            matches!((copy, newer), (Some(copy), Some(newer)) if copy > newer)
        });
        assert!(
            overtaken,
            "no duplicate arrived after a newer request: {seen:?}"
        );
        rt.stop();
    }
}
