//! The byte streams a connection reads from and writes to: a TCP socket's, or those of a
//! TLS session on top of it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::reactor::{Reactor, Socket};

/// The reading side of a connection.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The writing side of a connection.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A plain TCP connection's two sides: the same socket.
// Without a reactor of the pool's own, its socket type is uninhabited and the first arm
// cannot run.
#[cfg_attr(not(target_os = "linux"), allow(unreachable_code))]
pub(crate) fn plain(stream: &TcpStream, reactor: Option<Arc<Reactor>>) -> (Reader, Writer) {
    match Transport::on(stream, reactor) {
        Transport::Pool(socket) => (Box::new(socket.clone()), Box::new(socket)),
        Transport::AsyncIo(stream) => (
            Box::new(SocketReader::new(stream.clone())),
            Box::new(stream),
        ),
    }
}

/// A connection's socket as one stream (which a TLS session reads and writes): its waits
/// go to the [reactor](crate::reactor) of the pool that runs the connection's task, if
/// that is a pool with a reactor of its own, else to async-io's.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Registered with the reactor of the pool that runs the connection.
    Pool(Socket),
    /// Served by async-io.
    AsyncIo(TcpStream),
}

impl Transport {
    /// The socket waiting in `reactor` if given (and it takes it), else in async-io's:
    /// pass the reactor of the runtime the connection's task runs on
    /// ([`Executor::reactor`](crate::executor::Executor::reactor)), whichever thread
    /// opens it. A socket in the reactor of another pool would be served by that pool's
    /// threads, a hop away, and by nobody once that pool stops.
    pub(crate) fn on(stream: &TcpStream, reactor: Option<Arc<Reactor>>) -> Transport {
        if let Some(reactor) = reactor {
            match Socket::adopt(&reactor, stream) {
                Ok(socket) => return Transport::Pool(socket),
                Err(e) => tracing::debug!(error = %e, "the pool's reactor cannot take a socket"),
            }
        }
        Transport::AsyncIo(stream.clone())
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Pool(socket) => Pin::new(socket).poll_read(cx, buf),
            Transport::AsyncIo(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Pool(socket) => Pin::new(socket).poll_write(cx, buf),
            Transport::AsyncIo(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Pool(socket) => Pin::new(socket).poll_flush(cx),
            Transport::AsyncIo(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Pool(socket) => Pin::new(socket).poll_close(cx),
            Transport::AsyncIo(stream) => Pin::new(stream).poll_close(cx),
        }
    }
}

/// The two sides of a stream that is read and written through one state (a TLS session),
/// so that a reader and a writer can run at the same time.
pub(crate) fn split<S>(stream: S) -> (Reader, Writer)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = futures::io::AsyncReadExt::split(stream);
    (Box::new(reader), Box::new(writer))
}

/// Reads a socket, but once a read found it empty (or emptied it), reads again only after
/// the reactor said that it is readable.
///
/// A connection's reader and writer share one task, which every message to send wakes;
/// the socket's own reader tries a read on every poll, so each of those wakes cost a
/// system call that found nothing (`EAGAIN`), as often as one per message received.
#[derive(Debug)]
struct SocketReader {
    socket: Arc<Async<std::net::TcpStream>>,
    /// The last read found nothing: wait for readiness before the next.
    dry: bool,
}

impl SocketReader {
    fn new(stream: TcpStream) -> Self {
        SocketReader {
            socket: stream.into(),
            dry: false,
        }
    }
}

impl AsyncRead for SocketReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.dry {
                // Ready once an event arrived since the read that found nothing; the
                // interest it registers fires at once if bytes came in meanwhile.
                ready!(this.socket.poll_readable(cx))?;
                this.dry = false;
            }
            // After a read that emptied the socket, the interest registered for the next
            // fires at once if bytes came in meanwhile.
            match NonBlockingRead::of((&mut this.socket.get_ref()).read(buf), buf.len()) {
                NonBlockingRead::Empty => this.dry = true,
                NonBlockingRead::Interrupted => {}
                NonBlockingRead::Done { result, emptied } => {
                    this.dry = emptied;
                    return Poll::Ready(result);
                }
            }
        }
    }
}

/// What a read of a non-blocking socket found, for the reader that waits for readiness
/// between reads.
pub(crate) enum NonBlockingRead {
    /// Nothing to read: wait for readiness.
    Empty,
    /// A signal interrupted it: read again.
    Interrupted,
    /// The read's result for the caller; `emptied`: it left nothing behind, so the next
    /// read waits for readiness rather than find nothing (`EAGAIN`), a system call saved.
    Done {
        result: io::Result<usize>,
        emptied: bool,
    },
}

impl NonBlockingRead {
    /// What `result`, a read into a buffer of `wanted` bytes, found.
    pub(crate) fn of(result: io::Result<usize>, wanted: usize) -> NonBlockingRead {
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => NonBlockingRead::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => NonBlockingRead::Interrupted,
            // A read that did not fill the buffer emptied the socket (whatever comes
            // later raises readiness of its own).
            Ok(read) if read > 0 && read < wanted => NonBlockingRead::Done {
                result: Ok(read),
                emptied: true,
            },
            result => NonBlockingRead::Done {
                result,
                emptied: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use smol::net::TcpListener;

    use super::*;
    use crate::test_support::dry_reads_wake;

    /// On no pool: the socket waits in async-io's reactor.
    #[test]
    fn a_socket_reader_reads_what_arrives_after_it_ran_dry() {
        smol::block_on(async {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (reader, _writer) = plain(&server, None);
            assert!(matches!(
                Transport::on(&server, None),
                Transport::AsyncIo(_)
            ));
            dry_reads_wake(reader, client, drop).await;
        });
    }
}
