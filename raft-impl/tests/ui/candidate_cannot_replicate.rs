// A candidate cannot act as leader: it has no heartbeat to send and no log to replicate.
use raft_impl::Config;
use raft_impl::core::{Candidate, Effects, Node};
use raft_traits::{Membership, NodeId, RecoveredState};

fn main() {
    let mut out = Effects::new();
    let follower = Node::<_, u64>::boot(
        NodeId(1),
        Membership::from_voters([NodeId(1), NodeId(2), NodeId(3)]),
        Config::default(),
        1,
        RecoveredState::default(),
        None,
        &mut out,
    )
    .unwrap();
    let mut candidate: Node<Candidate, u64> = follower.into_candidate(&mut out);
    candidate.heartbeat(&mut out);
}
