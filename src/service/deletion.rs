//! Deletion of keys whose waiting period ended: the scheduler's due work
//! ([`run_due`]), and the settling of HSM-only key versions whose token
//! objects are to be destroyed.
//!
//! A key is deleted in one store transaction with everything that names
//! it: versions, tags, aliases, import parameters, usage reservations
//! (`Keystore::delete_key`). Then it is invalidated, so that nothing
//! cached of it survives: every ciphertext under it is NotFoundException
//! from then on, forever (key ids are random UUIDs, never reused), and it
//! is gone from ListKeys and DescribeKey.
//!
//! An HSM-only key's token objects are destroyed crash-safely: the
//! deletion's transaction records each version pending ('delete'), then
//! the token objects are destroyed, then the records cleared. A crash or an
//! HSM failure in between leaves the records; each pass of the scheduler
//! and start-up reconciliation (`ops::create_key::reconcile_hsm_only_keys`)
//! destroy what they name. No token object outlives its deleted key.

use super::{format_key_id, Service};
use crate::errors;
use crate::keystore::lifecycle::PendingReason;
use crate::root::HsmOnlyKeys;
use kms_proto::KmsError;

/// Deletes every key whose deletion is due at `now`, then retries token
/// objects of deleted keys that could not be destroyed before. Returns how
/// many keys were deleted. A key that fails is logged and left for the
/// next pass.
pub fn run_due(svc: &Service, now: i64) -> Result<usize, KmsError> {
    let due = svc
        .store()
        .due_deletions(now)
        .map_err(|e| errors::store("finding due deletions", e))?;
    let mut deleted = 0;
    for id in due {
        match svc.delete_due_key(&id, now) {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => tracing::error!(
                key_id = %format_key_id(&id),
                "deleting a key whose waiting period ended failed (retried at the next pass): {e}"
            ),
        }
    }
    svc.destroy_deleted_versions()
        .map_err(|e| errors::store("reading pending HSM key versions", e))?;
    Ok(deleted)
}

impl Service {
    /// Deletes key `id` if its deletion is due at `now` (false if it is
    /// not: cancelled meanwhile, or gone).
    fn delete_due_key(&self, id: &[u8; 16], now: i64) -> Result<bool, KmsError> {
        // An import wrapping key the root still holds for this key is
        // recorded pending first (the deletion forgets its parameters): a
        // crash after the deletion leaves the record, and start-up
        // destroys the pair; a crash before it, the store still names the
        // pair, and start-up keeps it.
        let wrapping = self
            .store()
            .import_params(id)
            .map_err(|e| errors::store("reading import parameters", e))?
            .filter(|p| !p.wrapping_key.is_empty())
            .and_then(|p| super::imports::wrapping_key_id(&p.token));
        if let Some(w) = &wrapping {
            self.store()
                .begin_wrapping_key(w, now)
                .map_err(|e| errors::store("recording an import wrapping key to destroy", e))?;
        }
        let deleted = {
            let mut store = self.store();
            let deleted = store.delete_key(id, now);
            if let Ok(Some(_)) = deleted {
                // Its alias rows went in the deletion's transaction; the
                // in-memory table follows before the store is released.
                self.forget_aliases_of(id);
            }
            deleted.map_err(|e| errors::store("deleting a key", e))
        };
        let Some(deleted) = deleted? else {
            if let Some(w) = &wrapping {
                // Not deleted: the pair stays, and so does its key's token.
                self.store()
                    .end_wrapping_key(w)
                    .map_err(|e| errors::store("forgetting a pending wrapping key", e))?;
            }
            return Ok(false);
        };
        self.invalidate(id);
        if let Some(w) = &wrapping {
            super::imports::settle_wrapping_key(self, w);
        }
        tracing::info!(
            key_id = %format_key_id(id),
            versions = deleted.hsm_versions.len(),
            "key deleted: its waiting period ended"
        );
        if !deleted.hsm_versions.is_empty() {
            self.core.usage.forget_key(id);
            if let Some(vault) = self.core.root.hsm_only_keys() {
                for v in deleted.hsm_versions {
                    self.destroy_deleted_version(vault, id, v);
                }
            }
        }
        Ok(true)
    }

