//! The root key's one job: wrapping and unwrapping backing keys (RFC 5649
//! KWP inside the token, the same bytes as [`crate::root::FileRoot`]).
//!
//! Both run through raw one-call FFI (`ffi`): the sizes are known (a
//! wrapped 32-byte key is 40 bytes, a backing key 32), so kmsd skips the
//! size query cryptoki makes first, which SoftHSM answers by doing the
//! whole wrap, and key bytes stay in zeroized buffers. The benchmark
//! compares both ways: with the `bench-ffi` feature the operations can
//! also be run cryptoki's way (`*_two_calls`), so each operation here
//! takes the raw call it makes as a parameter rather than a flag that
//! production code would have to carry.

use cryptoki_sys::{CKR_BUFFER_TOO_SMALL, CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_SESSION_HANDLE};
use zeroize::Zeroizing;

use super::error::{CallFailure, HsmError};
use super::ffi::{RawApi, RawResult};
use super::health::input_or_device;
use super::Hsm;
use crate::crypto::KeyMaterial;

/// Length of an RFC 5649 wrapping of a 32-byte key.
const WRAPPED_LEN: usize = KeyMaterial::LEN + 8;

impl Hsm {
    /// Wraps a 32-byte backing key under the root key with the configured
    /// KWP mechanism: the key is imported as an extractable session object,
    /// wrapped with one `C_WrapKey` into a 40-byte buffer, and destroyed.
    ///
    /// # Errors
    ///
    /// [`HsmError`]; transient ones satisfy [`HsmError::is_transient`].
    pub fn wrap_key(&self, key: &KeyMaterial) -> Result<Vec<u8>, HsmError> {
        self.wrap_key_via(key, wrap_one_call)
    }

    /// [`Hsm::wrap_key`] with cryptoki's two-call pattern (size query, then
    /// the wrap): only so that `benches/hsm.rs` can compare.
    #[cfg(feature = "bench-ffi")]
    pub fn wrap_key_two_calls(&self, key: &KeyMaterial) -> Result<Vec<u8>, HsmError> {
        self.wrap_key_via(key, RawApi::wrap_two_calls)
    }

    fn wrap_key_via(
        &self,
        key: &KeyMaterial,
        wrap: impl Fn(
            &RawApi,
            CK_SESSION_HANDLE,
            CK_MECHANISM_TYPE,
            CK_OBJECT_HANDLE,
            CK_OBJECT_HANDLE,
        ) -> RawResult<Vec<u8>>,
    ) -> Result<Vec<u8>, HsmError> {
        let mechanism = self.settings.kwp_mechanism;
        self.call("C_WrapKey", |device, pooled, _| {
            let session = pooled.handle();
            let object = device
                .raw
                .create_wrappable_key(session, key.expose())
                .map_err(|rv| CallFailure::new("C_CreateObject", rv))?;
            let wrapped = wrap(&device.raw, session, mechanism, pooled.root, object);
            let destroyed = device.raw.destroy(session, object);
            let wrapped = wrapped.map_err(|rv| CallFailure::new("C_WrapKey", rv))?;
            destroyed.map_err(|rv| CallFailure::new("C_DestroyObject", rv))?;
            if wrapped.len() != WRAPPED_LEN {
                return Err(HsmError::Invalid(format!(
                    "the HSM wrapped a 32-byte key into {} bytes, not {WRAPPED_LEN}: is \
                     root.pkcs11.kwp_mechanism ({mechanism:#x}) RFC 5649 key wrap with padding?",
                    wrapped.len()
                )));
            }
            Ok(wrapped)
        })
    }

    /// Unwraps a backing key: `C_UnwrapKey` into an extractable,
    /// non-sensitive session object (no `CKA_VALUE_LEN` in the template),
    /// one `C_GetAttributeValue(CKA_VALUE)` into a zeroized 32-byte buffer,
    /// then `C_DestroyObject`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if the unwrapped key is not exactly 32 bytes
    /// (SoftHSM accepts KWP wrappings of any length, and AES "keys" of 20
    /// bytes); [`HsmError::Call`] with a Permanent class for a wrapped key
    /// that does not verify; transient errors otherwise.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<KeyMaterial, HsmError> {
        self.unwrap_key_via(wrapped, RawApi::get_value)
    }

    /// [`Hsm::unwrap_key`], reading the value with cryptoki's two-call
    /// pattern (size query, then the read): only so that `benches/hsm.rs`
    /// can compare.
    #[cfg(feature = "bench-ffi")]
    pub fn unwrap_key_two_calls(&self, wrapped: &[u8]) -> Result<KeyMaterial, HsmError> {
        self.unwrap_key_via(wrapped, RawApi::get_value_two_calls)
    }

    fn unwrap_key_via(
        &self,
        wrapped: &[u8],
        get_value: impl Fn(&RawApi, CK_SESSION_HANDLE, CK_OBJECT_HANDLE, &mut [u8]) -> RawResult<usize>,
    ) -> Result<KeyMaterial, HsmError> {
        let (mechanism, private) = (self.settings.kwp_mechanism, self.settings.private_unwrapped);
        self.call("C_UnwrapKey", |device, pooled, _| {
            let session = pooled.handle();
            let object = device
                .raw
                .unwrap(session, mechanism, pooled.root, wrapped, private)
                .map_err(|rv| input_or_device(device, CallFailure::new("C_UnwrapKey", rv)))?;
            let mut buf = Zeroizing::new([0u8; KeyMaterial::LEN]);
            let read = get_value(&device.raw, session, object, buf.as_mut_slice());
            let destroyed = device.raw.destroy(session, object);
            let len = match read {
                Ok(len) => len,
                Err(CKR_BUFFER_TOO_SMALL) => {
                    return Err(HsmError::Invalid(
                        "the unwrapped key is longer than 32 bytes".to_owned(),
                    ))
                }
                Err(rv) => return Err(CallFailure::new("C_GetAttributeValue", rv).into()),
            };
            destroyed.map_err(|rv| CallFailure::new("C_DestroyObject", rv))?;
            if len != KeyMaterial::LEN {
                return Err(HsmError::Invalid(format!(
                    "the unwrapped key is {len} bytes, not 32"
                )));
            }
            Ok(KeyMaterial::from_bytes(*buf))
        })
    }
}

/// kmsd's wrap: one `C_WrapKey` into a buffer of exactly the expected size.
fn wrap_one_call(
    raw: &RawApi,
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    wrapping_key: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> RawResult<Vec<u8>> {
    let mut out = vec![0u8; WRAPPED_LEN];
    raw.wrap(session, mechanism, wrapping_key, key, &mut out)
        .map(|n| {
            out.truncate(n);
            out
        })
}
