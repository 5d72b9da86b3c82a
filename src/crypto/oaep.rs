//! EME-OAEP decoding (RFC 8017, section 7.1.2, step 3) with SHA-256,
//! MGF1-SHA-256 and an empty label, in constant time.
//!
//! **Why it exists.** Under the PKCS#11 root, an import's RSA private key
//! lives in the token and never leaves it. The token should decrypt with
//! `CKM_RSA_PKCS_OAEP` (SHA-256, MGF1-SHA-256), and kmsd asks it to first;
//! but some tokens implement OAEP with SHA-1 only, SoftHSM 2.6 among them
//! (softhsm/SoftHSMv2#474: `C_DecryptInit` answers `CKR_ARGUMENTS_BAD` for
//! any other hash; fixed upstream after 2.6.1). For those, the token does
//! the private-key operation alone (`CKM_RSA_X_509`, raw RSA, still
//! constant-time and blinded inside the token) and this module removes the
//! OAEP encoding.
//!
//! **Constant time.** Manger's attack recovers an OAEP plaintext from a
//! decoder that tells, by its answer or its timing, "the first byte was not
//! zero" apart from the other failures. So every check here runs on every
//! input, combined without branches ([`ctutils::Choice`]); the only branch
//! on secret data is the final yes or no, and the only thing that depends
//! on where the message starts is the copy of a message that decoded (its
//! length is the public outcome). The structure follows Go's
//! `crypto/rsa.decryptOAEP`.

use ctutils::{Choice, CtEq, CtSelect};
use zeroize::Zeroizing;

use super::rsa::sha256;

/// SHA-256's output length (`hLen`).
const H_LEN: usize = 32;

/// SHA-256 of the empty label (`lHash`).
fn empty_label_hash() -> [u8; H_LEN] {
    sha256(&[])
}

/// Decodes the encoded message `em` of an RSA modulus of `k` bytes: `em` is
/// the raw RSA decryption of the ciphertext, exactly `k` bytes (a token
/// that strips leading zeros must have them put back first).
///
/// Returns the message, or `None` if `em` is not a valid OAEP encoding
/// under SHA-256 (or has the wrong length for `k`, or `k` is too small for
/// OAEP with SHA-256: below 66 bytes).
pub fn decode_sha256(em: &[u8], k: usize) -> Option<Zeroizing<Vec<u8>>> {
    // Public facts: lengths only.
    if em.len() != k || k < 2 * H_LEN + 2 {
        return None;
    }
    let (y, rest) = em.split_at(1);
    let (masked_seed, masked_db) = rest.split_at(H_LEN);

    let mut seed = Zeroizing::new([0u8; H_LEN]);
    mgf1_xor(seed.as_mut_slice(), masked_db);
    for (s, m) in seed.iter_mut().zip(masked_seed) {
        *s ^= m;
    }
    let mut db = Zeroizing::new(masked_db.to_vec());
    mgf1_xor(db.as_mut_slice(), seed.as_slice());

    let first_byte_is_zero = Choice::from_u8_eq(y[0], 0);
    let label_hash_good = db[..H_LEN].ct_eq(&empty_label_hash()[..]);

    // DB = lHash' || PS (zero bytes) || 0x01 || M: find the 0x01 after the
    // zeros, and remember whether any other byte came before it, touching
    // every byte either way.
    let mut looking_for_index = Choice::TRUE;
    let mut index: u32 = 0;
    let mut invalid = Choice::FALSE;
    for (i, &b) in db[H_LEN..].iter().enumerate() {
        let is_zero = Choice::from_u8_eq(b, 0);
        let is_one = Choice::from_u8_eq(b, 1);
        // `i` is below k, far below u32::MAX (k is at most a few KiB).
        index = index.ct_select(&(i as u32), looking_for_index.and(is_one));
        looking_for_index = looking_for_index.and(is_one.not());
        invalid = invalid.or(looking_for_index.and(is_zero.not()));
    }
    let good = first_byte_is_zero
        .and(label_hash_good)
        .and(invalid.not())
        .and(looking_for_index.not());
    if !good.to_bool() {
        return None;
    }
    let start = H_LEN + index as usize + 1;
    Some(Zeroizing::new(db[start..].to_vec()))
}

