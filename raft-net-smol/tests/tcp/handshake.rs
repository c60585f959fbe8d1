//! The handshake: strangers are refused before any request reaches the handler, and a
//! Raft connection carries only its own node's requests.

use std::net::SocketAddr;

use raft_net_smol::frame::{Frame, FrameKind, HEADER_LEN, VERSION, read_frame, write_frame};
use raft_net_smol::handshake::{Hello, Protocol, Refusal};
use raft_net_smol::{HandshakeError, TcpClient, TcpConfig, TcpTransport};
use raft_traits::{Codec, NodeId, Postcard, Response, Term, Transport, TransportError};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::logs;
use crate::support::{
    ME, PEER, config, raft_hello, say_hello, server, transport, vote, vote_from, vote_reply, within,
};

/// Reads until the server closes the connection; returns any frame it sent first.
async fn until_closed(stream: &mut TcpStream) -> Option<Frame> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let reading = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    within("the server to close the connection", reading).await;
    read_frame(&mut &received[..], 4096).await.ok().flatten()
}

/// The frame a server sends to refuse a handshake for `reason`.
fn assert_refusal(frame: Option<Frame>, reason: Refusal) {
    let frame = frame.expect("the server closed without a refusal");
    assert_eq!(frame.header.kind, FrameKind::Refusal, "{frame:?}");
    assert_eq!(frame.body.first(), Some(&reason.to_byte()), "{frame:?}");
}

/// Checks that the server logged, for the connection from `local`, an error that
/// contains `logged`.
fn assert_logged(local: SocketAddr, logged: &str) {
    let error = logs::closing_of(local).unwrap_or_default();
    assert!(
        error.contains(logged),
        "logged {error:?}, expected {logged:?}"
    );
}

/// Sends `hello` as the first frame of a new connection; returns the connection's
/// address and what the server answered before closing it.
async fn refused_hello(addr: SocketAddr, hello: &Hello) -> (SocketAddr, Option<Frame>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let answer = say_hello(&mut stream, hello).await;
    assert!(until_closed(&mut stream).await.is_none());
    (local, answer)
}

