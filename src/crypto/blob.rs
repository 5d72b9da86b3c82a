//! The ciphertext blob: what Encrypt and GenerateDataKey return and what
//! Decrypt takes back.
//!
//! Format version 1, all integers big-endian:
//!
//! ```text
//! offset  len  field
//!      0    1  format version, 0x01
//!      1   16  key id (the KMS key's UUID bytes)
//!     17    4  key version (u32)
//!     21   24  XAES-256-GCM nonce, random per blob
//!     45    n  ciphertext (n >= 1: the plaintext length)
//!   45+n   16  tag
//! ```
//!
//! The first 45 bytes are the header. The AEAD's additional data is the whole
//! header followed by the canonical encryption context
//! ([`CanonicalContext::as_bytes`]), so changing the version, key id, key
//! version or nonce, or presenting another context, fails authentication.
//! The context length needs no prefix: the header is fixed-size, so the
//! boundary between the two is unambiguous.
//!
//! The blob names its key, so Decrypt needs no key id, and it carries no
//! length fields to disagree with the real length. AWS KMS plaintexts are 1
//! to 4096 bytes, so a valid blob is at least [`MIN_LEN`] (62) bytes.
//! A new format gets a new version byte; [`parse_header`] rejects versions
//! it does not know before any cryptography runs.

use std::ops::Range;

use zeroize::Zeroizing;

use super::context::CanonicalContext;
use super::rng;
use super::xaes::XaesKey;

/// The format version this module writes and reads.
pub const VERSION: u8 = 1;
/// Length of the header: version, key id, key version and nonce.
pub const HEADER_LEN: usize = 1 + 16 + 4 + XaesKey::NONCE_LEN;
/// Length of the authentication tag at the end of the blob.
pub const TAG_LEN: usize = XaesKey::TAG_LEN;
/// Bytes a blob adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The shortest valid blob: the overhead plus a one-byte plaintext.
pub const MIN_LEN: usize = OVERHEAD + 1;
/// The longest valid blob: the overhead plus the largest plaintext
/// (Encrypt's 4096 bytes). Anything longer is refused from its length
/// alone, before any copy or GHASH.
pub const MAX_LEN: usize = OVERHEAD + kms_proto::types::limits::MAX_PLAINTEXT;

const KEY_ID: Range<usize> = 1..17;
const KEY_VERSION: Range<usize> = 17..21;
const NONCE: Range<usize> = 21..HEADER_LEN;

/// Additional data up to this length (header plus context) is assembled on
/// the stack; typical encryption contexts are a few dozen to a few hundred
/// bytes, so only unusually large ones pay for a heap allocation.
const STACK_AAD_LEN: usize = 512;

/// Which key a blob was sealed under: the cleartext part of the header that
/// Decrypt reads to find the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// The KMS key's id (UUID bytes).
    pub key_id: [u8; 16],
    /// The key version (backing key) within that KMS key.
    pub key_version: u32,
}

/// Why a blob could not be opened. The service maps every variant to
/// InvalidCiphertextException; the variants exist for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// The bytes cannot be a blob of any known version (empty, or too short).
    #[error("malformed ciphertext blob: {0}")]
    Malformed(&'static str),
    /// The version byte names a format this build does not know.
    #[error("unsupported ciphertext blob version {0}")]
    UnsupportedVersion(u8),
    /// The tag did not verify: wrong key, wrong encryption context, or a
    /// modified blob. Deliberately says no more than that.
    #[error("ciphertext authentication failed")]
    Authentication,
}

impl BlobHeader {
    /// Encodes the 45-byte header for this key and `nonce`.
    fn encode(&self, nonce: &[u8; 24]) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[0] = VERSION;
        header[KEY_ID].copy_from_slice(&self.key_id);
        header[KEY_VERSION].copy_from_slice(&self.key_version.to_be_bytes());
        header[NONCE].copy_from_slice(nonce);
        header
    }
}

/// Reads the key id and key version from a blob without any cryptography,
/// so Decrypt can find (and authorize) the key first.
///
/// # Errors
///
/// [`BlobError::Malformed`] for an empty blob, one shorter than
/// [`MIN_LEN`] or longer than [`MAX_LEN`], [`BlobError::UnsupportedVersion`]
/// for an unknown version byte. The header is not authenticated yet: treat the result as a claim
/// until [`open`] succeeds.
pub fn parse_header(blob: &[u8]) -> Result<BlobHeader, BlobError> {
    parse_header_of(blob, VERSION, MIN_LEN..=MAX_LEN)
}

/// The header of a blob of format `version`, whose blobs are `lengths`
/// bytes long. Every format starts with the version byte, the key id and
/// the key version at the same offsets.
pub(crate) fn parse_header_of(
    blob: &[u8],
    version: u8,
    lengths: std::ops::RangeInclusive<usize>,
) -> Result<BlobHeader, BlobError> {
    match blob.first() {
        None => return Err(BlobError::Malformed("empty")),
        Some(&v) if v == version => {}
        Some(&other) => return Err(BlobError::UnsupportedVersion(other)),
    }
    if blob.len() < *lengths.start() {
        return Err(BlobError::Malformed("too short"));
    }
    if blob.len() > *lengths.end() {
        return Err(BlobError::Malformed("too long"));
    }
    Ok(BlobHeader {
        key_id: blob[KEY_ID].try_into().expect("16-byte range"),
        key_version: u32::from_be_bytes(blob[KEY_VERSION].try_into().expect("4-byte range")),
    })
}

