//! Messages larger than a frame: chunking, reassembly, interleaving, size limits.

use std::pin::pin;

use raft_net_smol::TcpConfig;
use raft_net_smol::frame::{Frame, FrameKind, read_frame, write_frame};
use raft_net_smol::handshake::Hello;
use raft_traits::{Codec, Postcard, Request, Term, Transport, TransportError};
use smol::io::BufReader;
use smol::net::{TcpListener, TcpStream};

use crate::support::{
    PEER, config, heartbeat, raft_hello, reply_to, server, snapshot, snapshot_reply, transport,
    vote, vote_reply, within,
};

/// Frames of at most 16 KiB.
fn small_frames() -> TcpConfig {
    TcpConfig {
        max_frame_size: 16 << 10,
        chunk_size: 16 << 10,
        ..config()
    }
}

#[test]
fn a_payload_many_times_the_frame_size_arrives_intact() {
    let (server, _handler) = server(small_frames());
    let transport = transport(server.local_addr(), small_frames());
    smol::block_on(async {
        // 1 MiB: 64 frames' worth.
        let (request, sum) = snapshot(Term(4), 1 << 20);
        let reply = within("a 1 MiB snapshot", transport.send(PEER, request)).await;
        assert_eq!(reply, Ok(snapshot_reply(Term(4), sum)));

        // Chunks smaller than the frames work as well.
        let small_chunks = TcpConfig {
            chunk_size: 1000,
            ..small_frames()
        };
        let transport = crate::support::transport(server.local_addr(), small_chunks);
        let (request, sum) = snapshot(Term(5), 300_001);
        let reply = within(
            "a snapshot in 1000-byte chunks",
            transport.send(PEER, request),
        )
        .await;
        assert_eq!(reply, Ok(snapshot_reply(Term(5), sum)));
        server.shutdown().await;
    });
}

