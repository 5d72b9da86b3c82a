//! GenerateRandom: bytes from the daemon's CSPRNG.

use crate::crypto::rng;
use crate::service::ExecError;
use kms_proto::types::limits::MAX_DATA_KEY_BYTES;
use kms_proto::{GenerateRandom, GenerateRandomOutput, KmsError, Output, SecretBytes};

/// Validates NumberOfBytes (1..=1024, as AWS KMS).
pub fn validate(req: &GenerateRandom) -> Result<usize, KmsError> {
    match req.number_of_bytes {
        n @ 1..=MAX_DATA_KEY_BYTES => Ok(n as usize),
        n => Err(KmsError::validation(format!(
            "NumberOfBytes {n} is out of range 1..={MAX_DATA_KEY_BYTES}"
        ))),
    }
}

/// Fills the answer with random bytes.
pub fn apply(req: &GenerateRandom) -> Result<Output, ExecError> {
    let len = validate(req)?;
    let mut plaintext = SecretBytes::new(vec![0; len]);
    rng::fill(plaintext.expose_mut());
    Ok(Output::GenerateRandom(GenerateRandomOutput { plaintext }))
}
