//! Core unit tests: feed one input, assert the exact effects. No tasks, no timers, no
//! network. Named after the rules of the paper they check.

use std::time::Duration;

use bytes::Bytes;
use raft_traits::{
    AppendEntries, AppendOutcome, AppendReply, ConflictHint, Entry, HardState, IndexReply,
    InstallOutcome, InstallSnapshot, InstallSnapshotReply, LogId, LogIndex, Membership, NodeId,
    Payload, ReadIndexRefusal, ReadIndexRequest, RecoveredState, Request, RequestRefused,
    RequestVote, Response, Snapshot, SnapshotDescriptor, SnapshotMeta, Term, TimeoutNow, VoteReply,
};

use super::*;
use crate::config::Config;

type Cmd = u64;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn t(term: u64) -> Term {
    Term(term)
}

fn i(index: u64) -> LogIndex {
    LogIndex(index)
}

fn id(term: u64, index: u64) -> LogId {
    LogId::new(t(term), i(index))
}

fn entry(index: u64, term: u64) -> Entry<Cmd> {
    Entry {
        term: t(term),
        index: i(index),
        payload: Payload::Command(index * 100 + term),
    }
}

/// Entries 1.. with the given terms.
fn log_of(terms: &[u64]) -> Vec<Entry<Cmd>> {
    terms
        .iter()
        .enumerate()
        .map(|(p, &term)| entry(p as u64 + 1, term))
        .collect()
}

struct Boot {
    id: u64,
    members: u64,
    term: u64,
    voted_for: Option<u64>,
    log: Vec<Entry<Cmd>>,
    snapshot: Option<Snapshot>,
    config: Config,
}

impl Boot {
    fn new(id: u64, members: u64) -> Self {
        Boot {
            id,
            members,
            term: 0,
            voted_for: None,
            log: Vec::new(),
            snapshot: None,
            // The classic algorithm; the tests of pre-vote and check-quorum turn them on.
            config: Config::lab()
                .with_seed(Some(7))
                .with_pre_vote(false)
                .with_check_quorum(false),
        }
    }

    fn term(mut self, term: u64) -> Self {
        self.term = term;
        self
    }

    fn log(mut self, terms: &[u64]) -> Self {
        self.log = log_of(terms);
        self
    }

    fn entries(mut self, entries: Vec<Entry<Cmd>>) -> Self {
        self.log = entries;
        self
    }

    fn snapshot(mut self, index: u64, term: u64) -> Self {
        self.snapshot = Some(snapshot(index, term));
        self
    }

    fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    fn run(self) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
        let mut out = Effects::new();
        let recovered = RecoveredState {
            hard_state: HardState {
                term: t(self.term),
                voted_for: self.voted_for.map(n),
            },
            snapshot: self.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: self.log,
        };
        let snapshot = self.snapshot.as_ref().map(Snapshot::descriptor);
        let seed = self.config.seed.unwrap_or(1);
        let node = Node::boot(
            n(self.id),
            Membership::from_voters((1..=self.members).map(n)),
            self.config,
            seed,
            recovered,
            snapshot,
            &mut out,
        )
        .expect("valid boot state");
        (node.into(), out.take())
    }

    fn node(self) -> AnyNode<Cmd> {
        self.run().0
    }
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_included: id(term, index),
            membership: Membership::from_voters((1..=3).map(n)),
        },
        data: Bytes::from(format!("state@{index}")),
    }
}

fn step(node: AnyNode<Cmd>, input: Input<Cmd>) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
    let mut out = Effects::new();
    let node = node.step(input, &mut out);
    (node, out.take())
}

fn request(request: Request<Cmd>) -> Input<Cmd> {
    Input::Request {
        id: RequestId(1),
        request,
    }
}

fn vote_request(term: u64, candidate: u64, last_log: LogId) -> Input<Cmd> {
    request(Request::Vote(RequestVote {
        term: t(term),
        candidate: n(candidate),
        last_log,
        transfer: false,
    }))
}

fn append(
    term: u64,
    leader: u64,
    prev: LogId,
    entries: Vec<Entry<Cmd>>,
    commit: u64,
) -> Input<Cmd> {
    request(Request::Append(AppendEntries {
        term: t(term),
        leader: n(leader),
        prev_log: prev,
        entries,
        leader_commit: i(commit),
    }))
}

fn the_reply(effects: &[Effect<Cmd>]) -> Response {
    let replies: Vec<&Response> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { response, .. } => Some(response),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "exactly one reply in {effects:#?}");
    replies[0].clone()
}

fn append_outcome(effects: &[Effect<Cmd>]) -> AppendOutcome {
    match the_reply(effects) {
        Response::Append(reply) => reply.outcome,
        other => panic!("not an append reply: {other:?}"),
    }
}

fn vote_granted(effects: &[Effect<Cmd>]) -> bool {
    match the_reply(effects) {
        Response::Vote(reply) => reply.granted,
        other => panic!("not a vote reply: {other:?}"),
    }
}

fn sends(effects: &[Effect<Cmd>]) -> Vec<(NodeId, SendTag, Request<Cmd>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, tag, request } => Some((*to, *tag, request.clone())),
            // A snapshot piece, without the data the driver adds.
            Effect::SendSnapshot {
                to, tag, request, ..
            } => Some((*to, *tag, Request::InstallSnapshot(request.clone()))),
            _ => None,
        })
        .collect()
}

fn appends_to(effects: &[Effect<Cmd>], peer: u64) -> Vec<(SendTag, AppendEntries<Cmd>)> {
    sends(effects)
        .into_iter()
        .filter_map(|(to, tag, r)| match r {
            Request::Append(a) if to == n(peer) => Some((tag, a)),
            _ => None,
        })
        .collect()
}

fn persists(effects: &[Effect<Cmd>]) -> Vec<Persist<Cmd>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn applied(effects: &[Effect<Cmd>]) -> Vec<u64> {
    effects
        .iter()
        .flat_map(|e| match e {
            Effect::Apply(Apply::Entries(entries)) => entries.iter().map(|e| e.index.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn sets_election_timer(effects: &[Effect<Cmd>]) -> bool {
    effects.iter().any(|e| {
        matches!(
            e,
            Effect::SetTimer {
                timer: Timer::Election,
                ..
            }
        )
    })
}

fn position(effects: &[Effect<Cmd>], pred: impl Fn(&Effect<Cmd>) -> bool) -> usize {
    effects.iter().position(pred).expect("effect present")
}

fn reply_to(from: u64, tag: SendTag, response: Response) -> Input<Cmd> {
    Input::Response {
        from: n(from),
        tag,
        response,
    }
}

fn success(term: u64, match_index: u64) -> Response {
    Response::Append(AppendReply {
        term: t(term),
        outcome: AppendOutcome::Success {
            match_index: i(match_index),
        },
    })
}

/// Boots node 1 with `boot`, times out, collects every vote: a leader of term + 1.
fn elect(boot: Boot) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
    let members = boot.members;
    let node = boot.node();
    let (mut node, effects) = step(node, Input::ElectionTimeout);
    let term = node.term().0;
    let mut last = effects;
    for (to, tag, _) in sends(&last.clone()) {
        if node.is_leader() {
            break;
        }
        let (next, effects) = step(
            node,
            reply_to(
                to.0,
                tag,
                Response::Vote(VoteReply {
                    term: t(term),
                    granted: true,
                }),
            ),
        );
        node = next;
        last = effects;
    }
    assert!(node.is_leader(), "elected with {members} members");
    (node, last)
}

// ---- §5.2 Leader election ----------------------------------------------------------

#[test]
fn boot_arms_the_election_timer_and_nothing_else() {
    let (node, effects) = Boot::new(1, 3).run();
    assert!(matches!(node, AnyNode::Follower(_)));
    assert_eq!(effects.len(), 1);
    let Effect::SetTimer {
        timer: Timer::Election,
        after,
    } = effects[0]
    else {
        panic!("unexpected {effects:?}");
    };
    assert!(after >= Duration::from_millis(350) && after < Duration::from_millis(700));
}

#[test]
fn election_timeout_persists_term_and_vote_before_asking_for_votes() {
    let node = Boot::new(1, 3).log(&[1, 1]).term(1).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    assert!(node.is_candidate());
    assert_eq!(
        node.hard_state(),
        HardState {
            term: t(2),
            voted_for: Some(n(1))
        }
    );
    let persisted = position(&effects, |e| {
        matches!(e, Effect::Persist(Persist::HardState(_)))
    });
    let first_send = position(&effects, |e| matches!(e, Effect::Send { .. }));
    assert!(
        persisted < first_send,
        "term and vote persisted before RequestVote leaves"
    );
    let votes = sends(&effects);
    assert_eq!(votes.len(), 2);
    for (_, tag, request) in votes {
        assert_eq!(tag.term, t(2));
        assert_eq!(
            request,
            Request::Vote(RequestVote {
                term: t(2),
                candidate: n(1),
                last_log: id(1, 2),
                transfer: false,
            })
        );
    }
    assert!(
        sets_election_timer(&effects),
        "a new election timer for this election"
    );
}

#[test]
fn timeouts_are_random_but_reproducible_from_the_seed() {
    let timeouts = |seed: u64| {
        let (node, _) = Boot::new(1, 3).config(|c| c.seed = Some(seed)).run();
        let mut node = node;
        let mut drawn = Vec::new();
        for _ in 0..5 {
            let (next, effects) = step(node, Input::ElectionTimeout);
            node = next;
            drawn.extend(effects.iter().filter_map(|e| match e {
                Effect::SetTimer { after, .. } => Some(*after),
                _ => None,
            }));
        }
        drawn
    };
    assert_eq!(timeouts(3), timeouts(3));
    assert_ne!(timeouts(3), timeouts(4));
    let distinct: std::collections::BTreeSet<_> = timeouts(3).into_iter().collect();
    assert!(distinct.len() > 1, "timeouts vary between elections");
}

#[test]
fn candidate_with_a_majority_becomes_leader_and_asserts_itself() {
    let (node, effects) = elect(Boot::new(1, 3).term(1).log(&[1]));
    assert_eq!(node.term(), t(2));
    assert!(effects.contains(&Effect::StopTimer(Timer::Election)));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::SetTimer {
            timer: Timer::Heartbeat,
            after
        } if *after == Duration::from_millis(100)
    )));
    for peer in [2, 3] {
        let appends = appends_to(&effects, peer);
        assert_eq!(appends.len(), 1, "one AppendEntries to each peer at once");
        assert_eq!(appends[0].1.prev_log, id(1, 1));
        assert!(
            appends[0].1.entries.is_empty(),
            "no blank entry in lab mode"
        );
    }
}

#[test]
fn a_single_vote_is_not_a_majority_of_five() {
    let node = Boot::new(1, 5).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    let (_, tag, _) = sends(&effects)[0].clone();
    let granted = Response::Vote(VoteReply {
        term: t(1),
        granted: true,
    });
    let (node, _) = step(node, reply_to(2, tag, granted.clone()));
    assert!(node.is_candidate(), "2 of 5");
    let (node, _) = step(node, reply_to(2, tag, granted.clone()));
    assert!(node.is_candidate(), "a duplicated vote counts once");
    let (node, _) = step(node, reply_to(3, tag, granted));
    assert!(node.is_leader(), "3 of 5");
}

#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let node = Boot::new(1, 1).node();
    let (mut node, effects) = step(node, Input::ElectionTimeout);
    assert!(node.is_leader());
    assert!(sends(&effects).is_empty());
    let mut out = Effects::new();
    let at = node.propose(42, &mut out).expect("leader");
    assert_eq!(at, id(1, 1));
    assert!(
        applied(out.as_slice()).is_empty(),
        "not before its own copy is durable"
    );
    let (_, effects) = step(node, Input::Persisted { up_to: at });
    assert_eq!(applied(&effects), [1]);
}

