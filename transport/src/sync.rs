//! The atomics the ring's cursor protocol is built from, swapped for loom's under
//! `--cfg firehose_loom`.
//!
//! Every ordering and fence that the protocol relies on goes through [`ord`] and [`fence`]
//! with a [`Site`] naming it. In production both are `#[inline(always)]` identities. Under
//! loom a test can switch one site off ([`loom_mutant::disable`]) to show that the model
//! fails without it: each fence and each Release/Acquire pair has a test that can fail.

#[cfg(firehose_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(firehose_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// The places in the cursor protocol where an ordering matters. Each is named at both ends
/// of its happens-before edge in the code (`SYNC POINT` comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(dead_code)] // every variant is used, but some only on one side of cfg(loom)
pub(crate) enum Site {
    /// Producer: Release store of the write cursor after a batch's bytes.
    PublishStore = 1,
    /// Reader: Acquire load of the write cursor before reading frames.
    PublishLoad = 2,
    /// Producer: `fence(Release)` between the reserve-cursor store and the data writes.
    ReserveFence = 3,
    /// Reader: `fence(Acquire)` between the bulk copy and the reserve-cursor load.
    CopyFence = 4,
    /// Reader: Release store of its released position (lossless readers).
    ReleaseStore = 5,
    /// Producer: Acquire load of a lossless reader's released position.
    ReleaseLoad = 6,
    /// Reader: `fence(SeqCst)` between setting "sleeping" and re-checking the write cursor.
    SleepReader = 7,
    /// Producer: `fence(SeqCst)` between publishing and checking "sleeping".
    SleepProducer = 8,
}

/// The ordering to use at `site`: `o` itself, unless a loom test disabled the site.
#[inline(always)]
pub(crate) fn ord(site: Site, o: Ordering) -> Ordering {
    #[cfg(firehose_loom)]
    if loom_mutant::is_disabled(site) {
        return Ordering::Relaxed;
    }
    let _ = site;
    o
}

/// A fence of ordering `o` at `site`, unless a loom test disabled the site.
#[inline(always)]
pub(crate) fn fence(site: Site, o: Ordering) {
    #[cfg(firehose_loom)]
    if loom_mutant::is_disabled(site) {
        return;
    }
    let _ = site;
    #[cfg(firehose_loom)]
    loom::sync::atomic::fence(o);
    #[cfg(not(firehose_loom))]
    std::sync::atomic::fence(o);
}

/// Switching one protocol site off, to show that a loom model fails without it.
#[cfg(firehose_loom)]
pub(crate) mod loom_mutant {
    use super::Site;
    // Test configuration, not part of the modelled protocol. Thread-local: libtest runs
    // tests on parallel OS threads, and loom runs a model's threads as coroutines on the
    // test's own OS thread, so each test (and only it) sees its own mutant.
    std::thread_local! {
        static DISABLED: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
    }

    pub(crate) fn is_disabled(site: Site) -> bool {
        DISABLED.with(|d| d.get() == site as u8)
    }

    /// Runs `f` with the ordering or fence at `site` weakened to nothing.
    pub(crate) fn with_disabled<R>(site: Site, f: impl FnOnce() -> R) -> R {
        DISABLED.with(|d| d.set(site as u8));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        DISABLED.with(|d| d.set(0));
        match r {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// One step of a wait loop: spin, then yield, then sleep briefly (a producer held back by a
/// lossless reader polls its cursor; readers cannot wake the producer).
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(firehose_loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(firehose_loom))]
    {
        *spins = spins.saturating_add(1);
        if *spins < 64 {
            std::hint::spin_loop();
        } else if *spins < 128 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
}

/// One step of a wait loop while the other side is known to be making progress: spin, then
/// yield, never sleep.
pub(crate) fn backoff_active(spins: &mut u32) {
    #[cfg(firehose_loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(firehose_loom))]
    {
        *spins = spins.saturating_add(1);
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
