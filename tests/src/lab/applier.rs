//! The lab's appliers: the state machine every server runs, which records what each
//! server applied and checks it against the others (LAB-SUITE.md §2.4).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use raft_impl::Raft;
use raft_traits::{LogId, LogIndex, Snapshot, SnapshotMeta, StateMachine, StateMachineError};
use serde::{Deserialize, Serialize};

use super::value::Value;

/// The applier snapshots after applying index `k` when `(k + 1) % SNAPSHOT_INTERVAL == 0`,
/// i.e. at 9, 19, 29, … (the lab's `SnapShotInterval`).
pub const SNAPSHOT_INTERVAL: u64 = 10;

/// The handle type of a lab server.
pub type LabRaft = Raft<Value, ()>;

/// The applied-log record of one cluster, shared by the harness and every server's applier.
///
/// Per server it holds the value applied at each index (index 0 always empty) and the last
/// applied index; for the cluster the highest index any server applied, and every
/// consistency violation seen. Cheap to clone: clones share the record.
#[derive(Clone)]
pub struct AppliedRecord {
    inner: Arc<Mutex<Record>>,
}

struct Record {
    /// `logs[i][k]` is what server `i` applied at index `k`.
    logs: Vec<Vec<Option<Value>>>,
    /// The last index each server applied (or restored a snapshot up to), with its term.
    last_applied: Vec<LogId>,
    /// The instance of each server whose applies are recorded; a restart starts a new one.
    instance: Vec<u64>,
    /// The highest index any server applied.
    max_index: u64,
    /// Every violation, in the order seen.
    errors: Vec<String>,
    /// Whether indices may be skipped (configuration entries).
    configuration_gaps: bool,
}

/// The snapshot format of the lab: the last included index and the values of indices
/// `0..=index`, index 0 empty.
#[derive(Serialize, Deserialize)]
struct LabSnapshot {
    index: u64,
    values: Vec<Option<Value>>,
}

fn encode_snapshot(index: u64, values: Vec<Option<Value>>) -> Bytes {
    let snapshot = LabSnapshot { index, values };
    // Encoding an owned vector of plain enums into a Vec cannot fail.
    Bytes::from(postcard::to_stdvec(&snapshot).expect("a lab snapshot always encodes"))
}

impl AppliedRecord {
    /// An empty record for `n` servers.
    pub fn new(n: usize) -> Self {
        AppliedRecord {
            inner: Arc::new(Mutex::new(Record {
                logs: vec![Vec::new(); n],
                last_applied: vec![LogId::default(); n],
                instance: vec![0; n],
                max_index: 0,
                errors: Vec::new(),
                configuration_gaps: false,
            })),
        }
    }

    /// A record for `n` servers of a cluster whose membership changes: indices that
    /// hold configurations are never applied, so gaps between applied indices are
    /// allowed (order is still checked).
    pub fn with_configuration_gaps(n: usize) -> Self {
        let record = AppliedRecord::new(n);
        record.lock().configuration_gaps = true;
        record
    }

    /// Locks the record. An applier never panics while holding the lock, but a harness
    /// check may; the record is still consistent then, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what server `server` applied, for a new instance `instance` of it: the
    /// 2025 lab's restart, after which the server must re-apply from index 1 (or from its
    /// snapshot) before it counts as having committed anything.
    pub fn reset(&self, server: usize, instance: u64) {
        let mut record = self.lock();
        record.logs[server].clear();
        record.last_applied[server] = LogId::default();
        record.instance[server] = instance;
    }

    /// Stops recording the applies of server `server`'s current instance: any later call
    /// into its state machine is a violation (a node must not apply after `shutdown`).
    pub fn retire(&self, server: usize) {
        self.lock().instance[server] = u64::MAX;
    }

