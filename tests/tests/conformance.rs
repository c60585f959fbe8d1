//! The conformance suites can fail: deliberately broken backends are run against them and
//! each must be reported, by the case that catches it. The simulator's runtime, which
//! lives in this crate, also runs its suite here.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // test code: it prints reports and panics to fail

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::executor::block_on;
use futures::future::{BoxFuture, FutureExt, pending};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, MemNetwork, MemStorage, MemTransport};
use raft_net_smol::SmolRuntime;
use raft_tests::conformance::runtime::RuntimeFactory;
use raft_tests::conformance::state_machine::StateMachineFactory;
use raft_tests::conformance::storage::StorageFactory;
use raft_tests::conformance::transport::TransportFactory;
use raft_tests::conformance::{self, Cmd, Report};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, Entry, HardState, JoinHandle, LogId, LogIndex, NodeId, PendingSnapshot, RecoveredState,
    Request, Response, RpcHandler, Runtime, Snapshot, SnapshotDescriptor, SnapshotReader,
    StateMachine, StateMachineError, Storage, StorageError, Transport, TransportError, async_trait,
};

fn assert_reported(report: &Report, cases: &[&str]) {
    println!("{report}");
    for case in cases {
        assert!(
            report.failed(case),
            "the suite did not report `{case}`:\n{report}"
        );
    }
}

// ---- Storage --------------------------------------------------------------------------

/// A store that acknowledges truncations but never performs them.
struct ForgetsTruncation(MemStorage<Cmd>);

#[async_trait]
impl Storage<Cmd> for ForgetsTruncation {
    async fn recover(&mut self) -> Result<RecoveredState<Cmd>, StorageError> {
        self.0.recover().await
    }
    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.0.save_hard_state(hard_state).await
    }
    async fn append(&mut self, entries: &[Entry<Cmd>]) -> Result<(), StorageError> {
        self.0.append(entries).await
    }
    async fn truncate_from(&mut self, _index: LogIndex) -> Result<(), StorageError> {
        Ok(())
    }
    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<Cmd>>, StorageError> {
        self.0.entries(from, to).await
    }
    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.0.save_snapshot(snapshot).await
    }
    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.0.purge_to(index).await
    }
    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        self.0.begin_snapshot(descriptor).await
    }
    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        self.0.write_snapshot_chunk(offset, data).await
    }
    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        self.0.finish_snapshot().await
    }
    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.0.abort_snapshot().await
    }
    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        self.0.pending_snapshot().await
    }
    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
        self.0.open_snapshot().await
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.0.snapshot().await
    }
}

struct ForgetfulFactory;

impl StorageFactory for ForgetfulFactory {
    type Store = ForgetsTruncation;
    fn create(&mut self) -> Result<Self::Store, StorageError> {
        Ok(ForgetsTruncation(MemStorage::new()))
    }
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        Ok(ForgetsTruncation(store.0.copy()))
    }
}

#[test]
fn storage_suite_reports_a_store_that_forgets_truncation() {
    let report = block_on(conformance::storage::run(&mut ForgetfulFactory));
    assert_reported(
        &report,
        &[
            "truncate_removes_a_suffix",
            "truncate_survives_reopen",
            "operation_sequences_match_the_reference_model",
        ],
    );
}

/// A store that never makes anything durable by itself: writes stay in a cache (as in
/// an operating system's page cache without fsync) and reach the "disk" only on a clean
/// close. A clean reopen sees everything; a crash loses every write since the last.
struct NeverSyncs {
    disk: MemStorage<Cmd>,
    cache: MemStorage<Cmd>,
}

