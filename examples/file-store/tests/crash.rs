//! Crash test: a child process writes to a store and reports every write that returned
//! (was fsynced); the parent kills it with SIGKILL at a random moment, reopens the store,
//! and checks that nothing reported was lost and nothing half-written appeared.
//!
//! Both sides derive the same operation sequence from a seed, and an in-memory store
//! (`raft_mem::MemStorage`) is the reference model: after `k` reported operations, the
//! reopened store must equal the model after `k` operations plus some part of the one in
//! flight: none or all of it, or, for an append, a prefix of its entries (each record is
//! checksummed on its own, so the records written before the kill survive and the torn
//! one is cut off; none of them was acknowledged, and a prefix of a log is a log).

#![allow(clippy::unwrap_used)] // test code: a panic is how it fails

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use raft_file_store::FileStorage;
use raft_mem::MemStorage;
use raft_traits::{
    Bytes, Entry, HardState, LogId, LogIndex, NodeId, Payload, RecoveredState, Snapshot,
    SnapshotMeta, Storage, Term,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

type Cmd = Vec<u8>;

const CHILD_DIR: &str = "RAFT_FILE_STORE_CRASH_DIR";
const CHILD_SEED: &str = "RAFT_FILE_STORE_CRASH_SEED";

/// The deterministic workload: what the `step`-th operation is, given the model's state.
enum Op {
    Append(Vec<Entry<Cmd>>),
    HardState(HardState),
    Truncate(LogIndex),
    Snapshot(Snapshot),
    Purge(LogIndex),
}

struct Workload {
    rng: StdRng,
    term: u64,
}

impl Workload {
    fn new(seed: u64) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            term: 1,
        }
    }

    fn next(&mut self, model: &MemStorage<Cmd>) -> Op {
        let last = model.last_index();
        // Entries the snapshot covers may still be held (the trailing window), but only
        // those after it may be truncated or snapshotted again.
        let covered = model.snapshot_meta().map(|m| m.last_included.index);
        let first = covered.map_or(LogIndex(1), LogIndex::next);
        let roll = self.rng.random_range(0..100);
        if roll < 70 || last < first {
            let count = self.rng.random_range(1..20u64);
            let entries = (1..=count)
                .map(|k| {
                    let size = self.rng.random_range(1..3000usize);
                    let byte = self.rng.random::<u8>();
                    Entry {
                        term: Term(self.term),
                        index: last.plus(k),
                        payload: Payload::Command(vec![byte; size]),
                    }
                })
                .collect();
            Op::Append(entries)
        } else if roll < 82 {
            self.term += 1;
            Op::HardState(HardState {
                term: Term(self.term),
                voted_for: Some(NodeId(self.rng.random_range(1..4))),
            })
        } else if roll < 92 {
            // A new leader overwrites a suffix; later appends carry its newer term.
            let back = self.rng.random_range(0..=(last.0 - first.0).min(8));
            self.term += 1;
            Op::Truncate(LogIndex(last.0 - back))
        } else if let Some(covered) = covered.filter(|_| roll >= 96) {
            // Keep a random trailing window of what the snapshot covers.
            let held_from = model.first_index().0.min(covered.0);
            Op::Purge(LogIndex(self.rng.random_range(held_from..=covered.0)))
        } else {
            let index = LogIndex(self.rng.random_range(first.0..=last.0));
            let term = model
                .log()
                .into_iter()
                .find(|e| e.index == index)
                .map(|e| e.term)
                .unwrap_or_default();
            let size = self.rng.random_range(0..100_000usize);
            Op::Snapshot(Snapshot {
                meta: SnapshotMeta {
                    last_included: LogId::new(term, index),
                    membership: Default::default(),
                },
                data: Bytes::from(vec![index.0 as u8; size]),
            })
        }
    }
}

async fn apply<S: Storage<Cmd>>(store: &mut S, op: &Op) {
    match op {
        Op::Append(entries) => store.append(entries).await.expect("append"),
        Op::HardState(hard_state) => store
            .save_hard_state(*hard_state)
            .await
            .expect("hard state"),
        Op::Truncate(index) => store.truncate_from(*index).await.expect("truncate"),
        Op::Snapshot(snapshot) => store
            .save_snapshot(snapshot.clone())
            .await
            .expect("snapshot"),
        Op::Purge(index) => store.purge_to(*index).await.expect("purge"),
    }
}

