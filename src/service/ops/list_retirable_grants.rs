//! ListRetirableGrants: the grants a principal may retire, over all keys,
//! paged (Limit 1..=100, default 50). No key: the grants of every key.
//! Only the wire so far.

use crate::identity::Identity;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::{ErrorKind, KmsError, ListRetirableGrants, Output};

impl Op for ListRetirableGrants<'_> {
    const NAME: &'static str = "ListRetirableGrants";
    const ACTION: &'static str = "kms:ListRetirableGrants";
    type Plane = Control;

    fn output_size(&self) -> OutputSize {
        // As ListGrants: AWS answers with the same shape.
        super::list_grants::page_output_size(self.limit)
    }

    fn apply(&self, _ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        // TODO(acl-merge): daemon logic
        Err(ExecError::Kms(KmsError::new(
            ErrorKind::UnsupportedOperation,
            "not yet",
        )))
    }
}
