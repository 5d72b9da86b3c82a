//! RevokeGrant: deletes a grant of a key (a key id or key ARN) by its id.
//! Only the wire so far.

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
use kms_proto::{ErrorKind, KmsError, Output, RevokeGrant};

impl Op for RevokeGrant<'_> {
    const NAME: &'static str = "RevokeGrant";
    const ACTION: &'static str = "kms:RevokeGrant";
    type Plane = Control;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.key_id, "KeyId") {
            out.push(KeyRef { id, version: None });
        }
    }

    fn output_size(&self) -> OutputSize {
        // No fields (AWS).
        OutputSize::default()
    }

    fn apply(&self, _ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        // TODO(acl-merge): daemon logic
        Err(ExecError::Kms(KmsError::new(
            ErrorKind::UnsupportedOperation,
            "not yet",
        )))
    }
}
