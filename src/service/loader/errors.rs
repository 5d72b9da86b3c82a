//! What clients see when a load fails: the one place the loader turns a
//! root of trust's failure or a missed deadline into an AWS exception.
//! (`root_error` is also what the HSM-only key operations use; it moves to
//! the crate's error module when there is one.)

use crate::root::RootError;
use crate::service::internal;
use kms_proto::{ErrorKind, KmsError};

/// KeyUnavailableException with `what`.
pub(super) fn unavailable(what: &str) -> KmsError {
    KmsError::new(ErrorKind::KeyUnavailable, what.to_owned())
}

/// A waiter's deadline passed.
pub(crate) fn timed_out() -> KmsError {
    unavailable("the key could not be loaded in time (the root of trust is slow or down); retry")
}

/// The loader is shutting down.
pub(super) fn stopping() -> KmsError {
    unavailable("the daemon is stopping")
}

/// What a client sees when the root of trust fails while loading (or
/// while using an HSM-only key): KeyUnavailableException (retry) when it
/// is down, else KMSInternalException (logged).
pub fn root_error(e: RootError) -> KmsError {
    match e {
        RootError::Unavailable(detail) => {
            tracing::warn!("root of trust unavailable: {detail}");
            unavailable(
                "the key's material is not available now (the root of trust is down or \
                 recovering); keys already in use keep working; retry",
            )
        }
        other => internal("unwrapping backing key", other),
    }
}
