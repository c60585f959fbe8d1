//! The handshake that opens every connection: who is calling, for what, in which cluster.
//!
//! The connecting side sends one [`Hello`](crate::frame::FrameKind::Hello) frame before
//! anything else. It names
//!
//! * the **protocol** the connection will carry ([`Protocol`]): Raft's RPCs between the
//!   nodes of a cluster, or a service's client protocol, identified by its name;
//! * the **cluster id** ([`TcpConfig::cluster_id`](crate::TcpConfig::cluster_id)), so that
//!   nodes of two clusters that share a network never talk to each other;
//! * the sender's **node id**, required for Raft and absent for clients.
//!
//! The server answers with a [`Welcome`](crate::frame::FrameKind::Welcome) frame carrying
//! its own [`Hello`] (its protocol, cluster id and, if it was given one, its node id), or
//! with a [`Refusal`](crate::frame::FrameKind::Refusal) frame, after which it closes the
//! connection. The client checks the welcome too: a server that names a node other than
//! the one the client meant to reach (a stale address) is refused with
//! [`HandshakeError::WrongNode`].
//!
//! No request reaches the server's [`Service`](crate::Service) before the handshake has
//! succeeded, and on a Raft connection every later request must come from the node the
//! handshake named ([`Request::from`](raft_traits::Request::from)); a request that claims
//! another sender closes the connection with
//! [`ConnectionError::WrongSender`](crate::ConnectionError).
//!
//! # Wire format
//!
//! The body of a Hello or Welcome frame (all integers big-endian):
//!
//! | size | field                                                                  |
//! |-----:|------------------------------------------------------------------------|
//! |    1 | protocol: 1 Raft, 2 a service's client protocol                        |
//! |    1 | `n`, the length of the service's name (0 for Raft)                     |
//! |    n | the service's name, UTF-8                                              |
//! |    1 | `m`, the length of the cluster id                                      |
//! |    m | the cluster id, UTF-8                                                  |
//! |    1 | 0: no node id follows; 1: a node id follows                            |
//! |    8 | the node id (only if the previous byte is 1)                           |
//!
//! Nothing may follow. The body of a Refusal frame is one byte, the reason
//! ([`Refusal`]), followed by the server's Hello as above.
//!
//! ```
//! use raft_net_smol::handshake::{Hello, Protocol};
//! use raft_traits::NodeId;
//!
//! let hello = Hello { protocol: Protocol::Raft, cluster_id: "east".into(), node: Some(NodeId(3)) };
//! let bytes = hello.encode().unwrap();
//! assert_eq!(bytes, [1, 0, 4, b'e', b'a', b's', b't', 1, 0, 0, 0, 0, 0, 0, 0, 3]);
//! assert_eq!(Hello::decode(&bytes).unwrap(), hello);
//! // Garbage is a typed error.
//! assert!(Hello::decode(&[9, 9, 9]).is_err());
//! ```

use std::borrow::Cow;
use std::fmt;

use raft_traits::NodeId;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{ConnectionError, FrameError, HandshakeError, TcpConfigError};
use crate::frame::{FrameHeader, FrameKind, read_body, read_header, write_frame};

/// The longest service name or cluster id, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The longest body of a handshake frame: the largest [`Hello`] behind a refusal byte.
pub const MAX_HANDSHAKE_LEN: usize = 1 + 2 + MAX_NAME_LEN + 1 + MAX_NAME_LEN + 1 + 8;

const PROTOCOL_RAFT: u8 = 1;
const PROTOCOL_SERVICE: u8 = 2;

/// The protocol a connection carries, named in its handshake.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Raft's RPCs between the nodes of one cluster
    /// ([`TcpTransport`](crate::TcpTransport) to [`TcpServer::serve`](crate::TcpServer::serve)).
    /// The connecting side must name its node.
    Raft,
    /// A service's client protocol, identified by the service's name (at most
    /// [`MAX_NAME_LEN`] bytes), e.g. `"raft-kv"`.
    Service(Cow<'static, str>),
}

