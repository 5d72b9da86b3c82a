//! DeleteAlias: removes an alias; its key is unaffected and may be in any
//! state (AWS). An alias that does not exist is NotFoundException.
//!
//! Commit, then the in-memory alias table (store still held), then the
//! answer: the very next request by this name is NotFoundException.

use crate::identity::Identity;
use crate::service::access::Ask;
use kms_policy::Action;
use crate::keystore::{aliases as rows, annotations};
use crate::service::aliases;
use crate::service::key_id::alias_not_found;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{DeleteAlias, Output};

/// ConflictException: the alias was moved or made between the check of the
/// caller's permission and the change (by another request); retry.
pub(crate) fn moved(name: &str) -> kms_proto::KmsError {
    kms_proto::KmsError::new(
        kms_proto::ErrorKind::Conflict,
        format!("alias {name} changed while the request ran; retry"),
    )
}

impl Op for DeleteAlias<'_> {
    const NAME: &'static str = "DeleteAlias";
    const ACTION: &'static str = "kms:DeleteAlias";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Deletes the row in one transaction, then the table entry, then
    /// answers.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let name = self.alias_name;
        aliases::validate_name(name)?;
        // kms:DeleteAlias on the key it names (the table is the store's
        // copy; the transaction checks it still names that key).
        let target = svc.aliases().get(name);
        if let Some(id) = target {
            svc.authorize_id(caller, &id, Action::DeleteAlias, &Ask::default())?;
        }
        let mut store = ctx.store();
        store
            .in_transaction(|tx| {
                let alias = rows::get(tx, name)?.ok_or_else(|| alias_not_found(name, "AliasName"))?;
                if Some(alias.key_id) != target {
                    return Err(moved(name).into());
                }
                if let Some(key) = annotations::key(tx, &alias.key_id)? {
                    lifecycle::check(Use::Read, &alias.key_id, key.state)?;
                }
                rows::delete(tx, name)?;
                Ok(())
            })
            .map_err(|e| e.into_client("deleting an alias"))?;
        svc.aliases().remove(name);
        if let Some(id) = target {
            // Its aliases are part of the key's access (kms:ResourceAliases).
            svc.invalidate(&id);
        }
        drop(store);
        Ok(Output::DeleteAlias)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn delete(t: &TestService, alias_name: &str) -> Result<Output, KmsError> {
        t.call(Operation::DeleteAlias(DeleteAlias { alias_name }))
    }

    #[test]
    fn a_deleted_alias_is_not_found_from_the_next_request() {
        let t = TestService::new();
        let key = t.create_key();
        t.alias("alias/gone", &key);
        t.alias("alias/kept", &key);
        // Any state: a key pending deletion loses its aliases too.
        t.set_state(&key, KeyState::PendingDeletion);
        delete(&t, "alias/gone").unwrap();
        let e = t
            .call(Operation::Encrypt(Encrypt {
                key_id: "alias/gone",
                plaintext: b"x",
                context: vec![],
                ..Default::default()
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("alias/gone"), "{e}");
        assert_eq!(t.aliases(), [("alias/kept".into(), key.clone())]);
        let e = delete(&t, "alias/gone").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains("AliasName"), "{e}");
        assert_eq!(delete(&t, "alias/aws/x").unwrap_err().kind, ErrorKind::InvalidAliasName);
        assert_eq!(t.aliases().len(), 1);
    }
}
