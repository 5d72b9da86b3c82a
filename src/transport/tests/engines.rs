//! Serving on each engine, `IoMode::Auto` and a second server on a live
//! socket.

use super::*;

#[test]
fn round_trip_and_pipelining_on_every_engine() {
    for io in engines() {
        let server = Server::start(io, |_| {});
        let mut c = server.client();
        assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
        // Many in flight at once: answers are gathered into few writes.
        for _ in 0..500 {
            c.send(Operation::GenerateRandom(kms_proto::GenerateRandom {
                number_of_bytes: 16,
            }));
        }
        let mut ids: Vec<u64> = (0..500).map(|_| c.recv().unwrap().request_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 500, "{io:?}: every request answered once");
        let (r, _) = server.shutdown();
        assert_eq!(r.unwrap(), expected(io));
    }
}

#[test]
fn second_server_on_a_live_socket_is_refused() {
    let server = Server::start(IoMode::Epoll, |_| {});
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(
        Service::open(
            dir.path(),
            Arc::new(crate::root::FileRoot::from_key(
                crate::crypto::KeyMaterial::from_bytes([7; 32]),
            )),
            kms_proto::DecodeLimits::default(),
            10,
        )
        .unwrap(),
    );
    let d = Arc::new(Dispatcher::new(service, &DispatchConfig::default()).unwrap());
    let err = serve(
        &server.socket,
        &TransportConfig::default(),
        d,
        MAX_FRAME,
        rx,
    )
    .unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    assert_eq!(
        server.client().generate_random(4).unwrap().expose().len(),
        4
    );
}

#[test]
fn auto_picks_uring_when_available_and_uring_mode_fails_clearly_otherwise() {
    let server = Server::start(IoMode::Auto, |_| {});
    let (r, _) = server.shutdown();
    let want = if uring_available() {
        Engine::Uring
    } else {
        Engine::Epoll
    };
    assert_eq!(r.unwrap(), want);
    if !uring_available() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let service = Arc::new(
            Service::open(
                dir.path(),
                Arc::new(crate::root::FileRoot::from_key(
                    crate::crypto::KeyMaterial::from_bytes([7; 32]),
                )),
                kms_proto::DecodeLimits::default(),
                10,
            )
            .unwrap(),
        );
        let d = Arc::new(Dispatcher::new(service, &DispatchConfig::default()).unwrap());
        let config = TransportConfig {
            io: IoMode::Uring,
            ..TransportConfig::default()
        };
        let err = serve(&path, &config, d, MAX_FRAME, rx).unwrap_err();
        assert!(err.to_string().contains("io_uring"), "{err}");
        assert!(
            !path.exists(),
            "nothing bound when the engine is unavailable"
        );
    }
}
