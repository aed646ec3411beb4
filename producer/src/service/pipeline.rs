//! The record path inside the service, on one thread:
//!
//! ```text
//!  watcher events ─┐
//!  synthetic load ─┼─► filter (one RuleSet) ─► coalesce (per rule) ─► seq (lease) ─┬─► history writer
//!  reloads ────────┘                                                               └─► ring publisher
//! ```
//!
//! Every matching event gets the next seq (never reused: the lease covers it). A record of a
//! rule with `store = false` leaves a `NotStored` gap in history; one with `stream = false`
//! leaves a `NotStreamed` gap in the ring (the publisher fills holes in the seq line).
//! Neither side waits for the other: the writer's queue and the publisher's queue are both
//! bounded and never block this thread.

use std::collections::HashMap;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver};
use firehose_transport::record::{BlindInfo, EventKind, FileEvent, GapInfo, GapReason};

use crate::filters::{Coalescer, Match, Reload, RuleSet, OVERFLOW_RULE_ID};
use crate::history::HistoryWriter;
use crate::lease::Lease;
use crate::watch::{RawEvent, WatchEvent, Watcher};
use firehose_transport::publisher::{Item, Publisher};

/// How long a `NotStored` range may grow before it is written as a gap row.
const NOT_STORED_HOLD: Duration = Duration::from_millis(200);

/// How long an event waits for a lease renewal that is under way (a burst faster than one
/// renewal, a slow disk) before it is given up on. Events given up on are not lost
/// silently: the next record is preceded by an overflow record.
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// Counters and the current rules, shared with the status report.
///
/// Every access is Relaxed: they are counts for `status`, and no other memory is published
/// through them.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Events the filter saw.
    pub seen: AtomicU64,
    /// Records made (seqs given out).
    pub records: AtomicU64,
    /// Overflow records.
    pub overflows: AtomicU64,
    /// Events dropped because the lease could not be renewed (no seq given; an overflow
    /// record follows once seqs can be given again).
    pub lease_blocked: AtomicU64,
    /// Times an event waited for a lease renewal (and got its seq).
    pub lease_waits: AtomicU64,
    /// Records per second over the last second and the last minute.
    pub rates: super::rate::Rates,
    /// The next seq.
    pub next_seq: AtomicU64,
    /// Filter reloads applied and rejected.
    pub reloads: AtomicU64,
    /// Filter reloads rejected.
    pub reload_errors: AtomicU64,
    /// The last rejected reload's errors.
    pub last_reload_error: Mutex<Option<String>>,
    /// The rules in force (shared read-only copies for status).
    pub rules: Mutex<Option<Arc<RuleSet>>>,
}

/// What the pipeline thread owns.
pub struct Pipeline {
    /// The rules in force.
    pub rules: Arc<RuleSet>,
    /// Store/stream flags by rule id (for records that come out of the coalescer).
    flags: HashMap<u32, (bool, bool)>,
    /// The history writer.
    pub writer: Arc<HistoryWriter>,
    /// The ring publisher.
    pub publisher: Publisher<FileEvent>,
    /// The seq lease.
    pub lease: Arc<Lease>,
    /// The watcher (roots follow the rules).
    pub watcher: Option<Arc<Watcher>>,
    /// `--watch` roots (always watched).
    pub base_roots: Vec<PathBuf>,
    next_seq: u64,
    coalescer: Coalescer<FileEvent>,
    /// A `NotStored` range waiting to be written as one gap row.
    not_stored: Option<(u64, u64)>,
    /// When that range began.
    not_stored_since: Option<Instant>,
    stats: Arc<PipelineStats>,
    /// Records made since the rates were last told.
    uncounted: u64,
    out: Vec<FileEvent>,
    /// Events given up on since the last record (the lease could not cover them).
    lost_to_lease: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// What [`Pipeline::classify`] makes of an event: its kind, path, new path and rule.
type Classified = (EventKind, Vec<u8>, Option<Vec<u8>>, Match);

/// Inputs besides the watcher.
#[derive(Debug)]
pub struct Inputs {
    /// Watcher events.
    pub watch: Option<Receiver<WatchEvent>>,
    /// Synthetic batches.
    pub synthetic: Option<Receiver<Vec<RawEvent>>>,
    /// Filter reloads.
    pub reloads: Option<Receiver<Reload>>,
    /// Closed (or a message) to stop.
    pub stop: Receiver<()>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn flags_of(rules: &RuleSet) -> HashMap<u32, (bool, bool)> {
    rules
        .rules()
        .iter()
        .map(|r| (r.id, (r.store, r.stream)))
        .collect()
}

impl Pipeline {
    /// A pipeline starting at `next_seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rules: RuleSet,
        writer: Arc<HistoryWriter>,
        publisher: Publisher<FileEvent>,
        lease: Arc<Lease>,
        watcher: Option<Arc<Watcher>>,
        base_roots: Vec<PathBuf>,
        next_seq: u64,
        stats: Arc<PipelineStats>,
    ) -> Self {
        let rules = Arc::new(rules);
        *stats.rules.lock().unwrap_or_else(|e| e.into_inner()) = Some(rules.clone());
        stats.next_seq.store(next_seq, Ordering::Relaxed);
        Pipeline {
            flags: flags_of(&rules),
            rules,
            writer,
            publisher,
            lease,
            watcher,
            base_roots,
            next_seq,
            coalescer: Coalescer::new(65_536),
            not_stored: None,
            not_stored_since: None,
            stats,
            uncounted: 0,
            out: Vec::new(),
            lost_to_lease: 0,
        }
    }

