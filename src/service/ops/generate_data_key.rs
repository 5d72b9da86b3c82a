//! GenerateDataKey and GenerateDataKeyWithoutPlaintext: a random data key,
//! returned encrypted under the KMS key (and in plaintext for the former).

use crate::crypto::rng;
use crate::identity::Identity;
use crate::service::{format_key_id, ExecError, ExecMode, Service};
use kms_proto::types::limits::MAX_DATA_KEY_BYTES;
use kms_proto::{
    GenerateDataKey, GenerateDataKeyOutput, GenerateDataKeyWithoutPlaintextOutput, KmsError,
    Output, SecretBytes,
};

/// Validates the size: exactly one of NumberOfBytes (1..=1024) and KeySpec.
pub fn validate(req: &GenerateDataKey<'_>) -> Result<usize, KmsError> {
    match (req.number_of_bytes, req.key_spec) {
        (Some(_), Some(_)) => Err(KmsError::validation(
            "specify either NumberOfBytes or KeySpec, not both",
        )),
        (None, None) => Err(KmsError::validation("NumberOfBytes or KeySpec is required")),
        (Some(n), None) if n == 0 || n > MAX_DATA_KEY_BYTES => Err(KmsError::validation(format!(
            "NumberOfBytes {n} is out of range 1..={MAX_DATA_KEY_BYTES}"
        ))),
        (Some(n), None) => Ok(n as usize),
        (None, Some(spec)) => Ok(spec.num_bytes() as usize),
    }
}

/// Generates the data key and seals it under the key's current version.
pub fn apply(
    svc: &Service,
    req: &GenerateDataKey<'_>,
    _peer: &Identity,
    mode: ExecMode,
    with_plaintext: bool,
) -> Result<Output, ExecError> {
    let len = validate(req)?;
    let context = super::context(&req.context)?;
    let key = svc.load_key_by_name(req.key_id, mode)?;
    key.check_usable()?;
    let mut plaintext = SecretBytes::new(vec![0; len]);
    rng::fill(plaintext.expose_mut());
    let ciphertext_blob = svc.seal(&key, &context, plaintext.expose(), mode)?;
    let key_id = format_key_id(key.id());
    Ok(if with_plaintext {
        Output::GenerateDataKey(GenerateDataKeyOutput {
            key_id,
            plaintext,
            ciphertext_blob,
        })
    } else {
        Output::GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput {
            key_id,
            ciphertext_blob,
        })
    })
}
