//! AWS KMS's key-state table, through the socket of a real daemon: for
//! every state a key can be driven into (Enabled, Disabled,
//! PendingDeletion, PendingImport), of both origins (AWS_KMS: kmsd made the
//! material; EXTERNAL: imported), every lifecycle and data-plane operation
//! on a key in that state gets AWS's outcome: success, or the exception
//! AWS names. A refused operation changes nothing (state, aliases, tags,
//! description, rotation status: compared before and after).
//!
//! The table is written here from AWS's documentation ("Key states of AWS
//! KMS keys", the key-state effect table, and each operation's API
//! reference), independently of src/service/lifecycle.rs. Cells AWS's
//! documents leave open (which of two refusals comes first for a key of
//! the wrong origin in a refused state) are not asserted: [`aws`] answers
//! `None` for them, with the reason.

use crate::life::*;
use crate::support::Daemon;
use kms_proto::client::Client;
use kms_proto::*;

/// The operations of the table. An operation with two key roles has a
/// row per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    /// ReEncrypt of a blob of the key, to another (Enabled) key.
    ReEncryptFrom,
    /// ReEncrypt of another key's blob to the key.
    ReEncryptTo,
    GenerateDataKey,
    GenerateDataKeyWithoutPlaintext,
    DescribeKey,
    ListAliases,
    ListResourceTags,
    GetKeyRotationStatus,
    ListKeyRotations,
    DeleteAlias,
    CreateAlias,
    /// UpdateAlias of an alias of the key, to another (Enabled) key.
    UpdateAliasFrom,
    /// UpdateAlias of another key's alias, to the key.
    UpdateAliasTo,
    TagResource,
    UntagResource,
    UpdateKeyDescription,
    EnableKey,
    DisableKey,
    EnableKeyRotation,
    DisableKeyRotation,
    RotateKeyOnDemand,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    GetParametersForImport,
    ImportKeyMaterial,
    DeleteImportedKeyMaterial,
}

const OPS: [Op; 28] = [
    Op::Encrypt,
    Op::Decrypt,
    Op::ReEncryptFrom,
    Op::ReEncryptTo,
    Op::GenerateDataKey,
    Op::GenerateDataKeyWithoutPlaintext,
    Op::DescribeKey,
    Op::ListAliases,
    Op::ListResourceTags,
    Op::GetKeyRotationStatus,
    Op::ListKeyRotations,
    Op::DeleteAlias,
    Op::CreateAlias,
    Op::UpdateAliasFrom,
    Op::UpdateAliasTo,
    Op::TagResource,
    Op::UntagResource,
    Op::UpdateKeyDescription,
    Op::EnableKey,
    Op::DisableKey,
    Op::EnableKeyRotation,
    Op::DisableKeyRotation,
    Op::RotateKeyOnDemand,
    Op::ScheduleKeyDeletion,
    Op::CancelKeyDeletion,
    Op::GetParametersForImport,
    Op::ImportKeyMaterial,
    Op::DeleteImportedKeyMaterial,
];

/// AWS's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Succeeds; the key's state is unchanged.
    Ok,
    /// Succeeds; the key is in this state afterwards.
    OkThen(KeyState),
    /// Refused with this exception; nothing changes.
    Err(ErrorKind),
}

