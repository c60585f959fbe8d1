//! The snapshot file, written and read in pieces.
//!
//! ```text
//! | crc32 of the rest of the header: u32 LE | header length: u32 LE | body length: u32 LE |
//!   body: the encoded SnapshotDescriptor | zero padding to the header length |
//!   data (descriptor.size bytes) |
//! ```
//!
//! The header length counts the whole header, so the data starts there. The padding lets
//! a snapshot this server takes itself be written before its size and checksum are known:
//! its writer reserves room for the largest descriptor its meta can have and fills the
//! header in at the end ([`StagedWriter`]).
//!
//! The data is covered by the descriptor's checksum ([`SnapshotChecksum`]), checked when
//! a pending snapshot is finished and when a store is opened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use raft_traits::{
    Bytes, Codec, SnapshotChecksum, SnapshotDescriptor, SnapshotMeta, SnapshotReader,
    SnapshotWriter, StagedSnapshot, StorageError, async_trait,
};

use crate::files;

/// The file a snapshot is written to before it replaces the stored one.
pub(crate) const PENDING: &str = "snapshot.pending";
/// The stored snapshot's file.
const STORED: &str = "snapshot";
/// The prefix of the files the server's own snapshots are staged in
/// ([`Storage::create_snapshot`](raft_traits::Storage::create_snapshot)).
pub(crate) const STAGED_PREFIX: &str = "snapshot.staged-";
/// The piece size for reading the data back to check it.
const CHECK_PIECE: usize = 1 << 20;
/// The fixed part of the header: checksum, header length, body length.
const FIXED: usize = 12;
/// The largest header accepted on reading; a descriptor is a few hundred bytes.
const MAX_HEADER: u32 = 1 << 20;

