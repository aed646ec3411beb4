//! The service's options (`firehosed [OPTIONS]`) and their defaults, as DESIGN.md sets them:
//! the socket under `$XDG_RUNTIME_DIR/firehose/`, the database at
//! `$XDG_STATE_HOME/firehose/history.db`, filter documents under
//! `$XDG_CONFIG_HOME/firehose/filters/`, a 4 MiB ring.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// `firehosed [OPTIONS]`: run the service.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServiceArgs {
    /// A directory to watch, recursively (repeatable). Filter documents may add more roots.
    #[arg(long = "watch", value_name = "DIR")]
    pub watch: Vec<PathBuf>,
    /// The folder of filter documents (*.toml), reloaded live
    /// [default: $XDG_CONFIG_HOME/firehose/filters, else ~/.config/firehose/filters].
    #[arg(long, value_name = "DIR")]
    pub filters: Option<PathBuf>,
    /// The control socket [default: $XDG_RUNTIME_DIR/firehose/firehose.sock, else
    /// /tmp/firehose-<uid>/firehose.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The history database [default: $XDG_STATE_HOME/firehose/history.db, else
    /// ~/.local/state/firehose/history.db].
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Ring capacity in bytes (a power of two, at least 256 KiB).
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub ring_size: usize,
    /// Another uid that may connect (repeatable; the socket then needs a shared folder).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// A gid whose members may connect (repeatable).
    #[arg(long = "allow-gid", value_name = "GID")]
    pub allow_gid: Vec<u32>,
    /// A uid that may read losslessly, holding the service back within its budget
    /// (repeatable) [default: the service's own uid].
    #[arg(long = "allow-lossless-uid", value_name = "UID")]
    pub allow_lossless_uid: Vec<u32>,
    /// Keep at most this many rows of history (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub max_rows: u64,
    /// Drop history older than this many days (0: no limit).
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub max_age_days: u64,
    /// Keep the database under this many MiB (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub max_db_mib: u64,
    /// Drive the whole pipeline (filter, history, ring) with this many synthetic events per
    /// second instead of (as well as) the file system: for benchmarks and tests.
    #[arg(long, value_name = "RATE")]
    pub synthetic: Option<u64>,
    /// Path bytes of each synthetic event.
    #[arg(long, value_name = "BYTES", default_value_t = 62)]
    pub synthetic_path_len: usize,
    /// How to watch: `fanotify` (one mark per filesystem, no watch limit; needs root),
    /// `inotify` (a watch per directory), or `auto` (fanotify where it can be used).
    #[arg(long, value_enum, value_name = "BACKEND", default_value = "auto")]
    pub backend: crate::watch::BackendChoice,
    /// Log level (error, warn, info, debug, trace); RUST_LOG, if set, wins.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> anyhow::Result<PathBuf> {
    env_dir("HOME").context("HOME is not set (needed for the default paths)")
}

/// `$XDG_CONFIG_HOME/firehose/filters` (else `~/.config/firehose/filters`).
///
/// # Errors
/// If neither variable is set.
pub fn default_filters_dir() -> anyhow::Result<PathBuf> {
    Ok(match env_dir("XDG_CONFIG_HOME") {
        Some(d) => d,
        None => home()?.join(".config"),
    }
    .join("firehose/filters"))
}

/// `$XDG_STATE_HOME/firehose/history.db` (else `~/.local/state/firehose/history.db`).
///
/// # Errors
/// If neither variable is set.
pub fn default_db_path() -> anyhow::Result<PathBuf> {
    Ok(match env_dir("XDG_STATE_HOME") {
        Some(d) => d,
        None => home()?.join(".local/state"),
    }
    .join("firehose/history.db"))
}

/// The options with every default filled in.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Roots from `--watch` (absolute, canonical where they exist).
    pub watch: Vec<PathBuf>,
    /// The filter documents' folder.
    pub filters: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The history database.
    pub db: PathBuf,
    /// Ring capacity.
    pub ring_size: usize,
    /// Extra uids allowed to connect.
    pub allow_uid: Vec<u32>,
    /// Gids allowed to connect.
    pub allow_gid: Vec<u32>,
    /// Uids allowed to read losslessly.
    pub allow_lossless_uid: Vec<u32>,
    /// Retention by rows (None: no limit).
    pub max_rows: Option<u64>,
    /// Retention by age.
    pub max_age: Option<Duration>,
    /// Retention by bytes.
    pub max_bytes: Option<u64>,
    /// Synthetic events per second.
    pub synthetic: Option<u64>,
    /// Path bytes of a synthetic event.
    pub synthetic_path_len: usize,
    /// The watcher's backend.
    pub backend: crate::watch::BackendChoice,
}

impl ServiceArgs {
    /// Fills in the defaults and checks the options.
    ///
    /// # Errors
    /// A missing current directory (relative paths are made absolute against it), a
    /// missing HOME for the defaults, or an invalid ring size.
    pub fn resolve(&self) -> anyhow::Result<ServiceConfig> {
        let cwd = std::env::current_dir().context("the current directory")?;
        let absolute = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                cwd.join(p)
            }
        };
        let watch = self
            .watch
            .iter()
            .map(|p| {
                let abs = absolute(p);
                abs.canonicalize().unwrap_or(abs)
            })
            .collect();
        if !self.ring_size.is_power_of_two() || self.ring_size < (256 << 10) {
            anyhow::bail!(
                "--ring-size {} must be a power of two of at least 262144 bytes",
                self.ring_size
            );
        }
        let mut lossless = self.allow_lossless_uid.clone();
        if lossless.is_empty() {
            lossless.push(nix::unistd::geteuid().as_raw());
        }
        let nonzero = |v: u64| (v > 0).then_some(v);
        Ok(ServiceConfig {
            watch,
            filters: match &self.filters {
                Some(p) => absolute(p),
                None => default_filters_dir()?,
            },
            socket: match &self.socket {
                Some(p) => absolute(p),
                None => firehose_transport::control::place::default_socket_path()?,
            },
            db: match &self.db {
                Some(p) => absolute(p),
                None => default_db_path()?,
            },
            ring_size: self.ring_size,
            allow_uid: self.allow_uid.clone(),
            allow_gid: self.allow_gid.clone(),
            allow_lossless_uid: lossless,
            max_rows: nonzero(self.max_rows),
            max_age: nonzero(self.max_age_days).map(|d| Duration::from_secs(d * 86_400)),
            max_bytes: nonzero(self.max_db_mib).map(|m| m << 20),
            synthetic: self.synthetic.filter(|r| *r > 0),
            synthetic_path_len: self.synthetic_path_len.clamp(8, 4000),
            backend: self.backend,
        })
    }
}
