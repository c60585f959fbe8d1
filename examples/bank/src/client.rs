//! [`BankClient`]: a client session that finds the leader, times out and retries, and
//! gets each command applied exactly once.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use raft_impl::session::{ClientId, SessionCommand, SessionError, SessionResponse};
use raft_impl::{ProposeError, ReadError};
use raft_traits::{LogIndex, NodeId};

use crate::ledger::{BankCommand, BankError, BankResult, Ledger};
use crate::node::Replica;
use crate::replica::{BankRaft, BankReply, BankRequest};

/// How patient a [`BankClient`] is: start from [`ClientConfig::default`] and change what
/// you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long one attempt (a proposal or a read barrier at one node) may take before
    /// the client stops waiting for it and tries again.
    pub attempt_timeout: Duration,
    /// How long the client keeps trying one command (or read) before it gives up with
    /// [`ClientError::Unavailable`].
    pub give_up_after: Duration,
    /// The first pause before an attempt when no leader is known (an election is under
    /// way); it doubles with each such attempt in a row, up to eight times this.
    pub retry_pause: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attempt_timeout: Duration::from_secs(1),
            give_up_after: Duration::from_secs(20),
            retry_pause: Duration::from_millis(20),
        }
    }
}

/// Why a client's command or read did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The bank refused the command (insufficient funds, no such account, …). It was
    /// applied as a refusal: nothing changed, on any replica.
    #[error(transparent)]
    Bank(#[from] BankError),
    /// The session table refused the command: the session expired (the table evicted it
    /// as least recently used), so the command was not applied now, and an earlier
    /// attempt of it may or may not have been.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No node answered within [`ClientConfig::give_up_after`]. The command may or may
    /// not have been applied: retrying it with [`BankClient::send`] (same session, same
    /// number) is safe, and applies it at most once.
    #[error("no answer within {waited:?} after {attempts} attempts: the outcome is unknown")]
    Unavailable {
        /// How many attempts were made.
        attempts: u32,
        /// How long the client tried.
        waited: Duration,
    },
    /// The client was given no node to reach.
    #[error("no node to reach")]
    NoNodes,
    /// A node answered something a bank command never gets (a registration for a
    /// command): a bug, reported rather than hidden.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// What one attempt at a proposal came to. Everything a caller must know to decide the
/// next step, from [`ProposeError`]'s variants and a timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The command was applied (or, for a retry, answered from the session table).
    Answered(BankReply),
    /// The command will not be applied from this attempt: this node is not the leader
    /// (try `leader_hint`), or is handing leadership over, so it did not append it; or
    /// the entry it appended was overwritten by another leader's before it committed.
    NotAppended {
        /// The leader as far as this node knows.
        leader_hint: Option<NodeId>,
    },
    /// The command may or may not be applied: it was appended at `index`, and the node
    /// stopped leading before it saw the entry commit (`index` known); or no answer came
    /// within the timeout, or the node has stopped (`index` unknown: perhaps never
    /// appended, perhaps committed, with the answer lost). Only a retry *in the same
    /// session, with the same sequence number* is safe: the session table applies it
    /// at most once and hands the retry the first attempt's answer.
    OutcomeUnknown {
        /// Where the command was appended, if the node said.
        index: Option<LogIndex>,
    },
}

/// Proposes `request` at `raft`, waiting at most `timeout` for the answer.
///
/// This is where a proposal's possible outcomes are sorted out (see [`Attempt`]).
/// Dropping the proposal on timeout does not withdraw it: once appended, an entry is in
/// the log whether anyone still waits for its answer or not.
pub async fn propose_with_timeout(
    raft: &BankRaft,
    request: BankRequest,
    timeout: Duration,
) -> Attempt {
    let answer = async { Some(raft.propose(request).await) };
    let expired = async {
        smol::Timer::after(timeout).await;
        None
    };
    match smol::future::or(answer, expired).await {
        Some(Ok(reply)) => Attempt::Answered(reply),
        Some(Err(ProposeError::NotLeader { leader_hint })) => Attempt::NotAppended { leader_hint },
        Some(Err(ProposeError::TransferInProgress { to })) => Attempt::NotAppended {
            leader_hint: Some(to),
        },
        Some(Err(ProposeError::Lost { .. })) => Attempt::NotAppended { leader_hint: None },
        // Usually a node that stopped refused the command, but one that stopped on a
        // fatal error drops the answers it owed, so this cannot be told apart from a
        // command appended before the stop.
        Some(Err(ProposeError::Stopped)) => Attempt::OutcomeUnknown { index: None },
        Some(Err(ProposeError::OutcomeUnknown { index })) => {
            Attempt::OutcomeUnknown { index: Some(index) }
        }
        // `ProposeError` is non-exhaustive: whatever a later version adds, treat it as
        // the cautious case.
        Some(Err(_)) | None => Attempt::OutcomeUnknown { index: None },
    }
}

