//! The sending side of a connection: one writer that cuts messages into chunks and
//! interleaves the chunks of different messages.
//!
//! Every message waiting to be sent sits in a round-robin queue. The writer sends one
//! chunk of the message at the front, takes in whatever was submitted meanwhile, and
//! puts the message back at the end of the queue if chunks remain. A message submitted
//! while a large one is being sent therefore waits for at most one chunk of each message
//! ahead of it, never for the whole of a large transfer: a heartbeat overtakes a
//! snapshot.

use std::collections::VecDeque;

use smol::channel::Receiver;
use smol::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use crate::error::ConnectionError;
use crate::frame::{FrameKind, write_frame};

/// The size of the write buffer that batches small frames into one system call.
const WRITE_BUFFER: usize = 64 << 10;

/// What the rest of a connection asks its writer to do.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Send a whole message, chunked if needed.
    Message {
        kind: FrameKind,
        request_id: u64,
        body: Vec<u8>,
    },
    /// Stop sending message `request_id`. If part of it was already sent, tell the peer
    /// to drop that part with a cancel frame.
    Abandon(u64),
}

/// A message of which some chunks remain to be sent.
struct InProgress {
    kind: FrameKind,
    request_id: u64,
    body: Vec<u8>,
    /// How many bytes of `body` have been sent.
    sent: usize,
}

/// Sends what arrives on `outgoing` until it is closed and everything has been sent.
///
/// Frames carry at most `chunk_size` bytes of body. Writes are buffered; the buffer is
/// flushed whenever a message is complete and nothing else is waiting, so a lone small
/// message leaves at once.
pub(crate) async fn write_frames<W>(
    writer: W,
    outgoing: Receiver<Outgoing>,
    chunk_size: u32,
) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    let chunk_size = usize::try_from(chunk_size).unwrap_or(usize::MAX).max(1);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, writer);
    let mut queue: VecDeque<InProgress> = VecDeque::new();
    // Ids whose partly sent messages were abandoned: a cancel frame is owed for each.
    let mut cancels: Vec<u64> = Vec::new();

    loop {
        if queue.is_empty() && cancels.is_empty() {
            writer.flush().await?;
            match outgoing.recv().await {
                Ok(command) => {
                    let mut abandoned = Vec::new();
                    accept(command, &mut queue, &mut abandoned);
                    take_waiting(&outgoing, &mut queue, &mut abandoned);
                    settle(&abandoned, &mut queue, &mut cancels);
                }
                // Every sender is gone and nothing is left to send.
                Err(_) => return Ok(()),
            }
            continue;
        }

        for request_id in cancels.drain(..) {
            write_frame(&mut writer, FrameKind::Cancel, request_id, false, &[]).await?;
        }
        let Some(mut message) = queue.pop_front() else {
            continue;
        };
        let end = message
            .sent
            .saturating_add(chunk_size)
            .min(message.body.len());
        let more = end < message.body.len();
        let chunk = message.body.get(message.sent..end).unwrap_or_default();
        write_frame(&mut writer, message.kind, message.request_id, more, chunk).await?;
        message.sent = end;

        // Newcomers go ahead of the message just served: that is what lets a small
        // message overtake a large one after a single chunk.
        let mut abandoned = Vec::new();
        take_waiting(&outgoing, &mut queue, &mut abandoned);
        if more {
            queue.push_back(message);
        } else if outgoing.is_empty() && !queue.is_empty() {
            // A complete message behind which a large one still waits: send it now
            // rather than when the buffer fills.
            writer.flush().await?;
        }
        settle(&abandoned, &mut queue, &mut cancels);
    }
}

/// Takes in every command already waiting, without waiting for more.
fn take_waiting(
    outgoing: &Receiver<Outgoing>,
    queue: &mut VecDeque<InProgress>,
    abandoned: &mut Vec<u64>,
) {
    while let Ok(command) = outgoing.try_recv() {
        accept(command, queue, abandoned);
    }
}

fn accept(command: Outgoing, queue: &mut VecDeque<InProgress>, abandoned: &mut Vec<u64>) {
    match command {
        Outgoing::Message {
            kind,
            request_id,
            body,
        } => queue.push_back(InProgress {
            kind,
            request_id,
            body,
            sent: 0,
        }),
        Outgoing::Abandon(request_id) => abandoned.push(request_id),
    }
}

