//! A key version's backing key, wherever it lives, and sealing and opening
//! blobs with it: in the daemon (XAES-256-GCM, blob format 1) or inside the
//! HSM for HSM-only keys (AES-256-GCM with a 96-bit IV, blob format 2).
//!
//! HSM-only keys: the daemon counts encryptions per key version and refuses
//! the 2^32nd (the NIST SP 800-38D bound for random 96-bit IVs). The count
//! survives restarts: blocks of 65,536 are reserved durably in the store
//! before they are used, so a crash can only skip numbers, never reuse
//! them.
//!
//! The counters live in `UsageCounters`, outside the key cache: a key
//! version has one counter for the life of the process, shared by every
//! load of it, so a TTL expiry or an eviction followed by a reload goes on
//! counting in the block already reserved. (Counters that restarted from
//! the stored reservation on every load burned up to 65,535 counts per
//! reload: with `ttl_secs = 60`, a key used once a minute ran out after
//! about 45 days.) Only a restart loses the in-memory count: the first
//! encryption after it reserves the next block, so each restart costs at
//! most one block (65,536 of the 2^32) per key version used.
//!
//! A version does not stop the key at its limit: once its count reaches
//! [`rotation_threshold`] (the limit less 1/64 of it: 67 million
//! encryptions ahead at 2^32) the data path asks the scheduler to rotate
//! the key (`super::rotation`: a lock and a wake-up, nothing that blocks),
//! and an encryption that finds the version worn out waits for the new
//! version (bounded by the load timeout) and seals with it. The limit is
//! [`super::ServiceOptions::hsm_invocation_limit`] (2^32; tests lower it).

use super::keys::{KeyRef, VersionMissing};
use super::{internal, ExecError, LoadedKey, Service, Site};
use crate::crypto::{blob, hsm_blob, rng, BlobError, BlobHeader, CanonicalContext, XaesKey};
use kms_proto::KmsError;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Most encryptions with one HSM-only key version.
pub const HSM_INVOCATION_LIMIT: u64 = 1 << 32;
/// Encryptions reserved in the store at a time.
const RESERVE_BLOCK: u64 = 1 << 16;

/// The count at which a version asks for its key's rotation: `limit` less
/// 1/64 of it (at least one encryption before the limit).
pub fn rotation_threshold(limit: u64) -> u64 {
    limit - (limit / 64).max(1).min(limit - 1)
}

/// One key version's backing key.
// The software key is the hot path and is used in place, without the
// indirection a Box would add; versions live in a Vec, so the size of the
// rare HSM variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backing {
    /// Unwrapped into the daemon's memory (zeroized on drop).
    Soft(XaesKey),
    /// Inside the HSM; only its name and usage count are here.
    Hsm(HsmVersion),
}

/// An HSM-only key version.
pub struct HsmVersion {
    /// the HSM's name for it (CKA_ID): key id, then version (u32 BE).
    pub object_id: [u8; 20],
    usage: Arc<Usage>,
}

/// One key version's encryption count and the part of it reserved in the
/// store. Shared by every load of the version (see [`UsageCounters`]).
struct Usage {
    used: AtomicU64,
    reserved: Mutex<u64>,
    /// Whether this process asked for the key's rotation already (the
    /// version is near its limit; see [`rotation_threshold`]).
    rotation_asked: std::sync::atomic::AtomicBool,
}

impl HsmVersion {
    #[cfg(any(test, feature = "internals"))]
    /// Encryptions counted so far (reserved ones included after a restart).
    pub fn used(&self) -> u64 {
        self.usage.used.load(Ordering::Relaxed)
    }
}

/// The encryption counters of the HSM-only key versions this process has
/// loaded, by object id: kept outside the cache so that they survive
/// reloads, and so that two loads of one version alive at once (a request
/// still holding the evicted one) count through one block. One small entry
/// per HSM-only key version used since start (the store holds at most
/// `limits.max_keys` keys), never dropped: dropping one would lose its
/// count and burn the rest of its block.
#[derive(Default)]
pub(crate) struct UsageCounters {
    by_version: Mutex<HashMap<[u8; 20], Arc<Usage>>>,
}

