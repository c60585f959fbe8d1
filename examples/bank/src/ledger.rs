//! [`Ledger`]: the bank's rules, as a deterministic state machine.
//!
//! Everything a replica decides is decided here, from the command and the state alone:
//! whether a withdrawal has the funds, whether an account exists, whether a balance
//! would overflow. Every replica applies the same commands in the same order, so every
//! replica gives the same answers, and a refused command (say, insufficient funds) is
//! refused everywhere. A refusal is a response ([`BankError`]), never a panic: a panic
//! in `apply` would stop the node on input a client chose.

use std::collections::BTreeMap;

use raft_traits::{
    Bytes, Codec, LogId, Postcard, Snapshot, SnapshotJob, SnapshotMeta, StateMachine,
    StateMachineError,
};
use serde::{Deserialize, Serialize};

/// What a client asks of the bank. Amounts are in the smallest unit (cents).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BankCommand {
    /// Opens `account` with a balance of 0.
    Open {
        /// The account's name.
        account: String,
    },
    /// Adds `amount` to `account`.
    Deposit {
        /// The account credited.
        account: String,
        /// How much.
        amount: u64,
    },
    /// Takes `amount` from `account`, if it holds that much.
    Withdraw {
        /// The account debited.
        account: String,
        /// How much.
        amount: u64,
    },
    /// Moves `amount` from `from` to `to`, if `from` holds that much: both or neither.
    Transfer {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// How much.
        amount: u64,
    },
}

/// Why the bank refused a command. Every replica refuses it the same way, and a refused
/// command changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum BankError {
    /// `account` holds less than the amount asked for.
    #[error("insufficient funds in {account}: balance {balance}, asked for {requested}")]
    InsufficientFunds {
        /// The account debited.
        account: String,
        /// What it holds.
        balance: u64,
        /// What was asked for.
        requested: u64,
    },
    /// No account of that name is open.
    #[error("no account {account}")]
    NoSuchAccount {
        /// The name asked for.
        account: String,
    },
    /// An account of that name is already open.
    #[error("account {account} is already open")]
    AccountExists {
        /// The name asked for.
        account: String,
    },
    /// The credit would take the balance past what a `u64` holds.
    #[error("the balance of {account} would overflow")]
    Overflow {
        /// The account credited.
        account: String,
    },
}

/// What applying a [`BankCommand`] answers: the balance of the account it names (for a
/// transfer, of the account debited) after the command, or why it was refused.
pub type BankResult = Result<u64, BankError>;

/// The bank's state: every open account and its balance, and the last command applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    accounts: BTreeMap<String, u64>,
    last_applied: LogId,
}

impl Ledger {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// The balance of `account`, if it is open.
    pub fn balance(&self, account: &str) -> Option<u64> {
        self.accounts.get(account).copied()
    }

    /// Every open account and its balance, by name.
    pub fn accounts(&self) -> &BTreeMap<String, u64> {
        &self.accounts
    }

    /// All the money in the bank (a `u128`: a sum of `u64` balances can exceed one).
    pub fn total(&self) -> u128 {
        self.accounts
            .values()
            .map(|&balance| u128::from(balance))
            .sum()
    }

    /// The log position of the last command applied (or of the restored snapshot).
    pub fn last_applied(&self) -> LogId {
        self.last_applied
    }

    /// Applies `command` by the bank's rules. It checks everything before it changes
    /// anything, so a refused command leaves the ledger as it was.
    pub fn execute(&mut self, command: BankCommand) -> BankResult {
        match command {
            BankCommand::Open { account } => {
                if self.accounts.contains_key(&account) {
                    return Err(BankError::AccountExists { account });
                }
                self.accounts.insert(account, 0);
                Ok(0)
            }
            BankCommand::Deposit { account, amount } => {
                let balance = self.credited(&account, amount)?;
                self.accounts.insert(account, balance);
                Ok(balance)
            }
            BankCommand::Withdraw { account, amount } => {
                let balance = self.debited(&account, amount)?;
                self.accounts.insert(account, balance);
                Ok(balance)
            }
            BankCommand::Transfer { from, to, amount } => {
                let from_balance = self.debited(&from, amount)?;
                if from == to {
                    // Checked above that it holds `amount`; moving it to itself changes
                    // nothing.
                    return Ok(self.balance(&from).unwrap_or_default());
                }
                let to_balance = self.credited(&to, amount)?;
                self.accounts.insert(from, from_balance);
                self.accounts.insert(to, to_balance);
                Ok(from_balance)
            }
        }
    }

