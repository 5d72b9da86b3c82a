//! Error answers over a real socket as a pipelining client sees them: which
//! request an error answers, AWS's name for an overloaded daemon, and what
//! happens to the connection after a frame-level error or a half-close.

use crate::support::{raw, read_response, Daemon};
use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use kms_proto::frame::write_frame;
use kms_proto::generated as fb;
use kms_proto::*;
use std::collections::BTreeMap;
use std::io::Write;

/// Appends a request frame to `out`.
fn push(out: &mut Vec<u8>, id: u64, op: Operation<'_>) {
    encode_request(
        &mut FlatBufferBuilder::new(),
        &Request {
            request_id: id,
            body: RequestBody::Single(Ok(op)),
        },
        out,
    );
}

fn random(n: u32) -> Operation<'static> {
    Operation::GenerateRandom(GenerateRandom { number_of_bytes: n })
}

/// Appends a frame that fails verification but whose id is readable: an
/// Encrypt whose context key is not UTF-8.
fn push_invalid_utf8(out: &mut Vec<u8>, id: u64) {
    let mut frame = Vec::new();
    push(
        &mut frame,
        id,
        Operation::Encrypt(Encrypt {
            key_id: "k",
            plaintext: b"x",
            context: vec![("tenant", "acme")],
            ..Default::default()
        }),
    );
    let at = frame.windows(6).position(|w| w == b"tenant").unwrap();
    frame[at] = 0xff;
    out.extend_from_slice(&frame);
}

/// Appends a frame whose operation type is set without its table.
fn push_union_without_table(out: &mut Vec<u8>, id: u64) {
    let mut fbb = FlatBufferBuilder::new();
    let root = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: id,
            operation_type: fb::Operation::EncryptRequest,
            operation: None,
            batch: None,
        },
    );
    fbb.finish_minimal(root);
    write_frame(out, fbb.finished_data());
}

#[test]
fn frame_level_errors_name_their_request_and_keep_the_connection() {
    let d = Daemon::start(&[]);
    let mut s = raw(&d);
    let mut wire = Vec::new();
    push(&mut wire, 1, random(8));
    push_invalid_utf8(&mut wire, 2);
    push_union_without_table(&mut wire, 3);
    push(&mut wire, 4, random(8));
    s.write_all(&wire).unwrap();
    let mut buf = BytesMut::new();
    let mut answers = BTreeMap::new();
    for _ in 0..4 {
        let r = read_response(&mut s, &mut buf).expect("an answer for each request");
        answers.insert(r.request_id, r.body);
    }
    assert_eq!(answers.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    for id in [2, 3] {
        match &answers[&id] {
            ResponseBody::Error(e) => assert_eq!(e.kind, ErrorKind::Serialization, "{e}"),
            other => panic!("request {id}: {other:?}"),
        }
    }
    for id in [1, 4] {
        assert!(matches!(answers[&id], ResponseBody::Single(Ok(_))), "{id}");
    }
    // Still open after those errors.
    let mut more = Vec::new();
    push(&mut more, 5, random(8));
    s.write_all(&more).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).unwrap().request_id, 5);
}