impl UsageCounters {
    /// The version's counter: the one this process already has, else a new
    /// one that starts at `stored` (the reservation read from the store,
    /// an upper bound of what was used before this process started).
    pub(crate) fn version(&self, key_id: &[u8; 16], version: u32, stored: u64) -> HsmVersion {
        let object_id = object_id(key_id, version);
        let usage = Arc::clone(self.by_version.lock().entry(object_id).or_insert_with(|| {
            Arc::new(Usage {
                used: AtomicU64::new(stored),
                reserved: Mutex::new(stored),
                rotation_asked: Default::default(),
            })
        }));
        HsmVersion { object_id, usage }
    }

    /// Drops the counters of a deleted key's versions (its token objects
    /// are destroyed: nothing will count through them again).
    pub(crate) fn forget_key(&self, key_id: &[u8; 16]) {
        self.by_version
            .lock()
            .retain(|object_id, _| &object_id[..16] != key_id);
    }
}

/// The object id (CKA_ID) of a key version.
pub fn object_id(key_id: &[u8; 16], version: u32) -> [u8; 20] {
    let mut id = [0u8; 20];
    id[..16].copy_from_slice(key_id);
    id[16..].copy_from_slice(&version.to_be_bytes());
    id
}

use crate::errors::invalid_ciphertext;

/// The key id and version a blob of any known format names (not yet
/// authenticated).
pub fn parse_any_header(ciphertext_blob: &[u8]) -> Result<BlobHeader, BlobError> {
    match ciphertext_blob.first() {
        Some(&hsm_blob::VERSION) => hsm_blob::parse_header(ciphertext_blob),
        _ => blob::parse_header(ciphertext_blob),
    }
}

impl Service {
    /// Seals `plaintext` under the key's current version.
    pub(crate) fn seal(
        &self,
        key: &LoadedKey,
        context: &CanonicalContext,
        plaintext: &[u8],
        site: Site<'_>,
    ) -> Result<Vec<u8>, ExecError> {
        let (version, backing) = key.current();
        crate::audit::note::version(*key.id(), version);
        let header = BlobHeader {
            key_id: *key.id(),
            key_version: version,
        };
        match backing {
            Backing::Soft(x) => Ok(blob::seal(x, &header, context, plaintext)),
            Backing::Hsm(h) => {
                if !site.may_block() {
                    return Err(ExecError::NotReady);
                }
                if !self.count_encryption(key.id(), version, h)? {
                    // Worn out: seal with the version its rotation makes.
                    let rotated = self.await_rotation(key, version, site)?;
                    return self.seal(&rotated, context, plaintext, site);
                }
                let mut iv = [0u8; hsm_blob::IV_LEN];
                rng::fill(&mut iv);
                let head = hsm_blob::header(&header, &iv);
                let aad = hsm_blob::aad(&head, context);
                let body = self
                    .hsm_only_keys()?
                    .seal(&h.object_id, &iv, &aad, plaintext)
                    .map_err(|e| crate::errors::root("sealing with an HSM-only key", e))?;
                let mut out = Vec::with_capacity(head.len() + body.len());
                out.extend_from_slice(&head);
                out.extend_from_slice(&body);
                Ok(out)
            }
        }
    }

