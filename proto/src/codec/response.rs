//! Responses: encoded by the daemon ([`encode_response`] into a builder
//! sized by [`response_size_hint`] so that it never grows while it holds
//! plaintext, [`encode_error_response`] where no builder is at hand),
//! verified and decoded by the clients ([`decode_response`]), or only
//! counted ([`tally_response`]) by a load generator.

use super::verify::response_verifier_options;
use super::{
    expiration_model_to_wire, grant_operation_of, grant_operation_to_wire, origin_to_wire,
    put_pairs, Fbb, PROTOCOL_VERSION,
};
use crate::error::{ErrorKind, KmsError};
use crate::frame::write_frame;
use crate::generated as fb;
use crate::types::*;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

fn put_error<'b>(fbb: &mut Fbb<'b>, e: &KmsError) -> WIPOffset<fb::Error<'b>> {
    let name = Some(fbb.create_string(e.kind.name()));
    let message = Some(fbb.create_string(&e.message));
    fb::Error::create(fbb, &fb::ErrorArgs { name, message })
}

fn key_state_to_wire(s: KeyState) -> fb::KeyState {
    match s {
        KeyState::Enabled => fb::KeyState::Enabled,
        KeyState::Disabled => fb::KeyState::Disabled,
        KeyState::PendingDeletion => fb::KeyState::PendingDeletion,
        KeyState::PendingImport => fb::KeyState::PendingImport,
        KeyState::Unavailable => fb::KeyState::Unavailable,
    }
}

fn key_state_of(s: fb::KeyState) -> Result<KeyState, KmsError> {
    Ok(match s {
        fb::KeyState::Enabled => KeyState::Enabled,
        fb::KeyState::Disabled => KeyState::Disabled,
        fb::KeyState::PendingDeletion => KeyState::PendingDeletion,
        fb::KeyState::PendingImport => KeyState::PendingImport,
        fb::KeyState::Unavailable => KeyState::Unavailable,
        _ => return Err(malformed("unknown key state")),
    })
}

fn expiration_model_of(m: fb::ExpirationModel) -> Result<ExpirationModel, KmsError> {
    Ok(match m {
        fb::ExpirationModel::KEY_MATERIAL_EXPIRES => ExpirationModel::KeyMaterialExpires,
        fb::ExpirationModel::KEY_MATERIAL_DOES_NOT_EXPIRE => {
            ExpirationModel::KeyMaterialDoesNotExpire
        }
        _ => return Err(malformed("unknown expiration model")),
    })
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
            key_state: key_state_to_wire(m.key_state),
            key_usage: fb::KeyUsage::ENCRYPT_DECRYPT,
            key_spec: fb::KeySpec::SYMMETRIC_DEFAULT,
            origin: origin_to_wire(m.origin),
            current_version: m.current_version,
            deletion_date: m.deletion_date,
            pending_deletion_window_in_days: m.pending_deletion_window_in_days,
            valid_to: m.valid_to,
            expiration_model: m.expiration_model.map(expiration_model_to_wire),
        },
    )
}

/// A page of grants (ListGrants, ListRetirableGrants): the grants, the
/// next marker.
type GrantPage<'b> = (
    Option<WIPOffset<Vector<'b, ForwardsUOffset<fb::GrantListEntry<'b>>>>>,
    Option<WIPOffset<&'b str>>,
);