#[async_trait]
impl Storage<Cmd> for NeverSyncs {
    async fn recover(&mut self) -> Result<RecoveredState<Cmd>, StorageError> {
        self.cache.recover().await
    }
    async fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.cache.save_hard_state(hard_state).await
    }
    async fn append(&mut self, entries: &[Entry<Cmd>]) -> Result<(), StorageError> {
        self.cache.append(entries).await
    }
    async fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.cache.truncate_from(index).await
    }
    async fn entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Entry<Cmd>>, StorageError> {
        self.cache.entries(from, to).await
    }
    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.cache.save_snapshot(snapshot).await
    }
    async fn purge_to(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.cache.purge_to(index).await
    }
    async fn begin_snapshot(&mut self, descriptor: SnapshotDescriptor) -> Result<(), StorageError> {
        self.cache.begin_snapshot(descriptor).await
    }
    async fn write_snapshot_chunk(&mut self, offset: u64, data: Bytes) -> Result<(), StorageError> {
        self.cache.write_snapshot_chunk(offset, data).await
    }
    async fn finish_snapshot(&mut self) -> Result<SnapshotDescriptor, StorageError> {
        self.cache.finish_snapshot().await
    }
    async fn abort_snapshot(&mut self) -> Result<(), StorageError> {
        self.cache.abort_snapshot().await
    }
    async fn pending_snapshot(&mut self) -> Result<Option<PendingSnapshot>, StorageError> {
        self.cache.pending_snapshot().await
    }
    async fn open_snapshot(
        &mut self,
    ) -> Result<Option<(SnapshotDescriptor, Arc<dyn SnapshotReader>)>, StorageError> {
        self.cache.open_snapshot().await
    }
    async fn snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.cache.snapshot().await
    }
}

struct NeverSyncsFactory;

impl StorageFactory for NeverSyncsFactory {
    type Store = NeverSyncs;
    fn create(&mut self) -> Result<Self::Store, StorageError> {
        Ok(NeverSyncs {
            disk: MemStorage::new(),
            cache: MemStorage::new(),
        })
    }
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        // A clean close writes the cache out.
        Ok(NeverSyncs {
            disk: store.cache.copy(),
            cache: store.cache.copy(),
        })
    }
    fn can_crash(&self) -> bool {
        true
    }
    fn crash(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        Ok(NeverSyncs {
            cache: store.disk.copy(),
            disk: store.disk,
        })
    }
}

#[test]
fn storage_suite_reports_a_store_that_never_syncs() {
    let report = block_on(conformance::storage::run(&mut NeverSyncsFactory));
    assert_reported(
        &report,
        &[
            "acknowledged_writes_survive_a_crash",
            "operation_sequences_match_the_reference_model",
        ],
    );
    // A clean reopen keeps everything, so the reopen cases pass: only a crash shows the
    // missing syncs.
    assert!(!report.failed("snapshot_and_compaction_survive_reopen"));
}

/// A store whose reopen loses the vote: the term survives, `voted_for` does not.
struct LosesVoteFactory;

impl StorageFactory for LosesVoteFactory {
    type Store = MemStorage<Cmd>;
    fn create(&mut self) -> Result<Self::Store, StorageError> {
        Ok(MemStorage::new())
    }
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StorageError> {
        let mut reopened = store.copy();
        let term = store.hard_state().term;
        block_on(reopened.save_hard_state(HardState {
            term,
            voted_for: None,
        }))?;
        Ok(reopened)
    }
}

#[test]
fn storage_suite_reports_a_store_that_loses_the_vote_on_reopen() {
    let report = block_on(conformance::storage::run(&mut LosesVoteFactory));
    assert_reported(
        &report,
        &[
            "hard_state_survives_reopen",
            "snapshot_and_compaction_survive_reopen",
        ],
    );
}

// ---- StateMachine ---------------------------------------------------------------------

/// A key-value machine that restores any snapshot, even an older one: it goes back.
struct GoesBack(KvStateMachine);

impl StateMachine<KvCommand> for GoesBack {
    type Response = KvResponse;
    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        self.0.apply(log_id, command).await
    }
    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        self.0.snapshot().await
    }
    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let mut fresh = KvStateMachine::new();
        fresh.restore(snapshot).await?;
        self.0 = fresh;
        Ok(())
    }
}

struct GoesBackFactory;

impl StateMachineFactory for GoesBackFactory {
    type Command = KvCommand;
    type Machine = GoesBack;
    fn create(&mut self) -> GoesBack {
        GoesBack(KvStateMachine::new())
    }
    fn commands(&mut self, seed: u64, count: usize) -> Vec<KvCommand> {
        (0..count as u64)
            .map(|i| {
                let key: std::sync::Arc<str> = format!("k{}", (seed + i) % 5).into();
                if i % 3 == 2 {
                    KvCommand::Get { key }
                } else {
                    KvCommand::Put {
                        key,
                        value: format!("{seed}.{i}").into(),
                    }
                }
            })
            .collect()
    }
}

#[test]
fn state_machine_suite_reports_a_machine_that_goes_back() {
    let report = block_on(conformance::state_machine::run(&mut GoesBackFactory));
    assert_reported(&report, &["an_older_snapshot_never_moves_the_state_back"]);
}

