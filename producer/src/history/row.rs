//! One `events` row to and from a [`FileEvent`].
//!
//! Unsigned values are stored as SQLite's signed 64-bit integers by bit pattern: seqs and
//! times below 2^63 (every realistic one) keep their order.

use firehose_transport::record::{
    BlindInfo, BlindReason, EventKind, FileEvent, GapInfo, GapReason,
};
use rusqlite::{params, Connection, Row};

/// The columns, in the order [`from_row`] reads them.
pub(crate) const COLUMNS: &str = "seq, time_ns, kind, path, path_to, rule, size, gap_to, \
                                  gap_reason, reconciled, blind_reason, blind_since";

const INSERT: &str = "INSERT OR IGNORE INTO events(seq, time_ns, kind, path, path_to, rule, size, \
                      gap_to, gap_reason, reconciled, blind_reason, blind_since) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Inserts one record; returns false if its seq was already stored.
pub(crate) fn insert(conn: &Connection, ev: &FileEvent) -> rusqlite::Result<bool> {
    let mut st = conn.prepare_cached(INSERT)?;
    let n = st.execute(params![
        ev.seq as i64,
        ev.time_ns as i64,
        ev.kind as u8,
        ev.path,
        ev.path_to,
        ev.rule,
        ev.size.map(|s| s as i64),
        ev.gap.map(|g| g.to as i64),
        ev.gap.map(|g| g.reason.code()),
        ev.reconciled,
        ev.blind.map(|b| b.reason as u8),
        ev.blind.map(|b| b.since_ns as i64),
    ])?;
    Ok(n == 1)
}

/// A gap record.
pub(crate) fn gap(from: u64, to: u64, reason: GapReason, time_ns: u64) -> FileEvent {
    FileEvent {
        seq: from,
        time_ns,
        kind: EventKind::Gap,
        path: Vec::new(),
        path_to: None,
        rule: 0,
        size: None,
        reconciled: false,
        blind: None,
        gap: Some(GapInfo { to, reason }),
    }
}

/// The last seq a record covers: its own, or its gap's end.
pub(crate) fn last_seq(ev: &FileEvent) -> u64 {
    ev.gap.map_or(ev.seq, |g| g.to.max(ev.seq))
}

/// The kind for a stored code (unknown codes read as `Other`).
pub(crate) fn kind_from_code(code: i64) -> EventKind {
    u8::try_from(code)
        .ok()
        .and_then(EventKind::from_code)
        .unwrap_or(EventKind::Other)
}

/// Reads a row selected with [`COLUMNS`].
pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<FileEvent> {
    let gap_to: Option<i64> = r.get(7)?;
    let reason: Option<i64> = r.get(8)?;
    let gap = match (gap_to, reason) {
        (Some(to), Some(code)) => Some(GapInfo {
            to: to as u64,
            // An unknown reason code from a newer build reads as a crash gap: still a gap.
            reason: GapReason::from_code(code as u32).unwrap_or(GapReason::Crash),
        }),
        _ => None,
    };
    let blind_reason: Option<i64> = r.get(10)?;
    let blind = blind_reason.map(|code| BlindInfo {
        // An unknown reason from a newer build reads as a crash: still a blind range.
        reason: u8::try_from(code)
            .ok()
            .and_then(BlindReason::from_code)
            .unwrap_or(BlindReason::Crashed),
        since_ns: r.get::<_, Option<i64>>(11).ok().flatten().unwrap_or(0) as u64,
    });
    Ok(FileEvent {
        seq: r.get::<_, i64>(0)? as u64,
        time_ns: r.get::<_, i64>(1)? as u64,
        kind: kind_from_code(r.get(2)?),
        path: r.get(3)?,
        path_to: r.get(4)?,
        rule: r.get(5)?,
        size: r.get::<_, Option<i64>>(6)?.map(|s| s as u64),
        gap,
        reconciled: r.get(9)?,
        blind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_code_round_trips() {
        for k in EventKind::ALL {
            assert_eq!(kind_from_code(k as u8 as i64), k);
        }
    }
}
