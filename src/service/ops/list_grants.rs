//! ListGrants: a key's grants, optionally only one grant (GrantId) or one
//! grantee's (GranteePrincipal), paged (Limit 1..=100, default 50).
//! KeyId: a key id, key ARN, alias name or alias ARN. Oldest grant first;
//! the marker is opaque.

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::ARN_TEXT;
use kms_proto::codec::{
    CONSTRAINT_PAIR_FIXED, GRANT_CONSTRAINTS_FIXED, GRANT_ENTRY_FIXED, KEY_ENTRY_FIXED,
};
use kms_proto::types::limits::{
    DEFAULT_LIST_GRANTS_LIMIT, MAX_GRANT_CONSTRAINT_CHARS, MAX_GRANT_CONSTRAINT_PAIRS,
    MAX_GRANT_ID_LEN, MAX_GRANT_NAME_LEN, MAX_GRANT_OPERATIONS, MAX_ISSUING_ACCOUNT_LEN,
    MAX_LIST_GRANTS_LIMIT, MAX_MARKER_LEN, MAX_PRINCIPAL_LEN,
};
use crate::errors;
use crate::service::access::grants;
use kms_proto::{ErrorKind, KmsError, ListGrants, ListGrantsOutput, Output};

/// The page size a Limit asks for, as it will be served (for bounds; an
/// out-of-range Limit is the operation's ValidationException).
pub(crate) fn page_size(limit: u32) -> usize {
    let n = match limit {
        0 => DEFAULT_LIST_GRANTS_LIMIT,
        n => n.min(MAX_LIST_GRANTS_LIMIT),
    };
    n as usize
}

/// Tables of one grant in an answer: its entry, its constraints and their
/// pairs (8 in each of the two lists).
const GRANT_TABLES: usize = 2 + 2 * MAX_GRANT_CONSTRAINT_PAIRS;

/// Bytes of one grant beyond what `wire::bound` counts for each of its
/// tables (a ListKeys entry's fixed part): its strings at their longest
/// (the key ARN; the other texts at 4 bytes a character), its operations,
/// its constraints' keys and values, and what its entry, constraints and
/// pairs take beyond that fixed part.
const GRANT_BYTES: usize = ARN_TEXT
    + 4 * (MAX_GRANT_ID_LEN + MAX_GRANT_NAME_LEN + 2 * MAX_PRINCIPAL_LEN + MAX_ISSUING_ACCOUNT_LEN)
    + MAX_GRANT_OPERATIONS
    + 2 * 4 * MAX_GRANT_CONSTRAINT_CHARS
    + GRANT_ENTRY_FIXED.saturating_sub(KEY_ENTRY_FIXED)
    + GRANT_CONSTRAINTS_FIXED.saturating_sub(KEY_ENTRY_FIXED)
    + 2 * MAX_GRANT_CONSTRAINT_PAIRS * CONSTRAINT_PAIR_FIXED.saturating_sub(KEY_ENTRY_FIXED);

/// The bound of a page of grants of `limit` (ListGrants,
/// ListRetirableGrants): a full page of the largest grants, and a marker
/// of at most 1024 characters.
pub(crate) fn page_output_size(limit: u32) -> OutputSize {
    let n = page_size(limit);
    OutputSize {
        success: n * GRANT_BYTES + 4 * MAX_MARKER_LEN,
        error_text: 0,
        entries: n * GRANT_TABLES,
    }
}

impl Op for ListGrants<'_> {
    const NAME: &'static str = "ListGrants";
    const ACTION: &'static str = "kms:ListGrants";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::Key {
            key_id: self.key_id,
            field: "KeyId",
        }
    }

    fn output_size(&self) -> OutputSize {
        page_output_size(self.limit)
    }

    /// One page, oldest grant first, filtered by grant id and grantee.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        let id = svc.resolve_key_id(self.key_id, "KeyId")?;
        let limit = grants::page_limit(self.limit)?;
        if let Some(g) = self.grant_id {
            grants::check_grant_id(g)?;
        }
        let grantee = self
            .grantee_principal
            .map(|p| grants::principal_as_stored(p, "GranteePrincipal").map(|(s, _)| s))
            .transpose()?;
        let after = self
            .marker
            .map(|m| {
                let text = super::marker::decode(m, "ListGrants")?;
                text.split_once(':')
                    .and_then(|(at, gid)| Some((at.parse::<i64>().ok()?, gid.to_owned())))
                    .ok_or_else(|| {
                        KmsError::new(ErrorKind::InvalidMarker, "Marker is not one ListGrants returned")
                    })
            })
            .transpose()?;
        let store = svc.store();
        store
            .get_key(&id)
            .map_err(|e| errors::store("reading key", e))?
            .ok_or_else(|| errors::key_not_found(&id))?;
        // One more than asked tells whether another page exists.
        let mut rows = store
            .list_grants(
                &id,
                after.as_ref().map(|(at, gid)| (*at, gid.as_str())),
                limit + 1,
                self.grant_id,
                grantee.as_deref(),
            )
            .map_err(|e| errors::store("listing grants", e))?;
        drop(store);
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_marker = truncated.then(|| {
            let last = rows.last().expect("non-empty");
            super::marker::encode(&format!("{}:{}", last.created_at, last.grant_id))
        });
        Ok(Output::ListGrants(ListGrantsOutput {
            grants: rows.iter().map(grants::grant_entry).collect::<Result<_, _>>()?,
            next_marker,
            truncated,
        }))
    }
}
