//! One file per operation: its validation and its apply function.
//!
//! Every apply function takes the service, the typed request, the caller and
//! the execution mode, and returns the output or an error with an AWS
//! exception name. Validation comes first: cheap checks fail before any key is
//! loaded.

pub mod create_key;
pub mod decrypt;
pub mod describe_key;
pub mod encrypt;
pub mod generate_data_key;
pub mod generate_random;
pub mod list_keys;
pub mod re_encrypt;

use crate::crypto::CanonicalContext;
use kms_proto::KmsError;

/// Canonicalizes a client's encryption context; malformed contexts are
/// ValidationException.
pub(crate) fn context(pairs: &[(&str, &str)]) -> Result<CanonicalContext, KmsError> {
    CanonicalContext::new(pairs)
        .map_err(|e| KmsError::validation(format!("encryption context: {e}")))
}
