//! A watchdog for tests: if the test has not finished by the deadline, kill the listed
//! processes and abort with a message. Tests use watchdogs, never stopwatches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Kills `pids` and aborts the test process if not disarmed within `limit`.
pub(crate) struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub(crate) fn arm(what: &'static str, limit: Duration, pids: Vec<u32>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let step = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while waited < limit {
                std::thread::sleep(step);
                waited += step;
                if d.load(Ordering::Relaxed) {
                    return;
                }
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::SIGKILL,
                );
            }
            eprintln!("watchdog: {what} did not finish within {limit:?}");
            std::process::abort();
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
