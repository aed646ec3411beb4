//! `firehose export nats --install`: a systemd user unit that runs the export with the
//! options given, after the service, restarted whenever it ends.

use std::path::PathBuf;

use anyhow::Context;

use super::export::Args;
use crate::cli::{code, Cli};

/// The unit's file name.
pub(crate) const UNIT: &str = "firehose-export-nats.service";

/// Where user units go: `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn unit_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("systemd/user"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_CONFIG_HOME nor HOME is set: no place for a user unit")?;
    Ok(PathBuf::from(home).join(".config/systemd/user"))
}

/// systemd's quoting for one ExecStart word.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=,@+".contains(&b))
    {
        return word.to_string();
    }
    let mut s = String::from("\"");
    for c in word.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            _ => s.push(c),
        }
    }
    s.push('"');
    s
}

/// The unit's text for this executable and these options.
pub(crate) fn unit_text(exe: &str, cli: &Cli, a: &Args) -> String {
    let mut words = vec![exe.to_string()];
    if let Some(s) = &cli.socket {
        words.push("--socket".into());
        words.push(s.to_string_lossy().into_owned());
    }
    words.extend([
        "export".into(),
        "nats".into(),
        "--url".into(),
        a.server.url.clone(),
    ]);
    words.extend(["--stream".into(), a.server.stream.clone()]);
    if let Some(h) = &a.host {
        words.extend(["--host".into(), h.clone()]);
    }
    words.extend(["--in-flight".into(), a.in_flight.to_string()]);
    let exec: Vec<String> = words.iter().map(|w| quote(w)).collect();
    format!(
        "# Written by `firehose export nats --install`.\n\
         [Unit]\n\
         Description=Firehose: export file events to NATS JetStream ({url}, stream {stream})\n\
         After=firehosed.service network-online.target\n\
         Wants=firehosed.service\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         Restart=always\n\
         RestartSec=1\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        url = a.server.url,
        stream = a.server.stream,
        exec = exec.join(" ")
    )
}

pub(crate) fn install(cli: &Cli, a: &Args) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let exe = exe
        .to_str()
        .context("this program's path is not UTF-8; systemd cannot run it")?;
    let dir = unit_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(UNIT);
    let text = unit_text(exe, cli, a);
    let tmp = dir.join(format!(".{UNIT}.tmp"));
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("start it now and at every login: systemctl --user daemon-reload && systemctl --user enable --now {UNIT}");
    Ok(code::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("50%$x\"\\"), "\"50%%$$x\\\"\\\\\"");
    }
}
