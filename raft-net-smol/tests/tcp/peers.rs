//! Peers learned, moved and forgotten while the transport runs (issue 10 item 6): a node
//! added to the cluster later is reached without restarting the others.

use std::time::{Duration, Instant};

use raft_net_smol::TcpTransport;
use raft_traits::{Membership, NodeId, Term, Transport, TransportError};

use crate::support::{ME, PEER, config, server, vote, vote_reply, within};

/// Polls `condition` until it holds, for at most 30 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_peer_added_at_run_time_is_reached_and_a_removed_one_is_forgotten() {
    // Node 1 starts knowing only node 2; node 3 joins later.
    let (two, _two_handler) = server(config());
    two.set_node_id(PEER);
    let (three, three_handler) = server(config());
    let newcomer = NodeId(3);
    three.set_node_id(newcomer);
    let transport: TcpTransport<u64> =
        TcpTransport::new(config(), ME, [(PEER, two.local_addr())]).unwrap();
    smol::block_on(async {
        let reply = within("a vote to 2", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        let reply = transport.send(newcomer, vote(Term(1))).await;
        assert_eq!(reply, Err(TransportError::UnknownPeer(newcomer)));

        transport.set_peer(newcomer, three.local_addr());
        assert_eq!(
            transport.peers(),
            [(PEER, two.local_addr()), (newcomer, three.local_addr())]
        );
        let reply = within("a vote to 3", transport.send(newcomer, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        assert_eq!(three_handler.handled(), 1);
        // The connection to node 2 was not disturbed.
        let reply = within("a vote to 2", transport.send(PEER, vote(Term(3)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(3))));
        assert_eq!(two.connection_count(), 1);

        // Giving a peer the address of another node is caught by the handshake.
        transport.set_peer(newcomer, two.local_addr());
        let reply = within(
            "a vote to a wrong address",
            transport.send(newcomer, vote(Term(4))),
        )
        .await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert!(transport.handshake_error(newcomer).is_some());
        transport.set_peer(newcomer, three.local_addr());
        assert_eq!(transport.handshake_error(newcomer), None);
        let reply = within("a vote to 3 again", transport.send(newcomer, vote(Term(5)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(5))));

        // Forgetting a peer closes its connection; the other stays.
        assert_eq!(transport.remove_peer(newcomer), Some(three.local_addr()));
        let reply = transport.send(newcomer, vote(Term(6))).await;
        assert_eq!(reply, Err(TransportError::UnknownPeer(newcomer)));
        eventually("the connection to 3 closed", || {
            three.connection_count() == 0
        })
        .await;
        assert_eq!(transport.peers(), [(PEER, two.local_addr())]);
        let reply = within("a vote to 2", transport.send(PEER, vote(Term(7)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(7))));

        transport.shutdown();
        two.shutdown().await;
        three.shutdown().await;
    });
}

#[test]
fn update_membership_makes_a_new_member_reachable_and_forgets_no_one() {
    // Node 1 knows node 2; a configuration adds node 3 (with an address), node 4 (with
    // none) and node 5 (with one that is not a socket address).
    let (two, _two_handler) = server(config());
    two.set_node_id(PEER);
    let (three, three_handler) = server(config());
    let newcomer = NodeId(3);
    three.set_node_id(newcomer);
    let transport: TcpTransport<u64> =
        TcpTransport::new(config(), ME, [(PEER, two.local_addr())]).unwrap();
    smol::block_on(async {
        let reply = transport.send(newcomer, vote(Term(1))).await;
        assert_eq!(reply, Err(TransportError::UnknownPeer(newcomer)));

        let grown = Membership::with_addresses([
            // Its own entry is not a peer, whatever its address.
            (ME, "127.0.0.1:1".to_owned()),
            (PEER, two.local_addr().to_string()),
            (newcomer, three.local_addr().to_string()),
            (NodeId(4), String::new()),
            (NodeId(5), "node-5.example:7000".to_owned()),
        ]);
        transport.update_membership(&grown);
        assert_eq!(
            transport.peers(),
            [(PEER, two.local_addr()), (newcomer, three.local_addr())]
        );
        let reply = within("a vote to 3", transport.send(newcomer, vote(Term(2)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(2))));
        assert_eq!(three_handler.handled(), 1);

        // Node 2 leaves the configuration: it stays a peer, still reachable, to hear
        // that it was removed.
        let shrunk = Membership::with_addresses([
            (ME, String::new()),
            (newcomer, three.local_addr().to_string()),
        ]);
        transport.update_membership(&shrunk);
        assert_eq!(
            transport.peers(),
            [(PEER, two.local_addr()), (newcomer, three.local_addr())]
        );
        let reply = within("a vote to 2", transport.send(PEER, vote(Term(3)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(3))));

        transport.shutdown();
        two.shutdown().await;
        three.shutdown().await;
    });
}
