//! Backpressure: the in-flight cap and the byte budgets stop reading a
//! connection that sends too much or never reads its answers, and the work
//! of a closed connection is dropped; nobody else is affected.

use super::*;
use kms_proto::ResponseBody;

#[test]
fn a_peer_over_its_byte_budget_stops_being_read() {
    for io in engines() {
        // The count of requests in flight would allow 4096 batches
        // (about 350 MB of answers); the byte budget stops at 1 MiB.
        let server = Server::start(io, |c| {
            c.max_in_flight = 4096;
            c.connection_budget_bytes = 1 << 20;
        });
        let mut frame = Vec::new();
        random_batch(1, 64, &mut frame);
        let s = server.raw();
        let sent = flood(&s, &frame, 4 << 20);
        // About 8 batches in the budget, a few answers in the socket
        // buffer, the rest of what was sent in the other socket buffer.
        assert!(
            sent < 2 << 20,
            "{io:?}: the daemon kept reading ({sent} bytes, {} frames)",
            sent / frame.len()
        );
        // Everyone else is unaffected.
        let mut other = server.client();
        assert_eq!(other.generate_random(4).unwrap().expose().len(), 4);
        let outcomes = other
            .batch(
                (0..64)
                    .map(|_| {
                        Operation::GenerateRandom(kms_proto::GenerateRandom {
                            number_of_bytes: 1024,
                        })
                    })
                    .collect(),
            )
            .unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{io:?}");
        // The flooder's answers are all there once it reads.
        let mut buf = BytesMut::new();
        let mut s = s;
        let r = read_response(&mut s, &mut buf).expect("an answer");
        assert!(matches!(r.body, ResponseBody::Batch(_)), "{io:?}: {r:?}");
    }
}

#[test]
fn peers_that_never_read_hold_at_most_the_global_budget_and_others_are_served() {
    for io in engines() {
        let server = Server::start(io, |c| {
            c.max_in_flight = 4096;
            c.total_budget_bytes = 1 << 20;
        });
        let mut frame = Vec::new();
        random_batch(1, 64, &mut frame);
        let hostile: Vec<UnixStream> = (0..8).map(|_| server.raw()).collect();
        let sent: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = hostile
                .iter()
                .map(|s| scope.spawn(|| flood(s, &frame, 1 << 20)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // The global budget is about 8 batches, the floor none (a batch
        // is over it): what was sent beyond that sits in socket buffers.
        assert!(
            sent.iter().all(|&n| n < 1 << 20),
            "{io:?}: the daemon kept reading ({sent:?})"
        );
        // A small request still runs on the connection's floor, and a
        // normal client's ListKeys too.
        let mut c = server.client();
        assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
        c.list_keys(0, None).unwrap();
        assert_eq!(c.generate_random(32).unwrap().expose().len(), 32, "{io:?}");
    }
}

#[test]
fn the_work_of_a_closed_connection_is_dropped_and_others_are_served_at_once() {
    for io in engines() {
        let server = Server::start_with_keys(io, 300, |_| {});
        let mut frame = Vec::new();
        let req = kms_proto::Request {
            request_id: 1,
            body: kms_proto::RequestBody::Single(Ok(Operation::ListKeys(kms_proto::ListKeys {
                limit: 1000,
                marker: None,
            }))),
        };
        for _ in 0..2000 {
            kms_proto::codec::encode_request(
                &mut flatbuffers::FlatBufferBuilder::new(),
                &req,
                &mut frame,
            );
        }
        // Pipelined pages of 300 keys, then gone without reading.
        for _ in 0..4 {
            let s = server.raw();
            flood(&s, &frame, frame.len());
            drop(s);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.dispatcher.dropped_frames() == 0 {
            assert!(
                Instant::now() < deadline,
                "{io:?}: the work of closed connections was not dropped"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut c = server.client();
        let page = c.list_keys(10, None).unwrap();
        assert_eq!(page.keys.len(), 10, "{io:?}");
    }
}

#[test]
fn in_flight_cap_stalls_only_that_connection() {
    for io in engines() {
        let server = Server::start(io, |c| c.max_in_flight = 2);
        // 300 requests written before any answer is read: the daemon
        // stops reading at 2 in flight and resumes as answers drain.
        let mut s = server.raw();
        let mut frames = Vec::new();
        for id in 1..=300 {
            random_request(id, 1024, &mut frames);
        }
        let writer = {
            let mut s = s.try_clone().unwrap();
            std::thread::spawn(move || s.write_all(&frames).unwrap())
        };
        // Meanwhile another connection is served normally.
        let mut other = server.client();
        assert_eq!(other.generate_random(8).unwrap().expose().len(), 8);
        let mut buf = BytesMut::new();
        for _ in 0..300 {
            let r = read_response(&mut s, &mut buf).expect("answer");
            assert!(
                matches!(r.body, ResponseBody::Single(Ok(_))),
                "{io:?}: {r:?}"
            );
        }
        writer.join().unwrap();
    }
}

#[test]
fn a_peer_that_never_reads_its_answers_stops_being_read() {
    for io in engines() {
        let server = Server::start(io, |c| c.max_in_flight = 8);
        let mut frame = Vec::new();
        random_request(1, 1, &mut frame);
        // Offer 8 MiB of requests without reading a single answer. Once
        // the answers fill the socket and 8 are in flight, the daemon
        // must stop reading, so only about two socket buffers' worth
        // can ever be written.
        let mut s = server.raw();
        s.set_nonblocking(true).unwrap();
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 1000)
            .collect();
        let (mut sent, mut pos) = (0usize, 0usize);
        let mut last_progress = Instant::now();
        while sent < 8 << 20 && last_progress.elapsed() < Duration::from_millis(500) {
            match s.write(&batch[pos..]) {
                Ok(n) => {
                    sent += n;
                    pos = (pos + n) % batch.len();
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{io:?}: {e}"),
            }
        }
        assert!(
            sent < 2 << 20,
            "{io:?}: the daemon kept reading ({sent} bytes)"
        );
        // Everyone else is unaffected.
        assert_eq!(
            server.client().generate_random(4).unwrap().expose().len(),
            4,
            "{io:?}"
        );
    }
}
