//! A walk through the type-state core: a follower becomes a candidate, wins the votes it
//! needs, and becomes a leader; at each step it can do exactly what its role allows.
//!
//! The compile-time side of the story (a follower cannot propose, a candidate cannot
//! replicate, a leader cannot be forged) is checked by the compile-fail cases in
//! `raft-impl/tests/ui/`.
//!
//! Run: `cargo run -p raft-examples --example role_walkthrough`

#![allow(clippy::print_stdout)] // an example prints what it shows

use raft_impl::Config;
use raft_impl::core::{AnyNode, Effect, Effects, Follower, Input, Node};
use raft_traits::{LogId, Membership, NodeId, RecoveredState, Request, RequestVote, Term};

fn show(step: &str, out: &mut Effects<String>) {
    println!("{step}");
    for effect in out.drain() {
        let line = match effect {
            Effect::Persist(write) => format!("persist   {write:?}"),
            Effect::Send { to, request, .. } => format!("send      {} to {to}", request.kind()),
            Effect::SendSnapshot {
                to, request, len, ..
            } => format!(
                "send      InstallSnapshot piece at {} ({len} bytes) to {to}",
                request.offset
            ),
            Effect::Reply { response, .. } => format!("reply     {response:?}"),
            Effect::Refuse { reason, .. } => format!("refuse    {reason}"),
            Effect::Read { id, result } => format!("read      {id:?}: {result:?}"),
            Effect::Apply(apply) => format!("apply     {apply:?}"),
            Effect::SetTimer { timer, after } => format!("timer     {timer:?} in {after:?}"),
            Effect::StopTimer(timer) => format!("timer     {timer:?} stopped"),
        };
        println!("    {line}");
    }
}

fn main() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut out = Effects::new();

    // Every server boots as a follower. A follower votes and follows; it has no
    // `propose`: `follower.propose(..)` would not compile.
    let follower: Node<Follower, String> = Node::boot(
        NodeId(1),
        Membership::from_voters(members),
        Config::lab(),
        2024,
        RecoveredState::default(),
        None,
        &mut out,
    )
    .expect("a valid, empty state");
    show("1. booted as a follower of nobody, term 0", &mut out);

    // Its election timer fired: it becomes a candidate. The transition consumes the
    // follower, so no stale follower handle survives it.
    let candidate = follower.into_candidate(&mut out);
    show(
        &format!("2. became a candidate for term {}", candidate.term().0),
        &mut out,
    );

    // A candidate counts votes. It cannot replicate: `candidate.heartbeat(..)` would not
    // compile, and `into_leader` refuses it until it has a majority.
    let candidate = match candidate.into_leader(&mut out) {
        Ok(_) => unreachable!("one vote of three is not a majority"),
        Err(candidate) => candidate,
    };
    println!("3. into_leader with 1 of 3 votes: refused, still a candidate");
    let mut candidate = candidate;
    candidate.record_vote(NodeId(2), true);
    let mut leader = candidate
        .into_leader(&mut out)
        .expect("2 of 3 votes is a majority");
    show("4. node 2 voted yes: became the leader", &mut out);

    // Only now can it take commands.
    let id = leader.propose("set x = 1".to_string(), &mut out);
    show(&format!("5. proposed a command at {id}"), &mut out);

    // The erased form is what the driver holds: it routes inputs by role and steps down
    // on a newer term, re-handling the message as a follower. (With check-quorum, a
    // leader ignores an ordinary vote request of a newer term while it holds its
    // quorum; one sent for a leadership transfer is heard.)
    let node = AnyNode::from(leader);
    let vote = Request::Vote(RequestVote {
        term: Term(9),
        candidate: NodeId(3),
        last_log: LogId::default(),
        transfer: true,
    });
    let node = node.step(
        Input::Request {
            id: raft_impl::core::RequestId(1),
            request: vote,
        },
        &mut out,
    );
    show(
        &format!(
            "6. a RequestVote of term 9 from a shorter log: now a {} in term {}, vote refused",
            node.role_kind(),
            node.term().0
        ),
        &mut out,
    );
}
