//! The wire format: frames.
//!
//! Every message (a request, a reply, an error) travels as one or more *frames*. A frame
//! is a fixed 20-byte header followed by a body of `body length` bytes:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! |      0 |    4 | magic, the ASCII bytes `RAFT`                                |
//! |      4 |    1 | protocol version, [`VERSION`]                                |
//! |      5 |    1 | kind ([`FrameKind`]): 1 request, 2 response, 3 error, 4 cancel, 5 hello, 6 welcome, 7 refusal |
//! |      6 |    2 | flags, big-endian: bit 0 = more chunks follow; others zero  |
//! |      8 |    8 | request id, big-endian                                       |
//! |     16 |    4 | body length, big-endian, at most the maximum frame size     |
//! |     20 |    n | body                                                         |
//!
//! Every connection opens with a [handshake](crate::handshake): the client's hello, the
//! server's welcome or refusal, each a single frame with request id 0. Nothing else may
//! come first, and no handshake frame may come later.
//!
//! A message whose encoding is longer than the sender's chunk size is cut into several
//! frames with the same kind and request id; all but the last carry the "more" flag, and
//! the receiver concatenates their bodies. Frames of different messages may interleave.
//! The concatenated body is the message encoded by the connection's
//! [`Codec`](raft_traits::Codec): the [`Service`](crate::Service)'s request type for a
//! request and its response type for a response (for Raft: a
//! [`Request`](raft_traits::Request) and a [`Response`](raft_traits::Response)), and a
//! `String` saying why for an error. A cancel frame (empty body, no flags) tells the receiver to drop what it has
//! of the partially sent message with that id.
//!
//! A receiver validates each header as soon as its 20 bytes have arrived, before reading
//! the body: wrong magic, another version, an unknown kind or flag, or a body longer than
//! the maximum frame size is a [`FrameError`] and closes the connection.
//!
//! ```
//! use raft_net_smol::frame::{FrameHeader, FrameKind, HEADER_LEN};
//!
//! let header = FrameHeader { kind: FrameKind::Request, request_id: 7, more: false, body_len: 3 };
//! let bytes = header.encode();
//! assert_eq!(bytes.len(), HEADER_LEN);
//! assert_eq!(&bytes[..4], b"RAFT");
//! assert_eq!(FrameHeader::decode(&bytes, 1024).unwrap(), header);
//! // A receiver whose frames are at most 2 bytes refuses it before reading the body.
//! assert!(FrameHeader::decode(&bytes, 2).is_err());
//! ```

use std::io;

use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ConnectionError, FrameError};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RAFT";

/// The protocol version this crate speaks.
///
/// Version 5 sends a snapshot in pieces (offset, data, done, a checksum per piece;
/// [`InstallSnapshot`](raft_traits::InstallSnapshot)); version 4 says why a read index was refused (a leader not yet ready, or not the
/// leader); version 3 carries a checksum with each InstallSnapshot; version 2 opened every
/// connection with a [handshake](crate::handshake); version 1 had none. A server refuses a client of another version with a
/// [`Refusal::Version`](crate::handshake::Refusal::Version) frame and
/// [`FrameError::UnsupportedVersion`], and closes the connection.
pub const VERSION: u8 = 5;

/// The length of a frame header in bytes.
pub const HEADER_LEN: usize = 20;

/// The flag bit saying that more chunks of the same message follow.
const FLAG_MORE: u16 = 1;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// (A chunk of) an encoded request (for Raft a [`Request`](raft_traits::Request)),
    /// client to server.
    Request,
    /// (A chunk of) an encoded response (for Raft a [`Response`](raft_traits::Response)),
    /// server to client.
    Response,
    /// (A chunk of) an encoded `String`: why the server did not answer the request with
    /// this id. Server to client.
    Error,
    /// The sender abandons the message with this id, of which it has sent only part;
    /// the receiver drops what it holds of it. Either direction; empty body.
    Cancel,
    /// The client's [`Hello`](crate::handshake::Hello): the first frame of every
    /// connection, and only the first.
    Hello,
    /// The server's answer to an accepted hello, carrying the server's own
    /// [`Hello`](crate::handshake::Hello).
    Welcome,
    /// The server's answer to a refused hello: a
    /// [`Refusal`](crate::handshake::Refusal) byte and the server's
    /// [`Hello`](crate::handshake::Hello). The server then closes the connection.
    Refusal,
}

