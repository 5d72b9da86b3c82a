//! Responses: encoded by the daemon ([`encode_response`] into a builder
//! sized by [`response_size_hint`] so that it never grows while it holds
//! plaintext, [`encode_error_response`] where no builder is at hand),
//! verified and decoded by the clients ([`decode_response`]), or only
//! counted ([`tally_response`]) by a load generator.

use super::verify::response_verifier_options;
use super::{origin_to_wire, Fbb, PROTOCOL_VERSION};
use crate::error::{ErrorKind, KmsError};
use crate::frame::write_frame;
use crate::generated as fb;
use crate::types::*;
use flatbuffers::{FlatBufferBuilder, Vector, WIPOffset};

fn put_error<'b>(fbb: &mut Fbb<'b>, e: &KmsError) -> WIPOffset<fb::Error<'b>> {
    let name = Some(fbb.create_string(e.kind.name()));
    let message = Some(fbb.create_string(&e.message));
    fb::Error::create(fbb, &fb::ErrorArgs { name, message })
}

fn put_metadata<'b>(fbb: &mut Fbb<'b>, m: &KeyMetadata) -> WIPOffset<fb::KeyMetadata<'b>> {
    let key_id = Some(fbb.create_string(&m.key_id));
    let arn = Some(fbb.create_string(&m.arn));
    let description = Some(fbb.create_string(&m.description));
    fb::KeyMetadata::create(
        fbb,
        &fb::KeyMetadataArgs {
            key_id,
            arn,
            creation_date: m.creation_date,
            enabled: m.enabled,
            description,
            key_state: match m.key_state {
                KeyState::Enabled => fb::KeyState::Enabled,
                KeyState::Disabled => fb::KeyState::Disabled,
                KeyState::PendingDeletion => fb::KeyState::PendingDeletion,
                KeyState::PendingImport => fb::KeyState::PendingImport,
                KeyState::Unavailable => fb::KeyState::Unavailable,
            },
            key_usage: fb::KeyUsage::ENCRYPT_DECRYPT,
            key_spec: fb::KeySpec::SYMMETRIC_DEFAULT,
            origin: origin_to_wire(m.origin),
            current_version: m.current_version,
            ..Default::default()
        },
    )
}

