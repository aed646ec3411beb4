//! History database benchmarks: writer insert rate, a path-glob query over the newest
//! 1,000,000 rows, and the newest 100,000 rows by seq.
//!
//! `CARGO_TARGET_DIR=/work/tgt-history cargo bench -p firehose-producer --bench history`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use firehose_producer::history::{HistoryReader, HistoryWriter, WriterConfig};
use firehose_transport::control::wire::{HistoryQuery, QueryEnd};
use firehose_transport::record::{EventKind, FileEvent};

const BIG: u64 = 1_000_000;

fn ev(seq: u64) -> FileEvent {
    // ~60-byte paths over 100 directories, fixed pattern (deterministic data set).
    FileEvent {
        seq,
        time_ns: 1_700_000_000_000_000_000 + seq * 1000,
        kind: if seq.is_multiple_of(5) {
            EventKind::Rename
        } else {
            EventKind::CloseWrite
        },
        path: format!(
            "/home/user/projects/app/src/module{}/file{}.rs",
            seq % 100,
            seq % 997
        )
        .into_bytes(),
        path_to: seq
            .is_multiple_of(5)
            .then(|| format!("/home/user/tmp/x{seq}.rs").into_bytes()),
        rule: (seq % 7) as u32,
        size: Some(seq % 65_536),
        reconciled: false,
        blind: None,
        gap: None,
    }
}

/// Submits `from..from+n` and waits until all are committed; returns the elapsed time.
fn fill(w: &HistoryWriter, from: u64, n: u64) -> Duration {
    let t = Instant::now();
    let cap = WriterConfig::default().queue_capacity;
    for s in from..from + n {
        // One submitter: waiting for room here means no record is ever dropped.
        while w.queued() >= cap - 1 {
            std::thread::yield_now();
        }
        assert!(w.submit(ev(s)));
    }
    w.flush().expect("flush");
    t.elapsed()
}

fn drain(r: &HistoryReader, q: &HistoryQuery, reverse: bool) -> (usize, QueryEnd) {
    let mut c = r.query(q, reverse).expect("query");
    let mut buf = Vec::with_capacity(4096);
    let mut n = 0;
    loop {
        buf.clear();
        let end = c.next_page(&mut buf, 4096).expect("page");
        n += buf.len();
        if let Some(end) = end {
            return (n, end);
        }
    }
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("history_insert");
    let n = 200_000u64;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("writer_200k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let w = HistoryWriter::open(&dir.path().join("h.db"), WriterConfig::default())
                    .expect("open");
                total += fill(&w, 1, n);
                assert_eq!(w.stats().overflowed, 0);
                w.shutdown().expect("shutdown");
            }
            total
        })
    });
    g.finish();
}

fn queries(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.db");
    build(&path);
    let r = HistoryReader::open(&path).expect("reader");
    let mut g = c.benchmark_group("history_query");
    g.sample_size(10);
    let glob = HistoryQuery {
        seq: Some((1, BIG)),
        glob: Some("**/module42/*.rs".into()),
        ..Default::default()
    };
    g.throughput(Throughput::Elements(BIG));
    g.bench_function("glob_newest_1M", |b| {
        b.iter(|| {
            let (n, end) = drain(&r, &glob, false);
            assert_eq!((n as u64, end), (BIG / 100, QueryEnd::Complete));
        })
    });
    let newest = HistoryQuery {
        seq: Some((BIG - 100_000 + 1, BIG)),
        ..Default::default()
    };
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("newest_100k_by_seq", |b| {
        b.iter(|| assert_eq!(drain(&r, &newest, false).0, 100_000))
    });
    g.bench_function("newest_100k_by_seq_reverse", |b| {
        b.iter(|| assert_eq!(drain(&r, &newest, true).0, 100_000))
    });
    let time = HistoryQuery {
        time_ns: Some((ev(BIG - 100_000 + 1).time_ns, ev(BIG).time_ns)),
        ..Default::default()
    };
    g.bench_function("newest_100k_by_time", |b| {
        b.iter(|| assert_eq!(drain(&r, &time, false).0, 100_000))
    });
    g.finish();
}

/// The 1M-row database, built once.
fn build(path: &Path) {
    let w = HistoryWriter::open(path, WriterConfig::default()).expect("open");
    let t = fill(&w, 1, BIG);
    eprintln!(
        "built {BIG} rows in {t:?} ({:.0} rows/s through the writer)",
        BIG as f64 / t.as_secs_f64()
    );
    w.shutdown().expect("shutdown");
}

criterion_group!(benches, insert, queries);
criterion_main!(benches);