impl Protocol {
    /// The client protocol of the service called `name`.
    pub fn service(name: impl Into<Cow<'static, str>>) -> Protocol {
        Protocol::Service(name.into())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Raft => f.write_str("Raft (node to node)"),
            Protocol::Service(name) => write!(f, "the client protocol {name:?}"),
        }
    }
}

/// What one end of a connection says about itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The protocol the connection carries.
    pub protocol: Protocol,
    /// The cluster the sender belongs to.
    pub cluster_id: String,
    /// The sender's node id: required from a node opening a Raft connection, absent
    /// from clients; a server names itself if it was given its id.
    pub node: Option<NodeId>,
}

impl Hello {
    /// The body of a Hello or Welcome frame. Fails if a name is longer than
    /// [`MAX_NAME_LEN`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>, TcpConfigError> {
        let mut bytes = Vec::with_capacity(32);
        match &self.protocol {
            Protocol::Raft => bytes.extend_from_slice(&[PROTOCOL_RAFT, 0]),
            Protocol::Service(name) => {
                bytes.push(PROTOCOL_SERVICE);
                push_name(&mut bytes, "the service's name", name)?;
            }
        }
        push_name(&mut bytes, "cluster_id", &self.cluster_id)?;
        match self.node {
            None => bytes.push(0),
            Some(NodeId(id)) => {
                bytes.push(1);
                bytes.extend_from_slice(&id.to_be_bytes());
            }
        }
        Ok(bytes)
    }

    /// Decodes the body of a Hello or Welcome frame.
    pub fn decode(bytes: &[u8]) -> Result<Hello, HandshakeError> {
        let mut rest = bytes;
        let protocol = match take_byte(&mut rest)? {
            PROTOCOL_RAFT => {
                if !take_name(&mut rest)?.is_empty() {
                    return Err(malformed("a Raft hello names a service"));
                }
                Protocol::Raft
            }
            PROTOCOL_SERVICE => Protocol::Service(Cow::Owned(take_name(&mut rest)?.to_owned())),
            _ => return Err(malformed("unknown protocol")),
        };
        let cluster_id = take_name(&mut rest)?.to_owned();
        let node = match take_byte(&mut rest)? {
            0 => None,
            1 => {
                let (id, tail) = rest
                    .split_first_chunk::<8>()
                    .ok_or_else(|| malformed("truncated node id"))?;
                rest = tail;
                Some(NodeId(u64::from_be_bytes(*id)))
            }
            _ => return Err(malformed("bad node id flag")),
        };
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        Ok(Hello {
            protocol,
            cluster_id,
            node,
        })
    }
}

fn push_name(bytes: &mut Vec<u8>, what: &'static str, name: &str) -> Result<(), TcpConfigError> {
    let len = u8::try_from(name.len()).map_err(|_| TcpConfigError::NameTooLong {
        what,
        len: name.len(),
    })?;
    bytes.push(len);
    bytes.extend_from_slice(name.as_bytes());
    Ok(())
}

fn malformed(reason: &'static str) -> HandshakeError {
    HandshakeError::Malformed { reason }
}

fn take_byte(rest: &mut &[u8]) -> Result<u8, HandshakeError> {
    let (&byte, tail) = rest.split_first().ok_or_else(|| malformed("truncated"))?;
    *rest = tail;
    Ok(byte)
}

fn take_name<'a>(rest: &mut &'a [u8]) -> Result<&'a str, HandshakeError> {
    let len = usize::from(take_byte(rest)?);
    if rest.len() < len {
        return Err(malformed("truncated name"));
    }
    let (name, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(name).map_err(|_| malformed("a name is not UTF-8"))
}

