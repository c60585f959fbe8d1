//! [`KvClient`]: talks to a KV cluster, finding the leader by itself, in client sessions
//! so that a retried command is applied once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raft_impl::session::{ClientId, SessionCommand, SessionError, SessionResponse};
use raft_mem::{KvCommand, KvResponse};
use raft_net_smol::{HandshakeError, TcpClient, TcpConfig, TcpConfigError};
use raft_traits::{NodeId, Runtime, TransportError};

use crate::protocol::{
    CLIENT_PROTOCOL_VERSION, ChangeRefused, ClientRequest, ClientResponse, ClusterMembers,
    NodeStatus, client_protocol, client_protocol_version,
};
use crate::state_machine::KvSessionResult;

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
    /// been applied; it is not applied after the client's next command.
    #[error("no leader answered within {after:.1?} ({attempts} attempts); last: {last}")]
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
    /// The node at a node's address speaks another version of the client protocol: the
    /// client and the node come from different releases.
    #[error(
        "{addr} ({node}) speaks version {server} of the raft-kv client protocol, and this client version {ours}: run the same release of raft-kv on clients and nodes"
    )]
    VersionMismatch {
        /// The node the address was given for.
        node: NodeId,
        /// The address.
        addr: SocketAddr,
        /// The version the node speaks.
        server: u32,
        /// The version this client speaks.
        ours: u32,
    },
    /// The leader refused a membership change; nothing changed.
    #[error("{0}")]
    ChangeRefused(ChangeRefused),
    /// A membership change was still under way at the deadline. It goes on: the leader
    /// completes it by itself (a voter is promoted once it has caught up), unless it
    /// loses its leadership first.
    #[error("the change did not complete within {after:.1?}: {reason}")]
    ChangeNotDone {
        /// How long the client waited.
        after: Duration,
        /// What the change was waiting for.
        reason: String,
    },
    /// A node answered something the protocol does not allow for this request.
    #[error("unexpected answer from {node}: {answer}")]
    Unexpected {
        /// The node.
        node: NodeId,
        /// What it answered.
        answer: String,
    },
    /// The session the command ran in expired (the cluster's session table evicted it)
    /// after an attempt that may have been applied: the command may or may not have
    /// been applied, and sending it again in a new session could apply it twice.
    #[error(
        "session {client} expired while the command was in flight: it may or may not have been applied"
    )]
    SessionExpired {
        /// The session.
        client: ClientId,
    },
    /// The cluster's session table refused the command; it was not applied.
    #[error("the command was refused: {0}")]
    Rejected(SessionError),
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
/// `put` and `delete` are commands in Raft's log, applied by the leader once committed.
/// `get` is a [`ClientRequest::Read`]: the node it reaches serves it after a read
/// barrier (on a follower too), or, in `log` mode, tells the client to send it through
/// the log as a command; the client then reads through the log for as long as it lives.
/// Results are linearizable either way.
///
/// # Exactly once
///
/// When an attempt ends without an answer (a timeout, a broken connection, a leader
/// that lost its entry to a snapshot), the command may have been applied, and the
/// client sends it again. Commands run in client sessions
/// ([`raft_impl::session`]), so that such a retry is not applied twice: the client
/// registers a session (a command in the log) before its first operation, numbers the
/// operations of each session, and retries an operation with the same session and
/// number, wherever the leader has moved meanwhile. The cluster applies each number
/// once and answers a retry with the response recorded at the time, so `put` returns
/// the value that *its own* write replaced, even when the first attempt's answer was
/// lost.
///
/// A session carries one operation at a time. The client keeps a pool of them and
/// opens another when all are busy, so it may be shared by many tasks; sessions stay
/// open until the cluster evicts them as the least recently used, which the client
/// notices and handles (see [`ClientError::SessionExpired`]).
pub struct KvClient {
    rpc: TcpClient<ClientRequest, ClientResponse>,
    /// The nodes it knows, in id order: the ones it was given, and leaders it was sent
    /// to since, whose client addresses came with the redirect.
    nodes: Mutex<Vec<NodeId>>,
    leader: Mutex<Option<NodeId>>,
    /// Sessions with no operation in flight, the most recently used last.
    idle_sessions: Mutex<Vec<Session>>,
    /// Whether a node answered that it reads through the log.
    reads_through_log: AtomicBool,
    config: ClientConfig,
}

