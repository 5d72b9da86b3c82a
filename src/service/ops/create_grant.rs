//! CreateGrant: gives a principal some operations on a key, optionally
//! under encryption-context constraints. KeyId: a key id or key ARN.
//! Only the wire so far: the decoder bounds the principals (1..=256
//! characters), the operations (1..=17 known values), the constraints (8
//! pairs and 384 characters each), the grant tokens and the name.

use crate::identity::Identity;
use crate::service::keys::KeyRef;
use crate::service::op::{Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::Service;
use kms_proto::types::limits::{MAX_GRANT_ID_LEN, MAX_GRANT_TOKEN_LEN};
use kms_proto::{CreateGrant, ErrorKind, KmsError, Output};

impl Op for CreateGrant<'_> {
    const NAME: &'static str = "CreateGrant";
    const ACTION: &'static str = "kms:CreateGrant";
    type Plane = Control;

    fn keys(&self, svc: &Service, out: &mut Vec<KeyRef>) {
        if let Ok(id) = svc.resolve_key_id(self.key_id, "KeyId") {
            out.push(KeyRef { id, version: None });
        }
    }

    fn heap_bytes(&self) -> usize {
        let constraints = self.constraints.as_ref().map_or(0, |c| {
            super::context_heap(&c.encryption_context_subset)
                + super::context_heap(&c.encryption_context_equals)
        });
        constraints
            + std::mem::size_of_val(self.operations.as_slice())
            + std::mem::size_of_val(self.grant_tokens.as_slice())
    }

    fn output_size(&self) -> OutputSize {
        // A grant token of at most 8192 bytes and a grant id of at most
        // 128 characters of up to 4 bytes; an error may quote the
        // constraints' keys as an encryption context's errors do.
        let error_text = self.constraints.as_ref().map_or(0, |c| {
            super::context_error_text(&c.encryption_context_subset)
                + super::context_error_text(&c.encryption_context_equals)
        });
        OutputSize {
            success: MAX_GRANT_TOKEN_LEN + 4 * MAX_GRANT_ID_LEN,
            error_text,
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