impl FrameKind {
    /// The kind's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Response => 2,
            FrameKind::Error => 3,
            FrameKind::Cancel => 4,
            FrameKind::Hello => 5,
            FrameKind::Welcome => 6,
            FrameKind::Refusal => 7,
        }
    }

    /// Whether frames of this kind belong to the [handshake](crate::handshake).
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            FrameKind::Hello | FrameKind::Welcome | FrameKind::Refusal
        )
    }

    /// The kind a byte stands for, if any.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Request),
            2 => Some(FrameKind::Response),
            3 => Some(FrameKind::Error),
            4 => Some(FrameKind::Cancel),
            5 => Some(FrameKind::Hello),
            6 => Some(FrameKind::Welcome),
            7 => Some(FrameKind::Refusal),
            _ => None,
        }
    }
}

/// A decoded frame header; magic and version are implied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The request this frame belongs to; a reply carries the id of its request.
    pub request_id: u64,
    /// Whether more chunks of the same message follow.
    pub more: bool,
    /// The length of the body that follows the header.
    pub body_len: u32,
}

impl FrameHeader {
    /// The header of a frame of `kind` for `request_id` that carries `body`; refuses a
    /// body longer than `u32::MAX` bytes with [`FrameError::FrameTooLarge`].
    pub fn carrying(
        kind: FrameKind,
        request_id: u64,
        more: bool,
        body: &[u8],
    ) -> Result<Self, FrameError> {
        let body_len = u32::try_from(body.len()).map_err(|_| FrameError::FrameTooLarge {
            len: u64::try_from(body.len()).unwrap_or(u64::MAX),
            max: u32::MAX,
        })?;
        Ok(FrameHeader {
            kind,
            request_id,
            more,
            body_len,
        })
    }

    /// The header's 20 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4] = VERSION;
        bytes[5] = self.kind.to_byte();
        let flags = if self.more { FLAG_MORE } else { 0 };
        bytes[6..8].copy_from_slice(&flags.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.request_id.to_be_bytes());
        bytes[16..20].copy_from_slice(&self.body_len.to_be_bytes());
        bytes
    }

    /// Decodes and validates a header, refusing bodies longer than `max_frame_size`.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_frame_size: u32) -> Result<Self, FrameError> {
        let [
            m0,
            m1,
            m2,
            m3,
            version,
            kind,
            f0,
            f1,
            i0,
            i1,
            i2,
            i3,
            i4,
            i5,
            i6,
            i7,
            l0,
            l1,
            l2,
            l3,
        ] = *bytes;
        let magic = [m0, m1, m2, m3];
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { found: version });
        }
        let kind = FrameKind::from_byte(kind).ok_or(FrameError::UnknownKind { found: kind })?;
        let flags = u16::from_be_bytes([f0, f1]);
        if flags & !FLAG_MORE != 0 {
            return Err(FrameError::UnknownFlags { found: flags });
        }
        let more = flags & FLAG_MORE != 0;
        let request_id = u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]);
        let body_len = u32::from_be_bytes([l0, l1, l2, l3]);
        if body_len > max_frame_size {
            return Err(FrameError::FrameTooLarge {
                len: u64::from(body_len),
                max: max_frame_size,
            });
        }
        if kind == FrameKind::Cancel && (more || body_len != 0) {
            return Err(FrameError::MalformedCancel);
        }
        if kind.is_handshake() && more {
            return Err(FrameError::ChunkedHandshake);
        }
        Ok(FrameHeader {
            kind,
            request_id,
            more,
            body_len,
        })
    }
}

/// A whole frame: its header and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header; `header.body_len == body.len()`.
    pub header: FrameHeader,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads one frame, validating its header before reading its body.
