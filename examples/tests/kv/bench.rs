//! `raft-kv bench` and `raft-kv status` against three `raft-kv serve` processes: the
//! JSON report adds up, the keys it wrote are in the store, and status shows the
//! library's counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;

use raft_examples::bench::{bench_key, bench_value};
use raft_examples::{KvClient, Role};
use raft_traits::NodeId;
use serde_json::Value;

use crate::process::{cli, free_addrs, members, servers, stderr, stdout, wait_for_leader};
use crate::support::{client_config, run};

/// The bench's JSON report, checked to be one object on one line.
fn report(output: &Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    let text = stdout(output);
    assert_eq!(text.lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn number(report: &Value, path: &[&str]) -> f64 {
    let mut value = report;
    for key in path {
        value = &value[key];
    }
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {report}"))
}

/// The report's totals add up and its percentiles are in order.
fn check_report(report: &Value, total: u64, puts: u64, gets: u64) {
    assert_eq!(number(report, &["ops"]), total as f64, "{report}");
    assert_eq!(number(report, &["puts"]), puts as f64, "{report}");
    assert_eq!(number(report, &["gets"]), gets as f64, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(number(report, &["ops_per_sec"]) > 0.0, "{report}");
    let elapsed = number(report, &["elapsed_secs"]);
    let rate = total as f64 / elapsed;
    assert!(
        (number(report, &["ops_per_sec"]) - rate).abs() <= rate * 1e-6,
        "{report}"
    );
    let percentiles: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|p| number(report, &["latency_us", p]))
        .collect();
    assert!(percentiles[0] > 0.0, "{report}");
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "{report}"
    );
    // Nobody waits longer than the whole run.
    assert!(percentiles[4] <= elapsed * 1e6, "{report}");
}

#[test]
fn bench_against_three_processes_reports_what_it_did_and_writes_real_keys() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(6);
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let raft: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[..3].iter().copied()).collect();
    let clients: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[3..].iter().copied()).collect();
    let mut servers = servers(dir.path(), &raft, &clients, &[]);
    for server in servers.values_mut() {
        run(server.start());
    }
    let cluster = members(&clients);
    let library = KvClient::new(clients.clone(), client_config()).unwrap();
    run(wait_for_leader(&library, &[]));

    // Puts: 1500 distinct keys from 8 clients over 3 connections.
    const TOTAL: u64 = 1500;
    let total = TOTAL.to_string();
    let put = cli(&[
        "bench",
        "put",
        "--total",
        &total,
        "--clients",
        "8",
        "--conns",
        "3",
        "--key-size",
        "6",
        "--val-size",
        "100",
        "--json",
        "--cluster",
        &cluster,
    ]);
    let put = report(&put);
    check_report(&put, TOTAL, TOTAL, 0);
    assert_eq!(put["workload"], "put");
    assert_eq!(put["conns"], 3);

    // Every key it wrote holds its value; the next one was not written.
    run(async {
        for k in [0, 1, 2, 747, TOTAL - 2, TOTAL - 1] {
            let key = bench_key(k, 6);
            let value = library.get(key.as_str()).await.unwrap();
            assert_eq!(
                value.as_deref(),
                Some(bench_value(&key, 100).as_str()),
                "{key}"
            );
        }
        assert_eq!(library.get(bench_key(TOTAL, 6)).await.unwrap(), None);
    });

    // Gets of the same keys, served in the nodes' mode: every one found.
    let get = cli(&[
        "bench",
        "get",
        "--total",
        &total,
        "--clients",
        "4",
        "--key-size",
        "6",
        "--json",
        "--cluster",
        &cluster,
    ]);
    let get = report(&get);
    check_report(&get, TOTAL, 0, TOTAL);
    assert_eq!(get["gets_not_found"], 0, "{get}");
    assert_eq!(get["read_mode"], "read-index", "{get}");
    // Through the log, asked for: found too, and said so.
    let logged = cli(&[
        "bench",
        "get",
        "--total",
        "100",
        "--key-size",
        "6",
        "--read-mode",
        "log",
        "--json",
        "--cluster",
        &cluster,
    ]);
    let logged = report(&logged);
    check_report(&logged, 100, 0, 100);
    assert_eq!(logged["read_mode"], "log", "{logged}");
    assert_eq!(logged["gets_not_found"], 0, "{logged}");

    // The text summary, and no progress bar on a stderr that is not a terminal.
    let text = cli(&[
        "bench",
        "mixed",
        "--read-ratio",
        "0.25",
        "--total",
        "200",
        "--clients",
        "2",
        "--key-space",
        "50",
        "--cluster",
        &cluster,
    ]);
    assert!(text.status.success(), "{}", stderr(&text));
    assert_eq!(stderr(&text), "");
    let summary = stdout(&text);
    assert!(
        summary.contains("\nops      200 (150 puts, 50 gets,"),
        "{summary}"
    );
    assert!(summary.contains("\nerrors   0\n"), "{summary}");
    assert!(summary.contains("\nlatency  p50 "), "{summary}");

    // Gets in a mode the nodes do not serve: refused before any load, exit code 1.
    let lease = cli(&[
        "bench",
        "get",
        "--read-mode",
        "lease",
        "--cluster",
        &cluster,
    ]);
    assert_eq!(lease.status.code(), Some(1), "{}", stderr(&lease));
    assert_eq!(
        stderr(&lease).trim_end(),
        "error: the nodes serve reads in read-index mode, not lease (start them with raft-kv serve --read-mode lease, or bench with --read-mode log)"
    );
    assert_eq!(stdout(&lease), "");

    // Settings that make no sense: one line, exit code 2.
    for (args, words) in [
        (
            &["--conns", "2"][..],
            "--conns 2 must be between 1 and --clients (1)",
        ),
        (
            &["--read-ratio", "1.5"][..],
            "--read-ratio 1.5 is not between 0 and 1",
        ),
        (
            &["--duration", "0"][..],
            "--duration 0 is not a positive number of seconds",
        ),
        (
            &["--key-size", "2", "--key-space", "1000"][..],
            "--key-space 1000 needs keys",
        ),
    ] {
        let mut all = vec!["bench", "--cluster", &cluster];
        all.extend_from_slice(args);
        let bad = cli(&all);
        assert_eq!(bad.status.code(), Some(2), "{args:?}: {}", stderr(&bad));
        let message = stderr(&bad);
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with("error: ") && message.contains(words),
            "{message}"
        );
    }

    // Status shows the library's counters: the leader appended every put and every
    // session registration, and reports its followers' lag.
    let leader = run(wait_for_leader(&library, &[]));
    let status = cli(&["status", "--cluster", &cluster]);
    assert!(status.status.success(), "{}", stderr(&status));
    let table = stdout(&status);
    let (nodes, counters) = table
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(nodes.lines().count(), 4, "{table}");
    let rows: Vec<Vec<&str>> = counters
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "node",
            "elections",
            "won",
            "leader-changes",
            "proposals",
            "snapshots",
            "installed",
            "refused",
            "reads"
        ],
        "{table}"
    );
    let row = |id: NodeId| {
        rows.iter()
            .find(|row| row[0] == id.to_string())
            .unwrap_or_else(|| panic!("no row for {id}: {table}"))
    };
    let count = |id: NodeId, column: usize| -> u64 { row(id)[column].parse().unwrap() };
    assert_eq!(leader.role, Role::Leader);
    assert!(
        count(leader.id, 2) >= 1,
        "the leader won no election: {table}"
    );
    // 1500 puts, 100 gets through the log, 150 mixed puts, and the sessions they ran
    // in.
    // Summed over the nodes, should the leader have changed on a loaded machine.
    let proposals: u64 = ids.iter().map(|&id| count(id, 4)).sum();
    assert!(proposals >= TOTAL + 100 + 150, "{table}");
    for id in ids {
        // Snapshots every 50 entries: every node has taken some.
        assert!(count(id, 5) > 0, "{id} took no snapshot: {table}");
        assert!(count(id, 3) >= 1, "{id} saw no leader change: {table}");
        assert_eq!(row(id)[8], "read-index", "{table}");
    }
    let lag = format!("follower lag on {} (entries): ", leader.id);
    let lag_line = counters
        .lines()
        .find(|line| line.starts_with(&lag))
        .unwrap_or_else(|| panic!("no follower lag from the leader: {table}"));
    let followers: Vec<String> = ids
        .iter()
        .filter(|&&id| id != leader.id)
        .map(|id| format!("{id} "))
        .collect();
    assert!(
        followers.iter().all(|f| lag_line.contains(f.as_str())),
        "{table}"
    );
    // The counters' header is the one README-kv shows.
    let documented = README
        .lines()
        .find(|line| line.starts_with("node   elections"))
        .unwrap();
    assert_eq!(counters.lines().next(), Some(documented), "{table}");

    // README-kv's bench commands, as written, against this cluster.
    let commands: Vec<&str> = README
        .lines()
        .filter_map(|line| line.strip_prefix("./target/release/raft-kv bench "))
        .collect();
    assert_eq!(commands.len(), 3, "README-kv shows other bench commands");
    for command in commands {
        let args: Vec<String> = std::iter::once("bench")
            .chain(command.split_whitespace())
            .map(|arg| arg.replace("$CLUSTER", &cluster))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cli(&args);
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        if args.contains(&"--json") {
            let report = report(&output);
            assert_eq!(report["errors"], serde_json::json!({}), "{report}");
            assert!(number(&report, &["gets"]) > 0.0, "{report}");
        } else {
            let summary = stdout(&output);
            assert!(
                summary.contains("\nops      20000 ("),
                "{command}: {summary}"
            );
            assert!(summary.contains("\nerrors   0\n"), "{command}: {summary}");
        }
    }
    library.shutdown();
    drop(servers);
}

/// README-kv, whose examples are run here.
const README: &str = include_str!("../../../README-kv.md");
