// A Node<Leader> exists only as the result of `into_leader` with a majority of votes:
// a node cannot be assembled by hand around a role, even from a real follower's state.
use raft_impl::core::{Follower, Leader, Node};

pub fn forge(follower: Node<Follower, u64>, role: Leader) -> Node<Leader, u64> {
    Node {
        shared: follower.shared,
        role,
    }
}

fn main() {}
