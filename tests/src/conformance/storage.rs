//! The [`Storage`] suite: the log model, hard state, snapshots, and that everything
//! survives a reopen.
//!
//! Every case starts from [`StorageFactory::create`]; cases that check durability close
//! the store and open it again with [`StorageFactory::reopen`]. A final case runs random
//! sequences of operations against a simple reference model, reopening at random points.

use raft_traits::{
    Bytes, Entry, HardState, LogId, LogIndex, Membership, NodeId, Payload, PendingSnapshot,
    RecoveredState, Snapshot, SnapshotChecksum, SnapshotMeta, SnapshotReader, SnapshotWriter,
    StagedSnapshot, Storage, StorageError, Term,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{CaseError, CaseResult, Cmd, Report, ensure, ensure_eq, ok};

/// Makes the stores the suite checks.
pub trait StorageFactory {
    /// The store under test.
    type Store: Storage<Cmd>;

    /// A store over fresh, empty backing data.
    fn create(&mut self) -> Result<Self::Store, StorageError>;

    /// Closes `store` and opens its backing data again, as a restarted server would.
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError>;

    /// Whether [`crash`](Self::crash) simulates a crash; the cases that need one are
    /// skipped when it does not.
    fn can_crash(&self) -> bool {
        false
    }

    /// Drops `store` the way a crash would, without closing or flushing anything, and
    /// opens its backing data again: what survives is only what the store made durable.
    /// (A factory whose stores write through to the operating system, as the file store
    /// does, simulates a process crash by dropping and reopening; power loss, which also
    /// loses the operating system's cache, needs a fault-injecting file system.)
    fn crash(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        self.reopen(store)
    }

    /// Whether [`corrupt`](Self::corrupt) damages stored bytes; the case that needs it
    /// is skipped when it does not.
    fn can_corrupt(&self) -> bool {
        false
    }

    /// Closes `store`, changes stored bytes of what `damage` names in its backing data
    /// (as a failing disk would), and opens it again: the result of opening, which may
    /// be the error of a backend that notices the damage there.
    fn corrupt(&mut self, store: Self::Store, damage: Damage) -> Result<Self::Store, StorageError> {
        let _ = damage;
        self.reopen(store)
    }
}

/// Which stored bytes [`StorageFactory::corrupt`] damages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// A byte in the middle of the stored snapshot's data.
    SnapshotData,
    /// A byte of a stored log entry that is neither the first nor the last (damage to
    /// the last one may pass for a write a crash cut short).
    LogEntry,
}

/// How many random operation sequences the model case runs.
pub const MODEL_SEQUENCES: u64 = 40;

/// Runs every case against stores from `factory`.
pub async fn run<F: StorageFactory>(factory: &mut F) -> Report {
    let mut report = Report::new("Storage");
    report
        .case(
            "empty_store_recovers_the_default_state",
            empty_store(factory),
        )
        .await;
    report
        .case("hard_state_round_trips", hard_state_round_trip(factory))
        .await;
    report
        .case("hard_state_survives_reopen", hard_state_reopen(factory))
        .await;
    report
        .case("append_then_read_ranges", append_and_read(factory))
        .await;
    report
        .case("append_must_continue_the_log", append_contiguous(factory))
        .await;
    report
        .case("truncate_removes_a_suffix", truncate_suffix(factory))
        .await;
    report
        .case("truncate_survives_reopen", truncate_reopen(factory))
        .await;
    report
        .case(
            "reads_past_either_end_are_typed_errors",
            out_of_range(factory),
        )
        .await;
    report
        .case(
            "snapshot_keeps_a_matching_log_until_it_is_purged",
            snapshot_keeps_suffix(factory),
        )
        .await;
    report
        .case(
            "purge_keeps_a_trailing_window_across_reopen",
            purge_window(factory),
        )
        .await;
    report
        .case(
            "snapshot_drops_a_conflicting_log",
            snapshot_drops_conflict(factory),
        )
        .await;
    report
        .case(
            "stale_snapshot_is_refused_and_changes_nothing",
            stale_snapshot(factory),
        )
        .await;
    report
        .case(
            "a_bootstrap_record_at_index_zero_is_kept_across_reopen",
            bootstrap_record(factory),
        )
        .await;
    report
        .case(
            "snapshot_and_compaction_survive_reopen",
            snapshot_reopen(factory),
        )
        .await;
    report
        .case(
            "append_continues_after_the_snapshot",
            append_after_snapshot(factory),
        )
        .await;
    report
        .case(
            "acknowledged_writes_survive_a_crash",
            crash_keeps_acknowledged(factory),
        )
        .await;
    report
        .case(
            "a_snapshot_written_in_pieces_reads_back_in_pieces",
            pieces_round_trip(factory),
        )
        .await;
    report
        .case(
            "pieces_out_of_order_or_past_the_size_are_refused",
            pieces_in_order(factory),
        )
        .await;
    report
        .case(
            "finishing_with_wrong_data_installs_nothing",
            finish_checks_data(factory),
        )
        .await;
    report
        .case(
            "pending_snapshots_are_replaced_discarded_and_stale_checked",
            pending_lifecycle(factory),
        )
        .await;
    report
        .case(
            "a_reader_keeps_its_snapshot_after_a_newer_one",
            reader_outlives_snapshot(factory),
        )
        .await;
    report
        .case(
            "a_crash_mid_save_keeps_the_old_snapshot_and_the_written_pieces",
            crash_mid_save(factory),
        )
        .await;
    report
        .case(
            "a_snapshot_taken_in_pieces_is_staged_then_saved",
            staged_round_trip(factory),
        )
        .await;
    report
        .case(
            "a_stale_or_abandoned_staged_snapshot_changes_nothing",
            staged_refused_or_abandoned(factory),
        )
        .await;
    report
        .case(
            "a_crash_while_taking_a_snapshot_keeps_the_old_one",
            crash_while_staging(factory),
        )
        .await;
    report
        .case(
            "damaged_stored_bytes_are_reported_never_served",
            damage_is_detected(factory),
        )
        .await;
    report
        .case(
            "operation_sequences_match_the_reference_model",
            model_sequences(factory),
        )
        .await;
    report
}

fn entry(index: u64, term: u64) -> Entry<Cmd> {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        // Every seventh entry is a configuration, so that stores keep those too.
        payload: if index.is_multiple_of(7) {
            Payload::Membership(Box::new(membership_at(index)))
        } else {
            Payload::Command(format!("entry {index} of term {term}").into_bytes())
        },
    }
}

fn entries(from: u64, terms: &[u64]) -> Vec<Entry<Cmd>> {
    terms
        .iter()
        .enumerate()
        .map(|(offset, &term)| entry(from + offset as u64, term))
        .collect()
}

