//! UntagResource: removes tag keys from a key; a tag key the key does not
//! have is no error (AWS). The key is named by key id or key ARN; every
//! state but PendingDeletion.

use crate::identity::Identity;
use crate::keystore::annotations;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{KmsError, Output, UntagResource};

impl Op for UntagResource<'_> {
    const NAME: &'static str = "UntagResource";
    const ACTION: &'static str = "kms:UntagResource";
    type Plane = Control;

    fn validate(&self, svc: &crate::service::Service) -> Result<(), KmsError> {
        let max = svc.lifecycle_limits().max_tag_key_len;
        if self.tag_keys.is_empty() {
            return Err(KmsError::validation("TagKeys must hold at least one tag key"));
        }
        for (i, k) in self.tag_keys.iter().enumerate() {
            let n = k.chars().count();
            if n == 0 || n > max {
                return Err(KmsError::validation(format!(
                    "TagKeys[{i}] must be 1..={max} characters (got {n}; limits.max_tag_key_len)"
                )));
            }
        }
        Ok(())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Checks the key, removes the tags in one transaction, invalidates the
    /// key, answers.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let id = ctx.service().parse_key_id(self.key_id)?;
        let max = svc.lifecycle_limits().max_tag_key_len;
        if self.tag_keys.is_empty() {
            return Err(KmsError::validation("TagKeys must hold at least one tag key").into());
        }
        for (i, k) in self.tag_keys.iter().enumerate() {
            let n = k.chars().count();
            if n == 0 || n > max {
                return Err(KmsError::validation(format!(
                    "TagKeys[{i}] must be 1..={max} characters (got {n}; limits.max_tag_key_len)"
                ))
                .into());
            }
        }
        ctx.store()
            .in_transaction(|tx| {
                let key = annotations::key(tx, &id)?
                    .ok_or_else(|| crate::errors::key_not_found(&id))?;
                lifecycle::check(Use::Annotate, &id, key.state)?;
                annotations::remove_tags(tx, &id, &self.tag_keys)?;
                Ok(())
            })
            .map_err(|e| e.into_client("untagging a key"))?;
        svc.invalidate(&id);
        Ok(Output::UntagResource)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    #[test]
    fn tags_go_missing_ones_are_fine_and_bad_requests_change_nothing() {
        let t = TestService::new();
        let key = t.create_key();
        t.call(Operation::TagResource(TagResource {
            key_id: &key,
            tags: tags(&[("a", "1"), ("b", "2")]),
        }))
        .unwrap();
        let untag = |key_id: &str, tag_keys: Vec<&str>| {
            t.call(Operation::UntagResource(UntagResource { key_id, tag_keys }))
        };
        untag(&key, vec!["a", "never-there"]).unwrap();
        assert_eq!(t.tags(&key), [("b".into(), "2".into())]);
        let long = "k".repeat(129);
        for (keys, kind) in [
            (vec!["b", ""], ErrorKind::Validation),
            (vec![long.as_str()], ErrorKind::Validation),
            (vec![], ErrorKind::Validation),
        ] {
            let e = untag(&key, keys).unwrap_err();
            assert_eq!(e.kind, kind);
            assert!(e.message.contains("TagKeys"), "{e}");
        }
        assert_eq!(untag(MISSING_KEY, vec!["b"]).unwrap_err().kind, ErrorKind::NotFound);
        t.set_state(&key, KeyState::PendingDeletion);
        assert_eq!(untag(&key, vec!["b"]).unwrap_err().kind, ErrorKind::KmsInvalidState);
        assert_eq!(t.tags(&key), [("b".into(), "2".into())]);
    }
}
