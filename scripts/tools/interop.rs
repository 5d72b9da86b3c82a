//! The Rust side of scripts/schema-portability.sh.
//!
//! - `kms-interop write-responses FILE`: writes the response frames of
//!   [`responses`] (kms_proto::encode_response) for Python and C++ to decode
//!   and check (scripts/portability/interop.py, interop.cpp hold the same
//!   expected values).
//! - `kms-interop check-requests FILE LABEL`: decodes FILE, a stream of
//!   request frames built by another language, with
//!   kms_proto::decode_request and demands exactly [`expected_requests`].
//!
//! Exits non-zero (with a message naming LABEL) on any difference.

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use kms_proto::frame::FrameDecoder;
use kms_proto::*;
use std::process::ExitCode;

/// What the Python and C++ programs build, frame by frame.
fn expected_requests() -> Vec<Request<'static>> {
    vec![
        Request {
            request_id: 1001,
            body: RequestBody::Batch(vec![
                Ok(Operation::GenerateRandom(GenerateRandom {
                    number_of_bytes: 32,
                })),
                Ok(Operation::Encrypt(Encrypt {
                    key_id: "alias/interop",
                    plaintext: b"hello from another language",
                    context: vec![("tenant", "acme"), ("purpose", "interop")],
                    ..Default::default()
                })),
            ]),
        },
        Request {
            request_id: 1002,
            body: RequestBody::Single(Ok(Operation::GenerateDataKey(GenerateDataKey {
                key_id: "alias/interop",
                number_of_bytes: None,
                key_spec: Some(DataKeySpec::Aes256),
                context: vec![("tenant", "acme")],
                ..Default::default()
            }))),
        },
        Request {
            request_id: 1003,
            body: RequestBody::Single(Ok(Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &[1, 2, 3, 255],
                source_key_id: None,
                source_context: Vec::new(),
                destination_key_id: "alias/next",
                destination_context: vec![("k", "v")],
                ..Default::default()
            }))),
        },
        // Key lifecycle: 0 is a value, not "absent"; absent stays absent.
        Request {
            request_id: 1004,
            body: RequestBody::Batch(vec![
                Ok(Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                    key_id: "k-1",
                    pending_window_in_days: Some(0),
                })),
                Ok(Operation::EnableKeyRotation(EnableKeyRotation {
                    key_id: "k-1",
                    rotation_period_in_days: None,
                })),
                Ok(Operation::TagResource(TagResource {
                    key_id: "k-1",
                    tags: vec![Tag {
                        key: "team",
                        value: "pay",
                    }],
                })),
            ]),
        },
    ]
}

fn metadata() -> KeyMetadata {
    KeyMetadata {
        key_id: "k-1".into(),
        arn: "arn:aws:kms:us-east-1:000000000000:key/k-1".into(),
        creation_date: 1_700_000_000,
        enabled: true,
        description: "interop key".into(),
        key_state: KeyState::Enabled,
        key_usage: KeyUsage::EncryptDecrypt,
        key_spec: KeySpec::SymmetricDefault,
        origin: Origin::Kmsd,
        current_version: 1,
        ..KeyMetadata::default()
    }
}

