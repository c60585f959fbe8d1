//! Ports for clusters started in tests and demos: choosing free loopback ports ahead of
//! time, and keeping a stopped node's ports until it restarts.
//!
//! A cluster in one process needs neither: [`KvNode::bind`](crate::KvNode::bind) every
//! node on port 0 and hand each its peers' addresses before starting it. Processes must
//! be told their peers' addresses on the command line, so their ports are chosen first.

use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};

use smol::Task;

/// `n` distinct loopback addresses with ephemeral ports, reserved for a minute for
/// whoever binds them explicitly.
///
/// Nodes started as processes must know each other's addresses before any of them
/// starts, so the ports are chosen by the system (binding port 0) and then released.
/// Released as is, a port could be handed out again at once, as the local port of an
/// outgoing connection or to another bind to port 0, before its node binds it. So each
/// port is released in TIME_WAIT instead: the listening side accepts one connection from
/// itself and closes it first. While TIME_WAIT lasts (60 s on Linux), the system gives the
/// port neither to outgoing connections nor to binds to port 0, but an explicit bind with
/// `SO_REUSEADDR` (which Rust's `TcpListener::bind` sets on Unix) succeeds. (A
/// connection attempt to the port that happens to come from the port the reserving
/// connection came from ends the reservation early; the system seldom picks that one.)
///
/// In a program that spawns child processes, call it while no child is being spawned: a
/// child holds a copy of the listeners between its `fork` and its `exec`.
///
/// ```
/// let addrs = raft_examples::free_loopback_addrs(3).unwrap();
/// assert_eq!(addrs.len(), 3);
/// assert!(addrs.iter().all(|addr| addr.ip().is_loopback() && addr.port() != 0));
/// // Reserved for an explicit bind:
/// let listener = std::net::TcpListener::bind(addrs[0]).unwrap();
/// ```
pub fn free_loopback_addrs(n: usize) -> io::Result<Vec<SocketAddr>> {
    // All are held at once, so the system hands out distinct ports.
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners.into_iter().map(release_in_time_wait).collect()
}

/// Closes `listener` leaving its port in TIME_WAIT; returns its address.
fn release_in_time_wait(listener: TcpListener) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let mut client = TcpStream::connect(addr)?;
    let (accepted, _) = listener.accept()?;
    // The side that closes first is the one that waits: the accepted socket, whose
    // local port is the listener's.
    drop(accepted);
    // Wait for its FIN, so that the close completes in the expected order.
    let mut byte = [0u8; 1];
    let _ = client.read(&mut byte);
    drop(client);
    drop(listener);
    Ok(addr)
}

/// Holds the addresses of a stopped node until it restarts on them, so that nothing else
/// takes its ports meanwhile (an outgoing connection may otherwise get one as its local
/// port).
///
/// It listens on each address and closes every connection as soon as it is accepted: to
/// the node's peers and clients, the node is down, as they would find it with nothing
/// listening.
pub struct PortHolder {
    addrs: Vec<SocketAddr>,
    tasks: Vec<Task<()>>,
}

impl PortHolder {
    /// Starts holding `addrs`. Fails if one of them is in use.
    pub fn hold(addrs: &[SocketAddr]) -> io::Result<PortHolder> {
        let mut tasks = Vec::new();
        for &addr in addrs {
            let listener = smol::net::TcpListener::try_from(TcpListener::bind(addr)?)?;
            tasks.push(smol::spawn(async move {
                loop {
                    match listener.accept().await {
                        // Dropped at once: closed from this side.
                        Ok((stream, _)) => drop(stream),
                        // Out of file descriptors, say: retrying at once would spin.
                        Err(_) => {
                            smol::Timer::after(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            }));
        }
        Ok(PortHolder {
            addrs: addrs.to_vec(),
            tasks,
        })
    }

    /// The addresses held.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops holding: returns once every address is free to bind.
    pub async fn release(self) {
        for task in self.tasks {
            task.cancel().await;
        }
    }
}

impl fmt::Debug for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortHolder")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}