#[test]
fn vote_granted_once_per_term_and_again_to_the_same_candidate() {
    let node = Boot::new(1, 3).term(1).node();
    let (node, effects) = step(node, vote_request(2, 2, id(0, 0)));
    assert!(vote_granted(&effects));
    assert_eq!(
        persists(&effects),
        [Persist::HardState(HardState {
            term: t(2),
            voted_for: Some(n(2))
        })]
    );
    let persisted = position(&effects, |e| matches!(e, Effect::Persist(_)));
    let replied = position(&effects, |e| matches!(e, Effect::Reply { .. }));
    assert!(
        persisted < replied,
        "the vote is durable before it is announced"
    );
    assert!(
        sets_election_timer(&effects),
        "granting a vote resets the timer"
    );

    let (node, effects) = step(node, vote_request(2, 3, id(0, 0)));
    assert!(!vote_granted(&effects), "already voted for 2 in term 2");
    assert!(persists(&effects).is_empty());
    assert!(!sets_election_timer(&effects));

    let (_, effects) = step(node, vote_request(2, 2, id(0, 0)));
    assert!(
        vote_granted(&effects),
        "a repeated request gets the same answer"
    );
    assert!(persists(&effects).is_empty(), "nothing new to persist");
}

#[test]
fn up_to_date_check_compares_last_term_then_length() {
    // Our log ends at term 2, index 3.
    let cases = [
        (id(1, 9), false, "older last term, longer log"),
        (id(2, 2), false, "same last term, shorter log"),
        (id(2, 3), true, "identical"),
        (id(2, 4), true, "same last term, longer"),
        (id(3, 1), true, "newer last term, shorter"),
    ];
    for (last_log, expected, why) in cases {
        let node = Boot::new(1, 3).term(2).log(&[1, 2, 2]).node();
        let (_, effects) = step(node, vote_request(3, 2, last_log));
        assert_eq!(vote_granted(&effects), expected, "{why}");
    }
}

#[test]
fn turning_down_a_stale_candidate_adopts_its_term_without_resetting_the_timer() {
    // The TestBackup pitfall: postponing our own election for every candidate we reject
    // keeps the most up-to-date server from winning.
    let node = Boot::new(1, 3).term(2).log(&[1, 2, 2]).node();
    let (node, effects) = step(node, vote_request(5, 2, id(1, 1)));
    assert!(!vote_granted(&effects));
    assert_eq!(node.term(), t(5));
    assert_eq!(
        persists(&effects),
        [Persist::HardState(HardState {
            term: t(5),
            voted_for: None
        })]
    );
    assert!(!sets_election_timer(&effects));
}

#[test]
fn stale_vote_request_is_refused_with_our_term() {
    let node = Boot::new(1, 3).term(4).node();
    let (node, effects) = step(node, vote_request(3, 2, id(3, 9)));
    assert_eq!(
        the_reply(&effects),
        Response::Vote(VoteReply {
            term: t(4),
            granted: false
        })
    );
    assert!(persists(&effects).is_empty());
    assert_eq!(node.term(), t(4));
}

#[test]
fn leader_steps_down_on_a_newer_term_in_a_request() {
    let (leader, _) = elect(Boot::new(1, 3).term(1));
    let (node, effects) = step(leader, vote_request(7, 2, id(0, 0)));
    assert!(matches!(node, AnyNode::Follower(_)));
    assert_eq!(node.term(), t(7));
    assert!(effects.contains(&Effect::StopTimer(Timer::Heartbeat)));
    assert!(
        sets_election_timer(&effects),
        "a former leader needs an election timer"
    );
    assert!(
        vote_granted(&effects),
        "then handles the request as a follower"
    );
}

#[test]
fn newer_term_in_a_reply_steps_down_and_nothing_else() {
    let (leader, effects) = elect(Boot::new(1, 3).term(1));
    let (_, tag, _) = sends(&effects)[0].clone();
    let (node, effects) = step(
        leader,
        reply_to(
            2,
            tag,
            Response::Append(AppendReply {
                term: t(9),
                outcome: AppendOutcome::StaleTerm,
            }),
        ),
    );
    assert!(matches!(node, AnyNode::Follower(_)));
    assert_eq!(
        node.hard_state(),
        HardState {
            term: t(9),
            voted_for: None
        }
    );
    assert_eq!(persists(&effects).len(), 1);
    assert!(sends(&effects).is_empty());
}

#[test]
fn reply_to_a_request_of_an_earlier_term_is_dropped() {
    let node = Boot::new(1, 3).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    let (_, old_tag, _) = sends(&effects)[0].clone();
    let (node, _) = step(node, Input::ElectionTimeout); // a new election, term 2
    let (node, effects) = step(
        node,
        reply_to(
            2,
            old_tag,
            Response::Vote(VoteReply {
                term: t(2),
                granted: true,
            }),
        ),
    );
    assert!(
        node.is_candidate(),
        "a vote granted in term 1 does not count in term 2"
    );
    assert!(effects.is_empty());
}

#[test]
fn candidate_yields_to_a_leader_of_its_own_term() {
    let node = Boot::new(1, 3).node();
    let (node, _) = step(node, Input::ElectionTimeout);
    let (node, effects) = step(node, append(1, 2, id(0, 0), vec![], 0));
    let AnyNode::Follower(follower) = &node else {
        panic!("expected a follower");
    };
    assert_eq!(follower.role().leader(), Some(n(2)));
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Success { match_index: i(0) }
    );
}

// ---- §5.3 Log replication -------------------------------------------------------------

#[test]
fn append_from_a_stale_leader_is_refused_without_side_effects() {
    let node = Boot::new(1, 3).term(3).log(&[1]).node();
    let (node, effects) = step(node, append(2, 2, id(1, 1), vec![entry(2, 2)], 2));
    assert_eq!(append_outcome(&effects), AppendOutcome::StaleTerm);
    assert_eq!(effects.len(), 1, "no persist, no timer reset: {effects:?}");
    assert_eq!(node.log().last_index(), i(1));
}

#[test]
fn accepted_entries_are_persisted_before_the_reply() {
    let node = Boot::new(1, 3).term(1).node();
    let (node, effects) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1]), 0));
    assert_eq!(persists(&effects), [Persist::Entries(log_of(&[1, 1]))]);
    let persisted = position(&effects, |e| matches!(e, Effect::Persist(_)));
    let replied = position(&effects, |e| matches!(e, Effect::Reply { .. }));
    assert!(persisted < replied);
    assert!(
        sets_election_timer(&effects),
        "a valid AppendEntries resets the timer"
    );
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Success { match_index: i(2) }
    );
    assert_eq!(node.log().last_log_id(), id(1, 2));
}

#[test]
fn duplicated_append_is_idempotent() {
    let node = Boot::new(1, 3).term(1).node();
    let request = append(1, 2, id(0, 0), log_of(&[1, 1]), 1);
    let (node, first) = step(node, request.clone());
    assert_eq!(applied(&first), [1]);
    let (node, second) = step(node, request);
    assert!(persists(&second).is_empty(), "nothing new: {second:?}");
    assert!(applied(&second).is_empty(), "nothing applied twice");
    assert_eq!(append_outcome(&first), append_outcome(&second));
    assert_eq!(node.log().last_index(), i(2));
}

#[test]
fn a_late_shorter_append_does_not_truncate_what_a_later_one_added() {
    let node = Boot::new(1, 3).term(1).node();
    let (node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1]), 0));
    let (node, effects) = step(node, append(1, 2, id(0, 0), log_of(&[1]), 0));
    assert!(persists(&effects).is_empty());
    assert_eq!(node.log().last_index(), i(3));
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Success { match_index: i(1) },
        "match_index is what this request vouched for, not our last index"
    );
}

#[test]
fn conflicting_suffix_is_truncated_then_replaced() {
    let node = Boot::new(1, 3).term(2).log(&[1, 1, 2, 2]).node();
    let (node, effects) = step(node, append(3, 2, id(1, 1), vec![entry(2, 3)], 0));
    assert_eq!(
        persists(&effects),
        [
            Persist::HardState(HardState {
                term: t(3),
                voted_for: None
            }),
            Persist::TruncateFrom(i(2)),
            Persist::Entries(vec![entry(2, 3)]),
        ]
    );
    assert_eq!(node.log().last_log_id(), id(3, 2));
}

#[test]
fn follower_commits_only_what_the_request_vouched_for() {
    // 3D pitfall 1: entries past prev + len may be stale leftovers of an old leader.
    let node = Boot::new(1, 3).term(2).log(&[1, 1, 1, 1]).node();
    let (node, effects) = step(node, append(2, 2, id(1, 2), vec![], 4));
    assert_eq!(
        applied(&effects),
        [1, 2],
        "commit is min(leader_commit, prev + len)"
    );
    assert_eq!(node.commit_index(), i(2));
}

#[test]
fn conflict_hint_for_a_short_log() {
    let node = Boot::new(1, 3).term(1).log(&[1, 1]).node();
    let (_, effects) = step(node, append(1, 2, id(1, 5), vec![entry(6, 1)], 0));
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Conflict {
            prev_log_index: i(5),
            hint: ConflictHint {
                conflict_term: None,
                first_index: i(3),
                last_log_index: i(2)
            }
        }
    );
}

#[test]
fn conflict_hint_names_the_conflicting_term_and_where_it_starts() {
    let node = Boot::new(1, 3).term(3).log(&[1, 1, 2, 2, 2]).node();
    let (node, effects) = step(node, append(3, 2, id(3, 5), vec![], 0));
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Conflict {
            prev_log_index: i(5),
            hint: ConflictHint {
                conflict_term: Some(t(2)),
                first_index: i(3),
                last_log_index: i(5)
            }
        }
    );
    assert_eq!(node.log().last_index(), i(5), "a rejection changes nothing");
}

#[test]
fn malformed_append_is_rejected_not_applied() {
    let node = Boot::new(1, 3).term(1).node();
    let gap = vec![entry(1, 1), entry(3, 1)];
    let (node, effects) = step(node, append(1, 2, id(0, 0), gap, 3));
    assert!(matches!(
        append_outcome(&effects),
        AppendOutcome::Conflict { .. }
    ));
    assert!(persists(&effects).is_empty());
    assert_eq!(node.log().last_index(), i(0));
}

/// A leader in term 7 whose log has terms `leader_log`, with peer 2 answering the initial
/// probe with `hint`; returns where the leader probes next.
fn next_probe_after(leader_log: &[u64], hint: ConflictHint) -> LogId {
    let (leader, effects) = elect(Boot::new(1, 3).term(6).log(leader_log));
    let (tag, probe) = appends_to(&effects, 2)[0].clone();
    let conflict = Response::Append(AppendReply {
        term: t(7),
        outcome: AppendOutcome::Conflict {
            prev_log_index: probe.prev_log.index,
            hint,
        },
    });
    let (_, effects) = step(leader, reply_to(2, tag, conflict));
    let next = appends_to(&effects, 2);
    assert_eq!(next.len(), 1, "the leader probes again at once");
    next[0].1.prev_log
}

#[test]
fn fast_backoff_skips_a_term_the_leader_lacks() {
    let prev = next_probe_after(
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
        ConflictHint {
            conflict_term: Some(t(2)),
            first_index: i(4),
            last_log_index: i(9),
        },
    );
    assert_eq!(prev.index, i(3), "next = XIndex");
}

#[test]
fn fast_backoff_resumes_after_the_leaders_last_entry_of_the_term() {
    let prev = next_probe_after(
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
        ConflictHint {
            conflict_term: Some(t(4)),
            first_index: i(4),
            last_log_index: i(7),
        },
    );
    assert_eq!(prev, id(4, 5), "next = leader's last index of XTerm + 1");
}

#[test]
fn fast_backoff_jumps_to_the_end_of_a_short_log() {
    let prev = next_probe_after(
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
        ConflictHint {
            conflict_term: None,
            first_index: i(3),
            last_log_index: i(2),
        },
    );
    assert_eq!(prev, id(1, 2), "next = XLen + 1");
}

