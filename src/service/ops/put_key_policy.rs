//! PutKeyPolicy: replaces a key's policy (AWS allows one, named
//! `default`). KeyId: a key id or key ARN. Only the wire so far: the
//! decoder bounds the policy (1..=32768 bytes; longer is
//! LimitExceededException) and its name (1..=128 characters).

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
use kms_proto::{ErrorKind, KmsError, Output, PutKeyPolicy};

impl Op for PutKeyPolicy<'_> {
    const NAME: &'static str = "PutKeyPolicy";
    const ACTION: &'static str = "kms:PutKeyPolicy";
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
