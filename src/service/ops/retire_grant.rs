//! RetireGrant: deletes a grant named by its token, or by its key (a key
//! id or key ARN) and grant id. Only the wire so far: which of them name
//! the grant is the daemon's to check.

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
use kms_proto::{ErrorKind, KmsError, Output, RetireGrant};

impl Op for RetireGrant<'_> {
    const NAME: &'static str = "RetireGrant";
    const ACTION: &'static str = "kms:RetireGrant";
    type Plane = Control;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Some(Ok(id)) = self.key_id.map(|k| svc.resolve_key_id(k, "KeyId")) {
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
