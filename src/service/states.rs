//! What the lifecycle operations share: a key's state as clients see it
//! (Unavailable is derived, not stored), and a change of a key's record
//! carried out the one way the invariants allow: checked and written in
//! one store transaction, then invalidated, then answered.

use super::{LifecycleLimits, Service};
use crate::errors;
use crate::keystore::lifecycle::Updated;
use crate::keystore::KeyRecord;
use kms_proto::{KeyMetadata, KeyState, KmsError, Origin};

impl Service {
    /// The state a key shows: its stored state, except that an HSM-only
    /// key that is Enabled or Disabled shows Unavailable while its HSM
    /// cannot be reached ([`crate::root::RootOfTrust::is_available`]; one
    /// atomic load). The stored state is kept, and shows again once the HSM
    /// is back. A key pending deletion or import shows that state: its
    /// deletion or import does not need the HSM's keys.
    pub fn effective_state(&self, record: &KeyRecord) -> KeyState {
        match record.state {
            KeyState::Enabled | KeyState::Disabled
                if record.origin == Origin::Hsm && !self.core.root.is_available() =>
            {
                KeyState::Unavailable
            }
            s => s,
        }
    }

    /// Metadata as clients see it now, with the state
    /// [`Service::effective_state`] gives.
    pub fn describe(&self, record: &KeyRecord) -> KeyMetadata {
        let mut m = self.metadata(record);
        m.key_state = self.effective_state(record);
        m.enabled = m.key_state == KeyState::Enabled;
        if record.state == KeyState::PendingDeletion {
            m.deletion_date = record.deletion_date;
            m.pending_deletion_window_in_days = record.pending_window_days;
        }
        m
    }

    /// The lifecycle's limits.
    pub fn lifecycle_limits(&self) -> &LifecycleLimits {
        &self.lifecycle_limits
    }

    /// Changes a key's record: `change` gets the record as stored (in the
    /// store's write transaction) and the state it shows, checks what it
    /// must (AWS's exception if the change is not allowed) and edits the
    /// record; the result is committed, the key invalidated if anything
    /// changed, and only then returned, so that no request that starts
    /// after the caller answers sees the key as it was. NotFoundException
    /// if there is no such key; nothing is written when `change` fails.
    pub(crate) fn change_key(
        &self,
        id: &[u8; 16],
        change: impl FnOnce(&mut KeyRecord, KeyState) -> Result<(), KmsError>,
    ) -> Result<Updated, KmsError> {
        let updated = self
            .store()
            .update_key(id, |rec| {
                let shown = self.effective_state(rec);
                change(rec, shown).map_err(Changed::Refused)
            })
            .map_err(|e| match e {
                Changed::Refused(e) => e,
                Changed::Store(e) => errors::store("changing a key", e),
            })?
            .ok_or_else(|| errors::key_not_found(id))?;
        if updated.changed() {
            self.invalidate(id);
        }
        Ok(updated)
    }

    /// A key's record as stored; NotFoundException if there is none.
    pub(crate) fn read_key(&self, id: &[u8; 16]) -> Result<KeyRecord, KmsError> {
        self.store()
            .get_key(id)
            .map_err(|e| errors::store("reading key", e))?
            .ok_or_else(|| errors::key_not_found(id))
    }
}

/// Why a change was not written: refused (a client error) or the store
/// failed.
pub(crate) enum Changed {
    /// The change was refused: answer this.
    Refused(KmsError),
    /// The store failed.
    Store(crate::keystore::StoreError),
}

impl From<crate::keystore::StoreError> for Changed {
    fn from(e: crate::keystore::StoreError) -> Self {
        Changed::Store(e)
    }
}

/// Seconds in a day (deletion windows and rotation periods are in days).
pub const DAY: i64 = 86_400;

#[cfg(test)]
pub(crate) mod test_support {
    //! What the lifecycle's unit tests share: a service over a manual
    //! clock and an in-memory HSM whose availability and destroys a test
    //! controls, and short ways to call operations.

