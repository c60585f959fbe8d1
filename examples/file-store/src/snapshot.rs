//! The snapshot file, written and read in pieces.
//!
//! ```text
//! | crc32 of the rest of the header: u32 LE | body length: u32 LE | body: the encoded
//!   SnapshotDescriptor | data (descriptor.size bytes) |
//! ```
//!
//! The data is covered by the descriptor's checksum ([`SnapshotChecksum`]), checked when
//! a pending snapshot is finished and when a store is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use raft_traits::{
    Bytes, Codec, SnapshotChecksum, SnapshotDescriptor, SnapshotReader, StorageError, async_trait,
};

use crate::files;

/// The file a snapshot is written to before it replaces the stored one.
pub(crate) const PENDING: &str = "snapshot.pending";
/// The stored snapshot's file.
const STORED: &str = "snapshot";
/// The piece size for reading the data back to check it.
const CHECK_PIECE: usize = 1 << 20;

/// The header of a snapshot file holding `descriptor`.
pub(crate) fn encode_header<K: Codec>(
    descriptor: &SnapshotDescriptor,
    codec: &K,
) -> Result<Vec<u8>, StorageError> {
    let body = codec.encode(descriptor)?;
    let len = u32::try_from(body.len())
        .map_err(|_| StorageError::Corrupt("snapshot descriptor too large".to_owned()))?;
    let mut rest = Vec::with_capacity(4 + body.len());
    rest.extend_from_slice(&len.to_le_bytes());
    rest.extend_from_slice(&body);
    let mut header = Vec::with_capacity(4 + rest.len());
    header.extend_from_slice(&crc32fast::hash(&rest).to_le_bytes());
    header.extend_from_slice(&rest);
    Ok(header)
}

/// Reads the header of a snapshot file: its descriptor and where the data starts.
fn read_header<K: Codec>(
    file: &mut File,
    name: &str,
    codec: &K,
) -> Result<(SnapshotDescriptor, u64), StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("{name}: {what}"));
    let mut fixed = [0u8; 8];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut fixed)
        .map_err(|_| corrupt("truncated header"))?;
    let (crc, len) = fixed.split_at(4);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| corrupt("header"))?);
    let len_bytes: [u8; 4] = len.try_into().map_err(|_| corrupt("header"))?;
    let len = u32::from_le_bytes(len_bytes);
    // A descriptor is a few hundred bytes; refuse to allocate for a corrupt length.
    if len > 1 << 20 {
        return Err(corrupt("header length out of range"));
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact(&mut body)
        .map_err(|_| corrupt("truncated header"))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(&body);
    if hasher.finalize() != crc {
        return Err(corrupt("header checksum mismatch"));
    }
    let descriptor: SnapshotDescriptor = codec.decode(&body)?;
    Ok((descriptor, 8 + u64::from(len)))
}

/// The checksum of the data from `data_start` to the end of `file`, and its length,
/// read in bounded pieces.
fn checksum_data(
    file: &mut File,
    data_start: u64,
    descriptor: &SnapshotDescriptor,
) -> io::Result<(SnapshotChecksum, u64)> {
    let mut checksum = SnapshotChecksum::new(descriptor.meta.last_included);
    file.seek(SeekFrom::Start(data_start))?;
    let mut buffer = vec![0u8; CHECK_PIECE];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((checksum, total));
        }
        checksum.update(&buffer[..n]);
        total += n as u64;
    }
}

/// Opens the file, or `None` if it does not exist.
fn open_existing(path: &Path) -> Result<Option<File>, StorageError> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The stored snapshot's descriptor, after checking its data against it.
pub(crate) fn read_stored<K: Codec>(
    dir: &Path,
    codec: &K,
) -> Result<Option<SnapshotDescriptor>, StorageError> {
    let Some(mut file) = open_existing(&dir.join(STORED))? else {
        return Ok(None);
    };
    let (descriptor, data_start) = read_header(&mut file, STORED, codec)?;
    let (checksum, len) = checksum_data(&mut file, data_start, &descriptor)?;
    if len != descriptor.size || checksum.value() != descriptor.checksum {
        return Err(StorageError::Corrupt(format!(
            "{STORED}: data does not match its descriptor ({len} of {} bytes, checksum \
             {:#010x} instead of {:#010x})",
            descriptor.size,
            checksum.value(),
            descriptor.checksum
        )));
    }
    Ok(Some(descriptor))
}

/// The pending snapshot a crash left, if its header made it to disk; a torn header (a
/// crash during `begin_snapshot`, which never returned) is removed.
pub(crate) fn recover_pending<K: Codec>(
    dir: &Path,
    codec: &K,
) -> Result<Option<Pending>, StorageError> {
    let path = dir.join(PENDING);
    let Some(mut file) = open_existing(&path)? else {
        return Ok(None);
    };
    let header = read_header(&mut file, PENDING, codec);
    let discard = |why: &str| -> Result<Option<Pending>, StorageError> {
        tracing::warn!(dir = %dir.display(), "discarding a pending snapshot: {why}");
        fs::remove_file(&path)?;
        files::sync_dir(dir)?;
        Ok(None)
    };
    let (descriptor, data_start) = match header {
        Ok(header) => header,
        Err(StorageError::Corrupt(why)) => return discard(&why),
        Err(e) => return Err(e),
    };
    let (checksum, written) = checksum_data(&mut file, data_start, &descriptor)?;
    if written > descriptor.size {
        return discard("more data than its size");
    }
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    Ok(Some(Pending {
        descriptor,
        file,
        data_start,
        written,
        checksum,
    }))
}

