//! Key rotation: a new backing-key version, made current in the store
//! transaction that adds it, then invalidated, so that every ciphertext
//! made after the rotation is acknowledged uses it; every older version
//! still decrypts (the loaded key unwraps older versions when a ciphertext
//! first names them: `service::keys`).
//!
//! Three things rotate a key, all through `Service::rotate_key`:
//! - RotateKeyOnDemand (RotationType ON_DEMAND; at most
//!   `limits.max_on_demand_rotations` per key over its life; the automatic
//!   schedule does not move, as in AWS);
//! - the automatic schedule, as due work of the scheduler ([`run_due`];
//!   RotationType AUTOMATIC; the next date moves one period on);
//! - an HSM-only key version near its encryption limit (2^32 with random
//!   96-bit IVs): the data path asks (`Service::ask_rotation`: a lock and
//!   a wake-up, never a store write or a PKCS#11 call on an I/O thread),
//!   the scheduler rotates at once (AUTOMATIC; the schedule does not move),
//!   and an encryption that finds the version worn out waits for the new
//!   version (`Service::await_rotation`, off the I/O threads, at most the
//!   load timeout) and uses it.
//!
//! A key made by kmsd gets new material wrapped by the root of trust. An
//! HSM-only key gets a new token key, made the way CreateKey makes one: the
//! version is recorded pending before it is generated, so a crash in
//! between leaves a record that start-up reconciliation settles by
//! destroying the token object; one rotation of an HSM-only key runs at a
//! time (another gets ConflictException, as AWS answers a rotation already
//! in progress).

use super::keys::KeyRef;
use super::lifecycle::{check, wrong_origin, Use};
use super::op::{ExecError, Site};
use super::states::{Changed, DAY};
use super::{format_key_id, LoadedKey, Service};
use crate::crypto::KeyMaterial;
use crate::errors;
use crate::keystore::{KeyRecord, WrappedVersion};
use crate::root::HsmOnlyKeys;
use kms_proto::{ErrorKind, KeyState, KmsError, Origin, RotationType};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What decides whether a rotation goes ahead, given the record as stored
/// and the state the key shows; it may edit the record (count an on-demand
/// rotation, move the schedule). Asked twice: before any material is made,
/// and again in the transaction that adds the version.
pub(crate) type Rule<'a> = &'a dyn Fn(&mut KeyRecord, KeyState) -> Result<(), KmsError>;

/// Rotations the data path asked for, and the rounds of the scheduler
/// that carry them out (waiters wait for the next round).
#[derive(Default)]
pub(crate) struct Requests {
    /// Key -> the version that is wearing out (rotated only while it is
    /// still current: two requests make one rotation).
    asked: Mutex<HashMap<[u8; 16], u32>>,
    /// Rounds finished.
    rounds: Mutex<u64>,
    done: Condvar,
}

impl Requests {
    /// Records a request; false if the key was asked for already.
    fn ask(&self, id: &[u8; 16], version: u32) -> bool {
        self.asked.lock().insert(*id, version).is_none()
    }

    fn take(&self) -> Vec<([u8; 16], u32)> {
        self.asked.lock().drain().collect()
    }

    fn round(&self) -> u64 {
        *self.rounds.lock()
    }

    fn finish_round(&self) {
        *self.rounds.lock() += 1;
        self.done.notify_all();
    }

    /// Waits until a round after `seen` finishes; false at `deadline`.
    fn wait_round(&self, seen: u64, deadline: Instant) -> bool {
        let mut rounds = self.rounds.lock();
        while *rounds == seen {
            if self.done.wait_until(&mut rounds, deadline).timed_out() {
                return *rounds != seen;
            }
        }
        true
    }
}

/// ConflictException: an HSM-only key is already rotating.
fn in_progress(id: &[u8; 16]) -> KmsError {
    KmsError::new(
        ErrorKind::Conflict,
        format!(
            "a rotation of key {} is already in progress; retry",
            format_key_id(id)
        ),
    )
}

