//! [`KvClient`]: talks to a KV cluster, finding the leader by itself.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raft_mem::{KvCommand, KvResponse};
use raft_net_smol::{HandshakeError, TcpClient, TcpConfig, TcpConfigError};
use raft_traits::{NodeId, TransportError};

use crate::protocol::{ClientRequest, ClientResponse, NodeStatus, client_protocol};

/// How a [`KvClient`] times its attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long one operation may take, all retries included, before it fails with
    /// [`ClientError::Unavailable`] (default 15 s).
    pub deadline: Duration,
    /// The first pause after a failed attempt (default 20 ms); it doubles after each
    /// further failure of the same operation, up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest pause between two attempts (default 500 ms).
    pub backoff_max: Duration,
    /// The connection settings. Its `request_timeout` (default here 3 s) bounds one
    /// attempt at one node: a leader cut off from its followers cannot commit, and the
    /// client moves on to another node when it runs out.
    pub tcp: TcpConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            deadline: Duration::from_secs(15),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            tcp: TcpConfig {
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(3),
                backoff_min: Duration::from_millis(20),
                backoff_max: Duration::from_millis(500),
                ..TcpConfig::default()
            },
        }
    }
}

/// Why a [`KvClient`] operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The cluster list is empty.
    #[error("the cluster has no nodes")]
    NoNodes,
    /// The connection settings are invalid.
    #[error("invalid client settings: {0}")]
    Config(#[from] TcpConfigError),
    /// No leader applied the command before the deadline. A write may or may not have
    /// been applied.
    #[error("no leader answered within {after:?} ({attempts} attempts); last: {last}")]
    Unavailable {
        /// How long the client tried.
        after: Duration,
        /// How many requests it sent.
        attempts: u32,
        /// What the last attempt ran into.
        last: String,
    },
    /// A node's address is not the client port of a node of this cluster: the server
    /// there refused the handshake because it speaks another protocol (a Raft port, or
    /// another service), belongs to another cluster or is another node. Retrying cannot
    /// help; the cluster list must be fixed.
    #[error("{addr} ({node} in the cluster list) is not that node's client port: {error}")]
    WrongPort {
        /// The node the address was given for.
        node: NodeId,
        /// The address.
        addr: SocketAddr,
        /// What the handshake found.
        error: HandshakeError,
    },
    /// A node answered something the protocol does not allow for this request.
    #[error("unexpected answer from {node}: {answer}")]
    Unexpected {
        /// The node.
        node: NodeId,
        /// What it answered.
        answer: String,
    },
    /// The client was shut down.
    #[error("the client was shut down")]
    Closed,
}

/// A client of a KV cluster.
///
/// It knows each node by its client address (one per node) and remembers which one
/// leads. An operation goes to the presumed leader; a node that is not the leader
/// answers with a hint, which the client follows; a node that cannot be reached, or does
/// not answer in time, is skipped for the next one. Between failed attempts the client
/// backs off, so it rides out elections, until [`ClientConfig::deadline`].
///
/// Every operation, reads included, is a command in Raft's log, applied by the leader
/// once committed: results are linearizable.
///
/// **Retries are at-least-once.** When an attempt ends without an answer (a timeout, a
/// broken connection, a leader that lost its entry to a snapshot), the command may have
/// been applied, and the client sends it again. A `put` applied twice leaves the same
/// value; but a retried write may land after another client's write of the same key.
/// Keys written by a single client at a time are not affected: an entry that was
/// replaced by a retry can only be applied before the retry, never after it.
pub struct KvClient {
    rpc: TcpClient<ClientRequest, ClientResponse>,
    nodes: Vec<NodeId>,
    leader: Mutex<Option<NodeId>>,
    config: ClientConfig,
}

/// What one attempt at one node came to.
enum Attempt {
    Done(KvResponse),
    Redirect(NodeId),
    Retry { next: NodeId, reason: String },
}

