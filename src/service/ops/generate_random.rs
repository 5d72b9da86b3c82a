//! GenerateRandom: bytes from the daemon's CSPRNG.

use crate::crypto::rng;
use crate::identity::Identity;
use crate::service::op::{Authz, Data, DataCtx, ExecError, Op, OutputSize};
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

impl Op for GenerateRandom {
    const NAME: &'static str = "GenerateRandom";
    const ACTION: &'static str = "kms:GenerateRandom";
    type Plane = Data;

    fn payload(&self) -> usize {
        self.number_of_bytes as usize
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::Anyone
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: self.number_of_bytes.min(MAX_DATA_KEY_BYTES) as usize,
            ..OutputSize::default()
        }
    }

    /// Fills the answer with random bytes.
    fn apply(&self, _ctx: &DataCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let len = validate(self)?;
        let mut plaintext = SecretBytes::new(vec![0; len]);
        rng::fill(plaintext.expose_mut());
        Ok(Output::GenerateRandom(GenerateRandomOutput { plaintext }))
    }
}
