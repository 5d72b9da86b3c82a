//! The service in-process: every operation and every error path, without a
//! socket (the end-to-end tests repeat the important ones over the socket).

use kms_proto::*;
use kmsd::crypto::KeyMaterial;
use kmsd::identity::Identity;
use kmsd::keystore::Keystore;
use kmsd::root::FileRoot;
use kmsd::service::op::{self, PlaneKind};
use kmsd::service::{ExecError, Service, Site};
use std::sync::Arc;

const PEER: Identity = Identity::local(0, 0, 1);

fn service() -> Service {
    Service::with_store(
        Keystore::open_in_memory().unwrap(),
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
        DecodeLimits::default(),
        100,
    )
    .unwrap()
}

fn create(svc: &Service) -> String {
    match svc
        .call(&Operation::CreateKey(CreateKey::default()), &PEER)
        .unwrap()
    {
        Output::CreateKey(m) => m.key_id,
        other => panic!("unexpected {other:?}"),
    }
}

fn kind(r: Result<Output, KmsError>) -> ErrorKind {
    r.expect_err("expected an error").kind
}

fn encrypt(svc: &Service, key_id: &str, pt: &[u8], ctx: &[(&str, &str)]) -> Vec<u8> {
    match svc
        .call(
            &Operation::Encrypt(Encrypt {
                key_id,
                plaintext: pt,
                context: ctx.to_vec(),
                ..Default::default()
            }),
            &PEER,
        )
        .unwrap()
    {
        Output::Encrypt(o) => o.ciphertext_blob,
        other => panic!("unexpected {other:?}"),
    }
}

fn decrypt(
    svc: &Service,
    blob: &[u8],
    key_id: Option<&str>,
    ctx: &[(&str, &str)],
) -> Result<Output, KmsError> {
    svc.call(
        &Operation::Decrypt(Decrypt {
            ciphertext_blob: blob,
            key_id,
            context: ctx.to_vec(),
            ..Default::default()
        }),
        &PEER,
    )
}

#[test]
fn create_describe_list() {
    let svc = service();
    let created = match svc
        .call(
            &Operation::CreateKey(CreateKey {
                description: "payments",
                ..Default::default()
            }),
            &PEER,
        )
        .unwrap()
    {
        Output::CreateKey(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.key_state, KeyState::Enabled);
    assert!(created.enabled);
    assert_eq!(created.current_version, 1);
    assert!(created.arn.ends_with(&created.key_id));
    let described = svc
        .call(
            &Operation::DescribeKey(DescribeKey {
                key_id: &created.key_id,
                ..Default::default()
            }),
            &PEER,
        )
        .unwrap();
    assert_eq!(described, Output::DescribeKey(created.clone()));
    // By ARN too.
    let by_arn = svc
        .call(
            &Operation::DescribeKey(DescribeKey {
                key_id: &created.arn,
                ..Default::default()
            }),
            &PEER,
        )
        .unwrap();
    assert_eq!(by_arn, Output::DescribeKey(created.clone()));

    let mut ids: Vec<String> = (0..4).map(|_| create(&svc)).collect();
    ids.push(created.key_id.clone());
    ids.sort();
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = match svc
            .call(
                &Operation::ListKeys(ListKeys {
                    limit: 2,
                    marker: marker.as_deref(),
                }),
                &PEER,
            )
            .unwrap()
        {
            Output::ListKeys(l) => l,
            other => panic!("{other:?}"),
        };
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.iter().map(|k| k.key_id.clone()));
        if !page.truncated {
            assert!(page.next_marker.is_none());
            break;
        }
        marker = page.next_marker;
    }
    assert_eq!(seen, ids);
}

#[test]
fn list_keys_errors() {
    let svc = service();
    let op = |limit, marker| Operation::ListKeys(ListKeys { limit, marker });
    assert_eq!(
        kind(svc.call(&op(1001, None), &PEER)),
        ErrorKind::Validation
    );
    assert_eq!(
        kind(svc.call(&op(10, Some("not-a-marker")), &PEER)),
        ErrorKind::InvalidMarker
    );
}

