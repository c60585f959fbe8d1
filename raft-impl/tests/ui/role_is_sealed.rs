// The set of roles is closed: a downstream crate cannot add one.
use raft_impl::core::{Role, RoleKind};

#[derive(Debug)]
struct Observer;

impl Role for Observer {
    const KIND: RoleKind = RoleKind::Follower;
}

fn main() {}