/// A configuration that differs from index to index, with a learner and addresses, so
/// that a store that loses or mixes up configurations is seen.
fn membership_at(index: u64) -> Membership {
    let voters = (1..=index % 5 + 1).map(|i| (NodeId(i), format!("10.0.0.{i}:7000")));
    Membership::with_addresses(voters).with_learner(NodeId(100 + index), "learner:7000")
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::new(Term(term), LogIndex(index)),
            membership: membership_at(index),
        },
        data: Bytes::from(format!("state up to {index}").into_bytes()),
    }
}

fn indices(entries: &[Entry<Cmd>]) -> Vec<u64> {
    entries.iter().map(|e| e.index.0).collect()
}

fn fresh<F: StorageFactory>(factory: &mut F) -> Result<F::Store, CaseError> {
    factory
        .create()
        .map_err(|e| CaseError::Failed(format!("create failed: {e}")))
}

fn reopen<F: StorageFactory>(factory: &mut F, store: F::Store) -> Result<F::Store, CaseError> {
    factory
        .reopen(store)
        .map_err(|e| CaseError::Failed(format!("reopen failed: {e}")))
}

/// A store holding entries 1..=`count`, all of term 1.
async fn filled<F: StorageFactory>(factory: &mut F, count: u64) -> Result<F::Store, CaseError> {
    let mut store = fresh(factory)?;
    let terms = vec![1; count as usize];
    ok!(store.append(&entries(1, &terms)).await, "append");
    Ok(store)
}

async fn empty_store<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(state, RecoveredState::default(), "state of a new store");
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot"),
        None,
        "snapshot of a new store"
    );
    Ok(())
}

async fn hard_state_round_trip<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    for hard_state in [
        HardState {
            term: Term(1),
            voted_for: Some(NodeId(2)),
        },
        HardState {
            term: Term(1),
            voted_for: Some(NodeId(2)),
        },
        HardState {
            term: Term(4),
            voted_for: None,
        },
    ] {
        ok!(store.save_hard_state(hard_state).await, "save_hard_state");
        let state = ok!(store.recover().await, "recover");
        ensure_eq!(state.hard_state, hard_state, "hard state just saved");
    }
    Ok(())
}

async fn hard_state_reopen<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    let voted = HardState {
        term: Term(7),
        voted_for: Some(NodeId(3)),
    };
    ok!(store.save_hard_state(voted).await, "save_hard_state");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(state.hard_state, voted, "term and vote after reopen");
    Ok(())
}

async fn append_and_read<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    ok!(store.append(&[]).await, "appending nothing");
    ok!(store.append(&entries(1, &[1, 1, 2])).await, "append 1..=3");
    ok!(store.append(&entries(4, &[2, 3])).await, "append 4..=5");
    let all = ok!(
        store.entries(LogIndex(1), LogIndex(6)).await,
        "entries(1, 6)"
    );
    ensure_eq!(all, entries(1, &[1, 1, 2, 2, 3]), "entries 1..6");
    let middle = ok!(
        store.entries(LogIndex(2), LogIndex(4)).await,
        "entries(2, 4)"
    );
    ensure_eq!(indices(&middle), vec![2, 3], "entries 2..4");
    let empty = ok!(
        store.entries(LogIndex(3), LogIndex(3)).await,
        "entries(3, 3)"
    );
    ensure!(
        empty.is_empty(),
        "an empty range reads nothing, got {empty:?}"
    );
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(state.entries, all, "recovered entries");
    Ok(())
}

async fn append_contiguous<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 3).await?;
    for (bad, why) in [
        (vec![entry(5, 1)], "a gap after the last entry"),
        (vec![entry(3, 1)], "an index already held"),
        (vec![entry(4, 1), entry(6, 1)], "a gap inside the batch"),
    ] {
        let result = store.append(&bad).await;
        ensure!(
            matches!(result, Err(StorageError::NotContiguous { .. })),
            "{why}: expected NotContiguous, got {result:?}"
        );
    }
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(
        indices(&state.entries),
        vec![1, 2, 3],
        "log after refused appends"
    );
    Ok(())
}

async fn truncate_suffix<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 5).await?;
    ok!(
        store.truncate_from(LogIndex(9)).await,
        "truncating past the end"
    );
    ok!(store.truncate_from(LogIndex(4)).await, "truncate_from(4)");
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(
        indices(&state.entries),
        vec![1, 2, 3],
        "log after truncate_from(4)"
    );
    ok!(
        store.append(&entries(4, &[2])).await,
        "append at 4 after the truncation"
    );
    let read = ok!(
        store.entries(LogIndex(3), LogIndex(5)).await,
        "entries(3, 5)"
    );
    ensure_eq!(
        read,
        vec![entry(3, 1), entry(4, 2)],
        "entries around the truncation"
    );
    Ok(())
}

async fn truncate_reopen<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 6).await?;
    ok!(store.truncate_from(LogIndex(3)).await, "truncate_from(3)");
    ok!(
        store.append(&entries(3, &[5])).await,
        "append a replacement"
    );
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(
        state.entries,
        vec![entry(1, 1), entry(2, 1), entry(3, 5)],
        "the truncated suffix stays gone after reopen"
    );
    Ok(())
}

async fn out_of_range<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 5).await?;
    // Unavailable carries the first requested index the store does not hold.
    let past = store.entries(LogIndex(4), LogIndex(8)).await;
    ensure!(
        matches!(past, Err(StorageError::Unavailable { index: LogIndex(6) })),
        "reading 4..8 of 1..=5: expected Unavailable {{ index: 6 }}, got {past:?}"
    );
    let beyond = store.entries(LogIndex(8), LogIndex(9)).await;
    ensure!(
        matches!(
            beyond,
            Err(StorageError::Unavailable { index: LogIndex(8) })
        ),
        "reading 8..9 of 1..=5: expected Unavailable {{ index: 8 }}, got {beyond:?}"
    );
    // Index 0 never holds an entry: it counts as compacted, even in an empty range.
    let zero = store.entries(LogIndex(0), LogIndex(2)).await;
    ensure!(
        matches!(zero, Err(StorageError::Compacted { index: LogIndex(0) })),
        "reading from index 0: expected Compacted {{ index: 0 }}, got {zero:?}"
    );
    // Otherwise an empty or reversed range is empty, wherever it lies.
    for (from, to) in [(3, 3), (4, 2), (9, 9), (9, 2)] {
        let read = ok!(
            store.entries(LogIndex(from), LogIndex(to)).await,
            format!("entries({from}, {to})")
        );
        ensure!(
            read.is_empty(),
            "entries({from}, {to}) is an empty range, got {:?}",
            indices(&read)
        );
    }
    ok!(
        store.save_snapshot(snapshot(3, 1)).await,
        "save_snapshot(3)"
    );
    let window = ok!(
        store.entries(LogIndex(2), LogIndex(5)).await,
        "entries(2, 5) before any purge"
    );
    ensure_eq!(
        indices(&window),
        vec![2, 3, 4],
        "entries the snapshot covers stay readable until purged"
    );
    let truncate = store.truncate_from(LogIndex(3)).await;
    ensure!(
        matches!(
            truncate,
            Err(StorageError::Compacted { index: LogIndex(3) })
        ),
        "truncating at an index the snapshot covers: expected Compacted {{ index: 3 }}, got {truncate:?}"
    );
    ok!(store.purge_to(LogIndex(3)).await, "purge_to(3)");
    let inside = store.entries(LogIndex(2), LogIndex(5)).await;
    ensure!(
        matches!(inside, Err(StorageError::Compacted { index: LogIndex(2) })),
        "reading from a purged index: expected Compacted {{ index: 2 }} (the requested index), got {inside:?}"
    );
    let truncate = store.truncate_from(LogIndex(3)).await;
    ensure!(
        matches!(
            truncate,
            Err(StorageError::Compacted { index: LogIndex(3) })
        ),
        "truncating inside the compacted prefix: expected Compacted {{ index: 3 }}, got {truncate:?}"
    );
    let after = ok!(
        store.entries(LogIndex(4), LogIndex(6)).await,
        "entries(4, 6)"
    );
    ensure_eq!(indices(&after), vec![4, 5], "entries after the snapshot");
    Ok(())
}

