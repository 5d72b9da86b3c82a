//! Requests: verified and decoded in place by the daemon
//! ([`decode_request`], [`request_id_of`] for frames that fail), built by
//! the clients ([`encode_request`], [`build_request`], [`RequestEncoder`])
//! within a size bound computed first ([`request_size_bound`]) so that a
//! builder holding plaintext never grows.

use super::{
    check, expiration_model_to_wire, grant_operation_of, grant_operation_to_wire, origin_to_wire,
    put_pairs, DecodeLimits, Fbb, PROTOCOL_VERSION,
};
use crate::error::{ErrorKind, KmsError};
use crate::frame::write_frame;
use crate::generated as fb;
use crate::types::*;
use flatbuffers::{ForwardsUOffset, Vector, WIPOffset};

/// A request frame that could not be decoded at all. `request_id` is the
/// request's when it could be read, else 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// Id to answer with.
    pub request_id: u64,
    /// Why.
    pub error: KmsError,
}

/// Reads the `operation` union of a `Request` or a `BatchItem` (both have the
/// same generated accessors) into an [`Operation`].
macro_rules! decode_operation {
    ($src:expr) => {{
        let src = &$src;
        match src.operation_type() {
            fb::Operation::CreateKeyRequest => src
                .operation_as_create_key_request()
                .ok_or_else(missing_union)
                .and_then(read_create_key),
            fb::Operation::DescribeKeyRequest => src
                .operation_as_describe_key_request()
                .ok_or_else(missing_union)
                .and_then(read_describe_key),
            fb::Operation::ListKeysRequest => src
                .operation_as_list_keys_request()
                .ok_or_else(missing_union)
                .and_then(read_list_keys),
            fb::Operation::GenerateDataKeyRequest => src
                .operation_as_generate_data_key_request()
                .ok_or_else(missing_union)
                .and_then(|r| {
                    read_generate_data_key(
                        r.key_id(),
                        r.number_of_bytes(),
                        r.key_spec(),
                        r.encryption_context(),
                        (r.grant_tokens(), r.dry_run()),
                    )
                    .map(Operation::GenerateDataKey)
                }),
            fb::Operation::GenerateDataKeyWithoutPlaintextRequest => src
                .operation_as_generate_data_key_without_plaintext_request()
                .ok_or_else(missing_union)
                .and_then(|r| {
                    read_generate_data_key(
                        r.key_id(),
                        r.number_of_bytes(),
                        r.key_spec(),
                        r.encryption_context(),
                        (r.grant_tokens(), r.dry_run()),
                    )
                    .map(Operation::GenerateDataKeyWithoutPlaintext)
                }),
            fb::Operation::EncryptRequest => src
                .operation_as_encrypt_request()
                .ok_or_else(missing_union)
                .and_then(read_encrypt),
            fb::Operation::DecryptRequest => src
                .operation_as_decrypt_request()
                .ok_or_else(missing_union)
                .and_then(read_decrypt),
            fb::Operation::ReEncryptRequest => src
                .operation_as_re_encrypt_request()
                .ok_or_else(missing_union)
                .and_then(read_re_encrypt),
            fb::Operation::GenerateRandomRequest => src
                .operation_as_generate_random_request()
                .ok_or_else(missing_union)
                .map(|r| {
                    Operation::GenerateRandom(GenerateRandom {
                        number_of_bytes: r.number_of_bytes(),
                    })
                }),
            fb::Operation::UpdateKeyDescriptionRequest => src
                .operation_as_update_key_description_request()
                .ok_or_else(missing_union)
                .and_then(read_update_key_description),
            fb::Operation::TagResourceRequest => src
                .operation_as_tag_resource_request()
                .ok_or_else(missing_union)
                .and_then(read_tag_resource),
            fb::Operation::UntagResourceRequest => src
                .operation_as_untag_resource_request()
                .ok_or_else(missing_union)
                .and_then(read_untag_resource),
            fb::Operation::ListResourceTagsRequest => src
                .operation_as_list_resource_tags_request()
                .ok_or_else(missing_union)
                .and_then(read_list_resource_tags),
            fb::Operation::CreateAliasRequest => src
                .operation_as_create_alias_request()
                .ok_or_else(missing_union)
                .and_then(read_create_alias),
            fb::Operation::UpdateAliasRequest => src
                .operation_as_update_alias_request()
                .ok_or_else(missing_union)
                .and_then(read_update_alias),
            fb::Operation::DeleteAliasRequest => src
                .operation_as_delete_alias_request()
                .ok_or_else(missing_union)
                .and_then(read_delete_alias),
            fb::Operation::ListAliasesRequest => src
                .operation_as_list_aliases_request()
                .ok_or_else(missing_union)
                .and_then(read_list_aliases),
            fb::Operation::EnableKeyRequest => src
                .operation_as_enable_key_request()
                .ok_or_else(missing_union)
                .and_then(read_enable_key),
            fb::Operation::DisableKeyRequest => src
                .operation_as_disable_key_request()
                .ok_or_else(missing_union)
                .and_then(read_disable_key),
            fb::Operation::ScheduleKeyDeletionRequest => src
                .operation_as_schedule_key_deletion_request()
                .ok_or_else(missing_union)
                .and_then(read_schedule_key_deletion),
            fb::Operation::CancelKeyDeletionRequest => src
                .operation_as_cancel_key_deletion_request()
                .ok_or_else(missing_union)
                .and_then(read_cancel_key_deletion),
            fb::Operation::EnableKeyRotationRequest => src
                .operation_as_enable_key_rotation_request()
                .ok_or_else(missing_union)
                .and_then(read_enable_key_rotation),
            fb::Operation::DisableKeyRotationRequest => src
                .operation_as_disable_key_rotation_request()
                .ok_or_else(missing_union)
                .and_then(read_disable_key_rotation),
            fb::Operation::GetKeyRotationStatusRequest => src
                .operation_as_get_key_rotation_status_request()
                .ok_or_else(missing_union)
                .and_then(read_get_key_rotation_status),
            fb::Operation::RotateKeyOnDemandRequest => src
                .operation_as_rotate_key_on_demand_request()
                .ok_or_else(missing_union)
                .and_then(read_rotate_key_on_demand),
            fb::Operation::ListKeyRotationsRequest => src
                .operation_as_list_key_rotations_request()
                .ok_or_else(missing_union)
                .and_then(read_list_key_rotations),
            fb::Operation::GetParametersForImportRequest => src
                .operation_as_get_parameters_for_import_request()
                .ok_or_else(missing_union)
                .and_then(read_get_parameters_for_import),
            fb::Operation::ImportKeyMaterialRequest => src
                .operation_as_import_key_material_request()
                .ok_or_else(missing_union)
                .and_then(read_import_key_material),
            fb::Operation::DeleteImportedKeyMaterialRequest => src
                .operation_as_delete_imported_key_material_request()
                .ok_or_else(missing_union)
                .and_then(read_delete_imported_key_material),
            fb::Operation::WhoAmIRequest => src
                .operation_as_who_am_irequest()
                .ok_or_else(missing_union)
                .map(|_| Operation::WhoAmI(WhoAmI)),
            fb::Operation::PutKeyPolicyRequest => src
                .operation_as_put_key_policy_request()
                .ok_or_else(missing_union)
                .and_then(read_put_key_policy),
            fb::Operation::GetKeyPolicyRequest => src
                .operation_as_get_key_policy_request()
                .ok_or_else(missing_union)
                .and_then(read_get_key_policy),
            fb::Operation::ListKeyPoliciesRequest => src
                .operation_as_list_key_policies_request()
                .ok_or_else(missing_union)
                .and_then(read_list_key_policies),
            fb::Operation::CreateGrantRequest => src
                .operation_as_create_grant_request()
                .ok_or_else(missing_union)
                .and_then(read_create_grant),
            fb::Operation::ListGrantsRequest => src
                .operation_as_list_grants_request()
                .ok_or_else(missing_union)
                .and_then(read_list_grants),
            fb::Operation::ListRetirableGrantsRequest => src
                .operation_as_list_retirable_grants_request()
                .ok_or_else(missing_union)
                .and_then(read_list_retirable_grants),
            fb::Operation::RetireGrantRequest => src
                .operation_as_retire_grant_request()
                .ok_or_else(missing_union)
                .and_then(read_retire_grant),
            fb::Operation::RevokeGrantRequest => src
                .operation_as_revoke_grant_request()
                .ok_or_else(missing_union)
                .and_then(read_revoke_grant),
            fb::Operation::GetStatusRequest => src
                .operation_as_get_status_request()
                .ok_or_else(missing_union)
                .map(|_| Operation::GetStatus(GetStatus)),
            fb::Operation::VerifyAuditSealsRequest => src
                .operation_as_verify_audit_seals_request()
                .ok_or_else(missing_union)
                .and_then(read_verify_audit_seals),
            fb::Operation::NONE => Err(KmsError::validation("item has no operation")),
            other => Err(KmsError::new(
                ErrorKind::UnsupportedOperation,
                format!("unknown operation type {}", other.0),
            )),
        }
    }};
}

