//! [`FaultProxy`]: a TCP proxy that can pass, delay, drop or cut the traffic of a link,
//! for testing a cluster on real sockets.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use smol::Task;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

/// How long the proxy waits for a connection to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a [`FaultProxy`] does with the bytes of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Forwards everything at once.
    Pass,
    /// Forwards everything, each byte this much later than it arrived (in order).
    Delay(Duration),
    /// Accepts and reads everything but forwards nothing, in both directions: requests
    /// go unanswered and time out. Bytes are lost from the middle of the streams, so
    /// once the link passes traffic again, the ends may see garbage and close their
    /// connections (the frame checks catch it).
    Drop,
    /// Forwards what the connecting side sends, drops what the target sends back:
    /// requests are carried out, their answers lost, as when a server dies right after
    /// doing the work. Counted in [`bytes_dropped`](FaultProxy::bytes_dropped).
    DropReplies,
    /// Closes every connection, and every new one as soon as it is accepted.
    Cut,
}

/// Which way a pump moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// From the side that connected to the target.
    Requests,
    /// From the target back.
    Replies,
}

/// A TCP proxy on an ephemeral loopback port that forwards to one target address, with
/// faults switched on and off by [`set_mode`](FaultProxy::set_mode).
///
/// Put one between every ordered pair of nodes (node A's transport sends to B through
/// the proxy "A→B") and a partition is a matter of cutting the right proxies.
///
/// ```
/// use std::io::{Read, Write};
/// use raft_examples::{FaultProxy, LinkMode};
///
/// // An echo server to proxy to.
/// let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let target_addr = target.local_addr().unwrap();
/// std::thread::spawn(move || {
///     for stream in target.incoming() {
///         let mut stream = stream.unwrap();
///         let mut buffer = [0u8; 5];
///         stream.read_exact(&mut buffer).unwrap();
///         stream.write_all(&buffer).unwrap();
///     }
/// });
///
/// let proxy = FaultProxy::start(target_addr).unwrap();
/// let mut stream = std::net::TcpStream::connect(proxy.local_addr()).unwrap();
/// stream.write_all(b"hello").unwrap();
/// let mut echo = [0u8; 5];
/// stream.read_exact(&mut echo).unwrap();
/// assert_eq!(&echo, b"hello");
///
/// proxy.set_mode(LinkMode::Cut);
/// let mut rest = Vec::new();
/// // The connection was closed.
/// assert!(matches!(stream.read_to_end(&mut rest), Ok(0) | Err(_)));
/// smol::block_on(proxy.shutdown());
/// ```
pub struct FaultProxy {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_loop: Mutex<Option<Task<()>>>,
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<LinkMode>,
    /// The open connections, both ends of each, so that a cut can close them.
    links: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
    next_link: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl FaultProxy {
    /// Starts a proxy to `target` on an ephemeral port of 127.0.0.1, in [`LinkMode::Pass`].
    pub fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let local_addr = listener.local_addr()?;
        let listener = TcpListener::try_from(listener)?;
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(LinkMode::Pass),
            links: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let accept_loop = smol::spawn(accept(listener, Arc::clone(&shared)));
        Ok(FaultProxy {
            shared,
            local_addr,
            accept_loop: Mutex::new(Some(accept_loop)),
        })
    }

    /// Where the proxy listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// What the proxy does now.
    pub fn mode(&self) -> LinkMode {
        *self.shared.lock_mode()
    }

    /// Changes what the proxy does from now on. [`LinkMode::Cut`] also closes every open
    /// connection.
    pub fn set_mode(&self, mode: LinkMode) {
        *self.shared.lock_mode() = mode;
        if mode == LinkMode::Cut {
            self.shared.close_all();
        }
        tracing::debug!(proxy = %self.local_addr, target = %self.shared.target, ?mode, "link mode");
    }

    /// How many connections are open through the proxy.
    pub fn connection_count(&self) -> usize {
        self.shared.lock_links().len()
    }

