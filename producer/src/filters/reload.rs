//! [`FilterWatcher`]: reloads the filter directory when it changes, and [`Reload`], what
//! a reload gives, made so that keeping the working set on an error (G6) is the natural
//! thing to do.
//!
//! The watcher watches, non-recursively, the filter directory and its parent (so that the
//! directory being removed, renamed or created is seen); while the directory does not
//! exist, its nearest existing ancestor. After a change it waits until events have paused
//! for the debounce interval (100 ms by default), re-arms its watches (the directory may
//! have appeared or gone), reloads, and sends the outcome unless the documents read are
//! byte-for-byte what the last reload read. Editors' temporary files (names not ending in
//! `.toml`, or starting with `.`) do not trigger a reload.
//!
//! The notify event mask is set explicitly (notify 9's default includes opens and
//! close-without-write): create, remove, data and metadata changes, renames and
//! close-after-write.

use super::document::Env;
use super::error::FilterErrors;
use super::ids::RuleIds;
use super::load::load;
use super::ruleset::RuleSet;
use crossbeam_channel::{after, never, select, Receiver, Sender, TrySendError};
use notify::{Config, Event, EventKindMask, RecommendedWatcher, RecursiveMode, Watcher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long events must pause before a reload.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// The outcome of one reload.
#[derive(Debug)]
pub enum Reload {
    /// The documents are valid: this is the new rule set (boxed: it is large, errors are
    /// small).
    Applied(Box<RuleSet>),
    /// A document has an error: keep the working set, report these.
    Rejected(FilterErrors),
}

impl Reload {
    /// Replaces `current` by the new set if this reload was applied and returns how the
    /// roots changed (for the watcher to add and remove watches); on a rejected reload
    /// leaves `current` as it is (G6) and returns the errors to report.
    ///
    /// # Errors
    ///
    /// The rejected reload's errors.
    pub fn apply_to(self, current: &mut RuleSet) -> Result<RootsDiff, FilterErrors> {
        match self {
            Reload::Applied(new) => {
                let diff = RootsDiff::between(current, &new);
                *current = *new;
                Ok(diff)
            }
            Reload::Rejected(errors) => Err(errors),
        }
    }
}

/// How the roots of a rule set changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootsDiff {
    /// Roots of the new set the old one did not have.
    pub added: Vec<PathBuf>,
    /// Roots of the old set the new one does not have.
    pub removed: Vec<PathBuf>,
}

impl RootsDiff {
    /// The roots `new` adds to and removes from `old`.
    pub fn between(old: &RuleSet, new: &RuleSet) -> RootsDiff {
        let (o, n) = (old.roots(), new.roots());
        RootsDiff {
            added: n.iter().filter(|r| !o.contains(r)).cloned().collect(),
            removed: o.iter().filter(|r| !n.contains(r)).cloned().collect(),
        }
    }

    /// Whether the roots are the same.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Starting a [`FilterWatcher`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// notify could not create its watcher or watch a directory.
    #[error("cannot watch the filter directory {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// The reload thread could not be started.
    #[error("cannot start the filter reload thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Watches a filter directory and sends a [`Reload`] after each settled change. Dropping
/// it stops the watching and joins its thread.
#[derive(Debug)]
pub struct FilterWatcher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FilterWatcher {
    /// Starts watching `dir`. `current` is the working set: reloads keep its rule ids and
    /// `--watch` roots. A change made between loading `current` and this call is not
    /// lost: the watcher reloads once after its watches are in place and sends the result
    /// if the documents differ from those `current` was loaded from.
    ///
    /// # Errors
    ///
    /// notify cannot watch, or the thread cannot start.
    pub fn spawn(
        dir: &Path,
        current: &RuleSet,
    ) -> Result<(FilterWatcher, Receiver<Reload>), WatchError> {
        Self::spawn_with(dir, current, DEFAULT_DEBOUNCE)
    }

