//! Bulk copies into and out of the data area: the producer's commit and the lagging reader's
//! copy.
//!
//! The portable path is a loop of Relaxed `AtomicU64` stores or loads, which Miri and loom
//! check. On x86_64 (outside Miri and loom) the 64-byte-aligned-length middle of a copy goes
//! through an `asm!` loop of 16-byte SSE2 moves instead: this VM's Zen 1 retires one store
//! per cycle whatever its width, so 8-byte atomic stores capped the producer at ~27 GB/s
//! while memcpy reaches ~60 GB/s (measured by the bench: 88% of the producer's time at 4 KiB
//! was this loop).
//!
//! Why the asm path keeps the protocol's guarantees:
//! - it is opaque to the compiler (no `nomem`), so it is not reordered across the reserve
//!   fence before it or the write cursor's Release store after it, and the compiler cannot
//!   assume anything about the bytes it moves;
//! - on x86_64 every 8-byte-aligned 8 bytes of a 16-byte SSE move is read or written
//!   atomically (an aligned quadword access), so at the hardware level it is the same
//!   sequence of word accesses the portable path makes, and x86's store order (TSO) keeps
//!   the stores in program order before the cursor store;
//! - a lagging reader never trusts copied bytes it has not checked against the reserve
//!   cursor, and a lossless reader's bytes are not written while it reads them.

use crate::sync::{AtomicU64, Ordering};

/// Stores `src` into `dst`, as Relaxed word stores. The lengths must match exactly
/// (`src.len() == 8 * dst.len()`), checked in every build: the fast path's bounds come from
/// both slices, so a mismatch can never write past `dst`.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub(crate) fn store(dst: &[AtomicU64], src: &[u8]) {
    assert_eq!(dst.len() * 8, src.len(), "bulk store lengths differ");
    let done = fast::store(dst, src);
    words_store(&dst[done / 8..], &src[done..]);
}

/// The portable path of [`store`]: one Relaxed store per word.
#[inline]
fn words_store(dst: &[AtomicU64], src: &[u8]) {
    for (d, s) in dst.iter().zip(src.chunks_exact(8)) {
        // Relaxed: the data words are published by the write cursor's Release store, and
        // a lagging reader detects overwrites through the reserve cursor, not through them.
        d.store(
            u64::from_ne_bytes(s.try_into().expect("chunks of 8")),
            Ordering::Relaxed,
        );
    }
}

/// Loads `src` into `dst`, as Relaxed word loads. The lengths must match exactly, checked
/// in every build.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub(crate) fn load(dst: &mut [u64], src: &[AtomicU64]) {
    assert_eq!(dst.len(), src.len(), "bulk load lengths differ");
    let done = fast::load(dst, src);
    words_load(&mut dst[done / 8..], &src[done / 8..]);
}

/// The portable path of [`load`]: one Relaxed load per word.
#[inline]
fn words_load(dst: &mut [u64], src: &[AtomicU64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        // Relaxed: the copy is checked against the reserve cursor after fence(Acquire).
        *d = s.load(Ordering::Relaxed);
    }
}

#[cfg(all(target_arch = "x86_64", not(miri), not(firehose_loom)))]
mod fast {
    use std::arch::asm;

    use crate::sync::AtomicU64;

    /// Copies the longest 64-byte-multiple prefix that both slices hold; returns its
    /// length in bytes.
    #[inline]
    pub(super) fn store(dst: &[AtomicU64], src: &[u8]) -> usize {
        let n = src.len().min(dst.len() * 8) & !63;
        if n == 0 {
            return 0;
        }
        // SAFETY: `n` is at most both lengths, so `dst` covers `n` bytes of atomics
        // (interior mutability makes writing through a pointer derived from `&[AtomicU64]`
        // allowed) and `src` `n` readable bytes; the ranges do not overlap (staging is
        // private memory); `dst` is 8-byte aligned (atomics). See the module docs for why
        // these moves count as the word stores of the portable path.
        unsafe { copy64(dst.as_ptr().cast::<u8>().cast_mut(), src.as_ptr(), n) };
        n
    }

    /// Copies the longest 64-byte-multiple prefix; returns its length in bytes.
    #[inline]
    pub(super) fn load(dst: &mut [u64], src: &[AtomicU64]) -> usize {
        let n = (dst.len().min(src.len()) * 8) & !63;
        if n == 0 {
            return 0;
        }
        // SAFETY: `n` is at most both lengths in bytes: `dst` is `n` writable bytes we own,
        // `src` `n` readable bytes of atomics, 8-byte aligned; the ranges do not overlap (the
        // copy buffer is private). See the module docs.
        unsafe { copy64(dst.as_mut_ptr().cast::<u8>(), src.as_ptr().cast::<u8>(), n) };
        n
    }