/// Why a server refused a handshake: the first byte of a Refusal frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's frames carry a protocol version the server does not speak.
    Version,
    /// The client asked for another protocol than the server's.
    Protocol,
    /// The client belongs to another cluster.
    Cluster,
    /// A Raft connection did not name its node.
    MissingNodeId,
    /// The first frame was not a Hello.
    NotAHello,
    /// The Hello did not decode.
    Malformed,
    /// The server already serves as many connections as it may.
    Busy,
    /// The client's TLS certificate does not name the node its hello speaks for.
    Certificate,
}

impl Refusal {
    /// The reason's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Refusal::Version => 1,
            Refusal::Protocol => 2,
            Refusal::Cluster => 3,
            Refusal::MissingNodeId => 4,
            Refusal::NotAHello => 5,
            Refusal::Malformed => 6,
            Refusal::Busy => 7,
            Refusal::Certificate => 8,
        }
    }

    /// The reason a byte stands for, if any.
    pub fn from_byte(byte: u8) -> Option<Refusal> {
        Some(match byte {
            1 => Refusal::Version,
            2 => Refusal::Protocol,
            3 => Refusal::Cluster,
            4 => Refusal::MissingNodeId,
            5 => Refusal::NotAHello,
            6 => Refusal::Malformed,
            7 => Refusal::Busy,
            8 => Refusal::Certificate,
            _ => return None,
        })
    }

    /// The refusal a server sends for `error`, if the client should hear of it.
    fn for_error(error: &HandshakeError) -> Option<Refusal> {
        Some(match error {
            HandshakeError::WrongProtocol { .. } => Refusal::Protocol,
            HandshakeError::WrongCluster { .. } => Refusal::Cluster,
            HandshakeError::MissingNodeId => Refusal::MissingNodeId,
            HandshakeError::NotAHello { .. } => Refusal::NotAHello,
            HandshakeError::Malformed { .. } => Refusal::Malformed,
            HandshakeError::CertificateMismatch { .. } => Refusal::Certificate,
            _ => return None,
        })
    }
}

/// One frame written in a single write, so that a handshake travels in one segment.
async fn send_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    kind: FrameKind,
    body: &[u8],
) -> Result<(), ConnectionError> {
    let mut bytes = Vec::with_capacity(crate::frame::HEADER_LEN + body.len());
    write_frame(&mut bytes, kind, 0, false, body).await?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Sends a Refusal frame carrying `reason` and the server's hello, ignoring failures:
/// the connection is being closed either way.
pub(crate) async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    reason: Refusal,
    server_hello: &[u8],
) {
    let mut body = Vec::with_capacity(1 + server_hello.len());
    body.push(reason.to_byte());
    body.extend_from_slice(server_hello);
    let _ = send_frame(writer, FrameKind::Refusal, &body).await;
}

/// The server's side: reads the client's Hello from `reader`, checks it against the
/// server's own `server` hello (encoded as `server_hello`) and with `vouch` (which checks
/// that the connection may speak for the hello's node), and answers on `writer`.
///
/// Returns the client's hello once welcomed, `None` if the client closed the connection
/// before sending a byte, and an error (after sending a refusal where the client can
/// understand one) otherwise.
pub(crate) async fn accept<R, W>(
    reader: &mut R,
    writer: &mut W,
    server: &Hello,
    server_hello: &[u8],
    vouch: &(dyn Fn(&Hello) -> Result<(), HandshakeError> + Sync),
    max_frame_size: u32,
) -> Result<Option<Hello>, ConnectionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let header = match read_header(reader, max_frame_size).await {
        Ok(Some(header)) => header,
        Ok(None) => return Ok(None),
        Err(ConnectionError::Frame(error @ FrameError::UnsupportedVersion { .. })) => {
            // An older or newer peer: it may not read our frames, but if it checks their
            // version as we do, it will report ours.
            refuse(writer, Refusal::Version, server_hello).await;
            return Err(error.into());
        }
        Err(error) => return Err(error),
    };
    // Checked before the body is read: a connection that does not start with a
    // handshake never gets a body of any size buffered.
    let checked = match header.kind {
        FrameKind::Hello => match handshake_body(reader, &header).await? {
            Ok(body) => check_hello(&body, server).and_then(|hello| {
                vouch(&hello)?;
                Ok(hello)
            }),
            Err(error) => Err(error),
        },
        kind => Err(HandshakeError::NotAHello { kind }),
    };
    match checked {
        Ok(hello) => {
            send_frame(writer, FrameKind::Welcome, server_hello).await?;
            Ok(Some(hello))
        }
        Err(error) => {
            if let Some(reason) = Refusal::for_error(&error) {
                refuse(writer, reason, server_hello).await;
            }
            Err(error.into())
        }
    }
}

