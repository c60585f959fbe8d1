//! Peers that cannot be reached, servers that go away, and shutting down.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use raft_net_smol::TcpConfig;
use raft_traits::{NodeId, Response, Term, Transport, TransportError};

use crate::support::{
    PEER, SLOW, config, server, server_at, spawn_send, transport, vote, vote_reply, within,
};

/// An address on which nothing listens: a port the system handed out and took back.
fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn a_port_without_a_listener_is_unreachable_within_the_connect_timeout() {
    let connect_timeout = Duration::from_secs(5);
    let config = TcpConfig {
        connect_timeout,
        // Long enough that the second request below surely falls in the backoff.
        backoff_min: Duration::from_secs(120),
        backoff_max: Duration::from_secs(120),
        ..config()
    };
    let transport = transport(dead_address(), config);
    smol::block_on(async {
        let started = Instant::now();
        let reply = within("a vote to nowhere", transport.send(PEER, vote(Term(1)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { peer: PEER, .. })),
            "{reply:?}"
        );
        assert!(
            started.elapsed() < connect_timeout,
            "{:?}",
            started.elapsed()
        );

        // Backing off: the next request fails at once, without trying.
        match within("a vote during backoff", transport.send(PEER, vote(Term(2)))).await {
            Err(TransportError::Unreachable { reason, .. }) => {
                assert!(reason.contains("backing off"), "{reason}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    });
}

#[test]
fn an_unknown_peer_is_reported() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = transport.send(NodeId(9), vote(Term(1))).await;
        assert_eq!(reply, Err(TransportError::UnknownPeer(NodeId(9))));
        assert_eq!(transport.remove_peer(PEER), Some(server.local_addr()));
        let reply = transport.send(PEER, vote(Term(1))).await;
        assert_eq!(reply, Err(TransportError::UnknownPeer(PEER)));
        server.shutdown().await;
    });
}

#[test]
fn a_moved_peer_is_reached_at_its_new_address() {
    let (old, _old_handler) = server(config());
    let (new, _new_handler) = server(config());
    let transport = transport(old.local_addr(), config());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        assert_eq!(new.connection_count(), 0);

        transport.set_peer(PEER, new.local_addr());
        assert_eq!(transport.peer_addr(PEER), Some(new.local_addr()));
        let reply = within("a vote", transport.send(PEER, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        assert_eq!(new.connection_count(), 1);
        old.shutdown().await;
        new.shutdown().await;
    });
}

#[test]
fn shutting_the_transport_down_ends_requests_in_flight_with_closed() {
    let (server, handler) = server(config());
    let transport = transport(server.local_addr(), config());
    let other_handle = transport.clone();
    smol::block_on(async {
        let slow = spawn_send(&transport, vote(SLOW));
        handler.slow_request_started().await;

        other_handle.shutdown();
        assert!(transport.is_shut_down());
        let reply = within("the slow vote", slow).await;
        assert_eq!(reply, Err(TransportError::Closed));
        let reply = transport.send(PEER, vote(Term(1))).await;
        assert_eq!(reply, Err(TransportError::Closed));

        handler.open_gate();
        server.shutdown().await;
    });
}

#[test]
fn shutting_the_transport_down_ends_a_request_waiting_to_connect() {
    // A listener that takes the connection and never answers the handshake: the
    // request waits in its connection attempt, which alone would last the connect
    // timeout, here longer than the test waits.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = TcpConfig {
        connect_timeout: Duration::from_secs(600),
        ..config()
    };
    let transport = transport(silent.local_addr().unwrap(), config);
    smol::block_on(async {
        let waiting = spawn_send(&transport, vote(Term(1)));
        let (_accepted, _) = smol::unblock(move || silent.accept()).await.unwrap();

        transport.shutdown();
        let reply = within("the vote waiting to connect", waiting).await;
        assert_eq!(reply, Err(TransportError::Closed));
    });
}

#[test]
fn a_server_shut_down_mid_request_fails_the_request() {
    let (server, handler) = server(config());
    let addr = server.local_addr();
    let transport = transport(addr, config());
    smol::block_on(async {
        let slow = spawn_send(&transport, vote(SLOW));
        handler.slow_request_started().await;

        let started = Instant::now();
        server.shutdown().await;
        let reply = within("the slow vote", slow).await;
        assert!(
            matches!(reply, Err(TransportError::Failed { peer: PEER, .. })),
            "{reply:?}"
        );
        // It failed because the connection closed, not because the time ran out.
        assert!(started.elapsed() < config().request_timeout);

        // No new connection is accepted.
        assert!(std::net::TcpStream::connect(addr).is_err());
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        // The handler was not cancelled with its connection (a Raft node may already
        // have acted on the request): it runs to its end, and only its reply is dropped.
        handler.open_gate();
        handler.slow_request_finished().await;
    });
}

/// Sends `term`'s vote until it is answered, for at most `attempts` tries; a pause
/// between tries keeps the loop from spinning through the transport's backoff.
async fn until_answered(
    transport: &raft_net_smol::TcpTransport<u64>,
    term: Term,
    attempts: u32,
) -> Result<Response, TransportError> {
    let mut reply = transport.send(PEER, vote(term)).await;
    for _ in 1..attempts {
        if reply.is_ok() {
            break;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
        reply = transport.send(PEER, vote(term)).await;
    }
    reply
}

#[test]
fn the_transport_reconnects_after_the_server_restarts() {
    let (first, _first_handler) = server(config());
    let addr = first.local_addr();
    let transport = transport(addr, config());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));

        first.shutdown().await;
        let reply = within(
            "a vote to a stopped server",
            transport.send(PEER, vote(Term(2))),
        )
        .await;
        assert!(reply.is_err(), "{reply:?}");

        let (second, _second_handler) = server_at(addr, config());
        let reply = within(
            "a vote after the restart",
            until_answered(&transport, Term(3), 500),
        )
        .await;
        assert_eq!(reply, Ok(vote_reply(Term(3))));
        assert_eq!(second.connection_count(), 1);
        second.shutdown().await;
    });
}
