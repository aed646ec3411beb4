#![no_main]
//! The service's state machine fed arbitrary bytes in arbitrary pieces.
use firehose_transport::control::conn::ServerConn;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut s = ServerConn::new();
    for piece in data.split(|b| *b == 0xFF) {
        let _ = s.handle_input(piece);
        while s.poll_event().is_some() {}
        while s.poll_transmit().is_some() {}
    }
});