/// One of a [`KvClient`]'s sessions.
#[derive(Clone, Copy, Debug)]
struct Session {
    client: ClientId,
    /// The number the session's next operation gets.
    next_sequence: u64,
}

/// What one attempt at one node came to.
enum Attempt {
    Done(Answer),
    Redirect(NodeId),
    /// A membership change under way: ask the same node again.
    Wait {
        reason: String,
    },
    Retry {
        next: NodeId,
        reason: String,
        /// Whether the node may have applied the command all the same.
        uncertain: bool,
    },
}

/// A node's final answer to a request.
enum Answer {
    /// A command's result.
    Applied(KvSessionResult),
    /// A read's value.
    Value(Option<Arc<str>>),
    /// The node reads through the log.
    ReadThroughLog,
    /// The configuration, after a membership change or as asked.
    Members(Box<ClusterMembers>),
    /// A membership change refused.
    Refused(ChangeRefused),
}

impl Answer {
    /// The command's result; any other answer is a protocol violation by `node`.
    fn into_result(self, node: NodeId) -> Result<KvSessionResult, ClientError> {
        match self {
            Answer::Applied(result) => Ok(result),
            Answer::Value(_) | Answer::ReadThroughLog => Err(ClientError::Unexpected {
                node,
                answer: "a read's answer to a command".to_owned(),
            }),
            Answer::Members(_) | Answer::Refused(_) => Err(ClientError::Unexpected {
                node,
                answer: "a membership answer to a command".to_owned(),
            }),
        }
    }
}