    /// Authenticates and decrypts a blob with the version it names.
    pub(crate) fn unseal(
        &self,
        key: &LoadedKey,
        key_version: u32,
        ciphertext_blob: &[u8],
        context: &CanonicalContext,
        site: Site<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, ExecError> {
        crate::audit::note::version(*key.id(), key_version);
        // An older version is unwrapped the first time a ciphertext names
        // it (off the I/O thread), into the cached key.
        let filled;
        let backing = match key.version(key_version) {
            Ok(b) => b,
            Err(VersionMissing::NoSuchVersion) => return Err(invalid_ciphertext().into()),
            Err(VersionMissing::NotLoaded) => {
                let want = KeyRef {
                    id: *key.id(),
                    version: Some(key_version),
                };
                filled = self.key_at(want, site)?;
                filled
                    .version(key_version)
                    .map_err(|_| invalid_ciphertext())?
            }
        };
        match (backing, ciphertext_blob.first()) {
            (Backing::Soft(x), Some(&blob::VERSION)) => {
                Ok(blob::open(x, ciphertext_blob, context).map_err(|_| invalid_ciphertext())?)
            }
            (Backing::Hsm(h), Some(&hsm_blob::VERSION)) => {
                if !site.may_block() {
                    return Err(ExecError::NotReady);
                }
                let parts = hsm_blob::split(ciphertext_blob).map_err(|_| invalid_ciphertext())?;
                let aad = hsm_blob::aad(parts.header, context);
                match self
                    .hsm_only_keys()?
                    .open(&h.object_id, &parts.iv, &aad, parts.body)
                    .map_err(|e| crate::errors::root("opening with an HSM-only key", e))?
                {
                    Some(plaintext) => Ok(plaintext),
                    None => Err(invalid_ciphertext().into()),
                }
            }
            // A blob of the other format for this key: forged or mixed up.
            _ => Err(invalid_ciphertext().into()),
        }
    }

    /// The HSM-only keys of the root of trust, for a new one; a clear client error when the root
    /// of trust has none.
    pub(crate) fn hsm_only_keys_for_create(
        &self,
    ) -> Result<&dyn crate::root::HsmOnlyKeys, KmsError> {
        self.core
            .root
            .hsm_only_keys()
            .ok_or_else(crate::errors::no_hsm_for_hsm_only_keys)
    }

    fn hsm_only_keys(&self) -> Result<&dyn crate::root::HsmOnlyKeys, KmsError> {
        self.core.root.hsm_only_keys().ok_or_else(|| {
            internal(
                "using an HSM-only key",
                "the root of trust has no HSM for HSM-only keys (the store holds HSM-only keys; run with the PKCS#11 root)",
            )
        })
    }

    /// Counts one encryption, reserving the next block durably first when
    /// needed, and asks for the key's rotation once the version nears its
    /// limit. False (nothing counted) when the version is worn out.
    fn count_encryption(
        &self,
        key_id: &[u8; 16],
        version: u32,
        h: &HsmVersion,
    ) -> Result<bool, KmsError> {
        let limit = self.hsm_invocation_limit;
        let usage = &h.usage;
        let n = usage.used.fetch_add(1, Ordering::AcqRel) + 1;
        if n > limit {
            usage.used.fetch_sub(1, Ordering::AcqRel);
            return Ok(false);
        }
        if n >= rotation_threshold(limit) && !usage.rotation_asked.swap(true, Ordering::AcqRel) {
            self.ask_rotation(key_id, version);
        }
        let mut reserved = usage.reserved.lock();
        if n > *reserved {
            let next = (*reserved + RESERVE_BLOCK).min(limit);
            self.store()
                .reserve_usage(key_id, version, next)
                .map_err(|e| internal("reserving HSM encryptions", e))?;
            *reserved = next;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    //! HSM-only keys against an in-memory store (AES-256-GCM in software,
    //! `root::fakes::MemHsmOnlyKeys`); the real HSM runs the same operations in
    //! tests/integration/hsm.rs.

    use super::*;
    use crate::crypto::KeyMaterial;
    use crate::identity::Identity;
    use crate::keystore::Keystore;
    use crate::root::fakes::{HsmOnlyRoot, MemHsmOnlyKeys};
    use crate::root::{FileRoot, HsmOnlyKeys};
    use crate::service::ServiceOptions;
    use kms_proto::*;
    use std::sync::Arc;

    const PEER: Identity = Identity::local(0, 0, 0);

    fn service(dir: &std::path::Path, vault: &Arc<MemHsmOnlyKeys>) -> Service {
        service_with(dir, vault, Default::default())
    }

    fn service_with(
        dir: &std::path::Path,
        vault: &Arc<MemHsmOnlyKeys>,
        cache: crate::config::CacheConfig,
    ) -> Service {
        service_max(dir, vault, cache, 1000)
    }

    fn service_max(
        dir: &std::path::Path,
        vault: &Arc<MemHsmOnlyKeys>,
        cache: crate::config::CacheConfig,
        max_keys: u64,
    ) -> Service {
        Service::with_options(
            Keystore::open(dir).unwrap(),
            Arc::new(HsmOnlyRoot {
                file: FileRoot::from_key(KeyMaterial::from_bytes([4; 32])),
                vault: Arc::clone(vault),
            }),
            ServiceOptions {
                access: Default::default(),
                limits: Default::default(),
                max_keys,
                cache,
                loader_threads: 1,
                queue_capacity: 64,
                clock: std::sync::Arc::new(crate::clock::SystemClock),
                lifecycle_limits: Default::default(),
                hsm_invocation_limit: HSM_INVOCATION_LIMIT,
                arns: Default::default(),
            },
        )
        .unwrap()
    }

    fn create_hsm_key(svc: &Service) -> String {
        match svc.call(
            &Operation::CreateKey(CreateKey {
                origin: Origin::Hsm,
                ..CreateKey::default()
            }),
            &PEER,
        ) {
            Ok(Output::CreateKey(m)) => {
                assert_eq!(m.origin, Origin::Hsm);
                m.key_id
            }
            other => panic!("{other:?}"),
        }
    }

    fn gdk(svc: &Service, key: &str, site: Site<'_>) -> Result<Output, ExecError> {
        svc.execute(
            &Operation::GenerateDataKey(GenerateDataKey {
                key_id: key,
                number_of_bytes: Some(32),
                key_spec: None,
                context: vec![("app", "x")],
                ..Default::default()
            }),
            &PEER,
            site,
        )
    }

    fn decrypt(svc: &Service, blob: &[u8], ctx: &str) -> Result<Output, KmsError> {
        svc.call(
            &Operation::Decrypt(Decrypt {
                ciphertext_blob: blob,
                key_id: None,
                context: vec![("app", ctx)],
                ..Default::default()
            }),
            &PEER,
        )
    }

    #[test]
    fn hsm_only_keys_seal_in_the_vault_with_format_2_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let (key, plaintext, blob) = {
            let svc = service(dir.path(), &vault);
            let key = create_hsm_key(&svc);
            // Never on an I/O thread: the HSM call needs a worker.
            assert_eq!(gdk(&svc, &key, Site::Io).unwrap_err(), ExecError::NotReady);
            let Ok(Output::GenerateDataKey(o)) =
                gdk(&svc, &key, Site::Blocking { prefetched: None })
            else {
                panic!()
            };
            assert_eq!(o.ciphertext_blob[0], hsm_blob::VERSION);
            assert_eq!(o.ciphertext_blob.len(), hsm_blob::HEADER_LEN + 32 + 16);
            (key, o.plaintext, o.ciphertext_blob)
        };
        let svc = service(dir.path(), &vault);
        let Ok(Output::Decrypt(d)) = decrypt(&svc, &blob, "x") else {
            panic!()
        };
        assert_eq!(d.plaintext.expose(), plaintext.expose());
        assert_eq!(d.key_id, format!("{}{key}", svc.arns().key_arn_prefix()));
        // Wrong context, flipped bytes, truncation, or the blob relabelled as
        // format 1: one error.
        assert_eq!(
            decrypt(&svc, &blob, "y").unwrap_err().kind,
            ErrorKind::InvalidCiphertext
        );
        for i in [0, 20, 25, blob.len() - 1] {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert_eq!(
                decrypt(&svc, &bad, "x").unwrap_err().kind,
                ErrorKind::InvalidCiphertext,
                "byte {i}"
            );
        }
        assert_eq!(
            decrypt(&svc, &blob[..blob.len() - 1], "x")
                .unwrap_err()
                .kind,
            ErrorKind::InvalidCiphertext
        );
    }

    #[test]
    fn frames_with_hsm_only_keys_run_on_the_hsm_executor() {
        use crate::config::DispatchConfig;
        use crate::dispatch::{Dispatcher, Reply};
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let svc = Arc::new(service(dir.path(), &vault));
        let hsm_key = create_hsm_key(&svc);
        let Ok(Output::CreateKey(soft)) =
            svc.call(&Operation::CreateKey(CreateKey::default()), &PEER)
        else {
            panic!()
        };
        let d = Dispatcher::new(Arc::clone(&svc), &DispatchConfig::default()).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // A single HSM operation, a soft one, and a batch mixing both.
        let op = |key| {
            Ok(Operation::GenerateDataKey(GenerateDataKey {
                key_id: key,
                number_of_bytes: Some(32),
                key_spec: None,
                context: vec![],
                ..Default::default()
            }))
        };
        let requests = [
            RequestBody::Single(op(&hsm_key)),
            RequestBody::Single(op(&soft.key_id)),
            RequestBody::Batch(vec![op(&soft.key_id), op(&hsm_key), op(&hsm_key)]),
        ];
        for (i, body) in requests.into_iter().enumerate() {
            let mut frame = Vec::new();
            codec::encode_request(
                &mut flatbuffers::FlatBufferBuilder::new(),
                &Request {
                    request_id: i as u64,
                    body,
                },
                &mut frame,
            );
            d.dispatch(
                bytes::Bytes::from(frame).slice(4..),
                PEER,
                Reply::new(tx.clone(), None),
            );
        }
        let mut formats = std::collections::BTreeMap::new();
        for _ in 0..3 {
            let o = rx.blocking_recv().expect("an answer");
            let r = codec::decode_response(&o.frame[4..], 1 << 20).unwrap();
            let outcomes = match r.body {
                ResponseBody::Single(o) => vec![o],
                ResponseBody::Batch(v) => v,
                ResponseBody::Error(e) => panic!("{e:?}"),
            };
            let f: Vec<u8> = outcomes
                .into_iter()
                .map(|o| match o {
                    Ok(Output::GenerateDataKey(g)) => g.ciphertext_blob[0],
                    other => panic!("{other:?}"),
                })
                .collect();
            formats.insert(r.request_id, f);
        }
        let (soft_v, hsm_v) = (blob::VERSION, hsm_blob::VERSION);
        assert_eq!(formats[&0], [hsm_v]);
        assert_eq!(formats[&1], [soft_v]);
        assert_eq!(formats[&2], [soft_v, hsm_v, hsm_v]);
        // Every HSM call was made by a loader thread (the one that owns the
        // sessions), never by a worker; the soft frame went to no one there.
        assert_eq!(*vault.sealed_on.lock(), vec!["kmsd-loader-0".to_owned(); 3]);
        assert_eq!(svc.loader().stats().frames, 2);
    }

    #[test]
    fn encryptions_are_counted_durably_and_a_worn_version_waits_for_its_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let key = {
            let svc = service(dir.path(), &vault);
            let key = create_hsm_key(&svc);
            for _ in 0..3 {
                gdk(&svc, &key, Site::Blocking { prefetched: None }).unwrap();
            }
            key
        };
        let id = crate::service::Arns::default().parse_key_id(&key).unwrap();
        let store = Keystore::open(dir.path()).unwrap();
        // Reserved ahead, in blocks: a crash can skip numbers, never reuse.
        assert_eq!(store.usage_reserved(&id, 1).unwrap(), RESERVE_BLOCK);
        store
            .reserve_usage(&id, 1, HSM_INVOCATION_LIMIT - 1)
            .unwrap();
        drop(store);
        // No scheduler runs here: the worn version's rotation never comes,
        // and the encryption that waits for it gives up at the load
        // timeout (the rotation itself: service/rotation.rs's tests).
        let quick = crate::config::CacheConfig {
            load_timeout_ms: 100,
            ..Default::default()
        };
        let svc = service_with(dir.path(), &vault, quick);
        let before = vault.seals.load(Ordering::SeqCst);
        gdk(&svc, &key, Site::Blocking { prefetched: None }).unwrap();
        match gdk(&svc, &key, Site::Blocking { prefetched: None }) {
            Err(ExecError::Kms(e)) => {
                assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
                assert!(e.message.contains("rotation"), "{e}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(
            vault.seals.load(Ordering::SeqCst),
            before + 1,
            "no HSM call past the limit"
        );
    }

    #[test]
    fn the_rotation_threshold_is_below_the_limit() {
        assert_eq!(
            rotation_threshold(HSM_INVOCATION_LIMIT),
            HSM_INVOCATION_LIMIT - HSM_INVOCATION_LIMIT / 64
        );
        assert_eq!(rotation_threshold(640), 630);
        assert_eq!(rotation_threshold(10), 9);
        assert_eq!(rotation_threshold(2), 1);
        assert_eq!(rotation_threshold(1), 1);
    }

    #[test]
    fn reloads_keep_counting_in_the_reserved_block() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        // A cache of one key, alternating an HSM-only key and a soft key:
        // every operation evicts the other key and reloads its own.
        let one = crate::config::CacheConfig {
            capacity: 1,
            ..Default::default()
        };
        let svc = service_with(dir.path(), &vault, one.clone());
        let hsm_key = create_hsm_key(&svc);
        let Ok(Output::CreateKey(soft)) =
            svc.call(&Operation::CreateKey(CreateKey::default()), &PEER)
        else {
            panic!()
        };
        let id = crate::service::Arns::default().parse_key_id(&hsm_key).unwrap();
        for _ in 0..5 {
            gdk(&svc, &hsm_key, Site::Blocking { prefetched: None }).unwrap();
            gdk(&svc, &soft.key_id, Site::Blocking { prefetched: None }).unwrap();
        }
        assert!(
            svc.loader().stats().loaded >= 9,
            "{:?}",
            svc.loader().stats()
        );
        assert_eq!(vault.seals.load(Ordering::SeqCst), 5);
        // Five encryptions over five loads: still the first block.
        assert_eq!(svc.store().usage_reserved(&id, 1).unwrap(), RESERVE_BLOCK);
        drop(svc);
        // A restart loses the count in memory: the next block, once.
        let svc = service_with(dir.path(), &vault, one);
        for _ in 0..3 {
            gdk(&svc, &hsm_key, Site::Blocking { prefetched: None }).unwrap();
            gdk(&svc, &soft.key_id, Site::Blocking { prefetched: None }).unwrap();
        }
        assert_eq!(
            svc.store().usage_reserved(&id, 1).unwrap(),
            2 * RESERVE_BLOCK
        );
    }

    fn create_hsm_key_err(svc: &Service) -> KmsError {
        svc.call(
            &Operation::CreateKey(CreateKey {
                origin: Origin::Hsm,
                ..CreateKey::default()
            }),
            &PEER,
        )
        .unwrap_err()
    }

    #[test]
    fn hsm_create_key_checks_the_limit_before_generating() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let svc = service_max(dir.path(), &vault, Default::default(), 2);
        create_hsm_key(&svc);
        svc.call(&Operation::CreateKey(CreateKey::default()), &PEER)
            .unwrap();
        for _ in 0..3 {
            let e = create_hsm_key_err(&svc);
            assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
        }
        // Only the key that was created is in the vault: nothing generated
        // for the refused ones.
        assert_eq!(vault.keys.lock().len(), 1);
        assert!(svc.store().pending_hsm_only_keys().unwrap().is_empty());
        let e = svc
            .call(&Operation::CreateKey(CreateKey::default()), &PEER)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
    }

    #[test]
    fn a_failed_insert_destroys_the_generated_hsm_key() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let svc = service(dir.path(), &vault);
        // The store refuses every new key (as a full disk would), after the
        // pending record and the generation succeeded.
        rusqlite::Connection::open(dir.path().join(crate::keystore::DB_FILE))
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse_keys BEFORE INSERT ON keys
                 BEGIN SELECT RAISE(ABORT, 'test: the disk is full'); END;",
            )
            .unwrap();
        let e = create_hsm_key_err(&svc);
        assert_eq!(e.kind, ErrorKind::KmsInternal, "{e}");
        assert_eq!(vault.seals.load(Ordering::SeqCst), 0);
        assert!(
            vault.keys.lock().is_empty(),
            "the token object was destroyed"
        );
        assert!(svc.store().pending_hsm_only_keys().unwrap().is_empty());
    }

    #[test]
    fn start_up_settles_hsm_keys_left_pending_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(MemHsmOnlyKeys::default());
        let svc = service(dir.path(), &vault);
        let kept = create_hsm_key(&svc);
        let kept = crate::service::Arns::default().parse_key_id(&kept).unwrap();
        // What a crash leaves: pending records, one with its token object
        // generated, one without; and a (impossible) pending record of a
        // stored key, whose token object must survive.
        for (id, generated) in [([1u8; 16], true), ([2; 16], false), (kept, false)] {
            assert!(svc.store().begin_hsm_only_key(&id, 1, 0, 100).unwrap());
            if generated {
                vault.generate(&object_id(&id, 1)).unwrap();
            }
        }
        assert_eq!(vault.keys.lock().len(), 2);
        drop(svc);
        let svc = service(dir.path(), &vault);
        assert_eq!(svc.reconcile_hsm_only_keys().unwrap(), 1);
        assert!(svc.store().pending_hsm_only_keys().unwrap().is_empty());
        assert_eq!(
            vault.keys.lock().keys().copied().collect::<Vec<_>>(),
            [object_id(&kept, 1)]
        );
        assert_eq!(svc.reconcile_hsm_only_keys().unwrap(), 0);
    }

    #[test]
    fn the_file_root_refuses_hsm_only_keys_clearly() {
        let svc = Service::with_store(
            Keystore::open_in_memory().unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([4; 32]))),
            Default::default(),
            10,
        )
        .unwrap();
        let e = svc
            .call(
                &Operation::CreateKey(CreateKey {
                    origin: Origin::Hsm,
                    ..CreateKey::default()
                }),
                &PEER,
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOperation, "{e}");
        assert!(e.message.contains("pkcs11"), "{e}");
    }
}
