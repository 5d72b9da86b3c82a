//! ListGrants: a key's grants, optionally only one grant (GrantId) or one
//! grantee's (GranteePrincipal), paged (Limit 1..=100, default 50).
//! KeyId: a key id, key ARN, alias name or alias ARN. Oldest grant first;
//! the marker is opaque.

use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::MAX_KEY_ARN_TEXT;
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
const GRANT_BYTES: usize = MAX_KEY_ARN_TEXT
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
        Authz::key(self.key_id)
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
            grants: rows.iter().map(|r| grants::grant_entry(ctx.service().arns(), r)).collect::<Result<_, _>>()?,
            next_marker,
            truncated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::wire::bound::answer_plan;
    use crate::wire::DEFAULT_MAX_ANSWER;
    use flatbuffers::FlatBufferBuilder;
    use kms_proto::codec::response_size_hint;
    use kms_proto::types::limits::*;
    use kms_proto::*;

    /// A text of `n` characters of 4 bytes each.
    fn long(n: usize) -> String {
        "\u{10348}".repeat(n)
    }

    /// The largest answer each access-control read can give, beside the
    /// request that asks for it.
    fn largest() -> Vec<(Operation<'static>, Output)> {
        // 384 characters over 8 pairs in each list.
        let constraint = || -> Vec<(String, String)> {
            (0..MAX_GRANT_CONSTRAINT_PAIRS)
                .map(|i| (format!("{i}{}", long(23)), long(24)))
                .collect()
        };
        let grants = ListGrantsOutput {
            grants: (0..MAX_LIST_GRANTS_LIMIT)
                .map(|_| GrantListEntry {
                    key_id: crate::service::key_id::longest_arns().key_arn(&[0xff; 16]),
                    grant_id: long(MAX_GRANT_ID_LEN),
                    name: Some(long(MAX_GRANT_NAME_LEN)),
                    creation_date: i64::MIN,
                    grantee_principal: long(MAX_PRINCIPAL_LEN),
                    retiring_principal: Some(long(MAX_PRINCIPAL_LEN)),
                    issuing_account: long(MAX_ISSUING_ACCOUNT_LEN),
                    operations: GrantOperation::ALL.to_vec(),
                    constraints: Some(OwnedGrantConstraints {
                        encryption_context_subset: constraint(),
                        encryption_context_equals: constraint(),
                    }),
                })
                .collect(),
            next_marker: Some(long(MAX_MARKER_LEN)),
            truncated: true,
        };
        vec![
            (
                Operation::ListGrants(ListGrants {
                    key_id: "k",
                    limit: MAX_LIST_GRANTS_LIMIT,
                    ..ListGrants::default()
                }),
                Output::ListGrants(grants.clone()),
            ),
            (
                Operation::ListRetirableGrants(ListRetirableGrants {
                    retiring_principal: "uid:0",
                    limit: 0,
                    marker: None,
                }),
                Output::ListRetirableGrants(ListGrantsOutput {
                    grants: grants.grants[..DEFAULT_LIST_GRANTS_LIMIT as usize].to_vec(),
                    ..grants
                }),
            ),
            (
                Operation::GetKeyPolicy(GetKeyPolicy {
                    key_id: "k",
                    policy_name: None,
                }),
                Output::GetKeyPolicy(GetKeyPolicyOutput {
                    policy: "p".repeat(MAX_POLICY_BYTES),
                    policy_name: long(MAX_POLICY_NAME_LEN),
                }),
            ),
            (
                Operation::ListKeyPolicies(ListKeyPolicies {
                    key_id: "k",
                    limit: 1,
                    marker: None,
                }),
                Output::ListKeyPolicies(ListKeyPoliciesOutput {
                    policy_names: vec![long(MAX_POLICY_NAME_LEN); MAX_POLICIES_PER_KEY],
                    next_marker: Some(long(MAX_MARKER_LEN)),
                    truncated: true,
                }),
            ),
            (
                Operation::CreateGrant(CreateGrant {
                    key_id: "k",
                    grantee_principal: "uid:1",
                    operations: vec![GrantOperation::Decrypt],
                    ..CreateGrant::default()
                }),
                Output::CreateGrant(CreateGrantOutput {
                    grant_token: "t".repeat(MAX_GRANT_TOKEN_LEN),
                    grant_id: long(MAX_GRANT_ID_LEN),
                }),
            ),
        ]
    }

    /// The answer bounds the operations declare (`output_size`, through
    /// `wire::bound`) hold for the largest answers, which run: a full
    /// page of the largest grants fits the default answer frame and the
    /// clients' table limit.
    #[test]
    fn answer_bounds_hold_for_the_largest_answers() {
        for (op, out) in largest() {
            let req = Request {
                request_id: 1,
                body: RequestBody::Single(Ok(op.clone())),
            };
            let plan = answer_plan(&req, DEFAULT_MAX_ANSWER);
            assert_eq!(plan.runs, 1, "{}", op.name());
            let resp = Response {
                request_id: 1,
                body: ResponseBody::Single(Ok(out)),
            };
            let mut fbb = FlatBufferBuilder::with_capacity(response_size_hint(&resp));
            let mut wire = Vec::new();
            encode_response(&mut fbb, &resp, &mut wire);
            assert!(
                wire.len() <= plan.bound,
                "{}: {} > {}",
                op.name(),
                wire.len(),
                plan.bound
            );
            assert!(response_size_hint(&resp) <= plan.bound, "{}", op.name());
        }
    }
}