#[test]
fn first_command_gets_index_one_without_a_blank_entry() {
    let (mut leader, _) = elect(Boot::new(1, 3));
    let mut out = Effects::new();
    assert_eq!(leader.propose(5, &mut out), Ok(id(1, 1)));
}

#[test]
fn leader_noop_appends_a_blank_entry_of_the_new_term() {
    let (mut leader, effects) = elect(
        Boot::new(1, 3)
            .log(&[1, 1])
            .term(1)
            .config(|c| c.leader_noop = true),
    );
    let blank = Entry {
        term: t(2),
        index: i(3),
        payload: Payload::Blank,
    };
    assert_eq!(persists(&effects), [Persist::Entries(vec![blank.clone()])]);
    assert_eq!(appends_to(&effects, 2)[0].1.entries, [blank]);
    let mut out = Effects::new();
    assert_eq!(leader.propose(5, &mut out), Ok(id(2, 4)));
}

#[test]
fn leader_sends_new_entries_while_it_writes_them_and_counts_itself_once_durable() {
    // §10.2.1: the leader's own write runs in parallel with replication, but its copy
    // counts toward a majority only once durable.
    let mut leader = settled_leader(Boot::new(1, 3));
    let mut out = Effects::new();
    let at = leader.propose(9, &mut out).expect("leader");
    let effects = out.take();
    let sent = position(&effects, |e| matches!(e, Effect::Send { .. }));
    let written = position(&effects, |e| {
        matches!(e, Effect::Persist(Persist::Entries(_)))
    });
    assert!(
        sent < written,
        "the AppendEntries do not wait for the leader's write"
    );
    let (tag, request) = appends_to(&effects, 2)[0].clone();
    assert_eq!(request.entries.len(), 1);

    let (leader, effects) = step(leader, reply_to(2, tag, success(1, 1)));
    assert!(
        applied(&effects).is_empty(),
        "one follower and a leader copy still being written"
    );
    let (_, effects) = step(leader, Input::Persisted { up_to: at });
    assert_eq!(
        applied(&effects),
        [1],
        "the leader's durable copy makes the majority"
    );
}

#[test]
fn a_batch_of_proposals_is_one_write_and_one_append_per_follower() {
    let mut leader = settled_leader(Boot::new(1, 3));
    let before = leader.counters();
    let mut out = Effects::new();
    let ids = leader
        .propose_batch(vec![1, 2, 3], &mut out)
        .expect("leader");
    assert_eq!(ids, [id(1, 1), id(1, 2), id(1, 3)]);
    let effects = out.take();
    assert_eq!(
        persists(&effects),
        [Persist::Entries(vec![
            Entry {
                term: t(1),
                index: i(1),
                payload: Payload::Command(1)
            },
            Entry {
                term: t(1),
                index: i(2),
                payload: Payload::Command(2)
            },
            Entry {
                term: t(1),
                index: i(3),
                payload: Payload::Command(3)
            },
        ])]
    );
    for peer in [2, 3] {
        let appends = appends_to(&effects, peer);
        assert_eq!(appends.len(), 1);
        assert_eq!(indices_of(&appends[0].1.entries), [1, 2, 3]);
    }
    // The batching the counters report: two requests of three entries each.
    let after = leader.counters();
    assert_eq!(after.append_requests - before.append_requests, 2);
    assert_eq!(after.entries_sent - before.entries_sent, 6);
    // Heartbeats carry no entries and are not counted.
    let (leader, effects) = step(leader, Input::HeartbeatTimeout);
    assert!(!appends_to(&effects, 2).is_empty(), "a heartbeat went out");
    assert_eq!(leader.counters(), after);
}

#[test]
fn not_leader_carries_the_leader_hint() {
    let node = Boot::new(1, 3).node();
    let (mut node, _) = step(node, append(1, 3, id(0, 0), vec![], 0));
    let mut out = Effects::new();
    assert_eq!(
        node.propose(1, &mut out),
        Err(ProposeRefused::NotLeader {
            leader_hint: Some(n(3))
        })
    );
    assert!(out.is_empty());
}

/// A leader of term `term + 1` over 3 nodes whose followers both matched its whole log.
fn settled_leader(boot: Boot) -> AnyNode<Cmd> {
    let (mut leader, effects) = elect(boot);
    let term = leader.term().0;
    let last = leader.log().last_index().0;
    for peer in [2, 3] {
        let (tag, _) = appends_to(&effects, peer)[0];
        leader = step(leader, reply_to(peer, tag, success(term, last))).0;
    }
    leader
}

#[test]
fn leader_commits_an_entry_of_its_term_once_a_majority_has_it() {
    let mut leader = settled_leader(Boot::new(1, 3));
    let mut out = Effects::new();
    let at = leader.propose(1, &mut out).expect("leader");
    let (tag, _) = appends_to(out.as_slice(), 2)[0];
    let (leader, _) = step(leader, Input::Persisted { up_to: at });
    let (leader, effects) = step(leader, reply_to(2, tag, success(1, 1)));
    assert_eq!(applied(&effects), [1]);
    assert_eq!(leader.commit_index(), i(1));
}

#[test]
fn figure_8_an_entry_of_an_earlier_term_is_not_committed_by_counting_replicas() {
    // Five servers; the new leader of term 4 holds entry 2 of term 2, uncommitted.
    let (leader, effects) = elect(Boot::new(1, 5).term(3).log(&[1, 2]));
    assert_eq!(leader.term(), t(4));
    let mut leader = leader;
    for peer in [2, 3] {
        let (tag, _) = appends_to(&effects, peer)[0];
        let (next, effects) = step(leader, reply_to(peer, tag, success(4, 2)));
        leader = next;
        assert!(
            applied(&effects).is_empty(),
            "index 2 is on a majority but of term 2"
        );
    }
    assert_eq!(leader.commit_index(), i(0));

    let mut out = Effects::new();
    let at = leader.propose(3, &mut out).expect("leader");
    let effects = out.take();
    let (mut leader, _) = step(leader, Input::Persisted { up_to: at });
    let mut committed = Vec::new();
    for peer in [2, 3] {
        let (tag, _) = appends_to(&effects, peer)[0];
        let (next, effects) = step(leader, reply_to(peer, tag, success(4, 3)));
        leader = next;
        committed.extend(applied(&effects));
    }
    assert_eq!(
        committed,
        [1, 2, 3],
        "the term-4 entry commits, and the earlier ones with it"
    );
}

#[test]
fn heartbeat_retries_a_lost_probe_and_carries_the_commit_index() {
    let (leader, effects) = elect(Boot::new(1, 3).log(&[1, 1]).term(1));
    let (tag, _) = appends_to(&effects, 3)[0];
    let (leader, _) = step(
        leader,
        Input::SendFailed {
            to: n(3),
            tag,
            rpc: RpcKind::Append,
        },
    );
    let (_, effects) = step(leader, Input::HeartbeatTimeout);
    let again = appends_to(&effects, 3);
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].1.prev_log,
        id(1, 2),
        "probes where it probed before"
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::SetTimer {
            timer: Timer::Heartbeat,
            ..
        }
    )));
}

#[test]
fn pipelined_appends_tolerate_out_of_order_replies() {
    let mut leader = settled_leader(Boot::new(1, 3).config(|c| {
        c.max_inflight_appends = 3;
        c.max_append_entries = 1;
    }));
    let mut out = Effects::new();
    for cmd in 0..4 {
        leader.propose(cmd, &mut out).expect("leader");
    }
    let effects = out.take();
    let to2 = appends_to(&effects, 2);
    assert_eq!(to2.len(), 3, "three batches in flight, the fourth waits");
    let (leader, _) = step(leader, reply_to(2, to2[2].0, success(1, 3)));
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    let progress = l.role().progress(n(2)).expect("peer");
    assert_eq!(progress.match_index(), i(3));
    let (leader, effects) = step(leader, reply_to(2, to2[0].0, success(1, 1)));
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    assert_eq!(
        l.role().progress(n(2)).expect("peer").match_index(),
        i(3),
        "match never goes back"
    );
    assert!(appends_to(&effects, 2).len() <= 1);
    // A late rejection of something already matched is ignored.
    let late = Response::Append(AppendReply {
        term: t(1),
        outcome: AppendOutcome::Conflict {
            prev_log_index: i(1),
            hint: ConflictHint {
                conflict_term: None,
                first_index: i(1),
                last_log_index: i(0),
            },
        },
    });
    let (leader, effects) = step(leader, reply_to(2, to2[1].0, late));
    assert!(sends(&effects).is_empty());
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    assert_eq!(
        l.role().progress(n(2)).expect("peer").mode(),
        ReplicationMode::Replicate
    );
}

// ---- §7 Log compaction ------------------------------------------------------------------

