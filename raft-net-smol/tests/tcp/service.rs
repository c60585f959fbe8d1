//! The same machinery for a protocol other than Raft's: a [`Service`] served by a
//! [`TcpServer`] and called with a [`TcpClient`].

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use raft_net_smol::frame::{FrameHeader, FrameKind};
use raft_net_smol::{Protocol, Respond, Service, TcpClient, TcpConfig, TcpServer};
use raft_traits::{Codec, NodeId, Postcard, TransportError, async_trait};
use serde::{Deserialize, Serialize};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::logs;
use crate::support::{config, say_hello, within};

/// What the test service is asked.
#[derive(Debug, Serialize, Deserialize)]
enum Ask {
    /// Answer with `len` bytes, each the low byte of its position.
    Bytes { len: usize },
    /// Answer with the sum of the bytes sent.
    Sum(Vec<u8>),
    /// Refuse.
    Refuse,
}

/// What it answers.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Answer {
    Bytes(Vec<u8>),
    Sum(u64),
}

struct TestService;

#[async_trait]
impl Service for TestService {
    type Request = Ask;
    type Response = Answer;

    fn protocol(&self) -> Protocol {
        Protocol::service("test")
    }

    async fn call(&self, request: Ask) -> Result<Answer, String> {
        match request {
            Ask::Bytes { len } => Ok(Answer::Bytes((0..len).map(|i| i as u8).collect())),
            Ask::Sum(bytes) => Ok(Answer::Sum(bytes.iter().map(|&b| u64::from(b)).sum())),
            Ask::Refuse => Err("refused on purpose".to_owned()),
        }
    }

    fn describe(request: &Ask) -> &'static str {
        match request {
            Ask::Bytes { .. } => "Bytes",
            Ask::Sum(_) => "Sum",
            Ask::Refuse => "Refuse",
        }
    }
}

const SERVER: NodeId = NodeId(9);

/// Frames of at most 4 KiB, so that the large messages below are chunked.
fn small_frames() -> TcpConfig {
    TcpConfig {
        max_frame_size: 4096,
        chunk_size: 4096,
        ..config()
    }
}

fn serve() -> (TcpServer, TcpClient<Ask, Answer>) {
    let server = TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), small_frames()).unwrap();
    server.serve_service(Arc::new(TestService)).unwrap();
    let client = TcpClient::new(
        small_frames(),
        Protocol::service("test"),
        [(SERVER, server.local_addr())],
    )
    .unwrap();
    (server, client)
}

