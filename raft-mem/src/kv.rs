//! [`KvStateMachine`]: a string key-value store as a replicated [`StateMachine`].

use std::collections::BTreeMap;
use std::sync::Arc;

use raft_traits::{
    Bytes, BytesReader, Codec, LogId, Postcard, Snapshot, SnapshotJob, SnapshotMeta,
    SnapshotReader, SnapshotSource, SnapshotWriter, StateMachine, StateMachineError, async_trait,
};
use serde::{Deserialize, Serialize};

/// A command of the key-value store.
///
/// Keys and values are shared strings (`Arc<str>`): the leader hands the same command to
/// its log, to every peer's AppendEntries and to the state machine, and each of those
/// hand-offs is a reference-count increment, never a copy of the text. Build them from
/// `&str` or `String` with `.into()`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`. Answered with [`KvResponse::Replaced`].
    Put {
        /// The key to set.
        key: Arc<str>,
        /// Its new value.
        value: Arc<str>,
    },
    /// Reads `key`. Answered with [`KvResponse::Value`]. Reading through the log makes the
    /// read linearizable.
    Get {
        /// The key to read.
        key: Arc<str>,
    },
    /// Removes `key`. Answered with [`KvResponse::Removed`].
    Delete {
        /// The key to remove.
        key: Arc<str>,
    },
}

/// What applying a [`KvCommand`] returns.
///
/// Every variant carries the value the key held *before* the command, so a client can tell
/// a create from an overwrite, and a delete of a missing key from a real one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvResponse {
    /// The answer to [`KvCommand::Get`]: the key's value, `None` if it is not set.
    Value(Option<Arc<str>>),
    /// The answer to [`KvCommand::Put`]: the value it overwrote, `None` if the key was new.
    Replaced(Option<Arc<str>>),
    /// The answer to [`KvCommand::Delete`]: the value it removed, `None` if the key was not
    /// set.
    Removed(Option<Arc<str>>),
    /// The command's log position is not after the last applied one, so it was not applied
    /// again (the state already includes it). Raft never does this; the state machine
    /// guards against it so that it never moves backwards.
    AlreadyApplied {
        /// The last applied command when this one arrived.
        last_applied: LogId,
    },
}

/// A key-value store of strings, replicated by Raft.
///
/// It keeps the data in an ordered map (so snapshots are deterministic) and remembers the
/// log id of the last command it applied. A snapshot is the postcard encoding of the map
/// (the bytes a [`BTreeMap`] of the same entries encodes to), with `meta.last_included`
/// set to that log id.
///
/// The map is a persistent B-tree ([`imbl::OrdMap`]), so
/// [`capture_snapshot_stream`](StateMachine::capture_snapshot_stream) (and
/// [`capture_snapshot`](StateMachine::capture_snapshot)) only share its root: the
/// snapshot is encoded on its own task while commands keep applying. A write while an
/// encoding still holds the map copies the few nodes on its own path, not the map. (With a
/// copy-on-write `Arc<BTreeMap>`, the first write after each capture copied every node,
/// stalling the apply task for a time proportional to the number of keys.)
/// The streamed encoding goes to storage in pieces of about 64 KiB, and
/// [`restore_from`](StateMachine::restore_from) decodes it from pieces of that size, so
/// neither taking nor restoring a snapshot needs memory for the encoded map whole.
///
/// ```
/// use raft_mem::{KvCommand, KvResponse, KvStateMachine};
/// use raft_traits::{LogId, LogIndex, StateMachine, Term};
///
/// let mut kv = KvStateMachine::new();
/// let at = |index| LogId::new(Term(1), LogIndex(index));
/// futures::executor::block_on(async {
///     let put = KvCommand::Put { key: "x".into(), value: "1".into() };
///     assert_eq!(kv.apply(at(1), put).await, KvResponse::Replaced(None));
///     let get = KvCommand::Get { key: "x".into() };
///     assert_eq!(kv.apply(at(2), get).await, KvResponse::Value(Some("1".into())));
/// });
/// assert_eq!(kv.get("x"), Some("1"));
/// assert_eq!(kv.last_applied(), at(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    data: Map,
    last_applied: LogId,
}

/// The store's map; cloning it shares its nodes (see [`KvStateMachine`]).
type Map = imbl::OrdMap<Arc<str>, Arc<str>>;

/// About how many bytes of encoded entries the streamed snapshot writes at a time.
const SNAPSHOT_PIECE: usize = 64 * 1024;

