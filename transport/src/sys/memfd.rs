//! Sealed memfds: the memory of ring segments and cursor pages.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

/// Seals on a ring segment: its size is fixed, nobody can ever map it writable again (the
/// producer's mapping made before the seal keeps working), and the seals themselves are
/// frozen.
pub(crate) const RING_SEALS: SealFlag = SealFlag::from_bits_truncate(
    SealFlag::F_SEAL_SHRINK.bits()
        | SealFlag::F_SEAL_GROW.bits()
        | SealFlag::F_SEAL_FUTURE_WRITE.bits()
        | SealFlag::F_SEAL_SEAL.bits(),
);

/// Seals on a cursor page: fixed size, and frozen seals (without `F_SEAL_SEAL` a reader
/// could add a write seal itself and freeze the page under the producer).
pub(crate) const CURSOR_SEALS: SealFlag = SealFlag::from_bits_truncate(
    SealFlag::F_SEAL_SHRINK.bits() | SealFlag::F_SEAL_GROW.bits() | SealFlag::F_SEAL_SEAL.bits(),
);

/// Creates a memfd of `size` bytes that allows sealing, maps it shared and writable, then
/// adds `seals`. The mapping stays writable: seals only refuse *future* write mappings.
pub(crate) fn create_sealed(
    name: &CStr,
    size: usize,
    seals: SealFlag,
) -> io::Result<(OwnedFd, MmapRaw)> {
    let fd = memfd_create(name, MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, size as libc::off_t)?;
    let map = MmapOptions::new().len(size).map_raw(&fd)?;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals))?;
    Ok((fd, map))
}

/// The seals an fd carries.
pub(crate) fn seals(fd: impl AsFd) -> io::Result<SealFlag> {
    let bits = fcntl(fd, FcntlArg::F_GET_SEALS)?;
    Ok(SealFlag::from_bits_truncate(bits))
}

/// The size of the file behind an fd.
pub(crate) fn size(fd: impl AsFd) -> io::Result<u64> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(st.st_size as u64)
}

/// Maps `len` bytes of `fd` shared and read-only.
pub(crate) fn map_read_only(fd: &OwnedFd, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw_read_only(fd)
}

/// Maps `len` bytes of `fd` shared and writable.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(fd)
}
