//! Part 3C: persistence, and the harder agreement scenarios (LAB-SUITE.md §4.3). "Crash"
//! and "take down" are the 2025 crash (the server is shut down, its storage kept); a
//! restarted server is connected by the scenario, and only that one (2026).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use raft_traits::Runtime;

use crate::lab::{self, Cluster, ELECTION_TIMEOUT, Value, World};

use super::{RELIABLE, UNRELIABLE, plain};

/// Restarts server `i` and connects it.
async fn restart<Rt: Runtime>(t: &Cluster<Rt>, i: usize) {
    t.restart(i).await;
    t.connect(i);
}

/// The lab scenario `persist1_3c`: see LAB-SUITE.md §4.
pub fn persist1_3c<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): basic persistence");

        t.one(11, n, true).await;

        t.crash_all().await;
        t.restart_all().await;

        t.one(12, n, true).await;

        let leader1 = t.check_one_leader().await;
        t.crash(leader1).await;
        restart(&t, leader1).await;

        t.one(13, n, true).await;

        let leader2 = t.check_one_leader().await;
        t.crash(leader2).await;

        t.one(14, n - 1, true).await;

        restart(&t, leader2).await;

        // Wait for leader2 to join before killing i3.
        t.wait(4, n, None).await;

        let i3 = (t.check_one_leader().await + 1) % n;
        t.crash(i3).await;

        t.one(15, n - 1, true).await;

        restart(&t, i3).await;

        t.one(16, n, true).await;

        t.end();
    });
}

/// The lab scenario `persist2_3c`: see LAB-SUITE.md §4.
pub fn persist2_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): more persistence");

        let mut index = 1;
        for _ in 0..5 {
            t.one(10 + index, n, true).await;
            index += 1;

            let leader1 = t.check_one_leader().await;

            t.crash((leader1 + 1) % n).await;
            t.crash((leader1 + 2) % n).await;

            t.one(10 + index, n - 2, true).await;
            index += 1;

            t.crash(leader1).await;
            t.crash((leader1 + 3) % n).await;
            t.crash((leader1 + 4) % n).await;

            // They hold old logs and must not win an election.
            restart(&t, (leader1 + 1) % n).await;
            restart(&t, (leader1 + 2) % n).await;

            t.sleep(ELECTION_TIMEOUT).await;

            restart(&t, (leader1 + 3) % n).await;

            t.one(10 + index, n - 2, true).await;
            index += 1;

            restart(&t, (leader1 + 4) % n).await;
            restart(&t, leader1).await;
        }

        t.one(1000, n, true).await;

        t.end();
    });
}

/// The lab scenario `persist3_3c`: see LAB-SUITE.md §4.
pub fn persist3_3c<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): partitioned leader and one follower crash, leader restarts");

        t.one(101, 3, true).await;

        let leader = t.check_one_leader().await;
        t.disconnect((leader + 2) % n);

        t.one(102, 2, true).await;

        t.crash(leader).await;
        t.crash((leader + 1) % n).await;
        t.connect((leader + 2) % n);
        restart(&t, leader).await;

        // The restarted leader must have persisted 102, so that leader+2, which lacks it,
        // cannot become leader and lose it.
        t.one(103, 2, true).await;

        restart(&t, (leader + 1) % n).await;

        t.one(104, n, true).await;

        t.end();
    });
}

/// The pause after each round of Figure 8: with probability 0.1 up to half an election
/// timeout, otherwise up to 12 ms.
async fn figure8_pause<Rt: Runtime>(t: &Cluster<Rt>) {
    let ms = if t.rand_below(1000) < 100 {
        let half = u64::try_from(ELECTION_TIMEOUT.as_millis() / 2).unwrap();
        t.rand_below(half)
    } else {
        t.rand_below(13)
    };
    t.sleep_ms(ms).await;
}

/// Figure 8 of the paper, with persistence: a new leader must not commit an entry of an
/// old term by counting replicas.
pub fn figure8_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): Figure 8");

        t.one(t.rand_int(), 1, true).await;

        let mut nup = n;
        for _ in 0..1000 {
            let mut leader = None;
            for i in 0..n {
                if t.is_alive(i) && t.start(i, t.rand_int()).await.is_some() {
                    leader = Some(i);
                }
            }

            figure8_pause(&t).await;

            if let Some(leader) = leader {
                t.crash(leader).await;
                nup -= 1;
            }

            if nup < 3 {
                let s = t.rand_server();
                if !t.is_alive(s) {
                    restart(&t, s).await;
                    nup += 1;
                }
            }
        }

        for i in 0..n {
            if !t.is_alive(i) {
                restart(&t, i).await;
            }
        }

        t.one(t.rand_int(), n, true).await;

        t.end();
    });
}

