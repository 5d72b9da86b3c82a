//! Aliases, tags and descriptions end to end: the real kmsd on a real
//! socket. Every operation through the socket; aliases and alias ARNs on
//! every data-plane operation; an alias moved or deleted takes effect for
//! the very next request; every bad input gets AWS's exception, a message
//! naming the field, and changes nothing (checked with DescribeKey and the
//! List operations after each refusal); aliases survive a restart.

use crate::support::{key_arn, Daemon, ARN_BASE};
use kms_proto::client::{Client, ClientError};
use kms_proto::*;

fn call(c: &mut Client, op: Operation<'_>) -> Output {
    c.call(op).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(c: &mut Client, op: Operation<'_>) -> KmsError {
    match c.call(op) {
        Err(ClientError::Kms(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn create_key(c: &mut Client, req: CreateKey<'_>) -> KeyMetadata {
    match call(c, Operation::CreateKey(req)) {
        Output::CreateKey(m) => m,
        o => panic!("{o:?}"),
    }
}

fn describe(c: &mut Client, key_id: &str) -> KeyMetadata {
    match call(
        c,
        Operation::DescribeKey(DescribeKey {
            key_id,
            ..Default::default()
        }),
    ) {
        Output::DescribeKey(m) => m,
        o => panic!("{o:?}"),
    }
}

fn create_alias(c: &mut Client, alias_name: &str, target_key_id: &str) {
    call(
        c,
        Operation::CreateAlias(CreateAlias {
            alias_name,
            target_key_id,
        }),
    );
}

/// Every alias as (name, target), all pages.
fn aliases(c: &mut Client, key_id: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let o = match call(
            c,
            Operation::ListAliases(ListAliases {
                key_id,
                limit: 2,
                marker: marker.as_deref(),
            }),
        ) {
            Output::ListAliases(o) => o,
            o => panic!("{o:?}"),
        };
        for a in o.aliases {
            assert_eq!(a.alias_arn, format!("{ARN_BASE}{}", a.alias_name));
            out.push((a.alias_name, a.target_key_id.unwrap()));
        }
        match o.next_marker {
            Some(m) => marker = Some(m),
            None => return out,
        }
    }
}

/// Every tag of a key as (key, value), all pages.
fn tags(c: &mut Client, key_id: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let o = match call(
            c,
            Operation::ListResourceTags(ListResourceTags {
                key_id,
                limit: 1,
                marker: marker.as_deref(),
            }),
        ) {
            Output::ListResourceTags(o) => o,
            o => panic!("{o:?}"),
        };
        out.extend(o.tags.into_iter().map(|t| (t.key, t.value)));
        match o.next_marker {
            Some(m) => marker = Some(m),
            None => return out,
        }
    }
}

fn encrypt(c: &mut Client, key_id: &str) -> Result<EncryptOutput, ClientError> {
    match c.call(Operation::Encrypt(Encrypt {
        key_id,
        plaintext: b"the plaintext",
        context: vec![("app", "aliases")],
        ..Default::default()
    }))? {
        Output::Encrypt(o) => Ok(o),
        o => panic!("{o:?}"),
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn tag_list<'a>(p: &[(&'a str, &'a str)]) -> Vec<Tag<'a>> {
    p.iter().map(|&(key, value)| Tag { key, value }).collect()
}

#[test]
fn every_alias_tag_and_description_operation_works_through_the_socket() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let k = create_key(
        &mut c,
        CreateKey {
            description: "orders database",
            tags: tag_list(&[("team", "red"), ("env", "prod")]),
            ..Default::default()
        },
    );
    let key = k.key_id.as_str();
    assert_eq!(
        tags(&mut c, key),
        pairs(&[("env", "prod"), ("team", "red")])
    );
    call(
        &mut c,
        Operation::TagResource(TagResource {
            key_id: &k.arn,
            tags: tag_list(&[("env", "staging"), ("cost", "42")]),
        }),
    );
    call(
        &mut c,
        Operation::UntagResource(UntagResource {
            key_id: key,
            tag_keys: vec!["team", "not-there"],
        }),
    );
    assert_eq!(
        tags(&mut c, key),
        pairs(&[("cost", "42"), ("env", "staging")])
    );
    call(
        &mut c,
        Operation::UpdateKeyDescription(UpdateKeyDescription {
            key_id: key,
            description: "orders, eu",
        }),
    );
    assert_eq!(describe(&mut c, key).description, "orders, eu");

    let other = create_key(&mut c, CreateKey::default()).key_id;
    create_alias(&mut c, "alias/orders", key);
    create_alias(&mut c, "alias/orders/eu", &k.arn);
    create_alias(&mut c, "alias/other", &other);
    assert_eq!(describe(&mut c, "alias/orders").key_id, key);
    assert_eq!(
        describe(&mut c, &format!("{ARN_BASE}alias/orders/eu")).key_id,
        key
    );
    // The legacy form still names it.
    assert_eq!(
        describe(&mut c, "arn:kmsd:kms:local:alias/orders/eu").key_id,
        key
    );
    assert_eq!(
        aliases(&mut c, None),
        pairs(&[
            ("alias/orders", key),
            ("alias/orders/eu", key),
            ("alias/other", &other)
        ])
    );
    assert_eq!(
        aliases(&mut c, Some(&other)),
        pairs(&[("alias/other", &other)])
    );
    call(
        &mut c,
        Operation::UpdateAlias(UpdateAlias {
            alias_name: "alias/orders/eu",
            target_key_id: &other,
        }),
    );
    call(
        &mut c,
        Operation::DeleteAlias(DeleteAlias {
            alias_name: "alias/orders",
        }),
    );
    assert_eq!(
        aliases(&mut c, None),
        pairs(&[("alias/orders/eu", &other), ("alias/other", &other)])
    );
    assert!(aliases(&mut c, Some(key)).is_empty());
}

#[test]
fn aliases_and_alias_arns_name_keys_on_every_data_plane_operation() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let a = create_key(&mut c, CreateKey::default()).key_id;
    let b = create_key(&mut c, CreateKey::default()).key_id;
    create_alias(&mut c, "alias/a", &a);
    create_alias(&mut c, "alias/b", &b);
    let ctx = vec![("app", "aliases")];
    let (arn_a, arn_b) = (format!("{ARN_BASE}alias/a"), format!("{ARN_BASE}alias/b"));
    for (name_a, name_b) in [
        ("alias/a", "alias/b"),
        (arn_a.as_str(), arn_b.as_str()),
        ("arn:kmsd:kms:local:alias/a", "arn:kmsd:kms:local:alias/b"),
    ] {
        let enc = encrypt(&mut c, name_a).unwrap();
        assert_eq!(enc.key_id, key_arn(&a));
        let Output::Decrypt(dec) = call(
            &mut c,
            Operation::Decrypt(Decrypt {
                ciphertext_blob: &enc.ciphertext_blob,
                key_id: Some(name_a),
                context: ctx.clone(),
                ..Default::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(
            (dec.key_id.as_str(), dec.plaintext.expose()),
            (key_arn(&a).as_str(), &b"the plaintext"[..])
        );
        // Decrypt naming another key's alias: IncorrectKeyException.
        let e = refused(
            &mut c,
            Operation::Decrypt(Decrypt {
                ciphertext_blob: &enc.ciphertext_blob,
                key_id: Some(name_b),
                context: ctx.clone(),
                ..Default::default()
            }),
        );
        assert_eq!(e.kind, ErrorKind::IncorrectKey);
        let Output::ReEncrypt(re) = call(
            &mut c,
            Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &enc.ciphertext_blob,
                source_key_id: Some(name_a),
                source_context: ctx.clone(),
                destination_key_id: name_b,
                destination_context: ctx.clone(),
                ..Default::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(
            (re.source_key_id.as_str(), re.key_id.as_str()),
            (key_arn(&a).as_str(), key_arn(&b).as_str())
        );
        let g = GenerateDataKey {
            key_id: name_b,
            number_of_bytes: None,
            key_spec: Some(DataKeySpec::Aes256),
            context: ctx.clone(),
            ..Default::default()
        };
        let Output::GenerateDataKey(gdk) = call(&mut c, Operation::GenerateDataKey(g.clone()))
        else {
            panic!()
        };
        assert_eq!(gdk.key_id, key_arn(&b));
        let Output::GenerateDataKeyWithoutPlaintext(w) =
            call(&mut c, Operation::GenerateDataKeyWithoutPlaintext(g))
        else {
            panic!()
        };
        assert_eq!(w.key_id, key_arn(&b));
        let Output::Decrypt(dk) = call(
            &mut c,
            Operation::Decrypt(Decrypt {
                ciphertext_blob: &w.ciphertext_blob,
                key_id: Some(name_b),
                context: ctx.clone(),
                ..Default::default()
            }),
        ) else {
            panic!()
        };
        assert_eq!(dk.plaintext.expose().len(), 32);
        assert_eq!(describe(&mut c, name_b).key_id, b);
    }
    // A batch of small items on cached keys runs on the I/O thread: the
    // same answers there.
    let outcomes = c
        .batch(vec![
            Operation::Encrypt(Encrypt {
                key_id: "alias/a",
                plaintext: b"x",
                context: vec![],
                ..Default::default()
            }),
            Operation::GenerateDataKey(GenerateDataKey {
                key_id: "arn:aws:kms:us-east-1:000000000000:alias/b",
                number_of_bytes: Some(16),
                key_spec: None,
                context: vec![],
                ..Default::default()
            }),
            Operation::Encrypt(Encrypt {
                key_id: "alias/missing",
                plaintext: b"x",
                context: vec![],
                ..Default::default()
            }),
        ])
        .unwrap();
    assert!(matches!(&outcomes[0], Ok(Output::Encrypt(o)) if o.key_id == key_arn(&a)));
    assert!(matches!(&outcomes[1], Ok(Output::GenerateDataKey(o)) if o.key_id == key_arn(&b)));
    let e = outcomes[2].as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(
        e.message.contains("KeyId") && e.message.contains("alias/missing"),
        "{e}"
    );
    // Malformed ARNs are NotFoundException naming the field.
    let blob = encrypt(&mut c, &a).unwrap().ciphertext_blob;
    for bad in [
        "arn:kmsd:kms:local:key/not-a-uuid",
        "arn:aws:kms:us-east-1:000000000000:key/not-a-uuid",
        "arn:aws:kms:us-east-1:111122223333:alias/a",
        "arn:aws:kms:eu-west-3:000000000000:alias/a",
    ] {
        let e = refused(
            &mut c,
            Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: ctx.clone(),
                destination_key_id: bad,
                destination_context: vec![],
                ..Default::default()
            }),
        );
        assert_eq!(e.kind, ErrorKind::NotFound, "{bad}");
        assert!(e.message.contains("DestinationKeyId"), "{e}");
    }
}

#[test]
fn a_moved_or_deleted_alias_takes_effect_for_the_very_next_request() {
    let d = Daemon::start(&[]);
    let mut admin = d.client();
    let mut user = d.client();
    let a = create_key(&mut admin, CreateKey::default()).key_id;
    let b = create_key(&mut admin, CreateKey::default()).key_id;
    create_alias(&mut admin, "alias/moving", &a);
    // Both keys cached, so that every request below runs inline on an
    // I/O thread with the alias resolved at admission.
    encrypt(&mut user, &a).unwrap();
    encrypt(&mut user, &b).unwrap();
    let mut target = &a;
    for i in 0..40 {
        assert_eq!(
            encrypt(&mut user, "alias/moving").unwrap().key_id,
            key_arn(target),
            "round {i}"
        );
        target = if target == &a { &b } else { &a };
        call(
            &mut admin,
            Operation::UpdateAlias(UpdateAlias {
                alias_name: "alias/moving",
                target_key_id: target,
            }),
        );
        // The very next request, on another connection.
        assert_eq!(
            encrypt(&mut user, "alias/moving").unwrap().key_id,
            key_arn(target),
            "round {i}"
        );
    }
    call(
        &mut admin,
        Operation::DeleteAlias(DeleteAlias {
            alias_name: "alias/moving",
        }),
    );
    let e = encrypt(&mut user, "alias/moving").unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound));
    // A new alias of the same name works at once.
    create_alias(&mut admin, "alias/moving", &b);
    assert_eq!(
        encrypt(&mut user, "alias/moving").unwrap().key_id,
        key_arn(&b)
    );
}

#[test]
fn bad_inputs_get_aws_exceptions_naming_the_field_and_change_nothing() {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(
        &path,
        "[limits]\nmax_aliases_per_key = 2\nmax_tags_per_key = 2\nmax_description_len = 16\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut c = d.client();
    let k = create_key(
        &mut c,
        CreateKey {
            description: "start",
            tags: tag_list(&[("t", "1")]),
            ..Default::default()
        },
    )
    .key_id;
    let other = create_key(&mut c, CreateKey::default()).key_id;
    create_alias(&mut c, "alias/k", &k);
    create_alias(&mut c, "alias/other", &other);
    let snapshot = |c: &mut Client| {
        (
            describe(c, &k),
            describe(c, &other),
            aliases(c, None),
            tags(c, &k),
        )
    };
    let before = snapshot(&mut c);
    let long_desc = "d".repeat(17);
    let long_tag = "t".repeat(129);
    let cases: Vec<(Operation<'_>, ErrorKind, &str)> = vec![
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/has space",
                target_key_id: &k,
            }),
            ErrorKind::Validation,
            "AliasName",
        ),
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/aws/reserved",
                target_key_id: &k,
            }),
            ErrorKind::InvalidAliasName,
            "AliasName",
        ),
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "noprefix",
                target_key_id: &k,
            }),
            ErrorKind::Validation,
            "AliasName",
        ),
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/other",
                target_key_id: &k,
            }),
            ErrorKind::AlreadyExists,
            "AliasName",
        ),
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/new",
                target_key_id: "alias/k",
            }),
            ErrorKind::Validation,
            "TargetKeyId",
        ),
        (
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/new",
                target_key_id: "arn:aws:kms:us-east-1:000000000000:key/nope",
            }),
            ErrorKind::NotFound,
            "TargetKeyId",
        ),
        (
            Operation::UpdateAlias(UpdateAlias {
                alias_name: "alias/k",
                target_key_id: "alias/other",
            }),
            ErrorKind::Validation,
            "TargetKeyId",
        ),
        (
            Operation::UpdateAlias(UpdateAlias {
                alias_name: "alias/missing",
                target_key_id: &other,
            }),
            ErrorKind::NotFound,
            "AliasName",
        ),
        (
            Operation::DeleteAlias(DeleteAlias {
                alias_name: "alias/missing",
            }),
            ErrorKind::NotFound,
            "AliasName",
        ),
        (
            Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: &k,
                description: &long_desc,
            }),
            ErrorKind::Validation,
            "Description",
        ),
        (
            Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: "alias/k",
                description: "x",
            }),
            ErrorKind::NotFound,
            "KeyId",
        ),
        (
            Operation::TagResource(TagResource {
                key_id: &k,
                tags: tag_list(&[("a", "1"), ("aws:x", "1")]),
            }),
            ErrorKind::Tag,
            "Tags[1].TagKey",
        ),
        (
            Operation::TagResource(TagResource {
                key_id: &k,
                tags: tag_list(&[("a", "1"), ("b", "1")]),
            }),
            ErrorKind::LimitExceeded,
            "max_tags_per_key",
        ),
        (
            Operation::TagResource(TagResource {
                key_id: &k,
                tags: tag_list(&[(&long_tag, "1")]),
            }),
            ErrorKind::Validation,
            "TagKey",
        ),
        (
            Operation::ListResourceTags(ListResourceTags {
                key_id: &k,
                limit: 0,
                marker: Some("not-a-marker"),
            }),
            ErrorKind::InvalidMarker,
            "Marker",
        ),
        (
            Operation::ListAliases(ListAliases {
                key_id: None,
                limit: 1001,
                marker: None,
            }),
            ErrorKind::Validation,
            "Limit",
        ),
        (
            Operation::CreateKey(CreateKey {
                tags: tag_list(&[("a", "1"), ("b", "1"), ("c", "1")]),
                ..Default::default()
            }),
            ErrorKind::Tag,
            "Tags",
        ),
    ];
    let keys_before = match call(&mut c, Operation::ListKeys(ListKeys::default())) {
        Output::ListKeys(l) => l.keys.len(),
        o => panic!("{o:?}"),
    };
    for (op, kind, needle) in cases {
        let name = op.name();
        let e = refused(&mut c, op);
        assert_eq!(e.kind, kind, "{name}: {e}");
        assert!(e.message.contains(needle), "{name}: {e}");
        assert_eq!(snapshot(&mut c), before, "{name} changed something");
    }
    let keys_after = match call(&mut c, Operation::ListKeys(ListKeys::default())) {
        Output::ListKeys(l) => l.keys.len(),
        o => panic!("{o:?}"),
    };
    assert_eq!(keys_after, keys_before, "a refused CreateKey made a key");
    // The alias limit: a third alias of one key, directly or moved there.
    create_alias(&mut c, "alias/k2", &k);
    let e = refused(
        &mut c,
        Operation::CreateAlias(CreateAlias {
            alias_name: "alias/k3",
            target_key_id: &k,
        }),
    );
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert!(e.message.contains("max_aliases_per_key"), "{e}");
    let e = refused(
        &mut c,
        Operation::UpdateAlias(UpdateAlias {
            alias_name: "alias/other",
            target_key_id: &k,
        }),
    );
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert_eq!(aliases(&mut c, Some(&k)).len(), 2);
    assert_eq!(aliases(&mut c, Some(&other)).len(), 1);
    // The daemon is still up and answering.
    assert_eq!(describe(&mut c, "alias/k2").key_id, k);
}

