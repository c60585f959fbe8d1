//! What the crate's unit tests share.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Waits until `done` holds, for at most 30 s.
pub(crate) fn eventually(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    done()
}

/// `future`, or a panic after 30 s (on async-io's timer). The timer is polled first, so
/// that a future that was never woken cannot finish on the poll the timer's end causes.
pub(crate) async fn within_30s<T>(future: impl Future<Output = T>) -> T {
    let expired = async {
        smol::Timer::after(Duration::from_secs(30)).await;
        panic!("not done within 30 s");
    };
    smol::future::or(expired, future).await
}

/// For a few rounds, a read that found nothing and waits must be woken by the bytes that
/// `writer` sends next; then `writer`'s end of the connection closes (`close` drops or
/// shuts it) and the read must see the end. The read runs on a task of its own, which
/// only the socket's event can wake.
pub(crate) async fn dry_reads_wake<R, W>(mut reader: R, mut writer: W, close: impl FnOnce(W))
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    for round in 0..5u8 {
        let (dry, ran_dry) = smol::channel::bounded(1);
        let reading = smol::spawn(async move {
            let mut buf = [0u8; 16];
            let mut read = reader.read(&mut buf);
            assert!(futures::poll!(&mut read).is_pending());
            dry.send(()).await.expect("the test waits");
            let n = read.await.expect("read");
            (reader, n, buf)
        });
        ran_dry.recv().await.expect("the read ran");
        writer.write_all(&[round; 3]).await.expect("sent");
        let (back, n, buf) = within_30s(reading).await;
        reader = back;
        assert_eq!((n, &buf[..3]), (3, &[round; 3][..]));
    }
    let mut buf = [0u8; 16];
    let mut read = reader.read(&mut buf);
    assert!(futures::poll!(&mut read).is_pending());
    close(writer);
    assert_eq!(within_30s(read).await.expect("read"), 0);
}

/// A socket's writing side stand-in that takes at most `max_write` bytes per write, and
/// none while shut (it then keeps the waker, as a full socket does, and wakes it when
/// opened).
#[derive(Clone)]
pub(crate) struct Valve(Arc<Mutex<ValveState>>);

struct ValveState {
    open: bool,
    max_write: usize,
    sent: Vec<u8>,
    flushes: usize,
    waker: Option<Waker>,
}

impl Valve {
    pub(crate) fn new(open: bool, max_write: usize) -> Self {
        Valve(Arc::new(Mutex::new(ValveState {
            open,
            max_write,
            sent: Vec::new(),
            flushes: 0,
            waker: None,
        })))
    }

    pub(crate) fn open(&self) {
        let mut state = self.0.lock().unwrap();
        state.open = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The bytes written so far.
    pub(crate) fn sent(&self) -> Vec<u8> {
        self.0.lock().unwrap().sent.clone()
    }

    /// How many times it was flushed.
    pub(crate) fn flushes(&self) -> usize {
        self.0.lock().unwrap().flushes
    }
}

impl AsyncWrite for Valve {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.0.lock().unwrap();
        if !state.open {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let taken = buf.len().min(state.max_write);
        state.sent.extend_from_slice(&buf[..taken]);
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.lock().unwrap().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
