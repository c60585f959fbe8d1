//! Small files replaced atomically: written to a temporary name, fsynced, renamed over
//! the old one, and the directory fsynced, so a crash leaves the old file or the new
//! one, never a mix. Their content is checksummed.
//!
//! ```text
//! | crc32 of the payload: u32 LE | payload |
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use raft_traits::StorageError;

const TMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with a checksum of `parts` followed by `parts` concatenated,
/// durably and atomically.
pub(crate) fn write_atomically(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    let mut hasher = crc32fast::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    let crc = hasher.finalize().to_le_bytes();
    let mut all = Vec::with_capacity(parts.len() + 1);
    all.push(&crc[..]);
    all.extend_from_slice(parts);
    replace(dir, name, &all)
}

/// Replaces `dir/name` with `parts` concatenated, durably and atomically, adding nothing.
pub(crate) fn replace(dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<()> {
    let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
    {
        let mut tmp = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp_path)?;
        for part in parts {
            tmp.write_all(part)?;
        }
        tmp.sync_all()?;
    }
    fs::rename(&tmp_path, dir.join(name))?;
    sync_dir(dir)
}

/// Reads a file written by [`write_atomically`]; `None` if it does not exist.
pub(crate) fn read_checked(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
    let bytes = match fs::read(dir.join(name)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if bytes.len() < 4 {
        return Err(StorageError::Corrupt(format!(
            "{name}: shorter than its checksum"
        )));
    }
    let (crc, payload) = bytes.split_at(4);
    let mut expected = [0u8; 4];
    expected.copy_from_slice(crc);
    if crc32fast::hash(payload) != u32::from_le_bytes(expected) {
        return Err(StorageError::Corrupt(format!("{name}: checksum mismatch")));
    }
    Ok(Some(payload.to_vec()))
}

/// Removes a temporary file left behind by a crash during [`write_atomically`].
pub(crate) fn remove_leftover(dir: &Path, name: &str) -> io::Result<()> {
    match fs::remove_file(dir.join(format!("{name}{TMP_SUFFIX}"))) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a rename or a file creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
