//! Who gets in, across processes and uids (DESIGN.md, G7): the control socket's file modes
//! and SO_PEERCRED together, and clients refusing a service planted by another uid. The
//! service runs in this process; every client is a forked child that drops to an
//! unprivileged uid (setgroups, setgid, setuid: no /etc/passwd entry needed). That takes
//! root, as in CI; otherwise those tests say why and skip.
//!
//! Also across processes, as any user: a killed service's socket is stale and replaced, a
//! live one is not, and of two processes racing for one path exactly one wins.

use std::fs::{self, File, Permissions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use firehose_transport::control::peer::{
    check_service, connect, is_allowed, peer_cred, ConnectError, PeerCred,
};
use firehose_transport::control::place::{bind, Access, PlaceError};
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, geteuid, pipe2, setgid, setgroups, setuid, ForkResult, Gid, Pid, Uid};

use crate::watchdog::Watchdog;

/// An unprivileged uid (and gid), "nobody" on most systems.
const NOBODY: u32 = 65534;
/// Another uid, on no list.
const STRANGER: u32 = 65533;
/// A group nobody is in unless a test puts them there.
const GROUP: u32 = 65530;
/// How long a test may take before its watchdog kills its children and aborts.
const LIMIT: Duration = Duration::from_secs(120);

/// One forking test at a time: a forked child holds a copy of every fd open in this
/// process at that moment (another test's sockets included), so two at once could keep
/// each other's connections open.
static FORKING: Mutex<()> = Mutex::new(());

fn forking() -> MutexGuard<'static, ()> {
    FORKING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn root_or_skip(test: &str) -> bool {
    let uid = geteuid();
    if !uid.is_root() {
        eprintln!("{test}: skipped: running clients as other uids needs root (we are uid {uid})");
    }
    uid.is_root()
}

/// A fresh folder under /tmp (socket paths must stay short) that other uids may search.
fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fh-access-")
        .permissions(Permissions::from_mode(0o711))
        .tempdir_in("/tmp")
        .unwrap()
}

/// Who a child becomes.
#[derive(Clone, Copy)]
struct Ids {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

impl Ids {
    const fn plain(uid: u32) -> Self {
        Ids {
            uid,
            gid: uid,
            groups: &[],
        }
    }

    fn become_them(&self) -> nix::Result<()> {
        let groups: Vec<Gid> = self.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        setgroups(&groups)?;
        setgid(Gid::from_raw(self.gid))?;
        setuid(Uid::from_raw(self.uid))
    }
}

/// Sends one report: length, then bytes (no EOF needed, see [`FORKING`]).
fn send(out: &mut File, msg: &str) {
    let _ = out.write_all(&(msg.len() as u32).to_le_bytes());
    let _ = out.write_all(msg.as_bytes());
}

/// A forked child; killed and reaped on drop if it has not been yet.
struct Child {
    pid: Pid,
    reports: File,
    reaped: bool,
}

impl Child {
    /// Forks a child that becomes `ids` (if given), runs `body` and exits.
    fn spawn(ids: Option<Ids>, body: impl FnOnce(&mut File)) -> Child {
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child runs only the code below: system calls, and allocation, which
        // glibc keeps usable in a forked child. It takes no lock another thread may hold
        // (it never prints: reports go through the pipe) and leaves through `_exit`,
        // never returning into the test harness. Should it hang anyway, the calling test's
        // watchdog kills it.
        match unsafe { fork() }.unwrap() {
            ForkResult::Parent { child } => {
                drop(write_end);
                Child {
                    pid: child,
                    reports: File::from(read_end),
                    reaped: false,
                }
            }
            ForkResult::Child => {
                drop(read_end);
                let mut out = File::from(write_end);
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if let Some(ids) = ids {
                        if let Err(e) = ids.become_them() {
                            send(&mut out, &format!("could not drop privileges: {e}"));
                            return;
                        }
                    }
                    body(&mut out);
                }));
                let code = if ran.is_ok() { 0 } else { 101 };
                // SAFETY: `_exit` ends the child at once, running no destructor of the
                // state it shares with the parent (the parent's `BoundSocket`'s drop would
                // remove the parent's socket file) and no atexit handler.
                unsafe { libc::_exit(code) }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    fn report(&mut self) -> String {
        let mut len = [0u8; 4];
        self.reports
            .read_exact(&mut len)
            .expect("the child reports before it exits");
        let mut msg = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reports.read_exact(&mut msg).unwrap();
        String::from_utf8(msg).unwrap()
    }

