//! Framing errors and a peer that leaves mid-frame.

use super::*;
use kms_proto::{ErrorKind, ResponseBody};

fn frame_error_closes_only_that_connection(io: IoMode, prefix: [u8; 4]) {
    let server = Server::start(io, |_| {});
    let mut bystander = server.client();
    assert_eq!(bystander.generate_random(4).unwrap().expose().len(), 4);

    let mut s = server.raw();
    s.write_all(&prefix).unwrap();
    let mut buf = BytesMut::new();
    let r = read_response(&mut s, &mut buf).expect("a frame-level answer");
    assert_eq!(r.request_id, 0);
    match r.body {
        ResponseBody::Error(e) => assert_eq!(e.kind, ErrorKind::Validation, "{io:?}: {e}"),
        other => panic!("{io:?}: expected a frame-level error, got {other:?}"),
    }
    assert!(
        read_response(&mut s, &mut buf).is_none(),
        "{io:?}: connection closed"
    );
    assert_eq!(
        bystander.generate_random(4).unwrap().expose().len(),
        4,
        "{io:?}"
    );
}

#[test]
fn oversized_frame_is_refused_and_the_connection_closed() {
    for io in engines() {
        let len = u32::try_from(MAX_FRAME + 1).unwrap();
        frame_error_closes_only_that_connection(io, len.to_le_bytes());
    }
}

#[test]
fn empty_frame_is_refused_and_the_connection_closed() {
    for io in engines() {
        frame_error_closes_only_that_connection(io, [0; 4]);
    }
}

#[test]
fn eof_mid_frame_just_closes() {
    for io in engines() {
        let server = Server::start(io, |_| {});
        let mut s = server.raw();
        s.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            read_response(&mut s, &mut BytesMut::new()).is_none(),
            "{io:?}"
        );
        assert_eq!(
            server.client().generate_random(4).unwrap().expose().len(),
            4
        );
    }
}
