//! End to end over a real Unix socket with the real kmsd binary: bad input,
//! misbehaving clients, concurrency, restart and shutdown, on both I/O
//! engines.

use crate::support::{raw, read_response, Daemon};
use bytes::BytesMut;
use kms_proto::client::Client;
use kms_proto::*;
use std::io::Write;
use std::time::Duration;

/// One way of running the daemon: an I/O engine and a root of trust.
struct Variant {
    io: &'static str,
    /// `--config` with a PKCS#11 root, or None for the file root.
    hsm_config: Option<&'static std::path::Path>,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let root = if self.hsm_config.is_some() {
            "pkcs11"
        } else {
            "file"
        };
        write!(f, "{}/{root}", self.io)
    }
}

/// The variants every test here runs against: both I/O engines on the file
/// root, and epoll on the PKCS#11 root (a real SoftHSM2 token, see
/// `support::hsm_root_config`). io_uring is required unless
/// KMSD_TEST_SKIP_URING=1 says this machine forbids it (then the epoll runs
/// still cover the behaviour).
fn engines() -> Vec<Variant> {
    let mut v = vec![Variant {
        io: "epoll",
        hsm_config: None,
    }];
    if std::env::var("KMSD_TEST_SKIP_URING").as_deref() != Ok("1") {
        v.push(Variant {
            io: "uring",
            hsm_config: None,
        });
    }
    if let Some(config) = crate::support::hsm_root_config() {
        v.push(Variant {
            io: "epoll",
            hsm_config: Some(config),
        });
    }
    v
}

/// Starts the daemon for `v`.
fn start(v: &Variant) -> Daemon {
    match v.hsm_config {
        Some(c) => Daemon::start(&["--io", v.io, "--config", c.to_str().unwrap()]),
        None => Daemon::start(&["--io", v.io]),
    }
}

fn frame_error(resp: &Response) -> ErrorKind {
    match &resp.body {
        ResponseBody::Error(e) => e.kind,
        other => panic!("expected a frame-level error, got {other:?}"),
    }
}

fn single_error(resp: &Response) -> ErrorKind {
    match &resp.body {
        ResponseBody::Single(Err(e)) => e.kind,
        other => panic!("expected an operation error, got {other:?}"),
    }
}

fn encode(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&mut flatbuffers::FlatBufferBuilder::new(), req, &mut out);
    out
}

fn single(id: u64, op: Operation<'_>) -> Vec<u8> {
    encode(&Request {
        request_id: id,
        body: RequestBody::Single(Ok(op)),
    })
}

/// A healthy client still gets answers.
fn assert_healthy(d: &Daemon) {
    let mut c = d.client();
    assert_eq!(c.generate_random(16).unwrap().len(), 16);
}

