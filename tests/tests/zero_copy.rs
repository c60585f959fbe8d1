//! Command payloads are shared, never copied, on their way from the handle through the
//! log, the transport and storage to the state machine: in one process, every node's state
//! machine receives the very buffer the client proposed.
//!
//! The library clones a command wherever it hands it on (into the log, into each peer's
//! AppendEntries, into storage, out to the apply task), so this holds exactly when cloning
//! the command type is a reference-count increment, as it is for [`Bytes`]. The test
//! catches any hand-off that rebuilds the payload instead (an encode/decode round trip on
//! an in-process path, a `to_vec`, a copy into a fresh buffer).

#![allow(clippy::unwrap_used)] // test code: a panic is how it fails

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_impl::{Config, Parts, Raft};
use raft_mem::{LocalNetwork, MemStorage};
use raft_net_smol::SmolRuntime;
use raft_traits::{
    Bytes, LogId, NodeId, Runtime, Snapshot, SnapshotMeta, StateMachine, StateMachineError,
};

/// Where each applied payload lived: the address of its first byte, by log index.
type Seen = Arc<Mutex<BTreeMap<u64, usize>>>;

/// Remembers the address of every payload it applies.
struct AddressRecorder {
    seen: Seen,
    last_applied: LogId,
}

impl StateMachine<Bytes> for AddressRecorder {
    type Response = usize;

    async fn apply(&mut self, log_id: LogId, command: Bytes) -> usize {
        let address = command.as_ptr() as usize;
        self.seen.lock().unwrap().insert(log_id.index.0, address);
        self.last_applied = log_id;
        address
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_included: self.last_applied,
                membership: Default::default(),
            },
            data: Bytes::new(),
        })
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        self.last_applied = snapshot.meta.last_included;
        Ok(())
    }
}

#[test]
fn every_state_machine_receives_the_proposed_buffer() {
    let runtime = SmolRuntime::with_threads(2);
    let rt = runtime.clone();
    runtime.block_on(async move {
        let net: LocalNetwork<Bytes> = LocalNetwork::new();
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut nodes = Vec::new();
        let mut seen = Vec::new();
        for &id in &members {
            let recorder = AddressRecorder {
                seen: Seen::default(),
                last_applied: LogId::default(),
            };
            seen.push(recorder.seen.clone());
            let parts = Parts {
                runtime: rt.clone(),
                storage: MemStorage::new(),
                state_machine: recorder,
                transport: net.transport(),
            };
            let raft: Raft<Bytes, usize> =
                Raft::spawn(id, members.clone(), Config::default(), parts)
                    .await
                    .unwrap();
            net.register(id, Arc::new(raft.clone()));
            nodes.push(raft);
        }

        let mut leader = None;
        for _ in 0..200 {
            leader = nodes.iter().find(|n| n.state().1).cloned();
            if leader.is_some() {
                break;
            }
            rt.sleep(Duration::from_millis(25)).await;
        }
        let leader = leader.expect("a leader within 5 s");

        let mut proposed = BTreeMap::new();
        for i in 0..50u8 {
            let payload = Bytes::from(vec![i; 4096]);
            let address = payload.as_ptr() as usize;
            // `start` fails only if leadership moved, which nothing here provokes.
            let index = leader.start(payload).await.unwrap().0;
            proposed.insert(index.0, address);
        }
        let last = *proposed.keys().last().unwrap();
        for (node, seen) in nodes.iter().zip(&seen) {
            for _ in 0..400 {
                if node.status().last_applied.0 >= last {
                    break;
                }
                rt.sleep(Duration::from_millis(25)).await;
            }
            let seen = seen.lock().unwrap();
            for (index, address) in &proposed {
                assert_eq!(
                    seen.get(index),
                    Some(address),
                    "node {:?} applied index {index} from another buffer than the proposed one",
                    node.status().id
                );
            }
        }
        for node in &nodes {
            node.shutdown().await;
        }
    });
    runtime.stop();
}