    /// Destroys the token object of a deleted key's version, then forgets
    /// its pending record; a failure keeps the record for the next pass
    /// and the next start.
    fn destroy_deleted_version(&self, vault: &dyn HsmOnlyKeys, id: &[u8; 16], version: u32) {
        let object = super::backing::object_id(id, version);
        match vault.destroy(&object) {
            Ok(existed) => {
                if let Err(e) = self.store().end_hsm_only_key(id, version) {
                    tracing::warn!(
                        key_id = %format_key_id(id),
                        version,
                        "forgetting a destroyed token object: {e}; retried"
                    );
                } else {
                    tracing::info!(
                        key_id = %format_key_id(id),
                        version,
                        existed,
                        "token object of a deleted key destroyed"
                    );
                }
            }
            Err(e) => tracing::warn!(
                key_id = %format_key_id(id),
                version,
                "destroying the token object of a deleted key failed (retried at the next pass and at start): {e}"
            ),
        }
    }

    /// Destroys the token objects of deleted keys left pending by an
    /// earlier failure. Only 'delete' records: a 'create' or 'rotate' one
    /// may be an operation in flight, settled at start-up only.
    fn destroy_deleted_versions(&self) -> Result<(), crate::keystore::StoreError> {
        let pending: Vec<_> = self
            .store()
            .pending_hsm_versions()?
            .into_iter()
            .filter(|p| p.reason == PendingReason::Delete)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let Some(vault) = self.core.root.hsm_only_keys() else {
            return Ok(());
        };
        for p in pending {
            self.destroy_deleted_version(vault, &p.key_id, p.version);
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    //! Deletions carried out by the scheduler's due work, with a manual
    //! clock; the HSM-only keys' token objects in an in-memory HSM.

    use crate::clock::{Clock, ManualClock};
    use crate::keystore::lifecycle::{PendingHsm, PendingReason};
    use crate::keystore::Keystore;
    use crate::service::scheduler::run_due;
    use crate::service::states::test_support::*;
    use crate::service::states::DAY;
    use crate::service::Service;
    use kms_proto::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn schedule(svc: &Service, key: &str, days: u32) {
        call(
            svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: key,
                pending_window_in_days: Some(days),
            }),
        )
        .unwrap();
    }