    /// Waits for the child to exit by itself; returns its exit code.
    fn wait(mut self) -> i32 {
        self.reaped = true;
        match waitpid(self.pid, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        }
    }

    fn kill(mut self) {
        self.reaped = true;
        kill(self.pid, Signal::SIGKILL).unwrap();
        waitpid(self.pid, None).unwrap();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// A client child: connects to `path` as `ids`, checks the service, reports, then holds
/// the connection until the service closes it (so that its pid stays alive for
/// `is_allowed`).
fn client(ids: Ids, path: &Path) -> Child {
    let path = path.to_path_buf();
    Child::spawn(Some(ids), move |out| match connect(&path) {
        Err(e) => send(out, &format!("{e:?}\n{e}")),
        Ok(stream) => {
            match check_service(&stream, &[]) {
                Ok(service) => send(out, &format!("connected to uid {}", service.uid)),
                Err(e) => send(out, &format!("{e:?}")),
            }
            let _ = (&stream).read(&mut [0u8; 1]);
        }
    })
}

/// What a client refused with `NotAllowed` reports.
fn not_allowed(path: &Path, uid: u32) -> String {
    let e = ConnectError::NotAllowed {
        path: path.to_path_buf(),
        uid,
    };
    format!("{e:?}\n{e}")
}

/// Accepts the connection a client reported, and returns its credentials.
fn accept_peer(service: &firehose_transport::control::place::BoundSocket) -> PeerCred {
    let (stream, _) = service.listener.accept().unwrap();
    peer_cred(stream.as_fd()).unwrap()
    // `stream` closes here: the client sees EOF and exits.
}

fn bind_shared(
    dir: &Path,
    access: &Access,
) -> (PathBuf, firehose_transport::control::place::BoundSocket) {
    let path = dir.join("run/firehose.sock");
    let service = bind(&path, access).unwrap();
    (path, service)
}

#[test]
fn another_uid_is_refused_by_default_with_a_clear_message() {
    if !root_or_skip("another_uid_is_refused_by_default_with_a_clear_message") {
        return;
    }
    let _one = forking();
    let dir = tmp();

    // The 0700 folder keeps them out.
    let (path, _service) = bind_shared(dir.path(), &Access::default());
    assert_eq!(
        fs::metadata(dir.path().join("run")).unwrap().mode() & 0o777,
        0o700
    );
    let mut child = client(Ids::plain(NOBODY), &path);
    let _watchdog = Watchdog::arm("socket_access: default refusal", LIMIT, vec![child.pid()]);
    let report = child.report();
    assert_eq!(report, not_allowed(&path, NOBODY));
    assert!(report.ends_with(&format!(
        "not allowed to connect to {} as uid {NOBODY}: ask the service's owner to add you \
         to its allow-list",
        path.display()
    )));
    assert_eq!(child.wait(), 0);

    // In a folder they can search, the socket's 0600 keeps them out.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, Permissions::from_mode(0o711)).unwrap();
    let path = open.join("firehose.sock");
    let _service = bind(&path, &Access::default()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let mut child = client(Ids::plain(NOBODY), &path);
    let _watchdog = Watchdog::arm("socket_access: 0600 socket", LIMIT, vec![child.pid()]);
    assert_eq!(child.report(), not_allowed(&path, NOBODY));
    assert_eq!(child.wait(), 0);
}

#[test]
fn an_allow_listed_uid_connects_and_its_credentials_are_allowed() {
    if !root_or_skip("an_allow_listed_uid_connects_and_its_credentials_are_allowed") {
        return;
    }
    let _one = forking();
    let dir = tmp();
    let access = Access {
        allow_uids: vec![NOBODY],
        allow_gids: vec![],
    };
    let (path, service) = bind_shared(dir.path(), &access);

    let mut child = client(Ids::plain(NOBODY), &path);
    let _watchdog = Watchdog::arm("socket_access: allow-listed uid", LIMIT, vec![child.pid()]);
    assert_eq!(
        child.report(),
        "connected to uid 0",
        "the client trusts a root service"
    );
    let peer = accept_peer(&service);
    assert_eq!(
        peer,
        PeerCred {
            pid: child.pid(),
            uid: NOBODY,
            gid: NOBODY,
        }
    );
    assert!(is_allowed(&peer, &access, 0));
    assert!(
        !is_allowed(&peer, &Access::default(), 0),
        "the list is what lets them in"
    );
    assert_eq!(child.wait(), 0);
}

#[test]
fn a_member_of_an_allowed_group_connects_and_a_non_member_does_not() {
    if !root_or_skip("a_member_of_an_allowed_group_connects_and_a_non_member_does_not") {
        return;
    }
    let _one = forking();
    let dir = tmp();
    let access = Access {
        allow_uids: vec![],
        allow_gids: vec![GROUP],
    };
    let (path, service) = bind_shared(dir.path(), &access);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, GROUP));

    // A supplementary member: SO_PEERCRED shows only its primary gid, /proc the rest.
    let member = Ids {
        uid: STRANGER,
        gid: STRANGER,
        groups: &[GROUP],
    };
    let mut child = client(member, &path);
    let _watchdog = Watchdog::arm("socket_access: group member", LIMIT, vec![child.pid()]);
    assert_eq!(child.report(), "connected to uid 0");
    let peer = accept_peer(&service);
    assert_eq!(
        (peer.pid, peer.uid, peer.gid),
        (child.pid(), STRANGER, STRANGER)
    );
    assert!(is_allowed(&peer, &access, 0));
    let other_group = Access {
        allow_uids: vec![],
        allow_gids: vec![GROUP + 1],
    };
    assert!(!is_allowed(&peer, &other_group, 0));
    assert_eq!(child.wait(), 0);

    // A primary member.
    let primary = Ids {
        uid: STRANGER,
        gid: GROUP,
        groups: &[],
    };
    let mut child = client(primary, &path);
    let _watchdog = Watchdog::arm("socket_access: primary group", LIMIT, vec![child.pid()]);
    assert_eq!(child.report(), "connected to uid 0");
    let peer = accept_peer(&service);
    assert_eq!(peer.gid, GROUP);
    assert!(is_allowed(&peer, &access, 0));
    assert_eq!(child.wait(), 0);

    // Not a member: the 0660 socket keeps them out.
    let mut child = client(Ids::plain(STRANGER), &path);
    let _watchdog = Watchdog::arm("socket_access: non-member", LIMIT, vec![child.pid()]);
    assert_eq!(child.report(), not_allowed(&path, STRANGER));
    assert_eq!(child.wait(), 0);
}

#[test]
fn an_unlisted_uid_reaches_a_0666_socket_but_is_not_allowed() {
    if !root_or_skip("an_unlisted_uid_reaches_a_0666_socket_but_is_not_allowed") {
        return;
    }
    let _one = forking();
    let dir = tmp();
    let access = Access {
        allow_uids: vec![NOBODY],
        allow_gids: vec![],
    };
    let (path, service) = bind_shared(dir.path(), &access);
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o666);

