//! Bad input on the listening port closes that connection, and only that one: before the
//! handshake (see also `handshake.rs`) and after it.

use std::net::{Shutdown, SocketAddr};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use raft_net_smol::TcpConfig;
use raft_net_smol::frame::{FrameHeader, FrameKind, HEADER_LEN, MAGIC, VERSION};
use raft_traits::{Codec, Postcard, Term, Transport};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::logs;
use crate::support::{
    PEER, SLOW, config, handshaken, server, spawn_send, transport, vote, vote_reply, within,
};

/// Frames of at most 4 KiB, messages of at most 64 KiB.
fn limits() -> TcpConfig {
    TcpConfig {
        max_frame_size: 4096,
        chunk_size: 4096,
        max_message_size: 64 << 10,
        ..config()
    }
}

fn header(kind: FrameKind, more: bool, body_len: u32) -> [u8; HEADER_LEN] {
    FrameHeader {
        kind,
        request_id: 1,
        more,
        body_len,
    }
    .encode()
}

/// Sends `bytes` on a new connection (after a valid handshake if `handshake`), closes
/// its sending half if `half_close`, and waits for the server to close the connection.
/// Returns the connection's local address, by which the server's log names it.
pub(crate) async fn send_bad_input(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
    handshake: bool,
) -> SocketAddr {
    let mut stream = if handshake {
        handshaken(addr).await
    } else {
        TcpStream::connect(addr).await.unwrap()
    };
    let local = stream.local_addr().unwrap();
    // The server may close before taking every byte: a failed write is expected then.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let closed = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    within("the server to close a bad connection", closed).await;
    local
}

/// Runs one bad input, sent after a valid handshake, against a server while a good
/// client has a request in flight on its own connection: the bad connection is closed
/// with a logged error that contains `logged`, and the good one loses nothing.
fn only_the_bad_connection_is_closed(bytes: &[u8], half_close: bool, logged: &str) {
    only_the_bad_connection_is_closed_with(limits(), bytes, half_close, true, logged);
}

/// [`only_the_bad_connection_is_closed`], on a server with `config`, with or without a
/// handshake before the bad input.
pub(crate) fn only_the_bad_connection_is_closed_with(
    config: TcpConfig,
    bytes: &[u8],
    half_close: bool,
    handshake: bool,
    logged: &str,
) {
    logs::capture();
    let (server, handler) = server(config.clone());
    let good = transport(server.local_addr(), config);
    smol::block_on(async {
        let slow = spawn_send(&good, vote(SLOW));
        handler.slow_request_started().await;

        let bad = send_bad_input(server.local_addr(), bytes, half_close, handshake).await;
        // The server logs before closing the socket.
        let error = logs::closing_of(bad).unwrap_or_default();
        assert!(
            error.contains(logged),
            "logged {error:?}, expected {logged:?}"
        );

        // The server closes a connection's socket only after forgetting it.
        assert_eq!(server.connection_count(), 1);
        let reply = within("a vote after bad input", good.send(PEER, vote(Term(5)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(5))));
        handler.open_gate();
        assert_eq!(within("the slow vote", slow).await, Ok(vote_reply(SLOW)));
        server.shutdown().await;
    });
}

#[test]
fn wrong_magic() {
    let mut bytes = header(FrameKind::Request, false, 10);
    bytes[..4].copy_from_slice(b"HTTP");
    // No body and the connection left open: the header alone must be refused.
    only_the_bad_connection_is_closed(&bytes, false, "bad magic bytes");
}

#[test]
fn wrong_magic_before_the_handshake() {
    let mut bytes = header(FrameKind::Hello, false, 10);
    bytes[..4].copy_from_slice(b"SSH-");
    only_the_bad_connection_is_closed_with(limits(), &bytes, false, false, "bad magic bytes");
}

#[test]
fn unsupported_version() {
    let mut bytes = header(FrameKind::Request, false, 10);
    bytes[4] = VERSION + 1;
    let logged = format!("unsupported protocol version {}", VERSION + 1);
    only_the_bad_connection_is_closed(&bytes, false, &logged);
}

#[test]
fn unknown_kind() {
    let mut bytes = header(FrameKind::Request, false, 10);
    bytes[5] = 99;
    only_the_bad_connection_is_closed(&bytes, false, "unknown frame kind 99");
}

