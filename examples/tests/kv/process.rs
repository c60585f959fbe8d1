//! Three `raft-kv serve` processes with durable storage: the command-line client, and
//! SIGKILL of the leader's process losing no acknowledged write.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use raft_examples::{KvClient, NodeStatus, PortHolder, Role, free_loopback_addrs};
use raft_traits::NodeId;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::support::{FORK_LOCK, PATIENCE, TestCa, client_config, run};

const BIN: &str = env!("CARGO_BIN_EXE_raft-kv");

/// One `raft-kv serve` process, killed when dropped.
pub(crate) struct Server {
    pub(crate) id: NodeId,
    /// Its Raft and client addresses.
    pub(crate) addrs: [SocketAddr; 2],
    pub(crate) args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Its addresses while it is down, kept for its restart.
    held: Option<PortHolder>,
}

impl Server {
    /// A server `id` on `addrs` (Raft, client), run with `args`, logging to `log`; not
    /// started yet.
    pub(crate) fn new(id: NodeId, addrs: [SocketAddr; 2], args: Vec<String>, log: PathBuf) -> Self {
        Server {
            id,
            addrs,
            args,
            log,
            child: None,
            held: None,
        }
    }

    pub(crate) async fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.id);
        let _no_fork = FORK_LOCK.lock().await;
        if let Some(held) = self.held.take() {
            held.release().await;
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or close anything. With `hold_ports`, its addresses
    /// are kept for its restart (connections to them are then closed at once rather
    /// than refused).
    pub(crate) fn kill(&mut self, hold_ports: bool) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{} exited by itself: {status}", self.id);
        if hold_ports {
            self.held = Some(PortHolder::hold(&self.addrs).unwrap());
        }
    }

    /// The names of its process's threads (Linux's `/proc`). A thread that ends while
    /// they are listed (an idle `blocking` thread does) is left out, not an error.
    pub(crate) fn thread_names(&self) -> Vec<String> {
        let pid = self.child.as_ref().expect("running").id();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .filter_map(|task| {
                let comm = task.ok()?.path().join("comm");
                Some(std::fs::read_to_string(comm).ok()?.trim().to_owned())
            })
            .collect()
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            println!("--- last lines of {}'s log:", self.id);
            for line in tail.iter().rev() {
                println!("{line}");
            }
        }
    }
}