/// What a client went through so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Commands answered (applied or refused by the bank).
    pub commands: u64,
    /// Answers that came from the session table: a retry of a command that had been
    /// applied already (its first answer was lost, or came too late).
    pub duplicates: u64,
    /// Attempts at a node that did not take the command or read (not the leader), each
    /// followed by one at the leader it named or at the next node.
    pub redirects: u64,
    /// Attempts whose outcome was unknown (a timeout, a leader that stepped down, a
    /// stopped node), each followed by a retry in the session.
    pub unknown_outcomes: u64,
}

/// A client of the bank: one session (Raft thesis §6.3), one command at a time.
///
/// Each command gets the next sequence number of the session and keeps it through
/// every retry, so the session table applies it exactly once however many times it
/// reaches the log. Run several clients for concurrency: a session has one command in
/// flight.
///
/// The client reaches the nodes through their [`Replica`] handles: this example runs
/// every node in one process. A client in another process would send the same numbered
/// commands over the network to a node that proposes them (as `raft-kv`'s client does);
/// the rules for retrying stay the same.
pub struct BankClient {
    replicas: BTreeMap<NodeId, Replica>,
    /// Where the next attempt goes: the last node that answered as leader, or a hint.
    target: NodeId,
    session: ClientId,
    /// The sequence number of the last command numbered in this session.
    last_sequence: u64,
    config: ClientConfig,
    /// The next pause when no leader is known.
    pause: Duration,
    stats: ClientStats,
}

impl BankClient {
    /// Opens a session: a registration in the log, whose index becomes the session's id.
    pub async fn connect(
        replicas: impl IntoIterator<Item = (NodeId, Replica)>,
        config: ClientConfig,
    ) -> Result<BankClient, ClientError> {
        let replicas: BTreeMap<NodeId, Replica> = replicas.into_iter().collect();
        let target = replicas
            .keys()
            .next()
            .copied()
            .ok_or(ClientError::NoNodes)?;
        let mut client = BankClient {
            replicas,
            target,
            session: ClientId::default(),
            last_sequence: 0,
            pause: config.retry_pause,
            config,
            stats: ClientStats::default(),
        };
        // A registration whose answer is lost and is sent again opens a second session;
        // the first is never used and expires in time. Harmless.
        match client.submit(SessionCommand::Register).await? {
            SessionResponse::Registered(session) => client.session = session,
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        }
        Ok(client)
    }

    /// This client's session.
    pub fn session(&self) -> ClientId {
        self.session
    }

    /// What this client went through so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Opens `account`.
    pub async fn open(&mut self, account: &str) -> Result<u64, ClientError> {
        self.execute(BankCommand::Open {
            account: account.to_owned(),
        })
        .await
    }

    /// Deposits `amount` into `account`; answers the new balance.
    pub async fn deposit(&mut self, account: &str, amount: u64) -> Result<u64, ClientError> {
        self.execute(BankCommand::Deposit {
            account: account.to_owned(),
            amount,
        })
        .await
    }

    /// Withdraws `amount` from `account`; answers the new balance, or
    /// [`BankError::InsufficientFunds`].
    pub async fn withdraw(&mut self, account: &str, amount: u64) -> Result<u64, ClientError> {
        self.execute(BankCommand::Withdraw {
            account: account.to_owned(),
            amount,
        })
        .await
    }

    /// Moves `amount` from `from` to `to`; answers `from`'s new balance, or
    /// [`BankError::InsufficientFunds`].
    pub async fn transfer(
        &mut self,
        from: &str,
        to: &str,
        amount: u64,
    ) -> Result<u64, ClientError> {
        self.execute(BankCommand::Transfer {
            from: from.to_owned(),
            to: to.to_owned(),
            amount,
        })
        .await
    }

    /// Numbers `command` in the session and sends it until it is answered.
    pub async fn execute(&mut self, command: BankCommand) -> Result<u64, ClientError> {
        let request = self.number(command);
        self.send(request).await
    }

    /// Numbers `command` in this session: the next sequence number. The request it
    /// returns is what [`send`](Self::send) sends, and sends again, until answered.
    pub fn number(&mut self, command: BankCommand) -> BankRequest {
        self.last_sequence += 1;
        SessionCommand::Request {
            client: self.session,
            sequence: self.last_sequence,
            command,
        }
    }