    fn listed(svc: &Service) -> Vec<String> {
        match call(svc, Operation::ListKeys(ListKeys::default())).unwrap() {
            Output::ListKeys(l) => l.keys.into_iter().map(|k| k.key_id).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn deleted(pass: &crate::service::scheduler::Pass) -> usize {
        pass.done
            .iter()
            .find(|(k, _)| *k == "deletion")
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn a_key_is_deleted_when_its_window_ends_and_not_a_second_before() {
        let (svc, hsm, clock) = service();
        let soft = create(&svc, Origin::Kmsd);
        let only = create(&svc, Origin::Hsm);
        let kept = create(&svc, Origin::Kmsd);
        let cancelled = create(&svc, Origin::Kmsd);
        let blobs: Vec<_> = [&soft, &only]
            .map(|k| encrypt(&svc, k).unwrap())
            .into_iter()
            .collect();
        call(
            &svc,
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &only }),
        )
        .unwrap();
        assert_eq!(hsm.objects_of(&id(&only)), 2);
        // What else names the soft key: an alias and a tag.
        call(
            &svc,
            Operation::CreateAlias(CreateAlias {
                alias_name: "alias/doomed",
                target_key_id: &soft,
            }),
        )
        .unwrap();
        call(
            &svc,
            Operation::TagResource(TagResource {
                key_id: &soft,
                tags: vec![Tag {
                    key: "team",
                    value: "x",
                }],
            }),
        )
        .unwrap();
        assert_eq!(describe(&svc, "alias/doomed").key_id, soft);
        for k in [&soft, &only, &cancelled] {
            schedule(&svc, k, 7);
        }
        call(
            &svc,
            Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &cancelled }),
        )
        .unwrap();
        clock.advance(7 * DAY - 1);
        assert_eq!(deleted(&run_due(&svc)), 0);
        assert_eq!(describe(&svc, &soft).key_state, KeyState::PendingDeletion);
        clock.advance(1);
        let pass = run_due(&svc);
        assert!(pass.failed.is_empty(), "{pass:?}");
        assert_eq!(deleted(&pass), 2);
        for (key, blob) in [&soft, &only].into_iter().zip(&blobs) {
            let e = fails(
                &svc,
                Operation::DescribeKey(DescribeKey {
                    key_id: key,
                    ..Default::default()
                }),
            );
            assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
            // Its ciphertexts: NotFound, forever.
            let e = decrypt(&svc, blob).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
            assert!(e.message.contains("deleted"), "{e}");
            assert_eq!(encrypt(&svc, key).unwrap_err().kind, ErrorKind::NotFound);
            assert_eq!(svc.store().rows_naming(&id(key)).unwrap(), 0);
        }
        // Its alias went with it, from the store and from the alias table
        // requests resolve through.
        let e = fails(
            &svc,
            Operation::DescribeKey(DescribeKey {
                key_id: "alias/doomed",
                ..Default::default()
            }),
        );
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(encrypt(&svc, "alias/doomed").unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(svc.aliases().get("alias/doomed"), None);
        match call(&svc, Operation::ListAliases(ListAliases::default())).unwrap() {
            Output::ListAliases(l) => assert!(l.aliases.is_empty(), "{l:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(hsm.objects_of(&id(&only)), 0, "token objects destroyed");
        assert!(svc.store().pending_hsm_versions().unwrap().is_empty());
        let mut left = listed(&svc);
        left.sort();
        let mut want = vec![kept.clone(), cancelled.clone()];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(describe(&svc, &cancelled).key_state, KeyState::Disabled);
        // The next pass has nothing to do.
        clock.advance(DAY);
        assert_eq!(run_due(&svc).total(), 0);
    }

    #[test]
    fn overdue_work_is_done_at_the_first_pass_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let hsm = TestHsm::new();
        let clock = ManualClock::at(1_700_000_000);
        let open = |c: &Arc<ManualClock>| {
            service_on(Keystore::open(dir.path()).unwrap(), hsm.clone(), c)
        };
        let (doomed, rotating, blob) = {
            let svc = open(&clock);
            let doomed = create(&svc, Origin::Hsm);
            let rotating = create(&svc, Origin::Kmsd);
            let blob = encrypt(&svc, &doomed).unwrap();
            schedule(&svc, &doomed, 30);
            call(
                &svc,
                Operation::EnableKeyRotation(EnableKeyRotation {
                    key_id: &rotating,
                    rotation_period_in_days: Some(90),
                }),
            )
            .unwrap();
            (doomed, rotating, blob)
        };
        // kmsd was stopped for a year.
        let later = ManualClock::at(clock.now() + 365 * DAY);
        let svc = open(&later);
        assert_eq!(svc.reconcile_hsm_only_keys().unwrap(), 0);
        let pass = run_due(&svc);
        assert_eq!(
            pass.done
                .iter()
                .filter(|(kind, _)| ["deletion", "rotation"].contains(kind))
                .collect::<Vec<_>>(),
            [&("deletion", 1), &("rotation", 1)],
            "one rotation, not one per missed period"
        );
        assert_eq!(decrypt(&svc, &blob).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(hsm.objects_of(&id(&doomed)), 0);
        let stored = svc.store().get_key(&id(&rotating)).unwrap().unwrap();
        assert_eq!(stored.current_version, 2);
        assert_eq!(stored.next_rotation_at, Some(later.now() + 90 * DAY));
        drop(svc);
        // And across a further restart: still gone.
        let svc = open(&later);
        assert_eq!(decrypt(&svc, &blob).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(run_due(&svc).total(), 0);
    }

    #[test]
    fn token_objects_that_could_not_be_destroyed_are_destroyed_later() {
        let dir = tempfile::tempdir().unwrap();
        let hsm = TestHsm::new();
        let clock = ManualClock::at(1_700_000_000);
        let open = || service_on(Keystore::open(dir.path()).unwrap(), hsm.clone(), &clock);
        let svc = open();
        let (a, b) = (create(&svc, Origin::Hsm), create(&svc, Origin::Hsm));
        schedule(&svc, &a, 7);
        schedule(&svc, &b, 8);
        hsm.fail_destroy.store(true, Ordering::SeqCst);
        clock.advance(7 * DAY);
        // The key is deleted (its store rows, in one transaction); its
        // token object waits, recorded.
        assert_eq!(run_due(&svc).total(), 1);
        assert_eq!(describe_err(&svc, &a), ErrorKind::NotFound);
        assert_eq!(hsm.objects_of(&id(&a)), 1);
        assert_eq!(
            svc.store().pending_hsm_versions().unwrap(),
            [PendingHsm {
                key_id: id(&a),
                version: 1,
                reason: PendingReason::Delete
            }]
        );
        // The next pass destroys it once the HSM lets it.
        hsm.fail_destroy.store(false, Ordering::SeqCst);
        run_due(&svc);
        assert_eq!(hsm.objects_of(&id(&a)), 0);
        assert!(svc.store().pending_hsm_versions().unwrap().is_empty());
        // A stop in between: start-up reconciliation destroys it.
        hsm.fail_destroy.store(true, Ordering::SeqCst);
        clock.advance(DAY);
        run_due(&svc);
        assert_eq!(hsm.objects_of(&id(&b)), 1);
        drop(svc);
        hsm.fail_destroy.store(false, Ordering::SeqCst);
        let svc = open();
        assert_eq!(svc.reconcile_hsm_only_keys().unwrap(), 1);
        assert_eq!(hsm.objects_of(&id(&b)), 0);
        assert!(svc.store().pending_hsm_versions().unwrap().is_empty());
    }

    fn describe_err(svc: &Service, key: &str) -> ErrorKind {
        fails(
            svc,
            Operation::DescribeKey(DescribeKey {
                key_id: key,
                ..Default::default()
            }),
        )
        .kind
    }

    #[test]
    fn start_up_destroys_the_token_object_of_a_rotation_a_crash_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let hsm = TestHsm::new();
        let clock = ManualClock::at(1_700_000_000);
        let open = || service_on(Keystore::open(dir.path()).unwrap(), hsm.clone(), &clock);
        let svc = open();
        let key = create(&svc, Origin::Hsm);
        let blob = encrypt(&svc, &key).unwrap();
        // What a crash between generating version 2 and storing it leaves.
        let v = svc.store().begin_hsm_rotation(&id(&key), clock.now()).unwrap();
        assert_eq!(v, Some(2));
        use crate::root::HsmOnlyKeys;
        hsm.generate(&crate::service::backing::object_id(&id(&key), 2))
            .unwrap();
        // While it is recorded, another rotation waits its turn.
        let e = fails(
            &svc,
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &key }),
        );
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        let status = match call(
            &svc,
            Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: &key }),
        )
        .unwrap()
        {
            Output::GetKeyRotationStatus(s) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(status.on_demand_rotation_start_date, Some(clock.now()));
        drop(svc);
        let svc = open();
        assert_eq!(svc.reconcile_hsm_only_keys().unwrap(), 1);
        assert_eq!(hsm.objects_of(&id(&key)), 1, "version 1 kept");
        decrypt(&svc, &blob).unwrap();
        call(
            &svc,
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &key }),
        )
        .unwrap();
        assert_eq!(blob_version(&encrypt(&svc, &key).unwrap()), 2);
        assert_eq!(hsm.objects_of(&id(&key)), 2);
    }
}
