//! The one mapping from what goes wrong inside kmsd to what a client sees:
//! an AWS KMS exception name ([`ErrorKind`]) and a message.
//!
//! Two kinds of errors reach clients:
//! - **Client errors** (a disabled key, a bad ciphertext, a full store): the
//!   constructors below, each with AWS's exception name and one message per
//!   cause, so the same condition reads the same whichever operation hits it.
//! - **Internal failures** (the store, the root of trust, the OS): a
//!   [`Failure`], turned into a client error by [`Failure::into_client`], a
//!   total `match`: adding a failure kind without deciding what clients see
//!   does not compile. Internal details are logged here and never sent: the
//!   client gets KMSInternalException with no detail, or
//!   KeyUnavailableException (retry) when the root of trust is down.
//!
//! Encodings (the flatbuffers protocol today, AWS's JSON API later) carry
//! the resulting [`KmsError`] as they must; none of them maps errors itself.

use crate::keystore::StoreError;
use crate::root::RootError;
use kms_proto::{ErrorKind, KmsError};

pub use crate::service::format_key_id;

/// An internal failure, with what was being done when it happened.
#[derive(Debug)]
pub enum Failure {
    /// The keystore failed.
    Store(StoreError),
    /// The root of trust failed.
    Root(RootError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<RootError> for Failure {
    fn from(e: RootError) -> Self {
        Failure::Root(e)
    }
}

impl Failure {
    /// What the client sees of this failure while `context` was being done
    /// (e.g. "reading key"); the details go to the log.
    pub fn into_client(self, context: &str) -> KmsError {
        match self {
            Failure::Root(RootError::Unavailable(detail)) => {
                tracing::warn!("{context}: root of trust unavailable: {detail}");
                unavailable(
                    "the key's material is not available now (the root of trust is down or \
                     recovering); keys already in use keep working; retry",
                )
            }
            Failure::Root(e) => internal(context, e),
            Failure::Store(e) => internal(context, e),
        }
    }
}

/// A store failure while `context` was being done, as the client sees it.
pub fn store(context: &str, e: StoreError) -> KmsError {
    Failure::Store(e).into_client(context)
}

/// A root-of-trust failure while `context` was being done, as the client
/// sees it (KeyUnavailableException while the root is down, else
/// KMSInternalException).
pub fn root(context: &str, e: RootError) -> KmsError {
    Failure::Root(e).into_client(context)
}

/// Logs an internal failure and turns it into what the client may see:
/// KMSInternalException with no detail.
pub fn internal(context: &str, e: impl std::fmt::Display) -> KmsError {
    tracing::error!("{context}: {e}");
    KmsError::new(
        ErrorKind::KmsInternal,
        "internal error; the daemon's log has details",
    )
}

/// KeyUnavailableException: the key's material cannot be reached now.
pub fn unavailable(what: &str) -> KmsError {
    KmsError::new(ErrorKind::KeyUnavailable, what.to_owned())
}

/// A key load that did not finish before its deadline.
pub fn load_timed_out() -> KmsError {
    unavailable("the key could not be loaded in time (the root of trust is slow or down); retry")
}

/// A frame for the HSM executor that did not start before its deadline.
pub fn hsm_timed_out() -> KmsError {
    unavailable("the HSM did not take the request in time (it is slow, down or overloaded); retry")
}

/// Work refused or dropped because the daemon is shutting down.
pub fn stopping() -> KmsError {
    unavailable("the daemon is stopping")
}

/// NotFoundException for a key id.
pub fn key_not_found(id: &[u8; 16]) -> KmsError {
    KmsError::new(
        ErrorKind::NotFound,
        format!("key {} does not exist", format_key_id(id)),
    )
}

/// What ends the message of [`key_deleted`] (and only its).
const DELETED: &str = "was deleted: nothing under it can be decrypted any more";

/// NotFoundException for a key that was deleted (its waiting period
/// ended); every ciphertext under it gets it, forever.
pub fn key_deleted(id: &[u8; 16]) -> KmsError {
    KmsError::new(
        ErrorKind::NotFound,
        format!("key {} {DELETED}", format_key_id(id)),
    )
}

/// Whether `e` is [`key_deleted`]'s (a blob naming a deleted key is
/// answered so; one naming a key that never was is a bad blob).
pub fn is_key_deleted(e: &KmsError) -> bool {
    e.kind == ErrorKind::NotFound && e.message.ends_with(DELETED)
}

/// InvalidCiphertextException, one message for every cause: a tampered
/// blob must not learn which check failed.
pub fn invalid_ciphertext() -> KmsError {
    KmsError::new(
        ErrorKind::InvalidCiphertext,
        "the ciphertext is invalid, or the encryption context does not match",
    )
}

/// IncorrectKeyException: the caller named another key than the blob's.
pub fn incorrect_key(expected: &[u8; 16]) -> KmsError {
    KmsError::new(
        ErrorKind::IncorrectKey,
        format!(
            "the ciphertext was not encrypted under key {}",
            format_key_id(expected)
        ),
    )
}

/// LimitExceededException: the store holds its maximum of keys.
pub fn store_full(max_keys: u64) -> KmsError {
    KmsError::new(
        ErrorKind::LimitExceeded,
        format!("the store already holds the maximum of {max_keys} keys"),
    )
}

/// ThrottlingException for a full request queue. To the caller this is
/// throttling, and AWS's name for it is what SDKs retry with backoff (their
/// retry rules know ThrottlingException, not kmsd's own names); the message
/// says "overloaded" to keep it apart from quota throttling.
pub fn overloaded() -> KmsError {
    KmsError::new(
        ErrorKind::Throttling,
        "kmsd is overloaded (its request queue is full); retry with backoff",
    )
}

/// The error of an item whose answer would not fit the answer frame.
/// ValidationException rather than LimitExceededException: the request as
/// sent can never succeed (a retry of it fails the same way), and SDK retry
/// modes retry LimitExceededException as throttling; the client must send
/// the item again in another frame.
pub fn answer_too_large(max_answer: usize, max_tables: usize) -> KmsError {
    KmsError::validation(format!(
        "the answer to this batch would exceed the largest answer frame ({max_answer} bytes, \
         {max_tables} tables) from this item on; send this item and the ones after it in \
         another frame"
    ))
}

/// UnsupportedOperation: Origin HSM with a root of trust that has no HSM.
pub fn no_hsm_for_hsm_only_keys() -> KmsError {
    KmsError::new(
        ErrorKind::UnsupportedOperation,
        "Origin HSM needs the PKCS#11 root of trust (root.kind = \"pkcs11\"); this daemon runs with the file root",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_failures_never_reach_the_client() {
        let e = Failure::Root(RootError::Invalid("/secret/path: disk on fire".into()))
            .into_client("reading key");
        assert_eq!(e.kind, ErrorKind::KmsInternal);
        assert!(!e.message.contains("secret"), "{e}");
        let e = root("unwrapping", RootError::Unavailable("slot 3 gone".into()));
        assert_eq!(e.kind, ErrorKind::KeyUnavailable);
        assert!(!e.message.contains("slot"), "{e}");
        let e = root("unwrapping", RootError::Unwrap);
        assert_eq!(e.kind, ErrorKind::KmsInternal);
    }
}
