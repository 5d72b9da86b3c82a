//! The first look at a body, before the parser's: its size, how deep its
//! containers nest, how many members and elements they hold, and how long
//! its strings are, in one pass with no allocation. What it refuses never
//! reaches serde_json, whose own bound (a recursion limit of 128) is far
//! looser than any AWS KMS input needs. It does not check the syntax:
//! malformed JSON within the bounds is the parser's to refuse.

use super::JsonLimits;
use kms_proto::KmsError;

/// What the scan saw of a body within the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    /// Containers (objects and arrays) plus commas outside strings: at
    /// least the members and elements of every container.
    pub entries: usize,
}

/// Checks `body` against `limits` (size, depth, entries, string length).
pub(super) fn scan(body: &[u8], limits: &JsonLimits) -> Result<Shape, KmsError> {
    if body.len() > limits.max_body {
        return Err(KmsError::validation(format!(
            "the request body has {} bytes; at most {} are allowed",
            body.len(),
            limits.max_body
        )));
    }
    let too_many = || {
        KmsError::validation(format!(
            "the request body has more than {} members and elements",
            limits.max_fields
        ))
    };
    let (mut depth, mut entries, mut i) = (0usize, 0usize, 0usize);
    while i < body.len() {
        match body[i] {
            b'"' => {
                let end = string_end(body, i + 1);
                let n = end - (i + 1);
                if n > limits.max_string {
                    return Err(KmsError::validation(format!(
                        "a string in the request body has {n} bytes; at most {} are allowed",
                        limits.max_string
                    )));
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Err(KmsError::validation(format!(
                        "the request body nests deeper than {} levels",
                        limits.max_depth
                    )));
                }
                entries += 1;
                if entries > limits.max_fields {
                    return Err(too_many());
                }
                i += 1;
            }
            b'}' | b']' => {
                // Unbalanced closers are the parser's to refuse.
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b',' => {
                entries += 1;
                if entries > limits.max_fields {
                    return Err(too_many());
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(Shape { entries })
}

/// The index of the quote that ends the string whose text starts at
/// `from`, skipping escaped characters; `body.len()` if it never ends.
fn string_end(body: &[u8], mut from: usize) -> usize {
    loop {
        match memchr::memchr2(b'"', b'\\', &body[from..]) {
            None => return body.len(),
            Some(k) if body[from + k] == b'"' => return from + k,
            // A backslash escapes the next byte (a `\u` escape's four hex
            // digits hold no quote or backslash).
            Some(k) => from = (from + k + 2).min(body.len()),
        }
    }
}
