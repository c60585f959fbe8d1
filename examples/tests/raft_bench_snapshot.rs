//! `raft-bench snapshot` end to end at a tiny size (4 MiB in 64 KiB pieces), so that the
//! scenario's code path keeps working: two node processes, a transfer whose every byte
//! the follower checks, one interrupted by a SIGKILL and resumed, the whole-snapshot
//! anchor, and a snapshot taken by the snapshot policy (every stored byte checked). It checks the bytes and the bookkeeping, never the speed or the memory.

#![allow(clippy::unwrap_used)] // test code: it panics to fail

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_raft-bench");

fn bench(extra: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "snapshot",
            "--size",
            "4MiB",
            "--snapshot-chunk",
            "64KiB",
            "--anchor-max",
            "1MiB",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The numbers after `key` in `line`, e.g. "held 123 of 456".
fn after(line: &str, key: &str) -> u64 {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn a_tiny_snapshot_is_sent_checked_interrupted_and_resumed() {
    let output = bench(&[]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // One table row for the size, with the window of 4 pieces of 64 KiB.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("4 MiB "))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains("256 KiB"), "{stdout}");
    // Every column: size and run, MB/s, the two RSS growths, resent, window, anchor, and
    // the taking phase's MB/s and RSS growth.
    assert_eq!(rows[0].matches('|').count(), 8, "{stdout}");
    // The anchor ran in the same run, at its cap.
    assert!(rows[0].contains("(at 1 MiB)"), "{stdout}");
    // The interrupted transfer: the follower held part of the data when it restarted,
    // and what it was sent again is accounted for (a number, of either sign, is printed;
    // the bytes themselves were checked, or the bench would have failed).
    let resume = stdout
        .lines()
        .find(|line| line.contains("durably at restart"))
        .unwrap_or_else(|| panic!("no resume line: {stdout}"));
    let held = after(resume, "held ");
    assert!(held > 0 && held < 4 << 20, "{resume}");
    assert_eq!(
        after(resume, &format!("held {held} of ")),
        4 << 20,
        "{resume}"
    );
}

#[test]
fn a_wrong_byte_in_the_snapshot_fails_the_bench() {
    // The leader's store gets byte 3 000 000 inverted, with checksums that match: the
    // transfer succeeds, and only the follower's check of every byte can notice.
    let output = bench(&["--flip-byte", "3000000"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the restored snapshot is wrong: byte 3000000 is"),
        "{stdout}\n{stderr}"
    );
}
