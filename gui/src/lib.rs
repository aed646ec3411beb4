//! `firehose-gui`: a desktop monitor of the service's file events, on the consumer library
//! (`firehose-consumer`) and egui. The follower drains the ring on its own thread into a
//! bounded inbox and asks for a repaint when records come; each frame takes the inbox
//! once, so the UI thread never waits on the ring or the socket, redraws at the display's
//! pace under load and not at all when idle.

pub mod app;
pub mod pace;
pub mod profile;
pub mod relay;

/// The monitor's state without the toolkit, shared with the terminal viewer.
pub use firehose_consumer::monitor as model;

use std::path::PathBuf;
use std::time::Duration;

use firehose_consumer::{Options, Policy, Start};

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The service could not be reached or refused the reader.
    #[error(transparent)]
    Follow(#[from] firehose_consumer::FollowError),
    /// A thread of the monitor (the follower's, or the repaint relay's) could not start.
    #[error("starting a thread of the monitor (the follower's or the repaint relay's): {0}")]
    Thread(std::io::Error),
}

/// How often the status panel asks the service.
const STATUS_EVERY: Duration = Duration::from_secs(10);

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

/// Connects and starts the follower's thread, which also pages history and polls the
/// status on the same connection (one socket, one ring reader); `repaint(delay)` is called
/// when there is something new to draw, `delay` from now (paced to one frame after the
/// last frame began, see [`pace`]).
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
    let follower = opts.connect()?;
    // The follower's thread never waits for the UI's lock to ask for a frame.
    let repaint = relay::relay(repaint).map_err(ConnectError::Thread)?;
    let pacer = pace::Pacer::default();
    let live = follower
        .into_background(cfg.rows, {
            let (repaint, pacer) = (repaint.clone(), pacer.clone());
            move || {
                if let Some(delay) = pacer.ask() {
                    repaint(delay);
                }
            }
        })
        .map_err(ConnectError::Thread)?;
    // The status panel; an idle monitor is woken this rarely by it, and redraws only when
    // the status changed in more than the uptime.
    live.poll_status(STATUS_EVERY);
    Ok(app::Monitor::new(live, cfg.rows, pacer))
}