/// Verifies `buf` and reads the request in place.
pub fn decode_request<'a>(
    buf: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Request<'a>, RequestError> {
    let req = flatbuffers::root_with_opts::<fb::Request>(&limits.verifier_options(), buf).map_err(
        |e| RequestError {
            // A pipelining client needs to know which request failed.
            request_id: request_id_of(buf).unwrap_or(0),
            error: KmsError::new(
                ErrorKind::Serialization,
                format!("request is not a valid kmsd flatbuffer: {e}"),
            ),
        },
    )?;
    let request_id = req.request_id();
    let fail = |error: KmsError| RequestError { request_id, error };
    if req.protocol_version() != PROTOCOL_VERSION {
        return Err(fail(KmsError::validation(format!(
            "unsupported protocol version {} (this daemon speaks {PROTOCOL_VERSION})",
            req.protocol_version()
        ))));
    }
    let body = match (req.operation_type(), req.batch()) {
        (fb::Operation::NONE, Some(items)) => {
            if items.len() > limits.max_batch {
                return Err(fail(KmsError::validation(format!(
                    "batch of {} items exceeds the limit of {}",
                    items.len(),
                    limits.max_batch
                ))));
            }
            if items.is_empty() {
                return Err(fail(KmsError::validation("batch is empty")));
            }
            RequestBody::Batch(items.iter().map(|item| decode_operation!(item)).collect())
        }
        (fb::Operation::NONE, None) => {
            return Err(fail(KmsError::validation(
                "request has neither an operation nor a batch",
            )))
        }
        (_, Some(_)) => {
            return Err(fail(KmsError::validation(
                "request has both an operation and a batch",
            )))
        }
        (_, None) => RequestBody::Single(decode_operation!(req)),
    };
    Ok(Request { request_id, body })
}

/// Reads a request's `request_id` without verifying the rest of the frame:
/// a frame that fails verification (invalid UTF-8 in a context string, an
/// operation type without its table, ...) is still answered with its own id
/// when the id itself can be read. Every offset is bounds-checked here, so
/// this never reads outside `buf`; `None` when the root table, its vtable or
/// the field is out of bounds (the answer then carries id 0). An absent
/// field is the schema's default, 0. Also cheap enough for overload
/// answers, which should not decode the whole frame.
pub fn request_id_of(buf: &[u8]) -> Option<u64> {
    fn u16_at(buf: &[u8], pos: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            buf.get(pos..pos.checked_add(2)?)?.try_into().ok()?,
        ))
    }
    fn u32_at(buf: &[u8], pos: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            buf.get(pos..pos.checked_add(4)?)?.try_into().ok()?,
        ))
    }
    let table = u32_at(buf, 0)? as usize;
    // The table starts with a signed offset back (usually) to its vtable.
    let soffset = u32_at(buf, table)? as i32;
    let vtable = usize::try_from(table as i64 - i64::from(soffset)).ok()?;
    let vtable_len = usize::from(u16_at(buf, vtable)?);
    let table_len = usize::from(u16_at(buf, vtable.checked_add(2)?)?);
    let slot = usize::from(fb::Request::VT_REQUEST_ID);
    if slot + 2 > vtable_len {
        return Some(0);
    }
    let field = usize::from(u16_at(buf, vtable.checked_add(slot)?)?);
    if field == 0 {
        return Some(0);
    }
    if field + 8 > table_len {
        return None;
    }
    let pos = table.checked_add(field)?;
    Some(u64::from_le_bytes(
        buf.get(pos..pos.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn missing_union() -> KmsError {
    KmsError::validation("operation type is set but its table is missing")
}

fn read_context<'a>(
    v: Option<Vector<'a, ForwardsUOffset<fb::ContextEntry<'a>>>>,
) -> Result<Context<'a>, KmsError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    check::context_pairs(v.len())?;
    Ok(v.iter()
        .map(|e| (e.key().unwrap_or(""), e.value().unwrap_or("")))
        .collect())
}

fn read_create_key(r: fb::CreateKeyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    let key_usage = match r.key_usage() {
        fb::KeyUsage::ENCRYPT_DECRYPT => KeyUsage::EncryptDecrypt,
        other => {
            return Err(KmsError::validation(format!(
                "unknown KeyUsage {}",
                other.0
            )))
        }
    };
    let key_spec = match r.key_spec() {
        fb::KeySpec::SYMMETRIC_DEFAULT => KeySpec::SymmetricDefault,
        other => return Err(KmsError::validation(format!("unknown KeySpec {}", other.0))),
    };
    let origin = match r.origin() {
        fb::Origin::KMSD => Origin::Kmsd,
        fb::Origin::EXTERNAL => Origin::External,
        fb::Origin::HSM => Origin::Hsm,
        other => return Err(KmsError::validation(format!("unknown Origin {}", other.0))),
    };
    Ok(Operation::CreateKey(CreateKey {
        description: r.description().unwrap_or(""),
        key_usage,
        key_spec,
        origin,
        tags: read_tags(r.tags(), "Tags", 0)?,
        policy: r.policy().map(check::policy).transpose()?,
        bypass_policy_lockout_safety_check: r.bypass_policy_lockout_safety_check(),
    }))
}

fn read_describe_key(r: fb::DescribeKeyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::DescribeKey(DescribeKey {
        key_id: check::required(r.key_id(), "KeyId")?,
        grant_tokens: read_grant_tokens(r.grant_tokens())?,
    }))
}

fn read_list_keys(r: fb::ListKeysRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListKeys(ListKeys {
        limit: r.limit(),
        marker: r.marker(),
    }))
}

fn read_generate_data_key<'a>(
    key_id: Option<&'a str>,
    number_of_bytes: u32,
    key_spec: fb::DataKeySpec,
    context: Option<Vector<'a, ForwardsUOffset<fb::ContextEntry<'a>>>>,
    (grant_tokens, dry_run): (Option<Vector<'a, ForwardsUOffset<&'a str>>>, bool),
) -> Result<GenerateDataKey<'a>, KmsError> {
    let key_spec = match key_spec {
        fb::DataKeySpec::NONE => None,
        fb::DataKeySpec::AES_128 => Some(DataKeySpec::Aes128),
        fb::DataKeySpec::AES_256 => Some(DataKeySpec::Aes256),
        other => return Err(KmsError::validation(format!("unknown KeySpec {}", other.0))),
    };
    Ok(GenerateDataKey {
        key_id: check::required(key_id, "KeyId")?,
        number_of_bytes: (number_of_bytes != 0).then_some(number_of_bytes),
        key_spec,
        context: read_context(context)?,
        grant_tokens: read_grant_tokens(grant_tokens)?,
        dry_run,
    })
}

