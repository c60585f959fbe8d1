//! Bad input on every listening port (Raft and client) of a running cluster: each bad
//! connection is closed, the node keeps serving, and nothing is lost.

use std::net::{Shutdown, SocketAddr};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use raft_examples::NodeConfig;
use raft_net_smol::TcpConfig;
use raft_net_smol::frame::{FrameHeader, FrameKind, HEADER_LEN, MAGIC, VERSION};
use raft_traits::Term;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::logs;
use crate::support::{Options, PATIENCE, TestCluster, run};

/// Frames of at most 4 KiB on every port.
const MAX_FRAME: u32 = 4096;

fn limits() -> Options {
    Options {
        tcp: TcpConfig {
            max_frame_size: MAX_FRAME,
            chunk_size: MAX_FRAME,
            ..NodeConfig::default_tcp()
        },
        ..Options::default()
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

/// Sends `bytes` on a new connection to `addr`, closes the sending half if
/// `half_close`, and waits for the server to close the connection. Returns the
/// connection's local address, by which the server's log names it.
async fn send_bad_input(addr: SocketAddr, bytes: &[u8], half_close: bool) -> SocketAddr {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let closed = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                // Random bytes may, rarely, hold a valid request, which gets its answer.
                Ok(_) => {}
            }
        }
    };
    let expired = async {
        smol::Timer::after(PATIENCE).await;
        false
    };
    assert!(
        smol::future::or(closed, expired).await,
        "{addr} did not close a connection with bad input"
    );
    local
}

/// Every kind of bad input: the bytes, whether the sender then half-closes (only the
/// truncated inputs need it, the others must be refused on what arrived), and what the
/// server's log must say.
fn bad_inputs() -> Vec<(&'static str, Vec<u8>, bool, &'static str)> {
    let mut wrong_magic = header(FrameKind::Request, false, 10);
    wrong_magic[..4].copy_from_slice(b"GET ");
    let mut wrong_version = header(FrameKind::Request, false, 10);
    wrong_version[4] = VERSION + 1;
    let oversized = header(FrameKind::Request, false, MAX_FRAME + 1);
    let truncated_header = header(FrameKind::Request, false, 10)[..9].to_vec();
    let mut truncated_body = header(FrameKind::Request, false, 100).to_vec();
    truncated_body.extend_from_slice(&[7; 10]);
    let mut garbage_body = header(FrameKind::Request, false, 64).to_vec();
    garbage_body.extend_from_slice(&[0xff; 64]);
    let mut http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    http.extend_from_slice(&[0; 8]);
    vec![
        (
            "wrong magic",
            wrong_magic.to_vec(),
            false,
            "bad magic bytes",
        ),
        (
            "wrong version",
            wrong_version.to_vec(),
            false,
            "unsupported protocol version 2",
        ),
        (
            "oversized length",
            oversized.to_vec(),
            false,
            "frame body of 4097 bytes exceeds the maximum of 4096",
        ),
        (
            "truncated header",
            truncated_header,
            true,
            "the connection ended inside a frame header",
        ),
        (
            "truncated body",
            truncated_body,
            true,
            "the connection ended inside a frame body",
        ),
        (
            "valid header, garbage body",
            garbage_body,
            false,
            "undecodable Request body",
        ),
        ("an HTTP request", http, false, "bad magic bytes"),
    ]
}

#[test]
fn every_kind_of_bad_input_closes_its_connection_on_every_port() {
    logs::capture();
    run(async {
        let cluster = TestCluster::start(limits()).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("key", 0..10).await;

        let mut round = 0;
        for node in cluster.nodes.values() {
            for (port, addr) in [("raft", node.raft_addr()), ("client", node.client_addr())] {
                for (what, bytes, half_close, logged) in bad_inputs() {
                    let local = send_bad_input(addr, &bytes, half_close).await;
                    // The server logs the typed error before it closes the socket.
                    let error = logs::closing_of(local).unwrap_or_default();
                    println!("{} {port} port {addr}: {what}: {error}", node.id());
                    assert!(error.contains(logged), "{what}: logged {error:?}");
                }
                // The node still serves: a write commits and nothing was lost.
                round += 1;
                cluster
                    .client
                    .put(format!("after{round}"), "ok")
                    .await
                    .unwrap();
            }
        }
        cluster.check_range("key", 0..10).await;
        for i in 1..=round {
            assert_eq!(
                cluster
                    .client
                    .get(format!("after{i}"))
                    .await
                    .unwrap()
                    .as_deref(),
                Some("ok")
            );
        }
        for node in cluster.nodes.values() {
            assert!(!node.raft().is_stopped());
        }
        cluster.shutdown().await;
    });
}

#[test]
fn random_bytes_on_the_leaders_ports_close_only_their_connection() {
    let cluster = run(async {
        let cluster = TestCluster::start(limits()).await;
        cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("key", 0..10).await;
        cluster
    });
    let leader = run(cluster.some_leader()).id;
    let ports = [
        cluster.node(leader).raft_addr(),
        cluster.node(leader).client_addr(),
    ];

    let random = proptest::collection::vec(any::<u8>(), 0..3000);
    // Starts like a frame, so that the checks past the magic are exercised too.
    let plausible = (0u8..8, any::<u16>(), 0u32..10_000, random.clone()).prop_map(
        |(kind, flags, body_len, rest)| {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(kind);
            bytes.extend_from_slice(&flags.to_be_bytes());
            bytes.extend_from_slice(&9u64.to_be_bytes());
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
    let case = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(
            &(prop_oneof![random, plausible], 0usize..2),
            |(bytes, port)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                run(async {
                    send_bad_input(ports[port], &bytes, true).await;
                    // Every few cases, the cluster still takes a write.
                    if n.is_multiple_of(8) {
                        cluster
                            .client
                            .put(format!("random{n}"), "ok")
                            .await
                            .unwrap();
                    }
                });
                Ok(())
            },
        )
        .unwrap();

    run(async {
        cluster.check_range("key", 0..10).await;
        cluster.client.put("last", "ok").await.unwrap();
        assert!(!cluster.node(leader).raft().is_stopped());
        // A long-lived connection: nothing on the good path was disturbed.
        assert!(
            cluster
                .client
                .statuses()
                .await
                .iter()
                .all(|(_, s)| s.is_ok())
        );
        cluster.shutdown().await;
    });
}