#[test]
fn service_snapshot_compacts_the_log_and_persists_atomically() {
    let node = Boot::new(1, 3).term(1).node();
    let (mut node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1, 1]), 3));
    let mut out = Effects::new();
    let data = Bytes::from_static(b"upto3");
    assert_eq!(node.snapshot(i(3), data.clone(), &mut out), Ok(id(1, 3)));
    assert_eq!(
        persists(out.as_slice()),
        [
            Persist::Snapshot(Box::new(Snapshot {
                meta: SnapshotMeta {
                    last_included: id(1, 3),
                    membership: Membership::from_voters((1..=3).map(n)),
                },
                data
            })),
            Persist::PurgeTo(i(3))
        ],
        "the lab configuration keeps no trailing window"
    );
    assert_eq!(node.log().len(), 1);
    assert_eq!(node.log().last_index(), i(4));
    let mut out = Effects::new();
    assert!(matches!(
        node.snapshot(i(2), Bytes::new(), &mut out),
        Err(SnapshotRefused::NotNewer { .. })
    ));
    assert!(matches!(
        node.snapshot(i(4), Bytes::new(), &mut out),
        Err(SnapshotRefused::NotApplied { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn a_snapshot_the_server_takes_itself_is_described_first_and_installed_once_staged() {
    let node = Boot::new(1, 3).term(1).node();
    let (mut node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1, 1]), 3));
    let meta = SnapshotMeta {
        last_included: id(1, 3),
        membership: Membership::from_voters((1..=3).map(n)),
    };
    assert_eq!(node.snapshot_meta(i(3)), Ok(meta.clone()));
    assert!(matches!(
        node.snapshot_meta(i(4)),
        Err(SnapshotRefused::NotApplied { .. })
    ));
    // Storage staged it: size and checksum are what the writer saw.
    let staged = SnapshotDescriptor {
        meta: meta.clone(),
        size: 5,
        checksum: 0x1234,
    };
    let mut out = Effects::new();
    // A descriptor that does not describe the log at its index is refused.
    let mut wrong = staged.clone();
    wrong.meta.membership = Membership::from_voters([n(1)]);
    assert_eq!(
        node.snapshot_staged(wrong, &mut out),
        Err(SnapshotRefused::Changed { staged: id(1, 3) })
    );
    assert!(out.is_empty());
    assert_eq!(node.snapshot_staged(staged.clone(), &mut out), Ok(id(1, 3)));
    assert_eq!(
        persists(out.as_slice()),
        [
            Persist::StagedSnapshot(Box::new(staged.clone())),
            Persist::PurgeTo(i(3))
        ]
    );
    assert_eq!(node.log().len(), 1);
    assert_eq!(node.log().last_included(), id(1, 3));
    // Once installed, the same or an older one is stale.
    let mut out = Effects::new();
    assert!(matches!(
        node.snapshot_staged(staged, &mut out),
        Err(SnapshotRefused::NotNewer { .. })
    ));
    assert!(matches!(
        node.snapshot_meta(i(2)),
        Err(SnapshotRefused::NotNewer { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn restart_from_a_snapshot_delivers_it_once_and_resumes_after_it() {
    let (node, effects) = Boot::new(1, 3)
        .term(2)
        .snapshot(5, 2)
        .entries(vec![entry(6, 2), entry(7, 2)])
        .run();
    assert!(
        matches!(&effects[0], Effect::Apply(Apply::Snapshot(s)) if s.meta.last_included == id(2, 5))
    );
    assert_eq!(
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Apply(_)))
            .count(),
        1
    );
    assert_eq!(node.last_applied(), i(5));
    assert_eq!(node.commit_index(), i(5));
    let (_, effects) = step(node, append(2, 2, id(2, 7), vec![], 7));
    assert_eq!(
        applied(&effects),
        [6, 7],
        "the next command applied is last included + 1"
    );
}

#[test]
fn append_reaching_into_the_snapshot_uses_real_indices() {
    let node = Boot::new(1, 3).term(2).snapshot(5, 2).node();
    // The leader still thinks we need 4..=7.
    let entries = vec![entry(4, 1), entry(5, 2), entry(6, 2), entry(7, 2)];
    let (node, effects) = step(node, append(2, 2, id(1, 3), entries, 7));
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Success { match_index: i(7) }
    );
    assert_eq!(
        persists(&effects),
        [Persist::Entries(vec![entry(6, 2), entry(7, 2)])]
    );
    assert_eq!(applied(&effects), [6, 7]);
    assert_eq!(node.log().last_index(), i(7));
}

fn install(term: u64, leader: u64, snapshot: Snapshot) -> Input<Cmd> {
    request(Request::InstallSnapshot(Box::new(InstallSnapshot::whole(
        t(term),
        n(leader),
        snapshot,
    ))))
}

fn installed(effects: &[Effect<Cmd>]) -> InstallOutcome {
    match the_reply(effects) {
        Response::InstallSnapshot(InstallSnapshotReply { outcome, .. }) => outcome,
        other => panic!("not an install reply: {other:?}"),
    }
}

#[test]
fn install_snapshot_keeps_a_matching_suffix_and_moves_forward() {
    let node = Boot::new(1, 3).term(2).log(&[1, 1, 2, 2, 2]).node();
    let (node, effects) = step(node, install(2, 2, snapshot(3, 2)));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(3) }
    );
    let persisted = position(&effects, |e| {
        matches!(e, Effect::Persist(Persist::FinishSnapshot))
    });
    let handed = position(&effects, |e| matches!(e, Effect::Apply(Apply::Snapshot(_))));
    let replied = position(&effects, |e| matches!(e, Effect::Reply { .. }));
    assert!(persisted < handed && handed < replied);
    assert_eq!(
        node.log().last_index(),
        i(5),
        "entries after a matching entry are kept"
    );
    assert_eq!(node.last_applied(), i(3));
}

#[test]
fn a_snapshot_whose_bytes_fail_their_checksum_is_refused_and_changes_nothing() {
    let node = Boot::new(1, 3).term(2).log(&[1, 1, 2, 2, 2]).node();
    let good = snapshot(4, 2);
    let mut damaged = good.clone();
    damaged.data = Bytes::from_static(b"flipped bits");
    let mut piece = InstallSnapshot::whole(t(3), n(2), good.clone());
    let carried = piece.checksum;
    piece.data = damaged.data.clone();
    let computed = piece.computed_checksum();
    let (node, effects) = step(node, request(Request::InstallSnapshot(Box::new(piece))));
    assert_eq!(
        refusal(&effects),
        RequestRefused::SnapshotChecksum { carried, computed }
    );
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Persist(_) | Effect::Apply(_))),
        "a refused snapshot was acted on: {effects:?}"
    );
    assert_eq!(node.term(), t(2), "its term was adopted");
    assert_eq!(node.log().last_index(), i(5));
    assert_eq!(node.log().last_included(), LogId::default());
    assert_eq!(node.refused_messages(), 1);
    // The same snapshot intact is installed.
    let (_, effects) = step(node, install(3, 2, good));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(4) }
    );
}

#[test]
fn install_snapshot_drops_a_conflicting_log() {
    let node = Boot::new(1, 3).term(3).log(&[1, 1, 2, 2, 2]).node();
    let (node, _) = step(node, install(3, 2, snapshot(4, 3)));
    assert_eq!(node.log().last_log_id(), id(3, 4));
    assert!(node.log().is_empty());
}

#[test]
fn an_older_snapshot_never_moves_the_state_machine_back() {
    // 3D pitfall 3: committed entries are already on their way to the state machine.
    let node = Boot::new(1, 3).term(1).node();
    let (node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1, 1, 1, 1]), 6));
    let (node, effects) = step(node, install(1, 2, snapshot(4, 1)));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(6) }
    );
    assert!(persists(&effects).is_empty());
    assert!(!effects.iter().any(|e| matches!(e, Effect::Apply(_))));
    assert_eq!(node.last_applied(), i(6));
}

/// A follower's refusal of the leader's first AppendEntries (at the snapshot boundary,
/// 10) that says its log ends at 3: it needs entries the leader compacted.
fn behind_the_snapshot() -> Response {
    Response::Append(AppendReply {
        term: t(2),
        outcome: AppendOutcome::Conflict {
            prev_log_index: i(10),
            hint: ConflictHint {
                conflict_term: None,
                first_index: i(4),
                last_log_index: i(3),
            },
        },
    })
}

#[test]
fn leader_sends_its_snapshot_when_a_follower_needs_compacted_entries() {
    let (mut leader, effects) = elect(Boot::new(1, 3).term(1).snapshot(10, 1));
    let (tag, probe) = appends_to(&effects, 2)[0].clone();
    assert_eq!(
        probe.prev_log,
        id(1, 10),
        "real index of the snapshot boundary"
    );
    let mut out = Effects::new();
    leader = leader.step(reply_to(2, tag, behind_the_snapshot()), &mut out);
    let snapshots: Vec<_> = sends(out.as_slice())
        .into_iter()
        .filter(|(to, _, r)| *to == n(2) && matches!(r, Request::InstallSnapshot(_)))
        .collect();
    assert_eq!(snapshots.len(), 1);
    let (_, snap_tag, _) = snapshots[0].clone();
    let done = Response::InstallSnapshot(InstallSnapshotReply {
        term: t(2),
        outcome: InstallOutcome::Installed { match_index: i(10) },
    });
    let (leader, _) = step(leader, reply_to(2, snap_tag, done));
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    let progress = l.role().progress(n(2)).expect("peer");
    assert_eq!(progress.match_index(), i(10));
    assert_eq!(
        progress.next_index(),
        i(11),
        "next index after a snapshot is last included + 1"
    );
}

#[test]
fn service_snapshot_keeps_a_trailing_window_of_entries() {
    let node = Boot::new(1, 3)
        .term(1)
        .config(|c| c.snapshot_trailing_entries = 2)
        .node();
    let (mut node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1, 1, 1, 1]), 5));
    let mut out = Effects::new();
    assert_eq!(node.snapshot(i(5), Bytes::new(), &mut out), Ok(id(1, 5)));
    let written = persists(out.as_slice());
    assert!(matches!(&written[0], Persist::Snapshot(s) if s.meta.last_included == id(1, 5)));
    assert_eq!(
        written[1..],
        [Persist::PurgeTo(i(3))],
        "entries 4 and 5 stay"
    );
    assert_eq!(node.log().first_index(), i(4));
    assert_eq!(node.log().last_included(), id(1, 5));
    // A window at least as long as the log purges nothing.
    let node = Boot::new(1, 3)
        .term(1)
        .config(|c| c.snapshot_trailing_entries = 100)
        .node();
    let (mut node, _) = step(node, append(1, 2, id(0, 0), log_of(&[1, 1, 1]), 3));
    let mut out = Effects::new();
    assert_eq!(node.snapshot(i(3), Bytes::new(), &mut out), Ok(id(1, 3)));
    assert_eq!(
        persists(out.as_slice()).len(),
        1,
        "only the snapshot is written"
    );
    assert_eq!(node.log().first_index(), i(1));
}

#[test]
fn installing_a_matching_snapshot_keeps_the_follower_window() {
    let node = Boot::new(1, 3)
        .term(2)
        .log(&[1, 1, 2, 2, 2])
        .config(|c| c.snapshot_trailing_entries = 2)
        .node();
    let (node, effects) = step(node, install(2, 2, snapshot(4, 2)));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(4) }
    );
    assert!(persists(&effects).contains(&Persist::PurgeTo(i(2))));
    assert_eq!(node.log().first_index(), i(3));
    assert_eq!(node.log().last_index(), i(5));
}

#[test]
fn restart_recovers_the_trailing_window_and_serves_from_it() {
    // Storage kept entries 6..=12 although its snapshot covers up to 10.
    let entries = (6..=12).map(|index| entry(index, 1)).collect();
    let (leader, effects) = elect(
        Boot::new(1, 3)
            .term(1)
            .snapshot(10, 1)
            .entries(entries)
            .config(|c| c.snapshot_trailing_entries = 5),
    );
    assert_eq!(leader.log().first_index(), i(6));
    let (tag2, probe2) = appends_to(&effects, 2)[0].clone();
    let (tag3, _) = appends_to(&effects, 3)[0].clone();
    assert_eq!(probe2.prev_log, id(1, 12));
    let behind = |last: u64| {
        Response::Append(AppendReply {
            term: t(2),
            outcome: AppendOutcome::Conflict {
                prev_log_index: i(12),
                hint: ConflictHint {
                    conflict_term: None,
                    first_index: i(last + 1),
                    last_log_index: i(last),
                },
            },
        })
    };
    // Peer 2 ends at 7, inside the window: it gets entries, anchored at 7.
    let (leader, effects) = step(leader, reply_to(2, tag2, behind(7)));
    let to2 = appends_to(&effects, 2);
    assert_eq!(to2.len(), 1, "{effects:?}");
    assert_eq!(to2[0].1.prev_log, id(1, 7));
    assert_eq!(
        to2[0]
            .1
            .entries
            .iter()
            .map(|e| e.index.0)
            .collect::<Vec<_>>(),
        [8, 9, 10, 11, 12]
    );
    assert!(
        !sends(&effects)
            .iter()
            .any(|(_, _, r)| matches!(r, Request::InstallSnapshot(_))),
        "no snapshot for a follower inside the window"
    );
    // Peer 3 ends at 4, before the window: only the snapshot can bring it up.
    let (_, effects) = step(leader, reply_to(3, tag3, behind(4)));
    let snapshots: Vec<_> = sends(&effects)
        .into_iter()
        .filter(|(to, _, r)| *to == n(3) && matches!(r, Request::InstallSnapshot(_)))
        .collect();
    assert_eq!(snapshots.len(), 1, "{effects:?}");
}

/// A settled leader of three proposes command 1 and writes it; the tags of the
/// AppendEntries carrying it to peers 2 and 3.
fn first_entry_in_flight(mut leader: AnyNode<Cmd>) -> (AnyNode<Cmd>, SendTag, SendTag) {
    let mut out = Effects::new();
    let at = leader.propose(1, &mut out).expect("leader");
    let effects = out.take();
    let (tag2, _) = appends_to(&effects, 2)[0];
    let (tag3, _) = appends_to(&effects, 3)[0];
    let (leader, _) = step(leader, Input::Persisted { up_to: at });
    (leader, tag2, tag3)
}

#[test]
fn idle_followers_hear_of_a_new_commit_index_at_once() {
    let leader = settled_leader(Boot::new(1, 3).config(|c| {
        c.commit_notice_delay = Duration::ZERO;
    }));
    let (leader, tag2, tag3) = first_entry_in_flight(leader);
    // Peer 2's reply makes a majority: the entry commits, and peer 2, idle now, is told.
    let (leader, effects) = step(leader, reply_to(2, tag2, success(1, 1)));
    assert_eq!(applied(&effects), [1]);
    let to2 = appends_to(&effects, 2);
    assert_eq!(to2.len(), 1);
    assert!(to2[0].1.entries.is_empty());
    assert_eq!(to2[0].1.leader_commit, i(1));
    assert!(
        appends_to(&effects, 3).is_empty(),
        "peer 3 still has a request in flight; its reply will bring it up to date"
    );
    let (_, effects) = step(leader, reply_to(3, tag3, success(1, 1)));
    let to3 = appends_to(&effects, 3);
    assert_eq!(to3.len(), 1);
    assert_eq!(to3[0].1.leader_commit, i(1));
}

