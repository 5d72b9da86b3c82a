//! DisableKey: cryptographic operations with the key fail with
//! DisabledException from the moment the answer is sent (the change is
//! committed and every cached copy invalidated first: a request queued
//! before it and run after it loads the key again). Allowed from Enabled,
//! Disabled (a no-op, as in AWS) and Unavailable; elsewhere AWS's
//! KMSInvalidStateException. A disabled key keeps its automatic rotation
//! setting but does not rotate (AWS).

use crate::identity::Identity;
use crate::service::lifecycle::{transition, Transition};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{DisableKey, Output};

impl Op for DisableKey<'_> {
    const NAME: &'static str = "DisableKey";
    const ACTION: &'static str = "kms:DisableKey";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Disabled in the store, then invalidated, then answered.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        ctx.service().change_key(&id, |rec, shown| {
            rec.state = transition(&id, shown, Transition::Disable)?;
            Ok(())
        })?;
        Ok(Output::DisableKey)
    }
}

#[cfg(test)]
mod tests {
    //! EnableKey and DisableKey.

    use crate::service::states::test_support::*;
    use crate::service::{ExecError, Site};
    use kms_proto::*;

    #[test]
    fn a_disabled_key_refuses_crypto_from_the_answer_on_and_enabling_restores_it() {
        let (svc, _hsm, _clock) = service();
        let key = create(&svc, Origin::Kmsd);
        let blob = encrypt(&svc, &key).unwrap();
        // Cached, so an I/O thread could use it inline.
        let enc = Operation::Encrypt(Encrypt {
            key_id: &key,
            plaintext: b"x",
            context: vec![],
            ..Default::default()
        });
        svc.execute(&enc, &PEER, Site::Io).unwrap();
        assert_eq!(call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap(), Output::DisableKey);
        // The cached copy went with the answer: no stale use inline.
        assert_eq!(svc.execute(&enc, &PEER, Site::Io), Err(ExecError::NotReady));
        let e = encrypt(&svc, &key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Disabled, "{e}");
        assert!(e.message.contains(&key) && e.message.contains("disabled"), "{e}");
        assert_eq!(decrypt(&svc, &blob).unwrap_err().kind, ErrorKind::Disabled);
        let m = describe(&svc, &key);
        assert_eq!((m.key_state, m.enabled), (KeyState::Disabled, false));
        // Again: allowed, nothing changes (AWS).
        call(&svc, Operation::DisableKey(DisableKey { key_id: &key })).unwrap();
        assert_eq!(call(&svc, Operation::EnableKey(EnableKey { key_id: &key })).unwrap(), Output::EnableKey);
        call(&svc, Operation::EnableKey(EnableKey { key_id: &key })).unwrap();
        decrypt(&svc, &blob).unwrap();
        assert!(describe(&svc, &key).enabled);
    }

    #[test]
    fn enable_and_disable_refuse_a_key_pending_deletion_and_unknown_keys() {
        let (svc, _hsm, _clock) = service();
        let key = create(&svc, Origin::Kmsd);
        call(
            &svc,
            Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                key_id: &key,
                pending_window_in_days: Some(7),
            }),
        )
        .unwrap();
        for op in [
            Operation::EnableKey(EnableKey { key_id: &key }),
            Operation::DisableKey(DisableKey { key_id: &key }),
        ] {
            let e = fails(&svc, op);
            assert_eq!(e.kind, ErrorKind::KmsInvalidState, "{e}");
            assert!(e.message.contains("pending deletion"), "{e}");
        }
        assert_eq!(describe(&svc, &key).key_state, KeyState::PendingDeletion);
        let missing = "11111111-2222-4333-8444-555555555555";
        let e = fails(&svc, Operation::DisableKey(DisableKey { key_id: missing }));
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        let e = fails(&svc, Operation::EnableKey(EnableKey { key_id: "nope" }));
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        // The ARN form names the key too.
        let arn = crate::service::Arns::default().key_arn(&id(&key));
        call(&svc, Operation::CancelKeyDeletion(CancelKeyDeletion { key_id: &arn })).unwrap();
        call(&svc, Operation::EnableKey(EnableKey { key_id: &arn })).unwrap();
        assert_eq!(describe(&svc, &key).key_state, KeyState::Enabled);
    }
}
