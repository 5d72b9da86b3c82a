//! The canonical encoding of an AWS-style encryption context.
//!
//! An encryption context is a map of UTF-8 strings that the caller must
//! present again, identically, to decrypt. kmsd binds it to the ciphertext as
//! part of the AEAD's additional data, so it must encode to the same bytes
//! however the caller ordered the pairs, and two different maps must never
//! encode to the same bytes.
//!
//! Encoding: the pairs sorted by key in bytewise UTF-8 order, then for each
//! pair
//!
//! ```text
//! | key length: u16 big-endian | key bytes | value length: u16 big-endian | value bytes |
//! ```
//!
//! The empty context encodes to no bytes at all. The length prefixes are what
//! keep `{"ab": "c"}` and `{"a": "bc"}` apart; plain concatenation would make
//! them collide. Keys must be non-empty and unique (a duplicate would make the
//! map ambiguous), and the whole encoding is at most
//! [`MAX_CONTEXT_BYTES`] (8 KiB), which also keeps every length within a u16.

use std::fmt;

use kms_proto::types::limits::MAX_CONTEXT_BYTES;

/// Bytes the encoding spends per pair beyond the key and value themselves:
/// the two u16 length prefixes.
const PAIR_OVERHEAD: usize = 4;

/// An encryption context in its canonical byte encoding (see the module
/// docs), ready to be bound as additional authenticated data.
///
/// The type can only be built by [`CanonicalContext::new`] or
/// [`CanonicalContext::empty`], so holding one proves the context was
/// validated. Encryption contexts are not secret (they are written to the
/// audit log), so `Debug` shows the bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CanonicalContext {
    bytes: Vec<u8>,
}

/// Why an encryption context was rejected. The messages are written for the
/// caller, as the text of a ValidationException.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    /// A key was the empty string, which AWS KMS does not allow either.
    #[error("encryption context keys must not be empty")]
    EmptyKey,
    /// The same key appeared twice, so the context is not a map.
    #[error("encryption context key {0:?} appears more than once")]
    DuplicateKey(String),
    /// The canonical encoding is longer than the limit.
    #[error("encryption context is too large: {len} bytes encoded, at most {max} allowed")]
    TooLarge {
        /// The encoded length the context would have had.
        len: usize,
        /// The limit, [`MAX_CONTEXT_BYTES`].
        max: usize,
    },
}

impl CanonicalContext {
    /// Validates and canonically encodes `pairs`, in any order.
    ///
    /// # Errors
    ///
    /// [`ContextError::EmptyKey`] for an empty key,
    /// [`ContextError::DuplicateKey`] when a key appears twice, and
    /// [`ContextError::TooLarge`] when the encoding would exceed
    /// [`MAX_CONTEXT_BYTES`]. The size is checked before anything is copied,
    /// so an oversized context costs no allocation.
    pub fn new(pairs: &[(&str, &str)]) -> Result<CanonicalContext, ContextError> {
        if pairs.is_empty() {
            return Ok(CanonicalContext::empty());
        }
        let mut len = 0usize;
        for (key, value) in pairs {
            if key.is_empty() {
                return Err(ContextError::EmptyKey);
            }
            len = len.saturating_add(PAIR_OVERHEAD + key.len() + value.len());
        }
        if len > MAX_CONTEXT_BYTES {
            return Err(ContextError::TooLarge {
                len,
                max: MAX_CONTEXT_BYTES,
            });
        }

        // Contexts are small (bounded by the limit above), so sorting
        // references is cheaper than any map; `str` orders bytewise, which
        // is the order the encoding promises.
        let mut sorted: Vec<&(&str, &str)> = pairs.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(pair) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(ContextError::DuplicateKey(pair[0].0.to_owned()));
        }

        let mut bytes = Vec::with_capacity(len);
        for (key, value) in sorted {
            push_field(&mut bytes, key);
            push_field(&mut bytes, value);
        }
        debug_assert_eq!(bytes.len(), len);
        Ok(CanonicalContext { bytes })
    }

    /// The empty encryption context, which encodes to no bytes.
    pub fn empty() -> CanonicalContext {
        CanonicalContext { bytes: Vec::new() }
    }

    /// The canonical encoding, to be appended to the additional data.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether this is the empty context.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Appends one length-prefixed field. The caller has checked the total
/// length against [`MAX_CONTEXT_BYTES`], which is below `u16::MAX`, so the
/// conversion cannot fail.
fn push_field(out: &mut Vec<u8>, field: &str) {
    const _: () = assert!(MAX_CONTEXT_BYTES <= u16::MAX as usize);
    let len = u16::try_from(field.len()).expect("field length checked against the context limit");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}