/// AWS's key-state table: the outcome of `op` on a key of `origin` in
/// `state`, or None where AWS's documents leave it open.
fn aws(op: Op, origin: Origin, state: KeyState) -> Option<Expect> {
    use ErrorKind::{Disabled, KmsInvalidState, UnsupportedOperation};
    use Expect::{Err, Ok, OkThen};
    use KeyState::{Enabled, PendingDeletion, PendingImport};
    let external = origin == Origin::External;
    Some(match op {
        // Cryptographic operations: Enabled only. Disabled:
        // "DisabledException: <key> is disabled"; pending deletion and
        // pending import: KMSInvalidStateException.
        Op::Encrypt
        | Op::Decrypt
        | Op::ReEncryptFrom
        | Op::ReEncryptTo
        | Op::GenerateDataKey
        | Op::GenerateDataKeyWithoutPlaintext => match state {
            Enabled => Ok,
            KeyState::Disabled => Err(Disabled),
            _ => Err(KmsInvalidState),
        },
        // "DescribeKey, ListAliases, ListResourceTags, DeleteAlias: OK in
        // all states"; GetKeyRotationStatus and ListKeyRotations read too
        // (their API references list no state error).
        Op::DescribeKey
        | Op::ListAliases
        | Op::ListResourceTags
        | Op::DeleteAlias
        | Op::GetKeyRotationStatus
        | Op::ListKeyRotations => Ok,
        // "CreateAlias, TagResource, UntagResource, UpdateKeyDescription:
        // every state but PendingDeletion"; UpdateAlias: "the source key
        // may be pending deletion, the target may not".
        Op::CreateAlias
        | Op::TagResource
        | Op::UntagResource
        | Op::UpdateKeyDescription
        | Op::UpdateAliasTo => match state {
            PendingDeletion => Err(KmsInvalidState),
            _ => Ok,
        },
        Op::UpdateAliasFrom => Ok,
        // EnableKey / DisableKey: Enabled and Disabled; pending deletion
        // and pending import: KMSInvalidStateException.
        Op::EnableKey | Op::DisableKey => match state {
            Enabled | KeyState::Disabled => OkThen(if op == Op::EnableKey {
                Enabled
            } else {
                KeyState::Disabled
            }),
            _ => Err(KmsInvalidState),
        },
        // Enable/DisableKeyRotation: symmetric keys with material KMS
        // generated, Enabled; Disabled: DisabledException; pending
        // deletion: KMSInvalidStateException; imported material (and
        // PendingImport, footnote 6): UnsupportedOperationException.
        Op::EnableKeyRotation | Op::DisableKeyRotation => match (external, state) {
            (false, Enabled) => Ok,
            (false, KeyState::Disabled) => Err(Disabled),
            (false, _) => Err(KmsInvalidState),
            (true, Enabled | PendingImport) => Err(UnsupportedOperation),
            // Imported and refused by state too: which refusal comes
            // first is not documented.
            (true, _) => return None,
        },
        // RotateKeyOnDemand (API reference: DisabledException,
        // KMSInvalidStateException) as the rotation row. Imported keys
        // rotate on demand in AWS only with new material imported
        // PENDING_ROTATION, which kmsd's import has no way to name: open.
        Op::RotateKeyOnDemand => match (external, state) {
            (false, Enabled) => Ok,
            (false, KeyState::Disabled) => Err(Disabled),
            (false, _) => Err(KmsInvalidState),
            (true, _) => return None,
        },
        // ScheduleKeyDeletion: every state but PendingDeletion; the key
        // is then PendingDeletion.
        Op::ScheduleKeyDeletion => match state {
            PendingDeletion => Err(KmsInvalidState),
            _ => OkThen(PendingDeletion),
        },
        // CancelKeyDeletion: PendingDeletion only ("is not pending
        // deletion"); the key is then Disabled.
        Op::CancelKeyDeletion => match state {
            PendingDeletion => OkThen(KeyState::Disabled),
            _ => Err(KmsInvalidState),
        },
        // GetParametersForImport / ImportKeyMaterial: EXTERNAL keys in
        // Enabled, Disabled (footnote 9: re-import of the same material)
        // and PendingImport (which the import ends: Enabled); pending
        // deletion: KMSInvalidStateException. Another origin:
        // UnsupportedOperationException.
        Op::GetParametersForImport | Op::ImportKeyMaterial => match (external, state) {
            (true, PendingDeletion) => Err(KmsInvalidState),
            (true, PendingImport) if op == Op::ImportKeyMaterial => OkThen(Enabled),
            (true, _) => Ok,
            (false, Enabled | KeyState::Disabled) if op == Op::GetParametersForImport => {
                Err(UnsupportedOperation)
            }
            // A key of another origin has no import token to send, and a
            // refused state and the wrong origin together are open.
            (false, _) => return None,
        },
        // DeleteImportedKeyMaterial: EXTERNAL keys in every state (then
        // PendingImport; a key pending deletion stays so; PendingImport:
        // no effect); another origin: UnsupportedOperationException.
        Op::DeleteImportedKeyMaterial => match (external, state) {
            (true, Enabled | KeyState::Disabled) => OkThen(PendingImport),
            (true, _) => Ok,
            (false, _) => Err(UnsupportedOperation),
        },
    })
}

/// A key driven into a state, with what the cells need.
struct Key {
    id: String,
    /// A ciphertext made while it was Enabled.
    blob: Vec<u8>,
    /// An alias made while it was Enabled.
    alias: String,
    /// Its imported material (EXTERNAL keys).
    material: Option<[u8; 32]>,
    /// Import parameters fetched in a state that allows it (EXTERNAL keys).
    params: Option<(Vec<u8>, Vec<u8>)>,
}

