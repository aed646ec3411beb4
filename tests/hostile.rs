//! What a hostile or broken reader can do to the fds it receives, and what the producer
//! does about a reader that misbehaves. Every write path into the ring is refused by the
//! kernel (seals); nothing a reader does to its cursor page or wake pipe disturbs anyone.

// These tests are raw syscalls in a row, each with the same contract (valid fds and
// buffers we own), so one SAFETY comment covers a block of them.
#![allow(clippy::multiple_unsafe_ops_per_block)]

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use firehose_tests::payload;
use firehose_transport::ring::{
    Event, Policy, Producer, ReaderFds, RingConfig, Segment, SegmentError,
};
use firehose_transport::Reader;
use nix::errno::Errno;

use crate::watchdog::Watchdog;

fn producer() -> Producer<Vec<u8>> {
    Producer::new(RingConfig {
        capacity: 1 << 16,
        max_record: 4096,
        ..RingConfig::default()
    })
    .unwrap()
}

/// Reopens `fd` through /proc with O_RDWR, as a reader could.
fn reopen_rw(fd: &OwnedFd) -> OwnedFd {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    // SAFETY: `path` is a valid C string; open has no other preconditions.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    assert!(
        raw >= 0,
        "reopening O_RDWR succeeds (only the seals stop writes): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: open just returned this fd to us.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn errno_of(r: libc::c_int) -> Errno {
    assert!(r < 0, "the kernel must refuse this");
    Errno::last()
}

#[test]
fn a_reader_cannot_write_resize_or_punch_the_ring() {
    let mut p = producer();
    let fds = p.attach_remote(Policy::Lagging).unwrap();
    let (id, policy, start) = (fds.id(), fds.policy(), (fds.start_pos(), fds.start_seq()));
    let (ring, cursor, wake) = fds.into_fds();
    let rw = reopen_rw(&ring);
    let fd = rw.as_raw_fd();
    let buf = [0xAAu8; 64];
    // SAFETY: plain syscalls on an fd we own, with valid buffers.
    unsafe {
        assert_eq!(
            errno_of(libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 4096) as i32),
            Errno::EPERM
        );
        assert_eq!(errno_of(libc::ftruncate(fd, 0)), Errno::EPERM);
        assert_eq!(errno_of(libc::ftruncate(fd, 1 << 30)), Errno::EPERM);
        assert_eq!(
            errno_of(libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                8192
            )),
            Errno::EPERM
        );
        let m = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_eq!(m, libc::MAP_FAILED);
        assert_eq!(Errno::last(), Errno::EPERM);
        // A read-only mapping cannot be made writable.
        let m = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(m, libc::MAP_FAILED);
        assert_eq!(
            errno_of(libc::mprotect(m, 8192, libc::PROT_READ | libc::PROT_WRITE)),
            Errno::EACCES
        );
        libc::munmap(m, 8192);
    }
    // The seals cannot be removed or loosened, and the producer goes on.
    // SAFETY: F_GET_SEALS on an fd we own.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    assert!(seals & libc::F_SEAL_SEAL != 0);
    let fds = ReaderFds::from_received(id, policy, start, ring, cursor, wake);
    let mut r: Reader<Vec<u8>> = Reader::open(fds).unwrap();
    p.publish(&payload(1)).unwrap();
    let b = r.try_recv(10).unwrap();
    let Some(Event::Record(rec)) = b.iter().next() else {
        panic!("expected a record")
    };
    assert_eq!(rec.access().unwrap().as_slice(), payload(1).as_slice());
}

#[test]
fn a_reader_cannot_resize_its_cursor_page_or_freeze_it() {
    let mut p = producer();
    let fds = p.attach_remote(Policy::Lossless).unwrap();
    let (id, policy, start) = (fds.id(), fds.policy(), (fds.start_pos(), fds.start_seq()));
    let (ring, cursor, wake) = fds.into_fds();
    let fd = cursor.as_raw_fd();
    // SAFETY: plain syscalls on an fd we own.
    unsafe {
        assert_eq!(errno_of(libc::ftruncate(fd, 0)), Errno::EPERM);
        assert_eq!(errno_of(libc::ftruncate(fd, 1 << 20)), Errno::EPERM);
        assert_eq!(
            errno_of(libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_FUTURE_WRITE
            )),
            Errno::EPERM
        );
    }
    let fds = ReaderFds::from_received(id, policy, start, ring, cursor, wake);
    let mut r: Reader<Vec<u8>> = Reader::open(fds).unwrap();
    p.publish(&payload(1)).unwrap();
    assert_eq!(r.try_recv(10).unwrap().len(), 1);
}

fn memfd(size: usize, seals: libc::c_int, header: &[u8]) -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create(c"hostile", nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING)
            .unwrap();
    nix::unistd::ftruncate(&fd, size as i64).unwrap();
    nix::sys::uio::pwrite(&fd, header, 0).unwrap();
    if seals != 0 {
        // SAFETY: F_ADD_SEALS on an fd we own.
        assert!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0);
    }
    fd
}

