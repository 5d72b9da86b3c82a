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
//! root runs in process; the PKCS#11 root ([`Pkcs11Root`], over
//! [`crate::hsm`]) must be called only from workers and cache loaders, never
//! from an I/O thread, because PKCS#11 calls block. [`open`] picks one by
//! `root.kind`.

#[cfg(test)]
pub(crate) mod fakes;
pub mod file;
mod import_file;
pub mod pkcs11;

pub use file::FileRoot;
pub use pkcs11::Pkcs11Root;

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{Config, RootKind};
use crate::crypto::KeyMaterial;

/// Opens the root of trust that `config.root.kind` names: the file root in
/// `data_dir`, or the PKCS#11 token of `[root.pkcs11]`.
///
/// # Errors
///
/// One line saying what is wrong and what to do (e.g. "no root key labelled
/// \"kmsd-root\" in PKCS#11 token \"kmsd\": run `kmsd hsm init --config
/// FILE` to create it").
pub fn open(config: &Config) -> anyhow::Result<Arc<dyn RootOfTrust>> {
    match config.root.kind {
        RootKind::File => Ok(Arc::new(
            FileRoot::open_or_create(&config.data_dir).context("opening the file root of trust")?,
        )),
        RootKind::Pkcs11 => {
            let pkcs11 = config.root.pkcs11.as_ref().ok_or_else(|| {
                anyhow::anyhow!("root.kind = \"pkcs11\" needs a [root.pkcs11] section")
            })?;
            let root = Pkcs11Root::open(pkcs11)
                .map_err(|e| anyhow::anyhow!("opening the PKCS#11 root of trust: {e}"))?;
            tracing::info!(
                module = %pkcs11.module.display(),
                token = %pkcs11.token_label,
                key = %pkcs11.key_label,
                pool_size = pkcs11.pool_size,
                kwp_mechanism = format_args!("{:#x}", pkcs11.kwp_mechanism),
                session_copy = pkcs11.session_copy,
                "PKCS#11 root of trust ready"
            );
            Ok(Arc::new(root))
        }
    }
}

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

    /// The root's store of HSM-only keys, if it has one (the PKCS#11 root
    /// does; the file root does not, and CreateKey with origin HSM is then
    /// refused).
    fn hsm_only_keys(&self) -> Option<&dyn HsmOnlyKeys> {
        None
    }

    /// The root's RSA wrapping keys for imports of key material
    /// (GetParametersForImport, ImportKeyMaterial). Both roots have them;
    /// `None` only for roots that cannot hold private keys (test fakes).
    fn import_wrapping(&self) -> Option<&dyn ImportWrapping> {
        None
    }

    /// Whether the root of trust can be reached now, as far as the daemon
    /// knows without asking it: one atomic load, cheap enough for every
    /// DescribeKey. False once a call has found the HSM down, until it
    /// recovers. HSM-only keys show KeyState Unavailable while it is false.
    /// The file root is always available.
    fn is_available(&self) -> bool {
        true
    }

    /// The HSM's health and counters, for metrics: `None` for roots
    /// without a device (the file root).
    fn health(&self) -> Option<RootHealth> {
        None
    }
}

/// A device root's health, for metrics.
#[derive(Clone, Copy, Debug)]
pub struct RootHealth {
    /// Whether calls reach the device now (see [`RootOfTrust::is_available`]).
    pub up: bool,
    /// What the session pool did so far.
    pub stats: crate::hsm::HsmStats,
}

/// The RSA key sizes of import wrapping keys (AWS's `WrappingKeySpec`,
/// without SM2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrappingKeySpec {
    /// `RSA_2048`.
    Rsa2048,
    /// `RSA_3072`.
    Rsa3072,
    /// `RSA_4096`.
    Rsa4096,
}

impl WrappingKeySpec {
    /// The modulus size in bits.
    pub fn bits(self) -> u32 {
        match self {
            WrappingKeySpec::Rsa2048 => 2048,
            WrappingKeySpec::Rsa3072 => 3072,
            WrappingKeySpec::Rsa4096 => 4096,
        }
    }

