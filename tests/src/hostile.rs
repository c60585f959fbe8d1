//! Hostile input for a live cluster's Raft port (issue 12, item 7): a corpus of named
//! attacks, each with what the server must do about it, and a generator of random
//! frames that reach every layer in turn (frame header, handshake, message decoding, the
//! node's admission rules).
//!
//! Every attack here is one a correct cluster must shrug off: it comes from outside the
//! configuration, carries a term or index no correct member could, names the wrong
//! cluster or protocol, or breaks the framing. (A member that sends well-formed lies
//! with a plausible term is a Byzantine fault, which Raft does not claim to survive; the
//! generator never impersonates one.) Used by the `tcp` test binary: a short run in CI
//! and `hostile_long_run`, the 100,000-frame run the README names.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::FutureExt;
use raft_mem::KvCommand;
use raft_net_smol::frame::{FrameHeader, FrameKind, HEADER_LEN, MAGIC, VERSION, read_frame};
use raft_net_smol::handshake::{Hello, Protocol};
use raft_traits::{
    AppendEntries, Bytes, Codec, Entry, InstallSnapshot, LogId, LogIndex, Membership, NodeId,
    Payload, Postcard, ReadIndexRequest, Request, RequestVote, Snapshot, SnapshotMeta, Term,
    TimeoutNow,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;

/// A node id no cluster under attack has.
pub const STRANGER: NodeId = NodeId(99);

/// What the server must do with an attack's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Close it, without answering a request (bad framing, a failed handshake, a
    /// request from another sender than the handshake named).
    Closed,
    /// Answer the request with an error frame (a refusal) and keep serving.
    ErrorReply,
    /// Anything, as long as the node survives (random input).
    Anything,
}

/// One attack: the bytes to send on a fresh connection.
#[derive(Clone, Debug)]
pub struct Attack {
    /// What it is, for failure messages.
    pub name: String,
    /// Everything sent, in order.
    pub bytes: Vec<u8>,
    /// What the server must do.
    pub expect: Expect,
}

/// What the cluster under attack looks like.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its cluster id.
    pub cluster_id: String,
    /// Its voters.
    pub members: Vec<NodeId>,
    /// Its servers' `max_frame_size`.
    pub max_frame_size: u32,
}

/// One frame's bytes.
pub fn frame(kind: FrameKind, request_id: u64, more: bool, body: &[u8]) -> Vec<u8> {
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let header = FrameHeader {
        kind,
        request_id,
        more,
        body_len,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

fn hello(target: &Target, protocol: Protocol, node: Option<NodeId>) -> Vec<u8> {
    let hello = Hello {
        protocol,
        cluster_id: target.cluster_id.clone(),
        node,
    };
    frame(
        FrameKind::Hello,
        0,
        false,
        &hello.encode().unwrap_or_default(),
    )
}

fn raft_hello(target: &Target, node: NodeId) -> Vec<u8> {
    hello(target, Protocol::Raft, Some(node))
}

fn encode(request: &Request<KvCommand>) -> Vec<u8> {
    Postcard.encode(request).unwrap_or_default()
}

/// A handshake as `node`, then `request` as request 1.
fn as_node(target: &Target, node: NodeId, request: &Request<KvCommand>) -> Vec<u8> {
    let mut bytes = raft_hello(target, node);
    bytes.extend(frame(FrameKind::Request, 1, false, &encode(request)));
    bytes
}

fn vote(term: Term, candidate: NodeId) -> RequestVote {
    RequestVote {
        term,
        candidate,
        last_log: LogId::default(),
        transfer: false,
    }
}

fn evil_entry(index: u64, term: Term) -> Entry<KvCommand> {
    Entry {
        index: LogIndex(index),
        term,
        payload: Payload::Command(KvCommand::Put {
            key: "injected".into(),
            value: "by a stranger".into(),
        }),
    }
}

fn snapshot_request(from: NodeId, data: &'static [u8], damage: bool) -> Request<KvCommand> {
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::new(Term(1), LogIndex(1_000)),
            membership: Membership::from_voters([from]),
        },
        data: Bytes::from_static(data),
    };
    let mut request = InstallSnapshot::whole(Term(0), from, snapshot);
    request.checksum ^= u32::from(damage);
    Request::InstallSnapshot(Box::new(request))
}

