//! `firehosed install --user|--system` and `firehosed uninstall`: a systemd unit that runs
//! the service with the options given, written (or replaced) idempotently, and enabled where
//! a service manager runs. Where none runs (a container, CI), the unit is written and the
//! command says how to enable it.
//!
//! `--user` runs the service as the user, with inotify. `--system` runs it as root with the
//! fanotify backend (whole filesystems, no watch limit) and only the two capabilities that
//! takes ([`SYSTEM_CAPABILITIES`]); it serves the uid it is installed for (`--for-uid`, by
//! default the user who ran `sudo`) and nobody else, at [`SYSTEM_SOCKET`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::config::ServiceArgs;
use crate::watch::BackendChoice;
pub use firehose_transport::control::place::SYSTEM_SOCKET;

/// The unit's file name.
pub const UNIT: &str = "firehosed.service";

/// Where system units live.
pub const SYSTEM_UNIT_DIR: &str = "/etc/systemd/system";

/// The system service's database.
pub const SYSTEM_DB: &str = "/var/lib/firehose/history.db";

/// All the system service may hold: fanotify's filesystem marks need `CAP_SYS_ADMIN`, and
/// resolving its directory handles (`open_by_handle_at`) `CAP_DAC_READ_SEARCH`, which also
/// lets it read every watched tree and filter document. No `CAP_DAC_OVERRIDE`: it writes
/// only its own state and runtime folders.
pub const SYSTEM_CAPABILITIES: [&str; 2] = ["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"];

/// A user unit or a system one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `systemctl --user`: runs as the user.
    User,
    /// `systemctl`: runs as root with [`SYSTEM_CAPABILITIES`].
    System,
}

/// Where user units live: `$XDG_CONFIG_HOME/systemd/user` (else `~/.config/systemd/user`).
///
/// # Errors
/// If neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn default_unit_dir() -> anyhow::Result<PathBuf> {
    if let Some(c) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(c).join("systemd/user"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// What the unit runs, and what it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// The `firehosed` executable (absolute).
    pub exe: PathBuf,
    /// Its options, every path absolute and every default spelled out: the unit runs what
    /// this shell would have run, whatever directory or XDG variables systemd starts it with.
    pub args: Vec<String>,
    /// Folders the service writes (the database's and the socket's): `ReadWritePaths=`
    /// under `ProtectSystem=strict`.
    pub writable: Vec<PathBuf>,
    /// Whether `PrivateTmp=yes` is safe: nothing the service uses lies under /tmp or
    /// /var/tmp (a private /tmp would hide the socket from clients, and watch an empty tree).
    pub private_tmp: bool,
    /// User or system unit.
    pub scope: Scope,
}

impl UnitSpec {
    /// The unit for `exe` with these options, resolved here (relative paths against the
    /// current directory, defaults from this shell's XDG variables).
    ///
    /// # Errors
    /// If the options do not resolve (see [`ServiceArgs::resolve`]).
    pub fn for_service(exe: &Path, args: &ServiceArgs) -> anyhow::Result<UnitSpec> {
        let cfg = args.resolve()?;
        let mut a = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        for w in &cfg.watch {
            push("--watch", path(w));
        }
        push("--filters", path(&cfg.filters));
        push("--socket", path(&cfg.socket));
        push("--db", path(&cfg.db));
        push("--ring-size", cfg.ring_size.to_string());
        for u in &cfg.allow_uid {
            push("--allow-uid", u.to_string());
        }
        for g in &cfg.allow_gid {
            push("--allow-gid", g.to_string());
        }
        for u in &args.allow_lossless_uid {
            push("--allow-lossless-uid", u.to_string());
        }
        push("--max-rows", args.max_rows.to_string());
        push("--max-age-days", args.max_age_days.to_string());
        push("--max-db-mib", args.max_db_mib.to_string());
        if let Some(rate) = cfg.synthetic {
            push("--synthetic", rate.to_string());
            push("--synthetic-path-len", cfg.synthetic_path_len.to_string());
        }
        push(
            "--backend",
            match cfg.backend {
                BackendChoice::Auto => "auto",
                BackendChoice::Inotify => "inotify",
                BackendChoice::Fanotify => "fanotify",
            }
            .into(),
        );
        push("--log-level", args.log_level.clone());
        let mut writable: Vec<PathBuf> = [&cfg.db, &cfg.socket]
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        writable.dedup();
        let in_tmp = |p: &Path| p.starts_with("/tmp") || p.starts_with("/var/tmp");
        let private_tmp = !cfg
            .watch
            .iter()
            .chain([&cfg.filters, &cfg.socket, &cfg.db])
            .any(|p| in_tmp(p));
        Ok(UnitSpec {
            exe: exe.to_path_buf(),
            args: a,
            writable,
            private_tmp,
            scope: Scope::User,
        })
    }