pub(crate) fn members(addrs: &BTreeMap<NodeId, SocketAddr>) -> String {
    addrs
        .iter()
        .map(|(id, addr)| format!("{}={addr}", id.0))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn cli(args: &[&str]) -> Output {
    let child = {
        let _no_fork = FORK_LOCK.lock_blocking();
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    child.wait_with_output().unwrap()
}

/// [`free_loopback_addrs`], while no child is being spawned: the listeners it closes
/// must not live on in one.
pub(crate) fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let _no_fork = FORK_LOCK.lock_blocking();
    free_loopback_addrs(n).unwrap()
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls every node's status until one leads and every other reachable node follows
/// it, skipping `down`.
pub(crate) async fn wait_for_leader(client: &KvClient, down: &[NodeId]) -> NodeStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let statuses: Vec<NodeStatus> = client
            .statuses()
            .await
            .into_iter()
            .filter(|(id, _)| !down.contains(id))
            .filter_map(|(_, status)| status.ok())
            .collect();
        let leader = statuses.iter().find(|s| s.role == Role::Leader);
        if let Some(leader) = leader
            && statuses.len() == client.nodes().len() - down.len()
            && statuses
                .iter()
                .all(|s| s.term == leader.term && s.leader == Some(leader.id))
        {
            return leader.clone();
        }
        assert!(Instant::now() < deadline, "no leader among the processes");
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

/// Polls node `id` until it has applied `index`.
pub(crate) async fn wait_applied(client: &KvClient, id: NodeId, index: raft_traits::LogIndex) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(status) = client.status(id).await
            && status.last_applied >= index
        {
            return;
        }
        assert!(Instant::now() < deadline, "{id} did not apply {index}");
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn put_range(client: &KvClient, prefix: &str, range: std::ops::Range<u64>) {
    for i in range {
        client
            .put(format!("{prefix}{i}"), format!("value-{i}"))
            .await
            .unwrap_or_else(|e| panic!("put {prefix}{i}: {e}"));
    }
}

pub(crate) async fn check_range(client: &KvClient, prefix: &str, range: std::ops::Range<u64>) {
    for i in range {
        let value = client.get(format!("{prefix}{i}")).await.unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{i}").as_str()),
            "{prefix}{i}"
        );
    }
}

/// Garbage on a port: the process must close the connection and live on.
async fn garbage(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(b"RAFT\x01\x01\x00\x00garbage that is no frame")
        .await;
    let _ = stream.shutdown(Shutdown::Write);
    let mut buffer = [0u8; 256];
    while let Ok(n) = stream.read(&mut buffer).await {
        if n == 0 {
            break;
        }
    }
}

/// `raft-kv serve` processes with `extra` arguments.
pub(crate) fn servers(
    dir: &Path,
    raft: &BTreeMap<NodeId, SocketAddr>,
    clients: &BTreeMap<NodeId, SocketAddr>,
    extra: &[&str],
) -> BTreeMap<NodeId, Server> {
    let peers = members(raft);
    raft.keys()
        .map(|&id| {
            let mut args = vec![
                "serve".to_owned(),
                "--id".to_owned(),
                id.0.to_string(),
                "--listen".to_owned(),
                raft[&id].to_string(),
                "--client-listen".to_owned(),
                clients[&id].to_string(),
                "--peers".to_owned(),
                peers.clone(),
                "--data-dir".to_owned(),
                dir.join(format!("node-{}", id.0)).display().to_string(),
                // Small, so that restarts recover from a snapshot plus a log.
                "--snapshot-entries".to_owned(),
                "50".to_owned(),
            ];
            args.extend(extra.iter().map(|arg| arg.to_string()));
            let log = dir.join(format!("node-{}.log", id.0));
            (id, Server::new(id, [raft[&id], clients[&id]], args, log))
        })
        .collect()
}

#[test]
fn sigkill_of_the_leader_process_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(6);
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let raft: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[..3].iter().copied()).collect();
    let clients: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[3..].iter().copied()).collect();
    // Reads on a lease, across the leader's deaths.
    let mut servers = servers(dir.path(), &raft, &clients, &["--read-mode", "lease"]);
    for server in servers.values_mut() {
        run(server.start());
    }
    let client = KvClient::new(clients.clone(), client_config()).unwrap();

    run(async {
        let first = wait_for_leader(&client, &[]).await;
        put_range(&client, "a", 0..100).await;
        // One executor per process: the node's own pool (`--threads`, 2 by default)
        // runs all of it, and nothing starts smol's global executor beside it.
        for server in servers.values() {
            let names = server.thread_names();
            assert!(
                !names.iter().any(|name| name.starts_with("smol-")),
                "{} runs smol's global executor beside its own: {names:?}",
                server.id
            );
        }

        // SIGKILL the leader's process, and keep writing.
        servers.get_mut(&first.id).unwrap().kill(true);
        put_range(&client, "b", 0..100).await;
        let second = wait_for_leader(&client, &[first.id]).await;
        assert_ne!(second.id, first.id);

        // It comes back from its files and catches up.
        servers.get_mut(&first.id).unwrap().start().await;
        let committed = client.status(second.id).await.unwrap().commit_index;
        wait_applied(&client, first.id, committed).await;

        // Now the second leader dies too: the restarted node and the third hold every
        // acknowledged write between them.
        servers.get_mut(&second.id).unwrap().kill(true);
        put_range(&client, "c", 0..20).await;
        check_range(&client, "a", 0..100).await;
        check_range(&client, "b", 0..100).await;
        check_range(&client, "c", 0..20).await;

        // Garbage on every port of the live processes: they close those connections
        // and live on.
        for id in ids.into_iter().filter(|&id| id != second.id) {
            garbage(raft[&id]).await;
            garbage(clients[&id]).await;
            assert!(
                servers.get_mut(&id).unwrap().is_running(),
                "{id} died on bad input"
            );
        }
        put_range(&client, "d", 0..5).await;

        servers.get_mut(&second.id).unwrap().start().await;
        let committed = wait_for_leader(&client, &[]).await.commit_index;
        wait_applied(&client, second.id, committed).await;
        check_range(&client, "d", 0..5).await;
    });
    client.shutdown();
}

