//! The index on disk: one file that is a snapshot followed by a journal of changes.
//!
//! ```text
//! "FHIDX001"  then records:  [len u32][op u8][payload][fnv1a-32 of op+payload]
//! op 1 Put      meta, path          op 4 Root      meta, path
//! op 2 Remove   path                op 5 DropRoot  path
//! op 3 Rename   from len u32, from, to
//! op 6 Clean    time ns             op 7 Mark      time ns (the index was exact then)
//! ```
//!
//! A snapshot is the same file written afresh with a Root or Put for every entry (parents
//! first), to a temporary name, fsync'd and renamed over the old one. Changes are appended
//! through a buffer that is written out whenever the watcher goes idle, with a Mark. A
//! clean stop appends Clean and fsyncs. At start the file is read up to the first record
//! that is short or fails its checksum (a crash mid-write tears only the tail, which is
//! cut off), and the last record says how the service ended: Clean means stopped at that
//! time; anything else means crashed, with the index exact as of the last Mark.
//!
//! Why not SQLite: the journal is written on the watcher's thread for every change, and an
//! append to a buffer costs tens of nanoseconds; the history database already has a writer
//! thread and its own queue. Why not only a snapshot: writing 1 M entries takes a while, so
//! it is done at start (compaction) and when the journal has grown past twice the index.

use super::{Kind, Meta, TreeIndex};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FHIDX001";
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const RENAME: u8 = 3;
const ROOT: u8 = 4;
const DROP_ROOT: u8 = 5;
const CLEAN: u8 = 6;
const MARK: u8 = 7;
const META_LEN: usize = 8 + 1 + 8 + 8 + 8 + 8;

/// How the last run of the service ended, as the index file tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No index file: this is the first start (or it was deleted).
    Fresh,
    /// Stopped cleanly at this time (ns since the epoch).
    Stopped(u64),
    /// Crashed or was killed; the index was exact as of this time.
    Crashed(u64),
}

/// Why the index file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing it failed.
    #[error("index file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// It is not an index file of this version.
    #[error("index file {path} is not a firehose index (or of another version); it is set aside as {aside}")]
    NotAnIndex {
        /// The file.
        path: PathBuf,
        /// Where it was moved.
        aside: PathBuf,
    },
}

/// The open index file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    /// Records appended since the last snapshot.
    appended: u64,
    /// Whether there are records not yet written out.
    dirty: bool,
    failed: bool,
}

fn fnv(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn put_meta(buf: &mut Vec<u8>, m: &Meta) {
    buf.extend_from_slice(&m.ino.to_le_bytes());
    buf.push(m.kind as u8);
    buf.extend_from_slice(&m.size.to_le_bytes());
    buf.extend_from_slice(&m.mtime_ns.to_le_bytes());
    buf.extend_from_slice(&m.ctime_ns.to_le_bytes());
    buf.extend_from_slice(&m.btime_ns.to_le_bytes());
}

fn get_meta(b: &[u8]) -> Option<Meta> {
    if b.len() < META_LEN {
        return None;
    }
    let u = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    Some(Meta {
        ino: u(0),
        kind: Kind::from_code(b[8])?,
        size: u(9),
        mtime_ns: u(17) as i64,
        ctime_ns: u(25) as i64,
        btime_ns: u(33) as i64,
    })
}

/// Appends one framed record to `buf`.
fn frame(buf: &mut Vec<u8>, op: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.push(op);
    body(buf);
    let len = (buf.len() - start - 4) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let sum = fnv(&buf[start + 4..]);
    buf.extend_from_slice(&sum.to_le_bytes());
}

/// Applies the records in `bytes` (after the magic) to `ix`; returns how many bytes were
/// whole and valid, how the records end, and how many there were.
fn replay(bytes: &[u8], ix: &mut TreeIndex) -> (usize, Ended, u64) {
    let mut at = 0;
    let mut ended = Ended::Crashed(0);
    let mut count = 0;
    while bytes.len() - at >= 9 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || bytes.len() - at - 4 < len + 4 {
            break;
        }
        let rec = &bytes[at + 4..at + 4 + len];
        let sum = u32::from_le_bytes(bytes[at + 4 + len..at + 8 + len].try_into().expect("4"));
        if fnv(rec) != sum {
            break;
        }
        let (op, body) = (rec[0], &rec[1..]);
        let path = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
        let last = ended;
        ended = match ended {
            Ended::Stopped(t) | Ended::Crashed(t) => Ended::Crashed(t),
            Ended::Fresh => Ended::Crashed(0),
        };
        match op {
            PUT | ROOT => {
                let Some(m) = get_meta(body) else { break };
                let p = path(&body[META_LEN..]);
                if op == ROOT {
                    ix.add_root(&p, m);
                } else {
                    ix.put(&p, m);
                }
            }
            REMOVE => {
                if let Some(id) = ix.lookup(&path(body)) {
                    ix.remove(id);
                }
            }
            RENAME => {
                if body.len() < 4 {
                    break;
                }
                let n = u32::from_le_bytes(body[..4].try_into().expect("4")) as usize;
                if body.len() < 4 + n {
                    break;
                }
                rename_path(ix, &path(&body[4..4 + n]), &path(&body[4 + n..]));
            }
            DROP_ROOT => ix.remove_root(&path(body)),
            CLEAN | MARK => {
                if body.len() < 8 {
                    break;
                }
                let t = u64::from_le_bytes(body[..8].try_into().expect("8"));
                ended = if op == CLEAN {
                    Ended::Stopped(t)
                } else {
                    Ended::Crashed(t)
                };
            }
            _ => {
                ended = last;
                break;
            }
        }
        count += 1;
        at += len + 8;
    }
    (at, ended, count)
}