    /// Sends a request made by [`number`](Self::number), retrying until a node answers
    /// it, and returns the bank's answer. Sending a request again (after
    /// [`ClientError::Unavailable`], or after an attempt whose answer was lost) is
    /// always safe: the session table applies it at most once and answers a retry with
    /// the first answer.
    pub async fn send(&mut self, request: BankRequest) -> Result<u64, ClientError> {
        let answer: BankResult = match self.submit(request).await? {
            SessionResponse::Applied(answer) => answer,
            SessionResponse::Duplicate(answer) => {
                self.stats.duplicates += 1;
                answer
            }
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        self.stats.commands += 1;
        Ok(answer?)
    }

    /// Proposes `request` until some node answers it: follows `NotLeader` hints to the
    /// leader, and retries, unchanged, after every attempt whose outcome is unknown.
    async fn submit(
        &mut self,
        request: BankRequest,
    ) -> Result<SessionResponse<BankResult>, ClientError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(replica) = self.replicas.get(&self.target) else {
                return Err(ClientError::Unexpected(format!("no node {}", self.target)));
            };
            let attempt =
                propose_with_timeout(&replica.raft, request.clone(), self.config.attempt_timeout)
                    .await;
            match attempt {
                Attempt::Answered(reply) => {
                    self.pause = self.config.retry_pause;
                    return Ok(reply?);
                }
                Attempt::NotAppended { leader_hint } => {
                    self.stats.redirects += 1;
                    self.follow(leader_hint).await;
                }
                Attempt::OutcomeUnknown { index } => {
                    self.stats.unknown_outcomes += 1;
                    tracing::debug!(node = %self.target, ?index, "outcome unknown; retrying in the session");
                    // The node asked may be gone (a timeout) or deposed: ask the next
                    // one, which answers or redirects to the leader.
                    self.follow(None).await;
                }
            }
            if started.elapsed() >= self.config.give_up_after {
                return Err(ClientError::Unavailable {
                    attempts,
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// Aims the next attempt: at `leader_hint` if it names a node this client knows,
    /// else at the next node in turn, after a pause that grows while no one knows a
    /// leader (an election is under way; asking again at once would only spin).
    async fn follow(&mut self, leader_hint: Option<NodeId>) {
        if let Some(leader) = leader_hint.filter(|hint| self.replicas.contains_key(hint))
            && leader != self.target
        {
            self.target = leader;
            return;
        }
        self.target = self
            .replicas
            .range(self.target..)
            .nth(1)
            .or_else(|| self.replicas.iter().next())
            .map_or(self.target, |(&id, _)| id);
        smol::Timer::after(self.pause).await;
        self.pause = (self.pause * 2).min(self.config.retry_pause * 8);
    }

    /// The balance of `account`, read linearizably (see [`read`](Self::read)).
    pub async fn balance(&mut self, account: &str) -> Result<u64, ClientError> {
        let balance = self.read(|ledger| ledger.balance(account)).await?;
        balance.ok_or_else(|| {
            BankError::NoSuchAccount {
                account: account.to_owned(),
            }
            .into()
        })
    }

    /// Reads the ledger linearizably, without writing to the log: a read barrier
    /// ([`Raft::read_barrier`](raft_impl::Raft::read_barrier): the leader confirms with
    /// one heartbeat round that it still leads, and the node waits until it has applied
    /// the commit index of that moment), then `read` on the same node's state. The
    /// result reflects every command answered before this call began.
    ///
    /// Reading a node's [`BankView`](crate::BankView) without the barrier would be
    /// faster and wrong: a follower may lag, and a leader deposed by a partition it has
    /// not noticed would answer from a state the new leader has moved past.
    pub async fn read<T>(&mut self, read: impl FnOnce(&Ledger) -> T) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(replica) = self.replicas.get(&self.target) else {
                return Err(ClientError::Unexpected(format!("no node {}", self.target)));
            };
            let barrier = async { Some(replica.raft.read_barrier().await) };
            let expired = async {
                smol::Timer::after(self.config.attempt_timeout).await;
                None
            };
            match smol::future::or(barrier, expired).await {
                // This node has applied everything committed before the read began.
                Some(Ok(_read_index)) => {
                    self.pause = self.config.retry_pause;
                    return Ok(replica.view.inspect(read).await);
                }
                Some(Err(ReadError::NotLeader { leader_hint })) => {
                    self.stats.redirects += 1;
                    self.follow(leader_hint).await;
                }
                // A new leader has not committed an entry of its term yet: it cannot
                // know the commit index. Ask again shortly.
                Some(Err(ReadError::NotReady)) => {
                    smol::Timer::after(self.config.retry_pause).await;
                }
                Some(Err(_)) | None => self.follow(None).await,
            }
            if started.elapsed() >= self.config.give_up_after {
                return Err(ClientError::Unavailable {
                    attempts,
                    waited: started.elapsed(),
                });
            }
        }
    }
}

impl fmt::Debug for BankClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BankClient")
            .field("session", &self.session)
            .field("last_sequence", &self.last_sequence)
            .field("target", &self.target)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