    use crate::clock::ManualClock;
    use crate::crypto::KeyMaterial;
    use crate::identity::Identity;
    use crate::keystore::Keystore;
    use crate::root::fakes::MemHsmOnlyKeys;
    use crate::root::{FileRoot, HsmOnlyKeys, RootError, RootOfTrust};
    use crate::service::{Service, ServiceOptions};
    use kms_proto::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The caller of every test operation.
    pub(crate) const PEER: Identity = Identity::local(0, 0, 0);

    /// A file root with in-memory HSM-only keys, whose availability and
    /// destroys a test sets.
    pub(crate) struct TestHsm {
        file: FileRoot,
        pub(crate) vault: MemHsmOnlyKeys,
        pub(crate) up: AtomicBool,
        pub(crate) fail_destroy: AtomicBool,
    }

    impl TestHsm {
        pub(crate) fn new() -> Arc<TestHsm> {
            Arc::new(TestHsm {
                file: FileRoot::from_key(KeyMaterial::from_bytes([4; 32])),
                vault: MemHsmOnlyKeys::default(),
                up: AtomicBool::new(true),
                fail_destroy: AtomicBool::new(false),
            })
        }

        /// Token objects of key `id`.
        pub(crate) fn objects_of(&self, id: &[u8; 16]) -> usize {
            self.vault
                .keys
                .lock()
                .keys()
                .filter(|o| &o[..16] == id)
                .count()
        }
    }

