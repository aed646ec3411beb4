//! The protocol state machines against each other, over a simulated pair (no sockets).

use std::os::fd::OwnedFd;

use proptest::prelude::*;

use super::*;
use crate::control::wire::{StartAt, StatusCounters, MAX_MESSAGE};
use crate::record::{EventKind, GapReason};
use crate::ring::Policy;

fn null_fd() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        name: "test".into(),
        policy: Policy::Lagging,
        start: StartAt::Now,
    }
}

fn welcome() -> Welcome {
    Welcome {
        version: PROTOCOL_VERSION,
        reader_id: 7,
        policy: Policy::Lagging,
        capacity: 4096,
        epoch: 1,
        instance_id: [9; 16],
        first_available: 1,
        last_committed: 0,
        start_pos: 0,
        start_seq: 1,
    }
}

/// Moves every queued transmit across, `chunk` bytes at a time, until both sides are quiet.
fn drive(c: &mut ClientConn, s: &mut ServerConn, chunk: usize) -> Vec<ServerEvent> {
    let mut server_events = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = c.poll_transmit() {
            for piece in t.bytes.chunks(chunk) {
                let _ = s.handle_input(piece);
            }
            moved = true;
        }
        while let Some(e) = s.poll_event() {
            server_events.push(e);
        }
        while let Some(t) = s.poll_transmit() {
            let mut fds = Some(t.fds);
            for piece in t.bytes.chunks(chunk) {
                let _ = c.handle_input(piece, fds.take().unwrap_or_default());
            }
            moved = true;
        }
        if !moved {
            return server_events;
        }
    }
}

fn client_events(c: &mut ClientConn) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn hello_welcome_and_a_switch_carry_their_fds_even_byte_by_byte() {
    for chunk in [1, 3, 1 << 20] {
        let mut c = ClientConn::new(hello());
        let mut s = ServerConn::new();
        assert_eq!(
            drive(&mut c, &mut s, chunk),
            vec![ServerEvent::Hello(hello())]
        );
        s.send(
            &ServerMsg::Welcome(welcome()),
            vec![null_fd(), null_fd(), null_fd()],
        );
        s.send(&ServerMsg::SegmentSwitch { epoch: 2 }, vec![null_fd()]);
        s.send(
            &ServerMsg::Notice(crate::record::Loss::StorageGap {
                from: 3,
                to: 9,
                reason: GapReason::NotStored,
            }),
            vec![],
        );
        drive(&mut c, &mut s, chunk);
        let ev = client_events(&mut c);
        assert!(
            matches!(&ev[0], ClientEvent::Welcome { welcome: w, .. } if *w == welcome()),
            "{ev:?}"
        );
        assert!(matches!(ev[1], ClientEvent::SegmentSwitch { epoch: 2, .. }));
        assert!(matches!(
            ev[2],
            ClientEvent::Notice(crate::record::Loss::StorageGap { from: 3, to: 9, .. })
        ));
    }
}

#[test]
fn queries_and_status_round_trip() {
    let mut c = ClientConn::new(hello());
    let mut s = ServerConn::new();
    drive(&mut c, &mut s, 64);
    let q = HistoryQuery {
        id: 5,
        seq: Some((1, 10)),
        time_ns: None,
        glob: Some("**/*.rs".into()),
        kinds: 0b11,
        limit: 3,
    };
    c.send(&ClientMsg::Query(q.clone()));
    c.send(&ClientMsg::StatusRequest);
    assert_eq!(
        drive(&mut c, &mut s, 64),
        vec![ServerEvent::Query(q), ServerEvent::StatusRequest]
    );
    let row = FileEvent {
        seq: 4,
        time_ns: 5,
        kind: EventKind::Rename,
        path: b"/a/\xff".to_vec(),
        path_to: Some(b"/b".to_vec()),
        rule: 2,
        size: None,
        reconciled: false,
        blind: None,
        gap: None,
    };
    s.send(
        &ServerMsg::Rows {
            id: 5,
            rows: vec![row.clone()],
        },
        vec![],
    );
    s.send(
        &ServerMsg::RowsEnd {
            id: 5,
            end: QueryEnd::Limit,
        },
        vec![],
    );
    let status = Status {
        pid: 1,
        readers: vec![],
        health: "ok".into(),
        rate_per_min: 7,
        unwatched: vec!["/a/b".into()],
        unwatched_count: 3,
        roots_gone: vec!["/gone".into()],
        history_bytes: 4096,
        history_rows_per_s: 12,
        storage: "degraded: disk full".into(),
        counters: StatusCounters {
            records: 1,
            overflows: 2,
            not_stored: 3,
            not_streamed: 4,
            writer_overflowed: 5,
            retention_removed: 6,
            lease_blocked: 7,
            cut_off: 8,
            left_behind: 9,
        },
        ..Status::default()
    };
    s.send(&ServerMsg::Status(Box::new(status.clone())), vec![]);
    drive(&mut c, &mut s, 64);
    let ev = client_events(&mut c);
    assert!(matches!(&ev[0], ClientEvent::Rows { id: 5, rows } if rows == &vec![row.clone()]));
    assert!(matches!(
        ev[1],
        ClientEvent::RowsEnd {
            id: 5,
            end: QueryEnd::Limit
        }
    ));
    assert!(matches!(&ev[2], ClientEvent::Status(st) if **st == status));
}

