//! Snapshots in pieces (Figure 13: offset, data, done): the follower's rules for each
//! piece and the leader's flow control and resumption.

use raft_traits::{PendingSnapshot, SnapshotChecksum, SnapshotDescriptor};

use super::*;

/// A snapshot at 10 (term 1) of `len` bytes that differ from place to place.
fn big(len: usize) -> Snapshot {
    let mut snapshot = snapshot(10, 1);
    snapshot.data = (0..len)
        .map(|k| (k * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    snapshot
}

/// The piece of `snapshot` at `offset`, `len` bytes long, as its leader (node 2, term 2)
/// sends it, checksums included.
fn piece(snapshot: &Snapshot, offset: usize, len: usize) -> Input<Cmd> {
    let end = offset + len;
    let mut request = InstallSnapshot::whole(t(2), n(2), snapshot.clone());
    request.offset = offset as u64;
    request.data = snapshot.data.slice(offset..end);
    request.done = end == snapshot.data.len();
    request.checksum = request.computed_checksum();
    request_of(request)
}

fn request_of(install: InstallSnapshot) -> Input<Cmd> {
    request(Request::InstallSnapshot(Box::new(install)))
}

/// A follower of term 2 with entries 1..=3, none committed.
fn follower() -> AnyNode<Cmd> {
    Boot::new(1, 3).term(2).log(&[1, 1, 2]).node()
}

fn received(offset: u64) -> InstallOutcome {
    InstallOutcome::Received { offset }
}

fn refused_with(effects: &[Effect<Cmd>]) -> Option<RequestRefused> {
    effects.iter().find_map(|e| match e {
        Effect::Refuse { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

#[test]
fn a_piece_at_the_expected_offset_is_written_before_the_reply_with_the_new_offset() {
    let snap = big(30);
    let (node, effects) = step(follower(), piece(&snap, 0, 10));
    assert_eq!(installed(&effects), received(10));
    assert_eq!(
        persists(&effects),
        [
            Persist::BeginSnapshot(Box::new(snap.descriptor())),
            Persist::SnapshotChunk {
                offset: 0,
                data: snap.data.slice(0..10)
            }
        ]
    );
    let written = position(&effects, |e| {
        matches!(e, Effect::Persist(Persist::SnapshotChunk { .. }))
    });
    let replied = position(&effects, |e| matches!(e, Effect::Reply { .. }));
    assert!(written < replied, "replied before the piece was durable");
    let (_, effects) = step(node, piece(&snap, 10, 10));
    assert_eq!(installed(&effects), received(20));
    assert_eq!(
        persists(&effects),
        [Persist::SnapshotChunk {
            offset: 10,
            data: snap.data.slice(10..20)
        }],
        "the second piece continues the same pending snapshot"
    );
}

#[test]
fn duplicated_reordered_and_gapped_pieces_write_nothing_and_get_the_offset_held() {
    let snap = big(40);
    let (node, _) = step(follower(), piece(&snap, 0, 10));
    let (node, _) = step(node, piece(&snap, 10, 10));
    // A duplicate, one overtaken by a later one, one after a gap.
    for (offset, len) in [(0, 10), (10, 10), (5, 10), (30, 10)] {
        let (_, effects) = step(
            // Every case starts from the same state: 20 bytes held.
            {
                let (again, _) = step(follower(), piece(&snap, 0, 10));
                step(again, piece(&snap, 10, 10)).0
            },
            piece(&snap, offset, len),
        );
        assert_eq!(installed(&effects), received(20), "piece at {offset}");
        assert!(
            persists(&effects).is_empty(),
            "piece at {offset} wrote {:?}",
            persists(&effects)
        );
    }
    let (node, effects) = step(node, piece(&snap, 20, 10));
    assert_eq!(installed(&effects), received(30));
    assert_eq!(node.log().last_included(), LogId::default());
}

#[test]
fn a_piece_of_a_snapshot_not_held_starts_nothing_unless_it_is_the_first() {
    let snap = big(30);
    let (node, effects) = step(follower(), piece(&snap, 10, 10));
    assert_eq!(installed(&effects), received(0));
    assert!(persists(&effects).is_empty());
    let (node, _) = step(node, piece(&snap, 0, 10));
    // A newer snapshot (another descriptor) replaces the pending one at its first piece.
    let mut newer = big(25);
    newer.meta.last_included = id(2, 12);
    let (_, effects) = step(node, piece(&newer, 0, 5));
    assert_eq!(installed(&effects), received(5));
    assert_eq!(
        persists(&effects)[0],
        Persist::BeginSnapshot(Box::new(newer.descriptor()))
    );
}

#[test]
fn the_last_piece_installs_after_finishing_and_before_the_reply() {
    let snap = big(25);
    let (node, _) = step(follower(), piece(&snap, 0, 10));
    let (node, _) = step(node, piece(&snap, 10, 10));
    let (node, effects) = step(node, piece(&snap, 20, 5));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(10) }
    );
    let chunk = position(&effects, |e| {
        matches!(
            e,
            Effect::Persist(Persist::SnapshotChunk { offset: 20, .. })
        )
    });
    let finish = position(&effects, |e| {
        matches!(e, Effect::Persist(Persist::FinishSnapshot))
    });
    let apply = position(
        &effects,
        |e| matches!(e, Effect::Apply(Apply::Snapshot(d)) if **d == snap.descriptor()),
    );
    let reply = position(&effects, |e| matches!(e, Effect::Reply { .. }));
    assert!(
        chunk < finish && finish < apply && apply < reply,
        "{effects:#?}"
    );
    assert_eq!(node.log().last_included(), id(1, 10));
    assert_eq!(node.last_applied(), i(10));
}

#[test]
fn data_that_fails_the_snapshot_checksum_is_discarded_and_refused() {
    let mut snap = big(20);
    // Pieces that are intact on the wire, of data that is not the snapshot's.
    let mut descriptor = snap.descriptor();
    descriptor.checksum ^= 1;
    let piece_of = |offset: usize, len: usize, snap: &Snapshot| {
        let mut request = InstallSnapshot::whole(t(2), n(2), snap.clone());
        request.snapshot = descriptor.clone();
        request.offset = offset as u64;
        request.data = snap.data.slice(offset..offset + len);
        request.done = offset + len == 20;
        request.checksum = request.computed_checksum();
        request_of(request)
    };
    let (node, _) = step(follower(), piece_of(0, 10, &snap));
    let (node, effects) = step(node, piece_of(10, 10, &snap));
    assert_eq!(
        refused_with(&effects),
        Some(RequestRefused::SnapshotChecksum {
            carried: descriptor.checksum,
            computed: snap.checksum(),
        })
    );
    assert!(persists(&effects).contains(&Persist::AbortSnapshot));
    assert!(!persists(&effects).contains(&Persist::FinishSnapshot));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Apply(_))));
    assert_eq!(node.log().last_included(), LogId::default());
    assert_eq!(node.log().last_index(), i(3), "the log is kept");
    // Nothing of it is held any more: the next first piece starts over.
    snap.meta.last_included = id(1, 10);
    let (_, effects) = step(node, piece_of(0, 10, &snap));
    assert!(persists(&effects).contains(&Persist::BeginSnapshot(Box::new(descriptor.clone()))));
}

#[test]
fn a_damaged_or_misplaced_piece_is_refused_before_anything_is_written() {
    let snap = big(20);
    let (node, _) = step(follower(), piece(&snap, 0, 10));
    // Damaged on the way.
    let Input::Request {
        request: Request::InstallSnapshot(mut damaged),
        ..
    } = piece(&snap, 10, 10)
    else {
        unreachable!()
    };
    damaged.data = Bytes::from(vec![0u8; 10]);
    let (node, effects) = step(node, request_of(*damaged));
    assert!(matches!(
        refused_with(&effects),
        Some(RequestRefused::SnapshotChecksum { .. })
    ));
    assert!(persists(&effects).is_empty());
    // Running past the size, and claiming to end where it does not.
    for (offset, len, done) in [(15u64, 10usize, true), (10, 5, true), (10, 10, false)] {
        let mut request = InstallSnapshot::whole(t(2), n(2), snap.clone());
        request.offset = offset;
        request.data = Bytes::from(vec![1u8; len]);
        request.done = done;
        request.checksum = request.computed_checksum();
        let (_, effects) = step(
            {
                let (again, _) = step(follower(), piece(&snap, 0, 10));
                again
            },
            request_of(request),
        );
        assert_eq!(
            refused_with(&effects),
            Some(RequestRefused::SnapshotChunk {
                offset,
                len: len as u64,
                size: 20,
                done
            })
        );
        assert!(persists(&effects).is_empty());
    }
    let (_, effects) = step(node, piece(&snap, 10, 10));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(10) }
    );
}

