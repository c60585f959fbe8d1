//! The bank on a real 3-node TCP cluster: concurrent transfers while the leader stops,
//! a command whose answer was lost retried in its session, and at the end, money
//! conserved, every command applied exactly once, and every replica agreeing. And the
//! README's walk through the crate: its excerpts must still be the code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_bank::{BankClient, BankCommand, BankError, ClientConfig, ClientError, Cluster, Settings};
use raft_traits::NodeId;

const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const OPENING_BALANCE: u64 = 100;
const CLIENTS: u64 = 3;
/// Transfers done (all clients together) before the leader stops, and again after.
const TRANSFERS_EACH_SIDE: u64 = 30;
const LOST_DEPOSIT: u64 = 7;
/// Generous: an election on a loaded machine, a catch-up.
const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        smol::Timer::after(Duration::from_millis(5)).await;
    }
}

async fn leader(cluster: &Cluster) -> NodeId {
    wait_until("a leader is elected", || cluster.leader().is_some()).await;
    cluster.leader().expect("a leader")
}

async fn connect(cluster: &Cluster) -> BankClient {
    BankClient::connect(cluster.replicas(), ClientConfig::default())
        .await
        .expect("a session")
}

/// Transfers between the accounts, chosen by `seed`, until `enough`; returns those the
/// bank applied.
async fn transfers(
    mut client: BankClient,
    seed: u64,
    done: Arc<AtomicU64>,
    enough: Arc<AtomicBool>,
) -> Vec<(&'static str, &'static str, u64)> {
    let mut applied = Vec::new();
    let mut state = seed;
    let mut round = 0;
    while !enough.load(Ordering::Relaxed) {
        round += 1;
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = |shift: u32| ACCOUNTS[((state >> shift) % ACCOUNTS.len() as u64) as usize];
        let (from, to, amount) = (pick(33), pick(40), 1 + (state >> 50) % 60);
        match client.transfer(from, to, amount).await {
            Ok(_) => applied.push((from, to, amount)),
            Err(ClientError::Bank(BankError::InsufficientFunds { .. })) => {}
            Err(error) => panic!("client {seed}, transfer {round}: {error}"),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    applied
}

#[test]
fn transfers_through_a_leader_stop_conserve_money_and_apply_each_command_once() {
    smol::block_on(async {
        let mut settings = Settings::default();
        // Small, so that replicas compact during the run and the restarted one catches
        // up from a snapshot.
        settings.snapshot_every = 20;
        let mut cluster = Cluster::start(3, settings).await.expect("cluster");
        leader(&cluster).await;

        let mut teller = connect(&cluster).await;
        for account in ACCOUNTS {
            teller.open(account).await.expect("open");
            assert_eq!(
                teller.deposit(account, OPENING_BALANCE).await,
                Ok(OPENING_BALANCE)
            );
        }

        let done = Arc::new(AtomicU64::new(0));
        let enough = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for seed in 0..CLIENTS {
            let client = connect(&cluster).await;
            let (done, enough) = (done.clone(), enough.clone());
            workers.push(smol::spawn(transfers(client, seed, done, enough)));
        }
        wait_until("the first transfers are done", || {
            done.load(Ordering::Relaxed) >= TRANSFERS_EACH_SIDE
        })
        .await;

        // A deposit is applied by the leader, but its answer never reaches the client:
        // `start` appends without waiting for the answer, and the leader stops.
        let deposit = teller.number(BankCommand::Deposit {
            account: "alice".into(),
            amount: LOST_DEPOSIT,
        });
        let old_leader = leader(&cluster).await;
        let raft = cluster.node(old_leader).expect("leader").raft().clone();
        let (index, term) = raft.start(deposit.clone()).await.expect("appended");
        raft.wait_applied(index).await.expect("applied");
        let survivor = cluster
            .ids()
            .into_iter()
            .find(|id| *id != old_leader)
            .expect("another node");
        let mut watch = cluster
            .node(survivor)
            .expect("survivor")
            .raft()
            .watch_leadership();
        assert!(cluster.stop(old_leader).await);
        let at_stop = done.load(Ordering::Relaxed);

        // The survivor's watch reports the next leader, in a later term.
        let next = smol::future::or(
            async {
                while let Some(change) = watch.changed().await {
                    if change.term > term && change.leader.is_some_and(|l| l != old_leader) {
                        return Some(change);
                    }
                }
                None
            },
            async {
                smol::Timer::after(PATIENCE).await;
                None
            },
        )
        .await
        .expect("a new leader, seen through watch_leadership");
        assert_ne!(next.leader, Some(old_leader));

        // The retry: same session, same number. Answered from the session table, with
        // the first application's answer; the final balances show it was not applied
        // again.
        let duplicates = teller.stats().duplicates;
        let answer = teller.send(deposit).await.expect("the retried deposit");
        assert!(
            answer >= LOST_DEPOSIT,
            "alice's balance after the deposit: {answer}"
        );
        assert_eq!(
            teller.stats().duplicates,
            duplicates + 1,
            "the retry was not answered from the session table"
        );

        // The clients go on through the new leader, then stop.
        wait_until("transfers are done through the new leader", || {
            done.load(Ordering::Relaxed) >= at_stop + TRANSFERS_EACH_SIDE
        })
        .await;
        enough.store(true, Ordering::Relaxed);

        let mut expected: BTreeMap<String, i128> = ACCOUNTS
            .iter()
            .map(|account| (account.to_string(), i128::from(OPENING_BALANCE)))
            .collect();
        *expected.get_mut("alice").expect("alice") += i128::from(LOST_DEPOSIT);
        let mut moved = 0;
        for worker in workers {
            for (from, to, amount) in worker.await {
                moved += 1;
                *expected.get_mut(from).expect("account") -= i128::from(amount);
                *expected.get_mut(to).expect("account") += i128::from(amount);
            }
        }
        assert!(moved > 0, "no transfer moved money");

        // The stopped node comes back and catches up; then every replica must agree.
        cluster.restart(old_leader).await.expect("restart");
        let new_leader = leader(&cluster).await;
        let commit = cluster
            .node(new_leader)
            .expect("leader")
            .raft()
            .status()
            .commit_index;
        wait_until("every replica has applied everything", || {
            cluster
                .running()
                .all(|node| node.raft().status().last_applied >= commit)
        })
        .await;
        // Raft's snapshot policy compacted every replica that ran throughout, with no
        // call from the service.
        for node in cluster.running() {
            if node.raft().id() != old_leader {
                assert!(
                    node.view().snapshots_taken() > 0 && node.raft().status().snapshot.index.0 > 0,
                    "node {} never snapshotted",
                    node.raft().id()
                );
            }
        }

        let balances = connect(&cluster)
            .await
            .read(|ledger| ledger.accounts().clone())
            .await
            .expect("read");
        let total: u64 = balances.values().sum();
        assert_eq!(
            total,
            OPENING_BALANCE * ACCOUNTS.len() as u64 + LOST_DEPOSIT,
            "money appeared or vanished"
        );
        let read: BTreeMap<String, i128> = balances
            .into_iter()
            .map(|(account, balance)| (account, i128::from(balance)))
            .collect();
        assert_eq!(
            read, expected,
            "the balances are not what the clients were told: a command lost or applied twice"
        );
        let reference = cluster
            .node(new_leader)
            .expect("leader")
            .view()
            .ledger()
            .await;
        for node in cluster.running() {
            assert_eq!(
                node.view().ledger().await,
                reference,
                "replica {} differs",
                node.id()
            );
            let sessions = node.view().sessions().await;
            assert_eq!(
                sessions.last_sequence(teller.session()),
                Some(2 * ACCOUNTS.len() as u64 + 1),
                "replica {}: the teller's session",
                node.id()
            );
        }
        cluster.shutdown().await;
    });
}

/// Every `rust` excerpt in the README's section on the bank is made of lines of the
/// source file named last before it (`examples/bank/src/….rs`), in the file's order,
/// so that the walk-through cannot drift from the code.
#[test]
fn the_readme_excerpts_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("## Your first application: a bank")
        .expect("the README has the bank section");
    let section = &readme[start..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut excerpts = 0;
    let mut rest = section;
    while let Some(open) = rest.find("```rust") {
        let body_start = open + rest[open..].find('\n').expect("a fence line") + 1;
        let body_len = rest[body_start..].find("```").expect("a closing fence");
        let body = &rest[body_start..body_start + body_len];
        rest = &rest[body_start + body_len + 3..];
        // The last source path named before the excerpt, within the section so far.
        let named = &section[..section.len() - rest.len() - body.len() - 3];
        let path_start = named
            .rfind("`examples/bank/src/")
            .unwrap_or_else(|| panic!("no source file named before:\n{body}"));
        let path = &named[path_start + 1..];
        let path = &path[..path.find('`').expect("a closing backtick")];
        let source = std::fs::read_to_string(root.join(path)).expect(path);
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        let mut at = 0;
        for line in body.lines().map(str::trim).filter(|line| !line.is_empty()) {
            let found = lines[at..].iter().position(|candidate| *candidate == line);
            let offset = found.unwrap_or_else(|| {
                panic!("README excerpt line not in {path} (after line {at}): {line}")
            });
            at += offset + 1;
        }
        excerpts += 1;
    }
    assert!(excerpts >= 8, "only {excerpts} excerpts found");
}