#[test]
fn the_command_line_client_works_and_fails_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(7);
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let raft: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[..3].iter().copied()).collect();
    let clients: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[3..6].iter().copied()).collect();
    let nobody = addrs[6];
    // The default read mode, read-index.
    let mut servers = servers(dir.path(), &raft, &clients, &[]);
    for server in servers.values_mut() {
        run(server.start());
    }
    let cluster = members(&clients);
    let library = KvClient::new(clients.clone(), client_config()).unwrap();
    run(wait_for_leader(&library, &[]));

    // Every client command README-kv shows, in its order, prints what its comment says.
    let unreachable = format!("1={nobody}");
    let examples = documented_commands();
    let codes: Vec<i32> = examples.iter().map(|example| example.code).collect();
    for code in [0, 1, 2, 3] {
        assert!(codes.contains(&code), "README-kv shows no exit code {code}");
    }
    for example in &examples {
        let args: Vec<String> = example
            .args
            .iter()
            .map(|arg| {
                arg.replace("$CLUSTER", &cluster)
                    .replace(README_UNREACHABLE, &unreachable)
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        example.check(&cli(&args));
    }
    // And `status` prints the header it shows.
    let status = cli(&["status", "--cluster", &cluster]);
    let header = stdout(&status)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let documented = README
        .lines()
        .find(|line| line.starts_with("node "))
        .unwrap();
    assert_eq!(header.trim_end(), documented.trim_end());

    // One leader and two followers, once no election is under way.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cli(&["status", "--cluster", &cluster]);
        assert!(status.status.success(), "{}", stderr(&status));
        let output = stdout(&status);
        // The nodes' table, then their counters after a blank line.
        let table = output.split("\n\n").next().unwrap_or_default();
        assert_eq!(table.lines().count(), 4, "{output}");
        let rows = |role: &str| {
            let role = format!(" {role} ");
            table.lines().skip(1).filter(|l| l.contains(&role)).count()
        };
        if rows("leader") == 1 && rows("follower") == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{table}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // One node down: status says so, and commands still work.
    let down = NodeId(1);
    servers.get_mut(&down).unwrap().kill(false);
    let put = cli(&["put", "size", "large", "--cluster", &cluster]);
    assert!(put.status.success(), "{}", stderr(&put));
    let status = cli(&["status", "--cluster", &cluster]);
    assert!(status.status.success());
    let table = stdout(&status);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains("unreachable")),
        "{table}"
    );

    // More failures: one plain line on stderr, the documented exit code.
    let plain_failure = |output: &Output, code: i32, words: &str| {
        let message = stderr(output);
        assert_eq!(output.status.code(), Some(code), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.starts_with("error: "), "{message}");
        assert!(message.contains(words), "{message}");
        assert!(!message.contains("next attempt"), "{message}");
        assert!(!message.contains("next in"), "{message}");
    };
    // Nothing answers: each node's reason, then "no node answered".
    let failed = cli(&["status", "--cluster", &unreachable]);
    plain_failure(&failed, 1, "no node answered");
    assert!(
        stdout(&failed).contains("unreachable"),
        "{}",
        stdout(&failed)
    );
    let bad = cli(&["get", "color", "--cluster", "one=somewhere"]);
    plain_failure(&bad, 2, "--cluster");
    let bad = cli(&["status", "--cluster", "bogus"]);
    plain_failure(&bad, 2, "--cluster");
    let bad = cli(&["put", "k", "v", "--cluster", &cluster, "--timeout", "nan"]);
    plain_failure(&bad, 2, "--timeout");
    let bad = cli(&[
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:0,two=127.0.0.1:1",
    ]);
    plain_failure(&bad, 2, "--peers");
    // Clap's own usage errors: exit code 2 too.
    let usage = cli(&["put", "only-a-key"]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = cli(&[
        "serve",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--peers",
        "1=127.0.0.1:0",
        "--read-mode",
        "readindex",
    ]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(
        stderr(&usage)
            .contains("unknown read mode \"readindex\" (expected log, read-index or lease)"),
        "{}",
        stderr(&usage)
    );

    // Pointed at a Raft port, the client says at once which port to use instead.
    let raft_port = format!("2={}", raft[&NodeId(2)]);
    let started = Instant::now();
    let misdirected = cli(&[
        "delete",
        "color",
        "--cluster",
        &raft_port,
        "--timeout",
        "60",
    ]);
    assert_eq!(misdirected.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it waited out its timeout"
    );
    let message = stderr(&misdirected);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(&format!("{} is node 2's Raft port", raft[&NodeId(2)]))
            && message.contains("--cluster takes the nodes' client ports"),
        "{message}"
    );
    let status = cli(&["status", "--cluster", &raft_port]);
    let table = stdout(&status);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("n2 ") && l.contains("is node 2's Raft port")),
        "{table}"
    );
    // A client of another cluster is told so too.
    let stranger = cli(&[
        "get",
        "color",
        "--cluster",
        &cluster,
        "--cluster-id",
        "other",
    ]);
    assert_eq!(stranger.status.code(), Some(1));
    assert!(
        stderr(&stranger).contains("to cluster \"other\""),
        "{}",
        stderr(&stranger)
    );
    library.shutdown();
}

