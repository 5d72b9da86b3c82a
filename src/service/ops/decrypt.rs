//! Decrypt: the blob names its key and version; the caller may name the key
//! too, and must supply the same encryption context.

use crate::crypto::CanonicalContext;
use crate::identity::Identity;
use crate::service::{format_key_id, parse_key_id, ExecError, ExecMode, LoadedKey, Service};
use kms_proto::types::limits::MAX_CIPHERTEXT_BLOB;
use kms_proto::{Decrypt, DecryptOutput, ErrorKind, KmsError, Output, SecretBytes};
use std::sync::Arc;

/// Validates the blob's size as AWS KMS does (CiphertextBlob is 1..=6144
/// bytes; outside that, ValidationException). Shared by ReEncrypt.
pub(crate) fn validate_blob(ciphertext_blob: &[u8]) -> Result<(), KmsError> {
    if ciphertext_blob.is_empty() || ciphertext_blob.len() > MAX_CIPHERTEXT_BLOB {
        return Err(KmsError::validation(format!(
            "CiphertextBlob length {} is out of range 1..={MAX_CIPHERTEXT_BLOB}",
            ciphertext_blob.len()
        )));
    }
    Ok(())
}

pub(crate) fn invalid_ciphertext() -> KmsError {
    // One message for every cause: a tampered blob must not learn which
    // check failed.
    KmsError::new(
        ErrorKind::InvalidCiphertext,
        "the ciphertext is invalid, or the encryption context does not match",
    )
}

/// Opens a blob: checks the named key, loads the blob's key and version,
/// authenticates and decrypts. Shared by Decrypt and ReEncrypt.
///
/// The blob's length is checked first: one longer than any valid blob is
/// refused before a key is loaded, copied or authenticated.
pub(crate) fn open(
    svc: &Service,
    ciphertext_blob: &[u8],
    key_id: Option<&str>,
    context: &CanonicalContext,
    mode: ExecMode,
) -> Result<(Arc<LoadedKey>, SecretBytes), ExecError> {
    validate_blob(ciphertext_blob)?;
    let expected = key_id.map(parse_key_id).transpose()?;
    let header = crate::service::backing::parse_any_header(ciphertext_blob)
        .map_err(|_| invalid_ciphertext())?;
    if let Some(expected) = expected {
        if expected != header.key_id {
            return Err(KmsError::new(
                ErrorKind::IncorrectKey,
                format!(
                    "the ciphertext was not encrypted under key {}",
                    format_key_id(&expected)
                ),
            )
            .into());
        }
    }
    let key = match svc.load_key(&header.key_id, mode) {
        Ok(k) => k,
        // A blob naming a key that does not exist is a bad blob.
        Err(ExecError::Kms(e)) if e.kind == ErrorKind::NotFound => {
            return Err(invalid_ciphertext().into())
        }
        Err(e) => return Err(e),
    };
    key.check_usable()?;
    let mut plaintext = svc.open_blob(&key, header.key_version, ciphertext_blob, context, mode)?;
    // Move the buffer out; the emptied Zeroizing wrapper has nothing left.
    Ok((key, SecretBytes::new(std::mem::take(&mut *plaintext))))
}

/// Decrypts the blob.
pub fn apply(
    svc: &Service,
    req: &Decrypt<'_>,
    _peer: &Identity,
    mode: ExecMode,
) -> Result<Output, ExecError> {
    let context = super::context(&req.context)?;
    let (key, plaintext) = open(svc, req.ciphertext_blob, req.key_id, &context, mode)?;
    Ok(Output::Decrypt(DecryptOutput {
        key_id: format_key_id(key.id()),
        plaintext,
    }))
}
