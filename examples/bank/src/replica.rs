//! [`BankMachine`]: the [`Ledger`] as one replica runs it: in client sessions, shared
//! for reads, and snapshotted when Raft's snapshot policy asks.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use raft_impl::Raft;
use raft_impl::session::{SessionCommand, SessionResult, Sessions};
use raft_traits::{LogId, Snapshot, SnapshotJob, StateMachine, StateMachineError};
use smol::lock::RwLock;

use crate::ledger::{BankCommand, BankResult, Ledger};

/// What the log holds: a bank command numbered in a client session, or a session's
/// registration.
pub type BankRequest = SessionCommand<BankCommand>;

/// What applying a [`BankRequest`] answers: the ledger's answer (applied now, or
/// recorded when a retried command was first applied), or a session error.
pub type BankReply = SessionResult<BankResult>;

/// The Raft handle of a bank node.
pub type BankRaft = Raft<BankRequest, BankReply>;

/// The ledger in its table of client sessions.
pub type BankSessions = Sessions<Ledger, BankResult>;

/// The state machine each bank node hands to [`Raft::spawn`].
///
/// * **Exactly once.** The [`Ledger`] is wrapped in [`Sessions`]: each client numbers its
///   commands, and a command retried with the same number (after a timeout, a lost
///   answer, a leader that died) is answered from the table instead of being applied
///   again. A retried deposit is a retry, not a second deposit.
/// * **Shared for reads.** `spawn` takes the state machine by value and runs it on its
///   own task, so the node keeps a [`BankView`] onto the same state, behind an async
///   read-write lock that `apply` holds only while it applies one command.
/// * **Compaction.** Raft's snapshot policy (`Config::snapshot_after_entries`) asks for a
///   snapshot of the whole state (ledger and session table) between two applies, through
///   [`capture_snapshot`](StateMachine::capture_snapshot): the state machine hands over a
///   copy, Raft encodes it on a task of its own while `apply` goes on, saves it and drops
///   the log it covers. The state machine needs no Raft handle for that.
pub struct BankMachine {
    state: Arc<RwLock<BankSessions>>,
    snapshots: Arc<SnapshotCounts>,
}

/// How many snapshots a replica took and restored.
#[derive(Debug, Default)]
struct SnapshotCounts {
    taken: AtomicU64,
    restored: AtomicU64,
}

impl BankMachine {
    /// An empty bank that keeps at most `max_sessions` client sessions (every node of a
    /// cluster must use the same number).
    pub fn new(max_sessions: NonZeroUsize) -> Self {
        BankMachine {
            state: Arc::new(RwLock::new(Sessions::with_capacity(
                Ledger::new(),
                max_sessions,
            ))),
            snapshots: Arc::default(),
        }
    }

    /// A view of the state, for reading it while Raft owns the state machine.
    pub fn view(&self) -> BankView {
        BankView {
            state: Arc::clone(&self.state),
            snapshots: Arc::clone(&self.snapshots),
        }
    }
}

impl fmt::Debug for BankMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BankMachine")
            .field(
                "snapshots_taken",
                &self.snapshots.taken.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl StateMachine<BankRequest> for BankMachine {
    type Response = BankReply;

    async fn apply(&mut self, log_id: LogId, request: BankRequest) -> BankReply {
        // Readers wait while one command is applied, never longer.
        self.state.write().await.apply(log_id, request).await
    }

    /// Compaction, all of it. Raft's policy calls this between two applies and encodes
    /// the copy on a task of its own, so `apply` waits only for the copy. A bank's ledger
    /// is small and the session table is bounded, so a copy is cheap; a large state
    /// would sit in a persistent map (as raft-mem's KV store does), and capturing it
    /// would clone its root.
    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        // Nothing else writes between two applies; if a reader holds the lock right now,
        // Raft awaits `snapshot` instead.
        let job = self.state.try_write()?.capture_snapshot()?;
        self.snapshots.taken.fetch_add(1, Ordering::Relaxed);
        Some(job)
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let snapshot = self.state.write().await.snapshot().await?;
        self.snapshots.taken.fetch_add(1, Ordering::Relaxed);
        Ok(snapshot)
    }

    /// At start-up from storage, or when the leader sends a snapshot because this
    /// replica is behind its log: the session table comes back with the ledger, so a
    /// retry is recognised on a restored replica as on any other.
    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.state.write().await.restore(snapshot).await?;
        self.snapshots.restored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        BankSessions::check_snapshot(snapshot)
    }
}

/// A read-only view of one replica's state, shared with its [`BankMachine`].
///
/// What it shows is this replica's *applied* state: a follower may lag, and a leader
/// that was deposed without knowing it yet would show a state others have moved past.
/// For a linearizable read, pass [`Raft::read_barrier`] on the same node first (as
/// [`BankClient::balance`](crate::BankClient::balance) does): after it, the view has
/// applied every write that completed before the read began.
#[derive(Clone)]
pub struct BankView {
    state: Arc<RwLock<BankSessions>>,
    snapshots: Arc<SnapshotCounts>,
}

impl BankView {
    /// The balance of `account` in this replica's applied state.
    pub async fn balance(&self, account: &str) -> Option<u64> {
        self.state.read().await.inner().balance(account)
    }

