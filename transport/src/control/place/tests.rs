//! Placement in one process: path limit, folder checks, stale versus live, racing binds.
//! What needs other uids lives in `tests/socket_access.rs`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Barrier};

use nix::unistd::{getegid, geteuid};

use super::*;

fn tmp() -> tempfile::TempDir {
    // Under /tmp, not $TMPDIR: socket paths must stay short.
    tempfile::Builder::new()
        .prefix("fh-place-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in("/tmp")
        .unwrap()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// A uid that is neither ours nor root.
fn other_uid() -> u32 {
    if geteuid().as_raw() == 65534 {
        65533
    } else {
        65534
    }
}

fn shared() -> Access {
    Access {
        allow_uids: vec![other_uid()],
        allow_gids: vec![],
    }
}

#[test]
fn the_limit_is_sun_path_less_its_nul() {
    let addr = UnixAddr::new("/x").unwrap();
    assert_eq!(SUN_PATH_LEN, addr.as_ref().sun_path.len());
    #[cfg(target_os = "linux")]
    assert_eq!(MAX_SOCKET_PATH, 107);
}

#[test]
fn a_path_one_byte_over_the_limit_is_refused_and_the_limit_itself_binds() {
    let dir = tmp();
    let base = dir.path().as_os_str().len() + 1; // "<dir>/"
    let at_limit = dir.path().join("a".repeat(MAX_SOCKET_PATH - base));
    let over = dir.path().join("b".repeat(MAX_SOCKET_PATH + 1 - base));
    assert_eq!(at_limit.as_os_str().len(), MAX_SOCKET_PATH);
    assert_eq!(over.as_os_str().len(), SUN_PATH_LEN);

    let err = bind(&over, &Access::default()).unwrap_err();
    match &err {
        PlaceError::PathTooLong { path, len, limit } => {
            assert_eq!((path, *len, *limit), (&over, SUN_PATH_LEN, MAX_SOCKET_PATH));
        }
        other => panic!("expected PathTooLong, got {other:?}"),
    }
    let msg = err.to_string();
    for part in [
        over.display().to_string(),
        format!("{SUN_PATH_LEN} bytes"),
        format!("at most {MAX_SOCKET_PATH} bytes"),
    ] {
        assert!(msg.contains(&part), "{msg:?} names {part:?}");
    }
    // Never truncated: nothing was created under any name.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    let service = bind(&at_limit, &Access::default()).unwrap();
    UnixStream::connect(&at_limit).unwrap();
    drop(service);
}

#[test]
fn the_default_path_prefers_the_runtime_dir() {
    let rt = tmp();
    let uid = 4242;
    assert_eq!(
        socket_path_from(Some(rt.path().into()), uid).unwrap(),
        rt.path().join("firehose/firehose.sock")
    );
    let fallback = PathBuf::from("/tmp/firehose-4242/firehose.sock");
    assert_eq!(socket_path_from(None, uid).unwrap(), fallback);
    // Not a directory, relative, or missing: fall back.
    let file = rt.path().join("file");
    fs::write(&file, b"").unwrap();
    for bad in [file, PathBuf::from("run/user"), rt.path().join("missing")] {
        assert_eq!(socket_path_from(Some(bad.into()), uid).unwrap(), fallback);
    }
    let deep = rt.path().join("d".repeat(100));
    fs::create_dir(&deep).unwrap();
    assert!(matches!(
        socket_path_from(Some(deep.into()), uid),
        Err(PlaceError::PathTooLong { .. })
    ));
}

#[test]
fn a_private_socket_gets_a_0700_folder_and_mode_0600_and_our_pid_in_the_lock() {
    let dir = tmp();
    let path = dir.path().join("run/firehose.sock");
    let service = bind(&path, &Access::default()).unwrap();
    assert_eq!(service.path, path);
    assert_eq!(mode_of(&dir.path().join("run")), 0o700);
    assert_eq!(mode_of(&path), 0o600);
    let lock = dir.path().join("run/firehose.sock.lock");
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(service);
    assert!(!path.exists(), "drop removes the socket");
    assert!(!lock.exists(), "drop removes the lock file");
}

#[test]
fn shared_sockets_get_0666_or_their_group_and_0660() {
    let dir = tmp();
    chmod(dir.path(), 0o711);

    let path = dir.path().join("uids/firehose.sock");
    let service = bind(&path, &shared()).unwrap();
    assert_eq!(mode_of(&dir.path().join("uids")), 0o711);
    assert_eq!(mode_of(&path), 0o666);
    drop(service);

    // One group: our own, which any user may give a file they own.
    let gid = getegid().as_raw();
    let path = dir.path().join("gid/firehose.sock");
    let access = Access {
        allow_uids: vec![],
        allow_gids: vec![gid],
    };
    let service = bind(&path, &access).unwrap();
    assert_eq!(mode_of(&path), 0o660);
    assert_eq!(fs::metadata(&path).unwrap().gid(), gid);
    drop(service);

    let path = dir.path().join("gids/firehose.sock");
    let access = Access {
        allow_uids: vec![],
        allow_gids: vec![gid, gid + 1],
    };
    let service = bind(&path, &access).unwrap();
    assert_eq!(mode_of(&path), 0o666);
    drop(service);
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    // A dead service: its socket file and lock file stay, nobody holds the lock.
    drop(UnixListener::bind(&path).unwrap());
    fs::write(dir.path().join("firehose.sock.lock"), b"999999999\n").unwrap();
    assert!(UnixStream::connect(&path).is_err(), "nobody listens");

    let service = bind(&path, &Access::default()).unwrap();
    let _client = UnixStream::connect(&path).unwrap();
    service.listener.accept().unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("firehose.sock.lock")).unwrap(),
        format!("{}\n", std::process::id())
    );
}

