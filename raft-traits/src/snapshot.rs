//! Snapshot data without holding it whole: a descriptor that names it, a reader that
//! serves it in pieces, and the running checksum that both ends compute over it.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::StorageError;
use crate::types::{LogId, Snapshot, SnapshotMeta};

/// Describes a snapshot without its bytes: what it covers, how long its data is, and
/// the checksum of that data ([`SnapshotChecksum`]).
///
/// This is all Raft's core keeps of a snapshot; the bytes stay in storage and move in
/// bounded pieces through a [`SnapshotReader`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotDescriptor {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The length of the data in bytes.
    pub size: u64,
    /// The [`SnapshotChecksum`] of the data (equal to [`Snapshot::checksum`]).
    pub checksum: u32,
}

impl SnapshotDescriptor {
    /// The id of the last entry the snapshot covers.
    pub fn last_included(&self) -> LogId {
        self.meta.last_included
    }
}

impl Snapshot {
    /// The descriptor of this snapshot: its meta, size and checksum.
    ///
    /// ```
    /// use raft_traits::{Bytes, Snapshot};
    ///
    /// let mut snapshot = Snapshot::default();
    /// snapshot.data = Bytes::from_static(b"state");
    /// let descriptor = snapshot.descriptor();
    /// assert_eq!(descriptor.size, 5);
    /// assert_eq!(descriptor.checksum, snapshot.checksum());
    /// ```
    pub fn descriptor(&self) -> SnapshotDescriptor {
        SnapshotDescriptor {
            meta: self.meta.clone(),
            size: self.data.len() as u64,
            checksum: self.checksum(),
        }
    }
}

/// The CRC-32 (IEEE) of a snapshot computed piece by piece: over the last included term
/// and index (little-endian), then the data in order. Feeding the whole data at once
/// gives [`Snapshot::checksum`].
///
/// ```
/// use raft_traits::{Bytes, Snapshot, SnapshotChecksum};
///
/// let mut snapshot = Snapshot::default();
/// snapshot.data = Bytes::from_static(b"some state");
/// let mut running = SnapshotChecksum::new(snapshot.meta.last_included);
/// running.update(b"some ");
/// running.update(b"state");
/// assert_eq!(running.value(), snapshot.checksum());
/// ```
#[derive(Clone, Debug)]
pub struct SnapshotChecksum {
    hasher: crc32fast::Hasher,
}

impl SnapshotChecksum {
    /// A checksum over no data yet, for a snapshot that covers up to `last_included`.
    pub fn new(last_included: LogId) -> SnapshotChecksum {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&last_included.term.0.to_le_bytes());
        hasher.update(&last_included.index.0.to_le_bytes());
        SnapshotChecksum { hasher }
    }

    /// Continues a checksum whose [`value`](Self::value) so far was `value`: adding the
    /// rest of the data to it gives the checksum of the whole.
    ///
    /// ```
    /// use raft_traits::{LogId, SnapshotChecksum};
    ///
    /// let mut whole = SnapshotChecksum::new(LogId::default());
    /// whole.update(b"first half, second half");
    /// let mut first = SnapshotChecksum::new(LogId::default());
    /// first.update(b"first half");
    /// let mut resumed = SnapshotChecksum::resume(first.value());
    /// resumed.update(b", second half");
    /// assert_eq!(resumed.value(), whole.value());
    /// ```
    pub fn resume(value: u32) -> SnapshotChecksum {
        SnapshotChecksum {
            hasher: crc32fast::Hasher::new_with_initial(value),
        }
    }

    /// Adds the next piece of data.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// The checksum of everything added so far.
    pub fn value(&self) -> u32 {
        self.hasher.clone().finalize()
    }
}

/// Reads a stored snapshot's data in pieces, at any offset, without holding it whole.
///
/// A reader is independent of the [`Storage`](crate::Storage) that opened it: it keeps
/// serving the snapshot it was opened on even after the store has replaced that
/// snapshot with a newer one (a file store keeps the old file open; an in-memory store
/// keeps a reference to the old bytes). It is shared as an `Arc<dyn SnapshotReader>`
/// and may serve several reads at once.
#[async_trait]
pub trait SnapshotReader: Send + Sync + Debug + 'static {
    /// The length of the data in bytes.
    fn len(&self) -> u64;

    /// Whether the data is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `max_len` bytes starting at `offset`: exactly
    /// `min(max_len, len() - offset)` bytes, so an empty result means `offset == len()`.
    /// An `offset` past `len()` is [`StorageError::SnapshotRange`].
    ///
    /// Like every storage call it must not block the executor's thread (run file reads
    /// on a blocking pool).
    async fn read_at(&self, offset: u64, max_len: usize) -> Result<Bytes, StorageError>;
}

/// A [`SnapshotReader`] over bytes held in memory.
#[derive(Clone, Debug, Default)]
pub struct BytesReader(pub Bytes);

impl BytesReader {
    /// A reader over `data`, shared.
    pub fn shared(data: Bytes) -> Arc<dyn SnapshotReader> {
        Arc::new(BytesReader(data))
    }
}

#[async_trait]
impl SnapshotReader for BytesReader {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    async fn read_at(&self, offset: u64, max_len: usize) -> Result<Bytes, StorageError> {
        let len = self.0.len();
        let start = usize::try_from(offset)
            .ok()
            .filter(|start| *start <= len)
            .ok_or(StorageError::SnapshotRange {
                offset,
                len: len as u64,
            })?;
        let end = start.saturating_add(max_len).min(len);
        Ok(self.0.slice(start..end))
    }
}

