//! RotateKeyOnDemand: a new backing-key version now, current from the
//! answer on (every older version still decrypts). RotationType ON_DEMAND;
//! at most `limits.max_on_demand_rotations` per key over its life (AWS:
//! 25; then LimitExceededException); the automatic schedule does not move
//! (AWS: on-demand rotation is "independent of the automatic schedule").
//! AWS answers before its rotation finishes; kmsd answers once it is
//! committed, so the answer means new ciphertexts use the new version.
//!
//! Enabled keys only (Disabled: DisabledException); keys with imported
//! material: UnsupportedOperationException (AWS rotates those only with
//! new material imported for the rotation, which kmsd does not offer).
//! An HSM-only key already rotating: ConflictException (AWS's answer for a
//! rotation in progress).

use crate::identity::Identity;
use crate::service::lifecycle::{check, wrong_origin, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::{format_key_id, MAX_KEY_ARN_TEXT};
use kms_proto::{
    ErrorKind, KeyState, KmsError, Origin, Output, RotateKeyOnDemand, RotateKeyOnDemandOutput,
    RotationType,
};

impl Op for RotateKeyOnDemand<'_> {
    const NAME: &'static str = "RotateKeyOnDemand";
    const ACTION: &'static str = "kms:RotateKeyOnDemand";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT,
            ..OutputSize::default()
        }
    }

    /// Rotates: new version committed current, invalidated, answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let limit = svc.lifecycle_limits().max_on_demand_rotations;
        let record = svc.read_key(&id)?;
        if record.origin == Origin::External {
            return Err(wrong_origin(&id, record.origin, Self::NAME).into());
        }
        let rule = |rec: &mut crate::keystore::KeyRecord, shown: KeyState| {
            check(Use::Rotation, &id, shown)?;
            if rec.on_demand_rotations >= limit {
                return Err(KmsError::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "key {} has been rotated on demand {} times, the most allowed \
                         (limits.max_on_demand_rotations = {limit})",
                        format_key_id(&id),
                        rec.on_demand_rotations
                    ),
                ));
            }
            rec.on_demand_rotations += 1;
            Ok(())
        };
        svc.rotate_key(&id, RotationType::OnDemand, svc.now(), &rule)?;
        Ok(Output::RotateKeyOnDemand(RotateKeyOnDemandOutput {
            key_id: ctx.service().arns().key_arn(&id),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! RotateKeyOnDemand and ListKeyRotations.

    use crate::keystore::Keystore;
    use crate::service::states::test_support::*;
    use crate::service::Service;
    use kms_proto::*;

    fn rotate(svc: &Service, key: &str) -> Result<Output, KmsError> {
        call(svc, Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: key }))
    }

    fn rotations(
        svc: &Service,
        key: &str,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListKeyRotationsOutput, KmsError> {
        match call(
            svc,
            Operation::ListKeyRotations(ListKeyRotations {
                key_id: key,
                limit,
                marker,
            }),
        )? {
            Output::ListKeyRotations(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rotation_makes_new_ciphertexts_use_a_new_version_and_old_ones_still_decrypt() {
        for origin in [Origin::Kmsd, Origin::Hsm] {
            let (svc, hsm, clock) = service();
            let key = create(&svc, origin);
            call(
                &svc,
                Operation::EnableKeyRotation(EnableKeyRotation {
                    key_id: &key,
                    rotation_period_in_days: Some(90),
                }),
            )
            .unwrap();
            let next = svc.store().get_key(&id(&key)).unwrap().unwrap().next_rotation_at;
            let old = encrypt(&svc, &key).unwrap();
            assert_eq!(blob_version(&old), 1);
            let Output::RotateKeyOnDemand(o) = rotate(&svc, &key).unwrap() else {
                panic!()
            };
            assert_eq!(o.key_id, crate::service::Arns::default().key_arn(&id(&key)));
            let new = encrypt(&svc, &key).unwrap();
            assert_eq!(blob_version(&new), 2, "{origin:?}");
            decrypt(&svc, &old).unwrap();
            decrypt(&svc, &new).unwrap();
            assert_eq!(describe(&svc, &key).current_version, 2);
            // The automatic schedule did not move (AWS).
            let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
            assert_eq!((stored.next_rotation_at, stored.on_demand_rotations), (next, 1));
            if origin == Origin::Hsm {
                assert_eq!(hsm.objects_of(&id(&key)), 2);
                assert!(svc.store().pending_hsm_versions().unwrap().is_empty());
            }
            let list = rotations(&svc, &key, 0, None).unwrap();
            assert_eq!(
                list.rotations,
                [RotationsListEntry {
                    key_id: crate::service::Arns::default().key_arn(&id(&key)),
                    rotation_date: clock.now(),
                    rotation_type: RotationType::OnDemand,
                }]
            );
            assert!(!list.truncated);
            // After a restart of the service too.
            drop(svc);
        }
    }

    use crate::clock::Clock;

    #[test]
    fn on_demand_rotations_are_limited_per_key_and_need_an_enabled_key() {
        let hsm = TestHsm::new();
        let clock = crate::clock::ManualClock::at(1_000_000);
        let mut options = options(&clock);
        options.lifecycle_limits.max_on_demand_rotations = 2;
        let svc = Service::with_options(Keystore::open_in_memory().unwrap(), hsm, options).unwrap();
        let key = create(&svc, Origin::Kmsd);
        rotate(&svc, &key).unwrap();
        rotate(&svc, &key).unwrap();
        let e = rotate(&svc, &key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
        assert!(e.message.contains("max_on_demand_rotations"), "{e}");
        assert_eq!(describe(&svc, &key).current_version, 3, "nothing applied");
        // Automatic rotations do not count against it.
        let other = create(&svc, Origin::Kmsd);
        call(&svc, Operation::DisableKey(DisableKey { key_id: &other })).unwrap();
        let e = rotate(&svc, &other).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Disabled, "{e}");
        call(
            &svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: &other,
                pending_window_in_days: None,
            }),
        )
        .unwrap();
        let e = rotate(&svc, &other).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
        assert_eq!(describe(&svc, &other).current_version, 1);
        let e = rotate(&svc, "11111111-2222-4333-8444-555555555555").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn rotations_are_listed_oldest_first_in_pages() {
        let (svc, _hsm, clock) = service();
        let key = create(&svc, Origin::Kmsd);
        assert!(rotations(&svc, &key, 0, None).unwrap().rotations.is_empty());
        let mut dates = Vec::new();
        for _ in 0..5 {
            clock.advance(60);
            dates.push(clock.now());
            rotate(&svc, &key).unwrap();
        }
        let mut seen = Vec::new();
        let mut marker = None;
        loop {
            let page = rotations(&svc, &key, 2, marker.as_deref()).unwrap();
            assert!(page.rotations.len() <= 2);
            seen.extend(page.rotations.iter().map(|r| r.rotation_date));
            assert_eq!(page.truncated, page.next_marker.is_some());
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, dates);
        for bad in ["x", "0", "-1", "+2", "99999999999"] {
            let e = rotations(&svc, &key, 0, Some(bad)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidMarker, "{bad}: {e}");
        }
        let e = rotations(&svc, &key, 1001, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation, "{e}");
        assert!(e.message.contains("Limit"), "{e}");
        assert_eq!(rotations(&svc, &key, 1000, None).unwrap().rotations.len(), 5);
        // Every state may be read.
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        assert_eq!(rotations(&svc, &key, 0, None).unwrap().rotations.len(), 5);
        let e = rotations(&svc, "11111111-2222-4333-8444-555555555555", 0, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }
}
