//! The [`Transport`] suite: replies reach the right caller, concurrent and large requests
//! work, and a peer that is unreachable or gone gives an error in time instead of a hang.
//!
//! The suite serves a test [`RpcHandler`] whose replies are computed from the request,
//! so a reply delivered to the wrong caller, or a payload damaged on the way, is caught.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use raft_traits::async_trait;
use raft_traits::{
    AppendEntries, AppendOutcome, AppendReply, Entry, HandlerError, IndexReply, LogId, LogIndex,
    NodeId, Payload, Request, RequestVote, Response, RpcHandler, Runtime, Term, Transport,
    VoteReply, timeout,
};

use super::{CaseError, CaseResult, Cmd, Report, ensure, ensure_eq};

/// Sets up servers and clients of the transport under test.
#[async_trait]
pub trait TransportFactory: Send {
    /// The transport under test.
    type Transport: Transport<Cmd>;
    /// The runtime the suite measures time with.
    type Runtime: Runtime;

    /// The runtime.
    fn runtime(&self) -> Self::Runtime;

    /// Starts a server for `id` that answers with `handler`.
    async fn serve(&mut self, id: NodeId, handler: Arc<dyn RpcHandler<Cmd>>);

    /// A client that sends as `from` and can reach every server started so far, plus
    /// [`unreachable_peer`](Self::unreachable_peer), where nothing listens.
    async fn client(&mut self, from: NodeId) -> Self::Transport;

    /// Stops the server of `id`: its endpoint goes away.
    async fn stop(&mut self, id: NodeId);

    /// A peer the clients know of, where no server runs.
    fn unreachable_peer(&self) -> NodeId;

    /// How long a call to an unreachable or stopped peer may take to fail.
    fn failure_deadline(&self) -> Duration;

    /// How long a call to a live server may take before the suite calls it lost
    /// (default 20 s).
    fn reply_deadline(&self) -> Duration {
        Duration::from_secs(20)
    }

    /// The size of the large request (default 4 MiB).
    fn large_payload_bytes(&self) -> usize {
        4 << 20
    }
}

/// Runs every case against transports from `factory`.
pub async fn run<F: TransportFactory>(factory: &mut F) -> Report {
    let mut report = Report::new("Transport");
    report
        .case("request_gets_its_reply", request_reply(factory))
        .await;
    report
        .case(
            "concurrent_requests_get_their_own_replies",
            concurrent(factory),
        )
        .await;
    report
        .case("large_payload_arrives_intact", large_payload(factory))
        .await;
    report
        .case("unreachable_peer_fails_in_time", unreachable(factory))
        .await;
    report
        .case("stopped_peer_fails_instead_of_hanging", stopped(factory))
        .await;
    report
}

/// Answers a vote request with `granted` = the candidate's term is even, and an append
/// with a checksum of the entries it carried as `match_index`.
struct Oracle;

fn checksum(entries: &[Entry<Cmd>]) -> u64 {
    entries
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, entry| {
            let bytes = match &entry.payload {
                Payload::Command(bytes) => bytes.as_slice(),
                Payload::Blank | Payload::Membership(_) => &[],
            };
            bytes.iter().fold(hash ^ entry.index.0, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        })
}

#[async_trait]
impl RpcHandler<Cmd> for Oracle {
    async fn handle(&self, request: Request<Cmd>) -> Result<Response, HandlerError> {
        Ok(match request {
            Request::Vote(vote) => Response::Vote(VoteReply {
                term: vote.term,
                granted: vote.term.0 % 2 == 0,
            }),
            Request::PreVote(vote) => Response::PreVote(VoteReply {
                term: vote.term,
                granted: vote.term.0 % 2 == 1,
            }),
            Request::TimeoutNow(timeout) => Response::Index(IndexReply {
                term: timeout.term,
                index: None,
                refusal: None,
            }),
            Request::ReadIndex(read) => Response::Index(IndexReply {
                term: read.term,
                index: Some(LogIndex(read.from.0)),
                refusal: None,
            }),
            Request::Append(append) => Response::Append(AppendReply {
                term: append.term,
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(checksum(&append.entries)),
                },
            }),
            Request::InstallSnapshot(install) => Response::Vote(VoteReply {
                term: install.term,
                granted: false,
            }),
        })
    }
}

fn oracle() -> Arc<dyn RpcHandler<Cmd>> {
    Arc::new(Oracle)
}

fn vote(term: u64) -> Request<Cmd> {
    Request::Vote(RequestVote {
        term: Term(term),
        candidate: NodeId(1),
        last_log: LogId::default(),
        transfer: false,
    })
}

fn append_of(entries: Vec<Entry<Cmd>>) -> Request<Cmd> {
    Request::Append(AppendEntries {
        term: Term(3),
        leader: NodeId(1),
        prev_log: LogId::default(),
        entries,
        leader_commit: LogIndex::ZERO,
    })
}

