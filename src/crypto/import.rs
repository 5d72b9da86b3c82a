//! Imported key material (BYOK): from ImportKeyMaterial's
//! `EncryptedKeyMaterial` to a [`KeyMaterial`], for the two wrapping
//! algorithms kmsd accepts.
//!
//! - `RSAES_OAEP_SHA_256`: the material is the RSAES-OAEP plaintext (SHA-256,
//!   MGF1-SHA-256, empty label) under the import's RSA public key; the
//!   ciphertext is exactly one modulus long.
//! - `RSA_AES_KEY_WRAP_SHA_256`: the first modulus-length bytes are the
//!   RSAES-OAEP (SHA-256) encryption of an ephemeral AES-256 key; the rest
//!   is the material wrapped under that key with AES key wrap with padding
//!   (RFC 5649, what `openssl enc -id-aes256-wrap-pad` produces).
//!
//! The RSA private-key operation is the caller's (the root of trust holds
//! the private key): this module gets it as a function from ciphertext to
//! `Some(plaintext)` or `None` ("does not decrypt"). Only 32-byte material
//! is accepted (a SYMMETRIC_DEFAULT key); the ephemeral AES key is zeroized
//! when it goes.

use aes_kw::{KeyInit, KwpAes256};
use zeroize::Zeroizing;

use super::KeyMaterial;

/// The wrapping algorithms of ImportKeyMaterial that kmsd implements (AWS's
/// names: `RSAES_OAEP_SHA_256`, `RSA_AES_KEY_WRAP_SHA_256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportAlgorithm {
    /// `RSAES_OAEP_SHA_256`.
    RsaesOaepSha256,
    /// `RSA_AES_KEY_WRAP_SHA_256`.
    RsaAesKeyWrapSha256,
}

impl ImportAlgorithm {
    /// AWS's name.
    pub fn name(self) -> &'static str {
        match self {
            ImportAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
            ImportAlgorithm::RsaAesKeyWrapSha256 => "RSA_AES_KEY_WRAP_SHA_256",
        }
    }
}

/// Why encrypted key material was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError<E> {
    /// The ciphertext does not decrypt with the import's wrapping key (a
    /// wrong length, a wrong key, a corrupt byte, a failed RFC 5649
    /// integrity check, an ephemeral key that is not AES-256). AWS:
    /// InvalidCiphertextException.
    #[error("the encrypted key material does not decrypt with this import's wrapping key")]
    DoesNotDecrypt,
    /// It decrypted, to material of the wrong length. AWS:
    /// IncorrectKeyMaterialException.
    #[error("the key material is {0} bytes long; a SYMMETRIC_DEFAULT key takes exactly 32 bytes")]
    WrongLength(usize),
    /// The RSA private-key operation itself failed (the root of trust).
    #[error(transparent)]
    Decryptor(E),
}

