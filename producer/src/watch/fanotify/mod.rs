//! The fanotify backend: one `FAN_MARK_FILESYSTEM` mark per filesystem under the roots, so
//! there is no watch per directory, no watch limit and no race with new directories.
//!
//! ```text
//! kernel (one queue, every filesystem marked) -> reader thread -> core thread:
//!   resolve the directory handle (cache, else open_by_handle_at) -> drop what is outside
//!   the roots -> the same WatchEvents as inotify's (renames paired by the kernel)
//! ```
//!
//! Events carry a directory handle and a name (`FAN_REPORT_DFID_NAME`), the object's own
//! handle (`FAN_REPORT_FID | FAN_REPORT_TARGET_FID`), and a rename carries both sides
//! (`FAN_RENAME`): no cookie pairing, no held half. New directories are cached from their
//! create event's object handle, so events in them never ask the kernel.
//!
//! A mark covers a whole filesystem, every user's files included: the service drops what is
//! outside its roots before anything else sees it, and serves only the uids allowed to
//! connect (see `docs/fanotify.md`).
//!
//! # Known problems
//!
//! - A path is resolved when its event is handled. A directory missing from the cache (the
//!   cache started over, or it existed before the service) is asked of the kernel, which
//!   gives its path *now*: if it was renamed by an event still queued, its earlier events
//!   carry the new path.
//! - The kernel merges events of one object that wait in its queue (a create, a write and a
//!   close of one file become one event); they are reported in the order create, modify,
//!   close-write, metadata, remove.
//! - Filesystems mounted below a root at start are marked too; one mounted later is not
//!   seen until the next start (a root mounted over is caught by the identity check).

pub(crate) mod paths;
pub(crate) mod sys;

use super::core::Core;
use super::{Backend, EventKind, OverflowReason};
use paths::{Mounts, Paths};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use sys::{FanEvent, Fanotify, MARK_MASK, MODIFY_MASK};

/// The backend's state, owned by the core thread.
#[derive(Debug)]
pub(crate) struct FanState {
    /// The instance (the reader thread holds the other reference).
    pub(crate) fan: Arc<Fanotify>,
    mask: u64,
    mounts: Mounts,
    pub(crate) paths: Paths,
    /// The filesystems marked, by fsid, with the directory that marked each.
    pub(crate) marked: HashMap<[u8; 8], PathBuf>,
}

/// Why fanotify is not used, as status and doctor say it.
pub(crate) type Refusal = String;

/// Opens the backend for `roots`, or says why it cannot be used here.
pub(crate) fn open(roots: &[PathBuf], report_modify: bool) -> Result<FanState, Refusal> {
    let fan = Fanotify::new().map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => "fanotify needs CAP_SYS_ADMIN (run the service as root, e.g. \
                              `firehosed install --system`)"
            .to_string(),
        Some(libc::EINVAL) => "this kernel's fanotify lacks FID reports or FAN_RENAME \
                               (Linux 5.17 or later is needed)"
            .to_string(),
        Some(libc::ENOSYS) => "this kernel was built without fanotify".to_string(),
        _ => format!("fanotify_init failed: {e}"),
    })?;
    if !has_capability(CAP_DAC_READ_SEARCH) {
        return Err("resolving fanotify's directory handles needs CAP_DAC_READ_SEARCH".into());
    }
    let mask = MARK_MASK | if report_modify { MODIFY_MASK } else { 0 };
    let mut st = FanState {
        fan: Arc::new(fan),
        mask,
        mounts: Mounts::default(),
        paths: Paths::default(),
        marked: HashMap::new(),
    };
    for root in roots.iter().filter(|r| r.is_dir()) {
        st.mark(root).map_err(|e| e.to_string())?;
        for below in mounts_below(root) {
            if let Err(e) = st.mark(&below) {
                tracing::warn!("watch: {e}; changes below {} are not seen", below.display());
            }
        }
    }
    Ok(st)
}

/// A filesystem fanotify cannot mark.
#[derive(Debug, thiserror::Error)]
#[error("fanotify cannot watch {path}: {why}")]
pub(crate) struct MarkError {
    path: PathBuf,
    why: String,
}

