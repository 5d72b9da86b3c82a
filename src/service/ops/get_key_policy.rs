//! GetKeyPolicy: a key's policy document and its name (`default`).
//! KeyId: a key id or key ARN. Only the wire so far.

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
use kms_proto::types::limits::{MAX_POLICY_BYTES, MAX_POLICY_NAME_LEN};
use kms_proto::{ErrorKind, GetKeyPolicy, KmsError, Output};

impl Op for GetKeyPolicy<'_> {
    const NAME: &'static str = "GetKeyPolicy";
    const ACTION: &'static str = "kms:GetKeyPolicy";
    type Plane = Control;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.key_id, "KeyId") {
            out.push(KeyRef { id, version: None });
        }
    }

    fn output_size(&self) -> OutputSize {
        // A stored policy is at most 32768 bytes (the decoder and the
        // policy parser refuse longer ones, the default policy included);
        // its name at most 128 characters of up to 4 bytes.
        OutputSize {
            success: MAX_POLICY_BYTES + 4 * MAX_POLICY_NAME_LEN,
            ..OutputSize::default()
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