async fn snapshot_keeps_suffix<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 6).await?;
    ok!(
        store.save_snapshot(snapshot(4, 1)).await,
        "save_snapshot(4)"
    );
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(
        indices(&state.entries),
        vec![1, 2, 3, 4, 5, 6],
        "a log matching the snapshot is kept whole until purged"
    );
    ok!(store.purge_to(LogIndex(4)).await, "purge_to(4)");
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(
        state.snapshot,
        Some(snapshot(4, 1).meta),
        "snapshot metadata"
    );
    ensure_eq!(
        indices(&state.entries),
        vec![5, 6],
        "entries after a matching snapshot"
    );
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot"),
        Some(snapshot(4, 1)),
        "stored snapshot"
    );
    Ok(())
}

async fn purge_window<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    let early = store.purge_to(LogIndex(2)).await;
    ensure!(
        matches!(
            early,
            Err(StorageError::NotCovered {
                index: LogIndex(2),
                covered: LogIndex(0)
            })
        ),
        "purging without a snapshot: expected NotCovered {{ index: 2, covered: 0 }}, got {early:?}"
    );
    ok!(
        store.save_snapshot(snapshot(6, 1)).await,
        "save_snapshot(6)"
    );
    let far = store.purge_to(LogIndex(7)).await;
    ensure!(
        matches!(
            far,
            Err(StorageError::NotCovered {
                index: LogIndex(7),
                covered: LogIndex(6)
            })
        ),
        "purging past the snapshot: expected NotCovered {{ index: 7, covered: 6 }}, got {far:?}"
    );
    ok!(store.purge_to(LogIndex(3)).await, "purge_to(3)");
    ok!(store.purge_to(LogIndex(2)).await, "purging what is gone");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(
        indices(&state.entries),
        vec![4, 5, 6, 7, 8],
        "the trailing window and the entries after the snapshot after reopen"
    );
    let window = ok!(
        store.entries(LogIndex(4), LogIndex(7)).await,
        "entries(4, 7) after reopen"
    );
    ensure_eq!(window, entries(4, &[1, 1, 1]), "window entries");
    ok!(
        store.append(&entries(9, &[2])).await,
        "append after the window"
    );
    ok!(store.purge_to(LogIndex(6)).await, "purge_to(6)");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(
        indices(&state.entries),
        vec![7, 8, 9],
        "log after purging all the snapshot covers"
    );
    Ok(())
}

async fn snapshot_drops_conflict<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 6).await?;
    ok!(
        store.save_snapshot(snapshot(4, 2)).await,
        "save_snapshot(4, term 2)"
    );
    let state = ok!(store.recover().await, "recover");
    ensure!(
        state.entries.is_empty(),
        "a log holding index 4 with another term conflicts with the snapshot and must go, got {:?}",
        indices(&state.entries)
    );
    let mut store = filled(factory, 2).await?;
    ok!(
        store.save_snapshot(snapshot(9, 3)).await,
        "save_snapshot past the end"
    );
    let state = ok!(store.recover().await, "recover");
    ensure!(
        state.entries.is_empty(),
        "a shorter log is replaced by the snapshot"
    );
    ok!(
        store.append(&entries(10, &[3])).await,
        "append right after the snapshot"
    );
    Ok(())
}

async fn stale_snapshot<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    ok!(
        store.save_snapshot(snapshot(5, 1)).await,
        "save_snapshot(5)"
    );
    ok!(store.purge_to(LogIndex(5)).await, "purge_to(5)");
    // "Newer" compares indices: one at the stored index is stale whatever its term.
    for older in [snapshot(5, 1), snapshot(5, 2), snapshot(3, 1)] {
        let result = store.save_snapshot(older.clone()).await;
        ensure!(
            matches!(result, Err(StorageError::StaleSnapshot { .. })),
            "a snapshot at {} after one at 5: expected StaleSnapshot, got {result:?}",
            older.meta.last_included
        );
    }
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot"),
        Some(snapshot(5, 1)),
        "snapshot kept"
    );
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(indices(&state.entries), vec![6, 7, 8], "log kept");
    Ok(())
}

/// Raft records the configuration a cluster starts from as a first snapshot at index 0
/// (empty data, nothing compacted); a later real snapshot replaces it.
async fn bootstrap_record<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    let record = Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::default(),
            membership: membership_at(3),
        },
        data: Bytes::new(),
    };
    ok!(
        store.save_snapshot(record.clone()).await,
        "save_snapshot(0) on a fresh store"
    );
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(state.snapshot, Some(record.meta.clone()), "record kept");
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot"),
        Some(record.clone()),
        "record data kept"
    );
    ok!(store.append(&entries(1, &[1, 1, 1])).await, "append from 1");
    let again = store.save_snapshot(record).await;
    ensure!(
        matches!(again, Err(StorageError::StaleSnapshot { .. })),
        "a second snapshot at 0: expected StaleSnapshot, got {again:?}"
    );
    ok!(
        store.save_snapshot(snapshot(2, 1)).await,
        "a real snapshot after the record"
    );
    ok!(store.purge_to(LogIndex(2)).await, "purge_to(2)");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(state.snapshot, Some(snapshot(2, 1).meta), "replaced");
    ensure_eq!(indices(&state.entries), vec![3], "log after it");
    Ok(())
}