/// LimitExceededException: a version did its encryptions and no new one
/// came in time.
fn worn_out(id: &[u8; 16], version: u32, limit: u64) -> KmsError {
    KmsError::new(
        ErrorKind::LimitExceeded,
        format!(
            "key {} version {version} has done its {limit} HSM encryptions and its rotation \
             did not finish in time; retry",
            format_key_id(id)
        ),
    )
}

impl Service {
    /// Rotates key `id` (see the module docs): `rule` decides, the new
    /// version is committed current, the key invalidated, and the record as
    /// written returned. NotFoundException if there is no such key;
    /// UnsupportedOperationException for a key with imported material.
    pub(crate) fn rotate_key(
        &self,
        id: &[u8; 16],
        rotation_type: RotationType,
        now: i64,
        rule: Rule<'_>,
    ) -> Result<KeyRecord, KmsError> {
        let record = self.read_key(id)?;
        if record.origin == Origin::External {
            return Err(wrong_origin(id, record.origin, "rotation"));
        }
        // Asked before any material is made: a refused rotation costs
        // nothing, and leaves no token object behind.
        rule(&mut record.clone(), self.effective_state(&record))?;
        let after = match record.origin {
            Origin::Hsm => self.rotate_in_hsm(id, rotation_type, now, rule)?,
            _ => {
                let material = KeyMaterial::generate();
                let wrapped = self
                    .core
                    .root
                    .wrap(&material)
                    .map_err(|e| errors::root("wrapping backing key", e))?;
                self.commit_version(id, WrappedVersion { version: 0, wrapped }, rotation_type, now, rule)?
            }
        };
        self.invalidate(id);
        tracing::info!(
            key_id = %format_key_id(id),
            version = after.current_version,
            rotation_type = rotation_type.name(),
            "key rotated"
        );
        Ok(after)
    }

    fn commit_version(
        &self,
        id: &[u8; 16],
        version: WrappedVersion,
        rotation_type: RotationType,
        now: i64,
        rule: Rule<'_>,
    ) -> Result<KeyRecord, KmsError> {
        self.store()
            .commit_rotation(id, &version, rotation_type, now, |rec| {
                let shown = self.effective_state(rec);
                rule(rec, shown).map_err(Changed::Refused)
            })
            .map_err(|e| match e {
                Changed::Refused(e) => e,
                Changed::Store(e) => errors::store("adding a key version", e),
            })?
            .ok_or_else(|| errors::key_not_found(id))
    }

    /// An HSM-only key's new version: pending record, token object, store.
    fn rotate_in_hsm(
        &self,
        id: &[u8; 16],
        rotation_type: RotationType,
        now: i64,
        rule: Rule<'_>,
    ) -> Result<KeyRecord, KmsError> {
        let vault = self.core.root.hsm_only_keys().ok_or_else(|| {
            errors::internal(
                "rotating an HSM-only key",
                "the root of trust has no HSM for HSM-only keys",
            )
        })?;
        let version = self
            .store()
            .begin_hsm_rotation(id, now)
            .map_err(|e| errors::store("recording a pending HSM key version", e))?
            .ok_or_else(|| in_progress(id))?;
        let object = super::backing::object_id(id, version);
        if let Err(e) = vault.generate(&object) {
            // A failed generation (a timeout, a lost session) may still
            // have made the key.
            self.abandon_version(vault, id, version);
            return Err(errors::root("generating an HSM-only key version", e));
        }
        let stored = self.commit_version(
            id,
            WrappedVersion {
                version,
                wrapped: Vec::new(),
            },
            rotation_type,
            now,
            rule,
        );
        if stored.is_err() {
            self.abandon_version(vault, id, version);
        }
        stored
    }

