//! A watchdog for one run of a case: if the run overruns its limit, every child process of
//! the bench is killed (the peers, whose blocked reads and writes then end with an error),
//! and the run is reported `hung` instead of hanging the suite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Armed for one run; [`disarm`](Self::disarm) says whether it fired.
#[derive(Debug)]
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching: after `limit`, kills this process's children.
    pub fn arm(limit: Duration) -> Self {
        let (stop, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                f.store(true, Ordering::SeqCst);
                // Again and again, until disarmed: a case may spawn its next process after
                // the first one died.
                loop {
                    kill_children();
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => return,
                    }
                }
            }
        });
        Watchdog {
            stop,
            fired,
            thread: Some(thread),
        }
    }

    /// Stops watching; true if the run overran and its children were killed.
    pub fn disarm(mut self) -> bool {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

/// Kills (SIGKILL) every process whose parent is this one.
fn kill_children() {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may hold spaces): state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overrunning_run_has_its_children_killed_and_is_reported() {
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let dog = Watchdog::arm(Duration::from_millis(100));
        // The "case" blocks on its child, as a case blocks on a hung peer.
        let status = child.wait().expect("wait");
        assert!(!status.success(), "killed, not finished");
        assert!(dog.disarm(), "reported as hung");
    }

    #[test]
    fn a_run_within_its_limit_is_not_reported() {
        let dog = Watchdog::arm(Duration::from_secs(60));
        assert!(!dog.disarm());
    }
}
