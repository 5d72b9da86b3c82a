//! ListResourceTags: a key's tags in tag-key order, paged (Limit 1..=50,
//! default 50, as AWS) with an opaque marker. The key is named by key id
//! or key ARN; every state.

use crate::errors;
use crate::identity::Identity;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::codec::TAG_ENTRY_FIXED;
use kms_proto::types::limits::{
    DEFAULT_LIST_TAGS_LIMIT, MAX_LIST_TAGS_LIMIT, MAX_TAG_KEY_LEN, MAX_TAG_VALUE_LEN,
};
use kms_proto::{KmsError, ListResourceTags, ListResourceTagsOutput, Output};

/// The page size asked for (0: the default); out of range is
/// ValidationException naming Limit.
fn limit(req: &ListResourceTags<'_>) -> Result<u32, KmsError> {
    match req.limit {
        0 => Ok(DEFAULT_LIST_TAGS_LIMIT),
        n if n <= MAX_LIST_TAGS_LIMIT => Ok(n),
        n => Err(KmsError::validation(format!(
            "Limit {n} is out of range 1..={MAX_LIST_TAGS_LIMIT}"
        ))),
    }
}

impl Op for ListResourceTags<'_> {
    const NAME: &'static str = "ListResourceTags";
    const ACTION: &'static str = "kms:ListResourceTags";
    type Plane = Control;

    fn validate(&self, _svc: &crate::service::Service) -> Result<(), KmsError> {
        limit(self)?;
        if let Some(m) = self.marker {
            super::marker::decode(m, "ListResourceTags")?;
        }
        Ok(())
    }

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        let n = limit(self).unwrap_or(0) as usize;
        // Stored tags are at most 128 and 256 characters of up to 4 bytes;
        // the marker is a tag key in hex.
        let entry = 4 * (MAX_TAG_KEY_LEN + MAX_TAG_VALUE_LEN) + TAG_ENTRY_FIXED.saturating_sub(64);
        OutputSize {
            success: n * entry + 2 * 4 * MAX_TAG_KEY_LEN,
            error_text: 0,
            entries: n,
        }
    }

    /// Reads one page.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let id = ctx.service().parse_key_id(self.key_id)?;
        let limit = limit(self)?;
        let after = self
            .marker
            .map(|m| super::marker::decode(m, "ListResourceTags"))
            .transpose()?;
        let store = ctx.store();
        let key = store
            .get_key(&id)
            .map_err(|e| errors::store("reading key", e))?
            .ok_or_else(|| errors::key_not_found(&id))?;
        lifecycle::check(Use::Read, &id, key.state)?;
        // One more than asked tells whether another page exists.
        let mut tags = store
            .list_tags(&id, after.as_deref(), limit + 1)
            .map_err(|e| errors::store("listing tags", e))?;
        drop(store);
        let truncated = tags.len() > limit as usize;
        tags.truncate(limit as usize);
        let next_marker = truncated.then(|| super::marker::encode(&tags.last().expect("non-empty").key));
        Ok(Output::ListResourceTags(ListResourceTagsOutput {
            tags,
            next_marker,
            truncated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn page(t: &TestService, key_id: &str, limit: u32, marker: Option<&str>) -> Result<ListResourceTagsOutput, KmsError> {
        match t.call(Operation::ListResourceTags(ListResourceTags {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListResourceTags(o) => Ok(o),
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn pages_in_tag_key_order_with_opaque_markers() {
        let t = TestService::new();
        let key = t.create_key();
        let names: Vec<String> = (0..7).rev().map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        t.call(Operation::TagResource(TagResource {
            key_id: &key,
            tags: tags(&pairs),
        }))
        .unwrap();
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let p = page(&t, &key, 3, marker.as_deref()).unwrap();
            seen.extend(p.tags.into_iter().map(|t| t.key));
            assert_eq!(p.truncated, p.next_marker.is_some());
            match p.next_marker {
                Some(m) => {
                    assert!(!m.contains('k'), "the marker is opaque: {m}");
                    marker = Some(m)
                }
                None => break,
            }
        }
        assert_eq!(seen, ["k0", "k1", "k2", "k3", "k4", "k5", "k6"]);
        // The default page holds them all.
        assert_eq!(page(&t, &key, 0, None).unwrap().tags.len(), 7);
    }

    #[test]
    fn bad_limits_markers_and_keys_are_refused() {
        let t = TestService::new();
        let key = t.create_key();
        let e = page(&t, &key, 51, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.message.contains("Limit"), "{e}");
        for m in ["zz", "k1", "abc", "ff"] {
            let e = page(&t, &key, 0, Some(m)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidMarker, "{m}");
        }
        assert_eq!(page(&t, MISSING_KEY, 0, None).unwrap_err().kind, ErrorKind::NotFound);
        // Every state may be read.
        t.set_state(&key, KeyState::PendingDeletion);
        assert!(page(&t, &key, 0, None).unwrap().tags.is_empty());
    }
}