    /// Destroys the token object of a rotation that failed after its
    /// pending record, then forgets the record; if either step fails the
    /// record stays for start-up reconciliation.
    fn abandon_version(&self, vault: &dyn HsmOnlyKeys, id: &[u8; 16], version: u32) {
        match vault.destroy(&super::backing::object_id(id, version)) {
            Ok(_) => {
                if let Err(e) = self.store().end_hsm_only_key(id, version) {
                    tracing::warn!(
                        key_id = %format_key_id(id),
                        version,
                        "forgetting a pending HSM key version: {e}; start-up will"
                    );
                }
            }
            Err(e) => tracing::warn!(
                key_id = %format_key_id(id),
                version,
                "destroying the token object of a failed rotation: {e}; start-up will retry"
            ),
        }
    }

    /// Asks the scheduler to rotate key `id` whose current `version` is
    /// wearing out. Cheap and non-blocking (a lock and a wake-up): the
    /// data path calls it.
    pub(crate) fn ask_rotation(&self, id: &[u8; 16], version: u32) {
        if self.rotations.ask(id, version) {
            self.wake.kick();
        }
    }

    /// For an encryption that found `key`'s current `version` worn out:
    /// asks for the rotation and waits (at most the load timeout; never on
    /// an I/O thread) until the key has another current version, and
    /// returns the key as loaded then (usable: AWS's exception if its state
    /// changed meanwhile). LimitExceededException if no new version came
    /// in time.
    pub(crate) fn await_rotation(
        &self,
        key: &LoadedKey,
        version: u32,
        site: Site<'_>,
    ) -> Result<Arc<LoadedKey>, ExecError> {
        if !site.may_block() {
            return Err(ExecError::NotReady);
        }
        let id = *key.id();
        let deadline = Instant::now() + self.load_timeout;
        loop {
            // Read before asking: a round that finishes in between counts.
            let seen = self.rotations.round();
            self.ask_rotation(&id, version);
            let now = self.key_at(KeyRef { id, version: None }, site)?;
            now.check_usable()?;
            if now.meta.record.current_version != version {
                return Ok(now);
            }
            if !self.rotations.wait_round(seen, deadline) {
                return Err(worn_out(&id, version, self.hsm_invocation_limit).into());
            }
        }
    }
}

/// The scheduler's rotations due at `now`: first those the data path
/// asked for (versions wearing out), then the automatic schedule's. A key
/// that fails is logged and left for the next pass (its schedule has not
/// moved: it is still due). Returns how many keys rotated.
pub fn run_due(svc: &Service, now: i64) -> Result<usize, KmsError> {
    let mut rotated = 0;
    for (id, version) in svc.rotations.take() {
        // Only while the worn version is current (two requests, one
        // rotation) and the key may rotate.
        let rule = |rec: &mut KeyRecord, shown: KeyState| {
            check(Use::Rotation, &rec.key_id, shown)?;
            if rec.current_version != version {
                return Err(KmsError::new(ErrorKind::Conflict, "rotated already"));
            }
            Ok(())
        };
        match svc.rotate_key(&id, RotationType::Automatic, now, &rule) {
            Ok(_) => rotated += 1,
            Err(e) => tracing::warn!(
                key_id = %format_key_id(&id),
                version,
                "rotation of a version near its encryption limit not done: {e}"
            ),
        }
    }
    // Wakes the encryptions waiting for these rotations, done or not.
    svc.rotations.finish_round();
    let due = svc
        .store()
        .due_rotations(now)
        .map_err(|e| errors::store("finding due rotations", e))?;
    for id in due {
        let rule = |rec: &mut KeyRecord, shown: KeyState| {
            check(Use::Rotation, &rec.key_id, shown)?;
            let (Some(days), Some(next)) = (rec.rotation_period_days, rec.next_rotation_at) else {
                return Err(KmsError::new(ErrorKind::Conflict, "automatic rotation is off"));
            };
            if next > now {
                return Err(KmsError::new(ErrorKind::Conflict, "not due any more"));
            }
            rec.next_rotation_at = Some(next_after(next, days, now));
            Ok(())
        };
        match svc.rotate_key(&id, RotationType::Automatic, now, &rule) {
            Ok(_) => rotated += 1,
            Err(e) => tracing::warn!(
                key_id = %format_key_id(&id),
                "automatic rotation not done (retried at the next pass): {e}"
            ),
        }
    }
    Ok(rotated)
}