    /// [`FilterWatcher::spawn`] with a chosen debounce interval.
    ///
    /// # Errors
    ///
    /// As [`FilterWatcher::spawn`].
    pub fn spawn_with(
        dir: &Path,
        current: &RuleSet,
        debounce: Duration,
    ) -> Result<(FilterWatcher, Receiver<Reload>), WatchError> {
        let dir: PathBuf = dir.components().collect();
        let watch_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError::Watch { path, source }
        };
        let (raw_tx, raw_rx) = crossbeam_channel::bounded::<notify::Result<Event>>(1024);
        let config = Config::default().with_event_kinds(
            EventKindMask::CREATE
                | EventKindMask::REMOVE
                | EventKindMask::MODIFY_DATA
                | EventKindMask::MODIFY_META
                | EventKindMask::MODIFY_NAME
                | EventKindMask::ACCESS_CLOSE,
        );
        let watcher = RecommendedWatcher::new(
            move |ev: notify::Result<Event>| {
                // A full queue already holds a change that will cause a reload, which
                // reads the directory afresh: dropping this event loses nothing.
                if let Err(TrySendError::Disconnected(_)) = raw_tx.try_send(ev) {}
            },
            config,
        )
        .map_err(watch_err(&dir))?;
        let mut state = State {
            dir,
            watcher,
            watched: Vec::new(),
            default_roots: current.default_roots().to_vec(),
            ids: current.ids().clone(),
            last_digest: current.digest,
            env: Env::from_process(),
        };
        state.arm().map_err(|(p, e)| watch_err(&p)(e))?;
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("firehose-filters".into())
            .spawn(move || state.run(raw_rx, stop_rx, out_tx, debounce))?;
        Ok((
            FilterWatcher {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            out_rx,
        ))
    }
}

impl Drop for FilterWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reload thread's state.
struct State {
    dir: PathBuf,
    watcher: RecommendedWatcher,
    watched: Vec<PathBuf>,
    default_roots: Vec<PathBuf>,
    ids: RuleIds,
    last_digest: u64,
    env: Env,
}

impl State {
    fn run(
        mut self,
        raw: Receiver<notify::Result<Event>>,
        stop: Receiver<()>,
        out: Sender<Reload>,
        debounce: Duration,
    ) {
        // One reload right away, for changes made before the watches were in place.
        let mut due = Some(Instant::now());
        loop {
            let timer = match due {
                Some(d) => after(d.saturating_duration_since(Instant::now())),
                None => never(),
            };
            select! {
                recv(stop) -> _ => return,
                recv(raw) -> ev => match ev {
                    Ok(Ok(ev)) => {
                        if self.relevant(&ev) {
                            due = Some(Instant::now() + debounce);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(dir = %self.dir.display(), error = %e, "filter directory watch error; reloading");
                        due = Some(Instant::now() + debounce);
                    }
                    Err(_) => return,
                },
                recv(timer) -> _ => {
                    due = None;
                    if let Err((path, e)) = self.arm() {
                        tracing::warn!(path = %path.display(), error = %e, "cannot watch for filter changes");
                    }
                    if let Some(reload) = self.reload() {
                        if out.send(reload).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether `ev` may change what a load reads.
    fn relevant(&self, ev: &Event) -> bool {
        if ev.need_rescan() || ev.paths.is_empty() {
            return true;
        }
        ev.paths.iter().any(|p| {
            if self.dir.starts_with(p) {
                return true; // the directory or an ancestor
            }
            p.parent() == Some(self.dir.as_path())
                && p.file_name().is_some_and(|n| {
                    let n = n.as_bytes();
                    n.ends_with(b".toml") && !n.starts_with(b".")
                })
        })
    }

    /// Watches what should be watched now: the directory and its parent, or, while the
    /// directory is missing, its nearest existing ancestor.
    fn arm(&mut self) -> Result<(), (PathBuf, notify::Error)> {
        let mut want = Vec::new();
        if self.dir.is_dir() {
            want.push(self.dir.clone());
            if let Some(p) = self.dir.parent() {
                want.push(p.to_path_buf());
            }
        } else {
            let mut a = self.dir.parent();
            while let Some(p) = a {
                if p.is_dir() {
                    want.push(p.to_path_buf());
                    break;
                }
                a = p.parent();
            }
        }
        for old in std::mem::take(&mut self.watched) {
            if want.contains(&old) {
                self.watched.push(old);
            } else {
                // The kernel may have dropped it already (directory removed).
                let _ = self.watcher.unwatch(&old);
            }
        }
        let mut result = Ok(());
        for p in want {
            if self.watched.contains(&p) {
                continue;
            }
            match self.watcher.watch(&p, RecursiveMode::NonRecursive) {
                Ok(()) => self.watched.push(p),
                // Gone since we looked: the next event re-arms.
                Err(e) => result = Err((p, e)),
            }
        }
        result
    }

    /// Loads the directory; `None` if it reads exactly as at the last reload.
    fn reload(&mut self) -> Option<Reload> {
        let (digest, result) = load(&self.dir, &self.default_roots, &self.ids, &self.env);
        if digest == self.last_digest {
            return None;
        }
        self.last_digest = digest;
        Some(match result {
            Ok(set) => {
                self.ids = set.ids().clone();
                tracing::info!(dir = %self.dir.display(), rules = set.rules().len(), "filter documents reloaded");
                Reload::Applied(Box::new(set))
            }
            Err(errors) => {
                tracing::warn!(dir = %self.dir.display(), "filter documents rejected, previous rules stay active:\n{errors}");
                Reload::Rejected(errors)
            }
        })
    }
}
