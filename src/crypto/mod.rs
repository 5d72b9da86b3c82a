//! Cryptography: the per-message AEAD, the ciphertext blob format, the
//! canonical encryption context and the random number source.
//!
//! Code map:
//!
//! - [`xaes`]: XAES-256-GCM ([`XaesKey`]), the AEAD every ciphertext uses. A
//!   24-byte random nonce derives a fresh AES-256-GCM key per message, so no
//!   key version ever approaches AES-GCM's 2^32 random-nonce limit.
//! - [`blob`]: the self-describing ciphertext blob (version, key id, key
//!   version, nonce, ciphertext, tag) with its header authenticated. Decrypt
//!   needs no key id because the blob names it.
//! - [`context`]: the canonical, length-prefixed encoding of an encryption
//!   context ([`CanonicalContext`]) that is bound as additional data.
//! - [`rng`]: the one place random bytes come from (the operating system
//!   directly for long-term keys, a per-thread generator per request).
//! - [`import`]: imported key material (BYOK): `RSAES_OAEP_SHA_256` and
//!   `RSA_AES_KEY_WRAP_SHA_256` to a [`KeyMaterial`], given the root's RSA
//!   private-key operation.
//! - [`rsa`]: RSA wrapping key pairs, their DER public keys and RSAES-OAEP
//!   SHA-256 decryption, by OpenSSL (constant-time; see its module docs).
//! - [`oaep`]: constant-time EME-OAEP decoding, for tokens that can do only
//!   raw RSA with the key (no OAEP with SHA-256).
//!
//! **Invariant**: key material lives only in [`KeyMaterial`] or inside a
//! cipher whose key schedule is zeroized on drop; none of them prints its
//! bytes through `Debug`, and nothing in this module logs.
//!
//! **Boundary**: this module does no I/O and knows neither the keystore nor
//! the root of trust; it turns keys and bytes into bytes.

pub mod blob;
pub mod context;
pub mod hsm_blob;
pub mod import;
pub mod oaep;
pub mod rng;
pub mod rsa;
pub mod xaes;

pub use blob::{BlobError, BlobHeader};
pub use context::{CanonicalContext, ContextError};
pub use xaes::XaesKey;

use std::fmt;

use zeroize::Zeroizing;

/// 256 bits of key material: a root key or the backing key of one KMS key
/// version.
///
/// The bytes are zeroized when the value is dropped (including every clone),
/// and `Debug` prints `KeyMaterial(<redacted>)`, so key bytes cannot reach a
/// log through a stray `{:?}`. There is deliberately no `Display`,
/// `PartialEq` or serde support: compare or persist key material only through
/// the root of trust.
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<[u8; 32]>);

impl KeyMaterial {
    /// The length of the key material in bytes (AES-256).
    pub const LEN: usize = 32;

    /// Generates fresh key material straight from the operating system
    /// ([`rng::fill_os`]); this is how every backing key and the development
    /// root key are made.
    pub fn generate() -> KeyMaterial {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng::fill_os(bytes.as_mut_slice());
        KeyMaterial(bytes)
    }

    /// Takes ownership of raw key bytes, for unwrapped keys and tests.
    ///
    /// The argument is a copy on the caller's stack that this function cannot
    /// wipe; callers holding secret bytes should zeroize their own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> KeyMaterial {
        KeyMaterial(Zeroizing::new(bytes))
    }

    /// Copies key bytes out of a slice, or returns `None` unless the slice is
    /// exactly 32 bytes long, so a truncated or padded key can never be
    /// mistaken for a valid one.
    pub fn from_slice(bytes: &[u8]) -> Option<KeyMaterial> {
        let array: &[u8; 32] = bytes.try_into().ok()?;
        Some(KeyMaterial(Zeroizing::new(*array)))
    }

    /// Borrows the raw key bytes, to key a cipher or to hand them to the root
    /// of trust for wrapping. Do not copy them anywhere that outlives the
    /// borrow.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_debug_is_redacted() {
        let key = KeyMaterial::from_bytes([0xAB; 32]);
        let debug = format!("{key:?} {:#?}", key.clone());
        assert_eq!(
            debug, "KeyMaterial(<redacted>) KeyMaterial(<redacted>)",
            "Debug must not show key bytes"
        );
    }

    #[test]
    fn from_slice_accepts_only_32_bytes() {
        assert!(KeyMaterial::from_slice(&[7u8; 31]).is_none());
        assert!(KeyMaterial::from_slice(&[7u8; 33]).is_none());
        assert!(KeyMaterial::from_slice(&[]).is_none());
        let key = KeyMaterial::from_slice(&[7u8; 32]).expect("32 bytes is a key");
        assert_eq!(key.expose(), &[7u8; 32]);
    }

    #[test]
    fn long_term_keys_come_from_the_operating_system() {
        let before = (
            rng::drawn::USER_SPACE.with(|n| n.get()),
            rng::drawn::OS.with(|n| n.get()),
        );
        let _key = KeyMaterial::generate();
        assert_eq!(
            rng::drawn::USER_SPACE.with(|n| n.get()),
            before.0,
            "not from the user-space generator"
        );
        assert_eq!(rng::drawn::OS.with(|n| n.get()), before.1 + 32);
    }

    #[test]
    fn generate_gives_distinct_keys() {
        let a = KeyMaterial::generate();
        let b = KeyMaterial::generate();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), &[0u8; 32]);
    }
}