/// README-kv, whose examples the command-line test runs.
const README: &str = include_str!("../../../README-kv.md");

/// The unreachable address in README-kv's examples; the test uses one of its own.
const README_UNREACHABLE: &str = "1=127.0.0.1:9";

/// A client command shown in README-kv, with the output its comment promises.
#[derive(Debug)]
struct Documented {
    line: String,
    args: Vec<String>,
    /// The one line printed; `…` stands for any text.
    text: String,
    on_stderr: bool,
    code: i32,
}

/// Every line of README-kv that runs `raft-kv` with a comment, such as
/// `./target/release/raft-kv get shape --cluster $CLUSTER  # not found: "shape" is not
/// set (stderr, exit code 3)`.
fn documented_commands() -> Vec<Documented> {
    const MARK: &str = " (stderr, exit code ";
    README
        .lines()
        .filter_map(|line| {
            let command = line.trim().strip_prefix("./target/release/raft-kv ")?;
            let (command, comment) = command.split_once('#')?;
            let comment = comment.trim();
            let (text, on_stderr, code) = match comment.rsplit_once(MARK) {
                Some((text, code)) => {
                    let code = code.strip_suffix(')').unwrap().parse().unwrap();
                    (text, true, code)
                }
                None => (comment, false, 0),
            };
            Some(Documented {
                line: line.to_owned(),
                args: command.split_whitespace().map(str::to_owned).collect(),
                text: text.to_owned(),
                on_stderr,
                code,
            })
        })
        .collect()
}

impl Documented {
    fn check(&self, output: &Output) {
        let (shown, other) = if self.on_stderr {
            (stderr(output), stdout(output))
        } else {
            (stdout(output), stderr(output))
        };
        let context = format!(
            "README-kv: {}\nstdout: {}\nstderr: {}",
            self.line,
            stdout(output),
            stderr(output)
        );
        assert_eq!(output.status.code(), Some(self.code), "{context}");
        assert_eq!(other, "", "{context}");
        assert_eq!(shown.lines().count(), 1, "{context}");
        assert!(shown.ends_with('\n'), "{context}");
        assert!(matches_pattern(&self.text, shown.trim_end()), "{context}");
        assert!(!shown.contains("next attempt"), "{context}");
    }
}

