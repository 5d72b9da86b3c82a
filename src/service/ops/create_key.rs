//! CreateKey: a new symmetric KMS key with a fresh 256-bit backing key,
//! made by kmsd and wrapped by the root of trust (origin KMSD), or
//! generated inside the HSM and never leaving it (origin HSM).

use crate::crypto::{rng, KeyMaterial};
use crate::dispatch::Peer;
use crate::keystore::KeyRecord;
use crate::service::{ExecError, ExecMode, Service};
use kms_proto::types::limits::MAX_DESCRIPTION_LEN;
use kms_proto::{CreateKey, ErrorKind, KeyState, KmsError, Origin, Output};

/// Validates the request.
pub fn validate(req: &CreateKey<'_>) -> Result<(), KmsError> {
    if req.description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(KmsError::validation(format!(
            "Description must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    if req.origin == Origin::External {
        return Err(KmsError::new(
            ErrorKind::UnsupportedOperation,
            "Origin EXTERNAL (importing key material) is not supported yet",
        ));
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
        origin: req.origin,
        current_version: 1,
    };
    if req.origin == Origin::Hsm {
        let vault = svc.vault_for_create()?;
        vault
            .generate(&crate::service::backing::vault_id(&key_id, 1))
            .map_err(crate::service::loader::root_error)?;
        svc.store_new_key(record.clone(), None)?;
    } else {
        let material = KeyMaterial::generate();
        svc.store_new_key(record.clone(), Some(&material))?;
    }
    tracing::info!(key_id = %crate::service::format_key_id(&key_id), "created key");
    Ok(Output::CreateKey(Service::metadata(&record)))
}