fn put_output(
    fbb: &mut Fbb<'_>,
    o: &Output,
) -> (fb::Output, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match o {
        Output::CreateKey(m) => {
            let metadata = Some(put_metadata(fbb, m));
            let t = fb::CreateKeyResponse::create(fbb, &fb::CreateKeyResponseArgs { metadata });
            (fb::Output::CreateKeyResponse, t.as_union_value())
        }
        Output::DescribeKey(m) => {
            let metadata = Some(put_metadata(fbb, m));
            let t = fb::DescribeKeyResponse::create(fbb, &fb::DescribeKeyResponseArgs { metadata });
            (fb::Output::DescribeKeyResponse, t.as_union_value())
        }
        Output::ListKeys(l) => {
            let keys: Vec<_> = l
                .keys
                .iter()
                .map(|k| {
                    let key_id = Some(fbb.create_string(&k.key_id));
                    let arn = Some(fbb.create_string(&k.arn));
                    fb::KeyListEntry::create(fbb, &fb::KeyListEntryArgs { key_id, arn })
                })
                .collect();
            let keys = Some(fbb.create_vector(&keys));
            let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
            let t = fb::ListKeysResponse::create(
                fbb,
                &fb::ListKeysResponseArgs {
                    keys,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListKeysResponse, t.as_union_value())
        }
        Output::GenerateDataKey(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let plaintext = Some(fbb.create_vector(r.plaintext.expose()));
            let ciphertext_blob = Some(fbb.create_vector(&r.ciphertext_blob));
            let t = fb::GenerateDataKeyResponse::create(
                fbb,
                &fb::GenerateDataKeyResponseArgs {
                    key_id,
                    plaintext,
                    ciphertext_blob,
                },
            );
            (fb::Output::GenerateDataKeyResponse, t.as_union_value())
        }
        Output::GenerateDataKeyWithoutPlaintext(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let ciphertext_blob = Some(fbb.create_vector(&r.ciphertext_blob));
            let t = fb::GenerateDataKeyWithoutPlaintextResponse::create(
                fbb,
                &fb::GenerateDataKeyWithoutPlaintextResponseArgs {
                    key_id,
                    ciphertext_blob,
                },
            );
            (
                fb::Output::GenerateDataKeyWithoutPlaintextResponse,
                t.as_union_value(),
            )
        }
        Output::Encrypt(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let ciphertext_blob = Some(fbb.create_vector(&r.ciphertext_blob));
            let t = fb::EncryptResponse::create(
                fbb,
                &fb::EncryptResponseArgs {
                    key_id,
                    ciphertext_blob,
                },
            );
            (fb::Output::EncryptResponse, t.as_union_value())
        }
        Output::Decrypt(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let plaintext = Some(fbb.create_vector(r.plaintext.expose()));
            let t =
                fb::DecryptResponse::create(fbb, &fb::DecryptResponseArgs { key_id, plaintext });
            (fb::Output::DecryptResponse, t.as_union_value())
        }
        Output::ReEncrypt(r) => {
            let source_key_id = Some(fbb.create_string(&r.source_key_id));
            let key_id = Some(fbb.create_string(&r.key_id));
            let ciphertext_blob = Some(fbb.create_vector(&r.ciphertext_blob));
            let t = fb::ReEncryptResponse::create(
                fbb,
                &fb::ReEncryptResponseArgs {
                    source_key_id,
                    key_id,
                    ciphertext_blob,
                },
            );
            (fb::Output::ReEncryptResponse, t.as_union_value())
        }
        Output::GenerateRandom(r) => {
            let plaintext = Some(fbb.create_vector(r.plaintext.expose()));
            let t = fb::GenerateRandomResponse::create(
                fbb,
                &fb::GenerateRandomResponseArgs { plaintext },
            );
            (fb::Output::GenerateRandomResponse, t.as_union_value())
        }
        _ => todo!("wire: lifecycle operations"),
    }
}

fn put_outcome<'b>(fbb: &mut Fbb<'b>, o: &Outcome) -> WIPOffset<fb::Outcome<'b>> {
    match o {
        Ok(out) => {
            let (output_type, off) = put_output(fbb, out);
            fb::Outcome::create(
                fbb,
                &fb::OutcomeArgs {
                    output_type,
                    output: Some(off),
                    error: None,
                },
            )
        }
        Err(e) => {
            let error = Some(put_error(fbb, e));
            fb::Outcome::create(
                fbb,
                &fb::OutcomeArgs {
                    output_type: fb::Output::NONE,
                    output: None,
                    error,
                },
            )
        }
    }
}

/// An upper bound of the encoded size of `resp`, so that a builder created
/// with this capacity never grows. Growing copies the buffer and frees the old
/// one without zeroizing it, which would leave plaintext behind.
pub fn response_size_hint(resp: &Response) -> usize {
    fn output(o: &Outcome) -> usize {
        // Tables, vtables, offsets and alignment padding stay well under 256
        // bytes per outcome in this schema; variable parts are added exactly.
        256 + match o {
            Err(e) => e.message.len() + e.kind.name().len(),
            Ok(Output::CreateKey(m)) | Ok(Output::DescribeKey(m)) => {
                m.key_id.len() + m.arn.len() + m.description.len()
            }
            Ok(Output::ListKeys(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.keys
                        .iter()
                        .map(|k| 64 + k.key_id.len() + k.arn.len())
                        .sum::<usize>()
            }
            Ok(Output::GenerateDataKey(r)) => {
                r.key_id.len() + r.plaintext.len() + r.ciphertext_blob.len()
            }
            Ok(Output::GenerateDataKeyWithoutPlaintext(r)) => {
                r.key_id.len() + r.ciphertext_blob.len()
            }
            Ok(Output::Encrypt(r)) => r.key_id.len() + r.ciphertext_blob.len(),
            Ok(Output::Decrypt(r)) => r.key_id.len() + r.plaintext.len(),
            Ok(Output::ReEncrypt(r)) => {
                r.source_key_id.len() + r.key_id.len() + r.ciphertext_blob.len()
            }
            Ok(Output::GenerateRandom(r)) => r.plaintext.len(),
            Ok(_) => 0,
        }
    }
    128 + match &resp.body {
        ResponseBody::Error(e) => 256 + e.message.len(),
        ResponseBody::Single(o) => output(o),
        ResponseBody::Batch(items) => items.iter().map(|o| 8 + output(o)).sum(),
    }
}

/// Appends `resp` to `out` as a frame. The builder is reset first (which
/// zeroes what the previous message left in it).
pub fn encode_response(fbb: &mut Fbb<'_>, resp: &Response, out: &mut Vec<u8>) {
    fbb.reset();
    let (error, outcome, batch) = match &resp.body {
        ResponseBody::Error(e) => (Some(put_error(fbb, e)), None, None),
        ResponseBody::Single(o) => (None, Some(put_outcome(fbb, o)), None),
        ResponseBody::Batch(items) => {
            let items: Vec<_> = items.iter().map(|o| put_outcome(fbb, o)).collect();
            (None, None, Some(fbb.create_vector(&items)))
        }
    };
    let root = fb::Response::create(
        fbb,
        &fb::ResponseArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: resp.request_id,
            error,
            outcome,
            batch,
        },
    );
    fbb.finish_minimal(root);
    write_frame(out, fbb.finished_data());
    // Zero the builder's copy now rather than at the next reset: it may hold
    // plaintext.
    fbb.reset();
}

