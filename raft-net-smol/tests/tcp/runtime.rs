//! The server and client run their tasks and timers on the runtime the application
//! chooses (`set_runtime`), here tokio: a service may then use tokio's own timers, and
//! one executor runs everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_net_smol::{Protocol, Service, TcpClient, TcpServer};
use raft_tokio::TokioRuntime;
use raft_traits::{NodeId, Runtime, Term, Transport, TransportError, async_trait};

use crate::support::{PEER, TestHandler, config, server, transport, vote, vote_reply, within};

/// Answers `n` with `n + 1` after a tokio sleep, and names the thread that answered.
struct TokioNapper;

#[async_trait]
impl Service for TokioNapper {
    type Request = u64;
    type Response = (u64, String);

    fn protocol(&self) -> Protocol {
        Protocol::service("napper")
    }

    async fn call(&self, n: u64) -> Result<(u64, String), String> {
        // Panics ("there is no reactor running") outside a tokio runtime.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        Ok((n + 1, thread))
    }
}

const SERVER: NodeId = NodeId(9);

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("test-tokio")
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn a_service_on_a_tokio_runtime_can_await_tokio_timers() {
    let tokio = tokio_runtime();
    let runtime = TokioRuntime::new(tokio.handle().clone());
    let server = TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config()).unwrap();
    server.set_runtime(runtime.clone());
    server.serve_service(Arc::new(TokioNapper)).unwrap();
    let client: TcpClient<u64, (u64, String)> = TcpClient::new(
        config(),
        Protocol::service("napper"),
        [(SERVER, server.local_addr())],
    )
    .unwrap();
    client.set_runtime(runtime);
    tokio.block_on(async {
        for n in 0..3 {
            let (answer, thread) = within("a call", client.call(SERVER, n)).await.unwrap();
            assert_eq!(answer, n + 1);
            assert_eq!(thread, "test-tokio", "the service ran outside the runtime");
        }
        client.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

#[test]
fn a_server_and_transport_on_a_tokio_runtime_shut_down_their_tasks() {
    let tokio = tokio_runtime();
    let runtime = TokioRuntime::new(tokio.handle().clone());
    let server = TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config()).unwrap();
    server.set_runtime(runtime.clone());
    server.serve::<u64>(TestHandler::new()).unwrap();
    let transport = transport(server.local_addr(), config());
    transport.set_runtime(runtime);
    tokio.block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(4)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        assert_eq!(server.connection_count(), 1);
        // Returns once the accept loop and the connection's task have ended.
        within("the server to shut down", server.shutdown()).await;
        assert_eq!(server.connection_count(), 0);
        // The server closed the connection and no longer listens.
        let reply = within("a vote after shutdown", transport.send(PEER, vote(Term(5)))).await;
        assert!(
            matches!(
                reply,
                Err(TransportError::Failed { .. } | TransportError::Unreachable { .. })
            ),
            "{reply:?}"
        );
        transport.shutdown();
    });
}

/// A config whose requests wait a day for their reply: a request that would hang shows
/// as a hang, not as a timeout.
fn patient() -> raft_net_smol::TcpConfig {
    let mut patient = config();
    patient.request_timeout = Duration::from_secs(24 * 3600);
    patient
}

/// Stops `runtime` and returns once it is gone: once it refuses a task, its threads have
/// left and dropped every task still on it.
async fn stop_until_gone(runtime: &raft_net_smol::SmolRuntime) {
    runtime.stop();
    while runtime.spawn(async {}).await.is_ok() {
        smol::future::yield_now().await;
    }
}

/// A connection's task goes with its runtime when that stops: the requests on the
/// connection then fail at once, with the reason, instead of waiting for ever for a
/// reader and a timeout sweep that are gone.
#[test]
fn a_transport_whose_runtime_stopped_fails_its_requests_at_once() {
    requests_after_the_stop_fail(false);
}

/// The same, when the runtime is gone before the next request: the connection it served
/// has ended, and a fresh one cannot start its task there. The runtime drops that task
/// before its first poll; the request must fail with the reason all the same, not wait
/// for ever on a connection nobody reads (this order lost the race now and then in the
/// test above, until the connection's ending no longer waited for the task's first poll,
/// and a socket no longer went to the stopped pool's reactor).
#[test]
fn a_transport_whose_runtime_is_gone_fails_new_connections_at_once() {
    requests_after_the_stop_fail(true);
}