/// Reads the body of a handshake frame, refusing one longer than any valid handshake.
async fn handshake_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    header: &FrameHeader,
) -> Result<Result<Vec<u8>, HandshakeError>, ConnectionError> {
    if usize::try_from(header.body_len).map_or(true, |len| len > MAX_HANDSHAKE_LEN) {
        return Ok(Err(malformed("longer than any handshake")));
    }
    Ok(Ok(read_body(reader, header).await?))
}

/// Whether the body of a connection's first frame, a Hello, is one the server accepts.
fn check_hello(body: &[u8], server: &Hello) -> Result<Hello, HandshakeError> {
    let client = Hello::decode(body)?;
    if client.protocol != server.protocol {
        return Err(HandshakeError::WrongProtocol {
            server: server.protocol.clone(),
            client: client.protocol,
        });
    }
    if client.cluster_id != server.cluster_id {
        return Err(HandshakeError::WrongCluster {
            server: server.cluster_id.clone(),
            client: client.cluster_id,
        });
    }
    if client.protocol == Protocol::Raft && client.node.is_none() {
        return Err(HandshakeError::MissingNodeId);
    }
    Ok(client)
}

/// The client's side: sends `ours` (encoded as `hello`) on `writer` and waits on
/// `reader` for the server's answer. `expected` is the node the client means to reach.
///
/// Returns the server's hello once welcomed.
pub(crate) async fn initiate<R, W>(
    reader: &mut R,
    writer: &mut W,
    ours: &Hello,
    hello: &[u8],
    expected: NodeId,
    max_frame_size: u32,
) -> Result<Hello, ConnectionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    send_frame(writer, FrameKind::Hello, hello).await?;
    let Some(header) = read_header(reader, max_frame_size).await? else {
        return Err(HandshakeError::Closed.into());
    };
    let kind = header.kind;
    if !matches!(kind, FrameKind::Welcome | FrameKind::Refusal) {
        return Err(HandshakeError::UnexpectedReply { kind }.into());
    }
    let body = handshake_body(reader, &header).await??;
    let server = match kind {
        FrameKind::Welcome => Hello::decode(&body)?,
        _ => return Err(refusal_error(&body, ours).into()),
    };
    // A server never welcomes a mismatch; checked all the same, since a welcome from a
    // server of another protocol or cluster would be a bug worth hearing about.
    if server.protocol != ours.protocol {
        return Err(HandshakeError::WrongProtocol {
            server: server.protocol,
            client: ours.protocol.clone(),
        }
        .into());
    }
    if server.cluster_id != ours.cluster_id {
        return Err(HandshakeError::WrongCluster {
            server: server.cluster_id,
            client: ours.cluster_id.clone(),
        }
        .into());
    }
    if let Some(found) = server.node
        && found != expected
    {
        return Err(HandshakeError::WrongNode { expected, found }.into());
    }
    Ok(server)
}