/// Reads the whole data of `reader` into memory, in pieces of `piece` bytes (at least
/// one): the bridge to APIs that take a whole [`Snapshot`].
pub async fn read_all(reader: &dyn SnapshotReader, piece: usize) -> Result<Bytes, StorageError> {
    let len = reader.len();
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut offset = 0u64;
    while offset < len {
        let bytes = reader.read_at(offset, piece.max(1)).await?;
        if bytes.is_empty() {
            return Err(StorageError::SnapshotRange { offset, len });
        }
        offset = offset.saturating_add(bytes.len() as u64);
        data.extend_from_slice(&bytes);
    }
    Ok(Bytes::from(data))
}

/// A snapshot being written in pieces whose writes survived: reported by
/// [`Storage::pending_snapshot`](crate::Storage::pending_snapshot) so that a restarted
/// follower resumes a transfer where it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSnapshot {
    /// The snapshot being written.
    pub descriptor: SnapshotDescriptor,
    /// How many bytes of its data are stored: the offset the next write must start at.
    pub written: u64,
    /// The [`SnapshotChecksum`] of those bytes, so that a restarted server continues it
    /// ([`SnapshotChecksum::resume`]) instead of reading them back.
    pub checksum: u32,
}

/// Where a snapshot the server takes itself is written, piece by piece, apart from the
/// store: [`Storage::create_snapshot`](crate::Storage::create_snapshot) opens one for a
/// [`SnapshotMeta`], the state machine writes its data into it on a task of its own
/// while Raft goes on using the store, and [`finish`](SnapshotWriter::finish) returns
/// the [`StagedSnapshot`] that
/// [`Storage::save_staged_snapshot`](crate::Storage::save_staged_snapshot) installs.
///
/// Nothing written is the stored snapshot before that: a writer dropped unfinished, or a
/// staged snapshot never saved, leaves the stored snapshot and log as they were (a
/// backend on disk removes what it wrote).
///
/// A writer need not be `'static`: a [`SnapshotSource`](crate::SnapshotSource) may hand
/// the one it is lent on wrapped in one that borrows it (to count the bytes, say).
#[async_trait]
pub trait SnapshotWriter: Send {
    /// Appends `data` to the snapshot's data. It need not be durable before
    /// [`finish`](SnapshotWriter::finish).
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError>;

    /// Makes everything written durable and returns it, staged: complete, described
    /// (size and checksum of what was written), and not yet the stored snapshot.
    async fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError>;
}

/// A snapshot written through a [`SnapshotWriter`] and finished, ready for
/// [`Storage::save_staged_snapshot`](crate::Storage::save_staged_snapshot) of the store
/// that created it.
pub struct StagedSnapshot {
    /// What the written data is: its meta, size and checksum.
    pub descriptor: SnapshotDescriptor,
    /// Where the backend that staged it keeps the data (a file, a buffer); only that
    /// backend reads it, by downcasting.
    pub data: Box<dyn std::any::Any + Send>,
}

impl Debug for StagedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedSnapshot")
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

impl StagedSnapshot {
    /// The staged data of a [`BufferWriter`], as a whole [`Snapshot`]; `None` if
    /// another kind of writer staged it.
    pub fn into_buffered(self) -> Option<Snapshot> {
        let data = self.data.downcast::<Bytes>().ok()?;
        Some(Snapshot {
            meta: self.descriptor.meta,
            data: *data,
        })
    }
}

/// The [`SnapshotWriter`] of a store that keeps snapshots in memory: it collects the
/// data into one buffer. [`Storage::create_snapshot`](crate::Storage::create_snapshot)'s
/// default returns it.
///
/// ```
/// use raft_traits::{BufferWriter, Bytes, SnapshotMeta, SnapshotWriter};
///
/// futures::executor::block_on(async {
///     let mut writer: Box<dyn SnapshotWriter> = Box::new(BufferWriter::new(SnapshotMeta::default()));
///     writer.write(Bytes::from_static(b"some ")).await.unwrap();
///     writer.write(Bytes::from_static(b"state")).await.unwrap();
///     let staged = writer.finish().await.unwrap();
///     assert_eq!(staged.descriptor.size, 10);
///     let snapshot = staged.into_buffered().unwrap();
///     assert_eq!(&snapshot.data[..], b"some state");
///     assert_eq!(snapshot.checksum(), snapshot.descriptor().checksum);
/// });
/// ```
#[derive(Debug)]
pub struct BufferWriter {
    meta: SnapshotMeta,
    data: Vec<u8>,
    pieces: usize,
}

impl BufferWriter {
    /// An empty buffer for a snapshot described by `meta`.
    pub fn new(meta: SnapshotMeta) -> BufferWriter {
        BufferWriter {
            meta,
            data: Vec::new(),
            pieces: 0,
        }
    }

    /// The data written so far.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// How many non-empty writes brought it: the pieces a
    /// [`SnapshotSource`](crate::SnapshotSource) wrote, for checking that it streams.
    pub fn pieces(&self) -> usize {
        self.pieces
    }
}

#[async_trait]
impl SnapshotWriter for BufferWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if !data.is_empty() {
            self.pieces += 1;
        }
        self.data.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        let snapshot = Snapshot {
            meta: self.meta,
            data: Bytes::from(self.data),
        };
        Ok(StagedSnapshot {
            descriptor: snapshot.descriptor(),
            data: Box::new(snapshot.data),
        })
    }
}