#[test]
fn create_key_limits() {
    let svc = Service::with_store(
        Keystore::open_in_memory().unwrap(),
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
        DecodeLimits::default(),
        2,
    )
    .unwrap();
    create(&svc);
    create(&svc);
    assert_eq!(
        kind(svc.call(&Operation::CreateKey(CreateKey::default()), &PEER)),
        ErrorKind::LimitExceeded
    );
    let long = "x".repeat(8193);
    assert_eq!(
        kind(svc.call(
            &Operation::CreateKey(CreateKey {
                description: &long,
                ..Default::default()
            }),
            &PEER
        )),
        ErrorKind::Validation
    );
}

#[test]
fn unknown_and_malformed_key_ids() {
    let svc = service();
    for key_id in [
        "00000000-0000-4000-8000-000000000000",
        "not-a-key",
        "arn:kmsd:kms:local:key/garbage",
        "arn:aws:kms:us-east-1:000000000000:key/garbage",
        "arn:aws:kms:eu-west-3:000000000000:key/00000000-0000-4000-8000-000000000000",
    ] {
        assert_eq!(
            kind(svc.call(
                &Operation::DescribeKey(DescribeKey {
                    key_id,
                    ..Default::default()
                }),
                &PEER
            )),
            ErrorKind::NotFound,
            "{key_id}"
        );
        assert_eq!(
            kind(svc.call(
                &Operation::Encrypt(Encrypt {
                    key_id,
                    plaintext: b"x",
                    context: vec![],
                    ..Default::default()
                }),
                &PEER
            )),
            ErrorKind::NotFound
        );
    }
}

#[test]
fn empty_key_id_is_a_validation_error_as_in_aws() {
    // AWS's KeyId is 1..=2048 characters: an empty one is a
    // ValidationException, like an absent one, not NotFoundException.
    let svc = service();
    let key = create(&svc);
    let blob = encrypt(&svc, &key, b"x", &[]);
    assert_eq!(
        kind(svc.call(
            &Operation::DescribeKey(DescribeKey {
                key_id: "",
                ..Default::default()
            }),
            &PEER
        )),
        ErrorKind::Validation
    );
    assert_eq!(
        kind(svc.call(
            &Operation::Encrypt(Encrypt {
                key_id: "",
                plaintext: b"x",
                context: vec![],
                ..Default::default()
            }),
            &PEER
        )),
        ErrorKind::Validation
    );
    assert_eq!(
        kind(decrypt(&svc, &blob, Some(""), &[])),
        ErrorKind::Validation
    );
}

#[test]
fn overlong_key_id_is_a_validation_error() {
    let svc = service();
    let long = "k".repeat(2049);
    assert_eq!(
        kind(svc.call(
            &Operation::DescribeKey(DescribeKey {
                key_id: &long,
                ..Default::default()
            }),
            &PEER
        )),
        ErrorKind::Validation
    );
}

#[test]
fn encrypt_decrypt_with_context() {
    let svc = service();
    let key = create(&svc);
    let ctx = [("tenant", "a"), ("purpose", "test")];
    let blob = encrypt(&svc, &key, b"attack at dawn", &ctx);
    // Context order does not matter.
    let reordered = [("purpose", "test"), ("tenant", "a")];
    match decrypt(&svc, &blob, None, &reordered).unwrap() {
        Output::Decrypt(o) => {
            assert_eq!(o.plaintext.expose(), b"attack at dawn");
            assert_eq!(
                o.key_id,
                svc.arns().key_arn(&svc.parse_key_id(&key).unwrap())
            );
        }
        other => panic!("{other:?}"),
    }
    match decrypt(&svc, &blob, Some(&key), &ctx).unwrap() {
        Output::Decrypt(o) => assert_eq!(o.plaintext.expose(), b"attack at dawn"),
        other => panic!("{other:?}"),
    }
    // Wrong, missing or extra context.
    for bad in [
        &[("tenant", "b"), ("purpose", "test")][..],
        &[][..],
        &[("tenant", "a")][..],
        &[("tenant", "a"), ("purpose", "test"), ("x", "y")][..],
    ] {
        assert_eq!(
            kind(decrypt(&svc, &blob, None, bad)),
            ErrorKind::InvalidCiphertext
        );
    }
    // {"ab":"c"} and {"a":"bc"} must not be interchangeable.
    let blob = encrypt(&svc, &key, b"x", &[("ab", "c")]);
    assert_eq!(
        kind(decrypt(&svc, &blob, None, &[("a", "bc")])),
        ErrorKind::InvalidCiphertext
    );
}

