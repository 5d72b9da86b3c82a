//! The idle timeout, the frame deadline and the write deadline.

use super::*;

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    for io in engines() {
        let server = Server::start(io, |c| c.idle_timeout_ms = 100);
        // Served once, then idle: closed.
        let mut c = server.client();
        assert_eq!(c.generate_random(4).unwrap().expose().len(), 4);
        assert!(wait_closed_by_daemon(c.stream()), "{io:?}");
        // Never a byte: closed too.
        let s = server.raw();
        assert!(wait_closed_by_daemon(&s), "{io:?}");
    }
}

#[test]
fn a_half_sent_frame_is_closed_after_the_frame_deadline() {
    for io in engines() {
        let server = Server::start(io, |c| {
            c.idle_timeout_ms = 600_000;
            c.frame_timeout_ms = 100;
        });
        let mut s = server.raw();
        // Seven bytes of a 100-byte frame, then silence.
        s.write_all(&[100, 0, 0, 0, 1, 2, 3]).unwrap();
        assert!(wait_closed_by_daemon(&s), "{io:?}");
        assert!(read_response(&mut s, &mut BytesMut::new()).is_none());
        // Others are served.
        assert_eq!(
            server.client().generate_random(4).unwrap().expose().len(),
            4,
            "{io:?}"
        );
    }
}

#[test]
fn a_slow_but_steady_sender_of_whole_frames_is_not_closed() {
    for io in engines() {
        let server = Server::start(io, |c| {
            c.idle_timeout_ms = 300;
            c.frame_timeout_ms = 300;
        });
        let mut c = server.client();
        // Requests in a row, each well inside both deadlines: the
        // timers re-arm rather than close.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1000) {
            assert_eq!(c.generate_random(4).unwrap().expose().len(), 4, "{io:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_peer_that_never_reads_is_closed_after_the_write_deadline() {
    for io in engines() {
        let server = Server::start(io, |c| {
            c.write_timeout_ms = 100;
            c.idle_timeout_ms = 600_000;
            c.max_in_flight = 4096;
        });
        // The writer makes no progress once the socket buffers are full.
        let mut s = flood_unread(&server);
        assert!(wait_closed_by_daemon(&s), "{io:?}");
        // What was written before the deadline can be read, then EOF:
        // not every answer.
        let mut buf = BytesMut::new();
        let mut answers = 0;
        while read_response(&mut s, &mut buf).is_some() {
            answers += 1;
        }
        assert!(answers < 2000, "{io:?}: {answers} answers");
        assert_eq!(
            server.client().generate_random(4).unwrap().expose().len(),
            4,
            "{io:?}"
        );
    }
}
