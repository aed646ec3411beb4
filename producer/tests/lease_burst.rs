//! A burst faster than the seq lease renews (a slow disk under `git checkout`): every event
//! gets a seq and is stored, or the loss is on record as an overflow.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firehose_producer::filters::RuleSet;
use firehose_producer::history::{HistoryReader, HistoryWriter, WriterConfig};
use firehose_producer::lease::{Lease, LeaseConfig, LeaseHealth};
use firehose_producer::service::pipeline::{Pipeline, PipelineStats};
use firehose_producer::watch::RawEvent;
use firehose_transport::control::wire::{HistoryQuery, QueryEnd};
use firehose_transport::publisher::{Publisher, PublisherConfig};
use firehose_transport::record::{EventKind, FileEvent};
use firehose_transport::ring::{Producer, RingConfig};

const WATCHDOG: Duration = Duration::from_secs(120);

struct Rig {
    _dir: tempfile::TempDir,
    db: PathBuf,
    root: PathBuf,
    writer: Arc<HistoryWriter>,
    lease: Arc<Lease>,
    stats: Arc<PipelineStats>,
    pipeline: Pipeline,
}

fn rig(lease_cfg: LeaseConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let root = dir.path().join("w");
    let writer = Arc::new(
        HistoryWriter::open(
            &db,
            WriterConfig {
                queue_capacity: 1 << 20,
                ..WriterConfig::default()
            },
        )
        .unwrap(),
    );
    let (lease, rec) = Lease::open(&dir.path().join("history.lease"), 1, None, lease_cfg).unwrap();
    let lease = Arc::new(lease);
    let producer = Producer::<FileEvent>::new(RingConfig::default()).unwrap();
    let (publisher, _link) = Publisher::start(producer, PublisherConfig::default()).unwrap();
    let stats = Arc::new(PipelineStats::default());
    let pipeline = Pipeline::new(
        RuleSet::implicit(std::slice::from_ref(&root)),
        writer.clone(),
        publisher,
        lease.clone(),
        None,
        vec![root.clone()],
        rec.next_seq,
        stats.clone(),
    );
    Rig {
        _dir: dir,
        db,
        root,
        writer,
        lease,
        stats,
        pipeline,
    }
}

fn create(root: &Path, i: u64) -> RawEvent {
    RawEvent {
        time_ns: 1_000 + i,
        kind: EventKind::Create,
        path: root.join(format!("d{}/f{i}", i % 100)),
        path_to: None,
        size: None,
        is_dir: false,
        reconciled: false,
    }
}

/// Every stored row, in seq order, after the writer has committed all it was given.
fn history(r: &Rig) -> Vec<FileEvent> {
    r.writer.flush().unwrap();
    let reader = HistoryReader::open(&r.db).unwrap();
    let mut c = reader.query(&HistoryQuery::default(), false).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    loop {
        assert!(Instant::now() < deadline, "query never ended");
        if let Some(end) = c.next_page(&mut out, 4096).unwrap() {
            assert_eq!(end, QueryEnd::Complete);
            return out;
        }
    }
}

/// Seqs from the first row to the last are each covered once, by a row or a gap row.
fn assert_seq_line(rows: &[FileEvent]) {
    let mut next = rows.first().map_or(0, |r| r.seq);
    for r in rows {
        assert_eq!(r.seq, next, "seq line broken before {r:?}");
        next = r.gap.map_or(r.seq, |g| g.to) + 1;
    }
}

#[test]
fn a_burst_of_200k_creates_under_a_slowed_lease_gets_every_event_a_seq() {
    let mut r = rig(LeaseConfig::default());
    // Every renewal takes 30 ms before its fdatasync: a burst outruns it many times over.
    r.lease.inject_write_delay(Duration::from_millis(30));
    for i in 0..200_000 {
        r.pipeline.on_event(create(&r.root, i));
    }
    let rows = history(&r);
    assert_seq_line(&rows);
    assert!(
        r.stats.lease_waits.load(Ordering::Relaxed) > 0,
        "the burst never outran the lease: the test does not test it"
    );
    assert_eq!(r.stats.lease_blocked.load(Ordering::Relaxed), 0);
    let creates = rows.iter().filter(|e| e.kind == EventKind::Create).count();
    assert_eq!(creates, 200_000, "every create is stored");
}

#[test]
fn events_the_lease_cannot_cover_are_announced_by_an_overflow_record() {
    let mut r = rig(LeaseConfig {
        retry: Duration::from_millis(10),
        ..LeaseConfig::default()
    });
    r.lease.inject_write_failure(true);
    // Past the lease's end, events cannot get a seq.
    let end = r.lease.end();
    let deadline = Instant::now() + WATCHDOG;
    let mut i = 0;
    while r.stats.lease_blocked.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "the lease never ran out");
        r.pipeline.on_event(create(&r.root, i));
        i += 1;
    }
    let lost = r.stats.lease_blocked.load(Ordering::Relaxed);
    assert!(r.pipeline.next_seq() <= end);
    r.lease.inject_write_failure(false);
    while r.lease.health() != LeaseHealth::Ok || !r.lease.grant(r.pipeline.next_seq()) {
        assert!(Instant::now() < deadline, "the lease never recovered");
        std::thread::sleep(Duration::from_millis(5));
    }
    r.pipeline.on_event(create(&r.root, i));
    let rows = history(&r);
    assert_seq_line(&rows);
    let stored = rows.iter().filter(|e| e.kind == EventKind::Create).count() as u64;
    assert_eq!(
        stored + lost,
        i + 1,
        "each event is stored or counted as lost"
    );
    // The loss is on record, before the first event after it.
    let n = rows.len();
    assert_eq!(
        rows[n - 2].kind,
        EventKind::Overflow,
        "{:?}",
        &rows[n - 2..]
    );
    assert_eq!(rows[n - 1].kind, EventKind::Create);
}