    /// The system unit serving `uid`: fanotify, the socket at [`SYSTEM_SOCKET`], the
    /// database at [`SYSTEM_DB`] (unless given), `uid` the only other uid allowed to connect
    /// (and to read losslessly), and the filter documents of `uid`'s home (`home`) unless
    /// given.
    ///
    /// # Errors
    /// If the options do not resolve, or no filters folder is given and `uid` has no home.
    pub fn for_system(
        exe: &Path,
        args: &ServiceArgs,
        uid: u32,
        home: Option<&Path>,
    ) -> anyhow::Result<UnitSpec> {
        let mut args = args.clone();
        args.backend = BackendChoice::Fanotify;
        args.socket = Some(PathBuf::from(SYSTEM_SOCKET));
        if args.db.is_none() {
            args.db = Some(PathBuf::from(SYSTEM_DB));
        }
        if args.filters.is_none() {
            let Some(home) = home else {
                bail!(
                    "uid {uid} has no home folder in the user database: give --filters DIR \
                     (the folder of filter documents the system service reads)"
                );
            };
            args.filters = Some(home.join(".config/firehose/filters"));
        }
        if !args.allow_uid.contains(&uid) {
            args.allow_uid.push(uid);
        }
        if !args.allow_lossless_uid.contains(&uid) {
            args.allow_lossless_uid.push(uid);
        }
        let mut spec = Self::for_service(exe, &args)?;
        spec.scope = Scope::System;
        spec.private_tmp = false; // roots may lie anywhere, /tmp included
        Ok(spec)
    }
}

/// A unit file holds one directive per line: a newline (or another control character) in
/// an argument would end `ExecStart=` and start a directive of its own.
fn check_arg(a: &str) -> anyhow::Result<()> {
    if a.chars().any(char::is_control) {
        bail!(
            "{a:?} holds a newline or another control character, which a systemd unit cannot \
             hold safely; use a path without one"
        );
    }
    Ok(())
}

