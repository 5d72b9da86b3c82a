//! The checks every encoding of a request makes of its fields before the
//! typed request exists: presence, lengths and counts that AWS's model
//! gives, with the messages clients see. The flatbuffers decoder
//! (`request`) and the daemon's AWS JSON decoder (`kmsd::http::json`) both
//! call these, so one request is refused with the same words whichever
//! way it came. What the operation itself checks (ranges of numbers, key
//! ids, the encryption context's content) is the daemon's, not here.
//!
//! Messages name the field and never quote the client's text.

use crate::error::{ErrorKind, KmsError};
use crate::types::{limits, AuditSeal, Context, Tag};
use std::fmt;

/// A required string: absent is "`field` is required".
pub fn required<'a>(v: Option<&'a str>, field: &str) -> Result<&'a str, KmsError> {
    v.ok_or_else(|| KmsError::validation(format!("{field} is required")))
}

/// Checks that `s` has `min..=max` characters (AWS counts characters, not
/// bytes).
pub fn chars(s: &str, field: &dyn fmt::Display, min: usize, max: usize) -> Result<(), KmsError> {
    // Most strings are short ASCII: no count when the bytes already fit.
    let n = if s.len() <= max {
        if s.len() >= min {
            return Ok(());
        }
        s.chars().count()
    } else {
        s.chars().count()
    };
    if n < min || n > max {
        let range = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min} to {max}")
        };
        return Err(KmsError::validation(format!(
            "{field} has {n} characters; it must have {range}"
        )));
    }
    Ok(())
}

/// A required string of `min..=max` characters.
pub fn required_chars<'a>(
    v: Option<&'a str>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<&'a str, KmsError> {
    let s = required(v, field)?;
    chars(s, &field, min, max)?;
    Ok(s)
}

/// An optional string of `min..=max` characters (present and empty is
/// refused where AWS's minimum is 1).
pub fn optional_chars<'a>(
    v: Option<&'a str>,
    field: &str,
    min: usize,
    max: usize,
) -> Result<Option<&'a str>, KmsError> {
    if let Some(s) = v {
        chars(s, &field, min, max)?;
    }
    Ok(v)
}

/// Checks that `s` has `min..=max` bytes (for what AWS bounds in bytes, or
/// kmsd's own ASCII tokens).
pub fn bytes(s: &str, field: &dyn fmt::Display, min: usize, max: usize) -> Result<(), KmsError> {
    let n = s.len();
    if n < min || n > max {
        return Err(KmsError::validation(format!(
            "{field} has {n} bytes; it must have {min} to {max}"
        )));
    }
    Ok(())
}

/// A required byte string of 1..=`max` bytes (empty is absent).
pub fn required_bytes<'a>(b: &'a [u8], field: &str, max: usize) -> Result<&'a [u8], KmsError> {
    if b.is_empty() {
        return Err(KmsError::validation(format!("{field} is required")));
    }
    if b.len() > max {
        return Err(KmsError::validation(format!(
            "{field} has {} bytes; at most {max} are allowed",
            b.len()
        )));
    }
    Ok(b)
}

/// Checks a list's length against `min..=max` (fewer than `min` is
/// "`field` is required").
pub fn count(n: usize, field: &str, min: usize, max: usize) -> Result<(), KmsError> {
    if n < min {
        return Err(KmsError::validation(format!("{field} is required")));
    }
    if n > max {
        return Err(KmsError::validation(format!(
            "{field} has {n} entries; at most {max} are allowed"
        )));
    }
    Ok(())
}

/// An encryption context of `n` pairs: at most
/// [`limits::MAX_CONTEXT_ENTRIES`] (their content is the daemon's to check).
pub fn context_pairs(n: usize) -> Result<(), KmsError> {
    if n > limits::MAX_CONTEXT_ENTRIES {
        return Err(KmsError::validation(format!(
            "encryption context has {n} pairs; at most {} are allowed",
            limits::MAX_CONTEXT_ENTRIES
        )));
    }
    Ok(())
}

/// GrantTokens: how many (at most 10).
pub fn grant_token_count(n: usize) -> Result<(), KmsError> {
    count(n, "GrantTokens", 0, limits::MAX_GRANT_TOKENS)
}

/// GrantTokens: the `i`th, 1..=8192 bytes.
pub fn grant_token(i: usize, t: &str) -> Result<(), KmsError> {
    bytes(
        t,
        &format_args!("GrantTokens[{i}]"),
        1,
        limits::MAX_GRANT_TOKEN_LEN,
    )
}

/// RetireGrant's GrantToken, 1..=8192 bytes.
pub fn retire_grant_token(v: Option<&str>) -> Result<Option<&str>, KmsError> {
    if let Some(t) = v {
        bytes(t, &"GrantToken", 1, limits::MAX_GRANT_TOKEN_LEN)?;
    }
    Ok(v)
}

/// A key policy: 1..=32768 bytes. Longer is
/// MalformedPolicyDocumentException naming the limit (policy documents are
/// hostile input, and every refusal of one says why in that exception);
/// its content is the daemon's to check.
pub fn policy(p: &str) -> Result<&str, KmsError> {
    if p.is_empty() {
        return Err(KmsError::validation(format!(
            "Policy has 0 bytes; it must have 1 to {}",
            limits::MAX_POLICY_BYTES
        )));
    }
    if p.len() > limits::MAX_POLICY_BYTES {
        return Err(KmsError::new(
            ErrorKind::MalformedPolicyDocument,
            format!(
                "Policy has {} bytes; a key policy may have at most {}",
                p.len(),
                limits::MAX_POLICY_BYTES
            ),
        ));
    }
    Ok(p)
}