#[test]
fn a_file_that_is_not_a_socket_is_not_removed() {
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    fs::write(&path, b"precious").unwrap();
    let err = bind(&path, &Access::default()).unwrap_err();
    assert!(matches!(err, PlaceError::Io { .. }), "{err:?}");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_live_socket_is_not_stolen_and_its_pid_is_named() {
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    let service = bind(&path, &Access::default()).unwrap();
    let before = file_id(&path).unwrap();

    let err = bind(&path, &Access::default()).unwrap_err();
    match &err {
        PlaceError::Live { pid, path: p } => {
            assert_eq!(*pid, Some(std::process::id()));
            assert_eq!(p, &path);
        }
        other => panic!("expected Live, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains(&format!("pid {}", std::process::id())));

    assert_eq!(
        file_id(&path).unwrap(),
        before,
        "the socket was not replaced"
    );
    let _client = UnixStream::connect(&path).unwrap();
    service.listener.accept().unwrap();
}

#[test]
fn drop_leaves_a_socket_that_is_no_longer_ours() {
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    let service = bind(&path, &Access::default()).unwrap();
    fs::remove_file(&path).unwrap();
    let _theirs = UnixListener::bind(&path).unwrap();
    drop(service);
    assert!(path.exists(), "someone else's socket stays");
    UnixStream::connect(&path).unwrap();
}

#[test]
fn a_lock_file_unlinked_or_replaced_after_we_opened_it_is_not_ours() {
    let dir = tmp();
    let lock_path = dir.path().join("firehose.sock.lock");
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .unwrap()
    };
    // Opened, then the service shutting down unlinks it and lets go.
    let early = open();
    fs::remove_file(&lock_path).unwrap();
    assert!(matches!(try_lock(early, &lock_path), Ok(Attempt::Replaced)));
    // Opened, then unlinked, and a new service made and locked a new one.
    let early = open();
    fs::remove_file(&lock_path).unwrap();
    let Ok(Attempt::Locked(newer)) = try_lock(open(), &lock_path) else {
        panic!("a fresh lock file locks");
    };
    assert!(matches!(try_lock(early, &lock_path), Ok(Attempt::Replaced)));
    // And the current file, held: who holds it.
    newer.set_len(0).unwrap();
    newer.write_all_at(b"4242\n", 0).unwrap();
    assert!(matches!(
        try_lock(open(), &lock_path),
        Ok(Attempt::Held(Some(4242)))
    ));
}

#[test]
fn threads_racing_for_one_path_exactly_one_wins() {
    const THREADS: usize = 4;
    let dir = tmp();
    for round in 0..50 {
        // The folder is created by the racers too.
        let path = dir.path().join(format!("r{round}/firehose.sock"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let racers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    bind(&path, &Access::default())
                })
            })
            .collect();
        // Join all before dropping any winner, so a loser cannot win after it.
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, PlaceError::Live { .. }), "round {round}: {e:?}");
            }
        }
    }
}