/// What a request came to once a node answered.
struct Outcome {
    node: NodeId,
    answer: Answer,
    /// Whether an earlier attempt ended without a definite answer, so that it may have
    /// reached the state machine.
    uncertain: bool,
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
            nodes: Mutex::new(nodes),
            leader: Mutex::new(None),
            idle_sessions: Mutex::new(Vec::new()),
            reads_through_log: AtomicBool::new(false),
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
    ///
    /// Sent as a [`ClientRequest::Read`], with no session: the node serves it after a
    /// read barrier, and nothing is written to the log. If a node answers that it reads
    /// through the log, the read goes there, as a `Get` command in a session, and so do
    /// this client's later reads.
    pub async fn get(&self, key: impl Into<Arc<str>>) -> Result<Option<Arc<str>>, ClientError> {
        let key = key.into();
        let started = Instant::now();
        if !self.reads_through_log.load(Ordering::Relaxed) {
            let outcome = self
                .run(ClientRequest::Read { key: key.clone() }, started)
                .await?;
            match outcome.answer {
                Answer::Value(value) => return Ok(value),
                Answer::ReadThroughLog => {
                    tracing::debug!(node = %outcome.node, "the cluster reads through the log");
                    self.reads_through_log.store(true, Ordering::Relaxed);
                }
                Answer::Applied(_) | Answer::Members(_) | Answer::Refused(_) => {
                    return Err(ClientError::Unexpected {
                        node: outcome.node,
                        answer: "a command's or a change's answer to a read".to_owned(),
                    });
                }
            }
        }
        match self.execute_since(KvCommand::Get { key }, started).await? {
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

    /// Adds node `id`, which listens for Raft RPCs at `raft_addr` and for clients at
    /// `client_addr`, to the cluster: as a voter (the leader adds it as a learner and
    /// promotes it once it has caught up), or as a learner. The node should run already,
    /// started to join. Returns the configuration once the change has committed (at
    /// once if it had been made already).
    ///
    /// The leader refuses a node already a member at another address, or a voter to be
    /// made a learner ([`ChangeRefused::AlreadyMember`]). A new voter that does not catch
    /// up before the deadline (it does not run, say) ends in
    /// [`ClientError::ChangeNotDone`], and stays a learner that the leader promotes when
    /// it catches up.
    pub async fn add_node(
        &self,
        id: NodeId,
        raft_addr: SocketAddr,
        client_addr: Option<SocketAddr>,
        learner: bool,
    ) -> Result<ClusterMembers, ClientError> {
        let request = ClientRequest::AddNode {
            id,
            raft_addr,
            client_addr,
            learner,
        };
        self.change(request).await
    }

    /// Removes node `id` (voter or learner; the leader too) from the cluster. Returns the
    /// configuration once the change has committed. The removed node's process keeps
    /// running until stopped, but takes no part in the cluster any more.
    pub async fn remove_node(&self, id: NodeId) -> Result<ClusterMembers, ClientError> {
        self.change(ClientRequest::RemoveNode { id }).await
    }

    /// The cluster's configuration, from the leader.
    pub async fn members(&self) -> Result<ClusterMembers, ClientError> {
        let outcome = self.run(ClientRequest::Members, Instant::now()).await?;
        match outcome.answer {
            Answer::Members(members) => {
                self.learn_members(&members);
                Ok(*members)
            }
            _ => Err(ClientError::Unexpected {
                node: outcome.node,
                answer: "another answer than the members".to_owned(),
            }),
        }
    }

    /// Asks the leader for a membership change until it completes, is refused, or the
    /// deadline passes.
    async fn change(&self, request: ClientRequest) -> Result<ClusterMembers, ClientError> {
        let started = Instant::now();
        // Whether an earlier attempt may have started the change.
        let mut uncertain = false;
        let mut failures = 0u32;
        loop {
            let outcome = self.run(request.clone(), started).await?;
            uncertain |= outcome.uncertain;
            let refused = match outcome.answer {
                Answer::Members(members) => {
                    self.learn_members(&members);
                    return Ok(*members);
                }
                Answer::Refused(refused) => refused,
                _ => {
                    return Err(ClientError::Unexpected {
                        node: outcome.node,
                        answer: "another answer than a membership change's".to_owned(),
                    });
                }
            };
            match (&request, refused) {
                // An earlier attempt removed it, and its answer was lost.
                (ClientRequest::RemoveNode { id }, ChangeRefused::UnknownNode(gone))
                    if uncertain && *id == gone =>
                {
                    return self.members().await;
                }
                // Most likely this client's own change, which an earlier attempt started
                // and a new leader is completing.
                (_, ChangeRefused::ChangeInProgress)
                    if uncertain && started.elapsed() < self.config.deadline =>
                {
                    failures = failures.saturating_add(1);
                    let remaining = self.config.deadline.saturating_sub(started.elapsed());
                    self.rpc.sleep(self.backoff(failures).min(remaining)).await;
                }
                (_, refused) => return Err(ClientError::ChangeRefused(refused)),
            }
        }
    }

    /// Runs `command` on the leader, once, in one of the client's sessions, retrying as
    /// the type's documentation says; returns the node that answered and the command's
    /// result (recorded when it was applied, if that was on an earlier attempt).
    pub async fn execute(&self, command: KvCommand) -> Result<(NodeId, KvResponse), ClientError> {
        self.execute_since(command, Instant::now()).await
    }

    /// [`execute`](Self::execute), within the deadline of an operation `started` then.
    async fn execute_since(
        &self,
        command: KvCommand,
        started: Instant,
    ) -> Result<(NodeId, KvResponse), ClientError> {
        loop {
            let mut session = match self.take_session() {
                Some(session) => session,
                None => self.register(started).await?,
            };
            let sequence = session.next_sequence;
            let Some(next_sequence) = sequence.checked_add(1) else {
                // 2^64 operations in one session: leave it to expire, open another.
                continue;
            };
            session.next_sequence = next_sequence;
            let request = SessionCommand::Request {
                client: session.client,
                sequence,
                command: command.clone(),
            };
            let outcome = match self.run(ClientRequest::Execute(request), started).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    // The number is used up, but the session still serves: the cluster
                    // refuses this command if it arrives after the next one.
                    if matches!(error, ClientError::Unavailable { .. }) {
                        self.return_session(session);
                    }
                    return Err(error);
                }
            };
            match outcome.answer.into_result(outcome.node)? {
                Ok(SessionResponse::Applied(response) | SessionResponse::Duplicate(response)) => {
                    self.return_session(session);
                    return Ok((outcome.node, response));
                }
                Ok(SessionResponse::Registered(_)) => {
                    return Err(ClientError::Unexpected {
                        node: outcome.node,
                        answer: "a session registration".to_owned(),
                    });
                }
                // No attempt of this command can have been applied, in this session or
                // any other: it is safe to send it in a new one.
                Err(SessionError::UnknownSession { client }) if !outcome.uncertain => {
                    tracing::debug!(%client, "session expired; sending the command in a new one");
                }
                Err(SessionError::UnknownSession { client }) => {
                    return Err(ClientError::SessionExpired { client });
                }
                Err(error) => return Err(ClientError::Rejected(error)),
            }
        }
    }