#[test]
fn requests_and_responses_of_any_type_travel_chunked_and_multiplexed() {
    let (server, client) = serve();
    smol::block_on(async {
        // A large response, a large request and small ones, all at once on one
        // connection.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let expected_sum = big.iter().map(|&b| u64::from(b)).sum();
        let (large_response, large_request, small) = futures::join!(
            client.call(SERVER, Ask::Bytes { len: 50_000 }),
            client.call(SERVER, Ask::Sum(big)),
            client.call(SERVER, Ask::Bytes { len: 3 }),
        );
        let expected: Vec<u8> = (0..50_000usize).map(|i| i as u8).collect();
        assert_eq!(large_response, Ok(Answer::Bytes(expected)));
        assert_eq!(large_request, Ok(Answer::Sum(expected_sum)));
        assert_eq!(small, Ok(Answer::Bytes(vec![0, 1, 2])));
        assert_eq!(server.connection_count(), 1);

        // A refusal is a failed call, with the service's reason.
        match client.call(SERVER, Ask::Refuse).await {
            Err(TransportError::Failed { peer, reason }) => {
                assert_eq!(peer, SERVER);
                assert!(reason.contains("refused on purpose"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // The connection survives it.
        assert_eq!(
            client.call(SERVER, Ask::Bytes { len: 1 }).await,
            Ok(Answer::Bytes(vec![0]))
        );
        assert_eq!(
            client.call(NodeId(1), Ask::Refuse).await,
            Err(TransportError::UnknownPeer(NodeId(1)))
        );
        client.shutdown();
        assert_eq!(
            client.call(SERVER, Ask::Bytes { len: 1 }).await,
            Err(TransportError::Closed)
        );
        server.shutdown().await;
    });
}

#[test]
fn a_request_of_another_type_closes_the_connection() {
    logs::capture();
    let (server, client) = serve();
    smol::block_on(async {
        // A well-framed body that is not an `Ask`: variant 7 does not exist.
        let body = Postcard.encode(&7u32).unwrap();
        let header = FrameHeader {
            kind: FrameKind::Request,
            request_id: 1,
            more: false,
            body_len: u32::try_from(body.len()).unwrap(),
        };
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        let welcome = say_hello(&mut stream, client.hello()).await.unwrap();
        assert_eq!(welcome.header.kind, FrameKind::Welcome);
        stream.write_all(&header.encode()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut buffer = [0u8; 64];
        let read = within(
            "the server to close the connection",
            stream.read(&mut buffer),
        )
        .await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the server answered {read:?}"
        );
        let _ = stream.shutdown(Shutdown::Both);
        let error = logs::closing_of(local).unwrap_or_default();
        assert!(error.contains("undecodable Request body"), "{error:?}");

        // Other clients are served as before.
        assert_eq!(
            client.call(SERVER, Ask::Bytes { len: 2 }).await,
            Ok(Answer::Bytes(vec![0, 1]))
        );
        client.shutdown();
        server.shutdown().await;
    });
}

/// What [`AnswersElsewhere`] is asked.
#[derive(Debug, Serialize, Deserialize)]
enum Errand {
    /// Answered with the number, from a thread of the service's own.
    Elsewhere(u64),
    /// Given back by `call_then`, so answered by `call`: the number doubled.
    GivenBack(u64),
    /// Dropped unanswered.
    Dropped,
    /// `call_then` panics.
    Panics,
}

/// A service that answers through [`Service::call_then`], as the Raft handle does from
/// its event loop.
struct AnswersElsewhere;

#[async_trait]
impl Service for AnswersElsewhere {
    type Request = Errand;
    type Response = u64;

    fn protocol(&self) -> Protocol {
        Protocol::service("elsewhere")
    }

    async fn call(&self, request: Errand) -> Result<u64, String> {
        match request {
            Errand::GivenBack(n) => Ok(n * 2),
            other => Err(format!("{other:?} should not reach call")),
        }
    }

    fn call_then(
        &self,
        request: Errand,
        respond: Respond<u64>,
    ) -> Result<(), (Errand, Respond<u64>)> {
        match request {
            Errand::Elsewhere(n) => {
                std::thread::spawn(move || respond.send(Ok(n)));
                Ok(())
            }
            Errand::GivenBack(n) => Err((Errand::GivenBack(n), respond)),
            Errand::Dropped => Ok(()),
            Errand::Panics => panic!("on purpose"),
        }
    }
}

#[test]
fn a_service_may_answer_from_any_thread_give_a_request_back_or_drop_it() {
    logs::capture();
    let server = TcpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config()).unwrap();
    server.serve_service(Arc::new(AnswersElsewhere)).unwrap();
    let client: TcpClient<Errand, u64> = TcpClient::new(
        config(),
        Protocol::service("elsewhere"),
        [(SERVER, server.local_addr())],
    )
    .unwrap();
    smol::block_on(within("the errands", async {
        let (elsewhere, given_back) = futures::join!(
            client.call(SERVER, Errand::Elsewhere(7)),
            client.call(SERVER, Errand::GivenBack(21)),
        );
        assert_eq!(elsewhere, Ok(7));
        assert_eq!(given_back, Ok(42));
        // Neither a dropped answer nor a panic leaves the client to its timeout (a
        // minute here).
        for errand in [Errand::Dropped, Errand::Panics] {
            match client.call(SERVER, errand).await {
                Err(TransportError::Failed { reason, .. }) => {
                    assert!(reason.contains("unanswered"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // And the connection serves on.
        assert_eq!(client.call(SERVER, Errand::Elsewhere(8)).await, Ok(8));
        assert_eq!(server.connection_count(), 1);
    }));
    client.shutdown();
    smol::block_on(server.shutdown());
}
