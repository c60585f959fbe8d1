//! Test-only hooks.
//!
//! With the `planted-bugs` feature, [`Config`](crate::Config) gains a `planted_bug`
//! field that switches on one of these known protocol bugs in the core. Tests use it to
//! show that their checks catch real bugs. Without the feature the field does not exist
//! and every check for a planted bug is `false`.

/// A known way to break Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// A leader commits an entry of an earlier term once a majority stores it, which
    /// Figure 8 of the paper shows can lose committed entries.
    CommitEarlierTermByCounting,
    /// A server grants its vote without persisting it, so after a restart it can vote
    /// again in the same term and two leaders can be elected in one term.
    ForgetVoteOnRestart,
}
