//! Ciphertext blob format 2: data sealed by an HSM-only key, with AES-256-GCM
//! inside the HSM and a 96-bit IV (the only IV length the daemon lets the
//! HSM use, whatever the HSM would accept).
//!
//! ```text
//! offset  len  field
//!      0    1  format version, 0x02
//!      1   16  key id
//!     17    4  key version (u32, big-endian)
//!     21   12  GCM IV, random per blob
//!     33    n  ciphertext (n >= 1)
//!   33+n   16  tag
//! ```
//!
//! As in format 1, the additional data is the whole header followed by the
//! canonical encryption context. Random 96-bit IVs are safe for 2^32
//! encryptions per key (NIST SP 800-38D); the service counts them per key
//! version, persistently, and refuses beyond that.

use super::blob::{BlobError, BlobHeader};
use super::context::CanonicalContext;

/// This format's version byte.
pub const VERSION: u8 = 2;
/// IV length.
pub const IV_LEN: usize = 12;
/// Header: version, key id, key version, IV.
pub const HEADER_LEN: usize = 1 + 16 + 4 + IV_LEN;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Shortest valid blob (one byte of plaintext).
pub const MIN_LEN: usize = HEADER_LEN + TAG_LEN + 1;
/// Longest valid blob (Encrypt's largest plaintext, 4096 bytes): longer
/// ones are refused before the HSM sees them.
pub const MAX_LEN: usize = HEADER_LEN + TAG_LEN + kms_proto::types::limits::MAX_PLAINTEXT;

/// Reads the key id and version of a format-2 blob (unauthenticated).
pub fn parse_header(blob: &[u8]) -> Result<BlobHeader, BlobError> {
    super::blob::parse_header_of(blob, VERSION, MIN_LEN..=MAX_LEN)
}

/// The header of a new blob.
pub fn header(h: &BlobHeader, iv: &[u8; IV_LEN]) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = VERSION;
    out[1..17].copy_from_slice(&h.key_id);
    out[17..21].copy_from_slice(&h.key_version.to_be_bytes());
    out[21..].copy_from_slice(iv);
    out
}

/// The additional data: header, then canonical context.
pub fn aad(header: &[u8], context: &CanonicalContext) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.as_bytes().len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context.as_bytes());
    aad
}

/// A format-2 blob taken apart.
pub struct Parts<'a> {
    /// The 33-byte header (part of the AAD).
    pub header: &'a [u8],
    /// The GCM IV.
    pub iv: [u8; IV_LEN],
    /// Ciphertext followed by the tag.
    pub body: &'a [u8],
}

/// Splits a blob into header, IV and ciphertext-and-tag after checking its
/// header.
pub fn split(blob: &[u8]) -> Result<Parts<'_>, BlobError> {
    parse_header(blob)?;
    let (header, body) = blob.split_at(HEADER_LEN);
    let iv: [u8; IV_LEN] = header[21..].try_into().expect("12 bytes");
    Ok(Parts { header, iv, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_or_foreign_blobs_are_refused() {
        let h = BlobHeader {
            key_id: [7; 16],
            key_version: 3,
        };
        let mut blob = header(&h, &[9; 12]).to_vec();
        blob.extend_from_slice(&[0; TAG_LEN + 1]);
        assert_eq!(parse_header(&blob).unwrap(), h);
        let p = split(&blob).unwrap();
        assert_eq!(
            (p.header.len(), p.iv, p.body.len()),
            (HEADER_LEN, [9; 12], TAG_LEN + 1)
        );
        assert_eq!(
            parse_header(&blob[..MIN_LEN - 1]),
            Err(BlobError::Malformed("too short"))
        );
        let mut long = blob.clone();
        long.resize(MAX_LEN, 0);
        assert_eq!(parse_header(&long).unwrap(), h);
        long.push(0);
        assert_eq!(parse_header(&long), Err(BlobError::Malformed("too long")));
        blob[0] = 1;
        assert_eq!(parse_header(&blob), Err(BlobError::UnsupportedVersion(1)));
    }
}