/// The map captured for a snapshot, which encodes itself into storage entry by entry.
struct CapturedMap(Map);

#[async_trait]
impl SnapshotSource for CapturedMap {
    async fn write_to(
        self: Box<Self>,
        out: &mut dyn SnapshotWriter,
    ) -> Result<(), StateMachineError> {
        let mut piece = Vec::with_capacity(SNAPSHOT_PIECE);
        encode_len(&self.0, &mut piece)?;
        for entry in self.0.iter() {
            encode_entry(entry, &mut piece)?;
            if piece.len() >= SNAPSHOT_PIECE {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(SNAPSHOT_PIECE));
                out.write(Bytes::from(full)).await?;
            }
        }
        out.write(Bytes::from(piece)).await?;
        Ok(())
    }
}

// A snapshot's bytes are postcard's encoding of a map: its length (a varint), then each
// key and value in key order. These two write it entry by entry.

/// Appends the map's length to `out`.
fn encode_len(data: &Map, out: &mut Vec<u8>) -> Result<(), StateMachineError> {
    Postcard
        .encode_into(&data.len(), out)
        .map_err(|e| StateMachineError::Other(Box::new(e)))
}

/// Appends one key and its value to `out`.
fn encode_entry(entry: (&Arc<str>, &Arc<str>), out: &mut Vec<u8>) -> Result<(), StateMachineError> {
    Postcard
        .encode_into(&entry, out)
        .map_err(|e| StateMachineError::Other(Box::new(e)))
}

/// Encodes `data` as a snapshot covering `last_included`.
fn encode(data: &Map, last_included: LogId) -> Result<Snapshot, StateMachineError> {
    let mut bytes = Vec::new();
    encode_len(data, &mut bytes)?;
    for entry in data.iter() {
        encode_entry(entry, &mut bytes)?;
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_included,
            membership: Default::default(),
        },
        data: Bytes::from(bytes),
    })
}

/// How many bytes of a snapshot a restore reads at a time.
const RESTORE_PIECE: usize = 64 * 1024;

/// The map encoded in `reader`'s data, read `piece` bytes at a time: postcard's map,
/// its length then each key and value, decoded as the bytes arrive.
async fn decode_map_from(
    reader: &dyn SnapshotReader,
    piece: usize,
) -> Result<Map, StateMachineError> {
    let mut input = Pieces {
        reader,
        piece: piece.max(1),
        read: 0,
        buffer: Vec::new(),
        start: 0,
    };
    let len: usize = input.next().await?;
    let mut map = Map::new();
    for _ in 0..len {
        // As decoding the map whole would: a later duplicate key replaces an earlier.
        let (key, value): (Arc<str>, Arc<str>) = input.next().await?;
        map.insert(key, value);
    }
    if input.start < input.buffer.len() || input.read < reader.len() {
        return Err(StateMachineError::InvalidSnapshot(
            "bytes after the key-value map".to_owned(),
        ));
    }
    Ok(map)
}

/// A snapshot's data as it is read: what was read and not yet decoded is
/// `buffer[start..]`.
struct Pieces<'a> {
    reader: &'a dyn SnapshotReader,
    piece: usize,
    /// How much of the data was read.
    read: u64,
    buffer: Vec<u8>,
    start: usize,
}

impl Pieces<'_> {
    /// Decodes the next value, reading more of the data while it is cut short.
    async fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, StateMachineError> {
        loop {
            match postcard::take_from_bytes::<T>(&self.buffer[self.start..]) {
                Ok((value, rest)) => {
                    self.start = self.buffer.len() - rest.len();
                    return Ok(value);
                }
                Err(postcard::Error::DeserializeUnexpectedEnd) if self.read < self.reader.len() => {
                    // Drop what was decoded before reading on, so the buffer holds at
                    // most a piece and the rest of one value.
                    self.buffer.drain(..self.start);
                    self.start = 0;
                    let more = self.reader.read_at(self.read, self.piece).await?;
                    if more.is_empty() {
                        return Err(StateMachineError::InvalidSnapshot(format!(
                            "the snapshot's data ended at {} of {}",
                            self.read,
                            self.reader.len()
                        )));
                    }
                    self.read = self.read.saturating_add(more.len() as u64);
                    self.buffer.extend_from_slice(&more);
                }
                Err(error) => return Err(StateMachineError::InvalidSnapshot(error.to_string())),
            }
        }
    }
}

