//! Conversion between flatbuffers and the typed messages of [`crate::types`].
//!
//! This is the one place where a verified flatbuffer becomes a typed request
//! (and where typed messages become flatbuffers). Every buffer is verified
//! with explicit limits before any field is read; nothing here uses the
//! runtime's `_unchecked` accessors.
//!
//! Split by direction, because the daemon and a client each use one half
//! of each: `request` (decoding requests, the daemon's side; encoding them,
//! the clients', with the size bound that keeps a builder from growing),
//! `response` (encoding answers, the daemon's side; decoding and tallying
//! them, the clients'), and `verify` (the limits both directions verify
//! with). Every item is re-exported here: `kms_proto::codec::X` is the one
//! path callers use. [`check`] is public as a module: the checks of a
//! request's fields that every encoding makes, with their messages (the
//! daemon's AWS JSON decoder makes them too).

pub mod check;
mod request;
mod response;
mod verify;

pub use request::{
    build_request, decode_request, encode_request, request_id_of, request_size_bound,
    RequestEncoder, RequestError, FRAME_SLACK, TABLE_BOUND, VECTOR_OVERHEAD,
};
pub use response::{
    decode_response, encode_error_response, encode_response, response_size_hint, tally_response,
    ResponseTally, ALIAS_ENTRY_FIXED, CONSTRAINT_PAIR_FIXED, GRANT_CONSTRAINTS_FIXED,
    GRANT_ENTRY_FIXED, KEY_ENTRY_FIXED, METRIC_ENTRY_FIXED, POLICY_NAME_ENTRY_FIXED,
    ROTATION_ENTRY_FIXED, TAG_ENTRY_FIXED,
};
pub use verify::{DecodeLimits, DEFAULT_MAX_BATCH, MAX_RESPONSE_TABLES};

use crate::generated as fb;
use crate::types::{ExpirationModel, GrantOperation, Origin};
use flatbuffers::FlatBufferBuilder;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

type Fbb<'b> = FlatBufferBuilder<'b>;

/// Key-value pairs (an encryption context, a grant constraint) as
/// ContextEntry tables; `None` when there are none (absent on the wire).
fn put_pairs<'b, K: AsRef<str>, V: AsRef<str>>(
    fbb: &mut Fbb<'b>,
    pairs: &[(K, V)],
) -> Option<
    flatbuffers::WIPOffset<
        flatbuffers::Vector<'b, flatbuffers::ForwardsUOffset<fb::ContextEntry<'b>>>,
    >,
> {
    if pairs.is_empty() {
        return None;
    }
    let entries: Vec<_> = pairs
        .iter()
        .map(|(k, v)| {
            let key = Some(fbb.create_string(k.as_ref()));
            let value = Some(fbb.create_string(v.as_ref()));
            fb::ContextEntry::create(fbb, &fb::ContextEntryArgs { key, value })
        })
        .collect();
    Some(fbb.create_vector(&entries))
}

/// A key's origin on the wire (requests name it in CreateKey, responses in
/// the key's metadata).
fn origin_to_wire(o: Origin) -> fb::Origin {
    match o {
        Origin::Kmsd => fb::Origin::KMSD,
        Origin::External => fb::Origin::EXTERNAL,
        Origin::Hsm => fb::Origin::HSM,
    }
}

/// An expiration model on the wire (ImportKeyMaterial, key metadata).
fn expiration_model_to_wire(m: ExpirationModel) -> fb::ExpirationModel {
    match m {
        ExpirationModel::KeyMaterialExpires => fb::ExpirationModel::KEY_MATERIAL_EXPIRES,
        ExpirationModel::KeyMaterialDoesNotExpire => {
            fb::ExpirationModel::KEY_MATERIAL_DOES_NOT_EXPIRE
        }
    }
}

/// A grant operation on the wire: the schema's `GrantOperation` lists
/// AWS's operations in the order of [`GrantOperation::ALL`].
fn grant_operation_to_wire(o: GrantOperation) -> fb::GrantOperation {
    let i = GrantOperation::ALL
        .iter()
        .position(|x| *x == o)
        .expect("every value is in ALL");
    fb::GrantOperation(i as u8)
}

/// The grant operation of a wire value; `None` for a value this crate does
/// not know.
fn grant_operation_of(o: fb::GrantOperation) -> Option<GrantOperation> {
    GrantOperation::ALL.get(usize::from(o.0)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_operations_have_the_schemas_values() {
        assert_eq!(
            GrantOperation::ALL.len(),
            fb::GrantOperation::ENUM_VALUES.len()
        );
        assert_eq!(
            GrantOperation::ALL.len(),
            crate::types::limits::MAX_GRANT_OPERATIONS
        );
        for (o, w) in GrantOperation::ALL
            .iter()
            .zip(fb::GrantOperation::ENUM_VALUES)
        {
            assert_eq!(w.variant_name(), Some(o.name()));
            assert_eq!(grant_operation_to_wire(*o), *w);
            assert_eq!(grant_operation_of(*w), Some(*o));
        }
        assert_eq!(grant_operation_of(fb::GrantOperation(17)), None);
    }
}