    /// The lab's `nCommitted(index)`: how many servers applied `index`, and the value.
    ///
    /// # Panics
    ///
    /// If two servers applied different values there, or if any violation was recorded.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Value>) {
        let record = self.lock();
        record.panic_on_errors();
        let mut count = 0;
        let mut committed: Option<(usize, &Value)> = None;
        for (server, log) in record.logs.iter().enumerate() {
            let Some(value) = value_at(log, index) else {
                continue;
            };
            if let Some((first, first_value)) = committed
                && first_value != value
            {
                panic!(
                    "committed values do not match: index {index}, server {first} has {first_value}, server {server} has {value}"
                );
            }
            count += 1;
            committed = committed.or(Some((server, value)));
        }
        (count, committed.map(|(_, value)| value.clone()))
    }

    /// The highest index any server applied.
    pub fn max_index(&self) -> u64 {
        self.lock().max_index
    }

    /// The violations recorded so far.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// # Panics
    ///
    /// If any violation was recorded: this is how the harness fails a test for an apply
    /// error, deterministically, at its next check.
    pub fn panic_on_errors(&self) {
        self.lock().panic_on_errors();
    }
}

fn value_at(log: &[Option<Value>], index: u64) -> Option<&Value> {
    let position = usize::try_from(index).ok()?;
    log.get(position).and_then(Option::as_ref)
}

impl Record {
    fn panic_on_errors(&self) {
        if let Some(first) = self.errors.first() {
            panic!(
                "apply error: {first} ({} violation(s) in all: {:?})",
                self.errors.len(),
                self.errors
            );
        }
    }

    fn fail(&mut self, error: String) {
        tracing::error!("apply error: {error}");
        eprintln!("lab: apply error: {error}");
        self.errors.push(error);
    }

    /// The plain applier's checks and record (S24 `checkLogs`): cross-server agreement,
    /// then apply order, then the value is recorded.
    fn check_and_record(&mut self, server: usize, index: u64, value: &Value) {
        let disagreements: Vec<String> = self
            .logs
            .iter()
            .enumerate()
            .filter_map(|(other, log)| {
                let old = value_at(log, index).filter(|old| *old != value)?;
                Some(format!(
                    "commit index={index} server={server} {value} != server={other} {old}"
                ))
            })
            .collect();
        for error in disagreements {
            self.fail(error);
        }
        // Configuration entries are not handed to the state machine, so a cluster whose
        // membership changes applies indices with gaps: there, order means that each
        // index comes after every index this server applied before.
        let previous_applied = index <= 1
            || value_at(&self.logs[server], index - 1).is_some()
            || (self.configuration_gaps
                && self.logs[server]
                    .iter()
                    .skip(usize::try_from(index).unwrap_or(usize::MAX))
                    .all(Option::is_none));
        let log = &mut self.logs[server];
        let position = usize::try_from(index).expect("log index fits in usize");
        if log.len() <= position {
            log.resize(position + 1, None);
        }
        log[position] = Some(value.clone());
        self.max_index = self.max_index.max(index);
        if !previous_applied {
            self.fail(format!("server {server} apply out of order {index}"));
        }
    }
}

impl fmt::Debug for AppliedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = self.lock();
        f.debug_struct("AppliedRecord")
            .field("last_applied", &record.last_applied)
            .field("max_index", &record.max_index)
            .field("errors", &record.errors)
            .finish_non_exhaustive()
    }
}

/// The state machine of one instance of one lab server: the plain applier, or with
/// `snapshots` the snapshot applier.
///
/// * Plain (S24 `applier`): each command must agree with what any server applied at its
///   index, and index `k > 1` needs `k - 1` applied first here.
/// * Snapshot (S24 `applierSnap`): in addition, every command must arrive at exactly
///   `last_applied + 1`; after applying `k` with `(k + 1) % 10 == 0` the applier hands Raft
///   a snapshot of `(k, values 0..=k)` through [`Raft::snapshot`], synchronously from inside
///   `apply`; [`restore`](StateMachine::restore) replaces the server's record with the
///   snapshot's.
///
/// Violations are recorded in the shared [`AppliedRecord`], not panicked on here: the
/// harness fails the test at its next check.
pub struct LabApplier {
    server: usize,
    instance: u64,
    snapshots: bool,
    record: AppliedRecord,
    raft: Arc<OnceLock<LabRaft>>,
}

