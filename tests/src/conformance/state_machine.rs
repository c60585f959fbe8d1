//! The [`StateMachine`] suite: deterministic apply, snapshots that restore the same
//! state on a fresh instance, and snapshots that never move the state backwards.
//!
//! State is compared by behaviour: two machines are in the same state if the same
//! further commands give the same responses on both.

use std::fmt::Debug;

use raft_traits::{Bytes, Command, LogId, LogIndex, Snapshot, SnapshotMeta, StateMachine, Term};

use super::{CaseResult, Report, ensure, ensure_eq, ok};

/// Makes the state machines the suite checks, and commands to feed them.
pub trait StateMachineFactory {
    /// The command type.
    type Command: Command;
    /// The machine under test; its responses must be comparable.
    type Machine: StateMachine<Self::Command, Response: PartialEq + Debug>;

    /// A machine in its initial state.
    fn create(&mut self) -> Self::Machine;

    /// `count` commands that change and observe the state (for a key-value store: puts,
    /// deletes and gets over a few keys), the same for the same `seed`.
    fn commands(&mut self, seed: u64, count: usize) -> Vec<Self::Command>;
}

/// Runs every case against machines from `factory`.
pub async fn run<F: StateMachineFactory>(factory: &mut F) -> Report {
    let mut report = Report::new("StateMachine");
    report
        .case("apply_is_deterministic", deterministic(factory))
        .await;
    report
        .case(
            "snapshot_restores_the_same_state_on_a_fresh_instance",
            restore_same(factory),
        )
        .await;
    report
        .case(
            "snapshot_covers_the_last_applied_command",
            snapshot_meta(factory),
        )
        .await;
    report
        .case(
            "an_older_snapshot_never_moves_the_state_back",
            older_snapshot(factory),
        )
        .await;
    report
        .case(
            "invalid_snapshot_bytes_are_an_error",
            invalid_snapshot(factory),
        )
        .await;
    report
}

fn log_id(index: usize) -> LogId {
    LogId::new(Term(1), LogIndex(index as u64))
}

/// Applies `commands` at indices starting after `applied`; returns the responses.
async fn feed<C, M>(machine: &mut M, commands: &[C], applied: usize) -> Vec<M::Response>
where
    C: Command,
    M: StateMachine<C>,
{
    let mut responses = Vec::with_capacity(commands.len());
    for (offset, command) in commands.iter().enumerate() {
        responses.push(
            machine
                .apply(log_id(applied + offset + 1), command.clone())
                .await,
        );
    }
    responses
}

async fn deterministic<F: StateMachineFactory>(factory: &mut F) -> CaseResult {
    let commands = factory.commands(1, 200);
    let mut first = factory.create();
    let mut second = factory.create();
    let a = feed(&mut first, &commands, 0).await;
    let b = feed(&mut second, &commands, 0).await;
    ensure_eq!(a, b, "responses of two machines fed the same commands");
    Ok(())
}

async fn restore_same<F: StateMachineFactory>(factory: &mut F) -> CaseResult {
    let before = factory.commands(2, 150);
    let after = factory.commands(3, 150);
    let mut original = factory.create();
    feed(&mut original, &before, 0).await;
    let snapshot = ok!(original.snapshot().await, "snapshot");
    let mut restored = factory.create();
    ok!(
        restored.restore(snapshot).await,
        "restore on a fresh instance"
    );
    let expected = feed(&mut original, &after, before.len()).await;
    let actual = feed(&mut restored, &after, before.len()).await;
    ensure_eq!(actual, expected, "responses after restoring the snapshot");
    Ok(())
}

async fn snapshot_meta<F: StateMachineFactory>(factory: &mut F) -> CaseResult {
    let commands = factory.commands(4, 37);
    let mut machine = factory.create();
    feed(&mut machine, &commands, 0).await;
    let snapshot = ok!(machine.snapshot().await, "snapshot");
    ensure_eq!(
        snapshot.meta.last_included,
        log_id(commands.len()),
        "snapshot's last included entry"
    );
    Ok(())
}

async fn older_snapshot<F: StateMachineFactory>(factory: &mut F) -> CaseResult {
    let first = factory.commands(5, 80);
    let second = factory.commands(6, 80);
    let probe = factory.commands(7, 80);
    let mut source = factory.create();
    feed(&mut source, &first, 0).await;
    let older = ok!(source.snapshot().await, "older snapshot");
    feed(&mut source, &second, first.len()).await;
    let newer = ok!(source.snapshot().await, "newer snapshot");

    let mut machine = factory.create();
    ok!(machine.restore(newer).await, "restore the newer snapshot");
    // Refusing is fine, and so is accepting without effect; going back is not.
    let _ = machine.restore(older).await;
    let applied = first.len() + second.len();
    let expected = feed(&mut source, &probe, applied).await;
    let actual = feed(&mut machine, &probe, applied).await;
    ensure!(
        actual == expected,
        "after restoring an older snapshot over a newer one the state went back: expected {expected:?}, got {actual:?}"
    );
    Ok(())
}

async fn invalid_snapshot<F: StateMachineFactory>(factory: &mut F) -> CaseResult {
    let mut machine = factory.create();
    let garbage = Snapshot {
        meta: SnapshotMeta {
            last_included: log_id(5),
            membership: Default::default(),
        },
        data: Bytes::from_static(&[0xff, 0x13, 0x37, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff]),
    };
    let result = machine.restore(garbage).await;
    ensure!(result.is_err(), "bytes that are no snapshot were accepted");
    Ok(())
}