    /// The modulus size in bytes: the length of one RSA ciphertext.
    pub fn modulus_len(self) -> usize {
        self.bits() as usize / 8
    }

    /// AWS's name (`RSA_2048`...).
    pub fn name(self) -> &'static str {
        match self {
            WrappingKeySpec::Rsa2048 => "RSA_2048",
            WrappingKeySpec::Rsa3072 => "RSA_3072",
            WrappingKeySpec::Rsa4096 => "RSA_4096",
        }
    }
}

/// A wrapping key pair just generated: what GetParametersForImport hands
/// out and what the keystore keeps.
#[derive(Clone, Debug)]
pub struct WrappingKeyPair {
    /// The public key, DER `SubjectPublicKeyInfo` (AWS's `PublicKey`).
    pub public_key: Vec<u8>,
    /// What the root needs to find or rebuild the private key: opaque,
    /// safe to store (the file root's private key encrypted under the root
    /// key, or the PKCS#11 object's id).
    pub handle: Vec<u8>,
}

/// RSA key pairs whose private keys only the root of trust can use, for
/// imports of key material. Each is named by a 20-byte id (the KMS key id
/// and a per-key counter, u32 big-endian) and decrypts RSAES-OAEP with
/// SHA-256 and MGF1-SHA-256 in constant time. Calls block (key generation
/// takes up to seconds): control plane only, never an I/O thread.
pub trait ImportWrapping: Send + Sync {
    /// Generates a key pair of `spec` named `id`, replacing any the root
    /// holds under that id (a generation interrupted after the key was
    /// made, retried).
    fn generate(&self, id: &[u8; 20], spec: WrappingKeySpec) -> Result<WrappingKeyPair, RootError>;

    /// RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) decryption of
    /// `ciphertext` with the private key of pair `id` (`handle` as
    /// [`ImportWrapping::generate`] returned it). `Ok(None)` when the
    /// ciphertext does not decrypt; every such case looks the same, in its
    /// answer and its timing.
    ///
    /// # Errors
    ///
    /// [`RootError::Unavailable`] when the root cannot be reached,
    /// [`RootError::Invalid`] when `handle` is not a key pair of this root
    /// named `id`.
    fn decrypt(
        &self,
        id: &[u8; 20],
        handle: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RootError>;

    /// Destroys pair `id`, if the root holds anything for it (the file
    /// root holds nothing: the handle is the key, and deleting it from the
    /// store destroys it). Returns whether something was destroyed.
    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError>;

    /// The ids of the pairs the root itself holds (PKCS#11 token objects,
    /// any kmsd's that shares the token); empty for the file root. For
    /// inspection and tests: reconciliation destroys only the pairs its
    /// store recorded.
    fn held(&self) -> Result<Vec<[u8; 20]>, RootError>;
}

/// Keys generated inside the root of trust that never leave it (HSM-only
/// keys). Each is named by a 20-byte id: the KMS key id and the key
/// version (u32, big-endian). Calls block: workers only, never an I/O
/// thread.
pub trait HsmOnlyKeys: Send + Sync {
    /// Generates a new AES-256 key named `id`, usable only for encryption
    /// and decryption, never extractable.
    fn generate(&self, id: &[u8; 20]) -> Result<(), RootError>;

    /// Destroys the key named `id` if there is one; returns whether there
    /// was. For keys the store does not hold: a CreateKey that failed after
    /// the generation, or one interrupted by a crash (start-up
    /// reconciliation).
    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError>;

    /// AES-256-GCM encryption with the key `id`: returns ciphertext followed
    /// by the 16-byte tag.
    fn seal(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RootError>;

    /// AES-256-GCM decryption of ciphertext-and-tag: `Ok(None)` when the tag
    /// does not verify (no plaintext is returned then).
    fn open(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RootError>;
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
    /// The root of trust cannot be reached now (an HSM that is down, busy or
    /// recovering); the operation may succeed later. Clients see
    /// KeyUnavailableException.
    #[error("root of trust unavailable: {0}")]
    Unavailable(String),
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