fn read_encrypt(r: fb::EncryptRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::Encrypt(Encrypt {
        key_id: check::required(r.key_id(), "KeyId")?,
        plaintext: r.plaintext().map(|v| v.bytes()).unwrap_or_default(),
        context: read_context(r.encryption_context())?,
        grant_tokens: read_grant_tokens(r.grant_tokens())?,
        dry_run: r.dry_run(),
    }))
}

fn read_decrypt(r: fb::DecryptRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::Decrypt(Decrypt {
        ciphertext_blob: r.ciphertext_blob().map(|v| v.bytes()).unwrap_or_default(),
        key_id: r.key_id(),
        context: read_context(r.encryption_context())?,
        grant_tokens: read_grant_tokens(r.grant_tokens())?,
        dry_run: r.dry_run(),
    }))
}

fn read_re_encrypt(r: fb::ReEncryptRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ReEncrypt(ReEncrypt {
        ciphertext_blob: r.ciphertext_blob().map(|v| v.bytes()).unwrap_or_default(),
        source_key_id: r.source_key_id(),
        source_context: read_context(r.source_encryption_context())?,
        destination_key_id: check::required(r.destination_key_id(), "DestinationKeyId")?,
        destination_context: read_context(r.destination_encryption_context())?,
        grant_tokens: read_grant_tokens(r.grant_tokens())?,
        dry_run: r.dry_run(),
    }))
}

/// GrantTokens: at most 10, each 1..=8192 bytes.
fn read_grant_tokens<'a>(
    v: Option<Vector<'a, ForwardsUOffset<&'a str>>>,
) -> Result<Vec<&'a str>, KmsError> {
    check::grant_token_count(v.map_or(0, |v| v.len()))?;
    v.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| check::grant_token(i, t).map(|()| t))
        .collect()
}

/// A grant's Operations: 1..=17 known values.
fn read_grant_operations(
    v: Option<Vector<'_, fb::GrantOperation>>,
) -> Result<Vec<GrantOperation>, KmsError> {
    check::grant_operation_count(v.map_or(0, |v| v.len()))?;
    v.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, o)| {
            grant_operation_of(o).ok_or_else(|| {
                KmsError::validation(format!("Operations[{i}]: unknown GrantOperation {}", o.0))
            })
        })
        .collect()
}

/// One grant constraint: at most 8 pairs, of at most 384 characters in
/// all (AWS); the pairs themselves are the daemon's to check, as an
/// encryption context.
fn read_constraint<'a>(
    v: Option<Vector<'a, ForwardsUOffset<fb::ContextEntry<'a>>>>,
    field: &str,
) -> Result<Context<'a>, KmsError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    check::constraint_pairs(v.len(), field)?;
    let pairs: Context<'a> = v
        .iter()
        .map(|e| (e.key().unwrap_or(""), e.value().unwrap_or("")))
        .collect();
    check::constraint_chars(&pairs, field)?;
    Ok(pairs)
}

fn read_constraints(
    c: Option<fb::GrantConstraints<'_>>,
) -> Result<Option<GrantConstraints<'_>>, KmsError> {
    let Some(c) = c else {
        return Ok(None);
    };
    Ok(Some(GrantConstraints {
        encryption_context_subset: read_constraint(
            c.encryption_context_subset(),
            "Constraints.EncryptionContextSubset",
        )?,
        encryption_context_equals: read_constraint(
            c.encryption_context_equals(),
            "Constraints.EncryptionContextEquals",
        )?,
    }))
}

fn read_tags<'a>(
    v: Option<Vector<'a, ForwardsUOffset<fb::Tag<'a>>>>,
    field: &str,
    min: usize,
) -> Result<Vec<Tag<'a>>, KmsError> {
    check::tag_count(v.map_or(0, |v| v.len()), field, min)?;
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.iter()
        .enumerate()
        .map(|(i, t)| check::tag(i, t.tag_key(), t.tag_value(), field))
        .collect()
}

fn read_update_key_description(
    r: fb::UpdateKeyDescriptionRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::UpdateKeyDescription(UpdateKeyDescription {
        key_id: check::required(r.key_id(), "KeyId")?,
        // AWS requires the field; an empty description clears it.
        description: check::required_chars(
            r.description(),
            "Description",
            0,
            limits::MAX_DESCRIPTION_LEN,
        )?,
    }))
}

fn read_tag_resource(r: fb::TagResourceRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::TagResource(TagResource {
        key_id: check::required(r.key_id(), "KeyId")?,
        tags: read_tags(r.tags(), "Tags", 1)?,
    }))
}

fn read_untag_resource(r: fb::UntagResourceRequest<'_>) -> Result<Operation<'_>, KmsError> {
    let key_id = check::required(r.key_id(), "KeyId")?;
    let keys = r.tag_keys();
    check::count(
        keys.map_or(0, |v| v.len()),
        "TagKeys",
        1,
        limits::MAX_TAGS_PER_REQUEST,
    )?;
    let tag_keys = keys
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, k)| check::tag_key(i, k).map(|()| k))
        .collect::<Result<_, _>>()?;
    Ok(Operation::UntagResource(UntagResource { key_id, tag_keys }))
}

fn read_list_resource_tags(r: fb::ListResourceTagsRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListResourceTags(ListResourceTags {
        key_id: check::required(r.key_id(), "KeyId")?,
        limit: r.limit(),
        marker: r.marker(),
    }))
}

fn read_create_alias(r: fb::CreateAliasRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::CreateAlias(CreateAlias {
        alias_name: check::alias_name(r.alias_name())?,
        target_key_id: check::required(r.target_key_id(), "TargetKeyId")?,
    }))
}

fn read_update_alias(r: fb::UpdateAliasRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::UpdateAlias(UpdateAlias {
        alias_name: check::alias_name(r.alias_name())?,
        target_key_id: check::required(r.target_key_id(), "TargetKeyId")?,
    }))
}

fn read_delete_alias(r: fb::DeleteAliasRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::DeleteAlias(DeleteAlias {
        alias_name: check::alias_name(r.alias_name())?,
    }))
}

fn read_list_aliases(r: fb::ListAliasesRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListAliases(ListAliases {
        key_id: r.key_id(),
        limit: r.limit(),
        marker: r.marker(),
    }))
}