#[test]
fn the_sender_refuses_a_message_above_its_maximum() {
    let limited = TcpConfig {
        max_message_size: 64 << 10,
        ..small_frames()
    };
    let (server, _handler) = server(small_frames());
    let transport = transport(server.local_addr(), limited);
    smol::block_on(async {
        let (request, _) = snapshot(Term(1), 100 << 10);
        match within("an oversized snapshot", transport.send(PEER, request)).await {
            Err(TransportError::Failed { reason, .. }) => {
                assert!(reason.contains("exceeds the maximum"), "{reason}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        // Nothing was sent; the connection was never even needed.
        assert_eq!(server.connection_count(), 0);
        let reply = within("a vote", transport.send(PEER, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        server.shutdown().await;
    });
}

#[test]
fn the_receiver_refuses_a_message_above_its_maximum() {
    let limited = TcpConfig {
        max_message_size: 64 << 10,
        ..small_frames()
    };
    let (server, _handler) = server(limited);
    let transport = transport(server.local_addr(), small_frames());
    smol::block_on(async {
        let (request, _) = snapshot(Term(1), 100 << 10);
        let reply = within("an oversized snapshot", transport.send(PEER, request)).await;
        assert!(
            matches!(reply, Err(TransportError::Failed { .. })),
            "{reply:?}"
        );
        // The server closed that connection; the next request opens another.
        let reply = within("a vote", transport.send(PEER, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        server.shutdown().await;
    });
}

#[test]
fn a_heartbeat_and_a_large_transfer_share_a_connection() {
    let (server, _handler) = server(config());
    let transport = transport(server.local_addr(), config());
    smol::block_on(async {
        let reply = within("a vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));

        let (request, sum) = snapshot(Term(2), 16 << 20);
        let mut transfer = pin!(transport.send(PEER, request));
        assert!(futures::poll!(transfer.as_mut()).is_pending());
        let reply = within("a heartbeat", transport.send(PEER, heartbeat(Term(3)))).await;
        assert_eq!(reply.map(|r| r.term()), Ok(Term(3)));
        let reply = within("a 16 MiB snapshot", transfer).await;
        assert_eq!(reply, Ok(snapshot_reply(Term(2), sum)));
        assert_eq!(server.connection_count(), 1);
        server.shutdown().await;
    });
}

/// Reads the next frame, which must exist.
async fn next_frame(reader: &mut BufReader<TcpStream>) -> Frame {
    read_frame(reader, TcpConfig::DEFAULT_MAX_FRAME_SIZE)
        .await
        .unwrap()
        .unwrap()
}

/// Answers a request whose whole body is `body`, as the test handler would.
async fn answer(writer: &mut TcpStream, request_id: u64, body: &[u8]) {
    let request: Request<u64> = Postcard.decode(body).unwrap();
    let reply = Postcard.encode(&reply_to(&request)).unwrap();
    write_frame(writer, FrameKind::Response, request_id, false, &reply)
        .await
        .unwrap();
}

/// Accepts the transport's connection as a hand-written peer: answers its hello and
/// the warm-up request it sends first.
async fn accept_and_warm_up(listener: &TcpListener) -> (TcpStream, BufReader<TcpStream>) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut writer = stream.clone();
    let mut reader = BufReader::new(stream);
    let hello = next_frame(&mut reader).await;
    assert_eq!(hello.header.kind, FrameKind::Hello);
    let welcome = Hello {
        node: Some(PEER),
        ..raft_hello()
    };
    let welcome = welcome.encode().unwrap();
    write_frame(&mut writer, FrameKind::Welcome, 0, false, &welcome)
        .await
        .unwrap();
    let warm_up = next_frame(&mut reader).await;
    answer(&mut writer, warm_up.header.request_id, &warm_up.body).await;
    (writer, reader)
}

/// The transport's own guarantee, seen on the wire: a heartbeat queued while a large
/// transfer is being sent goes out between its chunks, and its reply arrives while the
/// transfer is still going.
///
/// The peer here is a hand-written server that reads frames only when told to, so the
/// transfer is held up by TCP flow control at a known point: the 64 MiB transfer is far
/// larger than what the loopback's socket buffers can absorb (a few MiB), so when the
/// heartbeat is queued most of the transfer is still unsent.
#[test]
fn a_heartbeat_overtakes_a_large_transfer_on_the_wire() {
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let transport = transport(listener.local_addr().unwrap(), config());
        let (first_chunk_seen, on_first_chunk) = smol::channel::unbounded::<()>();
        let (heartbeat_queued, on_heartbeat_queued) = smol::channel::unbounded::<()>();
        let (heartbeat_answered, on_heartbeat_answered) = smol::channel::unbounded::<()>();

        let peer = smol::spawn(async move {
            let (mut writer, mut reader) = accept_and_warm_up(&listener).await;

            let first = next_frame(&mut reader).await;
            assert!(first.header.more, "the transfer was not chunked");
            let transfer_id = first.header.request_id;
            let mut transfer = first.body;
            first_chunk_seen.send(()).await.unwrap();

            on_heartbeat_queued.recv().await.unwrap();
            let mut chunks_before_heartbeat = 1;
            loop {
                let frame = next_frame(&mut reader).await;
                if frame.header.request_id == transfer_id {
                    assert!(frame.header.more, "the transfer ended before the heartbeat");
                    transfer.extend_from_slice(&frame.body);
                    chunks_before_heartbeat += 1;
                } else {
                    assert!(!frame.header.more);
                    answer(&mut writer, frame.header.request_id, &frame.body).await;
                    break;
                }
            }

            on_heartbeat_answered.recv().await.unwrap();
            loop {
                let frame = next_frame(&mut reader).await;
                assert_eq!(frame.header.request_id, transfer_id);
                transfer.extend_from_slice(&frame.body);
                if !frame.header.more {
                    break;
                }
            }
            answer(&mut writer, transfer_id, &transfer).await;
            chunks_before_heartbeat
        });

        let reply = within("the warm-up vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));

        let (request, sum) = snapshot(Term(2), 64 << 20);
        let mut transfer = pin!(transport.send(PEER, request));
        // On a connection that is already open, the first poll queues the request.
        assert!(futures::poll!(transfer.as_mut()).is_pending());
        within("the first chunk", on_first_chunk.recv())
            .await
            .unwrap();

        let mut beat = pin!(transport.send(PEER, heartbeat(Term(3))));
        assert!(futures::poll!(beat.as_mut()).is_pending());
        heartbeat_queued.send(()).await.unwrap();
        let reply = within("the heartbeat", beat).await;
        assert_eq!(reply.map(|r| r.term()), Ok(Term(3)));
        // The peer has not read the end of the transfer yet, so it cannot be answered.
        assert!(futures::poll!(transfer.as_mut()).is_pending());

        heartbeat_answered.send(()).await.unwrap();
        let reply = within("the transfer", transfer).await;
        assert_eq!(reply, Ok(snapshot_reply(Term(2), sum)));
        let chunks_before_heartbeat = within("the peer", peer).await;
        let total_chunks = (64 << 20) / TcpConfig::DEFAULT_CHUNK_SIZE as usize;
        assert!(
            chunks_before_heartbeat < total_chunks,
            "{chunks_before_heartbeat} of {total_chunks} chunks went before the heartbeat"
        );
    });
}

/// Messages small enough to be written to the socket by the task that sends them, so
/// many that they fill the socket while the peer reads nothing: the ones the socket
/// could not take are sent by the connection's writer once it drains, and every reply
/// comes back, each to its own request.
#[test]
fn small_messages_that_fill_the_socket_all_arrive() {
    const MESSAGES: usize = 400;
    const LEN: usize = 32 << 10;
    assert!(LEN < TcpConfig::DEFAULT_CHUNK_SIZE as usize);
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let transport = transport(listener.local_addr().unwrap(), config());
        let (go, on_go) = smol::channel::unbounded::<()>();

        let peer = smol::spawn(async move {
            let (mut writer, mut reader) = accept_and_warm_up(&listener).await;

            // Reads nothing more until every message was sent or queued.
            on_go.recv().await.unwrap();
            for _ in 0..MESSAGES {
                let frame = next_frame(&mut reader).await;
                assert!(!frame.header.more, "a message was chunked");
                answer(&mut writer, frame.header.request_id, &frame.body).await;
            }
        });

        let reply = within("the warm-up vote", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));

        // Lengths differ, so each reply's checksum is its own request's.
        let (requests, sums): (Vec<_>, Vec<_>) =
            (0..MESSAGES).map(|i| snapshot(Term(2), LEN - i)).unzip();
        let mut sends: futures::stream::FuturesOrdered<_> = requests
            .into_iter()
            .map(|request| transport.send(PEER, request))
            .collect();
        // The first poll starts every request: 12.5 MiB, far more than the loopback's
        // socket buffers hold while the peer does not read.
        assert!(futures::poll!(futures::StreamExt::next(&mut sends)).is_pending());
        go.send(()).await.unwrap();

        let replies: Vec<_> =
            within("the replies", futures::StreamExt::collect::<Vec<_>>(sends)).await;
        assert_eq!(replies.len(), MESSAGES);
        for (reply, sum) in replies.into_iter().zip(sums) {
            assert_eq!(reply, Ok(snapshot_reply(Term(2), sum)));
        }
        within("the peer", peer).await;
    });
}