/// Applies a rename of `from` to `to` to the index (a no-op if `from` is not known; `to` is
/// then forgotten, as the rename replaced it).
pub fn rename_path(ix: &mut TreeIndex, from: &Path, to: &Path) {
    let Some(id) = ix.lookup(from) else {
        if let Some(t) = ix.lookup(to) {
            ix.remove(t);
        }
        return;
    };
    let (Some(parent), Some(name)) = (to.parent(), to.file_name()) else {
        return;
    };
    let parent = match ix.lookup(parent) {
        Some(p) => p,
        None => match ix.put(parent, Meta::unknown(true)) {
            Some(p) => p,
            None => {
                ix.remove(id); // moved out of every root
                return;
            }
        },
    };
    if !ix.rename(id, parent, name.as_bytes()) {
        ix.remove(id);
    }
}

impl Journal {
    /// Opens the index file at `path` (made if missing) and reads the index from it.
    pub fn open(path: &Path) -> Result<(Journal, TreeIndex, Ended), JournalError> {
        let io_err = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut ix = TreeIndex::new();
        let ended = match File::open(path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io_err)?;
                if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
                    let aside = path.with_extension("unreadable");
                    let _ = std::fs::rename(path, &aside);
                    return Err(JournalError::NotAnIndex {
                        path: path.to_path_buf(),
                        aside,
                    });
                }
                let (valid, ended, count) = replay(&bytes[MAGIC.len()..], &mut ix);
                if MAGIC.len() + valid < bytes.len() {
                    tracing::warn!(
                        "index file {}: {} torn bytes at its end were cut off (a crash while \
                         writing)",
                        path.display(),
                        bytes.len() - MAGIC.len() - valid
                    );
                }
                let mut j = Journal {
                    path: path.to_path_buf(),
                    out: None,
                    appended: count,
                    dirty: false,
                    failed: false,
                };
                let mark = match ended {
                    Ended::Stopped(t) | Ended::Crashed(t) if t > 0 => Some(t),
                    _ => None,
                };
                j.snapshot(&ix, mark).map_err(io_err)?;
                return Ok((j, ix, ended));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ended::Fresh,
            Err(e) => return Err(io_err(e)),
        };
        let mut j = Journal {
            path: path.to_path_buf(),
            out: None,
            appended: 0,
            dirty: false,
            failed: false,
        };
        j.snapshot(&ix, None).map_err(io_err)?;
        Ok((j, ix, ended))
    }

    /// Writes the whole index afresh (a temporary file, fsync, rename) and appends to it
    /// from then on. `mark` adds a Mark record (the index is exact as of then).
    pub fn snapshot(&mut self, ix: &TreeIndex, mark: Option<u64>) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        f.write_all(MAGIC)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for root in ix.roots.clone() {
            for id in ix.subtree(root) {
                let op = if id == root { ROOT } else { PUT };
                let m = ix.meta(id);
                let p = ix.path(id);
                frame(&mut buf, op, |b| {
                    put_meta(b, &m);
                    b.extend_from_slice(p.as_os_str().as_bytes());
                });
                if buf.len() >= 1 << 16 {
                    f.write_all(&buf)?;
                    buf.clear();
                }
            }
        }
        if let Some(t) = mark {
            frame(&mut buf, MARK, |b| b.extend_from_slice(&t.to_le_bytes()));
        }
        f.write_all(&buf)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let mut f = OpenOptions::new().append(true).open(&self.path)?;
        f.seek(SeekFrom::End(0))?;
        self.out = Some(BufWriter::with_capacity(1 << 16, f));
        self.appended = 0;
        self.dirty = false;
        self.failed = false;
        Ok(())
    }

    fn append(&mut self, op: u8, body: impl FnOnce(&mut Vec<u8>)) {
        if self.failed {
            return;
        }
        let mut buf = Vec::new();
        frame(&mut buf, op, body);
        if let Some(out) = &mut self.out {
            if let Err(e) = out.write_all(&buf) {
                self.fail(&e);
                return;
            }
        }
        self.appended += 1;
        self.dirty = true;
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            tracing::error!(
                "index file {}: {e}; the index is no longer saved, so after a stop or crash \
                 the next start reports the blind period from the last save",
                self.path.display()
            );
        }
        self.failed = true;
    }

    /// `path` is now `meta`.
    pub fn put(&mut self, path: &Path, meta: &Meta) {
        self.append(PUT, |b| {
            put_meta(b, meta);
            b.extend_from_slice(path.as_os_str().as_bytes());
        });
    }

    /// `path` is a root, now `meta`.
    pub fn root(&mut self, path: &Path, meta: &Meta) {
        self.append(ROOT, |b| {
            put_meta(b, meta);
            b.extend_from_slice(path.as_os_str().as_bytes());
        });
    }

    /// `path` and what is below it are gone.
    pub fn remove(&mut self, path: &Path) {
        self.append(REMOVE, |b| b.extend_from_slice(path.as_os_str().as_bytes()));
    }

    /// The root `path` is no longer watched.
    pub fn drop_root(&mut self, path: &Path) {
        self.append(DROP_ROOT, |b| {
            b.extend_from_slice(path.as_os_str().as_bytes())
        });
    }

    /// `from` was renamed to `to`.
    pub fn rename(&mut self, from: &Path, to: &Path) {
        let f = from.as_os_str().as_bytes();
        self.append(RENAME, |b| {
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
            b.extend_from_slice(to.as_os_str().as_bytes());
        });
    }

    /// Writes out what is buffered, with a Mark at `now_ns`, if anything changed; compacts
    /// into a snapshot when the journal has grown past twice the index.
    pub fn flush(&mut self, ix: &TreeIndex, now_ns: u64) {
        if !self.dirty || self.failed {
            return;
        }
        if self.appended > 2 * ix.len() as u64 + 100_000 {
            if let Err(e) = self.snapshot(ix, Some(now_ns)) {
                self.fail(&e);
            }
            return;
        }
        self.append(MARK, |b| b.extend_from_slice(&now_ns.to_le_bytes()));
        if let Some(out) = &mut self.out {
            if let Err(e) = out.flush() {
                self.fail(&e);
            }
        }
        self.dirty = false;
    }

    /// A clean stop at `now_ns`: writes out everything with a Clean record and fsyncs.
    pub fn close(&mut self, ix: &TreeIndex, now_ns: u64) {
        if self.failed {
            return;
        }
        let r = if self.appended > ix.len() as u64 {
            self.snapshot(ix, None)
        } else {
            Ok(())
        };
        if let Err(e) = r {
            self.fail(&e);
            return;
        }
        self.append(CLEAN, |b| b.extend_from_slice(&now_ns.to_le_bytes()));
        if let Some(mut out) = self.out.take() {
            let r = out.flush().and_then(|()| out.get_ref().sync_all());
            if let Err(e) = r {
                self.fail(&e);
            }
        }
    }

    /// Whether writing the file failed (the index is then not saved).
    pub fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ino: u64, kind: Kind) -> Meta {
        Meta {
            ino,
            kind,
            size: ino,
            mtime_ns: 1,
            ctime_ns: 2,
            btime_ns: 3,
        }
    }

    #[test]
    fn the_index_survives_a_clean_stop_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let (mut j, mut ix, ended) = Journal::open(&path).unwrap();
        assert_eq!(ended, Ended::Fresh);
        let root = Path::new("/r");
        ix.add_root(root, m(1, Kind::Dir));
        j.root(root, &m(1, Kind::Dir));
        for (p, ino) in [("/r/a", 2), ("/r/a/f", 3), ("/r/g", 4)] {
            let kind = if ino == 2 { Kind::Dir } else { Kind::File };
            ix.put(Path::new(p), m(ino, kind));
            j.put(Path::new(p), &m(ino, kind));
        }
        j.rename(Path::new("/r/a"), Path::new("/r/b"));
        j.remove(Path::new("/r/g"));
        j.flush(&ix, 77);
        drop(j);
        let (j, back, ended) = Journal::open(&path).unwrap();
        assert_eq!(ended, Ended::Crashed(77));
        assert_eq!(back.len(), 3);
        assert!(back.lookup(Path::new("/r/b/f")).is_some());
        assert!(back.lookup(Path::new("/r/g")).is_none());
        let mut j = j;
        j.close(&back, 99);
        drop(j);
        // A torn record after the Clean is cut off; the Clean still stands.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, again, ended) = Journal::open(&path).unwrap();
        assert_eq!(ended, Ended::Stopped(99));
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn a_foreign_file_is_set_aside_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        std::fs::write(&path, b"not an index").unwrap();
        let e = Journal::open(&path).unwrap_err().to_string();
        assert!(e.contains("not a firehose index"), "{e}");
        assert!(dir.path().join("index.unreadable").exists());
        assert!(Journal::open(&path).is_ok());
    }
}
