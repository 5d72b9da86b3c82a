//! CreateAlias: a new name for a key (AWS's rules: see
//! [`aliases::validate_name`]). The target is a key id or key ARN, never
//! another alias (ValidationException); it may be in any state but
//! PendingDeletion; a name in use is AlreadyExistsException; a key with
//! `limits.max_aliases_per_key` aliases is LimitExceededException.
//!
//! The change is committed, then the in-memory alias table is updated
//! (while the store is still held), then answered: the next request may
//! use the name, on the data path too.

use crate::errors;
use crate::identity::Identity;
use crate::service::access::Ask;
use kms_policy::Action;
use crate::keystore::{aliases as rows, annotations};
use crate::service::aliases::{self, already_exists, target_is_alias, too_many};
use crate::service::key_id::{Arns, KeyName};
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{CreateAlias, KmsError, Output};

/// The key a CreateAlias or UpdateAlias names in TargetKeyId: a key id or
/// key ARN (an alias is ValidationException, as AWS: "Aliases must refer
/// to keys").
pub(crate) fn target_key(arns: &Arns, target: &str) -> Result<[u8; 16], KmsError> {
    match arns.parse_key_name(target, "TargetKeyId")? {
        KeyName::Key(id) => Ok(id),
        KeyName::Alias(_) => Err(target_is_alias("TargetKeyId")),
    }
}

impl Op for CreateAlias<'_> {
    const NAME: &'static str = "CreateAlias";
    const ACTION: &'static str = "kms:CreateAlias";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::InApply
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Checks the name, the key's state, the name's freedom and the key's
    /// alias count, and inserts the alias, in one transaction; then the
    /// alias table; then the answer.
    fn apply(&self, ctx: &ControlCtx<'_>, caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let name = self.alias_name;
        aliases::validate_name(name)?;
        let id = target_key(svc.arns(), self.target_key_id)?;
        svc.authorize_id(caller, &id, Action::CreateAlias, &Ask::default())?;
        let max = svc.lifecycle_limits().max_aliases_per_key;
        let now = svc.now();
        let mut store = ctx.store();
        store
            .in_transaction(|tx| {
                let key = annotations::key(tx, &id)?.ok_or_else(|| errors::key_not_found(&id))?;
                lifecycle::check(Use::Annotate, &id, key.state)?;
                if rows::get(tx, name)?.is_some() {
                    return Err(already_exists(svc.arns(), name).into());
                }
                if rows::count_for_key(tx, &id)? >= max {
                    return Err(too_many(&id, max).into());
                }
                rows::insert(tx, name, &id, now)?;
                Ok(())
            })
            .map_err(|e| e.into_client("creating an alias"))?;
        // Before the store is let go: changes reach the table in the order
        // they reached the store.
        svc.aliases().set(name, id);
        // Its aliases are part of the key's access (kms:ResourceAliases).
        svc.invalidate(&id);
        drop(store);
        Ok(Output::CreateAlias)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::LifecycleLimits;
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn create(t: &TestService, alias_name: &str, target_key_id: &str) -> Result<Output, KmsError> {
        t.call(Operation::CreateAlias(CreateAlias {
            alias_name,
            target_key_id,
        }))
    }

    #[test]
    fn an_alias_names_its_key_by_name_and_by_arn() {
        let t = TestService::new();
        let key = t.create_key();
        create(&t, "alias/app", &key).unwrap();
        let id = t.svc.parse_key_id(&key).unwrap();
        create(&t, "alias/app-by-arn", &t.svc.arns().key_arn(&id)).unwrap();
        create(&t, "alias/app-by-legacy-arn", &format!("arn:kmsd:kms:local:key/{key}")).unwrap();
        assert_eq!(t.describe("alias/app").key_id, key);
        assert_eq!(t.describe("arn:aws:kms:us-east-1:000000000000:alias/app").key_id, key);
        assert_eq!(t.describe("arn:kmsd:kms:local:alias/app").key_id, key);
        assert_eq!(t.aliases().len(), 3);
    }

    #[test]
    fn bad_requests_are_refused_with_aws_exceptions_and_nothing_is_created() {
        let t = TestService::new();
        let key = t.create_key();
        let other = t.create_key();
        t.alias("alias/taken", &other);
        let cases = [
            ("alias/bad name", key.as_str(), ErrorKind::Validation, "AliasName"),
            ("alias/aws/ebs", &key, ErrorKind::InvalidAliasName, "AliasName"),
            ("nope/x", &key, ErrorKind::Validation, "AliasName"),
            ("alias/a:b", &key, ErrorKind::InvalidAliasName, "AliasName"),
            ("alias/taken", &key, ErrorKind::AlreadyExists, "AliasName"),
            ("alias/x", "alias/taken", ErrorKind::Validation, "TargetKeyId"),
            ("alias/x", "arn:aws:kms:us-east-1:000000000000:alias/taken", ErrorKind::Validation, "TargetKeyId"),
            ("alias/x", "arn:kmsd:kms:local:alias/taken", ErrorKind::Validation, "TargetKeyId"),
            ("alias/x", MISSING_KEY, ErrorKind::NotFound, "00000000-"),
            ("alias/x", "arn:aws:kms:us-east-1:000000000000:key/zzz", ErrorKind::NotFound, "TargetKeyId"),
            ("alias/x", "arn:kmsd:kms:local:key/zzz", ErrorKind::NotFound, "TargetKeyId"),
        ];
        for (name, target, kind, needle) in cases {
            let e = create(&t, name, target).unwrap_err();
            assert_eq!(e.kind, kind, "{name} -> {target}: {e}");
            assert!(e.message.contains(needle), "{e}");
        }
        assert_eq!(t.aliases(), [("alias/taken".into(), other.clone())]);
        assert_eq!(t.svc.aliases().len(), 1);
    }

    #[test]
    fn a_key_pending_deletion_gets_no_alias_other_states_do() {
        let t = TestService::new();
        let key = t.create_key();
        t.set_state(&key, KeyState::Disabled);
        create(&t, "alias/disabled", &key).unwrap();
        t.set_state(&key, KeyState::PendingDeletion);
        let e = create(&t, "alias/pending", &key).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        let ext = t.create(CreateKey {
            origin: Origin::External,
            ..Default::default()
        });
        create(&t, "alias/external", &ext.key_id).unwrap();
        assert_eq!(t.aliases().len(), 2);
    }

    #[test]
    fn the_alias_limit_is_per_key() {
        let t = TestService::with_limits(LifecycleLimits {
            max_aliases_per_key: 2,
            ..Default::default()
        });
        let (a, b) = (t.create_key(), t.create_key());
        create(&t, "alias/a1", &a).unwrap();
        create(&t, "alias/a2", &a).unwrap();
        let e = create(&t, "alias/a3", &a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert!(e.message.contains("max_aliases_per_key"), "{e}");
        create(&t, "alias/b1", &b).unwrap();
        assert_eq!(t.aliases().len(), 3);
        assert!(t.svc.aliases().get("alias/a3").is_none());
    }
}
