//! Membership changes asked for through a node's client port, and the leader's own client
//! address in the configuration.
//!
//! A change is one call of the Raft handle ([`Raft::add_voter`](raft_impl::Raft::add_voter),
//! [`add_learner`](raft_impl::Raft::add_learner),
//! [`remove_node`](raft_impl::Raft::remove_node)). A client's request waits for it for
//! [`NodeConfig::change_wait`](crate::NodeConfig::change_wait), then the node answers
//! [`ClientResponse::ChangePending`]: the change goes on in the leader (a new voter is
//! promoted once it has caught up, whoever waits for it), and the client asks again.
//! Asking again is safe: a change already made is answered at once, one whose
//! configuration is in the log is waited for, and the leader's own calls are idempotent
//! (adding a voter that is a learner waiting for its promotion only waits again).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raft_impl::core::{MembershipRefused, RoleKind};
use raft_impl::{MembershipChangeError, Status};
use raft_net_smol::SmolRuntime;
use raft_traits::{Membership, MembershipError, NodeId, Runtime};

use crate::members::MemberAddr;
use crate::protocol::{ChangeRefused, ClientResponse, ClusterMembers};
use crate::state_machine::KvRaft;

/// The pause between two attempts at a change that the leader refused for a passing
/// reason, and between two looks at whether a configuration has committed.
const POLL: Duration = Duration::from_millis(20);

/// How often a node checks whether, leading, it should record its client address.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// A change this node makes through its Raft handle.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    AddVoter(NodeId, String),
    AddLearner(NodeId, String),
    Remove(NodeId),
    /// The same configuration, with this node's client address recorded.
    Publish(Membership),
}

type Outcome = Result<(), MembershipChangeError>;

/// The membership changes of one node.
pub(crate) struct Changes {
    raft: KvRaft,
    /// Clients' changes this node is working on: the node records its own client
    /// address only when there are none, so as not to hold them up.
    asked: AtomicUsize,
    /// How long a request waits for its change before the answer "pending".
    wait: Duration,
    /// Where this node listens for clients, as clients can reach it.
    client_addr: SocketAddr,
    /// The node's runtime: the publisher runs on it, and every wait here sleeps on it.
    runtime: SmolRuntime,
}

impl Changes {
    pub(crate) fn new(
        raft: KvRaft,
        wait: Duration,
        client_addr: SocketAddr,
        runtime: SmolRuntime,
    ) -> Arc<Changes> {
        Arc::new(Changes {
            raft,
            asked: AtomicUsize::new(0),
            wait,
            client_addr,
            runtime,
        })
    }

    /// [`ClientRequest::Members`](crate::ClientRequest::Members).
    pub(crate) fn members(&self) -> ClientResponse {
        let status = self.raft.status();
        if status.role != RoleKind::Leader {
            return not_leader(&status, status.leader);
        }
        ClientResponse::Members(ClusterMembers::of(&status))
    }

    /// [`ClientRequest::AddNode`](crate::ClientRequest::AddNode).
    pub(crate) async fn add_node(
        &self,
        id: NodeId,
        address: MemberAddr,
        learner: bool,
    ) -> ClientResponse {
        let status = self.raft.status();
        if status.role != RoleKind::Leader {
            return not_leader(&status, status.leader);
        }
        if let Some(recorded) = status.membership.address(id) {
            let voter = status.membership.is_voter(id);
            let same_place = recorded
                .parse::<MemberAddr>()
                .is_ok_and(|recorded| recorded.raft == address.raft);
            if !same_place || (learner && voter) {
                return ClientResponse::ChangeRefused(ChangeRefused::AlreadyMember {
                    id,
                    address: recorded.to_owned(),
                    voter,
                });
            }
            // Asked again (a retry, or a promotion of a learner already there): done
            // once a configuration that says so commits.
            let has_role = |membership: &Membership| {
                !membership.is_joint()
                    && if learner {
                        membership.learners.contains(&id)
                    } else {
                        membership.voters.contains(&id)
                    }
            };
            if has_role(&status.membership) {
                return self.until_committed(|committed| has_role(committed)).await;
            }
        }
        let address = address.to_string();
        let change = if learner {
            Change::AddLearner(id, address)
        } else {
            Change::AddVoter(id, address)
        };
        self.run(change).await
    }

