//! Putting chunked messages back together on the receiving side of a connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{ConnectionError, FrameError, LimitError};
use crate::frame::{FrameHeader, FrameKind};

/// How many messages one connection may have partially received at once. Raft keeps
/// only a handful of requests in flight per peer; the bound keeps a hostile peer from
/// growing the table with empty chunks.
pub(crate) const MAX_PARTIAL_MESSAGES: usize = 1024;

/// The bytes that the unfinished messages of all of a server's connections hold, and
/// the most they may hold.
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// The bytes held right now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Takes `len` more bytes, if that stays within the maximum.
    fn reserve(&self, len: usize) -> Result<(), LimitError> {
        let mut wanted = 0;
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                wanted = held.saturating_add(len);
                (wanted <= self.max).then_some(wanted)
            })
            .map(|_| ())
            .map_err(|_| LimitError::ServerBuffer {
                len: to_u64(wanted),
                max: to_u64(self.max),
            })
    }

    /// Gives `len` bytes back.
    fn release(&self, len: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                Some(held.saturating_sub(len))
            });
    }
}

/// The messages of one connection whose last chunk has not arrived yet.
#[derive(Debug)]
pub(crate) struct Reassembler {
    partial: HashMap<u64, Partial>,
    /// The bytes held in `partial`, all messages together.
    buffered: usize,
    max_message_len: usize,
    /// The most bytes `partial` may hold.
    max_buffered: usize,
    /// The budget shared with the server's other connections, if any; `buffered` bytes
    /// of it are this reassembler's.
    shared: Option<Arc<Budget>>,
}

#[derive(Debug)]
struct Partial {
    kind: FrameKind,
    body: Vec<u8>,
}

/// A message whose last chunk has arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) kind: FrameKind,
    pub(crate) request_id: u64,
    pub(crate) body: Vec<u8>,
}

impl Reassembler {
    /// A reassembler that refuses messages longer than `max_message_len`, and holds at
    /// most `max_buffered` bytes of partial messages in total, taken from `shared` if
    /// given.
    pub(crate) fn new(
        max_message_len: usize,
        max_buffered: usize,
        shared: Option<Arc<Budget>>,
    ) -> Self {
        Reassembler {
            partial: HashMap::new(),
            buffered: 0,
            max_message_len,
            max_buffered,
            shared,
        }
    }

    /// Adds one frame of a request, response or error message; returns the message once
    /// its last chunk is in.
    pub(crate) fn push(
        &mut self,
        header: &FrameHeader,
        body: Vec<u8>,
    ) -> Result<Option<Message>, ConnectionError> {
        let request_id = header.request_id;
        let max = self.max_message_len;
        let too_large = |len: usize| FrameError::MessageTooLarge {
            len: to_u64(len),
            max: to_u64(max),
        };
        let Some(partial) = self.partial.get_mut(&request_id) else {
            // The first chunk of a message.
            if body.len() > max {
                return Err(too_large(body.len()).into());
            }
            if !header.more {
                return Ok(Some(Message {
                    kind: header.kind,
                    request_id,
                    body,
                }));
            }
            if self.partial.len() >= MAX_PARTIAL_MESSAGES {
                return Err(FrameError::TooManyPartialMessages {
                    max: MAX_PARTIAL_MESSAGES,
                }
                .into());
            }
            self.hold(body.len())?;
            self.partial.insert(
                request_id,
                Partial {
                    kind: header.kind,
                    body,
                },
            );
            return Ok(None);
        };

        if partial.kind != header.kind {
            return Err(FrameError::KindChanged {
                request_id,
                first: partial.kind,
                then: header.kind,
            }
            .into());
        }
        let len = partial.body.len().saturating_add(body.len());
        if len > max {
            return Err(too_large(len).into());
        }
        if header.more {
            self.hold(body.len())?;
            if let Some(partial) = self.partial.get_mut(&request_id) {
                partial.body.extend_from_slice(&body);
            }
            return Ok(None);
        }
        let Some(mut partial) = self.partial.remove(&request_id) else {
            return Ok(None);
        };
        self.release(partial.body.len());
        partial.body.extend_from_slice(&body);
        Ok(Some(Message {
            kind: partial.kind,
            request_id,
            body: partial.body,
        }))
    }