#[test]
fn after_a_half_close_every_whole_request_is_answered_then_the_connection_closes() {
    let d = Daemon::start(&[]);
    let mut s = raw(&d);
    let mut wire = Vec::new();
    for id in 1..=50 {
        push(&mut wire, id, random(16));
    }
    // And the start of a frame that never completes.
    wire.extend_from_slice(&100u32.to_le_bytes());
    wire.extend_from_slice(&[1; 10]);
    s.write_all(&wire).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut buf = BytesMut::new();
    let mut ids: Vec<u64> = (0..50)
        .map(|_| read_response(&mut s, &mut buf).unwrap().request_id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    assert!(
        read_response(&mut s, &mut buf).is_none(),
        "closed after the last answer; the partial frame gets none"
    );
}

#[test]
fn a_full_queue_is_throttling_for_its_request_and_counted_as_overload() {
    // One control-plane thread and a queue of one: the thread held up by
    // the store (a writer holds SQLite's lock) leaves room for at most two
    // CreateKey requests.
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(
        &path,
        "[dispatch]\nqueue_capacity = 1\nworkers = 1\ncontrol_threads = 1\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut s = raw(&d);
    s.write_all(&{
        let mut w = Vec::new();
        push(&mut w, 100, random(1));
        w
    })
    .unwrap();
    let mut buf = BytesMut::new();
    read_response(&mut s, &mut buf).unwrap();

    let db = rusqlite::Connection::open(d.data_dir.join("keys.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut wire = Vec::new();
    for id in 1..=4 {
        push(&mut wire, id, Operation::CreateKey(CreateKey::default()));
    }
    s.write_all(&wire).unwrap();
    // The refusals come at once, while the worker still waits for the lock.
    let mut throttled = Vec::new();
    while throttled.len() < 2 {
        let r = read_response(&mut s, &mut buf).unwrap();
        match r.body {
            ResponseBody::Error(e) => {
                assert_eq!(e.kind, ErrorKind::Throttling, "{e}");
                assert!(e.message.contains("overloaded"), "{e}");
                throttled.push(r.request_id);
            }
            other => panic!(
                "request {} answered before the lock went: {other:?}",
                r.request_id
            ),
        }
    }
    db.execute_batch("ROLLBACK").unwrap();
    let mut created = Vec::new();
    while throttled.len() + created.len() < 4 {
        let r = read_response(&mut s, &mut buf).unwrap();
        match r.body {
            ResponseBody::Single(Ok(Output::CreateKey(_))) => created.push(r.request_id),
            ResponseBody::Error(e) if e.kind == ErrorKind::Throttling => {
                throttled.push(r.request_id)
            }
            other => panic!("request {}: {other:?}", r.request_id),
        }
    }
    let mut all: Vec<u64> = throttled.iter().chain(&created).copied().collect();
    all.sort_unstable();
    assert_eq!(all, [1, 2, 3, 4], "each answer names its own request");
    assert!(!created.is_empty());
    assert!(d.log().contains("overloaded"), "{}", d.log());
}

#[test]
fn overload_is_counted_apart_by_the_dispatcher() {
    use kmsd::config::DispatchConfig;
    use kmsd::dispatch::{Dispatcher, Reply};
    use kmsd::identity::Identity;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let service = kmsd::service::Service::open(
        dir.path(),
        Arc::new(kmsd::root::FileRoot::from_key(
            kmsd::crypto::KeyMaterial::from_bytes([3; 32]),
        )),
        DecodeLimits::default(),
        100,
    )
    .unwrap();
    let dispatcher = Dispatcher::new(
        Arc::new(service),
        &DispatchConfig {
            queue_capacity: 1,
            workers: 1,
            inline_small: true,
            control_threads: 1,
        },
    )
    .unwrap();
    let db = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let peer = Identity::local(0, 0, 1);
    for id in 1..=4 {
        let mut frame = Vec::new();
        push(&mut frame, id, Operation::CreateKey(CreateKey::default()));
        let payload = bytes::Bytes::copy_from_slice(&frame[4..]);
        dispatcher.dispatch(payload, peer.clone(), Reply::new(tx.clone(), None));
    }
    // Refusals are answered inside dispatch, before it returns.
    let refused = dispatcher.overloaded();
    assert!(refused >= 2, "{refused}");
    db.execute_batch("ROLLBACK").unwrap();
    let throttled = (0..4)
        .map(|_| rx.blocking_recv().expect("an answer"))
        .filter(|o| {
            let r = decode_response(&o.frame[4..], 1 << 20).unwrap();
            matches!(r.body, ResponseBody::Error(e) if e.kind == ErrorKind::Throttling)
        })
        .count();
    assert_eq!(throttled as u64, refused);
    assert_eq!(dispatcher.overloaded(), refused);
}