impl FanState {
    /// Marks the filesystem holding `dir`, unless it already is.
    fn mark(&mut self, dir: &Path) -> Result<(), MarkError> {
        let err = |why: String| MarkError {
            path: dir.to_path_buf(),
            why,
        };
        let fsid = paths::fsid_of(dir).map_err(|e| err(e.to_string()))?;
        if self.marked.contains_key(&fsid) {
            return Ok(());
        }
        if let Some(kind) = network_filesystem(dir) {
            return Err(err(format!(
                "it is on {kind}, a network filesystem whose remote changes no local watch sees"
            )));
        }
        self.fan.mark_filesystem(dir, self.mask).map_err(|e| {
            err(match e.raw_os_error() {
                Some(libc::EPERM) => "a filesystem mark needs CAP_SYS_ADMIN (run the service \
                                      as root, e.g. `firehosed install --system`)"
                    .into(),
                Some(libc::ENODEV) => "its filesystem has no filesystem id".into(),
                Some(libc::EXDEV) => {
                    "it is a btrfs subvolume or an idmapped mount, which a filesystem mark \
                     cannot cover"
                        .into()
                }
                Some(libc::EOPNOTSUPP) => "its filesystem does not support FID reports".into(),
                _ => e.to_string(),
            })
        })?;
        self.mounts.add(dir).map_err(|e| err(e.to_string()))?;
        self.marked.insert(fsid, dir.to_path_buf());
        Ok(())
    }

    /// One line for status: which backend, how many filesystems, the cache's hit rate.
    pub(crate) fn describe(&self) -> String {
        let (h, m) = (self.paths.hits, self.paths.misses);
        let rate = if h + m == 0 {
            String::new()
        } else {
            format!(
                "; path cache {:.1}% hits of {}",
                h as f64 * 100.0 / (h + m) as f64,
                h + m
            )
        };
        format!(
            "{} filesystem{} marked{rate}",
            self.marked.len(),
            if self.marked.len() == 1 { "" } else { "s" }
        )
    }
}

/// `CAP_DAC_READ_SEARCH`'s bit.
const CAP_DAC_READ_SEARCH: u32 = 2;

/// Whether this process has `cap` in its effective set (from `/proc/self/status`).
fn has_capability(cap: u32) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

/// The network filesystem `dir` is on, if it is on one.
fn network_filesystem(dir: &Path) -> Option<&'static str> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    Some(match st.filesystem_type().0 as u64 {
        0x6969 => "NFS",
        0x517b => "SMB",
        0xff53_4d42 => "CIFS",
        0xfe53_4d42 => "SMB2",
        0x6573_5546 => "FUSE",
        0x00c3_6400 => "Ceph",
        0x0102_1997 => "9P",
        0x5346_414f => "AFS",
        _ => return None,
    })
}

/// Mount points strictly below `root` (from `/proc/self/mountinfo`).
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_point(p)))
        .filter(|p| p != root && p.starts_with(root))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