    /// [`ClientRequest::RemoveNode`](crate::ClientRequest::RemoveNode).
    pub(crate) async fn remove_node(&self, id: NodeId) -> ClientResponse {
        let status = self.raft.status();
        if status.role != RoleKind::Leader {
            return not_leader(&status, status.leader);
        }
        if !status.membership.contains(id) {
            if status.committed_membership.contains(id) {
                // Asked again: its removal is in the log.
                return self
                    .until_committed(|committed| !committed.contains(id))
                    .await;
            }
            return ClientResponse::ChangeRefused(ChangeRefused::UnknownNode(id));
        }
        self.run(Change::Remove(id)).await
    }

    /// Makes `change`, waiting for it for at most [`wait`](Self::wait).
    async fn run(&self, change: Change) -> ClientResponse {
        let asked = Asked::count(&self.asked);
        let done = async { Some(self.make(&change).await) };
        let waited = async {
            self.runtime.sleep(self.wait).await;
            None
        };
        let outcome = smol::future::or(done, waited).await;
        drop(asked);
        match outcome {
            None => ClientResponse::ChangePending {
                reason: self.pending_reason(&change),
            },
            Some(Ok(())) => ClientResponse::Members(ClusterMembers::of(&self.raft.status())),
            Some(Err(error)) => self.refusal(&change, error),
        }
    }

    /// Waits, for at most [`wait`](Self::wait), until the committed configuration is
    /// `done`, while this node leads.
    async fn until_committed(&self, done: impl Fn(&Membership) -> bool) -> ClientResponse {
        let until = Instant::now() + self.wait;
        loop {
            let status = self.raft.status();
            if status.role != RoleKind::Leader {
                return ClientResponse::OutcomeUnknown {
                    reason: "the leader lost its leadership before the change committed".to_owned(),
                };
            }
            if done(&status.committed_membership) {
                return ClientResponse::Members(ClusterMembers::of(&status));
            }
            if Instant::now() >= until {
                return ClientResponse::ChangePending {
                    reason: format!(
                        "the new configuration is not committed yet (the leader has committed {})",
                        status.commit_index.0
                    ),
                };
            }
            self.runtime.sleep(POLL).await;
        }
    }

    /// Makes `change`, retrying when the leader refuses it for a reason that passes by
    /// itself: another change is committing, or the leader has not committed an entry of
    /// its term yet. Both last a replication round, unless the cluster cannot commit at
    /// all; so the retries last half the time a client's request waits, and a change
    /// still refused then is refused to the client (rather than left pending).
    async fn make(&self, change: &Change) -> Outcome {
        let until = Instant::now() + self.wait / 2;
        loop {
            let outcome = match change {
                Change::AddVoter(id, address) => self.raft.add_voter(*id, address.clone()).await,
                Change::AddLearner(id, address) => {
                    self.raft.add_learner(*id, address.clone()).await
                }
                Change::Remove(id) => self.raft.remove_node(*id).await,
                Change::Publish(target) => self.raft.change_membership(target.clone()).await,
            };
            let passing = matches!(
                outcome,
                Err(MembershipChangeError::Refused(
                    MembershipRefused::ChangeInProgress | MembershipRefused::NotReady
                ))
            );
            if !passing || Instant::now() >= until {
                return outcome;
            }
            self.runtime.sleep(POLL).await;
        }
    }

    /// What a change not completed yet waits for.
    fn pending_reason(&self, change: &Change) -> String {
        let status = self.raft.status();
        match change {
            Change::AddVoter(id, _) if status.committed_membership.learners.contains(id) => {
                let matched = status
                    .followers
                    .get(id)
                    .map_or(0, |progress| progress.match_index.0);
                format!(
                    "{id} is a learner catching up (it holds the log up to {matched}, the leader has committed {}); it becomes a voter once it has caught up",
                    status.commit_index.0
                )
            }
            _ => format!(
                "the new configuration is not committed yet (the leader has committed {})",
                status.commit_index.0
            ),
        }
    }

