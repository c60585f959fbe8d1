//! Part 3B: log replication (LAB-SUITE.md §4.2).

use futures::future::join_all;

use crate::lab::{self, ELECTION_TIMEOUT, Value, World};

use super::{RELIABLE, plain};

/// The lab scenario `basic_agree_3b`: see LAB-SUITE.md §4.
pub fn basic_agree_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): basic agreement");

        for index in 1..=3u64 {
            let (nd, _) = t.n_committed(index);
            assert!(nd == 0, "some have committed before Start()");

            let xindex = t.one(index * 100, n, false).await;
            assert_eq!(xindex, index, "got index {xindex} but expected {index}");
        }

        t.end();
    });
}

/// Checks that each command is sent to each peer just once.
pub fn rpc_bytes_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): RPC byte count");

        t.one(99, n, false).await;
        let bytes0 = t.bytes_total();

        let mut sent = 0u64;
        for index in 2..=11u64 {
            let command = t.random_text(5000);
            let xindex = t.one(command, n, false).await;
            assert_eq!(xindex, index, "got index {xindex} but expected {index}");
            sent += 5000;
        }

        let got = t.bytes_total() - bytes0;
        let expected = n as u64 * sent;
        assert!(
            got <= expected + 50_000,
            "too many RPC bytes; got {got}, expected {expected}"
        );

        t.end();
    });
}

/// The lab scenario `follower_failure_3b`: see LAB-SUITE.md §4.
pub fn follower_failure_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): test progressive failure of followers");

        t.one(101, n, false).await;

        // Disconnect one follower from the network.
        let leader1 = t.check_one_leader().await;
        t.disconnect((leader1 + 1) % n);

        // The leader and the remaining follower should be able to agree despite the
        // disconnected follower.
        t.one(102, n - 1, false).await;
        t.sleep(ELECTION_TIMEOUT).await;
        t.one(103, n - 1, false).await;

        // Disconnect the remaining follower.
        let leader2 = t.check_one_leader().await;
        t.disconnect((leader2 + 1) % n);
        t.disconnect((leader2 + 2) % n);

        // Submit a command.
        let Some((index, _)) = t.start(leader2, 104).await else {
            panic!("leader rejected Start()");
        };
        assert_eq!(index, 4, "expected index 4, got {index}");

        t.sleep(2 * ELECTION_TIMEOUT).await;

        // Check that the command did not commit.
        t.check_no_agreement(index);

        t.end();
    });
}

/// The lab scenario `leader_failure_3b`: see LAB-SUITE.md §4.
pub fn leader_failure_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): test failure of leaders");

        t.one(101, n, false).await;

        // Disconnect the first leader.
        let leader1 = t.check_one_leader().await;
        t.disconnect(leader1);

        // The remaining followers should elect a new leader.
        t.one(102, n - 1, false).await;
        t.sleep(ELECTION_TIMEOUT).await;
        t.one(103, n - 1, false).await;

        // Disconnect the new leader.
        let leader2 = t.check_one_leader().await;
        t.disconnect(leader2);

        // Submit a command to each server.
        for i in 0..n {
            t.start(i, 104).await;
        }

        t.sleep(2 * ELECTION_TIMEOUT).await;

        // Check that the command did not commit.
        t.check_no_agreement(4);

        t.end();
    });
}

/// A follower participates first, then disconnects and reconnects.
pub fn fail_agree_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): agreement after follower reconnects");

        t.one(101, n, false).await;

        // Disconnect one follower from the network.
        let leader = t.check_one_leader().await;
        t.disconnect((leader + 1) % n);

        // The leader and the remaining follower should be able to agree despite the
        // disconnected follower.
        t.one(102, n - 1, false).await;
        t.one(103, n - 1, false).await;
        t.sleep(ELECTION_TIMEOUT).await;
        t.one(104, n - 1, false).await;
        t.one(105, n - 1, false).await;

        // Re-connect.
        t.connect((leader + 1) % n);

        // The full set of servers should preserve previous agreements, and be able to
        // agree on new commands.
        t.one(106, n, true).await;
        t.sleep(ELECTION_TIMEOUT).await;
        t.one(107, n, true).await;

        t.end();
    });
}

