//! Import wrapping keys in the token: the RSA key pairs of
//! GetParametersForImport whose private keys never leave the HSM.
//!
//! A pair is generated with `CKM_RSA_PKCS_KEY_PAIR_GEN` (public exponent
//! 65537). The private key is a token object (it must outlive a restart:
//! an import token is valid for 24 hours), `CKA_PRIVATE`, `CKA_SENSITIVE`,
//! never `CKA_EXTRACTABLE`, `CKA_DECRYPT` only, with `CKA_ID` the pair's
//! 20-byte id and `CKA_ALLOWED_MECHANISMS` the two decryptions below (so not
//! PKCS#1 v1.5, whose padding oracle this key must never offer). The public
//! key is a session object, read (`CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`) into
//! a DER `SubjectPublicKeyInfo` and destroyed at once.
//!
//! **Decryption.** kmsd asks the token for `CKM_RSA_PKCS_OAEP` with SHA-256
//! and MGF1-SHA-256 first. Tokens whose OAEP knows only SHA-1 (SoftHSM 2.6:
//! softhsm/SoftHSMv2#474) refuse that at `C_DecryptInit`
//! (`CKR_ARGUMENTS_BAD`, `CKR_MECHANISM_PARAM_INVALID` or
//! `CKR_MECHANISM_INVALID`); then the token does the raw RSA operation
//! (`CKM_RSA_X_509`, constant-time and blinded inside the token) and
//! [`crate::crypto::oaep`] removes the OAEP encoding in constant time. The
//! first answer is remembered for the life of the [`Hsm`] ([`OaepPath`]).
//! Plaintexts (and the raw encoded message, which determines the
//! plaintext) are held in zeroized buffers.
//!
//! A pair generated again under the same id replaces the old one: a
//! generation whose answer was lost (a session that failed after the key
//! was made, retried by `Hsm::call`) cannot leave two keys with one id.

use std::sync::atomic::Ordering;

use cryptoki::context::Function;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroizing;

use super::device::{Device, Pooled};
use super::error::{CallFailure, FaultClass, HsmError};
use super::health::input_or_device;
use super::Hsm;
use crate::crypto::{oaep, rsa};

/// The label prefix of import wrapping keys (`kmsd-import-<hex id>`).
pub const IMPORT_KEY_LABEL_PREFIX: &str = "kmsd-import-";

/// How the token decrypts RSAES-OAEP with SHA-256 (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OaepPath {
    /// `CKM_RSA_PKCS_OAEP` with SHA-256 and MGF1-SHA-256, in the token.
    Mechanism,
    /// `CKM_RSA_X_509` in the token, then OAEP decoding in kmsd.
    RawRsa,
}

const PATH_UNKNOWN: u8 = 0;
const PATH_MECHANISM: u8 = 1;
const PATH_RAW: u8 = 2;