#[test]
fn a_restarted_follower_resumes_from_what_storage_holds() {
    let snap = big(30);
    let mut checksum = SnapshotChecksum::new(snap.meta.last_included);
    checksum.update(&snap.data[..20]);
    let pending = PendingSnapshot {
        descriptor: snap.descriptor(),
        written: 20,
        checksum: checksum.value(),
    };
    let AnyNode::Follower(mut node) = follower() else {
        unreachable!()
    };
    let mut out = Effects::new();
    node.resume_receiving(pending.clone(), &mut out);
    assert!(out.is_empty(), "{:?}", out.as_slice());
    // A leader that knows nothing of it starts at 0 and is told 20.
    let (node, effects) = step(node.into(), piece(&snap, 0, 10));
    assert_eq!(installed(&effects), received(20));
    assert!(persists(&effects).is_empty());
    let (node, effects) = step(node, piece(&snap, 20, 10));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(10) }
    );
    assert_eq!(node.last_applied(), i(10));

    // A pending snapshot that everything committed already covers is discarded.
    let (node, _) = step(follower(), append(2, 2, id(2, 3), log_of(&[]), 3));
    let node = step(
        node,
        append(
            2,
            2,
            id(2, 3),
            vec![
                entry(4, 2),
                entry(5, 2),
                entry(6, 2),
                entry(7, 2),
                entry(8, 2),
                entry(9, 2),
                entry(10, 2),
                entry(11, 2),
            ],
            11,
        ),
    )
    .0;
    let AnyNode::Follower(mut node) = node else {
        unreachable!()
    };
    let mut out = Effects::new();
    node.resume_receiving(pending, &mut out);
    assert_eq!(persists(out.as_slice()), [Persist::AbortSnapshot]);
}