/// The lab scenario `fail_no_agree_3b`: see LAB-SUITE.md §4.
pub fn fail_no_agree_3b<W: World>() {
    lab::run::<W, _, _>(plain(5, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): no agreement if too many followers disconnect");

        t.one(10, n, false).await;

        // 3 of 5 followers disconnect.
        let leader = t.check_one_leader().await;
        t.disconnect((leader + 1) % n);
        t.disconnect((leader + 2) % n);
        t.disconnect((leader + 3) % n);

        let Some((index, _)) = t.start(leader, 20).await else {
            panic!("leader rejected Start()");
        };
        assert_eq!(index, 2, "expected index 2, got {index}");

        t.sleep(2 * ELECTION_TIMEOUT).await;

        t.check_no_agreement(index);

        // Repair.
        t.connect((leader + 1) % n);
        t.connect((leader + 2) % n);
        t.connect((leader + 3) % n);

        // The disconnected majority may have chosen a leader from among their own ranks,
        // forgetting index 2.
        let leader2 = t.check_one_leader().await;
        let Some((index2, _)) = t.start(leader2, 30).await else {
            panic!("leader2 rejected Start()");
        };
        assert!((2..=3).contains(&index2), "unexpected index {index2}");

        t.one(1000, n, true).await;

        t.end();
    });
}

/// The lab scenario `concurrent_starts_3b`: see LAB-SUITE.md §4.
pub fn concurrent_starts_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): concurrent Start()s");

        let mut success = false;
        'attempts: for attempt in 0..5 {
            if attempt > 0 {
                // Give the solution some time to settle.
                t.sleep_ms(3000).await;
            }

            let leader = t.check_one_leader().await;
            let Some((_, term)) = t.start(leader, 1).await else {
                // Leader moved on really quickly.
                continue;
            };

            let starts = (0..5u64).map(|i| {
                let t = t.clone();
                async move {
                    match t.start(leader, 100 + i).await {
                        Some((index, term1)) if term1 == term => Some(index),
                        _ => None,
                    }
                }
            });
            let indices: Vec<u64> = join_all(starts).await.into_iter().flatten().collect();

            for j in 0..n {
                if t.state(j).is_some_and(|(term_j, _)| term_j != term) {
                    // Term changed: can't expect low RPC counts.
                    continue 'attempts;
                }
            }

            let mut commands = Vec::new();
            for &index in &indices {
                match t.wait(index, n, Some(term)).await {
                    Some(Value::Int(x)) => commands.push(x),
                    // Peers have moved on to later terms, so we can't expect all Start()s
                    // to have succeeded.
                    None => continue 'attempts,
                    Some(other) => panic!("value {other} is not an int"),
                }
            }

            for x in 100..105u64 {
                assert!(commands.contains(&x), "cmd {x} missing in {commands:?}");
            }

            success = true;
            break;
        }

        assert!(success, "term changed too often");

        t.end();
    });
}

/// The lab scenario `rejoin_3b`: see LAB-SUITE.md §4.
pub fn rejoin_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): rejoin of partitioned leader");

        t.one(101, n, true).await;

        // The leader's network fails.
        let leader1 = t.check_one_leader().await;
        t.disconnect(leader1);

        // Make the old leader try to agree on some entries.
        t.start(leader1, 102).await;
        t.start(leader1, 103).await;
        t.start(leader1, 104).await;

        // The new leader commits, also for index 2.
        t.one(103, 2, true).await;

        // The new leader's network fails.
        let leader2 = t.check_one_leader().await;
        t.disconnect(leader2);

        // The old leader is connected again.
        t.connect(leader1);

        t.one(104, 2, true).await;

        // All together now.
        t.connect(leader2);

        t.one(105, n, true).await;

        t.end();
    });
}

