//! A long sweep of the random fault explorer: many seeds, a progress bar (on a terminal
//! only), and a summary
//! of what was exercised. Failing seeds are printed with the command that replays them.
//!
//! Run: `cargo run --release -p raft-tests --example sweep -- --seeds 10000 [--start S] [--threads T] [--classic] [--transfer-probe] [--no-membership]`
//!
//! `--classic` turns pre-vote, check-quorum and lease reads off (the classic algorithm),
//! to compare its disruptive elections with the default's. `--transfer-probe` probes
//! lease reads across leadership transfers (`Options::transfer_probe`). `--no-membership`
//! keeps every cluster on its bootstrap members (`Options::membership_changes` off).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_examples::progress::{Goal, Progress};
use raft_tests::sim::explorer::{Failure, Options, Stats, explore};

fn argument(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1))
        .map(|value| {
            value.parse().unwrap_or_else(|e| {
                eprintln!("{name} {value}: {e}");
                std::process::exit(2)
            })
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds = argument(&args, "--seeds", 10_000);
    let start = argument(&args, "--start", 0);
    let threads = argument(&args, "--threads", 2).max(1);
    let options = Options {
        classic_elections: args.iter().any(|a| a == "--classic"),
        transfer_probe: args.iter().any(|a| a == "--transfer-probe"),
        membership_changes: !args.iter().any(|a| a == "--no-membership"),
        ..Options::default()
    };

    let next = Arc::new(AtomicU64::new(start));
    let done = Arc::new(AtomicU64::new(0));
    let totals = Arc::new(Mutex::new((
        Stats::default(),
        Duration::ZERO,
        Vec::<Failure>::new(),
    )));
    let started = Instant::now();
    let progress = Arc::new(Progress::start(
        "seeds",
        Arc::clone(&done),
        Goal::Count(seeds),
    ));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, done, totals) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&totals));
            let progress = Arc::clone(&progress);
            let options = options.clone();
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= start + seeds {
                        return;
                    }
                    let outcome = explore(seed, &options);
                    let mut totals = totals.lock().unwrap();
                    match outcome {
                        Ok(run) => {
                            totals.0.add(&run.stats);
                            totals.1 += run.virtual_time;
                        }
                        Err(failure) => {
                            totals.2.push(failure);
                            progress.set_message(format!("{} failed", totals.2.len()));
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for worker in workers {
        worker.join().unwrap();
    }
    drop(progress);

    let (stats, virtual_time, failures) = &*totals.lock().unwrap();
    println!(
        "swept seeds {start}..{} in {:.1?} ({:.1} h of virtual time), {} failed",
        start + seeds,
        started.elapsed(),
        virtual_time.as_secs_f64() / 3600.0,
        failures.len()
    );
    println!("{stats}");
    println!(
        "reads by mode: {} through the log, {} read-index, {} lease ({} of these at followers; lease reads on in {} of {} runs)",
        stats.reads_log,
        stats.reads_index,
        stats.reads_lease,
        stats.reads_on_followers,
        stats.lease_runs,
        seeds - failures.len() as u64
    );
    println!(
        "transfers: {} started, {} completed (the target led within two election timeouts), {} refused; {} elections started by a transfer",
        stats.transfers,
        stats.transfers_completed,
        stats.transfers_refused,
        stats.transfer_campaigns
    );
    println!(
        "elections: {} started, {} disruptive (a leader with a live quorum), {} of them on a quiet network{}; {:.1} h of virtual time guarded",
        stats.campaigns,
        stats.disruptive_elections,
        stats.disruptive_on_quiet_network,
        if options.classic_elections {
            " (classic: not forbidden)"
        } else {
            " (forbidden)"
        },
        stats.guarded_millis as f64 / 3_600_000.0
    );
    let changes = stats.changes();
    println!(
        "membership changes: {} requested, {} succeeded, {} refused, {} of unknown outcome; {} servers joined, {} removed servers left running, {} shut down; commit quorums checked on storage: {} configurations ({} joint), {} other entries",
        changes.requested,
        changes.succeeded,
        changes.refused,
        changes.unknown,
        stats.joins,
        stats.removed_kept_running,
        stats.removed_shut_down,
        stats.config_commits_checked,
        stats.joint_commits_checked,
        stats.entry_commits_checked
    );
    for (kind, counts) in stats.changes_by_kind() {
        println!(
            "  {kind}: {} requested, {} succeeded, {} refused, {} unknown",
            counts.requested, counts.succeeded, counts.refused, counts.unknown
        );
    }
    for failure in failures {
        println!("\n{failure}");
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
