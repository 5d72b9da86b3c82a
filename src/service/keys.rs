//! Keys as the data path uses them: a key's metadata and its unwrapped
//! backing keys ([`LoadedKey`]), the reference a request holds to a key and
//! version ([`KeyRef`]), and what the service and the key loader share to
//! make them (`ServiceState`).
//!
//! Metadata ([`KeyMeta`]: state, current version, origin; later aliases and
//! a policy revision) and material (one slot per version) are apart because
//! they change for different reasons: the control plane changes metadata
//! and then invalidates the cached key ([`Service::invalidate`]), while
//! material only ever grows: a key is loaded with its current version
//! unwrapped, and an older version is unwrapped the first time a
//! ciphertext names it, into its slot of the same cached key (a
//! `OnceLock`), so a key with many versions costs one unwrap to load and the
//! hot path never re-inserts anything.

use super::{format_key_id, internal, Backing, Service};
use crate::crypto::XaesKey;
use crate::keystore::{KeyRecord, Keystore, StoredKey};
use crate::root::RootOfTrust;
use kms_proto::KmsError;
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};

/// What a cached key is, apart from its material: the stored record as of
/// loading (state, current version, origin). Aliases and a policy revision
/// join it when they exist.
pub struct KeyMeta {
    /// The stored record, as of loading.
    pub record: KeyRecord,
    /// Its policy, grants and aliases, compiled, as of loading.
    pub access: super::access::KeyAccess,
}

/// A key with its metadata and the backing keys unwrapped so far, ready for
/// crypto.
pub struct LoadedKey {
    /// What the key is (state, current version, origin).
    pub meta: KeyMeta,
    /// Backing keys by version (index 0 is version 1), each set once: the
    /// current version at loading, older ones when a ciphertext first
    /// names them.
    versions: Box<[OnceLock<Backing>]>,
    /// When it was loaded (the cache's TTL counts from here).
    pub loaded_at: std::time::Instant,
    /// The key's cache revision when this entry was cached
    /// ([`KeyCache::insert`](super::cache::KeyCache::insert)); `u64::MAX`
    /// until then. A request holding the entry since admission or a
    /// prefetch uses it only while the revision is unchanged
    /// ([`Service::is_fresh`]): a change acknowledged since makes it load
    /// the key again.
    pub(crate) revision: std::sync::atomic::AtomicU64,
    /// The key's own quota bucket (`quotas.per_key_rate`): a new entry
    /// (after a change or an eviction) starts with a full burst.
    pub(crate) quota: std::sync::atomic::AtomicU64,
}

/// Why [`LoadedKey::version`] has no backing key to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionMissing {
    /// The key has the version but it is not unwrapped yet: load the
    /// [`KeyRef`] with this version (off the I/O thread).
    NotLoaded,
    /// The key has no such version (a forged or mixed-up ciphertext:
    /// InvalidCiphertextException).
    NoSuchVersion,
}