#[test]
fn a_request_before_the_handshake_never_reaches_the_handler() {
    logs::capture();
    let (server, handler) = server(config());
    smol::block_on(async {
        // A well-formed vote, as a transport without a handshake would send it.
        let body = Postcard.encode(&vote(Term(9))).unwrap();
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Request, 1, false, &body)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream.write_all(&wire).await.unwrap();
        assert_refusal(until_closed(&mut stream).await, Refusal::NotAHello);
        assert_logged(local, "did not start with a handshake");
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

#[test]
fn an_old_version_peer_gets_a_clear_typed_error() {
    logs::capture();
    let (server, handler) = server(config());
    smol::block_on(async {
        // What a version 1 transport sent first: a request, in a version 1 header.
        let body = Postcard.encode(&vote(Term(9))).unwrap();
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Request, 1, false, &body)
            .await
            .unwrap();
        wire[4] = 1;
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream.write_all(&wire).await.unwrap();
        // The refusal is a frame of this end's version: a version 1 peer, which checks
        // the version of what it reads, reports that version as unsupported.
        let answer = until_closed(&mut stream).await;
        assert_refusal(answer, Refusal::Version);
        assert_logged(
            local,
            &format!("unsupported protocol version 1 (this end speaks version {VERSION})"),
        );
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

#[test]
fn a_client_protocol_on_the_raft_port_is_refused_and_the_client_learns_why() {
    logs::capture();
    let (server, handler) = server(config());
    // A client of some service, pointed at the Raft port by mistake.
    let client: TcpClient<String, String> = TcpClient::new(
        config(),
        Protocol::service("raft-kv"),
        [(PEER, server.local_addr())],
    )
    .unwrap();
    smol::block_on(async {
        let reply = within("a misdirected call", client.call(PEER, "put".to_owned())).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { peer: PEER, .. })),
            "{reply:?}"
        );
        assert_eq!(
            client.handshake_error(PEER),
            Some(HandshakeError::WrongProtocol {
                server: Protocol::Raft,
                client: Protocol::service("raft-kv"),
            })
        );
        assert_eq!(handler.handled(), 0);

        // By hand, to see the server's log and its refusal.
        let client_hello = client.hello().clone();
        let (local, answer) = refused_hello(server.local_addr(), &client_hello).await;
        assert_refusal(answer, Refusal::Protocol);
        assert_logged(
            local,
            "the server speaks Raft (node to node), but the client asked for the client protocol \"raft-kv\"",
        );
        assert_eq!(handler.handled(), 0);
        client.shutdown();
        server.shutdown().await;
    });
}

#[test]
fn a_node_of_another_cluster_is_refused() {
    logs::capture();
    let (server, handler) = server(config());
    let stranger = TcpConfig {
        cluster_id: "elsewhere".to_owned(),
        ..config()
    };
    let transport = transport(server.local_addr(), stranger);
    smol::block_on(async {
        let reply = within("a vote from elsewhere", transport.send(PEER, vote(Term(5)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert_eq!(
            transport.handshake_error(PEER),
            Some(HandshakeError::WrongCluster {
                server: TcpConfig::DEFAULT_CLUSTER_ID.to_owned(),
                client: "elsewhere".to_owned(),
            })
        );
        let hello = Hello {
            cluster_id: "elsewhere".to_owned(),
            ..raft_hello()
        };
        let (local, answer) = refused_hello(server.local_addr(), &hello).await;
        assert_refusal(answer, Refusal::Cluster);
        assert_logged(local, "the server belongs to cluster \"default\"");
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

#[test]
fn a_raft_connection_must_name_its_node() {
    logs::capture();
    let (server, handler) = server(config());
    smol::block_on(async {
        let hello = Hello {
            node: None,
            ..raft_hello()
        };
        let (local, answer) = refused_hello(server.local_addr(), &hello).await;
        assert_refusal(answer, Refusal::MissingNodeId);
        assert_logged(local, "a Raft connection must name the node it comes from");
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

#[test]
fn a_malformed_hello_is_refused() {
    logs::capture();
    let (server, handler) = server(config());
    smol::block_on(async {
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Hello, 0, false, &[1, 0, 7, 0xff])
            .await
            .unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        stream.write_all(&wire).await.unwrap();
        assert_refusal(until_closed(&mut stream).await, Refusal::Malformed);
        assert_logged(local, "malformed handshake: truncated name");

        // A hello longer than any valid one is refused on its header.
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let local = stream.local_addr().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&wire[..HEADER_LEN]);
        header[16..20].copy_from_slice(&4000u32.to_be_bytes());
        stream.write_all(&header).await.unwrap();
        assert_refusal(until_closed(&mut stream).await, Refusal::Malformed);
        assert_logged(local, "longer than any handshake");
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

/// Finding 2 of issue 12, at the transport's level: a connection that named node 1 may
/// not carry a request that claims to come from node 5.
#[test]
fn a_request_from_another_sender_closes_the_connection_before_the_handler() {
    logs::capture();
    let (server, handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        assert_eq!(handler.handled(), 1);

        let forged = vote_from(NodeId(5), Term(2));
        let reply = within("a forged vote", transport.send(PEER, forged)).await;
        assert!(
            matches!(reply, Err(TransportError::Failed { .. })),
            "{reply:?}"
        );
        assert_eq!(handler.handled(), 1);

        // By hand, to see the server's log.
        let mut stream = crate::support::handshaken(server.local_addr()).await;
        let local = stream.local_addr().unwrap();
        let body = Postcard.encode(&vote_from(NodeId(5), Term(3))).unwrap();
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Request, 1, false, &body)
            .await
            .unwrap();
        stream.write_all(&wire).await.unwrap();
        assert!(until_closed(&mut stream).await.is_none());
        assert_logged(
            local,
            "the handshake named node n1, but a request claims to come from n5",
        );
        assert_eq!(handler.handled(), 1);

        // The transport's own requests still go through, on a new connection.
        let reply = within("a vote after", transport.send(PEER, vote(Term(4)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(4))));
        assert_eq!(handler.handled(), 2);
        server.shutdown().await;
    });
}

#[test]
fn a_server_that_is_another_node_is_refused_by_the_transport() {
    let (server, handler) = server(config());
    server.set_node_id(NodeId(3));
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = within(
            "a vote to the wrong node",
            transport.send(PEER, vote(Term(1))),
        )
        .await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert_eq!(
            transport.handshake_error(PEER),
            Some(HandshakeError::WrongNode {
                expected: PEER,
                found: NodeId(3)
            })
        );
        assert_eq!(handler.handled(), 0);

        // Once the server is the node the transport means, it is welcome.
        server.set_node_id(PEER);
        let retry = TcpTransport::new(config(), ME, [(PEER, server.local_addr())]).unwrap();
        let reply = within("a vote to the right node", retry.send(PEER, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        assert_eq!(retry.handshake_error(PEER), None);
        server.shutdown().await;
    });
}

/// The welcome names the server, and the connection then carries requests.
#[test]
fn a_welcome_carries_the_servers_identity() {
    let (server, _handler) = server(config());
    server.set_node_id(PEER);
    smol::block_on(async {
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        let welcome = say_hello(&mut stream, &raft_hello()).await.unwrap();
        assert_eq!(welcome.header.kind, FrameKind::Welcome);
        assert_eq!(
            Hello::decode(&welcome.body).unwrap(),
            Hello {
                node: Some(PEER),
                ..raft_hello()
            }
        );
        // Then the connection carries requests as usual.
        let body = Postcard.encode(&vote(Term(6))).unwrap();
        let mut wire = Vec::new();
        write_frame(&mut wire, FrameKind::Request, 1, false, &body)
            .await
            .unwrap();
        stream.write_all(&wire).await.unwrap();
        let reply = within("a reply", read_frame(&mut stream, 4096))
            .await
            .unwrap()
            .unwrap();
        let reply: Response = Postcard.decode(&reply.body).unwrap();
        assert_eq!(reply, vote_reply(Term(6)));
        server.shutdown().await;
    });
}
