//! The one error of this crate: a policy document kmsd refuses.

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