async fn snapshot_reopen<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 7).await?;
    ok!(
        store
            .save_hard_state(HardState {
                term: Term(2),
                voted_for: Some(NodeId(1))
            })
            .await,
        "save_hard_state"
    );
    ok!(
        store.save_snapshot(snapshot(5, 1)).await,
        "save_snapshot(5)"
    );
    ok!(store.purge_to(LogIndex(5)).await, "purge_to(5)");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(
        state.snapshot,
        Some(snapshot(5, 1).meta),
        "snapshot metadata after reopen"
    );
    ensure_eq!(
        indices(&state.entries),
        vec![6, 7],
        "compacted log after reopen"
    );
    ensure_eq!(
        state.hard_state,
        HardState {
            term: Term(2),
            voted_for: Some(NodeId(1))
        },
        "hard state after reopen"
    );
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot"),
        Some(snapshot(5, 1)),
        "snapshot data after reopen"
    );
    Ok(())
}

async fn append_after_snapshot<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    ok!(
        store.save_snapshot(snapshot(10, 2)).await,
        "save_snapshot(10) on an empty store"
    );
    let early = store.append(&entries(5, &[2])).await;
    ensure!(
        matches!(early, Err(StorageError::NotContiguous { .. })),
        "appending inside the snapshot: expected NotContiguous, got {early:?}"
    );
    ok!(store.append(&entries(11, &[2, 3])).await, "append 11..=12");
    let mut store = reopen(factory, store)?;
    let state = ok!(store.recover().await, "recover after reopen");
    ensure_eq!(
        indices(&state.entries),
        vec![11, 12],
        "entries after the snapshot"
    );
    Ok(())
}

/// Every kind of write, each acknowledged, then a crash: all must be there after it.
async fn crash_keeps_acknowledged<F: StorageFactory>(factory: &mut F) -> CaseResult {
    if !factory.can_crash() {
        return Err(CaseError::Skipped(
            "the factory cannot simulate a crash".to_owned(),
        ));
    }
    let mut store = filled(factory, 6).await?;
    let voted = HardState {
        term: Term(3),
        voted_for: Some(NodeId(2)),
    };
    ok!(store.save_hard_state(voted).await, "save_hard_state");
    ok!(store.truncate_from(LogIndex(6)).await, "truncate_from(6)");
    ok!(store.append(&entries(6, &[3, 3])).await, "append 6..=7");
    ok!(
        store.save_snapshot(snapshot(4, 1)).await,
        "save_snapshot(4)"
    );
    ok!(store.purge_to(LogIndex(2)).await, "purge_to(2)");
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    let state = ok!(store.recover().await, "recover after a crash");
    let expected = RecoveredState {
        hard_state: voted,
        snapshot: Some(snapshot(4, 1).meta),
        entries: [entries(3, &[1, 1, 1]), entries(6, &[3, 3])].concat(),
    };
    ensure_eq!(state, expected, "state after a crash");
    ensure_eq!(
        ok!(store.snapshot().await, "snapshot after a crash"),
        Some(snapshot(4, 1)),
        "snapshot data after a crash"
    );
    Ok(())
}

/// The size of [`large_snapshot`]'s data: larger than any piece the cases write or read.
const LARGE: usize = 300_000;

/// A snapshot at `index` whose data (`len` bytes) differs at every position, so that a
/// piece stored at the wrong place or twice is seen.
fn large_snapshot(index: u64, term: u64, len: usize) -> Snapshot {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift64: cheap, deterministic, no repeating short period.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    Snapshot {
        meta: snapshot(index, term).meta,
        data: Bytes::from(data),
    }
}

/// Writes `data[from..]` in pieces of varying sizes (up to `max_piece`), checking after
/// each that the pending snapshot reports the bytes written.
async fn write_pieces<S: Storage<Cmd>>(
    store: &mut S,
    data: &Bytes,
    from: usize,
    max_piece: usize,
) -> CaseResult {
    let mut offset = from;
    let mut step = 0usize;
    while offset < data.len() {
        // Sizes cycle through 1, max/3, max/2, max so that pieces straddle every
        // boundary a backend might have.
        let size = [1, max_piece / 3, max_piece / 2, max_piece][step % 4].max(1);
        step += 1;
        let end = (offset + size).min(data.len());
        ok!(
            store
                .write_snapshot_chunk(offset as u64, data.slice(offset..end))
                .await,
            format!("write_snapshot_chunk({offset}, {} bytes)", end - offset)
        );
        offset = end;
        let pending = ok!(store.pending_snapshot().await, "pending_snapshot");
        let Some(reported) = &pending else {
            return Err(CaseError::Failed(format!(
                "after writing up to {offset}: no pending snapshot"
            )));
        };
        let mut expected = SnapshotChecksum::new(reported.descriptor.meta.last_included);
        expected.update(&data[..offset]);
        ensure!(
            reported.checksum == expected.value(),
            "after writing up to {offset}: pending checksum {:#010x}, expected {:#010x}",
            reported.checksum,
            expected.value()
        );
        ensure!(
            pending.as_ref().map(|p| p.written) == Some(offset as u64),
            "after writing up to {offset}: pending_snapshot reports {:?}",
            pending.map(|p| p.written)
        );
    }
    Ok(())
}

/// Reads a reader's whole data in pieces of `piece` bytes, checking each piece's length.
async fn read_pieces(reader: &dyn SnapshotReader, piece: usize) -> Result<Vec<u8>, CaseError> {
    let len = reader.len();
    let mut data = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let bytes = ok!(
            reader.read_at(offset, piece).await,
            format!("read_at({offset}, {piece})")
        );
        let expected = (len - offset).min(piece as u64);
        ensure!(
            bytes.len() as u64 == expected,
            "read_at({offset}, {piece}) of {len} bytes returned {} bytes, not {expected}",
            bytes.len()
        );
        offset += bytes.len() as u64;
        data.extend_from_slice(&bytes);
    }
    Ok(data)
}

/// Opens the stored snapshot and checks its descriptor and data against `expected`.
async fn check_stored<S: Storage<Cmd>>(
    store: &mut S,
    expected: &Snapshot,
    what: &str,
) -> CaseResult {
    let opened = ok!(
        store.open_snapshot().await,
        format!("open_snapshot ({what})")
    );
    let Some((descriptor, reader)) = opened else {
        return Err(CaseError::Failed(format!("{what}: no snapshot stored")));
    };
    ensure_eq!(
        descriptor,
        expected.descriptor(),
        format!("descriptor ({what})")
    );
    ensure_eq!(
        reader.len(),
        expected.data.len() as u64,
        format!("reader length ({what})")
    );
    let data = read_pieces(reader.as_ref(), 7_000).await?;
    ensure!(
        data == expected.data,
        "{what}: the data read back in pieces differs from the data written"
    );
    let end = ok!(reader.read_at(reader.len(), 10).await, "read_at(len)");
    ensure!(
        end.is_empty(),
        "{what}: read_at(len) returned {} bytes",
        end.len()
    );
    let past = reader.read_at(reader.len() + 1, 10).await;
    ensure!(
        matches!(past, Err(StorageError::SnapshotRange { .. })),
        "{what}: read_at(len + 1): expected SnapshotRange, got {past:?}"
    );
    Ok(())
}

