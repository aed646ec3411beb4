//! The wake channel between the producer and one sleeping reader: a socket pair in
//! production (see `sys::pipe` for why not a pipe or an eventfd), a
//! loom `Notify` under loom (same semantics: a wake that arrives before the wait is kept).

#[cfg(not(firehose_loom))]
mod imp {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

    /// The producer's end.
    #[derive(Debug)]
    pub(crate) struct WakeTx(Option<OwnedFd>);
    /// The reader's end.
    #[derive(Debug)]
    pub(crate) struct WakeRx(Option<OwnedFd>);

    /// Why a wait ended.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Woken {
        /// A wake byte arrived (or the wait timed out): check the ring.
        Maybe,
        /// The producer's end is closed: it exited or dropped this reader.
        Hangup,
    }

    impl WakeTx {
        pub(crate) fn wake(&self) {
            if let Some(fd) = &self.0 {
                crate::sys::pipe::wake(fd.as_fd());
            }
        }

        /// Closes the producer's end: the reader sees a hang-up.
        pub(crate) fn close(&mut self) {
            self.0 = None;
        }
    }

    impl WakeRx {
        pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
            self.0.as_ref().map(|f| f.as_fd())
        }

        /// The reader's end is blocking: a wait without a deadline is then one blocking
        /// `recv`, which both sleeps and drains (one syscall per wake). Every other read of
        /// it is `MSG_DONTWAIT`, so it never blocks whatever readiness a caller believes.
        pub(crate) fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
            crate::sys::pipe::set_blocking(&fd)?;
            Ok(WakeRx(Some(fd)))
        }

        /// Reads away pending wake bytes without ever blocking (so a stale "readable" from
        /// a reactor costs nothing). Returns true if the producer's end is closed.
        pub(crate) fn clear(&self) -> bool {
            match &self.0 {
                Some(fd) => crate::sys::pipe::drain(fd.as_fd()) == Some(0),
                None => false,
            }
        }

        /// Waits for a wake byte, up to `timeout_ms` (-1: forever). Without a pipe (Miri),
        /// yields instead.
        pub(crate) fn wait(&self, timeout_ms: i32) -> std::io::Result<Woken> {
            let Some(fd) = &self.0 else {
                std::thread::yield_now();
                return Ok(Woken::Maybe);
            };
            if timeout_ms < 0 {
                // Sleep and drain in one syscall.
                return Ok(match crate::sys::pipe::read_once(fd.as_fd()) {
                    Some(0) => Woken::Hangup,
                    _ => Woken::Maybe,
                });
            }
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut pfd, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let revents = pfd[0].revents().unwrap_or(PollFlags::empty());
            if revents.contains(PollFlags::POLLIN) {
                // A socket is also readable at end of file: zero bytes is a hang-up.
                return Ok(match crate::sys::pipe::drain(fd.as_fd()) {
                    Some(0) => Woken::Hangup,
                    _ => Woken::Maybe,
                });
            }
            if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                return Ok(Woken::Hangup);
            }
            Ok(Woken::Maybe)
        }
    }

    /// A connected pair; no pipe under Miri (it cannot poll).
    pub(crate) fn pair() -> std::io::Result<(WakeTx, WakeRx)> {
        if cfg!(miri) {
            return Ok((WakeTx(None), WakeRx(None)));
        }
        let (r, w) = crate::sys::pipe::wake_pipe()?;
        crate::sys::pipe::set_blocking(&r)?;
        Ok((WakeTx(Some(w)), WakeRx(Some(r))))
    }

    /// A pair for a reader in another process: the read end is handed out as an fd.
    pub(crate) fn pair_fds() -> std::io::Result<(WakeTx, OwnedFd)> {
        let (r, w) = crate::sys::pipe::wake_pipe()?;
        Ok((WakeTx(Some(w)), r))
    }
}

#[cfg(firehose_loom)]
mod imp {
    use loom::sync::{Arc, Notify};

    #[derive(Debug)]
    pub(crate) struct WakeTx(Arc<Notify>);
    #[derive(Debug)]
    pub(crate) struct WakeRx(Arc<Notify>);

    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Woken {
        Maybe,
        #[allow(dead_code)]
        Hangup,
    }

    impl WakeTx {
        pub(crate) fn wake(&self) {
            self.0.notify();
        }
        pub(crate) fn close(&mut self) {}
    }

    impl WakeRx {
        pub(crate) fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
            None
        }
        pub(crate) fn clear(&self) -> bool {
            false
        }
        pub(crate) fn wait(&self, _timeout_ms: i32) -> std::io::Result<Woken> {
            self.0.wait();
            Ok(Woken::Maybe)
        }
    }

    pub(crate) fn pair() -> std::io::Result<(WakeTx, WakeRx)> {
        let n = Arc::new(Notify::new());
        Ok((WakeTx(n.clone()), WakeRx(n)))
    }
}

pub(crate) use imp::*;