    /// The next seq.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Ends the pipeline, dropping its shares of the writer, lease and watcher, and hands
    /// back the publisher (to finish it).
    pub fn into_publisher(self) -> Publisher<FileEvent> {
        self.publisher
    }

    /// Runs until `inputs.stop` fires or every input closes; then flushes the coalescer and
    /// the pending gap.
    pub fn run(&mut self, inputs: Inputs) {
        let watch = inputs.watch.unwrap_or_else(crossbeam_channel::never);
        let synth = inputs.synthetic.unwrap_or_else(crossbeam_channel::never);
        let reloads = inputs.reloads.unwrap_or_else(crossbeam_channel::never);
        loop {
            // Wait for input or for the first timer that is due (a coalescing window, the
            // NotStored hold); none at rest.
            let timeout = self
                .next_due()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let timer = match timeout {
                Some(t) => crossbeam_channel::after(t),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(watch) -> ev => match ev {
                    Ok(ev) => self.on_watch(ev),
                    Err(_) => {
                        if self.watcher.is_some() {
                            tracing::error!("the watcher stopped; no more file events");
                            self.watcher = None;
                        }
                    }
                },
                recv(synth) -> batch => {
                    if let Ok(batch) = batch {
                        for ev in batch {
                            self.on_event(ev);
                        }
                    }
                },
                recv(reloads) -> r => {
                    if let Ok(r) = r {
                        self.on_reload(r);
                    }
                },
                recv(inputs.stop) -> _ => break,
                recv(timer) -> _ => {}
            }
            self.flush_due();
        }
        let rest = self.coalescer.flush_all();
        for ev in rest {
            self.emit_coalesced(ev);
        }
        self.flush_not_stored();
    }

    /// The first moment something is due without new input.
    fn next_due(&self) -> Option<Instant> {
        let hold = self.not_stored_since.map(|t| t + NOT_STORED_HOLD);
        [self.coalescer.next_deadline(), hold]
            .into_iter()
            .flatten()
            .min()
    }

    fn flush_due(&mut self) {
        let now = Instant::now();
        let mut due = std::mem::take(&mut self.out);
        self.coalescer.flush_due_into(now, &mut due);
        for ev in due.drain(..) {
            self.emit_coalesced(ev);
        }
        self.out = due;
        if self.uncounted > 0 {
            self.stats.rates.add(std::mem::take(&mut self.uncounted));
        }
        // A NotStored range grows while unstored records keep coming and is written
        // after NOT_STORED_HOLD at the latest (or when a stored record ends it): a few gap
        // rows a second at any rate, and history never lags far behind the stream.
        if self
            .not_stored_since
            .is_some_and(|t| now.duration_since(t) >= NOT_STORED_HOLD)
        {
            self.flush_not_stored();
        }
    }

    fn on_watch(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Event(raw) => self.on_event(raw),
            WatchEvent::Overflow { root, reason } => {
                tracing::warn!(
                    "events were lost ({reason:?}) under {}; the tree is being walked again",
                    root.as_deref()
                        .map(|r| r.display().to_string())
                        .unwrap_or_else(|| "every root".into())
                );
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
                self.emit_notice(EventKind::Overflow, root, None);
            }
            WatchEvent::RootGone(root) => {
                tracing::warn!(
                    "watched root {} is gone; watching for its return",
                    root.display()
                );
                self.on_event(RawEvent {
                    time_ns: now_ns(),
                    kind: EventKind::Remove,
                    path: root,
                    path_to: None,
                    size: None,
                    is_dir: true,
                    reconciled: false,
                });
            }
            WatchEvent::RootBack(root) => {
                tracing::info!("watched root {} is back", root.display());
                self.on_event(RawEvent {
                    time_ns: now_ns(),
                    kind: EventKind::Create,
                    path: root,
                    path_to: None,
                    size: None,
                    is_dir: true,
                    reconciled: false,
                });
            }
            WatchEvent::WatchLimit(limit) => {
                tracing::error!("{}", limit.message);
            }
            WatchEvent::Blind {
                root,
                start,
                reason,
                since_ns,
            } => {
                let kind = if start {
                    EventKind::BlindStart
                } else {
                    EventKind::BlindEnd
                };
                self.emit_notice(kind, root, Some(BlindInfo { reason, since_ns }));
            }
        }
    }