    /// Copies `n` bytes (a non-zero multiple of 64) with 16-byte SSE2 moves.
    ///
    /// # Safety
    /// `dst` must be valid for `n` bytes of writes and `src` for `n` bytes of reads, not
    /// overlapping. `movdqu` needs no alignment, so memory safety asks none; but the side
    /// that is ring memory (`dst` of a store, `src` of a load) must be 8-byte aligned for
    /// the moves to count as the atomic word accesses of the portable path (the staging
    /// side of a store, a record's bytes, may have any alignment).
    #[inline]
    unsafe fn copy64(dst: *mut u8, src: *const u8, n: usize) {
        debug_assert!(n > 0 && n.is_multiple_of(64));
        // SAFETY: the caller's contract; SSE2 is part of the x86_64 baseline. The loop runs
        // n / 64 times, reading [src, src + n) and writing [dst, dst + n).
        unsafe {
            asm!(
                "2:",
                "movdqu {a}, xmmword ptr [{s}]",
                "movdqu {b}, xmmword ptr [{s} + 16]",
                "movdqu {c}, xmmword ptr [{s} + 32]",
                "movdqu {d}, xmmword ptr [{s} + 48]",
                "movdqu xmmword ptr [{t}], {a}",
                "movdqu xmmword ptr [{t} + 16], {b}",
                "movdqu xmmword ptr [{t} + 32], {c}",
                "movdqu xmmword ptr [{t} + 48], {d}",
                "add {s}, 64",
                "add {t}, 64",
                "sub {n}, 64",
                "jnz 2b",
                s = inout(reg) src => _,
                t = inout(reg) dst => _,
                n = inout(reg) n => _,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                d = out(xmm_reg) _,
                options(nostack),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", not(miri), not(firehose_loom))))]
mod fast {
    use crate::sync::AtomicU64;

    #[inline]
    pub(super) fn store(_dst: &[AtomicU64], _src: &[u8]) -> usize {
        0
    }

    #[inline]
    pub(super) fn load(_dst: &mut [u64], _src: &[AtomicU64]) -> usize {
        0
    }
}

#[cfg(all(test, not(firehose_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 512 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The path production runs (SSE2 on x86_64) and the word loop Miri and loom check
        /// give the same bytes, at random lengths and offsets, across the wrap of a ring.
        #[test]
        fn the_fast_path_and_the_word_loop_agree(
            ring_words in 8usize..512,
            start in 0usize..512,
            words in 0usize..512,
            src_skip in 0usize..16,
            seed in any::<u64>(),
        ) {
            let start = start % ring_words;
            let words = words % (ring_words + 1);
            let mut x = seed | 1;
            let bytes: Vec<u8> = (0..words * 8 + src_skip)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let src = &bytes[src_skip..];
            let fast_ring: Vec<AtomicU64> = (0..ring_words).map(|i| AtomicU64::new(i as u64)).collect();
            let slow_ring: Vec<AtomicU64> = (0..ring_words).map(|i| AtomicU64::new(i as u64)).collect();
            // Split at the wrap, as the producer does.
            let first = words.min(ring_words - start);
            store(&fast_ring[start..start + first], &src[..first * 8]);
            store(&fast_ring[..words - first], &src[first * 8..]);
            words_store(&slow_ring[start..start + first], &src[..first * 8]);
            words_store(&slow_ring[..words - first], &src[first * 8..]);
            for (a, b) in fast_ring.iter().zip(&slow_ring) {
                prop_assert_eq!(a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            }
            // And back, split at the wrap, as a lagging reader copies.
            let mut fast_back = vec![0u64; words];
            let mut slow_back = vec![0u64; words];
            load(&mut fast_back[..first], &fast_ring[start..start + first]);
            load(&mut fast_back[first..], &fast_ring[..words - first]);
            words_load(&mut slow_back[..first], &slow_ring[start..start + first]);
            words_load(&mut slow_back[first..], &slow_ring[..words - first]);
            prop_assert_eq!(&fast_back, &slow_back);
            let back: Vec<u8> = fast_back.iter().flat_map(|w| w.to_ne_bytes()).collect();
            prop_assert_eq!(&back[..], src);
        }
    }

    #[test]
    #[should_panic(expected = "bulk store lengths differ")]
    fn a_store_longer_than_its_destination_panics_instead_of_writing_past_it() {
        let dst: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        store(&dst[..4], &[7u8; 128]);
    }

    #[test]
    #[should_panic(expected = "bulk load lengths differ")]
    fn a_load_longer_than_its_source_panics_instead_of_reading_past_it() {
        let src: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let mut dst = vec![0u64; 16];
        load(&mut dst, &src[..8]);
    }

    #[test]
    fn bulk_copies_match_a_byte_copy_at_every_length_and_offset() {
        let src: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for words in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
            for skip in [0usize, 1, 2, 3] {
                let dst: Vec<AtomicU64> =
                    (0..words + skip).map(|_| AtomicU64::new(0xDEAD)).collect();
                let bytes = &src[skip * 8..skip * 8 + words * 8];
                store(&dst[skip..], bytes);
                for (i, w) in dst.iter().enumerate() {
                    let want = if i < skip {
                        0xDEAD
                    } else {
                        let k = (i - skip) * 8;
                        u64::from_ne_bytes(bytes[k..k + 8].try_into().unwrap())
                    };
                    assert_eq!(
                        w.load(Ordering::Relaxed),
                        want,
                        "words {words} skip {skip} at {i}"
                    );
                }
                let mut back = vec![0u64; words];
                load(&mut back, &dst[skip..]);
                let back_bytes: Vec<u8> = back.iter().flat_map(|w| w.to_ne_bytes()).collect();
                assert_eq!(back_bytes, bytes);
            }
        }
    }
}
