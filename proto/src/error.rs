//! Errors as the client sees them: an AWS KMS exception name and a message.

use std::fmt;

/// The AWS KMS exception names kmsd answers with. The wire carries the name as
/// a string; [`ErrorKind::name`] and [`ErrorKind::from_name`] are the one
/// mapping between the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The key (or other resource) does not exist.
    NotFound,
    /// The key is disabled.
    Disabled,
    /// The key is in a state in which the operation is not allowed.
    KmsInvalidState,
    /// The ciphertext blob is malformed, tampered with, or the encryption
    /// context does not match.
    InvalidCiphertext,
    /// Decrypt was given a key id that is not the blob's key.
    IncorrectKey,
    /// The caller may not do this.
    AccessDenied,
    /// Too many requests: the daemon is overloaded (a request queue is
    /// full), or a rate quota was exceeded; retry later with backoff. AWS's
    /// name for the condition, which SDK retry logic knows.
    Throttling,
    /// A resource limit was reached (e.g. the number of keys).
    LimitExceeded,
    /// A parameter is out of range or malformed.
    Validation,
    /// The frame could not be decoded (not a valid flatbuffer).
    Serialization,
    /// The operation is unknown to this daemon.
    UnsupportedOperation,
    /// The pagination marker is not one this daemon issued.
    InvalidMarker,
    /// Not sent by kmsd any more (earlier versions sent it for a full
    /// queue, now [`ErrorKind::Throttling`]); kept so that clients still
    /// recognise it, and retry.
    ServiceUnavailable,
    /// The key's material could not be reached in time (the HSM is down or
    /// slow); retry later. Keys already cached keep working.
    KeyUnavailable,
    /// Something went wrong inside the daemon; details are in its log.
    KmsInternal,
    /// The resource already exists (CreateAlias of an alias name in use).
    AlreadyExists,
    /// The alias name is malformed, reserved (`alias/aws/`), or names an
    /// alias where a key is required.
    InvalidAliasName,
    /// A tag could not be created, changed or removed (AWS TagException).
    Tag,
    /// The import token is not one this daemon issued for this key, or was
    /// tampered with.
    InvalidImportToken,
    /// The import token (and its wrapping key) is past its validity.
    ExpiredImportToken,
    /// The imported material is not the material this key had before.
    IncorrectKeyMaterial,
    /// The request conflicts with one in progress (e.g. a rotation).
    Conflict,
    /// The key policy is not valid JSON or not a policy kmsd accepts
    /// (CreateKey, PutKeyPolicy).
    MalformedPolicyDocument,
    /// The request had DryRun set and would have succeeded: nothing was
    /// done (AWS's answer to a successful dry run).
    DryRunOperation,
    /// A grant token is not one this daemon issued, or names no grant.
    InvalidGrantToken,
    /// The grant id is not one of the key's grants.
    InvalidGrantId,
    /// A name this client does not know (a newer daemon).
    Unrecognized,
}

impl ErrorKind {
    /// Every kind except `Unrecognized`, for tests and documentation.
    pub const ALL: [ErrorKind; 26] = [
        ErrorKind::NotFound,
        ErrorKind::Disabled,
        ErrorKind::KmsInvalidState,
        ErrorKind::InvalidCiphertext,
        ErrorKind::IncorrectKey,
        ErrorKind::AccessDenied,
        ErrorKind::Throttling,
        ErrorKind::LimitExceeded,
        ErrorKind::Validation,
        ErrorKind::Serialization,
        ErrorKind::UnsupportedOperation,
        ErrorKind::InvalidMarker,
        ErrorKind::ServiceUnavailable,
        ErrorKind::KeyUnavailable,
        ErrorKind::KmsInternal,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidAliasName,
        ErrorKind::Tag,
        ErrorKind::InvalidImportToken,
        ErrorKind::ExpiredImportToken,
        ErrorKind::IncorrectKeyMaterial,
        ErrorKind::Conflict,
        ErrorKind::MalformedPolicyDocument,
        ErrorKind::DryRunOperation,
        ErrorKind::InvalidGrantToken,
        ErrorKind::InvalidGrantId,
    ];

    /// The exception name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFoundException",
            ErrorKind::Disabled => "DisabledException",
            ErrorKind::KmsInvalidState => "KMSInvalidStateException",
            ErrorKind::InvalidCiphertext => "InvalidCiphertextException",
            ErrorKind::IncorrectKey => "IncorrectKeyException",
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::LimitExceeded => "LimitExceededException",
            ErrorKind::Validation => "ValidationException",
            ErrorKind::Serialization => "SerializationException",
            ErrorKind::UnsupportedOperation => "UnsupportedOperationException",
            ErrorKind::InvalidMarker => "InvalidMarkerException",
            ErrorKind::ServiceUnavailable => "ServiceUnavailableException",
            ErrorKind::KeyUnavailable => "KeyUnavailableException",
            ErrorKind::KmsInternal => "KMSInternalException",
            ErrorKind::AlreadyExists => "AlreadyExistsException",
            ErrorKind::InvalidAliasName => "InvalidAliasNameException",
            ErrorKind::Tag => "TagException",
            ErrorKind::InvalidImportToken => "InvalidImportTokenException",
            ErrorKind::ExpiredImportToken => "ExpiredImportTokenException",
            ErrorKind::IncorrectKeyMaterial => "IncorrectKeyMaterialException",
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::MalformedPolicyDocument => "MalformedPolicyDocumentException",
            ErrorKind::DryRunOperation => "DryRunOperationException",
            ErrorKind::InvalidGrantToken => "InvalidGrantTokenException",
            ErrorKind::InvalidGrantId => "InvalidGrantIdException",
            ErrorKind::Unrecognized => "UnrecognizedException",
        }
    }

    /// The kind for a wire name; unknown names map to `Unrecognized`.
    pub fn from_name(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .unwrap_or(ErrorKind::Unrecognized)
    }

    /// Whether a client may retry the same request later and expect success.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttling
                | ErrorKind::ServiceUnavailable
                | ErrorKind::KeyUnavailable
                | ErrorKind::KmsInternal
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error answer: the exception kind and a message for people. Messages
/// never carry key material or plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsError {
    /// The exception.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl KmsError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        KmsError {
            kind,
            message: message.into(),
        }
    }

    /// Shorthand for a ValidationException.
    pub fn validation(message: impl Into<String>) -> Self {
        KmsError::new(ErrorKind::Validation, message)
    }

    /// The error for a wire name and message; an unknown name keeps its text
    /// in the message.
    pub fn from_wire(name: &str, message: &str) -> Self {
        let kind = ErrorKind::from_name(name);
        if kind == ErrorKind::Unrecognized {
            KmsError::new(kind, format!("{name}: {message}"))
        } else {
            KmsError::new(kind, message)
        }
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for KmsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), k);
        }
        assert_eq!(ErrorKind::from_name("Nope"), ErrorKind::Unrecognized);
    }
}
