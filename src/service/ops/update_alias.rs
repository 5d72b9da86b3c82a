//! UpdateAlias: points an existing alias at another key (AWS). The new
//! target is a key id or key ARN (an alias is ValidationException) in any
//! state but PendingDeletion, with room for another alias
//! (`limits.max_aliases_per_key`); the old target may be in any state,
//! pending deletion included (AWS's key-state table, note 10). An alias
//! that does not exist is NotFoundException.
//!
//! Commit, then the in-memory alias table (store still held), then the
//! answer: the very next request by this name uses the new key.

use crate::errors;
use crate::identity::Identity;
use crate::service::access::Ask;
use kms_policy::Action;
use crate::keystore::{aliases as rows, annotations};
use crate::service::aliases::{self, too_many};
use crate::service::key_id::{alias_not_found, format_key_id};
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{Output, UpdateAlias};

impl Op for UpdateAlias<'_> {
    const NAME: &'static str = "UpdateAlias";
    const ACTION: &'static str = "kms:UpdateAlias";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Checks the alias, the new key's state and alias count, and moves the
    /// alias, in one transaction; then the table; then the answer.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let name = self.alias_name;
        aliases::validate_name(name)?;
        let id = super::create_alias::target_key(svc.arns(), self.target_key_id)?;
        // AWS: kms:UpdateAlias on the key the alias leaves and on the key
        // it moves to.
        let from = svc.aliases().get(name);
        if let Some(from) = from {
            svc.authorize_id(caller, &from, Action::UpdateAlias, &Ask::default())?;
        }
        svc.authorize_id(caller, &id, Action::UpdateAlias, &Ask::default())?;
        let max = svc.lifecycle_limits().max_aliases_per_key;
        let now = svc.now();
        let mut store = ctx.store();
        let old = store
            .in_transaction(|tx| {
                let alias = rows::get(tx, name)?.ok_or_else(|| alias_not_found(name, "AliasName"))?;
                if Some(alias.key_id) != from {
                    return Err(super::delete_alias::moved(name).into());
                }
                let key = annotations::key(tx, &id)?.ok_or_else(|| errors::key_not_found(&id))?;
                lifecycle::check(Use::Annotate, &id, key.state)?;
                if alias.key_id != id && rows::count_for_key(tx, &id)? >= max {
                    return Err(too_many(&id, max).into());
                }
                rows::retarget(tx, name, &id, now)?;
                Ok(alias.key_id)
            })
            .map_err(|e| e.into_client("updating an alias"))?;
        svc.aliases().set(name, id);
        // Their aliases are part of the keys' access (kms:ResourceAliases).
        svc.invalidate(&old);
        svc.invalidate(&id);
        drop(store);
        if old != id {
            tracing::info!(
                alias = name,
                from = %format_key_id(&old),
                to = %format_key_id(&id),
                "alias moved"
            );
        }
        Ok(Output::UpdateAlias)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::LifecycleLimits;
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn update(t: &TestService, alias_name: &str, target_key_id: &str) -> Result<Output, KmsError> {
        t.call(Operation::UpdateAlias(UpdateAlias {
            alias_name,
            target_key_id,
        }))
    }

    #[test]
    fn the_alias_moves_for_the_next_request_on_the_data_path_too() {
        let t = TestService::new();
        let (a, b) = (t.create_key(), t.create_key());
        t.alias("alias/app", &a);
        let gdk = |t: &TestService| match t
            .call(Operation::GenerateDataKey(GenerateDataKey {
                key_id: "alias/app",
                number_of_bytes: Some(32),
                key_spec: None,
                context: vec![],
                ..Default::default()
            }))
            .unwrap()
        {
            Output::GenerateDataKey(o) => o.key_id,
            o => panic!("unexpected {o:?}"),
        };
        assert_eq!(gdk(&t), t.arn(&a));
        update(&t, "alias/app", &b).unwrap();
        assert_eq!(gdk(&t), t.arn(&b));
        assert_eq!(t.aliases(), [("alias/app".into(), b.clone())]);
        // To the key it names already: fine.
        update(&t, "alias/app", &b).unwrap();
    }

    #[test]
    fn bad_updates_change_nothing() {
        let t = TestService::with_limits(LifecycleLimits {
            max_aliases_per_key: 1,
            ..Default::default()
        });
        let (a, b) = (t.create_key(), t.create_key());
        t.alias("alias/a", &a);
        t.alias("alias/b", &b);
        let cases = [
            ("alias/none", b.as_str(), ErrorKind::NotFound, "alias/none"),
            ("alias/a", "alias/b", ErrorKind::Validation, "TargetKeyId"),
            ("alias/a", MISSING_KEY, ErrorKind::NotFound, "00000000-"),
            ("alias/aws/x", &b, ErrorKind::InvalidAliasName, "AliasName"),
            ("alias/a", &b, ErrorKind::LimitExceeded, "max_aliases_per_key"),
        ];
        for (name, target, kind, needle) in cases {
            let e = update(&t, name, target).unwrap_err();
            assert_eq!(e.kind, kind, "{name} -> {target}: {e}");
            assert!(e.message.contains(needle), "{e}");
        }
        t.set_state(&b, KeyState::PendingDeletion);
        let c = t.create_key();
        // The new target may not be pending deletion ...
        t.call(Operation::DeleteAlias(DeleteAlias { alias_name: "alias/a" }))
            .unwrap();
        t.alias("alias/a", &a);
        let e = update(&t, "alias/a", &b).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        // ... the old one may.
        update(&t, "alias/b", &c).unwrap();
        assert_eq!(
            t.aliases(),
            [("alias/a".into(), a.clone()), ("alias/b".into(), c.clone())]
        );
    }
}
