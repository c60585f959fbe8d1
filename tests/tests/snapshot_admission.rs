//! A snapshot that cannot be restored never stops a node (issue 12, finding 2 and item
//! 3): damaged bytes fail the checksum the leader sent with them, bytes the state
//! machine cannot read fail its `check_snapshot`; either way the follower refuses the
//! snapshot with a typed error, keeps its state and log, and keeps serving. Also for
//! `RpcHandler::handle_then`, which leaves that check to `handle`.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{KvCommand, KvResponse, KvStateMachine, LocalNetwork, MemStorage};
use raft_tests::sim::{SimRuntime, Simulation};
use raft_traits::{
    Bytes, Codec, HandlerError, InstallOutcome, InstallSnapshot, LogId, LogIndex, Membership,
    NodeId, Postcard, Request, RequestRefused, Response, RpcHandler, Runtime, Snapshot,
    SnapshotMeta, Term,
};

type KvRaft = Raft<KvCommand, KvResponse>;

/// Node 2 of a three-node cluster whose other members never run: the test plays its
/// leader, node 1.
async fn follower(runtime: &SimRuntime) -> KvRaft {
    let parts = Parts {
        runtime: runtime.clone(),
        storage: MemStorage::new(),
        state_machine: KvStateMachine::new(),
        transport: LocalNetwork::new().transport(),
    };
    let members = Membership::from_voters([NodeId(1), NodeId(2), NodeId(3)]);
    Raft::spawn_in(NodeId(2), members, Config::lab().with_seed(Some(5)), parts)
        .await
        .unwrap()
}

/// The whole snapshot in one piece, its piece checksum flipped by `damage`.
fn install(snapshot: Snapshot, damage: u32) -> Request<KvCommand> {
    let mut request = InstallSnapshot::whole(Term(1), NodeId(1), snapshot);
    request.checksum ^= damage;
    Request::InstallSnapshot(Box::new(request))
}

fn snapshot_of(data: Bytes) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::new(Term(1), LogIndex(10)),
            membership: Membership::from_voters([NodeId(1), NodeId(2), NodeId(3)]),
        },
        data,
    }
}

#[test]
fn a_snapshot_that_cannot_be_restored_is_refused_and_the_node_keeps_serving() {
    let simulation = Simulation::new(1);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let raft = follower(&runtime).await;

        // Well-formed for the wire, garbage for the key-value state machine, with a
        // checksum that matches: only the state machine can tell.
        let garbage = snapshot_of(Bytes::from_static(&[0xff; 64]));
        let refused = raft.handle(install(garbage.clone(), 0)).await;
        assert!(
            matches!(
                refused,
                Err(HandlerError::Refused(
                    RequestRefused::InvalidSnapshot { .. }
                ))
            ),
            "garbage snapshot: {refused:?}"
        );

        // Intact bytes that do not match the checksum sent with them.
        let mut state = BTreeMap::<Arc<str>, Arc<str>>::new();
        state.insert("k".into(), "v".into());
        let good = snapshot_of(Bytes::from(Postcard.encode(&state).unwrap()));
        let damaged = raft.handle(install(good.clone(), 1)).await;
        assert!(
            matches!(
                damaged,
                Err(HandlerError::Refused(
                    RequestRefused::SnapshotChecksum { .. }
                ))
            ),
            "damaged snapshot: {damaged:?}"
        );

        // Nothing changed, nothing stopped; a valid snapshot is then installed.
        runtime.sleep(Duration::from_millis(1)).await;
        let status = raft.status();
        assert!(!status.stopped, "the node stopped: {:?}", status.fatal);
        assert_eq!(status.term, Term(0), "a refused request moved the term");
        assert_eq!(status.snapshot.index, LogIndex(0));
        assert_eq!(status.refused_messages, 2);
        let installed = raft.handle(install(good.clone(), 0)).await;
        assert_eq!(
            installed,
            Ok(Response::InstallSnapshot(
                raft_traits::InstallSnapshotReply {
                    term: Term(1),
                    outcome: InstallOutcome::Installed {
                        match_index: LogIndex(10)
                    },
                }
            ))
        );
        raft.wait_applied(LogIndex(10)).await.unwrap();
        assert!(!raft.status().stopped);
        raft.shutdown().await;
    });
}

/// [`RpcHandler::handle_then`], which a TCP server uses to send replies from the node's
/// event loop: the reply reaches the callback once; a snapshot in one piece is given back
/// (to be checked by `handle` first, as above) with the callback uncalled; a stopped
/// node answers that it stopped.
#[test]
fn handle_then_answers_through_the_callback_and_gives_back_a_whole_snapshot() {
    use futures::channel::oneshot;
    use raft_traits::{AppendEntries, AppendReply, ReplyTo};

    /// A callback and where its answer arrives.
    fn callback() -> (ReplyTo, oneshot::Receiver<Result<Response, HandlerError>>) {
        let (tx, rx) = oneshot::channel();
        let reply: ReplyTo = Box::new(move |answer| {
            let _ = tx.send(answer);
        });
        (reply, rx)
    }
    let heartbeat = || {
        Request::Append(AppendEntries {
            term: Term(1),
            leader: NodeId(1),
            prev_log: LogId::default(),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
        })
    };

    let simulation = Simulation::new(2);
    let runtime = simulation.runtime();
    simulation.block_on(async move {
        let raft = follower(&runtime).await;

        let (reply, answer) = callback();
        assert!(raft.handle_then(heartbeat(), reply).is_ok());
        assert!(
            matches!(
                answer.await,
                Ok(Ok(Response::Append(AppendReply { term: Term(1), .. })))
            ),
            "the heartbeat's reply"
        );

        let whole = snapshot_of(Bytes::from_static(&[0xff; 8]));
        let (reply, answer) = callback();
        match raft.handle_then(install(whole, 0), reply) {
            Err((Request::InstallSnapshot(_), reply)) => drop(reply),
            other => panic!(
                "a whole snapshot was taken: {:?}",
                other.map_err(|(r, _)| r)
            ),
        }
        assert!(
            answer.await.is_err(),
            "the callback of a request given back was called"
        );
        assert_eq!(raft.status().refused_messages, 0);

        raft.shutdown().await;
        let (reply, answer) = callback();
        assert!(raft.handle_then(heartbeat(), reply).is_ok());
        assert_eq!(answer.await, Ok(Err(HandlerError::Stopped)));
    });
}
