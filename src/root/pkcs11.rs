//! The production root of trust: an AES-256 key inside a PKCS#11 token,
//! used through [`crate::hsm::Hsm`].
//!
//! The root key never leaves the token (`CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`; `kmsd hsm init` creates it). Backing keys are wrapped
//! and unwrapped with RFC 5649 KWP inside the token, giving byte for byte
//! what [`super::FileRoot`] gives for the same root key, so the wrapped-key
//! format in the keystore does not depend on the root's kind.
//!
//! **Boundary**: every method blocks in the PKCS#11 module; the service
//! calls them from workers and cache loaders only, never from an I/O thread.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::{
    HsmOnlyKeys, ImportWrapping, RootError, RootOfTrust, WrappingKeyPair, WrappingKeySpec,
};
use crate::config::Pkcs11Config;
use crate::crypto::KeyMaterial;
use crate::hsm::{FaultClass, Hsm, HsmError, HsmOnlyKey};

/// Length of an RFC 5649 wrapping of a 32-byte key.
const WRAPPED_LEN: usize = KeyMaterial::LEN + 8;

/// The PKCS#11 root of trust (kind `"pkcs11"`).
pub struct Pkcs11Root {
    hsm: Hsm,
    /// HSM-only keys found so far, by id (no key material: ids and cached
    /// object handles).
    hsm_only_keys: Mutex<HashMap<[u8; 20], Arc<HsmOnlyKey>>>,
}

impl Pkcs11Root {
    /// Opens the token and the root key described by `config` (see
    /// [`Hsm::open`]).
    ///
    /// # Errors
    ///
    /// [`HsmError::Setup`] with a one-line message saying what to do (module
    /// missing, no such token, PIN rejected or too readable, root key
    /// missing).
    pub fn open(config: &Pkcs11Config) -> Result<Pkcs11Root, HsmError> {
        Ok(Pkcs11Root {
            hsm: Hsm::open(config)?,
            hsm_only_keys: Mutex::new(HashMap::new()),
        })
    }

    /// The HSM under this root, for its health ([`Hsm::is_available`]),
    /// counters and the HSM-only key operations.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The HSM-only key `id`, found once and then remembered.
    fn hsm_only_key(&self, id: &[u8; 20]) -> Result<Arc<HsmOnlyKey>, RootError> {
        if let Some(key) = self.hsm_only_keys.lock().get(id) {
            return Ok(Arc::clone(key));
        }
        let key = self
            .hsm
            .find_key(id)
            .map_err(|e| permanent_or(e, "PKCS#11 key lookup failed"))?
            .ok_or_else(|| {
                RootError::Invalid(format!("no HSM-only key {} in the token", hex(id)))
            })?;
        let key = Arc::new(key);
        self.hsm_only_keys.lock().insert(*id, Arc::clone(&key));
        Ok(key)
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unavailable for transient failures, else Invalid with `what`.
fn permanent_or(err: HsmError, what: &str) -> RootError {
    match transient(err) {
        Ok(unavailable) => unavailable,
        Err(e) => RootError::Invalid(format!("{what}: {e}")),
    }
}

impl RootOfTrust for Pkcs11Root {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
        self.hsm.wrap_key(key).map_err(|e| match transient(e) {
            Ok(unavailable) => unavailable,
            Err(e) => RootError::Invalid(format!("PKCS#11 wrap failed: {e}")),
        })
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
        // Anything but a wrapped 32-byte key is corrupt for us, as for the
        // file root; refuse it before the HSM sees it.
        if wrapped.len() != WRAPPED_LEN {
            return Err(RootError::Unwrap);
        }
        self.hsm
            .unwrap_key(wrapped)
            .map_err(|e| match transient(e) {
                Ok(unavailable) => unavailable,
                // A wrapped key that does not verify, or that unwraps to anything
                // but 32 bytes: the keystore and the root disagree.
                Err(_) => RootError::Unwrap,
            })
    }

    fn hsm_only_keys(&self) -> Option<&dyn HsmOnlyKeys> {
        Some(self)
    }

    fn import_wrapping(&self) -> Option<&dyn ImportWrapping> {
        Some(self)
    }

    fn is_available(&self) -> bool {
        self.hsm.is_available()
    }

    fn health(&self) -> Option<super::RootHealth> {
        Some(super::RootHealth {
            up: self.hsm.is_available(),
            stats: self.hsm.stats(),
        })
    }
}

/// Import wrapping keys: RSA private keys in the token labelled
/// `kmsd-import-<hex id>` with `CKA_ID` = id (`hsm/import_keys.rs`). The
/// handle is the id itself: the token holds the key.
impl ImportWrapping for Pkcs11Root {
    fn generate(&self, id: &[u8; 20], spec: WrappingKeySpec) -> Result<WrappingKeyPair, RootError> {
        let label = format!("{}{}", crate::hsm::IMPORT_KEY_LABEL_PREFIX, hex(id));
        let public_key = self
            .hsm
            .generate_import_key(&label, id, spec.bits())
            .map_err(|e| permanent_or(e, "PKCS#11 RSA key pair generation failed"))?;
        Ok(WrappingKeyPair {
            public_key,
            handle: id.to_vec(),
        })
    }

