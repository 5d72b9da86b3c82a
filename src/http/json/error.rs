//! Errors in AWS JSON: the body `{"__type": "<Exception>", "message":
//! "..."}` and the HTTP status AWS's service model gives the exception
//! (Smithy `httpError`; docs/aws-api.md has the table).

use super::response::json_string;
use kms_proto::{ErrorKind, KmsError};
use std::fmt;

/// Why a request could not become a typed request.
///
/// Most refusals are an exception the service itself could answer
/// ([`JsonError::Kms`]: SerializationException for a body that is not the
/// operation's JSON, ValidationException for a field out of its bounds,
/// UnsupportedOperationException for an AWS parameter kmsd does not
/// offer). One is the protocol's own and has no [`ErrorKind`]: an
/// operation name kmsd does not serve, answered
/// `UnknownOperationException` with status 400, as AWS's services answer
/// an unknown `X-Amz-Target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// An AWS KMS exception.
    Kms(KmsError),
    /// The operation is not one kmsd serves (UnknownOperationException);
    /// the message says which, and whether AWS KMS has it.
    UnknownOperation(String),
}

impl JsonError {
    /// The exception's name, as `__type` carries it.
    pub fn name(&self) -> &'static str {
        match self {
            JsonError::Kms(e) => e.kind.name(),
            JsonError::UnknownOperation(_) => "UnknownOperationException",
        }
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        match self {
            JsonError::Kms(e) => &e.message,
            JsonError::UnknownOperation(m) => m,
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            JsonError::Kms(e) => status_of(e.kind),
            JsonError::UnknownOperation(_) => 400,
        }
    }
}

impl From<KmsError> for JsonError {
    fn from(e: KmsError) -> Self {
        JsonError::Kms(e)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl std::error::Error for JsonError {}

/// The HTTP status AWS answers `kind` with: the KMS exceptions' `httpError`
/// in AWS's Smithy model of KMS (smithy-lang/smithy-rs
/// `aws/sdk/aws-models/kms.json`), and for the service-wide ones kmsd
/// uses, AWS's common errors (ThrottlingException and
/// AccessDeniedException 400, ServiceUnavailable 503). SDKs retry 5xx
/// answers and ThrottlingException; the rest are final.
pub fn status_of(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::Disabled
        | ErrorKind::KmsInvalidState
        | ErrorKind::AlreadyExists
        | ErrorKind::Conflict => 409,
        ErrorKind::DryRunOperation => 412,
        ErrorKind::KmsInternal | ErrorKind::KeyUnavailable => 500,
        // AWS's common ServiceUnavailable (the daemon's answer while its
        // audit log refuses): retried by SDKs, as it should be.
        ErrorKind::ServiceUnavailable => 503,
        // A name only a client makes (one it does not know): never the
        // daemon's answer; if it were, it would be the daemon's fault.
        ErrorKind::Unrecognized => 500,
        ErrorKind::InvalidCiphertext
        | ErrorKind::IncorrectKey
        | ErrorKind::AccessDenied
        | ErrorKind::Throttling
        | ErrorKind::LimitExceeded
        | ErrorKind::Validation
        | ErrorKind::Serialization
        | ErrorKind::UnsupportedOperation
        | ErrorKind::InvalidMarker
        | ErrorKind::InvalidAliasName
        | ErrorKind::Tag
        | ErrorKind::InvalidImportToken
        | ErrorKind::ExpiredImportToken
        | ErrorKind::IncorrectKeyMaterial
        | ErrorKind::MalformedPolicyDocument
        | ErrorKind::InvalidGrantToken
        | ErrorKind::InvalidGrantId => 400,
    }
}

/// Appends the body of `error`'s answer and returns its HTTP status.
pub fn encode_error(error: &KmsError, out: &mut Vec<u8>) -> u16 {
    exception(error.kind.name(), &error.message, out);
    status_of(error.kind)
}

/// Appends the body of a decoding error's answer and returns its HTTP
/// status.
pub fn encode_json_error(error: &JsonError, out: &mut Vec<u8>) -> u16 {
    exception(error.name(), error.message(), out);
    error.status()
}

/// `{"__type":"<name>","message":"<message>"}`: the shape name alone in
/// `__type`, as the protocol asks of servers (clients also accept a
/// `namespace#Name` form).
pub fn exception(name: &str, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"__type\":");
    json_string(out, name);
    out.extend_from_slice(b",\"message\":");
    json_string(out, message);
    out.push(b'}');
}

/// A serde_json error as a SerializationException. Its message keeps the
/// parser's words and position, except that the value the client sent,
/// which serde quotes in "invalid type" and "invalid value" messages, is
/// left out: only what was expected is said.
pub(super) fn serialization(operation: &str, e: &serde_json::Error) -> KmsError {
    let text = e.to_string();
    // serde_json ends every message with " at line L column C".
    let core = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(c, _)| c);
    let (what, detail) = match e.classify() {
        serde_json::error::Category::Data => {
            let detail =
                if core.starts_with("invalid type: ") || core.starts_with("invalid value: ") {
                    // What serde expected comes from this module's types, never
                    // from the body; what it found may be the client's text.
                    core.rsplit_once(", expected ").map_or_else(
                        || "a value of the wrong type".to_owned(),
                        |(_, e)| format!("expected {e}"),
                    )
                } else {
                    core.to_owned()
                };
            (format!("the body is not {operation}'s input"), detail)
        }
        _ => ("the body is not valid JSON".to_owned(), core.to_owned()),
    };
    KmsError::new(
        ErrorKind::Serialization,
        format!(
            "{what}: {detail} (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}