impl LoadedKey {
    /// A key of `record` with `version_count` versions, none unwrapped yet
    /// (fill them with [`LoadedKey::fill`] before it is shared).
    pub(crate) fn new(
        record: KeyRecord,
        version_count: u32,
        access: super::access::KeyAccess,
    ) -> LoadedKey {
        LoadedKey {
            meta: KeyMeta { record, access },
            versions: (0..version_count).map(|_| OnceLock::new()).collect(),
            loaded_at: std::time::Instant::now(),
            revision: std::sync::atomic::AtomicU64::new(u64::MAX),
            quota: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sets the backing key of `version` unless it is set already (two
    /// loads of one version racing: the loser's copy is dropped and
    /// zeroized). False if the key has no such version.
    pub(crate) fn fill(&self, version: u32, backing: Backing) -> bool {
        match self.slot(version) {
            Some(slot) => {
                let _ = slot.set(backing);
                true
            }
            None => false,
        }
    }

    fn slot(&self, version: u32) -> Option<&OnceLock<Backing>> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions.get(index)
    }

    /// The backing key of `version`, or why there is none.
    pub fn version(&self, version: u32) -> Result<&Backing, VersionMissing> {
        let slot = self.slot(version).ok_or(VersionMissing::NoSuchVersion)?;
        slot.get().ok_or(VersionMissing::NotLoaded)
    }

    /// Whether `version` needs no load: unwrapped, or not a version of
    /// this key (then the request fails without one).
    pub fn has_version(&self, version: u32) -> bool {
        !matches!(self.version(version), Err(VersionMissing::NotLoaded))
    }

    #[cfg(any(test, feature = "internals"))]
    /// The stored record as of loading.
    pub fn record(&self) -> &KeyRecord {
        &self.meta.record
    }

    /// The key's policy, grants and aliases, compiled.
    pub fn access(&self) -> &super::access::KeyAccess {
        &self.meta.access
    }

    /// The key's id.
    pub fn id(&self) -> &[u8; 16] {
        &self.meta.record.key_id
    }

    /// The key's ARN (`[aws]`'s form), made once when the key was loaded:
    /// what the cryptographic operations answer as their KeyId, as AWS's.
    pub fn arn(&self) -> &str {
        self.meta.access.arn()
    }

    /// Where the key's backing keys live.
    pub fn origin(&self) -> kms_proto::Origin {
        self.meta.record.origin
    }

    /// The version and backing key new ciphertexts use.
    pub fn current(&self) -> (u32, &Backing) {
        let v = self.meta.record.current_version;
        let backing = self
            .version(v)
            .expect("a key is cached with its current version unwrapped");
        (v, backing)
    }

    /// Fails unless the key may be used for cryptographic operations (AWS's
    /// exception for its state).
    pub fn check_usable(&self) -> Result<(), KmsError> {
        let record = &self.meta.record;
        super::lifecycle::check(super::lifecycle::Use::Crypto, &record.key_id, record.state)?;
        if record.current_version == 0 {
            // No material (an EXTERNAL key whose state says otherwise, e.g.
            // after a CancelKeyDeletion): never reach for a missing version.
            return super::lifecycle::check(
                super::lifecycle::Use::Crypto,
                &record.key_id,
                kms_proto::KeyState::PendingImport,
            );
        }
        Ok(())
    }
}

/// What the service and its loader threads share.
pub(crate) struct ServiceState {
    /// The store, for the service's reads and writes (the key loader reads
    /// through its own connection).
    pub(crate) store: Mutex<Keystore>,
    pub(crate) root: Arc<dyn RootOfTrust>,
    pub(crate) cache: super::cache::KeyCache,
    /// Encryption counters of HSM-only key versions (outside the cache, so
    /// that they survive reloads).
    pub(crate) usage: super::backing::UsageCounters,
    /// The lifecycle's clock.
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
    /// The default policy of a key stored without one (none should be
    /// left after start-up: `Keystore::fill_missing_policies`).
    pub(crate) administrators: crate::keystore::access::StoredPolicy,
    /// The ARN form (`[aws]`): the loader compiles keys' access with
    /// their ARNs.
    pub(crate) arns: super::Arns,
}

impl ServiceState {
    /// A loaded key from its stored form, with the current version and
    /// `also` (a version a ciphertext names) unwrapped; other versions are
    /// unwrapped when first needed ([`ServiceState::fill_version`]). HSM-only
    /// versions stay in the HSM and cost no call: all of them are set.
    pub(crate) fn unwrap_key(
        &self,
        stored: &StoredKey,
        also: Option<u32>,
    ) -> Result<LoadedKey, KmsError> {
        let record = &stored.record;
        let id = record.key_id;
        for (i, w) in stored.versions.iter().enumerate() {
            if w.version as usize != i + 1 {
                return Err(internal(
                    "loading key",
                    format!("{}: versions are not contiguous", format_key_id(&id)),
                ));
            }
        }
        let count = stored.versions.len() as u32;
        let access = || super::access::KeyAccess::from_stored(stored, &self.administrators, &self.arns);
        if record.current_version == 0 && record.origin == kms_proto::Origin::External {
            // An EXTERNAL key without material (pending import, or pending
            // deletion after its material went): cached for its state
            // (every use but reading it is refused), nothing to unwrap.
            return Ok(LoadedKey::new(record.clone(), count, access()?));
        }
        if record.current_version == 0 || record.current_version > count {
            return Err(internal(
                "loading key",
                format!("{}: current version is missing", format_key_id(&id)),
            ));
        }
        let key = LoadedKey::new(record.clone(), count, access()?);
        if record.origin == kms_proto::Origin::Hsm {
            for v in 1..=count {
                self.fill_version(&key, v, stored)?;
            }
            return Ok(key);
        }
        self.fill_version(&key, record.current_version, stored)?;
        if let Some(v) = also {
            // A version the key does not have is answered by the request
            // (InvalidCiphertextException), not by the load.
            if v != record.current_version && v >= 1 && v <= count {
                self.fill_version(&key, v, stored)?;
            }
        }
        Ok(key)
    }

    /// Unwraps `version` of `stored` into `key` (nothing if it is there
    /// already or the key has no such version).
    pub(crate) fn fill_version(
        &self,
        key: &LoadedKey,
        version: u32,
        stored: &StoredKey,
    ) -> Result<(), KmsError> {
        if !matches!(key.version(version), Err(VersionMissing::NotLoaded)) {
            return Ok(());
        }
        let Some(w) = stored.versions.iter().find(|w| w.version == version) else {
            return Ok(());
        };
        let backing = if stored.record.origin == kms_proto::Origin::Hsm {
            let reserved = stored.usage.get(version as usize - 1).copied().unwrap_or(0);
            Backing::Hsm(self.usage.version(key.id(), version, reserved))
        } else {
            let material = self
                .root
                .unwrap(&w.wrapped)
                .map_err(|e| crate::errors::root("unwrapping backing key", e))?;
            Backing::Soft(XaesKey::new(&material))
        };
        key.fill(version, backing);
        Ok(())
    }
}

/// A key a request needs before it can run: the key, and the version its
/// ciphertext names (`None`: whatever version is current). Admission lists
/// them; the key loader loads them; the cache answers whether they are
/// there ([`KeyCache::ready`](super::cache::KeyCache::ready)).
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

impl From<[u8; 16]> for KeyRef {
    /// The key's current version.
    fn from(id: [u8; 16]) -> KeyRef {
        KeyRef { id, version: None }
    }
}

impl From<&[u8; 16]> for KeyRef {
    /// The key's current version.
    fn from(id: &[u8; 16]) -> KeyRef {
        KeyRef::from(*id)
    }
}

impl Service {
    /// Forgets what this daemon holds about a key: its cached entry (and
    /// with it any load in flight, which will not cache what it read: its
    /// waiters get a fresh load) and a remembered failure to load it. The
    /// control plane calls it after a change to the key is committed to the
    /// store and before it acknowledges the change, so that no request
    /// after the acknowledgement sees the key as it was.
    pub fn invalidate(&self, id: &[u8; 16]) {
        self.core.cache.invalidate(id);
        self.loader.forget_failure(id);
    }

    /// The HSM executor: the threads that own the root of trust's sessions,
    /// running frames that use HSM-only keys.
    pub fn hsm_executor(&self) -> &super::hsm_executor::HsmExecutor {
        self.loader.executor()
    }
}
