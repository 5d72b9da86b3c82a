//! The root of trust: the one key that wraps every backing key.
//!
//! Backing keys (one per KMS key version) are stored only in wrapped form.
//! Wrapping is AES key wrap with padding, RFC 5649 (KWP, NIST SP 800-38F
//! KWP-AE), so the development [`FileRoot`] and a PKCS#11 HSM produce the
//! same bytes: in an HSM this is `CKM_AES_KEY_WRAP_KWP` (PKCS#11 3.0), which
//! SoftHSM2 and most HSMs also expose as `CKM_AES_KEY_WRAP_PAD`. A wrapped
//! 32-byte backing key is 40 bytes.
//!
//! **Boundary**: the service sees only the [`RootOfTrust`] trait. The file
//! root runs in process; an HSM root (later) must be called only from the
//! HSM executor, never from an I/O thread, because PKCS#11 calls block.

pub mod file;

pub use file::FileRoot;

use crate::crypto::KeyMaterial;

/// Wraps and unwraps backing keys under the root key, which never leaves the
/// root of trust.
///
/// Implementations are shared by every thread of the daemon, hence
/// `Send + Sync + 'static`.
pub trait RootOfTrust: Send + Sync + 'static {
    /// A short name for logs, config and `kmsctl`: `"file"` for the
    /// development root.
    fn kind(&self) -> &'static str;

    /// Wraps `key` with RFC 5649 AES key wrap with padding; the result is
    /// what the keystore persists.
    ///
    /// # Errors
    ///
    /// [`RootError`] when the root cannot be used (an HSM session failed,
    /// for instance). The file root never fails here.
    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError>;

    /// Unwraps a key produced by [`RootOfTrust::wrap`] under the same root
    /// key.
    ///
    /// # Errors
    ///
    /// [`RootError::Unwrap`] when the integrity check fails or the result is
    /// not a 256-bit key: the wrapped bytes are corrupt or belong to another
    /// root key. This is never a client error; it means the keystore and the
    /// root disagree.
    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError>;
}

/// Failures of the root of trust. None of them reaches a client in detail:
/// the service logs them and answers with an internal error.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// An operating-system call failed; `context` says what was being done
    /// and to which path.
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted, e.g. "reading root key /var/lib/kmsd/root.key".
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The wrapped key did not verify under this root key.
    #[error("unwrap failed: the wrapped key is corrupt or was wrapped under another root key")]
    Unwrap,
    /// The root key is stored in a way that others could read or replace,
    /// e.g. a key file readable by group or others.
    #[error("{0}")]
    Insecure(String),
    /// The root key's storage is not what it should be, e.g. a key file that
    /// is not exactly 32 bytes.
    #[error("{0}")]
    Invalid(String),
}

impl RootError {
    /// Builds [`RootError::Io`] for a failed `action` on `path` ("reading
    /// root key /var/lib/kmsd/root.key: permission denied"); a helper for
    /// `map_err`.
    pub(crate) fn io(
        action: &str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> RootError {
        let context = format!("{action} {}", path.display());
        move |source| RootError::Io { context, source }
    }
}
