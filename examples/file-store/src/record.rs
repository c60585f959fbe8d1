//! The log file's records, and how a damaged file is told apart from a torn one.
//!
//! A record is a 12-byte header followed by its body:
//!
//! ```text
//! | body length: u32 LE | crc32 of the length bytes: u32 LE | crc32 of the body: u32 LE | body |
//! ```
//!
//! Records are only ever appended with one `write` followed by `fsync`, into a file
//! extended with zeros ahead of them, so a crash leaves at worst an incomplete last record
//! (a prefix of what was written) followed by zeros only. A record that fails its checksum
//! with anything but zeros after it is corruption.

use std::ops::Range;

/// Size of a record header.
pub(crate) const HEADER_LEN: usize = 12;

/// Appends a record holding `body` to `out`.
pub(crate) fn encode(body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The result of scanning a log file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// For each intact record: where it starts in the file and where its body lies.
    pub(crate) records: Vec<(u64, Range<usize>)>,
    /// The length of the intact part; anything after it is a torn tail to cut off.
    pub(crate) valid_len: u64,
}

/// Where and why the file is corrupt (not merely torn).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub(crate) offset: u64,
    pub(crate) reason: &'static str,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn zeros(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Reads every record of `file`, stopping at a torn tail and failing on corruption.
pub(crate) fn scan(file: &[u8]) -> Result<Scan, Corruption> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let torn = |at: usize, records| {
        Ok(Scan {
            records,
            valid_len: at as u64,
        })
    };
    while at < file.len() {
        let rest = &file[at..];
        if rest.len() < HEADER_LEN {
            return torn(at, records);
        }
        let len_bytes = &rest[0..4];
        if crc32fast::hash(len_bytes) != u32_at(rest, 4) {
            // The room allocated ahead is zeros, and a header cut short by a crash is
            // followed by nothing but zeros; anything else in a header is damage.
            if zeros(&rest[HEADER_LEN..]) {
                return torn(at, records);
            }
            return Err(Corruption {
                offset: at as u64,
                reason: "record header checksum mismatch",
            });
        }
        let body_len = u32_at(rest, 0) as usize;
        let Some(end) = HEADER_LEN
            .checked_add(body_len)
            .filter(|&end| end <= rest.len())
        else {
            return torn(at, records);
        };
        let body = &rest[HEADER_LEN..end];
        if crc32fast::hash(body) != u32_at(rest, 8) {
            // The last record's write may not have completed; nothing was promised for it
            // because its fsync never returned. A bad record with more than zeros after it
            // is damage.
            if zeros(&rest[end..]) {
                return torn(at, records);
            }
            return Err(Corruption {
                offset: at as u64,
                reason: "record body checksum mismatch",
            });
        }
        records.push((at as u64, at + HEADER_LEN..at + end));
        at += end;
    }
    torn(at, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode(body, &mut out);
        }
        out
    }

    #[test]
    fn intact_records_round_trip() {
        let file = file_of(&[b"one", b"", b"three"]);
        let scan = scan(&file).unwrap();
        let bodies: Vec<&[u8]> = scan.records.iter().map(|(_, r)| &file[r.clone()]).collect();
        assert_eq!(bodies, [&b"one"[..], b"", b"three"]);
        assert_eq!(scan.valid_len, file.len() as u64);
    }

    #[test]
    fn every_prefix_of_a_last_record_is_a_torn_tail() {
        let whole = file_of(&[b"first", b"second record"]);
        let first_len = file_of(&[b"first"]).len();
        for cut in first_len..whole.len() {
            let scan = scan(&whole[..cut]).unwrap();
            assert_eq!(scan.records.len(), 1, "cut at {cut}");
            assert_eq!(scan.valid_len, first_len as u64);
        }
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut file = file_of(&[b"a"]);
        let good = file.len();
        file.extend_from_slice(&[0; 40]);
        assert_eq!(scan(&file).unwrap().valid_len, good as u64);
    }

    #[test]
    fn damage_before_the_end_is_corruption() {
        let mut file = file_of(&[b"first", b"second", b"third"]);
        let second_body = file_of(&[b"first"]).len() + HEADER_LEN;
        file[second_body] ^= 0x40;
        assert_eq!(
            scan(&file),
            Err(Corruption {
                offset: file_of(&[b"first"]).len() as u64,
                reason: "record body checksum mismatch"
            })
        );
        let mut file = file_of(&[b"first", b"second", b"third"]);
        file[0] ^= 1;
        assert!(
            scan(&file).is_err(),
            "a damaged length is caught by its own checksum"
        );
    }

    #[test]
    fn damaged_last_record_is_torn_not_corrupt() {
        let mut file = file_of(&[b"first", b"last"]);
        let end = file.len();
        file[end - 1] ^= 1;
        assert_eq!(scan(&file).unwrap().records.len(), 1);
    }
    #[test]
    fn in_allocated_room_a_cut_short_record_is_torn_and_damage_before_it_is_not() {
        let intact = file_of(&[b"first", b"second", b"third"]);
        let room = [0u8; 64];
        // Every prefix of the last record, followed by the room's zeros.
        let last_start = intact.len() - (HEADER_LEN + 5);
        for cut in last_start..intact.len() {
            let mut file = intact[..cut].to_vec();
            file.extend_from_slice(&room);
            let scan = scan(&file).unwrap();
            assert_eq!(scan.records.len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_len, last_start as u64, "cut at {cut}");
        }
        // A damaged record with a record after it is corruption, room or not.
        let mut file = intact.clone();
        file[HEADER_LEN + 2] ^= 1;
        file.extend_from_slice(&room);
        assert!(scan(&file).is_err());
    }
}
