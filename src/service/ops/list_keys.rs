//! ListKeys: keys in key-id order, paginated with an opaque marker.

use crate::errors;
use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::{format_key_id, MAX_KEY_ARN_TEXT, KEY_ID_TEXT};
use kms_proto::types::limits::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use kms_proto::{ErrorKind, KeyListEntry, KmsError, ListKeys, ListKeysOutput, Output};

/// Validates the page size and marker; returns (limit, key id to start after).
pub fn validate(req: &ListKeys<'_>) -> Result<(u32, Option<[u8; 16]>), KmsError> {
    let limit = match req.limit {
        0 => DEFAULT_LIST_LIMIT,
        n if n <= MAX_LIST_LIMIT => n,
        n => {
            return Err(KmsError::validation(format!(
                "Limit {n} is out of range 1..={MAX_LIST_LIMIT}"
            )))
        }
    };
    let after = match req.marker {
        None => None,
        Some(m) => Some(
            uuid::Uuid::try_parse(m)
                .map(|u| *u.as_bytes())
                .map_err(|_| {
                    KmsError::new(
                        ErrorKind::InvalidMarker,
                        "the marker is not one ListKeys returned",
                    )
                })?,
        ),
    };
    Ok((limit, after))
}

/// The page size a request asks for, as it will be served (for bounds;
/// an out-of-range one fails in `validate`).
pub(crate) fn page_size(req: &ListKeys<'_>) -> usize {
    let n = match req.limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    n as usize
}

impl Op for ListKeys<'_> {
    const NAME: &'static str = "ListKeys";
    const ACTION: &'static str = "kms:ListKeys";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::Account
    }

    fn output_size(&self) -> OutputSize {
        let n = page_size(self);
        OutputSize {
            success: KEY_ID_TEXT + n * (KEY_ID_TEXT + MAX_KEY_ARN_TEXT),
            error_text: 0,
            entries: n,
        }
    }

    /// Reads one page from the store.
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let (limit, after) = validate(self)?;
        // One more than asked tells whether another page exists.
        let mut keys = ctx
            .store()
            .list_keys(after.as_ref(), limit + 1)
            .map_err(|e| errors::store("listing keys", e))?;
        let truncated = keys.len() > limit as usize;
        keys.truncate(limit as usize);
        let next_marker = truncated.then(|| format_key_id(&keys.last().expect("non-empty").key_id));
        let arns = ctx.service().arns();
        Ok(Output::ListKeys(ListKeysOutput {
            keys: keys
                .iter()
                .map(|k| KeyListEntry {
                    key_id: format_key_id(&k.key_id),
                    arn: arns.key_arn(&k.key_id),
                })
                .collect(),
            next_marker,
            truncated,
        }))
    }
}