fn read_enable_key(r: fb::EnableKeyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::EnableKey(EnableKey {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_disable_key(r: fb::DisableKeyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::DisableKey(DisableKey {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_schedule_key_deletion(
    r: fb::ScheduleKeyDeletionRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
        key_id: check::required(r.key_id(), "KeyId")?,
        pending_window_in_days: r.pending_window_in_days(),
    }))
}

fn read_cancel_key_deletion(
    r: fb::CancelKeyDeletionRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::CancelKeyDeletion(CancelKeyDeletion {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_enable_key_rotation(
    r: fb::EnableKeyRotationRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::EnableKeyRotation(EnableKeyRotation {
        key_id: check::required(r.key_id(), "KeyId")?,
        rotation_period_in_days: r.rotation_period_in_days(),
    }))
}

fn read_disable_key_rotation(
    r: fb::DisableKeyRotationRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::DisableKeyRotation(DisableKeyRotation {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_get_key_rotation_status(
    r: fb::GetKeyRotationStatusRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::GetKeyRotationStatus(GetKeyRotationStatus {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_rotate_key_on_demand(
    r: fb::RotateKeyOnDemandRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::RotateKeyOnDemand(RotateKeyOnDemand {
        key_id: check::required(r.key_id(), "KeyId")?,
    }))
}

fn read_list_key_rotations(r: fb::ListKeyRotationsRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListKeyRotations(ListKeyRotations {
        key_id: check::required(r.key_id(), "KeyId")?,
        limit: r.limit(),
        marker: r.marker(),
    }))
}

fn read_get_parameters_for_import(
    r: fb::GetParametersForImportRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    let key_id = check::required(r.key_id(), "KeyId")?;
    let wrapping_algorithm = match r.wrapping_algorithm() {
        fb::WrappingAlgorithm::NONE => {
            return Err(KmsError::validation("WrappingAlgorithm is required"))
        }
        fb::WrappingAlgorithm::RSAES_PKCS1_V1_5 => WrappingAlgorithm::RsaesPkcs1V15,
        fb::WrappingAlgorithm::RSAES_OAEP_SHA_1 => WrappingAlgorithm::RsaesOaepSha1,
        fb::WrappingAlgorithm::RSAES_OAEP_SHA_256 => WrappingAlgorithm::RsaesOaepSha256,
        fb::WrappingAlgorithm::RSA_AES_KEY_WRAP_SHA_1 => WrappingAlgorithm::RsaAesKeyWrapSha1,
        fb::WrappingAlgorithm::RSA_AES_KEY_WRAP_SHA_256 => WrappingAlgorithm::RsaAesKeyWrapSha256,
        other => {
            return Err(KmsError::validation(format!(
                "unknown WrappingAlgorithm {}",
                other.0
            )))
        }
    };
    let wrapping_key_spec = match r.wrapping_key_spec() {
        fb::WrappingKeySpec::NONE => {
            return Err(KmsError::validation("WrappingKeySpec is required"))
        }
        fb::WrappingKeySpec::RSA_2048 => WrappingKeySpec::Rsa2048,
        fb::WrappingKeySpec::RSA_3072 => WrappingKeySpec::Rsa3072,
        fb::WrappingKeySpec::RSA_4096 => WrappingKeySpec::Rsa4096,
        other => {
            return Err(KmsError::validation(format!(
                "unknown WrappingKeySpec {}",
                other.0
            )))
        }
    };
    Ok(Operation::GetParametersForImport(GetParametersForImport {
        key_id,
        wrapping_algorithm,
        wrapping_key_spec,
    }))
}

fn read_import_key_material(
    r: fb::ImportKeyMaterialRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    let expiration_model = match r.expiration_model() {
        fb::ExpirationModel::KEY_MATERIAL_EXPIRES => ExpirationModel::KeyMaterialExpires,
        fb::ExpirationModel::KEY_MATERIAL_DOES_NOT_EXPIRE => {
            ExpirationModel::KeyMaterialDoesNotExpire
        }
        other => {
            return Err(KmsError::validation(format!(
                "unknown ExpirationModel {}",
                other.0
            )))
        }
    };
    Ok(Operation::ImportKeyMaterial(ImportKeyMaterial {
        key_id: check::required(r.key_id(), "KeyId")?,
        import_token: check::required_bytes(
            r.import_token().map(|v| v.bytes()).unwrap_or_default(),
            "ImportToken",
            limits::MAX_IMPORT_TOKEN,
        )?,
        encrypted_key_material: check::required_bytes(
            r.encrypted_key_material()
                .map(|v| v.bytes())
                .unwrap_or_default(),
            "EncryptedKeyMaterial",
            limits::MAX_ENCRYPTED_KEY_MATERIAL,
        )?,
        valid_to: r.valid_to(),
        expiration_model,
    }))
}

fn read_delete_imported_key_material(
    r: fb::DeleteImportedKeyMaterialRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::DeleteImportedKeyMaterial(
        DeleteImportedKeyMaterial {
            key_id: check::required(r.key_id(), "KeyId")?,
        },
    ))
}

fn read_put_key_policy(r: fb::PutKeyPolicyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::PutKeyPolicy(PutKeyPolicy {
        key_id: check::required(r.key_id(), "KeyId")?,
        policy_name: check::policy_name(r.policy_name())?,
        policy: check::policy(check::required(r.policy(), "Policy")?)?,
        bypass_policy_lockout_safety_check: r.bypass_policy_lockout_safety_check(),
    }))
}

fn read_get_key_policy(r: fb::GetKeyPolicyRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::GetKeyPolicy(GetKeyPolicy {
        key_id: check::required(r.key_id(), "KeyId")?,
        policy_name: check::policy_name(r.policy_name())?,
    }))
}

fn read_list_key_policies(r: fb::ListKeyPoliciesRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListKeyPolicies(ListKeyPolicies {
        key_id: check::required(r.key_id(), "KeyId")?,
        limit: r.limit(),
        marker: check::marker(r.marker())?,
    }))
}

fn read_create_grant(r: fb::CreateGrantRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::CreateGrant(CreateGrant {
        key_id: check::required(r.key_id(), "KeyId")?,
        grantee_principal: check::required_chars(
            r.grantee_principal(),
            "GranteePrincipal",
            1,
            limits::MAX_PRINCIPAL_LEN,
        )?,
        retiring_principal: check::principal(r.retiring_principal(), "RetiringPrincipal")?,
        operations: read_grant_operations(r.operations())?,
        constraints: read_constraints(r.constraints())?,
        grant_tokens: read_grant_tokens(r.grant_tokens())?,
        name: check::optional_chars(r.name(), "Name", 1, limits::MAX_GRANT_NAME_LEN)?,
        dry_run: r.dry_run(),
    }))
}

fn read_list_grants(r: fb::ListGrantsRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListGrants(ListGrants {
        key_id: check::required(r.key_id(), "KeyId")?,
        limit: r.limit(),
        marker: check::marker(r.marker())?,
        grant_id: check::grant_id(r.grant_id())?,
        grantee_principal: check::principal(r.grantee_principal(), "GranteePrincipal")?,
    }))
}

fn read_list_retirable_grants(
    r: fb::ListRetirableGrantsRequest<'_>,
) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::ListRetirableGrants(ListRetirableGrants {
        retiring_principal: check::required_chars(
            r.retiring_principal(),
            "RetiringPrincipal",
            1,
            limits::MAX_PRINCIPAL_LEN,
        )?,
        limit: r.limit(),
        marker: check::marker(r.marker())?,
    }))
}

/// Which of the token and the key and grant ids name the grant is the
/// daemon's to check; each is bounded here.
fn read_retire_grant(r: fb::RetireGrantRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::RetireGrant(RetireGrant {
        grant_token: check::retire_grant_token(r.grant_token())?,
        key_id: r.key_id(),
        grant_id: check::grant_id(r.grant_id())?,
        dry_run: r.dry_run(),
    }))
}

fn read_revoke_grant(r: fb::RevokeGrantRequest<'_>) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::RevokeGrant(RevokeGrant {
        key_id: check::required(r.key_id(), "KeyId")?,
        grant_id: check::required_chars(r.grant_id(), "GrantId", 1, limits::MAX_GRANT_ID_LEN)?,
        dry_run: r.dry_run(),
    }))
}