/// Everything a refused operation must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    metadata: KeyMetadata,
    aliases: Vec<String>,
    tags: Vec<(String, String)>,
    rotation: Answer,
}

fn snapshot(c: &mut Client, id: &str) -> Snapshot {
    Snapshot {
        metadata: describe(c, id),
        aliases: {
            let mut a = aliases_of(c, id);
            a.sort();
            a
        },
        tags: tags_of(c, id),
        rotation: call(
            c,
            Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: id }),
        ),
    }
}

struct Table {
    d: Daemon,
    c: Client,
    /// An Enabled AWS_KMS key: the other end of ReEncrypt and UpdateAlias.
    other: String,
    other_blob: Vec<u8>,
    n: usize,
}

impl Table {
    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("alias/{what}-{}", self.n)
    }

    /// A new key of `origin` in `state`; `params_for_import`: fetch
    /// import parameters for a later ImportKeyMaterial.
    fn key_in(&mut self, origin: Origin, state: KeyState, params_for_import: bool) -> Key {
        let c = &mut self.c;
        let id = create(c, origin);
        let material = (origin == Origin::External).then(|| {
            let mut m = [0u8; 32];
            kmsd::crypto::rng::fill(&mut m);
            import(c, &id, &m);
            m
        });
        let blob = encrypt(c, &id, id.as_bytes()).expect("Encrypt while Enabled");
        self.n += 1;
        let alias = format!("alias/of-{}", self.n);
        let c = &mut self.c;
        ok(
            c,
            Operation::CreateAlias(CreateAlias {
                alias_name: &alias,
                target_key_id: &id,
            }),
        );
        ok(
            c,
            Operation::TagResource(TagResource {
                key_id: &id,
                tags: vec![Tag {
                    key: "t",
                    value: "v",
                }],
            }),
        );
        let mut params = None;
        let fetch = params_for_import && origin == Origin::External;
        if fetch && state == KeyState::PendingDeletion {
            params = Some(import_parameters(c, &id).unwrap());
        }
        match state {
            KeyState::Enabled => {}
            KeyState::Disabled => {
                ok(c, Operation::DisableKey(DisableKey { key_id: &id }));
            }
            KeyState::PendingDeletion => {
                ok(
                    c,
                    Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                        key_id: &id,
                        pending_window_in_days: Some(7),
                    }),
                );
            }
            KeyState::PendingImport => {
                ok(
                    c,
                    Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: &id }),
                );
            }
            KeyState::Unavailable => unreachable!(),
        }
        if fetch && state != KeyState::PendingDeletion {
            params = Some(import_parameters(c, &id).unwrap());
        }
        assert_eq!(
            crate::life::state(c, &id),
            state,
            "driving {id} to {state:?}"
        );
        Key {
            id,
            blob,
            alias,
            material,
            params,
        }
    }

    /// Runs `op` on `k`.
    fn run(&mut self, op: Op, k: &Key) -> Result<(), ErrorKind> {
        let id = k.id.as_str();
        let answer = match op {
            Op::Encrypt => call(
                &mut self.c,
                Operation::Encrypt(Encrypt {
                    key_id: id,
                    plaintext: b"x",
                    context: vec![],
                    ..Default::default()
                }),
            ),
            Op::Decrypt => call(
                &mut self.c,
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: &k.blob,
                    key_id: None,
                    context: vec![],
                    ..Default::default()
                }),
            )
            .inspect(|o| match o {
                Output::Decrypt(d) => assert_eq!(d.plaintext.expose(), id.as_bytes()),
                other => panic!("{other:?}"),
            }),
            Op::ReEncryptFrom => {
                let other = self.other.clone();
                call(
                    &mut self.c,
                    Operation::ReEncrypt(ReEncrypt {
                        ciphertext_blob: &k.blob,
                        source_key_id: None,
                        source_context: vec![],
                        destination_key_id: &other,
                        destination_context: vec![],
                        ..Default::default()
                    }),
                )
            }
            Op::ReEncryptTo => {
                let blob = self.other_blob.clone();
                call(
                    &mut self.c,
                    Operation::ReEncrypt(ReEncrypt {
                        ciphertext_blob: &blob,
                        source_key_id: None,
                        source_context: vec![],
                        destination_key_id: id,
                        destination_context: vec![],
                        ..Default::default()
                    }),
                )
            }
            Op::GenerateDataKey => call(
                &mut self.c,
                Operation::GenerateDataKey(GenerateDataKey {
                    key_id: id,
                    number_of_bytes: None,
                    key_spec: Some(DataKeySpec::Aes256),
                    context: vec![],
                    ..Default::default()
                }),
            ),
            Op::GenerateDataKeyWithoutPlaintext => call(
                &mut self.c,
                Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
                    key_id: id,
                    number_of_bytes: Some(16),
                    key_spec: None,
                    context: vec![],
                    ..Default::default()
                }),
            ),
            Op::DescribeKey => call(
                &mut self.c,
                Operation::DescribeKey(DescribeKey {
                    key_id: id,
                    ..Default::default()
                }),
            ),
            Op::ListAliases => call(
                &mut self.c,
                Operation::ListAliases(ListAliases {
                    key_id: Some(id),
                    limit: 0,
                    marker: None,
                }),
            ),
            Op::ListResourceTags => call(
                &mut self.c,
                Operation::ListResourceTags(ListResourceTags {
                    key_id: id,
                    limit: 0,
                    marker: None,
                }),
            ),
            Op::GetKeyRotationStatus => call(
                &mut self.c,
                Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: id }),
            ),
            Op::ListKeyRotations => call(
                &mut self.c,
                Operation::ListKeyRotations(ListKeyRotations {
                    key_id: id,
                    limit: 0,
                    marker: None,
                }),
            ),
            Op::DeleteAlias => call(
                &mut self.c,
                Operation::DeleteAlias(DeleteAlias {
                    alias_name: &k.alias,
                }),
            ),
            Op::CreateAlias => {
                let alias = self.name("new");
                call(
                    &mut self.c,
                    Operation::CreateAlias(CreateAlias {
                        alias_name: &alias,
                        target_key_id: id,
                    }),
                )
            }
            Op::UpdateAliasFrom => {
                let other = self.other.clone();
                call(
                    &mut self.c,
                    Operation::UpdateAlias(UpdateAlias {
                        alias_name: &k.alias,
                        target_key_id: &other,
                    }),
                )
            }
            Op::UpdateAliasTo => {
                let alias = self.name("moving");
                let other = self.other.clone();
                ok(
                    &mut self.c,
                    Operation::CreateAlias(CreateAlias {
                        alias_name: &alias,
                        target_key_id: &other,
                    }),
                );
                call(
                    &mut self.c,
                    Operation::UpdateAlias(UpdateAlias {
                        alias_name: &alias,
                        target_key_id: id,
                    }),
                )
            }
            Op::TagResource => call(
                &mut self.c,
                Operation::TagResource(TagResource {
                    key_id: id,
                    tags: vec![Tag {
                        key: "t2",
                        value: "v2",
                    }],
                }),
            ),
            Op::UntagResource => call(
                &mut self.c,
                Operation::UntagResource(UntagResource {
                    key_id: id,
                    tag_keys: vec!["t"],
                }),
            ),
            Op::UpdateKeyDescription => call(
                &mut self.c,
                Operation::UpdateKeyDescription(UpdateKeyDescription {
                    key_id: id,
                    description: "changed",
                }),
            ),
            Op::EnableKey => call(&mut self.c, Operation::EnableKey(EnableKey { key_id: id })),
            Op::DisableKey => call(
                &mut self.c,
                Operation::DisableKey(DisableKey { key_id: id }),
            ),
            Op::EnableKeyRotation => call(
                &mut self.c,
                Operation::EnableKeyRotation(EnableKeyRotation {
                    key_id: id,
                    rotation_period_in_days: Some(90),
                }),
            ),
            Op::DisableKeyRotation => call(
                &mut self.c,
                Operation::DisableKeyRotation(DisableKeyRotation { key_id: id }),
            ),
            Op::RotateKeyOnDemand => call(
                &mut self.c,
                Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: id }),
            ),
            Op::ScheduleKeyDeletion => call(
                &mut self.c,
                Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                    key_id: id,
                    pending_window_in_days: None,
                }),
            ),
            Op::CancelKeyDeletion => call(
                &mut self.c,
                Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: id }),
            ),
            Op::GetParametersForImport => call(
                &mut self.c,
                Operation::GetParametersForImport(GetParametersForImport {
                    key_id: id,
                    wrapping_algorithm: WrappingAlgorithm::RsaesOaepSha256,
                    wrapping_key_spec: WrappingKeySpec::Rsa2048,
                }),
            ),
            Op::ImportKeyMaterial => {
                let params = k.params.as_ref().expect("parameters fetched");
                let material = k.material.expect("an EXTERNAL key");
                import_with(&mut self.c, id, params, &material)
            }
            Op::DeleteImportedKeyMaterial => call(
                &mut self.c,
                Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id: id }),
            ),
        };
        answer.map(|_| ())
    }
}