/// Checks that `snapshot` was just installed over a log of entries `1..=last`, which
/// matches it: no pending snapshot is left, the snapshot reads back, the log is kept
/// whole; and again after a reopen. Returns the reopened store.
async fn check_installed<F: StorageFactory>(
    factory: &mut F,
    mut store: F::Store,
    snapshot: &Snapshot,
    last: u64,
    how: &str,
) -> Result<F::Store, CaseError> {
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        None,
        format!("pending snapshot once one is {how}")
    );
    check_stored(&mut store, snapshot, how).await?;
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(state.snapshot, Some(snapshot.meta.clone()), "snapshot meta");
    ensure_eq!(
        indices(&state.entries),
        (1..=last).collect::<Vec<_>>(),
        "a matching log is kept"
    );
    let mut store = reopen(factory, store)?;
    check_stored(&mut store, snapshot, &format!("{how}, after reopen")).await?;
    Ok(store)
}

async fn pieces_round_trip<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    let big = large_snapshot(6, 1, LARGE);
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        None,
        "pending snapshot of a store that never began one"
    );
    ok!(
        store.begin_snapshot(big.descriptor()).await,
        "begin_snapshot(6)"
    );
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        Some(PendingSnapshot {
            descriptor: big.descriptor(),
            written: 0,
            checksum: SnapshotChecksum::new(big.meta.last_included).value(),
        }),
        "pending snapshot just begun"
    );
    ensure_eq!(
        ok!(store.recover().await, "recover").snapshot,
        None,
        "stored snapshot while one is pending"
    );
    write_pieces(&mut store, &big.data, 0, 64 * 1024).await?;
    let finished = ok!(store.finish_snapshot().await, "finish_snapshot");
    ensure_eq!(finished, big.descriptor(), "finish_snapshot's descriptor");
    let mut store = check_installed(factory, store, &big, 8, "finished").await?;
    let whole = ok!(store.snapshot().await, "snapshot");
    ensure!(
        whole.as_ref() == Some(&big),
        "snapshot() after reopen differs"
    );
    Ok(())
}

async fn pieces_in_order<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = fresh(factory)?;
    let big = large_snapshot(4, 1, 10_000);
    let orphan = store.write_snapshot_chunk(0, big.data.slice(0..10)).await;
    ensure!(
        matches!(orphan, Err(StorageError::NoPendingSnapshot)),
        "a piece without begin_snapshot: expected NoPendingSnapshot, got {orphan:?}"
    );
    let finish = store.finish_snapshot().await;
    ensure!(
        matches!(finish, Err(StorageError::NoPendingSnapshot)),
        "finish without begin_snapshot: expected NoPendingSnapshot, got {finish:?}"
    );
    ok!(
        store.begin_snapshot(big.descriptor()).await,
        "begin_snapshot(4)"
    );
    ok!(
        store.write_snapshot_chunk(0, big.data.slice(0..1000)).await,
        "first piece"
    );
    for (offset, what) in [
        (0u64, "duplicate"),
        (500, "overlapping"),
        (1001, "gap"),
        (5000, "far gap"),
    ] {
        let end = (offset as usize + 1000).min(big.data.len());
        let result = store
            .write_snapshot_chunk(offset, big.data.slice(offset as usize..end))
            .await;
        ensure!(
            matches!(result, Err(StorageError::SnapshotOffset { expected: 1000, found }) if found == offset),
            "a {what} piece at {offset}: expected SnapshotOffset {{ expected: 1000, found: {offset} }}, got {result:?}"
        );
    }
    let past = store
        .write_snapshot_chunk(1000, Bytes::from(vec![0u8; 9_001]))
        .await;
    ensure!(
        matches!(past, Err(StorageError::SnapshotRange { .. })),
        "a piece running past the size: expected SnapshotRange, got {past:?}"
    );
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot").map(|p| p.written),
        Some(1000),
        "bytes written after refused pieces"
    );
    ok!(
        store.write_snapshot_chunk(1000, Bytes::new()).await,
        "an empty piece"
    );
    write_pieces(&mut store, &big.data, 1000, 3000).await?;
    ok!(store.finish_snapshot().await, "finish_snapshot");
    check_stored(&mut store, &big, "after refused pieces").await
}

async fn finish_checks_data<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    ok!(
        store.save_snapshot(snapshot(3, 1)).await,
        "save_snapshot(3)"
    );
    let big = large_snapshot(6, 1, 20_000);
    // The right size with one byte changed, then one byte short.
    let mut flipped = big.data.to_vec();
    flipped[12_345] ^= 0x40;
    let flipped = Bytes::from(flipped);
    let short = big.data.slice(..big.data.len() - 1);
    for (data, what) in [(flipped, "a changed byte"), (short, "a missing byte")] {
        ok!(
            store.begin_snapshot(big.descriptor()).await,
            "begin_snapshot(6)"
        );
        write_pieces(&mut store, &data, 0, 4096).await?;
        let result = store.finish_snapshot().await;
        ensure!(
            matches!(result, Err(StorageError::SnapshotMismatch { .. })),
            "finishing with {what}: expected SnapshotMismatch, got {result:?}"
        );
        ensure_eq!(
            ok!(store.pending_snapshot().await, "pending_snapshot"),
            None,
            format!("pending snapshot after finishing with {what}")
        );
        check_stored(
            &mut store,
            &snapshot(3, 1),
            &format!("after finishing with {what}"),
        )
        .await?;
        let state = ok!(store.recover().await, "recover");
        ensure_eq!(
            indices(&state.entries),
            (1..=8).collect::<Vec<_>>(),
            format!("log after finishing with {what}")
        );
    }
    let mut store = reopen(factory, store)?;
    check_stored(
        &mut store,
        &snapshot(3, 1),
        "after refused finishes and a reopen",
    )
    .await
}