#[test]
fn bad_frames_get_named_errors_and_hurt_nobody() {
    for io in engines() {
        let d = start(&io);
        let mut bystander = d.client();
        let key = bystander.create_key("bystander").unwrap().key_id;

        // Length over the maximum: ValidationException, then the connection
        // is closed (the stream cannot be re-synchronized).
        let mut s = raw(&d);
        s.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
        let mut buf = BytesMut::new();
        let resp = read_response(&mut s, &mut buf).expect("an answer before closing");
        assert_eq!(frame_error(&resp), ErrorKind::Validation, "{io}");
        assert!(
            read_response(&mut s, &mut buf).is_none(),
            "{io}: closed after"
        );

        // Garbage bytes with a valid length: SerializationException, and the
        // connection stays usable.
        let mut s = raw(&d);
        let mut garbage = 16u32.to_le_bytes().to_vec();
        garbage.extend_from_slice(&[0xa5; 16]);
        s.write_all(&garbage).unwrap();
        let mut buf = BytesMut::new();
        let resp = read_response(&mut s, &mut buf).unwrap();
        assert_eq!(frame_error(&resp), ErrorKind::Serialization, "{io}");
        s.write_all(&single(
            7,
            Operation::GenerateRandom(GenerateRandom { number_of_bytes: 4 }),
        ))
        .unwrap();
        let resp = read_response(&mut s, &mut buf).unwrap();
        assert_eq!(resp.request_id, 7);
        assert!(matches!(resp.body, ResponseBody::Single(Ok(_))), "{io}");

        // A valid request cut short inside a correct length prefix. (Cutting
        // only the last bytes can leave a valid buffer: they may be padding.)
        let full = single(
            8,
            Operation::DescribeKey(DescribeKey {
                key_id: &key,
                ..Default::default()
            }),
        );
        let payload = &full[4..];
        for cut in [1usize, 8, payload.len() / 2] {
            let mut frame = (cut as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(&payload[..cut]);
            s.write_all(&frame).unwrap();
            let resp = read_response(&mut s, &mut buf).unwrap();
            assert_eq!(
                frame_error(&resp),
                ErrorKind::Serialization,
                "{io} cut {cut}"
            );
        }

        // Truncated frame, then the client goes away.
        let mut s2 = raw(&d);
        let mut partial = 100u32.to_le_bytes().to_vec();
        partial.extend_from_slice(&[1; 50]);
        s2.write_all(&partial).unwrap();
        drop(s2);

        // A zero-length frame.
        let mut s3 = raw(&d);
        s3.write_all(&0u32.to_le_bytes()).unwrap();
        let mut b3 = BytesMut::new();
        assert_eq!(
            frame_error(&read_response(&mut s3, &mut b3).unwrap()),
            ErrorKind::Validation
        );

        assert_healthy(&d);
        assert_eq!(bystander.describe_key(&key).unwrap().key_id, key);
    }
}

#[test]
fn unknown_operation_and_oversized_batch() {
    for io in engines() {
        let d = start(&io);
        let mut s = raw(&d);
        let mut buf = BytesMut::new();

        // An operation type this daemon does not know.
        let mut fbb = flatbuffers::FlatBufferBuilder::new();
        let t = generated::GenerateRandomRequest::create(
            &mut fbb,
            &generated::GenerateRandomRequestArgs { number_of_bytes: 4 },
        );
        let root = generated::Request::create(
            &mut fbb,
            &generated::RequestArgs {
                protocol_version: PROTOCOL_VERSION,
                request_id: 99,
                operation_type: generated::Operation(200),
                operation: Some(t.as_union_value()),
                batch: None,
            },
        );
        fbb.finish_minimal(root);
        let mut frame = Vec::new();
        kms_proto::frame::write_frame(&mut frame, fbb.finished_data());
        s.write_all(&frame).unwrap();
        let resp = read_response(&mut s, &mut buf).unwrap();
        assert_eq!(resp.request_id, 99);
        assert_eq!(single_error(&resp), ErrorKind::UnsupportedOperation, "{io}");

        // A batch over the limit (1024).
        let ops: Vec<_> = (0..1025)
            .map(|_| {
                Ok(Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: 1,
                }))
            })
            .collect();
        s.write_all(&encode(&Request {
            request_id: 100,
            body: RequestBody::Batch(ops),
        }))
        .unwrap();
        let resp = read_response(&mut s, &mut buf).unwrap();
        assert_eq!(resp.request_id, 100);
        assert_eq!(frame_error(&resp), ErrorKind::Validation, "{io}");

        // A batch at the limit works, item by item.
        let mut c = d.client();
        let ops: Vec<_> = (0..1024)
            .map(|i| {
                Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: i % 3,
                })
            })
            .collect();
        let items = c.batch(ops).unwrap();
        assert_eq!(items.len(), 1024);
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.is_ok(), i % 3 != 0, "item {i}");
        }
    }
}

fn k<T: std::fmt::Debug>(r: Result<T, client::ClientError>) -> ErrorKind {
    r.unwrap_err().kind().expect("a daemon exception")
}

#[test]
fn api_errors_over_the_socket() {
    for io in engines() {
        let d = start(&io);
        let mut c = d.client();
        let key = c.create_key("").unwrap().key_id;
        assert_eq!(k(c.encrypt(&key, b"", &[])), ErrorKind::Validation);
        assert_eq!(k(c.encrypt(&key, &[0; 4097], &[])), ErrorKind::Validation);
        assert_eq!(k(c.generate_data_key(&key, 0, &[])), ErrorKind::Validation);
        assert_eq!(
            k(c.generate_data_key(&key, 1025, &[])),
            ErrorKind::Validation
        );
        assert_eq!(
            k(c.encrypt("6f0b2c2e-0000-4000-8000-000000000000", b"x", &[])),
            ErrorKind::NotFound
        );
        let blob = c
            .encrypt(&key, b"hello", &[("app", "x")])
            .unwrap()
            .ciphertext_blob;
        assert_eq!(k(c.decrypt(&blob, None, &[])), ErrorKind::InvalidCiphertext);
        assert_eq!(
            k(c.decrypt(&blob, None, &[("app", "y")])),
            ErrorKind::InvalidCiphertext
        );
        // Every single-byte change of the blob, pipelined.
        let mut ids = Vec::new();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x55;
            let ctx = vec![("app", "x")];
            ids.push(c.send(Operation::Decrypt(Decrypt {
                ciphertext_blob: &bad,
                key_id: None,
                context: ctx,
                ..Default::default()
            })));
        }
        for _ in &ids {
            let resp = c.recv().unwrap();
            assert_eq!(single_error(&resp), ErrorKind::InvalidCiphertext, "{io}");
        }
        // Truncated at every length (empty: a missing parameter, as in AWS).
        assert_eq!(
            k(c.decrypt(&[], None, &[("app", "x")])),
            ErrorKind::Validation
        );
        for len in 1..blob.len() {
            assert_eq!(
                k(c.decrypt(&blob[..len], None, &[("app", "x")])),
                ErrorKind::InvalidCiphertext
            );
        }
        assert_eq!(
            c.decrypt(&blob, Some(&key), &[("app", "x")])
                .unwrap()
                .plaintext
                .expose(),
            b"hello"
        );
    }
}

