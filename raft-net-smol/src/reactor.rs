//! The socket reactor of a [`SmolRuntime::with_threads`](crate::SmolRuntime::with_threads)
//! pool: one edge-triggered epoll instance in which an idle worker thread waits, and the
//! sockets of the connections that run on the pool.
//!
//! Why not async-io's reactor, which the pool used before: it registers every socket in
//! one-shot mode, so each readiness it reports costs an `epoll_ctl` to arm the next one,
//! and each wait re-arms its timer (`timerfd_settime`) and its notifier as well. Over
//! loopback TCP with one client that came to 9.5 `epoll_ctl`, 2.6 `timerfd_settime` and 2.6
//! eventfd reads per write, a third of the write's 31 system calls. Here a socket is
//! registered once, for reading and writing, edge-triggered: the kernel reports each new
//! arrival (or room to write) once, and nothing has to be armed again. The pool's waits
//! carry no timeout (the timers stay with async-io, whose own thread runs them), so no
//! timer is armed per wait either.
//!
//! Edge-triggered readiness is only sound if a reader reads until the socket is empty
//! before it waits; [`Socket`] does, and counts events (`tick`) so that an event that
//! lands between a read that found nothing and the wait that follows is not lost.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, Nsecs, Secs, Timespec, eventfd};
use smol::io::{AsyncRead, AsyncWrite};

use crate::stream::NonBlockingRead;

/// The key of the notifier's events (sockets count up from zero and never reach it).
const NOTIFIER: u64 = u64::MAX;

/// The longest one wait lasts.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Events taken from the kernel per wait; more are left for the next wait.
const EVENTS_PER_WAIT: usize = 256;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An epoll instance, the sockets registered in it, and a notifier to wake the thread
/// that waits in it.
pub(crate) struct Reactor {
    epoll: OwnedFd,
    /// An eventfd registered edge-triggered: every write to it ends a wait.
    notifier: OwnedFd,
    /// The readiness of each registered socket, by key.
    sources: Mutex<BTreeMap<u64, Arc<Readiness>>>,
    next_key: AtomicU64,
    /// Whether a thread holds the right to wait (one at a time; see [`Reactor::try_enter`]).
    entered: AtomicBool,
    /// The wakers of the sockets a wait found ready, kept between waits.
    wakers: Mutex<Vec<Waker>>,
    /// Set when the pool stops: no thread will wait here again (see [`Reactor::close`]).
    closed: AtomicBool,
}

