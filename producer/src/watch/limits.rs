//! The inotify watch limit (`fs.inotify.max_user_watches`, `ENOSPC` from
//! `inotify_add_watch`). Hitting it never stops the watcher: what has a watch keeps it, the
//! rest is listed in `status`, one [`WatchEvent::WatchLimit`] and one log line say what to do,
//! and the unwatched directories are retried whenever the kernel frees watches.

use super::core::Core;
use super::{OverflowReason, WatchEvent, WatchLimit};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where Linux keeps the limit.
pub(crate) const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// Directories left without a watch by the limit.
#[derive(Debug, Default)]
pub(crate) struct Unwatched {
    /// The directories, sorted.
    pub(crate) set: BTreeSet<PathBuf>,
    /// Whether the current episode was reported (reset once every directory is watched).
    pub(crate) reported: bool,
    /// Whether the kernel freed watches since the last retry.
    pub(crate) freed: bool,
    /// When they are tried again regardless.
    pub(crate) next_retry: Option<Instant>,
}

impl Unwatched {
    /// `dir` has a watch now.
    pub(crate) fn remove(&mut self, dir: &Path) {
        if !self.set.is_empty() {
            self.set.remove(dir);
        }
    }

    /// Forgets `dir` and what is below it (deleted or moved out).
    pub(crate) fn remove_subtree(&mut self, dir: &Path) {
        if !self.set.is_empty() {
            self.set.retain(|p| !p.starts_with(dir));
        }
    }

    /// Moves the entries at or below `from` below `to`.
    pub(crate) fn rename_subtree(&mut self, from: &Path, to: &Path) {
        if self.set.is_empty() {
            return;
        }
        let moved: Vec<PathBuf> = self
            .set
            .iter()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in moved {
            self.set.remove(&p);
            self.set.insert(super::tree::rebase(&p, from, to));
        }
    }
}

/// The current `fs.inotify.max_user_watches`.
pub(crate) fn max_user_watches() -> Option<u64> {
    std::fs::read_to_string(MAX_USER_WATCHES)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to tell the user when `path` could not be watched.
pub(crate) fn limit_message(path: &Path, limit: Option<u64>) -> String {
    let value = limit.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    let suggested = limit.map_or(524_288, |v| (v * 4).max(524_288));
    format!(
        "inotify watch limit reached: cannot watch {} (fs.inotify.max_user_watches = {value}, \
         shared by all of this user's processes); the watcher goes on with the directories it \
         has, `status` lists the rest. Raise it now with `sudo sysctl \
         fs.inotify.max_user_watches={suggested}`, and for every boot with `echo \
         fs.inotify.max_user_watches={suggested} | sudo tee /etc/sysctl.d/90-firehose.conf`",
        path.display()
    )
}

impl Core {
    /// `dir` could not be watched for the limit: list it, and report the episode once.
    pub(crate) fn watch_limit_hit(&mut self, dir: &Path) {
        self.unwatched.set.insert(dir.to_path_buf());
        if self.unwatched.reported {
            return;
        }
        self.unwatched.reported = true;
        let limit = max_user_watches();
        let message = limit_message(dir, limit);
        tracing::warn!("{message}");
        self.emit(WatchEvent::WatchLimit(WatchLimit {
            path: dir.to_path_buf(),
            limit,
            message,
        }));
    }

    /// Tries the unwatched directories again if the kernel freed watches since last time, or
    /// every [`WatchConfig::unwatched_retry`](super::WatchConfig::unwatched_retry). A directory whose watch lands is scanned again: an overflow
    /// for it says its changes in between are unknown, then its entries are reported.
    pub(crate) fn retry_unwatched(&mut self) {
        if self.unwatched.set.is_empty() {
            self.unwatched.reported = false;
            self.unwatched.next_retry = None;
            return;
        }
        let now = Instant::now();
        let due = *self
            .unwatched
            .next_retry
            .get_or_insert(now + self.cfg.unwatched_retry)
            <= now;
        if !std::mem::take(&mut self.unwatched.freed) && !due {
            return;
        }
        self.unwatched.next_retry = Some(now + self.cfg.unwatched_retry);
        let todo: Vec<PathBuf> = self.unwatched.set.iter().cloned().collect();
        let reported = self.unwatched.reported;
        for dir in todo {
            match self.add_dir_watch(&dir) {
                Ok(_) => {
                    tracing::info!("watch: {} is watched now; scanning it again", dir.display());
                    self.emit(WatchEvent::Overflow {
                        root: Some(dir.clone()),
                        reason: OverflowReason::WasUnwatched,
                    });
                    self.rescan(&dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.unwatched.set.remove(&dir);
                }
                Err(_) => {} // still the limit, or still not allowed: stays listed
            }
        }
        self.unwatched.reported = reported && !self.unwatched.set.is_empty();
        if self.unwatched.set.is_empty() {
            tracing::info!("watch: every directory is watched again");
        }
    }

    /// Reports what `dir` (watched just now) holds, and watches and reports its new
    /// subdirectories.
    fn rescan(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut subdirs = Vec::new();
        self.list_dir(dir.to_path_buf(), entries, true, true, &mut subdirs);
        for sub in subdirs {
            self.watch_tree(&sub, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_the_setting_its_value_and_the_fix() {
        let m = limit_message(Path::new("/r/x"), Some(8192));
        assert!(m.contains("fs.inotify.max_user_watches = 8192"), "{m}");
        assert!(
            m.contains("sysctl fs.inotify.max_user_watches=524288"),
            "{m}"
        );
        assert!(m.contains("/etc/sysctl.d/"), "{m}");
        assert!(m.contains("/r/x"), "{m}");
    }
}
