//! AWS KMS's JSON encoding (the AWS JSON 1.1 protocol) of kmsd's typed
//! requests and answers: the HTTP API's counterpart of the flatbuffers
//! codec in `kms_proto::codec`. Pure: bytes in, typed values out, and
//! back; no I/O, no service.
//!
//! - [`JsonRequest::decode`]: an operation name (what follows
//!   `TrentService.` in `X-Amz-Target`) and a body become the typed
//!   [`kms_proto::Operation`] the service runs, held in owned storage.
//!   The body is first scanned against [`JsonLimits`] (`scan`), then
//!   parsed with serde into one input type per operation, with AWS's
//!   field names, then checked as the flatbuffers decoder checks
//!   (`kms_proto::codec::check`, the same messages) into the typed request
//!   (`request`).
//! - [`encode_output`]: an [`kms_proto::Output`] becomes AWS's output
//!   shape, written by hand into the caller's buffer (`response`).
//! - [`encode_error`], [`status_of`], [`JsonError`]: an error becomes
//!   `{"__type": ..., "message": ...}` and the HTTP status AWS's model
//!   gives its exception (`error`).
//!
//! The shapes are AWS's service model's (docs/aws-api.md, "Encoding", has
//! the mapping, the fields kmsd does not support and its own operations).
//!
//! Secrets: plaintext decoded from a body is held in buffers zeroed on drop
//! and never shown by `Debug`; the bodies themselves (a request's, and an
//! answer `encode_output` writes) are the caller's buffers to zero.
// The HTTP listener wires this codec in; until it does, a build without
// `internals` sees only its tests use it (its re-exports included).
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

mod error;
mod request;
mod response;
mod scan;
#[cfg(test)]
mod tests;

pub use error::{encode_error, encode_json_error, exception, status_of, JsonError};
pub use request::JsonRequest;
pub use response::{encode_output, output_len_bound};

/// The bounds a request body is checked against before it is parsed.
/// Each default fits the largest valid request of any operation with room
/// to spare, and nothing much larger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonLimits {
    /// Largest body in bytes. Default 256 KiB: the largest valid bodies
    /// are a 32 KiB key policy escaped into a JSON string (at most 96 KiB,
    /// see `max_string`) and VerifyAuditSeals with 1,000 seals (about
    /// 130 KB).
    pub max_body: usize,
    /// Deepest nesting of objects and arrays, the body's own object being
    /// level 1. Default 4: the deepest AWS KMS input is 3 levels
    /// (CreateGrant's `Constraints.EncryptionContextSubset`, a tag in
    /// `Tags`), and one more is left for fields AWS may add (unknown fields
    /// are ignored, but they are scanned).
    pub max_depth: usize,
    /// Most members and elements in the whole body, counted as containers
    /// plus commas. Default 8,192: a VerifyAuditSeals request with 1,000
    /// seals counts 4,001, CreateGrant at most about 60.
    pub max_fields: usize,
    /// Longest string in bytes as written in the body (escapes included).
    /// Default 96 KiB: the longest valid string is a key policy of 32 KiB,
    /// whose JSON escaping can at most triple it (a two-byte character
    /// written `\u00e9`).
    pub max_string: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_body: 256 * 1024,
            max_depth: 4,
            max_fields: 8192,
            max_string: 96 * 1024,
        }
    }
}
