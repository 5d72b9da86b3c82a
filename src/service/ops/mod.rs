//! One file per operation: its validation and its [`Op`](super::op::Op)
//! implementation (name, action, plane, keys, payload, output bound,
//! apply). Validation comes first: cheap checks fail before any key is
//! loaded.

pub mod cancel_key_deletion;
pub mod create_alias;
pub mod create_grant;
pub mod create_key;
pub mod decrypt;
pub mod delete_alias;
pub mod delete_imported_key_material;
pub mod describe_key;
pub mod disable_key;
pub mod disable_key_rotation;
pub mod enable_key;
pub mod enable_key_rotation;
pub mod encrypt;
pub mod generate_data_key;
pub mod generate_random;
pub mod get_key_policy;
pub mod get_key_rotation_status;
pub mod get_parameters_for_import;
pub mod import_key_material;
pub mod list_aliases;
pub mod list_grants;
pub mod list_key_policies;
pub mod list_key_rotations;
pub mod list_keys;
pub mod list_resource_tags;
pub mod list_retirable_grants;
pub mod put_key_policy;
pub mod re_encrypt;
pub mod retire_grant;
pub mod revoke_grant;
pub mod rotate_key_on_demand;
pub mod schedule_key_deletion;
pub mod tag_resource;
pub mod untag_resource;
pub mod update_alias;
pub mod update_key_description;
pub mod get_status;
pub mod verify_audit_seals;
pub mod who_am_i;

#[cfg(test)]
pub(crate) mod test_support;

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

/// Pagination markers of the lists ordered by a name (ListAliases,
/// ListResourceTags): the last name of a page, hex-encoded, so that
/// clients treat it as opaque. A marker that does not decode is
/// InvalidMarkerException.
pub(crate) mod marker {
    use kms_proto::{ErrorKind, KmsError};

    /// Longest name a marker carries, in bytes (a 256-character alias
    /// name; a 128-character tag key of up to 4 bytes each).
    const MAX_NAME: usize = 1024;

    /// The marker that continues after `name`.
    pub(crate) fn encode(name: &str) -> String {
        name.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// The name a marker continues after.
    pub(crate) fn decode(marker: &str, operation: &str) -> Result<String, KmsError> {
        let bad = || {
            KmsError::new(
                ErrorKind::InvalidMarker,
                format!("Marker is not one {operation} returned"),
            )
        };
        let hex = marker.as_bytes();
        if hex.is_empty() || !hex.len().is_multiple_of(2) || hex.len() > 2 * MAX_NAME {
            return Err(bad());
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let bytes = hex
            .chunks(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        String::from_utf8(bytes).map_err(|_| bad())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn markers_round_trip_and_garbage_is_refused() {
            for name in ["alias/a", "é/ü", "k"] {
                assert_eq!(super::decode(&super::encode(name), "X").unwrap(), name);
            }
            for bad in ["", "a", "zz", "FF", "ff", &"61".repeat(1025)] {
                let e = super::decode(bad, "ListAliases").unwrap_err();
                assert_eq!(e.kind, kms_proto::ErrorKind::InvalidMarker, "{bad}");
                assert!(e.message.contains("ListAliases"), "{e}");
            }
        }
    }
}
