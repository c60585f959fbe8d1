//! The sending side of a connection: one writer that cuts messages into chunks and
//! interleaves the chunks of different messages, and a shortcut past it for small
//! messages.
//!
//! Every message waiting to be sent sits in a round-robin queue. The writer sends one
//! chunk of the message at the front, takes in whatever was submitted meanwhile, and
//! puts the message back at the end of the queue if chunks remain. A message submitted
//! while a large one is being sent therefore waits for at most one chunk of each message
//! ahead of it, never for the whole of a large transfer: a heartbeat overtakes a
//! snapshot.
//!
//! A message that fits in one frame need not wait for the writer's task at all: the task
//! that has it writes the frame to the socket itself ([`Wire::send_now`]), if the socket
//! takes it at once and nobody else is writing. That spares a hand-off between tasks on
//! every request a leader sends and on every reply a server gives: the writer's task was
//! woken for each one, often on the other thread, only to make one system call.
//!
//! A server's replies, and a client's requests with
//! [`TcpConfig::gather_requests`](crate::TcpConfig::gather_requests), go one step further
//! ([`send_soon`]): written at once, but sent when the turn of the task that has them
//! ends, so that what one task sends a connection in a turn (a leader's apply answering a
//! batch of clients, a load generator's clients answered by one read) leaves in one
//! system call. Measured with 3 durable `raft-kv serve` nodes, 64 clients on 16
//! connections (`scripts/kv-cpu.sh`, interleaved pairs):
//! * the replies: the leader's `sendto` calls fell from 3.3 to 1.0 per `recvfrom`
//!   (`strace -c`), its CPU per put from 19-23 to 16 µs, and the puts per second rose by
//!   7-25%;
//! * then the requests: `raft-kv bench`'s CPU per put fell from 9.5-11.9 to 6.4-7.7 µs,
//!   and the puts per second rose by 10-35% (at 16 clients, one per connection: -12% to
//!   +6%, noise).
//!
//! The send waits for the end of the turn, no longer: waiting until the pool had no task
//! queued (or for up to 8 tasks) gathered more, but it delayed a leader's AppendEntries,
//! and `raft-bench tcp --clients 1` lost 20% of its writes per second.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use smol::channel::{Receiver, Sender};
use smol::io::AsyncWrite;

use crate::error::{ConnectionError, FrameError};
use crate::frame::{FrameHeader, FrameKind};

/// Bytes written but not yet sent past which the writer sends before it writes more,
/// and past which [`Wire::send_now`] leaves a message to the writer's queue: the most a
/// connection buffers beside its queue.
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
    /// Send what [`Wire::send_now`] left behind, the socket being full then.
    Flush,
}

/// A message of which some chunks remain to be sent.
struct InProgress {
    kind: FrameKind,
    request_id: u64,
    body: Vec<u8>,
    /// How many bytes of `body` have been sent.
    sent: usize,
}

/// A connection's writing side, shared by its writer's task and the tasks that send a
/// message themselves: whole frames are appended under its lock, so frames from both
/// never mix on the wire.
pub(crate) struct Wire<W> {
    state: Mutex<WireState<W>>,
    chunk_size: usize,
}

impl<W> std::fmt::Debug for Wire<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

struct WireState<W> {
    writer: W,
    /// Frames written here and not yet sent; `pending[sent..]` remains.
    pending: Vec<u8>,
    sent: usize,
    /// The last send found the socket full: the writer's task waits for it to drain, and
    /// only that task sends until then (a send from elsewhere would put its own waker in
    /// the place of the task's).
    blocked: bool,
    /// The socket failed: the connection is ending.
    failed: Option<io::ErrorKind>,
    /// A deferred send of what is pending is due (see [`send_soon`]).
    flush_due: bool,
}

/// What became of a message offered to [`Wire::send_now`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendNow {
    /// On the socket.
    Sent,
    /// Written, but the socket is full or failed: the writer's task must be told
    /// ([`Outgoing::Flush`]) to send it.
    Buffered,
    /// Not taken (too large, or someone else is writing): queue it for the writer.
    Declined,
}