impl Reactor {
    /// A new epoll instance with its notifier.
    pub(crate) fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let notifier = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &notifier,
            EventData::new_u64(NOTIFIER),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(Reactor {
            epoll,
            notifier,
            sources: Mutex::new(BTreeMap::new()),
            next_key: AtomicU64::new(0),
            entered: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// Takes the right to wait for events; `false` if another thread has it. One waiter
    /// at a time, so that [`Reactor::notify`] always has one thread to wake.
    pub(crate) fn try_enter(&self) -> bool {
        self.entered
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether a thread holds the right to wait (it waits, or looks for work, and will
    /// take the sockets' events).
    pub(crate) fn is_entered(&self) -> bool {
        self.entered.load(Ordering::Acquire)
    }

    /// Gives the right to wait back.
    pub(crate) fn leave(&self) {
        self.entered.store(false, Ordering::Release);
    }

    /// Waits for events (with the right to wait, from [`Reactor::try_enter`]) and wakes
    /// the tasks waiting on the sockets they concern: until an event or a
    /// [`notify`](Reactor::notify) comes, or `timeout` has passed (rounded up to whole
    /// milliseconds, which `epoll_wait` counts in; zero: only what is already there).
    pub(crate) fn wait(&self, timeout: Option<Duration>) {
        let mut wakers = lock(&self.wakers);
        let mut buffer = [const { MaybeUninit::<epoll::Event>::uninit() }; EVENTS_PER_WAIT];
        // Capped: a wait that ends early only sends its thread round once more, and
        // past 24 days rustix would need `epoll_pwait2`, which kernels before 5.11 lack
        // (the wait would fail at once, again and again).
        let timeout = timeout.map(|timeout| timeout.min(LONGEST_WAIT));
        let timeout = timeout.map(|timeout| Timespec {
            tv_sec: Secs::try_from(timeout.as_secs()).unwrap_or(Secs::MAX),
            // Below a billion: fits in any width the type has (an `i64` or a C `long`).
            tv_nsec: timeout.subsec_nanos() as Nsecs,
        });
        let events = match epoll::wait(&self.epoll, &mut buffer, timeout.as_ref()) {
            Ok((events, _)) => events,
            Err(e) => {
                // Interrupted by a signal: the caller looks for work and comes back.
                // Nothing else can fail on an epoll instance and buffer of our own.
                if e != rustix::io::Errno::INTR {
                    tracing::error!(error = %e, "waiting for socket events failed");
                }
                return;
            }
        };
        {
            let sources = lock(&self.sources);
            for event in events.iter() {
                // Copied out: the kernel's event layout is packed.
                let (flags, data) = (event.flags, event.data);
                if let Some(readiness) = sources.get(&data.u64()) {
                    readiness.fire(flags, &mut wakers);
                }
                // The notifier's event only had to end the wait; its counter is never
                // read, since an edge-triggered eventfd reports every write anyway (and
                // 2^64 writes would take centuries).
            }
        }
        for waker in wakers.drain(..) {
            waker.wake();
        }
    }

    /// Ends the current (or next) [`wait`](Reactor::wait).
    pub(crate) fn notify(&self) {
        if let Err(e) = rustix::io::write(&self.notifier, &1u64.to_ne_bytes()) {
            tracing::error!(error = %e, "cannot wake the thread waiting for socket events");
        }
    }

    /// The pool stopped: no thread will wait here again. A socket waiting here would
    /// wait for ever, so every wait on the registered sockets fails from now on (their
    /// waiting tasks are woken to see it), and no socket is registered any more: a
    /// connection opened meanwhile waits in async-io's reactor instead.
    pub(crate) fn close(&self) {
        let mut wakers = Vec::new();
        {
            let sources = lock(&self.sources);
            // Under the lock `register` takes: a socket is either refused or swept here.
            self.closed.store(true, Ordering::SeqCst);
            for readiness in sources.values() {
                readiness.take_waiters(&mut wakers);
            }
        }
        for waker in wakers {
            waker.wake();
        }
    }

    /// The error of a wait on a closed reactor.
    fn closed_error() -> io::Error {
        io::Error::other("the socket's runtime stopped: nothing waits for its events")
    }

    /// Registers `stream` (already non-blocking) for both directions, edge-triggered.
    fn register(self: &Arc<Self>, stream: std::net::TcpStream) -> io::Result<Registered> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let readiness = Arc::new(Readiness::default());
        {
            let mut sources = lock(&self.sources);
            if self.closed.load(Ordering::SeqCst) {
                return Err(Self::closed_error());
            }
            sources.insert(key, Arc::clone(&readiness));
        }
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        if let Err(e) = epoll::add(&self.epoll, &stream, EventData::new_u64(key), flags) {
            lock(&self.sources).remove(&key);
            return Err(e.into());
        }
        Ok(Registered {
            reactor: Arc::clone(self),
            key,
            readiness,
            stream,
        })
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sockets", &lock(&self.sources).len())
            .finish_non_exhaustive()
    }
}

/// Which way a socket is waited on.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// What the reactor has seen of one socket, per direction.
#[derive(Default)]
struct Readiness {
    state: Mutex<[Side; 2]>,
}

/// One direction's events so far, and the task waiting for the next.
#[derive(Default)]
struct Side {
    tick: u64,
    waiter: Option<Waker>,
}

impl Readiness {
    /// Counts an event for the directions it concerns and takes their waiters' wakers.
    fn fire(&self, flags: EventFlags, wakers: &mut Vec<Waker>) {
        // A hang-up or an error ends reads and writes alike: wake both, and let the
        // read or write that follows report it.
        let ended = flags.intersects(EventFlags::HUP | EventFlags::ERR);
        let readable = ended || flags.intersects(EventFlags::IN | EventFlags::RDHUP);
        let writable = ended || flags.contains(EventFlags::OUT);
        let mut state = lock(&self.state);
        let [read, write] = &mut *state;
        for (fired, side) in [(readable, read), (writable, write)] {
            if fired {
                side.tick = side.tick.wrapping_add(1);
                wakers.extend(side.waiter.take());
            }
        }
    }

    /// Takes the wakers of the tasks waiting in either direction.
    fn take_waiters(&self, wakers: &mut Vec<Waker>) {
        wakers.extend(
            lock(&self.state)
                .iter_mut()
                .filter_map(|side| side.waiter.take()),
        );
    }

    /// The number of events seen so far in `direction`.
    fn tick(&self, direction: Direction) -> u64 {
        lock(&self.state)[direction as usize].tick
    }

    /// Whether an event came in `direction` since `tick`; if not, `waker` is woken at
    /// the next one.
    fn arrived_since(&self, direction: Direction, tick: u64, waker: &Waker) -> bool {
        let mut state = lock(&self.state);
        let side = &mut state[direction as usize];
        if side.tick != tick {
            return true;
        }
        match &mut side.waiter {
            Some(waiter) if waiter.will_wake(waker) => {}
            waiter => *waiter = Some(waker.clone()),
        }
        false
    }
}

/// A socket registered in a reactor; unregistered when dropped.
struct Registered {
    reactor: Arc<Reactor>,
    key: u64,
    readiness: Arc<Readiness>,
    stream: std::net::TcpStream,
}

impl Registered {
    /// What a read or write that must wait returns, its waker set: pending, unless the
    /// reactor closed. Checked after the waker is set, so that either this sees the
    /// reactor closed or `close` sees the waker.
    fn pending<T>(&self) -> Poll<io::Result<T>> {
        if self.reactor.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Reactor::closed_error()));
        }
        Poll::Pending
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Closing the descriptor would drop it from the epoll set as well, unless another
        // descriptor of the same socket (the one the caller keeps) is still open.
        if let Err(e) = epoll::delete(&self.reactor.epoll, &self.stream) {
            tracing::debug!(error = %e, "cannot unregister a socket");
        }
        lock(&self.reactor.sources).remove(&self.key);
    }
}