impl KvClient {
    /// A client of the cluster whose nodes listen for clients at `cluster`.
    pub fn new(
        cluster: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        config: ClientConfig,
    ) -> Result<KvClient, ClientError> {
        let cluster: BTreeMap<NodeId, SocketAddr> = cluster.into_iter().collect();
        if cluster.is_empty() {
            return Err(ClientError::NoNodes);
        }
        let nodes = cluster.keys().copied().collect();
        let rpc = TcpClient::new(config.tcp.clone(), client_protocol(), cluster)?;
        Ok(KvClient {
            rpc,
            nodes,
            leader: Mutex::new(None),
            config,
        })
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub async fn put(
        &self,
        key: impl Into<Arc<str>>,
        value: impl Into<Arc<str>>,
    ) -> Result<Option<Arc<str>>, ClientError> {
        let command = KvCommand::Put {
            key: key.into(),
            value: value.into(),
        };
        match self.execute(command).await? {
            (_, KvResponse::Replaced(previous)) => Ok(previous),
            (node, other) => Err(unexpected(node, &other)),
        }
    }

    /// Reads `key`, linearizably; `None` if it is not set.
    pub async fn get(&self, key: impl Into<Arc<str>>) -> Result<Option<Arc<str>>, ClientError> {
        match self.execute(KvCommand::Get { key: key.into() }).await? {
            (_, KvResponse::Value(value)) => Ok(value),
            (node, other) => Err(unexpected(node, &other)),
        }
    }

    /// Removes `key`; returns the value it held.
    pub async fn delete(&self, key: impl Into<Arc<str>>) -> Result<Option<Arc<str>>, ClientError> {
        match self.execute(KvCommand::Delete { key: key.into() }).await? {
            (_, KvResponse::Removed(previous)) => Ok(previous),
            (node, other) => Err(unexpected(node, &other)),
        }
    }

    /// Runs `command` on the leader, retrying as the type's documentation says; returns
    /// the node that applied it and its result.
    pub async fn execute(&self, command: KvCommand) -> Result<(NodeId, KvResponse), ClientError> {
        let started = Instant::now();
        let mut target = self.leader().unwrap_or_else(|| self.first_node());
        let mut attempts = 0u32;
        let mut failures = 0u32;
        // Hints followed in a row without a pause: bounded, so that two nodes naming each
        // other during an election cannot make the client spin.
        let mut redirects = 0usize;
        let mut last = String::from("no attempt made");
        loop {
            let elapsed = started.elapsed();
            if elapsed >= self.config.deadline {
                return Err(ClientError::Unavailable {
                    after: elapsed,
                    attempts,
                    last,
                });
            }
            attempts = attempts.saturating_add(1);
            let remaining = self.config.deadline.saturating_sub(elapsed);
            let attempt = self.attempt(target, command.clone());
            let expired = async {
                smol::Timer::after(remaining).await;
                Ok(Attempt::Retry {
                    next: target,
                    reason: "the deadline passed during the attempt".to_owned(),
                })
            };
            match smol::future::or(attempt, expired).await? {
                Attempt::Done(response) => {
                    self.set_leader(Some(target));
                    return Ok((target, response));
                }
                Attempt::Redirect(leader) if redirects < self.nodes.len() => {
                    tracing::debug!(from = %target, to = %leader, "following the leader hint");
                    last = format!("{target} is not the leader; it named {leader}");
                    self.set_leader(Some(leader));
                    target = leader;
                    redirects += 1;
                    continue;
                }
                Attempt::Redirect(leader) => {
                    last = format!("{target} is not the leader; it named {leader}");
                    target = leader;
                }
                Attempt::Retry { next, reason } => {
                    tracing::debug!(node = %target, %reason, "attempt failed");
                    last = format!("{target}: {reason}");
                    if self.leader() == Some(target) {
                        self.set_leader(None);
                    }
                    target = next;
                }
            }
            redirects = 0;
            failures = failures.saturating_add(1);
            let remaining = self.config.deadline.saturating_sub(started.elapsed());
            smol::Timer::after(self.backoff(failures).min(remaining)).await;
        }
    }

    /// One attempt at `node`.
    async fn attempt(&self, node: NodeId, command: KvCommand) -> Result<Attempt, ClientError> {
        let next = self.node_after(node);
        let answer = self.rpc.call(node, ClientRequest::Execute(command)).await;
        let attempt = match answer {
            Ok(ClientResponse::Applied(response)) => Attempt::Done(response),
            Ok(ClientResponse::NotLeader {
                leader_hint: Some(leader),
            }) if leader != node && self.nodes.contains(&leader) => Attempt::Redirect(leader),
            Ok(ClientResponse::NotLeader { .. }) => Attempt::Retry {
                next,
                reason: "not the leader, and it knows no leader".to_owned(),
            },
            // Not applied: the same node may lead again in a moment, but another may
            // have taken over; moving on finds out either way.
            Ok(
                ClientResponse::NotApplied { reason } | ClientResponse::OutcomeUnknown { reason },
            ) => Attempt::Retry { next, reason },
            Ok(ClientResponse::Status(_)) => {
                return Err(ClientError::Unexpected {
                    node,
                    answer: "a status report".to_owned(),
                });
            }
            Err(TransportError::Closed) => return Err(ClientError::Closed),
            Err(error @ TransportError::Unreachable { .. }) => {
                if let Some(wrong) = self.wrong_port(node) {
                    return Err(wrong);
                }
                Attempt::Retry {
                    next,
                    reason: error.to_string(),
                }
            }
            Err(error) => Attempt::Retry {
                next,
                reason: error.to_string(),
            },
        };
        Ok(attempt)
    }

    /// The error for `node` if its address turned out, in the handshake, not to be its
    /// client port. A busy server, or one that did not answer, may do better later and
    /// is not such an error.
    pub fn wrong_port(&self, node: NodeId) -> Option<ClientError> {
        let error = self.rpc.handshake_error(node)?;
        let permanent = matches!(
            error,
            HandshakeError::WrongProtocol { .. }
                | HandshakeError::WrongCluster { .. }
                | HandshakeError::WrongNode { .. }
                | HandshakeError::VersionRefused { .. }
        );
        let addr = self.rpc.peer_addr(node)?;
        permanent.then_some(ClientError::WrongPort { node, addr, error })
    }

    /// Asks node `node` for its status; one attempt, no retries.
    pub async fn status(&self, node: NodeId) -> Result<NodeStatus, TransportError> {
        match self.rpc.call(node, ClientRequest::Status).await? {
            ClientResponse::Status(status) => Ok(status),
            other => Err(TransportError::Failed {
                peer: node,
                reason: format!("unexpected answer to a status request: {other:?}"),
            }),
        }
    }

    /// Asks every node for its status, all at once.
    pub async fn statuses(&self) -> Vec<(NodeId, Result<NodeStatus, TransportError>)> {
        let asks = self.nodes.iter().map(|&node| async move {
            let status = self.status(node).await;
            (node, status)
        });
        futures::future::join_all(asks).await
    }

    /// The nodes of the cluster, by id.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The client address of node `node`.
    pub fn node_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.rpc.peer_addr(node)
    }

