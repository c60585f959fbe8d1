// The leader's role state (progress per peer, durable index) cannot be made up outside
// the crate either: every field is private, so the only `Leader` is one `into_leader` built.
use raft_impl::core::Leader;

pub fn forge() -> Leader {
    Leader {
        progress: Default::default(),
        ticks: 0,
        durable: Default::default(),
        commit_notice_armed: false,
    }
}

fn main() {}