///
/// Returns `Ok(None)` if the stream ends cleanly before the first byte of a header, and
/// [`FrameError::Truncated`] if it ends inside a frame.
///
/// ```
/// use raft_net_smol::frame::{FrameKind, read_frame, write_frame};
///
/// smol::block_on(async {
///     let mut wire = Vec::new();
///     write_frame(&mut wire, FrameKind::Response, 9, false, b"hi").await.unwrap();
///     let mut reader = &wire[..];
///     let frame = read_frame(&mut reader, 1024).await.unwrap().unwrap();
///     assert_eq!((frame.header.request_id, &frame.body[..]), (9, &b"hi"[..]));
///     assert!(read_frame(&mut reader, 1024).await.unwrap().is_none());
///     // Garbage is an error, never a panic.
///     assert!(read_frame(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], 1024).await.is_err());
/// });
/// ```
pub async fn read_frame<R>(
    reader: &mut R,
    max_frame_size: u32,
) -> Result<Option<Frame>, ConnectionError>
where
    R: AsyncRead + Unpin,
{
    let Some(header) = read_header(reader, max_frame_size).await? else {
        return Ok(None);
    };
    let body = read_body(reader, &header).await?;
    Ok(Some(Frame { header, body }))
}

/// Reads and validates one frame header, and nothing more.
///
/// Returns `Ok(None)` if the stream ends cleanly before its first byte.
pub(crate) async fn read_header<R>(
    reader: &mut R,
    max_frame_size: u32,
) -> Result<Option<FrameHeader>, ConnectionError>
where
    R: AsyncRead + Unpin,
{
    let mut bytes = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match reader.read(&mut bytes[filled..]).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated { part: "header" }.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(FrameHeader::decode(&bytes, max_frame_size)?))
}

/// Reads the body that `header` announces.
pub(crate) async fn read_body<R>(
    reader: &mut R,
    header: &FrameHeader,
) -> Result<Vec<u8>, ConnectionError>
where
    R: AsyncRead + Unpin,
{
    // `decode` bounded the length by the maximum frame size, so this allocation is
    // bounded too.
    let mut body = vec![0u8; usize::try_from(header.body_len).unwrap_or(usize::MAX)];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ConnectionError::Frame(FrameError::Truncated { part: "body" })
        } else {
            ConnectionError::Io(e)
        }
    })?;
    Ok(body)
}