fn read_verify_audit_seals(
    r: fb::VerifyAuditSealsRequest<'_>,
) -> Result<Operation<'static>, KmsError> {
    check::seal_count(r.seals().map_or(0, |v| v.len()))?;
    let seals = r
        .seals()
        .into_iter()
        .flatten()
        .map(|s| {
            check::seal(
                s.seq(),
                s.prev_hash().map(|v| v.bytes()),
                s.mac().map(|v| v.bytes()),
            )
        })
        .collect::<Result<_, KmsError>>()?;
    Ok(Operation::VerifyAuditSeals(VerifyAuditSeals { seals }))
}

/// A vector of strings; `None` when empty (absent on the wire).
fn put_strings<'b>(
    fbb: &mut Fbb<'b>,
    v: &[&str],
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<&'b str>>>> {
    if v.is_empty() {
        return None;
    }
    let offsets: Vec<_> = v.iter().map(|s| fbb.create_string(s)).collect();
    Some(fbb.create_vector(&offsets))
}

fn put_constraints<'b>(
    fbb: &mut Fbb<'b>,
    c: &GrantConstraints<'_>,
) -> WIPOffset<fb::GrantConstraints<'b>> {
    let encryption_context_subset = put_pairs(fbb, &c.encryption_context_subset);
    let encryption_context_equals = put_pairs(fbb, &c.encryption_context_equals);
    fb::GrantConstraints::create(
        fbb,
        &fb::GrantConstraintsArgs {
            encryption_context_subset,
            encryption_context_equals,
        },
    )
}

fn put_tags<'b>(
    fbb: &mut Fbb<'b>,
    tags: &[Tag<'_>],
) -> Option<WIPOffset<Vector<'b, ForwardsUOffset<fb::Tag<'b>>>>> {
    if tags.is_empty() {
        return None;
    }
    let entries: Vec<_> = tags
        .iter()
        .map(|t| {
            let tag_key = Some(fbb.create_string(t.key));
            let tag_value = Some(fbb.create_string(t.value));
            fb::Tag::create(fbb, &fb::TagArgs { tag_key, tag_value })
        })
        .collect();
    Some(fbb.create_vector(&entries))
}

fn wrapping_algorithm_to_wire(a: WrappingAlgorithm) -> fb::WrappingAlgorithm {
    match a {
        WrappingAlgorithm::RsaesPkcs1V15 => fb::WrappingAlgorithm::RSAES_PKCS1_V1_5,
        WrappingAlgorithm::RsaesOaepSha1 => fb::WrappingAlgorithm::RSAES_OAEP_SHA_1,
        WrappingAlgorithm::RsaesOaepSha256 => fb::WrappingAlgorithm::RSAES_OAEP_SHA_256,
        WrappingAlgorithm::RsaAesKeyWrapSha1 => fb::WrappingAlgorithm::RSA_AES_KEY_WRAP_SHA_1,
        WrappingAlgorithm::RsaAesKeyWrapSha256 => fb::WrappingAlgorithm::RSA_AES_KEY_WRAP_SHA_256,
    }
}