impl<W: AsyncWrite + Unpin> Wire<W> {
    /// The writing side over `writer`, whose frames carry at most `chunk_size` bytes of body.
    pub(crate) fn new(writer: W, chunk_size: u32) -> Self {
        Wire {
            state: Mutex::new(WireState {
                writer,
                pending: Vec::new(),
                sent: 0,
                blocked: false,
                failed: None,
                flush_due: false,
            }),
            chunk_size: usize::try_from(chunk_size).unwrap_or(usize::MAX).max(1),
        }
    }

    /// Writes `body` as one frame and sends it at once, from the caller's task, if the
    /// frame fits in one chunk and nobody else is writing or waiting for the socket;
    /// else declines, and the message goes to the writer's queue.
    pub(crate) fn send_now(&self, kind: FrameKind, request_id: u64, body: &[u8]) -> SendNow {
        if body.len() > self.chunk_size {
            return SendNow::Declined;
        }
        // Never wait for the lock: whoever holds it is writing, and the queue serves as well.
        let Ok(mut state) = self.state.try_lock() else {
            return SendNow::Declined;
        };
        if state.blocked || state.failed.is_some() || state.unsent() >= WRITE_BUFFER {
            return SendNow::Declined;
        }
        if state.append(kind, request_id, false, body).is_err() {
            return SendNow::Declined;
        }
        // Nobody waits on this waker: if the socket is full, the writer's task is told to
        // send the rest, and its own waker then takes this one's place.
        match state.poll_send(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => SendNow::Sent,
            Poll::Ready(Err(_)) | Poll::Pending => SendNow::Buffered,
        }
    }

    fn lock(&self) -> MutexGuard<'_, WireState<W>> {
        // Every change to the state is whole before anything that could panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a frame; returns how many bytes now wait to be sent.
    fn append(
        &self,
        kind: FrameKind,
        request_id: u64,
        more: bool,
        chunk: &[u8],
    ) -> Result<usize, FrameError> {
        let mut state = self.lock();
        state.append(kind, request_id, more, chunk)?;
        Ok(state.unsent())
    }

    /// Sends everything written so far.
    async fn send(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.lock().poll_send(cx)).await
    }
}

impl<W: AsyncWrite + Unpin> WireState<W> {
    fn unsent(&self) -> usize {
        self.pending.len().saturating_sub(self.sent)
    }

    fn append(
        &mut self,
        kind: FrameKind,
        request_id: u64,
        more: bool,
        chunk: &[u8],
    ) -> Result<(), FrameError> {
        let header = FrameHeader::carrying(kind, request_id, more, chunk)?;
        self.pending.extend_from_slice(&header.encode());
        self.pending.extend_from_slice(chunk);
        Ok(())
    }

    /// Writes out what is pending, then flushes the writer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.failed {
            return Poll::Ready(Err(io::Error::new(kind, "an earlier write failed")));
        }
        let result = self.poll_write_out(cx);
        self.blocked = result.is_pending();
        if let Poll::Ready(Err(e)) = &result {
            self.failed = Some(e.kind());
        }
        result
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(rest) = self
            .pending
            .get(self.sent..)
            .filter(|rest| !rest.is_empty())
        {
            match Pin::new(&mut self.writer).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => self.sent = self.sent.saturating_add(written),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.sent = 0;
        Pin::new(&mut self.writer).poll_flush(cx)
    }
}

/// Sends a message through `wire` at once if it can ([`Wire::send_now`]); else queues it
/// on `outbox` for the writer, or tells the writer of what a full socket left behind.
/// Gives back the command the writer could not take: it is gone, the connection ending.
pub(crate) fn send<W: AsyncWrite + Unpin>(
    wire: &Wire<W>,
    outbox: &Sender<Outgoing>,
    kind: FrameKind,
    request_id: u64,
    body: Vec<u8>,
) -> Result<(), Outgoing> {
    let command = match wire.send_now(kind, request_id, &body) {
        SendNow::Sent => return Ok(()),
        SendNow::Buffered => Outgoing::Flush,
        SendNow::Declined => Outgoing::Message {
            kind,
            request_id,
            body,
        },
    };
    outbox.try_send(command).map_err(|e| e.into_inner())
}

