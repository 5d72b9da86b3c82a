//! The canonical request and the string to sign, built from the request as
//! the server received it (the wire form of its path and query), written
//! into a [`Sink`]: a SHA-256 state on the verify path (no allocation), a
//! byte buffer in the tests that compare with AWS's published canonical
//! requests.
//!
//! The rules (AWS's "Create a signed AWS API request", and what botocore's
//! `SigV4Auth.canonical_request` does; docs/sigv4.md has the sources):
//!
//! - the canonical URI is the path with its dot segments and empty segments
//!   removed (non-S3 services normalize), then URI-encoded once more: the
//!   client encoded each segment for the wire and encodes it again for the
//!   canonical request, so the server encodes what it received (`%20`
//!   becomes `%2520`);
//! - the canonical query string has each name and value decoded and
//!   re-encoded with the strict rule (only `A-Z a-z 0-9 - . _ ~` stay),
//!   sorted by name then value, a missing `=` meaning an empty value;
//! - each signed header is its lowercase name, `:`, its values trimmed,
//!   with runs of spaces and tabs made one space, several values joined by
//!   `,` in the order they came.

use sha2::{Digest, Sha256};

/// Where canonical bytes go.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// RFC 3986's unreserved characters: the only bytes SigV4 leaves as they
/// are.
#[inline]
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Writes `bytes` URI-encoded the SigV4 way: unreserved bytes as they are,
/// `/` too when `keep_slash`, every other byte `%XX` (uppercase hex).
fn encode(out: &mut impl Sink, bytes: &[u8], keep_slash: bool) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if unreserved(b) || (keep_slash && b == b'/') {
            continue;
        }
        out.put(&bytes[start..i]);
        out.put(&[
            b'%',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 15)],
        ]);
        start = i + 1;
    }
    out.put(&bytes[start..]);
}

/// Lowercase hex of `bytes` (the payload hash, the canonical request's
/// hash and the signature are written this way).
pub(super) fn hex_lower<const N: usize, const M: usize>(bytes: &[u8; N]) -> [u8; M] {
    debug_assert_eq!(M, 2 * N);
    let mut out = [0u8; M];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(b & 15)];
    }
    out
}

/// The canonical URI of a wire path: normalized, then encoded (keeping the
/// slashes).
pub(super) fn uri(out: &mut impl Sink, path: &str) {
    if path.is_empty() {
        out.put(b"/");
        return;
    }
    // The common case (KMS: "/"), and any path with nothing to normalize.
    if path.starts_with('/') && !path.contains("//") && !path.contains("/.") {
        encode(out, path.as_bytes(), true);
        return;
    }
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    // "/a/" and "/a/." and "/a/b/.." all end in a directory.
    let trailing = ["/", "/.", "/.."].iter().any(|end| path.ends_with(end));
    out.put(b"/");
    for (i, segment) in kept.iter().enumerate() {
        if i > 0 {
            out.put(b"/");
        }
        encode(out, segment.as_bytes(), false);
    }
    if trailing && !kept.is_empty() {
        out.put(b"/");
    }
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits stays a
/// `%` (and is encoded as `%25` again).
fn percent_decode(s: &str) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical query string of a wire query (`None`: no `?`).
pub(super) fn query(out: &mut impl Sink, query: Option<&str>) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let mut n = Vec::new();
            encode(&mut n, &percent_decode(name), false);
            let mut v = Vec::new();
            encode(&mut v, &percent_decode(value), false);
            (n, v)
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(name);
        out.put(b"=");
        out.put(value);
    }
}

/// One header value trimmed, its runs of spaces and tabs made one space.
pub(super) fn header_value(out: &mut impl Sink, value: &[u8]) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut first = true;
    for word in value.split(blank).filter(|w| !w.is_empty()) {
        if !first {
            out.put(b" ");
        }
        out.put(word);
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn paths_are_normalized_then_encoded_again() {
        const UNRESERVED: &str =
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for (path, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/b/.", "/a/b/"),
            ("/../a", "/a"),
            (UNRESERVED, UNRESERVED),
            // What the client sent already encoded is encoded again.
            ("/example%20space/", "/example%2520space/"),
            ("/%E1%88%B4", "/%25E1%2588%25B4"),
            ("/a:b@c", "/a%3Ab%40c"),
            // AWS's suite gives these paths unencoded (as a signer holds
            // them before sending): one encoding.
            ("/example space/", "/example%20space/"),
            ("/\u{1234}", "/%E1%88%B4"),
        ] {
            assert_eq!(run(|o| uri(o, path)), canonical, "{path:?}");
        }
    }

    #[test]
    fn queries_are_decoded_reencoded_and_sorted() {
        for (q, canonical) in [
            (None, ""),
            (Some(""), ""),
            (
                Some("Param2=value2&Param1=value1"),
                "Param1=value1&Param2=value2",
            ),
            (Some("Param1"), "Param1="),
            (Some("b=2&&a=1"), "a=1&b=2"),
            (
                Some("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
                "%E1%88%B4=Value1&Param=Value2&Param-3=Value3",
            ),
            (Some("a=2&a=1"), "a=1&a=2"),
            (
                Some("k=a%20b&k2=a+b&k3=%zz&k4=%4"),
                "k=a%20b&k2=a%2Bb&k3=%25zz&k4=%254",
            ),
            (Some("%e1%88%b4=x"), "%E1%88%B4=x"),
        ] {
            assert_eq!(run(|o| query(o, q)), canonical, "{q:?}");
        }
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        for (v, canonical) in [
            (&b" value1"[..], "value1"),
            (b"\"a   b   c\"", "\"a b c\""),
            (b"\t a \t\t b \t", "a b"),
            (b"", ""),
            (b"   ", ""),
        ] {
            assert_eq!(run(|o| header_value(o, v)), canonical);
        }
    }

    #[test]
    fn hex() {
        let h: [u8; 4] = hex_lower(&[0xab, 0x09]);
        assert_eq!(&h, b"ab09");
    }
}