#[test]
fn a_version_mismatch_is_a_clear_error_on_both_sides() {
    let mut c = ClientConn::new(Hello {
        version: PROTOCOL_VERSION + 1,
        ..hello()
    });
    let mut s = ServerConn::new();
    assert!(drive(&mut c, &mut s, 64).is_empty());
    assert_eq!(s.close_reason(), Some(DisconnectReason::VersionMismatch));
    let ev = client_events(&mut c);
    assert!(
        matches!(&ev[0], ClientEvent::Disconnected { reason: DisconnectReason::VersionMismatch, detail } if detail.contains("version")),
        "{ev:?}"
    );
    // And a client facing a service of another version.
    let mut c = ClientConn::new(hello());
    let mut s = ServerConn::new();
    drive(&mut c, &mut s, 64);
    s.send(
        &ServerMsg::Welcome(Welcome {
            version: 99,
            ..welcome()
        }),
        vec![null_fd(), null_fd(), null_fd()],
    );
    drive(&mut c, &mut s, 64);
    let ev = client_events(&mut c);
    assert!(
        matches!(
            ev[0],
            ClientEvent::Disconnected {
                reason: DisconnectReason::VersionMismatch,
                ..
            }
        ),
        "{ev:?}"
    );
}

#[test]
fn an_absurd_length_prefix_is_refused_before_its_bytes_arrive() {
    let mut s = ServerConn::new();
    let mut frame = ((MAX_MESSAGE + 1) as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&[1, 0, 0, 0]);
    let e = s.handle_input(&frame).unwrap_err();
    assert!(
        matches!(e, ProtocolError::Decode(DecodeError::TooLarge { .. })),
        "{e}"
    );
    assert_eq!(s.close_reason(), Some(DisconnectReason::ProtocolError));
    let t = s.poll_transmit().expect("the client is told why");
    let msg: ServerMsg = decode_body(&t.bytes[8..]).unwrap();
    assert!(matches!(
        msg,
        ServerMsg::Error {
            reason: DisconnectReason::ProtocolError,
            ..
        }
    ));
    assert_eq!(s.buffered(), 8, "nothing more is buffered for it");
}

#[test]
fn messages_out_of_order_and_fds_from_clients_are_protocol_errors() {
    let mut s = ServerConn::new();
    assert!(s
        .handle_input(&encode_frame(&ClientMsg::StatusRequest, 0))
        .is_err());
    let mut s = ServerConn::new();
    assert!(s
        .handle_input(&encode_frame(&ClientMsg::Hello(hello()), 1))
        .is_err());
    let mut s = ServerConn::new();
    s.handle_input(&encode_frame(&ClientMsg::Hello(hello()), 0))
        .unwrap();
    assert!(s
        .handle_input(&encode_frame(&ClientMsg::Hello(hello()), 0))
        .is_err());
    // A welcome without its fds.
    let mut c = ClientConn::new(hello());
    assert!(c
        .handle_input(&encode_frame(&ServerMsg::Welcome(welcome()), 3), vec![])
        .is_err());
    assert!(c.is_closed());
}

#[test]
fn eof_is_a_disconnect_with_a_reason() {
    let mut c = ClientConn::new(hello());
    c.handle_eof();
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Disconnected {
            reason: DisconnectReason::Gone,
            ..
        })
    ));
}

proptest! {
    #[test]
    fn garbage_never_panics_the_service_side(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let mut s = ServerConn::new();
        for ch in &chunks {
            let _ = s.handle_input(ch);
            while s.poll_event().is_some() {}
        }
        prop_assert!(s.buffered() <= MAX_MESSAGE + 8);
    }

    #[test]
    fn garbage_never_panics_the_client_side(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let mut c = ClientConn::new(hello());
        for ch in &chunks {
            let _ = c.handle_input(ch, vec![]);
        }
    }

    #[test]
    fn valid_prefixes_with_random_bodies_decode_or_fail_cleanly(tag in 0u16..30, body in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut b = tag.to_le_bytes().to_vec();
        b.extend_from_slice(&body);
        let _ = decode_body::<ServerMsg>(&b);
        let _ = decode_body::<ClientMsg>(&b);
    }
}
