//! Mutual TLS on the Raft port, with certificates made at run time: only a process with a
//! certificate of the cluster's CA that names its node gets a message to the node.

use std::sync::Arc;

use futures_rustls::TlsConnector;
use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::pki_types::ServerName;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use raft_net_smol::frame::{FrameKind, write_frame};
use raft_net_smol::tls::{TlsConfig, node_name};
use raft_net_smol::{HandshakeError, TcpConfig, TcpServer, TcpTransport};
use raft_traits::{NodeId, Postcard, Term, Transport, TransportError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::logs;
use crate::support::{
    ME, PEER, TestHandler, config, raft_hello, snapshot, snapshot_reply, vote, vote_reply, within,
};

/// A certificate authority made for one test.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names`, signed by this CA, and its key, in PEM.
    pub(crate) fn issue(&self, names: &[String]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// Node `node`'s settings: a certificate naming it, and this CA.
    pub(crate) fn node(&self, node: NodeId) -> TlsConfig {
        self.node_trusting(node, self)
    }

    /// A certificate of this CA naming `node`, trusting `ca`'s certificates.
    pub(crate) fn node_trusting(&self, node: NodeId, ca: &TestCa) -> TlsConfig {
        let (cert, key) = self.issue(&[node_name(node)]);
        TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca.pem().as_bytes()).unwrap()
    }
}

/// Node `node`'s server with `tls`, answering with a fresh [`TestHandler`].
fn tls_server(node: NodeId, tls: TlsConfig) -> (TcpServer, Arc<TestHandler>) {
    let server = TcpServer::bind(([127, 0, 0, 1], 0), config()).unwrap();
    server.set_node_id(node);
    server.set_tls(tls);
    let handler = TestHandler::new();
    server.serve::<u64>(handler.clone()).unwrap();
    (server, handler)
}

/// [`ME`]'s transport with `tls`, which knows [`PEER`] at `server`'s address.
fn tls_transport(server: &TcpServer, tls: TlsConfig) -> TcpTransport<u64> {
    TcpTransport::with_tls(config(), Postcard, ME, tls, [(PEER, server.local_addr())]).unwrap()
}

