//! RSA for imports of key material: the wrapping key pairs of
//! GetParametersForImport under the file root, their public keys as DER
//! `SubjectPublicKeyInfo` (what AWS returns and `openssl pkeyutl -pubin
//! -keyform DER` reads), and RSAES-OAEP decryption with SHA-256 and
//! MGF1-SHA-256.
//!
//! **Why OpenSSL.** The RSA private-key operation must not leak the key or
//! the plaintext through its timing. The pure-Rust `rsa` crate has an open
//! advisory for exactly that (RUSTSEC-2023-0071, the Marvin attack: its
//! modular exponentiation is not constant-time), and `ring` does no RSA
//! decryption. OpenSSL's RSA decryption blinds the ciphertext, runs a
//! constant-time exponentiation (`BN_FLG_CONSTTIME`) and decodes OAEP in
//! constant time; the `openssl` crate links the system's libssl (OpenSSL 3
//! on Debian 12), so it builds in seconds. docs/import.md has the
//! comparison with `aws-lc-rs`.
//!
//! Private keys travel only as PKCS#8 DER in [`Zeroizing`] buffers; inside
//! OpenSSL, `RSA_free` clears the private components (`BN_clear_free`).
//! OpenSSL's error queue is drained by the `openssl` crate on every failure,
//! so a failed decryption leaves nothing behind for the next caller.

use openssl::bn::BigNum;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use zeroize::Zeroizing;

/// The public exponent of every wrapping key kmsd generates (F4, what AWS
/// and every HSM use).
pub const PUBLIC_EXPONENT: u32 = 65_537;

/// Failures of OpenSSL that are not "this ciphertext does not decrypt": a
/// corrupt private key, an allocation failure, a key size OpenSSL refuses.
/// The message carries OpenSSL's error text, never key bytes.
#[derive(Debug, thiserror::Error)]
#[error("RSA: {0}")]
pub struct RsaError(String);

impl RsaError {
    fn openssl(what: &str, err: openssl::error::ErrorStack) -> RsaError {
        RsaError(format!("{what}: {err}"))
    }
}

