// Only a leader accepts commands: `propose` does not exist on Node<Follower>.
use raft_impl::Config;
use raft_impl::core::{Effects, Follower, Node};
use raft_traits::{Membership, NodeId, RecoveredState};

fn main() {
    let mut out = Effects::new();
    let mut follower: Node<Follower, u64> = Node::boot(
        NodeId(1),
        Membership::from_voters([NodeId(1)]),
        Config::default(),
        1,
        RecoveredState::default(),
        None,
        &mut out,
    )
    .unwrap();
    follower.propose(7, &mut out);
}