/// One side of a TCP connection whose waits go through a pool's [`Reactor`]. Clones share
/// the socket; each reads and writes on its own (one reader and one writer at a time: a
/// direction keeps only its last waiter).
pub(crate) struct Socket {
    registered: Arc<Registered>,
    /// The read tick before the read that emptied the socket: reading again is pointless
    /// until the tick moved on.
    dry_since: Option<u64>,
}

impl Socket {
    /// Registers a descriptor of its own for `stream` with `reactor`; the caller's
    /// `stream` stays usable (for `shutdown`, which acts on the socket, not the descriptor).
    pub(crate) fn adopt(
        reactor: &Arc<Reactor>,
        stream: &smol::net::TcpStream,
    ) -> io::Result<Socket> {
        let own = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
        // The descriptor shares the original's file status flags, but say it anyway.
        own.set_nonblocking(true)?;
        Ok(Socket {
            registered: Arc::new(reactor.register(own)?),
            dry_since: None,
        })
    }
}

impl Clone for Socket {
    fn clone(&self) -> Self {
        Socket {
            registered: Arc::clone(&self.registered),
            dry_since: None,
        }
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("key", &self.registered.key)
            .field("dry", &self.dry_since.is_some())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let readiness = &this.registered.readiness;
        loop {
            if let Some(tick) = this.dry_since {
                if !readiness.arrived_since(Direction::Read, tick, cx.waker()) {
                    return this.registered.pending();
                }
                this.dry_since = None;
            }
            // Taken before the read: bytes that arrive during the read move it on, so
            // they are never waited for.
            let tick = readiness.tick(Direction::Read);
            match NonBlockingRead::of((&this.registered.stream).read(buf), buf.len()) {
                NonBlockingRead::Empty => this.dry_since = Some(tick),
                NonBlockingRead::Interrupted => {}
                NonBlockingRead::Done { result, emptied } => {
                    this.dry_since = emptied.then_some(tick);
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl Socket {
    /// Runs `write` until it does not find the socket full, waiting for room when it does.
    fn poll_writing(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&std::net::TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let readiness = &self.registered.readiness;
        loop {
            let tick = readiness.tick(Direction::Write);
            match write(&self.registered.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !readiness.arrived_since(Direction::Write, tick, cx.waker()) {
                        return self.registered.pending();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_writing(cx, |mut stream| stream.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_writing(cx, |mut stream| stream.write_vectored(bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As async-io's socket does: closing the writing side sends FIN.
        Poll::Ready(self.registered.stream.shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::{TcpListener, TcpStream};

    use super::{Arc, Reactor};
    use crate::stream::Transport;
    use crate::test_support::{dry_reads_wake, within_30s};
    use crate::workers::Pool;

    /// Runs the future `make` makes of the pool's reactor as a task of a pool of two
    /// threads; fails after 30 s.
    fn on_pool<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        make: impl FnOnce(Arc<Reactor>) -> F,
    ) -> T {
        let pool = Pool::start(2).upgrade().expect("running");
        let future = make(pool.reactor().expect("a reactor on Linux"));
        let (done, outcome) = smol::channel::bounded(1);
        pool.spawn(async move {
            let _ = done.send(future.await).await;
        });
        let outcome = smol::block_on(within_30s(outcome.recv())).expect("finished");
        pool.stop();
        outcome
    }

    /// Both ends of a loopback connection, as sockets of `reactor`.
    async fn pair(reactor: Arc<Reactor>) -> (TcpStream, Transport, TcpStream, Transport) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (near, far) = (
            Transport::on(&client, Some(Arc::clone(&reactor))),
            Transport::on(&server, Some(reactor)),
        );
        assert!(
            matches!((&near, &far), (Transport::Pool(_), Transport::Pool(_))),
            "the reactor took the sockets"
        );
        (client, near, server, far)
    }

    #[test]
    fn a_read_that_ran_dry_is_woken_by_the_next_arrival() {
        on_pool(|reactor| async {
            let (_client, near, _server, far) = pair(reactor).await;
            let close = |mut near: Transport| {
                // Closing the writing side sends FIN: the peer's read sees the end.
                assert!(futures::FutureExt::now_or_never(near.close()).is_some());
            };
            dry_reads_wake(far, near, close).await;
        });
    }

    #[test]
    fn a_write_that_found_the_socket_full_is_woken_when_the_peer_reads() {
        on_pool(|reactor| async {
            let (_client, mut near, _server, mut far) = pair(reactor).await;
            // Far more than the kernel buffers: the writer must wait for room many times,
            // and the reader read many times until the socket is empty.
            const SIZE: usize = 32 << 20;
            let sent: Vec<u8> = (0..SIZE).map(|at| (at % 251) as u8).collect();
            let expected = sent.clone();
            let writing = smol::spawn(async move {
                near.write_all(&sent).await.unwrap();
                near.close().await.unwrap();
            });
            let mut received = Vec::with_capacity(SIZE);
            far.read_to_end(&mut received).await.unwrap();
            writing.await;
            assert_eq!(received.len(), SIZE);
            assert!(received == expected, "the bytes arrived altered");
        });
    }

    /// A stopped pool's reactor: a read waiting there fails instead of waiting for
    /// events nobody will take, and a socket opened afterwards goes to async-io's.
    #[test]
    fn a_stopped_pools_sockets_fail_their_waits_and_new_ones_go_elsewhere() {
        let pool = Pool::start(1).upgrade().expect("running");
        let reactor = pool.reactor().expect("a reactor on Linux");
        smol::block_on(async {
            let (_client, _near, _server, mut far) = pair(Arc::clone(&reactor)).await;
            // Waits on this thread, outside the pool, for bytes that never come.
            let mut buffer = [0u8; 8];
            let mut reading = far.read(&mut buffer);
            assert!(futures::poll!(&mut reading).is_pending());
            pool.stop();
            let read = within_30s(reading).await;
            assert!(
                read.as_ref()
                    .is_err_and(|e| e.to_string().contains("runtime stopped")),
                "{read:?}"
            );
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let late = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            assert!(matches!(
                Transport::on(&late, Some(reactor)),
                Transport::AsyncIo(_)
            ));
        });
    }
}
