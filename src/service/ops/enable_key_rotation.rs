//! EnableKeyRotation: automatic rotation every RotationPeriodInDays
//! (90..=2560, 365 when absent: AWS), the first one period after this
//! call (AWS: "the number of days after you enable automatic key
//! rotation"). On a key that already rotates automatically, a new period
//! counts from the last rotation (or the day rotation was enabled): the
//! next date becomes that day plus the new period, so repeating the call
//! never postpones a rotation; if that date has passed, the key rotates at
//! the scheduler's next pass.
//!
//! Enabled keys only (Disabled: DisabledException; other states:
//! KMSInvalidStateException, as AWS's table); keys with imported material
//! cannot rotate automatically (UnsupportedOperationException, as AWS).
//! HSM-only keys rotate (a new token key per rotation).

use crate::identity::Identity;
use crate::service::lifecycle::{check, wrong_origin, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::states::DAY;
use kms_proto::types::limits::{
    DEFAULT_ROTATION_PERIOD_IN_DAYS, MAX_ROTATION_PERIOD_IN_DAYS, MIN_ROTATION_PERIOD_IN_DAYS,
};
use kms_proto::{EnableKeyRotation, KmsError, Origin, Output};

/// The rotation period the request asks for, in days.
pub fn validate(req: &EnableKeyRotation<'_>) -> Result<u32, KmsError> {
    match req.rotation_period_in_days {
        None => Ok(DEFAULT_ROTATION_PERIOD_IN_DAYS),
        Some(d) if (MIN_ROTATION_PERIOD_IN_DAYS..=MAX_ROTATION_PERIOD_IN_DAYS).contains(&d) => {
            Ok(d)
        }
        Some(d) => Err(KmsError::validation(format!(
            "RotationPeriodInDays {d} is out of range \
             {MIN_ROTATION_PERIOD_IN_DAYS}..={MAX_ROTATION_PERIOD_IN_DAYS}"
        ))),
    }
}

impl Op for EnableKeyRotation<'_> {
    const NAME: &'static str = "EnableKeyRotation";
    const ACTION: &'static str = "kms:EnableKeyRotation";
    type Plane = Control;

    fn validate(&self, _svc: &crate::service::Service) -> Result<(), KmsError> {
        validate(self).map(drop)
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// The schedule in the store, then invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let days = validate(self)?;
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let now = svc.now();
        svc.change_key(&id, |rec, shown| {
            if rec.origin == Origin::External {
                return Err(wrong_origin(&id, rec.origin, Self::NAME));
            }
            check(Use::Rotation, &id, shown)?;
            let period = i64::from(days) * DAY;
            let next = match (rec.rotation_period_days, rec.next_rotation_at) {
                // Already on: the new period counts from the last rotation.
                (Some(old), Some(next)) => next - i64::from(old) * DAY + period,
                _ => now + period,
            };
            rec.rotation_period_days = Some(days);
            rec.next_rotation_at = Some(next);
            Ok(())
        })?;
        Ok(Output::EnableKeyRotation)
    }
}

#[cfg(test)]
mod tests {
    //! EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus.

    use crate::clock::Clock;
    use crate::keystore::{KeyRecord, WrappedVersion};
    use crate::service::states::test_support::*;
    use crate::service::states::DAY;
    use kms_proto::*;