impl Hsm {
    /// Generates an import wrapping key pair of `bits` bits named `id` (see
    /// the module docs), replacing any pair with that id, and returns its
    /// public key as DER `SubjectPublicKeyInfo`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] for an empty id or a public key that is not
    /// what was asked for; otherwise as any call.
    pub fn generate_import_key(
        &self,
        label: &str,
        id: &[u8],
        bits: u32,
    ) -> Result<Vec<u8>, HsmError> {
        if id.is_empty() {
            return Err(HsmError::Invalid(
                "an import wrapping key id must not be empty".into(),
            ));
        }
        self.call("C_GenerateKeyPair", |_device, pooled, _epoch| {
            let session = pooled.session();
            for stale in find_private(pooled, id)? {
                session
                    .destroy_object(stale)
                    .map_err(|e| CallFailure::from_cryptoki("C_DestroyObject", &e))?;
            }
            let (public, private) = session
                .generate_key_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    &public_template(bits),
                    &private_template(label, id),
                )
                .map_err(|e| CallFailure::from_cryptoki("C_GenerateKeyPair", &e))?;
            let spki = public_key_der(pooled, public, bits);
            // The public half is only needed for its DER; the private half
            // goes too if the DER could not be made, so nothing half-made
            // stays in the token.
            let _ = session.destroy_object(public);
            if spki.is_err() {
                let _ = session.destroy_object(private);
            }
            spki
        })
    }

    /// RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) decryption of
    /// `ciphertext` with the import wrapping key `id`. `Ok(None)` when the
    /// ciphertext does not decrypt (wrong length, not below the modulus,
    /// padding that does not check), all alike.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if the token holds no such key; otherwise as
    /// any call.
    pub fn import_key_decrypt(
        &self,
        id: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HsmError> {
        self.call("C_Decrypt", |device, pooled, _epoch| {
            let key = unique_private(pooled, id)?;
            let k = modulus_len(pooled, key)?;
            if ciphertext.len() != k {
                return Ok(None);
            }
            if self.oaep_path.load(Ordering::Acquire) != PATH_RAW {
                match self.decrypt_with_mechanism(device, pooled, key, ciphertext)? {
                    Some(outcome) => return Ok(outcome),
                    None => {
                        tracing::info!(
                            "the PKCS#11 token has no RSA-OAEP with SHA-256 (SoftHSM 2.6 has \
                             SHA-1 only); import key material is decrypted with raw RSA in the \
                             token and OAEP-decoded by kmsd"
                        );
                        self.oaep_path.store(PATH_RAW, Ordering::Release);
                    }
                }
            }
            let em = match pooled
                .session()
                .decrypt(&Mechanism::RsaX509, key, ciphertext)
            {
                Ok(em) => Zeroizing::new(em),
                Err(e) => return not_decrypted(device, &e),
            };
            if em.len() > k {
                return Err(HsmError::Invalid(format!(
                    "raw RSA gave {} bytes for a {k}-byte modulus",
                    em.len()
                )));
            }
            // A token may drop the leading zero bytes of the result; put
            // them back (OAEP's first byte is always zero).
            let mut full = Zeroizing::new(vec![0u8; k]);
            full[k - em.len()..].copy_from_slice(&em);
            Ok(oaep::decode_sha256(&full, k))
        })
    }

    /// `Ok(Some(outcome))` when the token ran `CKM_RSA_PKCS_OAEP`;
    /// `Ok(None)` when it refused the mechanism's parameters before any
    /// decryption (and none has worked before).
    #[allow(clippy::type_complexity)]
    fn decrypt_with_mechanism(
        &self,
        device: &Device,
        pooled: &Pooled,
        key: ObjectHandle,
        ciphertext: &[u8],
    ) -> Result<Option<Option<Zeroizing<Vec<u8>>>>, HsmError> {
        let params = PkcsOaepParams::new(
            MechanismType::SHA256,
            PkcsMgfType::MGF1_SHA256,
            PkcsOaepSource::empty(),
        );
        match pooled
            .session()
            .decrypt(&Mechanism::RsaPkcsOaep(params), key, ciphertext)
        {
            Ok(plain) => {
                self.oaep_path.store(PATH_MECHANISM, Ordering::Release);
                Ok(Some(Some(Zeroizing::new(plain))))
            }
            Err(CkError::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
                Function::DecryptInit,
            )) if self.oaep_path.load(Ordering::Acquire) == PATH_UNKNOWN => Ok(None),
            Err(e) => not_decrypted(device, &e).map(Some),
        }
    }

    /// How this token decrypts imports, once one decryption has run.
    pub fn import_oaep_path(&self) -> Option<OaepPath> {
        match self.oaep_path.load(Ordering::Acquire) {
            PATH_MECHANISM => Some(OaepPath::Mechanism),
            PATH_RAW => Some(OaepPath::RawRsa),
            _ => None,
        }
    }

    /// Destroys the import wrapping key `id`; returns whether there was
    /// one.
    ///
    /// # Errors
    ///
    /// As any call.
    pub fn destroy_import_key(&self, id: &[u8]) -> Result<bool, HsmError> {
        self.call("C_DestroyObject", |_device, pooled, _epoch| {
            let found = find_private(pooled, id)?;
            let any = !found.is_empty();
            for key in found {
                pooled
                    .session()
                    .destroy_object(key)
                    .map_err(|e| CallFailure::from_cryptoki("C_DestroyObject", &e))?;
            }
            Ok(any)
        })
    }

    /// The ids of every import wrapping key in the token (private RSA
    /// token objects labelled `kmsd-import-...`).
    ///
    /// # Errors
    ///
    /// As any call.
    pub fn import_key_ids(&self) -> Result<Vec<Vec<u8>>, HsmError> {
        self.call("C_FindObjects", |_device, pooled, _epoch| {
            let session = pooled.session();
            let found = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::RSA),
                    Attribute::Token(true),
                ])
                .map_err(|e| CallFailure::from_cryptoki("C_FindObjects", &e))?;
            let mut ids = Vec::new();
            for key in found {
                let attrs = session
                    .get_attributes(key, &[AttributeType::Label, AttributeType::Id])
                    .map_err(|e| CallFailure::from_cryptoki("C_GetAttributeValue", &e))?;
                let mut ours = false;
                let mut id = None;
                for attr in attrs {
                    match attr {
                        Attribute::Label(l) => {
                            ours = l.starts_with(IMPORT_KEY_LABEL_PREFIX.as_bytes())
                        }
                        Attribute::Id(i) => id = Some(i),
                        _ => {}
                    }
                }
                if let (true, Some(id)) = (ours, id) {
                    ids.push(id);
                }
            }
            Ok(ids)
        })
    }
}

