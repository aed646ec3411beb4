//! The few OS facts the cases need: pinning to a core, a clock both processes share, and
//! voluntary context switches.

use anyhow::{Context, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::resource::{getrusage, UsageWho};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::Pid;

/// The cores the producer (or pinger) and the reader (or echo) run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores {
    /// The producer side: this process.
    pub producer: usize,
    /// The reader side: the child process.
    pub reader: usize,
}

impl Cores {
    /// The first two cores this process may run on (the same one twice on a single core).
    ///
    /// # Errors
    /// If the affinity mask cannot be read or is empty.
    pub fn detect() -> Result<Self> {
        let set = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
        let mut allowed = (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false));
        let producer = allowed.next().context("no CPU in the affinity mask")?;
        let reader = allowed.next().unwrap_or(producer);
        Ok(Cores { producer, reader })
    }
}

/// Pins the calling thread to `core`.
///
/// # Errors
/// If the core does not exist or is not allowed.
pub fn pin_to_core(core: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(core).with_context(|| format!("core {core}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).with_context(|| format!("pinning to core {core}"))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process, so a producer's start
/// and a reader's end can be subtracted.
pub fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always there");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// CPU time of the calling thread so far (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Voluntary context switches of this process so far (`getrusage(RUSAGE_SELF).ru_nvcsw`).
///
/// # Errors
/// If getrusage fails.
pub fn voluntary_switches() -> Result<u64> {
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    Ok(u.voluntary_context_switches() as u64)
}

/// Voluntary context switches of another process so far, summed over its threads
/// (`voluntary_ctxt_switches` in `/proc/PID/status`).
///
/// # Errors
/// If the file cannot be read or has no such line.
pub fn proc_voluntary_switches(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .with_context(|| format!("no voluntary_ctxt_switches in {path}"))?
        .trim()
        .parse()
        .with_context(|| format!("voluntary_ctxt_switches in {path}"))
}

/// CPU time of this whole process so far, user plus system (`getrusage(RUSAGE_SELF)`), ns.
///
/// # Errors
/// If getrusage fails.
pub fn process_cpu_ns() -> Result<u64> {
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let tv =
        |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000_000 + t.tv_usec() as u64 * 1000;
    Ok(tv(u.user_time()) + tv(u.system_time()))
}

/// Sleeps until CLOCK_MONOTONIC reads `ns` (an absolute `clock_nanosleep`, so a tick loop
/// does not drift).
pub fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec that outlives the call; the remaining-time
        // pointer may be null with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}
