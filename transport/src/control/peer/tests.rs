//! Peer checks in one process. Other uids and groups are in `tests/socket_access.rs`.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;

use nix::unistd::{getegid, getgroups, getpid};

use super::*;
use crate::control::place::bind;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fh-peer-")
        .permissions(Permissions::from_mode(0o700))
        .tempdir_in("/tmp")
        .unwrap()
}

fn access(uids: &[u32], gids: &[u32]) -> Access {
    Access {
        allow_uids: uids.to_vec(),
        allow_gids: gids.to_vec(),
    }
}

#[test]
fn peer_cred_reports_the_process_on_the_other_end() {
    let (a, _b) = UnixStream::pair().unwrap();
    let cred = peer_cred(a.as_fd()).unwrap();
    assert_eq!(
        cred,
        PeerCred {
            pid: std::process::id(),
            uid: geteuid().as_raw(),
            gid: getegid().as_raw(),
        }
    );
}

#[test]
fn uids_and_primary_gids_on_the_list_are_allowed() {
    // pid 0: no /proc lookup, only what SO_PEERCRED says.
    let peer = |uid, gid| PeerCred { pid: 0, uid, gid };
    let service = 1000;
    let private = Access::default();
    assert!(
        is_allowed(&peer(1000, 5), &private, service),
        "the service's uid"
    );
    assert!(is_allowed(&peer(0, 5), &private, service), "root");
    assert!(!is_allowed(&peer(1001, 5), &private, service));
    assert!(
        !is_allowed(&peer(1001, 1000), &private, service),
        "not by gid"
    );

    let list = access(&[1001, 1002], &[77]);
    assert!(is_allowed(&peer(1002, 5), &list, service));
    assert!(is_allowed(&peer(1003, 77), &list, service), "primary gid");
    assert!(!is_allowed(&peer(1003, 78), &list, service));
}

#[test]
fn proc_status_gives_the_effective_uid_and_the_groups() {
    let text = "Name:\tcat\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n\
                Groups:\t4 24 27 \nNgid:\t0\n";
    assert_eq!(
        ProcStatus::parse(text),
        Some(ProcStatus {
            euid: 1001,
            groups: vec![4, 24, 27],
        })
    );
    let none = "Uid:\t0\t0\t0\t0\nGroups:\t\n";
    assert_eq!(ProcStatus::parse(none).unwrap().groups, Vec::<u32>::new());
    assert_eq!(
        ProcStatus::parse("Uid:\t0\t0\t0\t0\n"),
        None,
        "no Groups line"
    );
    assert_eq!(ProcStatus::parse("Uid:\tx\nGroups:\t1\n"), None);
    assert_eq!(ProcStatus::parse("Uid:\t0\t0\t0\t0\nGroups:\t1 x\n"), None);
}

#[test]
fn supplementary_groups_are_read_for_the_live_pid_with_the_peer_uid() {
    let me = PeerCred {
        pid: getpid().as_raw() as u32,
        uid: geteuid().as_raw(),
        gid: getegid().as_raw(),
    };
    let mut ours: Vec<u32> = getgroups().unwrap().iter().map(|g| g.as_raw()).collect();
    ours.sort_unstable();
    let mut read = supplementary_groups(&me).unwrap();
    read.sort_unstable();
    assert_eq!(read, ours);

    // A pid that now runs as someone else (reused) tells us nothing.
    let reused = PeerCred {
        uid: me.uid + 1,
        ..me
    };
    assert_eq!(supplementary_groups(&reused), None);
    assert_eq!(supplementary_groups(&PeerCred { pid: 0, ..me }), None);

    // Through is_allowed: only meaningful if we are neither root nor without groups.
    if let (false, Some(&group)) = (me.uid == 0, ours.iter().find(|&&g| g != me.gid)) {
        let list = access(&[], &[group]);
        assert!(is_allowed(&me, &list, me.uid + 1));
        assert!(!is_allowed(&me, &access(&[], &[u32::MAX - 1]), me.uid + 1));
    }
}

#[test]
fn connect_says_not_running_for_a_missing_or_dead_socket() {
    let dir = tmp();
    let missing = dir.path().join("firehose.sock");
    match connect(&missing) {
        Err(ConnectError::NotRunning { path }) => assert_eq!(path, missing),
        other => panic!("expected NotRunning, got {other:?}"),
    }
    // A dead service's socket file: ECONNREFUSED.
    let dead = dir.path().join("dead.sock");
    drop(UnixListener::bind(&dead).unwrap());
    let err = connect(&dead).unwrap_err();
    assert!(
        matches!(&err, ConnectError::NotRunning { path } if path == &dead),
        "{err:?}"
    );
    assert!(err.to_string().contains("start it"));
}

#[test]
fn connect_refuses_a_path_too_long_for_sun_path() {
    let long = PathBuf::from(format!("/tmp/{}", "x".repeat(MAX_SOCKET_PATH - 4)));
    assert_eq!(long.as_os_str().len(), MAX_SOCKET_PATH + 1);
    match connect(&long) {
        Err(ConnectError::PathTooLong { path, len, limit }) => {
            assert_eq!(
                (path, len, limit),
                (long, MAX_SOCKET_PATH + 1, MAX_SOCKET_PATH)
            );
        }
        other => panic!("expected PathTooLong, got {other:?}"),
    }
}

#[test]
fn connect_says_not_allowed_when_permissions_keep_us_out() {
    if geteuid().is_root() {
        eprintln!("skipping: root ignores file modes (tests/socket_access.rs drops privileges)");
        return;
    }
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    let _service = bind(&path, &Access::default()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let err = connect(&path).unwrap_err();
    let uid = geteuid().as_raw();
    assert!(
        matches!(&err, ConnectError::NotAllowed { path: p, uid: u } if p == &path && *u == uid),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "not allowed to connect to {} as uid {uid}: ask the service's owner to add you to \
             its allow-list",
            path.display()
        )
    );
}

#[test]
fn a_service_of_our_own_uid_is_trusted() {
    let dir = tmp();
    let path = dir.path().join("firehose.sock");
    let service = bind(&path, &Access::default()).unwrap();
    let stream = connect(&path).unwrap();
    let cred = check_service(&stream, &[]).unwrap();
    assert_eq!(cred.uid, geteuid().as_raw());
    assert_eq!(cred.pid, std::process::id());
    let (accepted, _) = service.listener.accept().unwrap();
    let client = peer_cred(accepted.as_fd()).unwrap();
    assert!(is_allowed(&client, &Access::default(), geteuid().as_raw()));
}

#[test]
fn only_our_uid_root_and_trusted_uids_are_trusted_services() {
    assert!(is_trusted_service(1000, 1000, &[]));
    assert!(is_trusted_service(0, 1000, &[]));
    assert!(!is_trusted_service(1001, 1000, &[]));
    assert!(is_trusted_service(1001, 1000, &[7, 1001]));
    let err = ConnectError::UntrustedService {
        path: Some("/run/firehose/firehose.sock".into()),
        uid: 1001,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("/run/firehose/firehose.sock") && msg.contains("uid 1001"),
        "{msg}"
    );
}