#[test]
fn concurrent_pipelined_clients_get_their_own_answers() {
    for io in engines() {
        let d = start(&io);
        let key = d.client().create_key("shared").unwrap().key_id;
        std::thread::scope(|scope| {
            for t in 0..8u32 {
                let d = &d;
                let key = key.clone();
                scope.spawn(move || {
                    let mut c = d.client();
                    let plaintexts: Vec<Vec<u8>> = (0..200u32)
                        .map(|i| format!("{t}:{i}").into_bytes())
                        .collect();
                    let mut by_id = std::collections::HashMap::new();
                    for p in &plaintexts {
                        let tag = t.to_string();
                        let id = c.send(Operation::Encrypt(Encrypt {
                            key_id: &key,
                            plaintext: p,
                            context: vec![("thread", &tag)],
                            ..Default::default()
                        }));
                        by_id.insert(id, p.clone());
                    }
                    let mut blobs = Vec::new();
                    for _ in 0..plaintexts.len() {
                        let resp = c.recv().unwrap();
                        let p = by_id.remove(&resp.request_id).expect("an id we sent");
                        match resp.body {
                            ResponseBody::Single(Ok(Output::Encrypt(o))) => {
                                blobs.push((p, o.ciphertext_blob))
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                    // Decrypt as one batch: answers come in item order.
                    let tag = t.to_string();
                    let ops: Vec<_> = blobs
                        .iter()
                        .map(|(_, b)| {
                            Operation::Decrypt(Decrypt {
                                ciphertext_blob: b,
                                key_id: None,
                                context: vec![("thread", &tag)],
                                ..Default::default()
                            })
                        })
                        .collect();
                    let items = c.batch(ops).unwrap();
                    for ((p, _), item) in blobs.iter().zip(items) {
                        match item.unwrap() {
                            Output::Decrypt(o) => assert_eq!(o.plaintext.expose(), &p[..]),
                            other => panic!("{other:?}"),
                        }
                    }
                });
            }
        });
    }
}

#[test]
fn disconnecting_and_non_reading_clients_hurt_nobody() {
    for io in engines() {
        let d = start(&io);
        // Sends a large batch and disconnects before the answer.
        {
            let mut s = raw(&d);
            let ops: Vec<_> = (0..1024)
                .map(|_| {
                    Ok(Operation::GenerateRandom(GenerateRandom {
                        number_of_bytes: 1024,
                    }))
                })
                .collect();
            s.write_all(&encode(&Request {
                request_id: 1,
                body: RequestBody::Batch(ops),
            }))
            .unwrap();
        }
        // Never reads: keeps writing requests whose answers (1 KiB each) fill
        // the socket buffers; the daemon must stop reading it, not stall.
        let hog = raw(&d);
        hog.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let writer = std::thread::spawn(move || {
            let mut hog = hog;
            let frame = single(
                1,
                Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: 1024,
                }),
            );
            let mut sent = 0usize;
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                match hog.write_all(&frame) {
                    Ok(()) => sent += 1,
                    Err(_) => break, // blocked: the daemon stopped reading us
                }
            }
            (hog, sent)
        });
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..20 {
            assert_healthy(&d);
        }
        let (hog, sent) = writer.join().unwrap();
        assert!(sent > 256, "{io}: the hog got {sent} requests in");
        drop(hog);
        assert_healthy(&d);
    }
}

