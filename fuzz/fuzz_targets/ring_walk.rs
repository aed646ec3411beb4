#![no_main]
//! The frame walk of both reader policies over frames with corrupt headers at the edges of
//! a copy (its end, the wrap, a resync point): errors, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| firehose_transport::ring::fuzzing::scribbled_walk(data));