#[test]
fn every_operation_in_every_state_gets_aws_outcome() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let other = create(&mut c, Origin::Kmsd);
    let other_blob = encrypt(&mut c, &other, b"other").unwrap();
    let mut t = Table {
        d,
        c,
        other,
        other_blob,
        n: 0,
    };
    let rows: [(Origin, KeyState); 7] = [
        (Origin::Kmsd, KeyState::Enabled),
        (Origin::Kmsd, KeyState::Disabled),
        (Origin::Kmsd, KeyState::PendingDeletion),
        (Origin::External, KeyState::Enabled),
        (Origin::External, KeyState::Disabled),
        (Origin::External, KeyState::PendingDeletion),
        (Origin::External, KeyState::PendingImport),
    ];
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (origin, state) in rows {
        for op in OPS {
            let Some(want) = aws(op, origin, state) else {
                continue;
            };
            cells += 1;
            let k = t.key_in(origin, state, op == Op::ImportKeyMaterial);
            let before = snapshot(&mut t.c, &k.id);
            let got = t.run(op, &k);
            let after = snapshot(&mut t.c, &k.id);
            let cell = format!("{op:?} on {origin:?} key {state:?}");
            match (want, &got) {
                (Expect::Err(kind), Err(got_kind)) if kind == *got_kind => {
                    if before != after {
                        wrong.push(format!(
                            "{cell}: refused but changed the key:\n  before {before:?}\n  after  {after:?}"
                        ));
                    }
                }
                (Expect::Ok, Ok(_)) => {
                    if after.metadata.key_state != state {
                        wrong.push(format!(
                            "{cell}: state {:?} afterwards, want {state:?}",
                            after.metadata.key_state
                        ));
                    }
                }
                (Expect::OkThen(s), Ok(_)) => {
                    if after.metadata.key_state != s {
                        wrong.push(format!(
                            "{cell}: state {:?} afterwards, want {s:?}",
                            after.metadata.key_state
                        ));
                    }
                }
                _ => wrong.push(format!(
                    "{cell}: got {}, AWS: {}",
                    match &got {
                        Ok(_) => "success".to_owned(),
                        Err(k) => k.name().to_owned(),
                    },
                    match want {
                        Expect::Ok | Expect::OkThen(_) => "success".to_owned(),
                        Expect::Err(k) => k.name().to_owned(),
                    }
                )),
            }
        }
    }
    assert!(cells >= 170, "{cells} cells asserted");
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells differ from AWS's key-state table:\n{}\nlog:\n{}",
        wrong.len(),
        wrong.join("\n"),
        t.d.log()
    );
}