/// The lab scenario `backup_3b`: see LAB-SUITE.md §4.
pub fn backup_3b<W: World>() {
    lab::run::<W, _, _>(plain(5, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): leader backs up quickly over incorrect follower logs");

        t.one(t.rand_int(), n, true).await;

        // Put the leader and one follower in a partition.
        let leader1 = t.check_one_leader().await;
        t.disconnect((leader1 + 2) % n);
        t.disconnect((leader1 + 3) % n);
        t.disconnect((leader1 + 4) % n);

        // Submit lots of commands that won't commit.
        for _ in 0..50 {
            t.start(leader1, t.rand_int()).await;
        }

        t.sleep(ELECTION_TIMEOUT / 2).await;

        t.disconnect(leader1);
        t.disconnect((leader1 + 1) % n);

        // Allow the other partition to recover.
        t.connect((leader1 + 2) % n);
        t.connect((leader1 + 3) % n);
        t.connect((leader1 + 4) % n);

        // Lots of successful commands to the new group.
        for _ in 0..50 {
            t.one(t.rand_int(), 3, true).await;
        }

        // Now another partitioned leader and one follower.
        let leader2 = t.check_one_leader().await;
        let mut other = (leader1 + 2) % n;
        if leader2 == other {
            other = (leader2 + 1) % n;
        }
        t.disconnect(other);

        // Lots more commands that won't commit.
        for _ in 0..50 {
            t.start(leader2, t.rand_int()).await;
        }

        t.sleep(ELECTION_TIMEOUT / 2).await;

        // Bring the original leader back to life.
        for i in 0..n {
            t.disconnect(i);
        }
        t.connect(leader1);
        t.connect((leader1 + 1) % n);
        t.connect(other);

        // Lots of successful commands to the new group.
        for _ in 0..50 {
            t.one(t.rand_int(), 3, true).await;
        }

        // Now everyone.
        for i in 0..n {
            t.connect(i);
        }
        t.one(t.rand_int(), n, true).await;

        t.end();
    });
}

/// The lab scenario `count_3b`: see LAB-SUITE.md §4.
pub fn count_3b<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3B): RPC counts aren't too high");

        let rpcs = || (0..n).map(|j| t.rpc_count(j)).sum::<u64>();

        t.check_one_leader().await;

        let total1 = rpcs();
        assert!(
            (1..=30).contains(&total1),
            "too many or few RPCs ({total1}) to elect initial leader"
        );
        let first_election = total1;

        let mut total2 = 0;
        let mut agreement_start = 0;
        let mut success = false;
        'attempts: for attempt in 0..5 {
            if attempt > 0 {
                // Give the solution some time to settle.
                t.sleep_ms(3000).await;
            }

            let leader = t.check_one_leader().await;
            let total1 = rpcs();
            agreement_start = total1;

            let iters = 10u64;
            let Some((starti, term)) = t.start(leader, 1).await else {
                // Leader moved on really quickly.
                continue;
            };
            let mut commands = Vec::new();
            for i in 1..iters + 2 {
                let x = t.rand_below(1 << 31);
                commands.push(x);
                let Some((index1, term1)) = t.start(leader, x).await else {
                    // No longer the leader, so the term has changed.
                    continue 'attempts;
                };
                if term1 != term {
                    // Term changed while starting.
                    continue 'attempts;
                }
                assert_eq!(starti + i, index1, "Start() failed");
            }

            for i in 1..iters + 1 {
                let expected = commands[usize::try_from(i - 1).unwrap()];
                match t.wait(starti + i, n, Some(term)).await {
                    Some(Value::Int(x)) if x == expected => {}
                    // Term changed: try again.
                    None => continue 'attempts,
                    Some(other) => panic!(
                        "wrong value {other} committed for index {}; expected {commands:?}",
                        starti + i
                    ),
                }
            }

            let mut failed = false;
            total2 = 0;
            for j in 0..n {
                if t.state(j).is_some_and(|(term_j, _)| term_j != term) {
                    // Term changed: can't expect low RPC counts. Need to keep going to
                    // update total2.
                    failed = true;
                }
                total2 += t.rpc_count(j);
            }

            if failed {
                continue 'attempts;
            }

            assert!(
                total2 - total1 <= (iters + 1 + 3) * 3,
                "too many RPCs ({}) for {iters} entries",
                total2 - total1
            );

            success = true;
            break;
        }

        assert!(success, "term changed too often");

        t.sleep(ELECTION_TIMEOUT).await;

        let total3 = rpcs();
        assert!(
            total3 - total2 <= 3 * 20,
            "too many RPCs ({}) for 1 second of idleness",
            total3 - total2
        );
        println!(
            "  count: {first_election} RPCs for the first election (<= 30), {agreements} for the agreements (<= 42), {idle} in an idle second (<= 60)",
            agreements = total2 - agreement_start,
            idle = total3 - total2
        );

        t.end();
    });
}