#[test]
fn commit_notices_wait_for_the_timer_and_cover_every_idle_follower_at_once() {
    let leader = settled_leader(Boot::new(1, 3));
    let delay = Config::lab().commit_notice_delay;
    let (leader, tag2, tag3) = first_entry_in_flight(leader);

    // The entry commits on peer 2's reply; nobody is told yet, the timer is armed once.
    let (leader, effects) = step(leader, reply_to(2, tag2, success(1, 1)));
    assert_eq!(applied(&effects), [1]);
    assert!(sends(&effects).is_empty(), "{effects:?}");
    let armed = Effect::SetTimer {
        timer: Timer::CommitNotice,
        after: delay,
    };
    assert!(effects.contains(&armed));
    let (leader, effects) = step(leader, reply_to(3, tag3, success(1, 1)));
    assert!(sends(&effects).is_empty(), "{effects:?}");
    assert!(
        !effects.contains(&armed),
        "an armed notice is not pushed back by later commits"
    );

    // One notice per idle follower when it fires.
    let (_, effects) = step(leader, Input::CommitNoticeDue);
    for peer in [2, 3] {
        let to = appends_to(&effects, peer);
        assert_eq!(to.len(), 1, "{effects:?}");
        assert!(to[0].1.entries.is_empty());
        assert_eq!(to[0].1.leader_commit, i(1));
    }
}

#[test]
fn entries_sent_before_the_commit_notice_carry_the_commit_index_instead() {
    let (leader, tag2, _) = first_entry_in_flight(settled_leader(Boot::new(1, 3)));
    let (mut leader, _) = step(leader, reply_to(2, tag2, success(1, 1)));
    let mut out = Effects::new();
    leader.propose(2, &mut out).expect("leader");
    let effects = out.take();
    let to2 = appends_to(&effects, 2);
    assert_eq!(to2.len(), 1);
    assert_eq!(to2[0].1.leader_commit, i(1));
    // Peer 2 knows; peer 3 still has its first request in flight: nothing to notify.
    let (_, effects) = step(leader, Input::CommitNoticeDue);
    assert!(sends(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_leader_stepping_down_stops_its_commit_notice() {
    let leader = settled_leader(Boot::new(1, 3));
    let (node, effects) = step(leader, vote_request(9, 2, LogId::default()));
    assert_eq!(node.role_kind(), RoleKind::Follower);
    assert!(effects.contains(&Effect::StopTimer(Timer::CommitNotice)));
    let (node, effects) = step(node, Input::CommitNoticeDue);
    assert_eq!(node.role_kind(), RoleKind::Follower);
    assert!(sends(&effects).is_empty());
}

#[test]
fn a_pipelined_request_refused_before_its_predecessor_arrived_is_resent() {
    // Found by the simulator (seed 35): A2 overtakes A1 on the network, is refused, and
    // the refusal is processed after A1's success. Ignoring it as stale left the
    // follower behind an optimistic next_index forever.
    let mut leader = settled_leader(Boot::new(1, 3).config(|c| {
        c.max_inflight_appends = 4;
        c.max_append_entries = 2;
    }));
    let mut out = Effects::new();
    for cmd in 0..4 {
        leader.propose(cmd, &mut out).expect("leader");
    }
    let effects = out.take();
    let to2 = appends_to(&effects, 2);
    let (a1, a2) = (to2[0].clone(), to2[1].clone());
    assert_eq!(a2.1.prev_log.index, i(1), "A1 carries entry 1, A2 entry 2");

    let (leader, _) = step(leader, reply_to(2, a1.0, success(1, 1)));
    let refused = Response::Append(AppendReply {
        term: t(1),
        outcome: AppendOutcome::Conflict {
            prev_log_index: i(1),
            hint: ConflictHint {
                conflict_term: None,
                first_index: i(1),
                last_log_index: i(0),
            },
        },
    });
    let (leader, effects) = step(leader, reply_to(2, a2.0, refused));
    let resent = appends_to(&effects, 2);
    assert_eq!(resent.len(), 1, "the refused entries go out again at once");
    assert_eq!(resent[0].1.prev_log, id(1, 1));
    assert_eq!(indices_of(&resent[0].1.entries), [2, 3]);
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    assert_eq!(
        l.role().progress(n(2)).expect("peer").mode(),
        ReplicationMode::Probe
    );
}

fn indices_of(entries: &[Entry<Cmd>]) -> Vec<u64> {
    entries.iter().map(|e| e.index.0).collect()
}

#[test]
fn a_follower_that_lost_its_log_is_replicated_from_scratch() {
    // Raft assumes storage survives; an operator who wipes a follower's disk breaks that.
    // The leader learns of it when a heartbeat anchored at the confirmed index is refused
    // and must start over instead of stalling.
    let mut leader = settled_leader(Boot::new(1, 3));
    let mut out = Effects::new();
    leader.propose(1, &mut out).expect("leader");
    let (tag, _) = appends_to(out.as_slice(), 2)[0];
    let (leader, _) = step(leader, reply_to(2, tag, success(1, 1)));
    let (leader, effects) = step(leader, Input::HeartbeatTimeout);
    let (heartbeat, request) = appends_to(&effects, 2)[0].clone();
    assert_eq!(
        request.prev_log,
        id(1, 1),
        "anchored at the confirmed index"
    );
    let wiped = Response::Append(AppendReply {
        term: t(1),
        outcome: AppendOutcome::Conflict {
            prev_log_index: i(1),
            hint: ConflictHint {
                conflict_term: None,
                first_index: i(1),
                last_log_index: i(0),
            },
        },
    });
    let (leader, effects) = step(leader, reply_to(2, heartbeat, wiped));
    let resent = appends_to(&effects, 2);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].1.prev_log, id(0, 0), "from the very beginning");
    assert_eq!(indices_of(&resent[0].1.entries), [1]);
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    assert_eq!(l.role().progress(n(2)).expect("peer").match_index(), i(0));
}

// Hostile input (issue: terms that wrap, senders that are not members). Every case must
// leave the node exactly as it was: no write, no message, no change of term or role.

fn refusal(effects: &[Effect<Cmd>]) -> RequestRefused {
    let refusals: Vec<&RequestRefused> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Refuse { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 1, "exactly one refusal in {effects:#?}");
    assert_eq!(effects.len(), 1, "nothing but the refusal: {effects:#?}");
    refusals[0].clone()
}

#[test]
fn a_term_at_the_top_of_the_range_is_refused_and_changes_nothing() {
    for term in [u64::MAX, u64::MAX - 1, Term::MAX_ACCEPTED.0 + 1] {
        let node = Boot::new(1, 3).term(4).node();
        let (node, effects) = step(node, vote_request(term, 2, id(term, 9)));
        assert_eq!(
            refusal(&effects),
            RequestRefused::TermOutOfRange { term: t(term) }
        );
        assert_eq!(node.term(), t(4), "term {term} was adopted");
        let (node, effects) = step(node, append(term, 2, id(0, 0), vec![], 0));
        assert!(matches!(
            refusal(&effects),
            RequestRefused::TermOutOfRange { .. }
        ));
        assert_eq!(node.term(), t(4));
        assert!(node.is_follower());
        assert_eq!(node.refused_messages(), 2);
    }
}

#[test]
fn a_node_at_the_highest_accepted_term_never_wraps_around() {
    let top = Term::MAX_ACCEPTED.0;
    let node = Boot::new(1, 3).term(3).node();
    let (node, effects) = step(node, vote_request(top, 2, id(0, 0)));
    assert!(
        vote_granted(&effects),
        "the highest accepted term is usable"
    );
    assert_eq!(node.term(), t(top));
    let (node, effects) = step(node, Input::ElectionTimeout);
    assert_eq!(node.term(), t(top), "no campaign past the limit");
    assert!(node.is_follower());
    assert!(sends(&effects).is_empty() && persists(&effects).is_empty());
}

#[test]
fn entries_that_would_run_past_the_highest_index_are_refused() {
    let node = Boot::new(1, 3).term(2).node();
    let near_top = LogIndex::MAX_ACCEPTED.0;
    let entries = vec![Entry {
        term: t(2),
        index: i(near_top + 1),
        payload: Payload::Command(1),
    }];
    let (node, effects) = step(node, append(2, 2, id(2, near_top), entries, 0));
    assert!(matches!(
        refusal(&effects),
        RequestRefused::IndexOutOfRange { .. }
    ));
    assert_eq!(node.log().last_index(), i(0));
}

#[test]
fn requests_from_non_members_are_refused_and_replies_ignored() {
    let node = Boot::new(1, 3).term(2).node();
    // A follower of a live leader refuses another "leader" it does not know.
    let (mut node, _) = step(node, append(2, 2, id(0, 0), vec![], 0));
    at(&mut node, 100);
    let (node, effects) = step(node, append(2, 9, id(0, 0), log_of(&[2]), 1));
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });
    assert_eq!(
        node.log().last_index(),
        i(0),
        "a non-member's entry was appended"
    );
    let (node, effects) = step(node, vote_request(5, 9, id(9, 9)));
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });
    assert_eq!(node.term(), t(2));
    let install = install(2, 9, snapshot(5, 2));
    let (node, effects) = step(node, install);
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });
    assert_eq!(node.log().last_included(), LogId::default());
    let timeout_now = request(Request::TimeoutNow(TimeoutNow {
        term: t(2),
        leader: n(9),
    }));
    let (node, effects) = step(node, timeout_now);
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });

    // A candidate ignores a grant from a non-member, and a reply of an absurd term.
    let (candidate, effects) = step(node, Input::ElectionTimeout);
    let tag = sends(&effects)[0].1;
    let grant = |from: u64, term: u64| Input::Response {
        from: n(from),
        tag,
        response: Response::Vote(VoteReply {
            term: t(term),
            granted: true,
        }),
    };
    let (candidate, _) = step(candidate, grant(9, 3));
    assert!(candidate.is_candidate(), "a non-member's vote elected it");
    let (candidate, _) = step(candidate, grant(2, u64::MAX));
    assert!(candidate.is_candidate());
    assert_eq!(candidate.term(), t(3), "a reply's absurd term was adopted");
    assert_eq!(candidate.refused_messages(), 6);
}

/// Thesis §4.1: a server listens to a leader outside its configuration once it hears
/// from no leader it knows. Server 1 was down while the cluster {1, 2, 3} added server 9,
/// which now leads; its log ends before the configuration that added 9, so only 9 can
/// bring it up to date (found by the simulator's explorer: such a server refused the
/// leader for ever and never caught up).
#[test]
fn a_lagging_member_follows_a_leader_it_does_not_know_once_its_own_is_silent() {
    let mut joined = voters_of(&[1, 2, 3, 9]);
    joined.nodes.insert(n(9), String::new());
    let added = Entry {
        term: t(2),
        index: i(2),
        payload: Payload::Membership(Box::new(joined.clone())),
    };
    let from_9 = || append(3, 9, id(1, 1), vec![added.clone(), entry(3, 3)], 2);

    // Following 2, heard 100 ms ago: 9 is a stranger.
    let node = Boot::new(1, 3).term(2).log(&[1]).node();
    let (mut node, _) = step(node, append(2, 2, id(1, 1), vec![], 1));
    at(&mut node, 100);
    let (mut node, effects) = step(node, from_9());
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });

    // Nothing from 2 for the minimum election timeout: 9 is heard, and its log tells
    // who it is; it is a member from then on.
    at(&mut node, 400);
    let (node, effects) = step(node, from_9());
    assert_eq!(
        append_outcome(&effects),
        AppendOutcome::Success { match_index: i(3) }
    );
    assert_eq!(node.log().last_index(), i(3));
    assert_eq!(
        node.membership(),
        &joined,
        "it learned the leader's configuration"
    );
    assert_eq!(node.committed_membership(), &joined);
    assert_eq!((node.term(), node.leader_hint()), (t(3), Some(n(9))));
    assert_eq!(node.refused_messages(), 1);

    // Likewise a snapshot from it, for a server further behind that has no leader.
    let node = Boot::new(1, 3).term(2).node();
    let mut snapshot = snapshot(5, 2);
    snapshot.meta.membership = joined.clone();
    let (node, effects) = step(node, install(3, 9, snapshot));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Refuse { .. })),
        "refused: {effects:#?}"
    );
    assert_eq!(node.log().last_included(), id(2, 5));
    assert_eq!(node.membership(), &joined);

    // A leader never takes one it does not know.
    let leader = committed_leader(3);
    let (leader, effects) = step(leader, append(9, 9, id(0, 0), vec![], 0));
    assert_eq!(refusal(&effects), RequestRefused::NotAMember { from: n(9) });
    assert!(leader.is_leader());
}