impl KvStateMachine {
    /// An empty store that has applied nothing.
    pub fn new() -> Self {
        KvStateMachine::default()
    }

    /// The value of `key`, if it is set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(|value| &**value)
    }

    /// How many keys are set.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The log id of the last applied command, or of the restored snapshot if no command
    /// was applied since; the default id if neither.
    pub fn last_applied(&self) -> LogId {
        self.last_applied
    }
}

impl StateMachine<KvCommand> for KvStateMachine {
    type Response = KvResponse;

    async fn apply(&mut self, log_id: LogId, command: KvCommand) -> KvResponse {
        if log_id.index <= self.last_applied.index {
            tracing::warn!(%log_id, last_applied = %self.last_applied, "command already applied");
            return KvResponse::AlreadyApplied {
                last_applied: self.last_applied,
            };
        }
        self.last_applied = log_id;
        match command {
            KvCommand::Put { key, value } => KvResponse::Replaced(self.data.insert(key, value)),
            KvCommand::Get { key } => KvResponse::Value(self.data.get(&key).cloned()),
            KvCommand::Delete { key } => KvResponse::Removed(self.data.remove(&key)),
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, StateMachineError> {
        encode(&self.data, self.last_applied)
    }

    fn capture_snapshot(&mut self) -> Option<SnapshotJob> {
        let data = self.data.clone();
        let last_included = self.last_applied;
        Some(Box::pin(async move { encode(&data, last_included) }))
    }

    fn capture_snapshot_stream(&mut self) -> Option<Box<dyn SnapshotSource>> {
        Some(Box::new(CapturedMap(self.data.clone())))
    }

    async fn restore(&mut self, snapshot: Snapshot) -> Result<(), StateMachineError> {
        let offered = snapshot.meta.last_included;
        StateMachineError::unless_newer(self.last_applied, offered)?;
        // Decoded as a restore from a reader does, straight into the map.
        self.data = decode_map_from(&BytesReader(snapshot.data), RESTORE_PIECE).await?;
        self.last_applied = offered;
        Ok(())
    }

    /// Decodes the map entry by entry from pieces of `reader`, so a restore holds the
    /// map being built and at most a piece of its encoding, never the encoding whole.
    /// It accepts exactly the bytes [`restore`](StateMachine::restore) accepts.
    async fn restore_from(
        &mut self,
        meta: SnapshotMeta,
        reader: Arc<dyn SnapshotReader>,
    ) -> Result<(), StateMachineError> {
        let offered = meta.last_included;
        StateMachineError::unless_newer(self.last_applied, offered)?;
        self.data = decode_map_from(reader.as_ref(), RESTORE_PIECE).await?;
        self.last_applied = offered;
        Ok(())
    }

    fn check_snapshot(snapshot: &Snapshot) -> Result<(), StateMachineError> {
        Postcard
            .decode::<BTreeMap<Arc<str>, Arc<str>>>(&snapshot.data)
            .map(|_| ())
            .map_err(|e| StateMachineError::InvalidSnapshot(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use raft_traits::{LogIndex, Term};

    use super::*;

    fn at(term: u64, index: u64) -> LogId {
        LogId::new(Term(term), LogIndex(index))
    }

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn get(key: &str) -> KvCommand {
        KvCommand::Get { key: key.into() }
    }

    fn delete(key: &str) -> KvCommand {
        KvCommand::Delete { key: key.into() }
    }

    fn some(value: &str) -> Option<Arc<str>> {
        Some(value.into())
    }

    #[test]
    fn commands_answer_with_the_previous_value() {
        let mut kv = KvStateMachine::new();
        block_on(async {
            assert_eq!(kv.apply(at(1, 1), get("a")).await, KvResponse::Value(None));
            assert_eq!(
                kv.apply(at(1, 2), put("a", "1")).await,
                KvResponse::Replaced(None)
            );
            assert_eq!(
                kv.apply(at(1, 3), put("a", "2")).await,
                KvResponse::Replaced(some("1"))
            );
            assert_eq!(
                kv.apply(at(1, 4), get("a")).await,
                KvResponse::Value(some("2"))
            );
            assert_eq!(
                kv.apply(at(2, 5), delete("a")).await,
                KvResponse::Removed(some("2"))
            );
            assert_eq!(
                kv.apply(at(2, 6), delete("a")).await,
                KvResponse::Removed(None)
            );
        });
        assert!(kv.is_empty());
        assert_eq!(kv.last_applied(), at(2, 6));
    }

    #[test]
    fn accessors_see_the_applied_state() {
        let mut kv = KvStateMachine::new();
        block_on(async {
            kv.apply(at(1, 1), put("a", "1")).await;
            kv.apply(at(1, 2), put("b", "2")).await;
        });
        assert_eq!(kv.get("a"), Some("1"));
        assert_eq!(kv.get("c"), None);
        assert_eq!(kv.len(), 2);
        assert_eq!(kv.last_applied(), at(1, 2));
    }

    #[test]
    fn a_command_at_or_before_the_applied_state_is_not_applied_again() {
        let mut kv = KvStateMachine::new();
        block_on(async {
            kv.apply(at(1, 2), put("a", "1")).await;
            let again = kv.apply(at(1, 2), put("a", "2")).await;
            assert_eq!(
                again,
                KvResponse::AlreadyApplied {
                    last_applied: at(1, 2)
                }
            );
            let older = kv.apply(at(1, 1), delete("a")).await;
            assert!(matches!(older, KvResponse::AlreadyApplied { .. }));
        });
        assert_eq!(kv.get("a"), Some("1"));
        assert_eq!(kv.last_applied(), at(1, 2));
    }

    #[test]
    fn a_snapshot_restores_into_an_equal_state() {
        let mut kv = KvStateMachine::new();
        let snapshot = block_on(async {
            kv.apply(at(1, 1), put("a", "1")).await;
            kv.apply(at(1, 2), put("b", "2")).await;
            kv.apply(at(2, 3), delete("a")).await;
            kv.snapshot().await.unwrap()
        });
        assert_eq!(snapshot.meta.last_included, at(2, 3));

        let mut restored = KvStateMachine::new();
        block_on(restored.restore(snapshot)).unwrap();
        assert_eq!(restored, kv);
        // Applying continues after the snapshot.
        let reply = block_on(restored.apply(at(2, 4), get("b")));
        assert_eq!(reply, KvResponse::Value(some("2")));
    }

    /// The snapshot format is postcard's encoding of the entries as a `BTreeMap`, which
    /// snapshots stored by earlier versions hold.
    #[test]
    fn a_snapshot_is_the_maps_encoding_as_a_btreemap() {
        let mut kv = KvStateMachine::new();
        let mut expected = BTreeMap::<Arc<str>, Arc<str>>::new();
        block_on(async {
            for (i, key) in ["m", "b", "x", "a", "q"].into_iter().enumerate() {
                let value = format!("value of {key}");
                kv.apply(at(1, i as u64 + 1), put(key, &value)).await;
                expected.insert(key.into(), value.into());
            }
        });
        let snapshot = block_on(kv.snapshot()).unwrap();
        assert_eq!(snapshot.data, Postcard.encode(&expected).unwrap());
    }

    #[test]
    fn the_streamed_snapshot_is_the_whole_encoding_in_pieces() {
        let mut kv = KvStateMachine::new();
        block_on(async {
            // Enough entries for several pieces.
            for i in 1..=20_000u64 {
                let value = format!("{i:0>8}");
                kv.apply(at(1, i), put(&format!("key{i}"), &value)).await;
            }
        });
        let whole = block_on(kv.snapshot()).unwrap();
        let source = kv.capture_snapshot_stream().expect("the KV store streams");
        // Applies after the capture do not reach the captured state.
        block_on(kv.apply(at(1, 20_001), put("key1", "changed")));
        let mut collected = raft_traits::BufferWriter::new(SnapshotMeta::default());
        block_on(source.write_to(&mut collected)).unwrap();
        let count = collected.pieces();
        assert!(
            count > 3,
            "{} bytes came in {count} pieces",
            whole.data.len()
        );
        assert!(collected.data() == whole.data, "the streamed bytes differ");
    }

    /// A restore from a reader decodes the map piece by piece, whatever the piece size,
    /// into what a whole restore gives, and refuses what a whole restore refuses.
    #[test]
    fn a_restore_from_a_reader_decodes_the_map_in_pieces() {
        let mut kv = KvStateMachine::new();
        block_on(async {
            for i in 1..=300u64 {
                let value = "v".repeat(i as usize % 40);
                kv.apply(at(1, i), put(&format!("key{i}"), &value)).await;
            }
        });
        let snapshot = block_on(kv.snapshot()).unwrap();
        for piece in [1, 7, 100, 64 * 1024] {
            let reader = raft_traits::BytesReader(snapshot.data.clone());
            let map = block_on(decode_map_from(&reader, piece)).unwrap();
            assert!(map == kv.data, "piece size {piece}");
        }
        let mut restored = KvStateMachine::new();
        let reader = raft_traits::BytesReader::shared(snapshot.data.clone());
        block_on(restored.restore_from(snapshot.meta.clone(), reader)).unwrap();
        assert_eq!(restored, kv);

        let whole = snapshot.data.to_vec();
        let mut trailing = whole.clone();
        trailing.push(0);
        let mut long_count = whole.clone();
        long_count[0] = 0xff; // the count's first varint byte: more entries than there are
        let cases = [
            ("cut short", whole[..whole.len() - 5].to_vec()),
            ("a byte after the map", trailing),
            ("a count beyond the entries", long_count),
            ("not a map", b"\xff\xff\xff".to_vec()),
        ];
        for (what, data) in cases {
            let offered = Snapshot {
                meta: snapshot.meta.clone(),
                data: Bytes::from(data),
            };
            let mut whole_restore = KvStateMachine::new();
            assert!(
                block_on(whole_restore.restore(offered.clone())).is_err(),
                "{what}"
            );
            for piece in [1, 7, 64 * 1024] {
                let reader = raft_traits::BytesReader(offered.data.clone());
                let error = block_on(decode_map_from(&reader, piece)).unwrap_err();
                assert!(
                    matches!(error, StateMachineError::InvalidSnapshot(_)),
                    "{what}, piece {piece}: {error}"
                );
            }
        }
    }

    #[test]
    fn a_captured_snapshot_is_the_state_at_capture() {
        let mut kv = KvStateMachine::new();
        let (job, at_capture) = block_on(async {
            kv.apply(at(1, 1), put("a", "1")).await;
            kv.apply(at(1, 2), put("b", "2")).await;
            let at_capture = kv.snapshot().await.unwrap();
            (
                kv.capture_snapshot().expect("the KV store captures"),
                at_capture,
            )
        });
        // Applies after the capture do not reach the captured state.
        block_on(async {
            kv.apply(at(1, 3), put("a", "changed")).await;
            kv.apply(at(1, 4), delete("b")).await;
            kv.apply(at(1, 5), put("c", "3")).await;
        });
        let captured = block_on(job).unwrap();
        assert_eq!(captured, at_capture);
        assert_eq!(kv.get("a"), Some("changed"));
        assert_eq!(kv.get("b"), None);
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn a_snapshot_not_newer_than_the_state_is_stale() {
        let mut kv = KvStateMachine::new();
        let old = block_on(async {
            kv.apply(at(1, 1), put("a", "1")).await;
            let old = kv.snapshot().await.unwrap();
            kv.apply(at(1, 2), put("a", "2")).await;
            old
        });
        let same = block_on(kv.snapshot()).unwrap();
        for stale in [old, same] {
            let err = block_on(kv.restore(stale)).unwrap_err();
            assert!(matches!(err, StateMachineError::Stale { applied, .. } if applied == at(1, 2)));
        }
        assert_eq!(kv.get("a"), Some("2"));
    }

    #[test]
    fn an_empty_snapshot_at_index_zero_is_stale_for_a_fresh_store() {
        let mut kv = KvStateMachine::new();
        let err = block_on(kv.restore(Snapshot::default())).unwrap_err();
        assert!(matches!(err, StateMachineError::Stale { .. }));
    }

    #[test]
    fn undecodable_snapshot_bytes_are_rejected_and_change_nothing() {
        let mut kv = KvStateMachine::new();
        block_on(kv.apply(at(1, 1), put("a", "1")));
        for data in [&[0xff, 0xff, 0xff][..], &[1, 1, b'a'][..], &[0, 0][..]] {
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_included: at(3, 9),
                    membership: Default::default(),
                },
                data: Bytes::copy_from_slice(data),
            };
            let err = block_on(kv.restore(snapshot)).unwrap_err();
            assert!(
                matches!(err, StateMachineError::InvalidSnapshot(_)),
                "{data:?}"
            );
        }
        assert_eq!(kv.get("a"), Some("1"));
        assert_eq!(kv.last_applied(), at(1, 1));
    }
}
