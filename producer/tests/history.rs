//! History database and seq lease: round trips, paging, filters, retention, overflow,
//! storage failures, crash recovery and a model test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firehose_producer::history::{Health, HistoryReader, HistoryWriter, Retention, WriterConfig};
use firehose_producer::lease::{Lease, LeaseConfig, LeaseHealth};
use firehose_transport::control::wire::{HistoryQuery, QueryEnd};
use firehose_transport::record::{EventKind, FileEvent, GapInfo, GapReason};

/// A generous watchdog for waits (tests never time a maximum runtime).
const WATCHDOG: Duration = Duration::from_secs(60);

fn ev(seq: u64) -> FileEvent {
    FileEvent {
        seq,
        time_ns: 1_000_000 + seq,
        kind: match seq % 4 {
            0 => EventKind::Create,
            1 => EventKind::Modify,
            2 => EventKind::CloseWrite,
            _ => EventKind::Remove,
        },
        path: format!("/home/u/dir{}/file{seq}.txt", seq % 10).into_bytes(),
        path_to: None,
        rule: (seq % 3) as u32,
        size: Some(seq * 10),
        reconciled: false,
        blind: None,
        gap: None,
    }
}

fn gap(from: u64, to: u64, reason: GapReason) -> FileEvent {
    FileEvent {
        seq: from,
        time_ns: 1,
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

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("history.db")
}

fn writer(path: &Path) -> HistoryWriter {
    HistoryWriter::open(path, WriterConfig::default()).unwrap()
}

/// Every row of a query, with its end.
fn all(
    r: &HistoryReader,
    q: &HistoryQuery,
    reverse: bool,
    page: usize,
) -> (Vec<FileEvent>, QueryEnd) {
    let mut c = r.query(q, reverse).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(Instant::now() < deadline, "query never ended");
        if let Some(end) = c.next_page(&mut out, page).unwrap() {
            return (out, end);
        }
    }
}

fn everything() -> HistoryQuery {
    HistoryQuery::default()
}

/// Which seqs rows and gap rows cover, each checked to be covered once.
fn coverage(rows: &[FileEvent]) -> BTreeMap<u64, Option<GapReason>> {
    let mut m = BTreeMap::new();
    for r in rows {
        let to = r.gap.map_or(r.seq, |g| g.to);
        for s in r.seq..=to {
            assert!(
                m.insert(s, r.gap.map(|g| g.reason)).is_none(),
                "seq {s} twice"
            );
        }
    }
    m
}

/// Checks that rows (in seq order) cover `1..=upto` without overlap, by intervals (gaps may
/// span millions of seqs). Returns the intervals.
fn assert_line(rows: &[FileEvent], upto: u64) -> Vec<(u64, u64, Option<GapReason>)> {
    let mut next = 1u64;
    let mut out = Vec::new();
    for r in rows {
        let to = r.gap.map_or(r.seq, |g| g.to);
        assert!(r.seq >= next, "seq {} overlaps (expected >= {next})", r.seq);
        assert!(
            r.seq == next || r.seq > upto,
            "seqs {next}..{} missing",
            r.seq
        );
        out.push((r.seq, to, r.gap.map(|g| g.reason)));
        next = to + 1;
    }
    assert!(next > upto, "seqs {next}..={upto} missing");
    out
}

#[test]
fn round_trip_with_non_utf8_paths_renames_and_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let w = writer(&p);
    let mut want = vec![
        FileEvent {
            path: b"/tmp/\xff\xfe-not-utf8".to_vec(),
            ..ev(1)
        },
        FileEvent {
            kind: EventKind::Rename,
            path: b"/tmp/old".to_vec(),
            path_to: Some(b"/tmp/new\x80".to_vec()),
            size: None,
            ..ev(2)
        },
        gap(3, 9, GapReason::NotStored),
        FileEvent {
            kind: EventKind::Overflow,
            path: Vec::new(),
            ..ev(10)
        },
        FileEvent {
            size: Some(u64::MAX),
            rule: u32::MAX,
            ..ev(11)
        },
    ];
    for e in &want {
        assert!(w.submit(e.clone()));
    }
    w.flush().unwrap();
    assert_eq!(w.committed_seq(), 11);
    let r = HistoryReader::open(&p).unwrap();
    let (got, end) = all(&r, &everything(), false, 2);
    assert_eq!(end, QueryEnd::Complete);
    assert_eq!(got, want);
    let (back, _) = all(&r, &everything(), true, 3);
    want.reverse();
    assert_eq!(back, want);
    let info = r.info().unwrap();
    assert_eq!(info.instance_id, w.instance_id());
    assert_eq!(
        (info.oldest_seq, info.last_seq, info.rows),
        (Some(1), Some(11), 5)
    );
    assert!(info.bytes > 0);
    w.shutdown().unwrap();
}