fn put_operation(
    fbb: &mut Fbb<'_>,
    op: &Operation<'_>,
) -> (fb::Operation, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match op {
        Operation::CreateKey(r) => {
            let description = (!r.description.is_empty()).then(|| fbb.create_string(r.description));
            let tags = put_tags(fbb, &r.tags);
            let policy = r.policy.map(|p| fbb.create_string(p));
            let t = fb::CreateKeyRequest::create(
                fbb,
                &fb::CreateKeyRequestArgs {
                    description,
                    key_usage: fb::KeyUsage::ENCRYPT_DECRYPT,
                    key_spec: fb::KeySpec::SYMMETRIC_DEFAULT,
                    origin: origin_to_wire(r.origin),
                    tags,
                    policy,
                    bypass_policy_lockout_safety_check: r.bypass_policy_lockout_safety_check,
                },
            );
            (fb::Operation::CreateKeyRequest, t.as_union_value())
        }
        Operation::DescribeKey(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let t = fb::DescribeKeyRequest::create(
                fbb,
                &fb::DescribeKeyRequestArgs {
                    key_id,
                    grant_tokens,
                },
            );
            (fb::Operation::DescribeKeyRequest, t.as_union_value())
        }
        Operation::ListKeys(r) => {
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListKeysRequest::create(
                fbb,
                &fb::ListKeysRequestArgs {
                    limit: r.limit,
                    marker,
                },
            );
            (fb::Operation::ListKeysRequest, t.as_union_value())
        }
        Operation::GenerateDataKey(r) | Operation::GenerateDataKeyWithoutPlaintext(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let encryption_context = put_pairs(fbb, &r.context);
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let dry_run = r.dry_run;
            let number_of_bytes = r.number_of_bytes.unwrap_or(0);
            let key_spec = match r.key_spec {
                None => fb::DataKeySpec::NONE,
                Some(DataKeySpec::Aes128) => fb::DataKeySpec::AES_128,
                Some(DataKeySpec::Aes256) => fb::DataKeySpec::AES_256,
            };
            if matches!(op, Operation::GenerateDataKey(_)) {
                let t = fb::GenerateDataKeyRequest::create(
                    fbb,
                    &fb::GenerateDataKeyRequestArgs {
                        key_id,
                        number_of_bytes,
                        key_spec,
                        encryption_context,
                        grant_tokens,
                        dry_run,
                    },
                );
                (fb::Operation::GenerateDataKeyRequest, t.as_union_value())
            } else {
                let t = fb::GenerateDataKeyWithoutPlaintextRequest::create(
                    fbb,
                    &fb::GenerateDataKeyWithoutPlaintextRequestArgs {
                        key_id,
                        number_of_bytes,
                        key_spec,
                        encryption_context,
                        grant_tokens,
                        dry_run,
                    },
                );
                (
                    fb::Operation::GenerateDataKeyWithoutPlaintextRequest,
                    t.as_union_value(),
                )
            }
        }
        Operation::Encrypt(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let plaintext = Some(fbb.create_vector(r.plaintext));
            let encryption_context = put_pairs(fbb, &r.context);
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let t = fb::EncryptRequest::create(
                fbb,
                &fb::EncryptRequestArgs {
                    key_id,
                    plaintext,
                    encryption_context,
                    grant_tokens,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::EncryptRequest, t.as_union_value())
        }
        Operation::Decrypt(r) => {
            let ciphertext_blob = Some(fbb.create_vector(r.ciphertext_blob));
            let key_id = r.key_id.map(|k| fbb.create_string(k));
            let encryption_context = put_pairs(fbb, &r.context);
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let t = fb::DecryptRequest::create(
                fbb,
                &fb::DecryptRequestArgs {
                    ciphertext_blob,
                    key_id,
                    encryption_context,
                    grant_tokens,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::DecryptRequest, t.as_union_value())
        }
        Operation::ReEncrypt(r) => {
            let ciphertext_blob = Some(fbb.create_vector(r.ciphertext_blob));
            let source_key_id = r.source_key_id.map(|k| fbb.create_string(k));
            let source_encryption_context = put_pairs(fbb, &r.source_context);
            let destination_key_id = Some(fbb.create_string(r.destination_key_id));
            let destination_encryption_context = put_pairs(fbb, &r.destination_context);
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let t = fb::ReEncryptRequest::create(
                fbb,
                &fb::ReEncryptRequestArgs {
                    ciphertext_blob,
                    source_key_id,
                    source_encryption_context,
                    destination_key_id,
                    destination_encryption_context,
                    grant_tokens,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::ReEncryptRequest, t.as_union_value())
        }
        Operation::GenerateRandom(r) => {
            let t = fb::GenerateRandomRequest::create(
                fbb,
                &fb::GenerateRandomRequestArgs {
                    number_of_bytes: r.number_of_bytes,
                },
            );
            (fb::Operation::GenerateRandomRequest, t.as_union_value())
        }
        Operation::UpdateKeyDescription(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let description = Some(fbb.create_string(r.description));
            let t = fb::UpdateKeyDescriptionRequest::create(
                fbb,
                &fb::UpdateKeyDescriptionRequestArgs {
                    key_id,
                    description,
                },
            );
            (
                fb::Operation::UpdateKeyDescriptionRequest,
                t.as_union_value(),
            )
        }
        Operation::TagResource(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let tags = put_tags(fbb, &r.tags);
            let t =
                fb::TagResourceRequest::create(fbb, &fb::TagResourceRequestArgs { key_id, tags });
            (fb::Operation::TagResourceRequest, t.as_union_value())
        }
        Operation::UntagResource(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let keys: Vec<_> = r.tag_keys.iter().map(|k| fbb.create_string(k)).collect();
            let tag_keys = Some(fbb.create_vector(&keys));
            let t = fb::UntagResourceRequest::create(
                fbb,
                &fb::UntagResourceRequestArgs { key_id, tag_keys },
            );
            (fb::Operation::UntagResourceRequest, t.as_union_value())
        }
        Operation::ListResourceTags(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListResourceTagsRequest::create(
                fbb,
                &fb::ListResourceTagsRequestArgs {
                    key_id,
                    limit: r.limit,
                    marker,
                },
            );
            (fb::Operation::ListResourceTagsRequest, t.as_union_value())
        }
        Operation::CreateAlias(r) => {
            let alias_name = Some(fbb.create_string(r.alias_name));
            let target_key_id = Some(fbb.create_string(r.target_key_id));
            let t = fb::CreateAliasRequest::create(
                fbb,
                &fb::CreateAliasRequestArgs {
                    alias_name,
                    target_key_id,
                },
            );
            (fb::Operation::CreateAliasRequest, t.as_union_value())
        }
        Operation::UpdateAlias(r) => {
            let alias_name = Some(fbb.create_string(r.alias_name));
            let target_key_id = Some(fbb.create_string(r.target_key_id));
            let t = fb::UpdateAliasRequest::create(
                fbb,
                &fb::UpdateAliasRequestArgs {
                    alias_name,
                    target_key_id,
                },
            );
            (fb::Operation::UpdateAliasRequest, t.as_union_value())
        }
        Operation::DeleteAlias(r) => {
            let alias_name = Some(fbb.create_string(r.alias_name));
            let t = fb::DeleteAliasRequest::create(fbb, &fb::DeleteAliasRequestArgs { alias_name });
            (fb::Operation::DeleteAliasRequest, t.as_union_value())
        }
        Operation::ListAliases(r) => {
            let key_id = r.key_id.map(|k| fbb.create_string(k));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListAliasesRequest::create(
                fbb,
                &fb::ListAliasesRequestArgs {
                    key_id,
                    limit: r.limit,
                    marker,
                },
            );
            (fb::Operation::ListAliasesRequest, t.as_union_value())
        }
        Operation::EnableKey(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::EnableKeyRequest::create(fbb, &fb::EnableKeyRequestArgs { key_id });
            (fb::Operation::EnableKeyRequest, t.as_union_value())
        }
        Operation::DisableKey(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::DisableKeyRequest::create(fbb, &fb::DisableKeyRequestArgs { key_id });
            (fb::Operation::DisableKeyRequest, t.as_union_value())
        }
        Operation::ScheduleKeyDeletion(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::ScheduleKeyDeletionRequest::create(
                fbb,
                &fb::ScheduleKeyDeletionRequestArgs {
                    key_id,
                    pending_window_in_days: r.pending_window_in_days,
                },
            );
            (
                fb::Operation::ScheduleKeyDeletionRequest,
                t.as_union_value(),
            )
        }
        Operation::CancelKeyDeletion(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::CancelKeyDeletionRequest::create(
                fbb,
                &fb::CancelKeyDeletionRequestArgs { key_id },
            );
            (fb::Operation::CancelKeyDeletionRequest, t.as_union_value())
        }
        Operation::EnableKeyRotation(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::EnableKeyRotationRequest::create(
                fbb,
                &fb::EnableKeyRotationRequestArgs {
                    key_id,
                    rotation_period_in_days: r.rotation_period_in_days,
                },
            );
            (fb::Operation::EnableKeyRotationRequest, t.as_union_value())
        }
        Operation::DisableKeyRotation(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::DisableKeyRotationRequest::create(
                fbb,
                &fb::DisableKeyRotationRequestArgs { key_id },
            );
            (fb::Operation::DisableKeyRotationRequest, t.as_union_value())
        }
        Operation::GetKeyRotationStatus(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::GetKeyRotationStatusRequest::create(
                fbb,
                &fb::GetKeyRotationStatusRequestArgs { key_id },
            );
            (
                fb::Operation::GetKeyRotationStatusRequest,
                t.as_union_value(),
            )
        }
        Operation::RotateKeyOnDemand(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::RotateKeyOnDemandRequest::create(
                fbb,
                &fb::RotateKeyOnDemandRequestArgs { key_id },
            );
            (fb::Operation::RotateKeyOnDemandRequest, t.as_union_value())
        }
        Operation::ListKeyRotations(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListKeyRotationsRequest::create(
                fbb,
                &fb::ListKeyRotationsRequestArgs {
                    key_id,
                    limit: r.limit,
                    marker,
                },
            );
            (fb::Operation::ListKeyRotationsRequest, t.as_union_value())
        }
        Operation::GetParametersForImport(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::GetParametersForImportRequest::create(
                fbb,
                &fb::GetParametersForImportRequestArgs {
                    key_id,
                    wrapping_algorithm: wrapping_algorithm_to_wire(r.wrapping_algorithm),
                    wrapping_key_spec: match r.wrapping_key_spec {
                        WrappingKeySpec::Rsa2048 => fb::WrappingKeySpec::RSA_2048,
                        WrappingKeySpec::Rsa3072 => fb::WrappingKeySpec::RSA_3072,
                        WrappingKeySpec::Rsa4096 => fb::WrappingKeySpec::RSA_4096,
                    },
                },
            );
            (
                fb::Operation::GetParametersForImportRequest,
                t.as_union_value(),
            )
        }
        Operation::ImportKeyMaterial(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let import_token = Some(fbb.create_vector(r.import_token));
            let encrypted_key_material = Some(fbb.create_vector(r.encrypted_key_material));
            let t = fb::ImportKeyMaterialRequest::create(
                fbb,
                &fb::ImportKeyMaterialRequestArgs {
                    key_id,
                    import_token,
                    encrypted_key_material,
                    valid_to: r.valid_to,
                    expiration_model: expiration_model_to_wire(r.expiration_model),
                },
            );
            (fb::Operation::ImportKeyMaterialRequest, t.as_union_value())
        }
        Operation::DeleteImportedKeyMaterial(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let t = fb::DeleteImportedKeyMaterialRequest::create(
                fbb,
                &fb::DeleteImportedKeyMaterialRequestArgs { key_id },
            );
            (
                fb::Operation::DeleteImportedKeyMaterialRequest,
                t.as_union_value(),
            )
        }
        Operation::WhoAmI(WhoAmI) => {
            let t = fb::WhoAmIRequest::create(fbb, &fb::WhoAmIRequestArgs {});
            (fb::Operation::WhoAmIRequest, t.as_union_value())
        }
        Operation::PutKeyPolicy(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let policy_name = r.policy_name.map(|n| fbb.create_string(n));
            let policy = Some(fbb.create_string(r.policy));
            let t = fb::PutKeyPolicyRequest::create(
                fbb,
                &fb::PutKeyPolicyRequestArgs {
                    key_id,
                    policy_name,
                    policy,
                    bypass_policy_lockout_safety_check: r.bypass_policy_lockout_safety_check,
                },
            );
            (fb::Operation::PutKeyPolicyRequest, t.as_union_value())
        }
        Operation::GetKeyPolicy(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let policy_name = r.policy_name.map(|n| fbb.create_string(n));
            let t = fb::GetKeyPolicyRequest::create(
                fbb,
                &fb::GetKeyPolicyRequestArgs {
                    key_id,
                    policy_name,
                },
            );
            (fb::Operation::GetKeyPolicyRequest, t.as_union_value())
        }
        Operation::ListKeyPolicies(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListKeyPoliciesRequest::create(
                fbb,
                &fb::ListKeyPoliciesRequestArgs {
                    key_id,
                    limit: r.limit,
                    marker,
                },
            );
            (fb::Operation::ListKeyPoliciesRequest, t.as_union_value())
        }
        Operation::CreateGrant(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let grantee_principal = Some(fbb.create_string(r.grantee_principal));
            let retiring_principal = r.retiring_principal.map(|p| fbb.create_string(p));
            let operations = (!r.operations.is_empty()).then(|| {
                let ops: Vec<_> = r
                    .operations
                    .iter()
                    .map(|o| grant_operation_to_wire(*o))
                    .collect();
                fbb.create_vector(&ops)
            });
            let constraints = r.constraints.as_ref().map(|c| put_constraints(fbb, c));
            let grant_tokens = put_strings(fbb, &r.grant_tokens);
            let name = r.name.map(|n| fbb.create_string(n));
            let t = fb::CreateGrantRequest::create(
                fbb,
                &fb::CreateGrantRequestArgs {
                    key_id,
                    grantee_principal,
                    retiring_principal,
                    operations,
                    constraints,
                    grant_tokens,
                    name,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::CreateGrantRequest, t.as_union_value())
        }
        Operation::ListGrants(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let grant_id = r.grant_id.map(|g| fbb.create_string(g));
            let grantee_principal = r.grantee_principal.map(|p| fbb.create_string(p));
            let t = fb::ListGrantsRequest::create(
                fbb,
                &fb::ListGrantsRequestArgs {
                    key_id,
                    limit: r.limit,
                    marker,
                    grant_id,
                    grantee_principal,
                },
            );
            (fb::Operation::ListGrantsRequest, t.as_union_value())
        }
        Operation::ListRetirableGrants(r) => {
            let retiring_principal = Some(fbb.create_string(r.retiring_principal));
            let marker = r.marker.map(|m| fbb.create_string(m));
            let t = fb::ListRetirableGrantsRequest::create(
                fbb,
                &fb::ListRetirableGrantsRequestArgs {
                    retiring_principal,
                    limit: r.limit,
                    marker,
                },
            );
            (
                fb::Operation::ListRetirableGrantsRequest,
                t.as_union_value(),
            )
        }
        Operation::RetireGrant(r) => {
            let grant_token = r.grant_token.map(|t| fbb.create_string(t));
            let key_id = r.key_id.map(|k| fbb.create_string(k));
            let grant_id = r.grant_id.map(|g| fbb.create_string(g));
            let t = fb::RetireGrantRequest::create(
                fbb,
                &fb::RetireGrantRequestArgs {
                    grant_token,
                    key_id,
                    grant_id,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::RetireGrantRequest, t.as_union_value())
        }
        Operation::RevokeGrant(r) => {
            let key_id = Some(fbb.create_string(r.key_id));
            let grant_id = Some(fbb.create_string(r.grant_id));
            let t = fb::RevokeGrantRequest::create(
                fbb,
                &fb::RevokeGrantRequestArgs {
                    key_id,
                    grant_id,
                    dry_run: r.dry_run,
                },
            );
            (fb::Operation::RevokeGrantRequest, t.as_union_value())
        }
        Operation::GetStatus(GetStatus) => {
            let t = fb::GetStatusRequest::create(fbb, &fb::GetStatusRequestArgs {});
            (fb::Operation::GetStatusRequest, t.as_union_value())
        }
        Operation::VerifyAuditSeals(r) => {
            let seals: Vec<_> = r
                .seals
                .iter()
                .map(|s| {
                    let prev_hash = Some(fbb.create_vector(&s.prev_hash));
                    let mac = Some(fbb.create_vector(&s.mac));
                    fb::AuditSeal::create(
                        fbb,
                        &fb::AuditSealArgs {
                            seq: s.seq,
                            prev_hash,
                            mac,
                        },
                    )
                })
                .collect();
            let seals = Some(fbb.create_vector(&seals));
            let t = fb::VerifyAuditSealsRequest::create(
                fbb,
                &fb::VerifyAuditSealsRequestArgs { seals },
            );
            (fb::Operation::VerifyAuditSealsRequest, t.as_union_value())
        }
    }
}

/// Builds a request with a single operation or a batch. Items of a batch that
/// are `Err` cannot be encoded (a client has nothing to send for them).
///
/// # Panics
/// If a batch item is `Err`.
pub fn encode_request(fbb: &mut Fbb<'_>, req: &Request<'_>, out: &mut Vec<u8>) {
    build_request(fbb, req);
    write_frame(out, fbb.finished_data());
}

/// An upper bound on the bytes a builder needs to build `req` (see
/// [`build_request`]), so that a client can size its builder first: a
/// flatbuffers builder that grows copies what it holds into a new buffer and
/// frees the old one unzeroed, and a request may carry plaintext.
///
/// Generous by construction: every table is counted at [`TABLE_BOUND`] bytes
/// (its offset, a vtable of at most eight fields and eight fields of at most
/// eight bytes, each with alignment padding), every string or byte vector at
/// its length plus [`VECTOR_OVERHEAD`] (length, terminator, padding), plus
/// [`FRAME_SLACK`] for the root offset, final alignment and a vtable written
/// and then dropped as a duplicate.
pub fn request_size_bound(req: &Request<'_>) -> usize {
    let ops: usize = match &req.body {
        RequestBody::Single(op) => op.as_ref().map_or(0, operation_size_bound),
        RequestBody::Batch(items) => items
            .iter()
            .map(|op| TABLE_BOUND + VECTOR_OVERHEAD + op.as_ref().map_or(0, operation_size_bound))
            .sum(),
    };
    TABLE_BOUND + VECTOR_OVERHEAD + ops + FRAME_SLACK
}

/// A request builder that never grows while it holds a request: before
/// each build it is replaced by one of at least [`request_size_bound`]
/// bytes if it is smaller (the old one is zeroed first), and it is zeroed
/// after each use and on drop. For clients, whose requests carry plaintext.
pub struct RequestEncoder {
    fbb: Fbb<'static>,
    capacity: usize,
}

impl RequestEncoder {
    /// An encoder whose builder starts at `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> RequestEncoder {
        RequestEncoder {
            fbb: Fbb::with_capacity(capacity),
            capacity,
        }
    }

    /// Builds `req` and hands its payload (the frame without its length
    /// prefix) to `f`; the builder is zeroed afterwards.
    pub fn encode<T>(&mut self, req: &Request<'_>, f: impl FnOnce(&[u8]) -> T) -> T {
        let need = request_size_bound(req);
        if need > self.capacity {
            self.fbb.reset();
            self.capacity = need.next_power_of_two();
            self.fbb = Fbb::with_capacity(self.capacity);
        }
        build_request(&mut self.fbb, req);
        let out = f(self.fbb.finished_data());
        self.fbb.reset();
        out
    }
}

impl Drop for RequestEncoder {
    fn drop(&mut self) {
        self.fbb.reset();
    }
}

/// See [`request_size_bound`].
pub const TABLE_BOUND: usize = 4 + (4 + 2 * 8) + 8 * 16;
/// See [`request_size_bound`].
pub const VECTOR_OVERHEAD: usize = 4 + 1 + 7 + 4;
/// See [`request_size_bound`].
pub const FRAME_SLACK: usize = 256;

fn operation_size_bound(op: &Operation<'_>) -> usize {
    let bytes = |n: usize| n + VECTOR_OVERHEAD;
    let opt = |s: Option<&str>| s.map_or(0, |s| bytes(s.len()));
    let context = |c: &Context<'_>| {
        VECTOR_OVERHEAD
            + c.iter()
                .map(|(k, v)| TABLE_BOUND + 4 + bytes(k.len()) + bytes(v.len()))
                .sum::<usize>()
    };
    let strings =
        |v: &[&str]| VECTOR_OVERHEAD + v.iter().map(|s| 4 + bytes(s.len())).sum::<usize>();
    let tags = |t: &[Tag<'_>]| {
        VECTOR_OVERHEAD
            + t.iter()
                .map(|t| TABLE_BOUND + 4 + bytes(t.key.len()) + bytes(t.value.len()))
                .sum::<usize>()
    };
    TABLE_BOUND
        + match op {
            Operation::CreateKey(o) => bytes(o.description.len()) + tags(&o.tags) + opt(o.policy),
            Operation::DescribeKey(o) => bytes(o.key_id.len()) + strings(&o.grant_tokens),
            Operation::ListKeys(o) => opt(o.marker),
            Operation::GenerateDataKey(o) | Operation::GenerateDataKeyWithoutPlaintext(o) => {
                bytes(o.key_id.len()) + context(&o.context) + strings(&o.grant_tokens)
            }
            Operation::Encrypt(o) => {
                bytes(o.key_id.len())
                    + bytes(o.plaintext.len())
                    + context(&o.context)
                    + strings(&o.grant_tokens)
            }
            Operation::Decrypt(o) => {
                bytes(o.ciphertext_blob.len())
                    + opt(o.key_id)
                    + context(&o.context)
                    + strings(&o.grant_tokens)
            }
            Operation::ReEncrypt(o) => {
                bytes(o.ciphertext_blob.len())
                    + opt(o.source_key_id)
                    + context(&o.source_context)
                    + bytes(o.destination_key_id.len())
                    + context(&o.destination_context)
                    + strings(&o.grant_tokens)
            }
            Operation::GenerateRandom(_) => 0,
            Operation::UpdateKeyDescription(o) => {
                bytes(o.key_id.len()) + bytes(o.description.len())
            }
            Operation::TagResource(o) => bytes(o.key_id.len()) + tags(&o.tags),
            Operation::UntagResource(o) => {
                bytes(o.key_id.len())
                    + VECTOR_OVERHEAD
                    + o.tag_keys.iter().map(|k| 4 + bytes(k.len())).sum::<usize>()
            }
            Operation::ListResourceTags(o) => bytes(o.key_id.len()) + opt(o.marker),
            Operation::CreateAlias(o) => bytes(o.alias_name.len()) + bytes(o.target_key_id.len()),
            Operation::UpdateAlias(o) => bytes(o.alias_name.len()) + bytes(o.target_key_id.len()),
            Operation::DeleteAlias(o) => bytes(o.alias_name.len()),
            Operation::ListAliases(o) => opt(o.key_id) + opt(o.marker),
            Operation::ListKeyRotations(o) => bytes(o.key_id.len()) + opt(o.marker),
            Operation::ImportKeyMaterial(o) => {
                bytes(o.key_id.len())
                    + bytes(o.import_token.len())
                    + bytes(o.encrypted_key_material.len())
            }
            Operation::EnableKey(EnableKey { key_id })
            | Operation::DisableKey(DisableKey { key_id })
            | Operation::ScheduleKeyDeletion(ScheduleKeyDeletion { key_id, .. })
            | Operation::CancelKeyDeletion(CancelKeyDeletion { key_id })
            | Operation::EnableKeyRotation(EnableKeyRotation { key_id, .. })
            | Operation::DisableKeyRotation(DisableKeyRotation { key_id })
            | Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id })
            | Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id })
            | Operation::GetParametersForImport(GetParametersForImport { key_id, .. })
            | Operation::DeleteImportedKeyMaterial(DeleteImportedKeyMaterial { key_id }) => {
                bytes(key_id.len())
            }
            Operation::WhoAmI(WhoAmI) => 0,
            Operation::PutKeyPolicy(o) => {
                bytes(o.key_id.len()) + opt(o.policy_name) + bytes(o.policy.len())
            }
            Operation::GetKeyPolicy(o) => bytes(o.key_id.len()) + opt(o.policy_name),
            Operation::ListKeyPolicies(o) => bytes(o.key_id.len()) + opt(o.marker),
            Operation::CreateGrant(o) => {
                bytes(o.key_id.len())
                    + bytes(o.grantee_principal.len())
                    + opt(o.retiring_principal)
                    + bytes(o.operations.len())
                    + o.constraints.as_ref().map_or(0, |c| {
                        TABLE_BOUND
                            + context(&c.encryption_context_subset)
                            + context(&c.encryption_context_equals)
                    })
                    + strings(&o.grant_tokens)
                    + opt(o.name)
            }
            Operation::ListGrants(o) => {
                bytes(o.key_id.len()) + opt(o.marker) + opt(o.grant_id) + opt(o.grantee_principal)
            }
            Operation::ListRetirableGrants(o) => bytes(o.retiring_principal.len()) + opt(o.marker),
            Operation::RetireGrant(o) => opt(o.grant_token) + opt(o.key_id) + opt(o.grant_id),
            Operation::RevokeGrant(o) => bytes(o.key_id.len()) + bytes(o.grant_id.len()),
            Operation::GetStatus(GetStatus) => 0,
            Operation::VerifyAuditSeals(o) => {
                VECTOR_OVERHEAD + o.seals.len() * (4 + TABLE_BOUND + 2 * bytes(32))
            }
        }
}

