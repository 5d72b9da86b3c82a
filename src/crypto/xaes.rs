//! XAES-256-GCM, the AEAD behind every kmsd ciphertext.
//!
//! XAES-256-GCM is specified by C2SP (<https://c2sp.org/XAES-256-GCM>). It
//! extends AES-256-GCM to a 24-byte nonce that is safe to choose at random:
//! the first 12 bytes of the nonce derive a fresh AES-256 key from the
//! backing key, and the last 12 bytes are the AES-GCM nonce under that
//! derived key. With random nonces a backing key can seal about 2^80
//! messages before a derived key repeats with any real probability, whereas
//! plain AES-256-GCM must stop at 2^32 random nonces per key. That is why a
//! key version never needs rotating for volume.
//!
//! The derivation is NIST SP 800-108r1's counter-mode KDF with AES-256 CMAC
//! as the PRF, specialised to two blocks of output:
//!
//! ```text
//! L  = AES-256_K(0^128)
//! K1 = L << 1, xor 0x87 into the last byte if the top bit of L was set   (CMAC subkey)
//! M1 = 0x00 0x01 'X' 0x00 || N[:12]        M2 = 0x00 0x02 'X' 0x00 || N[:12]
//! Kx = AES-256_K(M1 xor K1) || AES-256_K(M2 xor K1)
//! ciphertext || tag = AES-256-GCM(key = Kx, nonce = N[12:], plaintext, aad)
//! ```
//!
//! [`XaesKey`] computes the backing key's AES key schedule and `K1` once, so
//! each message costs two AES block encryptions, one AES-256 key expansion
//! and a GHASH key setup before the GCM work itself.

use std::fmt;

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes256Enc;
use aes_gcm::aead::array::Array;
use aes_gcm::aead::AeadInOut;
use aes_gcm::aes::cipher::consts::U12;
use aes_gcm::AesGcm;
use zeroize::{Zeroize, Zeroizing};

use super::blob::BlobError;
use super::KeyMaterial;

/// AES-256-GCM keyed with the encryption-only AES schedule: XAES never runs
/// the inverse cipher, so computing the decryption round keys for every
/// message would be wasted work.
type DerivedGcm = AesGcm<Aes256Enc, U12>;

/// A backing key prepared for XAES-256-GCM: the AES-256 key schedule and the
/// CMAC subkey `K1`, both computed once when the key is loaded.
///
/// Both are zeroized on drop (the aes crate's `zeroize` feature wipes the
/// schedule; `K1` is held in [`Zeroizing`]), and `Debug` is redacted. The
/// type is `Send + Sync`, so one instance can be shared (for example behind
/// an `Arc` in the key cache) by every worker thread.
pub struct XaesKey {
    cipher: Aes256Enc,
    k1: Zeroizing<[u8; 16]>,
}

// The key cache shares one XaesKey between worker threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<XaesKey>();
};

impl XaesKey {
    /// Length of an XAES-256-GCM nonce in bytes.
    pub const NONCE_LEN: usize = 24;
    /// Length of the authentication tag appended to every ciphertext.
    pub const TAG_LEN: usize = 16;

    /// Prepares `key` for sealing and opening: expands the AES-256 key
    /// schedule and derives the CMAC subkey `K1` from `L = AES_K(0^128)`.
    pub fn new(key: &KeyMaterial) -> XaesKey {
        let cipher = Aes256Enc::new(key.expose().into());
        let mut l = Array::<u8, _>::default();
        cipher.encrypt_block(&mut l);

        // K1 = L << 1, with the reduction constant xored in when the top bit
        // shifts out. The constant is selected arithmetically rather than by
        // a branch, because L is secret.
        let mut k1 = Zeroizing::new([0u8; 16]);
        for i in 0..16 {
            let next = if i + 1 < 16 { l[i + 1] >> 7 } else { 0 };
            k1[i] = (l[i] << 1) | next;
        }
        k1[15] ^= 0x87 & (l[0] >> 7).wrapping_neg();
        l.as_mut_slice().zeroize();

        XaesKey { cipher, k1 }
    }

    /// Encrypts `buf` in place and appends the 16-byte tag, so `buf` ends up
    /// as `ciphertext || tag`.
    ///
    /// The nonce must never repeat under one key; choose it with
    /// [`crate::crypto::rng::fill`].
    ///
    /// # Panics
    ///
    /// Panics if `buf` is longer than AES-GCM's limit of 2^36 - 32 bytes,
    /// far beyond any plaintext kmsd accepts.
    pub fn seal_in_place(&self, nonce: &[u8; 24], aad: &[u8], buf: &mut Vec<u8>) {
        let tag = self.seal_in_place_detached(nonce, aad, buf.as_mut_slice());
        buf.extend_from_slice(&tag);
    }