    /// The node the client takes for the leader, if any.
    pub fn leader(&self) -> Option<NodeId> {
        *self.lock_leader()
    }

    /// Closes every connection; operations in flight and later ones fail with
    /// [`ClientError::Closed`].
    pub fn shutdown(&self) {
        self.rpc.shutdown();
    }

    fn set_leader(&self, leader: Option<NodeId>) {
        *self.lock_leader() = leader;
    }

    /// A plain value behind the lock: a poisoned lock is still consistent.
    fn lock_leader(&self) -> MutexGuard<'_, Option<NodeId>> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn first_node(&self) -> NodeId {
        self.nodes.first().copied().unwrap_or_default()
    }

    /// The node after `node` in id order, wrapping around.
    fn node_after(&self, node: NodeId) -> NodeId {
        self.nodes
            .iter()
            .copied()
            .find(|&n| n > node)
            .unwrap_or_else(|| self.first_node())
    }

    /// The pause after the `failures`-th failed attempt of an operation.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.config
            .backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.config.backoff_max)
    }
}

fn unexpected(node: NodeId, response: &KvResponse) -> ClientError {
    ClientError::Unexpected {
        node,
        answer: format!("{response:?}"),
    }
}

impl fmt::Debug for KvClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvClient")
            .field("nodes", &self.nodes)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ids: &[u64]) -> KvClient {
        let cluster = ids
            .iter()
            .map(|&id| (NodeId(id), SocketAddr::from(([127, 0, 0, 1], 1))));
        KvClient::new(cluster, ClientConfig::default()).unwrap()
    }

    #[test]
    fn nodes_are_tried_in_turn() {
        let client = client(&[3, 1, 2]);
        assert_eq!(client.first_node(), NodeId(1));
        assert_eq!(client.node_after(NodeId(1)), NodeId(2));
        assert_eq!(client.node_after(NodeId(3)), NodeId(1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let client = client(&[1]);
        let ms = |n| client.backoff(n).as_millis();
        assert_eq!(
            (ms(1), ms(2), ms(3), ms(6), ms(100)),
            (20, 40, 80, 500, 500)
        );
    }

    #[test]
    fn an_empty_cluster_is_refused() {
        let empty: [(NodeId, SocketAddr); 0] = [];
        assert!(matches!(
            KvClient::new(empty, ClientConfig::default()),
            Err(ClientError::NoNodes)
        ));
    }
}
