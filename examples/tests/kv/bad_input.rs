//! Bad input on every listening port (Raft and client) of a running cluster: each bad
//! connection is closed, the node keeps serving, and nothing is lost.

use std::net::{Shutdown, SocketAddr};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use std::collections::BTreeMap;
use std::time::Duration;

use raft_examples::protocol::{CLIENT_PROTOCOL, client_protocol};
use raft_examples::{ClientConfig, ClientError, KvClient, NodeConfig};
use raft_net_smol::frame::{FrameHeader, FrameKind, HEADER_LEN, MAGIC, VERSION, read_frame};
use raft_net_smol::handshake::{Hello, Protocol};
use raft_net_smol::{HandshakeError, TcpConfig};
use raft_traits::{NodeId, Term};
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

/// What a node's Raft port (`raft`) or client port expects in a handshake.
fn hello(raft: bool) -> Hello {
    Hello {
        protocol: if raft {
            Protocol::Raft
        } else {
            client_protocol()
        },
        cluster_id: TcpConfig::DEFAULT_CLUSTER_ID.to_owned(),
        node: raft.then_some(NodeId(1)),
    }
}

/// A hello frame carrying `hello`.
fn hello_frame(hello: &Hello) -> Vec<u8> {
    let body = hello.encode().unwrap();
    let mut bytes = header(FrameKind::Hello, false, body.len() as u32).to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// Sends `bytes` on a new connection to `addr`, after a valid handshake if `hello` is
/// given, closes the sending half if `half_close`, and waits for the server to close
/// the connection. Returns the connection's local address, by which the server's log
/// names it.
async fn send_bad_input(
    addr: SocketAddr,
    hello: Option<&Hello>,
    bytes: &[u8],
    half_close: bool,
) -> SocketAddr {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    if let Some(hello) = hello {
        stream.write_all(&hello_frame(hello)).await.unwrap();
        let welcome = read_frame(&mut stream, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!(welcome.header.kind, FrameKind::Welcome, "{welcome:?}");
    }
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

/// Every kind of bad input for a Raft port (`raft`) or a client port: what it is,
/// whether it follows a valid handshake, the bytes, whether the sender then half-closes
/// (only the truncated inputs need it, the others must be refused on what arrived), and
/// what the server's log must say.
fn bad_inputs(raft: bool) -> Vec<(&'static str, bool, Vec<u8>, bool, String)> {
    let mut wrong_magic = header(FrameKind::Request, false, 10);
    wrong_magic[..4].copy_from_slice(b"GET ");
    let mut wrong_version = header(FrameKind::Request, false, 10);
    wrong_version[4] = VERSION + 1;
    let mut version_one = header(FrameKind::Request, false, 10);
    version_one[4] = 1;
    let mut no_handshake = header(FrameKind::Request, false, 10).to_vec();
    no_handshake.extend_from_slice(&[0; 10]);
    let oversized = header(FrameKind::Request, false, MAX_FRAME + 1);
    let truncated_header = header(FrameKind::Request, false, 10)[..9].to_vec();
    let mut truncated_body = header(FrameKind::Request, false, 100).to_vec();
    truncated_body.extend_from_slice(&[7; 10]);
    let mut garbage_body = header(FrameKind::Request, false, 64).to_vec();
    garbage_body.extend_from_slice(&[0xff; 64]);
    let mut http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    http.extend_from_slice(&[0; 8]);
    let other_cluster = Hello {
        cluster_id: "elsewhere".to_owned(),
        ..hello(raft)
    };
    let client_protocol = format!("the client protocol \"{CLIENT_PROTOCOL}\"");
    let raft_protocol = "Raft (node to node)".to_owned();
    let (this_protocol, other_protocol) = if raft {
        (raft_protocol, client_protocol)
    } else {
        (client_protocol, raft_protocol)
    };
    vec![
        (
            "wrong magic",
            false,
            wrong_magic.to_vec(),
            false,
            "bad magic bytes".to_owned(),
        ),
        (
            "a newer version",
            false,
            wrong_version.to_vec(),
            false,
            format!("unsupported protocol version {}", VERSION + 1),
        ),
        (
            "version 1, before handshakes",
            false,
            version_one.to_vec(),
            false,
            "unsupported protocol version 1".to_owned(),
        ),
        (
            "a request without a handshake",
            false,
            no_handshake,
            false,
            "did not start with a handshake".to_owned(),
        ),
        (
            "the other port's protocol",
            false,
            hello_frame(&hello(!raft)),
            false,
            format!("the server speaks {this_protocol}, but the client asked for {other_protocol}"),
        ),
        (
            "another cluster",
            false,
            hello_frame(&other_cluster),
            false,
            "the server belongs to cluster \"default\", the client to cluster \"elsewhere\""
                .to_owned(),
        ),
        (
            "oversized length",
            true,
            oversized.to_vec(),
            false,
            "frame body of 4097 bytes exceeds the maximum of 4096".to_owned(),
        ),
        (
            "truncated header",
            true,
            truncated_header,
            true,
            "the connection ended inside a frame header".to_owned(),
        ),
        (
            "truncated body",
            true,
            truncated_body,
            true,
            "the connection ended inside a frame body".to_owned(),
        ),
        (
            "valid header, garbage body",
            true,
            garbage_body,
            false,
            "undecodable Request body".to_owned(),
        ),
        (
            "an HTTP request",
            false,
            http,
            false,
            "bad magic bytes".to_owned(),
        ),
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
                let raft = port == "raft";
                for (what, handshake, bytes, half_close, logged) in bad_inputs(raft) {
                    let hello = handshake.then(|| hello(raft));
                    let local = send_bad_input(addr, hello.as_ref(), &bytes, half_close).await;
                    // The server logs the typed error before it closes the socket.
                    let error = logs::closing_of(local).unwrap_or_default();
                    println!("{} {port} port {addr}: {what}: {error}", node.id());
                    assert!(error.contains(&logged), "{what}: logged {error:?}");
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

/// Every node's term, as it reports it.
fn terms(cluster: &TestCluster) -> BTreeMap<NodeId, Term> {
    cluster
        .nodes
        .keys()
        .map(|&id| (id, cluster.status(id).term))
        .collect()
}

/// Finding 3 of issue 12: a `raft-kv` client pointed at the Raft ports by mistake sent
/// its commands there, where they decoded as RequestVotes (a `delete` of a two-byte key
/// as one of term 2), raised the nodes' terms and changed the leader. Now the Raft port refuses the
/// client's handshake: no node's term moves, and the client is told, at once, that
/// these are not client ports.
#[test]
fn a_client_pointed_at_the_raft_ports_reaches_no_node() {
    run(async {
        let cluster = TestCluster::start(Options::default()).await;
        let leader = cluster.wait_for_leader(Term(0), &[]).await;
        cluster.put_range("key", 0..3).await;
        let before = terms(&cluster);

        let config = ClientConfig {
            deadline: Duration::from_secs(5),
            ..ClientConfig::default()
        };
        let mut errors = Vec::new();
        for node in cluster.nodes.values() {
            // One client per node, so that every node is sent the commands.
            let raft_port = [(node.id(), node.raft_addr())];
            let misdirected = KvClient::new(raft_port, config.clone()).unwrap();
            // A key of two ASCII bytes makes these encodings exactly a RequestVote's:
            // variant 0 (Execute) is Vote, the command's variant (Delete 2, Get 1) its
            // term, the key's length its candidate, its bytes the last log id.
            errors.push(misdirected.delete("k1").await.unwrap_err());
            errors.push(misdirected.get("k1").await.unwrap_err());
            misdirected.shutdown();
        }

        assert_eq!(terms(&cluster), before, "a node's term moved");
        let now = cluster.wait_for_leader(Term(0), &[]).await;
        assert_eq!((now.id, now.term), (leader.id, leader.term));
        cluster.check_range("key", 0..3).await;

        for error in errors {
            match error {
                ClientError::WrongPort {
                    error:
                        HandshakeError::WrongProtocol {
                            server: Protocol::Raft,
                            ..
                        },
                    ..
                } => {}
                other => panic!("expected a wrong port, got {other}"),
            }
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
                    // Every other case after a valid handshake, so that the checks
                    // behind it are exercised too.
                    let hello = n.is_multiple_of(2).then(|| hello(port == 0));
                    send_bad_input(ports[port], hello.as_ref(), &bytes, true).await;
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