    /// `account`'s balance after a credit of `amount`, without changing it.
    fn credited(&self, account: &str, amount: u64) -> BankResult {
        let balance = self.existing(account)?;
        balance
            .checked_add(amount)
            .ok_or_else(|| BankError::Overflow {
                account: account.to_owned(),
            })
    }

    /// `account`'s balance after a debit of `amount`, without changing it.
    fn debited(&self, account: &str, amount: u64) -> BankResult {
        let balance = self.existing(account)?;
        balance
            .checked_sub(amount)
            .ok_or_else(|| BankError::InsufficientFunds {
                account: account.to_owned(),
                balance,
                requested: amount,
            })
    }

    fn existing(&self, account: &str) -> BankResult {
        self.balance(account)
            .ok_or_else(|| BankError::NoSuchAccount {
                account: account.to_owned(),
            })
    }

    /// Reads the bytes of a snapshot: the accounts, encoded with postcard.
    fn decode(data: &[u8]) -> Result<BTreeMap<String, u64>, StateMachineError> {
        Postcard
            .decode(data)
            .map_err(|e| StateMachineError::InvalidSnapshot(format!("bank ledger: {e}")))
    }
}

/// The ledger as Raft sees it. Raft calls `apply` for every committed command, in log
/// order, on every replica; `snapshot` and `restore` carry the state across compaction
/// and to a replica that fell behind it.
impl StateMachine<BankCommand> for Ledger {
    type Response = BankResult;

    async fn apply(&mut self, log_id: LogId, command: BankCommand) -> BankResult {
        self.last_applied = log_id;
        self.execute(command)
    }

