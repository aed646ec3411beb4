//! Criterion micro benches of the ring in one process (heap memory): publishing a batch,
//! draining one, encoding a file event, and checked access to one.
//!
//! `cargo bench -p firehose-bench` (about two minutes with the build).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use firehose_bench::payload::{checksum, BenchRecord, Pool};
use firehose_transport::record::{ArchivedFileEvent, EventKind, FileEvent};
use firehose_transport::ring::{Event, Policy, Producer, Reader, RingConfig};

/// (payload bytes, records per batch): 64 B x 256 (20 KiB of frames) and 1 KiB x 32.
const BATCHES: [(usize, u64); 2] = [(64, 256), (1024, 32)];

fn short<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    g
}

/// Reads everything a reader has, touching nothing (the lagging reader of the publish
/// bench only has to keep up).
fn drain(r: &mut Reader<BenchRecord>) {
    while !r.try_recv(4096).expect("heap ring reads").is_empty() {}
}

/// `stage_archived` N records and `commit`, with one lagging reader attached (drained
/// outside the timed part).
fn publish_batch(c: &mut Criterion) {
    let mut g = short(c, "publish_batch");
    for (payload, n) in BATCHES {
        let pool = Pool::new(payload).expect("pool");
        let mut p = Producer::<BenchRecord>::new_heap(RingConfig::default()).expect("ring");
        let mut r = p.attach_local(Policy::Lagging).expect("reader");
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new(format!("{payload}B"), n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for i in 0..n {
                        p.stage_archived(black_box(pool.bytes(i))).expect("stage");
                    }
                    p.commit().expect("commit");
                    timed += t.elapsed();
                    drain(&mut r);
                }
                timed
            });
        });
    }
    g.finish();
}

/// `try_recv` of a published batch with a lossless reader, validating (rkyv) and
/// checksumming every record. Publishing is outside the timed part.
fn drain_batch(c: &mut Criterion) {
    let mut g = short(c, "drain_batch");
    for (payload, n) in BATCHES {
        let pool = Pool::new(payload).expect("pool");
        let mut p = Producer::<BenchRecord>::new_heap(RingConfig::default()).expect("ring");
        let mut r = p.attach_local(Policy::Lossless).expect("reader");
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new(format!("{payload}B"), n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut sum = 0u64;
                for _ in 0..iters {
                    for i in 0..n {
                        p.stage_archived(pool.bytes(i)).expect("stage");
                    }
                    p.commit().expect("commit");
                    let t = Instant::now();
                    let batch = r.try_recv(n as usize).expect("read");
                    for ev in &batch {
                        if let Event::Record(rec) = ev {
                            let a = rec.access().expect("valid");
                            sum = sum.wrapping_add(checksum(rec.bytes()) ^ a.seq.to_native());
                        }
                    }
                    assert_eq!(batch.len() as u64, n);
                    timed += t.elapsed();
                }
                black_box(sum);
                timed
            });
        });
    }
    g.finish();
}

/// A file event with a 62-byte path (archives to 128 bytes).
fn file_event() -> FileEvent {
    let mut path = b"/home/user/projects/firehose/target/release/deps/".to_vec();
    path.resize(62, b'x');
    FileEvent {
        seq: 42,
        time_ns: 1_764_000_000_000_000_000,
        kind: EventKind::CloseWrite,
        path,
        path_to: None,
        rule: 3,
        size: Some(4096),
        reconciled: false,
        blind: None,
        gap: None,
    }
}

/// `Producer::stage` of a file event: rkyv serialization plus staging (commits of full
/// batches amortized; no readers).
fn record_encode(c: &mut Criterion) {
    let mut g = short(c, "record_encode");
    let ev = file_event();
    let mut p = Producer::<FileEvent>::new_heap(RingConfig::default()).expect("ring");
    g.throughput(Throughput::Elements(1));
    g.bench_function("stage_file_event", |b| {
        b.iter(|| p.stage(black_box(&ev)).expect("stage"));
    });
    g.finish();
}

/// `rkyv::access` (validated) of an archived file event.
fn checked_access(c: &mut Criterion) {
    let mut g = short(c, "checked_access");
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&file_event()).expect("archive");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("file_event", bytes.len()), |b| {
        b.iter(|| {
            let a = rkyv::access::<ArchivedFileEvent, rkyv::rancor::Error>(black_box(&bytes))
                .expect("valid");
            black_box(a.path.len())
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    publish_batch,
    drain_batch,
    record_encode,
    checked_access
);
criterion_main!(benches);