#[test]
fn restart_keeps_keys_and_sigterm_exits_cleanly() {
    for io in engines() {
        let mut d = start(&io);
        let (key, blob) = {
            let mut c = d.client();
            let key = c.create_key("durable").unwrap().key_id;
            let blob = c
                .encrypt(&key, b"survives", &[("v", "1")])
                .unwrap()
                .ciphertext_blob;
            (key, blob)
        };
        d.stop(); // asserts exit status 0
        assert!(!d.socket.exists(), "{io}: socket removed on shutdown");
        d.restart();
        let mut c = d.client();
        assert_eq!(c.describe_key(&key).unwrap().key_id, key);
        assert_eq!(
            c.decrypt(&blob, None, &[("v", "1")])
                .unwrap()
                .plaintext
                .expose(),
            b"survives"
        );
        // A crash (SIGKILL) leaves a stale socket; the next start replaces it.
        d.kill();
        assert!(d.socket.exists());
        d.restart();
        assert_eq!(d.client().describe_key(&key).unwrap().key_id, key);
    }
}

#[test]
fn a_live_socket_is_not_taken_over() {
    let d = Daemon::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .args(["serve", "--socket"])
        .arg(&d.socket)
        .arg("--data-dir")
        .arg(d.dir.path().join("other-data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already"), "{err}");
    assert_healthy(&d);
}

#[test]
fn client_for_uses_the_default_io_engine() {
    // The README's default: no --io flag at all.
    let d = Daemon::start(&[]);
    let mut c: Client = d.client();
    let key = c.create_key("default").unwrap().key_id;
    let dk = c.generate_data_key(&key, 32, &[]).unwrap();
    assert_eq!(
        c.decrypt(&dk.ciphertext_blob, Some(&key), &[])
            .unwrap()
            .plaintext,
        dk.plaintext
    );
}

#[test]
fn check_config_accepts_valid_files_and_names_the_problem_in_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("kmsd.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .arg("--check-config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let ok = check("[transport]\nio = \"auto\"\nmax_in_flight = 64\n[dispatch]\nworkers = 3\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let unknown = check("[transport]\nmax_inflight = 64\n");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown field"));
    let range = check("[limits]\nmax_batch = 0\n");
    assert!(!range.status.success());
    assert!(String::from_utf8_lossy(&range.stderr).contains("max_batch"));
}

#[test]
fn cold_keys_after_a_restart_are_loaded_for_whole_batches_and_pipelines() {
    for io in engines() {
        let mut d = start(&io);
        let (keys, blobs) = {
            let mut c = d.client();
            let keys: Vec<String> = (0..40)
                .map(|i| c.create_key(&format!("cold {i}")).unwrap().key_id)
                .collect();
            let blobs: Vec<Vec<u8>> = keys
                .iter()
                .map(|k| {
                    c.encrypt(k, k.as_bytes(), &[("k", k.as_str())])
                        .unwrap()
                        .ciphertext_blob
                })
                .collect();
            (keys, blobs)
        };
        d.stop();
        d.restart();
        let mut c = d.client();
        // One frame naming 40 keys nobody has used since the restart (plus a
        // blob whose key does not exist): the loader fetches them all before
        // the frame runs, and each item gets its own answer.
        let mut bogus = blobs[0].clone();
        bogus[1..17].copy_from_slice(&[0xab; 16]);
        let mut ops: Vec<Operation<'_>> = keys
            .iter()
            .zip(&blobs)
            .map(|(k, b)| {
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: b,
                    key_id: None,
                    context: vec![("k", k.as_str())],
                    ..Default::default()
                })
            })
            .collect();
        ops.push(Operation::Decrypt(Decrypt {
            ciphertext_blob: &bogus,
            key_id: None,
            context: vec![],
            ..Default::default()
        }));
        let outcomes = c.batch(ops).unwrap();
        for (i, k) in keys.iter().enumerate() {
            match &outcomes[i] {
                Ok(Output::Decrypt(o)) => assert_eq!(o.plaintext.expose(), k.as_bytes()),
                other => panic!("{io}: item {i}: {other:?}"),
            }
        }
        assert_eq!(
            outcomes[40].as_ref().unwrap_err().kind,
            ErrorKind::InvalidCiphertext
        );
        // Many requests in flight for one cold key: all answered.
        d.restart();
        let mut c = d.client();
        let ids: Vec<u64> = (0..32)
            .map(|_| {
                c.send(Operation::Decrypt(Decrypt {
                    ciphertext_blob: &blobs[7],
                    key_id: None,
                    context: vec![("k", keys[7].as_str())],
                    ..Default::default()
                }))
            })
            .collect();
        c.flush().unwrap();
        for _ in &ids {
            let r = c.recv().unwrap();
            assert!(ids.contains(&r.request_id));
            match r.body {
                ResponseBody::Single(Ok(Output::Decrypt(o))) => {
                    assert_eq!(o.plaintext.expose(), keys[7].as_bytes())
                }
                other => panic!("{io}: {other:?}"),
            }
        }
        assert_healthy(&d);
    }
}
