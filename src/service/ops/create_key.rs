//! CreateKey: a new symmetric KMS key with a fresh 256-bit backing key.

use crate::crypto::{rng, KeyMaterial};
use crate::dispatch::Peer;
use crate::keystore::KeyRecord;
use crate::service::{ExecError, ExecMode, Service};
use kms_proto::types::limits::MAX_DESCRIPTION_LEN;
use kms_proto::{CreateKey, KeyState, KmsError, Origin, Output};

/// Validates the request.
pub fn validate(req: &CreateKey<'_>) -> Result<(), KmsError> {
    if req.description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(KmsError::validation(format!(
            "Description must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    Ok(())
}

/// Creates the key: generates the backing key, wraps it with the root of
/// trust, stores it durably, and caches it.
pub fn apply(
    svc: &Service,
    req: &CreateKey<'_>,
    _peer: &Peer,
    mode: ExecMode,
) -> Result<Output, ExecError> {
    validate(req)?;
    if mode == ExecMode::NonBlocking {
        return Err(ExecError::WouldBlock);
    }
    let mut id = [0u8; 16];
    rng::fill(&mut id);
    let key_id = *uuid::Builder::from_random_bytes(id).into_uuid().as_bytes();
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let record = KeyRecord {
        key_id,
        created_at,
        description: req.description.to_owned(),
        state: KeyState::Enabled,
        origin: Origin::Kmsd,
        current_version: 1,
    };
    let material = KeyMaterial::generate();
    svc.store_new_key(record.clone(), &material)?;
    tracing::info!(key_id = %crate::service::format_key_id(&key_id), "created key");
    Ok(Output::CreateKey(Service::metadata(&record)))
}