/// Votes through a transport whose runtime stops after the first; `gone`: the later ones
/// are sent once the runtime has gone.
fn requests_after_the_stop_fail(gone: bool) {
    let (server, _) = server(config());
    let transport = transport(server.local_addr(), patient());
    let runtime = raft_net_smol::SmolRuntime::with_threads(1);
    transport.set_runtime(runtime.clone());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(4)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        if gone {
            stop_until_gone(&runtime).await;
        } else {
            runtime.stop();
        }
        for term in [5, 6] {
            let reply = within(
                "a vote after the stop",
                transport.send(PEER, vote(Term(term))),
            )
            .await;
            assert!(
                matches!(&reply, Err(TransportError::Failed { reason, .. }) if reason.contains("runtime stopped")),
                "{reply:?}"
            );
        }
        transport.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

/// A server whose runtime has gone ends its connections with it: the client's request
/// fails at once instead of waiting out its timeout on a socket the server still held
/// open with nobody serving it.
#[test]
fn a_server_whose_runtime_is_gone_closes_its_connections() {
    let server = TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config()).unwrap();
    let runtime = raft_net_smol::SmolRuntime::with_threads(1);
    server.set_runtime(runtime.clone());
    server.serve::<u64>(TestHandler::new()).unwrap();
    let transport = transport(server.local_addr(), patient());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(4)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        stop_until_gone(&runtime).await;
        let reply = within("a vote after the stop", transport.send(PEER, vote(Term(5)))).await;
        assert!(reply.is_err(), "{reply:?}");
        assert_eq!(server.connection_count(), 0);
        transport.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

/// A connection's socket waits in the reactor of the runtime its task runs on, not in
/// that of the pool whose thread happened to open it: a transport on smol's global
/// executor, first used from a task on a pool, still gets its replies once that pool has
/// stopped (nobody would watch the socket if it had gone to the pool's reactor).
#[test]
fn a_connection_opened_from_another_pool_outlives_that_pool() {
    let (server, _) = server(config());
    let transport = Arc::new(transport(server.local_addr(), config()));
    let pool = raft_net_smol::SmolRuntime::with_threads(1);
    let from_pool = Arc::clone(&transport);
    smol::block_on(async {
        let reply = on_pool(&pool, "a vote from the pool", async move {
            from_pool.send(PEER, vote(Term(4))).await
        })
        .await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        pool.stop();
        let reply = within("a vote after the stop", transport.send(PEER, vote(Term(5)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(5))));
        transport.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

/// A task on a pool that blocks its thread until its request is answered (`block_on`
/// inside a task, a pattern that works on this runtime) gets its answer: by default a
/// request leaves at once, not at the end of its task's turn, which this turn would never
/// reach before the request timed out. And its reply is read while it blocks: the other
/// thread, parked, takes over the sockets (which the request timeout of a day leaves
/// no timer to do for hours).
#[test]
fn a_pool_task_blocking_on_its_reply_gets_it() {
    let (server, _) = server(config());
    let transport = Arc::new(transport(server.local_addr(), patient()));
    // Two threads: the connection's task runs on the one the blocked task leaves free.
    let pool = raft_net_smol::SmolRuntime::with_threads(2);
    transport.set_runtime(pool.clone());
    let from_pool = Arc::clone(&transport);
    smol::block_on(async {
        // The connection is open and its writer idle when the task's request comes (a
        // new connection's writer sends what is waiting when it starts).
        let first = within("a first vote", transport.send(PEER, vote(Term(3)))).await;
        assert_eq!(first, Ok(vote_reply(Term(3))));
        let reply = on_pool(&pool, "a vote from a task blocking on it", async move {
            smol::block_on(from_pool.send(PEER, vote(Term(4))))
        })
        .await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        pool.stop();
        transport.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

/// With `gather_requests`, the requests one task makes in a turn wait for its end and
/// leave together; each still gets its own answer.
#[test]
fn gathered_requests_each_get_their_answer() {
    let (server, _) = server(config());
    let gathering = raft_net_smol::TcpConfig {
        gather_requests: true,
        ..config()
    };
    let transport = Arc::new(transport(server.local_addr(), gathering));
    let pool = raft_net_smol::SmolRuntime::with_threads(1);
    transport.set_runtime(pool.clone());
    let from_pool = Arc::clone(&transport);
    smol::block_on(async {
        let replies = on_pool(&pool, "eight votes from one task", async move {
            let votes = (1..=8).map(|term| from_pool.send(PEER, vote(Term(term))));
            futures::future::join_all(votes).await
        })
        .await;
        let expected: Vec<_> = (1..=8).map(|term| Ok(vote_reply(Term(term)))).collect();
        assert_eq!(replies, expected);
        pool.stop();
        transport.shutdown();
        within("the server to shut down", server.shutdown()).await;
    });
}

/// Runs `future` as a task on `pool` and waits for it (failing the test as a hang after
/// [`HANG`](crate::support::HANG)).
async fn on_pool<T: Send + 'static>(
    pool: &raft_net_smol::SmolRuntime,
    what: &str,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    within(what, raft_traits::Runtime::spawn(pool, future))
        .await
        .unwrap_or_else(|_| panic!("{what}: the task was dropped"))
}

/// smol's global runtime, counting the sleeps asked of it.
#[derive(Clone)]
struct CountingSleeps {
    inner: raft_net_smol::SmolRuntime,
    sleeps: Arc<std::sync::atomic::AtomicUsize>,
}

impl raft_traits::Runtime for CountingSleeps {
    fn spawn<F>(&self, future: F) -> raft_traits::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawn(future)
    }

    fn sleep(&self, duration: Duration) -> futures::future::BoxFuture<'static, ()> {
        self.sleeps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.sleep(duration)
    }

    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn random_seed(&self) -> u64 {
        self.inner.random_seed()
    }
}

#[test]
fn a_clients_sleep_is_its_runtimes() {
    let sleeps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = CountingSleeps {
        inner: raft_net_smol::SmolRuntime::global(),
        sleeps: Arc::clone(&sleeps),
    };
    let client: TcpClient<u64, u64> = TcpClient::new(
        config(),
        Protocol::service("napper"),
        [(SERVER, SocketAddr::from(([127, 0, 0, 1], 9)))],
    )
    .unwrap();
    client.set_runtime(runtime);
    smol::block_on(client.sleep(Duration::from_millis(1)));
    assert_eq!(
        sleeps.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the sleep did not go through the client's runtime"
    );
}
