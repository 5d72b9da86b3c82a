//! UpdateKeyDescription: replaces a key's description (AWS: the key is
//! named by key id or key ARN; every state but PendingDeletion).

use crate::service::LifecycleLimits;
use crate::identity::Identity;
use crate::keystore::annotations;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{KmsError, Output, UpdateKeyDescription};

/// A description is at most `limits.max_description_len` characters
/// (AWS: 8192); longer is ValidationException naming Description.
pub(crate) fn validate_description(d: &str, limits: &LifecycleLimits) -> Result<(), KmsError> {
    let n = d.chars().count();
    if n > limits.max_description_len {
        return Err(KmsError::validation(format!(
            "Description must be at most {} characters (got {n}; limits.max_description_len)",
            limits.max_description_len
        )));
    }
    Ok(())
}

impl Op for UpdateKeyDescription<'_> {
    const NAME: &'static str = "UpdateKeyDescription";
    const ACTION: &'static str = "kms:UpdateKeyDescription";
    type Plane = Control;

    fn validate(&self, svc: &crate::service::Service) -> Result<(), KmsError> {
        validate_description(self.description, svc.lifecycle_limits())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Checks, then sets the description in one transaction; then
    /// invalidates the cached key (its record holds the description) and
    /// answers.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let id = ctx.service().parse_key_id(self.key_id)?;
        validate_description(self.description, svc.lifecycle_limits())?;
        ctx.store()
            .in_transaction(|tx| {
                let key = annotations::key(tx, &id)?
                    .ok_or_else(|| crate::errors::key_not_found(&id))?;
                lifecycle::check(Use::Annotate, &id, key.state)?;
                annotations::set_description(tx, &id, self.description)?;
                Ok(())
            })
            .map_err(|e| e.into_client("updating a key's description"))?;
        svc.invalidate(&id);
        Ok(Output::UpdateKeyDescription)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    #[test]
    fn the_description_changes_within_the_limit_and_nothing_else_is_accepted() {
        let t = TestService::new();
        let key = t.create_key();
        t.call(Operation::UpdateKeyDescription(UpdateKeyDescription {
            key_id: &key,
            description: "new words",
        }))
        .unwrap();
        assert_eq!(t.describe(&key).description, "new words");
        let long = "é".repeat(8193);
        let e = t
            .call(Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: &key,
                description: &long,
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.message.contains("Description"), "{e}");
        // By alias: not accepted (AWS takes a key id or key ARN here).
        t.alias("alias/d", &key);
        let e = t
            .call(Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: "alias/d",
                description: "x",
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(t.describe(&key).description, "new words");
        let e = t
            .call(Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: MISSING_KEY,
                description: "x",
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_key_pending_deletion_keeps_its_description() {
        let t = TestService::new();
        let key = t.create_key();
        t.set_state(&key, KeyState::PendingDeletion);
        let e = t
            .call(Operation::UpdateKeyDescription(UpdateKeyDescription {
                key_id: &key,
                description: "x",
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        assert_eq!(t.describe(&key).description, "");
    }
}
