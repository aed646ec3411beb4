//! A fuzzing entry point for the frame walk (feature `fuzzing`; also run by the unit tests):
//! frames laid out from the input, then corrupt headers written where a walk is most
//! fragile: at the end of a lagging reader's copy, at the end of the data area (the wrap),
//! at a resync point, and anywhere the input says. Both kinds of reader must give records,
//! gaps, lag reports or errors: never a panic, never an out-of-bounds access.

use std::time::Duration;

use super::layout::{header_word, FrameKind, RESYNC_SLOTS};
use super::{Policy, Producer, RingConfig};
use crate::sync::Ordering;

/// Runs one input. Bytes are consumed as: frame lengths (one byte each, until a zero
/// byte), then groups of 17 bytes: a site selector, and two words to write there.
pub fn scribbled_walk(data: &[u8]) {
    let cap = 4096usize;
    let Ok(mut p) = Producer::<Vec<u8>>::new_heap(RingConfig {
        capacity: cap,
        max_record: 256,
        batch_bytes: 512,
        lossless_wait: Duration::ZERO,
        first_seq: 1,
    }) else {
        return;
    };
    let Ok(mut lossless) = p.attach_local(Policy::Lossless) else {
        return;
    };
    let Ok(mut lagging) = p.attach_local(Policy::Lagging) else {
        return;
    };
    let (lens, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    // Frames: a lossless reader holds the producer back, so keep within a ring.
    let mut used = 0usize;
    for &b in lens.iter().take(200) {
        let len = usize::from(b);
        used += super::layout::frame_len(len);
        if used > cap - 64 {
            break;
        }
        if b % 7 == 0 {
            let to = p.next_seq() + u64::from(b % 5);
            let _ = p.stage_gap(to, 3);
        } else if p.stage_archived(&vec![b; len]).is_err() {
            break;
        }
    }
    let _ = p.commit();
    let w = p.write_pos();
    let data_words = p.segment().data();
    let hdr = p.segment().header();
    for chunk in rest.chunks_exact(17).take(16) {
        let site = chunk[0];
        let w0 = u64::from_le_bytes(chunk[1..9].try_into().expect("8 bytes"));
        let w1 = u64::from_le_bytes(chunk[9..17].try_into().expect("8 bytes"));
        let pos = match site % 5 {
            // The last header of a lagging reader's first copy (a quarter ring).
            0 => (cap / 4 - 16) as u64,
            // The last header before the wrap.
            1 => (cap - 16) as u64,
            // A resync point.
            2 => {
                let head = hdr.resync_head.0.load(Ordering::Relaxed);
                let i = head.wrapping_sub(1 + u64::from(site / 5)) % RESYNC_SLOTS as u64;
                hdr.resync[i as usize].pos.load(Ordering::Relaxed)
            }
            // Just before the write cursor.
            3 => w.saturating_sub(16),
            // Anywhere.
            _ => u64::from(w0 as u16),
        };
        let i = ((pos % cap as u64) / 8) as usize & !1;
        // Half the time a well-formed header word of a chosen kind and length.
        let word0 = if site & 0x80 != 0 {
            let kind = match w1 % 3 {
                0 => FrameKind::Record,
                1 => FrameKind::Padding,
                _ => FrameKind::Gap,
            };
            header_word(kind, (w0 as u32) % 300)
        } else {
            w0
        };
        data_words[i].store(word0, Ordering::Relaxed);
        data_words[i + 1].store(w1, Ordering::Relaxed);
    }
    for r in [&mut lossless, &mut lagging] {
        for _ in 0..64 {
            match r.try_recv(64) {
                Ok(b) => {
                    if b.is_empty() {
                        break;
                    }
                    for e in &b {
                        if let super::Event::Record(rec) = e {
                            let _ = rec.access();
                        }
                    }
                }
                Err(_) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scribbled_inputs_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let runs = if cfg!(miri) { 4 } else { 300 };
        for _ in 0..runs {
            let mut input = Vec::new();
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                input.push(x as u8);
            }
            super::scribbled_walk(&input);
        }
    }
}