/// The named attacks.
pub fn corpus(target: &Target) -> Vec<Attack> {
    let member = target.members.first().copied().unwrap_or(NodeId(1));
    let other = target.members.get(1).copied().unwrap_or(NodeId(2));
    let attack = |name: &str, bytes: Vec<u8>, expect: Expect| Attack {
        name: name.to_owned(),
        bytes,
        expect,
    };
    let mut attacks = Vec::new();

    // Finding 1: terms at and near the maximum, from a member's connection.
    for (name, term) in [
        ("vote with term u64::MAX", u64::MAX),
        ("vote with term u64::MAX - 1", u64::MAX - 1),
        (
            "vote just past the highest accepted term",
            Term::MAX_ACCEPTED.0 + 1,
        ),
    ] {
        let request = Request::Vote(vote(Term(term), member));
        attacks.push(attack(
            name,
            as_node(target, member, &request),
            Expect::ErrorReply,
        ));
    }
    let request = Request::PreVote(vote(Term(u64::MAX), member));
    attacks.push(attack(
        "pre-vote with term u64::MAX",
        as_node(target, member, &request),
        Expect::ErrorReply,
    ));
    let request = Request::TimeoutNow(TimeoutNow {
        term: Term(u64::MAX),
        leader: member,
    });
    attacks.push(attack(
        "timeout-now with term u64::MAX",
        as_node(target, member, &request),
        Expect::ErrorReply,
    ));
    // Indices that would run past the maximum.
    let request = Request::Append(AppendEntries {
        term: Term(0),
        leader: member,
        prev_log: LogId::new(Term(0), LogIndex(u64::MAX - 1)),
        entries: vec![evil_entry(u64::MAX, Term(0)), evil_entry(u64::MAX, Term(0))],
        leader_commit: LogIndex(u64::MAX),
    });
    attacks.push(attack(
        "append running past the highest index",
        as_node(target, member, &request),
        Expect::ErrorReply,
    ));

    // Finding 2: senders outside the configuration.
    let request = Request::Append(AppendEntries {
        term: Term(1_000),
        leader: STRANGER,
        prev_log: LogId::default(),
        entries: vec![evil_entry(1, Term(1_000))],
        leader_commit: LogIndex(1),
    });
    attacks.push(attack(
        "append of a command from a stranger",
        as_node(target, STRANGER, &request),
        Expect::ErrorReply,
    ));
    attacks.push(attack(
        "vote request from a stranger",
        as_node(
            target,
            STRANGER,
            &Request::Vote(vote(Term(1_000), STRANGER)),
        ),
        Expect::ErrorReply,
    ));
    attacks.push(attack(
        "garbage snapshot from a stranger",
        as_node(
            target,
            STRANGER,
            &snapshot_request(STRANGER, b"\xff\xff", false),
        ),
        Expect::ErrorReply,
    ));
    let read = Request::ReadIndex(ReadIndexRequest {
        term: Term(0),
        from: STRANGER,
    });
    attacks.push(attack(
        "read-index request from a stranger",
        as_node(target, STRANGER, &read),
        Expect::ErrorReply,
    ));
    // A snapshot the state machine cannot restore, and one whose bytes were damaged,
    // from a member's connection.
    attacks.push(attack(
        "undecodable snapshot from a member",
        as_node(
            target,
            member,
            &snapshot_request(member, b"\xff\xff\xff", false),
        ),
        Expect::ErrorReply,
    ));
    attacks.push(attack(
        "snapshot failing its checksum from a member",
        as_node(target, member, &snapshot_request(member, b"", true)),
        Expect::ErrorReply,
    ));

    // Finding 3 and the handshake: another protocol, cluster or sender.
    let mut bytes = hello(target, Protocol::service("raft-kv"), None);
    bytes.extend(frame(
        FrameKind::Request,
        1,
        false,
        &encode(&Request::Vote(vote(Term(5), member))),
    ));
    attacks.push(attack(
        "a client protocol's handshake on the Raft port",
        bytes,
        Expect::Closed,
    ));
    let mut foreign = target.clone();
    foreign.cluster_id = format!("not-{}", target.cluster_id);
    attacks.push(attack(
        "another cluster's handshake",
        as_node(&foreign, member, &Request::Vote(vote(Term(5), member))),
        Expect::Closed,
    ));
    attacks.push(attack(
        "a request before any handshake",
        frame(
            FrameKind::Request,
            1,
            false,
            &encode(&Request::Vote(vote(Term(5), member))),
        ),
        Expect::Closed,
    ));
    attacks.push(attack(
        "a request claiming another sender than the handshake",
        as_node(target, member, &Request::Vote(vote(Term(5), other))),
        Expect::Closed,
    ));
    attacks.push(attack(
        "a malformed handshake",
        frame(FrameKind::Hello, 0, false, &[9, 9, 9]),
        Expect::Closed,
    ));

    // Framing: another version, another protocol, too large, unfinished, truncated.
    let mut old = raft_hello(target, member);
    old[4] = 1;
    attacks.push(attack("a version 1 frame", old, Expect::Closed));
    attacks.push(attack(
        "HTTP on the Raft port",
        b"GET / HTTP/1.1\r\nHost: raft\r\n\r\n".to_vec(),
        Expect::Closed,
    ));
    let mut oversized = raft_hello(target, member);
    oversized.extend(
        FrameHeader {
            kind: FrameKind::Request,
            request_id: 1,
            more: false,
            body_len: target.max_frame_size.saturating_add(1),
        }
        .encode(),
    );
    attacks.push(attack(
        "a frame over the maximum size",
        oversized,
        Expect::Closed,
    ));
    let mut truncated = raft_hello(target, member);
    let body = encode(&Request::Vote(vote(Term(5), member)));
    let mut cut = frame(FrameKind::Request, 1, false, &body);
    cut.truncate(HEADER_LEN + body.len() / 2);
    truncated.extend(cut);
    attacks.push(attack("a frame cut short", truncated, Expect::Anything));
    let mut unfinished = raft_hello(target, member);
    unfinished.extend(frame(FrameKind::Request, 1, true, &[0u8; 512]));
    attacks.push(attack(
        "an unfinished chunked request",
        unfinished,
        Expect::Anything,
    ));
    attacks
}