async fn pending_lifecycle<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    ok!(
        store.save_snapshot(snapshot(5, 1)).await,
        "save_snapshot(5)"
    );
    for stale in [large_snapshot(5, 2, 100), large_snapshot(4, 1, 100)] {
        let result = store.begin_snapshot(stale.descriptor()).await;
        ensure!(
            matches!(result, Err(StorageError::StaleSnapshot { .. })),
            "begin_snapshot at {} after one at 5: expected StaleSnapshot, got {result:?}",
            stale.meta.last_included
        );
    }
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        None,
        "after stale begins"
    );
    // A newer begin replaces the pending one.
    let six = large_snapshot(6, 1, 5_000);
    let seven = large_snapshot(7, 1, 6_000);
    ok!(
        store.begin_snapshot(six.descriptor()).await,
        "begin_snapshot(6)"
    );
    ok!(
        store.write_snapshot_chunk(0, six.data.slice(0..2000)).await,
        "piece of 6"
    );
    ok!(
        store.begin_snapshot(seven.descriptor()).await,
        "begin_snapshot(7)"
    );
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        Some(PendingSnapshot {
            descriptor: seven.descriptor(),
            written: 0,
            checksum: SnapshotChecksum::new(seven.meta.last_included).value(),
        }),
        "pending snapshot replaced by a newer begin"
    );
    // Aborting discards it, durably.
    ok!(
        store
            .write_snapshot_chunk(0, seven.data.slice(0..100))
            .await,
        "piece of 7"
    );
    ok!(store.abort_snapshot().await, "abort_snapshot");
    ok!(
        store.abort_snapshot().await,
        "abort_snapshot without a pending one"
    );
    let mut store = reopen(factory, store)?;
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        None,
        "after abort and reopen"
    );
    // A whole snapshot saved meanwhile discards a pending one; a pending one that is no
    // longer newer when it finishes is refused.
    ok!(
        store.begin_snapshot(seven.descriptor()).await,
        "begin_snapshot(7)"
    );
    ok!(
        store.save_snapshot(snapshot(6, 1)).await,
        "save_snapshot(6) while 7 is pending"
    );
    let finish = store.finish_snapshot().await;
    ensure!(
        matches!(finish, Err(StorageError::NoPendingSnapshot)),
        "finish after save_snapshot discarded the pending one: expected NoPendingSnapshot, got {finish:?}"
    );
    ok!(
        store.begin_snapshot(seven.descriptor()).await,
        "begin_snapshot(7)"
    );
    write_pieces(&mut store, &seven.data, 0, 4096).await?;
    ok!(store.finish_snapshot().await, "finish_snapshot(7)");
    check_stored(&mut store, &seven, "after the lifecycle").await
}

async fn reader_outlives_snapshot<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    let old = large_snapshot(4, 1, 50_000);
    ok!(store.save_snapshot(old.clone()).await, "save_snapshot(4)");
    let Some((_, reader)) = ok!(store.open_snapshot().await, "open_snapshot") else {
        return Err(CaseError::Failed("no snapshot after saving one".to_owned()));
    };
    let first = ok!(reader.read_at(0, 1000).await, "read_at(0)");
    ensure!(first == old.data.slice(0..1000), "first piece differs");
    let new = large_snapshot(7, 1, 70_000);
    ok!(
        store.begin_snapshot(new.descriptor()).await,
        "begin_snapshot(7)"
    );
    write_pieces(&mut store, &new.data, 0, 16 * 1024).await?;
    ok!(store.finish_snapshot().await, "finish_snapshot(7)");
    ok!(store.purge_to(LogIndex(7)).await, "purge_to(7)");
    ensure_eq!(reader.len(), old.data.len() as u64, "old reader's length");
    let data = read_pieces(reader.as_ref(), 9_999).await?;
    ensure!(
        data == old.data,
        "the old reader no longer reads the old snapshot's data"
    );
    check_stored(&mut store, &new, "the new snapshot").await
}

async fn crash_mid_save<F: StorageFactory>(factory: &mut F) -> CaseResult {
    if !factory.can_crash() {
        return Err(CaseError::Skipped(
            "the factory cannot simulate a crash".to_owned(),
        ));
    }
    let mut store = filled(factory, 8).await?;
    let old = large_snapshot(3, 1, 40_000);
    ok!(store.save_snapshot(old.clone()).await, "save_snapshot(3)");
    let big = large_snapshot(8, 1, LARGE);
    ok!(
        store.begin_snapshot(big.descriptor()).await,
        "begin_snapshot(8)"
    );
    let half = LARGE / 2;
    write_pieces(&mut store, &big.data.slice(..half), 0, 32 * 1024).await?;
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    let state = ok!(store.recover().await, "recover after a crash");
    ensure_eq!(
        state.snapshot,
        Some(old.meta.clone()),
        "stored snapshot after a crash mid-save"
    );
    ensure_eq!(
        indices(&state.entries),
        (1..=8).collect::<Vec<_>>(),
        "log after a crash mid-save"
    );
    check_stored(&mut store, &old, "after a crash mid-save").await?;
    let pending = ok!(
        store.pending_snapshot().await,
        "pending_snapshot after a crash"
    );
    let Some(PendingSnapshot {
        descriptor,
        written,
        checksum,
    }) = pending
    else {
        return Err(CaseError::Failed(
            "the pending snapshot's acknowledged pieces were lost in the crash".to_owned(),
        ));
    };
    ensure_eq!(
        descriptor,
        big.descriptor(),
        "pending descriptor after a crash"
    );
    ensure!(
        written >= half as u64 && written <= LARGE as u64,
        "after a crash with {half} bytes acknowledged, pending_snapshot reports {written}"
    );
    let mut expected = SnapshotChecksum::new(big.meta.last_included);
    expected.update(&big.data[..written as usize]);
    ensure_eq!(
        checksum,
        expected.value(),
        "pending checksum after a crash (of the bytes it reports written)"
    );
    // Resume where the store says it is.
    write_pieces(&mut store, &big.data, written as usize, 32 * 1024).await?;
    ok!(
        store.finish_snapshot().await,
        "finish_snapshot after resuming"
    );
    check_stored(&mut store, &big, "resumed after a crash").await?;
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    check_stored(&mut store, &big, "after a crash once finished").await?;
    ensure_eq!(
        ok!(store.pending_snapshot().await, "pending_snapshot"),
        None,
        "pending after finishing and a crash"
    );
    Ok(())
}

/// Writes `data` into `writer` in pieces of varying sizes (up to `max_piece`).
async fn write_staged(
    writer: &mut dyn SnapshotWriter,
    data: &Bytes,
    max_piece: usize,
) -> CaseResult {
    let mut offset = 0;
    let mut step = 0usize;
    while offset < data.len() {
        let size = [1, max_piece / 3, max_piece, max_piece / 2][step % 4].max(1);
        step += 1;
        let end = (offset + size).min(data.len());
        ok!(
            writer.write(data.slice(offset..end)).await,
            format!("SnapshotWriter::write at {offset} ({} bytes)", end - offset)
        );
        offset = end;
    }
    Ok(())
}