    /// The answer to a change that failed.
    fn refusal(&self, change: &Change, error: MembershipChangeError) -> ClientResponse {
        let status = self.raft.status();
        match error {
            MembershipChangeError::Refused(MembershipRefused::NotLeader { leader_hint }) => {
                not_leader(&status, leader_hint)
            }
            MembershipChangeError::Refused(MembershipRefused::ChangeInProgress) => {
                ClientResponse::ChangeRefused(ChangeRefused::ChangeInProgress)
            }
            MembershipChangeError::Refused(MembershipRefused::NotReady) => {
                ClientResponse::NotApplied {
                    reason: "the leader has not committed an entry of its term yet".to_owned(),
                }
            }
            MembershipChangeError::Refused(MembershipRefused::UnknownNode(id)) => {
                ClientResponse::ChangeRefused(ChangeRefused::UnknownNode(id))
            }
            MembershipChangeError::Refused(MembershipRefused::Invalid(
                MembershipError::NoVoters,
            )) => match change {
                Change::Remove(id) => {
                    ClientResponse::ChangeRefused(ChangeRefused::NoVotersLeft(*id))
                }
                _ => other(error),
            },
            MembershipChangeError::OutcomeUnknown => ClientResponse::OutcomeUnknown {
                reason: error.to_string(),
            },
            MembershipChangeError::Stopped => ClientResponse::NotApplied {
                reason: "the node has stopped".to_owned(),
            },
            error => other(error),
        }
    }

    /// Runs until the node stops: whenever this node leads, it sees that the committed
    /// configuration records its client address, so that clients can be sent to it.
    ///
    /// Only once the configuration records a client address at all, that is once a
    /// member was added at run time: until then the members are the ones every client
    /// was started with, and a cluster that never changes its members never writes a
    /// configuration entry.
    pub(crate) async fn publish_client_addr(self: Arc<Self>) {
        while !self.raft.is_stopped() {
            self.runtime.sleep(PUBLISH_EVERY).await;
            // Not while a client's change is under way; after it, if still needed.
            if self.asked.load(Ordering::Acquire) > 0 {
                continue;
            }
            let status = self.raft.status();
            let Some(target) = self.published(&status) else {
                continue;
            };
            let client = self.client_addr;
            match self.make(&Change::Publish(target)).await {
                Ok(()) => {
                    tracing::info!(node = %status.id, %client, "client address recorded in the configuration")
                }
                Err(error) => {
                    tracing::debug!(node = %status.id, %error, "client address not recorded; will try again")
                }
            }
        }
    }

    /// The configuration to commit so that it records this node's client address, if
    /// this node leads, the configuration is settled and does not record it yet.
    fn published(&self, status: &Status) -> Option<Membership> {
        let committed = &status.committed_membership;
        if status.role != RoleKind::Leader
            || status.membership != *committed
            || committed.is_joint()
        {
            return None;
        }
        let addrs: Vec<(NodeId, MemberAddr)> = committed
            .nodes
            .iter()
            .filter_map(|(&id, address)| Some((id, address.parse::<MemberAddr>().ok()?)))
            .collect();
        if addrs.iter().all(|(_, addr)| addr.client.is_none()) {
            return None;
        }
        let (_, mut own) = addrs.into_iter().find(|(id, _)| *id == status.id)?;
        let client = self.advertised(own.raft);
        if own.client == Some(client) {
            return None;
        }
        own.client = Some(client);
        let mut target = committed.clone();
        target.nodes.insert(status.id, own.to_string());
        Some(target)
    }

    /// The client address to record: the one this node listens on, with the Raft
    /// address's IP if it listens on every interface.
    fn advertised(&self, raft: SocketAddr) -> SocketAddr {
        if self.client_addr.ip().is_unspecified() {
            SocketAddr::new(raft.ip(), self.client_addr.port())
        } else {
            self.client_addr
        }
    }
}

/// One client's change counted in [`Changes::asked`] for as long as it lives: also when
/// the request is dropped half-way (its connection closed).
struct Asked<'a>(&'a AtomicUsize);

impl<'a> Asked<'a> {
    fn count(asked: &'a AtomicUsize) -> Asked<'a> {
        asked.fetch_add(1, Ordering::AcqRel);
        Asked(asked)
    }
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// "Not the leader", with the leader's client address if the configuration records it.
pub(crate) fn not_leader(status: &Status, leader_hint: Option<NodeId>) -> ClientResponse {
    let leader_addr = leader_hint
        .filter(|&leader| leader != status.id)
        .and_then(|leader| status.membership.address(leader))
        .and_then(|address| address.parse::<MemberAddr>().ok())
        .and_then(|address| address.client);
    ClientResponse::NotLeader {
        leader_hint,
        leader_addr,
    }
}

fn other(error: MembershipChangeError) -> ClientResponse {
    ClientResponse::ChangeRefused(ChangeRefused::Other {
        reason: error.to_string(),
    })
}