/// The unit text for `spec`: `Type=notify` (the service says `READY=1` once it serves),
/// restarted on failure, and hardened (`NoNewPrivileges`, `ProtectSystem=strict` with the
/// state and socket folders writable, `PrivateTmp` where safe).
///
/// # Errors
/// If a path or option holds a control character.
pub fn unit_text(spec: &UnitSpec) -> anyhow::Result<String> {
    let exe = spec.exe.to_string_lossy();
    check_arg(&exe)?;
    let mut cmd = quote(&exe);
    for a in &spec.args {
        check_arg(a)?;
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    let mut rw = String::new();
    for w in &spec.writable {
        let w = w.to_string_lossy();
        check_arg(&w)?;
        // `-`: a folder that does not exist yet is no error (the service creates it).
        rw.push_str(&format!("ReadWritePaths=-{}\n", quote(&w)));
    }
    if spec.scope == Scope::System {
        return Ok(system_unit_text(&cmd, &rw));
    }
    let private_tmp = if spec.private_tmp {
        "PrivateTmp=yes\n"
    } else {
        "# PrivateTmp is off: the socket, database or a root lies under /tmp.\n"
    };
    Ok(format!(
        "# Written by `firehosed install --user`; `firehosed uninstall` removes it.\n\
         [Unit]\n\
         Description=Firehose: file-system events to shared-memory readers\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={cmd}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         {rw}\
         {private_tmp}\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    ))
}

/// The system unit: root with only [`SYSTEM_CAPABILITIES`], the state and runtime folders
/// made by systemd, the rest of the system read-only.
fn system_unit_text(cmd: &str, rw: &str) -> String {
    let caps = SYSTEM_CAPABILITIES.join(" ");
    format!(
        "# Written by `firehosed install --system`; `firehosed uninstall --system` removes it.\n\
         [Unit]\n\
         Description=Firehose (whole filesystems, fanotify): file-system events to shared-memory readers\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={cmd}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         # fanotify's filesystem marks need CAP_SYS_ADMIN, resolving its directory handles\n\
         # CAP_DAC_READ_SEARCH; nothing else.\n\
         CapabilityBoundingSet={caps}\n\
         AmbientCapabilities=\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         StateDirectory=firehose\n\
         RuntimeDirectory=firehose\n\
         RuntimeDirectoryMode=0755\n\
         {rw}\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Quotes an argument for systemd's `ExecStart=` (double quotes, with `\\`, `"`, `$` and `%`
/// escaped), only when it needs it.
fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.,:=+@".contains(c));
    if plain {
        return a.to_string();
    }
    let mut q = String::from("\"");
    for c in a.chars() {
        match c {
            '\\' | '"' => {
                q.push('\\');
                q.push(c);
            }
            '$' => q.push_str("$$"),
            '%' => q.push_str("%%"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// What `install` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    /// Written (new or replacing an older registration) and enabled and started.
    Enabled { replaced: bool },
    /// Already there, unchanged.
    Unchanged,
    /// Written, but no user service manager runs here: the message says how to enable it.
    WrittenOnly { replaced: bool },
}

/// `systemctl`'s scope flag.
fn scope_args(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::User => &["--user"],
        Scope::System => &[],
    }
}

/// Whether a systemd manager of `scope` answers here.
fn manager_runs(scope: Scope) -> bool {
    if std::env::var_os("FIREHOSE_NO_SERVICE_MANAGER").is_some() {
        return false;
    }
    Command::new("systemctl")
        .args(scope_args(scope))
        .arg("is-system-running")
        .output()
        .is_ok_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            ["running", "degraded", "starting"]
                .iter()
                .any(|w| s.trim() == *w)
        })
}

fn systemctl(scope: Scope, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args(scope_args(scope))
        .args(args)
        .output()
        .context("running systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {}{} failed: {}",
            scope_args(scope).join(" "),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the unit into `dir` (replacing an older one) and enables it if a user manager
/// runs. Idempotent.
///
/// # Errors
/// If an argument holds a control character, the folder or file cannot be written, or
/// systemctl fails.
pub fn install(dir: &Path, spec: &UnitSpec) -> anyhow::Result<Installed> {
    let path = dir.join(UNIT);
    let text = unit_text(spec)?;
    let old = std::fs::read_to_string(&path).ok();
    let scope = spec.scope;
    let manager = manager_runs(scope);
    if old.as_deref() == Some(text.as_str()) {
        if manager {
            systemctl(scope, &["enable", "--now", UNIT])?;
        }
        return Ok(Installed::Unchanged);
    }
    let replaced = old.is_some();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{UNIT}.tmp"));
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    if !manager {
        return Ok(Installed::WrittenOnly { replaced });
    }
    systemctl(scope, &["daemon-reload"])?;
    systemctl(scope, &["enable", UNIT])?;
    // Replacing a running registration: restart it with the new options.
    systemctl(scope, &[if replaced { "restart" } else { "start" }, UNIT])?;
    Ok(Installed::Enabled { replaced })
}

/// Stops, disables and removes the unit. Idempotent: returns false if there was none.
///
/// # Errors
/// If the file cannot be removed.
pub fn uninstall(dir: &Path, scope: Scope) -> anyhow::Result<bool> {
    let path = dir.join(UNIT);
    let manager = manager_runs(scope);
    if manager {
        // Best effort: it may not be loaded.
        let _ = systemctl(scope, &["disable", "--now", UNIT]);
    }
    let existed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    };
    if manager && existed {
        let _ = systemctl(scope, &["daemon-reload"]);
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str]) -> UnitSpec {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            service: ServiceArgs,
        }
        let cli = Cli::parse_from(std::iter::once("firehosed").chain(args.iter().copied()));
        UnitSpec::for_service(Path::new("/opt/fire hose/firehosed"), &cli.service).unwrap()
    }

    #[test]
    fn install_is_idempotent_and_replaces_an_older_registration() {
        std::env::set_var("FIREHOSE_NO_SERVICE_MANAGER", "1");
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        let a = spec(&["--watch", "/srv/data", "--db", "/srv/state/h.db"]);
        assert_eq!(
            install(&units, &a).unwrap(),
            Installed::WrittenOnly { replaced: false }
        );
        let text = std::fs::read_to_string(units.join(UNIT)).unwrap();
        assert!(
            text.contains("ExecStart=\"/opt/fire hose/firehosed\" --watch /srv/data "),
            "{text}"
        );
        assert_eq!(install(&units, &a).unwrap(), Installed::Unchanged);
        let b = spec(&["--watch", "/srv/other 100%", "--db", "/srv/state/h.db"]);
        assert_eq!(
            install(&units, &b).unwrap(),
            Installed::WrittenOnly { replaced: true }
        );
        let text = std::fs::read_to_string(units.join(UNIT)).unwrap();
        assert!(text.contains("\"/srv/other 100%%\""), "{text}");
        assert!(
            !text.contains("/srv/data"),
            "the older registration is gone"
        );
        assert_eq!(
            std::fs::read_dir(&units).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        assert!(uninstall(&units, Scope::User).unwrap());
        assert!(
            !uninstall(&units, Scope::User).unwrap(),
            "a second uninstall is a no-op"
        );
        assert!(!units.join(UNIT).exists());
    }

    #[test]
    fn the_unit_runs_absolute_paths_with_every_default_spelled_out_and_is_hardened() {
        let cwd = std::env::current_dir().unwrap();
        let s = spec(&[
            "--watch",
            "rel/dir",
            "--db",
            "state/h.db",
            "--socket",
            "/run/u/fh/s.sock",
        ]);
        let text = unit_text(&s).unwrap();
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert!(
            exec.contains(&format!("--watch {}", cwd.join("rel/dir").display())),
            "{exec}"
        );
        assert!(
            exec.contains(&format!("--db {}", cwd.join("state/h.db").display())),
            "{exec}"
        );
        for opt in [
            "--filters /",
            "--socket /run/u/fh/s.sock",
            "--ring-size ",
            "--max-rows ",
            "--log-level info",
        ] {
            assert!(exec.contains(opt), "{opt} in {exec}");
        }
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=-/run/u/fh",
            &format!("ReadWritePaths=-{}", cwd.join("state").display()),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        let private = !cwd.starts_with("/tmp") && !cwd.starts_with("/var/tmp");
        assert_eq!(
            text.lines().any(|l| l == "PrivateTmp=yes"),
            private,
            "{text}"
        );
        // Under /tmp, a private /tmp would hide the socket: left off.
        let t = unit_text(&spec(&["--socket", "/tmp/fh/s.sock", "--db", "/srv/h.db"])).unwrap();
        assert!(!t.lines().any(|l| l == "PrivateTmp=yes"), "{t}");
    }

    #[test]
    fn the_system_unit_holds_two_capabilities_and_serves_one_uid() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            service: ServiceArgs,
        }
        let cli = Cli::parse_from(["firehosed", "--watch", "/home/ann"]);
        let exe = Path::new("/usr/bin/firehosed");
        let s =
            UnitSpec::for_system(exe, &cli.service, 1000, Some(Path::new("/home/ann"))).unwrap();
        let text = unit_text(&s).unwrap();
        let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        for opt in [
            "--watch /home/ann",
            "--filters /home/ann/.config/firehose/filters",
            "--socket /run/firehose/firehose.sock",
            "--db /var/lib/firehose/history.db",
            "--allow-uid 1000",
            "--allow-lossless-uid 1000",
            "--backend fanotify",
        ] {
            assert!(exec.contains(opt), "{opt} in {exec}");
        }
        for line in [
            "CapabilityBoundingSet=CAP_SYS_ADMIN CAP_DAC_READ_SEARCH",
            "AmbientCapabilities=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "ReadWritePaths=-/var/lib/firehose",
            "ReadWritePaths=-/run/firehose",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(!text.contains("User="), "runs as root: {text}");
        let e = UnitSpec::for_system(exe, &cli.service, 65533, None).unwrap_err();
        assert!(e.to_string().contains("give --filters"), "{e}");
    }

    #[test]
    fn a_newline_in_an_argument_cannot_inject_a_directive() {
        let s = spec(&[
            "--watch",
            "/srv/a\nExecStartPre=/bin/evil",
            "--db",
            "/srv/h.db",
        ]);
        let e = unit_text(&s).unwrap_err().to_string();
        assert!(e.contains("newline"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        assert!(install(dir.path(), &s).is_err());
        assert!(!dir.path().join(UNIT).exists(), "nothing written");
    }
}