/// The lab scenario `unreliable_agree_3c`: see LAB-SUITE.md §4.
pub fn unreliable_agree_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, UNRELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): unreliable agreement");

        let mut clients = Vec::new();
        for iters in 1..50u64 {
            for j in 0..4u64 {
                let t = t.clone();
                clients.push(t.clone().spawn(async move {
                    t.one(100 * iters + j, 1, true).await;
                }));
            }
            t.one(iters, 1, true).await;
        }

        t.set_reliable(true);

        for client in clients {
            client.await.expect("a concurrent one() failed");
        }

        t.one(100, n, true).await;

        t.end();
    });
}

/// The lab scenario `figure8_unreliable_3c`: see LAB-SUITE.md §4.
pub fn figure8_unreliable_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, UNRELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3C): Figure 8 (unreliable)");

        t.one(t.rand_below(10_000), 1, true).await;

        let mut nup = n;
        for iters in 0..1000 {
            if iters == 200 {
                t.set_long_reordering(true);
            }
            let mut leader = None;
            for i in 0..n {
                let accepted = t.start(i, t.rand_below(10_000)).await.is_some();
                if accepted && t.is_connected(i) {
                    leader = Some(i);
                }
            }

            figure8_pause(&t).await;

            if let Some(leader) = leader
                && t.rand_below(1000) < 500
            {
                t.disconnect(leader);
                nup -= 1;
            }

            if nup < 3 {
                let s = t.rand_server();
                if !t.is_connected(s) {
                    t.connect(s);
                    nup += 1;
                }
            }
        }

        for i in 0..n {
            if !t.is_connected(i) {
                t.connect(i);
            }
        }

        // Still unreliable, with long reordering.
        t.one(t.rand_below(10_000), n, true).await;

        t.end();
    });
}

/// One churn client: submits random commands to every live server and records those it
/// sees committed, until `stop`.
async fn churn_client<Rt: Runtime>(t: Cluster<Rt>, me: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut values = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let x = t.rand_int();
        let mut index = None;
        for i in 0..t.n() {
            // Try them all, maybe one of them is a leader.
            if let Some((index1, _)) = t.start(i, x).await {
                index = Some(index1);
            }
        }
        if let Some(index) = index {
            // Maybe leader will commit our value, maybe not. But don't wait forever.
            for pause in [10, 20, 50, 100, 200] {
                let (nd, committed) = t.n_committed(index);
                if nd > 0 {
                    match committed {
                        Some(Value::Int(xx)) => {
                            if xx == x {
                                values.push(x);
                            }
                        }
                        other => panic!("wrong command type: {other:?}"),
                    }
                    break;
                }
                t.sleep_ms(pause).await;
            }
        } else {
            t.sleep_ms(79 + me * 17).await;
        }
    }
    values
}

async fn churn<Rt: Runtime>(t: Cluster<Rt>) {
    let n = t.n();
    let stop = Arc::new(AtomicBool::new(false));

    let clients: Vec<_> = (0..3u64)
        .map(|me| t.spawn(churn_client(t.clone(), me, Arc::clone(&stop))))
        .collect();

    for _ in 0..20 {
        if t.rand_below(1000) < 200 {
            let i = t.rand_server();
            t.disconnect(i);
        }

        if t.rand_below(1000) < 500 {
            let i = t.rand_server();
            if !t.is_alive(i) {
                t.restart(i).await;
            }
            t.connect(i);
        }

        if t.rand_below(1000) < 200 {
            let i = t.rand_server();
            if t.is_alive(i) {
                t.crash(i).await;
            }
        }

        // Make crash/restart infrequent enough that the servers can often keep up with
        // one another, and their logs don't diverge too much.
        t.sleep(ELECTION_TIMEOUT * 7 / 10).await;
    }

    t.sleep(ELECTION_TIMEOUT).await;
    t.set_reliable(true);
    for i in 0..n {
        if !t.is_alive(i) {
            t.restart(i).await;
        }
        t.connect(i);
    }

    stop.store(true, Ordering::Release);

    let mut values = Vec::new();
    for client in clients {
        let Ok(seen) = client.await else {
            panic!("client failed");
        };
        values.extend(seen);
    }

    t.sleep(ELECTION_TIMEOUT).await;

    let last_index = t.one(t.rand_int(), n, true).await;

    let mut really = Vec::new();
    for index in 1..=last_index {
        match t.wait(index, n, None).await {
            Some(Value::Int(x)) => really.push(x),
            other => panic!("not an int: {other:?} at index {index}"),
        }
    }

    for v1 in values {
        assert!(really.contains(&v1), "didn't find a value: {v1}");
    }
}

/// The lab scenario `reliable_churn_3c`: see LAB-SUITE.md §4.
pub fn reliable_churn_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, RELIABLE), |t| async move {
        t.begin("Test (3C): churn");
        churn(t.clone()).await;
        t.end();
    });
}

/// The lab scenario `unreliable_churn_3c`: see LAB-SUITE.md §4.
pub fn unreliable_churn_3c<W: World>() {
    lab::run::<W, _, _>(plain(5, UNRELIABLE), |t| async move {
        t.begin("Test (3C): unreliable churn");
        churn(t.clone()).await;
        t.end();
    });
}