impl LabApplier {
    /// The applier of instance `instance` of server `server`. `raft` is set to the node's
    /// handle once it is spawned; until then the applier takes no snapshot.
    pub fn new(
        server: usize,
        instance: u64,
        snapshots: bool,
        record: AppliedRecord,
        raft: Arc<OnceLock<LabRaft>>,
    ) -> Self {
        LabApplier {
            server,
            instance,
            snapshots,
            record,
            raft,
        }
    }

    /// Locks the record and checks that this instance is the server's current one.
    fn current(&self, what: &str) -> Option<MutexGuard<'_, Record>> {
        let mut record = self.record.lock();
        if record.instance[self.server] == self.instance {
            Some(record)
        } else {
            let error = format!(
                "server {}: the state machine of a shut-down instance was called ({what})",
                self.server
            );
            record.fail(error);
            None
        }
    }
}

impl fmt::Debug for LabApplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabApplier")
            .field("server", &self.server)
            .field("instance", &self.instance)
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl StateMachine<Value> for LabApplier {
    type Response = ();

    async fn apply(&mut self, log_id: LogId, command: Value) {
        let server = self.server;
        let index = log_id.index.0;
        let snapshot = {
            let Some(mut record) = self.current(&format!("apply {log_id}")) else {
                return;
            };
            let expected = record.last_applied[server].index.0 + 1;
            if self.snapshots && index != expected {
                record.fail(format!(
                    "server {server} apply out of order, expected index {expected}, got {index}"
                ));
            } else {
                record.check_and_record(server, index, &command);
            }
            record.last_applied[server] = log_id;
            if self.snapshots && (index + 1).is_multiple_of(SNAPSHOT_INTERVAL) {
                let log = &record.logs[server];
                let values = (0..=index)
                    .map(|k| value_at(log, k).cloned())
                    .collect::<Vec<_>>();
                Some(encode_snapshot(index, values))
            } else {
                None
            }
        };
        // Outside the record's lock, as the lab calls `Snapshot` from its applier thread.
        // Refused when the node has stopped, or when a snapshot from the leader
        // already covers the index.
        if let (Some(data), Some(raft)) = (snapshot, self.raft.get())
            && let Err(error) = raft.snapshot(LogIndex(index), data)
        {
            tracing::debug!(server, index, %error, "snapshot not taken");
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        let record = self.record.lock();
        let last_applied = record.last_applied[self.server];
        let log = &record.logs[self.server];
        let values = (0..=last_applied.index.0)
            .map(|k| value_at(log, k).cloned())
            .collect();
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: last_applied,
                membership: Default::default(),
            },
            data: encode_snapshot(last_applied.index.0, values),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let server = self.server;
        let offered = snapshot.meta.last_included;
        let Some(mut record) = self.current(&format!("restore {offered}")) else {
            return Ok(());
        };
        match postcard::from_bytes::<LabSnapshot>(&snapshot.data) {
            Err(e) => record.fail(format!(
                "server {server}: cannot decode the snapshot at {offered}: {e}"
            )),
            Ok(decoded) if decoded.index != offered.index.0 => record.fail(format!(
                "server {server}: snapshot doesn't match m.SnapshotIndex: it encodes index {}, Raft says {}",
                decoded.index, offered.index
            )),
            // Like the lab, replace unconditionally: a snapshot older than what was applied
            // rewinds the record, and the next command then fails the order check.
            Ok(decoded) => {
                record.logs[server] = decoded.values;
                record.last_applied[server] = offered;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use raft_traits::Term;

    use super::*;

    fn id(index: u64) -> LogId {
        LogId::new(Term(1), LogIndex(index))
    }

    /// A fresh instance of `server`'s applier, registered in `record`.
    fn applier(record: &AppliedRecord, server: usize, snapshots: bool) -> LabApplier {
        let instance = 10 + server as u64;
        record.reset(server, instance);
        LabApplier::new(
            server,
            instance,
            snapshots,
            record.clone(),
            Arc::new(OnceLock::new()),
        )
    }

    fn apply(applier: &mut LabApplier, index: u64, value: u64) {
        block_on(applier.apply(id(index), Value::Int(value)));
    }

    #[test]
    fn agreeing_servers_count_as_committed() {
        let record = AppliedRecord::new(3);
        let mut a = applier(&record, 0, false);
        let mut b = applier(&record, 1, false);
        for (index, value) in [(1, 10), (2, 20)] {
            apply(&mut a, index, value);
            apply(&mut b, index, value);
        }
        apply(&mut a, 3, 30);
        // Re-applying the same value is accepted by the plain applier.
        apply(&mut a, 3, 30);
        assert_eq!(record.n_committed(2), (2, Some(Value::Int(20))));
        assert_eq!(record.n_committed(3), (1, Some(Value::Int(30))));
        assert_eq!(record.n_committed(4), (0, None));
        assert_eq!(record.max_index(), 3);
        assert!(record.errors().is_empty());
    }

    #[test]
    fn different_values_at_one_index_are_an_error() {
        let record = AppliedRecord::new(2);
        let mut a = applier(&record, 0, false);
        let mut b = applier(&record, 1, false);
        apply(&mut a, 1, 10);
        apply(&mut b, 1, 11);
        let errors = record.errors();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("commit index=1 server=1 11 != server=0 10"));
    }

    #[test]
    fn the_plain_applier_needs_the_previous_index() {
        let record = AppliedRecord::new(1);
        let mut a = applier(&record, 0, false);
        apply(&mut a, 2, 20);
        assert_eq!(record.errors(), ["server 0 apply out of order 2"]);
    }

    #[test]
    fn the_snapshot_applier_needs_exactly_the_next_index() {
        let record = AppliedRecord::new(1);
        let mut a = applier(&record, 0, true);
        apply(&mut a, 1, 10);
        apply(&mut a, 1, 10);
        assert_eq!(
            record.errors(),
            ["server 0 apply out of order, expected index 2, got 1"]
        );
    }

    #[test]
    fn a_snapshot_restores_the_record_of_another_server() {
        let record = AppliedRecord::new(2);
        let mut a = applier(&record, 0, true);
        for index in 1..=12 {
            apply(&mut a, index, index * 10);
        }
        let snapshot = block_on(a.snapshot()).unwrap();
        assert_eq!(snapshot.meta.last_included, id(12));

        let mut b = applier(&record, 1, true);
        block_on(b.restore(snapshot)).unwrap();
        assert_eq!(record.n_committed(12), (2, Some(Value::Int(120))));
        // The next command must be 13.
        apply(&mut b, 13, 130);
        assert!(record.errors().is_empty(), "{:?}", record.errors());
    }

    #[test]
    fn a_snapshot_of_another_index_is_an_error() {
        let record = AppliedRecord::new(1);
        let mut a = applier(&record, 0, true);
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_included: id(9),
                membership: Default::default(),
            },
            data: encode_snapshot(8, vec![None; 9]),
        };
        block_on(a.restore(snapshot)).unwrap();
        assert_eq!(record.errors().len(), 1);
        assert!(record.errors()[0].contains("snapshot doesn't match"));
    }

    #[test]
    fn a_retired_instance_must_not_apply() {
        let record = AppliedRecord::new(1);
        let mut a = applier(&record, 0, false);
        record.retire(0);
        apply(&mut a, 1, 10);
        assert!(record.lock().logs[0].is_empty());
        assert!(record.errors()[0].contains("shut-down instance"));
    }

    #[test]
    #[should_panic(expected = "apply error: server 0 apply out of order 2")]
    fn checks_fail_after_an_apply_error() {
        let record = AppliedRecord::new(1);
        let mut a = applier(&record, 0, false);
        apply(&mut a, 2, 20);
        record.n_committed(1);
    }
}
