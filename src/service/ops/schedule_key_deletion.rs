//! ScheduleKeyDeletion: the key goes to PendingDeletion and is deleted,
//! with every version, alias, tag and import parameter, once its waiting
//! period ends (`service::deletion`, run by the scheduler). While pending
//! deletion it cannot be used for cryptography (KMSInvalidStateException)
//! and does not rotate; CancelKeyDeletion brings it back Disabled.
//!
//! PendingWindowInDays: 7..=30 days, 30 when absent (AWS). The answer
//! names the key by its ARN, as AWS's does.

use crate::identity::Identity;
use crate::service::lifecycle::{transition, Transition};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::states::DAY;
use crate::service::MAX_KEY_ARN_TEXT;
use kms_proto::types::limits::{
    DEFAULT_PENDING_WINDOW_IN_DAYS, MAX_PENDING_WINDOW_IN_DAYS, MIN_PENDING_WINDOW_IN_DAYS,
};
use kms_proto::{KmsError, Output, ScheduleKeyDeletion, ScheduleKeyDeletionOutput};

/// The waiting period the request asks for, in days.
pub fn validate(req: &ScheduleKeyDeletion<'_>) -> Result<u32, KmsError> {
    match req.pending_window_in_days {
        None => Ok(DEFAULT_PENDING_WINDOW_IN_DAYS),
        Some(d) if (MIN_PENDING_WINDOW_IN_DAYS..=MAX_PENDING_WINDOW_IN_DAYS).contains(&d) => Ok(d),
        Some(d) => Err(KmsError::validation(format!(
            "PendingWindowInDays {d} is out of range \
             {MIN_PENDING_WINDOW_IN_DAYS}..={MAX_PENDING_WINDOW_IN_DAYS}"
        ))),
    }
}

impl Op for ScheduleKeyDeletion<'_> {
    const NAME: &'static str = "ScheduleKeyDeletion";
    const ACTION: &'static str = "kms:ScheduleKeyDeletion";
    type Plane = Control;

    fn validate(&self, _svc: &crate::service::Service) -> Result<(), KmsError> {
        validate(self).map(drop)
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize {
            success: MAX_KEY_ARN_TEXT,
            ..OutputSize::default()
        }
    }

    /// PendingDeletion with its deletion date in the store, then
    /// invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let days = validate(self)?;
        let id = ctx.service().parse_key_id(self.key_id)?;
        let svc = ctx.service();
        let deletion_date = svc.now() + i64::from(days) * DAY;
        let updated = svc.change_key(&id, |rec, shown| {
            rec.state = transition(&id, shown, Transition::ScheduleDeletion)?;
            rec.deletion_date = Some(deletion_date);
            rec.pending_window_days = Some(days);
            Ok(())
        })?;
        tracing::info!(
            key_id = %crate::service::format_key_id(&id),
            deletion_date,
            "key scheduled for deletion"
        );
        Ok(Output::ScheduleKeyDeletion(ScheduleKeyDeletionOutput {
            key_id: ctx.service().arns().key_arn(&id),
            deletion_date,
            key_state: updated.after.state,
            pending_window_in_days: days,
        }))
    }
}

#[cfg(test)]
mod tests {
    //! ScheduleKeyDeletion and CancelKeyDeletion.

    use crate::clock::Clock;
    use crate::service::states::test_support::*;
    use crate::service::states::DAY;
    use kms_proto::*;

    fn schedule<'a>(key: &'a str, days: Option<u32>) -> Operation<'a> {
        Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
            key_id: key,
            pending_window_in_days: days,
        })
    }

    #[test]
    fn the_window_is_7_to_30_days_and_nothing_is_applied_outside() {
        let (svc, _hsm, clock) = service();
        let key = create(&svc, Origin::Kmsd);
        for bad in [0, 6, 31, 365, u32::MAX] {
            let e = fails(&svc, schedule(&key, Some(bad)));
            assert_eq!(e.kind, ErrorKind::Validation, "{e}");
            assert!(e.message.contains("PendingWindowInDays"), "{e}");
            assert_eq!(describe(&svc, &key).key_state, KeyState::Enabled);
        }
        let now = clock.now();
        let Output::ScheduleKeyDeletion(o) = call(&svc, schedule(&key, None)).unwrap() else {
            panic!()
        };
        assert_eq!(
            o,
            ScheduleKeyDeletionOutput {
                key_id: crate::service::Arns::default().key_arn(&id(&key)),
                deletion_date: now + 30 * DAY,
                key_state: KeyState::PendingDeletion,
                pending_window_in_days: 30,
            }
        );
        let m = describe(&svc, &key);
        assert_eq!(m.key_state, KeyState::PendingDeletion);
        assert_eq!(m.deletion_date, Some(now + 30 * DAY));
        assert_eq!(m.pending_deletion_window_in_days, Some(30));
        // Twice: KMSInvalidStateException, the first date kept.
        let e = fails(&svc, schedule(&key, Some(7)));
        assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
        assert_eq!(describe(&svc, &key).deletion_date, Some(now + 30 * DAY));
        let other = create(&svc, Origin::Kmsd);
        let Output::ScheduleKeyDeletion(o) = call(&svc, schedule(&other, Some(7))).unwrap() else {
            panic!()
        };
        assert_eq!((o.deletion_date, o.pending_window_in_days), (now + 7 * DAY, 7));
    }

    #[test]
    fn a_key_pending_deletion_refuses_crypto_and_cancelling_leaves_it_disabled() {
        let (svc, _hsm, _clock) = service();
        let key = create(&svc, Origin::Kmsd);
        let blob = encrypt(&svc, &key).unwrap();
        call(&svc, schedule(&key, Some(7))).unwrap();
        for e in [encrypt(&svc, &key).unwrap_err(), decrypt(&svc, &blob).unwrap_err()] {
            assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
            assert!(e.message.contains("pending deletion"), "{e}");
        }
        let Output::CancelKeyDeletion(o) =
            call(&svc, Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &key })).unwrap()
        else {
            panic!()
        };
        assert_eq!(o.key_id, crate::service::Arns::default().key_arn(&id(&key)));
        let m = describe(&svc, &key);
        assert_eq!(m.key_state, KeyState::Disabled);
        assert_eq!((m.deletion_date, m.pending_deletion_window_in_days), (None, None));
        assert_eq!(decrypt(&svc, &blob).unwrap_err().kind, ErrorKind::Disabled);
        // Not pending deletion any more.
        let e = fails(&svc, Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &key }));
        assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
        assert!(e.message.contains("not pending deletion"), "{e}");
        call(&svc, Operation::EnableKey(EnableKey { key_id: &key })).unwrap();
        decrypt(&svc, &blob).unwrap();
        // A disabled key may be scheduled too.
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        call(&svc, schedule(&key, Some(30))).unwrap();
        let stored = svc.store().get_key(&id(&key)).unwrap().unwrap();
        assert_eq!(stored.pending_window_days, Some(30));
    }
}
