//! `firehosed install --user` and `firehosed uninstall`: a systemd user unit that runs the
//! service with the options given, written (or replaced) idempotently, and enabled where a
//! user service manager runs. Where none runs (a container, CI), the unit is written and the
//! command says how to enable it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The unit's file name.
pub const UNIT: &str = "firehosed.service";

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

/// The unit text for running `exe` with `args`.
pub fn unit_text(exe: &Path, args: &[String]) -> String {
    let mut cmd = quote(&exe.to_string_lossy());
    for a in args {
        cmd.push(' ');
        cmd.push_str(&quote(a));
    }
    format!(
        "# Written by `firehosed install --user`; `firehosed uninstall` removes it.\n\
         [Unit]\n\
         Description=Firehose: file-system events to shared-memory readers\n\
         Documentation=man:firehosed(1)\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={cmd}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
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

/// Whether a systemd user manager answers here.
fn manager_runs() -> bool {
    if std::env::var_os("FIREHOSE_NO_SERVICE_MANAGER").is_some() {
        return false;
    }
    Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .output()
        .is_ok_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            ["running", "degraded", "starting"]
                .iter()
                .any(|w| s.trim() == *w)
        })
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .context("running systemctl --user")?;
    if !out.status.success() {
        bail!(
            "systemctl --user {} failed: {}",
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
/// If the folder or file cannot be written, or systemctl fails.
pub fn install(dir: &Path, exe: &Path, args: &[String]) -> anyhow::Result<Installed> {
    let path = dir.join(UNIT);
    let text = unit_text(exe, args);
    let old = std::fs::read_to_string(&path).ok();
    let manager = manager_runs();
    if old.as_deref() == Some(text.as_str()) {
        if manager {
            systemctl(&["enable", "--now", UNIT])?;
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
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", UNIT])?;
    // Replacing a running registration: restart it with the new options.
    systemctl(&[if replaced { "restart" } else { "start" }, UNIT])?;
    Ok(Installed::Enabled { replaced })
}

/// Stops, disables and removes the unit. Idempotent: returns false if there was none.
///
/// # Errors
/// If the file cannot be removed.
pub fn uninstall(dir: &Path) -> anyhow::Result<bool> {
    let path = dir.join(UNIT);
    let manager = manager_runs();
    if manager {
        // Best effort: it may not be loaded.
        let _ = systemctl(&["disable", "--now", UNIT]);
    }
    let existed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    };
    if manager && existed {
        let _ = systemctl(&["daemon-reload"]);
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_replaces_an_older_registration() {
        std::env::set_var("FIREHOSE_NO_SERVICE_MANAGER", "1");
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("units");
        let exe = Path::new("/opt/fire hose/firehosed");
        let a = vec!["--watch".to_string(), "/srv/data".to_string()];
        assert_eq!(
            install(&units, exe, &a).unwrap(),
            Installed::WrittenOnly { replaced: false }
        );
        let text = std::fs::read_to_string(units.join(UNIT)).unwrap();
        assert!(
            text.contains("ExecStart=\"/opt/fire hose/firehosed\" --watch /srv/data"),
            "{text}"
        );
        assert_eq!(install(&units, exe, &a).unwrap(), Installed::Unchanged);
        let b = vec!["--watch".to_string(), "/srv/other 100%".to_string()];
        assert_eq!(
            install(&units, exe, &b).unwrap(),
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
        assert!(uninstall(&units).unwrap());
        assert!(!uninstall(&units).unwrap(), "a second uninstall is a no-op");
        assert!(!units.join(UNIT).exists());
    }
}
