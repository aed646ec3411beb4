//! Helpers shared by the cross-process tests and their child program: deterministic
//! payloads, checksums, and spawning a child with one end of a socketpair.

use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

/// The payload of record `seq`: its length and every byte are a function of `seq`.
/// Every 97th record is large (1.5 to 2 KiB, written straight into the ring); the others are
/// under 181 bytes (gathered and copied in bulk).
pub fn payload(seq: u64) -> Vec<u8> {
    let len = if seq.is_multiple_of(97) {
        1500 + (seq % 500) as usize
    } else {
        (seq.wrapping_mul(2654435761) % 181) as usize
    };
    (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8)
        .collect()
}

/// FNV-1a over a record's seq and every payload byte.
pub fn record_hash(seq: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seq.to_le_bytes().iter().chain(bytes) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Spawns `firehose-test-child` with `args` and a handoff socket. Returns the child and
/// our end.
pub fn spawn_child(exe: &str, args: &[&str]) -> std::io::Result<(Child, UnixStream)> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    firehose_transport::handoff::spawn_with_socket(&mut cmd)
}

/// What a reader child reports on its last stdout line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReaderReport {
    /// Records received.
    pub records: u64,
    /// Wrapping sum of `record_hash` of each record.
    pub checksum: u64,
    /// Seqs reported as lagged.
    pub lagged: u64,
    /// Lag reports.
    pub lag_reports: u64,
    /// Segments followed.
    pub switches: u64,
    /// Seq after the last event.
    pub next_seq: u64,
}

impl ReaderReport {
    /// `records=.. checksum=.. lagged=.. lag_reports=.. switches=.. next_seq=..`
    pub fn to_line(&self) -> String {
        format!(
            "records={} checksum={} lagged={} lag_reports={} switches={} next_seq={}",
            self.records,
            self.checksum,
            self.lagged,
            self.lag_reports,
            self.switches,
            self.next_seq
        )
    }

    /// Parses [`to_line`](Self::to_line).
    pub fn parse(line: &str) -> Option<Self> {
        let mut r = ReaderReport::default();
        for kv in line.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "records" => r.records = v,
                "checksum" => r.checksum = v,
                "lagged" => r.lagged = v,
                "lag_reports" => r.lag_reports = v,
                "switches" => r.switches = v,
                "next_seq" => r.next_seq = v,
                _ => return None,
            }
        }
        Some(r)
    }
}