const SERVER: NodeId = NodeId(2);
const CLIENT: NodeId = NodeId(1);

async fn call<F: TransportFactory>(
    factory: &F,
    client: &F::Transport,
    to: NodeId,
    request: Request<Cmd>,
) -> Result<Response, CaseError> {
    let kind = request.kind();
    let deadline = factory.reply_deadline();
    match timeout(&factory.runtime(), deadline, client.send(to, request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(CaseError::Failed(format!("{kind} to {to} failed: {error}"))),
        Err(_) => Err(CaseError::Failed(format!(
            "{kind} to {to}: no reply within {deadline:?} (dropped silently?)"
        ))),
    }
}

async fn request_reply<F: TransportFactory>(factory: &mut F) -> CaseResult {
    factory.serve(SERVER, oracle()).await;
    let client = factory.client(CLIENT).await;
    for term in [4, 7] {
        let response = call(factory, &client, SERVER, vote(term)).await?;
        let expected = Response::Vote(VoteReply {
            term: Term(term),
            granted: term % 2 == 0,
        });
        ensure_eq!(
            response,
            expected,
            format!("reply to a vote request of term {term}")
        );
    }
    factory.stop(SERVER).await;
    Ok(())
}

async fn concurrent<F: TransportFactory>(factory: &mut F) -> CaseResult {
    factory.serve(SERVER, oracle()).await;
    let client = factory.client(CLIENT).await;
    let runtime = factory.runtime();
    let deadline = factory.reply_deadline();
    let calls = (1..=64u64).map(|term| {
        let client = &client;
        let runtime = &runtime;
        async move {
            let reply = timeout(runtime, deadline, client.send(SERVER, vote(term))).await;
            (term, reply)
        }
    });
    for (term, reply) in join_all(calls).await {
        let expected = Response::Vote(VoteReply {
            term: Term(term),
            granted: term % 2 == 0,
        });
        match reply {
            Ok(Ok(response)) => ensure_eq!(response, expected, format!("reply to request {term}")),
            Ok(Err(error)) => ensure!(
                false,
                "request {term} of 64 concurrent ones failed: {error}"
            ),
            Err(_) => ensure!(false, "request {term} of 64 concurrent ones got no reply"),
        }
    }
    factory.stop(SERVER).await;
    Ok(())
}

async fn large_payload<F: TransportFactory>(factory: &mut F) -> CaseResult {
    factory.serve(SERVER, oracle()).await;
    let client = factory.client(CLIENT).await;
    let total = factory.large_payload_bytes();
    let chunk = 64 << 10;
    let entries: Vec<Entry<Cmd>> = (0..total.div_ceil(chunk))
        .map(|i| Entry {
            term: Term(3),
            index: LogIndex(i as u64 + 1),
            payload: Payload::Command((0..chunk).map(|b| (b * 31 + i) as u8).collect()),
        })
        .collect();
    let expected = Response::Append(AppendReply {
        term: Term(3),
        outcome: AppendOutcome::Success {
            match_index: LogIndex(checksum(&entries)),
        },
    });
    let response = call(factory, &client, SERVER, append_of(entries)).await?;
    ensure_eq!(
        response,
        expected,
        format!("checksum of a {total}-byte request")
    );
    factory.stop(SERVER).await;
    Ok(())
}

async fn must_fail<F: TransportFactory>(
    factory: &F,
    client: &F::Transport,
    to: NodeId,
    what: &str,
) -> CaseResult {
    let deadline = factory.failure_deadline();
    let runtime = factory.runtime();
    let started = runtime.now();
    match timeout(&runtime, deadline * 2, client.send(to, vote(2))).await {
        Ok(Err(_)) => {
            let took = runtime.now() - started;
            ensure!(
                took <= deadline + deadline / 2,
                "{what}: failed only after {took:?}, the deadline is {deadline:?}"
            );
            Ok(())
        }
        Ok(Ok(response)) => Err(CaseError::Failed(format!(
            "{what}: got a reply {response:?}"
        ))),
        Err(_) => Err(CaseError::Failed(format!(
            "{what}: still pending after {:?}",
            deadline * 2
        ))),
    }
}

async fn unreachable<F: TransportFactory>(factory: &mut F) -> CaseResult {
    let client = factory.client(CLIENT).await;
    let peer = factory.unreachable_peer();
    must_fail(
        factory,
        &client,
        peer,
        "a call to a peer where nothing runs",
    )
    .await
}

async fn stopped<F: TransportFactory>(factory: &mut F) -> CaseResult {
    factory.serve(SERVER, oracle()).await;
    let client = factory.client(CLIENT).await;
    call(factory, &client, SERVER, vote(2)).await?;
    factory.stop(SERVER).await;
    must_fail(factory, &client, SERVER, "a call to a stopped server").await
}
