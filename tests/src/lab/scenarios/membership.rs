//! Membership changes on the lab harness (Raft thesis ch. 4), in real and virtual time
//! (see [`membership_scenarios!`](crate::membership_scenarios)): growing and shrinking a
//! cluster under load, removing the leader, replacing a crashed server, changing while
//! the network is unreliable or the leader is cut off, and concurrent requests.
//!
//! Servers beyond the bootstrap configuration ([`ClusterSpec::members`]) run from the
//! start with an empty configuration, waiting for a leader that adds them.

use std::collections::BTreeSet;

use raft_impl::core::MembershipRefused;
use raft_impl::{MembershipChangeError, RoleKind};
use raft_traits::{NodeId, Runtime};

use super::ClusterSpec;
use crate::lab::{self, Cluster, World};

fn spec(n: usize, members: usize, reliable: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable,
        snapshot: false,
        robust: true,
        members: Some(members),
    }
}

/// Runs `change` on whoever leads, retrying (for up to 60 attempts) while there is no
/// leader, leadership moved, the leader is not ready, or an earlier change has not
/// finished; returns the final refusal if the change was refused for good.
///
/// The lab's servers append no blank entry when elected, so a new leader commits
/// nothing of its term (and so may change nothing, thesis §4.1) until a command
/// arrives: a retry first gives the leader a command of its own.
async fn on_leader<Rt, F, Fut>(t: &Cluster<Rt>, change: F) -> Result<(), MembershipRefused>
where
    Rt: Runtime,
    F: Fn(crate::lab::LabRaft) -> Fut,
    Fut: std::future::Future<Output = Result<(), MembershipChangeError>>,
{
    for attempt in 0..60u64 {
        let leader = t.check_one_leader().await;
        let Some(raft) = t.raft(leader) else {
            continue;
        };
        match change(raft).await {
            Ok(()) => return Ok(()),
            Err(MembershipChangeError::Refused(
                MembershipRefused::NotLeader { .. }
                | MembershipRefused::NotReady
                | MembershipRefused::ChangeInProgress,
            ))
            | Err(MembershipChangeError::OutcomeUnknown) => {
                let _ = t.start(leader, 1_000_000 + attempt).await;
                t.sleep_ms(100).await;
            }
            Err(MembershipChangeError::Refused(refused)) => return Err(refused),
            Err(other) => panic!("membership change failed: {other}"),
        }
    }
    panic!("no leader carried out the change in 60 attempts");
}

/// Waits (up to 10 s) until the leader reports `expected` as its committed voters. A
/// leader elected just after the change learns that it committed only once it commits
/// an entry of its own term (Figure 8), which the lab's leaders do not append by
/// themselves: each round gives it a command.
async fn assert_voters<Rt: Runtime>(t: &Cluster<Rt>, expected: BTreeSet<NodeId>) {
    let deadline = t.now() + std::time::Duration::from_secs(10);
    loop {
        let leader = t.check_one_leader().await;
        let raft = t.raft(leader).expect("the leader runs");
        let voters = raft.status().committed_membership.voters;
        if voters == expected {
            return;
        }
        assert!(
            t.now() < deadline,
            "committed voters {voters:?}, expected {expected:?}"
        );
        let _ = t.start(leader, 2_000_000u64).await;
        t.sleep_ms(100).await;
    }
}

fn ids<Rt: Runtime>(t: &Cluster<Rt>, servers: &[usize]) -> BTreeSet<NodeId> {
    servers.iter().map(|&i| t.node_id(i)).collect()
}

