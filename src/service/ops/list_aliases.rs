//! ListAliases: aliases in name order, all or one key's (KeyId: a key id
//! or key ARN, as AWS), paged (Limit 1..=1000, default 100) with an opaque
//! marker. Every key state.

use crate::errors;
use crate::identity::Identity;
use crate::service::key_id::MAX_ARN_BASE_TEXT;
use crate::service::lifecycle::{self, Use};
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::{format_key_id, KEY_ID_TEXT};
use kms_proto::codec::{ALIAS_ENTRY_FIXED, KEY_ENTRY_FIXED};
use kms_proto::types::limits::{DEFAULT_LIST_LIMIT, MAX_ALIAS_NAME_LEN, MAX_LIST_ALIASES_LIMIT};
use kms_proto::{AliasListEntry, KmsError, ListAliases, ListAliasesOutput, Output};

/// The page size asked for (0: the default); out of range is
/// ValidationException naming Limit.
fn limit(req: &ListAliases<'_>) -> Result<u32, KmsError> {
    match req.limit {
        0 => Ok(DEFAULT_LIST_LIMIT),
        n if n <= MAX_LIST_ALIASES_LIMIT => Ok(n),
        n => Err(KmsError::validation(format!(
            "Limit {n} is out of range 1..={MAX_LIST_ALIASES_LIMIT}"
        ))),
    }
}

impl Op for ListAliases<'_> {
    const NAME: &'static str = "ListAliases";
    const ACTION: &'static str = "kms:ListAliases";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::Account
    }

    fn output_size(&self) -> OutputSize {
        let n = limit(self).unwrap_or(0) as usize;
        // Stored names are ASCII (validated), at most 256 bytes; the ARN
        // repeats the name; the marker is a name in hex. `wire::bound`
        // counts a list entry's fixed part as a ListKeys entry's.
        let entry = MAX_ALIAS_NAME_LEN
            + MAX_ARN_BASE_TEXT
            + MAX_ALIAS_NAME_LEN
            + KEY_ID_TEXT
            + ALIAS_ENTRY_FIXED.saturating_sub(KEY_ENTRY_FIXED);
        OutputSize {
            success: n * entry + 2 * MAX_ALIAS_NAME_LEN,
            error_text: 0,
            entries: n,
        }
    }

    /// Reads one page from the store.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let limit = limit(self)?;
        let svc = ctx.service();
        let key = self.key_id.map(|k| svc.parse_key_id(k)).transpose()?;
        let after = self
            .marker
            .map(|m| super::marker::decode(m, "ListAliases"))
            .transpose()?;
        let store = ctx.store();
        if let Some(id) = &key {
            let record = store
                .get_key(id)
                .map_err(|e| errors::store("reading key", e))?
                .ok_or_else(|| errors::key_not_found(id))?;
            lifecycle::check(Use::Read, id, record.state)?;
        }
        // One more than asked tells whether another page exists.
        let mut rows = store
            .list_aliases(key.as_ref(), after.as_deref(), limit + 1)
            .map_err(|e| errors::store("listing aliases", e))?;
        drop(store);
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_marker =
            truncated.then(|| super::marker::encode(&rows.last().expect("non-empty").name));
        Ok(Output::ListAliases(ListAliasesOutput {
            aliases: rows
                .into_iter()
                .map(|a| AliasListEntry {
                    alias_arn: svc.arns().alias_arn(&a.name),
                    target_key_id: Some(format_key_id(&a.key_id)),
                    alias_name: a.name,
                    creation_date: a.created_at,
                    last_updated_date: a.updated_at,
                })
                .collect(),
            next_marker,
            truncated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::service::ops::test_support::*;
    use kms_proto::*;

    fn page(
        t: &TestService,
        key_id: Option<&str>,
        limit: u32,
        marker: Option<&str>,
    ) -> Result<ListAliasesOutput, KmsError> {
        match t.call(Operation::ListAliases(ListAliases {
            key_id,
            limit,
            marker,
        }))? {
            Output::ListAliases(o) => Ok(o),
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn pages_in_name_order_with_arns_and_a_key_filter() {
        let t = TestService::new();
        let (a, b) = (t.create_key(), t.create_key());
        for i in (0..5).rev() {
            t.alias(&format!("alias/a{i}"), &a);
        }
        t.alias("alias/b", &b);
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let p = page(&t, None, 2, marker.as_deref()).unwrap();
            assert!(p.aliases.len() <= 2);
            for e in &p.aliases {
                assert_eq!(e.alias_arn, format!("arn:aws:kms:us-east-1:000000000000:{}", e.alias_name));
                assert!(e.creation_date > 0 && e.last_updated_date >= e.creation_date);
            }
            names.extend(p.aliases.into_iter().map(|e| e.alias_name));
            match p.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(names, ["alias/a0", "alias/a1", "alias/a2", "alias/a3", "alias/a4", "alias/b"]);
        let of_b = page(&t, Some(&b), 0, None).unwrap();
        assert_eq!(of_b.aliases.len(), 1);
        assert_eq!(of_b.aliases[0].target_key_id.as_deref(), Some(b.as_str()));
        assert!(!of_b.truncated);
    }

    #[test]
    fn bad_requests_are_refused() {
        let t = TestService::new();
        let key = t.create_key();
        t.alias("alias/k", &key);
        let e = page(&t, None, 1001, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.message.contains("Limit"), "{e}");
        assert_eq!(page(&t, None, 0, Some("nope")).unwrap_err().kind, ErrorKind::InvalidMarker);
        assert_eq!(page(&t, Some(MISSING_KEY), 0, None).unwrap_err().kind, ErrorKind::NotFound);
        // KeyId takes a key id or key ARN (AWS), not an alias.
        assert_eq!(page(&t, Some("alias/k"), 0, None).unwrap_err().kind, ErrorKind::NotFound);
    }
}
