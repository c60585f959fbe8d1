//! Beyond the lab: what pre-vote, check-quorum, leadership transfer, reads without log
//! writes and proposals that always end must achieve, on the same harness, in real and
//! virtual time (see [`robustness_scenarios!`](crate::robustness_scenarios)).
//!
//! The disruption scenarios also run with the classic algorithm (`robust = false`) and
//! return what they observed, so that the figures before and after can be printed side
//! by side (`cargo run --release -p raft-tests --example robustness`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft_impl::{ProposeError, ReadError, RoleKind};
use raft_traits::Runtime;

use super::{ClusterSpec, RELIABLE};
use crate::lab::{self, Cluster, ELECTION_TIMEOUT, World};

/// What a disruption scenario saw happen to the healthy part of the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disruption {
    /// How many times the healthy servers saw another leader (or none) than the first.
    pub leader_changes: u64,
    /// How far the healthy servers' terms rose.
    pub term_increases: u64,
}

fn spec(n: usize, robust: bool) -> ClusterSpec {
    ClusterSpec {
        n,
        reliable: RELIABLE,
        snapshot: false,
        robust,
        members: None,
    }
}

/// Samples the servers in `watched` every 50 ms for `duration` and counts how often the
/// leader they report changes, and how far their terms rise.
async fn watch_disruption<Rt: Runtime>(
    t: &Cluster<Rt>,
    watched: &[usize],
    duration: Duration,
) -> Disruption {
    let term_of = |t: &Cluster<Rt>| {
        watched
            .iter()
            .filter_map(|&i| t.state(i).map(|(term, _)| term))
            .max()
            .unwrap_or(0)
    };
    let leader_of = |t: &Cluster<Rt>| {
        watched
            .iter()
            .copied()
            .find(|&i| t.state(i).is_some_and(|(_, leads)| leads))
    };
    let first_term = term_of(t);
    let mut leader = leader_of(t);
    let mut seen = Disruption::default();
    let end = t.now() + duration;
    while t.now() < end {
        t.sleep_ms(50).await;
        let now_leader = leader_of(t);
        if now_leader != leader {
            seen.leader_changes += 1;
            leader = now_leader;
        }
    }
    seen.term_increases = term_of(t) - first_term;
    seen
}