/// Stages `snapshot` through a writer of `store`, in pieces.
async fn stage<S: Storage<Cmd>>(
    store: &mut S,
    snapshot: &Snapshot,
) -> Result<StagedSnapshot, CaseError> {
    let mut writer = store.create_snapshot(snapshot.meta.clone());
    write_staged(writer.as_mut(), &snapshot.data, 48 * 1024).await?;
    Ok(ok!(writer.finish().await, "SnapshotWriter::finish"))
}

async fn staged_round_trip<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    let old = large_snapshot(3, 1, 20_000);
    ok!(store.save_snapshot(old.clone()).await, "save_snapshot(3)");
    let big = large_snapshot(6, 1, LARGE);
    let mut writer = store.create_snapshot(big.meta.clone());
    write_staged(writer.as_mut(), &big.data.slice(..LARGE / 2), 48 * 1024).await?;
    // The store goes on meanwhile, and what is written is not the stored snapshot.
    ok!(
        store.append(&entries(9, &[1])).await,
        "append(9) while staging"
    );
    check_stored(&mut store, &old, "while a snapshot is being written").await?;
    write_staged(writer.as_mut(), &big.data.slice(LARGE / 2..), 48 * 1024).await?;
    let staged = ok!(writer.finish().await, "SnapshotWriter::finish");
    ensure_eq!(
        staged.descriptor,
        big.descriptor(),
        "the staged snapshot's descriptor (size and checksum of what was written)"
    );
    check_stored(&mut store, &old, "staged, not yet saved").await?;
    // Saving discards a snapshot being received.
    let received = large_snapshot(7, 1, 1_000);
    ok!(
        store.begin_snapshot(received.descriptor()).await,
        "begin_snapshot(7)"
    );
    let saved = ok!(
        store.save_staged_snapshot(staged).await,
        "save_staged_snapshot(6)"
    );
    ensure_eq!(saved, big.descriptor(), "save_staged_snapshot's descriptor");
    let mut store = check_installed(factory, store, &big, 9, "staged and saved").await?;
    // A staged snapshot that conflicts with the log drops it, as save_snapshot does.
    let conflicting = large_snapshot(9, 2, 5_000);
    let staged = stage(&mut store, &conflicting).await?;
    ok!(
        store.save_staged_snapshot(staged).await,
        "save_staged_snapshot(9, term 2)"
    );
    let state = ok!(store.recover().await, "recover");
    ensure_eq!(
        indices(&state.entries),
        Vec::<u64>::new(),
        "a log that conflicts with the staged snapshot"
    );
    check_stored(&mut store, &conflicting, "a conflicting staged snapshot").await
}

async fn staged_refused_or_abandoned<F: StorageFactory>(factory: &mut F) -> CaseResult {
    let mut store = filled(factory, 8).await?;
    let current = large_snapshot(6, 1, 30_000);
    ok!(
        store.save_snapshot(current.clone()).await,
        "save_snapshot(6)"
    );
    for index in [4, 6] {
        let staged = stage(&mut store, &large_snapshot(index, 1, 10_000)).await?;
        let result = store.save_staged_snapshot(staged).await;
        ensure!(
            matches!(result, Err(StorageError::StaleSnapshot { .. })),
            "a staged snapshot at {index} with one at 6 stored: expected StaleSnapshot, got {result:?}"
        );
        check_stored(&mut store, &current, "after a stale staged snapshot").await?;
    }
    // A writer dropped half way, and a staged snapshot never saved.
    let newer = large_snapshot(8, 1, 30_000);
    let mut writer = store.create_snapshot(newer.meta.clone());
    write_staged(writer.as_mut(), &newer.data.slice(..10_000), 4096).await?;
    drop(writer);
    drop(stage(&mut store, &newer).await?);
    check_stored(&mut store, &current, "after abandoned writers").await?;
    let mut store = reopen(factory, store)?;
    check_stored(&mut store, &current, "after abandoned writers and a reopen").await?;
    // Taking the same snapshot again works.
    let staged = stage(&mut store, &newer).await?;
    ok!(
        store.save_staged_snapshot(staged).await,
        "save_staged_snapshot(8) after abandoned ones"
    );
    check_stored(&mut store, &newer, "staged again after abandoned ones").await
}

async fn crash_while_staging<F: StorageFactory>(factory: &mut F) -> CaseResult {
    if !factory.can_crash() {
        return Err(CaseError::Skipped(
            "the factory cannot simulate a crash".to_owned(),
        ));
    }
    let mut store = filled(factory, 8).await?;
    let old = large_snapshot(3, 1, 20_000);
    ok!(store.save_snapshot(old.clone()).await, "save_snapshot(3)");
    let big = large_snapshot(8, 1, LARGE);
    // Crash mid-write, then crash with the snapshot staged but not saved. A crash runs
    // no destructor, so the writer and the staged snapshot are leaked, not dropped.
    let mut writer = store.create_snapshot(big.meta.clone());
    write_staged(writer.as_mut(), &big.data.slice(..LARGE / 2), 32 * 1024).await?;
    std::mem::forget(writer);
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    check_stored(&mut store, &old, "after a crash mid-write").await?;
    std::mem::forget(stage(&mut store, &big).await?);
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    check_stored(&mut store, &old, "after a crash with the snapshot staged").await?;
    ensure_eq!(
        indices(&ok!(store.recover().await, "recover").entries),
        (1..=8).collect::<Vec<_>>(),
        "log after crashes while staging"
    );
    // The same snapshot is taken again, saved, and survives a crash.
    let staged = stage(&mut store, &big).await?;
    ok!(
        store.save_staged_snapshot(staged).await,
        "save_staged_snapshot(8)"
    );
    let mut store = factory
        .crash(store)
        .map_err(|e| CaseError::Failed(format!("reopening after a crash failed: {e}")))?;
    check_stored(&mut store, &big, "a saved staged snapshot after a crash").await
}

/// Whether `result` is the error of a store that noticed damage.
fn noticed<T>(result: &Result<T, StorageError>) -> bool {
    matches!(
        result,
        Err(StorageError::Corrupt(_) | StorageError::Codec(_))
    )
}