#[test]
fn wait_committed_waits_for_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(&db(&dir));
    assert!(!w.wait_committed(1, Instant::now() + Duration::from_millis(20)));
    let h = std::thread::scope(|s| {
        let h = s.spawn(|| w.wait_committed(500, Instant::now() + WATCHDOG));
        for i in 1..=500 {
            w.submit(ev(i));
        }
        h.join().unwrap()
    });
    assert!(h);
    assert!(w.committed_seq() >= 500);
    assert!(!w.wait_committed(501, Instant::now() + Duration::from_millis(20)));
}

#[test]
fn keyset_pages_cover_every_row_once_while_the_writer_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let w = writer(&p);
    for i in 1..=5000 {
        w.submit(ev(i));
    }
    w.flush().unwrap();
    let r = HistoryReader::open(&p).unwrap();
    std::thread::scope(|s| {
        let w = &w;
        let feeder = s.spawn(move || {
            for i in 5001..=60_000 {
                while !w.submit(ev(i)) {
                    // Not this test's subject: keep every seq.
                    std::thread::yield_now();
                }
            }
        });
        let (rows, end) = all(&r, &everything(), false, 97);
        assert_eq!(end, QueryEnd::Complete);
        // Commits are in seq order, so what a pager sees is a prefix 1..=k, k >= 5000.
        assert!(rows.len() >= 5000);
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.seq, i as u64 + 1);
            assert_eq!(*row, ev(row.seq));
        }
        let q = HistoryQuery {
            seq: Some((1, 5000)),
            ..Default::default()
        };
        let (rows, _) = all(&r, &q, true, 101);
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=5000).rev().collect::<Vec<_>>());
        feeder.join().unwrap();
    });
}

#[test]
fn filters_by_seq_time_kind_glob_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let w = writer(&p);
    for i in 1..=1000 {
        w.submit(ev(i));
    }
    w.submit(FileEvent {
        kind: EventKind::Rename,
        path: b"/elsewhere/a".to_vec(),
        path_to: Some(b"/home/u/dir9/\xff.txt".to_vec()),
        ..ev(1001)
    });
    w.submit(gap(1002, 1010, GapReason::NotStored));
    w.flush().unwrap();
    let r = HistoryReader::open(&p).unwrap();
    let seqs = |q: HistoryQuery, rev| {
        all(&r, &q, rev, 50)
            .0
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };

    // seq range
    let got = seqs(
        HistoryQuery {
            seq: Some((10, 20)),
            ..Default::default()
        },
        false,
    );
    assert_eq!(got, (10..=20).collect::<Vec<_>>());
    // time range (time_ns = 1_000_000 + seq)
    let got = seqs(
        HistoryQuery {
            time_ns: Some((1_000_100, 1_000_104)),
            ..Default::default()
        },
        false,
    );
    assert_eq!(got, (100..=104).collect::<Vec<_>>());
    // kinds: Remove only (seq % 4 == 3)
    let got = seqs(
        HistoryQuery {
            kinds: 1 << EventKind::Remove as u8,
            seq: Some((1, 20)),
            ..Default::default()
        },
        false,
    );
    assert_eq!(got, vec![3, 7, 11, 15, 19]);
    // glob: dir9 matches seq % 10 == 9, the rename by its new path, and the gap row
    let got = seqs(
        HistoryQuery {
            glob: Some("/home/u/dir9/*".into()),
            ..Default::default()
        },
        false,
    );
    let mut want: Vec<u64> = (1..=1000).filter(|s| s % 10 == 9).collect();
    want.extend([1001, 1002]);
    assert_eq!(got, want);
    // glob plus kinds plus reverse plus limit
    let (rows, end) = all(
        &r,
        &HistoryQuery {
            glob: Some("**/file*9.txt".into()),
            kinds: 1 << EventKind::Modify as u8,
            limit: 3,
            ..Default::default()
        },
        true,
        2,
    );
    assert_eq!(end, QueryEnd::Limit);
    assert_eq!(
        rows.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![989, 969, 949]
    );
    // a range that starts inside a gap gets the gap row stored at the gap's first seq:
    // first ascending, last descending, whatever the page size
    for page in [1, 2, 50] {
        let q = HistoryQuery {
            seq: Some((1005, 1020)),
            ..Default::default()
        };
        let (rows, end) = all(&r, &q, false, page);
        assert_eq!(end, QueryEnd::Complete);
        assert_eq!(
            rows,
            vec![gap(1002, 1010, GapReason::NotStored)],
            "page {page}"
        );
        let q = HistoryQuery {
            seq: Some((999, 1005)),
            ..Default::default()
        };
        assert_eq!(
            all(&r, &q, true, page)
                .0
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![1002, 1001, 1000, 999],
            "page {page}"
        );
        let q = HistoryQuery {
            seq: Some((1003, 1003)),
            ..Default::default()
        };
        let (rows, _) = all(&r, &q, true, page);
        assert_eq!(rows.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1002]);
    }
    // ... unless the kinds leave gaps out, or the range starts past the gap
    let got = seqs(
        HistoryQuery {
            seq: Some((1005, 1020)),
            kinds: 1 << EventKind::Create as u8,
            ..Default::default()
        },
        false,
    );
    assert!(got.is_empty());
    let got = seqs(
        HistoryQuery {
            seq: Some((1011, 1020)),
            ..Default::default()
        },
        false,
    );
    assert!(got.is_empty());
    // a bad glob
    let (rows, end) = all(
        &r,
        &HistoryQuery {
            glob: Some("a[".into()),
            ..Default::default()
        },
        false,
        10,
    );
    assert!(rows.is_empty());
    assert_eq!(end, QueryEnd::Invalid);
}