/// The cells AWS leaves open are few, and named (so that the table above
/// cannot silently shrink).
#[test]
fn the_table_leaves_only_documented_gaps() {
    let mut open = Vec::new();
    for origin in [Origin::Kmsd, Origin::External] {
        for state in [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::PendingImport,
        ] {
            if origin == Origin::Kmsd && state == KeyState::PendingImport {
                continue; // no such key: only EXTERNAL keys wait for material
            }
            for op in OPS {
                if aws(op, origin, state).is_none() {
                    open.push(format!("{op:?}/{origin:?}/{state:?}"));
                }
            }
        }
    }
    assert_eq!(
        open,
        [
            "ImportKeyMaterial/Kmsd/Enabled",
            "ImportKeyMaterial/Kmsd/Disabled",
            "GetParametersForImport/Kmsd/PendingDeletion",
            "ImportKeyMaterial/Kmsd/PendingDeletion",
            "RotateKeyOnDemand/External/Enabled",
            "EnableKeyRotation/External/Disabled",
            "DisableKeyRotation/External/Disabled",
            "RotateKeyOnDemand/External/Disabled",
            "EnableKeyRotation/External/PendingDeletion",
            "DisableKeyRotation/External/PendingDeletion",
            "RotateKeyOnDemand/External/PendingDeletion",
            "RotateKeyOnDemand/External/PendingImport",
        ]
    );
}
