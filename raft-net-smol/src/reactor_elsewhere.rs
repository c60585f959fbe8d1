//! Where the pool has no socket reactor of its own (systems without epoll): its threads
//! park when idle, and every socket waits in async-io's reactor.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Never made: [`Reactor::new`] always fails here.
#[derive(Debug)]
pub(crate) enum Reactor {}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the pool's socket reactor needs epoll",
        ))
    }

    pub(crate) fn try_enter(&self) -> bool {
        match *self {}
    }

    pub(crate) fn leave(&self) {
        match *self {}
    }

    pub(crate) fn wait(&self, _timeout: Option<std::time::Duration>) {
        match *self {}
    }

    pub(crate) fn notify(&self) {
        match *self {}
    }
}

/// Never made, as its reactor.
#[derive(Debug)]
pub(crate) enum Socket {}

impl Socket {
    pub(crate) fn adopt(
        reactor: &std::sync::Arc<Reactor>,
        _stream: &smol::net::TcpStream,
    ) -> io::Result<Socket> {
        match **reactor {}
    }
}

impl smol::io::AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match *self.get_mut() {}
    }
}

impl smol::io::AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match *self.get_mut() {}
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self.get_mut() {}
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self.get_mut() {}
    }
}

impl Clone for Socket {
    fn clone(&self) -> Self {
        match *self {}
    }
}