/// XORs MGF1-SHA-256(`seed`, `out.len()`) into `out` (RFC 8017, B.2.1).
fn mgf1_xor(out: &mut [u8], seed: &[u8]) {
    let mut input = Zeroizing::new(Vec::with_capacity(seed.len() + 4));
    input.extend_from_slice(seed);
    input.extend_from_slice(&[0; 4]);
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(H_LEN)) {
        let n = input.len();
        input[n - 4..].copy_from_slice(&counter.to_be_bytes());
        let mut digest = Zeroizing::new(sha256(&input));
        for (o, d) in chunk.iter_mut().zip(digest.iter()) {
            *o ^= d;
        }
        digest.as_mut_slice().fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::PKey;
    use openssl::pkey_ctx::PkeyCtx;
    use openssl::rsa::{Padding, Rsa};

    /// An RSA key, an OAEP-SHA-256 ciphertext of `message` by OpenSSL, and
    /// the raw RSA decryption of it (what CKM_RSA_X_509 gives).
    fn raw_decryption_of(rsa: &Rsa<openssl::pkey::Private>, message: &[u8]) -> Vec<u8> {
        let pkey = PKey::from_rsa(rsa.clone()).unwrap();
        let mut ctx = PkeyCtx::new(&pkey).unwrap();
        ctx.encrypt_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
        ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
        let mut ciphertext = Vec::new();
        ctx.encrypt_to_vec(message, &mut ciphertext).unwrap();
        raw(rsa, &ciphertext)
    }

    fn raw(rsa: &Rsa<openssl::pkey::Private>, input: &[u8]) -> Vec<u8> {
        let mut em = vec![0u8; rsa.size() as usize];
        let n = rsa.private_decrypt(input, &mut em, Padding::NONE).unwrap();
        assert_eq!(n, em.len());
        em
    }

    /// Encodes `message` with EME-OAEP by hand (RFC 8017 7.1.1 step 2), with
    /// `tweak` applied to DB before masking, to build invalid encodings
    /// whose masking is right.
    fn encode(k: usize, message: &[u8], seed: [u8; 32], tweak: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut db = empty_label_hash().to_vec();
        db.resize(k - message.len() - H_LEN - 2, 0);
        db.push(1);
        db.extend_from_slice(message);
        assert_eq!(db.len(), k - H_LEN - 1);
        tweak(&mut db);
        let mut masked_db = db.clone();
        mgf1_xor(&mut masked_db, &seed);
        let mut masked_seed = seed;
        mgf1_xor(&mut masked_seed, &masked_db);
        let mut em = vec![0u8];
        em.extend_from_slice(&masked_seed);
        em.extend_from_slice(&masked_db);
        em
    }

    #[test]
    fn decodes_what_openssl_encrypts() {
        let rsa = Rsa::generate(2048).unwrap();
        for len in [0usize, 1, 16, 32, 100, 190] {
            let message: Vec<u8> = (0..len).map(|i| i as u8 ^ 0xA5).collect();
            let em = raw_decryption_of(&rsa, &message);
            let decoded = decode_sha256(&em, 256).expect("a valid encoding");
            assert_eq!(decoded.as_slice(), message.as_slice(), "length {len}");
        }
    }

    #[test]
    fn hand_encoding_matches_openssl() {
        // The test encoder is itself right: OpenSSL's RSA_NO_PADDING
        // encryption of it decrypts with OpenSSL's OAEP.
        let rsa = Rsa::generate(2048).unwrap();
        let em = encode(256, &[7u8; 32], [3u8; 32], |_| {});
        let mut c = vec![0u8; 256];
        rsa.public_encrypt(&em, &mut c, Padding::NONE).unwrap();
        let pkey = PKey::from_rsa(rsa).unwrap();
        let mut ctx = PkeyCtx::new(&pkey).unwrap();
        ctx.decrypt_init().unwrap();
        ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
        ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
        let mut out = Vec::new();
        ctx.decrypt_to_vec(&c, &mut out).unwrap();
        assert_eq!(out, vec![7u8; 32]);
        assert_eq!(decode_sha256(&em, 256).unwrap().as_slice(), &[7u8; 32]);
    }

    #[test]
    fn every_kind_of_bad_encoding_is_refused() {
        let k = 384;
        let good = encode(k, &[9u8; 32], [1u8; 32], |_| {});
        assert!(decode_sha256(&good, k).is_some());

        // The first byte is not zero (Manger's oracle).
        let mut y = good.clone();
        y[0] = 1;
        assert!(decode_sha256(&y, k).is_none());
        // The label hash is wrong.
        let bad_label = encode(k, &[9u8; 32], [1u8; 32], |db| db[5] ^= 1);
        assert!(decode_sha256(&bad_label, k).is_none());
        // A non-zero byte in the padding string before the 0x01.
        let bad_ps = encode(k, &[9u8; 32], [1u8; 32], |db| db[40] = 2);
        assert!(decode_sha256(&bad_ps, k).is_none());
        // No 0x01 separator at all.
        let no_one = encode(k, &[9u8; 32], [1u8; 32], |db| {
            let sep = db.len() - 33;
            db[sep] = 0;
            for b in db[sep + 1..].iter_mut() {
                *b = 0;
            }
        });
        assert!(decode_sha256(&no_one, k).is_none());
        // Any flipped byte of the masked part.
        for i in [1usize, 20, 33, 34, 100, k - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x80;
            assert!(decode_sha256(&bad, k).is_none(), "byte {i}");
        }
        // Wrong lengths, and a modulus too small for OAEP with SHA-256.
        assert!(decode_sha256(&good[1..], k).is_none());
        assert!(decode_sha256(&good, k + 1).is_none());
        assert!(decode_sha256(&[0u8; 65], 65).is_none());
        // The smallest modulus that fits: an empty message.
        let tiny = encode(66, &[], [2u8; 32], |_| {});
        assert_eq!(decode_sha256(&tiny, 66).unwrap().len(), 0);
    }

    #[test]
    fn random_raw_decryptions_are_refused_like_openssl_refuses_them() {
        // A random value below the modulus decrypts (raw) to random bytes:
        // OpenSSL's OAEP refuses these, and so must we.
        let rsa = Rsa::generate(2048).unwrap();
        let pkey = PKey::from_rsa(rsa.clone()).unwrap();
        for i in 0..64u8 {
            let mut c = [i; 256];
            c[0] = 0x01;
            let em = raw(&rsa, &c);
            let mut ctx = PkeyCtx::new(&pkey).unwrap();
            ctx.decrypt_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
            ctx.set_rsa_oaep_md(openssl::md::Md::sha256()).unwrap();
            ctx.set_rsa_mgf1_md(openssl::md::Md::sha256()).unwrap();
            let mut out = Vec::new();
            let theirs = ctx.decrypt_to_vec(&c, &mut out).ok().map(|_| out);
            let ours = decode_sha256(&em, 256).map(|m| m.to_vec());
            assert_eq!(ours, theirs, "input {i}");
        }
    }
}