/// The next automatic rotation after one that was due at `due` and ran at
/// `now`: one period after the due date, so that the schedule does not
/// drift by the scheduler's interval; or one period after `now` if that is
/// already past (a key disabled, or kmsd stopped, for more than a period
/// rotates once, not once per missed period).
pub fn next_after(due: i64, days: u32, now: i64) -> i64 {
    let period = i64::from(days) * DAY;
    if due + period > now {
        due + period
    } else {
        now + period
    }
}


#[cfg(test)]
mod tests {
    //! Automatic rotations and rotations of worn HSM-only versions, by the
    //! scheduler's due work, with a manual clock.

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::keystore::Keystore;
    use crate::service::scheduler::{run_due, Scheduler};
    use crate::service::states::test_support::*;
    use kms_proto::*;
    use std::time::Duration;

    fn enable(svc: &Service, key: &str, days: u32) {
        call(
            svc,
            Operation::EnableKeyRotation(EnableKeyRotation {
                key_id: key,
                rotation_period_in_days: Some(days),
            }),
        )
        .unwrap();
    }

    fn rotated(pass: &crate::service::scheduler::Pass) -> usize {
        pass.done
            .iter()
            .find(|(k, _)| *k == "rotation")
            .map_or(0, |(_, n)| *n)
    }