/// Whether `text` is `pattern`, each `…` in it standing for any text.
fn matches_pattern(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('…');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[test]
fn documented_output_patterns_match_only_what_they_say() {
    assert!(matches_pattern("OK", "OK"));
    assert!(!matches_pattern("OK", "OK (replaced \"v\")"));
    assert!(matches_pattern("a (… b) …s", "a (12 b) 1.0s"));
    assert!(!matches_pattern("a (… b) …s", "a (12 c) 1.0s"));
    assert!(!matches_pattern("a …", "b a"));
    assert!(matches_pattern("…", "anything"));
}

#[test]
fn serve_with_tls_flags_forms_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let addrs = free_addrs(6);
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let raft: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[..3].iter().copied()).collect();
    let clients: BTreeMap<NodeId, SocketAddr> =
        ids.into_iter().zip(addrs[3..].iter().copied()).collect();
    let mut servers = servers(dir.path(), &raft, &clients, &[]);
    for (id, server) in &mut servers {
        let (cert, key) = ca.issue(*id);
        let cert_file = dir.path().join(format!("node-{}.crt", id.0));
        let key_file = dir.path().join(format!("node-{}.key", id.0));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        for (flag, file) in [
            ("--tls-cert", &cert_file),
            ("--tls-key", &key_file),
            ("--tls-ca", &ca_file),
        ] {
            server.args.push(flag.to_owned());
            server.args.push(file.display().to_string());
        }
    }
    for server in servers.values_mut() {
        run(server.start());
    }
    let client = KvClient::new(clients.clone(), client_config()).unwrap();
    run(async {
        wait_for_leader(&client, &[]).await;
        put_range(&client, "t", 0..10).await;
        check_range(&client, "t", 0..10).await;
    });
    client.shutdown();
    let log = std::fs::read_to_string(dir.path().join("node-1.log")).unwrap();
    assert!(log.contains("mutual TLS between nodes"), "{log}");

    // Unreadable files: a one-line reason, exit code 1; a flag alone: bad arguments.
    let nowhere = dir.path().join("missing.pem").display().to_string();
    let listen = free_addrs(1)[0].to_string();
    let peers = format!("1={listen}");
    let failed = cli(&[
        "serve",
        "--id",
        "1",
        "--listen",
        &listen,
        "--peers",
        &peers,
        "--tls-cert",
        &nowhere,
        "--tls-key",
        &nowhere,
        "--tls-ca",
        &nowhere,
    ]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr(&failed).contains("--tls-cert/--tls-key/--tls-ca: cannot read"),
        "{}",
        stderr(&failed)
    );
    let alone = cli(&[
        "serve",
        "--id",
        "1",
        "--listen",
        &listen,
        "--peers",
        &peers,
        "--tls-cert",
        &nowhere,
    ]);
    assert_eq!(alone.status.code(), Some(2));
}

/// README-kv: "2 bad arguments (a one-line reason …)": the arguments of `serve`,
/// `add-node` and `bench` that the other tests leave out. None of these gets as far as
/// a connection, so no cluster is needed.
#[test]
fn every_bad_address_and_setting_exits_2_with_one_line() {
    let peers = "1=127.0.0.1:0";
    let cluster = "1=127.0.0.1:9";
    let cases: [(&[&str], &str); 8] = [
        (
            &["serve", "--id", "1", "--listen", "bogus", "--peers", peers],
            "error: --listen: ",
        ),
        (
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--peers",
                peers,
                "--client-listen",
                "bogus",
            ],
            "error: --client-listen: ",
        ),
        (
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--peers",
                peers,
                "--metrics-listen",
                "bogus",
            ],
            "error: --metrics-listen: ",
        ),
        (
            &[
                "serve",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:65000",
                "--peers",
                peers,
            ],
            "error: --listen port 65000 leaves no room for the default client port (+1000); give --client-listen",
        ),
        (
            &[
                "add-node",
                "--id",
                "4",
                "--addr",
                "bogus",
                "--cluster",
                cluster,
            ],
            "error: --addr: ",
        ),
        (
            &[
                "add-node",
                "--id",
                "4",
                "--addr",
                "127.0.0.1:65000",
                "--cluster",
                cluster,
            ],
            "error: --addr port 65000 leaves no room for the default client port (+1000); give --client-addr",
        ),
        (
            &[
                "add-node",
                "--id",
                "4",
                "--addr",
                "127.0.0.1:7004",
                "--client-addr",
                "bogus",
                "--cluster",
                cluster,
            ],
            "error: --client-addr: ",
        ),
        (
            &["bench", "--clients", "0", "--cluster", cluster],
            "error: --clients must be at least 1",
        ),
    ];
    for (args, start) in cases {
        let output = cli(args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with(start), "{args:?}: {message}");
        assert_eq!(stdout(&output), "", "{args:?}");
    }
}