/// PolicyName: 1..=128 characters when given.
pub fn policy_name(v: Option<&str>) -> Result<Option<&str>, KmsError> {
    optional_chars(v, "PolicyName", 1, limits::MAX_POLICY_NAME_LEN)
}

/// The Marker of the access-control lists: 1..=1024 characters.
pub fn marker(v: Option<&str>) -> Result<Option<&str>, KmsError> {
    optional_chars(v, "Marker", 1, limits::MAX_MARKER_LEN)
}

/// A GrantId: 1..=128 characters when given.
pub fn grant_id(v: Option<&str>) -> Result<Option<&str>, KmsError> {
    optional_chars(v, "GrantId", 1, limits::MAX_GRANT_ID_LEN)
}

/// A principal (`field`): 1..=256 characters when given.
pub fn principal<'a>(v: Option<&'a str>, field: &str) -> Result<Option<&'a str>, KmsError> {
    optional_chars(v, field, 1, limits::MAX_PRINCIPAL_LEN)
}

/// AliasName: required, 1..=256 characters (its form is the daemon's to
/// check).
pub fn alias_name(v: Option<&str>) -> Result<&str, KmsError> {
    required_chars(v, "AliasName", 1, limits::MAX_ALIAS_NAME_LEN)
}

/// A grant's Operations: how many (1..=17).
pub fn grant_operation_count(n: usize) -> Result<(), KmsError> {
    count(n, "Operations", 1, limits::MAX_GRANT_OPERATIONS)
}

/// One grant constraint (`field`) of `n` pairs: at most 8 (AWS).
pub fn constraint_pairs(n: usize, field: &str) -> Result<(), KmsError> {
    if n > limits::MAX_GRANT_CONSTRAINT_PAIRS {
        return Err(KmsError::validation(format!(
            "{field} has {n} pairs; at most {} are allowed",
            limits::MAX_GRANT_CONSTRAINT_PAIRS
        )));
    }
    Ok(())
}

/// One grant constraint's pairs: at most 384 characters in all, keys and
/// values (AWS); the pairs themselves are the daemon's to check, as an
/// encryption context.
pub fn constraint_chars(pairs: &Context<'_>, field: &str) -> Result<(), KmsError> {
    let max = limits::MAX_GRANT_CONSTRAINT_CHARS;
    // Bytes bound characters: count only when the bytes do not fit.
    if pairs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > max {
        let n: usize = pairs
            .iter()
            .map(|(k, v)| k.chars().count() + v.chars().count())
            .sum();
        if n > max {
            return Err(KmsError::validation(format!(
                "{field} has {n} characters in its keys and values; at most {max} are allowed"
            )));
        }
    }
    Ok(())
}

/// Tags (`field`): how many, `min..=50`.
pub fn tag_count(n: usize, field: &str, min: usize) -> Result<(), KmsError> {
    count(n, field, min, limits::MAX_TAGS_PER_REQUEST)
}

/// The `i`th tag of `field`: its TagKey required, 1..=128 characters; an
/// absent TagValue is the empty value (AWS allows 0..=256 characters).
pub fn tag<'a>(
    i: usize,
    key: Option<&'a str>,
    value: Option<&'a str>,
    field: &str,
) -> Result<Tag<'a>, KmsError> {
    let key =
        key.ok_or_else(|| KmsError::validation(format!("{field}[{i}].TagKey is required")))?;
    chars(
        key,
        &format_args!("{field}[{i}].TagKey"),
        1,
        limits::MAX_TAG_KEY_LEN,
    )?;
    let value = value.unwrap_or("");
    chars(
        value,
        &format_args!("{field}[{i}].TagValue"),
        0,
        limits::MAX_TAG_VALUE_LEN,
    )?;
    Ok(Tag { key, value })
}

/// UntagResource's TagKeys: the `i`th, 1..=128 characters.
pub fn tag_key(i: usize, k: &str) -> Result<(), KmsError> {
    chars(k, &format_args!("TagKeys[{i}]"), 1, limits::MAX_TAG_KEY_LEN)
}

/// VerifyAuditSeals: how many seals (at most 1000).
pub fn seal_count(n: usize) -> Result<(), KmsError> {
    if n > limits::MAX_AUDIT_SEALS {
        return Err(KmsError::validation(format!(
            "Seals must hold 0..={} seals",
            limits::MAX_AUDIT_SEALS
        )));
    }
    Ok(())
}

/// One seal: its hashes are 32 bytes each (`PrevHash`, `Mac`).
pub fn seal(seq: u64, prev_hash: Option<&[u8]>, mac: Option<&[u8]>) -> Result<AuditSeal, KmsError> {
    let hash = |v: Option<&[u8]>, field: &str| -> Result<[u8; 32], KmsError> {
        v.and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(|| KmsError::validation(format!("{field} must be 32 bytes")))
    };
    Ok(AuditSeal {
        seq,
        prev_hash: hash(prev_hash, "PrevHash")?,
        mac: hash(mac, "Mac")?,
    })
}
