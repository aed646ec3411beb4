//! The reader thread: reads the kernel queue as fast as it can and hands batches to the core
//! thread through a queue bounded in events. It never blocks on the core: when the queue is
//! full it drops events and says so in band ([`Raw::DropStart`], [`Raw::DropEnd`]), so a full
//! queue becomes an overflow, never a stalled kernel queue and never silence.

use super::backend::{now_ns, Inotify, SysEvent};
use super::fanotify::sys::{FanEvent, Fanotify};
use crossbeam_channel::Sender;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A kernel queue the reader drains: inotify or fanotify.
pub(crate) trait Queue: AsFd + Send + Sync + 'static {
    /// What one record parses into.
    type Event: Send + 'static;
    /// The reader thread's name.
    const THREAD: &'static str;
    /// Reads what is queued (non-blocking) into `buf`, appending parsed events to `out`;
    /// returns the bytes read, 0 when nothing was queued.
    fn read_into(
        &self,
        buf: &mut [u8],
        time_ns: u64,
        out: &mut Vec<Self::Event>,
    ) -> std::io::Result<usize>;
}

impl Queue for Inotify {
    type Event = SysEvent;
    const THREAD: &'static str = "firehose-inotify";
    fn read_into(
        &self,
        buf: &mut [u8],
        time_ns: u64,
        out: &mut Vec<SysEvent>,
    ) -> std::io::Result<usize> {
        self.read_events(buf, time_ns, out)
    }
}

impl Queue for Fanotify {
    type Event = FanEvent;
    const THREAD: &'static str = "firehose-fanotify";
    fn read_into(
        &self,
        buf: &mut [u8],
        time_ns: u64,
        out: &mut Vec<FanEvent>,
    ) -> std::io::Result<usize> {
        self.read_events(buf, time_ns, out)
    }
}

/// What the reader hands the core.
#[derive(Debug)]
pub(crate) enum Raw<E> {
    /// Events in kernel order.
    Events(Vec<E>),
    /// The queue was full: events from here on are being dropped.
    DropStart {
        /// When the first event was dropped.
        time_ns: u64,
    },
    /// The queue has room again; `dropped` events were lost in this episode.
    DropEnd {
        /// Events dropped since the matching [`Raw::DropStart`].
        dropped: u64,
    },
}

/// The reader's side of the queue bound.
#[derive(Debug)]
pub(crate) struct Bound {
    /// Events in the queue (added by the reader, removed by the core).
    pub(crate) queued: AtomicUsize,
    /// The most events the queue may hold.
    pub(crate) limit: usize,
    /// Events dropped since start.
    pub(crate) dropped: std::sync::atomic::AtomicU64,
}

/// Read buffer size: room for about 2,000 events with short names per `read()`.
const BUF: usize = 64 * 1024;

/// Starts the reader thread. It stops when `stop` is set and `wake` becomes readable, or when
/// the core is gone.
pub(crate) fn spawn<Q: Queue>(
    ino: Arc<Q>,
    mut wake: UnixStream,
    stop: Arc<AtomicBool>,
    tx: Sender<Raw<Q::Event>>,
    bound: Arc<Bound>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(Q::THREAD.into())
        .spawn(move || {
            let mut buf = vec![0u8; BUF];
            let mut batch = Vec::new();
            let mut dropping: Option<u64> = None;
            loop {
                let timeout = if dropping.is_some() {
                    PollTimeout::from(50u16)
                } else {
                    PollTimeout::NONE
                };
                let mut fds = [
                    PollFd::new(ino.as_fd(), PollFlags::POLLIN),
                    PollFd::new(wake.as_fd(), PollFlags::POLLIN),
                ];
                if let Err(e) = poll(&mut fds, timeout) {
                    if e != nix::errno::Errno::EINTR {
                        tracing::error!("watch: poll on {} failed: {e}", Q::THREAD);
                        return;
                    }
                }
                if stop.load(Ordering::Acquire) {
                    let _ = wake.read(&mut [0u8; 8]);
                    return;
                }
                loop {
                    match ino.read_into(&mut buf, now_ns(), &mut batch) {
                        Ok(0) => break,
                        Ok(_) if batch.len() < 8192 => {}
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!("watch: reading {} failed: {e}", Q::THREAD);
                            return;
                        }
                    }
                }
                if !flush(&mut batch, &mut dropping, &tx, &bound) {
                    return;
                }
            }
        })
}

/// Hands `batch` to the core, or drops what does not fit. Returns false once the core is gone.
fn flush<E>(
    batch: &mut Vec<E>,
    dropping: &mut Option<u64>,
    tx: &Sender<Raw<E>>,
    bound: &Bound,
) -> bool {
    let queued = bound.queued.load(Ordering::Acquire);
    let room = bound.limit.saturating_sub(queued);
    if let Some(dropped) = dropping {
        // Hysteresis: resume once a quarter of the queue is free, so one episode is one
        // overflow rather than a flicker of them.
        if room < bound.limit.div_ceil(4) {
            *dropped += batch.len() as u64;
            bound
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            return true;
        }
        let dropped = *dropped;
        *dropping = None;
        if tx.send(Raw::DropEnd { dropped }).is_err() {
            return false;
        }
    }
    if batch.is_empty() {
        return true;
    }
    let mut lost = 0;
    if batch.len() > room {
        lost = (batch.len() - room) as u64;
        bound.dropped.fetch_add(lost, Ordering::Relaxed);
        batch.truncate(room);
    }
    if !batch.is_empty() {
        bound.queued.fetch_add(batch.len(), Ordering::AcqRel);
        if tx.send(Raw::Events(std::mem::take(batch))).is_err() {
            return false;
        }
    }
    if lost > 0 {
        *dropping = Some(lost);
        if tx.send(Raw::DropStart { time_ns: now_ns() }).is_err() {
            return false;
        }
    }
    true
}