    /// Bytes forwarded so far, both directions together.
    pub fn bytes_forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Bytes dropped so far in [`LinkMode::Drop`] and [`LinkMode::DropReplies`].
    pub fn bytes_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops listening and closes every connection.
    pub async fn shutdown(&self) {
        let accept_loop = self
            .accept_loop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(accept_loop) = accept_loop {
            accept_loop.cancel().await;
        }
        self.shared.close_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.close_all();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("local_addr", &self.local_addr)
            .field("target", &self.shared.target)
            .field("mode", &self.mode())
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Plain values behind the lock: a poisoned lock is still consistent.
    fn lock_mode(&self) -> MutexGuard<'_, LinkMode> {
        self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Single insertions and removals: a poisoned lock is still consistent.
    fn lock_links(&self) -> MutexGuard<'_, HashMap<u64, (TcpStream, TcpStream)>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_all(&self) {
        let links: Vec<(TcpStream, TcpStream)> =
            self.lock_links().drain().map(|(_, l)| l).collect();
        for (client, server) in links {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::debug!(%error, "proxy accept failed");
                smol::Timer::after(Duration::from_millis(20)).await;
                continue;
            }
        };
        if *shared.lock_mode() == LinkMode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        smol::spawn(open_link(client, Arc::clone(&shared))).detach();
    }
}

async fn open_link(client: TcpStream, shared: Arc<Shared>) {
    let connecting = async { Some(TcpStream::connect(shared.target).await) };
    let expired = async {
        smol::Timer::after(CONNECT_TIMEOUT).await;
        None
    };
    let server = match smol::future::or(connecting, expired).await {
        Some(Ok(server)) => server,
        Some(Err(error)) => {
            tracing::debug!(target = %shared.target, %error, "proxy cannot reach its target");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        None => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_link.fetch_add(1, Ordering::Relaxed);
    {
        let mut links = shared.lock_links();
        // A cut may have come while connecting.
        if *shared.lock_mode() == LinkMode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        links.insert(id, (client.clone(), server.clone()));
    }
    let up = pump(client.clone(), server.clone(), &shared, Direction::Requests);
    let down = pump(server.clone(), client.clone(), &shared, Direction::Replies);
    // The link ends with either direction.
    smol::future::or(up, down).await;
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    shared.lock_links().remove(&id);
}

/// Moves bytes from `from` to `to` as the mode says, until either end closes.
async fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, direction: Direction) {
    // Bytes with the instant they may leave; an unbounded queue keeps the reader from
    // waiting on a delay, so a delay adds latency without limiting throughput.
    let (queue, mut queued) = futures::channel::mpsc::unbounded::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0u8; 16 << 10];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let bytes = buffer.get(..n).unwrap_or_default().to_vec();
            let now = Instant::now();
            let leave_at = match *shared.lock_mode() {
                LinkMode::Pass => now,
                LinkMode::DropReplies if direction == Direction::Requests => now,
                LinkMode::Delay(delay) => now.checked_add(delay).unwrap_or(now),
                LinkMode::Drop | LinkMode::DropReplies => {
                    let n = u64::try_from(n).unwrap_or(u64::MAX);
                    shared.dropped.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                LinkMode::Cut => return,
            };
            if queue.unbounded_send((leave_at, bytes)).is_err() {
                return;
            }
        }
    };
    let writing = async {
        use futures::StreamExt;
        while let Some((leave_at, bytes)) = queued.next().await {
            smol::Timer::at(leave_at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            shared.forwarded.fetch_add(n, Ordering::Relaxed);
        }
    };
    // The reader ends first on a close: the writer then sends what is queued and ends
    // when the queue is empty and closed. A failed write ends the writer; the link is
    // then closed by the caller.
    let reading_done = async {
        reading.await;
        std::future::pending::<()>().await
    };
    smol::future::or(writing, reading_done).await;
}