/// A freshly generated RSA key pair: the public key as DER
/// `SubjectPublicKeyInfo` and the private key as PKCS#8 DER (zeroized on
/// drop; `Debug` shows neither).
pub struct GeneratedKeyPair {
    /// DER `SubjectPublicKeyInfo`.
    pub public_key: Vec<u8>,
    /// DER PKCS#8 `PrivateKeyInfo`.
    pub private_key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("public_key_len", &self.public_key.len())
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Generates an RSA key pair of `bits` bits (2048, 3072 or 4096 for
/// imports) with public exponent 65537.
///
/// Takes about 0.1 s (2048) to a few seconds (4096): control plane only.
///
/// # Errors
///
/// [`RsaError`] if OpenSSL refuses the size or fails.
pub fn generate(bits: u32) -> Result<GeneratedKeyPair, RsaError> {
    let e = BigNum::from_u32(PUBLIC_EXPONENT).map_err(|e| RsaError::openssl("exponent", e))?;
    let rsa = Rsa::generate_with_e(bits, &e).map_err(|e| RsaError::openssl("generating", e))?;
    let pkey = PKey::from_rsa(rsa).map_err(|e| RsaError::openssl("wrapping the key", e))?;
    let public_key = pkey
        .public_key_to_der()
        .map_err(|e| RsaError::openssl("encoding the public key", e))?;
    let private_key = Zeroizing::new(
        pkey.private_key_to_pkcs8()
            .map_err(|e| RsaError::openssl("encoding the private key", e))?,
    );
    Ok(GeneratedKeyPair {
        public_key,
        private_key,
    })
}

/// The DER `SubjectPublicKeyInfo` of the RSA public key with big-endian
/// `modulus` and `exponent` (what a PKCS#11 token reports as `CKA_MODULUS`
/// and `CKA_PUBLIC_EXPONENT`).
///
/// # Errors
///
/// [`RsaError`] if OpenSSL refuses the components.
pub fn public_key_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, RsaError> {
    let n = BigNum::from_slice(modulus).map_err(|e| RsaError::openssl("modulus", e))?;
    let e = BigNum::from_slice(exponent).map_err(|e| RsaError::openssl("exponent", e))?;
    let rsa = Rsa::from_public_components(n, e).map_err(|e| RsaError::openssl("public key", e))?;
    rsa.public_key_to_der()
        .map_err(|e| RsaError::openssl("encoding the public key", e))
}

/// The modulus length in bytes of the RSA private key in `pkcs8`.
///
/// # Errors
///
/// [`RsaError`] if `pkcs8` is not an RSA private key.
pub fn modulus_len(pkcs8: &[u8]) -> Result<usize, RsaError> {
    Ok(private_key(pkcs8)?.size() as usize)
}

/// RSAES-OAEP decryption (RFC 8017 section 7.1.2) with SHA-256, MGF1-SHA-256
/// and an empty label, by OpenSSL, with the PKCS#8 private key `pkcs8`.
///
/// Returns `Ok(None)` when the ciphertext does not decrypt (wrong length,
/// not below the modulus, or the OAEP padding does not check); OpenSSL
/// makes these indistinguishable in time, and so does this function: one
/// `None` for all of them.
///
/// # Errors
///
/// [`RsaError`] if `pkcs8` is not a usable RSA private key.
pub fn decrypt_oaep_sha256(
    pkcs8: &[u8],
    ciphertext: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, RsaError> {
    let rsa = private_key(pkcs8)?;
    let k = rsa.size() as usize;
    if ciphertext.len() != k {
        return Ok(None);
    }
    let pkey = PKey::from_rsa(rsa).map_err(|e| RsaError::openssl("wrapping the key", e))?;
    let mut ctx = PkeyCtx::new(&pkey).map_err(|e| RsaError::openssl("context", e))?;
    let sha256 = openssl::md::Md::sha256();
    ctx.decrypt_init()
        .and_then(|()| ctx.set_rsa_padding(Padding::PKCS1_OAEP))
        .and_then(|()| ctx.set_rsa_oaep_md(sha256))
        .and_then(|()| ctx.set_rsa_mgf1_md(sha256))
        .map_err(|e| RsaError::openssl("setting up OAEP", e))?;
    let mut out = Zeroizing::new(vec![0u8; k]);
    match ctx.decrypt(ciphertext, Some(out.as_mut_slice())) {
        Ok(n) => {
            out.truncate(n);
            Ok(Some(out))
        }
        // OpenSSL reports every way a ciphertext can fail the same way
        // (RSA_R_OAEP_DECODING_ERROR and friends, in constant time); the
        // crate has already drained its error queue.
        Err(_) => Ok(None),
    }
}

/// RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) encryption of
/// `plaintext` under `public_der`, a DER SubjectPublicKeyInfo: what a
/// client does before ImportKeyMaterial (AWS's documentation uses `openssl
/// pkeyutl`). kmsd itself needs it only for seeding imported material; a
/// public-key operation, so no secret of kmsd's is involved.
///
/// # Errors
///
/// [`RsaError`] if `public_der` is not an RSA public key or `plaintext` is
/// too long for it.
pub(crate) fn encrypt_oaep_sha256(
    public_der: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, RsaError> {
    let pkey = PKey::public_key_from_der(public_der)
        .map_err(|e| RsaError::openssl("reading the public key", e))?;
    let mut ctx = PkeyCtx::new(&pkey).map_err(|e| RsaError::openssl("context", e))?;
    let sha256 = openssl::md::Md::sha256();
    ctx.encrypt_init()
        .and_then(|()| ctx.set_rsa_padding(Padding::PKCS1_OAEP))
        .and_then(|()| ctx.set_rsa_oaep_md(sha256))
        .and_then(|()| ctx.set_rsa_mgf1_md(sha256))
        .map_err(|e| RsaError::openssl("setting up OAEP", e))?;
    let mut out = Vec::new();
    ctx.encrypt_to_vec(plaintext, &mut out)
        .map_err(|e| RsaError::openssl("encrypting", e))?;
    Ok(out)
}

/// Parses a PKCS#8 RSA private key.
fn private_key(pkcs8: &[u8]) -> Result<Rsa<Private>, RsaError> {
    PKey::private_key_from_pkcs8(pkcs8)
        .and_then(|pkey| pkey.rsa())
        .map_err(|e| RsaError::openssl("reading the private key", e))
}

/// SHA-256 of `data` (OpenSSL's).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Public;

    fn public(der: &[u8]) -> Rsa<Public> {
        Rsa::public_key_from_der(der).expect("a DER SubjectPublicKeyInfo")
    }

    #[test]
    fn generated_pairs_round_trip_oaep_sha256() {
        let pair = generate(2048).unwrap();
        let public_key = public(&pair.public_key);
        assert_eq!(public_key.size(), 256);
        assert_eq!(public_key.e().to_vec(), vec![1, 0, 1]);
        assert_eq!(modulus_len(&pair.private_key).unwrap(), 256);

        let material = [0x5Au8; 32];
        let ciphertext = encrypt_oaep_sha256(&pair.public_key, &material).unwrap();
        let plain = decrypt_oaep_sha256(&pair.private_key, &ciphertext)
            .unwrap()
            .expect("decrypts");
        assert_eq!(plain.as_slice(), &material);

        // The same modulus and exponent give the same DER.
        let rebuilt = public_key_der(&public_key.n().to_vec(), &public_key.e().to_vec()).unwrap();
        assert_eq!(rebuilt, pair.public_key);
        assert!(format!("{pair:?}").contains("<redacted>"));
    }

    #[test]
    fn bad_ciphertexts_do_not_decrypt() {
        let pair = generate(2048).unwrap();
        let other = generate(2048).unwrap();
        let ciphertext = encrypt_oaep_sha256(&pair.public_key, &[1u8; 32]).unwrap();
        // Another key's ciphertext, every flipped byte, wrong lengths, and a
        // value not below the modulus: all one answer.
        let foreign = encrypt_oaep_sha256(&other.public_key, &[1u8; 32]).unwrap();
        assert!(decrypt_oaep_sha256(&pair.private_key, &foreign)
            .unwrap()
            .is_none());
        for i in [0usize, 1, 100, 255] {
            let mut bad = ciphertext.clone();
            bad[i] ^= 0x40;
            assert!(
                decrypt_oaep_sha256(&pair.private_key, &bad)
                    .unwrap()
                    .is_none(),
                "byte {i}"
            );
        }
        for len in [0usize, 255, 257, 512] {
            assert!(decrypt_oaep_sha256(&pair.private_key, &vec![1u8; len])
                .unwrap()
                .is_none());
        }
        assert!(decrypt_oaep_sha256(&pair.private_key, &[0xFF; 256])
            .unwrap()
            .is_none());
        // Nothing left in OpenSSL's error queue for the next caller.
        assert!(openssl::error::ErrorStack::get().errors().is_empty());
        // A corrupt private key is an error, not "does not decrypt".
        assert!(decrypt_oaep_sha256(&[0x30, 0x00], &ciphertext).is_err());
    }

    #[test]
    fn every_import_size_generates() {
        for bits in [3072u32, 4096] {
            let pair = generate(bits).unwrap();
            assert_eq!(public(&pair.public_key).size(), bits / 8);
        }
    }
}