    fn decrypt(
        &self,
        id: &[u8; 20],
        handle: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, RootError> {
        if handle != id {
            return Err(RootError::Invalid(
                "the import wrapping key handle does not name this key's pair in the token"
                    .to_owned(),
            ));
        }
        self.hsm
            .import_key_decrypt(id, ciphertext)
            .map_err(|e| permanent_or(e, "PKCS#11 RSA-OAEP decryption failed"))
    }

    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
        self.hsm
            .destroy_import_key(id)
            .map_err(|e| permanent_or(e, "PKCS#11 key destruction failed"))
    }

    fn held(&self) -> Result<Vec<[u8; 20]>, RootError> {
        let ids = self
            .hsm
            .import_key_ids()
            .map_err(|e| permanent_or(e, "PKCS#11 key lookup failed"))?;
        Ok(ids
            .into_iter()
            .filter_map(|id| <[u8; 20]>::try_from(id.as_slice()).ok())
            .collect())
    }
}

/// HSM-only keys: AES-256 token objects labelled `kmsd-key-<hex id>` with
/// `CKA_ID` = id, generated in the token and never extractable.
impl HsmOnlyKeys for Pkcs11Root {
    fn generate(&self, id: &[u8; 20]) -> Result<(), RootError> {
        let key = self
            .hsm
            .generate_key(&format!("kmsd-key-{}", hex(id)), id)
            .map_err(|e| permanent_or(e, "PKCS#11 key generation failed"))?;
        self.hsm_only_keys.lock().insert(*id, Arc::new(key));
        Ok(())
    }

    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
        self.hsm_only_keys.lock().remove(id);
        let Some(key) = self
            .hsm
            .find_key(id)
            .map_err(|e| permanent_or(e, "PKCS#11 key lookup failed"))?
        else {
            return Ok(false);
        };
        self.hsm
            .destroy_key(&key)
            .map_err(|e| permanent_or(e, "PKCS#11 key destruction failed"))?;
        Ok(true)
    }

    fn seal(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        let key = self.hsm_only_key(id)?;
        self.hsm
            .gcm_encrypt(&key, iv, aad, plaintext)
            .map_err(|e| permanent_or(e, "PKCS#11 AES-GCM encryption failed"))
    }

    fn open(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, RootError> {
        let key = self.hsm_only_key(id)?;
        match self.hsm.gcm_decrypt(&key, iv, aad, ciphertext_and_tag) {
            Ok(plaintext) => Ok(Some(plaintext)),
            // A permanent failure of a decryption with a key that exists is
            // the input's: a wrong tag, AAD or IV, or a truncated input.
            Err(e) => match transient(e) {
                Ok(unavailable) => Err(unavailable),
                Err(_) => Ok(None),
            },
        }
    }
}

/// `Ok(RootError::Unavailable)` for a failure that may pass (the HSM down,
/// busy, recovering, or no session free in time); `Err(e)` for a permanent
/// one.
fn transient(err: HsmError) -> Result<RootError, HsmError> {
    match err.class() {
        FaultClass::Permanent => Err(err),
        FaultClass::Retryable | FaultClass::SessionLost | FaultClass::DeviceFatal => {
            Ok(RootError::Unavailable(err.to_string()))
        }
    }
}

impl fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("hsm", &self.hsm)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::CallFailure;
    use cryptoki_sys::*;

    #[test]
    fn errors_map_to_root_errors() {
        let call = |rv| HsmError::Call(CallFailure::new("C_UnwrapKey", rv));
        assert!(matches!(
            transient(call(CKR_DEVICE_ERROR)),
            Ok(RootError::Unavailable(_))
        ));
        assert!(matches!(
            transient(call(CKR_SESSION_HANDLE_INVALID)),
            Ok(RootError::Unavailable(_))
        ));
        assert!(matches!(
            transient(call(CKR_DEVICE_MEMORY)),
            Ok(RootError::Unavailable(_))
        ));
        assert!(matches!(
            transient(HsmError::Unavailable("down".into())),
            Ok(RootError::Unavailable(m)) if m.contains("down")
        ));
        assert!(transient(call(CKR_WRAPPED_KEY_INVALID)).is_err());
        assert!(transient(HsmError::Invalid("31 bytes".into())).is_err());
    }
}
