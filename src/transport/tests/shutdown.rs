//! Shutdown: idle connections closed at once, a peer that never reads
//! given up on after the grace period, the socket file removed.

use super::*;

#[test]
fn shutdown_closes_idle_connections_removes_the_socket_and_returns() {
    for io in engines() {
        let server = Server::start(io, |c| c.shutdown_grace_secs = 30);
        let socket = server.socket.clone();
        let mut idle = server.raw();
        let mut c = server.client();
        assert_eq!(c.generate_random(4).unwrap().expose().len(), 4);
        let (r, took) = server.shutdown();
        assert_eq!(r.unwrap(), expected(io));
        // Idle connections have nothing in flight: no waiting for grace.
        assert!(took < Duration::from_secs(10), "{io:?}: took {took:?}");
        assert!(!socket.exists(), "{io:?}: socket file removed");
        assert!(
            read_response(&mut idle, &mut BytesMut::new()).is_none(),
            "{io:?}"
        );
        assert!(UnixStream::connect(&socket).is_err());
    }
}

#[test]
fn shutdown_gives_up_on_a_peer_that_never_reads_after_the_grace_period() {
    for io in engines() {
        let server = Server::start(io, |c| {
            c.shutdown_grace_secs = 1;
            c.max_in_flight = 4096;
        });
        // The writer is stuck on a full socket buffer.
        let _unread = flood_unread(&server);
        std::thread::sleep(Duration::from_millis(300));
        let socket = server.socket.clone();
        let (r, took) = server.shutdown();
        assert_eq!(r.unwrap(), expected(io));
        assert!(
            took >= Duration::from_millis(900),
            "{io:?}: waited {took:?}"
        );
        assert!(took < Duration::from_secs(8), "{io:?}: waited {took:?}");
        assert!(!socket.exists());
    }
}