#[test]
fn nodes_with_certificates_of_the_cluster_talk_over_tls() {
    let ca = TestCa::new();
    let (server, handler) = tls_server(PEER, ca.node(PEER));
    // Chunks of 16 KiB, so that a large message crosses TLS records in many frames.
    let transport = TcpTransport::with_tls(
        TcpConfig {
            max_frame_size: 16 << 10,
            chunk_size: 16 << 10,
            ..config()
        },
        Postcard,
        ME,
        ca.node(ME),
        [(PEER, server.local_addr())],
    )
    .unwrap();
    smol::block_on(async {
        let reply = within("a vote over TLS", transport.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        let (request, sum) = snapshot(Term(2), 1 << 20);
        let reply = within("a snapshot over TLS", transport.send(PEER, request)).await;
        assert_eq!(reply, Ok(snapshot_reply(Term(2), sum)));
        assert_eq!(handler.handled(), 2);
        assert_eq!(server.connection_count(), 1);
        transport.shutdown();
        server.shutdown().await;
    });
}

/// What a process gets when it tries its luck: the server's log names the error, and
/// nothing reaches the handler.
#[test]
fn a_process_without_a_valid_certificate_cannot_get_a_message_to_the_node() {
    logs::capture();
    let ca = TestCa::new();
    let (server, handler) = tls_server(PEER, ca.node(PEER));
    let addr = server.local_addr();
    smol::block_on(async {
        // 1. Plain TCP, with a valid hello and request.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let local = plain.local_addr().unwrap();
        let mut wire = Vec::new();
        let hello = raft_hello().encode().unwrap();
        write_frame(&mut wire, FrameKind::Hello, 0, false, &hello)
            .await
            .unwrap();
        let body = raft_traits::Codec::encode(&Postcard, &vote(Term(7))).unwrap();
        write_frame(&mut wire, FrameKind::Request, 1, false, &body)
            .await
            .unwrap();
        let _ = plain.write_all(&wire).await;
        // The server may answer with a TLS alert before it closes.
        within("the server to close", until_closed(&mut plain)).await;
        let logged = logs::closing_of(local).unwrap_or_default();
        assert!(logged.contains("TLS handshake failed"), "{logged:?}");

        // 2. TLS without a client certificate, trusting the cluster's CA.
        let mut roots = RootCertStore::empty();
        let ca_der = der_of(&ca.pem());
        roots.add(ca_der).unwrap();
        let anonymous = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(node_name(PEER)).unwrap();
        let session = TlsConnector::from(Arc::new(anonymous))
            .connect(name, stream)
            .await;
        // TLS 1.3 may complete the client's side before the server checks its
        // certificate; then the server's refusal arrives as the first read.
        if let Ok(mut session) = session {
            let _ = session.write_all(&wire).await;
            let _ = session.flush().await;
            let mut buffer = [0u8; 64];
            let read = within("the server to refuse", session.read(&mut buffer)).await;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }

        // 3. A certificate of another CA that names node 1.
        let rogue_ca = TestCa::new();
        let rogue = tls_transport(&server, rogue_ca.node_trusting(ME, &ca));
        let reply = within("a vote from a rogue", rogue.send(PEER, vote(Term(8)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert!(
            matches!(
                rogue.handshake_error(PEER),
                Some(HandshakeError::Tls { .. })
            ),
            "{:?}",
            rogue.handshake_error(PEER)
        );

        // 4. A certificate of the cluster's CA, but node 3's, speaking for node 1.
        let impostor = tls_transport(&server, ca.node_trusting(NodeId(3), &ca));
        let reply = within(
            "a vote from an impostor",
            impostor.send(PEER, vote(Term(9))),
        )
        .await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert_eq!(
            impostor.handshake_error(PEER),
            Some(HandshakeError::CertificateMismatch { node: ME })
        );

        // 5. Without TLS at all, through the library.
        let cleartext = crate::support::transport(addr, config());
        let reply = within("a vote in cleartext", cleartext.send(PEER, vote(Term(10)))).await;
        assert!(reply.is_err(), "{reply:?}");

        assert_eq!(handler.handled(), 0);

        // The genuine node 1 still gets through.
        let genuine = tls_transport(&server, ca.node(ME));
        let reply = within("a genuine vote", genuine.send(PEER, vote(Term(11)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(11))));
        assert_eq!(handler.handled(), 1);
        server.shutdown().await;
    });
}

/// A transport refuses a server whose certificate names another node than the one it
/// dials: a stale address cannot make it talk to the wrong node.
#[test]
fn a_server_with_another_nodes_certificate_is_refused() {
    let ca = TestCa::new();
    let (server, handler) = tls_server(NodeId(3), ca.node(NodeId(3)));
    let transport = tls_transport(&server, ca.node(ME));
    smol::block_on(async {
        let reply = within("a vote to node 3", transport.send(PEER, vote(Term(1)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        assert!(
            matches!(
                transport.handshake_error(PEER),
                Some(HandshakeError::Tls { .. })
            ),
            "{:?}",
            transport.handshake_error(PEER)
        );
        assert_eq!(handler.handled(), 0);
        server.shutdown().await;
    });
}

#[test]
fn bad_pem_is_a_typed_error() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&[node_name(ME)]);
    let ca_pem = ca.pem();
    assert!(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca_pem.as_bytes()).is_ok());
    for (cert, key, ca_pem) in [
        ("", key.as_str(), ca_pem.as_str()),
        (cert.as_str(), "", ca_pem.as_str()),
        (cert.as_str(), key.as_str(), ""),
        (cert.as_str(), "garbage", ca_pem.as_str()),
    ] {
        assert!(TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), ca_pem.as_bytes()).is_err());
    }
    let missing = std::path::Path::new("/nonexistent/cert.pem");
    assert!(TlsConfig::from_pem_files(missing, missing, missing).is_err());
}

/// Reads until the other end closes the connection.
async fn until_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 256];
    while let Ok(1..) = stream.read(&mut buffer).await {}
}

/// The DER of the one certificate in `pem`.
fn der_of(pem: &str) -> futures_rustls::rustls::pki_types::CertificateDer<'static> {
    use futures_rustls::rustls::pki_types::pem::PemObject;
    futures_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// The connection cap holds under TLS too: connection 2 over a cap of 1 is closed, and
/// the first is served as before.
#[test]
fn the_connection_cap_holds_under_tls() {
    logs::capture();
    let ca = TestCa::new();
    let server = TcpServer::bind(
        ([127, 0, 0, 1], 0),
        TcpConfig {
            max_connections: 1,
            ..config()
        },
    )
    .unwrap();
    server.set_node_id(PEER);
    server.set_tls(ca.node(PEER));
    let handler = TestHandler::new();
    server.serve::<u64>(handler.clone()).unwrap();
    let first = tls_transport(&server, ca.node(ME));
    let second = tls_transport(&server, ca.node(ME));
    smol::block_on(async {
        let reply = within("a vote", first.send(PEER, vote(Term(1)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(1))));
        let reply = within("a vote over the cap", second.send(PEER, vote(Term(2)))).await;
        assert!(
            matches!(reply, Err(TransportError::Unreachable { .. })),
            "{reply:?}"
        );
        let reply = within("a vote", first.send(PEER, vote(Term(3)))).await;
        assert_eq!(reply, Ok(vote_reply(Term(3))));
        assert_eq!(handler.handled(), 2);
        assert_eq!(server.connection_count(), 1);
        server.shutdown().await;
    });
}
