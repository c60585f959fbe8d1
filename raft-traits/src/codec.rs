//! Turning messages, entries and state into bytes and back.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A serialization format for everything Raft sends or stores.
///
/// Transports encode [`Request`](crate::Request)s and [`Response`](crate::Response)s with
/// it; storage backends encode entries and hard state with it. Decoding must never panic:
/// bytes from the network or from disk are untrusted, and bad bytes are a
/// [`CodecError`].
pub trait Codec: Clone + Send + Sync + 'static {
    /// Serializes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError>;

    /// Serializes `value` by appending to `buffer`.
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buffer: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        buffer.extend_from_slice(&self.encode(value)?);
        Ok(())
    }

    /// Deserializes a value that must span all of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Why encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// The bytes hold a valid value followed by unexpected extra bytes.
    #[error("{0} unexpected bytes after the value")]
    TrailingBytes(usize),
}

/// The default codec: [postcard](https://docs.rs/postcard), a compact, stable binary
/// format.
///
/// ```
/// use raft_traits::{Codec, Postcard, Term};
///
/// let bytes = Postcard.encode(&Term(7)).unwrap();
/// let term: Term = Postcard.decode(&bytes).unwrap();
/// assert_eq!(term, Term(7));
/// assert!(Postcard.decode::<Term>(&[0xff, 0xff]).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Postcard;

impl Codec for Postcard {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        // Room for a typical message (a request with an entry or two, a reply) from the
        // start: grown from empty, the vector was reallocated at 8, 16, 32, ... bytes,
        // several times per message.
        const START: usize = 256;
        postcard::to_extend(value, Vec::with_capacity(START))
            .map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buffer: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        postcard::to_io(value, buffer)
            .map(|_| ())
            .map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
        if rest.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::TrailingBytes(rest.len()))
        }
    }
}