#[test]
fn a_stored_term_out_of_range_is_a_typed_boot_error() {
    let recovered = RecoveredState::<Cmd> {
        hard_state: HardState {
            term: t(u64::MAX),
            voted_for: None,
        },
        snapshot: None,
        entries: Vec::new(),
    };
    let mut out = Effects::new();
    let booted = Node::boot(
        n(1),
        Membership::from_voters([n(1), n(2)]),
        Config::lab(),
        1,
        recovered,
        None,
        &mut out,
    );
    assert!(matches!(booted, Err(BootError::TermOutOfRange(term)) if term == t(u64::MAX)));
}

/// Boots node 1 from a store holding `stored` as its bootstrap record (the empty snapshot
/// at index 0) and a log with one configuration entry, `changed`, at index 1.
fn boot_over_stored(
    stored: &[u64],
    changed: &[u64],
    given: &[u64],
) -> Result<Node<Follower, Cmd>, BootError> {
    let voters = |ids: &[u64]| Membership::from_voters(ids.iter().copied().map(n));
    let record = Snapshot {
        meta: SnapshotMeta {
            last_included: LogId::default(),
            membership: voters(stored),
        },
        data: Bytes::new(),
    };
    let recovered = RecoveredState::<Cmd> {
        hard_state: HardState {
            term: t(1),
            voted_for: None,
        },
        snapshot: Some(record.meta.clone()),
        entries: vec![Entry {
            index: i(1),
            term: t(1),
            payload: Payload::Membership(Box::new(voters(changed))),
        }],
    };
    let mut out = Effects::new();
    Node::boot(
        n(1),
        voters(given),
        Config::lab(),
        1,
        recovered,
        Some(record.descriptor()),
        &mut out,
    )
}

#[test]
fn a_restart_takes_the_stored_configuration_and_refuses_a_contradicting_argument() {
    // An empty argument: the stored configurations decide.
    let node = boot_over_stored(&[1, 2, 3], &[1, 2, 3, 4], &[]).expect("restart");
    assert_eq!(
        node.shared.configs.effective(),
        &Membership::from_voters([n(1), n(2), n(3), n(4)])
    );
    // The original bootstrap list, or the latest configuration: both are known.
    assert!(boot_over_stored(&[1, 2, 3], &[1, 2, 3, 4], &[1, 2, 3]).is_ok());
    assert!(boot_over_stored(&[1, 2, 3], &[1, 2, 3, 4], &[1, 2, 3, 4]).is_ok());
    // Another cluster's list is refused, naming what storage holds.
    match boot_over_stored(&[1, 2, 3], &[1, 2, 3, 4], &[1, 5, 6]) {
        Err(BootError::MembershipConflict { stored, given }) => {
            assert_eq!(*stored, Membership::from_voters([n(1), n(2), n(3), n(4)]));
            assert_eq!(*given, Membership::from_voters([n(1), n(5), n(6)]));
        }
        other => panic!("expected a membership conflict, got {other:?}"),
    }
}

// ---- Pre-vote (thesis §9.6), check-quorum and stickiness (§6.2, §4.2.3) -------------

fn with_robustness(boot: Boot) -> Boot {
    boot.config(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    })
}

fn at(node: &mut AnyNode<Cmd>, millis: u64) {
    node.advance_clock(Duration::from_millis(millis));
}

fn pre_vote_request(term: u64, candidate: u64, last_log: LogId) -> Input<Cmd> {
    request(Request::PreVote(RequestVote {
        term: t(term),
        candidate: n(candidate),
        last_log,
        transfer: false,
    }))
}

fn pre_vote_reply(effects: &[Effect<Cmd>]) -> VoteReply {
    match the_reply(effects) {
        Response::PreVote(reply) => reply,
        other => panic!("not a pre-vote reply: {other:?}"),
    }
}

#[test]
fn pre_vote_does_not_raise_the_term_or_persist_anything() {
    let node = with_robustness(Boot::new(1, 3).term(4).log(&[2, 4])).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    assert!(node.is_pre_candidate());
    assert_eq!(
        node.term(),
        t(4),
        "the term is raised only by a real election"
    );
    assert!(
        persists(&effects).is_empty(),
        "nothing to persist: {effects:?}"
    );
    let requests = sends(&effects);
    assert_eq!(requests.len(), 2);
    for (_, tag, request) in requests {
        assert_eq!(tag.term, t(4));
        assert_eq!(
            request,
            Request::PreVote(RequestVote {
                term: t(5),
                candidate: n(1),
                last_log: id(4, 2),
                transfer: false,
            })
        );
    }
}

#[test]
fn a_pre_vote_majority_starts_the_real_election_and_a_refusal_majority_ends_it() {
    let node = with_robustness(Boot::new(1, 3).term(4)).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    let tag = sends(&effects)[0].1;
    let granted = Response::PreVote(VoteReply {
        term: t(5),
        granted: true,
    });
    let (node, effects) = step(node, reply_to(2, tag, granted));
    assert!(node.is_candidate(), "2 of 3 would vote: campaign");
    assert_eq!(node.term(), t(5));
    assert!(persists(&effects).contains(&Persist::HardState(HardState {
        term: t(5),
        voted_for: Some(n(1)),
    })));

    let node = with_robustness(Boot::new(1, 3).term(4)).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    let tags: Vec<SendTag> = sends(&effects).iter().map(|s| s.1).collect();
    let refused = Response::PreVote(VoteReply {
        term: t(4),
        granted: false,
    });
    let (node, _) = step(node, reply_to(2, tags[0], refused.clone()));
    assert!(
        node.is_pre_candidate(),
        "one refusal of three decides nothing"
    );
    let (node, effects) = step(node, reply_to(3, tags[1], refused));
    assert!(node.is_follower(), "two refusals: the pre-vote is lost");
    assert_eq!(node.term(), t(4));
    assert!(persists(&effects).is_empty());
}