/// As [`send`], but a message that fits in one frame is only written, and sent at the end
/// of the running task's turn (see [`workers::defer`](crate::workers::defer)), together
/// with whatever else is written to the connection meanwhile. Off a pool thread, it is
/// [`send`].
pub(crate) fn send_soon<W: AsyncWrite + Unpin + 'static>(
    wire: &Arc<Wire<W>>,
    outbox: &Sender<Outgoing>,
    kind: FrameKind,
    request_id: u64,
    body: Vec<u8>,
) -> Result<(), Outgoing> {
    // As in `Wire::send_now`: never wait for the lock, and leave to the writer what is
    // large, what a full socket holds up, and what the wire cannot frame.
    if body.len() <= wire.chunk_size
        && let Ok(mut state) = wire.state.try_lock()
        && !state.blocked
        && state.failed.is_none()
        && state.unsent() < WRITE_BUFFER
        && state.append(kind, request_id, false, &body).is_ok()
    {
        if state.flush_due {
            // A send already due takes this message too.
            return Ok(());
        }
        let flush = {
            let (wire, outbox) = (Arc::clone(wire), outbox.clone());
            move || {
                let mut state = wire.lock();
                state.flush_due = false;
                // A writer blocked on a full socket sends it all when it drains.
                if state.blocked || state.unsent() == 0 {
                    return;
                }
                let sent = state.poll_send(&mut Context::from_waker(Waker::noop()));
                if matches!(sent, Poll::Ready(Ok(()))) {
                    return;
                }
                drop(state);
                let _ = outbox.try_send(Outgoing::Flush);
            }
        };
        state.flush_due = true;
        drop(state);
        if let Err(flush) = crate::workers::defer(Box::new(flush)) {
            flush();
        }
        return Ok(());
    }
    send(wire, outbox, kind, request_id, body)
}