#[test]
fn decrypt_with_another_key_id_is_incorrect_key() {
    let svc = service();
    let a = create(&svc);
    let b = create(&svc);
    let blob = encrypt(&svc, &a, b"secret", &[]);
    assert_eq!(
        kind(decrypt(&svc, &blob, Some(&b), &[])),
        ErrorKind::IncorrectKey
    );
    assert_eq!(
        kind(decrypt(&svc, &blob, Some("nonsense"), &[])),
        ErrorKind::NotFound
    );
}

#[test]
fn plaintext_and_size_limits() {
    let svc = service();
    let key = create(&svc);
    for len in [0usize, 4097] {
        let pt = vec![1u8; len];
        assert_eq!(
            kind(svc.call(
                &Operation::Encrypt(Encrypt {
                    key_id: &key,
                    plaintext: &pt,
                    context: vec![],
                    ..Default::default()
                }),
                &PEER
            )),
            ErrorKind::Validation,
            "plaintext of {len} bytes"
        );
    }
    for len in [1usize, 4096] {
        let pt = vec![1u8; len];
        let blob = encrypt(&svc, &key, &pt, &[]);
        match decrypt(&svc, &blob, None, &[]).unwrap() {
            Output::Decrypt(o) => assert_eq!(o.plaintext.expose(), &pt[..]),
            other => panic!("{other:?}"),
        }
    }
    let gdk = |n: Option<u32>, spec: Option<DataKeySpec>| {
        svc.call(
            &Operation::GenerateDataKey(GenerateDataKey {
                key_id: &key,
                number_of_bytes: n,
                key_spec: spec,
                context: vec![],
                ..Default::default()
            }),
            &PEER,
        )
    };
    assert_eq!(kind(gdk(Some(1025), None)), ErrorKind::Validation);
    assert_eq!(kind(gdk(None, None)), ErrorKind::Validation);
    assert_eq!(
        kind(gdk(Some(32), Some(DataKeySpec::Aes256))),
        ErrorKind::Validation
    );
    // 0 on the wire means "absent": covered end to end; here the typed None.
    for (n, spec, len) in [
        (Some(1), None, 1),
        (Some(1024), None, 1024),
        (None, Some(DataKeySpec::Aes128), 16),
        (None, Some(DataKeySpec::Aes256), 32),
    ] {
        match gdk(n, spec).unwrap() {
            Output::GenerateDataKey(o) => {
                assert_eq!(o.plaintext.len(), len);
                match decrypt(&svc, &o.ciphertext_blob, None, &[]).unwrap() {
                    Output::Decrypt(d) => assert_eq!(d.plaintext, o.plaintext),
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let random = |n| {
        svc.call(
            &Operation::GenerateRandom(GenerateRandom { number_of_bytes: n }),
            &PEER,
        )
    };
    assert_eq!(kind(random(0)), ErrorKind::Validation);
    assert_eq!(kind(random(1025)), ErrorKind::Validation);
    match random(1024).unwrap() {
        Output::GenerateRandom(o) => {
            assert_eq!(o.plaintext.len(), 1024);
            assert!(o.plaintext.expose().iter().any(|&b| b != 0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn data_keys_are_distinct_and_without_plaintext_decrypts() {
    let svc = service();
    let key = create(&svc);
    let ctx = [("bucket", "b1")];
    let op = |with: bool| {
        let r = GenerateDataKey {
            key_id: &key,
            number_of_bytes: Some(32),
            key_spec: None,
            context: ctx.to_vec(),
            ..Default::default()
        };
        svc.call(
            &if with {
                Operation::GenerateDataKey(r)
            } else {
                Operation::GenerateDataKeyWithoutPlaintext(r)
            },
            &PEER,
        )
        .unwrap()
    };
    let (a, b) = match (op(true), op(true)) {
        (Output::GenerateDataKey(a), Output::GenerateDataKey(b)) => (a, b),
        other => panic!("{other:?}"),
    };
    assert_ne!(a.plaintext, b.plaintext);
    assert_ne!(a.ciphertext_blob, b.ciphertext_blob);
    match op(false) {
        Output::GenerateDataKeyWithoutPlaintext(o) => {
            match decrypt(&svc, &o.ciphertext_blob, None, &ctx).unwrap() {
                Output::Decrypt(d) => assert_eq!(d.plaintext.len(), 32),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn re_encrypt_moves_a_blob_between_keys() {
    let svc = service();
    let a = create(&svc);
    let b = create(&svc);
    let blob = encrypt(&svc, &a, b"rotate me", &[("k", "1")]);
    let re = |src_ctx: &[(&str, &str)], src_key: Option<&str>| {
        svc.call(
            &Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: src_key,
                source_context: src_ctx.to_vec(),
                destination_key_id: &b,
                destination_context: vec![("k", "2")],
                ..Default::default()
            }),
            &PEER,
        )
    };
    let out = match re(&[("k", "1")], Some(&a)).unwrap() {
        Output::ReEncrypt(o) => o,
        other => panic!("{other:?}"),
    };
    let arn = |k: &str| svc.arns().key_arn(&svc.parse_key_id(k).unwrap());
    assert_eq!(out.source_key_id, arn(&a));
    assert_eq!(out.key_id, arn(&b));
    match decrypt(&svc, &out.ciphertext_blob, Some(&b), &[("k", "2")]).unwrap() {
        Output::Decrypt(o) => assert_eq!(o.plaintext.expose(), b"rotate me"),
        other => panic!("{other:?}"),
    }
    assert_eq!(kind(re(&[("k", "9")], None)), ErrorKind::InvalidCiphertext);
    assert_eq!(kind(re(&[("k", "1")], Some(&b))), ErrorKind::IncorrectKey);
}

#[test]
fn every_single_byte_change_and_truncation_of_a_blob_is_rejected() {
    let svc = service();
    let key = create(&svc);
    let blob = encrypt(&svc, &key, b"integrity", &[("a", "b")]);
    for i in 0..blob.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = blob.clone();
            bad[i] ^= flip;
            assert_eq!(
                kind(decrypt(&svc, &bad, None, &[("a", "b")])),
                ErrorKind::InvalidCiphertext,
                "byte {i} ^ {flip:#x}"
            );
        }
    }
    // Empty is a missing parameter (AWS: CiphertextBlob is 1..=6144 bytes).
    assert_eq!(
        kind(decrypt(&svc, &[], None, &[("a", "b")])),
        ErrorKind::Validation
    );
    for len in 1..blob.len() {
        assert_eq!(
            kind(decrypt(&svc, &blob[..len], None, &[("a", "b")])),
            ErrorKind::InvalidCiphertext,
            "truncated to {len}"
        );
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert_eq!(
        kind(decrypt(&svc, &longer, None, &[("a", "b")])),
        ErrorKind::InvalidCiphertext
    );
}

#[test]
fn blobs_longer_than_any_valid_one_are_refused_before_the_key_is_loaded() {
    use kmsd::crypto::blob::MAX_LEN;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Service::open(
            dir.path(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([9; 32]))),
            DecodeLimits::default(),
            100,
        )
        .unwrap()
    };
    let (key, max) = {
        let svc = open();
        let key = create(&svc);
        let max = encrypt(&svc, &key, &[5u8; 4096], &[]);
        (key, max)
    };
    assert_eq!(
        max.len(),
        MAX_LEN,
        "the largest plaintext makes the longest blob"
    );
    // Reopened: the key is not cached, so anything that needs it defers.
    let svc = open();
    let dec = |blob: &[u8]| {
        svc.execute(
            &Operation::Decrypt(Decrypt {
                ciphertext_blob: blob,
                key_id: None,
                context: vec![],
                ..Default::default()
            }),
            &PEER,
            Site::Io,
        )
    };
    assert_eq!(dec(&max), Err(ExecError::NotReady));
    // One byte longer (same header): refused from its length alone.
    let mut longer = max.clone();
    longer.push(0);
    match dec(&longer) {
        Err(ExecError::Kms(e)) => assert_eq!(e.kind, ErrorKind::InvalidCiphertext, "{e}"),
        other => panic!("expected InvalidCiphertextException at once, got {other:?}"),
    }
    // Past AWS's CiphertextBlob limit: ValidationException, as AWS answers.
    longer.resize(6145, 0);
    match dec(&longer) {
        Err(ExecError::Kms(e)) => assert_eq!(e.kind, ErrorKind::Validation, "{e}"),
        other => panic!("expected ValidationException, got {other:?}"),
    }
    let re = svc.execute(
        &Operation::ReEncrypt(ReEncrypt {
            ciphertext_blob: &longer,
            source_key_id: None,
            source_context: vec![],
            destination_key_id: &key,
            destination_context: vec![],
            ..Default::default()
        }),
        &PEER,
        Site::Io,
    );
    match re {
        Err(ExecError::Kms(e)) => assert_eq!(e.kind, ErrorKind::Validation, "{e}"),
        other => panic!("expected ValidationException, got {other:?}"),
    }
}

#[test]
fn context_validation() {
    let svc = service();
    let key = create(&svc);
    let enc = |ctx: Vec<(&str, &str)>| {
        svc.call(
            &Operation::Encrypt(Encrypt {
                key_id: &key,
                plaintext: b"x",
                context: ctx,
                ..Default::default()
            }),
            &PEER,
        )
    };
    assert_eq!(kind(enc(vec![("", "v")])), ErrorKind::Validation);
    assert_eq!(
        kind(enc(vec![("k", "1"), ("k", "2")])),
        ErrorKind::Validation
    );
    let big = "v".repeat(8192);
    assert_eq!(kind(enc(vec![("k", &big)])), ErrorKind::Validation);
    assert!(enc(vec![("k", "")]).is_ok());
}

#[test]
fn io_threads_run_cached_data_plane_work_only() {
    let svc = service();
    let key = create(&svc); // cached by creation
    let op = Operation::GenerateDataKey(GenerateDataKey {
        key_id: &key,
        number_of_bytes: Some(32),
        key_spec: None,
        context: vec![],
        ..Default::default()
    });
    assert!(svc.execute(&op, &PEER, Site::Io).is_ok());
    let create_key = Operation::CreateKey(CreateKey::default());
    // The plane is declared, so admission never sends it to an I/O thread;
    // asked to run it there anyway, the service refuses before any effect.
    assert_eq!(op::plane(&create_key), PlaneKind::Control);
    assert_eq!(op::plane(&op), PlaneKind::Data);
    assert_eq!(
        svc.execute(&create_key, &PEER, Site::Io),
        Err(ExecError::NotReady)
    );
}

#[test]
fn batches_are_answered_item_by_item() {
    let svc = service();
    let key = create(&svc);
    let req = Request {
        request_id: 42,
        body: RequestBody::Batch(vec![
            Ok(Operation::GenerateRandom(GenerateRandom {
                number_of_bytes: 8,
            })),
            Ok(Operation::GenerateRandom(GenerateRandom {
                number_of_bytes: 0,
            })),
            Ok(Operation::Encrypt(Encrypt {
                key_id: &key,
                plaintext: b"p",
                context: vec![],
                ..Default::default()
            })),
        ]),
    };
    let mut frame = Vec::new();
    encode_request(&mut flatbuffers::FlatBufferBuilder::new(), &req, &mut frame);
    let mut out = Vec::new();
    kmsd::wire::handle_frame(&svc, &frame[4..], &PEER, &mut out);
    let resp = decode_response(&out[4..], 1 << 20).unwrap();
    assert_eq!(resp.request_id, 42);
    match resp.body {
        ResponseBody::Batch(items) => {
            assert_eq!(items.len(), 3);
            assert!(matches!(items[0], Ok(Output::GenerateRandom(_))));
            assert_eq!(items[1].as_ref().unwrap_err().kind, ErrorKind::Validation);
            assert!(matches!(items[2], Ok(Output::Encrypt(_))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root_key = KeyMaterial::from_bytes([9; 32]);
    let open = || {
        Service::open(
            dir.path(),
            Arc::new(FileRoot::from_key(root_key.clone())),
            DecodeLimits::default(),
            100,
        )
        .unwrap()
    };
    let (key, blob) = {
        let svc = open();
        let key = create(&svc);
        let blob = encrypt(&svc, &key, b"durable", &[]);
        (key, blob)
    };
    let svc = open();
    match decrypt(&svc, &blob, Some(&key), &[]).unwrap() {
        Output::Decrypt(o) => assert_eq!(o.plaintext.expose(), b"durable"),
        other => panic!("{other:?}"),
    }
    // Another root key is refused at open, not at the first Decrypt.
    let other = Service::open(
        dir.path(),
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([1; 32]))),
        DecodeLimits::default(),
        100,
    );
    assert!(other.is_err());
}
