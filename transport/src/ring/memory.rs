//! Where a segment's and a cursor page's bytes live: a sealed memfd mapping (production,
//! cross-process) or the heap (single-process tests, Miri and loom). The ring's protocol code
//! sees only `&Header`, `&[AtomicU64]` and `&CursorPage`, the same for both.

use std::fmt;
use std::os::fd::BorrowedFd;
#[cfg(not(firehose_loom))]
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::SegmentError;
use super::layout::{CursorPage, Header, LAYOUT_VERSION, LOSSLESS_SLOTS, MAGIC};
#[cfg(not(firehose_loom))]
use super::layout::{CURSOR_PAGE_SIZE, HEADER_SIZE};
use crate::sync::{AtomicU64, Ordering};

/// The smallest data area a segment may have.
pub const MIN_CAPACITY: usize = 4096;

/// The identity of a cursor page, as the lossless table of a segment lists it: a memfd
/// page's `(st_dev, st_ino)` (unique while the page exists, and the same in every process
/// that holds it), or `(0, n)` for a heap page, `n` unique in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PageKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl PageKey {
    fn heap() -> Self {
        // A plain std atomic even under loom: a counter for unique names, not part of the
        // protocol.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        PageKey {
            dev: 0,
            ino: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    #[cfg(not(firehose_loom))]
    fn of_fd(fd: &OwnedFd) -> Result<Self, SegmentError> {
        let st = nix::sys::stat::fstat(fd).map_err(|e| SegmentError::Map(e.into()))?;
        Ok(PageKey {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// What a new segment starts as.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentParams {
    pub(crate) capacity: usize,
    pub(crate) epoch: u64,
    pub(crate) base_pos: u64,
    pub(crate) first_seq: u64,
    pub(crate) max_record: usize,
}

enum Backing {
    /// `Box::into_raw` of the header and of the data words; freed in `Drop`.
    Heap,
    #[cfg(not(firehose_loom))]
    Memfd { fd: OwnedFd, _map: memmap2::MmapRaw },
}

struct SegmentInner {
    header: NonNull<Header>,
    data: NonNull<AtomicU64>,
    words: usize,
    backing: Backing,
}

// SAFETY: the pointers refer to memory owned by `backing` (a heap allocation or a mapping)
// that lives as long as this value; through them only atomics are accessed (`&Header`,
// `&[AtomicU64]`), which are Sync, so sharing and sending between threads is sound.
unsafe impl Send for SegmentInner {}
// SAFETY: as above.
unsafe impl Sync for SegmentInner {}

impl Drop for SegmentInner {
    fn drop(&mut self) {
        if let Backing::Heap = self.backing {
            // SAFETY: for heap backing both pointers came from `Box::into_raw` in
            // `Segment::new_heap` and are freed only here, once.
            drop(unsafe { Box::from_raw(self.header.as_ptr()) });
            let slice = std::ptr::slice_from_raw_parts_mut(self.data.as_ptr(), self.words);
            // SAFETY: as above; `words` is the length the boxed slice had.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

/// One segment of the ring: a header and a data area, shared by the producer and readers.
/// Cloning is cheap (reference-counted).
#[derive(Clone)]
pub struct Segment {
    inner: Arc<SegmentInner>,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("epoch", &self.epoch())
            .field("capacity", &self.capacity())
            .field("base_pos", &self.base_pos())
            .field("memfd", &self.fd().is_some())
            .finish()
    }
}

impl Segment {
    fn init(&self, p: SegmentParams) {
        let id = &self.header().id.0;
        // Relaxed: nobody else can see this segment yet; it reaches readers through an fd
        // passed over a socket (a syscall) or through `Arc` clones, both of which order it.
        id.magic.store(MAGIC, Ordering::Relaxed);
        id.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        id.capacity.store(p.capacity as u64, Ordering::Relaxed);
        id.epoch.store(p.epoch, Ordering::Relaxed);
        id.base_pos.store(p.base_pos, Ordering::Relaxed);
        id.first_seq.store(p.first_seq, Ordering::Relaxed);
        id.producer_pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        id.max_record.store(p.max_record as u64, Ordering::Relaxed);
        self.header().write.0.store(p.base_pos, Ordering::Relaxed);
        self.header().reserve.0.store(p.base_pos, Ordering::Relaxed);
    }

    fn check_capacity(capacity: usize) -> Result<(), SegmentError> {
        if capacity < MIN_CAPACITY || !capacity.is_power_of_two() {
            return Err(SegmentError::Capacity {
                capacity,
                min: MIN_CAPACITY,
            });
        }
        Ok(())
    }

    /// A segment on the heap, for single-process use (tests, Miri, loom).
    pub(crate) fn new_heap(p: SegmentParams) -> Result<Self, SegmentError> {
        if !cfg!(firehose_loom) {
            Self::check_capacity(p.capacity)?;
        }
        let words = p.capacity / 8;
        let data: Box<[AtomicU64]> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let data = NonNull::new(Box::into_raw(data) as *mut AtomicU64).expect("Box is non-null");
        let header = NonNull::new(Box::into_raw(Header::new_boxed())).expect("Box is non-null");
        let seg = Segment {
            inner: Arc::new(SegmentInner {
                header,
                data,
                words,
                backing: Backing::Heap,
            }),
        };
        seg.init(p);
        Ok(seg)
    }

    /// A segment in a new sealed memfd (`F_SEAL_SHRINK | GROW | FUTURE_WRITE | SEAL`).
    #[cfg(not(firehose_loom))]
    pub(crate) fn new_memfd(p: SegmentParams) -> Result<Self, SegmentError> {
        Self::check_capacity(p.capacity)?;
        let size = HEADER_SIZE + p.capacity;
        let (fd, map) =
            crate::sys::memfd::create_sealed(c"firehose-ring", size, crate::sys::memfd::RING_SEALS)
                .map_err(|e| SegmentError::Create { size, source: e })?;
        let seg = Self::from_map(fd, map, p.capacity);
        seg.init(p);
        Ok(seg)
    }

    #[cfg(not(firehose_loom))]
    fn from_map(fd: OwnedFd, map: memmap2::MmapRaw, capacity: usize) -> Self {
        let base = map.as_mut_ptr();
        // SAFETY: `map` is at least HEADER_SIZE + capacity bytes long (checked by both
        // callers), so base + HEADER_SIZE stays inside it.
        let data = unsafe { base.add(HEADER_SIZE) };
        Segment {
            inner: Arc::new(SegmentInner {
                // Page-aligned mapping: aligned for Header (128) and AtomicU64 (8).
                header: NonNull::new(base.cast::<Header>()).expect("mmap is non-null"),
                data: NonNull::new(data.cast::<AtomicU64>()).expect("mmap is non-null"),
                words: capacity / 8,
                backing: Backing::Memfd { fd, _map: map },
            }),
        }
    }

    /// Maps a segment received from the producer, read-only, after checking that the fd is
    /// sealed against writes and resizing, that its size matches the header, and that the
    /// header is a ring of this layout version.
    ///
    /// # Errors
    /// [`SegmentError::Seals`], [`SegmentError::Size`], [`SegmentError::Magic`],
    /// [`SegmentError::Version`], [`SegmentError::Capacity`], or [`SegmentError::Map`].
    #[cfg(not(firehose_loom))]
    pub fn open(fd: OwnedFd) -> Result<Self, SegmentError> {
        use crate::sys::memfd;
        let have = memfd::seals(&fd).map_err(SegmentError::Map)?;
        if !have.contains(memfd::RING_SEALS) {
            return Err(SegmentError::Seals {
                have: have.bits() as u32,
                missing: (memfd::RING_SEALS & !have).bits() as u32,
            });
        }
        let size = memfd::size(&fd).map_err(SegmentError::Map)?;
        if size < (HEADER_SIZE + MIN_CAPACITY) as u64 || size > isize::MAX as u64 {
            return Err(SegmentError::Size {
                size,
                expected: None,
            });
        }
        let map = memfd::map_read_only(&fd, size as usize).map_err(SegmentError::Map)?;
        // SAFETY: the mapping is `size` >= HEADER_SIZE bytes, page-aligned, and the size is
        // sealed, so the header can be viewed as atomics for the life of the mapping.
        let header = unsafe { &*map.as_ptr().cast::<Header>() };
        let id = &header.id.0;
        let magic = id.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(SegmentError::Magic { found: magic });
        }
        let version = id.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(SegmentError::Version {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let capacity = id.capacity.load(Ordering::Relaxed);
        if capacity.checked_add(HEADER_SIZE as u64) != Some(size) {
            return Err(SegmentError::Size {
                size,
                expected: capacity.checked_add(HEADER_SIZE as u64),
            });
        }
        Self::check_capacity(capacity as usize)?;
        Ok(Self::from_map(fd, map, capacity as usize))
    }

    /// The memfd behind this segment (to pass to readers), if it is one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner.backing {
            Backing::Heap => None,
            #[cfg(not(firehose_loom))]
            Backing::Memfd { fd, .. } => Some(fd.as_fd()),
        }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `header` points at a live, aligned Header (see SegmentInner) made only of
        // atomics, so a shared reference is valid for as long as `self` is.
        unsafe { self.inner.header.as_ref() }
    }

    #[inline]
    pub(crate) fn data(&self) -> &[AtomicU64] {
        // SAFETY: `data` points at `words` live, aligned AtomicU64s owned by the backing.
        unsafe { std::slice::from_raw_parts(self.inner.data.as_ptr(), self.inner.words) }
    }

    /// The start of the data area as bytes, for lossless readers that borrow frames in place.
    #[inline]
    pub(crate) fn data_ptr(&self) -> *const u8 {
        self.inner.data.as_ptr().cast::<u8>().cast_const()
    }

    /// Bytes in the data area.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.inner.words * 8
    }

    /// The segment number.
    pub fn epoch(&self) -> u64 {
        // Relaxed: immutable after creation, ordered by how the segment was received.
        self.header().id.0.epoch.load(Ordering::Relaxed)
    }

    /// Position of the segment's first byte.
    pub fn base_pos(&self) -> u64 {
        // Relaxed: immutable after creation.
        self.header().id.0.base_pos.load(Ordering::Relaxed)
    }

    /// Seq of the segment's first frame.
    pub fn first_seq(&self) -> u64 {
        // Relaxed: immutable after creation.
        self.header().id.0.first_seq.load(Ordering::Relaxed)
    }

    /// The pid of the process that created the segment.
    pub fn producer_pid(&self) -> u32 {
        // Relaxed: immutable after creation.
        self.header().id.0.producer_pid.load(Ordering::Relaxed) as u32
    }

    /// Largest payload the producer writes.
    pub fn max_record(&self) -> usize {
        // Relaxed: immutable after creation.
        self.header().id.0.max_record.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn same_as(&self, other: &Segment) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Lists `key` in this segment's lossless table (producer only; before the reader it is
    /// for can see its page, though other readers may map the segment already: the
    /// Release/Acquire pair with `lists_lossless` covers them). Returns false if the table
    /// is full.
    pub(crate) fn add_lossless(&self, key: PageKey) -> bool {
        for slot in &self.header().lossless.0 {
            // Relaxed: only the producer writes the table, from one thread.
            if slot.dev.load(Ordering::Relaxed) == 0 && slot.ino.load(Ordering::Relaxed) == 0 {
                slot.dev.store(key.dev, Ordering::Relaxed);
                // Release: pairs with the Acquire load in `lists_lossless`. (The entry also
                // reaches a reader in another process only after the fds are sent, a
                // syscall later.)
                slot.ino.store(key.ino, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Whether this segment's producer honours the cursor page `key` as a lossless reader's.
    pub(crate) fn lists_lossless(&self, key: PageKey) -> bool {
        if key.dev == 0 && key.ino == 0 {
            return false;
        }
        self.header().lossless.0.iter().any(|slot| {
            // Acquire: pairs with the Release store in `add_lossless`.
            slot.ino.load(Ordering::Acquire) == key.ino
                && slot.dev.load(Ordering::Relaxed) == key.dev
        })
    }
}

const _: () = assert!(LOSSLESS_SLOTS > 0);

enum CursorBacking {
    Heap,
    #[cfg(not(firehose_loom))]
    Memfd {
        /// The producer's fd (to hand out); `None` on the reader's side, which drops its fd
        /// once mapped (see `CursorMem::open`).
        fd: Option<OwnedFd>,
        _map: memmap2::MmapRaw,
    },
}

struct CursorInner {
    page: NonNull<CursorPage>,
    key: PageKey,
    backing: CursorBacking,
}

// SAFETY: `page` points at memory owned by `backing`, accessed only as atomics.
unsafe impl Send for CursorInner {}
// SAFETY: as above.
unsafe impl Sync for CursorInner {}

impl Drop for CursorInner {
    fn drop(&mut self) {
        if let CursorBacking::Heap = self.backing {
            // SAFETY: heap pages come from `Box::into_raw` in `CursorMem::new_heap` and are
            // freed only here.
            drop(unsafe { Box::from_raw(self.page.as_ptr()) });
        }
    }
}

/// One reader's cursor page: its released position and its sleeping flag. The reader
/// writes it; the producer treats every value in it as hostile and clamps it.
#[derive(Clone)]
pub(crate) struct CursorMem {
    inner: Arc<CursorInner>,
}

impl fmt::Debug for CursorMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CursorMem").finish_non_exhaustive()
    }
}

impl CursorMem {
    pub(crate) fn new_heap() -> Self {
        let page = NonNull::new(Box::into_raw(CursorPage::new_boxed())).expect("Box is non-null");
        CursorMem {
            inner: Arc::new(CursorInner {
                page,
                key: PageKey::heap(),
                backing: CursorBacking::Heap,
            }),
        }
    }

    /// A new cursor page in a memfd sealed `SHRINK | GROW | SEAL`.
    #[cfg(not(firehose_loom))]
    pub(crate) fn new_memfd() -> Result<Self, SegmentError> {
        let (fd, map) = crate::sys::memfd::create_sealed(
            c"firehose-cursor",
            CURSOR_PAGE_SIZE,
            crate::sys::memfd::CURSOR_SEALS,
        )
        .map_err(|e| SegmentError::Create {
            size: CURSOR_PAGE_SIZE,
            source: e,
        })?;
        Self::from_map(fd, map)
    }

    #[cfg(not(firehose_loom))]
    fn from_map(fd: OwnedFd, map: memmap2::MmapRaw) -> Result<Self, SegmentError> {
        let page = NonNull::new(map.as_mut_ptr().cast::<CursorPage>()).expect("mmap is non-null");
        let key = PageKey::of_fd(&fd)?;
        Ok(CursorMem {
            inner: Arc::new(CursorInner {
                page,
                key,
                backing: CursorBacking::Memfd {
                    fd: Some(fd),
                    _map: map,
                },
            }),
        })
    }

    /// Maps a cursor page received from the producer, after checking seals and size.
    #[cfg(not(firehose_loom))]
    pub(crate) fn open(fd: OwnedFd) -> Result<Self, SegmentError> {
        use crate::sys::memfd;
        let have = memfd::seals(&fd).map_err(SegmentError::Map)?;
        if !have.contains(memfd::CURSOR_SEALS) {
            return Err(SegmentError::Seals {
                have: have.bits() as u32,
                missing: (memfd::CURSOR_SEALS & !have).bits() as u32,
            });
        }
        let size = memfd::size(&fd).map_err(SegmentError::Map)?;
        if size != CURSOR_PAGE_SIZE as u64 {
            return Err(SegmentError::Size {
                size,
                expected: Some(CURSOR_PAGE_SIZE as u64),
            });
        }
        let map = memfd::map_shared(&fd, CURSOR_PAGE_SIZE).map_err(SegmentError::Map)?;
        let mut page = Self::from_map(fd, map)?;
        // The reader keeps the mapping, not the fd: with no fd left open, there is no
        // `/proc/self/fd/N` through which safe code could rewrite the page behind the
        // reader's back (its released position, its claim). Writing it through other
        // filesystem paths (`/proc/self/mem`, `map_files`) is outside what the crate
        // can stop, like any write to one's own memory through `/proc`.
        if let Some(inner) = Arc::get_mut(&mut page.inner) {
            if let CursorBacking::Memfd { fd, .. } = &mut inner.backing {
                *fd = None;
            }
        }
        Ok(page)
    }

    /// The page's identity in lossless tables.
    pub(crate) fn key(&self) -> PageKey {
        self.inner.key
    }

    /// Claims the page for the one reader that will use it: true the first time it is
    /// called on a page, in any process, and never again.
    pub(crate) fn claim(&self) -> bool {
        // AcqRel: the claim orders nothing else; a plain RMW decides the one winner.
        self.page()
            .claimed
            .0
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    pub(crate) fn page(&self) -> &CursorPage {
        // SAFETY: `page` points at a live, page-aligned CursorPage made only of atomics.
        unsafe { self.inner.page.as_ref() }
    }

    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner.backing {
            CursorBacking::Heap => None,
            #[cfg(not(firehose_loom))]
            CursorBacking::Memfd { fd, .. } => fd.as_ref().map(|f| f.as_fd()),
        }
    }
}