/// A failed decryption: the input's fault (`Ok(None)`: "does not
/// decrypt") unless the device's or the session's. SoftHSM reports a bad
/// ciphertext as CKR_GENERAL_ERROR, which `input_or_device` resolves by
/// asking the token whether it is still there.
fn not_decrypted<T>(device: &Device, err: &CkError) -> Result<Option<T>, HsmError> {
    let failure = input_or_device(device, CallFailure::from_cryptoki("C_Decrypt", err));
    match failure.class() {
        FaultClass::Permanent => Ok(None),
        _ => Err(failure),
    }
}

fn public_template(bits: u32) -> Vec<Attribute> {
    vec![
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Encrypt(true),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::ModulusBits(u64::from(bits).into()),
        Attribute::PublicExponent(rsa::PUBLIC_EXPONENT.to_be_bytes()[1..].to_vec()),
    ]
}

fn private_template(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP, MechanismType::RSA_X_509]),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The DER SubjectPublicKeyInfo of the public key object `public`, checked
/// to have a modulus of `bits` bits.
fn public_key_der(pooled: &Pooled, public: ObjectHandle, bits: u32) -> Result<Vec<u8>, HsmError> {
    let attrs = pooled
        .session()
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| CallFailure::from_cryptoki("C_GetAttributeValue", &e))?;
    let (mut modulus, mut exponent) = (None, None);
    for attr in attrs {
        match attr {
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    let (Some(modulus), Some(exponent)) = (modulus, exponent) else {
        return Err(HsmError::Invalid(
            "the token did not report the new public key's modulus and exponent".into(),
        ));
    };
    let significant = modulus.iter().skip_while(|&&b| b == 0).count();
    if significant != bits as usize / 8 {
        return Err(HsmError::Invalid(format!(
            "the token generated a {}-byte modulus for a {bits}-bit key",
            significant
        )));
    }
    rsa::public_key_der(&modulus, &exponent).map_err(|e| HsmError::Invalid(e.to_string()))
}

/// The modulus length in bytes of the private key `key`.
fn modulus_len(pooled: &Pooled, key: ObjectHandle) -> Result<usize, HsmError> {
    let attrs = pooled
        .session()
        .get_attributes(key, &[AttributeType::Modulus])
        .map_err(|e| CallFailure::from_cryptoki("C_GetAttributeValue", &e))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(n) => Some(n.iter().skip_while(|&&b| b == 0).count()),
            _ => None,
        })
        .ok_or_else(|| HsmError::Invalid("the token did not report the key's modulus".into()))
}

fn find_private(pooled: &Pooled, id: &[u8]) -> Result<Vec<ObjectHandle>, HsmError> {
    pooled
        .session()
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(|e| CallFailure::from_cryptoki("C_FindObjects", &e).into())
}

fn unique_private(pooled: &Pooled, id: &[u8]) -> Result<ObjectHandle, HsmError> {
    let found = find_private(pooled, id)?;
    match found.as_slice() {
        [key] => Ok(*key),
        [] => Err(HsmError::Invalid(format!(
            "no import wrapping key with id {} in the token",
            hex(id)
        ))),
        _ => Err(HsmError::Invalid(format!(
            "{} import wrapping keys have id {}",
            found.len(),
            hex(id)
        ))),
    }
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
