//! Requests and replies on a healthy connection.

use std::time::{Duration, Instant};

use futures::future::join_all;
use raft_net_smol::TcpConfig;
use raft_traits::{Term, Transport, TransportError};

use crate::support::{
    PANIC, PEER, REFUSE, SLOW, config, heartbeat, server, spawn_send, transport, vote, vote_reply,
    within,
};

#[test]
fn a_request_gets_its_reply() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(7)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(7))));
        let reply = within("a heartbeat", transport.send(PEER, heartbeat(Term(8)))).await;
        assert_eq!(reply.map(|r| r.term()), Ok(Term(8)));
        server.shutdown().await;
    });
}

#[test]
fn a_handler_error_fails_the_request() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = within("a refused vote", transport.send(PEER, vote(REFUSE))).await;
        match reply {
            Err(TransportError::Failed { peer, reason }) => {
                assert_eq!(peer, PEER);
                assert!(reason.contains("refused"), "{reason}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        // The error frame does not hurt the connection.
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        assert_eq!(server.connection_count(), 1);
        server.shutdown().await;
    });
}

#[test]
fn a_panicking_handler_fails_the_request() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        match within("a vote that panics", transport.send(PEER, vote(PANIC))).await {
            Err(TransportError::Failed { reason, .. }) => {
                assert!(reason.contains("panicked"), "{reason}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        server.shutdown().await;
    });
}

#[test]
fn concurrent_requests_share_one_connection() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let calls = (1..=200).map(|term| transport.send(PEER, vote(Term(term))));
        let replies = within("200 concurrent votes", join_all(calls)).await;
        for (term, reply) in (1..=200).zip(replies) {
            assert_eq!(reply, Ok(vote_reply(Term(term))));
        }
        assert_eq!(server.connection_count(), 1);
        server.shutdown().await;
    });
}

#[test]
fn a_slow_request_does_not_block_fast_ones() {
    let (server, handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let slow = spawn_send(&transport, vote(SLOW));
        handler.slow_request_started().await;

        let calls = (1..=50).map(|term| transport.send(PEER, vote(Term(term))));
        let replies = within("fast votes behind a slow one", join_all(calls)).await;
        for (term, reply) in (1..=50).zip(replies) {
            assert_eq!(reply, Ok(vote_reply(Term(term))));
        }
        assert!(!slow.is_finished());
        assert_eq!(server.connection_count(), 1);

        handler.open_gate();
        assert_eq!(within("the slow vote", slow).await, Ok(vote_reply(SLOW)));
        server.shutdown().await;
    });
}

#[test]
fn a_late_reply_is_a_timeout_and_the_connection_survives() {
    let request_timeout = Duration::from_millis(300);
    let client_config = TcpConfig {
        request_timeout,
        ..config()
    };
    let (server, handler) = server(config());
    let transport = transport(server.local_addr(), client_config);
    smol::block_on(async {
        // Connect first, so that the timeout covers only the request.
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));

        let started = Instant::now();
        let reply = within("a slow vote", transport.send(PEER, vote(SLOW))).await;
        assert_eq!(
            reply,
            Err(TransportError::Timeout {
                peer: PEER,
                after: request_timeout
            })
        );
        assert!(started.elapsed() >= request_timeout);

        // The slow reply arrives after its request was abandoned; it is dropped and
        // the connection goes on.
        handler.open_gate();
        let reply = within("a vote", transport.send(PEER, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        assert_eq!(server.connection_count(), 1);
        server.shutdown().await;
    });
}
