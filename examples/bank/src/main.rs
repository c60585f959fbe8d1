//! The bank demo: three replicas on loopback TCP, clients moving money concurrently, the
//! leader stopped midway, and checks at the end that no money appeared or vanished and
//! that every replica holds the same ledger.
//!
//! Run: `cargo run -p raft-bank` (add `--release` for speed; `RUST_LOG` is not read:
//! the library logs through `tracing`, and this demo installs no subscriber).

#![allow(clippy::print_stdout)] // a demo prints what it does

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_bank::{BankClient, BankCommand, BankError, ClientConfig, ClientError, Cluster, Settings};
use raft_impl::RoleKind;
use raft_traits::NodeId;

const ACCOUNTS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
const OPENING_BALANCE: u64 = 1_000;
/// Concurrent clients, each in its own session.
const CLIENTS: u64 = 4;
/// Transfers done (all clients together) before the leader stops, and again after.
const TRANSFERS_EACH_SIDE: u64 = 200;
/// The deposit whose answer is lost when the leader stops.
const LOST_DEPOSIT: u64 = 500;
/// Each replica hands Raft a snapshot every this many commands.
const SNAPSHOT_EVERY: u64 = 100;
/// How long any awaited condition (an election, a catch-up) may take.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    match smol::block_on(demo()) {
        Ok(()) => {
            println!(
                "success: money conserved, every command applied exactly once, all replicas agree"
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    let mut settings = Settings::default();
    settings.snapshot_every = SNAPSHOT_EVERY;
    let mut cluster = Cluster::start(3, settings)
        .await
        .map_err(|e| e.to_string())?;
    let addrs: Vec<String> = cluster.running().map(|n| n.addr().to_string()).collect();
    println!("3 replicas on {}", addrs.join(", "));
    for node in cluster.running() {
        watch_leader_changes(node.id(), node.raft().watch_leadership());
    }
    let outcome = run(&mut cluster).await;
    cluster.shutdown().await;
    outcome
}

async fn run(cluster: &mut Cluster) -> Result<(), String> {
    wait_until("a leader is elected", || cluster.leader().is_some()).await?;

    // Open the accounts through one client.
    let mut teller = connect(cluster).await?;
    for account in ACCOUNTS {
        teller.open(account).await.map_err(|e| e.to_string())?;
        teller
            .deposit(account, OPENING_BALANCE)
            .await
            .map_err(|e| e.to_string())?;
    }
    let opened = OPENING_BALANCE * ACCOUNTS.len() as u64;
    println!(
        "opened {} accounts with {OPENING_BALANCE} each: {opened} in the bank",
        ACCOUNTS.len()
    );

    // Clients move money at random between the accounts, each in its own session.
    println!("{CLIENTS} clients make transfers at once");
    let done = Arc::new(AtomicU64::new(0));
    let enough = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for seed in 0..CLIENTS {
        let client = connect(cluster).await?;
        let (done, enough) = (Arc::clone(&done), Arc::clone(&enough));
        workers.push(smol::spawn(transfers(client, seed, done, enough)));
    }

    // Midway: a deposit reaches the leader and is applied, but its answer is lost
    // (we never read it), and the leader stops with transfers in flight.
    wait_until("the first transfers are done", || {
        done.load(Ordering::Relaxed) >= TRANSFERS_EACH_SIDE
    })
    .await?;
    let deposit = teller.number(BankCommand::Deposit {
        account: "alice".into(),
        amount: LOST_DEPOSIT,
    });
    let deadline = Instant::now() + PATIENCE;
    let leader = loop {
        let leader = current_leader(cluster).await?;
        let raft = cluster
            .node(leader)
            .ok_or("the leader vanished")?
            .raft()
            .clone();
        // `start` appends and returns at once; the answer would come from `propose`.
        if let Ok((index, _term)) = raft.start(deposit.clone()).await {
            raft.wait_applied(index).await.map_err(|e| e.to_string())?;
            break leader;
        }
        if Instant::now() >= deadline {
            return Err("no leader took the deposit".into());
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    };
    cluster.stop(leader).await;
    let at_stop = done.load(Ordering::Relaxed);
    println!(
        "stopped the leader, node {}, after {at_stop} transfers; its answer to a deposit of {LOST_DEPOSIT} into alice was lost",
        leader.0,
    );
    // Retried in its session with its number: answered from the session table.
    let duplicates = teller.stats().duplicates;
    let balance = teller.send(deposit).await.map_err(|e| e.to_string())?;
    if teller.stats().duplicates != duplicates + 1 {
        return Err("the retried deposit was applied again".into());
    }
    println!(
        "retried the deposit: answered from the session table (alice had {balance}), not applied twice"
    );

    // The clients go on through the new leader, then stop.
    wait_until("transfers are done through the new leader", || {
        done.load(Ordering::Relaxed) >= at_stop + TRANSFERS_EACH_SIDE
    })
    .await?;
    enough.store(true, Ordering::Relaxed);

    // Every transfer the clients were told succeeded, and none other, moved money.
    // (Signed: the transfers are summed in another order than they were applied in.)
    let mut expected: BTreeMap<String, i128> = ACCOUNTS
        .iter()
        .map(|account| (account.to_string(), i128::from(OPENING_BALANCE)))
        .collect();
    *expected.entry("alice".into()).or_default() += i128::from(LOST_DEPOSIT);
    let (mut moved, mut refused, mut redirects, mut unknown) = (0, 0, 0, 0);
    for worker in workers {
        let report = worker.await?;
        redirects += report.redirects;
        unknown += report.unknown_outcomes;
        for (from, to, amount) in report.moved {
            moved += 1;
            *expected.get_mut(from).ok_or("unknown account")? -= i128::from(amount);
            *expected.get_mut(to).ok_or("unknown account")? += i128::from(amount);
        }
        refused += report.refused;
    }
    println!(
        "clients done: {moved} transfers moved money, {refused} refused for insufficient funds; \
         {redirects} attempts sent on to another node, {unknown} retried after an unknown outcome"
    );

    // The stopped node comes back from its storage and catches up.
    cluster.restart(leader).await.map_err(|e| e.to_string())?;
    let leader_now = current_leader(cluster).await?;
    let commit = cluster
        .node(leader_now)
        .ok_or("no leader")?
        .raft()
        .status()
        .commit_index;
    wait_until("every replica has applied everything", || {
        cluster
            .running()
            .all(|node| node.raft().status().last_applied >= commit)
    })
    .await?;
    let restarted = cluster.node(leader).ok_or("restarted node missing")?;
    println!(
        "restarted node {}: it caught up to index {} (snapshots restored: {})",
        leader.0,
        restarted.raft().status().last_applied.0,
        restarted.view().snapshots_restored()
    );

    // The checks.
    let mut auditor = connect(cluster).await?;
    let balances = auditor
        .read(|ledger| ledger.accounts().clone())
        .await
        .map_err(|e| e.to_string())?;
    let total: u64 = balances.values().sum();
    println!(
        "balances, read linearizably: {balances:?}, total {total} = {opened} opened + {LOST_DEPOSIT} deposited"
    );
    if total != opened + LOST_DEPOSIT {
        return Err(format!(
            "money not conserved: {total} in the bank, {} expected",
            opened + LOST_DEPOSIT
        ));
    }
    let as_read: BTreeMap<String, i128> = balances
        .iter()
        .map(|(account, &balance)| (account.clone(), i128::from(balance)))
        .collect();
    if as_read != expected {
        return Err(format!(
            "balances differ from the answers clients got (a command lost or applied twice): {balances:?}, expected {expected:?}"
        ));
    }
    let mut ledgers = Vec::new();
    for node in cluster.running() {
        ledgers.push((node.id(), node.view().ledger().await));
    }
    if let Some((first, ledger)) = ledgers.first()
        && let Some((other, _)) = ledgers.iter().find(|(_, other)| other != ledger)
    {
        return Err(format!("replicas {first} and {other} disagree"));
    }
    let snapshots: Vec<u64> = cluster
        .running()
        .map(|n| n.view().snapshots_taken())
        .collect();
    println!(
        "all {} replicas hold the same ledger; snapshots taken per replica: {snapshots:?}",
        ledgers.len()
    );
    Ok(())
}

/// What one client's transfers came to: each transfer the bank applied, and how many
/// it refused for want of funds.
struct Report {
    moved: Vec<(&'static str, &'static str, u64)>,
    refused: u64,
    redirects: u64,
    unknown_outcomes: u64,
}

/// Makes random transfers, one at a time, in `client`'s session, until `enough`.
async fn transfers(
    mut client: BankClient,
    seed: u64,
    done: Arc<AtomicU64>,
    enough: Arc<AtomicBool>,
) -> Result<Report, String> {
    let mut random = SplitMix(seed);
    let mut report = Report {
        moved: Vec::new(),
        refused: 0,
        redirects: 0,
        unknown_outcomes: 0,
    };
    let pick = |random: &mut SplitMix| ACCOUNTS[(random.next() % ACCOUNTS.len() as u64) as usize];
    while !enough.load(Ordering::Relaxed) {
        let (from, to) = (pick(&mut random), pick(&mut random));
        let amount = 1 + random.next() % 400;
        match client.transfer(from, to, amount).await {
            Ok(_) => report.moved.push((from, to, amount)),
            Err(ClientError::Bank(BankError::InsufficientFunds { .. })) => report.refused += 1,
            Err(error) => return Err(format!("transfer {from} → {to}: {error}")),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    let stats = client.stats();
    report.redirects = stats.redirects;
    report.unknown_outcomes = stats.unknown_outcomes;
    Ok(report)
}

/// Prints each time a node takes office, as that node sees it. A watch delivers every
/// change of role, term and leader in order; it ends when its node stops.
fn watch_leader_changes(id: NodeId, mut watch: raft_impl::LeadershipWatch) {
    smol::spawn(async move {
        let mut current = Some(watch.current());
        while let Some(leadership) = current {
            if leadership.role == RoleKind::Leader {
                println!("  node {} leads (term {})", id.0, leadership.term.0);
            }
            current = watch.changed().await;
        }
    })
    .detach();
}

async fn connect(cluster: &Cluster) -> Result<BankClient, String> {
    BankClient::connect(cluster.replicas(), ClientConfig::default())
        .await
        .map_err(|e| format!("cannot open a session: {e}"))
}

async fn current_leader(cluster: &Cluster) -> Result<NodeId, String> {
    wait_until("a leader is elected", || cluster.leader().is_some()).await?;
    cluster.leader().ok_or_else(|| "no leader".into())
}

/// Polls `condition` every few milliseconds until it holds, for at most [`PATIENCE`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A tiny deterministic random generator (SplitMix64), so that a run's transfers are
/// the same every time.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