/// A granted pre-vote carries the term it was asked about, not the voter's. One that
/// arrives after the round ended (lost to refusals, or timed out) must not raise the
/// term: otherwise every lost round pushes the node one term up, the others then refuse
/// its next pre-vote as stale, and the terms climb with no election ever won (found by
/// the lab's `change_while_the_leader_is_cut_off` with LAB_SEED=18351885222288877139).
#[test]
fn a_granted_pre_vote_that_arrives_after_the_round_raises_no_term() {
    let node = with_robustness(Boot::new(1, 5).term(4)).node();
    let (node, effects) = step(node, Input::ElectionTimeout);
    let tags: Vec<SendTag> = sends(&effects).iter().map(|s| s.1).collect();
    let refused = Response::PreVote(VoteReply {
        term: t(4),
        granted: false,
    });
    let (node, _) = step(node, reply_to(2, tags[0], refused.clone()));
    let (node, _) = step(node, reply_to(3, tags[1], refused.clone()));
    let (node, _) = step(node, reply_to(4, tags[2], refused));
    assert!(
        node.is_follower(),
        "three refusals of five: the pre-vote is lost"
    );
    let late = Response::PreVote(VoteReply {
        term: t(5),
        granted: true,
    });
    let (node, effects) = step(node, reply_to(5, tags[3], late));
    assert!(node.is_follower());
    assert_eq!(node.term(), t(4), "a late pre-vote grant raised the term");
    assert!(persists(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_pre_vote_is_granted_only_to_an_up_to_date_log_and_changes_nothing() {
    let voter = || with_robustness(Boot::new(2, 3).term(3).log(&[1, 3, 3])).node();
    let (node, effects) = step(voter(), pre_vote_request(4, 1, id(3, 3)));
    assert_eq!(
        pre_vote_reply(&effects),
        VoteReply {
            term: t(4),
            granted: true
        }
    );
    assert_eq!(node.term(), t(3), "the voter keeps its term");
    assert_eq!(node.hard_state().voted_for, None, "and its vote");
    assert!(persists(&effects).is_empty() && !sets_election_timer(&effects));

    let (_, effects) = step(voter(), pre_vote_request(4, 1, id(3, 2)));
    assert!(!pre_vote_reply(&effects).granted, "a shorter log");
    let (_, effects) = step(voter(), pre_vote_request(4, 1, id(1, 9)));
    assert!(!pre_vote_reply(&effects).granted, "an older last term");
    let (_, effects) = step(voter(), pre_vote_request(3, 1, id(3, 3)));
    assert_eq!(
        pre_vote_reply(&effects),
        VoteReply {
            term: t(3),
            granted: false
        },
        "not a newer term: refused with the voter's own"
    );
}

#[test]
fn a_follower_that_heard_its_leader_recently_refuses_votes_and_pre_votes() {
    let mut node = with_robustness(Boot::new(2, 3).term(3)).node();
    at(&mut node, 1_000);
    let (mut node, _) = step(node, append(3, 1, id(0, 0), vec![], 0));
    at(&mut node, 1_200); // 200 ms later: within election_timeout_min (350 ms)
    let (node, effects) = step(node, pre_vote_request(4, 3, id(3, 5)));
    assert!(
        !pre_vote_reply(&effects).granted,
        "sticky: pre-vote refused"
    );
    let (mut node, effects) = step(node, vote_request(4, 3, id(3, 5)));
    assert!(!vote_granted(&effects), "sticky: vote refused");
    assert_eq!(node.term(), t(3), "and its term not adopted");
    assert!(persists(&effects).is_empty());

    at(&mut node, 1_400); // 400 ms after the leader: no longer sticky
    let (node, effects) = step(node, pre_vote_request(4, 3, id(3, 5)));
    assert!(pre_vote_reply(&effects).granted);
    let (node, effects) = step(node, vote_request(4, 3, id(3, 5)));
    assert!(vote_granted(&effects));
    assert_eq!(node.term(), t(4));
}

#[test]
fn a_server_that_just_started_refuses_votes_for_the_minimum_election_timeout() {
    // It may have acknowledged a leader just before it restarted, and that leader's
    // read lease may still count it: a vote now could elect a second leader within it.
    let mut node = with_robustness(Boot::new(2, 3).term(3).log(&[3])).node();
    at(&mut node, 5_000); // the first time it is told: it started now
    at(&mut node, 5_300); // within election_timeout_min (350 ms)
    let (node, effects) = step(node, pre_vote_request(4, 3, id(3, 5)));
    assert!(!pre_vote_reply(&effects).granted, "pre-vote refused");
    let (mut node, effects) = step(node, vote_request(4, 3, id(3, 5)));
    assert!(!vote_granted(&effects), "vote refused");
    at(&mut node, 5_400);
    let (_, effects) = step(node, vote_request(4, 3, id(3, 5)));
    assert!(vote_granted(&effects), "after the window it votes");
    // Without check-quorum there is no stickiness, and no lease to protect.
    let mut classic = Boot::new(2, 3).term(3).log(&[3]).node();
    at(&mut classic, 5_000);
    let (_, effects) = step(classic, vote_request(4, 3, id(3, 5)));
    assert!(vote_granted(&effects));
}

#[test]
fn a_transfer_vote_bypasses_stickiness() {
    let mut node = with_robustness(Boot::new(2, 3).term(3)).node();
    at(&mut node, 1_000);
    let (mut node, _) = step(node, append(3, 1, id(0, 0), vec![], 0));
    at(&mut node, 1_100);
    let vote = request(Request::Vote(RequestVote {
        term: t(4),
        candidate: n(3),
        last_log: id(3, 5),
        transfer: true,
    }));
    let (node, effects) = step(node, vote);
    assert!(
        vote_granted(&effects),
        "the leader itself asked for the handover"
    );
    assert_eq!(node.term(), t(4));
}

/// Boots node 1 with pre-vote and check-quorum at time 0, and elects it through both
/// rounds with every voter's grant.
fn elect_robust(boot: Boot) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
    let node = with_robustness(boot).node();
    let (mut node, mut effects) = step(node, Input::ElectionTimeout);
    for round in 0..2 {
        let term = node.term().next().0 - round;
        for (to, tag, request) in sends(&effects.clone()) {
            if node.is_leader() || (round == 0 && node.is_candidate()) {
                break;
            }
            let vote = VoteReply {
                term: t(term),
                granted: true,
            };
            let reply = match request {
                Request::PreVote(_) => Response::PreVote(vote),
                _ => Response::Vote(vote),
            };
            let (next, more) = step(node, reply_to(to.0, tag, reply));
            node = next;
            effects = more;
        }
    }
    assert!(node.is_leader(), "elected through pre-vote and vote");
    (node, effects)
}

fn heartbeat_tags(effects: &[Effect<Cmd>]) -> Vec<(u64, SendTag)> {
    sends(effects)
        .into_iter()
        .filter(|(_, _, r)| matches!(r, Request::Append(_)))
        .map(|(to, tag, _)| (to.0, tag))
        .collect()
}

fn reads(effects: &[Effect<Cmd>]) -> Vec<(ReadId, Result<LogIndex, ReadRefused>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Read { id, result } => Some((*id, *result)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_leader_without_contact_with_a_quorum_steps_down_within_two_windows() {
    let (mut leader, _) = elect_robust(Boot::new(1, 3).term(1));
    let term = leader.term();
    // Nothing answers. Heartbeats every 100 ms; the window is election_timeout_min.
    let mut stepped_down_at = None;
    for tick in 1..=10u64 {
        at(&mut leader, tick * 100);
        let (next, _) = step(leader, Input::HeartbeatTimeout);
        leader = next;
        if !leader.is_leader() {
            stepped_down_at = Some(tick * 100);
            break;
        }
    }
    let when = stepped_down_at.expect("a leader cut off from its quorum steps down");
    assert!(when <= 2 * 350 + 100, "stepped down only after {when} ms");
    assert!(leader.is_follower());
    assert_eq!(
        leader.term(),
        term,
        "stepping down for lack of contact keeps the term"
    );
}

#[test]
fn a_leader_that_hears_from_a_majority_keeps_leading() {
    let (mut leader, _) = elect_robust(Boot::new(1, 3).term(1));
    for tick in 1..=30u64 {
        at(&mut leader, tick * 100);
        let (next, effects) = step(leader, Input::HeartbeatTimeout);
        leader = next;
        assert!(leader.is_leader(), "stepped down at {} ms", tick * 100);
        // Only node 2 answers: with the leader, that is a majority of three.
        let term = leader.term().0;
        for (to, tag) in heartbeat_tags(&effects) {
            if to == 2 {
                leader = step(leader, reply_to(2, tag, success(term, 0))).0;
            }
        }
    }
}

#[test]
fn a_read_index_is_refused_before_the_leader_commits_an_entry_of_its_term() {
    let (mut leader, _) = elect_robust(Boot::new(1, 3).term(1).log(&[1]).config(|c| {
        c.leader_noop = false;
    }));
    let mut out = Effects::new();
    leader.read_index(ReadId(7), &mut out);
    assert_eq!(
        reads(&out.take()),
        [(ReadId(7), Err(ReadRefused::NotReady))]
    );
}

#[test]
fn a_follower_read_refused_by_a_leader_not_yet_ready_is_not_ready() {
    // The leader's side: a follower's read before its first commit in its term is
    // refused as not ready, not as "not the leader".
    let (leader, _) = elect_robust(Boot::new(1, 3).term(1).log(&[1]).config(|c| {
        c.leader_noop = false;
    }));
    let term = leader.term();
    let read = request(Request::ReadIndex(ReadIndexRequest { term, from: n(2) }));
    let (_, effects) = step(leader, read);
    assert_eq!(
        the_reply(&effects),
        Response::Index(IndexReply {
            term,
            index: None,
            refusal: Some(ReadIndexRefusal::NotReady),
        })
    );
    // The follower's side: it passes the reason on to its reader.
    let follower = Boot::new(2, 3).term(1).log(&[1]).node();
    let (mut follower, _) = step(follower, append(2, 1, id(1, 1), vec![], 0));
    let mut out = Effects::new();
    follower.read_index(ReadId(3), &mut out);
    let (to, tag, _) = sends(&out.take())
        .into_iter()
        .find(|(_, _, r)| matches!(r, Request::ReadIndex(_)))
        .expect("the follower asks its leader");
    assert_eq!(to, n(1));
    let refused = Response::Index(IndexReply {
        term: t(2),
        index: None,
        refusal: Some(ReadIndexRefusal::NotReady),
    });
    let (follower, effects) = step(follower, reply_to(1, tag, refused));
    assert_eq!(reads(&effects), [(ReadId(3), Err(ReadRefused::NotReady))]);
    // A refusal for not leading still points the reader at the leader it knows.
    let mut follower = follower;
    let mut out = Effects::new();
    follower.read_index(ReadId(4), &mut out);
    let (_, tag, _) = sends(&out.take())[0].clone();
    let refused = Response::Index(IndexReply {
        term: t(2),
        index: None,
        refusal: Some(ReadIndexRefusal::NotLeader),
    });
    let (_, effects) = step(follower, reply_to(1, tag, refused));
    assert_eq!(
        reads(&effects),
        [(
            ReadId(4),
            Err(ReadRefused::NotLeader {
                leader_hint: Some(n(1))
            })
        )]
    );
}

#[test]
fn a_read_index_is_answered_once_a_majority_confirms_the_leadership() {
    let (mut leader, effects) =
        elect_robust(Boot::new(1, 3).term(1).config(|c| c.leader_noop = true));
    // Commit the leader's blank entry (index 1, term 2).
    let term = leader.term().0;
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    for (to, tag) in heartbeat_tags(&effects) {
        leader = step(leader, reply_to(to, tag, success(term, 1))).0;
    }
    assert_eq!(leader.commit_index(), i(1));

    // A heartbeat goes out before the read and is answered only after it.
    at(&mut leader, 100);
    let (mut leader, before) = step(leader, Input::HeartbeatTimeout);
    let before = heartbeat_tags(&before);

    let mut out = Effects::new();
    leader.read_index(ReadId(1), &mut out);
    leader.start_read_round(&mut out);
    let effects = out.take();
    assert!(
        reads(&effects).is_empty(),
        "no answer before a round of heartbeats"
    );
    let round = heartbeat_tags(&effects);
    assert_eq!(round.len(), 2, "one heartbeat to each follower, at once");

    let (leader, effects) = step(leader, reply_to(before[0].0, before[0].1, success(term, 1)));
    assert!(
        reads(&effects).is_empty(),
        "an answer to a request sent before the read confirms nothing"
    );
    let (to, tag) = round[0];
    let (leader, effects) = step(leader, reply_to(to, tag, success(term, 1)));
    assert_eq!(
        reads(&effects),
        [(ReadId(1), Ok(i(1)))],
        "leader + one follower"
    );
    assert!(leader.is_leader());
}

#[test]
fn reads_that_arrive_together_share_a_round_and_rounds_overlap_up_to_the_limit() {
    let (mut leader, effects) =
        elect_robust(Boot::new(1, 3).term(1).config(|c| c.leader_noop = true));
    let term = leader.term().0;
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    for (to, tag) in heartbeat_tags(&effects) {
        leader = step(leader, reply_to(to, tag, success(term, 1))).0;
    }
    // A batch of three reads: one round, one heartbeat per follower.
    let mut out = Effects::new();
    for read in 1..=3 {
        leader.read_index(ReadId(read), &mut out);
    }
    leader.start_read_round(&mut out);
    let first = heartbeat_tags(&out.take());
    assert_eq!(first.len(), 2, "one round for the batch");
    leader.start_read_round(&mut out);
    assert!(
        heartbeat_tags(&out.take()).is_empty(),
        "no read waits for a round: none starts"
    );
    // Reads arriving while it is in flight get rounds of their own at once, up to the
    // limit; after that they wait.
    let mut rounds = vec![first];
    for read in 4..(4 + MAX_READ_ROUNDS as u64) {
        leader.read_index(ReadId(read), &mut out);
        leader.start_read_round(&mut out);
        let round = heartbeat_tags(&out.take());
        if rounds.len() < MAX_READ_ROUNDS {
            assert_eq!(round.len(), 2, "an overlapping round for read {read}");
            rounds.push(round);
        } else {
            assert!(
                round.is_empty(),
                "{MAX_READ_ROUNDS} rounds in flight: read {read} waits"
            );
        }
    }
    // The first round's answer confirms the batch, and lets the waiting read's round go.
    let (to, tag) = rounds[0][0];
    let (leader, effects) = step(leader, reply_to(to, tag, success(term, 1)));
    assert_eq!(
        reads(&effects),
        [
            (ReadId(1), Ok(i(1))),
            (ReadId(2), Ok(i(1))),
            (ReadId(3), Ok(i(1)))
        ]
    );
    assert_eq!(
        heartbeat_tags(&effects).len(),
        2,
        "the held-back read's round"
    );
    // An answer to the newest round confirms every read before it.
    let (to, tag) = rounds[MAX_READ_ROUNDS - 1][0];
    let (_, effects) = step(leader, reply_to(to, tag, success(term, 1)));
    let answered: Vec<ReadId> = reads(&effects).into_iter().map(|(id, _)| id).collect();
    let expected: Vec<ReadId> = (4..3 + MAX_READ_ROUNDS as u64).map(ReadId).collect();
    assert_eq!(
        answered, expected,
        "all but the read whose round is still out"
    );
}

#[test]
fn a_leader_stepping_down_fails_its_waiting_reads() {
    let (mut leader, effects) =
        elect_robust(Boot::new(1, 3).term(1).config(|c| c.leader_noop = true));
    let term = leader.term().0;
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    for (to, tag) in heartbeat_tags(&effects) {
        leader = step(leader, reply_to(to, tag, success(term, 1))).0;
    }
    let mut out = Effects::new();
    leader.read_index(ReadId(4), &mut out);
    let vote = request(Request::Vote(RequestVote {
        term: t(term + 1),
        candidate: n(2),
        last_log: id(term, 1),
        transfer: true,
    }));
    let (node, effects) = step(leader, vote);
    assert!(node.is_follower());
    assert_eq!(
        reads(&effects),
        [(ReadId(4), Err(ReadRefused::NotLeader { leader_hint: None }))]
    );
}

#[test]
fn a_transfer_catches_a_lagging_target_up_before_timeout_now() {
    let (mut leader, effects) =
        elect_robust(Boot::new(1, 3).term(1).config(|c| c.leader_noop = true));
    let term = leader.term().0;
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    let first = heartbeat_tags(&effects);
    // Node 2 confirms the blank entry; node 3 has not answered yet.
    for &(to, tag) in &first {
        if to == 2 {
            leader = step(leader, reply_to(2, tag, success(term, 1))).0;
        }
    }
    let mut out = Effects::new();
    leader.propose(42, &mut out).expect("leader");
    leader
        .transfer_leadership(n(3), &mut out)
        .expect("3 is a voter");
    let timeouts = |effects: &[Effect<Cmd>]| {
        sends(effects)
            .into_iter()
            .filter(|(_, _, r)| matches!(r, Request::TimeoutNow(_)))
            .map(|(to, _, _)| to)
            .collect::<Vec<_>>()
    };
    assert!(
        timeouts(&out.take()).is_empty(),
        "node 3 lacks entries: no TimeoutNow yet"
    );
    let mut out = Effects::new();
    assert_eq!(
        leader.propose(43, &mut out),
        Err(ProposeRefused::TransferInProgress { to: n(3) })
    );
    // Node 3 answers the first request (up to 1): it is sent the rest, not TimeoutNow.
    let (_, tag) = first
        .iter()
        .copied()
        .find(|(to, _)| *to == 3)
        .expect("sent to 3");
    let (leader, effects) = step(leader, reply_to(3, tag, success(term, 1)));
    assert!(timeouts(&effects).is_empty());
    let (_, tag, _) = sends(&effects)
        .into_iter()
        .find(|(to, _, r)| *to == n(3) && matches!(r, Request::Append(a) if !a.entries.is_empty()))
        .expect("the missing entry goes to node 3");
    let (_leader, effects) = step(leader, reply_to(3, tag, success(term, 2)));
    assert_eq!(timeouts(&effects), [n(3)], "caught up: TimeoutNow");
}

#[test]
fn timeout_now_from_the_leader_starts_an_election_at_once() {
    let mut node = with_robustness(Boot::new(2, 3).term(3)).node();
    at(&mut node, 10);
    let (node, _) = step(node, append(3, 1, id(0, 0), vec![], 0));
    let timeout = request(Request::TimeoutNow(TimeoutNow {
        term: t(3),
        leader: n(1),
    }));
    let (node, effects) = step(node, timeout);
    assert!(node.is_candidate(), "no pre-vote round for a handover");
    assert_eq!(node.term(), t(4));
    let votes: Vec<_> = sends(&effects)
        .into_iter()
        .filter_map(|(_, _, r)| match r {
            Request::Vote(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(votes.len(), 2);
    assert!(
        votes.iter().all(|v| v.transfer),
        "the votes say it is a handover"
    );
}

// ---- Membership changes (thesis ch. 4) ---------------------------------------------

fn voters_of(ids: &[u64]) -> Membership {
    Membership::from_voters(ids.iter().map(|&id| n(id)))
}

/// A leader of term 2 over `members` voters with its blank entry committed (index 1).
fn committed_leader(members: u64) -> AnyNode<Cmd> {
    let (mut leader, effects) = elect(
        Boot::new(1, members)
            .term(1)
            .config(|c| c.leader_noop = true),
    );
    let term = leader.term().0;
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    for (to, tag) in heartbeat_tags(&effects) {
        leader = step(leader, reply_to(to, tag, success(term, 1))).0;
    }
    assert_eq!(leader.commit_index(), i(1));
    leader
}

/// Acknowledges everything the leader sent in `effects`, from every follower in `from`.
fn ack_all(
    mut leader: AnyNode<Cmd>,
    effects: &[Effect<Cmd>],
    from: &[u64],
) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
    let term = leader.term().0;
    let mut last = Vec::new();
    for (to, tag, request) in sends(effects) {
        if let Request::Append(append) = request
            && from.contains(&to.0)
        {
            let matched = append.prev_log.index.0 + append.entries.len() as u64;
            let (next, more) = step(leader, reply_to(to.0, tag, success(term, matched)));
            leader = next;
            last.extend(more);
        }
    }
    (leader, last)
}

fn persisted_all(leader: AnyNode<Cmd>) -> AnyNode<Cmd> {
    let last = leader.log().last_log_id();
    step(leader, Input::Persisted { up_to: last }).0
}

#[test]
fn a_configuration_takes_effect_on_a_follower_when_appended_and_reverts_on_truncation() {
    let node = Boot::new(1, 3).term(1).node();
    let config = Entry {
        term: t(1),
        index: i(1),
        payload: Payload::Membership(Box::new(voters_of(&[1, 2, 3, 4, 5]))),
    };
    let (node, _) = step(node, append(1, 2, id(0, 0), vec![config], 0));
    assert_eq!(
        node.membership(),
        &voters_of(&[1, 2, 3, 4, 5]),
        "in effect once appended"
    );
    assert_eq!(node.committed_membership(), &voters_of(&[1, 2, 3]));
    // Campaigning now needs three of five.
    let (node, effects) = step(node, Input::ElectionTimeout);
    assert_eq!(sends(&effects).len(), 4, "asks the four other voters");
    let tag = sends(&effects)[0].1;
    let grant = Response::Vote(VoteReply {
        term: t(2),
        granted: true,
    });
    let (node, _) = step(node, reply_to(2, tag, grant));
    assert!(node.is_candidate(), "two of five is no majority");
    // A leader of term 3 replaces the entry: the configuration is undone.
    let (node, _) = step(node, append(3, 2, id(0, 0), log_of(&[3]), 0));
    assert_eq!(
        node.membership(),
        &voters_of(&[1, 2, 3]),
        "reverted with its entry"
    );
}

#[test]
fn learners_are_replicated_to_but_never_counted_and_never_campaign() {
    let learner = Boot::new(4, 0).node();
    let (learner, effects) = step(learner, Input::ElectionTimeout);
    assert!(
        learner.is_follower(),
        "a node outside the voters never campaigns"
    );
    assert!(sends(&effects).is_empty());

    let leader = committed_leader(3);
    let mut out = Effects::new();
    let mut leader = leader;
    let target = voters_of(&[1, 2, 3]).with_learner(n(4), "");
    leader
        .change_membership(target, &mut out)
        .expect("adding a learner");
    let effects = out.take();
    assert!(
        sends(&effects).iter().any(|(to, _, _)| *to == n(4)),
        "replicated to the learner"
    );
    let leader = persisted_all(leader);
    // Only the learner acknowledges: no majority of voters, no commit.
    let (leader, _) = ack_all(leader, &effects, &[4]);
    assert_eq!(
        leader.commit_index(),
        i(1),
        "a learner's copy is not counted"
    );
    let (leader, _) = ack_all(leader, &effects, &[2]);
    assert_eq!(leader.commit_index(), i(2));
}

#[test]
fn no_change_before_an_entry_of_the_term_commits_and_one_change_at_a_time() {
    let (mut leader, _) = elect(Boot::new(1, 3).term(1).config(|c| c.leader_noop = true));
    let mut out = Effects::new();
    assert_eq!(
        leader.change_membership(voters_of(&[1, 2]), &mut out),
        Err(MembershipRefused::NotReady)
    );
    let mut leader = committed_leader(3);
    leader
        .change_membership(voters_of(&[1, 2]), &mut out)
        .expect("a single-server change");
    assert_eq!(
        leader.change_membership(voters_of(&[1, 2, 3]), &mut out),
        Err(MembershipRefused::ChangeInProgress)
    );
    assert_eq!(
        leader.change_membership(Membership::default(), &mut out),
        Err(MembershipRefused::Invalid(
            raft_traits::MembershipError::NoVoters
        ))
    );
}

#[test]
fn a_larger_change_goes_through_the_joint_configuration_and_ends_by_itself() {
    let mut leader = committed_leader(3);
    // {1,2,3} -> {1,4,5}: two voters change. 4 and 5 are learners that caught up.
    let mut out = Effects::new();
    let with_learners = voters_of(&[1, 2, 3])
        .with_learner(n(4), "")
        .with_learner(n(5), "");
    leader.change_membership(with_learners, &mut out).unwrap();
    let effects = out.take();
    let leader = persisted_all(leader);
    let (mut leader, _) = ack_all(leader, &effects, &[2, 3, 4, 5]);
    assert_eq!(leader.commit_index(), i(2));

    let target = voters_of(&[1, 4, 5]);
    let mut out = Effects::new();
    leader.change_membership(target.clone(), &mut out).unwrap();
    let effects = out.take();
    let joint = leader.membership().clone();
    assert_eq!(joint.outgoing, Some([n(1), n(2), n(3)].into()));
    assert_eq!(joint.voters, target.voters);
    let leader = persisted_all(leader);
    // The new voters alone cannot commit the joint entry: the old majority must too.
    let (leader, _) = ack_all(leader, &effects, &[4, 5]);
    assert_eq!(leader.commit_index(), i(2), "joint needs both majorities");
    let (leader, more) = ack_all(leader, &effects, &[2]);
    assert_eq!(leader.commit_index(), i(3), "both majorities: committed");
    // Committing the joint entry made the leader append the final configuration.
    assert_eq!(leader.membership(), &target);
    assert_eq!(leader.log().last_index(), i(4));
    let leader = persisted_all(leader);
    let (leader, _) = ack_all(leader, &more, &[4]);
    assert_eq!(leader.commit_index(), i(4));
    assert_eq!(leader.committed_membership(), &target);
    assert!(leader.is_leader(), "the leader is in the new configuration");
}

#[test]
fn a_leader_removing_itself_leads_until_the_change_commits_then_steps_down() {
    let mut leader = committed_leader(3);
    let mut out = Effects::new();
    leader
        .change_membership(voters_of(&[2, 3]), &mut out)
        .unwrap();
    let effects = out.take();
    let leader = persisted_all(leader);
    // Its own durable copy no longer counts: one follower is not a majority of {2, 3}.
    let (leader, _) = ack_all(leader, &effects, &[2]);
    assert!(leader.is_leader(), "leads until the change commits");
    assert_eq!(leader.commit_index(), i(1), "does not count itself");
    let (node, _) = ack_all(leader, &effects, &[3]);
    assert!(node.is_follower(), "steps down once its removal committed");
    assert_eq!(node.commit_index(), i(2));
    let (node, effects) = step(node, Input::ElectionTimeout);
    assert!(
        node.is_follower() && sends(&effects).is_empty(),
        "and never campaigns"
    );
}

#[test]
fn a_learner_is_promoted_only_once_it_has_caught_up() {
    let mut leader = committed_leader(3);
    let mut out = Effects::new();
    leader.add_voter(n(4), String::new(), &mut out).unwrap();
    let effects = out.take();
    assert!(
        leader.membership().learners.contains(&n(4)),
        "joins as a learner"
    );
    let leader = persisted_all(leader);
    let (leader, more) = ack_all(leader, &effects, &[2, 3]);
    assert_eq!(leader.commit_index(), i(2));
    assert!(
        !leader.membership().is_voter(n(4)),
        "not caught up: still a learner"
    );
    // The learner catches up to the commit index: promoted.
    let mut all = effects.clone();
    all.extend(more);
    let (leader, _) = ack_all(leader, &all, &[4]);
    assert!(leader.membership().is_voter(n(4)), "caught up: promoted");
    assert!(leader.membership().learners.is_empty());
}

#[test]
fn a_leadership_transfer_ends_the_lease() {
    let (mut leader, effects) = elect_robust(Boot::new(1, 3).term(1).config(|c| {
        c.leader_noop = true;
        c.lease_reads = true;
    }));
    let term = leader.term().0;
    assert_eq!(
        leader.read_lease(),
        None,
        "no lease before the leader's first entry commits"
    );
    let mut out = Effects::new();
    leader = leader.step(Input::Persisted { up_to: id(term, 1) }, &mut out);
    for (to, tag) in heartbeat_tags(&effects) {
        leader = step(leader, reply_to(to, tag, success(term, 1))).0;
    }
    let lease = leader
        .read_lease()
        .expect("a majority acknowledged: a lease");
    assert_eq!(lease.index, i(1), "the lease gives the commit index");
    assert!(lease.until > Duration::ZERO);
    let mut out = Effects::new();
    leader.read_index(ReadId(1), &mut out);
    assert_eq!(
        reads(&out.take()),
        [(ReadId(1), Ok(i(1)))],
        "served under the lease"
    );
    leader
        .transfer_leadership(n(2), &mut out)
        .expect("2 is a voter");
    out.take();
    assert_eq!(leader.read_lease(), None, "a handover ends the lease");
    leader.read_index(ReadId(2), &mut out);
    assert!(
        reads(&out.take()).is_empty(),
        "during a handover a read waits for a round of heartbeats"
    );
}

mod chunks;