    fn types(svc: &Service, key: &str) -> Vec<RotationType> {
        match call(
            svc,
            Operation::ListKeyRotations(ListKeyRotations {
                key_id: key,
                limit: 0,
                marker: None,
            }),
        )
        .unwrap()
        {
            Output::ListKeyRotations(l) => l.rotations.iter().map(|r| r.rotation_type).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_rotates_at_its_period_and_not_a_second_before() {
        for origin in [Origin::Kmsd, Origin::Hsm] {
            let (svc, _hsm, clock) = service();
            let key = create(&svc, origin);
            let t0 = clock.now();
            enable(&svc, &key, 90);
            let old = encrypt(&svc, &key).unwrap();
            clock.advance(90 * DAY - 1);
            assert_eq!(rotated(&run_due(&svc)), 0);
            assert_eq!(blob_version(&encrypt(&svc, &key).unwrap()), 1);
            clock.advance(1);
            assert_eq!(rotated(&run_due(&svc)), 1);
            let new = encrypt(&svc, &key).unwrap();
            assert_eq!(blob_version(&new), 2, "{origin:?}");
            decrypt(&svc, &old).unwrap();
            decrypt(&svc, &new).unwrap();
            let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
            assert_eq!(stored.next_rotation_at, Some(t0 + 180 * DAY));
            assert_eq!(stored.on_demand_rotations, 0);
            // Late by a minute (the scheduler's interval): the schedule
            // does not drift.
            clock.advance(90 * DAY + 60);
            assert_eq!(rotated(&run_due(&svc)), 1);
            let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
            assert_eq!(stored.next_rotation_at, Some(t0 + 270 * DAY));
            assert_eq!(
                types(&svc, &key),
                [RotationType::Automatic, RotationType::Automatic]
            );
            assert_eq!(rotated(&run_due(&svc)), 0);
        }
    }

    #[test]
    fn a_disabled_key_does_not_rotate_and_rotates_once_when_enabled_again() {
        let (svc, _hsm, clock) = service();
        let key = create(&svc, Origin::Kmsd);
        enable(&svc, &key, 90);
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        clock.advance(400 * DAY);
        assert_eq!(rotated(&run_due(&svc)), 0);
        // Pending deletion does not rotate either.
        call(
            &svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: &key,
                pending_window_in_days: Some(30),
            }),
        )
        .unwrap();
        assert_eq!(rotated(&run_due(&svc)), 0);
        call(
            &svc,
            Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &key }),
        )
        .unwrap();
        call(&svc, Operation::EnableKey(EnableKey { key_id: &key })).unwrap();
        assert_eq!(rotated(&run_due(&svc)), 1);
        assert_eq!(rotated(&run_due(&svc)), 0, "once, not once per missed period");
        let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
        assert_eq!(stored.next_rotation_at, Some(clock.now() + 90 * DAY));
        assert_eq!(describe(&svc, &key).current_version, 2);
    }

    #[test]
    fn next_after_keeps_the_schedule_unless_a_period_was_missed() {
        assert_eq!(next_after(1_000, 1, 1_000), 1_000 + DAY);
        assert_eq!(next_after(1_000, 1, 1_000 + DAY - 1), 1_000 + DAY);
        assert_eq!(next_after(1_000, 1, 1_000 + DAY), 1_000 + 2 * DAY);
    }

    /// A service over `hsm` whose HSM-only versions wear out after `limit`
    /// encryptions, with its scheduler running.
    fn worn_service(limit: u64) -> (Arc<Service>, Scheduler) {
        let clock = ManualClock::at(1_700_000_000);
        let mut o = options(&clock);
        o.hsm_invocation_limit = limit;
        let svc = Arc::new(
            Service::with_options(Keystore::open_in_memory().unwrap(), TestHsm::new(), o)
                .unwrap(),
        );
        // A long interval: only the data path's requests wake it.
        let sched = Scheduler::start(Arc::clone(&svc), Duration::from_secs(3600)).unwrap();
        (svc, sched)
    }

    #[test]
    fn a_version_near_its_limit_rotates_the_key_and_encryptions_go_on() {
        let limit = 64;
        let (svc, _sched) = worn_service(limit);
        let key = create(&svc, Origin::Hsm);
        let blobs: Vec<_> = (0..3 * limit)
            .map(|i| {
                encrypt(&svc, &key).unwrap_or_else(|e| panic!("encryption {i}: {e}"))
            })
            .collect();
        let mut per_version = std::collections::BTreeMap::new();
        for b in &blobs {
            *per_version.entry(blob_version(b)).or_insert(0u64) += 1;
            decrypt(&svc, b).unwrap();
        }
        assert!(per_version.len() >= 3, "{per_version:?}");
        assert!(
            per_version.values().all(|n| *n <= limit),
            "no version past its limit: {per_version:?}"
        );
        assert!(types(&svc, &key).iter().all(|t| *t == RotationType::Automatic));
        let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
        assert_eq!(stored.on_demand_rotations, 0);
        assert_eq!(stored.next_rotation_at, None, "no schedule set by it");
    }

    #[test]
    fn concurrent_encryptions_past_the_limit_all_succeed_on_fresh_versions() {
        let limit = 32;
        let (svc, _sched) = worn_service(limit);
        let key = create(&svc, Origin::Hsm);
        let blobs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..40)
                            .map(|_| encrypt(&svc, &key).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut per_version = std::collections::BTreeMap::new();
        for b in &blobs {
            *per_version.entry(blob_version(b)).or_insert(0u64) += 1;
            decrypt(&svc, b).unwrap();
        }
        assert_eq!(blobs.len(), 160);
        assert!(
            per_version.values().all(|n| *n <= limit),
            "{per_version:?}"
        );
    }

    #[test]
    fn a_worn_version_of_a_key_disabled_meanwhile_is_answered_disabled() {
        let (svc, _sched) = worn_service(4);
        let key = create(&svc, Origin::Hsm);
        // Hold the scheduler's hand: rotate only when asked, and disable
        // the key before it can.
        for _ in 0..3 {
            encrypt(&svc, &key).unwrap();
        }
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        let e = encrypt(&svc, &key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Disabled, "{e}");
    }
}
