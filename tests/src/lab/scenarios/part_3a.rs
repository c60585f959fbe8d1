//! Part 3A: leader election (LAB-SUITE.md §4.1).

use crate::lab::{self, ELECTION_TIMEOUT, World};

use super::{RELIABLE, plain};

/// The lab scenario `initial_election_3a`: see LAB-SUITE.md §4.
pub fn initial_election_3a<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        t.begin("Test (3A): initial election");

        // Is there a leader?
        t.check_one_leader().await;

        // Sleep a bit to avoid racing with followers learning of the election, then check
        // that all peers agree on the term.
        t.sleep_ms(50).await;
        let term1 = t.check_terms();
        assert!(term1 >= 1, "term is {term1}, but should be at least 1");

        // Does the leader and term stay the same if there is no network failure?
        t.sleep(2 * ELECTION_TIMEOUT).await;
        let term2 = t.check_terms();
        if term1 != term2 {
            println!("warning: term changed even though there were no failures");
        }

        // There should still be a leader.
        t.check_one_leader().await;

        t.end();
    });
}

/// The lab scenario `re_election_3a`: see LAB-SUITE.md §4.
pub fn re_election_3a<W: World>() {
    lab::run::<W, _, _>(plain(3, RELIABLE), |t| async move {
        let n = t.n();
        t.begin("Test (3A): election after network failure");

        let leader1 = t.check_one_leader().await;

        // If the leader disconnects, a new one should be elected.
        t.disconnect(leader1);
        t.check_one_leader().await;

        // If the old leader rejoins, that shouldn't disturb the new leader.
        t.connect(leader1);
        let leader2 = t.check_one_leader().await;

        // If there's no quorum, no new leader should be elected.
        t.disconnect(leader2);
        t.disconnect((leader2 + 1) % n);
        t.sleep(2 * ELECTION_TIMEOUT).await;
        // The lone connected server must not think it is the leader.
        t.check_no_leader();

        // If a quorum arises, it should elect a leader.
        t.connect((leader2 + 1) % n);
        t.check_one_leader().await;

        // Re-join of the last node shouldn't prevent leader from existing.
        t.connect(leader2);
        t.check_one_leader().await;

        t.end();
    });
}

/// The lab scenario `many_elections_3a`: see LAB-SUITE.md §4.
pub fn many_elections_3a<W: World>() {
    lab::run::<W, _, _>(plain(7, RELIABLE), |t| async move {
        t.begin("Test (3A): multiple elections");

        t.check_one_leader().await;

        for _ in 1..10 {
            // Disconnect three random servers (possibly the same one twice).
            let i1 = t.rand_server();
            let i2 = t.rand_server();
            let i3 = t.rand_server();
            t.disconnect(i1);
            t.disconnect(i2);
            t.disconnect(i3);

            // Either the current leader should still be alive, or the remaining four
            // should elect a new one.
            t.check_one_leader().await;

            t.connect(i1);
            t.connect(i2);
            t.connect(i3);
        }

        t.check_one_leader().await;

        t.end();
    });
}
