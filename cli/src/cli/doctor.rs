//! `firehose doctor`: checks the setup and says what to do about each problem; exits 1 if
//! it found any.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firehose_consumer::{
    escape_path, Client, ClientError, ConnectError, ConnectOptions, DisconnectReason, FileEvent,
    Policy, Status,
};

use super::{code, Cli};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A folder the service watches (repeatable); default: the roots the service reports.
    #[arg(long, value_name = "DIR")]
    root: Vec<PathBuf>,
}

/// What one check found.
enum Finding {
    Ok(String),
    Problem { what: String, todo: String },
    Info(String),
}

struct Report {
    problems: usize,
}

impl Report {
    fn say(&mut self, label: &str, f: Finding) {
        match f {
            Finding::Ok(s) => println!("ok    {label:<16} {}", escape_path(s.as_bytes())),
            Finding::Info(s) => println!("      {label:<16} {}", escape_path(s.as_bytes())),
            Finding::Problem { what, todo } => {
                self.problems += 1;
                println!("FAIL  {label:<16} {}", escape_path(what.as_bytes()));
                println!("      {:<16} -> {todo}", "");
            }
        }
    }
}

fn env_dir(var: &str, home_rel: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(home_rel),
    }
}

fn check_folder(path: &Path) -> Finding {
    let Some(dir) = path.parent() else {
        return Finding::Info("no folder".into());
    };
    let uid = nix::unistd::geteuid().as_raw();
    match std::fs::metadata(dir) {
        Err(e) => Finding::Problem {
            what: format!("{}: {e}", dir.display()),
            todo: "the service creates it when it starts; start it (firehosed --watch DIR)".into(),
        },
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if m.uid() != uid && m.uid() != 0 {
                Finding::Problem {
                    what: format!(
                        "{} belongs to uid {}, mode {mode:04o}",
                        dir.display(),
                        m.uid()
                    ),
                    todo:
                        "someone else owns the socket's folder: use a folder of your own (--socket)"
                            .into(),
                }
            } else if mode & 0o022 != 0 {
                Finding::Problem {
                    what: format!("{} is writable by others (mode {mode:04o})", dir.display()),
                    todo: format!("chmod go-w {}", dir.display()),
                }
            } else {
                Finding::Ok(format!(
                    "{} mode {mode:04o}, owner uid {}",
                    dir.display(),
                    m.uid()
                ))
            }
        }
    }
}

fn check_socket_file(path: &Path) -> (bool, Finding) {
    match std::fs::symlink_metadata(path) {
        Err(_) => (
            false,
            Finding::Problem {
                what: format!("no socket at {}", path.display()),
                todo: "the service is not running: start it (firehosed --watch DIR), or pass the --socket it uses".into(),
            },
        ),
        Ok(m) if !m.file_type().is_socket() => (
            true,
            Finding::Problem {
                what: format!("{} is not a socket", path.display()),
                todo: "remove it, or point --socket at the service's socket".into(),
            },
        ),
        Ok(m) => (
            true,
            Finding::Ok(format!("{} mode {:04o}", path.display(), m.mode() & 0o7777)),
        ),
    }
}

fn connect_finding(path: &Path, exists: bool, e: &ClientError) -> Finding {
    match e {
        ClientError::Connect(ConnectError::NotRunning { .. }) if exists => Finding::Problem {
            what: "stale socket: nothing listens there (the service died)".into(),
            todo: "start the service; it replaces the stale socket".into(),
        },
        ClientError::Connect(ConnectError::NotRunning { .. }) => Finding::Problem {
            what: "the service is not running".into(),
            todo: "start it (firehosed --watch DIR), or pass the --socket it uses".into(),
        },
        ClientError::Connect(ConnectError::NotAllowed { uid, .. }) => Finding::Problem {
            what: format!(
                "not allowed in as uid {uid} (permissions of {} or its folder)",
                path.display()
            ),
            todo: "ask the service's owner to add your uid or group to its allow-list".into(),
        },
        ClientError::Disconnected {
            reason: DisconnectReason::NotAllowed,
            detail,
            ..
        } => Finding::Problem {
            what: format!("the service refused us: {detail}"),
            todo: "ask the service's owner to add your uid or group to its allow-list".into(),
        },
        other => Finding::Problem {
            what: other.to_string(),
            todo: "check that the socket belongs to a firehose service of this version".into(),
        },
    }
}