    /// Opens a session, within the deadline of the operation `started` then.
    async fn register(&self, started: Instant) -> Result<Session, ClientError> {
        // A registration retried after a lost answer may open two sessions; the one
        // never used expires in time.
        let request = ClientRequest::Execute(SessionCommand::Register);
        let outcome = self.run(request, started).await?;
        match outcome.answer.into_result(outcome.node)? {
            Ok(SessionResponse::Registered(client)) => {
                tracing::debug!(%client, node = %outcome.node, "session registered");
                Ok(Session {
                    client,
                    next_sequence: 1,
                })
            }
            Ok(_) => Err(ClientError::Unexpected {
                node: outcome.node,
                answer: "a command's response to a registration".to_owned(),
            }),
            Err(error) => Err(ClientError::Rejected(error)),
        }
    }

    /// Sends `request` to the leader until a node answers it for good, following hints,
    /// moving on from nodes that fail, backing off, until the deadline of the operation
    /// `started` then.
    async fn run(&self, request: ClientRequest, started: Instant) -> Result<Outcome, ClientError> {
        let mut target = self.leader().unwrap_or_else(|| self.first_node());
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut uncertain = false;
        // Hints followed in a row without a pause: bounded, so that two nodes naming each
        // other during an election cannot make the client spin.
        let mut redirects = 0usize;
        let mut last = String::from("no attempt made");
        // What a membership change under way waited for at the last attempt.
        let mut pending: Option<String> = None;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= self.config.deadline {
                if let Some(reason) = pending {
                    return Err(ClientError::ChangeNotDone {
                        after: elapsed,
                        reason,
                    });
                }
                return Err(ClientError::Unavailable {
                    after: elapsed,
                    attempts,
                    last,
                });
            }
            attempts = attempts.saturating_add(1);
            let remaining = self.config.deadline.saturating_sub(elapsed);
            let attempt = self.attempt(target, request.clone());
            let expired = async {
                self.rpc.sleep(remaining).await;
                Ok(None)
            };
            let attempt = match smol::future::or(async { attempt.await.map(Some) }, expired).await?
            {
                Some(attempt) => {
                    // A change under way is still so only if the node says so again.
                    if !matches!(attempt, Attempt::Wait { .. }) {
                        pending = None;
                    }
                    attempt
                }
                None => Attempt::Retry {
                    next: target,
                    reason: "the deadline passed during the attempt".to_owned(),
                    uncertain: true,
                },
            };
            match attempt {
                Attempt::Done(answer) => {
                    // Only the leader applies commands and changes the membership; a
                    // follower may serve a read.
                    if !matches!(answer, Answer::Value(_) | Answer::ReadThroughLog) {
                        self.set_leader(Some(target));
                    }
                    return Ok(Outcome {
                        node: target,
                        answer,
                        uncertain,
                    });
                }
                Attempt::Redirect(leader) if redirects < self.lock_nodes().len() => {
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
                Attempt::Wait { reason } => {
                    tracing::debug!(node = %target, %reason, "membership change under way");
                    last = format!("{target}: {reason}");
                    // The change may complete after all, even if this leader falls.
                    uncertain = true;
                    pending = Some(reason);
                }
                Attempt::Retry {
                    next,
                    reason,
                    uncertain: maybe_applied,
                } => {
                    tracing::debug!(node = %target, %reason, "attempt failed");
                    last = format!("{target}: {reason}");
                    uncertain |= maybe_applied;
                    if self.leader() == Some(target) {
                        self.set_leader(None);
                    }
                    target = next;
                }
            }
            redirects = 0;
            failures = failures.saturating_add(1);
            let remaining = self.config.deadline.saturating_sub(started.elapsed());
            self.rpc.sleep(self.backoff(failures).min(remaining)).await;
        }
    }

