//! The byte streams a connection reads from and writes to: a TCP socket's, or those of a
//! TLS session on top of it.

use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

/// The reading side of a connection.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The writing side of a connection.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A plain TCP connection's two sides: clones of the same socket.
pub(crate) fn plain(stream: &TcpStream) -> (Reader, Writer) {
    (Box::new(stream.clone()), Box::new(stream.clone()))
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