fn put_grants<'b>(fbb: &mut Fbb<'b>, l: &ListGrantsOutput) -> GrantPage<'b> {
    let grants: Vec<_> = l
        .grants
        .iter()
        .map(|g| {
            let key_id = Some(fbb.create_string(&g.key_id));
            let grant_id = Some(fbb.create_string(&g.grant_id));
            let name = g.name.as_deref().map(|n| fbb.create_string(n));
            let grantee_principal = Some(fbb.create_string(&g.grantee_principal));
            let retiring_principal = g
                .retiring_principal
                .as_deref()
                .map(|p| fbb.create_string(p));
            let issuing_account = Some(fbb.create_string(&g.issuing_account));
            let ops: Vec<_> = g
                .operations
                .iter()
                .map(|o| grant_operation_to_wire(*o))
                .collect();
            let operations = Some(fbb.create_vector(&ops));
            let constraints = g.constraints.as_ref().map(|c| {
                let encryption_context_subset = put_pairs(fbb, &c.encryption_context_subset);
                let encryption_context_equals = put_pairs(fbb, &c.encryption_context_equals);
                fb::GrantConstraints::create(
                    fbb,
                    &fb::GrantConstraintsArgs {
                        encryption_context_subset,
                        encryption_context_equals,
                    },
                )
            });
            fb::GrantListEntry::create(
                fbb,
                &fb::GrantListEntryArgs {
                    key_id,
                    grant_id,
                    name,
                    creation_date: g.creation_date,
                    grantee_principal,
                    retiring_principal,
                    issuing_account,
                    operations,
                    constraints,
                },
            )
        })
        .collect();
    let grants = Some(fbb.create_vector(&grants));
    let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
    (grants, next_marker)
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
        Output::UpdateKeyDescription => {
            let t = fb::UpdateKeyDescriptionResponse::create(
                fbb,
                &fb::UpdateKeyDescriptionResponseArgs {},
            );
            (fb::Output::UpdateKeyDescriptionResponse, t.as_union_value())
        }
        Output::TagResource => {
            let t = fb::TagResourceResponse::create(fbb, &fb::TagResourceResponseArgs {});
            (fb::Output::TagResourceResponse, t.as_union_value())
        }
        Output::UntagResource => {
            let t = fb::UntagResourceResponse::create(fbb, &fb::UntagResourceResponseArgs {});
            (fb::Output::UntagResourceResponse, t.as_union_value())
        }
        Output::CreateAlias => {
            let t = fb::CreateAliasResponse::create(fbb, &fb::CreateAliasResponseArgs {});
            (fb::Output::CreateAliasResponse, t.as_union_value())
        }
        Output::UpdateAlias => {
            let t = fb::UpdateAliasResponse::create(fbb, &fb::UpdateAliasResponseArgs {});
            (fb::Output::UpdateAliasResponse, t.as_union_value())
        }
        Output::DeleteAlias => {
            let t = fb::DeleteAliasResponse::create(fbb, &fb::DeleteAliasResponseArgs {});
            (fb::Output::DeleteAliasResponse, t.as_union_value())
        }
        Output::EnableKey => {
            let t = fb::EnableKeyResponse::create(fbb, &fb::EnableKeyResponseArgs {});
            (fb::Output::EnableKeyResponse, t.as_union_value())
        }
        Output::DisableKey => {
            let t = fb::DisableKeyResponse::create(fbb, &fb::DisableKeyResponseArgs {});
            (fb::Output::DisableKeyResponse, t.as_union_value())
        }
        Output::EnableKeyRotation => {
            let t =
                fb::EnableKeyRotationResponse::create(fbb, &fb::EnableKeyRotationResponseArgs {});
            (fb::Output::EnableKeyRotationResponse, t.as_union_value())
        }
        Output::DisableKeyRotation => {
            let t =
                fb::DisableKeyRotationResponse::create(fbb, &fb::DisableKeyRotationResponseArgs {});
            (fb::Output::DisableKeyRotationResponse, t.as_union_value())
        }
        Output::ImportKeyMaterial => {
            let t =
                fb::ImportKeyMaterialResponse::create(fbb, &fb::ImportKeyMaterialResponseArgs {});
            (fb::Output::ImportKeyMaterialResponse, t.as_union_value())
        }
        Output::DeleteImportedKeyMaterial => {
            let t = fb::DeleteImportedKeyMaterialResponse::create(
                fbb,
                &fb::DeleteImportedKeyMaterialResponseArgs {},
            );
            (
                fb::Output::DeleteImportedKeyMaterialResponse,
                t.as_union_value(),
            )
        }
        Output::WhoAmI(w) => {
            let groups = (!w.groups.is_empty()).then(|| fbb.create_vector(&w.groups));
            let unit = w.unit.as_deref().map(|u| fbb.create_string(u));
            let cgroup = w.cgroup.as_deref().map(|c| fbb.create_string(c));
            let t = fb::WhoAmIResponse::create(
                fbb,
                &fb::WhoAmIResponseArgs {
                    uid: w.uid,
                    gid: w.gid,
                    pid: w.pid,
                    groups,
                    unit,
                    cgroup,
                },
            );
            (fb::Output::WhoAmIResponse, t.as_union_value())
        }
        Output::ListResourceTags(l) => {
            let tags: Vec<_> = l
                .tags
                .iter()
                .map(|t| {
                    let tag_key = Some(fbb.create_string(&t.key));
                    let tag_value = Some(fbb.create_string(&t.value));
                    fb::Tag::create(fbb, &fb::TagArgs { tag_key, tag_value })
                })
                .collect();
            let tags = Some(fbb.create_vector(&tags));
            let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
            let t = fb::ListResourceTagsResponse::create(
                fbb,
                &fb::ListResourceTagsResponseArgs {
                    tags,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListResourceTagsResponse, t.as_union_value())
        }
        Output::ListAliases(l) => {
            let aliases: Vec<_> = l
                .aliases
                .iter()
                .map(|a| {
                    let alias_name = Some(fbb.create_string(&a.alias_name));
                    let alias_arn = Some(fbb.create_string(&a.alias_arn));
                    let target_key_id = a.target_key_id.as_deref().map(|k| fbb.create_string(k));
                    fb::AliasListEntry::create(
                        fbb,
                        &fb::AliasListEntryArgs {
                            alias_name,
                            alias_arn,
                            target_key_id,
                            creation_date: a.creation_date,
                            last_updated_date: a.last_updated_date,
                        },
                    )
                })
                .collect();
            let aliases = Some(fbb.create_vector(&aliases));
            let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
            let t = fb::ListAliasesResponse::create(
                fbb,
                &fb::ListAliasesResponseArgs {
                    aliases,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListAliasesResponse, t.as_union_value())
        }
        Output::ScheduleKeyDeletion(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let t = fb::ScheduleKeyDeletionResponse::create(
                fbb,
                &fb::ScheduleKeyDeletionResponseArgs {
                    key_id,
                    deletion_date: r.deletion_date,
                    key_state: key_state_to_wire(r.key_state),
                    pending_window_in_days: r.pending_window_in_days,
                },
            );
            (fb::Output::ScheduleKeyDeletionResponse, t.as_union_value())
        }
        Output::CancelKeyDeletion(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let t = fb::CancelKeyDeletionResponse::create(
                fbb,
                &fb::CancelKeyDeletionResponseArgs { key_id },
            );
            (fb::Output::CancelKeyDeletionResponse, t.as_union_value())
        }
        Output::GetKeyRotationStatus(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let t = fb::GetKeyRotationStatusResponse::create(
                fbb,
                &fb::GetKeyRotationStatusResponseArgs {
                    key_id,
                    key_rotation_enabled: r.key_rotation_enabled,
                    rotation_period_in_days: r.rotation_period_in_days,
                    next_rotation_date: r.next_rotation_date,
                    on_demand_rotation_start_date: r.on_demand_rotation_start_date,
                },
            );
            (fb::Output::GetKeyRotationStatusResponse, t.as_union_value())
        }
        Output::RotateKeyOnDemand(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let t = fb::RotateKeyOnDemandResponse::create(
                fbb,
                &fb::RotateKeyOnDemandResponseArgs { key_id },
            );
            (fb::Output::RotateKeyOnDemandResponse, t.as_union_value())
        }
        Output::ListKeyRotations(l) => {
            let rotations: Vec<_> = l
                .rotations
                .iter()
                .map(|e| {
                    let key_id = Some(fbb.create_string(&e.key_id));
                    fb::RotationsListEntry::create(
                        fbb,
                        &fb::RotationsListEntryArgs {
                            key_id,
                            rotation_date: e.rotation_date,
                            rotation_type: match e.rotation_type {
                                RotationType::Automatic => fb::RotationType::AUTOMATIC,
                                RotationType::OnDemand => fb::RotationType::ON_DEMAND,
                            },
                        },
                    )
                })
                .collect();
            let rotations = Some(fbb.create_vector(&rotations));
            let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
            let t = fb::ListKeyRotationsResponse::create(
                fbb,
                &fb::ListKeyRotationsResponseArgs {
                    rotations,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListKeyRotationsResponse, t.as_union_value())
        }
        Output::GetParametersForImport(r) => {
            let key_id = Some(fbb.create_string(&r.key_id));
            let import_token = Some(fbb.create_vector(&r.import_token));
            let public_key = Some(fbb.create_vector(&r.public_key));
            let t = fb::GetParametersForImportResponse::create(
                fbb,
                &fb::GetParametersForImportResponseArgs {
                    key_id,
                    import_token,
                    public_key,
                    parameters_valid_to: r.parameters_valid_to,
                },
            );
            (
                fb::Output::GetParametersForImportResponse,
                t.as_union_value(),
            )
        }
        Output::PutKeyPolicy => {
            let t = fb::PutKeyPolicyResponse::create(fbb, &fb::PutKeyPolicyResponseArgs {});
            (fb::Output::PutKeyPolicyResponse, t.as_union_value())
        }
        Output::GetKeyPolicy(r) => {
            let policy = Some(fbb.create_string(&r.policy));
            let policy_name = Some(fbb.create_string(&r.policy_name));
            let t = fb::GetKeyPolicyResponse::create(
                fbb,
                &fb::GetKeyPolicyResponseArgs {
                    policy,
                    policy_name,
                },
            );
            (fb::Output::GetKeyPolicyResponse, t.as_union_value())
        }
        Output::ListKeyPolicies(l) => {
            let names: Vec<_> = l
                .policy_names
                .iter()
                .map(|n| fbb.create_string(n))
                .collect();
            let policy_names = Some(fbb.create_vector(&names));
            let next_marker = l.next_marker.as_deref().map(|m| fbb.create_string(m));
            let t = fb::ListKeyPoliciesResponse::create(
                fbb,
                &fb::ListKeyPoliciesResponseArgs {
                    policy_names,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListKeyPoliciesResponse, t.as_union_value())
        }
        Output::CreateGrant(r) => {
            let grant_token = Some(fbb.create_string(&r.grant_token));
            let grant_id = Some(fbb.create_string(&r.grant_id));
            let t = fb::CreateGrantResponse::create(
                fbb,
                &fb::CreateGrantResponseArgs {
                    grant_token,
                    grant_id,
                },
            );
            (fb::Output::CreateGrantResponse, t.as_union_value())
        }
        Output::ListGrants(l) => {
            let (grants, next_marker) = put_grants(fbb, l);
            let t = fb::ListGrantsResponse::create(
                fbb,
                &fb::ListGrantsResponseArgs {
                    grants,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListGrantsResponse, t.as_union_value())
        }
        Output::ListRetirableGrants(l) => {
            let (grants, next_marker) = put_grants(fbb, l);
            let t = fb::ListRetirableGrantsResponse::create(
                fbb,
                &fb::ListRetirableGrantsResponseArgs {
                    grants,
                    next_marker,
                    truncated: l.truncated,
                },
            );
            (fb::Output::ListRetirableGrantsResponse, t.as_union_value())
        }
        Output::RetireGrant => {
            let t = fb::RetireGrantResponse::create(fbb, &fb::RetireGrantResponseArgs {});
            (fb::Output::RetireGrantResponse, t.as_union_value())
        }
        Output::RevokeGrant => {
            let t = fb::RevokeGrantResponse::create(fbb, &fb::RevokeGrantResponseArgs {});
            (fb::Output::RevokeGrantResponse, t.as_union_value())
        }
        Output::GetStatus(st) => {
            let samples: Vec<_> = st.metrics.iter().map(|m| put_metric(fbb, m)).collect();
            let metrics = Some(fbb.create_vector(&samples));
            let version = Some(fbb.create_string(&st.version));
            let t = fb::GetStatusResponse::create(
                fbb,
                &fb::GetStatusResponseArgs {
                    version,
                    uptime_ms: st.uptime_ms,
                    metrics,
                },
            );
            (fb::Output::GetStatusResponse, t.as_union_value())
        }
        Output::VerifyAuditSeals(v) => {
            let valid = Some(fbb.create_vector(&v.valid));
            let head_hash = Some(fbb.create_vector(&v.head_hash));
            let t = fb::VerifyAuditSealsResponse::create(
                fbb,
                &fb::VerifyAuditSealsResponseArgs {
                    valid,
                    head_seq: v.head_seq,
                    head_hash,
                },
            );
            (fb::Output::VerifyAuditSealsResponse, t.as_union_value())
        }
    }
}

fn put_metric<'b>(fbb: &mut Fbb<'b>, m: &MetricSample) -> WIPOffset<fb::MetricSample<'b>> {
    let name = Some(fbb.create_string(&m.name));
    let names: Vec<_> = m.labels.iter().map(|(k, _)| fbb.create_string(k)).collect();
    let values: Vec<_> = m.labels.iter().map(|(_, v)| fbb.create_string(v)).collect();
    let label_names = (!names.is_empty()).then(|| fbb.create_vector(&names));
    let label_values = (!values.is_empty()).then(|| fbb.create_vector(&values));
    let qs: Vec<f64> = m.quantiles.iter().map(|q| q.0).collect();
    let qv: Vec<f64> = m.quantiles.iter().map(|q| q.1).collect();
    let quantiles = (!qs.is_empty()).then(|| fbb.create_vector(&qs));
    let quantile_values = (!qv.is_empty()).then(|| fbb.create_vector(&qv));
    fb::MetricSample::create(
        fbb,
        &fb::MetricSampleArgs {
            name,
            kind: match m.kind {
                MetricKind::Counter => fb::MetricKind::Counter,
                MetricKind::Gauge => fb::MetricKind::Gauge,
                MetricKind::Histogram => fb::MetricKind::Histogram,
            },
            label_names,
            label_values,
            value: m.value,
            count: m.count,
            quantiles,
            quantile_values,
        },
    )
}

/// One series of a GetStatus answer, checked against the status limits.
fn read_metric(r: fb::MetricSample<'_>) -> Result<MetricSample, KmsError> {
    use crate::types::limits::{MAX_METRIC_LABELS, MAX_METRIC_LABEL_BYTES, MAX_METRIC_NAME_LEN};
    let name = r.name().ok_or_else(|| malformed("metric without a name"))?;
    if name.is_empty() || name.len() > MAX_METRIC_NAME_LEN {
        return Err(malformed("metric name length"));
    }
    let kind = match r.kind() {
        fb::MetricKind::Counter => MetricKind::Counter,
        fb::MetricKind::Gauge => MetricKind::Gauge,
        fb::MetricKind::Histogram => MetricKind::Histogram,
        other => return Err(malformed(&format!("unknown metric kind {}", other.0))),
    };
    let names: Vec<&str> = r
        .label_names()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let values: Vec<&str> = r
        .label_values()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let label_bytes: usize = names.iter().chain(&values).map(|s| s.len()).sum();
    if names.len() != values.len()
        || names.len() > MAX_METRIC_LABELS
        || label_bytes > MAX_METRIC_LABEL_BYTES
    {
        return Err(malformed("metric labels"));
    }
    let qs: Vec<f64> = r
        .quantiles()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let qv: Vec<f64> = r
        .quantile_values()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if qs.len() != qv.len() || qs.len() > 16 {
        return Err(malformed("metric quantiles"));
    }
    Ok(MetricSample {
        name: name.to_owned(),
        kind,
        labels: names
            .into_iter()
            .zip(values)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        value: r.value(),
        count: r.count(),
        quantiles: qs.into_iter().zip(qv).collect(),
    })
}

/// Bytes one series adds to an answer beyond its strings.
pub const METRIC_ENTRY_FIXED: usize = 96;

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

/// A ListKeys entry's bytes in [`response_size_hint`] beyond its strings.
pub const KEY_ENTRY_FIXED: usize = 64;
/// A ListResourceTags entry's bytes beyond its strings: the vector's
/// offset (4), the table (12), two string headers (length, terminator,
/// padding: 8 each) and alignment; vtables are shared. Measured: about 31.
pub const TAG_ENTRY_FIXED: usize = 64;
/// A ListAliases entry's bytes beyond its strings: the vector's offset
/// (4), the table (32: three offsets, two 8-byte dates), its 8-byte
/// alignment (4), three string headers (8 each). Measured: about 60.
pub const ALIAS_ENTRY_FIXED: usize = 80;
/// A ListKeyRotations entry's bytes beyond its key id: the vector's offset
/// (4), the table (17 and its 8-byte alignment), one string header (8).
/// Measured: about 33.
pub const ROTATION_ENTRY_FIXED: usize = 64;

/// A ListKeyPolicies name's bytes beyond its text: the vector's offset (4)
/// and a string header (length, terminator, padding: 8).
pub const POLICY_NAME_ENTRY_FIXED: usize = 16;
/// A ListGrants or ListRetirableGrants entry's bytes beyond its strings,
/// its operations and its constraints: the vector's offset (4), the table
/// (44: seven offsets, an 8-byte date, alignment), six string headers (8
/// each), the operations vector's header and padding (8) and its own
/// vtable (22: entries differ in their absent fields, so vtables are not
/// always shared).
pub const GRANT_ENTRY_FIXED: usize = 192;
/// A grant's constraints table beyond its pairs: the table (12), two
/// vector headers (4 each) and a vtable (8), with alignment.
pub const GRANT_CONSTRAINTS_FIXED: usize = 64;
/// A constraint pair's bytes beyond its key and value: the vector's
/// offset (4), the table (12) and two string headers (8 each), as a tag's.
pub const CONSTRAINT_PAIR_FIXED: usize = 64;

/// Bytes of one grant in [`response_size_hint`].
fn grant_entry_hint(g: &GrantListEntry) -> usize {
    let pairs = |p: &[(String, String)]| {
        p.iter()
            .map(|(k, v)| CONSTRAINT_PAIR_FIXED + k.len() + v.len())
            .sum::<usize>()
    };
    GRANT_ENTRY_FIXED
        + g.key_id.len()
        + g.grant_id.len()
        + g.name.as_ref().map_or(0, String::len)
        + g.grantee_principal.len()
        + g.retiring_principal.as_ref().map_or(0, String::len)
        + g.issuing_account.len()
        + g.operations.len()
        + g.constraints.as_ref().map_or(0, |c| {
            GRANT_CONSTRAINTS_FIXED
                + pairs(&c.encryption_context_subset)
                + pairs(&c.encryption_context_equals)
        })
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
                        .map(|k| KEY_ENTRY_FIXED + k.key_id.len() + k.arn.len())
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
            Ok(Output::ListResourceTags(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.tags
                        .iter()
                        .map(|t| TAG_ENTRY_FIXED + t.key.len() + t.value.len())
                        .sum::<usize>()
            }
            Ok(Output::ListAliases(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.aliases
                        .iter()
                        .map(|a| {
                            ALIAS_ENTRY_FIXED
                                + a.alias_name.len()
                                + a.alias_arn.len()
                                + a.target_key_id.as_ref().map_or(0, String::len)
                        })
                        .sum::<usize>()
            }
            Ok(Output::ListKeyRotations(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.rotations
                        .iter()
                        .map(|e| ROTATION_ENTRY_FIXED + e.key_id.len())
                        .sum::<usize>()
            }
            Ok(Output::ScheduleKeyDeletion(r)) => r.key_id.len(),
            Ok(Output::CancelKeyDeletion(r)) => r.key_id.len(),
            Ok(Output::GetKeyRotationStatus(r)) => r.key_id.len(),
            Ok(Output::RotateKeyOnDemand(r)) => r.key_id.len(),
            Ok(Output::GetParametersForImport(r)) => {
                r.key_id.len() + r.import_token.len() + r.public_key.len()
            }
            Ok(Output::UpdateKeyDescription) => 0,
            Ok(Output::TagResource) => 0,
            Ok(Output::UntagResource) => 0,
            Ok(Output::CreateAlias) => 0,
            Ok(Output::UpdateAlias) => 0,
            Ok(Output::DeleteAlias) => 0,
            Ok(Output::EnableKey) => 0,
            Ok(Output::DisableKey) => 0,
            Ok(Output::EnableKeyRotation) => 0,
            Ok(Output::DisableKeyRotation) => 0,
            Ok(Output::ImportKeyMaterial) => 0,
            Ok(Output::DeleteImportedKeyMaterial) => 0,
            Ok(Output::WhoAmI(w)) => {
                4 * w.groups.len()
                    + w.unit.as_ref().map_or(0, String::len)
                    + w.cgroup.as_ref().map_or(0, String::len)
            }
            Ok(Output::GetKeyPolicy(r)) => r.policy.len() + r.policy_name.len(),
            Ok(Output::ListKeyPolicies(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.policy_names
                        .iter()
                        .map(|n| POLICY_NAME_ENTRY_FIXED + n.len())
                        .sum::<usize>()
            }
            Ok(Output::CreateGrant(r)) => r.grant_token.len() + r.grant_id.len(),
            Ok(Output::ListGrants(l)) | Ok(Output::ListRetirableGrants(l)) => {
                l.next_marker.as_ref().map_or(0, String::len)
                    + l.grants.iter().map(grant_entry_hint).sum::<usize>()
            }
            Ok(Output::PutKeyPolicy) => 0,
            Ok(Output::RetireGrant) => 0,
            Ok(Output::RevokeGrant) => 0,
            Ok(Output::GetStatus(st)) => {
                st.version.len()
                    + st.metrics
                        .iter()
                        .map(|m| {
                            METRIC_ENTRY_FIXED
                                + m.name.len()
                                + m.labels
                                    .iter()
                                    .map(|(k, v)| 16 + k.len() + v.len())
                                    .sum::<usize>()
                                + 16 * m.quantiles.len()
                        })
                        .sum::<usize>()
            }
            Ok(Output::VerifyAuditSeals(v)) => 64 + v.valid.len() + 32,
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
        key_state: key_state_of(m.key_state())?,
        key_usage: KeyUsage::EncryptDecrypt,
        key_spec: KeySpec::SymmetricDefault,
        origin: match m.origin() {
            fb::Origin::EXTERNAL => Origin::External,
            fb::Origin::HSM => Origin::Hsm,
            _ => Origin::Kmsd,
        },
        current_version: m.current_version(),
        deletion_date: m.deletion_date(),
        pending_deletion_window_in_days: m.pending_deletion_window_in_days(),
        valid_to: m.valid_to(),
        expiration_model: m.expiration_model().map(expiration_model_of).transpose()?,
    })
}

fn read_pairs(
    v: Option<Vector<'_, ForwardsUOffset<fb::ContextEntry<'_>>>>,
) -> Vec<(String, String)> {
    v.map(|v| {
        v.iter()
            .map(|e| (owned(e.key()), owned(e.value())))
            .collect()
    })
    .unwrap_or_default()
}

fn read_grants(
    v: Option<Vector<'_, ForwardsUOffset<fb::GrantListEntry<'_>>>>,
) -> Result<Vec<GrantListEntry>, KmsError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.iter()
        .map(|g| {
            Ok(GrantListEntry {
                key_id: owned(g.key_id()),
                grant_id: owned(g.grant_id()),
                name: g.name().map(str::to_owned),
                creation_date: g.creation_date(),
                grantee_principal: owned(g.grantee_principal()),
                retiring_principal: g.retiring_principal().map(str::to_owned),
                issuing_account: owned(g.issuing_account()),
                operations: g
                    .operations()
                    .into_iter()
                    .flatten()
                    .map(|o| {
                        grant_operation_of(o).ok_or_else(|| malformed("unknown grant operation"))
                    })
                    .collect::<Result<_, _>>()?,
                constraints: g.constraints().map(|c| OwnedGrantConstraints {
                    encryption_context_subset: read_pairs(c.encryption_context_subset()),
                    encryption_context_equals: read_pairs(c.encryption_context_equals()),
                }),
            })
        })
        .collect()
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
        fb::Output::UpdateKeyDescriptionResponse => {
            o.output_as_update_key_description_response()
                .ok_or_else(missing)?;
            Output::UpdateKeyDescription
        }
        fb::Output::TagResourceResponse => {
            o.output_as_tag_resource_response().ok_or_else(missing)?;
            Output::TagResource
        }
        fb::Output::UntagResourceResponse => {
            o.output_as_untag_resource_response().ok_or_else(missing)?;
            Output::UntagResource
        }
        fb::Output::CreateAliasResponse => {
            o.output_as_create_alias_response().ok_or_else(missing)?;
            Output::CreateAlias
        }
        fb::Output::UpdateAliasResponse => {
            o.output_as_update_alias_response().ok_or_else(missing)?;
            Output::UpdateAlias
        }
        fb::Output::DeleteAliasResponse => {
            o.output_as_delete_alias_response().ok_or_else(missing)?;
            Output::DeleteAlias
        }
        fb::Output::EnableKeyResponse => {
            o.output_as_enable_key_response().ok_or_else(missing)?;
            Output::EnableKey
        }
        fb::Output::DisableKeyResponse => {
            o.output_as_disable_key_response().ok_or_else(missing)?;
            Output::DisableKey
        }
        fb::Output::EnableKeyRotationResponse => {
            o.output_as_enable_key_rotation_response()
                .ok_or_else(missing)?;
            Output::EnableKeyRotation
        }
        fb::Output::DisableKeyRotationResponse => {
            o.output_as_disable_key_rotation_response()
                .ok_or_else(missing)?;
            Output::DisableKeyRotation
        }
        fb::Output::ImportKeyMaterialResponse => {
            o.output_as_import_key_material_response()
                .ok_or_else(missing)?;
            Output::ImportKeyMaterial
        }
        fb::Output::DeleteImportedKeyMaterialResponse => {
            o.output_as_delete_imported_key_material_response()
                .ok_or_else(missing)?;
            Output::DeleteImportedKeyMaterial
        }
        fb::Output::WhoAmIResponse => {
            let r = o.output_as_who_am_iresponse().ok_or_else(missing)?;
            Output::WhoAmI(WhoAmIOutput {
                uid: r.uid(),
                gid: r.gid(),
                pid: r.pid(),
                groups: r.groups().map(|g| g.iter().collect()).unwrap_or_default(),
                unit: r.unit().map(str::to_owned),
                cgroup: r.cgroup().map(str::to_owned),
            })
        }
        fb::Output::ListResourceTagsResponse => {
            let r = o
                .output_as_list_resource_tags_response()
                .ok_or_else(missing)?;
            Output::ListResourceTags(ListResourceTagsOutput {
                tags: r
                    .tags()
                    .map(|v| {
                        v.iter()
                            .map(|t| OwnedTag {
                                key: owned(t.tag_key()),
                                value: owned(t.tag_value()),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::ListAliasesResponse => {
            let r = o.output_as_list_aliases_response().ok_or_else(missing)?;
            Output::ListAliases(ListAliasesOutput {
                aliases: r
                    .aliases()
                    .map(|v| {
                        v.iter()
                            .map(|a| AliasListEntry {
                                alias_name: owned(a.alias_name()),
                                alias_arn: owned(a.alias_arn()),
                                target_key_id: a.target_key_id().map(str::to_owned),
                                creation_date: a.creation_date(),
                                last_updated_date: a.last_updated_date(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::ScheduleKeyDeletionResponse => {
            let r = o
                .output_as_schedule_key_deletion_response()
                .ok_or_else(missing)?;
            Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
                key_id: owned(r.key_id()),
                deletion_date: r.deletion_date(),
                key_state: key_state_of(r.key_state())?,
                pending_window_in_days: r.pending_window_in_days(),
            })
        }
        fb::Output::CancelKeyDeletionResponse => {
            let r = o
                .output_as_cancel_key_deletion_response()
                .ok_or_else(missing)?;
            Output::CancelKeyDeletion(CancelKeyDeletionOutput {
                key_id: owned(r.key_id()),
            })
        }
        fb::Output::GetKeyRotationStatusResponse => {
            let r = o
                .output_as_get_key_rotation_status_response()
                .ok_or_else(missing)?;
            Output::GetKeyRotationStatus(GetKeyRotationStatusOutput {
                key_id: owned(r.key_id()),
                key_rotation_enabled: r.key_rotation_enabled(),
                rotation_period_in_days: r.rotation_period_in_days(),
                next_rotation_date: r.next_rotation_date(),
                on_demand_rotation_start_date: r.on_demand_rotation_start_date(),
            })
        }
        fb::Output::RotateKeyOnDemandResponse => {
            let r = o
                .output_as_rotate_key_on_demand_response()
                .ok_or_else(missing)?;
            Output::RotateKeyOnDemand(RotateKeyOnDemandOutput {
                key_id: owned(r.key_id()),
            })
        }
        fb::Output::ListKeyRotationsResponse => {
            let r = o
                .output_as_list_key_rotations_response()
                .ok_or_else(missing)?;
            Output::ListKeyRotations(ListKeyRotationsOutput {
                rotations: r
                    .rotations()
                    .map(|v| {
                        v.iter()
                            .map(|e| {
                                Ok(RotationsListEntry {
                                    key_id: owned(e.key_id()),
                                    rotation_date: e.rotation_date(),
                                    rotation_type: match e.rotation_type() {
                                        fb::RotationType::AUTOMATIC => RotationType::Automatic,
                                        fb::RotationType::ON_DEMAND => RotationType::OnDemand,
                                        _ => return Err(malformed("unknown rotation type")),
                                    },
                                })
                            })
                            .collect::<Result<_, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default(),
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::GetParametersForImportResponse => {
            let r = o
                .output_as_get_parameters_for_import_response()
                .ok_or_else(missing)?;
            Output::GetParametersForImport(GetParametersForImportOutput {
                key_id: owned(r.key_id()),
                import_token: bytes_of(r.import_token()),
                public_key: bytes_of(r.public_key()),
                parameters_valid_to: r.parameters_valid_to(),
            })
        }
        fb::Output::PutKeyPolicyResponse => {
            o.output_as_put_key_policy_response().ok_or_else(missing)?;
            Output::PutKeyPolicy
        }
        fb::Output::GetKeyPolicyResponse => {
            let r = o.output_as_get_key_policy_response().ok_or_else(missing)?;
            Output::GetKeyPolicy(GetKeyPolicyOutput {
                policy: owned(r.policy()),
                policy_name: owned(r.policy_name()),
            })
        }
        fb::Output::ListKeyPoliciesResponse => {
            let r = o
                .output_as_list_key_policies_response()
                .ok_or_else(missing)?;
            Output::ListKeyPolicies(ListKeyPoliciesOutput {
                policy_names: r
                    .policy_names()
                    .map(|v| v.iter().map(str::to_owned).collect())
                    .unwrap_or_default(),
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::CreateGrantResponse => {
            let r = o.output_as_create_grant_response().ok_or_else(missing)?;
            Output::CreateGrant(CreateGrantOutput {
                grant_token: owned(r.grant_token()),
                grant_id: owned(r.grant_id()),
            })
        }
        fb::Output::ListGrantsResponse => {
            let r = o.output_as_list_grants_response().ok_or_else(missing)?;
            Output::ListGrants(ListGrantsOutput {
                grants: read_grants(r.grants())?,
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::ListRetirableGrantsResponse => {
            let r = o
                .output_as_list_retirable_grants_response()
                .ok_or_else(missing)?;
            Output::ListRetirableGrants(ListGrantsOutput {
                grants: read_grants(r.grants())?,
                next_marker: r.next_marker().map(str::to_owned),
                truncated: r.truncated(),
            })
        }
        fb::Output::RetireGrantResponse => {
            o.output_as_retire_grant_response().ok_or_else(missing)?;
            Output::RetireGrant
        }
        fb::Output::RevokeGrantResponse => {
            o.output_as_revoke_grant_response().ok_or_else(missing)?;
            Output::RevokeGrant
        }
        fb::Output::GetStatusResponse => {
            let r = o.output_as_get_status_response().ok_or_else(missing)?;
            let samples = r.metrics().map(|v| v.iter().collect::<Vec<_>>());
            let samples = samples.unwrap_or_default();
            if samples.len() > crate::types::limits::MAX_STATUS_METRICS {
                return Err(malformed("too many metrics"));
            }
            Output::GetStatus(GetStatusOutput {
                version: r.version().unwrap_or_default().to_owned(),
                uptime_ms: r.uptime_ms(),
                metrics: samples
                    .into_iter()
                    .map(read_metric)
                    .collect::<Result<_, _>>()?,
            })
        }
        fb::Output::VerifyAuditSealsResponse => {
            let r = o
                .output_as_verify_audit_seals_response()
                .ok_or_else(missing)?;
            Output::VerifyAuditSeals(VerifyAuditSealsOutput {
                valid: r.valid().map(|v| v.iter().collect()).unwrap_or_default(),
                head_seq: r.head_seq(),
                head_hash: r
                    .head_hash()
                    .and_then(|h| <[u8; 32]>::try_from(h.bytes()).ok())
                    .ok_or_else(|| malformed("HeadHash must be 32 bytes"))?,
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