/// A snapshot being written to [`PENDING`].
pub(crate) struct Pending {
    descriptor: SnapshotDescriptor,
    file: File,
    data_start: u64,
    written: u64,
    checksum: SnapshotChecksum,
}

impl Pending {
    /// Starts an empty pending snapshot, replacing any pending file, durably.
    pub(crate) fn begin(
        dir: &Path,
        descriptor: SnapshotDescriptor,
        header: &[u8],
    ) -> Result<Pending, StorageError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(dir.join(PENDING))?;
        file.write_all(header)?;
        file.sync_all()?;
        files::sync_dir(dir)?;
        Ok(Pending {
            checksum: SnapshotChecksum::new(descriptor.meta.last_included),
            descriptor,
            file,
            data_start: header.len() as u64,
            written: 0,
        })
    }

    pub(crate) fn descriptor(&self) -> &SnapshotDescriptor {
        &self.descriptor
    }

    pub(crate) fn checksum(&self) -> u32 {
        self.checksum.value()
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data` at `offset` (which must be where the data ends) and syncs it.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if offset != self.written {
            return Err(StorageError::SnapshotOffset {
                expected: self.written,
                found: offset,
            });
        }
        let end = self.written.saturating_add(data.len() as u64);
        if end > self.descriptor.size {
            return Err(StorageError::SnapshotRange {
                offset: end,
                len: self.descriptor.size,
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        let start = self.data_start + self.written;
        self.file.seek(SeekFrom::Start(start))?;
        if let Err(e) = self
            .file
            .write_all(data)
            .and_then(|()| self.file.sync_data())
        {
            // Leave no partial piece behind a failed write.
            let _ = self.file.set_len(start);
            return Err(e.into());
        }
        self.checksum.update(data);
        self.written = end;
        Ok(())
    }

    /// Whether the data written is the whole snapshot the descriptor names.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        let computed = self.checksum.value();
        if self.written != self.descriptor.size || computed != self.descriptor.checksum {
            return Err(StorageError::SnapshotMismatch {
                size: self.descriptor.size,
                written: self.written,
                declared: self.descriptor.checksum,
                computed,
            });
        }
        Ok(())
    }

    /// Removes the pending file, durably.
    pub(crate) fn discard(self, dir: &Path) -> Result<(), StorageError> {
        drop(self.file);
        match fs::remove_file(dir.join(PENDING)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        files::sync_dir(dir)?;
        Ok(())
    }

    /// Makes the pending file the stored snapshot `dir/name`: the commit point.
    pub(crate) fn commit(self, dir: &Path, name: &str) -> Result<SnapshotDescriptor, StorageError> {
        self.file.sync_all()?;
        drop(self.file);
        fs::rename(dir.join(PENDING), dir.join(name))?;
        files::sync_dir(dir)?;
        Ok(self.descriptor)
    }
}

/// Serves a stored snapshot's data from its file, which it keeps open: a newer snapshot
/// renamed over the file later does not change what it reads.
#[derive(Debug)]
pub(crate) struct FileReader {
    file: Arc<Mutex<File>>,
    data_start: u64,
    len: u64,
}

impl FileReader {
    /// Opens the snapshot file at `path`.
    pub(crate) fn open<K: Codec>(
        path: &Path,
        codec: &K,
    ) -> Result<(SnapshotDescriptor, FileReader), StorageError> {
        let mut file = File::open(path)?;
        let (descriptor, data_start) = read_header(&mut file, STORED, codec)?;
        let reader = FileReader {
            file: Arc::new(Mutex::new(file)),
            data_start,
            len: descriptor.size,
        };
        Ok((descriptor, reader))
    }
}

#[async_trait]
impl SnapshotReader for FileReader {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_at(&self, offset: u64, max_len: usize) -> Result<Bytes, StorageError> {
        if offset > self.len {
            return Err(StorageError::SnapshotRange {
                offset,
                len: self.len,
            });
        }
        let n = usize::try_from((self.len - offset).min(max_len as u64)).unwrap_or(max_len);
        if n == 0 {
            return Ok(Bytes::new());
        }
        let file = Arc::clone(&self.file);
        let position = self.data_start + offset;
        blocking::unblock(move || {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let mut buffer = vec![0u8; n];
            file.seek(SeekFrom::Start(position))?;
            file.read_exact(&mut buffer).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    StorageError::Corrupt(format!("{STORED}: shorter than its descriptor"))
                } else {
                    e.into()
                }
            })?;
            Ok(Bytes::from(buffer))
        })
        .await
    }
}
