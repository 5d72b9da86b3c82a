//! One file per operation: its validation and its [`Op`](super::op::Op)
//! implementation (name, action, plane, keys, payload, output bound,
//! apply). Validation comes first: cheap checks fail before any key is
//! loaded.

pub mod cancel_key_deletion;
pub mod create_key;
pub mod decrypt;
pub mod delete_imported_key_material;
pub mod describe_key;
pub mod disable_key;
pub mod disable_key_rotation;
pub mod enable_key;
pub mod enable_key_rotation;
pub mod encrypt;
pub mod generate_data_key;
pub mod generate_random;
pub mod get_parameters_for_import;
pub mod import_key_material;
pub mod get_key_rotation_status;
pub mod list_key_rotations;
pub mod list_keys;
pub mod not_yet;
pub mod re_encrypt;
pub mod rotate_key_on_demand;
pub mod schedule_key_deletion;

use crate::crypto::CanonicalContext;
use kms_proto::KmsError;

/// Canonicalizes a client's encryption context; malformed contexts are
/// ValidationException.
pub(crate) fn context(pairs: &[(&str, &str)]) -> Result<CanonicalContext, KmsError> {
    CanonicalContext::new(pairs)
        .map_err(|e| KmsError::validation(format!("encryption context: {e}")))
}

/// Bytes of client text a context error may quote: a duplicate key is
/// quoted Debug-escaped, at most 6 bytes per byte (`\u{1}` is 5).
pub(crate) fn context_error_text(pairs: &[(&str, &str)]) -> usize {
    pairs.iter().map(|(k, _)| 6 * k.len()).sum()
}

/// Heap bytes a decoded encryption context holds.
pub(crate) fn context_heap(pairs: &[(&str, &str)]) -> usize {
    std::mem::size_of_val(pairs)
}
