//! Conformance suites for backends: run one against your [`Storage`], [`StateMachine`],
//! [`Transport`] or [`Runtime`] implementation to check it keeps the contract raft relies
//! on.
//!
//! Each suite takes a factory you write (a fresh instance per case, and for storage a
//! way to reopen the same backing data, as after a restart), runs every case, and
//! returns a [`Report`] naming each failing case with what was expected. A case that
//! panics counts as failed; a case that hangs fails when its time limit runs out.
//!
//! ```
//! use raft_mem::MemStorage;
//! use raft_tests::conformance::{self, storage::StorageFactory};
//! use raft_traits::StorageError;
//!
//! struct Mem;
//! impl StorageFactory for Mem {
//!     type Store = MemStorage<conformance::Cmd>;
//!     fn create(&mut self) -> Result<Self::Store, StorageError> {
//!         Ok(MemStorage::new())
//!     }
//!     fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
//!         Ok(store.copy()) // what survives a restart: everything it stored
//!     }
//! }
//!
//! let report = futures::executor::block_on(conformance::storage::run(&mut Mem));
//! report.assert_passed();
//! ```
//!
//! [`Storage`]: raft_traits::Storage
//! [`StateMachine`]: raft_traits::StateMachine
//! [`Transport`]: raft_traits::Transport
//! [`Runtime`]: raft_traits::Runtime

pub mod runtime;
pub mod state_machine;
pub mod storage;
pub mod transport;

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// The command type the storage and transport suites write and send.
pub type Cmd = Vec<u8>;

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The implementation did what the contract says.
    Passed,
    /// It did not; the text says what was expected and what happened.
    Failed(String),
    /// The case does not apply to this implementation; the text says why.
    Skipped(String),
}

/// What a suite found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Which suite ran.
    pub suite: &'static str,
    /// One entry per case, in the order they ran.
    pub cases: Vec<(&'static str, Outcome)>,
}

impl Report {
    pub(crate) fn new(suite: &'static str) -> Self {
        Report {
            suite,
            cases: Vec::new(),
        }
    }

    /// The failed cases, with what was expected.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.cases
            .iter()
            .filter_map(|(case, outcome)| match outcome {
                Outcome::Failed(why) => Some((*case, why.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Whether the named case failed.
    pub fn failed(&self, case: &str) -> bool {
        self.failures().iter().any(|(name, _)| *name == case)
    }

    /// Panics, listing every failed case, unless all passed (or were skipped).
    pub fn assert_passed(&self) {
        assert!(self.failures().is_empty(), "{self}");
    }

    /// Runs one case, turning a panic into a failure.
    pub(crate) async fn case<F>(&mut self, name: &'static str, case: F)
    where
        F: Future<Output = Result<(), CaseError>>,
    {
        let outcome = match AssertUnwindSafe(case).catch_unwind().await {
            Ok(Ok(())) => Outcome::Passed,
            Ok(Err(CaseError::Failed(why))) => Outcome::Failed(why),
            Ok(Err(CaseError::Skipped(why))) => Outcome::Skipped(why),
            Err(panic) => Outcome::Failed(format!("panicked: {}", panic_message(&*panic))),
        };
        self.cases.push((name, outcome));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().len();
        writeln!(
            f,
            "{} conformance: {} cases, {} failed",
            self.suite,
            self.cases.len(),
            failed
        )?;
        for (case, outcome) in &self.cases {
            match outcome {
                Outcome::Passed => writeln!(f, "  ok      {case}")?,
                Outcome::Failed(why) => writeln!(f, "  FAILED  {case}: {why}")?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {case}: {why}")?,
            }
        }
        Ok(())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_string())
}

/// Why a case did not pass.
#[derive(Debug)]
pub(crate) enum CaseError {
    Failed(String),
    Skipped(String),
}

pub(crate) type CaseResult = Result<(), CaseError>;

/// Fails the case with a message unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err($crate::conformance::CaseError::Failed(format!($($message)+)));
        }
    };
}

/// Fails the case unless `actual == expected`, saying what was expected.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $what:expr) => {{
        let actual = &$actual;
        let expected = &$expected;
        if actual != expected {
            return Err($crate::conformance::CaseError::Failed(format!(
                "{}: expected {:?}, got {:?}",
                $what, expected, actual
            )));
        }
    }};
}

/// Unwraps a result, failing the case with the error if there is one.
macro_rules! ok {
    ($result:expr, $what:expr) => {
        match $result {
            Ok(value) => value,
            Err(error) => {
                return Err($crate::conformance::CaseError::Failed(format!(
                    "{}: unexpected error: {}",
                    $what, error
                )));
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq, ok};