/// The child: runs the workload until killed, reporting each operation once durable.
#[test]
#[ignore = "child process of crash_test_loses_no_fsynced_write"]
fn crash_writer_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    block_on(async {
        let mut store: FileStorage<Cmd> = FileStorage::open(&dir).expect("open");
        let mut model = MemStorage::new();
        let mut workload = Workload::new(seed);
        for step in 1.. {
            let op = workload.next(&model);
            apply(&mut store, &op).await;
            apply(&mut model, &op).await;
            println!("durable {step}");
        }
    });
}

async fn state_of<S: Storage<Cmd>>(store: &mut S) -> (RecoveredState<Cmd>, Option<Snapshot>) {
    (
        store.recover().await.expect("recover"),
        store.snapshot().await.expect("snapshot"),
    )
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Append(entries) => format!(
            "append {}..={}",
            entries.first().map_or(0, |e| e.index.0),
            entries.last().map_or(0, |e| e.index.0)
        ),
        Op::HardState(hard_state) => format!("hard state {hard_state:?}"),
        Op::Truncate(index) => format!("truncate from {index}"),
        Op::Snapshot(snapshot) => format!("snapshot at {}", snapshot.meta.last_included),
        Op::Purge(index) => format!("purge to {index}"),
    }
}

fn describe(state: &(RecoveredState<Cmd>, Option<Snapshot>)) -> String {
    let (recovered, snapshot) = state;
    format!(
        "{:?}, snapshot {:?} ({} bytes), entries {:?}..={:?}",
        recovered.hard_state,
        recovered.snapshot.as_ref().map(|m| m.last_included),
        snapshot.as_ref().map_or(0, |s| s.data.len()),
        recovered.entries.first().map(|e| e.log_id()),
        recovered.entries.last().map(|e| e.log_id()),
    )
}

fn crash_once(seed: u64) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC0FFEE);
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("stdout");
    // Let it run a random while, past at least a few operations, then kill it mid-flight.
    let kill_after = Duration::from_millis(rng.random_range(20..400));
    let (reported_tx, reported_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(step) = line.strip_prefix("durable ") {
                let _ = reported_tx.send(step.parse::<u64>().expect("step"));
            }
        }
    });
    let started = Instant::now();
    let mut reported = 0;
    while started.elapsed() < kill_after || reported < 3 {
        if let Ok(step) = reported_rx.recv_timeout(Duration::from_millis(5)) {
            reported = step;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer made no progress"
        );
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    reader.join().expect("reader");
    while let Ok(step) = reported_rx.try_recv() {
        reported = step;
    }

    block_on(async {
        let mut reopened: FileStorage<Cmd> = FileStorage::open(dir.path()).expect("reopen");
        let actual = state_of(&mut reopened).await;
        let mut model = MemStorage::new();
        let mut workload = Workload::new(seed);
        for _ in 0..reported {
            let op = workload.next(&model);
            apply(&mut model, &op).await;
        }
        let after_reported = state_of(&mut model).await;
        if actual == after_reported {
            return;
        }
        let op = workload.next(&model);
        let mut partial = Vec::new();
        if let Op::Append(entries) = &op {
            for keep in 1..entries.len() {
                let mut prefix = model.copy();
                prefix.append(&entries[..keep]).await.expect("append");
                partial.push(state_of(&mut prefix).await);
            }
        }
        apply(&mut model, &op).await;
        let after_in_flight = state_of(&mut model).await;
        assert!(
            actual == after_in_flight || partial.contains(&actual),
            "seed {seed}: after {reported} durable operations the store holds neither that state, nor the next one, nor part of it\n\
             the next operation: {}\nfound:    {}\nexpected: {}\nor:       {}",
            describe_op(&op),
            describe(&actual),
            describe(&after_reported),
            describe(&after_in_flight)
        );
    });
    reported
}

#[test]
fn crash_test_loses_no_fsynced_write() {
    let base: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash test base seed {base} (rerun with CRASH_SEED={base})");
    let mut operations = 0;
    for round in 0..8 {
        operations += crash_once(base.wrapping_add(round));
    }
    println!("8 crashes, {operations} durable operations checked");
}