#[test]
fn a_snapshot_covered_by_the_commit_index_discards_the_pending_one() {
    let snap = big(30);
    let (node, _) = step(follower(), piece(&snap, 0, 10));
    let entries = (4..=12).map(|index| entry(index, 2)).collect();
    let (node, _) = step(node, append(2, 2, id(2, 3), entries, 12));
    let (_, effects) = step(node, piece(&snap, 10, 10));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(12) }
    );
    assert_eq!(persists(&effects), [Persist::AbortSnapshot]);
}

/// A leader of term 2 holding `snapshot` (at 10), whose follower 2 has just said it ends
/// at 3: the first piece to it is in flight. Pieces of 10 bytes, two in flight.
fn leader_sending(snapshot: Snapshot) -> (AnyNode<Cmd>, Vec<Effect<Cmd>>) {
    let mut boot = Boot::new(1, 3).term(1).config(|c| {
        c.snapshot_chunk_size = 10;
        c.snapshot_chunks_in_flight = 2;
    });
    boot.snapshot = Some(snapshot);
    let (leader, effects) = elect(boot);
    let (tag, _) = appends_to(&effects, 2)[0].clone();
    step(leader, reply_to(2, tag, behind_the_snapshot()))
}

/// A snapshot piece sent: tag, offset, length, done.
type Piece = (SendTag, u64, u64, bool);

/// The snapshot pieces sent to peer 2.
fn pieces(effects: &[Effect<Cmd>]) -> Vec<Piece> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendSnapshot {
                to,
                tag,
                request,
                len,
            } if *to == n(2) => Some((*tag, request.offset, *len, request.done)),
            _ => None,
        })
        .collect()
}

/// The (offset, length) of each piece sent.
fn spans(effects: &[Effect<Cmd>]) -> Vec<(u64, u64)> {
    pieces(effects).iter().map(|p| (p.1, p.2)).collect()
}

fn install_reply(outcome: InstallOutcome) -> Response {
    Response::InstallSnapshot(InstallSnapshotReply {
        term: t(2),
        outcome,
    })
}