/// Builds `req` in `fbb` (its finished data is the frame's payload), for a
/// caller that sizes its own output buffer first (the clients grow theirs
/// without leaving unzeroed copies behind).
pub fn build_request(fbb: &mut Fbb<'_>, req: &Request<'_>) {
    fbb.reset();
    let (operation_type, operation, batch) = match &req.body {
        RequestBody::Single(op) => {
            let op = op.as_ref().expect("cannot encode an undecodable operation");
            let (ty, off) = put_operation(fbb, op);
            (ty, Some(off), None)
        }
        RequestBody::Batch(items) => {
            let items: Vec<_> = items
                .iter()
                .map(|op| {
                    let op = op.as_ref().expect("cannot encode an undecodable operation");
                    let (operation_type, off) = put_operation(fbb, op);
                    fb::BatchItem::create(
                        fbb,
                        &fb::BatchItemArgs {
                            operation_type,
                            operation: Some(off),
                        },
                    )
                })
                .collect();
            (fb::Operation::NONE, None, Some(fbb.create_vector(&items)))
        }
    };
    let root = fb::Request::create(
        fbb,
        &fb::RequestArgs {
            protocol_version: PROTOCOL_VERSION,
            request_id: req.request_id,
            operation_type,
            operation,
            batch,
        },
    );
    fbb.finish_minimal(root);
}