// ---- Transport ------------------------------------------------------------------------

/// A transport that silently drops the reply of every second request: the call never
/// returns.
struct DropsReplies {
    inner: MemTransport<Cmd, SmolRuntime>,
    sent: AtomicU64,
}

#[async_trait]
impl Transport<Cmd> for DropsReplies {
    async fn send(&self, to: NodeId, request: Request<Cmd>) -> Result<Response, TransportError> {
        let reply = self.inner.send(to, request).await;
        if self.sent.fetch_add(1, Ordering::Relaxed) % 2 == 1 {
            pending::<()>().await;
        }
        reply
    }
}

struct DroppingNetwork {
    runtime: SmolRuntime,
    net: MemNetwork<Cmd, SmolRuntime>,
    servers: Vec<NodeId>,
}

#[async_trait]
impl TransportFactory for DroppingNetwork {
    type Transport = DropsReplies;
    type Runtime = SmolRuntime;
    fn runtime(&self) -> SmolRuntime {
        self.runtime.clone()
    }
    async fn serve(&mut self, id: NodeId, handler: Arc<dyn RpcHandler<Cmd>>) {
        self.net.add_server(id, handler);
        self.servers.push(id);
    }
    async fn client(&mut self, from: NodeId) -> DropsReplies {
        let inner = self.net.transport(from);
        for &to in &self.servers {
            self.net.set_link(from, to, true);
        }
        DropsReplies {
            inner,
            sent: AtomicU64::new(0),
        }
    }
    async fn stop(&mut self, id: NodeId) {
        self.net.delete_server(id);
        self.servers.retain(|&s| s != id);
    }
    fn unreachable_peer(&self) -> NodeId {
        NodeId(99)
    }
    fn failure_deadline(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn reply_deadline(&self) -> Duration {
        Duration::from_secs(2)
    }
}

#[test]
fn transport_suite_reports_a_transport_that_drops_replies_silently() {
    let runtime = SmolRuntime::with_threads(2);
    let mut network = DroppingNetwork {
        runtime: runtime.clone(),
        net: MemNetwork::new(runtime.clone(), 5),
        servers: Vec::new(),
    };
    let report = runtime.block_on(conformance::transport::run(&mut network));
    runtime.stop();
    assert_reported(
        &report,
        &[
            "request_gets_its_reply",
            "concurrent_requests_get_their_own_replies",
        ],
    );
}

// ---- Runtime --------------------------------------------------------------------------

/// A runtime whose sleeps end at once.
#[derive(Clone)]
struct Impatient(SmolRuntime);

impl Runtime for Impatient {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.spawn(future)
    }
    fn sleep(&self, _duration: Duration) -> BoxFuture<'static, ()> {
        async {}.boxed()
    }
    fn now(&self) -> Duration {
        self.0.now()
    }
    fn random_seed(&self) -> u64 {
        self.0.random_seed()
    }
}

struct ImpatientFactory(Impatient);

impl RuntimeFactory for ImpatientFactory {
    type Runtime = Impatient;
    fn runtime(&self) -> Impatient {
        self.0.clone()
    }
}

#[test]
fn runtime_suite_reports_sleeps_that_end_early() {
    let smol = SmolRuntime::with_threads(1);
    let mut factory = ImpatientFactory(Impatient(smol.clone()));
    let report = smol.block_on(conformance::runtime::run(&mut factory));
    smol.stop();
    assert_reported(
        &report,
        &["sleeps_end_in_deadline_order", "sleep_never_ends_early"],
    );
}

struct Simulated(SimRuntime);

impl RuntimeFactory for Simulated {
    type Runtime = SimRuntime;
    fn runtime(&self) -> SimRuntime {
        self.0.clone()
    }
    fn seeded(&mut self, seed: u64) -> Option<SimRuntime> {
        // The suite only draws seeds from it; the world itself need not run.
        Some(Simulation::new(seed).runtime())
    }
}

#[test]
fn the_simulated_runtime_passes_the_runtime_suite() {
    let simulation = Simulation::new(11);
    let mut factory = Simulated(simulation.runtime());
    let report = simulation.block_on(async move { conformance::runtime::run(&mut factory).await });
    println!("{report}");
    report.assert_passed();
    assert!(
        report
            .cases
            .iter()
            .all(|(_, outcome)| *outcome == conformance::Outcome::Passed),
        "the simulator has a seeded mode, so nothing is skipped:\n{report}"
    );
}
