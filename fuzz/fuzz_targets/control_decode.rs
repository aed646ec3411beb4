#![no_main]
//! Every wire decoder on arbitrary bytes: errors, never a panic.
use firehose_transport::control::wire::{decode_body, ClientMsg, FrameDecoder, ServerMsg};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<ClientMsg>(data);
    let _ = decode_body::<ServerMsg>(data);
    let mut d = FrameDecoder::default();
    d.push(data);
    while let Ok(Some(f)) = d.next_frame() {
        let _ = decode_body::<ClientMsg>(&f.body);
    }
});