/// The leader's messages to one follower are lost for 10 s, while the follower's
/// messages still arrive (`from_leader`), or the other way round. With pre-vote and
/// check-quorum the cut-off follower cannot depose the leader.
pub fn one_way_link<W: World>(from_leader: bool, robust: bool) -> Disruption {
    let seen = Arc::new(Mutex::new(Disruption::default()));
    let report = Arc::clone(&seen);
    lab::run::<W, _, _>(spec(3, robust), move |t| async move {
        let direction = if from_leader { "to" } else { "from" };
        t.begin(&format!(
            "Robustness: a one-way cut {direction} a follower for 10 s"
        ));
        let leader = t.check_one_leader().await;
        let follower = (leader + 1) % t.n();
        let other = (leader + 2) % t.n();
        t.one(1u64, 3, true).await;
        if from_leader {
            t.cut_one_way(leader, follower, true);
        } else {
            t.cut_one_way(follower, leader, true);
        }
        let disruption = watch_disruption(&t, &[leader, other], Duration::from_secs(10)).await;
        if from_leader {
            t.cut_one_way(leader, follower, false);
        } else {
            t.cut_one_way(follower, leader, false);
        }
        *report.lock().unwrap_or_else(|e| e.into_inner()) = disruption;
        if robust {
            assert_eq!(
                disruption,
                Disruption::default(),
                "the cut-off follower disrupted a healthy leader"
            );
        }
        t.one(2u64, 3, true).await;
        t.end();
    });
    *seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// A follower is partitioned away for 10 s and rejoins: with pre-vote it has not raised
/// its term, so the others keep their leader and their term.
pub fn rejoin_after_partition<W: World>(robust: bool) -> Disruption {
    let seen = Arc::new(Mutex::new(Disruption::default()));
    let report = Arc::clone(&seen);
    lab::run::<W, _, _>(spec(3, robust), move |t| async move {
        t.begin("Robustness: a partitioned follower rejoins after 10 s");
        let leader = t.check_one_leader().await;
        let away = (leader + 1) % t.n();
        let other = (leader + 2) % t.n();
        t.one(1u64, 3, true).await;
        t.disconnect(away);
        t.sleep(Duration::from_secs(10)).await;
        t.connect(away);
        let disruption = watch_disruption(&t, &[leader, other], 2 * ELECTION_TIMEOUT).await;
        *report.lock().unwrap_or_else(|e| e.into_inner()) = disruption;
        if robust {
            assert_eq!(
                disruption,
                Disruption::default(),
                "the rejoining follower disrupted the cluster"
            );
            assert_eq!(t.check_one_leader().await, leader);
        }
        t.one(2u64, 3, true).await;
        t.end();
    });
    *seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// A leader cut off in a minority stops calling itself leader within two election
/// timeouts (check-quorum), and its `start` is refused from then on.
pub fn minority_leader_steps_down<W: World>() {
    lab::run::<W, _, _>(spec(5, true), |t| async move {
        t.begin("Robustness: a leader in a minority steps down");
        let leader = t.check_one_leader().await;
        t.one(1u64, 5, true).await;
        let partner = (leader + 1) % t.n();
        // The leader and one follower on one side, three servers on the other.
        for i in 0..t.n() {
            if i != leader && i != partner {
                t.disconnect(i);
            }
        }
        let cut_at = t.now();
        let limit = Duration::from_millis(2 * 700);
        let stepped_down = loop {
            if t.state(leader).is_some_and(|(_, leads)| !leads) {
                break t.now() - cut_at;
            }
            assert!(
                t.now() - cut_at <= limit,
                "still leading {:?} after losing its majority",
                t.now() - cut_at
            );
            t.sleep_ms(10).await;
        };
        println!("  stepped down {stepped_down:?} after the cut");
        assert!(
            t.start(leader, 2u64).await.is_none(),
            "a stepped-down leader took a command"
        );
        for i in 0..t.n() {
            t.connect(i);
        }
        t.one(3u64, 5, true).await;
        t.end();
    });
}

/// Leadership moves to each follower in turn while commands keep flowing; every
/// command that was acknowledged is applied everywhere.
pub fn transfer_to_each_follower<W: World>() {
    lab::run::<W, _, _>(spec(3, true), |t| async move {
        t.begin("Robustness: leadership transfer to each follower under load");
        let first = t.check_one_leader().await;
        let load = {
            let t = t.clone();
            t.clone().spawn(async move {
                for value in 100u64..160 {
                    t.one(value, 3, true).await;
                }
            })
        };
        let mut leader = first;
        for step in 1..t.n() {
            let target = (first + step) % t.n();
            let raft = t.raft(leader).expect("the leader runs");
            raft.transfer_leadership(t.node_id(target))
                .await
                .expect("a transfer to a voter starts");
            let deadline = t.now() + ELECTION_TIMEOUT;
            while !t.state(target).is_some_and(|(_, leads)| leads) {
                assert!(
                    t.now() < deadline,
                    "{target} did not take over within a second"
                );
                t.sleep_ms(10).await;
            }
            leader = target;
        }
        let _ = load.await;
        t.end();
    });
}

/// On an idle cluster: a proposal appended by a leader that then loses its majority ends
/// at once with "outcome unknown" and its index; one made on a follower ends with
/// `NotLeader` and a hint; one waiting on a leader that shuts down ends too.
pub fn proposals_always_end<W: World>() {
    lab::run::<W, _, _>(spec(3, true), |t| async move {
        t.begin("Robustness: proposals always end");
        let leader = t.check_one_leader().await;
        t.one(1u64, 3, true).await;
        let follower = (leader + 1) % t.n();
        let refused = t.raft(follower).expect("runs").propose(2u64.into()).await;
        assert_eq!(
            refused,
            Err(ProposeError::NotLeader {
                leader_hint: Some(t.node_id(leader))
            })
        );

        for i in 0..t.n() {
            if i != leader {
                t.disconnect(i);
            }
        }
        let raft = t.raft(leader).expect("runs");
        let (index, _) = raft.start(3u64.into()).await.expect("still the leader");
        let waiting = raft.propose(4u64.into()).await;
        match waiting {
            Err(ProposeError::OutcomeUnknown { index: at }) => {
                assert_eq!(at.0, index.0 + 1, "the index it was appended at")
            }
            other => panic!("a proposal on a leader that lost its quorum ended with {other:?}"),
        }
        for i in 0..t.n() {
            t.connect(i);
        }

        // A proposal waiting on a leader that shuts down ends with it.
        let leader = t.check_one_leader().await;
        for i in 0..t.n() {
            if i != leader {
                t.disconnect(i);
            }
        }
        let raft = t.raft(leader).expect("runs");
        let before = raft.status().last_log.index;
        let waiting = {
            let raft = raft.clone();
            t.spawn(async move { raft.propose(5u64.into()).await })
        };
        // Shut down only once the proposal is in the leader's log (bounded wait).
        let deadline = t.now() + Duration::from_secs(5);
        while raft.status().last_log.index == before {
            assert!(t.now() < deadline, "the proposal never reached the log");
            t.sleep_ms(5).await;
        }
        raft.shutdown().await;
        let ended = waiting.await.expect("the task ran");
        assert!(
            matches!(ended, Err(ProposeError::OutcomeUnknown { .. })),
            "{ended:?}"
        );
        t.end();
    });
}

/// Reads through ReadIndex on the leader and on a follower see every write that
/// completed before them, and a leader cut off from its majority cannot serve one.
pub fn read_index_reads<W: World>() {
    lab::run::<W, _, _>(spec(3, true), |t| async move {
        t.begin("Robustness: ReadIndex on the leader and on followers");
        let leader = t.check_one_leader().await;
        for round in 0..10u64 {
            let index = t.one(round, 3, true).await;
            for i in 0..t.n() {
                let raft = t.raft(i).expect("runs");
                let read = loop {
                    match raft.read_barrier().await {
                        Err(ReadError::NotReady) => t.sleep_ms(10).await,
                        other => break other,
                    }
                };
                let read = read.unwrap_or_else(|e| panic!("read on {i}: {e}"));
                assert!(
                    read.0 >= index,
                    "server {i} read at {read} before the completed write at {index}"
                );
                assert!(raft.status().last_applied.0 >= index);
            }
        }
        // Cut off, the old leader cannot confirm a read (it steps down or times out).
        for i in 0..t.n() {
            if i != leader {
                t.disconnect(i);
            }
        }
        let raft = t.raft(leader).expect("runs");
        let read = raft.read_index().await;
        assert!(
            matches!(read, Err(ReadError::NotLeader { .. })),
            "a leader without its majority served a read: {read:?}"
        );
        // The read's refusal may be seen a moment before the status is published.
        let deadline = t.now() + Duration::from_secs(1);
        while raft.status().role == RoleKind::Leader {
            assert!(
                t.now() < deadline,
                "refused a read but still calls itself leader"
            );
            t.sleep_ms(10).await;
        }
        t.end();
    });
}

/// Expands `$make!(test_name, scenario call)` once per robustness scenario, in the robust
/// mode (pre-vote and check-quorum on), where each asserts what it must achieve. The
/// call names the world `W`, which the test target's macro defines.
#[macro_export]
macro_rules! robustness_scenarios {
    ($make:ident) => {
        $make!(
            one_way_cut_from_leader,
            $crate::lab::scenarios::robustness::one_way_link::<W>(true, true)
        );
        $make!(
            one_way_cut_to_leader,
            $crate::lab::scenarios::robustness::one_way_link::<W>(false, true)
        );
        $make!(
            rejoin_after_partition,
            $crate::lab::scenarios::robustness::rejoin_after_partition::<W>(true)
        );
        $make!(
            minority_leader_steps_down,
            $crate::lab::scenarios::robustness::minority_leader_steps_down::<W>()
        );
        $make!(
            transfer_to_each_follower,
            $crate::lab::scenarios::robustness::transfer_to_each_follower::<W>()
        );
        $make!(
            proposals_always_end,
            $crate::lab::scenarios::robustness::proposals_always_end::<W>()
        );
        $make!(
            read_index_reads,
            $crate::lab::scenarios::robustness::read_index_reads::<W>()
        );
    };
}
