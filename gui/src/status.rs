//! The status panel's source: a thread that asks the service for its [`Status`] every few
//! seconds on a connection of its own, so the UI never waits on the socket.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firehose_consumer::{Client, ConnectOptions, FileEvent, Status};

/// How often the status is asked for (an idle monitor is woken this rarely by it).
const EVERY: Duration = Duration::from_secs(10);

/// The name the status connection gives itself.
pub const NAME: &str = "firehose-gui status";

/// The latest answer: the status and when it came, or why there is none.
pub type Latest = Arc<Mutex<Result<(Status, Instant), String>>>;

/// Starts the thread; `repaint` is called after an answer that changed more than the
/// uptime (an idle service does not make the window redraw).
pub fn start(socket: PathBuf, repaint: impl Fn() + Send + 'static) -> std::io::Result<Latest> {
    let latest: Latest = Arc::new(Mutex::new(Err("asking the service…".into())));
    let out = latest.clone();
    std::thread::Builder::new()
        .name("firehose-gui-status".into())
        .spawn(move || {
            let opts = ConnectOptions {
                name: NAME.into(),
                ..ConnectOptions::default()
            };
            let mut client: Option<Client<FileEvent>> = None;
            loop {
                if client.is_none() {
                    client = Client::connect(&socket, &opts).ok();
                }
                let answer = match client.as_mut().map(Client::status) {
                    Some(Ok(s)) => Ok((s, Instant::now())),
                    Some(Err(e)) => {
                        client = None;
                        Err(e.to_string())
                    }
                    None => Err(format!("cannot reach the service at {}", socket.display())),
                };
                let changed = {
                    let mut cur = out.lock().unwrap_or_else(|e| e.into_inner());
                    let same = match (&*cur, &answer) {
                        (Ok((a, _)), Ok((b, _))) => {
                            Status {
                                uptime_ms: b.uptime_ms,
                                ..a.clone()
                            } == *b
                        }
                        (Err(a), Err(b)) => a == b,
                        _ => false,
                    };
                    *cur = answer;
                    !same
                };
                if changed {
                    repaint();
                }
                // Only this thread and the UI hold the status: once the UI is gone, stop.
                if Arc::strong_count(&out) == 1 {
                    return;
                }
                std::thread::sleep(EVERY);
            }
        })?;
    Ok(latest)
}