const ALL_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE | libc::F_SEAL_SEAL;

#[test]
fn a_client_refuses_a_ring_fd_that_is_unsealed_short_or_not_a_ring() {
    // Unsealed: someone could truncate it under us (SIGBUS) or write into it.
    let e = Segment::open(memfd(8192, 0, b"FIREHOSE")).unwrap_err();
    assert!(matches!(e, SegmentError::Seals { .. }), "{e}");
    // Sealed but too short to hold a header and a minimal data area.
    let e = Segment::open(memfd(4096, ALL_SEALS, b"FIREHOSE")).unwrap_err();
    assert!(matches!(e, SegmentError::Size { .. }), "{e}");
    // Sealed and sized but not a ring.
    let e = Segment::open(memfd(8192, ALL_SEALS, b"NOTARING")).unwrap_err();
    assert!(matches!(e, SegmentError::Magic { .. }), "{e}");
    // A ring of another layout version.
    let mut hdr = b"FIREHOSE".to_vec();
    hdr.extend_from_slice(&99u64.to_ne_bytes());
    let e = Segment::open(memfd(8192, ALL_SEALS, &hdr)).unwrap_err();
    assert!(matches!(e, SegmentError::Version { found: 99, .. }), "{e}");
    // A header whose capacity disagrees with the file size.
    hdr = b"FIREHOSE".to_vec();
    hdr.extend_from_slice(&firehose_transport::ring::layout::LAYOUT_VERSION.to_ne_bytes());
    hdr.extend_from_slice(&(1u64 << 20).to_ne_bytes());
    let e = Segment::open(memfd(8192, ALL_SEALS, &hdr)).unwrap_err();
    assert!(matches!(e, SegmentError::Size { .. }), "{e}");
}

#[test]
fn a_client_refuses_an_unsealed_cursor_page() {
    let mut p = producer();
    let real = p.attach_remote(Policy::Lagging).unwrap();
    let (id, policy, start) = (
        real.id(),
        real.policy(),
        (real.start_pos(), real.start_seq()),
    );
    let (ring, _cursor, wake) = real.into_fds();
    let fds = ReaderFds::from_received(id, policy, start, ring, memfd(4096, 0, &[0]), wake);
    let e = Reader::<Vec<u8>>::open(fds).unwrap_err();
    assert!(matches!(e, SegmentError::Seals { .. }), "{e}");
}

/// A reader that keeps its sleeping flag raised and never drains its wake pipe: the pipe
/// fills, the producer's writes get EAGAIN, and it carries on at full speed.
#[test]
fn a_reader_that_never_drains_its_wake_fd_does_not_block_the_producer() {
    let mut p = producer();
    let fds = p.attach_remote(Policy::Lagging).unwrap();
    let (id, policy, start) = (fds.id(), fds.policy(), (fds.start_pos(), fds.start_seq()));
    let (ring, cursor_fd, wake_fd) = fds.into_fds();
    let wake = wake_fd.try_clone().unwrap();
    let cursor = cursor_fd.try_clone().unwrap();
    let _keep = Reader::<Vec<u8>>::open(ReaderFds::from_received(
        id, policy, start, ring, cursor_fd, wake_fd,
    ))
    .unwrap();
    // Map the cursor page ourselves and hold the sleeping flag up (offset 128: its own line).
    // SAFETY: mapping 4096 bytes of a 4096-byte memfd we hold, shared and writable (its seals
    // allow writes).
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            cursor.as_raw_fd(),
            0,
        )
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: offset 128 is inside the page and 8-aligned; the producer accesses it atomically.
    let flag = unsafe {
        &*(page
            .cast::<u8>()
            .add(128)
            .cast::<std::sync::atomic::AtomicU64>())
    };
    let _dog = Watchdog::arm(
        "the undrained-wake-fd test",
        Duration::from_secs(60),
        vec![],
    );
    for i in 0..200_000u64 {
        flag.store(1, std::sync::atomic::Ordering::Relaxed);
        p.publish(&payload(i + 1)).unwrap();
    }
    // The pipe is full (64 KiB of wake bytes at most), and nothing blocked. (The reader's
    // end is blocking; count without blocking.)
    // SAFETY: F_SETFL on an fd we own.
    let r = unsafe { libc::fcntl(wake.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(r, 0);
    let mut n = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok(k) = nix::unistd::read(wake.as_fd(), &mut buf) {
        if k == 0 {
            break;
        }
        n += k;
    }
    assert!(n > 0 && n <= 1 << 20, "wake bytes pending: {n}");
    // SAFETY: unmapping what we mapped above.
    unsafe { libc::munmap(page, 4096) };
}
