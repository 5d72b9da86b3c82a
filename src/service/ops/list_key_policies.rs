//! ListKeyPolicies: the names of a key's policies (AWS: only `default`),
//! paged (Limit 1..=1000, default 100). KeyId: a key id, key ARN, alias
//! name or alias ARN.

use crate::identity::Identity;
use crate::service::access::policies::POLICY_NAME;
use kms_proto::ListKeyPoliciesOutput;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::codec::POLICY_NAME_ENTRY_FIXED;
use kms_proto::types::limits::{
    DEFAULT_LIST_LIMIT, MAX_LIST_POLICIES_LIMIT, MAX_MARKER_LEN, MAX_POLICIES_PER_KEY,
    MAX_POLICY_NAME_LEN,
};
use kms_proto::{ErrorKind, KmsError, ListKeyPolicies, Output};

/// The page size a request asks for, as it will be served (for bounds;
/// an out-of-range Limit is the operation's ValidationException).
pub(crate) fn page_size(req: &ListKeyPolicies<'_>) -> usize {
    let n = match req.limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_POLICIES_LIMIT),
    };
    n as usize
}

impl Op for ListKeyPolicies<'_> {
    const NAME: &'static str = "ListKeyPolicies";
    const ACTION: &'static str = "kms:ListKeyPolicies";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        // A key has at most one policy, whatever the page size; names are
        // strings in a vector (no tables), markers at most 1024
        // characters.
        let n = page_size(self).min(MAX_POLICIES_PER_KEY);
        OutputSize {
            success: n * (4 * MAX_POLICY_NAME_LEN + POLICY_NAME_ENTRY_FIXED) + 4 * MAX_MARKER_LEN,
            error_text: 0,
            entries: 0,
        }
    }

    /// One name, "default": every key has exactly one policy (AWS).
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        if self.limit > MAX_LIST_POLICIES_LIMIT {
            return Err(KmsError::validation(format!(
                "Limit {} is out of range 1..={MAX_LIST_POLICIES_LIMIT}",
                self.limit
            ))
            .into());
        }
        // The only page is the first: a marker can only be one this
        // operation never returns.
        if let Some(m) = self.marker {
            super::marker::decode(m, "ListKeyPolicies")?;
            return Err(KmsError::new(
                ErrorKind::InvalidMarker,
                "Marker is not one ListKeyPolicies returned",
            )
            .into());
        }
        let id = ctx.service().resolve_key_id(self.key_id, "KeyId")?;
        // NotFoundException for a key that is not there.
        ctx.service().key_policy_text(&id)?;
        Ok(Output::ListKeyPolicies(ListKeyPoliciesOutput {
            policy_names: vec![POLICY_NAME.to_owned()],
            next_marker: None,
            truncated: false,
        }))
    }
}