impl fmt::Debug for CanonicalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalContext({} bytes: ", self.bytes.len())?;
        for byte in &self.bytes {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_context_encodes_to_nothing() {
        assert_eq!(CanonicalContext::empty().as_bytes(), b"");
        assert_eq!(
            CanonicalContext::new(&[]).unwrap(),
            CanonicalContext::empty()
        );
        assert!(CanonicalContext::empty().is_empty());
    }

    #[test]
    fn encoding_is_length_prefixed_and_sorted() {
        let ctx = CanonicalContext::new(&[("b", "2"), ("a", "xyz")]).unwrap();
        assert_eq!(
            ctx.as_bytes(),
            b"\x00\x01a\x00\x03xyz\x00\x01b\x00\x012".as_slice()
        );
    }

    #[test]
    fn order_of_pairs_does_not_matter() {
        let a = CanonicalContext::new(&[("tenant", "t1"), ("app", "web"), ("env", "")]).unwrap();
        let b = CanonicalContext::new(&[("env", ""), ("tenant", "t1"), ("app", "web")]).unwrap();
        let c = CanonicalContext::new(&[("app", "web"), ("env", ""), ("tenant", "t1")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_bytes(), c.as_bytes());
    }

    #[test]
    fn sort_is_bytewise_utf8() {
        // 'Z' (0x5a) < 'a' (0x61) < 'é' (0xc3 0xa9) bytewise.
        let ctx = CanonicalContext::new(&[("é", "3"), ("a", "2"), ("Z", "1")]).unwrap();
        let expected: Vec<u8> = [
            &b"\x00\x01Z\x00\x011"[..],
            b"\x00\x01a\x00\x012",
            "\x00\x02é\x00\x013".as_bytes(),
        ]
        .concat();
        assert_eq!(ctx.as_bytes(), expected.as_slice());
    }

    #[test]
    fn boundary_shifts_give_different_encodings() {
        let ab_c = CanonicalContext::new(&[("ab", "c")]).unwrap();
        let a_bc = CanonicalContext::new(&[("a", "bc")]).unwrap();
        assert_ne!(ab_c.as_bytes(), a_bc.as_bytes());
        // One pair against two pairs whose concatenation is the same text.
        let one = CanonicalContext::new(&[("a", "bcd")]).unwrap();
        let two = CanonicalContext::new(&[("a", "b"), ("c", "d")]).unwrap();
        assert_ne!(one.as_bytes(), two.as_bytes());
        // An empty value is not the same as an absent pair.
        let empty_value = CanonicalContext::new(&[("a", "")]).unwrap();
        assert_ne!(empty_value.as_bytes(), CanonicalContext::empty().as_bytes());
    }

    #[test]
    fn empty_key_is_rejected() {
        assert_eq!(
            CanonicalContext::new(&[("a", "1"), ("", "x")]),
            Err(ContextError::EmptyKey)
        );
        assert_eq!(
            CanonicalContext::new(&[("", "")]),
            Err(ContextError::EmptyKey)
        );
    }

    #[test]
    fn duplicate_key_is_rejected_even_with_equal_values() {
        assert_eq!(
            CanonicalContext::new(&[("k", "1"), ("other", "x"), ("k", "2")]),
            Err(ContextError::DuplicateKey("k".into()))
        );
        assert_eq!(
            CanonicalContext::new(&[("k", "1"), ("k", "1")]),
            Err(ContextError::DuplicateKey("k".into()))
        );
    }

    #[test]
    fn size_limit_boundary() {
        // One pair with a 1-byte key: 4 + 1 + value bytes.
        let max_value = "v".repeat(MAX_CONTEXT_BYTES - 5);
        let at_limit = CanonicalContext::new(&[("k", &max_value)]).unwrap();
        assert_eq!(at_limit.as_bytes().len(), MAX_CONTEXT_BYTES);

        let over_value = "v".repeat(MAX_CONTEXT_BYTES - 4);
        assert_eq!(
            CanonicalContext::new(&[("k", &over_value)]),
            Err(ContextError::TooLarge {
                len: MAX_CONTEXT_BYTES + 1,
                max: MAX_CONTEXT_BYTES
            })
        );

        // The limit counts the whole encoding, overhead included, across pairs.
        let half = "x".repeat(MAX_CONTEXT_BYTES / 2 - 5);
        let fits = CanonicalContext::new(&[("a", &half), ("b", &half)]).unwrap();
        assert_eq!(fits.as_bytes().len(), MAX_CONTEXT_BYTES);
        let longer = format!("{half}x");
        assert_eq!(
            CanonicalContext::new(&[("a", &half), ("b", &longer)]),
            Err(ContextError::TooLarge {
                len: MAX_CONTEXT_BYTES + 1,
                max: MAX_CONTEXT_BYTES
            })
        );
        let many: Vec<(String, String)> = (0..2049)
            .map(|i| (format!("{i:04}"), String::new()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(matches!(
            CanonicalContext::new(&many),
            Err(ContextError::TooLarge { len: 16392, .. })
        ));
    }

    #[test]
    fn errors_read_as_validation_messages() {
        assert_eq!(
            ContextError::DuplicateKey("k".into()).to_string(),
            "encryption context key \"k\" appears more than once"
        );
        assert_eq!(
            ContextError::TooLarge {
                len: 9000,
                max: 8192
            }
            .to_string(),
            "encryption context is too large: 9000 bytes encoded, at most 8192 allowed"
        );
    }
}
