//! TagResource: adds tags to a key, or replaces the value of a tag key it
//! has (AWS: the key is named by key id or key ARN; every state but
//! PendingDeletion). Over `limits.max_tags_per_key` after the change is
//! LimitExceededException (AWS's resource quota), and nothing is applied.

use crate::service::LifecycleLimits;
use crate::identity::Identity;
use crate::keystore::annotations;
use crate::service::key_id::shown;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::format_key_id;
use kms_proto::{ErrorKind, KmsError, Output, Tag, TagResource};

/// Checks tags as AWS does: each key 1..=`limits.max_tag_key_len`
/// characters and each value 0..=`limits.max_tag_value_len`
/// (ValidationException naming `Tags[i].TagKey` or `Tags[i].TagValue`); a
/// key starting with `aws:` in any case is reserved for AWS, and a tag key
/// twice in one request is ambiguous: TagException (AWS: "one or more tags
/// are not valid").
pub(crate) fn validate_tags(tags: &[Tag<'_>], limits: &LifecycleLimits) -> Result<(), KmsError> {
    for (i, t) in tags.iter().enumerate() {
        let n = t.key.chars().count();
        if n == 0 || n > limits.max_tag_key_len {
            return Err(KmsError::validation(format!(
                "Tags[{i}].TagKey must be 1..={} characters (got {n}; limits.max_tag_key_len)",
                limits.max_tag_key_len
            )));
        }
        let n = t.value.chars().count();
        if n > limits.max_tag_value_len {
            return Err(KmsError::validation(format!(
                "Tags[{i}].TagValue must be at most {} characters (got {n}; limits.max_tag_value_len)",
                limits.max_tag_value_len
            )));
        }
        if t.key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(KmsError::new(
                ErrorKind::Tag,
                format!(
                    "Tags[{i}].TagKey {} starts with aws:, which is reserved for AWS",
                    shown(t.key)
                ),
            ));
        }
        if tags[..i].iter().any(|u| u.key == t.key) {
            return Err(KmsError::new(
                ErrorKind::Tag,
                format!("Tags[{i}].TagKey {} appears twice", shown(t.key)),
            ));
        }
    }
    Ok(())
}

impl Op for TagResource<'_> {
    const NAME: &'static str = "TagResource";
    const ACTION: &'static str = "kms:TagResource";
    type Plane = Control;

    fn validate(&self, svc: &crate::service::Service) -> Result<(), KmsError> {
        if self.tags.is_empty() {
            return Err(KmsError::validation("Tags must hold at least one tag"));
        }
        validate_tags(&self.tags, svc.lifecycle_limits())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        OutputSize::default()
    }

    /// Checks the tags, the key and the limit, then writes, in one
    /// transaction; then invalidates the key and answers.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let id = ctx.service().parse_key_id(self.key_id)?;
        let limits = svc.lifecycle_limits();
        if self.tags.is_empty() {
            return Err(KmsError::validation("Tags must hold at least one tag").into());
        }
        validate_tags(&self.tags, limits)?;
        let max = limits.max_tags_per_key as usize;
        ctx.store()
            .in_transaction(|tx| {
                let key = annotations::key(tx, &id)?
                    .ok_or_else(|| crate::errors::key_not_found(&id))?;
                lifecycle::check(Use::Annotate, &id, key.state)?;
                let after = annotations::count_tags_with(tx, &id, &self.tags)?;
                if after > max {
                    return Err(KmsError::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "key {} would have {after} tags, more than the {max} allowed \
                             (limits.max_tags_per_key)",
                            format_key_id(&id)
                        ),
                    )
                    .into());
                }
                annotations::set_tags(tx, &id, &self.tags)?;
                Ok(())
            })
            .map_err(|e| e.into_client("tagging a key"))?;
        // Tags are not in the cached record today; invalidated anyway, so
        // that nothing cached can outlive a change of a key's metadata.
        svc.invalidate(&id);
        Ok(Output::TagResource)
    }
}

#[cfg(test)]
mod tests {
    use crate::service::LifecycleLimits;
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn tag_resource(t: &TestService, key_id: &str, pairs: &[(&str, &str)]) -> Result<Output, KmsError> {
        t.call(Operation::TagResource(TagResource {
            key_id,
            tags: tags(pairs),
        }))
    }

    #[test]
    fn tags_are_added_and_replaced() {
        let t = TestService::new();
        let key = t.create_key();
        tag_resource(&t, &key, &[("b", "1"), ("a", "")]).unwrap();
        tag_resource(&t, &key, &[("b", "2")]).unwrap();
        assert_eq!(
            t.tags(&key),
            [("a".into(), "".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn bad_tags_are_refused_with_aws_exceptions_and_nothing_is_applied() {
        let t = TestService::new();
        let key = t.create_key();
        tag_resource(&t, &key, &[("keep", "1")]).unwrap();
        let long_key = "k".repeat(129);
        let long_value = "v".repeat(257);
        type Case<'a> = (&'a [(&'a str, &'a str)], ErrorKind, &'a str);
        let cases: [Case<'_>; 6] = [
            (&[("ok", "1"), ("", "x")], ErrorKind::Validation, "Tags[1].TagKey"),
            (&[(&long_key, "x")], ErrorKind::Validation, "Tags[0].TagKey"),
            (&[("ok", &long_value)], ErrorKind::Validation, "Tags[0].TagValue"),
            (&[("ok", "1"), ("aws:x", "1")], ErrorKind::Tag, "Tags[1].TagKey"),
            (&[("AWS:x", "1")], ErrorKind::Tag, "aws:"),
            (&[("d", "1"), ("d", "2")], ErrorKind::Tag, "twice"),
        ];
        for (pairs, kind, needle) in cases {
            let e = tag_resource(&t, &key, pairs).unwrap_err();
            assert_eq!(e.kind, kind, "{pairs:?}: {e}");
            assert!(e.message.contains(needle), "{e}");
            assert_eq!(t.tags(&key), [("keep".into(), "1".into())]);
        }
        let e = tag_resource(&t, &key, &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        let e = tag_resource(&t, MISSING_KEY, &[("a", "1")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        t.alias("alias/t", &key);
        let e = tag_resource(&t, "alias/t", &[("a", "1")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        t.set_state(&key, KeyState::PendingDeletion);
        let e = tag_resource(&t, &key, &[("a", "1")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::KmsInvalidState);
        assert_eq!(t.tags(&key), [("keep".into(), "1".into())]);
    }

    #[test]
    fn over_the_limit_is_limit_exceeded_and_nothing_is_applied() {
        let t = TestService::with_limits(LifecycleLimits {
            max_tags_per_key: 3,
            ..Default::default()
        });
        let key = t.create_key();
        tag_resource(&t, &key, &[("a", "1"), ("b", "1")]).unwrap();
        // Replacing existing keys does not count.
        tag_resource(&t, &key, &[("a", "2"), ("b", "2"), ("c", "2")]).unwrap();
        let e = tag_resource(&t, &key, &[("a", "3"), ("d", "3")]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert!(e.message.contains("max_tags_per_key"), "{e}");
        let now = t.tags(&key);
        assert_eq!(now.len(), 3);
        assert!(now.iter().all(|(_, v)| v == "2"), "{now:?}");
    }
}
