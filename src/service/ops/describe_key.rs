//! DescribeKey: a key's metadata. The key may be named by key id, key
//! ARN, alias name or alias ARN (AWS).

use crate::errors;
use crate::identity::Identity;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use crate::service::{MAX_KEY_ARN_TEXT, KEY_ID_TEXT};
use kms_proto::types::limits::MAX_DESCRIPTION_LEN;
use kms_proto::{DescribeKey, Output};

impl Op for DescribeKey<'_> {
    const NAME: &'static str = "DescribeKey";
    const ACTION: &'static str = "kms:DescribeKey";
    type Plane = Control;

    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
    }

    fn output_size(&self) -> OutputSize {
        // A stored description is at most 8192 characters of up to 4 bytes.
        OutputSize {
            success: KEY_ID_TEXT + MAX_KEY_ARN_TEXT + 4 * MAX_DESCRIPTION_LEN,
            ..OutputSize::default()
        }
    }

    /// Reads the key's record from the store (the source of truth for
    /// state).
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        let svc = ctx.service();
        crate::service::access::grants::check_grant_tokens(&self.grant_tokens)?;
        let id = svc.resolve_key_id(self.key_id, "KeyId")?;
        let record = ctx
            .store()
            .get_key(&id)
            .map_err(|e| errors::store("reading key", e))?
            .ok_or_else(|| errors::key_not_found(&id))?;
        // The state shown (Unavailable for an HSM-only key whose HSM is
        // down), deletion date and window.
        Ok(Output::DescribeKey(svc.describe(&record)))
    }
}