fn read_num(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Counts directories under `root`, visiting at most `budget` entries or for 10 s.
fn count_dirs(root: &Path, budget: usize) -> (u64, bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stack = vec![root.to_path_buf()];
    let (mut dirs, mut seen) = (0u64, 0usize);
    while let Some(d) = stack.pop() {
        dirs += 1;
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > budget || Instant::now() > deadline {
                return (dirs, true);
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    (dirs, false)
}

fn fs_name(t: i64) -> Option<&'static str> {
    Some(match t {
        0x6969 => "NFS",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x6573_5546 => "FUSE",
        0x0102_1997 => "9p",
        0x0BD0_0BD0 => "Lustre",
        0x0047_5046 | 0x4750_4653 => "GPFS",
        0x7375_7245 => "Coda",
        0x00C3_6400 => "Ceph",
        0x5346_414F => "AFS",
        _ => return None,
    })
}

fn check_roots(r: &mut Report, roots: &[PathBuf]) {
    let watches = read_num("/proc/sys/fs/inotify/max_user_watches");
    let instances = read_num("/proc/sys/fs/inotify/max_user_instances");
    let queued = read_num("/proc/sys/fs/inotify/max_queued_events");
    r.say(
        "inotify limits",
        Finding::Info(format!(
            "max_user_watches {}, max_user_instances {}, max_queued_events {}",
            watches.map_or("?".into(), |v| v.to_string()),
            instances.map_or("?".into(), |v| v.to_string()),
            queued.map_or("?".into(), |v| v.to_string())
        )),
    );
    if queued.is_some_and(|q| q < 16_384) {
        r.say(
            "inotify queue",
            Finding::Problem {
                what: format!(
                    "max_queued_events is {}: bursts overflow it",
                    queued.unwrap_or(0)
                ),
                todo: "sysctl fs.inotify.max_queued_events=65536".into(),
            },
        );
    }
    if roots.is_empty() {
        r.say(
            "roots",
            Finding::Info("none known (pass --root DIR to check one)".into()),
        );
        return;
    }
    let mut total = 0u64;
    for root in roots {
        let (dirs, cut) = count_dirs(root, 2_000_000);
        total += dirs;
        r.say(
            "root",
            Finding::Info(format!(
                "{}: {}{dirs} directories",
                root.display(),
                if cut { "at least " } else { "" }
            )),
        );
        match nix::sys::statfs::statfs(root) {
            Ok(st) => {
                // `f_type`'s width differs between architectures.
                #[allow(clippy::unnecessary_cast)]
                let t = st.filesystem_type().0 as i64;
                if let Some(name) = fs_name(t) {
                    r.say(
                        "file system",
                        Finding::Problem {
                            what: format!("{} is on {name} (type {t:#x}): inotify misses changes made by other machines", root.display()),
                            todo: "watch it on the machine that serves it, or accept that only local changes are seen".into(),
                        },
                    );
                } else {
                    r.say(
                        "file system",
                        Finding::Ok(format!("{} is local (type {t:#x})", root.display())),
                    );
                }
            }
            Err(e) => r.say(
                "file system",
                Finding::Problem {
                    what: format!("{}: {e}", root.display()),
                    todo: "check that the root exists and that you may read it".into(),
                },
            ),
        }
    }
    if let Some(w) = watches {
        if total > w {
            r.say(
                "inotify watches",
                Finding::Problem {
                    what: format!(
                        "{total} directories under the roots, but max_user_watches is {w}"
                    ),
                    todo: format!(
                        "sysctl fs.inotify.max_user_watches={}",
                        (total * 2).next_power_of_two()
                    ),
                },
            );
        } else if total * 10 > w * 8 {
            r.say(
                "inotify watches",
                Finding::Problem {
                    what: format!("{total} directories use most of max_user_watches ({w})"),
                    todo: format!(
                        "sysctl fs.inotify.max_user_watches={}",
                        (total * 2).next_power_of_two()
                    ),
                },
            );
        } else {
            r.say(
                "inotify watches",
                Finding::Ok(format!("{total} directories of {w} watches")),
            );
        }
    }
}

/// Which backend is in force and why: fanotify is fine; inotify is fine too, but says why
/// fanotify is not used and what it would take.
fn backend_finding(line: &str) -> Finding {
    if line.is_empty() {
        return Finding::Info("not reported (the service watches nothing)".into());
    }
    match line.split_once(": ") {
        Some(("inotify", why)) => Finding::Info(format!(
            "inotify (a watch per directory), because {why}; fanotify (one mark per \
             filesystem, no watch limit) needs the service to run as root: firehosed \
             install --system"
        )),
        _ if line == "inotify" => Finding::Ok("inotify (asked for with --backend inotify)".into()),
        _ => Finding::Ok(line.to_string()),
    }
}

fn check_service(r: &mut Report, c: &mut Client<FileEvent>) -> Option<Status> {
    let s = match c.status() {
        Ok(s) => s,
        Err(e) => {
            r.say(
                "status",
                Finding::Problem {
                    what: format!("no status: {e}"),
                    todo: "check the service's log".into(),
                },
            );
            return None;
        }
    };
    r.say(
        "service",
        Finding::Ok(format!(
            "pid {}, uid {}, {} readers",
            s.pid,
            c.service().uid,
            s.readers.len()
        )),
    );
    r.say(
        "history",
        if s.storage == "ok" {
            Finding::Ok(format!(
                "{} rows, {} MiB, storage ok",
                s.history_rows,
                s.history_bytes >> 20
            ))
        } else {
            Finding::Problem {
                what: format!("storage {}", s.storage),
                todo: "check the disk and the database under $XDG_STATE_HOME/firehose; see the service's log".into(),
            }
        },
    );
    r.say("backend", backend_finding(&s.backend));
    if s.unwatched_count > 0 {
        r.say(
            "unwatched",
            Finding::Problem {
                what: format!(
                    "{} directories are not watched (the inotify watch limit), e.g. {}",
                    s.unwatched_count,
                    s.unwatched.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ),
                todo: "raise fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=N; persist it in /etc/sysctl.d/); the service picks them up by itself".into(),
            },
        );
    }
    let cap = c.welcome().capacity;
    let size = if cap >= 1 << 20 {
        format!("{} MiB", cap >> 20)
    } else {
        format!("{} KiB", cap >> 10)
    };
    let ring = match c.recv_timeout(1, Duration::from_millis(300)) {
        Ok(b) => Finding::Ok(format!(
            "{size} mapped read-only, seals checked, {} event(s) read",
            b.len()
        )),
        Err(e) => Finding::Problem {
            what: format!("reading the ring: {e}"),
            todo: "restart the service; if it persists, report it with the service's log".into(),
        },
    };
    r.say("ring", ring);
    Some(s)
}

pub(crate) fn run(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let mut r = Report { problems: 0 };
    let path = match cli.socket() {
        Ok(p) => p,
        Err(e) => {
            r.say(
                "socket path",
                Finding::Problem {
                    what: format!("{e:#}"),
                    todo: "pass --socket PATH".into(),
                },
            );
            return Ok(code::UNREACHABLE);
        }
    };
    println!("defaults in force:");
    r.say("socket", Finding::Info(path.display().to_string()));
    r.say(
        "database",
        Finding::Info(
            env_dir("XDG_STATE_HOME", ".local/state")
                .join("firehose/history.db")
                .display()
                .to_string(),
        ),
    );
    r.say(
        "filters",
        Finding::Info(
            env_dir("XDG_CONFIG_HOME", ".config")
                .join("firehose/filters/")
                .display()
                .to_string(),
        ),
    );
    r.say(
        "ring",
        Finding::Info(
            "4 MiB, records up to 64 KiB, lossless budget 3 s, 4 lossless readers".into(),
        ),
    );
    println!("checks:");
    r.say("socket folder", check_folder(&path));
    let (exists, file_finding) = check_socket_file(&path);
    let mut missing = None;
    if exists {
        r.say("socket file", file_finding);
    } else {
        missing = Some(file_finding);
    }
    let opts = ConnectOptions {
        name: "firehose doctor".into(),
        policy: Policy::Lagging,
        ..ConnectOptions::default()
    };
    let mut status = None;
    match Client::<FileEvent>::connect(&path, &opts) {
        Ok(mut c) => {
            r.say(
                "reachable",
                Finding::Ok("connected, service identity checked".into()),
            );
            status = check_service(&mut r, &mut c);
            c.bye();
        }
        Err(e) => match missing {
            Some(f) => r.say("reachable", f),
            None => r.say("reachable", connect_finding(&path, exists, &e)),
        },
    }
    let roots: Vec<PathBuf> = if a.root.is_empty() {
        status
            .map(|s| s.roots.into_iter().map(PathBuf::from).collect())
            .unwrap_or_default()
    } else {
        a.root.clone()
    };
    check_roots(&mut r, &roots);
    if r.problems > 0 {
        println!("{} problem(s) found", r.problems);
        Ok(code::UNREACHABLE)
    } else {
        println!("no problems found");
        Ok(code::OK)
    }
}
