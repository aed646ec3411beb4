//! `firehose-gui`: a desktop monitor of the service's file events, on the consumer library
//! (`firehose-consumer`) and egui. The follower drains the ring on its own thread into a
//! bounded inbox and asks for a repaint when records come; each frame takes the inbox
//! once, so the UI thread never waits on the ring or the socket, redraws at the display's
//! pace under load and not at all when idle.

pub mod app;
mod history;
pub mod model;
pub mod pace;
pub mod status;

use std::path::PathBuf;

use firehose_consumer::pages::HistoryPager;
use firehose_consumer::{Options, Policy, Start};

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The default socket path cannot be worked out.
    #[error("working out the default socket path: {0}")]
    Place(#[from] firehose_consumer::PlaceError),
    /// The service could not be reached or refused the reader.
    #[error(transparent)]
    Follow(#[from] firehose_consumer::FollowError),
    /// A thread (the follower's, the history pager's, the status poller's) could not start.
    #[error("starting the {what} thread: {source}")]
    Thread {
        /// Which.
        what: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// How the monitor connects.
#[derive(Clone, Debug)]
pub struct Config {
    /// The control socket (`None`: the default place).
    pub socket: Option<PathBuf>,
    /// Most rows held in memory.
    pub rows: usize,
    /// Read losslessly.
    pub lossless: bool,
    /// Start at this seq (older rows come from history) instead of the newest.
    pub from_seq: Option<u64>,
}

/// Connects and starts the follower and status threads; `repaint(delay)` is called when
/// there is something new to draw, `delay` from now (new records are paced to one frame
/// after the last frame began, see [`pace`]; history and status answers are drawn at once).
///
/// # Errors
/// If the service cannot be reached or a thread cannot start.
pub fn connect(
    cfg: &Config,
    repaint: impl Fn(std::time::Duration) + Send + Sync + Clone + 'static,
) -> Result<app::Monitor, ConnectError> {
    let mut opts = Options::new()
        .name("firehose-gui")
        .policy(if cfg.lossless {
            Policy::Lossless
        } else {
            Policy::Lagging
        })
        .start(cfg.from_seq.map_or(Start::Newest, Start::Seq))
        .backfill(true)
        .reconnect(true);
    if let Some(s) = &cfg.socket {
        opts = opts.socket(s.clone());
    }
    let socket = match &cfg.socket {
        Some(s) => s.clone(),
        None => firehose_consumer::client_socket_path()?,
    };
    let follower = opts.connect()?;
    let pacer = pace::Pacer::default();
    let thread = |what| move |source| ConnectError::Thread { what, source };
    let live = follower
        .into_background(cfg.rows, {
            let (repaint, pacer) = (repaint.clone(), pacer.clone());
            move || {
                if let Some(delay) = pacer.ask() {
                    repaint(delay);
                }
            }
        })
        .map_err(thread("follower"))?;
    let now = {
        let repaint = repaint.clone();
        move || repaint(std::time::Duration::ZERO)
    };
    let history = HistoryPager::start(socket.clone(), "firehose-gui (history)", now.clone())
        .map_err(thread("history pager"))?;
    let status = status::start(socket, now).map_err(thread("status"))?;
    Ok(app::Monitor::new(
        live,
        Some(history),
        Some(status),
        cfg.rows,
        pacer,
    ))
}