#[test]
fn a_folder_writable_by_group_or_others_is_refused() {
    let dir = tmp();
    for mode in [0o720, 0o702, 0o777] {
        let run = dir.path().join(format!("run{mode:o}"));
        fs::create_dir(&run).unwrap();
        chmod(&run, mode);
        let err = bind(&run.join("firehose.sock"), &Access::default()).unwrap_err();
        match &err {
            PlaceError::DirTooOpen { dir, mode: m } => {
                assert_eq!((dir, *m), (&run, mode));
            }
            other => panic!("mode {mode:o}: expected DirTooOpen, got {other:?}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("chmod go-w {}", run.display())));
    }
    // 0755 is not writable by others: fine for a private socket (mode 0600).
    let run = dir.path().join("run755");
    fs::create_dir(&run).unwrap();
    chmod(&run, 0o755);
    bind(&run.join("firehose.sock"), &Access::default()).unwrap();
}

#[test]
fn a_folder_someone_else_owns_is_refused() {
    // /tmp belongs to root and is 1777: refused either way.
    let err = bind(
        Path::new("/tmp/firehose-place-test.sock"),
        &Access::default(),
    )
    .unwrap_err();
    if geteuid().is_root() {
        assert!(
            matches!(&err, PlaceError::DirTooOpen { mode: 0o1777, .. }),
            "{err:?}"
        );
        let dir = tmp();
        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        chown(&theirs, Some(65534), None).unwrap();
        let err = bind(&theirs.join("firehose.sock"), &Access::default()).unwrap_err();
        match err {
            PlaceError::DirNotOurs { dir, owner_uid } => {
                assert_eq!((dir, owner_uid), (theirs, 65534));
            }
            other => panic!("expected DirNotOurs, got {other:?}"),
        }
    } else {
        assert!(
            matches!(&err, PlaceError::DirNotOurs { owner_uid: 0, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn an_allow_list_under_the_runtime_dir_is_refused() {
    let rt = tmp();
    chmod(rt.path(), 0o711); // so that only the runtime-dir rule can refuse
    let path = rt.path().join("firehose/firehose.sock");
    let err = bind_in(&path, &shared(), Some(rt.path())).unwrap_err();
    assert!(
        matches!(&err, PlaceError::UnderRuntimeDir { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("/run/firehose/firehose.sock"));
    assert!(
        !rt.path().join("firehose").exists(),
        "refused before creating"
    );

    // Through a symlink to it: still under it.
    let other = tmp();
    chmod(other.path(), 0o711);
    let link = other.path().join("link");
    std::os::unix::fs::symlink(rt.path(), &link).unwrap();
    let err = bind_in(&link.join("firehose.sock"), &shared(), Some(rt.path())).unwrap_err();
    assert!(matches!(err, PlaceError::UnderRuntimeDir { .. }), "{err:?}");

    // A private socket belongs there.
    bind_in(&path, &Access::default(), Some(rt.path())).unwrap();
}

#[test]
fn a_folder_the_allowed_peers_cannot_search_is_refused_and_named() {
    let dir = tmp(); // 0700: nobody else can search it
    let path = dir.path().join("run/firehose.sock");
    let groups = Access {
        allow_uids: vec![],
        allow_gids: vec![getegid().as_raw() + 1],
    };
    for access in [shared(), groups] {
        let err = bind(&path, &access).unwrap_err();
        match &err {
            PlaceError::AncestorNotSearchable { dir: d } => assert_eq!(d, dir.path()),
            other => panic!("{access:?}: expected AncestorNotSearchable, got {other:?}"),
        }
        assert!(err
            .to_string()
            .contains(&format!("chmod o+x {}", dir.path().display())));
    }
    // A folder we made 0711 ourselves stays 0711; an existing 0700 one is not loosened.
    chmod(dir.path(), 0o711);
    let run = dir.path().join("run");
    assert_eq!(mode_of(&run), 0o711);
    chmod(&run, 0o700);
    let err = bind(&path, &shared()).unwrap_err();
    assert!(
        matches!(&err, PlaceError::AncestorNotSearchable { dir: d } if d == &run),
        "{err:?}"
    );
    assert_eq!(mode_of(&run), 0o700);
    chmod(&run, 0o711);
    bind(&path, &shared()).unwrap();
}

#[test]
fn owner_group_and_other_bits_decide_who_can_search() {
    let dir = tmp();
    let meta = |mode| {
        chmod(dir.path(), mode);
        fs::metadata(dir.path()).unwrap()
    };
    let me = geteuid().as_raw();
    let group = fs::metadata(dir.path()).unwrap().gid();
    let uid = |u| Access {
        allow_uids: vec![u],
        allow_gids: vec![],
    };
    let gid = |g| Access {
        allow_uids: vec![],
        allow_gids: vec![g],
    };
    assert!(uid(0).can_search(&meta(0o700)), "root searches anything");
    assert!(!uid(other_uid()).can_search(&meta(0o770)));
    assert!(uid(other_uid()).can_search(&meta(0o701)));
    assert!(!gid(group).can_search(&meta(0o701)), "the group bits apply");
    assert!(gid(group).can_search(&meta(0o710)));
    assert!(!gid(group + 1).can_search(&meta(0o710)));
    assert!(gid(group + 1).can_search(&meta(0o701)));
    if me != 0 {
        assert!(uid(me).can_search(&meta(0o700)), "the owner bits apply");
        assert!(!uid(me).can_search(&meta(0o011)));
    }
    chmod(dir.path(), 0o700);
}