/// The error a Refusal frame with `body` stands for, for a client that sent `ours`.
fn refusal_error(body: &[u8], ours: &Hello) -> HandshakeError {
    let Some((&code, server)) = body.split_first() else {
        return malformed("empty refusal");
    };
    let Some(reason) = Refusal::from_byte(code) else {
        return HandshakeError::Refused { code };
    };
    let server = match Hello::decode(server) {
        Ok(server) => server,
        Err(error) => return error,
    };
    match reason {
        Refusal::Version => HandshakeError::VersionRefused {
            ours: crate::frame::VERSION,
        },
        Refusal::Protocol => HandshakeError::WrongProtocol {
            server: server.protocol,
            client: ours.protocol.clone(),
        },
        Refusal::Cluster => HandshakeError::WrongCluster {
            server: server.cluster_id,
            client: ours.cluster_id.clone(),
        },
        Refusal::MissingNodeId => HandshakeError::MissingNodeId,
        Refusal::NotAHello | Refusal::Malformed => HandshakeError::Refused { code },
        Refusal::Busy => HandshakeError::ServerBusy,
        Refusal::Certificate => match ours.node {
            Some(node) => HandshakeError::CertificateMismatch { node },
            None => HandshakeError::Refused { code },
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frame::read_frame;

    fn raft(node: u64) -> Hello {
        Hello {
            protocol: Protocol::Raft,
            cluster_id: "c".into(),
            node: Some(NodeId(node)),
        }
    }

    fn kv_client() -> Hello {
        Hello {
            protocol: Protocol::service("raft-kv"),
            cluster_id: "c".into(),
            node: None,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        assert_eq!(
            kv_client().encode().unwrap(),
            [2, 7, b'r', b'a', b'f', b't', b'-', b'k', b'v', 1, b'c', 0]
        );
    }

    #[test]
    fn names_longer_than_the_maximum_are_refused() {
        let mut hello = kv_client();
        hello.cluster_id = "x".repeat(MAX_NAME_LEN);
        let longest = hello.encode().unwrap();
        assert_eq!(Hello::decode(&longest).unwrap(), hello);
        hello.cluster_id.push('x');
        assert_eq!(
            hello.encode(),
            Err(TcpConfigError::NameTooLong {
                what: "cluster_id",
                len: 256
            })
        );
        let service = Hello {
            protocol: Protocol::service("y".repeat(256)),
            ..kv_client()
        };
        assert!(service.encode().is_err());
    }

    #[test]
    fn malformed_hellos_are_typed_errors() {
        let good = raft(7).encode().unwrap();
        let cases: [(&[u8], &str); 7] = [
            (&[], "truncated"),
            (&[3, 0, 0, 0], "unknown protocol"),
            (&[1, 1, b'x', 0, 0], "a Raft hello names a service"),
            (&[2, 5, b'x'], "truncated name"),
            (&[2, 1, 0xff, 0, 0], "a name is not UTF-8"),
            (&[1, 0, 0, 2], "bad node id flag"),
            (&good[..good.len() - 1], "truncated node id"),
        ];
        for (bytes, reason) in cases {
            assert_eq!(
                Hello::decode(bytes),
                Err(HandshakeError::Malformed { reason }),
                "{bytes:?}"
            );
        }
        let mut trailing = good;
        trailing.push(0);
        assert_eq!(
            Hello::decode(&trailing),
            Err(HandshakeError::Malformed {
                reason: "trailing bytes"
            })
        );
    }

    /// Runs a whole handshake in memory: the client's hello, the server's check and its
    /// answer, the client's reading of it.
    fn handshake(
        client: &Hello,
        server: &Hello,
        expected: NodeId,
    ) -> (
        Result<Option<Hello>, ConnectionError>,
        Result<Hello, ConnectionError>,
    ) {
        smol::block_on(async {
            let mut to_server = Vec::new();
            send_frame(&mut to_server, FrameKind::Hello, &client.encode().unwrap())
                .await
                .unwrap();
            let mut to_client = Vec::new();
            let accepted = accept(
                &mut &to_server[..],
                &mut to_client,
                server,
                &server.encode().unwrap(),
                &|_| Ok(()),
                1024,
            )
            .await;
            let mut ignored = Vec::new();
            let initiated = initiate(
                &mut &to_client[..],
                &mut ignored,
                client,
                &client.encode().unwrap(),
                expected,
                1024,
            )
            .await;
            (accepted, initiated)
        })
    }

    fn handshake_error<T: fmt::Debug>(result: Result<T, ConnectionError>) -> HandshakeError {
        match result {
            Err(ConnectionError::Handshake(error)) => error,
            other => panic!("expected a handshake error, got {other:?}"),
        }
    }

    #[test]
    fn a_matching_hello_is_welcomed_on_both_sides() {
        let (accepted, initiated) = handshake(&raft(1), &raft(2), NodeId(2));
        assert_eq!(accepted.unwrap(), Some(raft(1)));
        assert_eq!(initiated.unwrap(), raft(2));
        // A server that does not name itself is welcomed too.
        let anonymous = Hello {
            node: None,
            ..raft(0)
        };
        let (_, initiated) = handshake(&raft(1), &anonymous, NodeId(2));
        assert_eq!(initiated.unwrap(), anonymous);
    }

    #[test]
    fn each_mismatch_is_refused_and_both_sides_say_why() {
        let other_cluster = Hello {
            cluster_id: "d".into(),
            ..raft(2)
        };
        let anonymous_node = Hello {
            node: None,
            ..raft(1)
        };
        let cases = [
            (
                kv_client(),
                raft(2),
                HandshakeError::WrongProtocol {
                    server: Protocol::Raft,
                    client: Protocol::service("raft-kv"),
                },
            ),
            (
                raft(1),
                other_cluster,
                HandshakeError::WrongCluster {
                    server: "d".into(),
                    client: "c".into(),
                },
            ),
            (anonymous_node, raft(2), HandshakeError::MissingNodeId),
        ];
        for (client, server, expected) in cases {
            let (accepted, initiated) = handshake(&client, &server, NodeId(2));
            assert_eq!(handshake_error(accepted), expected);
            assert_eq!(handshake_error(initiated), expected);
        }
    }

    #[test]
    fn a_server_naming_another_node_is_refused_by_the_client() {
        let (accepted, initiated) = handshake(&raft(1), &raft(3), NodeId(2));
        assert!(accepted.is_ok());
        assert_eq!(
            handshake_error(initiated),
            HandshakeError::WrongNode {
                expected: NodeId(2),
                found: NodeId(3)
            }
        );
    }

    #[test]
    fn a_first_frame_that_is_not_a_hello_is_refused() {
        smol::block_on(async {
            let mut wire = Vec::new();
            write_frame(&mut wire, FrameKind::Request, 1, false, b"\x00\x05")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let server = raft(2);
            let accepted = accept(
                &mut &wire[..],
                &mut answer,
                &server,
                &server.encode().unwrap(),
                &|_| Ok(()),
                1024,
            )
            .await;
            assert_eq!(
                handshake_error(accepted),
                HandshakeError::NotAHello {
                    kind: FrameKind::Request
                }
            );
            let refusal = read_frame(&mut &answer[..], 1024).await.unwrap().unwrap();
            assert_eq!(refusal.header.kind, FrameKind::Refusal);
            assert_eq!(refusal.body[0], Refusal::NotAHello.to_byte());
        });
    }

    proptest! {
        #[test]
        fn hellos_round_trip(
            service in proptest::option::of("[a-z0-9-]{0,40}"),
            cluster_id in "\\PC{0,20}",
            node: Option<u64>,
        ) {
            let hello = Hello {
                protocol: service.map_or(Protocol::Raft, Protocol::service),
                cluster_id,
                node: node.map(NodeId),
            };
            prop_assume!(hello.cluster_id.len() <= MAX_NAME_LEN);
            prop_assert_eq!(Hello::decode(&hello.encode().unwrap()).unwrap(), hello);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_hello_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let _ = Hello::decode(&bytes);
            let _ = refusal_error(&bytes, &kv_client());
        }
    }
}