    /// Decrypts `buf`, which holds `ciphertext || tag`, in place; on success
    /// `buf` holds the plaintext.
    ///
    /// # Errors
    ///
    /// [`BlobError::Authentication`] when the tag does not verify (wrong key,
    /// nonce, additional data, or any modified byte) or `buf` is shorter than
    /// a tag. On failure `buf` is zeroized and cleared, so no caller can use
    /// unauthenticated bytes by mistake.
    pub fn open_in_place(
        &self,
        nonce: &[u8; 24],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), BlobError> {
        let Some(ciphertext_len) = buf.len().checked_sub(Self::TAG_LEN) else {
            buf.zeroize();
            return Err(BlobError::Authentication);
        };
        let (ciphertext, tag) = buf.split_at_mut(ciphertext_len);
        let tag: [u8; 16] = (&*tag).try_into().expect("split leaves exactly a tag");
        match self.open_in_place_detached(nonce, aad, ciphertext, &tag) {
            Ok(()) => {
                buf.truncate(ciphertext_len);
                Ok(())
            }
            Err(err) => {
                buf.zeroize();
                Err(err)
            }
        }
    }

    /// Encrypts `buf` in place and returns the tag separately.
    ///
    /// This is the primitive under [`XaesKey::seal_in_place`]; it lets the
    /// blob format (and any caller building a response in place) encrypt a
    /// region of a larger buffer whose header is already written.
    ///
    /// # Panics
    ///
    /// Panics if `buf` is longer than AES-GCM's limit of 2^36 - 32 bytes.
    pub fn seal_in_place_detached(&self, nonce: &[u8; 24], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let gcm = self.derive(nonce);
        let tag = gcm
            .encrypt_inout_detached(gcm_nonce(nonce), aad, buf.into())
            .expect("plaintext within AES-GCM's length limit");
        tag.into()
    }

    /// Verifies `tag` over `buf` (the ciphertext) and, only if it verifies,
    /// decrypts `buf` in place.
    ///
    /// # Errors
    ///
    /// [`BlobError::Authentication`] when the tag does not verify. `buf` is
    /// then left as it was (still ciphertext): the tag is checked before any
    /// byte is decrypted.
    pub fn open_in_place_detached(
        &self,
        nonce: &[u8; 24],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), BlobError> {
        let gcm = self.derive(nonce);
        gcm.decrypt_inout_detached(gcm_nonce(nonce), aad, buf.into(), tag.into())
            .map_err(|_| BlobError::Authentication)
    }

    /// Derives the per-message AES-256-GCM instance from the first 12 bytes
    /// of the nonce (the KDF in the module docs).
    ///
    /// The derived key `Kx` is wiped before returning; the returned cipher
    /// holds only its key schedule and GHASH key, which the aes and ghash
    /// crates zeroize when it is dropped at the end of the caller.
    fn derive(&self, nonce: &[u8; 24]) -> DerivedGcm {
        let kx = self.derive_key(nonce);
        DerivedGcm::from(Aes256Enc::new((&*kx).into()))
    }

    /// The KDF proper: `Kx = AES_K(M1 xor K1) || AES_K(M2 xor K1)`.
    fn derive_key(&self, nonce: &[u8; 24]) -> Zeroizing<[u8; 32]> {
        let mut blocks = [Array::<u8, _>::default(), Array::default()];
        for (counter, block) in (1u8..).zip(blocks.iter_mut()) {
            block[..4].copy_from_slice(&[0x00, counter, b'X', 0x00]);
            block[4..].copy_from_slice(&nonce[..12]);
            for (b, k) in block.iter_mut().zip(self.k1.iter()) {
                *b ^= k;
            }
        }
        // Both blocks at once, so the AES-NI backend can pipeline them.
        self.cipher.encrypt_blocks(&mut blocks);

        let mut kx = Zeroizing::new([0u8; 32]);
        kx[..16].copy_from_slice(&blocks[0]);
        kx[16..].copy_from_slice(&blocks[1]);
        for block in &mut blocks {
            block.as_mut_slice().zeroize();
        }
        kx
    }
}

/// The AES-GCM nonce: the last 12 bytes of the XAES nonce.
fn gcm_nonce(nonce: &[u8; 24]) -> &Array<u8, U12> {
    let tail: &[u8; 12] = nonce[12..].try_into().expect("24 - 12 = 12");
    tail.into()
}