    /// Runs `read` on this replica's applied ledger (holding off `apply` meanwhile).
    pub async fn inspect<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        read(self.state.read().await.inner())
    }

    /// A copy of this replica's applied ledger.
    pub async fn ledger(&self) -> Ledger {
        self.state.read().await.inner().clone()
    }

    /// A copy of this replica's applied state with its session table.
    pub async fn sessions(&self) -> BankSessions {
        self.state.read().await.clone()
    }

    /// How many snapshots this replica handed to Raft (when its snapshot policy asked).
    pub fn snapshots_taken(&self) -> u64 {
        self.snapshots.taken.load(Ordering::Relaxed)
    }

    /// How many snapshots this replica was restored from (from storage at start-up, or
    /// from the leader).
    pub fn snapshots_restored(&self) -> u64 {
        self.snapshots.restored.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for BankView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BankView")
            .field("snapshots_taken", &self.snapshots_taken())
            .field("snapshots_restored", &self.snapshots_restored())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use raft_impl::session::{ClientId, SessionResponse};
    use raft_traits::{LogIndex, Term};

    use super::*;
    use crate::ledger::BankError;

    fn at(index: u64) -> LogId {
        LogId::new(Term(1), LogIndex(index))
    }

    fn deposit(client: ClientId, sequence: u64, amount: u64) -> BankRequest {
        SessionCommand::Request {
            client,
            sequence,
            command: BankCommand::Deposit {
                account: "alice".into(),
                amount,
            },
        }
    }

    /// A replica with a session (registered at index 1) and alice's account (index 2).
    async fn replica() -> (BankMachine, ClientId) {
        let mut machine = BankMachine::new(NonZeroUsize::MIN.saturating_add(9));
        let Ok(SessionResponse::Registered(client)) =
            machine.apply(at(1), SessionCommand::Register).await
        else {
            panic!("no session");
        };
        let open = SessionCommand::Request {
            client,
            sequence: 1,
            command: BankCommand::Open {
                account: "alice".into(),
            },
        };
        assert_eq!(
            machine.apply(at(2), open).await,
            Ok(SessionResponse::Applied(Ok(0)))
        );
        (machine, client)
    }

    #[test]
    fn a_retried_deposit_is_answered_from_the_session_table_and_applied_once() {
        smol::block_on(async {
            let (mut machine, client) = replica().await;
            let view = machine.view();
            assert_eq!(
                machine.apply(at(3), deposit(client, 2, 10)).await,
                Ok(SessionResponse::Applied(Ok(10)))
            );
            // The answer was lost; the client sends the same numbered command again,
            // and it reaches the log a second time.
            assert_eq!(
                machine.apply(at(4), deposit(client, 2, 10)).await,
                Ok(SessionResponse::Duplicate(Ok(10)))
            );
            assert_eq!(view.balance("alice").await, Some(10));
            // A refusal is recorded like any answer: its retry is refused the same way,
            // even if the funds arrived meanwhile.
            let withdraw = SessionCommand::Request {
                client,
                sequence: 3,
                command: BankCommand::Withdraw {
                    account: "alice".into(),
                    amount: 15,
                },
            };
            let refused = Err(BankError::InsufficientFunds {
                account: "alice".into(),
                balance: 10,
                requested: 15,
            });
            assert_eq!(
                machine.apply(at(5), withdraw.clone()).await,
                Ok(SessionResponse::Applied(refused.clone()))
            );
            assert_eq!(
                machine.apply(at(6), deposit(client, 4, 10)).await,
                Ok(SessionResponse::Applied(Ok(20)))
            );
            assert_eq!(
                machine.apply(at(7), withdraw).await,
                Err(raft_impl::session::SessionError::StaleSequence {
                    client,
                    sequence: 3,
                    last: 4
                })
            );
            assert_eq!(view.balance("alice").await, Some(20));
        });
    }

    #[test]
    fn a_snapshot_carries_ledger_and_sessions_to_another_replica() {
        smol::block_on(async {
            let (mut machine, client) = replica().await;
            machine
                .apply(at(3), deposit(client, 2, 25))
                .await
                .expect("applied");
            let snapshot = machine.snapshot().await.expect("snapshot");
            assert_eq!(snapshot.meta.last_included, at(3));

            let mut restored = BankMachine::new(NonZeroUsize::MIN.saturating_add(9));
            let view = restored.view();
            BankMachine::check_snapshot(&snapshot).expect("valid");
            restored.restore(snapshot).await.expect("restored");
            assert_eq!(view.ledger().await, machine.view().ledger().await);
            assert_eq!(view.snapshots_restored(), 1);
            // The restored replica recognises the retry too.
            assert_eq!(
                restored.apply(at(4), deposit(client, 2, 25)).await,
                Ok(SessionResponse::Duplicate(Ok(25)))
            );
            assert_eq!(view.balance("alice").await, Some(25));

            // Bytes that are not a bank snapshot are refused and change nothing.
            let mut garbage = machine.snapshot().await.expect("snapshot");
            garbage.meta.last_included = at(9);
            garbage.data = raft_traits::Bytes::from_static(b"not a bank");
            assert!(BankMachine::check_snapshot(&garbage).is_err());
            assert!(restored.restore(garbage).await.is_err());
            assert_eq!(view.balance("alice").await, Some(25));
        });
    }
}