    let mut child = client(Ids::plain(STRANGER), &path);
    let _watchdog = Watchdog::arm("socket_access: unlisted uid", LIMIT, vec![child.pid()]);
    assert_eq!(
        child.report(),
        "connected to uid 0",
        "the file mode lets anyone connect"
    );
    let peer = accept_peer(&service);
    assert_eq!((peer.pid, peer.uid), (child.pid(), STRANGER));
    assert!(!is_allowed(&peer, &access, 0), "SO_PEERCRED decides");
    assert_eq!(child.wait(), 0);
}

#[test]
fn a_socket_planted_by_another_uid_is_not_trusted() {
    if !root_or_skip("a_socket_planted_by_another_uid_is_not_trusted") {
        return;
    }
    let _one = forking();
    let dir = tmp();
    let planted = dir.path().join("planted");
    fs::create_dir(&planted).unwrap();
    fs::set_permissions(&planted, Permissions::from_mode(0o700)).unwrap();
    chown(&planted, Some(NOBODY), Some(NOBODY)).unwrap();
    let path = planted.join("firehose.sock");

    // A "service" run by nobody.
    let service_path = path.clone();
    let mut service = Child::spawn(Some(Ids::plain(NOBODY)), move |out| {
        match bind(&service_path, &Access::default()) {
            Ok(bound) => {
                send(out, "bound");
                loop {
                    let _ = bound.listener.accept();
                }
            }
            Err(e) => send(out, &format!("{e:?}")),
        }
    });
    let _watchdog = Watchdog::arm("socket_access: planted socket", LIMIT, vec![service.pid()]);
    assert_eq!(service.report(), "bound");

    let stream = connect(&path).unwrap();
    match check_service(&stream, &[]) {
        Err(ConnectError::UntrustedService { path: p, uid }) => {
            assert_eq!((p.as_deref(), uid), (Some(path.as_path()), NOBODY));
        }
        other => panic!("expected UntrustedService, got {other:?}"),
    }
    let stream = connect(&path).unwrap();
    let cred = check_service(&stream, &[NOBODY]).expect("a uid we were told to trust");
    assert_eq!((cred.pid, cred.uid), (service.pid(), NOBODY));

    // Nor does a root service take over a folder nobody owns.
    service.kill();
    match bind(&path, &Access::default()) {
        Err(PlaceError::DirNotOurs { dir, owner_uid }) => {
            assert_eq!((dir, owner_uid), (planted, NOBODY));
        }
        other => panic!("expected DirNotOurs, got {other:?}"),
    }
}

#[test]
fn a_killed_service_leaves_a_stale_socket_that_the_next_one_replaces() {
    let _one = forking();
    let dir = tmp();
    let path = dir.path().join("run/firehose.sock");
    let service_path = path.clone();
    let mut first = Child::spawn(None, move |out| {
        match bind(&service_path, &Access::default()) {
            Ok(bound) => {
                send(out, "bound");
                loop {
                    let _ = bound.listener.accept();
                }
            }
            Err(e) => send(out, &format!("{e:?}")),
        }
    });
    let _watchdog = Watchdog::arm("socket_access: stale socket", LIMIT, vec![first.pid()]);
    assert_eq!(first.report(), "bound");

    // Live: not stolen, and the holder is named.
    match bind(&path, &Access::default()) {
        Err(PlaceError::Live { pid, path: p }) => {
            assert_eq!((pid, p), (Some(first.pid()), path.clone()));
        }
        other => panic!("expected Live, got {other:?}"),
    }
    connect(&path).expect("the first service still answers");

    // SIGKILL: no drop ran, the socket file stays, nobody listens.
    first.kill();
    assert!(
        fs::symlink_metadata(&path).is_ok(),
        "the dead service's socket file is left"
    );
    assert!(matches!(
        connect(&path),
        Err(ConnectError::NotRunning { .. })
    ));

    let second = bind(&path, &Access::default()).expect("a stale socket is replaced");
    let _client = connect(&path).unwrap();
    second.listener.accept().unwrap();
}

#[test]
fn processes_racing_for_one_path_exactly_one_wins() {
    let _one = forking();
    let dir = tmp();
    for round in 0..10 {
        let path = dir.path().join(format!("r{round}/firehose.sock"));
        let (go_read, go_write) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let go_read = File::from(go_read);
        let mut racers: Vec<Child> = (0..2)
            .map(|_| {
                let path = path.clone();
                let mut go = go_read.try_clone().unwrap();
                Child::spawn(None, move |out| {
                    let mut byte = [0u8; 1];
                    if go.read_exact(&mut byte).is_err() {
                        send(out, "no go");
                        return;
                    }
                    match bind(&path, &Access::default()) {
                        Ok(_held) => {
                            send(out, "won");
                            // Hold the lock until killed.
                            loop {
                                nix::unistd::pause();
                            }
                        }
                        Err(PlaceError::Live { .. }) => send(out, "live"),
                        Err(e) => send(out, &format!("{e:?}")),
                    }
                })
            })
            .collect();
        let pids = racers.iter().map(Child::pid).collect();
        let _watchdog = Watchdog::arm("socket_access: racing processes", LIMIT, pids);
        File::from(go_write).write_all(&[1, 1]).unwrap();
        let mut reports: Vec<String> = racers.iter_mut().map(Child::report).collect();
        reports.sort();
        assert_eq!(reports, ["live", "won"], "round {round}");
        for racer in racers {
            racer.kill();
        }
    }
}