/// 3 → 5 voters while a client keeps committing commands.
pub fn grow_under_load<W: World>() {
    lab::run::<W, _, _>(spec(5, 3, true), |t| async move {
        t.begin("Membership: grow 3 -> 5 under client load");
        t.check_one_leader().await;
        let load = {
            let t = t.clone();
            t.clone().spawn(async move {
                for value in 0u64..30 {
                    t.one(1000 + value, 3, true).await;
                }
            })
        };
        for joiner in [3, 4] {
            let id = t.node_id(joiner);
            let outcome = on_leader(&t, |raft| async move { raft.add_voter(id, "").await }).await;
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        let _ = load.await;
        assert_voters(&t, ids(&t, &[0, 1, 2, 3, 4])).await;
        // Every server, old and new, applies what comes next.
        t.one(2000u64, 5, true).await;
        t.end();
    });
}

/// 5 → 3 voters, the leader first: it leads until its removal commits, then steps
/// down and never campaigns again; the remaining three keep serving.
pub fn shrink_removing_the_leader<W: World>() {
    lab::run::<W, _, _>(spec(5, 5, true), |t| async move {
        t.begin("Membership: shrink 5 -> 3, removing the leader");
        let leader = t.check_one_leader().await;
        t.one(1u64, 5, true).await;
        let leader_id = t.node_id(leader);
        let raft = t.raft(leader).expect("runs");
        raft.remove_node(leader_id)
            .await
            .expect("the leader removes itself");
        let other = (0..t.n()).find(|&i| i != leader).expect("five servers");
        let other_id = t.node_id(other);
        let outcome = on_leader(&t, |raft| async move { raft.remove_node(other_id).await }).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        let remaining: Vec<usize> = (0..t.n()).filter(|&i| i != leader && i != other).collect();
        assert_voters(&t, ids(&t, &remaining)).await;
        let old = t.raft(leader).expect("runs").status();
        assert_ne!(
            old.role,
            RoleKind::Leader,
            "the removed leader stepped down"
        );
        // The removed servers are idle; the three that remain commit without them.
        t.disconnect(leader);
        t.disconnect(other);
        t.one(2u64, 3, true).await;
        t.end();
    });
}

/// A voter crashes for good; a new server takes its place (added, then the dead one
/// removed), and the cluster keeps committing with a majority of live voters.
pub fn replace_a_crashed_server<W: World>() {
    lab::run::<W, _, _>(spec(4, 3, true), |t| async move {
        t.begin("Membership: replace a crashed server");
        let leader = t.check_one_leader().await;
        t.one(1u64, 3, true).await;
        let dead = (leader + 1) % 3;
        t.crash(dead).await;
        let new = t.node_id(3);
        let outcome = on_leader(&t, |raft| async move { raft.add_voter(new, "").await }).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        let dead_id = t.node_id(dead);
        let outcome = on_leader(&t, |raft| async move { raft.remove_node(dead_id).await }).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        let live: Vec<usize> = (0..4).filter(|&i| i != dead).collect();
        assert_voters(&t, ids(&t, &live)).await;
        t.one(2u64, 3, true).await;
        t.end();
    });
}

/// A joint change ({0,1,2} → {0,3,4}) while requests and replies are delayed and lost.
pub fn joint_change_while_unreliable<W: World>() {
    lab::run::<W, _, _>(spec(5, 3, false), |t| async move {
        t.begin("Membership: joint change on an unreliable network");
        t.check_one_leader().await;
        for joiner in [3, 4] {
            let id = t.node_id(joiner);
            let outcome = on_leader(&t, |raft| async move { raft.add_learner(id, "").await }).await;
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        t.one(1u64, 5, true).await;
        let target = raft_traits::Membership::from_voters(ids(&t, &[0, 3, 4]));
        let outcome = on_leader(&t, |raft| {
            let target = target.clone();
            async move { raft.change_membership(target).await }
        })
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_voters(&t, ids(&t, &[0, 3, 4])).await;
        t.disconnect(1);
        t.disconnect(2);
        t.one(2u64, 3, true).await;
        t.end();
    });
}

/// A change asked of a leader cut off in a minority does not complete there (its
/// caller learns the outcome is unknown, or that it is not the leader); the majority
/// elects a leader that makes the change.
pub fn change_while_the_leader_is_cut_off<W: World>() {
    lab::run::<W, _, _>(spec(5, 4, true), |t| async move {
        t.begin("Membership: a change while the leader is in a minority");
        let leader = t.check_one_leader().await;
        t.one(1u64, 4, true).await;
        let partner = (0..4).find(|&i| i != leader).expect("four voters");
        for i in 0..t.n() {
            if i != leader && i != partner {
                t.disconnect(i);
            }
        }
        let joiner = t.node_id(4);
        let cut_off = t.raft(leader).expect("runs");
        let result = cut_off.add_voter(joiner, "").await;
        assert!(
            matches!(
                result,
                Err(MembershipChangeError::OutcomeUnknown
                    | MembershipChangeError::Refused(MembershipRefused::NotLeader { .. }))
            ),
            "a leader without a majority completed a change: {result:?}"
        );
        for i in 0..t.n() {
            t.connect(i);
        }
        let outcome = on_leader(&t, |raft| async move { raft.add_voter(joiner, "").await }).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_voters(&t, ids(&t, &[0, 1, 2, 3, 4])).await;
        t.one(2u64, 5, true).await;
        t.end();
    });
}

/// Two changes asked at once: exactly one is taken, the other is refused as a change
/// already in progress.
pub fn concurrent_changes<W: World>() {
    lab::run::<W, _, _>(spec(5, 3, true), |t| async move {
        t.begin("Membership: concurrent change requests");
        let leader = t.check_one_leader().await;
        t.one(1u64, 3, true).await;
        let raft = t.raft(leader).expect("runs");
        let (a, b) = (t.node_id(3), t.node_id(4));
        // Both requests are sent before either is answered; the leader takes one
        // change at a time, so unless the first has already committed when the second
        // arrives, the second is refused as a change in progress.
        let (first, second) = futures::join!(raft.add_learner(a, ""), raft.add_learner(b, ""));
        let results = [(a, first), (b, second)];
        let mut added = BTreeSet::new();
        for (id, result) in &results {
            match result {
                Ok(()) => {
                    added.insert(*id);
                }
                Err(MembershipChangeError::Refused(MembershipRefused::ChangeInProgress)) => {}
                other => panic!("a concurrent change ended with {other:?}"),
            }
        }
        assert!(!added.is_empty(), "neither change was taken: {results:?}");
        // What was acknowledged is what the cluster committed, and nothing else.
        let leader = t.check_one_leader().await;
        let committed = t.raft(leader).expect("runs").status().committed_membership;
        let learners: BTreeSet<NodeId> = committed.learners.clone();
        assert_eq!(learners, added, "{results:?}");
        println!("  {} of 2 concurrent changes taken", added.len());
        t.end();
    });
}

/// Expands `$make!(test_name, scenario call)` once per membership scenario; the call
/// names the world `W`, which the test target's macro defines.
#[macro_export]
macro_rules! membership_scenarios {
    ($make:ident) => {
        $make!(
            grow_under_load,
            $crate::lab::scenarios::membership::grow_under_load::<W>()
        );
        $make!(
            shrink_removing_the_leader,
            $crate::lab::scenarios::membership::shrink_removing_the_leader::<W>()
        );
        $make!(
            replace_a_crashed_server,
            $crate::lab::scenarios::membership::replace_a_crashed_server::<W>()
        );
        $make!(
            joint_change_while_unreliable,
            $crate::lab::scenarios::membership::joint_change_while_unreliable::<W>()
        );
        $make!(
            change_while_the_leader_is_cut_off,
            $crate::lab::scenarios::membership::change_while_the_leader_is_cut_off::<W>()
        );
        $make!(
            concurrent_changes,
            $crate::lab::scenarios::membership::concurrent_changes::<W>()
        );
    };
}