/// What the Python and C++ programs check, frame by frame.
fn responses() -> Vec<Response> {
    vec![
        Response {
            request_id: 1001,
            body: ResponseBody::Batch(vec![
                Ok(Output::CreateKey(metadata())),
                Ok(Output::DescribeKey(KeyMetadata {
                    enabled: false,
                    key_state: KeyState::Disabled,
                    origin: Origin::External,
                    current_version: 2,
                    ..metadata()
                })),
                Ok(Output::ListKeys(ListKeysOutput {
                    keys: vec![
                        KeyListEntry {
                            key_id: "k-1".into(),
                            arn: "arn:aws:kms:us-east-1:000000000000:key/k-1".into(),
                        },
                        KeyListEntry {
                            key_id: "k-2".into(),
                            arn: "arn:aws:kms:us-east-1:000000000000:key/k-2".into(),
                        },
                    ],
                    next_marker: Some("k-2".into()),
                    truncated: true,
                })),
                Ok(Output::GenerateDataKey(GenerateDataKeyOutput {
                    key_id: "k-1".into(),
                    plaintext: SecretBytes::new((0..32).collect()),
                    ciphertext_blob: vec![0xd0; 8],
                })),
                Ok(Output::GenerateDataKeyWithoutPlaintext(
                    GenerateDataKeyWithoutPlaintextOutput {
                        key_id: "k-1".into(),
                        ciphertext_blob: vec![0xd1; 8],
                    },
                )),
                Ok(Output::Encrypt(EncryptOutput {
                    key_id: "k-1".into(),
                    ciphertext_blob: b"ciphertext".to_vec(),
                })),
                Ok(Output::Decrypt(DecryptOutput {
                    key_id: "k-1".into(),
                    plaintext: SecretBytes::from_slice(b"hello from rust"),
                })),
                Ok(Output::ReEncrypt(ReEncryptOutput {
                    source_key_id: "k-1".into(),
                    key_id: "k-2".into(),
                    ciphertext_blob: vec![0xe0, 0xe1],
                })),
                Ok(Output::GenerateRandom(GenerateRandomOutput {
                    plaintext: SecretBytes::from_slice(&[7; 16]),
                })),
                Err(KmsError::new(ErrorKind::NotFound, "key k-9 does not exist")),
            ]),
        },
        Response {
            request_id: 1002,
            body: ResponseBody::Error(KmsError::validation("unsupported protocol version 9")),
        },
        Response {
            request_id: 1003,
            body: ResponseBody::Single(Err(KmsError::new(
                ErrorKind::Disabled,
                "key k-1 is disabled",
            ))),
        },
        // Key lifecycle: optional scalars set and absent, tags.
        Response {
            request_id: 1004,
            body: ResponseBody::Batch(vec![
                Ok(Output::DescribeKey(KeyMetadata {
                    enabled: false,
                    key_state: KeyState::PendingDeletion,
                    origin: Origin::External,
                    deletion_date: Some(1_700_604_800),
                    pending_deletion_window_in_days: Some(7),
                    ..metadata()
                })),
                Ok(Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
                    key_id: "k-1".into(),
                    key_rotation_enabled: true,
                    rotation_period_in_days: Some(365),
                    next_rotation_date: Some(1_731_536_000),
                    on_demand_rotation_start_date: None,
                })),
                Ok(Output::ListResourceTags(ListResourceTagsOutput {
                    tags: vec![
                        OwnedTag {
                            key: "team".into(),
                            value: "pay".into(),
                        },
                        OwnedTag {
                            key: "empty".into(),
                            value: String::new(),
                        },
                    ],
                    next_marker: None,
                    truncated: false,
                })),
            ]),
        },
    ]
}

fn write_responses(path: &str) -> Result<(), String> {
    let mut fbb = FlatBufferBuilder::new();
    let mut out = Vec::new();
    for r in responses() {
        encode_response(&mut fbb, &r, &mut out);
    }
    std::fs::write(path, &out).map_err(|e| format!("{path}: {e}"))
}

fn check_requests(path: &str) -> Result<usize, String> {
    let stream = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let dec = FrameDecoder::default();
    let mut buf = BytesMut::from(&stream[..]);
    let mut frames = Vec::new();
    while let Some(frame) = dec.decode(&mut buf).map_err(|e| format!("framing: {e}"))? {
        frames.push(frame);
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes after the last whole frame", buf.len()));
    }
    let want = expected_requests();
    if frames.len() != want.len() {
        return Err(format!("{} frames, expected {}", frames.len(), want.len()));
    }
    for (i, (frame, want)) in frames.iter().zip(&want).enumerate() {
        let got = decode_request(frame, &DecodeLimits::default())
            .map_err(|e| format!("frame {i}: {}", e.error))?;
        if &got != want {
            return Err(format!(
                "frame {i} decoded to\n  {got:?}\nexpected\n  {want:?}"
            ));
        }
    }
    Ok(frames.len())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["write-responses", path] => write_responses(path),
        ["check-requests", path, label] => match check_requests(path) {
            Ok(n) => {
                println!("kms-interop: {label}: {n} request frames decode as expected");
                Ok(())
            }
            Err(e) => Err(format!("{label}: {e}")),
        },
        _ => Err("usage: kms-interop write-responses FILE | check-requests FILE LABEL".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-interop: {e}");
            ExitCode::FAILURE
        }
    }
}