/// The header of a snapshot file holding `descriptor`, padded to at least `at_least`
/// bytes.
pub(crate) fn encode_header<K: Codec>(
    descriptor: &SnapshotDescriptor,
    codec: &K,
    at_least: usize,
) -> Result<Vec<u8>, StorageError> {
    let body = codec.encode(descriptor)?;
    let total = (FIXED + body.len()).max(at_least);
    let too_large = || StorageError::Corrupt("snapshot descriptor too large".to_owned());
    let header_len = u32::try_from(total)
        .ok()
        .filter(|len| *len <= MAX_HEADER)
        .ok_or_else(too_large)?;
    let body_len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let mut header = vec![0u8; total];
    header[4..8].copy_from_slice(&header_len.to_le_bytes());
    header[8..12].copy_from_slice(&body_len.to_le_bytes());
    header[FIXED..FIXED + body.len()].copy_from_slice(&body);
    let crc = crc32fast::hash(&header[4..]);
    header[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
}

/// Reads the header of a snapshot file: its descriptor and where the data starts.
fn read_header<K: Codec>(
    file: &mut File,
    name: &str,
    codec: &K,
) -> Result<(SnapshotDescriptor, u64), StorageError> {
    let corrupt = |what: &str| StorageError::Corrupt(format!("{name}: {what}"));
    let mut fixed = [0u8; FIXED];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut fixed)
        .map_err(|_| corrupt("truncated header"))?;
    let word =
        |at: usize| u32::from_le_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let (crc, header_len, body_len) = (word(0), word(4), word(8));
    // Refuse to allocate for a corrupt length.
    if header_len > MAX_HEADER || (header_len as usize) < FIXED {
        return Err(corrupt("header length out of range"));
    }
    let mut header = vec![0u8; header_len as usize];
    header[..FIXED].copy_from_slice(&fixed);
    file.read_exact(&mut header[FIXED..])
        .map_err(|_| corrupt("truncated header"))?;
    if crc32fast::hash(&header[4..]) != crc {
        return Err(corrupt("header checksum mismatch"));
    }
    let body = header
        .get(FIXED..FIXED.saturating_add(body_len as usize))
        .ok_or_else(|| corrupt("body length out of range"))?;
    let descriptor: SnapshotDescriptor = codec.decode(body)?;
    Ok((descriptor, u64::from(header_len)))
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

    /// Syncs the pending file, whole, and closes it, for the store to rename it over the
    /// stored snapshot.
    pub(crate) fn close(self) -> Result<SnapshotDescriptor, StorageError> {
        self.file.sync_all()?;
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

/// Writes a snapshot this server takes of its own state into a file of its own
/// (`snapshot.staged-<index>`), apart from the store: the header is reserved first and
/// filled in once the size and checksum are known.
pub(crate) struct StagedWriter<K> {
    dir: PathBuf,
    path: PathBuf,
    codec: K,
    meta: SnapshotMeta,
    /// The header's length once reserved: room for the largest descriptor `meta` can
    /// have.
    header_len: Option<usize>,
    /// The open file, once the first write created it; taken while a write runs on the
    /// blocking pool.
    file: Option<File>,
    written: u64,
    checksum: SnapshotChecksum,
    /// A write failed part way: the file no longer matches what was counted.
    broken: bool,
    /// Finishing handed the file on to the staged snapshot.
    handed_over: bool,
}

impl<K: Codec> StagedWriter<K> {
    pub(crate) fn new(dir: &Path, codec: K, meta: SnapshotMeta) -> StagedWriter<K> {
        let path = dir.join(format!("{STAGED_PREFIX}{}", meta.last_included.index.0));
        StagedWriter {
            dir: dir.to_path_buf(),
            path,
            codec,
            checksum: SnapshotChecksum::new(meta.last_included),
            meta,
            header_len: None,
            file: None,
            written: 0,
            broken: false,
            handed_over: false,
        }
    }

    /// The header's length, reserved on first use.
    fn header_len(&mut self) -> Result<usize, StorageError> {
        if self.broken {
            return Err(StorageError::Corrupt(format!(
                "{}: an earlier write failed",
                self.path.display()
            )));
        }
        if let Some(len) = self.header_len {
            return Ok(len);
        }
        // Postcard's variable-length integers are longest at their maximum values, so the
        // real descriptor is never longer than this one.
        let largest = SnapshotDescriptor {
            meta: self.meta.clone(),
            size: u64::MAX,
            checksum: u32::MAX,
        };
        let len = encode_header(&largest, &self.codec, 0)?.len();
        self.header_len = Some(len);
        Ok(len)
    }

    /// Runs `work` on the file (created with its header reserved if need be) on the
    /// blocking pool.
    async fn with_file<T, F>(&mut self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut File) -> Result<T, StorageError> + Send + 'static,
    {
        let header_len = self.header_len()?;
        let file = self.file.take();
        let path = self.path.clone();
        let (file, result) = blocking::unblock(move || {
            let mut file = match file {
                Some(file) => file,
                None => match create_reserved(&path, header_len) {
                    Ok(file) => file,
                    Err(error) => return (None, Err(error)),
                },
            };
            let result = work(&mut file);
            (Some(file), result)
        })
        .await;
        self.file = file;
        if result.is_err() {
            self.broken = true;
        }
        result
    }
}

/// Creates the file at `path` with `header_len` zero bytes where the header goes.
fn create_reserved(path: &Path, header_len: usize) -> Result<File, StorageError> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&vec![0u8; header_len])?;
    Ok(file)
}

impl<K> Drop for StagedWriter<K> {
    fn drop(&mut self) {
        // An unfinished writer leaves nothing behind.
        if self.header_len.is_some() && !self.handed_over {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[async_trait]
impl<K: Codec> SnapshotWriter for StagedWriter<K> {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if data.is_empty() {
            return Ok(());
        }
        let length = data.len() as u64;
        self.checksum.update(&data);
        self.with_file(move |file| Ok(file.write_all(&data)?))
            .await?;
        self.written = self.written.saturating_add(length);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        let header_len = self.header_len()?;
        let descriptor = SnapshotDescriptor {
            meta: self.meta.clone(),
            size: self.written,
            checksum: self.checksum.value(),
        };
        let header = encode_header(&descriptor, &self.codec, header_len)?;
        if header.len() != header_len {
            return Err(StorageError::Corrupt(format!(
                "{}: the snapshot descriptor outgrew the room reserved for it",
                self.path.display()
            )));
        }
        self.with_file(move |file| {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.sync_all()?;
            Ok(())
        })
        .await?;
        self.handed_over = true;
        self.file = None;
        Ok(StagedSnapshot {
            descriptor,
            data: Box::new(StagedFile {
                dir: self.dir.clone(),
                path: self.path.clone(),
                installed: false,
            }),
        })
    }
}

/// A snapshot staged in its own file, until the store renames it over the stored one.
pub(crate) struct StagedFile {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) installed: bool,
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes staged files a crash (or a snapshot never installed) left behind.
pub(crate) fn remove_staged(dir: &Path) -> Result<(), StorageError> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(STAGED_PREFIX))
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
