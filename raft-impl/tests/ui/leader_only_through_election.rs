// A Node<Leader> exists only as the result of `into_leader` with a majority of votes:
// neither the node nor its role state can be assembled by hand.
use raft_impl::core::{Follower, Leader, Node};

pub fn forge(follower: Node<Follower, u64>) -> Node<Leader, u64> {
    let role = Leader {
        progress: Default::default(),
        ticks: 0,
    };
    Node {
        shared: follower.shared,
        role,
    }
}

fn main() {}