#[test]
fn retention_by_rows_age_and_bytes_truncates_and_keeps_one_gap_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let w = writer(&p);
    for i in 1..=3000 {
        w.submit(ev(i));
    }
    w.flush().unwrap();
    let r = HistoryReader::open(&p).unwrap();

    // rows
    let n = w
        .retain(Retention {
            max_rows: Some(2000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(r.oldest_seq().unwrap(), Some(1001));
    let (rows, end) = all(&r, &everything(), false, 500);
    assert_eq!(end, QueryEnd::Truncated { oldest: 1001 });
    assert_eq!(
        rows[0],
        FileEvent {
            time_ns: rows[0].time_ns,
            ..gap(1, 1000, GapReason::Retention)
        }
    );
    assert_eq!(rows.len(), 2001);
    let cov = coverage(&rows);
    assert_eq!(cov.len(), 3000);
    // A query that starts after the boundary is complete; one before it is truncated.
    let (_, end) = all(
        &r,
        &HistoryQuery {
            seq: Some((1001, 1100)),
            ..Default::default()
        },
        false,
        50,
    );
    assert_eq!(end, QueryEnd::Complete);
    let (_, end) = all(
        &r,
        &HistoryQuery {
            seq: Some((900, 1100)),
            ..Default::default()
        },
        true,
        50,
    );
    assert_eq!(end, QueryEnd::Truncated { oldest: 1001 });

    // age: records with time_ns = 1_000_000 + seq are ancient; add recent ones
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 3001..=3100 {
        w.submit(FileEvent {
            time_ns: now,
            ..ev(i)
        });
    }
    w.flush().unwrap();
    let n = w
        .retain(Retention {
            max_age: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(n, 2000);
    assert_eq!(r.oldest_seq().unwrap(), Some(3001));
    let (rows, end) = all(&r, &everything(), false, 500);
    assert_eq!(end, QueryEnd::Truncated { oldest: 3001 });
    assert_eq!(rows.len(), 101);
    assert_eq!(
        rows[0].gap,
        Some(GapInfo {
            to: 3000,
            reason: GapReason::Retention
        })
    );
    assert_eq!(
        rows[0].seq, 1,
        "the retention row keeps the first seq ever removed"
    );
    // A time range that starts before the oldest kept record is truncated.
    let (_, end) = all(
        &r,
        &HistoryQuery {
            time_ns: Some((0, u64::MAX)),
            ..Default::default()
        },
        false,
        500,
    );
    assert_eq!(end, QueryEnd::Truncated { oldest: 3001 });
    let (_, end) = all(
        &r,
        &HistoryQuery {
            time_ns: Some((now, now)),
            ..Default::default()
        },
        false,
        500,
    );
    assert_eq!(end, QueryEnd::Complete);

    // bytes: big rows, then a cap well below what they take
    for i in 3101..=8000 {
        w.submit(FileEvent {
            time_ns: now,
            path: vec![b'x'; 400],
            ..ev(i)
        });
    }
    w.flush().unwrap();
    let before = r.info().unwrap();
    assert!(before.bytes > 2_000_000, "{before:?}");
    let n = w
        .retain(Retention {
            max_bytes: Some(1_000_000),
            ..Default::default()
        })
        .unwrap();
    assert!(n > 2000, "{n}");
    let oldest = r.oldest_seq().unwrap().unwrap();
    assert!(oldest > 3101);
    let (rows, end) = all(&r, &everything(), false, 1000);
    assert_eq!(end, QueryEnd::Truncated { oldest });
    assert_eq!(rows.iter().filter(|e| e.gap.is_some()).count(), 1);
    assert_eq!(coverage(&rows).len(), 8000);
    assert!(w.stats().retention_removed >= 3000 + n);
}

#[test]
fn periodic_retention_runs_from_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let cfg = WriterConfig {
        retention: Retention {
            max_rows: Some(100),
            ..Default::default()
        },
        retention_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let w = HistoryWriter::open(&p, cfg).unwrap();
    for i in 1..=1000 {
        w.submit(ev(i));
    }
    w.flush().unwrap();
    let r = HistoryReader::open(&p).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while r.oldest_seq().unwrap() != Some(901) {
        assert!(Instant::now() < deadline, "retention never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_queue_becomes_one_overflow_gap_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let w = HistoryWriter::open(
        &p,
        WriterConfig {
            queue_capacity: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut refused = 0;
    for i in 1..=50_000 {
        if !w.submit(ev(i)) {
            refused += 1;
        }
    }
    w.flush().unwrap();
    assert!(refused > 0, "the queue never filled");
    assert_eq!(w.stats().overflowed, refused);
    let r = HistoryReader::open(&p).unwrap();
    let (rows, _) = all(&r, &everything(), false, 4096);
    let cov = coverage(&rows);
    assert_eq!(cov.len(), 50_000);
    assert_eq!(*cov.keys().last().unwrap(), 50_000);
    let lost = cov
        .values()
        .filter(|v| **v == Some(GapReason::WriterOverflow))
        .count();
    assert_eq!(lost as u64, refused);
    // Adjacent dropped seqs share one gap row.
    let gaps: Vec<_> = rows.iter().filter(|e| e.gap.is_some()).collect();
    for pair in gaps.windows(2) {
        assert!(
            pair[1].seq > pair[0].gap.unwrap().to + 1,
            "adjacent gaps not merged"
        );
    }
    assert_eq!(w.committed_seq(), 50_000);
}

/// Storage fails (SQLITE_FULL through max_page_count), then works again.
#[test]
fn a_full_database_degrades_then_recovers_with_a_store_failed_gap() {
    let dir = tempfile::tempdir().unwrap();
    let p = db(&dir);
    let cfg = WriterConfig {
        retry_backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let w = HistoryWriter::open(&p, cfg).unwrap();
    for i in 1..=100 {
        w.submit(ev(i));
    }
    w.flush().unwrap();
    let r = HistoryReader::open(&p).unwrap();
    let pages = r.info().unwrap().bytes / 4096;
    w.set_max_page_count(Some(pages)).unwrap();
    let mut seq = 100;
    let deadline = Instant::now() + WATCHDOG;
    // A flush that fails reports the degraded health (a gap-only retry may succeed in
    // between: the writer then recovers, and the next records fail again).
    let reason = loop {
        assert!(Instant::now() < deadline, "never degraded");
        for _ in 0..1000 {
            seq += 1;
            w.submit(FileEvent {
                path: vec![b'y'; 300],
                ..ev(seq)
            });
        }
        if let Err(e) = w.flush() {
            break e.to_string();
        }
    };
    assert!(
        reason.contains("history.db") && reason.contains("degraded"),
        "{reason}"
    );
    let stuck = w.committed_seq();
    // Still accepting while degraded.
    for _ in 0..500 {
        seq += 1;
        assert!(w.submit(ev(seq)));
    }
    assert!(w.flush().is_err());
    w.set_max_page_count(None).unwrap();
    let deadline = Instant::now() + WATCHDOG;
    while !w.health().is_ok() || w.committed_seq() < seq {
        assert!(Instant::now() < deadline, "never recovered");
        seq += 1;
        w.submit(ev(seq));
        std::thread::sleep(Duration::from_millis(5));
    }
    w.flush().unwrap();
    assert_eq!(w.health(), Health::Ok);
    let (rows, _) = all(&r, &everything(), false, 4096);
    let cov = coverage(&rows);
    assert_eq!(cov.len() as u64, seq, "every seq is a row or a gap");
    assert!(cov.values().any(|v| *v == Some(GapReason::StoreFailed)));
    for s in 1..=100 {
        assert_eq!(cov[&s], None, "committed row {s} lost");
    }
    assert!(stuck >= 100);
    assert!(w.stats().store_failed >= 500);
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The same on a real full file system: a 1 MiB tmpfs, grown once it is full.
#[test]
fn a_full_tmpfs_degrades_then_recovers() {
    if !is_root() {
        eprintln!("SKIPPED a_full_tmpfs_degrades_then_recovers: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = |opts: &str| {
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(&mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !mount("size=1M") {
        eprintln!("SKIPPED a_full_tmpfs_degrades_then_recovers: mount -t tmpfs failed");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let p = mnt.join("history.db");
    let cfg = WriterConfig {
        retry_backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let w = HistoryWriter::open(&p, cfg).unwrap();
    let mut seq = 0;
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(Instant::now() < deadline, "never degraded");
        for _ in 0..500 {
            seq += 1;
            w.submit(FileEvent {
                path: vec![b'z'; 200],
                ..ev(seq)
            });
        }
        if w.flush().is_err() {
            break;
        }
    }
    assert!(w.stats().store_failed > 0);
    let committed = w.committed_seq();
    assert!(committed > 0);
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,size=64M"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(remount.success());
    let deadline = Instant::now() + WATCHDOG;
    while !w.health().is_ok() || w.committed_seq() < seq {
        assert!(Instant::now() < deadline, "never recovered");
        seq += 1;
        w.submit(ev(seq));
        std::thread::sleep(Duration::from_millis(5));
    }
    w.shutdown().unwrap();
    let r = HistoryReader::open(&p).unwrap();
    let (rows, _) = all(&r, &everything(), false, 4096);
    let cov = coverage(&rows);
    assert_eq!(cov.len() as u64, seq);
    assert!(cov.values().any(|v| *v == Some(GapReason::StoreFailed)));
    assert!((1..=committed).all(|s| cov.contains_key(&s)));
}

// ---- seq lease ----

fn lease_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("history.lease")
}

#[test]
fn lease_clean_shutdown_reuses_nothing_and_has_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let lp = lease_path(&dir);
    let (l, rec) = Lease::open(&lp, 7, None, LeaseConfig::default()).unwrap();
    assert_eq!(
        (rec.next_seq, rec.crash_gap, rec.lease_found),
        (1, None, false)
    );
    assert!(l.grant(100));
    l.close_clean(101).unwrap();
    let (_l, rec) = Lease::open(&lp, 7, Some(100), LeaseConfig::default()).unwrap();
    assert_eq!((rec.next_seq, rec.crash_gap), (101, None));
    assert_eq!(std::fs::metadata(&lp).unwrap().len(), 4096);
}

#[test]
fn lease_crash_gives_a_gap_and_no_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let lp = lease_path(&dir);
    let (l, _) = Lease::open(&lp, 7, None, LeaseConfig::default()).unwrap();
    let end = l.end();
    assert!(l.grant(50));
    drop(l); // no clean mark: a crash
    let (l, rec) = Lease::open(&lp, 7, Some(40), LeaseConfig::default()).unwrap();
    assert_eq!(rec.next_seq, end);
    assert_eq!(rec.crash_gap, Some((41, end - 1)));
    drop(l);
    // The database was deleted (new instance, empty): still no reuse.
    let (l, rec) = Lease::open(&lp, 8, None, LeaseConfig::default()).unwrap();
    assert!(rec.next_seq >= end && rec.instance_changed && rec.crash_gap.is_none());
    let end2 = l.end();
    l.close_clean(rec.next_seq).unwrap();
    // The lease file was deleted but the database has rows: start after them.
    std::fs::remove_file(&lp).unwrap();
    let (_l, rec) = Lease::open(&lp, 8, Some(end2 + 500), LeaseConfig::default()).unwrap();
    assert_eq!((rec.next_seq, rec.lease_found), (end2 + 501, false));
}

#[test]
fn lease_instance_mismatch_trusts_the_larger_seq() {
    let dir = tempfile::tempdir().unwrap();
    let lp = lease_path(&dir);
    let (l, _) = Lease::open(&lp, 1, None, LeaseConfig::default()).unwrap();
    l.close_clean(10).unwrap();
    let (_l, rec) = Lease::open(&lp, 2, Some(1_000_000), LeaseConfig::default()).unwrap();
    assert_eq!(rec.next_seq, 1_000_001);
    assert!(rec.instance_changed);
}

#[test]
fn lease_renews_under_load_and_grows_with_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (l, rec) = Lease::open(&lease_path(&dir), 1, None, LeaseConfig::default()).unwrap();
    let first_size = l.end() - rec.next_seq;
    let deadline = Instant::now() + WATCHDOG;
    let mut seq = rec.next_seq;
    while seq < 2_000_000 {
        if l.grant(seq) {
            seq += 1;
        } else {
            assert!(Instant::now() < deadline, "lease never renewed past {seq}");
            std::thread::yield_now();
        }
    }
    assert!(
        l.end() - seq > first_size,
        "lease did not grow with the rate"
    );
    assert_eq!(l.health(), LeaseHealth::Ok);
}

#[test]
fn lease_write_failure_stops_publishing_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LeaseConfig {
        retry: Duration::from_millis(10),
        ..Default::default()
    };
    let (l, rec) = Lease::open(&lease_path(&dir), 1, None, cfg).unwrap();
    l.inject_write_failure(true);
    let end = l.end();
    let deadline = Instant::now() + WATCHDOG;
    let mut seq = rec.next_seq;
    while l.grant(seq) {
        seq += 1;
    }
    assert_eq!(seq, end);
    while l.health() == LeaseHealth::Ok {
        assert!(Instant::now() < deadline, "health never said why");
        assert!(!l.grant(end));
        std::thread::sleep(Duration::from_millis(2));
    }
    let LeaseHealth::Failing { reason, .. } = l.health() else {
        unreachable!()
    };
    assert!(reason.contains("history.lease"), "{reason}");
    assert!(!l.grant(end));
    l.inject_write_failure(false);
    while !l.grant(end) {
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(l.health(), LeaseHealth::Ok);
}

#[test]
fn a_torn_lease_slot_falls_back_to_the_other() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let lp = lease_path(&dir);
    let (l, _) = Lease::open(&lp, 1, None, LeaseConfig::default()).unwrap();
    let end = l.end();
    drop(l);
    // Open writes slot 0 first; a second open writes slot 1. Tear slot 1.
    let (l, rec) = Lease::open(&lp, 1, None, LeaseConfig::default()).unwrap();
    assert_eq!(rec.next_seq, end);
    drop(l);
    let f = std::fs::OpenOptions::new().write(true).open(&lp).unwrap();
    f.write_all_at(&[0xAB; 20], 512 + 30).unwrap();
    let (_l, rec) = Lease::open(&lp, 1, None, LeaseConfig::default()).unwrap();
    assert!(rec.lease_found);
    assert!(
        rec.next_seq >= end,
        "fell back to slot 0, whose end is {end}"
    );
}

// ---- crash recovery: a child killed with SIGKILL while writing, 20 rounds ----

const CHILD_ENV: &str = "FIREHOSE_HISTORY_CRASH_CHILD";

/// The child: opens the database and the lease like the service, records the crash gap,
/// then publishes and stores as fast as it can, printing every committed seq it sees.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    use std::io::Write;
    let dir = PathBuf::from(dir);
    let w = HistoryWriter::open(&dir.join("history.db"), WriterConfig::default()).unwrap();
    let last = (w.committed_seq() > 0).then(|| w.committed_seq());
    let (lease, rec) = Lease::open(
        &dir.join("history.lease"),
        w.instance_id(),
        last,
        LeaseConfig::default(),
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "\n@@start {}", rec.next_seq).unwrap();
    if let Some((a, b)) = rec.crash_gap {
        w.submit(gap(a, b, GapReason::Crash));
    }
    let mut seq = rec.next_seq;
    let mut reported = 0;
    loop {
        if !lease.grant(seq) {
            std::thread::yield_now();
            continue;
        }
        w.submit(ev(seq));
        seq += 1;
        let c = w.committed_seq();
        if c > reported {
            reported = c;
            writeln!(out, "@@committed {c}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn crash_recovery_keeps_every_committed_seq_and_reuses_none() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_committed = 0u64;
    let mut prev_start = 0u64;
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut start = None;
        let mut committed = 0u64;
        // Kill after a varying number of commits (the deterministic round decides).
        let target = 3 + (round * 7) % 20;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            // libtest prints "test crash_child ... " before the child's own lines.
            let Some(at) = line.find("@@") else { continue };
            let mut it = line[at + 2..].split(' ');
            let (word, n) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok()));
            match (word, n) {
                (Some("start"), Some(s)) => start = Some(s),
                (Some("committed"), Some(c)) => {
                    committed = c;
                    seen += 1;
                    if seen >= target {
                        break;
                    }
                }
                _ => {}
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        let start = start.expect("the child never started");
        assert!(
            start > prev_start && start > max_committed,
            "round {round}: start {start} reuses seqs (committed {max_committed})"
        );
        prev_start = start;
        max_committed = max_committed.max(committed);
        // Every seq reported committed is there, as a row or a gap.
        let r = HistoryReader::open(&dir.path().join("history.db")).unwrap();
        let (rows, _) = all(
            &r,
            &HistoryQuery {
                seq: Some((1, committed)),
                ..Default::default()
            },
            false,
            4096,
        );
        // Every seq reported committed is there, as a row or a gap, once.
        assert_line(&rows, committed);
    }
    // A last clean open: the crash gap of the last round closes the line.
    let w = writer(&dir.path().join("history.db"));
    let last = w.committed_seq();
    let (lease, rec) = Lease::open(
        &dir.path().join("history.lease"),
        w.instance_id(),
        Some(last),
        LeaseConfig::default(),
    )
    .unwrap();
    let (a, b) = rec.crash_gap.expect("a crash gap after SIGKILL");
    assert_eq!(a, last + 1);
    w.submit(gap(a, b, GapReason::Crash));
    w.shutdown().unwrap();
    lease.close_clean(rec.next_seq).unwrap();
    let r = HistoryReader::open(&dir.path().join("history.db")).unwrap();
    let (rows, _) = all(&r, &everything(), false, 4096);
    let line = assert_line(&rows, b);
    assert_eq!(
        line.last().unwrap().1,
        b,
        "every seq below the last lease end is a row or a gap"
    );
    assert!(
        line.iter()
            .filter(|l| l.2 == Some(GapReason::Crash))
            .count()
            >= 20
    );
}

// ---- model test: the database against a BTreeMap ----

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    pub(super) enum Op {
        /// `n` records, then maybe a not-stored gap of `gap` seqs.
        Insert {
            n: u64,
            gap: u64,
        },
        Retain {
            max_rows: u64,
        },
        Query {
            lo: u64,
            len: u64,
            kinds: u32,
            reverse: bool,
            page: usize,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..60, 0u64..4).prop_map(|(n, gap)| Op::Insert { n, gap }),
            1 => (0u64..80).prop_map(|max_rows| Op::Retain { max_rows }),
            3 => (0u64..400, 0u64..400, prop_oneof![Just(0u32), 1u32..512], any::<bool>(), 1usize..50)
                .prop_map(|(lo, len, kinds, reverse, page)| Op::Query { lo, len, kinds, reverse, page }),
            1 => Just(Op::Reopen),
        ]
    }

    /// The retention row's time is when the last removed row happened: not modelled.
    fn norm(mut e: FileEvent) -> FileEvent {
        if e.gap.is_some_and(|g| g.reason == GapReason::Retention) {
            e.time_ns = 0;
        }
        e
    }

    fn run(ops: Vec<Op>) {
        let dir = tempfile::tempdir().unwrap();
        let p = db(&dir);
        let mut w = writer(&p);
        let mut r = HistoryReader::open(&p).unwrap();
        let mut model: BTreeMap<u64, FileEvent> = BTreeMap::new();
        let mut ret: Option<(u64, u64)> = None;
        let mut next = 1u64;
        for op in ops {
            match op {
                Op::Insert { n, gap: g } => {
                    for s in next..next + n {
                        let e = ev(s);
                        assert!(w.submit(e.clone()));
                        model.insert(s, e);
                    }
                    next += n;
                    if g > 0 {
                        let e = gap(next, next + g - 1, GapReason::NotStored);
                        assert!(w.submit(e.clone()));
                        model.insert(next, e);
                        next += g;
                    }
                    w.flush().unwrap();
                    assert_eq!(w.committed_seq(), next - 1);
                }
                Op::Retain { max_rows } => {
                    w.retain(Retention {
                        max_rows: Some(max_rows),
                        ..Default::default()
                    })
                    .unwrap();
                    let floor = ret.map(|(f, _)| f);
                    let mut kept: Vec<u64> = model
                        .keys()
                        .copied()
                        .filter(|&s| Some(s) != floor)
                        .collect();
                    while kept.len() as u64 > max_rows {
                        let s = kept.remove(0);
                        let e = model.remove(&s).unwrap();
                        let to = e.gap.map_or(s, |g| g.to);
                        ret = Some(match ret {
                            None => (s, to),
                            Some((f, t)) => (f, t.max(to)),
                        });
                    }
                    if let Some((f, t)) = ret {
                        model.insert(f, norm(gap(f, t, GapReason::Retention)));
                    }
                }
                Op::Query {
                    lo,
                    len,
                    kinds,
                    reverse,
                    page,
                } => {
                    let hi = lo + len;
                    let q = HistoryQuery {
                        seq: Some((lo, hi)),
                        kinds,
                        ..Default::default()
                    };
                    let (rows, end) = all(&r, &q, reverse, page);
                    // A gap row stored below `lo` that reaches it comes too (not
                    // retention's: that range ends the answer with `Truncated`).
                    let lead = model.range(..lo).next_back().map(|(_, e)| e).filter(|e| {
                        e.gap
                            .is_some_and(|g| g.to >= lo && g.reason != GapReason::Retention)
                    });
                    let mut want: Vec<FileEvent> = lead
                        .into_iter()
                        .chain(model.range(lo..=hi).map(|(_, e)| e))
                        .filter(|e| kinds == 0 || kinds & (1 << e.kind as u8) != 0)
                        .cloned()
                        .collect();
                    if reverse {
                        want.reverse();
                    }
                    let got: Vec<FileEvent> = rows.into_iter().map(norm).collect();
                    assert_eq!(got, want);
                    let want_end = match ret {
                        Some((_, t)) if lo <= t => QueryEnd::Truncated { oldest: t + 1 },
                        _ => QueryEnd::Complete,
                    };
                    assert_eq!(end, want_end);
                    let oldest = ret
                        .map(|(_, t)| t + 1)
                        .or_else(|| model.keys().next().copied());
                    assert_eq!(r.oldest_seq().unwrap(), oldest);
                }
                Op::Reopen => {
                    w.shutdown().unwrap();
                    w = writer(&p);
                    r = HistoryReader::open(&p).unwrap();
                    let last = model
                        .values()
                        .last()
                        .map_or(0, |e| e.gap.map_or(e.seq, |g| g.to));
                    assert_eq!(w.committed_seq(), last);
                }
            }
        }
        w.shutdown().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn history_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..40)) {
            run(ops);
        }
    }
}

#[test]
fn a_database_deleted_or_replaced_under_the_writer_is_reported_naming_the_file() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let w = HistoryWriter::open(
            &path,
            WriterConfig {
                identity_check: Duration::from_millis(50),
                ..WriterConfig::default()
            },
        )
        .unwrap();
        assert!(w.submit(ev(1)));
        w.flush().unwrap();
        assert_eq!(w.health(), Health::Ok);
        std::fs::remove_file(&path).unwrap();
        if replace {
            std::fs::write(&path, b"another file").unwrap();
        }
        let deadline = Instant::now() + WATCHDOG;
        let reason = loop {
            if let Health::Degraded { reason, .. } = w.health() {
                break reason;
            }
            assert!(
                Instant::now() < deadline,
                "never noticed (replace: {replace})"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(reason.contains(&path.display().to_string()), "{reason}");
        assert!(
            reason.contains(if replace { "replaced" } else { "deleted" }),
            "{reason}"
        );
        assert!(reason.contains("Restart"), "says what to do: {reason}");
    }
}

/// A writer with `n` records (seq 1..=n), each with a path of `path_len` bytes.
fn filled(dir: &tempfile::TempDir, n: u64, path_len: usize) -> PathBuf {
    let path = db(dir);
    let w = writer(&path);
    for seq in 1..=n {
        let mut e = ev(seq);
        e.kind = EventKind::Create;
        e.path = format!("/w/{seq:0>width$}", width = path_len.saturating_sub(3)).into_bytes();
        assert!(w.submit(e));
    }
    w.flush().unwrap();
    w.shutdown().unwrap();
    path
}

#[test]
fn a_selective_query_does_bounded_work_per_call_and_still_finds_its_row() {
    use firehose_producer::history::SCAN_WINDOW;
    let dir = tempfile::tempdir().unwrap();
    let n = 4 * SCAN_WINDOW;
    let path = filled(&dir, n, 16);
    let r = HistoryReader::open(&path).unwrap();
    // No row is an overflow: each call may run one statement over one window.
    let q = HistoryQuery {
        kinds: 1 << EventKind::Overflow as u8,
        ..HistoryQuery::default()
    };
    let mut c = r.query(&q, false).unwrap().with_scans_per_call(1);
    let mut out = Vec::new();
    let mut calls = 0;
    let end = loop {
        calls += 1;
        assert!(calls < 1000, "never ended");
        if let Some(end) = c.next_page(&mut out, 1000).unwrap() {
            break end;
        }
        assert!(out.is_empty());
    };
    assert_eq!(end, QueryEnd::Complete);
    assert!(out.is_empty());
    assert!(
        calls >= 4,
        "{calls} calls: a call scanned more than one window"
    );
    // A matching kind at the very end is found.
    let q = HistoryQuery {
        kinds: 1 << EventKind::Create as u8,
        seq: Some((n, n)),
        ..HistoryQuery::default()
    };
    let (rows, end) = all(&r, &q, false, 1000);
    assert_eq!((rows.len(), end), (1, QueryEnd::Complete));
}

#[test]
fn pages_are_cut_by_bytes_and_a_row_over_the_budget_still_moves_the_answer_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = filled(&dir, 100, 4000);
    let r = HistoryReader::open(&path).unwrap();
    let mut c = r.query(&everything(), false).unwrap();
    let budget = 64 << 10;
    let mut got = 0;
    let mut pages = 0;
    loop {
        let mut out = Vec::new();
        let end = c.next_page_within(&mut out, 1000, budget).unwrap();
        let bytes: usize = out
            .iter()
            .map(firehose_transport::control::wire::row_len)
            .sum();
        assert!(bytes <= budget, "a page of {bytes} bytes");
        got += out.len();
        pages += 1;
        if end.is_some() {
            break;
        }
    }
    assert_eq!(got, 100);
    assert!(pages >= 7, "{pages} pages for 400 KB under a 64 KiB budget");
    // One row longer than the budget alone is still sent, so the answer moves on.
    let mut c = r.query(&everything(), false).unwrap();
    let mut out = Vec::new();
    c.next_page_within(&mut out, 1000, 100).unwrap();
    assert_eq!(out.len(), 1);
}