    /// One attempt at `node`.
    async fn attempt(&self, node: NodeId, request: ClientRequest) -> Result<Attempt, ClientError> {
        let next = self.node_after(node);
        let answer = self.rpc.call(node, request).await;
        let attempt = match answer {
            Ok(ClientResponse::Applied(result)) => Attempt::Done(Answer::Applied(result)),
            Ok(ClientResponse::Value { value, .. }) => Attempt::Done(Answer::Value(value)),
            Ok(ClientResponse::ReadThroughLog) => Attempt::Done(Answer::ReadThroughLog),
            Ok(ClientResponse::Members(members)) => {
                Attempt::Done(Answer::Members(Box::new(members)))
            }
            Ok(ClientResponse::ChangeRefused(refused)) => Attempt::Done(Answer::Refused(refused)),
            Ok(ClientResponse::ChangePending { reason }) => Attempt::Wait { reason },
            Ok(ClientResponse::NotLeader {
                leader_hint: Some(leader),
                leader_addr,
            }) if leader != node && self.knows(leader, leader_addr) => Attempt::Redirect(leader),
            Ok(ClientResponse::NotLeader {
                leader_hint: Some(leader),
                ..
            }) if leader != node => Attempt::Retry {
                next,
                reason: format!(
                    "not the leader; it named {leader}, whose client address the configuration does not record"
                ),
                uncertain: false,
            },
            Ok(ClientResponse::NotLeader { .. }) => Attempt::Retry {
                next,
                reason: "not the leader, and it knows no leader".to_owned(),
                uncertain: false,
            },
            // Not applied: the same node may lead again in a moment, but another may
            // have taken over; moving on finds out either way.
            Ok(ClientResponse::NotApplied { reason }) => Attempt::Retry {
                next,
                reason,
                uncertain: false,
            },
            Ok(ClientResponse::OutcomeUnknown { reason }) => Attempt::Retry {
                next,
                reason,
                uncertain: true,
            },
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
                // An unreachable node never saw the request.
                Attempt::Retry {
                    next,
                    reason: describe_failure(&error),
                    uncertain: false,
                }
            }
            Err(error) => Attempt::Retry {
                next,
                reason: describe_failure(&error),
                // An unknown peer never saw the request; any other failure may have come
                // after the node received it.
                uncertain: !matches!(error, TransportError::UnknownPeer(_)),
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
        if let HandshakeError::WrongProtocol { server, .. } = &error
            && let Some(server) = client_protocol_version(server)
        {
            return Some(ClientError::VersionMismatch {
                node,
                addr,
                server,
                ours: CLIENT_PROTOCOL_VERSION,
            });
        }
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
        let nodes = self.nodes();
        let asks = nodes.into_iter().map(|node| async move {
            let status = self.status(node).await;
            (node, status)
        });
        futures::future::join_all(asks).await
    }

    /// The nodes the client knows, by id: the ones it was given, and the leaders it was
    /// sent to since.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.lock_nodes().clone()
    }