/// Writes one frame: the header for `kind`, `request_id`, `more` and the body's length,
/// then `body`. It does not flush.
///
/// A body longer than `u32::MAX` bytes is refused with [`FrameError::FrameTooLarge`].
pub async fn write_frame<W>(
    writer: &mut W,
    kind: FrameKind,
    request_id: u64,
    more: bool,
    body: &[u8],
) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    let header = FrameHeader::carrying(kind, request_id, more, body)?;
    writer.write_all(&header.encode()).await?;
    writer.write_all(body).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(kind: FrameKind, more: bool, body_len: u32) -> FrameHeader {
        FrameHeader {
            kind,
            request_id: 42,
            more,
            body_len,
        }
    }

    fn decode_err(bytes: [u8; HEADER_LEN]) -> FrameError {
        match FrameHeader::decode(&bytes, 1024) {
            Ok(header) => panic!("{header:?} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = FrameHeader {
            kind: FrameKind::Error,
            request_id: 0x0102_0304_0506_0708,
            more: true,
            body_len: 0x0a0b_0c0d,
        }
        .encode();
        assert_eq!(
            bytes,
            [
                b'R', b'A', b'F', b'T', 5, 3, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 0x0b, 0x0c, 0x0d
            ]
        );
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let good = header(FrameKind::Request, false, 10).encode();

        let mut bad = good;
        bad[0] = b'X';
        assert!(matches!(decode_err(bad), FrameError::BadMagic { .. }));

        // Every older version (1 had no handshake, 2 no snapshot checksum) and anything
        // newer.
        for version in [1, VERSION - 1, VERSION + 1] {
            let mut bad = good;
            bad[4] = version;
            assert!(matches!(
                decode_err(bad),
                FrameError::UnsupportedVersion { found } if found == version
            ));
        }

        let mut bad = good;
        bad[5] = 0;
        assert!(matches!(
            decode_err(bad),
            FrameError::UnknownKind { found: 0 }
        ));

        let mut bad = good;
        bad[6] = 0x80;
        assert!(matches!(decode_err(bad), FrameError::UnknownFlags { .. }));

        let oversized = header(FrameKind::Request, false, 1025).encode();
        assert!(matches!(
            decode_err(oversized),
            FrameError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        ));

        let cancel_with_body = header(FrameKind::Cancel, false, 1).encode();
        assert!(matches!(
            decode_err(cancel_with_body),
            FrameError::MalformedCancel
        ));
        let cancel_with_more = header(FrameKind::Cancel, true, 0).encode();
        assert!(matches!(
            decode_err(cancel_with_more),
            FrameError::MalformedCancel
        ));
        for kind in [FrameKind::Hello, FrameKind::Welcome, FrameKind::Refusal] {
            let chunked = header(kind, true, 10).encode();
            assert!(matches!(decode_err(chunked), FrameError::ChunkedHandshake));
        }
    }

    #[test]
    fn a_bad_header_is_refused_before_its_body_is_read() {
        smol::block_on(async {
            // A header announcing a huge body, and no body at all: the reader must fail on
            // the header alone rather than wait for (or allocate) the body.
            let wire = header(FrameKind::Request, false, u32::MAX).encode();
            let result = read_frame(&mut &wire[..], 1024).await;
            assert!(matches!(
                result,
                Err(ConnectionError::Frame(FrameError::FrameTooLarge { .. }))
            ));
        });
    }

    #[test]
    fn truncation_is_reported_by_part() {
        smol::block_on(async {
            let mut wire = Vec::new();
            write_frame(&mut wire, FrameKind::Request, 1, false, b"body")
                .await
                .unwrap();
            for cut in 1..wire.len() {
                let result = read_frame(&mut &wire[..cut], 1024).await;
                let part = if cut < HEADER_LEN { "header" } else { "body" };
                match result {
                    Err(ConnectionError::Frame(FrameError::Truncated { part: p })) => {
                        assert_eq!(p, part, "cut at {cut}");
                    }
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        });
    }

    fn any_kind() -> impl Strategy<Value = FrameKind> {
        prop_oneof![
            Just(FrameKind::Request),
            Just(FrameKind::Response),
            Just(FrameKind::Error),
            Just(FrameKind::Cancel),
            Just(FrameKind::Hello),
            Just(FrameKind::Welcome),
            Just(FrameKind::Refusal),
        ]
    }

    /// Frames as a sender may produce them: cancels are empty and final.
    fn any_frame() -> impl Strategy<Value = Frame> {
        (
            any_kind(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(kind, request_id, more, body)| {
                let (more, body) = match kind {
                    FrameKind::Cancel => (false, Vec::new()),
                    kind if kind.is_handshake() => (false, body),
                    _ => (more, body),
                };
                Frame {
                    header: FrameHeader {
                        kind,
                        request_id,
                        more,
                        body_len: u32::try_from(body.len()).unwrap(),
                    },
                    body,
                }
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(frames in proptest::collection::vec(any_frame(), 0..8)) {
            let decoded = smol::block_on(async {
                let mut wire = Vec::new();
                for frame in &frames {
                    let h = frame.header;
                    write_frame(&mut wire, h.kind, h.request_id, h.more, &frame.body).await.unwrap();
                }
                let mut reader = &wire[..];
                let mut decoded = Vec::new();
                while let Some(frame) = read_frame(&mut reader, 600).await.unwrap() {
                    decoded.push(frame);
                }
                decoded
            });
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn headers_round_trip(kind in any_kind(), request_id: u64, more: bool, body_len: u32) {
            let (more, body_len) = match kind {
                FrameKind::Cancel => (false, 0),
                kind if kind.is_handshake() => (false, body_len),
                _ => (more, body_len),
            };
            let header = FrameHeader { kind, request_id, more, body_len };
            prop_assert_eq!(FrameHeader::decode(&header.encode(), u32::MAX).unwrap(), header);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            max in 0u32..4096,
        ) {
            smol::block_on(async {
                let mut reader = &bytes[..];
                // Every call consumes bytes or ends the loop, so this terminates.
                while let Ok(Some(frame)) = read_frame(&mut reader, max).await {
                    assert!(frame.body.len() <= max as usize);
                }
            });
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_prefix_never_panic_the_decoder(
            kind in 0u8..9,
            flags: u16,
            body_len in 0u32..3000,
            rest in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            // Starts like a frame so that the fuzzing reaches past the magic check.
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(kind);
            bytes.extend_from_slice(&flags.to_be_bytes());
            bytes.extend_from_slice(&7u64.to_be_bytes());
            bytes.extend_from_slice(&body_len.to_be_bytes());
            bytes.extend_from_slice(&rest);
            smol::block_on(async {
                let mut reader = &bytes[..];
                while let Ok(Some(frame)) = read_frame(&mut reader, 2048).await {
                    assert!(frame.body.len() <= 2048);
                }
            });
        }
    }
}
