//! Serving one accepted connection: read requests, answer each concurrently, write the
//! replies.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use raft_traits::Codec;
use serde::Serialize;
use smol::channel::Sender;
use smol::io::BufReader;
use smol::net::TcpStream;

use crate::config::TcpConfig;
use crate::error::{ConnectionError, FrameError};
use crate::frame::{FrameKind, read_frame};
use crate::outbox::{Outgoing, write_frames};
use crate::reassembly::Reassembler;
use crate::service::Service;

/// The size of the read buffer that lets small frames arrive in one system call.
const READ_BUFFER: usize = 64 << 10;

/// Serves `stream` until the client closes it (`Ok`) or breaks the protocol, or the
/// socket fails.
///
/// Each complete request runs on a task of its own, so a slow request does not hold up
/// the others on the connection; its reply goes back through the connection's
/// interleaving writer with the request's id. A handler that is still running when the
/// connection ends completes, and its reply is dropped.
pub(super) async fn serve<S: Service, K: Codec>(
    stream: TcpStream,
    service: Arc<S>,
    config: TcpConfig,
    codec: K,
) -> Result<(), ConnectionError> {
    let (outbox, outgoing) = smol::channel::unbounded();
    // A request body that does not decode is found by the task handling it, which
    // reports it here to close the connection.
    let (fatal, fatal_errors) = smol::channel::bounded::<ConnectionError>(1);
    let writing = write_frames(stream.clone(), outgoing, config.chunk_size);
    let reading = read_requests(stream, service, &config, codec, outbox, fatal);
    let failing = async {
        match fatal_errors.recv().await {
            Ok(error) => Err(error),
            // The reader holds a sender as long as it runs; if all are gone, the reader
            // has finished and the other branch ends the connection.
            Err(_) => std::future::pending().await,
        }
    };
    smol::future::or(failing, smol::future::or(reading, writing)).await
}

async fn read_requests<S: Service, K: Codec>(
    stream: TcpStream,
    service: Arc<S>,
    config: &TcpConfig,
    codec: K,
    outbox: Sender<Outgoing>,
    fatal: Sender<ConnectionError>,
) -> Result<(), ConnectionError> {
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut reassembler = Reassembler::new(config.max_message_len());
    loop {
        let Some(frame) = read_frame(&mut reader, config.max_frame_size).await? else {
            return Ok(());
        };
        let header = frame.header;
        match header.kind {
            FrameKind::Request => {
                if let Some(message) = reassembler.push(&header, frame.body)? {
                    let answering = answer(
                        message.request_id,
                        message.body,
                        Arc::clone(&service),
                        codec.clone(),
                        config.max_message_len(),
                        outbox.clone(),
                        fatal.clone(),
                    );
                    smol::spawn(answering).detach();
                }
            }
            FrameKind::Cancel => {
                // The client gave up on a request it had only partly sent.
                reassembler.discard(header.request_id);
                let _ = outbox.try_send(Outgoing::Abandon(header.request_id));
            }
            FrameKind::Response | FrameKind::Error => {
                return Err(FrameError::UnexpectedKind { kind: header.kind }.into());
            }
        }
    }
}

/// Decodes one request, runs the service and queues the reply.
async fn answer<S: Service, K: Codec>(
    request_id: u64,
    body: Vec<u8>,
    service: Arc<S>,
    codec: K,
    max_message_len: usize,
    outbox: Sender<Outgoing>,
    fatal: Sender<ConnectionError>,
) {
    let request: S::Request = match codec.decode(&body) {
        Ok(request) => request,
        Err(source) => {
            let error = FrameError::UndecodableBody {
                kind: FrameKind::Request,
                source,
            };
            let _ = fatal.try_send(error.into());
            return;
        }
    };
    drop(body);
    let kind = S::describe(&request);
    // A panicking service is a bug in the application, but the client should learn of
    // it now rather than at its timeout.
    let handled = AssertUnwindSafe(service.call(request)).catch_unwind().await;
    let (kind, body) = match handled {
        Ok(Ok(response)) => encode_response(&codec, &response, max_message_len),
        Ok(Err(e)) => {
            tracing::debug!(request_id, request = kind, error = %e, "handler refused a request");
            (FrameKind::Error, encode_reason(&codec, &e))
        }
        Err(_) => {
            tracing::error!(request_id, request = kind, "the handler panicked");
            (
                FrameKind::Error,
                encode_reason(&codec, "the handler panicked"),
            )
        }
    };
    // The connection may have ended meanwhile; then the reply has nowhere to go.
    let _ = outbox.try_send(Outgoing::Message {
        kind,
        request_id,
        body,
    });
}

/// The frame kind and body that carry `response`, or an error if it cannot be sent.
fn encode_response<K: Codec, R: Serialize>(
    codec: &K,
    response: &R,
    max_message_len: usize,
) -> (FrameKind, Vec<u8>) {
    match codec.encode(response) {
        Ok(body) if body.len() <= max_message_len => (FrameKind::Response, body),
        Ok(body) => {
            let error = FrameError::MessageTooLarge {
                len: u64::try_from(body.len()).unwrap_or(u64::MAX),
                max: u64::try_from(max_message_len).unwrap_or(u64::MAX),
            };
            tracing::warn!(%error, "cannot send a response");
            (
                FrameKind::Error,
                encode_reason(codec, &format!("the response is too large: {error}")),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a response");
            (
                FrameKind::Error,
                encode_reason(codec, &format!("cannot encode the response: {e}")),
            )
        }
    }
}

/// The body of an error frame. Encoding a string does not fail with any sane codec; if
/// it does, the client receives an undecodable error and fails the request all the same.
fn encode_reason<K: Codec>(codec: &K, reason: &str) -> Vec<u8> {
    codec.encode(reason).unwrap_or_default()
}