/// Encodes a frame-level error response (used where no builder is at hand,
/// e.g. for overload answers on an I/O thread).
pub fn encode_error_response(request_id: u64, error: &KmsError, out: &mut Vec<u8>) {
    let resp = Response {
        request_id,
        body: ResponseBody::Error(error.clone()),
    };
    let mut fbb = FlatBufferBuilder::with_capacity(response_size_hint(&resp));
    encode_response(&mut fbb, &resp, out);
}

fn malformed(what: &str) -> KmsError {
    KmsError::new(
        ErrorKind::Serialization,
        format!("malformed response: {what}"),
    )
}

fn owned(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn bytes_of(v: Option<Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

fn secret_of(v: Option<Vector<'_, u8>>) -> SecretBytes {
    SecretBytes::from_slice(v.map(|v| v.bytes()).unwrap_or_default())
}

fn read_metadata(m: Option<fb::KeyMetadata<'_>>) -> Result<KeyMetadata, KmsError> {
    let m = m.ok_or_else(|| malformed("missing metadata"))?;
    Ok(KeyMetadata {
        key_id: owned(m.key_id()),
        arn: owned(m.arn()),
        creation_date: m.creation_date(),
        enabled: m.enabled(),
        description: owned(m.description()),
        key_state: match m.key_state() {
            fb::KeyState::Enabled => KeyState::Enabled,
            fb::KeyState::Disabled => KeyState::Disabled,
            fb::KeyState::PendingDeletion => KeyState::PendingDeletion,
            fb::KeyState::PendingImport => KeyState::PendingImport,
            _ => return Err(malformed("unknown key state")),
        },
        key_usage: KeyUsage::EncryptDecrypt,
        key_spec: KeySpec::SymmetricDefault,
        origin: match m.origin() {
            fb::Origin::EXTERNAL => Origin::External,
            fb::Origin::HSM => Origin::Hsm,
            _ => Origin::Kmsd,
        },
        current_version: m.current_version(),
        ..Default::default()
    })
}

fn read_outcome(o: fb::Outcome<'_>) -> Outcome {
    if let Some(e) = o.error() {
        return Err(KmsError::from_wire(
            e.name().unwrap_or_default(),
            e.message().unwrap_or_default(),
        ));
    }
    let missing = || malformed("output type is set but its table is missing");
    Ok(match o.output_type() {
        fb::Output::CreateKeyResponse => {
            let r = o.output_as_create_key_response().ok_or_else(missing)?;
            Output::CreateKey(read_metadata(r.metadata())?)
        }
        fb::Output::DescribeKeyResponse => {
            let r = o.output_as_describe_key_response().ok_or_else(missing)?;
            Output::DescribeKey(read_metadata(r.metadata())?)
        }
        fb::Output::ListKeysResponse => {
            let r = o.output_as_list_keys_response().ok_or_else(missing)?;
            Output::ListKeys(ListKeysOutput {
                keys: r
                    .keys()
                    .map(|v| {
                        v.iter()
                            .map(|k| KeyListEntry {
                                key_id: owned(k.key_id()),
                                arn: owned(k.arn()),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::GenerateDataKeyResponse => {
            let r = o
                .output_as_generate_data_key_response()
                .ok_or_else(missing)?;
            Output::GenerateDataKey(GenerateDataKeyOutput {
                key_id: owned(r.key_id()),
                plaintext: secret_of(r.plaintext()),
                ciphertext_blob: bytes_of(r.ciphertext_blob()),
            })
        }
        fb::Output::GenerateDataKeyWithoutPlaintextResponse => {
            let r = o
                .output_as_generate_data_key_without_plaintext_response()
                .ok_or_else(missing)?;
            Output::GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput {
                key_id: owned(r.key_id()),
                ciphertext_blob: bytes_of(r.ciphertext_blob()),
            })
        }
        fb::Output::EncryptResponse => {
            let r = o.output_as_encrypt_response().ok_or_else(missing)?;
            Output::Encrypt(EncryptOutput {
                key_id: owned(r.key_id()),
                ciphertext_blob: bytes_of(r.ciphertext_blob()),
            })
        }
        fb::Output::DecryptResponse => {
            let r = o.output_as_decrypt_response().ok_or_else(missing)?;
            Output::Decrypt(DecryptOutput {
                key_id: owned(r.key_id()),
                plaintext: secret_of(r.plaintext()),
            })
        }
        fb::Output::ReEncryptResponse => {
            let r = o.output_as_re_encrypt_response().ok_or_else(missing)?;
            Output::ReEncrypt(ReEncryptOutput {
                source_key_id: owned(r.source_key_id()),
                key_id: owned(r.key_id()),
                ciphertext_blob: bytes_of(r.ciphertext_blob()),
            })
        }
        fb::Output::GenerateRandomResponse => {
            let r = o.output_as_generate_random_response().ok_or_else(missing)?;
            Output::GenerateRandom(GenerateRandomOutput {
                plaintext: secret_of(r.plaintext()),
            })
        }
        fb::Output::NONE => return Err(malformed("outcome has neither output nor error")),
        other => return Err(malformed(&format!("unknown output type {}", other.0))),
    })
}

/// Verifies and reads a response frame (without its length prefix).
pub fn decode_response(buf: &[u8], max_frame: usize) -> Result<Response, KmsError> {
    let r = flatbuffers::root_with_opts::<fb::Response>(&response_verifier_options(max_frame), buf)
        .map_err(|e| malformed(&e.to_string()))?;
    let body = if let Some(e) = r.error() {
        ResponseBody::Error(KmsError::from_wire(
            e.name().unwrap_or_default(),
            e.message().unwrap_or_default(),
        ))
    } else if let Some(o) = r.outcome() {
        ResponseBody::Single(read_outcome(o))
    } else if let Some(items) = r.batch() {
        ResponseBody::Batch(items.iter().map(read_outcome).collect())
    } else {
        return Err(malformed("response has no error, outcome or batch"));
    };
    Ok(Response {
        request_id: r.request_id(),
        body,
    })
}

/// A response read only as far as a load generator or a monitor needs: its
/// request id, how many items it answered, and the exception name of each
/// failed item (passed to `on_error`). The frame is verified like
/// `decode_response`, but no output is copied.
pub fn tally_response(
    buf: &[u8],
    max_frame: usize,
    mut on_error: impl FnMut(&str),
) -> Result<ResponseTally, KmsError> {
    let r = flatbuffers::root_with_opts::<fb::Response>(&response_verifier_options(max_frame), buf)
        .map_err(|e| malformed(&e.to_string()))?;
    let mut tally = ResponseTally {
        request_id: r.request_id(),
        items: 0,
        failed: 0,
        frame_error: r.error().is_some(),
    };
    let mut count = |o: Option<fb::Error<'_>>| {
        tally.items += 1;
        if let Some(e) = o {
            tally.failed += 1;
            on_error(e.name().unwrap_or_default());
        }
    };
    if let Some(e) = r.error() {
        count(Some(e));
    } else if let Some(o) = r.outcome() {
        count(o.error());
    } else if let Some(items) = r.batch() {
        for o in items.iter() {
            count(o.error());
        }
    } else {
        return Err(malformed("response has no error, outcome or batch"));
    }
    Ok(tally)
}

/// What `tally_response` counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseTally {
    /// The request id the response answers.
    pub request_id: u64,
    /// Items answered (1 for a single operation or a frame-level error).
    pub items: u32,
    /// Items that carry an error.
    pub failed: u32,
    /// The whole frame was refused (its one error stands for every item).
    pub frame_error: bool,
}
