//! The apply task: hands committed entries and snapshots to the state machine, strictly
//! in log order, and answers the clients waiting for them.
//!
//! It runs apart from the event loop and holds no lock while it calls the state machine,
//! so `apply` may call back into the Raft handle (the lab's `Snapshot` from inside the
//! applier) without deadlock.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use raft_traits::{
    Command, Entry, LogId, LogIndex, Payload, Snapshot, StateMachine, StateMachineError, Term,
};

use super::{Event, store_applied};
use crate::core::Apply;
use crate::error::ProposeError;
use crate::handle::Shared;

/// Where a proposer waits for its command's result.
pub(crate) type Waiter<R> = oneshot::Sender<Result<R, ProposeError>>;

/// What the event loop sends to the apply task, in log order.
pub(crate) enum ApplyMsg<C, R> {
    /// Committed entries, consecutive.
    Entries(Vec<Entry<C>>),
    /// A snapshot replacing the state.
    Snapshot(Snapshot),
    /// Someone waits for the result of the command at `id`.
    Waiter { id: LogId, waiter: Waiter<R> },
    /// Stop after what came before.
    Shutdown,
}

impl<C, R> From<Apply<C>> for ApplyMsg<C, R> {
    fn from(apply: Apply<C>) -> Self {
        match apply {
            Apply::Entries(entries) => ApplyMsg::Entries(entries),
            Apply::Snapshot(snapshot) => ApplyMsg::Snapshot(snapshot),
        }
    }
}

pub(crate) async fn run_apply<C, M>(
    mut state_machine: M,
    mut inbox: mpsc::UnboundedReceiver<ApplyMsg<C, M::Response>>,
    events: mpsc::UnboundedSender<Event<C, M::Response>>,
    shared: Arc<Shared>,
) -> M
where
    C: Command,
    M: StateMachine<C>,
{
    let mut waiters: BTreeMap<LogIndex, (Term, Waiter<M::Response>)> = BTreeMap::new();
    while let Some(msg) = inbox.next().await {
        match msg {
            ApplyMsg::Entries(entries) => {
                for entry in entries {
                    let id = entry.log_id();
                    let response = match entry.payload {
                        Payload::Command(command) => Some(state_machine.apply(id, command).await),
                        Payload::Blank => None,
                    };
                    store_applied(&shared, id.index);
                    if let Some((term, waiter)) = waiters.remove(&id.index) {
                        let result = match response {
                            Some(response) if term == id.term => Ok(response),
                            _ => Err(ProposeError::Lost {
                                index: id.index,
                                term,
                            }),
                        };
                        let _ = waiter.send(result);
                    }
                }
            }
            ApplyMsg::Snapshot(snapshot) => {
                let covered = snapshot.meta.last_included.index;
                match state_machine.restore(snapshot).await {
                    Ok(()) => {}
                    Err(StateMachineError::Stale { applied, offered }) => {
                        tracing::debug!(node = %shared.id, %applied, %offered, "state machine kept its newer state");
                    }
                    Err(error) => {
                        let reason =
                            format!("the state machine cannot restore a snapshot: {error}");
                        let _ = events.unbounded_send(Event::Fatal(reason));
                        break;
                    }
                }
                store_applied(&shared, covered);
                let still_waiting = waiters.split_off(&covered.next());
                for (index, (_, waiter)) in std::mem::replace(&mut waiters, still_waiting) {
                    let _ = waiter.send(Err(ProposeError::OutcomeUnknown { index }));
                }
            }
            ApplyMsg::Waiter { id, waiter } => {
                if let Some((term, replaced)) = waiters.insert(id.index, (id.term, waiter)) {
                    // A newer proposal took the index, so the older one was overwritten.
                    let _ = replaced.send(Err(ProposeError::Lost {
                        index: id.index,
                        term,
                    }));
                }
            }
            ApplyMsg::Shutdown => break,
        }
    }
    state_machine
}