/// Sends what arrives on `outgoing` through `wire` until it is closed and everything has
/// been sent.
///
/// Frames are sent together: whenever a message is complete and nothing else is waiting,
/// and whenever [`WRITE_BUFFER`] bytes have gathered, so a lone small message leaves at
/// once.
pub(crate) async fn write_frames<W>(
    wire: &Wire<W>,
    outgoing: Receiver<Outgoing>,
) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    let chunk_size = wire.chunk_size;
    let mut queue: VecDeque<InProgress> = VecDeque::new();
    // Ids whose partly sent messages were abandoned: a cancel frame is owed for each.
    let mut cancels: Vec<u64> = Vec::new();

    loop {
        if queue.is_empty() && cancels.is_empty() {
            wire.send().await?;
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
            wire.append(FrameKind::Cancel, request_id, false, &[])?;
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
        let unsent = wire.append(message.kind, message.request_id, more, chunk)?;
        message.sent = end;
        if unsent >= WRITE_BUFFER {
            wire.send().await?;
        }

        // Newcomers go ahead of the message just served: that is what lets a small
        // message overtake a large one after a single chunk.
        let mut abandoned = Vec::new();
        take_waiting(&outgoing, &mut queue, &mut abandoned);
        if more {
            queue.push_back(message);
        } else if outgoing.is_empty() && !queue.is_empty() {
            // A complete message behind which a large one still waits: send it now
            // rather than when the buffer fills.
            wire.send().await?;
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
        // The writer sends whatever is written before it waits for more.
        Outgoing::Flush => {}
    }
}

/// Removes abandoned messages from the queue, and owes a cancel frame for each one that
/// was partly sent. An abandoned message no longer in the queue was sent completely (or
/// never queued, having gone out through [`Wire::send_now`]): the peer has all of it,
/// and there is nothing to cancel.
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
    use crate::test_support::Valve;

    fn message(request_id: u64, len: usize) -> Outgoing {
        Outgoing::Message {
            kind: FrameKind::Request,
            request_id,
            body: body(len),
        }
    }

    /// The body of a test message of `len` bytes.
    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// Runs the writer over everything in `commands`, submitted before it starts, and
    /// returns the frames it wrote.
    fn frames_for(commands: Vec<Outgoing>, chunk_size: u32) -> Vec<Frame> {
        let (tx, rx) = smol::channel::unbounded();
        for command in commands {
            tx.try_send(command).unwrap();
        }
        drop(tx);
        let mut wire = Vec::new();
        smol::block_on(write_frames(&Wire::new(&mut wire, chunk_size), rx)).unwrap();
        frames_of(&wire)
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
            write_frames(&Wire::new(&mut sink, u32::try_from(chunk).unwrap()), rx)
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
            write_frames(&Wire::new(&mut sink, u32::try_from(chunk).unwrap()), rx)
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
            write_frames(&Wire::new(&mut wire, 10), rx).await.unwrap();
            let mut reader = &wire[..];
            let frame = read_frame(&mut reader, 100).await.unwrap().unwrap();
            assert_eq!(frame.header.request_id, 2);
            assert!(read_frame(&mut reader, 100).await.unwrap().is_none());
        });
    }

    fn frames_of(wire: &[u8]) -> Vec<Frame> {
        smol::block_on(async {
            let mut reader = wire;
            let mut frames = Vec::new();
            while let Some(frame) = read_frame(&mut reader, u32::MAX).await.unwrap() {
                frames.push(frame);
            }
            frames
        })
    }

    #[test]
    fn a_small_message_is_sent_by_the_task_that_has_it() {
        let valve = Valve::new(true, usize::MAX);
        let wire = Wire::new(valve.clone(), 10);
        // No writer runs: the frame is on the socket when `send_now` returns.
        assert_eq!(
            wire.send_now(FrameKind::Response, 7, b"hello"),
            SendNow::Sent
        );
        let frames = frames_of(&valve.sent());
        assert_eq!(ids(&frames), vec![(7, false)]);
        assert_eq!(frames[0].header.kind, FrameKind::Response);
        assert_eq!(frames[0].body, b"hello");
    }

    #[test]
    fn a_message_larger_than_a_chunk_is_left_to_the_writer() {
        let valve = Valve::new(true, usize::MAX);
        let wire = Wire::new(valve.clone(), 10);
        assert_eq!(
            wire.send_now(FrameKind::Request, 1, &[0; 11]),
            SendNow::Declined
        );
        assert!(frames_of(&valve.sent()).is_empty());
    }

    /// The socket is full when a message is sent at once: the message waits in the
    /// wire, later messages go to the queue until the writer has sent it, and both
    /// arrive whole once the socket drains.
    #[test]
    fn what_a_full_socket_did_not_take_the_writer_sends() {
        let valve = Valve::new(false, usize::MAX);
        let wire = Wire::new(valve.clone(), 10);
        assert_eq!(
            wire.send_now(FrameKind::Request, 1, b"first"),
            SendNow::Buffered
        );
        // Only the writer may send while the socket is full.
        assert_eq!(
            wire.send_now(FrameKind::Request, 2, b"second"),
            SendNow::Declined
        );
        let (tx, rx) = smol::channel::unbounded();
        tx.try_send(Outgoing::Flush).unwrap();
        tx.try_send(message(2, 6)).unwrap();
        smol::block_on(async {
            let writing = write_frames(&wire, rx);
            let draining = async {
                // Lets the writer find the socket full before it drains.
                smol::future::yield_now().await;
                valve.open();
                drop(tx);
                Ok(())
            };
            futures::future::try_join(writing, draining).await.unwrap();
        });
        let frames = frames_of(&valve.sent());
        assert_eq!(ids(&frames), vec![(1, false), (2, false)]);
        assert_eq!(frames[0].body, b"first");
    }

    /// Sends `count` small messages through a new wire over `valve` with [`send_soon`],
    /// from one task on a new pool, which then waits for ever: the messages must leave
    /// after its turn all the same. Returns the pool, the wire and the writer's queue
    /// (closed once the task and its deferred send are done with it).
    fn send_soon_from_a_pool_task(
        valve: &Valve,
        count: u64,
    ) -> (
        Arc<crate::workers::Pool>,
        Arc<Wire<Valve>>,
        Receiver<Outgoing>,
    ) {
        let pool = crate::workers::Pool::start(1).upgrade().expect("running");
        let wire = Arc::new(Wire::new(valve.clone(), 10));
        let (tx, rx) = smol::channel::unbounded();
        let on_pool = Arc::clone(&wire);
        pool.spawn(async move {
            for request_id in 0..count {
                send_soon(
                    &on_pool,
                    &tx,
                    FrameKind::Response,
                    request_id,
                    b"answer".to_vec(),
                )
                .expect("the writer's queue is open");
            }
            drop(tx);
            std::future::pending::<()>().await;
        });
        (pool, wire, rx)
    }

    /// The answers a task writes in one turn leave together, in one send, after its turn.
    #[test]
    fn answers_sent_soon_in_one_turn_leave_in_one_send() {
        let valve = Valve::new(true, usize::MAX);
        let (pool, _wire, _writer) = send_soon_from_a_pool_task(&valve, 5);
        let left = crate::test_support::eventually(|| frames_of(&valve.sent()).len() == 5);
        pool.stop();
        assert!(left, "the answers never left");
        assert_eq!(
            ids(&frames_of(&valve.sent())),
            (0..5).map(|id| (id, false)).collect::<Vec<_>>()
        );
        assert_eq!(valve.flushes(), 1, "the answers left in more than one send");
    }

    /// A send due after the turn that finds the socket full hands what it holds to the
    /// writer, which sends it once the socket drains.
    #[test]
    fn what_a_full_socket_did_not_take_after_a_turn_the_writer_sends() {
        let valve = Valve::new(false, usize::MAX);
        let (pool, wire, writer) = send_soon_from_a_pool_task(&valve, 3);
        let done = crate::test_support::eventually(|| writer.is_closed());
        pool.stop();
        assert!(
            done,
            "the task or its deferred send kept the writer's queue"
        );
        assert!(valve.sent().is_empty());
        // Told to send what the wire holds: without that, a writer that waits for more
        // commands would never send it.
        let told = writer.try_recv().expect("a command for the writer");
        assert!(matches!(told, Outgoing::Flush), "{told:?}");
        assert!(writer.try_recv().is_err(), "more than one command");
        valve.open();
        let (tx, rx) = smol::channel::unbounded();
        tx.try_send(told).unwrap();
        drop(tx);
        smol::block_on(write_frames(&wire, rx)).unwrap();
        assert_eq!(
            ids(&frames_of(&valve.sent())),
            vec![(0, false), (1, false), (2, false)]
        );
    }

    /// Off a pool thread, there is no turn to wait for: the message leaves at once.
    #[test]
    fn a_message_sent_soon_off_a_pool_leaves_at_once() {
        let valve = Valve::new(true, usize::MAX);
        let wire = Arc::new(Wire::new(valve.clone(), 10));
        let (tx, _rx) = smol::channel::unbounded();
        send_soon(&wire, &tx, FrameKind::Response, 3, b"now".to_vec()).unwrap();
        assert_eq!(ids(&frames_of(&valve.sent())), vec![(3, false)]);
        assert_eq!(valve.flushes(), 1);
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

        /// Messages sent at once by their own tasks and messages the writer chunks share
        /// the socket, written in pieces of any size: every message arrives whole and
        /// intact.
        #[test]
        fn messages_sent_at_once_and_queued_all_arrive_whole(
            messages in proptest::collection::vec((0usize..40, any::<bool>()), 1..12),
            chunk_size in 1u32..16,
            max_write in 1usize..64,
        ) {
            let valve = Valve::new(true, max_write);
            let wire = Wire::new(valve.clone(), chunk_size);
            let (tx, rx) = smol::channel::unbounded();
            smol::block_on(async {
                let writing = write_frames(&wire, rx);
                let sending = async {
                    for (id, &(len, at_once)) in messages.iter().enumerate() {
                        let (kind, request_id, body) = (FrameKind::Request, id as u64, body(len));
                        let now = if at_once {
                            wire.send_now(kind, request_id, &body)
                        } else {
                            SendNow::Declined
                        };
                        match now {
                            SendNow::Sent => {}
                            SendNow::Buffered => tx.try_send(Outgoing::Flush).unwrap(),
                            SendNow::Declined => tx
                                .try_send(Outgoing::Message { kind, request_id, body })
                                .unwrap(),
                        }
                        // The writer runs between two messages, or not, as it happens.
                        if id % 2 == 0 {
                            smol::future::yield_now().await;
                        }
                    }
                    drop(tx);
                    Ok(())
                };
                futures::future::try_join(writing, sending).await.unwrap();
            });
            let mut reassembler = Reassembler::new(usize::MAX, usize::MAX, None);
            let mut done = vec![None; messages.len()];
            for frame in frames_of(&valve.sent()) {
                prop_assert!(frame.body.len() <= chunk_size as usize);
                if let Some(m) = reassembler.push(&frame.header, frame.body).unwrap() {
                    done[m.request_id as usize] = Some(m.body);
                }
            }
            for (received, &(len, _)) in done.into_iter().zip(&messages) {
                prop_assert_eq!(received, Some(body(len)));
            }
        }
    }
}