#[test]
fn unknown_flags() {
    let mut bytes = header(FrameKind::Request, false, 10);
    bytes[6] = 0x40;
    only_the_bad_connection_is_closed(&bytes, false, "unknown flags");
}

#[test]
fn oversized_length() {
    // Announces a body just above the maximum and sends none of it: the server must
    // refuse on the header, not wait for the body.
    let bytes = header(FrameKind::Request, false, limits().max_frame_size + 1);
    only_the_bad_connection_is_closed(
        &bytes,
        false,
        "frame body of 4097 bytes exceeds the maximum of 4096",
    );
}

#[test]
fn truncated_header() {
    only_the_bad_connection_is_closed(
        &header(FrameKind::Request, false, 10)[..7],
        true,
        "inside a frame header",
    );
}

#[test]
fn truncated_body() {
    let mut bytes = header(FrameKind::Request, false, 100).to_vec();
    bytes.extend_from_slice(&[0; 10]);
    only_the_bad_connection_is_closed(&bytes, true, "inside a frame body");
}

#[test]
fn valid_header_with_garbage_body() {
    let mut bytes = header(FrameKind::Request, false, 32).to_vec();
    bytes.extend_from_slice(&[0xff; 32]);
    // The connection stays open on the client's side: the server closes it because the
    // body does not decode, not because the input ended.
    only_the_bad_connection_is_closed(&bytes, false, "undecodable Request body");
}

#[test]
fn a_second_hello() {
    let body = crate::support::raft_hello().encode().unwrap();
    let mut bytes = header(FrameKind::Hello, false, body.len() as u32).to_vec();
    bytes.extend_from_slice(&body);
    only_the_bad_connection_is_closed(&bytes, false, "unexpected Hello frame");
}

#[test]
fn a_reply_sent_to_the_server() {
    let body = Postcard.encode(&vote_reply(Term(1))).unwrap();
    let mut bytes = header(FrameKind::Response, false, body.len() as u32).to_vec();
    bytes.extend_from_slice(&body);
    only_the_bad_connection_is_closed(&bytes, false, "unexpected Response frame");
}

#[test]
fn a_message_above_the_maximum_message_size() {
    // Chunks within the frame limit that add up to more than the message limit.
    let chunk = [0u8; 4096];
    let mut bytes = Vec::new();
    for _ in 0..=(limits().max_message_size / 4096) {
        bytes.extend_from_slice(&header(FrameKind::Request, true, 4096));
        bytes.extend_from_slice(&chunk);
    }
    only_the_bad_connection_is_closed(&bytes, false, "exceeds the maximum of 65536");
}

/// Random bytes, and random bytes after a plausible start of a header, on many
/// connections to one server: each is closed, and a good client keeps its connection
/// and its request in flight throughout.
#[test]
fn random_bytes_close_only_their_connection() {
    let (server, handler) = server(limits());
    let addr = server.local_addr();
    let good = transport(addr, limits());
    let slow = spawn_send(&good, vote(SLOW));
    smol::block_on(handler.slow_request_started());

    let random = proptest::collection::vec(any::<u8>(), 0..2048);
    let plausible = (0u8..8, any::<u16>(), 0u32..10_000, random.clone()).prop_map(
        |(kind, flags, body_len, rest)| {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(kind);
            bytes.extend_from_slice(&flags.to_be_bytes());
            bytes.extend_from_slice(&3u64.to_be_bytes());
            bytes.extend_from_slice(&body_len.to_be_bytes());
            bytes.extend_from_slice(&rest);
            bytes
        },
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let term = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&prop_oneof![random, plausible], |bytes| {
            let term = term.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            smol::block_on(async {
                // Every other case after a valid handshake, so that the checks behind it
                // are exercised too.
                send_bad_input(addr, &bytes, true, term.is_multiple_of(2)).await;
                let reply = within("a vote", good.send(PEER, vote(Term(term)))).await;
                prop_assert_eq!(reply, Ok(vote_reply(Term(term))));
                Ok(())
            })
        })
        .unwrap();

    smol::block_on(async {
        assert_eq!(server.connection_count(), 1);
        handler.open_gate();
        assert_eq!(within("the slow vote", slow).await, Ok(vote_reply(SLOW)));
        server.shutdown().await;
    });
}