/// Removes abandoned messages from the queue, and owes a cancel frame for each one that
/// was partly sent. An abandoned message no longer in the queue was sent completely:
/// the peer has all of it, and there is nothing to cancel.
fn settle(abandoned: &[u64], queue: &mut VecDeque<InProgress>, cancels: &mut Vec<u64>) {
    for &request_id in abandoned {
        if let Some(position) = queue.iter().position(|m| m.request_id == request_id)
            && let Some(message) = queue.remove(position)
            && message.sent > 0
        {
            cancels.push(request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::{Frame, read_frame};
    use crate::reassembly::Reassembler;

    fn message(request_id: u64, len: usize) -> Outgoing {
        Outgoing::Message {
            kind: FrameKind::Request,
            request_id,
            body: (0..len).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// Runs the writer over everything in `commands`, submitted before it starts, and
    /// returns the frames it wrote.
    fn frames_for(commands: Vec<Outgoing>, chunk_size: u32) -> Vec<Frame> {
        smol::block_on(async {
            let (tx, rx) = smol::channel::unbounded();
            for command in commands {
                tx.try_send(command).unwrap();
            }
            drop(tx);
            let mut wire = Vec::new();
            write_frames(&mut wire, rx, chunk_size).await.unwrap();
            let mut reader = &wire[..];
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut reader, u32::MAX).await.unwrap() {
                frames.push(frame);
            }
            frames
        })
    }

    fn ids(frames: &[Frame]) -> Vec<(u64, bool)> {
        frames
            .iter()
            .map(|f| (f.header.request_id, f.header.more))
            .collect()
    }

    #[test]
    fn large_messages_are_chunked_and_interleaved() {
        let frames = frames_for(vec![message(1, 25), message(2, 5), message(3, 12)], 10);
        assert_eq!(
            ids(&frames),
            vec![
                (1, true),
                (2, false),
                (3, true),
                (1, true),
                (3, false),
                (1, false)
            ]
        );
        assert!(frames.iter().all(|f| f.body.len() <= 10));
    }

    #[test]
    fn an_empty_message_is_one_empty_frame() {
        let frames = frames_for(vec![message(4, 0)], 10);
        assert_eq!(ids(&frames), vec![(4, false)]);
        assert!(frames[0].body.is_empty());
    }

    /// A sink that submits one more message to the writer on the first write it sees,
    /// as if a heartbeat were sent while the first chunk of a transfer is on its way.
    struct InjectOnFirstWrite {
        wire: Vec<u8>,
        inject: Option<(smol::channel::Sender<Outgoing>, Outgoing)>,
    }

    impl AsyncWrite for InjectOnFirstWrite {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if let Some((tx, command)) = self.inject.take() {
                tx.try_send(command).unwrap();
            }
            self.wire.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_message_submitted_during_a_transfer_overtakes_it() {
        smol::block_on(async {
            let chunk = 64 << 10;
            let (tx, rx) = smol::channel::unbounded();
            tx.try_send(message(1, 16 * chunk)).unwrap();
            let mut sink = InjectOnFirstWrite {
                wire: Vec::new(),
                inject: Some((tx, message(2, 100))),
            };
            write_frames(&mut sink, rx, u32::try_from(chunk).unwrap())
                .await
                .unwrap();
            let mut reader = &sink.wire[..];
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut reader, u32::MAX).await.unwrap() {
                frames.push(frame);
            }
            let order = ids(&frames);
            assert_eq!(order.len(), 17);
            // The heartbeat went out right after the chunk being written when it came.
            assert_eq!(order[..3], [(1, true), (2, false), (1, true)]);
        });
    }

    #[test]
    fn abandoning_a_partly_sent_message_sends_a_cancel() {
        smol::block_on(async {
            let chunk = 64 << 10;
            let (tx, rx) = smol::channel::unbounded();
            tx.try_send(message(1, 4 * chunk)).unwrap();
            tx.try_send(message(2, 2 * chunk)).unwrap();
            // Message 1 is abandoned while its first chunk is being written.
            let mut sink = InjectOnFirstWrite {
                wire: Vec::new(),
                inject: Some((tx, Outgoing::Abandon(1))),
            };
            write_frames(&mut sink, rx, u32::try_from(chunk).unwrap())
                .await
                .unwrap();
            let mut reader = &sink.wire[..];
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut reader, u32::MAX).await.unwrap() {
                frames.push((
                    frame.header.request_id,
                    frame.header.kind,
                    frame.header.more,
                ));
            }
            assert_eq!(
                frames,
                [
                    (1, FrameKind::Request, true),
                    (1, FrameKind::Cancel, false),
                    (2, FrameKind::Request, true),
                    (2, FrameKind::Request, false),
                ]
            );
        });
    }

    #[test]
    fn abandoning_an_unsent_message_sends_nothing() {
        smol::block_on(async {
            let (tx, rx) = smol::channel::unbounded();
            tx.try_send(message(1, 5)).unwrap();
            tx.try_send(Outgoing::Abandon(1)).unwrap();
            tx.try_send(message(2, 5)).unwrap();
            drop(tx);
            let mut wire = Vec::new();
            write_frames(&mut wire, rx, 10).await.unwrap();
            let mut reader = &wire[..];
            let frame = read_frame(&mut reader, 100).await.unwrap().unwrap();
            assert_eq!(frame.header.request_id, 2);
            assert!(read_frame(&mut reader, 100).await.unwrap().is_none());
        });
    }

    proptest! {
        #[test]
        fn every_message_arrives_whole(
            lens in proptest::collection::vec(0usize..200, 1..8),
            chunk_size in 1u32..64,
        ) {
            let commands = lens.iter().enumerate().map(|(id, &len)| message(id as u64, len)).collect();
            let frames = frames_for(commands, chunk_size);
            let mut reassembler = Reassembler::new(usize::MAX, usize::MAX, None);
            let mut done = vec![None; lens.len()];
            for frame in frames {
                prop_assert!(frame.body.len() <= chunk_size as usize);
                if let Some(m) = reassembler.push(&frame.header, frame.body).unwrap() {
                    done[m.request_id as usize] = Some(m.body.len());
                }
            }
            let done: Vec<usize> = done.into_iter().map(Option::unwrap).collect();
            prop_assert_eq!(done, lens);
        }
    }
}
