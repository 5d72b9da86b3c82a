//! Keys as the data path uses them: a key's record with its unwrapped
//! backing keys ([`LoadedKey`]), and what the service and the key loader
//! share to make them ([`Core`]).

use super::{format_key_id, internal, loader, Backing};
use crate::crypto::XaesKey;
use crate::keystore::{KeyRecord, Keystore};
use crate::root::RootOfTrust;
use kms_proto::{ErrorKind, KeyState, KmsError};
use parking_lot::Mutex;
use std::sync::Arc;

/// A key with its unwrapped backing keys, ready for crypto.
pub struct LoadedKey {
    /// The stored record, as of loading.
    pub record: KeyRecord,
    /// Backing keys by version; index 0 is version 1.
    versions: Vec<Backing>,
    /// When it was unwrapped (the cache's TTL counts from here).
    pub loaded_at: std::time::Instant,
}

impl LoadedKey {
    /// A key freshly made or unwrapped, with every version (index 0 is
    /// version 1).
    pub(crate) fn new(record: KeyRecord, versions: Vec<Backing>) -> LoadedKey {
        LoadedKey {
            record,
            versions,
            loaded_at: std::time::Instant::now(),
        }
    }

    /// The backing key of `version`, if the key has it.
    pub fn version(&self, version: u32) -> Option<&Backing> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions.get(index)
    }

    /// The key's id.
    pub fn id(&self) -> &[u8; 16] {
        &self.record.key_id
    }

    /// Where the key's backing keys live.
    pub fn origin(&self) -> kms_proto::Origin {
        self.record.origin
    }

    /// The version and backing key new ciphertexts use.
    pub fn current(&self) -> (u32, &Backing) {
        let v = self.record.current_version;
        (v, self.version(v).expect("current version is loaded"))
    }

    /// Fails unless the key may be used for cryptographic operations.
    pub fn check_usable(&self) -> Result<(), KmsError> {
        match self.record.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KmsError::new(
                ErrorKind::Disabled,
                format!("{} is disabled", format_key_id(&self.record.key_id)),
            )),
            other => Err(KmsError::new(
                ErrorKind::KmsInvalidState,
                format!("{} is {}", format_key_id(&self.record.key_id), other.name()),
            )),
        }
    }
}

/// What the service and its loader threads share.
pub(crate) struct Core {
    pub(crate) store: Mutex<Keystore>,
    pub(crate) root: Arc<dyn RootOfTrust>,
    pub(crate) cache: super::cache::KeyCache,
    /// Encryption counters of HSM-only key versions (outside the cache, so
    /// that they survive reloads).
    pub(crate) usage: super::backing::UsageCounters,
}

impl Core {
    /// Unwraps every version of a stored key (HSM-only versions stay in
    /// the HSM: `usage` holds their reserved encryption counts).
    pub(crate) fn unwrap_key(
        &self,
        record: KeyRecord,
        wrapped: &[crate::keystore::WrappedVersion],
        usage: &[u64],
    ) -> Result<LoadedKey, KmsError> {
        let id = record.key_id;
        let mut versions = Vec::with_capacity(wrapped.len());
        for (i, w) in wrapped.iter().enumerate() {
            if w.version as usize != i + 1 {
                return Err(internal(
                    "loading key",
                    format!("{}: versions are not contiguous", format_key_id(&id)),
                ));
            }
            if record.origin == kms_proto::Origin::Hsm {
                let reserved = usage.get(i).copied().unwrap_or(0);
                versions.push(Backing::Hsm(self.usage.version(&id, w.version, reserved)));
                continue;
            }
            let material = self.root.unwrap(&w.wrapped).map_err(loader::root_error)?;
            versions.push(Backing::Soft(XaesKey::new(&material)));
        }
        if record.current_version == 0 || record.current_version as usize > versions.len() {
            return Err(internal(
                "loading key",
                format!("{}: current version is missing", format_key_id(&id)),
            ));
        }
        Ok(LoadedKey::new(record, versions))
    }
}

/// A key a request needs before it can run: the key, and the version its
/// ciphertext names (`None`: whatever version is current). Admission lists
/// them; the key loader loads them; the cache answers whether they are
/// there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRef {
    /// The key's id.
    pub id: [u8; 16],
    /// The version a ciphertext names, or `None` for the current one.
    pub version: Option<u32>,
}

/// A key a request needs, and the cache's entry for it when admission
/// looked (so that running inline looks each key up once per frame, not
/// once per item).
#[derive(Clone)]
pub struct Needed {
    /// The key (and version) named.
    pub key: KeyRef,
    /// Its cached entry at admission, if any.
    pub cached: Option<Arc<LoadedKey>>,
}