/// A random attack. Most reach past the framing: a handshake as a stranger followed by
/// a request that is either well-formed with random fields or a real encoding with
/// random bytes flipped.
pub fn random_attack(rng: &mut Xoshiro256PlusPlus, target: &Target) -> Attack {
    let choice = rng.random_range(0..10u32);
    let (name, bytes) = match choice {
        0 | 1 => {
            let len = rng.random_range(0..64usize);
            (
                "random bytes",
                (0..len).map(|_| rng.random::<u8>()).collect(),
            )
        }
        2 | 3 => {
            let mut header = [0u8; HEADER_LEN];
            header[..4].copy_from_slice(&MAGIC);
            header[4] = VERSION;
            for byte in &mut header[5..] {
                *byte = rng.random();
            }
            let len = rng.random_range(0..256usize);
            let mut bytes = header.to_vec();
            bytes.extend((0..len).map(|_| rng.random::<u8>()));
            ("a random header and body", bytes)
        }
        4..=6 => {
            let mut body = encode(&random_request(rng));
            for _ in 0..rng.random_range(1..5u32) {
                if !body.is_empty() {
                    let at = rng.random_range(0..body.len());
                    body[at] = rng.random();
                }
            }
            let mut bytes = raft_hello(target, STRANGER);
            bytes.extend(frame(FrameKind::Request, rng.random(), false, &body));
            ("a stranger's request with flipped bytes", bytes)
        }
        _ => {
            let bytes = as_node(target, STRANGER, &random_request(rng));
            ("a stranger's well-formed request", bytes)
        }
    };
    Attack {
        name: name.to_owned(),
        bytes,
        expect: Expect::Anything,
    }
}

/// A request from [`STRANGER`] with random terms and indices, at the edges half the time.
fn random_request(rng: &mut Xoshiro256PlusPlus) -> Request<KvCommand> {
    let number = |rng: &mut Xoshiro256PlusPlus| match rng.random_range(0..4u32) {
        0 => u64::MAX - rng.random_range(0..3u64),
        1 => rng.random_range(0..10u64),
        _ => rng.random(),
    };
    let term = Term(number(rng));
    let index = LogIndex(number(rng));
    match rng.random_range(0..5u32) {
        0 => Request::Vote(RequestVote {
            term,
            candidate: STRANGER,
            last_log: LogId::new(term, index),
            transfer: rng.random(),
        }),
        1 => Request::PreVote(vote(term, STRANGER)),
        2 => Request::Append(AppendEntries {
            term,
            leader: STRANGER,
            prev_log: LogId::new(term, index),
            entries: (0..rng.random_range(0..3u64))
                .map(|k| evil_entry(index.0.wrapping_add(k + 1), term))
                .collect(),
            leader_commit: LogIndex(number(rng)),
        }),
        3 => Request::TimeoutNow(TimeoutNow {
            term,
            leader: STRANGER,
        }),
        _ => snapshot_request(STRANGER, b"random", rng.random()),
    }
}

/// A seeded generator for [`random_attack`].
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// What the server did with an attack's connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// It closed the connection.
    pub closed: bool,
    /// It answered a request with an error frame.
    pub error_reply: bool,
}

impl Observed {
    /// Whether this is what `expect` asks for.
    pub fn meets(&self, expect: Expect) -> bool {
        match expect {
            Expect::Closed => self.closed && !self.error_reply,
            Expect::ErrorReply => self.error_reply,
            Expect::Anything => true,
        }
    }
}

/// Sends `attack` on a new connection to `addr`, then reads what comes back for at most
/// `linger` (or until the server closes the connection), and closes it.
pub async fn deliver(addr: SocketAddr, attack: &Attack, linger: Duration) -> io::Result<Observed> {
    let mut stream = TcpStream::connect(addr).await?;
    // The server may close before everything is written; that is an answer too.
    let _ = stream.write_all(&attack.bytes).await;
    let _ = stream.flush().await;
    let mut observed = Observed::default();
    let reading = async {
        loop {
            match read_frame(&mut stream, u32::MAX).await {
                Ok(Some(frame)) => {
                    if frame.header.kind == FrameKind::Error {
                        observed.error_reply = true;
                        return;
                    }
                }
                // The end of the stream, or a reset: either way, closed.
                Ok(None) | Err(_) => {
                    observed.closed = true;
                    return;
                }
            }
        }
    };
    futures::select! {
        () = reading.fuse() => {}
        () = smol::Timer::after(linger).map(|_| ()).fuse() => {}
    }
    Ok(observed)
}

/// This process's resident set size, in bytes (Linux; `None` elsewhere).
pub fn resident_set_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