#[test]
fn aliases_and_tags_survive_a_restart_and_external_keys_wait_for_material() {
    let mut d = Daemon::start(&[]);
    let (key, ext) = {
        let mut c = d.client();
        let key = create_key(&mut c, CreateKey::default()).key_id;
        create_alias(&mut c, "alias/durable", &key);
        let ext = create_key(
            &mut c,
            CreateKey {
                origin: Origin::External,
                tags: tag_list(&[("imported", "yes")]),
                ..Default::default()
            },
        );
        assert_eq!(
            (ext.key_state, ext.current_version, ext.origin),
            (KeyState::PendingImport, 0, Origin::External)
        );
        create_alias(&mut c, "alias/external", &ext.key_id);
        (key, ext.key_id)
    };
    d.restart();
    let mut c = d.client();
    assert_eq!(
        encrypt(&mut c, "alias/durable").unwrap().key_id,
        key_arn(&key)
    );
    assert_eq!(
        describe(&mut c, "alias/external").key_state,
        KeyState::PendingImport
    );
    assert_eq!(tags(&mut c, &ext), pairs(&[("imported", "yes")]));
    for key_id in [ext.as_str(), "alias/external"] {
        let e = encrypt(&mut c, key_id).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::KmsInvalidState));
        assert!(e.to_string().contains("pending import"), "{e}");
    }
}