impl Core {
    /// The fanotify side of `watch_tree`: makes sure `top`'s filesystem is marked and, with
    /// `report`, reports everything below `top` as created (a directory moved in from
    /// outside the roots, a root that came back).
    pub(crate) fn fan_tree(&mut self, top: &Path, report: bool) {
        let Some(fan) = &mut self.fan else { return };
        if let Err(e) = fan.mark(top) {
            if self.unwatched.set.insert(top.to_path_buf()) {
                tracing::warn!("watch: {e}; its changes are not seen");
            }
            return;
        }
        if !report {
            return;
        }
        let mut stack = vec![top.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                self.list_dir(dir, entries, true, true, &mut stack);
            }
        }
    }

    /// Whether `path` is at or below a root that is not gone.
    fn in_roots(&self, path: &Path) -> bool {
        self.roots
            .iter()
            .any(|r| !r.gone && path.starts_with(&r.path))
    }

    /// The path of the entry an event names: its directory resolved, then its name.
    fn fan_path(&mut self, dir: Option<&sys::Handle>, name: Option<&OsStr>) -> Option<PathBuf> {
        let fan = self.fan.as_mut()?;
        let dir = fan.paths.resolve(dir?, &fan.mounts)?;
        Some(match name {
            None => dir,
            Some(n) if n == "." || n.is_empty() => dir,
            Some(n) => dir.join(n),
        })
    }

    /// One fanotify event.
    pub(crate) fn on_fan_event(&mut self, ev: &FanEvent) {
        if ev.has(libc::FAN_Q_OVERFLOW) {
            if let Some(fan) = &mut self.fan {
                fan.paths.clear(); // a lost rename may have left cached paths stale
            }
            self.overflow(OverflowReason::KernelQueue, ev.time_ns);
            return;
        }
        self.dedupe.expire(ev.read_at);
        let is_dir = ev.has(libc::FAN_ONDIR);
        if ev.has(libc::FAN_RENAME) {
            self.fan_rename(ev, is_dir);
            return;
        }
        let Some(path) = self.fan_path(ev.dir.as_ref(), ev.name.as_deref()) else {
            return; // its directory is gone, or a handle we cannot open
        };
        if is_dir && ev.has(libc::FAN_DELETE) {
            // Wherever it was, inside the roots or not: its cached paths are stale.
            if let Some(fan) = &mut self.fan {
                fan.paths.removed(&path);
            }
        }
        if self.roots.iter().any(|r| r.path == path) && ev.has(libc::FAN_DELETE) && !path.exists() {
            self.mark_gone(&path);
            return;
        }
        if !self.in_roots(&path) {
            return;
        }
        let t = ev.time_ns;
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_os_string()),
            _ => (path.clone(), Default::default()),
        };
        // Merged events: in the order they can happen to one object.
        if ev.has(libc::FAN_CREATE) {
            if !self.dedupe.take_echo(&dir, &name) {
                self.emit_raw(EventKind::Create, path.clone(), None, is_dir, None, t);
            }
            if let (true, Some(fan), Some(o)) = (is_dir, &mut self.fan, &ev.object) {
                fan.paths.insert(o.clone(), path.clone());
            }
        }
        if ev.has(libc::FAN_MODIFY) && self.last_modify.as_deref() != Some(path.as_path()) {
            self.emit_raw(EventKind::Modify, path.clone(), None, is_dir, None, t);
            self.last_modify = Some(path.clone());
        }
        if ev.has(libc::FAN_CLOSE_WRITE) {
            let size = std::fs::metadata(&path).ok().map(|m| m.len());
            self.emit_raw(EventKind::CloseWrite, path.clone(), None, is_dir, size, t);
        }
        if ev.has(libc::FAN_ATTRIB) {
            self.emit_raw(EventKind::Metadata, path.clone(), None, is_dir, None, t);
        }
        if ev.has(libc::FAN_DELETE) {
            self.dedupe.take(&dir, &name);
            if is_dir {
                self.forget_subtree(&path, false);
            }
            self.emit_raw(EventKind::Remove, path, None, is_dir, None, t);
        }
    }

    /// A rename, both sides in one event: inside the roots a Rename, out of them a Remove,
    /// into them a Create (and, for a directory, Creates for what it holds).
    fn fan_rename(&mut self, ev: &FanEvent, is_dir: bool) {
        let from = self.fan_path(ev.dir.as_ref(), ev.name.as_deref());
        let to = match &ev.to {
            Some((d, n)) => self.fan_path(Some(d), Some(n)),
            None => None,
        };
        if let (true, Some(fan)) = (is_dir, &mut self.fan) {
            fan.paths
                .renamed(from.as_deref(), to.as_deref(), ev.object.as_ref());
        }
        // A root (or a directory above one) moved away: the root is gone.
        if let Some(f) = &from {
            let lost: Vec<PathBuf> = self
                .roots
                .iter()
                .filter(|r| !r.gone && r.path.starts_with(f))
                .map(|r| r.path.clone())
                .collect();
            for r in lost {
                self.mark_gone(&r);
            }
        }
        let from = from.filter(|f| self.in_roots(f));
        let to = to.filter(|t| self.in_roots(t));
        let t = ev.time_ns;
        for p in from.iter().chain(to.iter()) {
            if let (Some(d), Some(n)) = (p.parent(), p.file_name()) {
                self.dedupe.take(d, n);
            }
        }
        match (from, to) {
            (Some(f), Some(to)) => {
                if is_dir {
                    self.dedupe.rename_subtree(&f, &to);
                }
                self.emit_raw(EventKind::Rename, f, Some(to), is_dir, None, t);
            }
            (Some(f), None) => {
                if is_dir {
                    self.forget_subtree(&f, false);
                }
                self.emit_raw(EventKind::Remove, f, None, is_dir, None, t);
            }
            (None, Some(to)) => {
                self.emit_raw(EventKind::Create, to.clone(), None, is_dir, None, t);
                if is_dir && !self.ignore.contains(&to) {
                    self.fan_tree(&to, true);
                }
            }
            (None, None) => {}
        }
    }

    /// The backend in force and its state, for status.
    pub(crate) fn backend_line(&self) -> (Backend, String) {
        match &self.fan {
            Some(f) => (Backend::Fanotify, f.describe()),
            None => (Backend::Inotify, self.backend_note.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mount_point(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_point(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mount_point(r"/end\04"), r"/end\04");
        assert_eq!(unescape_mount_point(r"/no\999"), r"/no\999");
    }
}
