//! Disruption with and without pre-vote and check-quorum, side by side: a one-way cut
//! between the leader and a follower (each direction) for 10 s, and a follower that
//! rejoins after 10 s away, on the lab harness in virtual time over several seeds.
//!
//! ```text
//! cargo run --release -p raft-tests --example robustness -- [runs]
//! ```

#![allow(clippy::print_stdout)]

use raft_tests::lab::scenarios::robustness::{Disruption, one_way_link, rejoin_after_partition};
use raft_tests::sim::VirtualTime;

fn main() {
    let runs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    type Scenario = fn(bool) -> Disruption;
    let scenarios: [(&str, Scenario); 3] = [
        ("one-way cut, leader -> follower", |robust| {
            one_way_link::<VirtualTime>(true, robust)
        }),
        ("one-way cut, follower -> leader", |robust| {
            one_way_link::<VirtualTime>(false, robust)
        }),
        ("rejoin after a 10 s partition", |robust| {
            rejoin_after_partition::<VirtualTime>(robust)
        }),
    ];
    println!("{runs} runs each; leader changes and term increases seen by the healthy servers");
    println!(
        "{:<34} {:>22} {:>22}",
        "scenario", "classic (min-max)", "pre-vote+check-quorum"
    );
    for (name, scenario) in scenarios {
        let range = |robust: bool| {
            let seen: Vec<Disruption> = (0..runs).map(|_| scenario(robust)).collect();
            let changes = seen.iter().map(|d| d.leader_changes);
            let terms = seen.iter().map(|d| d.term_increases);
            format!(
                "{}-{} / +{}-{}",
                changes.clone().min().unwrap_or(0),
                changes.max().unwrap_or(0),
                terms.clone().min().unwrap_or(0),
                terms.max().unwrap_or(0)
            )
        };
        println!("{name:<34} {:>22} {:>22}", range(false), range(true));
    }
}
