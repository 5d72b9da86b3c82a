//! The errors of this crate: a policy document kmsd refuses, and a
//! CreateGrant request it refuses.

/// A refused key policy document.
///
/// Every refusal is AWS's `MalformedPolicyDocumentException` (the
/// exception CreateKey and PutKeyPolicy return for a bad `Policy`), with a
/// reason naming the field, e.g. `Statement[1].Condition.StringLike: ...`.
/// The reason quotes at most a short, escaped piece of the document, so it
/// can go back to the client that sent the document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PolicyError {
    reason: String,
}

impl PolicyError {
    /// AWS's exception name for every refusal.
    pub const EXCEPTION: &'static str = "MalformedPolicyDocumentException";

    pub(crate) fn new(reason: impl Into<String>) -> Self {
        PolicyError {
            reason: reason.into(),
        }
    }

    /// `MalformedPolicyDocumentException`, for the wire's error code.
    pub fn exception_name(&self) -> &'static str {
        Self::EXCEPTION
    }

    /// Why the document was refused, naming the field.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A refused CreateGrant request: why, naming the parameter
/// (`GranteePrincipal: "gid:10" is a group ...`), and which AWS exception
/// to answer with.
///
/// The reason quotes at most a short, escaped piece of the request, so it
/// can go back to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct GrantError {
    kind: GrantErrorKind,
    reason: String,
}

/// What was wrong with a CreateGrant request.
///
/// Every kind is answered with AWS's `ValidationException`. For a principal
/// AWS would answer `InvalidArnException` ("a specified ARN ... is not
/// valid", one of CreateGrant's errors in botocore's model); kmsd's
/// principals are not ARNs, so kmsd answers `ValidationException` as for
/// any other malformed parameter, and keeps the kind apart so that the
/// daemon can say which it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantErrorKind {
    /// A parameter breaks its shape in AWS's API model: empty, too long, a
    /// character outside its pattern, a name outside an enum, or AWS's
    /// "Grants must not contain only the CreateGrant operation".
    Malformed,
    /// `GranteePrincipal` or `RetiringPrincipal` is not a principal a
    /// grant can name: not a local principal, a group or everyone, or a
    /// user name that does not resolve.
    InvalidPrincipal,
    /// An operation kmsd's symmetric encryption keys do not support, such
    /// as `Sign` (AWS: "you cannot create a grant for a symmetric
    /// encryption KMS key that allows the Sign operation ... KMS returns a
    /// ValidationError exception").
    UnsupportedOperation,
    /// `Constraints`: both kinds at once, an empty or oversized map, a key
    /// twice (in any case), or a constraint on a grant whose operations
    /// take no encryption context.
    InvalidConstraints,
}

impl GrantErrorKind {
    /// AWS's exception name for this kind: `ValidationException`.
    pub fn exception_name(self) -> &'static str {
        "ValidationException"
    }
}

impl GrantError {
    pub(crate) fn new(kind: GrantErrorKind, reason: impl Into<String>) -> Self {
        GrantError {
            kind,
            reason: reason.into(),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> GrantErrorKind {
        self.kind
    }

    /// AWS's exception name to answer with (`ValidationException`).
    pub fn exception_name(&self) -> &'static str {
        self.kind.exception_name()
    }

    /// Why the request was refused, naming the parameter.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Client text quoted in a reason: at most 64 characters, Debug-escaped, so
/// a hostile document cannot make the error message large or put control
/// characters in a log line.
pub(crate) fn shown(s: &str) -> String {
    let head: String = s.chars().take(64).collect();
    if head.len() < s.len() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}
