//! The ring publisher: its own thread, fed through a bounded queue, so that a lossless reader
//! holding the ring back (within its budget) never holds back the watcher or history. Seqs
//! the ring skips arrive as gap frames in order: `Crash` when told so, `NotStreamed` for
//! every other hole (a rule with `stream = false`, or this queue overflowing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use firehose_transport::record::{FileEvent, GapReason};
use firehose_transport::ring::{Producer, PublishError};

/// What the pipeline hands the publisher.
#[derive(Debug)]
pub enum PubItem {
    /// A record to stream.
    Record(FileEvent),
    /// Seqs up to `to` are skipped for `reason`.
    Gap {
        /// Last skipped seq.
        to: u64,
        /// Why.
        reason: GapReason,
    },
}

/// Counters the publisher keeps (for status).
#[derive(Debug, Default)]
pub struct PubStats {
    /// Records published.
    pub published: AtomicU64,
    /// Records that could not go into the ring (queue full, or a lossless reader over
    /// its budget): they became `NotStreamed` gaps.
    pub not_streamed: AtomicU64,
}

/// The publisher's handle: a bounded queue in front of its thread.
#[derive(Debug)]
pub struct Publisher {
    tx: Option<Sender<PubItem>>,
    thread: Option<JoinHandle<()>>,
    /// Counters.
    pub stats: Arc<PubStats>,
}

impl Publisher {
    /// Starts the thread over `producer`.
    ///
    /// # Errors
    /// If the thread cannot start.
    pub fn start(
        producer: Arc<Mutex<Producer<FileEvent>>>,
        capacity: usize,
    ) -> std::io::Result<Publisher> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let stats = Arc::new(PubStats::default());
        let s = stats.clone();
        let thread = std::thread::Builder::new()
            .name("firehose-publisher".into())
            .spawn(move || run(producer, rx, s))?;
        Ok(Publisher {
            tx: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// Queues an item without waiting. A full queue drops it (the hole becomes a
    /// `NotStreamed` gap when the next record goes in) and returns false.
    pub fn offer(&self, item: PubItem) -> bool {
        match self.tx.as_ref().map(|t| t.try_send(item)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(PubItem::Record(_)))) => {
                self.stats.not_streamed.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => false,
        }
    }

    /// Publishes what is queued, closes the ring (readers read to its end, then learn it
    /// closed) and stops the thread.
    pub fn finish(mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(p: &Mutex<Producer<FileEvent>>) -> std::sync::MutexGuard<'_, Producer<FileEvent>> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(producer: Arc<Mutex<Producer<FileEvent>>>, rx: Receiver<PubItem>, stats: Arc<PubStats>) {
    let mut staged = 0usize;
    loop {
        // Stage what is queued, a batch at a time under one lock; commit when the queue
        // runs dry (low latency when idle, big batches under load).
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut p = lock(&producer);
        let mut item = Some(first);
        while let Some(it) = item.take() {
            put(&mut p, it, &stats);
            staged += 1;
            if staged >= 4096 {
                let _ = p.commit();
                staged = 0;
            }
            item = rx.try_recv().ok();
        }
        let _ = p.commit();
        staged = 0;
    }
    lock(&producer).close();
}

fn put(p: &mut Producer<FileEvent>, item: PubItem, stats: &PubStats) {
    match item {
        PubItem::Gap { to, reason } => {
            if to >= p.next_seq() {
                let _ = p.stage_gap(to, reason.code());
            }
        }
        PubItem::Record(ev) => {
            if ev.seq < p.next_seq() {
                return; // never twice, never backwards
            }
            if ev.seq > p.next_seq() {
                let _ = p.stage_gap(ev.seq - 1, GapReason::NotStreamed.code());
            }
            match p.stage(&ev) {
                Ok(_) => {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(PublishError::Backpressure { .. }) | Err(_) => {
                    // The ring could not take it within the lossless budget: a gap says so
                    // (the record is in history if its rule stores it).
                    stats.not_streamed.fetch_add(1, Ordering::Relaxed);
                    let _ = p.stage_gap(ev.seq, GapReason::NotStreamed.code());
                }
            }
        }
    }
}