    /// The client address of node `node`.
    pub fn node_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.rpc.peer_addr(node)
    }

    /// The node the client takes for the leader, if any.
    pub fn leader(&self) -> Option<NodeId> {
        *self.lock_leader()
    }

    /// Runs the client's connections and timers on `runtime` instead of smol's global
    /// executor (see [`TcpClient::set_runtime`]): call it before the first request. A
    /// program that drives its requests from one thread keeps their connections there
    /// too, so that an answer does not wake another thread (what [`Bench`](crate::Bench)
    /// does).
    pub fn set_runtime<R: Runtime>(&self, runtime: R) {
        self.rpc.set_runtime(runtime);
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

    /// A session with no operation in flight, the most recently used, if any.
    fn take_session(&self) -> Option<Session> {
        self.lock_sessions().pop()
    }

    /// Hands back a session whose operation has ended.
    fn return_session(&self, session: Session) {
        self.lock_sessions().push(session);
    }

    /// Single pushes and pops: a poisoned lock is still consistent.
    fn lock_sessions(&self) -> MutexGuard<'_, Vec<Session>> {
        self.idle_sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Single pushes: a poisoned lock is still consistent.
    fn lock_nodes(&self) -> MutexGuard<'_, Vec<NodeId>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the client can send a request to `node`: it knows it, or learns it now
    /// at `addr` (a leader's client address that came with a redirect).
    fn knows(&self, node: NodeId, addr: Option<SocketAddr>) -> bool {
        if self.lock_nodes().contains(&node) {
            return true;
        }
        match addr {
            Some(addr) => {
                self.learn(node, addr);
                true
            }
            None => false,
        }
    }

    /// Adds `node`, at client address `addr`, to the nodes the client knows. An address
    /// it knows already is kept: the one it was given wins over the configuration's.
    fn learn(&self, node: NodeId, addr: SocketAddr) {
        let mut nodes = self.lock_nodes();
        if let Err(at) = nodes.binary_search(&node) {
            self.rpc.set_peer(node, addr);
            nodes.insert(at, node);
            tracing::debug!(%node, %addr, "learned a node's client address");
        }
    }

    /// Learns the client addresses that a configuration records.
    fn learn_members(&self, members: &ClusterMembers) {
        for (node, addr) in members.client_addrs() {
            self.learn(node, addr);
        }
    }

    fn first_node(&self) -> NodeId {
        self.lock_nodes().first().copied().unwrap_or_default()
    }

    /// The node after `node` in id order, wrapping around.
    fn node_after(&self, node: NodeId) -> NodeId {
        let next = self.lock_nodes().iter().copied().find(|&n| n > node);
        next.unwrap_or_else(|| self.first_node())
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

/// Why a request to a node failed, in a few plain words for a person (the node is not
/// named): the transport's wording without its internals, such as the schedule of its
/// next connection attempt.
pub fn describe_failure(error: &TransportError) -> String {
    match error {
        TransportError::Unreachable { reason, .. } => {
            // `raft-net-smol` ends the reason with "; next attempt in …", or says only
            // that it is backing off.
            let cause = reason.split(';').next().unwrap_or(reason).trim();
            if cause.is_empty() || cause.starts_with("backing off") {
                "unreachable".to_owned()
            } else {
                format!("unreachable ({cause})")
            }
        }
        TransportError::Timeout { after, .. } => format!("no answer within {after:.1?}"),
        TransportError::Failed { reason, .. } => format!("failed: {reason}"),
        other => other.to_string(),
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
            .field("nodes", &self.nodes())
            .field("leader", &self.leader())
            .field("idle_sessions", &self.lock_sessions().len())
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
    fn failures_are_described_without_the_transport_schedule() {
        let refused = TransportError::Unreachable {
            peer: NodeId(2),
            reason: "cannot connect to 127.0.0.1:9: Connection refused (os error 111); \
                     next attempt in 498.245377ms"
                .to_owned(),
        };
        assert_eq!(
            describe_failure(&refused),
            "unreachable (cannot connect to 127.0.0.1:9: Connection refused (os error 111))"
        );
        let backing_off = TransportError::Unreachable {
            peer: NodeId(2),
            reason: "backing off after 3 failed connection attempts; next in 20ms".to_owned(),
        };
        assert_eq!(describe_failure(&backing_off), "unreachable");
        let timeout = TransportError::Timeout {
            peer: NodeId(1),
            after: Duration::from_millis(3000),
        };
        assert_eq!(describe_failure(&timeout), "no answer within 3.0s");
        let unavailable = ClientError::Unavailable {
            after: Duration::from_micros(1_234_567),
            attempts: 4,
            last: format!("n2: {}", describe_failure(&refused)),
        };
        assert_eq!(
            unavailable.to_string(),
            "no leader answered within 1.2s (4 attempts); last: n2: unreachable \
             (cannot connect to 127.0.0.1:9: Connection refused (os error 111))"
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