#[test]
fn the_leader_sends_one_piece_then_pipelines_up_to_the_window() {
    let snap = big(45);
    let (leader, effects) = leader_sending(snap.clone());
    let first = pieces(&effects);
    assert_eq!(
        first.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>(),
        [(0, 10, false)],
        "one piece while the follower's offset is unknown"
    );
    // Every piece names the snapshot without its data (the driver reads it).
    let descriptors: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::SendSnapshot { request, .. } => Some(request.snapshot.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(descriptors, [snap.descriptor()]);
    let (leader, effects) = step(leader, reply_to(2, first[0].0, install_reply(received(10))));
    let window = pieces(&effects);
    assert_eq!(
        window.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>(),
        [(10, 10, false), (20, 10, false)],
        "two in flight"
    );
    let (leader, effects) = step(
        leader,
        reply_to(2, window[0].0, install_reply(received(20))),
    );
    let more = pieces(&effects);
    assert_eq!(
        more.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>(),
        [(30, 10, false)]
    );
    let (leader, effects) = step(
        leader,
        reply_to(2, window[1].0, install_reply(received(30))),
    );
    let last = pieces(&effects);
    assert_eq!(
        last.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>(),
        [(40, 5, true)]
    );
    let (leader, effects) = step(leader, reply_to(2, more[0].0, install_reply(received(40))));
    assert!(pieces(&effects).is_empty(), "the final piece is in flight");
    let (leader, _) = step(
        leader,
        reply_to(
            2,
            last[0].0,
            install_reply(InstallOutcome::Installed { match_index: i(10) }),
        ),
    );
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    let progress = l.role().progress(n(2)).expect("peer");
    assert_eq!(progress.mode(), ReplicationMode::Replicate);
    assert_eq!(progress.next_index(), i(11));
}

#[test]
fn the_leader_resumes_from_the_offset_the_follower_holds() {
    let snap = big(60);
    let (leader, effects) = leader_sending(snap);
    let first = pieces(&effects);
    // A follower that already holds 40 bytes (from an earlier leader or before a
    // restart) did not take the piece at 0: the leader goes on from 40.
    let (_, effects) = step(leader, reply_to(2, first[0].0, install_reply(received(40))));
    assert_eq!(
        pieces(&effects)
            .iter()
            .map(|p| (p.1, p.2, p.3))
            .collect::<Vec<_>>(),
        [(40, 10, false), (50, 10, true)]
    );
}

/// [`leader_sending`] a 60-byte snapshot, once the follower has confirmed 10 and then
/// 20: the pieces at 10 and 20 went out as a window, the answer to the one at 10 sent the
/// piece at 30. Returns the leader, the window and the piece at 30.
fn leader_with_follower_at_20() -> (AnyNode<Cmd>, Vec<Piece>, Vec<Piece>) {
    let (leader, effects) = leader_sending(big(60));
    let first = pieces(&effects);
    let (leader, effects) = step(leader, reply_to(2, first[0].0, install_reply(received(10))));
    let window = pieces(&effects);
    let (leader, effects) = step(
        leader,
        reply_to(2, window[0].0, install_reply(received(20))),
    );
    let next = pieces(&effects);
    assert_eq!(
        next.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(),
        [(30, 10)]
    );
    (leader, window, next)
}

#[test]
fn a_lost_piece_is_resent_from_the_follower_s_offset_without_resending_what_it_holds() {
    let (leader, window, next) = leader_with_follower_at_20();
    // The piece at 20 is lost; the one at 30 reaches a follower that holds 20.
    let (leader, effects) = step(
        leader,
        Input::SendFailed {
            to: n(2),
            tag: window[1].0,
            rpc: RpcKind::InstallSnapshot,
        },
    );
    assert!(
        pieces(&effects).is_empty(),
        "no resend at once after a failure"
    );
    // The follower's next answer (to the piece at 30, which it did not take) makes the
    // leader ask again from what the follower confirmed: one piece, at 20.
    let (_, effects) = step(leader, reply_to(2, next[0].0, install_reply(received(20))));
    assert_eq!(
        spans(&effects),
        [(20, 10)],
        "resent from the confirmed offset, one piece"
    );
}

#[test]
fn a_follower_that_went_back_is_sent_the_snapshot_from_its_new_offset() {
    let (leader, window, after) = leader_with_follower_at_20();
    // A late piece of an older snapshot made the follower begin that one: it holds
    // nothing of this one and answers 0 to pieces sent after it had confirmed 10 and 20.
    // That is not an old answer overtaken by newer ones: start again from 0 (answering
    // the piece at 20 again and again, at once each time, otherwise).
    let (leader, effects) = step(leader, reply_to(2, window[1].0, install_reply(received(0))));
    assert_eq!(
        spans(&effects),
        [(0, 10), (10, 10)],
        "from the top, a window"
    );
    // The answer to the piece at 30, sent before the rewind, changes nothing now.
    let (_, effects) = step(leader, reply_to(2, after[0].0, install_reply(received(0))));
    assert!(pieces(&effects).is_empty(), "{:?}", spans(&effects));
}

#[test]
fn after_a_failure_with_nothing_in_flight_the_next_heartbeat_resumes() {
    let snap = big(60);
    let (leader, effects) = leader_sending(snap);
    let first = pieces(&effects);
    let (leader, effects) = step(leader, reply_to(2, first[0].0, install_reply(received(10))));
    let window = pieces(&effects);
    let mut leader = leader;
    for (tag, ..) in &window {
        let failed = Input::SendFailed {
            to: n(2),
            tag: *tag,
            rpc: RpcKind::InstallSnapshot,
        };
        let (next, effects) = step(leader, failed);
        leader = next;
        assert!(
            pieces(&effects).is_empty(),
            "no resend at once after a failure"
        );
    }
    let (_, effects) = step(leader, Input::HeartbeatTimeout);
    assert_eq!(
        spans(&effects),
        [(10, 10)],
        "resumed at the next heartbeat from the confirmed offset"
    );
}

#[test]
fn pieces_without_an_answer_are_asked_again_after_the_timeout() {
    let snap = big(60);
    let (mut leader, effects) = leader_sending(snap);
    let first = pieces(&effects);
    let (next, effects) = step(leader, reply_to(2, first[0].0, install_reply(received(10))));
    leader = next;
    assert_eq!(pieces(&effects).len(), 2);
    let AnyNode::Leader(l) = &leader else {
        panic!()
    };
    let resend_after = l.config().install_snapshot_heartbeats();
    // Heartbeats while the pieces are in flight only keep the follower's timer.
    for _ in 1..resend_after {
        let (next, effects) = step(leader, Input::HeartbeatTimeout);
        leader = next;
        assert!(pieces(&effects).is_empty());
    }
    let (_, effects) = step(leader, Input::HeartbeatTimeout);
    assert_eq!(
        spans(&effects),
        [(10, 10)],
        "asked again from the confirmed offset"
    );
}

#[test]
fn an_empty_snapshot_is_one_piece_that_is_also_the_last() {
    let snap = big(0);
    let (leader, effects) = leader_sending(snap.clone());
    let first = pieces(&effects);
    assert_eq!(
        first.iter().map(|p| (p.1, p.2, p.3)).collect::<Vec<_>>(),
        [(0, 0, true)]
    );
    drop(leader);
    let (_, effects) = step(follower(), piece(&snap, 0, 0));
    assert_eq!(
        installed(&effects),
        InstallOutcome::Installed { match_index: i(10) }
    );
    let _: SnapshotDescriptor = snap.descriptor();
}

#[test]
fn no_snapshot_of_its_own_is_taken_while_one_is_received() {
    let snap = big(30);
    let (mut node, _) = step(follower(), piece(&snap, 0, 10));
    let receiving = SnapshotRefused::Receiving {
        covers: snap.meta.last_included,
    };
    assert_eq!(node.snapshot_meta(i(1)), Err(receiving));
    let mut out = Effects::new();
    let own = SnapshotDescriptor {
        meta: SnapshotMeta {
            last_included: id(1, 1),
            membership: Membership::from_voters((1..=3).map(n)),
        },
        size: 0,
        checksum: 0,
    };
    assert_eq!(node.snapshot_staged(own, &mut out), Err(receiving));
    assert!(out.is_empty(), "a refused snapshot writes nothing");
    // Once the leader's is installed, the refusal is about the index again.
    let (node, _) = step(node, piece(&snap, 10, 20));
    assert!(matches!(
        node.snapshot_meta(i(10)),
        Err(SnapshotRefused::NotNewer { .. })
    ));
}