/// Seals `plaintext` under `key` with a fresh random nonce and returns the
/// whole blob (header, ciphertext, tag), binding `header` and `context`.
///
/// # Panics
///
/// Panics if `plaintext` is empty: such a blob would be shorter than
/// [`MIN_LEN`] and could never be opened, and the service validates
/// plaintext lengths (1 to 4096 bytes, as AWS KMS) before it gets here.
pub fn seal(
    key: &XaesKey,
    header: &BlobHeader,
    context: &CanonicalContext,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut nonce = [0u8; 24];
    rng::fill(&mut nonce);
    seal_with_nonce(key, header, context, plaintext, &nonce)
}

/// [`seal`] with a caller-chosen nonce, so tests can pin the output.
fn seal_with_nonce(
    key: &XaesKey,
    header: &BlobHeader,
    context: &CanonicalContext,
    plaintext: &[u8],
    nonce: &[u8; 24],
) -> Vec<u8> {
    assert!(!plaintext.is_empty(), "kmsd never seals an empty plaintext");
    // One allocation of the final size; the plaintext is copied in and
    // encrypted in place, so no other plaintext copy is left behind.
    let mut blob = Vec::with_capacity(OVERHEAD + plaintext.len());
    blob.extend_from_slice(&header.encode(nonce));
    blob.extend_from_slice(plaintext);
    let (header_bytes, body) = blob.split_at_mut(HEADER_LEN);
    let tag = with_aad(header_bytes, context, |aad| {
        key.seal_in_place_detached(nonce, aad, body)
    });
    blob.extend_from_slice(&tag);
    blob
}

/// Authenticates the blob's header and `context` under `key` and returns the
/// plaintext, which is zeroized when dropped.
///
/// The caller finds `key` from [`parse_header`]; if it passes another key,
/// the result is [`BlobError::Authentication`], never garbage.
///
/// # Errors
///
/// The errors of [`parse_header`], and [`BlobError::Authentication`] when
/// the tag does not verify.
pub fn open(
    key: &XaesKey,
    blob: &[u8],
    context: &CanonicalContext,
) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    parse_header(blob)?;
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; 24] = header[NONCE].try_into().expect("24-byte range");
    let tag: &[u8; 16] = tag.try_into().expect("split leaves exactly a tag");

    // The tag is verified before anything is decrypted, so on failure this
    // buffer only ever held ciphertext; it is zeroizing for the success case.
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    with_aad(header, context, |aad| {
        key.open_in_place_detached(nonce, aad, &mut plaintext, tag)
    })?;
    Ok(plaintext)
}