impl fmt::Debug for XaesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XaesKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2));
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The first C2SP vector, including its intermediate values, so a
    /// failure says which step of the derivation is wrong. The full vector
    /// set runs from tests/data in the integration tests.
    #[test]
    fn c2sp_first_vector_with_intermediates() {
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x01; 32]));
        let nonce: &[u8; 24] = b"ABCDEFGHIJKLMNOPQRSTUVWX";
        assert_eq!(key.k1.as_slice(), unhex("e531954aca063d5b8d9c47a47d4cc6f0"));

        assert_eq!(
            key.derive_key(nonce).as_slice(),
            unhex("c8612c9ed53fe43e8e005b828a1631a0bbcb6ab2f46514ec4f439fcfd0fa969b")
        );

        let mut buf = b"XAES-256-GCM".to_vec();
        key.seal_in_place(nonce, b"", &mut buf);
        assert_eq!(
            buf,
            unhex("ce546ef63c9cc60765923609b33a9a1974e96e52daf2fcf7075e2271")
        );

        key.open_in_place(nonce, b"", &mut buf).unwrap();
        assert_eq!(buf, b"XAES-256-GCM");
    }

    #[test]
    fn k1_takes_the_reduction_branch() {
        // L for key 0x03.. is 91c0..., whose top bit is set, so K1 must have
        // 0x87 folded in (the second C2SP vector's K1).
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x03; 32]));
        assert_eq!(key.k1.as_slice(), unhex("23810ec50edb99f374409466ed1f4b7b"));
    }

    #[test]
    fn open_rejects_tampering_and_clears_the_buffer() {
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x42; 32]));
        let nonce = [7u8; 24];
        let mut sealed = b"attack at dawn".to_vec();
        key.seal_in_place(&nonce, b"aad", &mut sealed);

        for i in 0..sealed.len() {
            let mut buf = sealed.clone();
            buf[i] ^= 0x01;
            assert_eq!(
                key.open_in_place(&nonce, b"aad", &mut buf),
                Err(BlobError::Authentication)
            );
            assert!(buf.is_empty(), "failed open must clear the buffer");
        }
        let mut other_nonce = nonce;
        other_nonce[0] ^= 1; // the key-derivation half of the nonce
        let mut buf = sealed.clone();
        assert!(key.open_in_place(&other_nonce, b"aad", &mut buf).is_err());
        let mut other_nonce = nonce;
        other_nonce[23] ^= 1; // the GCM half of the nonce
        let mut buf = sealed.clone();
        assert!(key.open_in_place(&other_nonce, b"aad", &mut buf).is_err());
        let mut buf = sealed.clone();
        assert!(key.open_in_place(&nonce, b"aae", &mut buf).is_err());
        let mut short = vec![0u8; 15];
        assert!(key.open_in_place(&nonce, b"", &mut short).is_err());
        assert!(short.is_empty());

        let wrong_key = XaesKey::new(&KeyMaterial::from_bytes([0x43; 32]));
        let mut buf = sealed.clone();
        assert!(wrong_key.open_in_place(&nonce, b"aad", &mut buf).is_err());

        let mut buf = sealed;
        key.open_in_place(&nonce, b"aad", &mut buf).unwrap();
        assert_eq!(buf, b"attack at dawn");
    }

    #[test]
    fn detached_open_leaves_ciphertext_on_failure() {
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x42; 32]));
        let nonce = [9u8; 24];
        let mut buf = b"0123456789".to_vec();
        let tag = key.seal_in_place_detached(&nonce, b"", &mut buf);
        let ciphertext = buf.clone();
        let mut bad_tag = tag;
        bad_tag[15] ^= 0x80;
        assert_eq!(
            key.open_in_place_detached(&nonce, b"", &mut buf, &bad_tag),
            Err(BlobError::Authentication)
        );
        assert_eq!(buf, ciphertext);
        key.open_in_place_detached(&nonce, b"", &mut buf, &tag)
            .unwrap();
        assert_eq!(buf, b"0123456789");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x11; 32]));
        let mut buf = Vec::new();
        key.seal_in_place(&[0u8; 24], b"x", &mut buf);
        assert_eq!(buf.len(), XaesKey::TAG_LEN);
        key.open_in_place(&[0u8; 24], b"x", &mut buf).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn debug_is_redacted() {
        let key = XaesKey::new(&KeyMaterial::from_bytes([0x5A; 32]));
        let debug = format!("{key:?} {key:#?}");
        assert_eq!(debug, "XaesKey(<redacted>) XaesKey(<redacted>)");
    }
}