    impl RootOfTrust for TestHsm {
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
            Some(self)
        }
        fn is_available(&self) -> bool {
            self.up.load(Ordering::SeqCst)
        }
    }

    impl HsmOnlyKeys for TestHsm {
        fn generate(&self, id: &[u8; 20]) -> Result<(), RootError> {
            self.vault.generate(id)
        }
        fn destroy(&self, id: &[u8; 20]) -> Result<bool, RootError> {
            if self.fail_destroy.load(Ordering::SeqCst) {
                return Err(RootError::Unavailable("test: HSM down".into()));
            }
            self.vault.destroy(id)
        }
        fn seal(
            &self,
            id: &[u8; 20],
            iv: &[u8; 12],
            aad: &[u8],
            plaintext: &[u8],
        ) -> Result<Vec<u8>, RootError> {
            self.vault.seal(id, iv, aad, plaintext)
        }
        fn open(
            &self,
            id: &[u8; 20],
            iv: &[u8; 12],
            aad: &[u8],
            ct: &[u8],
        ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, RootError> {
            self.vault.open(id, iv, aad, ct)
        }
    }

    /// The options of a test service on `clock`.
    pub(crate) fn options(clock: &Arc<ManualClock>) -> ServiceOptions {
        ServiceOptions {
            access: Default::default(),
            limits: Default::default(),
            max_keys: 1000,
            cache: Default::default(),
            loader_threads: 1,
            queue_capacity: 64,
            clock: Arc::clone(clock) as _,
            lifecycle_limits: Default::default(),
            hsm_invocation_limit: crate::service::backing::HSM_INVOCATION_LIMIT,
            arns: Default::default(),
        }
    }

    /// A service over `store` and `root` on `clock`.
    pub(crate) fn service_on(
        store: Keystore,
        root: Arc<dyn RootOfTrust>,
        clock: &Arc<ManualClock>,
    ) -> Service {
        Service::with_options(store, root, options(clock)).unwrap()
    }

    /// A service over an in-memory store, its HSM and its clock.
    pub(crate) fn service() -> (Service, Arc<TestHsm>, Arc<ManualClock>) {
        let hsm = TestHsm::new();
        let clock = ManualClock::at(1_700_000_000);
        let svc = service_on(Keystore::open_in_memory().unwrap(), hsm.clone(), &clock);
        (svc, hsm, clock)
    }

    /// Runs `op`.
    pub(crate) fn call(svc: &Service, op: Operation<'_>) -> Result<Output, KmsError> {
        svc.call(&op, &PEER)
    }

    /// The exception `op` fails with.
    pub(crate) fn fails(svc: &Service, op: Operation<'_>) -> KmsError {
        match call(svc, op) {
            Err(e) => e,
            Ok(o) => panic!("expected an error, got {o:?}"),
        }
    }

    /// A new key of `origin`.
    pub(crate) fn create(svc: &Service, origin: Origin) -> String {
        match call(
            svc,
            Operation::CreateKey(CreateKey {
                origin,
                ..CreateKey::default()
            }),
        ) {
            Ok(Output::CreateKey(m)) => m.key_id,
            other => panic!("{other:?}"),
        }
    }

    /// DescribeKey.
    pub(crate) fn describe(svc: &Service, key: &str) -> KeyMetadata {
        match call(
            svc,
            Operation::DescribeKey(DescribeKey {
                key_id: key,
                ..Default::default()
            }),
        ) {
            Ok(Output::DescribeKey(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    /// Encrypt; the blob.
    pub(crate) fn encrypt(svc: &Service, key: &str) -> Result<Vec<u8>, KmsError> {
        match call(
            svc,
            Operation::Encrypt(Encrypt {
                key_id: key,
                plaintext: b"lifecycle",
                context: vec![("t", "1")],
                ..Default::default()
            }),
        )? {
            Output::Encrypt(o) => Ok(o.ciphertext_blob),
            other => panic!("{other:?}"),
        }
    }

    /// Decrypt of a blob [`encrypt`] made.
    pub(crate) fn decrypt(svc: &Service, blob: &[u8]) -> Result<(), KmsError> {
        match call(
            svc,
            Operation::Decrypt(Decrypt {
                ciphertext_blob: blob,
                key_id: None,
                context: vec![("t", "1")],
                ..Default::default()
            }),
        )? {
            Output::Decrypt(d) => {
                assert_eq!(d.plaintext.expose(), b"lifecycle");
                Ok(())
            }
            other => panic!("{other:?}"),
        }
    }

    /// The key version a blob names.
    pub(crate) fn blob_version(blob: &[u8]) -> u32 {
        crate::service::backing::parse_any_header(blob)
            .unwrap()
            .key_version
    }

    /// The key id of `key`.
    pub(crate) fn id(key: &str) -> [u8; 16] {
        crate::service::Arns::default().parse_key_id(key).unwrap()
    }

}

#[cfg(test)]
mod tests {
    //! The state a key shows.

    use super::test_support::*;
    use kms_proto::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn an_hsm_only_key_shows_unavailable_while_its_hsm_is_down() {
        let (svc, hsm, _clock) = service();
        let key = create(&svc, Origin::Hsm);
        let soft = create(&svc, Origin::Kmsd);
        hsm.up.store(false, Ordering::SeqCst);
        let m = describe(&svc, &key);
        assert_eq!((m.key_state, m.enabled), (KeyState::Unavailable, false));
        // Only HSM-only keys: a soft key's material is wrapped already.
        assert_eq!(describe(&svc, &soft).key_state, KeyState::Enabled);
        // Rotation is refused in Unavailable (AWS's table); DisableKey is
        // allowed, and stored.
        let e = fails(
            &svc,
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &key }),
        );
        assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
        assert!(e.message.contains("unavailable"), "{e}");
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        assert_eq!(describe(&svc, &key).key_state, KeyState::Unavailable);
        hsm.up.store(true, Ordering::SeqCst);
        let m = describe(&svc, &key);
        assert_eq!((m.key_state, m.enabled), (KeyState::Disabled, false));
        // Pending deletion shows as such, HSM or not.
        call(
            &svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: &key,
                pending_window_in_days: None,
            }),
        )
        .unwrap();
        hsm.up.store(false, Ordering::SeqCst);
        assert_eq!(describe(&svc, &key).key_state, KeyState::PendingDeletion);
    }
}