/// Runs `f` on the additional data `header || context`, without copying when
/// the context is empty and without a heap allocation when it is small.
fn with_aad<R>(header: &[u8], context: &CanonicalContext, f: impl FnOnce(&[u8]) -> R) -> R {
    let context = context.as_bytes();
    if context.is_empty() {
        return f(header);
    }
    let len = header.len() + context.len();
    if len <= STACK_AAD_LEN {
        let mut buf = [0u8; STACK_AAD_LEN];
        buf[..header.len()].copy_from_slice(header);
        buf[header.len()..len].copy_from_slice(context);
        f(&buf[..len])
    } else {
        f(&[header, context].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyMaterial;

    const HEADER: BlobHeader = BlobHeader {
        key_id: [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0x77,
        ],
        key_version: 0x0102_0304,
    };

    fn key() -> XaesKey {
        XaesKey::new(&KeyMaterial::from_bytes([0x24; 32]))
    }

    fn context() -> CanonicalContext {
        CanonicalContext::new(&[("tenant", "acme"), ("purpose", "test")]).unwrap()
    }

    #[test]
    fn constants_match_the_layout() {
        assert_eq!(HEADER_LEN, 45);
        assert_eq!(TAG_LEN, 16);
        assert_eq!(OVERHEAD, 61);
        assert_eq!(MIN_LEN, 62);
        assert_eq!(MAX_LEN, 4157);
    }

    #[test]
    fn a_blob_longer_than_any_valid_one_is_refused_by_its_length() {
        let key = key();
        let max = seal(&key, &HEADER, &context(), &[7u8; 4096]);
        assert_eq!(max.len(), MAX_LEN);
        assert_eq!(open(&key, &max, &context()).unwrap().len(), 4096);
        let mut longer = max.clone();
        longer.push(0);
        assert_eq!(parse_header(&longer), Err(BlobError::Malformed("too long")));
        assert_eq!(
            open(&key, &longer, &context()),
            Err(BlobError::Malformed("too long"))
        );
    }

    #[test]
    fn round_trip_for_every_aad_path() {
        let key = key();
        let big = "x".repeat(STACK_AAD_LEN); // forces the heap path
        let contexts = [
            CanonicalContext::empty(),
            context(),
            CanonicalContext::new(&[("big", &big)]).unwrap(),
        ];
        for ctx in &contexts {
            for len in [1usize, 15, 16, 17, 4096] {
                let plaintext: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let blob = seal(&key, &HEADER, ctx, &plaintext);
                assert_eq!(blob.len(), OVERHEAD + len);
                assert_eq!(parse_header(&blob), Ok(HEADER));
                assert_eq!(open(&key, &blob, ctx).unwrap().as_slice(), plaintext);
                if !ctx.is_empty() {
                    assert_eq!(
                        open(&key, &blob, &CanonicalContext::empty()),
                        Err(BlobError::Authentication)
                    );
                }
            }
        }
    }

    #[test]
    fn layout_and_aad_are_as_documented() {
        let key = key();
        let nonce: [u8; 24] = core::array::from_fn(|i| i as u8 + 0xA0);
        let ctx = context();
        let blob = seal_with_nonce(&key, &HEADER, &ctx, b"hello", &nonce);

        assert_eq!(blob[0], 0x01);
        assert_eq!(&blob[1..17], &HEADER.key_id);
        assert_eq!(&blob[17..21], &[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(&blob[21..45], &nonce);

        // Opening with the bare AEAD and AAD = header || context proves what
        // the additional data is.
        let aad = [&blob[..45], ctx.as_bytes()].concat();
        let mut body = blob[45..].to_vec();
        key.open_in_place(&nonce, &aad, &mut body).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn fresh_nonce_per_seal() {
        let key = key();
        let a = seal(&key, &HEADER, &context(), b"same");
        let b = seal(&key, &HEADER, &context(), b"same");
        assert_ne!(a[NONCE], b[NONCE]);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }

    #[test]
    fn every_single_byte_change_fails() {
        let key = key();
        let ctx = context();
        let blob = seal(&key, &HEADER, &ctx, b"sixteen byte msg!");
        let mut tried = 0;
        for i in 0..blob.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[i] ^= flip;
                let result = open(&key, &bad, &ctx);
                let expected = if i == 0 {
                    BlobError::UnsupportedVersion(VERSION ^ flip)
                } else {
                    BlobError::Authentication
                };
                assert_eq!(result, Err(expected), "byte {i} xor {flip:#04x}");
                tried += 1;
            }
        }
        assert_eq!(tried, blob.len() * 3);
        assert!(open(&key, &blob, &ctx).is_ok());
    }

    #[test]
    fn every_truncation_and_extension_fails() {
        let key = key();
        let ctx = context();
        let blob = seal(&key, &HEADER, &ctx, b"a plaintext of some length");
        for len in 0..blob.len() {
            let result = open(&key, &blob[..len], &ctx);
            match len {
                0 => assert_eq!(result, Err(BlobError::Malformed("empty"))),
                1..MIN_LEN => assert_eq!(result, Err(BlobError::Malformed("too short"))),
                _ => assert_eq!(result, Err(BlobError::Authentication), "length {len}"),
            }
        }
        // Cutting from the front shifts every field; it must fail too.
        for start in 1..blob.len() {
            assert!(open(&key, &blob[start..], &ctx).is_err(), "start {start}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(open(&key, &longer, &ctx), Err(BlobError::Authentication));
    }

    #[test]
    fn wrong_context_or_key_fails() {
        let key = key();
        let blob = seal(&key, &HEADER, &context(), b"secret");
        for other in [
            CanonicalContext::empty(),
            CanonicalContext::new(&[("tenant", "acme")]).unwrap(),
            CanonicalContext::new(&[("tenant", "acme"), ("purpose", "tesT")]).unwrap(),
            CanonicalContext::new(&[("tenant", "acme"), ("purpose", "test"), ("x", "")]).unwrap(),
        ] {
            assert_eq!(open(&key, &blob, &other), Err(BlobError::Authentication));
        }
        let other_key = XaesKey::new(&KeyMaterial::from_bytes([0x25; 32]));
        assert_eq!(
            open(&other_key, &blob, &context()),
            Err(BlobError::Authentication)
        );
    }

    #[test]
    fn parse_header_checks_version_before_length() {
        assert_eq!(parse_header(&[]), Err(BlobError::Malformed("empty")));
        assert_eq!(parse_header(&[2]), Err(BlobError::UnsupportedVersion(2)));
        assert_eq!(
            parse_header(&[0; 100]),
            Err(BlobError::UnsupportedVersion(0))
        );
        assert_eq!(
            parse_header(&[1; 61]),
            Err(BlobError::Malformed("too short"))
        );
        let header = parse_header(&[1; 62]).unwrap();
        assert_eq!(header.key_id, [1; 16]);
        assert_eq!(header.key_version, 0x0101_0101);
    }

    #[test]
    #[should_panic(expected = "never seals an empty plaintext")]
    fn sealing_empty_plaintext_is_a_bug() {
        seal(&key(), &HEADER, &CanonicalContext::empty(), b"");
    }
}