/// Recovers the key material from `encrypted` under `algorithm`, with an
/// RSA key whose modulus is `modulus_len` bytes and whose private-key
/// operation is `rsa_oaep_decrypt` (RSAES-OAEP SHA-256: `Ok(None)` when a
/// ciphertext does not decrypt).
///
/// # Errors
///
/// [`ImportError`], see its variants.
pub fn unwrap_material<E>(
    algorithm: ImportAlgorithm,
    modulus_len: usize,
    encrypted: &[u8],
    rsa_oaep_decrypt: impl FnOnce(&[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, E>,
) -> Result<KeyMaterial, ImportError<E>> {
    match algorithm {
        ImportAlgorithm::RsaesOaepSha256 => {
            if encrypted.len() != modulus_len {
                return Err(ImportError::DoesNotDecrypt);
            }
            let material = rsa_oaep_decrypt(encrypted)
                .map_err(ImportError::Decryptor)?
                .ok_or(ImportError::DoesNotDecrypt)?;
            KeyMaterial::from_slice(&material).ok_or(ImportError::WrongLength(material.len()))
        }
        ImportAlgorithm::RsaAesKeyWrapSha256 => {
            // An RFC 5649 wrapping is at least 16 bytes (one 8-byte block
            // and the integrity block).
            if encrypted.len() < modulus_len + 16 {
                return Err(ImportError::DoesNotDecrypt);
            }
            let (encrypted_key, wrapped) = encrypted.split_at(modulus_len);
            let ephemeral = rsa_oaep_decrypt(encrypted_key)
                .map_err(ImportError::Decryptor)?
                .ok_or(ImportError::DoesNotDecrypt)?;
            // AWS: "a 256-bit AES symmetric key"; nothing else is accepted.
            let Some(ephemeral) = KeyMaterial::from_slice(&ephemeral) else {
                return Err(ImportError::DoesNotDecrypt);
            };
            let kwp = KwpAes256::new(ephemeral.expose().into());
            let mut buf = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
            let material = kwp
                .unwrap_key(wrapped, buf.as_mut_slice())
                .map_err(|_| ImportError::DoesNotDecrypt)?;
            KeyMaterial::from_slice(material).ok_or(ImportError::WrongLength(material.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::rsa;

    use std::convert::Infallible;

    /// OpenSSL's RSAES-OAEP-SHA-256 encryption (the client's side).
    fn oaep_encrypt(public_der: &[u8], plaintext: &[u8]) -> Vec<u8> {
        crate::crypto::rsa::encrypt_oaep_sha256(public_der, plaintext).unwrap()
    }

    fn kwp_wrap(key: &[u8; 32], material: &[u8]) -> Vec<u8> {
        let kwp = KwpAes256::new(key.into());
        let mut buf = vec![0u8; material.len().div_ceil(8) * 8 + 8];
        kwp.wrap_key(material, &mut buf).unwrap().to_vec()
    }

    struct Fixture {
        pair: rsa::GeneratedKeyPair,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                pair: rsa::generate(2048).unwrap(),
            }
        }

        fn unwrap(
            &self,
            algorithm: ImportAlgorithm,
            encrypted: &[u8],
        ) -> Result<KeyMaterial, ImportError<Infallible>> {
            unwrap_material(algorithm, 256, encrypted, |c| {
                Ok(rsa::decrypt_oaep_sha256(&self.pair.private_key, c).unwrap())
            })
        }

        fn key_wrap(&self, ephemeral: &[u8], material: &[u8]) -> Vec<u8> {
            let mut out = oaep_encrypt(&self.pair.public_key, ephemeral);
            let key: [u8; 32] = ephemeral.try_into().unwrap_or([0x11; 32]);
            out.extend(kwp_wrap(&key, material));
            out
        }
    }

    #[test]
    fn rsaes_oaep_sha_256_round_trip_and_refusals() {
        let f = Fixture::new();
        let material = [0x42u8; 32];
        let encrypted = oaep_encrypt(&f.pair.public_key, &material);
        let key = f
            .unwrap(ImportAlgorithm::RsaesOaepSha256, &encrypted)
            .unwrap();
        assert_eq!(key.expose(), &material);

        for len in [0usize, 1, 16, 31, 33, 64] {
            let encrypted = oaep_encrypt(&f.pair.public_key, &vec![7u8; len]);
            assert!(
                matches!(
                    f.unwrap(ImportAlgorithm::RsaesOaepSha256, &encrypted),
                    Err(ImportError::WrongLength(n)) if n == len
                ),
                "length {len}"
            );
        }
        let mut corrupt = encrypted.clone();
        corrupt[17] ^= 1;
        assert!(matches!(
            f.unwrap(ImportAlgorithm::RsaesOaepSha256, &corrupt),
            Err(ImportError::DoesNotDecrypt)
        ));
        // One byte too many or too few: refused before the RSA operation.
        let mut long = encrypted.clone();
        long.push(0);
        let called = std::cell::Cell::new(false);
        let result = unwrap_material(ImportAlgorithm::RsaesOaepSha256, 256, &long, |_| {
            called.set(true);
            Ok::<_, Infallible>(None)
        });
        assert!(matches!(result, Err(ImportError::DoesNotDecrypt)));
        assert!(!called.get());
        assert!(matches!(
            f.unwrap(ImportAlgorithm::RsaesOaepSha256, &encrypted[1..]),
            Err(ImportError::DoesNotDecrypt)
        ));
        // A key-wrap blob is not an OAEP ciphertext.
        let wrapped = f.key_wrap(&[3u8; 32], &material);
        assert!(matches!(
            f.unwrap(ImportAlgorithm::RsaesOaepSha256, &wrapped),
            Err(ImportError::DoesNotDecrypt)
        ));
    }

    #[test]
    fn rsa_aes_key_wrap_sha_256_round_trip_and_refusals() {
        let f = Fixture::new();
        let material = [0x24u8; 32];
        let ephemeral = [0x99u8; 32];
        let encrypted = f.key_wrap(&ephemeral, &material);
        assert_eq!(encrypted.len(), 256 + 40);
        let key = f
            .unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &encrypted)
            .unwrap();
        assert_eq!(key.expose(), &material);

        // Material of other lengths (KWP pads them): IncorrectKeyMaterial.
        for len in [1usize, 16, 31, 33, 48, 64] {
            let encrypted = f.key_wrap(&ephemeral, &vec![5u8; len]);
            assert!(
                matches!(
                    f.unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &encrypted),
                    Err(ImportError::WrongLength(n)) if n == len
                ),
                "length {len}"
            );
        }
        // Every byte of the wrapped part is checked by RFC 5649.
        for i in 256..encrypted.len() {
            let mut bad = encrypted.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    f.unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &bad),
                    Err(ImportError::DoesNotDecrypt)
                ),
                "byte {i}"
            );
        }
        // A corrupt RSA part, a truncated wrapping, no wrapping at all.
        let mut bad = encrypted.clone();
        bad[3] ^= 0x01;
        for bad in [
            bad,
            encrypted[..encrypted.len() - 8].to_vec(),
            encrypted[..256].to_vec(),
            encrypted[..260].to_vec(),
        ] {
            assert!(matches!(
                f.unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &bad),
                Err(ImportError::DoesNotDecrypt)
            ));
        }
        // An ephemeral AES-128 key (RSA-encrypted 16 bytes) is refused.
        let mut short_key = oaep_encrypt(&f.pair.public_key, &[0x99u8; 16]);
        short_key.extend(kwp_wrap(&[0x99u8; 32], &material));
        assert!(matches!(
            f.unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &short_key),
            Err(ImportError::DoesNotDecrypt)
        ));
        // A plain OAEP ciphertext is not a key-wrap blob.
        let oaep = oaep_encrypt(&f.pair.public_key, &material);
        assert!(matches!(
            f.unwrap(ImportAlgorithm::RsaAesKeyWrapSha256, &oaep),
            Err(ImportError::DoesNotDecrypt)
        ));
    }

    #[test]
    fn decryptor_failures_pass_through() {
        let result = unwrap_material(ImportAlgorithm::RsaesOaepSha256, 4, &[0; 4], |_| {
            Err("root down")
        });
        assert!(matches!(result, Err(ImportError::Decryptor("root down"))));
        let result = unwrap_material(ImportAlgorithm::RsaAesKeyWrapSha256, 4, &[0; 24], |_| {
            Err("root down")
        });
        assert!(matches!(result, Err(ImportError::Decryptor("root down"))));
        assert_eq!(
            ImportAlgorithm::RsaesOaepSha256.name(),
            "RSAES_OAEP_SHA_256"
        );
        assert_eq!(
            ImportAlgorithm::RsaAesKeyWrapSha256.name(),
            "RSA_AES_KEY_WRAP_SHA_256"
        );
    }
}
