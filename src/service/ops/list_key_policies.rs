//! ListKeyPolicies: the names of a key's policies (AWS: only `default`),
//! paged (Limit 1..=1000, default 100). KeyId: a key id or key ARN. Only
//! the wire so far.

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
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

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.key_id, "KeyId") {
            out.push(KeyRef { id, version: None });
        }
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

    fn apply(&self, _ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        // TODO(acl-merge): daemon logic
        Err(ExecError::Kms(KmsError::new(
            ErrorKind::UnsupportedOperation,
            "not yet",
        )))
    }
}