    /// The ledger is small: a copy is the cheap handle, encoded on Raft's own task.
    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        let mut copy = self.clone();
        Some(Box::pin(async move { copy.snapshot().await }))
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let data = Postcard
            .encode(&self.accounts)
            .map_err(|e| StateMachineError::Other(Box::new(e)))?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last_applied,
                membership: Default::default(),
            },
            data: Bytes::from(data),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let offered = snapshot.meta.last_included;
        // A state machine never moves backwards.
        StateMachineError::unless_newer(self.last_applied, offered)?;
        self.accounts = Self::decode(&snapshot.data)?;
        self.last_applied = offered;
        Ok(())
    }

    /// Raft asks this before it installs a snapshot from the leader: bytes that do not
    /// decode are refused there, and the node keeps its own state and log.
    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        Self::decode(&snapshot.data).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ledger: &mut Ledger, account: &str, balance: u64) {
        ledger
            .execute(BankCommand::Open {
                account: account.into(),
            })
            .unwrap();
        ledger
            .execute(BankCommand::Deposit {
                account: account.into(),
                amount: balance,
            })
            .unwrap();
    }

    fn transfer(from: &str, to: &str, amount: u64) -> BankCommand {
        BankCommand::Transfer {
            from: from.into(),
            to: to.into(),
            amount,
        }
    }

    #[test]
    fn money_moves_by_the_rules() {
        let mut ledger = Ledger::new();
        open(&mut ledger, "alice", 100);
        open(&mut ledger, "bob", 5);
        assert_eq!(ledger.execute(transfer("alice", "bob", 30)), Ok(70));
        assert_eq!(
            ledger.execute(BankCommand::Withdraw {
                account: "bob".into(),
                amount: 35
            }),
            Ok(0)
        );
        assert_eq!(ledger.balance("alice"), Some(70));
        assert_eq!(ledger.balance("bob"), Some(0));
        assert_eq!(ledger.total(), 70);
    }

    #[test]
    fn insufficient_funds_are_refused_and_change_nothing() {
        let mut ledger = Ledger::new();
        open(&mut ledger, "alice", 100);
        open(&mut ledger, "bob", 0);
        let before = ledger.clone();
        assert_eq!(
            ledger.execute(BankCommand::Withdraw {
                account: "alice".into(),
                amount: 101
            }),
            Err(BankError::InsufficientFunds {
                account: "alice".into(),
                balance: 100,
                requested: 101
            })
        );
        assert_eq!(
            ledger.execute(transfer("bob", "alice", 1)),
            Err(BankError::InsufficientFunds {
                account: "bob".into(),
                balance: 0,
                requested: 1
            })
        );
        // Even to itself: the funds are checked.
        assert_eq!(
            ledger.execute(transfer("alice", "alice", 101)),
            Err(BankError::InsufficientFunds {
                account: "alice".into(),
                balance: 100,
                requested: 101
            })
        );
        assert_eq!(ledger, before);
        assert_eq!(ledger.execute(transfer("alice", "alice", 100)), Ok(100));
        assert_eq!(ledger, before);
    }

    #[test]
    fn unknown_accounts_duplicates_and_overflow_are_refused_and_change_nothing() {
        let mut ledger = Ledger::new();
        open(&mut ledger, "alice", u64::MAX);
        open(&mut ledger, "bob", 1);
        let before = ledger.clone();
        let cases = [
            (
                BankCommand::Open {
                    account: "bob".into(),
                },
                BankError::AccountExists {
                    account: "bob".into(),
                },
            ),
            (
                BankCommand::Deposit {
                    account: "carol".into(),
                    amount: 1,
                },
                BankError::NoSuchAccount {
                    account: "carol".into(),
                },
            ),
            // The debit would succeed; the missing account must still stop it.
            (
                transfer("bob", "carol", 1),
                BankError::NoSuchAccount {
                    account: "carol".into(),
                },
            ),
            (
                transfer("bob", "alice", 1),
                BankError::Overflow {
                    account: "alice".into(),
                },
            ),
        ];
        for (command, refusal) in cases {
            assert_eq!(ledger.execute(command.clone()), Err(refusal), "{command:?}");
            assert_eq!(ledger, before, "{command:?}");
        }
        assert_eq!(ledger.total(), u128::from(u64::MAX) + 1);
    }

    #[test]
    fn a_snapshot_restores_the_same_ledger_and_never_moves_it_backwards() {
        smol::block_on(async {
            let mut ledger = Ledger::new();
            let at = |index| LogId::new(raft_traits::Term(1), raft_traits::LogIndex(index));
            let commands = [
                BankCommand::Open {
                    account: "alice".into(),
                },
                BankCommand::Deposit {
                    account: "alice".into(),
                    amount: 42,
                },
            ];
            for (index, command) in (1..).zip(commands) {
                ledger.apply(at(index), command).await.unwrap();
            }
            let snapshot = ledger.snapshot().await.unwrap();
            assert_eq!(snapshot.meta.last_included, at(2));

            let mut restored = Ledger::new();
            Ledger::check_snapshot(&snapshot).unwrap();
            restored.restore(snapshot.clone()).await.unwrap();
            assert_eq!(restored, ledger);
            assert!(matches!(
                restored.restore(snapshot).await,
                Err(StateMachineError::Stale { .. })
            ));

            let garbage = Snapshot {
                meta: SnapshotMeta {
                    last_included: at(9),
                    membership: Default::default(),
                },
                data: Bytes::from_static(b"\xff\xff\xff"),
            };
            assert!(matches!(
                Ledger::check_snapshot(&garbage),
                Err(StateMachineError::InvalidSnapshot(_))
            ));
            assert!(matches!(
                restored.restore(garbage).await,
                Err(StateMachineError::InvalidSnapshot(_))
            ));
            assert_eq!(restored, ledger);
        });
    }
}
