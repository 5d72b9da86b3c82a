//! GetKeyPolicy: a key's policy document and its name (`default`).
//! KeyId: a key id, key ARN, alias name or alias ARN. The document is
//! returned as it was given.

use crate::identity::Identity;
use crate::service::access::policies::{check_policy_name, POLICY_NAME};
use kms_proto::GetKeyPolicyOutput;
use crate::service::op::{Authz, Control, ControlCtx, ExecError, Op, OutputSize};
use kms_proto::types::limits::{MAX_POLICY_BYTES, MAX_POLICY_NAME_LEN};
use kms_proto::{GetKeyPolicy, Output};

impl Op for GetKeyPolicy<'_> {
    const NAME: &'static str = "GetKeyPolicy";
    const ACTION: &'static str = "kms:GetKeyPolicy";
    type Plane = Control;


    fn authorization(&self) -> Authz<'_> {
        Authz::key(self.key_id)
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

    /// The document as it was given (and stored).
    fn apply(&self, ctx: &ControlCtx<'_>, _caller: &Identity) -> Result<Output, ExecError> {
        check_policy_name(self.policy_name)?;
        let id = ctx.service().resolve_key_id(self.key_id, "KeyId")?;
        Ok(Output::GetKeyPolicy(GetKeyPolicyOutput {
            policy: ctx.service().key_policy_text(&id)?,
            policy_name: POLICY_NAME.to_owned(),
        }))
    }
}
