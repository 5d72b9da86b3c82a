//! HSM-only keys: AES-256 keys generated in the token that never leave it
//! (sensitive, never extractable, encrypt/decrypt only), found by `CKA_ID`,
//! used for AES-256-GCM inside the HSM, and destroyed there.
//!
//! One name for the concept: "HSM-only key", type [`HsmOnlyKey`]. It is a
//! key created with origin HSM in the protocol's terms; AWS KMS's nearest
//! is a key of origin `AWS_CLOUDHSM`, whose key material KMS creates in the
//! CloudHSM cluster of a custom key store (CreateKey, `Origin`:
//! <https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateKey.html>).
//! Its "token object" is the key itself in the token, as opposed to a
//! session copy.
//!
//! An [`HsmOnlyKey`] holds no key material, only the id and a cached object
//! handle, re-found when the pool's epoch moves (a session reopened or the
//! context rebuilt gives objects new handles). With `session_copy`, GCM
//! runs on a per-session `C_CopyObject` copy of the token object (a session
//! object runs ~3x faster on SoftHSM, and is still sensitive and never
//! extractable), made on first use and gone with its session.

use std::fmt;

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki_sys::CK_OBJECT_HANDLE;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::device::{self, Device, Pooled};
use super::error::{CallFailure, HsmError};
use super::health::input_or_device;
use super::Hsm;

/// AES-GCM IV length kmsd accepts (SoftHSM accepts others; we do not).
pub const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length.
pub const GCM_TAG_LEN: usize = 16;

/// An HSM-only AES-256 key, found by its `CKA_ID`. Holds no key material:
/// only the id and a cached object handle.
pub struct HsmOnlyKey {
    id: Vec<u8>,
    /// (epoch, handle) of the last lookup.
    cached: Mutex<(u64, CK_OBJECT_HANDLE)>,
}

impl HsmOnlyKey {
    /// The key's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }
}

impl fmt::Debug for HsmOnlyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmOnlyKey(id {})", hex_id(&self.id))
    }
}

fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Hsm {
    /// Generates an HSM-only key: an AES-256 token object that never leaves
    /// the HSM (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`; encrypt/decrypt
    /// only) with `label` and `CKA_ID` `id`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if a key with this id exists or `id` is empty;
    /// otherwise as any call.
    pub fn generate_key(&self, label: &str, id: &[u8]) -> Result<HsmOnlyKey, HsmError> {
        if id.is_empty() {
            return Err(HsmError::Invalid(
                "an HSM-only key id must not be empty".into(),
            ));
        }
        self.call("C_GenerateKey", |_device, pooled, epoch| {
            if !find_by_id(pooled, id)?.is_empty() {
                return Err(HsmError::Invalid(format!(
                    "an HSM-only key with id {} already exists",
                    hex_id(id)
                )));
            }
            let handle = pooled
                .session()
                .generate_key(
                    &device::AES_KEY_GEN,
                    &device::hsm_only_key_template(label, id),
                )
                .map_err(|e| CallFailure::from_cryptoki("C_GenerateKey", &e))?;
            Ok(HsmOnlyKey {
                id: id.to_vec(),
                cached: Mutex::new((epoch, handle.handle())),
            })
        })
    }

    /// Finds an HSM-only key by `CKA_ID`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if several keys have this id; otherwise as any
    /// call.
    pub fn find_key(&self, id: &[u8]) -> Result<Option<HsmOnlyKey>, HsmError> {
        self.call("C_FindObjects", |_device, pooled, epoch| {
            Ok(
                unique(find_by_id(pooled, id)?, id)?.map(|handle| HsmOnlyKey {
                    id: id.to_vec(),
                    cached: Mutex::new((epoch, handle)),
                }),
            )
        })
    }

    /// Destroys an HSM-only key in the token. (Session copies made on other
    /// sessions live until those sessions close.)
    ///
    /// # Errors
    ///
    /// As any call; [`HsmError::Invalid`] if it no longer exists.
    pub fn destroy_key(&self, key: &HsmOnlyKey) -> Result<(), HsmError> {
        self.call("C_DestroyObject", |device, pooled, epoch| {
            if let Some(copy) = pooled.hsm_only_copies.lock().remove(&key.id) {
                let _ = device.raw.destroy(pooled.handle(), copy);
            }
            let handle = self.token_object_handle(pooled, key, epoch)?;
            device
                .raw
                .destroy(pooled.handle(), handle)
                .map_err(|rv| CallFailure::new("C_DestroyObject", rv).into())
        })
    }

    /// AES-256-GCM encryption in the HSM with a caller-supplied IV of
    /// exactly 12 bytes, `aad`, and a 16-byte tag. Returns the ciphertext
    /// followed by the tag.
    ///
    /// After the call the IV in the mechanism parameters is compared with
    /// the one given: an HSM may write an IV of its own there (PKCS#11 lets
    /// a token in FIPS mode generate GCM IVs), and a ciphertext under an IV
    /// kmsd did not choose breaks the count of random IVs per key that the
    /// 2^32 limit rests on (and its blob would carry the wrong IV). That is
    /// a hard failure: logged, and no ciphertext returned.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] for an IV that is not 12 bytes (refused before
    /// the HSM sees it: SoftHSM would accept other lengths), or when the
    /// HSM used another IV.
    pub fn gcm_encrypt(
        &self,
        key: &HsmOnlyKey,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let iv = gcm_iv(iv)?;
        self.call("C_Encrypt", |device, pooled, epoch| {
            let handle = self.key_handle(device, pooled, key, epoch)?;
            let mut out = vec![0u8; plaintext.len() + GCM_TAG_LEN];
            #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
            let (n, mut seen) = device
                .raw
                .gcm_encrypt(pooled.handle(), handle, iv, aad, plaintext, &mut out)
                .map_err(|rv| CallFailure::new("C_Encrypt", rv))?;
            #[cfg(feature = "fault-injection")]
            self.apply_foreign_gcm_iv(&mut seen);
            if seen != *iv {
                tracing::error!(
                    key_id = %hex_id(&key.id),
                    "the HSM encrypted with an AES-GCM IV of its own, not the one kmsd chose \
                     (a token that generates IVs, e.g. in FIPS mode, cannot hold HSM-only keys); \
                     the ciphertext is discarded"
                );
                return Err(HsmError::Invalid(
                    "the HSM used an AES-GCM IV other than the one given".to_owned(),
                ));
            }
            if n != out.len() {
                return Err(HsmError::Invalid(format!(
                    "AES-GCM produced {n} bytes, expected {}",
                    out.len()
                )));
            }
            Ok(out)
        })
    }

    /// AES-256-GCM decryption in the HSM of `ciphertext || tag` (16-byte
    /// tag) with a 12-byte IV and `aad`. A wrong tag (or IV, AAD, key) is an
    /// error and no plaintext is returned.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] for an IV that is not 12 bytes or an input
    /// shorter than the tag; [`HsmError::Call`] with a Permanent class when
    /// authentication fails.
    pub fn gcm_decrypt(
        &self,
        key: &HsmOnlyKey,
        iv: &[u8],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let iv = gcm_iv(iv)?;
        if ciphertext_and_tag.len() < GCM_TAG_LEN {
            return Err(HsmError::Invalid(
                "AES-GCM input is shorter than its 16-byte tag".to_owned(),
            ));
        }
        self.call("C_Decrypt", |device, pooled, epoch| {
            let handle = self.key_handle(device, pooled, key, epoch)?;
            let mut out = Zeroizing::new(vec![0u8; ciphertext_and_tag.len()]);
            let n = device
                .raw
                .gcm_decrypt(
                    pooled.handle(),
                    handle,
                    iv,
                    aad,
                    ciphertext_and_tag,
                    &mut out,
                )
                .map_err(|rv| input_or_device(device, CallFailure::new("C_Decrypt", rv)))?;
            if n != ciphertext_and_tag.len() - GCM_TAG_LEN {
                return Err(HsmError::Invalid(format!(
                    "AES-GCM decryption produced {n} bytes, expected {}",
                    ciphertext_and_tag.len() - GCM_TAG_LEN
                )));
            }
            out.truncate(n);
            Ok(out)
        })
    }

    /// The object handle of `key` in the current epoch, re-found by id if
    /// sessions were reopened or the context rebuilt since it was cached.
    fn key_handle(
        &self,
        device: &Device,
        pooled: &Pooled,
        key: &HsmOnlyKey,
        epoch: u64,
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let token = self.token_object_handle(pooled, key, epoch)?;
        if !self.settings.session_copy {
            return Ok(token);
        }
        // Crypto runs on this session's copy (a session object: ~3x faster
        // on SoftHSM, and still sensitive and never extractable).
        let mut copies = pooled.hsm_only_copies.lock();
        if let Some(&copy) = copies.get(&key.id) {
            return Ok(copy);
        }
        let copy = device
            .raw
            .copy_to_session(pooled.handle(), token)
            .map_err(|rv| CallFailure::new("C_CopyObject", rv))?;
        copies.insert(key.id.clone(), copy);
        Ok(copy)
    }

    /// The token object handle of `key` in the current epoch.
    fn token_object_handle(
        &self,
        pooled: &Pooled,
        key: &HsmOnlyKey,
        epoch: u64,
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let mut cached = key.cached.lock();
        if cached.0 == epoch {
            return Ok(cached.1);
        }
        let handle = unique(find_by_id(pooled, &key.id)?, &key.id)?.ok_or_else(|| {
            HsmError::Invalid(format!(
                "no HSM-only key with id {} in the token",
                hex_id(&key.id)
            ))
        })?;
        *cached = (epoch, handle);
        Ok(handle)
    }
}

fn gcm_iv(iv: &[u8]) -> Result<&[u8; GCM_IV_LEN], HsmError> {
    iv.try_into().map_err(|_| {
        HsmError::Invalid(format!(
            "AES-GCM IV must be exactly {GCM_IV_LEN} bytes, not {}",
            iv.len()
        ))
    })
}

fn find_by_id(pooled: &Pooled, id: &[u8]) -> Result<Vec<CK_OBJECT_HANDLE>, HsmError> {
    let found = pooled
        .session()
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(|e| CallFailure::from_cryptoki("C_FindObjects", &e))?;
    Ok(found.iter().map(|h| h.handle()).collect())
}

fn unique(found: Vec<CK_OBJECT_HANDLE>, id: &[u8]) -> Result<Option<CK_OBJECT_HANDLE>, HsmError> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(HsmError::Invalid(format!(
            "{n} HSM-only keys have id {}",
            hex_id(id)
        ))),
    }
}