    fn enable<'a>(key: &'a str, days: Option<u32>) -> Operation<'a> {
        Operation::EnableKeyRotation(EnableKeyRotation {
            key_id: key,
            rotation_period_in_days: days,
        })
    }

    fn status(svc: &crate::service::Service, key: &str) -> GetKeyRotationStatusOutput {
        match call(
            svc,
            Operation::GetKeyRotationStatus(GetKeyRotationStatus { key_id: key }),
        ) {
            Ok(Output::GetKeyRotationStatus(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_period_is_90_to_2560_days_and_the_schedule_counts_from_enabling() {
        let (svc, _hsm, clock) = service();
        let key = create(&svc, Origin::Kmsd);
        let arn = crate::service::Arns::default().key_arn(&id(&key));
        assert_eq!(
            status(&svc, &key),
            GetKeyRotationStatusOutput {
                key_id: arn.clone(),
                ..Default::default()
            }
        );
        for bad in [0, 89, 2561] {
            let e = fails(&svc, enable(&key, Some(bad)));
            assert_eq!(e.kind, ErrorKind::Validation, "{e}");
            assert!(e.message.contains("RotationPeriodInDays"), "{e}");
            assert!(!status(&svc, &key).key_rotation_enabled);
        }
        let t0 = clock.now();
        assert_eq!(call(&svc, enable(&key, None)).unwrap(), Output::EnableKeyRotation);
        assert_eq!(
            status(&svc, &key),
            GetKeyRotationStatusOutput {
                key_id: arn.clone(),
                key_rotation_enabled: true,
                rotation_period_in_days: Some(365),
                next_rotation_date: Some(t0 + 365 * DAY),
                on_demand_rotation_start_date: None,
            }
        );
        // A new period counts from the same start: repeating the call never
        // postpones the rotation.
        clock.advance(10 * DAY);
        call(&svc, enable(&key, Some(90))).unwrap();
        assert_eq!(status(&svc, &key).next_rotation_date, Some(t0 + 90 * DAY));
        call(&svc, enable(&key, Some(90))).unwrap();
        assert_eq!(status(&svc, &key).next_rotation_date, Some(t0 + 90 * DAY));
        assert_eq!(
            call(
                &svc,
                Operation::DisableKeyRotation(DisableKeyRotation { key_id: &key })
            )
            .unwrap(),
            Output::DisableKeyRotation
        );
        assert_eq!(
            status(&svc, &key),
            GetKeyRotationStatusOutput {
                key_id: arn,
                ..Default::default()
            }
        );
        // Enabled again: a new schedule from today (AWS).
        call(&svc, enable(&key, Some(2560))).unwrap();
        assert_eq!(
            status(&svc, &key).next_rotation_date,
            Some(clock.now() + 2560 * DAY)
        );
    }

    #[test]
    fn rotation_settings_need_an_enabled_key_and_its_own_material() {
        let (svc, _hsm, _clock) = service();
        let key = create(&svc, Origin::Kmsd);
        call(&svc, enable(&key, Some(100))).unwrap();
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        for op in [
            enable(&key, Some(200)),
            Operation::DisableKeyRotation(DisableKeyRotation { key_id: &key }),
        ] {
            let e = fails(&svc, op);
            assert_eq!(e.kind, ErrorKind::Disabled, "{e}");
        }
        // Disabling the key keeps its rotation status (AWS).
        let s = status(&svc, &key);
        assert!(s.key_rotation_enabled);
        assert_eq!(s.rotation_period_in_days, Some(100));
        // Pending deletion: rotation shows off, and comes back on cancel.
        call(
            &svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: &key,
                pending_window_in_days: None,
            }),
        )
        .unwrap();
        let s = status(&svc, &key);
        assert!(!s.key_rotation_enabled);
        assert_eq!((s.rotation_period_in_days, s.next_rotation_date), (None, None));
        let e = fails(&svc, enable(&key, None));
        assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
        call(&svc, Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &key })).unwrap();
        assert_eq!(status(&svc, &key).rotation_period_in_days, Some(100));
        // A key with imported material (stored directly: CreateKey does not
        // make them yet) cannot rotate automatically.
        let ext = [7u8; 16];
        svc.store()
            .insert_key(
                &KeyRecord {
                    key_id: ext,
                    state: KeyState::Enabled,
                    origin: Origin::External,
                    current_version: 1,
                    ..Default::default()
                },
                &WrappedVersion {
                    version: 1,
                    wrapped: vec![0; 40],
                },
            )
            .unwrap();
        let ext = crate::service::format_key_id(&ext);
        for op in [
            enable(&ext, None),
            Operation::DisableKeyRotation(DisableKeyRotation { key_id: &ext }),
            Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &ext }),
        ] {
            let e = fails(&svc, op);
            assert_eq!(e.kind, ErrorKind::UnsupportedOperation, "{e}");
            assert!(e.message.contains("EXTERNAL"), "{e}");
        }
        assert!(!status(&svc, &ext).key_rotation_enabled);
        let missing = "11111111-2222-4333-8444-555555555555";
        let e = fails(&svc, enable(missing, None));
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    }
}
