//! The byte streams a connection reads from and writes to: a TCP socket's, or those of a
//! TLS session on top of it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::reactor::Socket;
use crate::workers;

/// The reading side of a connection.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The writing side of a connection.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A plain TCP connection's two sides: the same socket.
pub(crate) fn plain(stream: &TcpStream) -> (Reader, Writer) {
    match Transport::of(stream) {
        Transport::Pool(socket) => (Box::new(socket.clone()), Box::new(socket)),
        Transport::AsyncIo(stream) => (
            Box::new(SocketReader::new(stream.clone())),
            Box::new(stream),
        ),
    }
}

/// A connection's socket as one stream (which a TLS session reads and writes): on a
/// thread of a pool with a [reactor](crate::reactor) of its own, its waits go there;
/// elsewhere to async-io's.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Registered with the reactor of the pool this thread works for.
    Pool(Socket),
    /// Served by async-io.
    AsyncIo(TcpStream),
}

impl Transport {
    pub(crate) fn of(stream: &TcpStream) -> Transport {
        if let Some(reactor) = workers::current_reactor() {
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
            match (&mut this.socket.get_ref()).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.dry = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(read) if read > 0 && read < buf.len() => {
                    // A read that did not fill the buffer emptied the socket: the next
                    // read would find nothing, so it waits for readiness instead (the
                    // interest it registers fires at once if bytes came in meanwhile).
                    this.dry = true;
                    return Poll::Ready(Ok(read));
                }
                result => return Poll::Ready(result),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::TcpListener;

    use super::*;

    #[test]
    fn a_socket_reader_reads_what_arrives_after_it_ran_dry() {
        smol::block_on(async {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (mut reader, _writer) = plain(&server);
            for round in 0..3u8 {
                // On a task of its own, which only the socket's readiness can wake: the
                // read runs dry and waits, and the bytes sent next must wake it.
                let (dry, ran_dry) = smol::channel::bounded(1);
                let task = smol::spawn(async move {
                    let mut buf = [0u8; 16];
                    let mut reading = reader.read(&mut buf);
                    assert!(futures::poll!(&mut reading).is_pending());
                    dry.send(()).await.unwrap();
                    let read = reading.await.unwrap();
                    (reader, read, buf)
                });
                ran_dry.recv().await.unwrap();
                client.write_all(&[round; 3]).await.unwrap();
                let expired = async {
                    smol::Timer::after(std::time::Duration::from_secs(10)).await;
                    panic!("the bytes sent did not wake the reader within 10 s");
                };
                let (back, read, buf) = smol::future::or(task, expired).await;
                reader = back;
                assert_eq!(read, 3);
                assert_eq!(buf[..3], [round; 3]);
            }
            drop(client);
            let mut buf = [0u8; 16];
            assert_eq!(reader.read(&mut buf).await.unwrap(), 0);
        });
    }
}
