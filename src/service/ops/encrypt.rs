//! Encrypt: up to 4096 bytes under a KMS key's current version.

use crate::identity::Identity;
use crate::service::{format_key_id, ExecError, ExecMode, Service};
use kms_proto::types::limits::MAX_PLAINTEXT;
use kms_proto::{Encrypt, EncryptOutput, KmsError, Output};

/// Validates the plaintext size (1..=4096 bytes, as AWS KMS).
pub fn validate(req: &Encrypt<'_>) -> Result<(), KmsError> {
    if req.plaintext.is_empty() || req.plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::validation(format!(
            "Plaintext length {} is out of range 1..={MAX_PLAINTEXT}",
            req.plaintext.len()
        )));
    }
    Ok(())
}

/// Seals the plaintext, bound to the encryption context.
pub fn apply(
    svc: &Service,
    req: &Encrypt<'_>,
    _peer: &Identity,
    mode: ExecMode,
) -> Result<Output, ExecError> {
    validate(req)?;
    let context = super::context(&req.context)?;
    let key = svc.load_key_by_name(req.key_id, mode)?;
    key.check_usable()?;
    let ciphertext_blob = svc.seal(&key, &context, req.plaintext, mode)?;
    Ok(Output::Encrypt(EncryptOutput {
        key_id: format_key_id(key.id()),
        ciphertext_blob,
    }))
}
