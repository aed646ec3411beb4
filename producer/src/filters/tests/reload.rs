//! Live reload on real directories: applied, rejected (the working set stays), a new
//! document adding a root, a directory that appears later. Waits are bounded by a
//! watchdog, never asserted as durations.

use super::dir_with;
use crate::filters::{FilterWatcher, Reload, RuleSet};
use crossbeam_channel::Receiver;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(10);
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Writes atomically (a dot-file then a rename), as editors do, so that no reload sees
/// half a file.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Receives reloads until one satisfies `want`; panics at the watchdog.
fn wait_for(rx: &Receiver<Reload>, what: &str, want: impl Fn(&Reload) -> bool) -> Reload {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) if want(&r) => return r,
            Ok(_) => continue,
            Err(e) => panic!("no reload with {what} within {WATCHDOG:?}: {e}"),
        }
    }
}

fn names(set: &RuleSet) -> Vec<String> {
    set.rules().iter().map(|r| r.name.clone()).collect()
}

fn has_rule(r: &Reload, name: &str) -> bool {
    matches!(r, Reload::Applied(s) if s.rules().iter().any(|x| x.name == name))
}

#[test]
fn edits_apply_errors_are_rejected_and_the_old_set_stays() {
    let dir = dir_with(&[("a.toml", "[[rule]]\nname = \"one\"\nroots = [\"/r1\"]\n")]);
    let mut current = RuleSet::load_dir(dir.path(), &[PathBuf::from("/w")]).unwrap();
    let (_watcher, rx) = FilterWatcher::spawn_with(dir.path(), &current, DEBOUNCE).unwrap();

    // A good edit is applied, keeping the id of "one".
    let one_id = current.rules()[0].id;
    write(
        dir.path(),
        "a.toml",
        "[[rule]]\nname = \"one\"\nroots = [\"/r1\"]\n[[rule]]\nname = \"two\"\n",
    );
    let r = wait_for(&rx, "rule two", |r| has_rule(r, "two"));
    let diff = r.apply_to(&mut current).unwrap();
    assert_eq!(names(&current), ["one", "two"]);
    assert_eq!(current.rules()[0].id, one_id);
    assert_eq!(diff.added, vec![PathBuf::from("/w")]);

    // A broken edit is rejected with its position; the working set stays.
    write(
        dir.path(),
        "a.toml",
        "[[rule]]\nname = \"one\"\nkinds = [\"bogus\"]\n",
    );
    let r = wait_for(&rx, "a rejection", |r| matches!(r, Reload::Rejected(_)));
    let errors = r.apply_to(&mut current).unwrap_err();
    assert_eq!((errors.0[0].line, errors.0[0].column), (3, 10), "{errors}");
    assert_eq!(names(&current), ["one", "two"]);
    assert!(current
        .matches(b"/r1/x", firehose_transport::record::EventKind::Create)
        .is_some());

    // Fixing it applies again.
    write(dir.path(), "a.toml", "[[rule]]\nname = \"three\"\n");
    let r = wait_for(&rx, "rule three", |r| has_rule(r, "three"));
    r.apply_to(&mut current).unwrap();
    assert_eq!(names(&current), ["three"]);
}

#[test]
fn a_new_document_adds_a_root() {
    let dir = dir_with(&[("a.toml", "[[rule]]\nname = \"a\"\nroots = [\"/r1\"]\n")]);
    let mut current = RuleSet::load_dir(dir.path(), &[]).unwrap();
    let (_watcher, rx) = FilterWatcher::spawn_with(dir.path(), &current, DEBOUNCE).unwrap();
    write(
        dir.path(),
        "b.toml",
        "[[rule]]\nname = \"b\"\nroots = [\"/r2\"]\n",
    );
    let r = wait_for(&rx, "rule b", |r| has_rule(r, "b"));
    let diff = r.apply_to(&mut current).unwrap();
    assert_eq!(diff.added, vec![PathBuf::from("/r2")]);
    assert!(diff.removed.is_empty());
    assert_eq!(
        current.roots(),
        vec![PathBuf::from("/r1"), PathBuf::from("/r2")]
    );

    // Removing the document removes its root.
    std::fs::remove_file(dir.path().join("a.toml")).unwrap();
    let r = wait_for(
        &rx,
        "rule a gone",
        |r| matches!(r, Reload::Applied(s) if names(s) == ["b"]),
    );
    let diff = r.apply_to(&mut current).unwrap();
    assert_eq!(diff.removed, vec![PathBuf::from("/r1")]);
}

#[test]
fn a_directory_created_later_is_picked_up() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("config").join("filters");
    let mut current = RuleSet::load_dir(&dir, &[PathBuf::from("/w")]).unwrap();
    assert_eq!(names(&current), ["all"]);
    let (_watcher, rx) = FilterWatcher::spawn_with(&dir, &current, DEBOUNCE).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    write(
        &dir,
        "a.toml",
        "[[rule]]\nname = \"late\"\nroots = [\"/late\"]\n",
    );
    let r = wait_for(&rx, "rule late", |r| has_rule(r, "late"));
    let diff = r.apply_to(&mut current).unwrap();
    assert_eq!(diff.added, vec![PathBuf::from("/late")]);
    assert_eq!(diff.removed, vec![PathBuf::from("/w")]);
}

#[test]
fn dropping_the_watcher_stops_it() {
    let dir = dir_with(&[]);
    let current = RuleSet::load_dir(dir.path(), &[]).unwrap();
    let (watcher, rx) = FilterWatcher::spawn_with(dir.path(), &current, DEBOUNCE).unwrap();
    drop(watcher);
    // The thread has ended: the channel disconnects once drained.
    let deadline = Instant::now() + WATCHDOG;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("watcher still running: {e}"),
        }
    }
}