    /// Drops what has arrived of message `request_id`, if anything.
    pub(crate) fn discard(&mut self, request_id: u64) {
        if let Some(partial) = self.partial.remove(&request_id) {
            self.release(partial.body.len());
        }
    }

    /// Accounts for `len` more buffered bytes, within the connection's budget and the
    /// server's.
    fn hold(&mut self, len: usize) -> Result<(), LimitError> {
        let buffered = self.buffered.saturating_add(len);
        if buffered > self.max_buffered {
            return Err(LimitError::ConnectionBuffer {
                len: to_u64(buffered),
                max: to_u64(self.max_buffered),
            });
        }
        if let Some(shared) = &self.shared {
            shared.reserve(len)?;
        }
        self.buffered = buffered;
        Ok(())
    }

    /// Accounts for `len` fewer buffered bytes.
    fn release(&mut self, len: usize) {
        self.buffered = self.buffered.saturating_sub(len);
        if let Some(shared) = &self.shared {
            shared.release(len);
        }
    }
}

impl Drop for Reassembler {
    /// A connection that ends gives its partial messages' bytes back to the server.
    fn drop(&mut self) {
        let held = self.buffered;
        self.release(held);
    }
}

fn to_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(kind: FrameKind, request_id: u64, more: bool, body: &[u8]) -> (FrameHeader, Vec<u8>) {
        let header = FrameHeader {
            kind,
            request_id,
            more,
            body_len: u32::try_from(body.len()).unwrap(),
        };
        (header, body.to_vec())
    }

    fn push(r: &mut Reassembler, frame: (FrameHeader, Vec<u8>)) -> Option<Message> {
        r.push(&frame.0, frame.1).unwrap()
    }

    fn reassembler(max: usize) -> Reassembler {
        Reassembler::new(max, max, None)
    }

    #[test]
    fn interleaved_chunks_come_back_whole() {
        let mut r = reassembler(100);
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 1, true, b"ab")),
            None
        );
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 2, true, b"xy")),
            None
        );
        let single = push(&mut r, chunk(FrameKind::Request, 3, false, b"!"));
        assert_eq!(single.map(|m| m.body), Some(b"!".to_vec()));
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 1, true, b"cd")),
            None
        );
        let two = push(&mut r, chunk(FrameKind::Request, 2, false, b"z"));
        assert_eq!(two.map(|m| m.body), Some(b"xyz".to_vec()));
        let one = push(&mut r, chunk(FrameKind::Request, 1, false, b""));
        assert_eq!(
            one.map(|m| (m.request_id, m.body)),
            Some((1, b"abcd".to_vec()))
        );
        assert_eq!(r.buffered, 0);
    }

    #[test]
    fn a_message_above_the_limit_is_refused() {
        let mut r = reassembler(4);
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 1, true, b"abc")),
            None
        );
        let (header, body) = chunk(FrameKind::Request, 1, false, b"de");
        assert!(matches!(
            r.push(&header, body),
            Err(ConnectionError::Frame(FrameError::MessageTooLarge {
                len: 5,
                max: 4
            }))
        ));
        let (header, body) = chunk(FrameKind::Request, 9, false, b"12345");
        assert!(matches!(
            r.push(&header, body),
            Err(ConnectionError::Frame(FrameError::MessageTooLarge { .. }))
        ));
    }

    #[test]
    fn partial_messages_share_one_budget() {
        let mut r = Reassembler::new(4, 5, None);
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 1, true, b"abc")),
            None
        );
        let (header, body) = chunk(FrameKind::Request, 2, true, b"def");
        assert!(matches!(
            r.push(&header, body),
            Err(ConnectionError::Limit(LimitError::ConnectionBuffer {
                len: 6,
                max: 5
            }))
        ));
        r.discard(1);
        assert_eq!(
            push(&mut r, chunk(FrameKind::Request, 2, true, b"def")),
            None
        );
    }

    #[test]
    fn connections_share_the_servers_budget_and_give_it_back() {
        let budget = Arc::new(Budget::new(10));
        let mut one = Reassembler::new(100, 100, Some(Arc::clone(&budget)));
        let mut two = Reassembler::new(100, 100, Some(Arc::clone(&budget)));
        assert_eq!(
            push(&mut one, chunk(FrameKind::Request, 1, true, b"123456")),
            None
        );
        assert_eq!(budget.held(), 6);
        // Within two's own budget, but not within the server's.
        let (header, body) = chunk(FrameKind::Request, 1, true, b"abcde");
        assert!(matches!(
            two.push(&header, body),
            Err(ConnectionError::Limit(LimitError::ServerBuffer {
                len: 11,
                max: 10
            }))
        ));
        assert_eq!(budget.held(), 6);
        // A finished message gives its bytes back...
        let done = push(&mut one, chunk(FrameKind::Request, 1, false, b"7"));
        assert_eq!(done.map(|m| m.body.len()), Some(7));
        assert_eq!(budget.held(), 0);
        // ...and so does a connection that ends with messages unfinished.
        assert_eq!(
            push(&mut two, chunk(FrameKind::Request, 1, true, b"abcde")),
            None
        );
        assert_eq!(
            push(&mut one, chunk(FrameKind::Request, 2, true, b"xyz")),
            None
        );
        assert_eq!(budget.held(), 8);
        drop(two);
        assert_eq!(budget.held(), 3);
        one.discard(2);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_chunk_may_not_change_the_kind() {
        let mut r = reassembler(100);
        assert_eq!(
            push(&mut r, chunk(FrameKind::Response, 1, true, b"a")),
            None
        );
        let (header, body) = chunk(FrameKind::Error, 1, false, b"b");
        assert!(matches!(
            r.push(&header, body),
            Err(ConnectionError::Frame(FrameError::KindChanged { .. }))
        ));
    }

    #[test]
    fn the_number_of_partial_messages_is_bounded() {
        let mut r = reassembler(1 << 20);
        for id in 0..MAX_PARTIAL_MESSAGES as u64 {
            assert_eq!(push(&mut r, chunk(FrameKind::Request, id, true, b"")), None);
        }
        let (header, body) = chunk(FrameKind::Request, u64::MAX, true, b"");
        assert!(matches!(
            r.push(&header, body),
            Err(ConnectionError::Frame(
                FrameError::TooManyPartialMessages { .. }
            ))
        ));
    }

    proptest! {
        /// Cutting messages at arbitrary points and interleaving the chunks in an arbitrary
        /// order gives back every message, intact.
        #[test]
        fn arbitrary_chunking_reassembles(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
            cuts in proptest::collection::vec(1usize..50, 1..20),
            order_seed: u64,
        ) {
            // Each message's chunks, in order.
            let mut queues: Vec<std::collections::VecDeque<(FrameHeader, Vec<u8>)>> = Vec::new();
            for (id, message) in messages.iter().enumerate() {
                let mut chunks = std::collections::VecDeque::new();
                let mut offset = 0;
                let mut cut = cuts.iter().cycle();
                loop {
                    let end = (offset + cut.next().copied().unwrap_or(1)).min(message.len());
                    let more = end < message.len();
                    chunks.push_back(chunk(FrameKind::Request, id as u64, more, &message[offset..end]));
                    offset = end;
                    if !more {
                        break;
                    }
                }
                queues.push(chunks);
            }
            let mut r = reassembler(10_000);
            let mut done = vec![None; messages.len()];
            let mut seed = order_seed;
            while queues.iter().any(|q| !q.is_empty()) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
                let pick = live[(seed >> 33) as usize % live.len()];
                let (header, body) = queues[pick].pop_front().unwrap();
                if let Some(message) = r.push(&header, body).unwrap() {
                    done[message.request_id as usize] = Some(message.body);
                }
            }
            let done: Vec<Vec<u8>> = done.into_iter().map(Option::unwrap).collect();
            prop_assert_eq!(done, messages);
            prop_assert_eq!(r.buffered, 0);
        }
    }
}