async fn damage_is_detected<F: StorageFactory>(factory: &mut F) -> CaseResult {
    if !factory.can_corrupt() {
        return Err(CaseError::Skipped(
            "the factory cannot damage stored bytes".to_owned(),
        ));
    }
    for damage in [Damage::SnapshotData, Damage::LogEntry] {
        let mut store = filled(factory, 8).await?;
        let snapshot = large_snapshot(3, 1, 40_000);
        ok!(
            store.save_snapshot(snapshot.clone()).await,
            "save_snapshot(3)"
        );
        let before = ok!(store.recover().await, "recover");
        let mut store = match factory.corrupt(store, damage) {
            Ok(store) => store,
            Err(StorageError::Corrupt(_) | StorageError::Codec(_)) => continue,
            Err(error) => {
                return Err(CaseError::Failed(format!(
                    "{damage:?}: opening a damaged store failed with {error:?}, not a typed \
                     Corrupt or Codec error"
                )));
            }
        };
        // Opened: the damage must show when the damaged bytes are read, never as
        // different data.
        let recovered = store.recover().await;
        if noticed(&recovered) {
            continue;
        }
        let recovered = ok!(recovered, format!("recover after {damage:?}"));
        ensure!(
            recovered == before,
            "{damage:?}: the store recovered different state from damaged bytes"
        );
        let entries = store.entries(LogIndex(1), LogIndex(9)).await;
        if noticed(&entries) {
            continue;
        }
        ensure!(
            ok!(entries, format!("entries after {damage:?}")) == before.entries,
            "{damage:?}: the store served different entries from damaged bytes"
        );
        let opened = store.open_snapshot().await;
        if noticed(&opened) {
            continue;
        }
        let Some((_, reader)) = ok!(opened, format!("open_snapshot after {damage:?}")) else {
            return Err(CaseError::Failed(format!(
                "{damage:?}: the snapshot is gone without an error"
            )));
        };
        let mut data = Vec::new();
        while (data.len() as u64) < reader.len() {
            let piece = reader.read_at(data.len() as u64, 4096).await;
            if noticed(&piece) {
                break;
            }
            let piece = ok!(piece, format!("read_at after {damage:?}"));
            ensure!(!piece.is_empty(), "{damage:?}: read_at returned nothing");
            data.extend_from_slice(&piece);
        }
        if (data.len() as u64) < reader.len() {
            continue;
        }
        ensure!(
            data != snapshot.data,
            "{damage:?}: every byte read back unchanged: the factory damaged nothing"
        );
        return Err(CaseError::Failed(format!(
            "{damage:?}: the store served damaged data without an error"
        )));
    }
    Ok(())
}

/// The reference model: what a store must hold after a sequence of operations.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry<Cmd>>,
}

impl Model {
    fn last_included(&self) -> LogId {
        self.snapshot
            .as_ref()
            .map(|s| s.meta.last_included)
            .unwrap_or_default()
    }

    fn last_index(&self) -> LogIndex {
        self.entries
            .last()
            .map_or(self.last_included().index, |e| e.index)
    }

    fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }
}

#[derive(Clone, Debug)]
enum Op {
    HardState(HardState),
    Append(Vec<Entry<Cmd>>),
    Truncate(LogIndex),
    Snapshot(Snapshot),
    Purge(LogIndex),
    Reopen,
    /// A crash, where the factory can simulate one; a reopen otherwise.
    Crash,
}

fn next_op(rng: &mut StdRng, model: &Model, term: &mut u64) -> Op {
    let first = model.last_included().index.next();
    let last = model.last_index();
    match rng.random_range(0..100) {
        0..=44 => {
            let count = rng.random_range(1..6u64);
            Op::Append((1..=count).map(|k| entry(last.0 + k, *term)).collect())
        }
        45..=59 => {
            *term += 1;
            Op::HardState(HardState {
                term: Term(*term),
                voted_for: rng.random_bool(0.5).then(|| NodeId(rng.random_range(1..4))),
            })
        }
        60..=74 if last >= first => {
            *term += 1;
            Op::Truncate(LogIndex(rng.random_range(first.0..=last.0)))
        }
        90..=94 if model.snapshot.is_some() => {
            let covered = model.last_included().index;
            let lowest = model.entries.first().map_or(covered, |e| e.index);
            Op::Purge(LogIndex(rng.random_range(
                lowest.0.saturating_sub(1).min(covered.0)..=covered.0,
            )))
        }
        75..=89 if last >= first => {
            let index = LogIndex(rng.random_range(first.0..=last.0 + 2));
            // Usually the term the log holds there; sometimes another, a conflict.
            let term = match model.term_at(index) {
                Some(held) if rng.random_bool(0.8) => held.0,
                _ => *term,
            };
            Op::Snapshot(snapshot(index.0, term))
        }
        _ if rng.random_bool(0.5) => Op::Crash,
        _ => Op::Reopen,
    }
}

fn apply_to_model(model: &mut Model, op: &Op) {
    match op {
        Op::HardState(hard_state) => model.hard_state = *hard_state,
        Op::Append(entries) => model.entries.extend(entries.iter().cloned()),
        Op::Truncate(index) => model.entries.retain(|e| e.index < *index),
        Op::Snapshot(snapshot) => {
            let covered = snapshot.meta.last_included;
            if model.term_at(covered.index) != Some(covered.term) {
                model.entries.clear();
            }
            model.snapshot = Some(snapshot.clone());
        }
        Op::Purge(index) => model.entries.retain(|e| e.index > *index),
        Op::Reopen | Op::Crash => {}
    }
}

async fn model_sequences<F: StorageFactory>(factory: &mut F) -> CaseResult {
    for seed in 0..MODEL_SEQUENCES {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = fresh(factory)?;
        let mut model = Model::default();
        let mut term = 1;
        let mut history = Vec::new();
        for _ in 0..60 {
            let op = next_op(&mut rng, &model, &mut term);
            history.push(op.clone());
            let context = || format!("sequence {seed}, after {history:?}");
            match &op {
                Op::HardState(hard_state) => {
                    ok!(store.save_hard_state(*hard_state).await, context())
                }
                Op::Append(entries) => ok!(store.append(entries).await, context()),
                Op::Truncate(index) => ok!(store.truncate_from(*index).await, context()),
                Op::Snapshot(snapshot) => {
                    ok!(store.save_snapshot(snapshot.clone()).await, context())
                }
                Op::Purge(index) => ok!(store.purge_to(*index).await, context()),
                Op::Reopen => store = reopen(factory, store)?,
                Op::Crash => {
                    store = factory.crash(store).map_err(|e| {
                        CaseError::Failed(format!("crash reopen failed: {e}, {}", context()))
                    })?
                }
            }
            apply_to_model(&mut model, &op);
            let state = ok!(store.recover().await, context());
            let expected = RecoveredState {
                hard_state: model.hard_state,
                snapshot: model.snapshot.as_ref().map(|s| s.meta.clone()),
                entries: model.entries.clone(),
            };
            ensure_eq!(state, expected, context());
        }
        let stored = ok!(store.snapshot().await, "snapshot at the end");
        ensure_eq!(
            stored,
            model.snapshot,
            format!("sequence {seed}: stored snapshot")
        );
    }
    Ok(())
}
