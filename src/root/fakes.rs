//! Fake roots of trust for unit tests, in one place: a file root that
//! counts its unwraps, slows down, stalls and fails on demand
//! ([`TestRoot`]), and an in-memory vault of HSM-only keys (AES-256-GCM in
//! software, [`MemHsmOnlyKeys`]) behind a file root ([`HsmOnlyRoot`]). The real
//! HSM's faults and keys are tested end to end in tests/integration/hsm.rs.

use super::{FileRoot, HsmOnlyKeys, RootError, RootOfTrust};
use crate::crypto::{rng, KeyMaterial};
use aes_gcm::aead::AeadInOut;
use aes_gcm::aes::cipher::KeyInit;
use aes_gcm::Aes256Gcm;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A file root that counts, slows down, stalls and fails on demand.
pub(crate) struct TestRoot {
    inner: FileRoot,
    /// Unwraps that reached the root (failed ones not counted).
    pub(crate) unwraps: AtomicUsize,
    /// Added to every unwrap.
    pub(crate) delay_ms: AtomicU64,
    /// Every unwrap fails as if the HSM were down.
    pub(crate) down: AtomicBool,
    /// While set, every unwrap hangs (a root far slower than any
    /// deadline) until it is cleared (at most 60 s).
    pub(crate) stall: AtomicBool,
    /// Wrapped keys whose unwrap fails as if the HSM were down.
    pub(crate) failing: Mutex<Vec<Vec<u8>>>,
    /// Names of the threads that called unwrap.
    pub(crate) callers: Mutex<std::collections::BTreeSet<String>>,
    /// Names of the threads that called wrap.
    pub(crate) wrappers: Mutex<std::collections::BTreeSet<String>>,
}

impl TestRoot {
    /// Over a file root of `key`.
    pub(crate) fn new(key: [u8; 32]) -> Arc<TestRoot> {
        Arc::new(TestRoot {
            inner: FileRoot::from_key(KeyMaterial::from_bytes(key)),
            unwraps: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            stall: AtomicBool::new(false),
            failing: Mutex::default(),
            callers: Mutex::default(),
            wrappers: Mutex::default(),
        })
    }

    /// Unwraps so far.
    pub(crate) fn unwraps(&self) -> usize {
        self.unwraps.load(Ordering::SeqCst)
    }
}

impl RootOfTrust for TestRoot {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
        let me = std::thread::current();
        self.wrappers
            .lock()
            .insert(me.name().unwrap_or("unnamed").to_owned());
        self.inner.wrap(key)
    }
    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
        if self.down.load(Ordering::SeqCst) || self.failing.lock().iter().any(|w| w == wrapped) {
            return Err(RootError::Unavailable("test: HSM down".into()));
        }
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        let t0 = Instant::now();
        while self.stall.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let me = std::thread::current();
        self.callers
            .lock()
            .insert(me.name().unwrap_or("unnamed").to_owned());
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        self.inner.unwrap(wrapped)
    }
}

/// HSM-only keys in memory: AES-256-GCM in software, counting seals and
/// the threads they ran on.
#[derive(Default)]
pub(crate) struct MemHsmOnlyKeys {
    pub(crate) keys: Mutex<HashMap<[u8; 20], [u8; 32]>>,
    pub(crate) seals: AtomicU64,
    /// The thread each seal ran on.
    pub(crate) sealed_on: Mutex<Vec<String>>,
}

impl HsmOnlyKeys for MemHsmOnlyKeys {
    fn generate(&self, id: &[u8; 20]) -> Result<(), RootError> {
        let mut k = [0u8; 32];
        rng::fill(&mut k);
        self.keys.lock().insert(*id, k);
        Ok(())
    }
    fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
        Ok(self.keys.lock().remove(id).is_some())
    }
    fn seal(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        self.seals.fetch_add(1, Ordering::SeqCst);
        let thread = std::thread::current();
        self.sealed_on
            .lock()
            .push(thread.name().unwrap_or("unnamed").to_owned());
        let key = self.keys.lock()[id];
        let gcm = Aes256Gcm::new((&key).into());
        let mut buf = plaintext.to_vec();
        let tag = gcm
            .encrypt_inout_detached(iv.into(), aad, buf.as_mut_slice().into())
            .unwrap();
        buf.extend_from_slice(&tag);
        Ok(buf)
    }
    fn open(
        &self,
        id: &[u8; 20],
        iv: &[u8; 12],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, RootError> {
        let key = self.keys.lock()[id];
        let gcm = Aes256Gcm::new((&key).into());
        let (body, tag) = ct.split_at(ct.len() - 16);
        let mut buf = Zeroizing::new(body.to_vec());
        let tag: &[u8; 16] = tag.try_into().unwrap();
        Ok(gcm
            .decrypt_inout_detached(iv.into(), aad, buf.as_mut_slice().into(), tag.into())
            .ok()
            .map(|()| buf))
    }
}

/// A file root with a [`MemHsmOnlyKeys`] for HSM-only keys.
pub(crate) struct HsmOnlyRoot {
    pub(crate) file: FileRoot,
    pub(crate) vault: Arc<MemHsmOnlyKeys>,
}

impl RootOfTrust for HsmOnlyRoot {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn wrap(&self, key: &KeyMaterial) -> Result<Vec<u8>, RootError> {
        self.file.wrap(key)
    }
    fn unwrap(&self, wrapped: &[u8]) -> Result<KeyMaterial, RootError> {
        self.file.unwrap(wrapped)
    }
    fn hsm_only_keys(&self) -> Option<&dyn HsmOnlyKeys> {
        Some(&*self.vault)
    }
}