    /// An overflow or blind-range record about `root` (every root if `None`): always
    /// stored and streamed, whatever the rules.
    fn emit_notice(&mut self, kind: EventKind, root: Option<PathBuf>, blind: Option<BlindInfo>) {
        let path = root
            .map(|r| r.into_os_string().into_vec())
            .unwrap_or_default();
        self.emit(
            FileEvent {
                seq: 0,
                time_ns: now_ns(),
                kind,
                path,
                path_to: None,
                rule: OVERFLOW_RULE_ID,
                size: None,
                reconciled: false,
                blind,
                gap: None,
            },
            true,
            true,
        );
    }

    fn on_reload(&mut self, r: Reload) {
        let mut rules = (*self.rules).clone();
        match r.apply_to(&mut rules) {
            Ok(diff) => {
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "filter documents reloaded: {} rules; roots added {:?}, removed {:?}",
                    rules.rules().len(),
                    diff.added,
                    diff.removed
                );
                if !diff.is_empty() {
                    if let Some(w) = &self.watcher {
                        let mut roots = rules.roots();
                        for b in &self.base_roots {
                            if !roots.contains(b) {
                                roots.push(b.clone());
                            }
                        }
                        if let Err(e) = w.set_roots(roots) {
                            tracing::error!("cannot watch the new roots: {e}");
                        }
                    }
                }
                self.flags = flags_of(&rules);
                self.rules = Arc::new(rules);
                *self.stats.rules.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(self.rules.clone());
            }
            Err(errors) => {
                self.stats.reload_errors.fetch_add(1, Ordering::Relaxed);
                let text = errors.to_string();
                tracing::error!("a filter document has errors; the previous rules stay: {text}");
                *self
                    .stats
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(text);
            }
        }
    }

    /// One event from the watcher or the synthetic source.
    pub fn on_event(&mut self, raw: RawEvent) {
        self.stats.seen.fetch_add(1, Ordering::Relaxed);
        let path = raw.path.into_os_string().into_vec();
        let path_to = raw.path_to.map(|p| p.into_os_string().into_vec());
        let Some((kind, path, path_to, m)) = self.classify(raw.kind, path, path_to) else {
            return;
        };
        let ev = FileEvent {
            seq: 0,
            time_ns: raw.time_ns,
            kind,
            path,
            path_to,
            rule: m.rule,
            size: raw.size,
            reconciled: raw.reconciled,
            blind: None,
            gap: None,
        };
        if m.coalesce.is_none() && self.coalescer.is_empty() {
            self.emit(ev, m.store, m.stream);
        } else {
            // Through the coalescer even without a window: a burst pending on the same
            // path comes out first, so records keep their order per path.
            let mut out = std::mem::take(&mut self.out);
            self.coalescer
                .push(ev, m.coalesce, Instant::now(), &mut out);
            for ev in out.drain(..) {
                self.emit_coalesced(ev);
            }
            self.out = out;
        }
    }

    /// Which rule takes an event, and as what. A rename is matched on both of its paths:
    /// an atomic save (`notes.md.tmp` renamed to `notes.md` under `include = ["*.md"]`)
    /// enters the filtered set, so it is recorded as a create of the new path; a rename
    /// out of the set is recorded as a remove of the old path. Replaying the filtered
    /// history then still gives the filtered tree.
    fn classify(
        &self,
        kind: EventKind,
        path: Vec<u8>,
        path_to: Option<Vec<u8>>,
    ) -> Option<Classified> {
        let to = match (kind, path_to) {
            (EventKind::Rename, Some(to)) => to,
            (kind, path_to) => {
                let m = self.rules.matches(&path, kind)?;
                return Some((kind, path, path_to, m));
            }
        };
        let old = self.rules.matches(&path, EventKind::Rename);
        let new = self.rules.matches(&to, EventKind::Rename);
        match (old, new) {
            (Some(m), Some(_)) => Some((EventKind::Rename, path, Some(to), m)),
            (Some(m), None) => Some((EventKind::Remove, path, None, m)),
            (None, Some(m)) => Some((EventKind::Create, to, None, m)),
            // Rules that take creates or removes but not renames.
            (None, None) => {
                if let Some(m) = self.rules.matches(&to, EventKind::Create) {
                    Some((EventKind::Create, to, None, m))
                } else {
                    let m = self.rules.matches(&path, EventKind::Remove)?;
                    Some((EventKind::Remove, path, None, m))
                }
            }
        }
    }

    fn emit_coalesced(&mut self, ev: FileEvent) {
        let (store, stream) = self.flags.get(&ev.rule).copied().unwrap_or((true, true));
        self.emit(ev, store, stream);
    }

    /// The next seq, once the lease covers it (waiting up to [`LEASE_WAIT`] for a renewal
    /// under way). `None`: the lease cannot cover it; the event is counted and an overflow
    /// record will say so.
    fn take_seq(&mut self) -> Option<u64> {
        let seq = self.next_seq;
        if !self.lease.grant(seq) {
            self.stats.lease_waits.fetch_add(1, Ordering::Relaxed);
            if !self.lease.wait_grant(seq, LEASE_WAIT) {
                // The lease file cannot be renewed: no seq may be given out past its end.
                self.stats.lease_blocked.fetch_add(1, Ordering::Relaxed);
                self.lost_to_lease += 1;
                return None;
            }
        }
        self.next_seq += 1;
        self.stats.next_seq.store(self.next_seq, Ordering::Relaxed);
        self.stats.records.fetch_add(1, Ordering::Relaxed);
        self.uncounted += 1;
        Some(seq)
    }

    /// Gives `ev` the next seq and sends it where its rule says. If events were given up on
    /// since the last record, an overflow record for every root goes first: a reader
    /// replaying history knows its view may differ from the disk from there on.
    fn emit(&mut self, ev: FileEvent, store: bool, stream: bool) {
        if self.lost_to_lease > 0 && ev.kind != EventKind::Overflow {
            let lost = self.lost_to_lease;
            let Some(seq) = self.take_seq() else {
                self.lost_to_lease += 1;
                return;
            };
            tracing::warn!(
                "{lost} events were lost while the seq lease could not be renewed; recorded as an overflow at seq {seq}"
            );
            self.lost_to_lease = 0;
            self.stats.overflows.fetch_add(1, Ordering::Relaxed);
            let overflow = FileEvent {
                seq,
                time_ns: now_ns(),
                kind: EventKind::Overflow,
                path: Vec::new(),
                path_to: None,
                rule: OVERFLOW_RULE_ID,
                size: None,
                reconciled: false,
                blind: None,
                gap: None,
            };
            self.route(overflow, seq, true, true);
        }
        let Some(seq) = self.take_seq() else {
            return;
        };
        if ev.kind == EventKind::Overflow {
            self.lost_to_lease = 0; // this overflow record covers them
        }
        self.route(ev, seq, store, stream);
    }

    fn route(&mut self, mut ev: FileEvent, seq: u64, store: bool, stream: bool) {
        ev.seq = seq;
        if store {
            self.flush_not_stored();
        } else {
            self.not_stored = match self.not_stored {
                Some((from, _)) => Some((from, seq)),
                None => {
                    self.not_stored_since = Some(Instant::now());
                    Some((seq, seq))
                }
            };
        }
        match (store, stream) {
            (true, true) => {
                self.writer.submit(ev.clone());
                self.offer(seq, ev);
            }
            (true, false) => {
                self.writer.submit(ev);
            }
            (false, true) => {
                self.offer(seq, ev);
            }
            (false, false) => {}
        }
    }

    /// Queues a record for the ring without waiting; a full queue leaves a hole, which the
    /// publisher stages as a `NotStreamed` gap (and counts).
    fn offer(&self, seq: u64, value: FileEvent) {
        // Err: counted by the publisher (`refused`), or it is gone (shutting down).
        let _refused = self.publisher.offer(Item::Record { seq, value });
    }

    fn flush_not_stored(&mut self) {
        self.not_stored_since = None;
        if let Some((from, to)) = self.not_stored.take() {
            self.writer.submit(gap_row(from, to, GapReason::NotStored));
        }
    }
}

/// A gap row: seqs `from ..= to` missing for `reason`.
pub fn gap_row(from: u64, to: u64, reason: GapReason) -> FileEvent {
    FileEvent {
        seq: from,
        time_ns: now_ns(),
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
