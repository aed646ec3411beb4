#![no_main]
//! The client's state machine fed arbitrary bytes (and no fds) in arbitrary pieces.
use firehose_transport::control::conn::ClientConn;
use firehose_transport::control::wire::{Hello, StartAt, PROTOCOL_VERSION};
use firehose_transport::ring::Policy;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut c = ClientConn::new(Hello { version: PROTOCOL_VERSION, name: "fuzz".into(), policy: Policy::Lagging, start: StartAt::Now });
    for piece in data.split(|b| *b == 0xFF) {
        let _ = c.handle_input(piece, Vec::new());
        while c.poll_event().is_some() {}
    }
});
